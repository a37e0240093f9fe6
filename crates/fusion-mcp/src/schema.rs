//! Whether a tool's `inputSchema` can go to the model as its function's parameters: a
//! JSON Schema for an object, well formed throughout, and at most [`MAX_SCHEMA_BYTES`].
//!
//! Providers check the schemas of every tool in a request, and one broken inside
//! (`"properties": {"x": 5}`, `"required": "x"`) fails the whole request, so every turn of
//! the session; such a tool is left out instead, with the reason. Checked is the form JSON
//! Schema gives its keywords: those taking a schema hold an object or a boolean, those
//! taking a list of schemas or names hold one, `type` names JSON types, counts are
//! non-negative integers. Not checked: what the keywords mean together, `$ref` targets,
//! regular expressions; keywords JSON Schema does not define are left as they are.
//! `fusion_agent::check_arguments` checks a call's arguments against the schema later.

use serde_json::{Map, Value};

/// The largest input schema, as JSON, offered to the model: 64 KiB. It goes with every
/// request; real tools' schemas take a few KiB.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// The JSON types `type` may name.
const TYPES: [&str; 7] = [
    "array", "boolean", "integer", "null", "number", "object", "string",
];

/// Checks a tool's input schema; the error is the reason the tool is left out, for a
/// message that names the tool ("its inputSchema …").
pub fn check_input_schema(schema: &Map<String, Value>) -> Result<(), String> {
    match schema.get("type") {
        Some(Value::String(kind)) if kind == "object" => {}
        Some(other) => {
            return Err(format!(
                "its inputSchema has \"type\": {}; tool arguments must be an object",
                short(other)
            ));
        }
        None => return Err("its inputSchema has no \"type\": \"object\"".to_owned()),
    }
    if let Some(properties) = schema.get("properties")
        && !properties.is_object()
    {
        return Err("its inputSchema's \"properties\" is not an object".to_owned());
    }
    let size = json_size(schema);
    if size > MAX_SCHEMA_BYTES {
        return Err(format!(
            "its inputSchema is {} of JSON; at most {} KiB is offered, since it goes with \
             every request",
            kib(size),
            MAX_SCHEMA_BYTES / 1024
        ));
    }
    check_keywords(schema, "")
        .map_err(|problem| format!("its inputSchema is not a valid JSON Schema: {problem}"))
}

/// Checks one schema at JSON Pointer `at`: an object (whose keywords are checked) or a
/// boolean.
fn check_schema(value: &Value, at: &str) -> Result<(), String> {
    match value {
        Value::Bool(_) => Ok(()),
        Value::Object(keywords) => check_keywords(keywords, at),
        other => Err(wrong(other, at, "a schema (an object or a boolean)")),
    }
}

