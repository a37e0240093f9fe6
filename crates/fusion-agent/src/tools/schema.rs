//! A small JSON Schema check for tool arguments: enough to turn a model's malformed call
//! into a precise observation before the tool runs.
//!
//! It is deliberately not a full JSON Schema validator (no `$ref`, `oneOf`, formats,
//! nested object checks): models mostly get the top level wrong (a missing or misspelled
//! property, a number sent as a string), and a tool still validates what it relies on.
//! Checked: the arguments are an object when the schema says `"type": "object"` or has
//! `properties`; every `required` property is present; each declared property has one of
//! its declared `type`s and, when given, one of its `enum` values (numbers compared by
//! value, as JSON Schema does: `2.0` is `2`); with `"additionalProperties": false`, no
//! undeclared property appears. A schema of one value rather than an object (`{"type":
//! "string", "enum": [...]}`) has the arguments checked as a declared property is.
//!
//! The executor checks with [`check_and_fit_arguments`], which in the same walk writes an
//! integral number a property takes as `"integer"` (`2.0`) as an integer (`2`): the tool
//! then gets what its schema promised, where `as_i64()` on `2.0` is `None`.

use serde_json::{Map, Number, Value};

/// Checks `args` against `schema`, returning every problem found, joined into one message
/// written for the model.
pub fn check_arguments(schema: &Value, args: &Value) -> Result<(), String> {
    // A copy, so that this check and the executor's are one walk; a call's arguments are small.
    check_and_fit_arguments(schema, &mut args.clone())
}

/// [`check_arguments`], also writing each integral float checked against `"integer"` as an
/// integer; on `Err`, `args` may be partly rewritten.
pub(crate) fn check_and_fit_arguments(declared: &Value, args: &mut Value) -> Result<(), String> {
    let Some(schema) = declared.as_object() else {
        // A tool without a usable schema accepts anything; the tool itself decides.
        return Ok(());
    };
    let wants_object = schema.get("type").and_then(Value::as_str) == Some("object")
        || schema.contains_key("properties");
    if !wants_object {
        // Arguments that are one value (`{"type": "string", "enum": [...]}`) are checked as
        // a property is, so that such a schema's `enum` holds as a property's does.
        let mut problems = Vec::new();
        check_value("the arguments", declared, args, &mut problems);
        return verdict(problems);
    }
    let Value::Object(args) = args else {
        return Err(format!("expected a JSON object but got {}", kind(args)));
    };
    let empty = Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut problems = Vec::new();
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !args.contains_key(name) {
            problems.push(format!("missing required property `{name}`"));
        }
    }
    for (name, value) in args.iter_mut() {
        match properties.get(name) {
            Some(declared) => check_value(
                &format!("property `{name}`"),
                declared,
                value,
                &mut problems,
            ),
            None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                problems.push(format!(
                    "unknown property `{name}` (known: {})",
                    known.join(", ")
                ));
            }
            None => {}
        }
    }
    verdict(problems)
}

/// The property a tool's bare `text` input (`Action Input: notes.txt`, no JSON) stands for:
/// the one `required` property, else the one declared property, when it takes a string.
/// `None` when the schema names no such single property, or when `text` starts by naming
/// a declared property (`path="notes.txt"`, `"path": "notes.txt"`, `path: notes.txt`): an
/// object written wrong, whose whole text as the value would run another call than the
/// model meant (`command: ls` as the command). The text is then refused as not JSON, with
/// the schema, for the model to write an object.
pub(crate) fn bare_text_property<'s>(schema: &'s Value, text: &str) -> Option<&'s str> {
    let properties = schema.get("properties").and_then(Value::as_object)?;
    if properties.keys().any(|name| names_property(text, name)) {
        return None;
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let name = match required[..] {
        [name] => name,
        [] if properties.len() == 1 => properties.keys().next()?.as_str(),
        _ => return None,
    };
    let takes_text = properties
        .get(name)?
        .get("type")
        .is_none_or(|ty| matches_type(ty, &Value::String(String::new())));
    takes_text.then_some(name)
}

