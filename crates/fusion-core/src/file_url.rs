//! `file:` storage URLs: the directory one names, and a directory written as one that reads
//! back as that directory. One reading for the `fusion` facade's `StorageType` and for
//! `FileSystemStorage::connect`, so the two never disagree.
//!
//! Fusion's convention, as documented for `file://DIR` beside `sqlite://FILE`: everything
//! after `file://` is the path, relative or absolute (`file://sessions` is `./sessions`,
//! `file:///var/lib/fusion` is `/var/lib/fusion`, `file://localhost/x` the relative path
//! `localhost/x`). `file:/abs` is `/abs` too, as in RFC 8089. The path is percent-decoded;
//! `file:rel` (no `//`, not absolute), an empty path, an escaped `/` (`%2F`), a query and a
//! fragment are refused.

use std::path::{Path, PathBuf};

use crate::{Error, Result, percent_decode, refuse_query};

/// What follows the `file:` scheme of `text`, which may be written in any case (`FILE:`),
/// or `None` when `text` does not start with that scheme.
///
/// ```
/// assert_eq!(fusion_core::file_url::strip_scheme("FILE:///srv"), Some("///srv"));
/// assert_eq!(fusion_core::file_url::strip_scheme("./file:x"), None);
/// ```
pub fn strip_scheme(text: &str) -> Option<&str> {
    let scheme = text.get(..5)?;
    scheme
        .eq_ignore_ascii_case("file:")
        .then(|| &text[scheme.len()..])
}

/// The directory named by a `file:` URL whose scheme was taken off, `rest` being what
/// followed `file:` (see the module docs for the convention). Errors name the URL and what
/// to write instead.
///
/// ```
/// use std::path::Path;
/// use fusion_core::file_url::directory;
/// assert_eq!(directory("//sessions").unwrap(), Path::new("sessions"));
/// assert_eq!(directory("///var/lib/fusion").unwrap(), Path::new("/var/lib/fusion"));
/// assert_eq!(directory("/srv/my%20dir").unwrap(), Path::new("/srv/my dir"));
/// assert!(directory("sessions").is_err());
/// ```
pub fn directory(rest: &str) -> Result<PathBuf> {
    let url = format!("file:{rest}");
    refuse_query(&url, "file://")?;
    let path = match rest.strip_prefix("//") {
        Some(path) => path,
        None if rest.starts_with('/') => rest,
        None => {
            return Err(Error::Config(format!(
                "{url} is not a file URL: write file://DIR (relative or absolute, as file:///var/lib/fusion) or a plain directory path"
            )));
        }
    };
    if path.is_empty() {
        return Err(Error::Config(format!(
            "{url} names no directory; write file://sessions, file:///var/lib/fusion or a plain path"
        )));
    }
    if path.to_ascii_lowercase().contains("%2f") {
        return Err(Error::Config(format!(
            "{url}: an escaped `/` (%2F) cannot be part of a directory's name; write `/`"
        )));
    }
    let decoded = percent_decode(path)
        .ok_or_else(|| Error::Config(format!("{url}: the decoded path is not valid UTF-8")))?;
    Ok(PathBuf::from(windows_drive(decoded)))
}

/// On Windows, `/C:/dir` (the path of `file:///C:/dir`) is `C:/dir`; elsewhere it stays as
/// it is, a valid absolute path.
fn windows_drive(path: String) -> String {
    let bytes = path.as_bytes();
    let drive = bytes.len() >= 3 && bytes[0] == b'/' && bytes[1].is_ascii_alphabetic();
    if cfg!(windows) && drive && bytes[2] == b':' {
        path[1..].to_string()
    } else {
        path
    }
}