fn check_keywords(keywords: &Map<String, Value>, at: &str) -> Result<(), String> {
    for (keyword, value) in keywords {
        let here = format!("{at}/{}", segment(keyword));
        match keyword.as_str() {
            "type" => check_type(value, &here)?,
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                for (name, schema) in expect_object(value, &here)? {
                    check_schema(schema, &format!("{here}/{}", segment(name)))?;
                }
            }
            "additionalProperties"
            | "additionalItems"
            | "unevaluatedProperties"
            | "unevaluatedItems"
            | "contains"
            | "propertyNames"
            | "not"
            | "if"
            | "then"
            | "else"
            | "contentSchema" => check_schema(value, &here)?,
            // A schema, or (before draft 2020-12) a list of them, one per position.
            "items" => match value {
                Value::Array(schemas) => check_schemas(schemas, &here)?,
                schema => check_schema(schema, &here)?,
            },
            "prefixItems" => check_schemas(expect_array(value, &here)?, &here)?,
            "allOf" | "anyOf" | "oneOf" => {
                let schemas = expect_array(value, &here)?;
                if schemas.is_empty() {
                    return Err(format!("{} is an empty list", place(&here)));
                }
                check_schemas(schemas, &here)?;
            }
            "required" => check_names(value, &here)?,
            "dependentRequired" => {
                for (name, names) in expect_object(value, &here)? {
                    check_names(names, &format!("{here}/{}", segment(name)))?;
                }
            }
            // Draft 7: each a schema or a list of names.
            "dependencies" => {
                for (name, dependency) in expect_object(value, &here)? {
                    let there = format!("{here}/{}", segment(name));
                    match dependency {
                        Value::Array(_) => check_names(dependency, &there)?,
                        schema => check_schema(schema, &there)?,
                    }
                }
            }
            "enum" => {
                expect_array(value, &here)?;
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties"
            | "maxProperties" | "minContains" | "maxContains"
                if value.as_u64().is_none() =>
            {
                return Err(wrong(value, &here, "a non-negative integer"));
            }
            "minimum" | "maximum" => {
                expect_number(value, &here)?;
            }
            // A number, or (draft 4) a boolean.
            "exclusiveMinimum" | "exclusiveMaximum" if !value.is_boolean() => {
                expect_number(value, &here)?;
            }
            "multipleOf" if value.as_f64().is_none_or(|n| n <= 0.0) => {
                return Err(wrong(value, &here, "a number greater than 0"));
            }
            "pattern" | "format" | "$ref" | "$id" | "$schema" | "$anchor" | "$comment"
            | "title" | "description"
                if !value.is_string() =>
            {
                return Err(wrong(value, &here, "a string"));
            }
            "uniqueItems" | "readOnly" | "writeOnly" | "deprecated" if !value.is_boolean() => {
                return Err(wrong(value, &here, "a boolean"));
            }
            // `const`, `default`, `examples` take any value; other keywords are not JSON
            // Schema's to check.
            _ => {}
        }
    }
    Ok(())
}

fn check_schemas(schemas: &[Value], at: &str) -> Result<(), String> {
    for (n, schema) in schemas.iter().enumerate() {
        check_schema(schema, &format!("{at}/{n}"))?;
    }
    Ok(())
}

/// `type`: one JSON type's name, or a list of distinct ones.
fn check_type(value: &Value, at: &str) -> Result<(), String> {
    let names: Vec<&Value> = match value {
        Value::Array(names) => names.iter().collect(),
        one => vec![one],
    };
    let mut seen = Vec::new();
    for name in names {
        match name.as_str() {
            Some(name) if TYPES.contains(&name) && !seen.contains(&name) => seen.push(name),
            Some(name) if TYPES.contains(&name) => {
                return Err(format!("{} names \"{name}\" twice", place(at)));
            }
            _ => {
                return Err(format!(
                    "{} is {}, not a JSON type's name ({})",
                    place(at),
                    short(name),
                    TYPES.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// A list of property names.
fn check_names(value: &Value, at: &str) -> Result<(), String> {
    let names = expect_array(value, at)?;
    if let Some(n) = names.iter().position(|name| !name.is_string()) {
        return Err(wrong(&names[n], &format!("{at}/{n}"), "a property name"));
    }
    Ok(())
}

/// "`/at` is a number, not a string".
fn wrong(value: &Value, at: &str, expected: &str) -> String {
    format!("{} is {}, not {expected}", place(at), kind(value))
}

fn expect_object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| wrong(value, at, "an object"))
}

fn expect_array<'a>(value: &'a Value, at: &str) -> Result<&'a [Value], String> {
    value
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| wrong(value, at, "a list"))
}

fn expect_number(value: &Value, at: &str) -> Result<f64, String> {
    value.as_f64().ok_or_else(|| wrong(value, at, "a number"))
}

/// `at` for a message: the JSON Pointer, quoted.
fn place(at: &str) -> String {
    format!("`{at}`")
}

/// One key as a JSON Pointer segment (`~` and `/` escaped), cut to 64 characters and with
/// what a terminal would act on escaped: the names come from the server.
fn segment(key: &str) -> String {
    let key: String = key.chars().take(64).collect();
    key.replace('~', "~0")
        .replace('/', "~1")
        .escape_debug()
        .to_string()
}

/// What kind of JSON value `value` is, with an article.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `value` as JSON for a message, cut to 40 characters.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 40 {
        return text;
    }
    let cut: String = text.chars().take(40).collect();
    format!("{cut}…")
}

