//! Where a [`FileSystemStorage`](crate::FileSystemStorage) keeps its files: the location
//! given to `connect` (a path or a `file://` URL) and the directory it names.

use std::io;
use std::path::{Path, PathBuf};

use fusion_core::{Error, Result};

/// The scheme `connect` accepts in front of a directory, as `fusion::StorageType` does.
const FILE_SCHEME: &str = "file://";

/// The directory named by `location`: the path itself, or what follows `file://`
/// (`file://./sessions` is `./sessions`, `file:///var/lib/app` is `/var/lib/app`).
pub(crate) fn directory(location: &Path) -> Result<PathBuf> {
    let Some(rest) = location.to_str().and_then(|s| s.strip_prefix(FILE_SCHEME)) else {
        return Ok(location.to_path_buf());
    };
    if rest.is_empty() {
        return Err(Error::Config(
            "file:// URL needs a directory, e.g. file://./sessions".into(),
        ));
    }
    Ok(PathBuf::from(rest))
}

/// Creates `dir` and its parents unless it exists.
///
/// When a file stands where a directory must be, the error names that file rather than
/// repeating the operating system's bare "File exists" or "Not a directory".
pub(crate) fn create(dir: &Path) -> Result<()> {
    // Synced into its parent whatever the policy: every policy makes some writes durable
    // in it.
    let Err(err) = crate::dirs::create_io(dir, true) else {
        return Ok(());
    };
    if let Some(file) = dir
        .ancestors()
        .find(|path| path.exists())
        .filter(|path| !path.is_dir())
    {
        let detail = format!(
            "is not a directory, so the session directory {} cannot be created",
            dir.display()
        );
        return Err(Error::io(
            file,
            io::Error::new(io::ErrorKind::NotADirectory, detail),
        ));
    }
    let detail = format!("cannot create the session directory: {err}");
    Err(Error::io(dir, io::Error::new(err.kind(), detail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_file_urls_name_the_same_directory() {
        for (location, dir) in [
            ("sessions", "sessions"),
            ("./a/b", "./a/b"),
            ("/var/lib/app", "/var/lib/app"),
            ("file://./sessions", "./sessions"),
            ("file:///var/lib/app", "/var/lib/app"),
            ("file://sessions", "sessions"),
        ] {
            assert_eq!(directory(Path::new(location)).unwrap(), Path::new(dir));
        }
        assert!(matches!(
            directory(Path::new("file://")),
            Err(Error::Config(_))
        ));
    }
}
