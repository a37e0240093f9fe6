//! A query string read as a handler's parameters, in one pass over its strictly decoded
//! fields ([`FormFields`]).
//!
//! A value whose bytes are not UTF-8 is refused naming its parameter, but only when the
//! handler reads that parameter: one it ignores (a tracking parameter a link carried
//! along) is no reason to refuse the page. axum's `Query` decodes lossily (U+FFFD in place
//! of such bytes, a filter that silently matched nothing), and reading the string strictly
//! first and then through it again refused every such parameter, read or not.
//!
//! Values are read as `serde_urlencoded` reads them: text, whole numbers, decimal numbers
//! (finite ones), `true`/`false` for a bool, a unit variant's name for an enum, and a
//! newtype struct (`struct Page(u32)`) as what it wraps.

use std::fmt;
use std::str::FromStr;

use serde::de::value::{MapDeserializer, StringDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use super::form::FormFields;

/// `fields` as `T`, or what is wrong with them, in a sentence for a 400 page.
pub(crate) fn read<T: DeserializeOwned>(fields: FormFields) -> Result<T, QueryError> {
    let values = fields
        .into_pairs()
        .map(|(name, text)| (name.clone(), Value { name, text }));
    T::deserialize(MapDeserializer::new(values))
}

/// Why a query string cannot be read as a handler's parameters.
#[derive(Debug)]
pub(crate) struct QueryError(String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

impl de::Error for QueryError {
    /// What serde finds wrong with the parameters as a whole (a parameter given twice).
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(format!("The query string is not understood: {msg}."))
    }
}

/// One parameter's value: text, or `None` when its bytes are not UTF-8. Read only when
/// the handler's parameters have a field of its name.
struct Value {
    name: String,
    text: Option<String>,
}

impl Value {
    fn text(self) -> Result<String, QueryError> {
        self.text.ok_or_else(|| {
            QueryError(format!(
                "The query parameter {:?} is not text (its bytes are not UTF-8).",
                self.name
            ))
        })
    }

    fn number<N: FromStr>(self) -> Result<N, QueryError> {
        let name = self.name.clone();
        let text = self.text()?;
        text.trim().parse().map_err(|_| {
            QueryError(format!(
                "The query parameter {name:?} is {text:?}, not a whole number."
            ))
        })
    }

    /// A decimal number (`1.5`, `-2`, `1e3`), finite: `NaN` and `inf` are no value a
    /// page's parameter means.
    fn decimal(self) -> Result<f64, QueryError> {
        let name = self.name.clone();
        let text = self.text()?;
        match text.trim().parse::<f64>() {
            Ok(number) if number.is_finite() => Ok(number),
            _ => Err(QueryError(format!(
                "The query parameter {name:?} is {text:?}, not a number."
            ))),
        }
    }
}

impl<'de> IntoDeserializer<'de, QueryError> for Value {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// `fn $method`: the value parsed as a number, given to the visitor's `$visit`.
macro_rules! numbers {
    ($($method:ident => $visit:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
            visitor.$visit(self.number()?)
        }
    )*};
}

impl<'de> Deserializer<'de> for Value {
    type Error = QueryError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_string(self.text()?)
    }

    /// `true` or `false` (around spaces, as a number may be), as `serde_urlencoded` reads
    /// one: a bool field no longer refused every value as "a string".
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        let name = self.name.clone();
        let text = self.text()?;
        match text.trim() {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            _ => Err(QueryError(format!(
                "The query parameter {name:?} is {text:?}, not true or false."
            ))),
        }
    }

    /// The value names a unit variant, as `serde_urlencoded` reads one (`sort=newest`):
    /// an enum field no longer refused every value as "a string".
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, QueryError> {
        let name = self.name.clone();
        let text = self.text()?;
        let variant: StringDeserializer<de::value::Error> = text.clone().into_deserializer();
        visitor
            .visit_enum(variant)
            .map_err(|err| QueryError(format!("The query parameter {name:?} is {text:?}: {err}.")))
    }

    /// A decimal number, as `serde_urlencoded` reads one: an `f64` field was refused
    /// whatever its value ("invalid type: string").
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_f64(self.decimal()?)
    }

    /// As [`Self::deserialize_f64`], and within an `f32`'s range (one past it would be
    /// infinite).
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        let name = self.name.clone();
        let text = self.text.clone();
        let number = self.decimal()? as f32;
        if !number.is_finite() {
            return Err(QueryError(format!(
                "The query parameter {name:?} is {:?}, too large a number.",
                text.unwrap_or_default()
            )));
        }
        visitor.visit_f32(number)
    }

    /// The value read as what the newtype wraps, as `serde_urlencoded` reads it: a
    /// `struct Page(u32)` field was refused whatever its value ("invalid type: string").
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, QueryError> {
        visitor.visit_newtype_struct(self)
    }

    /// A parameter that is present has a value, if an empty one.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_some(self)
    }

    /// A parameter the handler does not read: never looked at, whatever its bytes.
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_unit()
    }

    numbers! {
        deserialize_u8 => visit_u8, deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32, deserialize_u64 => visit_u64,
        deserialize_i8 => visit_i8, deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32, deserialize_i64 => visit_i64,
    }

    forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Window {
        before: Option<usize>,
        tag: Option<String>,
        #[serde(default)]
        name: String,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Order {
        Newest,
        Oldest,
    }

    /// Parameters of kinds no handler reads yet, as one added later would be.
    #[derive(Debug, Deserialize)]
    struct Flags {
        #[serde(default)]
        all: bool,
        wide: Option<bool>,
        order: Option<Order>,
    }

    fn flags(query: &'static str) -> Result<Flags, String> {
        read(FormFields::parse(&Bytes::from_static(query.as_bytes()))).map_err(|e| e.0)
    }

    /// A bool or enum field was refused whatever its value ("invalid type: string"):
    /// every value was handed over as a string. They read as `serde_urlencoded` reads them.
    #[test]
    fn bool_and_enum_fields_read_as_serde_urlencoded_reads_them() {
        let read = flags("all=true&wide=false&order=oldest").unwrap();
        assert_eq!(
            (read.all, read.wide, read.order),
            (true, Some(false), Some(Order::Oldest))
        );
        let none = flags("junk=%FF").unwrap();
        assert_eq!((none.all, none.wide, none.order), (false, None, None));
        for (query, said) in [
            (
                "all=yes",
                r#"The query parameter "all" is "yes", not true or false."#,
            ),
            ("wide=%FF", r#"The query parameter "wide" is not text"#),
            (
                "order=sideways",
                r#"The query parameter "order" is "sideways": unknown variant `sideways`"#,
            ),
        ] {
            let err = flags(query).unwrap_err();
            assert!(err.contains(said), "{query}: {err}");
        }
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Page(u32);

    /// Parameters of kinds no handler reads yet, as one added later would be.
    #[derive(Debug, Deserialize)]
    struct Zoom {
        scale: Option<f64>,
        ratio: Option<f32>,
        page: Option<Page>,
    }

    fn zoom(query: &'static str) -> Result<Zoom, String> {
        read(FormFields::parse(&Bytes::from_static(query.as_bytes()))).map_err(|e| e.0)
    }

    /// A decimal or newtype field was refused whatever its value ("invalid type:
    /// string"), as bool and enum fields were. They read as `serde_urlencoded` reads them.
    #[test]
    fn decimal_and_newtype_fields_read_as_serde_urlencoded_reads_them() {
        let read = zoom("scale=1.5&ratio=-2e-1&page=+3").unwrap();
        assert_eq!(
            (read.scale, read.ratio, read.page),
            (Some(1.5), Some(-0.2), Some(Page(3)))
        );
        let none = zoom("junk=%FF").unwrap();
        assert_eq!((none.scale, none.ratio, none.page), (None, None, None));
        for (query, said) in [
            (
                "scale=big",
                r#"The query parameter "scale" is "big", not a number."#,
            ),
            ("scale=NaN", r#""scale" is "NaN", not a number."#),
            ("ratio=inf", r#""ratio" is "inf", not a number."#),
            ("ratio=1e39", r#""ratio" is "1e39", too large a number."#),
            ("scale=%FF", r#"The query parameter "scale" is not text"#),
            ("page=-1", r#""page" is "-1", not a whole number."#),
        ] {
            let err = zoom(query).unwrap_err();
            assert!(err.contains(said), "{query}: {err}");
        }
    }

    fn window(query: &'static str) -> Result<Window, String> {
        read(FormFields::parse(&Bytes::from_static(query.as_bytes()))).map_err(|e| e.0)
    }

    #[test]
    fn the_parameters_read_are_refused_for_their_bytes_and_no_others() {
        let read = window("before=+7&tag=a+b%2Fc&junk=%FF&name=%E2%82%AC").unwrap();
        assert_eq!(read.before, Some(7));
        assert_eq!(read.tag.as_deref(), Some("a b/c"));
        assert_eq!(read.name, "\u{20ac}");
        let none = window("").unwrap();
        assert_eq!(
            (none.before, none.tag, none.name),
            (None, None, String::new())
        );

        for (query, said) in [
            ("tag=%FF", r#"The query parameter "tag" is not text"#),
            ("name=%C3%28", r#"The query parameter "name" is not text"#),
            (
                "before=x",
                r#"The query parameter "before" is "x", not a whole number."#,
            ),
            ("before=-1", r#""before" is "-1", not a whole number."#),
            (
                "tag=a&tag=b",
                "The query string is not understood: duplicate field `tag`.",
            ),
        ] {
            let err = window(query).unwrap_err();
            assert!(err.contains(said), "{query}: {err}");
        }
    }
}
