//! The body of a posted HTML form (`application/x-www-form-urlencoded`), read as name and
//! value pairs.
//!
//! Read by hand rather than with axum's `Form` extractor: a form may repeat a name (the
//! checkboxes of bulk delete all send `id`), which a struct cannot hold, and this keeps
//! axum's `form` feature out of the build for one helper.

use axum::body::Bytes;

use crate::html::PageError;

/// A posted form's fields, in the order the browser sent them.
#[derive(Debug, Default)]
pub(crate) struct FormFields(Vec<(String, String)>);

impl FormFields {
    /// The fields of `body`.
    pub(crate) fn parse(body: &Bytes) -> Self {
        Self(
            url::form_urlencoded::parse(body)
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    /// The first value of field `name`, if the form sent it.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of field `name`, or a 400 saying the form lacks it.
    pub(crate) fn required(&self, name: &str) -> Result<&str, PageError> {
        self.get(name)
            .ok_or_else(|| PageError::bad_request(format!("The form has no field {name:?}.")))
    }

    /// Every value of field `name`, trimmed, the empty ones left out.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(field, _)| field == name)
            .map(|(_, value)| value.trim().to_string())
            .filter(|value| !value.is_empty())
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_and_escapes_are_read() {
        let form = FormFields::parse(&Bytes::from_static(b"id=a%2Fb&id=+c+&id=&n=7&t=x+y"));
        assert_eq!(form.all("id"), ["a/b", "c"]);
        assert_eq!(form.get("t"), Some("x y"));
        assert_eq!(form.number::<usize>("n").unwrap(), 7);
        assert!(form.number::<usize>("t").is_err());
        assert!(form.required("missing").is_err());
    }
}