/// `dir` as a `file://` URL that [`directory`] reads back as `dir`: `file://` and the path,
/// with `%`, `?` and `#` escaped, and whitespace at the end too, which a reader that trims
/// what it is given (as `fusion::StorageType`'s parser) would drop (`file:///` for an
/// absolute path that does not start with `/`, as `C:\dir`; `file://.` for the empty path).
///
/// ```
/// use std::path::Path;
/// use fusion_core::file_url::to_url;
/// assert_eq!(to_url(Path::new("sessions")), "file://sessions");
/// assert_eq!(to_url(Path::new("/tmp/a b?")), "file:///tmp/a b%3F");
/// assert_eq!(to_url(Path::new("/tmp/a b ")), "file:///tmp/a b%20");
/// ```
pub fn to_url(dir: &Path) -> String {
    let text = dir.display().to_string();
    let kept = text.trim_end();
    let mut escaped = kept
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    for byte in text[kept.len()..].bytes() {
        escaped.push_str(&format!("%{byte:02X}"));
    }
    if escaped.is_empty() {
        // The empty path is the working directory wherever a path is read.
        "file://.".to_string()
    } else if dir.is_absolute() && !escaped.starts_with('/') {
        format!("file:///{escaped}")
    } else {
        format!("file://{escaped}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(url: &str) -> PathBuf {
        let rest = strip_scheme(url).unwrap_or_else(|| panic!("{url} is not a file URL"));
        directory(rest).unwrap_or_else(|err| panic!("{url}: {err}"))
    }

    fn refused(url: &str) -> String {
        match strip_scheme(url).map(directory) {
            Some(Err(Error::Config(message))) => message,
            other => panic!("{url} was not refused: {other:?}"),
        }
    }

    #[test]
    fn everything_after_the_slashes_is_the_path() {
        for (url, path) in [
            ("file://sessions", "sessions"),
            ("file://localhost/x", "localhost/x"),
            ("file://./sessions", "./sessions"),
            ("file://../up/s", "../up/s"),
            ("file://~/sessions", "~/sessions"),
            ("file://.", "."),
            ("file:///var/lib/fusion", "/var/lib/fusion"),
            ("FILE:///srv/", "/srv/"),
            // `file:/abs` is the minimal form of `file:///abs` (RFC 8089).
            ("file:/var/lib/fusion", "/var/lib/fusion"),
        ] {
            assert_eq!(dir(url), Path::new(path), "{url}");
        }
        for url in ["file:sessions", "file:", "file:./s"] {
            let message = refused(url);
            assert!(message.contains("is not a file URL"), "{url}: {message}");
        }
        for url in ["file://", "file://?"] {
            refused(url);
        }
        assert!(refused("file://").contains("names no directory"));
    }

    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(dir("file:///tmp/my%20dir"), Path::new("/tmp/my dir"));
        assert_eq!(dir("file://a%3Fb%23c%25"), Path::new("a?b#c%"));
        assert!(refused("file:///a%2Fb").contains("%2F"));
        assert!(refused("file:///a%FF").contains("not valid UTF-8"));
    }

    #[test]
    fn a_query_or_fragment_is_refused_naming_no_value() {
        for (url, key) in [
            ("file://d?x=1", "x"),
            ("file:///d?sync=every_write&y", "sync"),
            ("file:/d?&pass=secret", "pass"),
        ] {
            let message = refused(url);
            assert!(
                message.contains(&format!("unknown query parameter `{key}`")),
                "{url}: {message}"
            );
            assert!(
                !message.contains("secret") && !message.contains("=1"),
                "{message}"
            );
        }
        for url in ["file://d?", "file://./d#x", "file:///d?#"] {
            let message = refused(url);
            assert!(
                message.contains("takes no query or fragment"),
                "{url}: {message}"
            );
        }
    }

    #[test]
    fn a_directorys_url_reads_back_as_that_directory() {
        for path in [
            "/var/lib/fusion",
            "/srv/sessions/",
            "./sessions",
            "../up",
            "sessions",
            "localhost/x",
            "file:/x",
            "~/literal",
            ".hidden",
            "/tmp/a b?c#d%20e",
        ] {
            let url = to_url(Path::new(path));
            assert_eq!(dir(&url), Path::new(path), "{path} -> {url}");
        }
        assert_eq!(dir(&to_url(Path::new(""))), Path::new("."));
        assert_eq!(to_url(Path::new("/srv/s")), "file:///srv/s");
    }

    #[test]
    fn trailing_whitespace_survives_a_reader_that_trims() {
        // The facade's parser trims the URL it is given, as a value from a shell or a
        // config file may carry blanks: a name ending in one must not lose it.
        for path in ["/tmp/d ", "sessions\t", "a b\n", "x\u{3000}"] {
            let url = to_url(Path::new(path));
            assert_eq!(dir(url.trim()), Path::new(path), "{path:?} -> {url}");
        }
        assert_eq!(to_url(Path::new("/a b ")), "file:///a b%20");
    }
}
