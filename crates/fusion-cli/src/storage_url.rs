//! What `--storage`, `FUSION_STORAGE`, `--from` and `--to` name: a storage URL or a plain
//! directory path, with the `~` a shell would have expanded.

use std::path::PathBuf;

use anyhow::{Context, Result};
use fusion::storage::StorageType;

/// Parses a storage URL, falling back to `<data dir>/fusion/sessions`.
pub fn storage_type(url: Option<&str>) -> Result<StorageType> {
    match url {
        Some(url) => parse_storage(url),
        None => {
            let dir = dirs::data_dir().context(
                "cannot find your data directory for the default storage; pass --storage URL",
            )?;
            Ok(StorageType::FileSystem(dir.join("fusion").join("sessions")))
        }
    }
}

/// Parses one storage URL, naming it in the error. A path that is `~` or starts with `~/`
/// (plain, or as a `file://` URL) is taken from the home directory, as a shell would
/// expand it: a value of `FUSION_STORAGE` read from a file, or a quoted argument, never
/// went through one, and a directory named `~` is never what was meant. Any other `~`
/// (another user's `~name`, or `~` without HOME) is refused for the same reason. (A SQLite
/// URL's `~` is refused by its parser.)
pub fn parse_storage(url: &str) -> Result<StorageType> {
    let path = url.strip_prefix("file://").unwrap_or(url);
    let expanded = match (path.strip_prefix('~'), std::env::var_os("HOME")) {
        (None, _) => url.to_string(),
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => PathBuf::from(home)
            .join(rest.trim_start_matches('/'))
            .display()
            .to_string(),
        (Some(_), home) => anyhow::bail!(
            "invalid storage URL {url}: its ~ {}; write the full path",
            if home.is_some() {
                "names another user's home directory, which is not looked up here"
            } else {
                "cannot be expanded, HOME being unset"
            }
        ),
    };
    // The parser's own message already names the URL (with any password hidden).
    expanded
        .parse::<StorageType>()
        .context("invalid storage URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_names_the_scheme() {
        let err = parse_storage("mongodb://h/db").unwrap_err();
        assert!(format!("{err:#}").contains("mongodb://"), "{err:#}");
    }
}
