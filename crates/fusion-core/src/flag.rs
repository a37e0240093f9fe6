//! A yes-or-no setting given as text: an environment variable (`FUSION_STREAM`), a storage
//! URL's parameter (`publish_changes`). One reading for all, so every such setting takes
//! the same words.

use crate::{Error, Result};

/// The value of the yes-or-no setting `name` written as `text`: `1`, `true`, `yes`, `on`
/// or `0`, `false`, `no`, `off`, in any case, around spaces; anything else is
/// [`Error::Config`] naming the setting.
///
/// ```
/// assert!(fusion_core::parse_flag("FUSION_STREAM", " On").unwrap());
/// assert!(!fusion_core::parse_flag("FUSION_STREAM", "0").unwrap());
/// assert!(fusion_core::parse_flag("FUSION_STREAM", "maybe").is_err());
/// ```
pub fn parse_flag(name: &str, text: &str) -> Result<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::Config(format!(
            "{name} must be true or false (or 1/0), not \"{}\"",
            text.trim()
        ))),
    }
}
