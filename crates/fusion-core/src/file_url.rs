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

#[cfg(unix)]
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::url_param::percent_decode_bytes;
use crate::{Error, Result, refuse_query};

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
    let decoded = percent_decode_bytes(path);
    // A Unix path is bytes, so an escape may stand for one that is not UTF-8 (as `to_url`
    // writes it); elsewhere a path is text.
    #[cfg(unix)]
    return Ok(PathBuf::from(std::ffi::OsString::from_vec(decoded)));
    #[cfg(not(unix))]
    String::from_utf8(decoded)
        .map(|decoded| PathBuf::from(windows_drive(decoded)))
        .map_err(|_| Error::Config(format!("{url}: the decoded path is not valid UTF-8")))
}

/// On Windows, `/C:/dir` (the path of `file:///C:/dir`) is `C:/dir`; elsewhere it stays as
/// it is, a valid absolute path.
#[cfg(not(unix))]
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
    // A Unix path is bytes: those that are not UTF-8 are escaped, where `display` would
    // show U+FFFD and so name another directory. Elsewhere a path shows as text.
    #[cfg(unix)]
    let bytes = dir.as_os_str().as_bytes();
    #[cfg(not(unix))]
    let text = dir.to_string_lossy();
    #[cfg(not(unix))]
    let bytes = text.as_bytes();
    let mut escaped = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        escaped.push_str(
            &chunk
                .valid()
                .replace('%', "%25")
                .replace('?', "%3F")
                .replace('#', "%23"),
        );
        push_escapes(&mut escaped, chunk.invalid());
    }
    let trailing = escaped.len() - escaped.trim_end().len();
    let blanks = escaped.split_off(escaped.len() - trailing);
    push_escapes(&mut escaped, blanks.as_bytes());
    if escaped.is_empty() {
        // The empty path is the working directory wherever a path is read.
        "file://.".to_string()
    } else if dir.is_absolute() && !escaped.starts_with('/') {
        format!("file:///{escaped}")
    } else {
        format!("file://{escaped}")
    }
}

/// Appends `bytes` to `url` as `%XX` escapes.
fn push_escapes(url: &mut String, bytes: &[u8]) {
    for byte in bytes {
        url.push_str(&format!("%{byte:02X}"));
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
        #[cfg(not(unix))]
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

    #[cfg(unix)]
    #[test]
    fn a_name_that_is_not_utf8_reads_back_on_unix() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;

        // A Unix path is bytes: its URL escapes those that are not UTF-8 rather than
        // showing U+FFFD, which would read back as another directory.
        let path = Path::new(OsStr::from_bytes(b"/tmp/caf\xe9 %/x"));
        let url = to_url(path);
        assert_eq!(url, "file:///tmp/caf%E9 %25/x");
        assert_eq!(dir(&url), path);
        assert_eq!(
            dir("file:///a%FF").as_os_str().as_bytes(),
            b"/a\xff".as_slice()
        );
    }
}