/// The length of `schema` as compact JSON, counted without building the text.
fn json_size(schema: &Map<String, Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, schema);
    count.0
}

fn kib(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: Value) -> Result<(), String> {
        check_input_schema(schema.as_object().unwrap())
    }

    #[test]
    fn well_formed_object_schemas_pass() {
        let schema = json!({
            "type": "object",
            "$schema": "http://json-schema.org/draft-07/schema#",
            "properties": {
                "path": {"type": "string", "description": "Where.", "minLength": 1},
                "mode": {"enum": ["r", "w"], "default": "r"},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
                "pair": {"type": "array", "items": [{"type": "string"}, true]},
                "size": {"type": ["integer", "null"], "minimum": 0, "exclusiveMaximum": 10},
                "old": {"type": "number", "exclusiveMinimum": true, "multipleOf": 0.5},
                "any": {},
                "ref": {"$ref": "#/$defs/thing"},
                "one": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "required": ["path"],
            "additionalProperties": false,
            "$defs": {"thing": {"type": "object", "x-vendor": 5}},
            "dependencies": {"a": ["b"], "c": {"required": []}},
        });
        assert_eq!(check(schema), Ok(()));
    }

    #[test]
    fn a_schema_broken_inside_is_named_at_its_place() {
        for (schema, says) in [
            (
                json!({"type": "object", "properties": {"x": 5}}),
                "`/properties/x` is a number, not a schema (an object or a boolean)",
            ),
            (
                json!({"type": "object", "required": "x"}),
                "`/required` is a string, not a list",
            ),
            (
                json!({"type": "object", "required": ["x", 1]}),
                "`/required/1` is a number, not a property name",
            ),
            (
                json!({"type": "object", "properties": {"a/b": {"type": "strin"}}}),
                "`/properties/a~1b/type` is \"strin\", not a JSON type's name",
            ),
            (
                json!({"type": "object", "properties": {"l": {"items": {"type": 3}}}}),
                "`/properties/l/items/type` is 3",
            ),
            (
                json!({"type": "object", "properties": {"s": {"maxLength": -1}}}),
                "`/properties/s/maxLength` is a number, not a non-negative integer",
            ),
            (
                json!({"type": "object", "properties": {"s": {"anyOf": []}}}),
                "`/properties/s/anyOf` is an empty list",
            ),
            (
                json!({"type": "object", "properties": {"s": {"description": 7}}}),
                "`/properties/s/description` is a number, not a string",
            ),
            (
                json!({"type": "object", "properties": {"s": {"type": ["string", "string"]}}}),
                "names \"string\" twice",
            ),
            (json!({"type": "string"}), "\"type\": \"string\""),
            (json!({"properties": {}}), "no \"type\""),
            (
                json!({"type": "object", "properties": []}),
                "\"properties\"",
            ),
        ] {
            let reason = check(schema).unwrap_err();
            assert!(reason.contains(says), "{reason}");
        }
    }

    #[test]
    fn a_schema_over_the_size_limit_is_refused_with_its_size() {
        let properties: Map<String, Value> = (0..2000)
            .map(|n| {
                (
                    format!("p{n}"),
                    json!({"type": "string", "description": "x".repeat(40)}),
                )
            })
            .collect();
        let reason = check(json!({"type": "object", "properties": properties})).unwrap_err();
        assert!(
            reason.contains("is 161.1 KiB of JSON; at most 64 KiB"),
            "{reason}"
        );
    }
}
