//! `SessionId`: the one validation rule every backend applies to session ids.
//!
//! Ids become file names, SQL values and Redis keys. Rather than escape differently per
//! backend, every backend accepts exactly the same set: 1 to 128 ASCII characters from
//! letters, digits and `- _ . @ : +`, not starting with `.`. That rules out directory
//! escapes (`/`, `\`, `.`, `..`), NUL bytes, Redis glob and hash-tag characters
//! (`* ? [ ] { }`), whitespace and anything that could normalise into another id.
//! `user-123`, `alice@example.com` and `tenant:42:chat-7` are all valid.

use std::fmt;

use crate::{Error, Result};

/// The longest accepted id, in bytes.
pub const MAX_LEN: usize = 128;

/// A validated session id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// The longest accepted id, in bytes.
    pub const MAX_LEN: usize = MAX_LEN;

    /// Validates `id`, returning [`Error::InvalidSessionId`] when it breaks the rule.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        Self::validate(&id)?;
        Ok(Self(id))
    }

    /// Checks `id` against the rule without allocating.
    pub fn validate(id: &str) -> Result<()> {
        let reason = if id.is_empty() {
            Some("it is empty".to_string())
        } else if id.len() > MAX_LEN {
            Some(format!(
                "it is {} bytes long; the limit is {MAX_LEN}",
                id.len()
            ))
        } else if id.starts_with('.') {
            Some("it starts with '.'".to_string())
        } else {
            id.chars().find(|&c| !is_allowed(c)).map(|c| {
                format!("it contains {c:?}; allowed are ASCII letters, digits and - _ . @ : +")
            })
        };
        match reason {
            None => Ok(()),
            Some(reason) => Err(Error::InvalidSessionId {
                id: preview(id),
                reason,
            }),
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':' | '+')
}

/// A printable, bounded rendering of a rejected id for error messages.
fn preview(id: &str) -> String {
    const SHOWN: usize = 64;
    let escaped: String = id
        .chars()
        .take(SHOWN)
        .flat_map(char::escape_debug)
        .collect();
    if id.chars().count() > SHOWN {
        format!("{escaped}…")
    } else {
        escaped
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for SessionId {
    type Error = Error;
    fn try_from(id: &str) -> Result<Self> {
        Self::new(id)
    }
}

impl TryFrom<String> for SessionId {
    type Error = Error;
    fn try_from(id: String) -> Result<Self> {
        Self::new(id)
    }
}

impl std::str::FromStr for SessionId {
    type Err = Error;
    fn from_str(id: &str) -> Result<Self> {
        Self::new(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for id in [
            "user-123",
            "alice@example.com",
            "tenant:42:chat-7",
            "a",
            "A_b+c.d",
            &"x".repeat(128),
        ] {
            assert!(SessionId::new(id).is_ok(), "{id} should be valid");
        }
    }

    #[test]
    fn rejects_hostile_ids() {
        let long = "x".repeat(5000);
        for id in [
            "", ".", "..", "../x", "a/b", "a\\b", "a\0b", ".hidden", "a b", "k*", "{tag}", "a?",
            "é", &long,
        ] {
            let err = SessionId::new(id).unwrap_err();
            assert!(
                matches!(err, Error::InvalidSessionId { .. }),
                "{id:?} gave {err}"
            );
        }
    }

    #[test]
    fn error_message_is_bounded_and_escaped() {
        let err = SessionId::new(format!("a\0{}", "y".repeat(5000)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a\\0"), "{err}");
        assert!(err.len() < 300, "{err}");
    }
}
