//! Where a [`FileSystemStorage`](crate::FileSystemStorage) keeps its files: the location
//! given to `connect` (a path or a `file://` URL) and the directory it names.

use std::io;
use std::path::{Path, PathBuf};

use fusion_core::{Error, Result, file_url};

/// The directory named by `location`: the path itself, or the directory a `file:` URL
/// names, read as `fusion::StorageType` reads it ([`file_url::directory`]: everything after
/// `file://` is the path, so `file://sessions` is `sessions` and `file:///var/lib/app` is
/// `/var/lib/app`; the path is percent-decoded, and a query or fragment is refused).
pub(crate) fn directory(location: &Path) -> Result<PathBuf> {
    match location.to_str().and_then(file_url::strip_scheme) {
        Some(rest) => file_url::directory(rest),
        None => Ok(location.to_path_buf()),
    }
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
            ("file://localhost/x", "localhost/x"),
            ("FILE:/var/lib/app", "/var/lib/app"),
            ("file:///tmp/my%20dir", "/tmp/my dir"),
        ] {
            assert_eq!(directory(Path::new(location)).unwrap(), Path::new(dir));
        }
        for refused in ["file://", "file:sessions", "file://d?x=1"] {
            assert!(
                matches!(directory(Path::new(refused)), Err(Error::Config(_))),
                "{refused}"
            );
        }
    }
}
