//! The body of a posted HTML form (`application/x-www-form-urlencoded`), read as name and
//! value pairs.
//!
//! Read by hand rather than with axum's `Form` extractor: a form may repeat a name (the
//! checkboxes of bulk delete all send `id`), which a struct cannot hold, and this keeps
//! axum's `form` feature out of the build for one helper.
//!
//! As an extractor, a body of another type (JSON, `multipart/form-data`, text) is a 415
//! saying what is expected. It was read as a form all the same: JSON's `{"title": "x"}`
//! was a 400 saying the form has no field "title", which it seemed to have, and a text
//! body holding `title=x` renamed the session.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;

use crate::html::PageError;

/// The type of the body [`FormFields`] reads, the one HTML forms and htmx send.
const FORM_TYPE: &str = "application/x-www-form-urlencoded";

/// A posted form's fields, in the order the browser sent them: each value as text, or
/// `None` when its bytes are not UTF-8 (which a browser never sends from our pages).
#[derive(Debug, Default)]
pub(crate) struct FormFields(Vec<(String, Option<String>)>);

impl FormFields {
    /// The fields of `body` (`name=value` pairs joined by `&`, `+` for a space, `%XX` for
    /// a byte). Values are decoded strictly: one whose bytes are not UTF-8 is kept as
    /// invalid, so that reading it is a 400 rather than text with U+FFFD in place of what
    /// was sent (`form_urlencoded::parse` decodes lossily).
    pub(crate) fn parse(body: &Bytes) -> Self {
        let fields = body
            .split(|&byte| byte == b'&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = match pair.iter().position(|&byte| byte == b'=') {
                    Some(at) => (&pair[..at], &pair[at + 1..]),
                    None => (pair, &[][..]),
                };
                let name = String::from_utf8_lossy(&decode(name)).into_owned();
                (name, String::from_utf8(decode(value)).ok())
            })
            .collect();
        Self(fields)
    }

    /// The first value of field `name`, or a 400 saying the form lacks it or that it is
    /// not text.
    pub(crate) fn required(&self, name: &str) -> Result<&str, PageError> {
        match self.0.iter().find(|(field, _)| field == name) {
            Some((_, Some(value))) => Ok(value),
            Some((_, None)) => Err(not_text(name)),
            None => Err(PageError::bad_request(format!(
                "The form has no field {name:?}."
            ))),
        }
    }

    /// Whether the form has a field `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(field, _)| field == name)
    }

    /// Every value of field `name`, trimmed, the empty ones left out; a 400 if one is not
    /// text.
    pub(crate) fn all(&self, name: &str) -> Result<Vec<String>, PageError> {
        let mut values = Vec::new();
        for (_, value) in self.0.iter().filter(|(field, _)| field == name) {
            let value = value.as_deref().ok_or_else(|| not_text(name))?.trim();
            if !value.is_empty() {
                values.push(value.to_string());
            }
        }
        Ok(values)
    }

    /// Every field, name and value (`None` where not UTF-8), in the order sent.
    pub(crate) fn into_pairs(self) -> impl Iterator<Item = (String, Option<String>)> {
        self.0.into_iter()
    }

    /// Field `name` as a whole number, or a 400 saying what is wrong with it.
    pub(crate) fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T, PageError> {
        let text = self.required(name)?;
        text.trim().parse().map_err(|_| {
            PageError::bad_request(format!(
                "The field {name:?} is {text:?}, not a whole number."
            ))
        })
    }
}

/// Extractor: the request's body as a form: a 415 when it says it is something else
/// (one that says nothing, a program's empty post, is read as a form), and what axum
/// refuses before (a body over its size limit: a 413) as a page.
impl<S: Send + Sync> FromRequest<S> for FormFields {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &S) -> Result<Self, PageError> {
        if let Some(given) = request.headers().get(CONTENT_TYPE) {
            let essence = given.to_str().unwrap_or_default();
            let essence = essence.split(';').next().unwrap_or_default().trim();
            if !essence.eq_ignore_ascii_case(FORM_TYPE) {
                return Err(PageError::with_status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "This address takes a form ({FORM_TYPE}), and the request's body \
                         is {:?}; nothing was changed.",
                        String::from_utf8_lossy(given.as_bytes())
                    ),
                ));
            }
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|refused| PageError::with_status(refused.status(), refused.body_text()))?;
        Ok(Self::parse(&body))
    }
}

/// The 400 for a field whose bytes are not UTF-8 text.
fn not_text(name: &str) -> PageError {
    PageError::bad_request(format!(
        "The field {name:?} is not text (its bytes are not UTF-8); nothing was changed."
    ))
}

/// `raw` with `+` read as a space and each `%XX` as the byte it names; a `%` not followed
/// by two hex digits stays as it is, as browsers and `form_urlencoded` read it.
fn decode(raw: &[u8]) -> Vec<u8> {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escaped = match raw.get(i..i + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)),
            _ => None,
        };
        match (escaped, raw[i]) {
            (Some((high, low)), _) => {
                bytes.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
            (None, b'+') => bytes.push(b' '),
            (None, byte) => bytes.push(byte),
        }
        i += 1;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_and_escapes_are_read() {
        let form = FormFields::parse(&Bytes::from_static(
            b"id=a%2Fb&id=+c+&id=&n=7&t=x+y%e2%82%ac&p=100%&q=%zz&&flag",
        ));
        assert_eq!(form.all("id").unwrap(), ["a/b", "c"]);
        assert_eq!(form.required("t").unwrap(), "x y\u{20ac}");
        assert_eq!(form.required("p").unwrap(), "100%");
        assert_eq!(form.required("q").unwrap(), "%zz");
        assert_eq!(form.required("flag").unwrap(), "");
        assert_eq!(form.number::<usize>("n").unwrap(), 7);
        assert!(form.number::<usize>("t").is_err());
        assert!(form.required("missing").is_err());
    }

    #[test]
    fn a_value_that_is_not_utf8_is_refused_where_it_is_read() {
        let form = FormFields::parse(&Bytes::from_static(
            b"title=%FF%FEabc&add=ok&add=%C3%28&id=%EF%BF%BD",
        ));
        for err in [
            form.required("title").unwrap_err(),
            form.all("add").unwrap_err(),
        ] {
            assert!(format!("{err:?}").contains("not text"), "{err:?}");
        }
        // A U+FFFD sent as such is text like any other.
        assert_eq!(form.required("id").unwrap(), "\u{fffd}");
    }
}