/// Whether `text` starts with `name` as an object's key is written, quoted or not, then
/// `:` or `=` (`path: a`, `"path": "a"`, `path="a"`, as `tool(path="a")` gives).
fn names_property(text: &str, name: &str) -> bool {
    let text = text.trim_start();
    let (quote, rest) = match text.strip_prefix(['"', '\'']) {
        Some(rest) => (&text[..1], rest),
        None => ("", text),
    };
    rest.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(quote))
        .is_some_and(|rest| rest.trim_start().starts_with([':', '=']))
}

/// Whether `schema` is of one value, not an object, whose declared `type` takes a string
/// (`{"type": "string"}`): a tool's bare text input is then that string.
pub(crate) fn takes_one_string(schema: &Value) -> bool {
    let wants_object = schema.get("type").and_then(Value::as_str) == Some("object")
        || schema.get("properties").is_some();
    !wants_object
        && schema
            .get("type")
            .is_some_and(|ty| matches_type(ty, &Value::String(String::new())))
}

/// `Ok` without problems, else every problem in one message.
fn verdict(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Checks `value` against `declared` (its `type`, then its `enum`), pushing a problem
/// about `subject` (`property `path``, or `the arguments` for a schema of one value).
fn check_value(subject: &str, declared: &Value, value: &mut Value, problems: &mut Vec<String>) {
    if let Some(ty) = declared.get("type") {
        if !matches_type(ty, value) {
            problems.push(format!(
                "{subject} must be {} but is {}",
                type_names(ty),
                kind(value)
            ));
            return;
        }
        fit_integer(ty, value);
    }
    if let Some(allowed) = declared.get("enum").and_then(Value::as_array)
        && !allowed.iter().any(|one| same_json(one, value))
    {
        let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        problems.push(format!("{subject} must be one of {}", allowed.join(", ")));
    }
}

/// Whether `a` and `b` are one JSON value as JSON Schema compares them (`enum`): numbers
/// by their value, so `2.0` is `2` (as `"integer"` already takes it), where serde_json
/// tells the written forms apart and a model's `2.0` for `"enum": [1, 2]` was refused as
/// "must be one of 1, 2".
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => same_number(x, y),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(key, x)| ys.get(key).is_some_and(|y| same_json(x, y)))
        }
        _ => a == b,
    }
}

/// Whether `x` and `y` are one number, compared exactly: an integer past 2^53 has no
/// `f64` of its own (`9007199254740993` and `9007199254740992` are one `f64`), so an
/// integer and a float are one number only when the float is integral and is that very
/// integer; two integers, or two floats, compare as they are.
fn same_number(x: &Number, y: &Number) -> bool {
    let integer = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (integer(x), integer(y)) {
        (Some(i), Some(j)) => i == j,
        (Some(i), None) => y.as_f64().is_some_and(|f| float_is(f, i)),
        (None, Some(j)) => x.as_f64().is_some_and(|f| float_is(f, j)),
        (None, None) => x.as_f64() == y.as_f64(),
    }
}

/// Whether the float `f` is exactly the integer `i` (of `i64` or `u64`).
fn float_is(f: f64, i: i128) -> bool {
    // Every `i64` and `u64` lies within ±2^64, where `as` is exact for an integral float;
    // past it `as` would saturate, and no such float is one of them anyway.
    const BOUND: f64 = 18_446_744_073_709_551_616.0; // 2^64
    f.fract() == 0.0 && f.abs() <= BOUND && f as i128 == i
}

/// Writes `value`, which has a type `ty` names, as an integer when it is an integral float
/// and `ty` names `"integer"` (then the float is the integer JSON Schema took it for, and
/// still a number for `as_f64()`). A float past `i64`/`u64` (`1e300`) stays as it is.
fn fit_integer(ty: &Value, value: &mut Value) {
    let names_integer = match ty {
        Value::String(name) => name == "integer",
        Value::Array(names) => names.iter().any(|name| name == "integer"),
        _ => false,
    };
    let Some(float) = value.as_f64().filter(|_| names_integer && value.is_f64()) else {
        return;
    };
    // Within these bounds `as` is exact for an integral float, and a fraction (`2.5` for
    // `["integer", "number"]`) does not come back equal; `as` would saturate past them.
    let integer = if (i64::MIN as f64..0.0).contains(&float) {
        Some(float as i64)
            .filter(|&i| i as f64 == float)
            .map(Number::from)
    } else if (0.0..u64::MAX as f64).contains(&float) {
        Some(float as u64)
            .filter(|&u| u as f64 == float)
            .map(Number::from)
    } else {
        None
    };
    if let Some(integer) = integer {
        *value = Value::Number(integer);
    }
}

