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

/// Parses one storage URL, naming it in the error. A directory that is `~` or starts with
/// `~/`, however it was written (a plain path, `file://~/x`, `FILE://~/x`, with spaces
/// around it or percent escapes in it), is taken from the home directory, as a shell would
/// expand it: a value of `FUSION_STORAGE` read from a file, or a quoted argument, never
/// went through one, and a directory named `~` is never what was meant. Any other leading
/// `~` (another user's `~name`, or `~` without HOME) is refused for the same reason. The
/// URL is parsed first, so the `~` is looked for in the directory the parser read, not in
/// the text. (A SQLite URL's `~` is refused by its parser.)
pub fn parse_storage(url: &str) -> Result<StorageType> {
    // The parser's own message already names the URL (with any password hidden).
    let storage = url.parse::<StorageType>().context("invalid storage URL")?;
    let StorageType::FileSystem(dir) = &storage else {
        return Ok(storage);
    };
    let tilde = dir
        .components()
        .next()
        .is_some_and(|first| first.as_os_str().to_string_lossy().starts_with('~'));
    if !tilde {
        return Ok(storage);
    }
    match (dir.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) if rest.as_os_str().is_empty() => {
            Ok(StorageType::FileSystem(PathBuf::from(home)))
        }
        (Ok(rest), Some(home)) => Ok(StorageType::FileSystem(PathBuf::from(home).join(rest))),
        (_, home) => anyhow::bail!(
            "invalid storage URL {}: its ~ {}; write the full path",
            url.trim(),
            if home.is_none() {
                "cannot be expanded, HOME being unset"
            } else {
                "names another user's home directory, which is not looked up here"
            }
        ),
    }
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
