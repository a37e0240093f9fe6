//! A query string read as a handler's parameters, in one pass over its strictly decoded
//! fields ([`FormFields`]).
//!
//! A value whose bytes are not UTF-8 is refused naming its parameter, but only when the
//! handler reads that parameter: one it ignores (a tracking parameter a link carried
//! along) is no reason to refuse the page. axum's `Query` decodes lossily (U+FFFD in place
//! of such bytes, a filter that silently matched nothing), and reading the string strictly
//! first and then through it again refused every such parameter, read or not.

use std::fmt;
use std::str::FromStr;

use serde::de::value::MapDeserializer;
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
        bool f32 f64 char str string bytes byte_buf unit unit_struct newtype_struct seq
        tuple tuple_struct map struct enum identifier
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