/// Whether `value` has the type `ty` names (a string or an array of strings).
fn matches_type(ty: &Value, value: &Value) -> bool {
    match ty {
        Value::String(name) => matches_type_name(name, value),
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .any(|name| matches_type_name(name, value)),
        // An unreadable `type` is the schema's problem, not the model's.
        _ => true,
    }
}

fn matches_type_name(name: &str, value: &Value) -> bool {
    match name {
        "string" => value.is_string(),
        "number" => value.is_number(),
        // JSON Schema counts 3.0 as an integer.
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn type_names(ty: &Value) -> String {
    match ty {
        Value::Array(names) => {
            let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
            format!("one of {}", names.join(", "))
        }
        Value::String(name) => article(name),
        other => other.to_string(),
    }
}

fn article(name: &str) -> String {
    match name {
        "integer" | "object" | "array" => format!("an {name}"),
        "null" => "null".to_owned(),
        _ => format!("a {name}"),
    }
}

/// The JSON type of `value`, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "limit": {"type": "integer"},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "note": {"type": ["string", "null"]}
            },
            "required": ["path"],
            "additionalProperties": false
        })
    }

    #[test]
    fn fitting_arguments_pass() {
        let args = json!({"path": "x", "limit": 3, "mode": "a", "note": null});
        assert_eq!(check_arguments(&schema(), &args), Ok(()));
        assert_eq!(
            check_arguments(&schema(), &json!({"path": "x", "limit": 2.0})),
            Ok(())
        );
    }

    #[test]
    fn every_problem_is_named() {
        let err = check_arguments(
            &schema(),
            &json!({"limit": "3", "mode": "c", "extra": 1, "note": 5}),
        )
        .unwrap_err();
        assert!(err.contains("missing required property `path`"), "{err}");
        assert!(
            err.contains("`limit` must be an integer but is a string"),
            "{err}"
        );
        assert!(err.contains("`mode` must be one of \"a\", \"b\""), "{err}");
        assert!(err.contains("unknown property `extra`"), "{err}");
        assert!(err.contains("`note` must be one of string, null"), "{err}");
    }

    /// Found by a hunt: `"integer"` took `2.0` but `enum` compared serde_json's written
    /// forms, so a model's `2.0` for `"enum": [1, 2]` was refused as "must be one of 1, 2"
    /// (JSON Schema holds `2.0` and `2` equal), an observation it could not act on.
    #[test]
    fn enum_values_compare_numbers_by_value() {
        let schema = json!({"type": "object", "properties": {
            "level": {"type": "integer", "enum": [1, 2]},
            "ratio": {"enum": [0.5, [1], {"k": 3}]}
        }});
        for args in [
            json!({"level": 2.0}),
            json!({"level": 2}),
            json!({"ratio": 0.5}),
            json!({"ratio": [1.0]}),
            json!({"ratio": {"k": 3.0}}),
        ] {
            assert_eq!(check_arguments(&schema, &args), Ok(()), "{args}");
        }
        for args in [
            json!({"level": 2.5}),
            json!({"level": 3}),
            json!({"ratio": "0.5"}),
            json!({"ratio": [1, 1]}),
            json!({"ratio": {"k": 3, "j": 3}}),
        ] {
            let err = check_arguments(&schema, &args).unwrap_err();
            assert!(err.contains("must be"), "{args}: {err}");
        }
    }

    /// Found by a review: `enum` compared an integer and a float by their `f64`s, and
    /// an integer past 2^53 has none of its own, so `9007199254740993` was taken for
    /// `"enum": [9007199254740992.0]` and `9007199254740992.0` for `"enum":
    /// [9007199254740993]` (both neither `"integer"` nor fitted). They compare exactly now.
    #[test]
    fn enum_values_past_two_to_the_53_compare_exactly() {
        let two_53 = 9_007_199_254_740_992u64;
        let schema = json!({"type": "object", "properties": {
            "float": {"enum": [two_53 as f64]},
            "int": {"enum": [two_53 + 1]},
            "number": {"type": "number", "enum": [two_53 + 1, -(two_53 as i64) - 1]},
            "huge": {"enum": [u64::MAX]}
        }});
        for args in [
            json!({"float": two_53 + 1}),
            json!({"int": two_53 as f64}),
            json!({"number": two_53 as f64}),
            json!({"number": -(two_53 as f64)}),
            json!({"huge": u64::MAX as f64}),
            json!({"int": two_53}),
        ] {
            let err = check_arguments(&schema, &args).unwrap_err();
            assert!(err.contains("must be one of"), "{args}: {err}");
        }
        for args in [
            json!({"float": two_53}),
            json!({"float": two_53 as f64}),
            json!({"int": two_53 + 1}),
            json!({"number": two_53 + 1}),
            json!({"number": -(two_53 as i64) - 1}),
            json!({"huge": u64::MAX}),
        ] {
            assert_eq!(check_arguments(&schema, &args), Ok(()), "{args}");
        }
        assert!(same_number(
            &Number::from(-3),
            &Number::from_f64(-3.0).unwrap()
        ));
        assert!(!same_number(
            &Number::from(-3),
            &Number::from_f64(-3.5).unwrap()
        ));
        assert!(!same_number(
            &Number::from(0),
            &Number::from_f64(1e300).unwrap()
        ));
    }

    /// Each integral float an `"integer"` type takes is written as that integer; numbers
    /// other types take, fractions and floats past 64 bits stay as written.
    #[test]
    fn integral_floats_are_fitted_to_integer_properties() {
        let schema = json!({"type": "object", "properties": {
            "int": {"type": "integer"},
            "either": {"type": ["integer", "number"]},
            "number": {"type": "number"},
            "untyped": {}
        }});
        let fitted = |args: Value| {
            let mut args = args;
            check_and_fit_arguments(&schema, &mut args).unwrap();
            args
        };
        let big = 2f64.powi(63);
        let past_u64 = 2f64.powi(64);
        assert_eq!(fitted(json!({"int": 2.0}))["int"], json!(2));
        assert!(fitted(json!({"int": -0.0}))["int"].is_u64());
        assert_eq!(fitted(json!({"int": -big}))["int"], json!(i64::MIN));
        assert_eq!(fitted(json!({"int": big}))["int"], json!(1u64 << 63));
        assert_eq!(fitted(json!({"either": -7.0}))["either"], json!(-7));
        for kept in [
            json!({"either": 2.5}),
            json!({"number": 2.0}),
            json!({"untyped": 2.0}),
            json!({"int": past_u64}),
            json!({"int": -2.0 * big}),
            json!({"int": 1e300}),
        ] {
            let args = fitted(kept.clone());
            let (name, value) = args.as_object().unwrap().iter().next().unwrap();
            assert!(value.is_f64() && *value == kept[name], "{kept}");
        }
        let mut top = json!(4.0);
        assert_eq!(
            check_and_fit_arguments(&json!({"type": "integer"}), &mut top),
            Ok(())
        );
        assert_eq!(top, json!(4));
    }

    /// Found by a review: a schema of one value (not an object) had its `type` checked
    /// but not its `enum`, so a model's `"c"` for `{"type": "string", "enum": ["a", "b"]}`
    /// ran the tool, where the same schema as a property's refused it.
    #[test]
    fn a_schema_of_one_value_is_checked_as_a_property_is() {
        let one_of = json!({"type": "string", "enum": ["a", "b"]});
        assert_eq!(check_arguments(&one_of, &json!("a")), Ok(()));
        assert_eq!(
            check_arguments(&one_of, &json!("c")).unwrap_err(),
            "the arguments must be one of \"a\", \"b\""
        );
        assert_eq!(
            check_arguments(&one_of, &json!(1)).unwrap_err(),
            "the arguments must be a string but is a number"
        );
        let untyped = json!({"enum": [1, 2]});
        assert_eq!(check_arguments(&untyped, &json!(2.0)), Ok(()));
        assert!(check_arguments(&untyped, &json!(3)).is_err());
    }

    #[test]
    fn non_objects_are_refused_for_object_schemas() {
        let err = check_arguments(&schema(), &json!(["x"])).unwrap_err();
        assert_eq!(err, "expected a JSON object but got an array");
        // No schema, no opinion.
        assert_eq!(check_arguments(&Value::Null, &json!(1)), Ok(()));
    }
}
