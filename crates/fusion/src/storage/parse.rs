//! Reading a storage URL into a [`StorageType`], and writing a directory as a `file://` URL
//! that reads back as the same directory.
//!
//! A string is a URL when it starts with a scheme this crate knows, in any case (`FILE:`,
//! `Redis:`), or with any other scheme followed by `//`; anything else is a directory path
//! (`C:\sessions` and `notes:2024` too). A URL that names nothing this crate can open
//! (another host, a query option, a path after `memory://`) is refused, naming what is
//! wrong, rather than read as a directory of that name.

use std::path::{Path, PathBuf};

use fusion_core::{Error, Result, UrlQueryProblem, redact_url, url_query_problem};

use super::StorageType;
use super::location::percent_decode;

/// The schemes of the Redis backend: one server, or a cluster, with or without TLS.
const REDIS_SCHEMES: [&str; 4] = ["redis", "rediss", "redis+cluster", "rediss+cluster"];

/// Parses a storage URL or directory path, as [`StorageType`]'s `FromStr` documents.
pub(super) fn storage_type(url: &str) -> Result<StorageType> {
    let url = url.trim();
    if url.is_empty() {
        return Err(Error::Config("empty storage URL".into()));
    }
    if url == "memory" {
        return Ok(StorageType::Memory);
    }
    let Some((scheme, rest)) = url.split_once(':').filter(|(scheme, _)| is_scheme(scheme)) else {
        return Ok(StorageType::FileSystem(PathBuf::from(url)));
    };
    let scheme = scheme.to_ascii_lowercase();
    // Schemes are case-insensitive (RFC 3986); the drivers and this crate's own readers
    // match them in lower case.
    let normalized = format!("{scheme}:{rest}");
    let needs_authority = || {
        if rest.starts_with("//") {
            Ok(normalized.clone())
        } else {
            Err(Error::Config(format!(
                "storage URL {} needs `//` after `{scheme}:`, as in {scheme}://HOST",
                redact_url(url)
            )))
        }
    };
    match scheme.as_str() {
        "memory" => memory(rest),
        "file" => file(rest).map(StorageType::FileSystem),
        "sqlite" => Ok(StorageType::Sqlite(normalized)),
        "postgres" | "postgresql" => needs_authority().map(StorageType::Postgres),
        redis if REDIS_SCHEMES.contains(&redis) => needs_authority().map(StorageType::Redis),
        _ if rest.starts_with("//") => Err(Error::Config(format!(
            "unknown storage scheme `{scheme}://` in {}; use memory://, file://DIR, sqlite://FILE, redis://HOST:PORT, postgres://USER@HOST/DB or a plain directory path",
            redact_url(url)
        ))),
        _ => Ok(StorageType::FileSystem(PathBuf::from(url))),
    }
}

/// Whether `text` may be a URL scheme (RFC 3986: a letter, then letters, digits, `+`, `-`,
/// `.`), and not a Windows drive letter (`C:`), which is one letter.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    text.len() > 1
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `memory://`, which names the one process-wide store: any path or option is a mistake.
fn memory(rest: &str) -> Result<StorageType> {
    let Some(after) = rest.strip_prefix("//") else {
        return Err(Error::Config(format!(
            "storage URL `memory:{rest}` is not memory://, the in-memory store"
        )));
    };
    if after.is_empty() {
        return Ok(StorageType::Memory);
    }
    let url = format!("memory:{rest}");
    if let Some(problem) = no_query(&url, "memory://") {
        return Err(problem);
    }
    Err(Error::Config(format!(
        "memory:// takes no path, but {} has `{after}`: it names the process's one in-memory store (for a directory, write file://./DIR)",
        redact_url(&url)
    )))
}

/// The directory a `file:` URL names (RFC 8089): `file:///abs`, `file:/abs` and
/// `file://localhost/abs` are `/abs`; `file://./rel`, `file://../rel` and `file://~/rel`
/// are relative (to the working directory, or to the home directory for a program that
/// expands `~`, as the `fusion` CLI does). The path is percent-decoded. Another host, a
/// query, a fragment and a relative path without the leading `.`, `..` or `~` are refused.
fn file(rest: &str) -> Result<PathBuf> {
    let url = format!("file:{rest}");
    if let Some(problem) = no_query(&url, "file://") {
        return Err(problem);
    }
    let path = match rest.strip_prefix("//") {
        None if rest.starts_with('/') => rest,
        None => {
            return Err(Error::Config(format!(
                "{url} is not a file URL: write file:///ABSOLUTE/DIR, file://./RELATIVE/DIR or a plain directory path"
            )));
        }
        Some(hier) => {
            let (authority, tail) = hier.find('/').map_or((hier, ""), |at| hier.split_at(at));
            match authority {
                "" => hier,
                "." | ".." | "~" => hier,
                host if host.eq_ignore_ascii_case("localhost") => tail,
                host => {
                    return Err(Error::Config(format!(
                        "{url} names host `{host}`, but a file-system storage is a directory on this machine: write file:///ABSOLUTE/DIR, or file://./{hier} (or the plain path {hier}) for a directory relative to the working directory"
                    )));
                }
            }
        }
    };
    if path.is_empty() {
        return Err(Error::Config(format!(
            "{url} names no directory; write file://./sessions, file:///var/lib/fusion or a plain path"
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

/// The error for a query or fragment in `url`, whose scheme `scheme` takes none: the first
/// parameter is named (never its value), as the Redis and SQLite backends name one they do
/// not read.
fn no_query(url: &str, scheme: &str) -> Option<Error> {
    let shown = fusion_core::url_without_query(url);
    if let Some(UrlQueryProblem::Unknown { key, .. }) = url_query_problem(url, &[], |_| false) {
        return Some(Error::Config(format!(
            "unknown query parameter `{key}` in {shown}: {scheme} takes no options"
        )));
    }
    let at = url.find(['?', '#'])?;
    Some(Error::Config(format!(
        "{shown}: {scheme} takes no query or fragment, but `{}` begins one (in a directory's name write %3F for `?`, %23 for `#`)",
        &url[at..at + 1]
    )))
}

/// `dir` as a `file://` URL that [`storage_type`] reads back as `dir`: absolute paths as
/// `file:///abs`, relative ones after `./` unless they start with `.` or `..` already (a
/// relative `~/x` is a directory named `~`, not the home), with `%`, `?` and `#` escaped.
pub(super) fn file_url(dir: &Path) -> String {
    let text = dir.display().to_string();
    let escaped = text
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    let first = dir.components().next();
    let dotted = matches!(
        first,
        Some(std::path::Component::CurDir | std::path::Component::ParentDir)
    );
    if escaped.starts_with('/') || dotted {
        format!("file://{escaped}")
    } else if dir.is_absolute() {
        format!("file:///{escaped}")
    } else {
        format!("file://./{escaped}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(url: &str) -> PathBuf {
        match storage_type(url) {
            Ok(StorageType::FileSystem(dir)) => dir,
            other => panic!("{url}: {other:?}"),
        }
    }

    fn refused(url: &str) -> String {
        match storage_type(url) {
            Err(Error::Config(message)) => message,
            other => panic!("{url} was not refused: {other:?}"),
        }
    }

    #[test]
    fn file_urls_without_slashes_are_read_as_rfc_8089_says() {
        // `file:/abs` is the minimal form of `file:///abs`, not a directory named `file:`.
        assert_eq!(dir("file:/var/lib/fusion"), Path::new("/var/lib/fusion"));
        for url in ["file:sessions", "file:", "file:./s"] {
            let message = refused(url);
            assert!(message.contains("is not a file URL"), "{url}: {message}");
        }
    }

    #[test]
    fn file_urls_name_a_directory_on_this_machine() {
        for (url, path) in [
            ("file:///var/lib/fusion", "/var/lib/fusion"),
            ("file://localhost/var/lib/fusion", "/var/lib/fusion"),
            ("file://LocalHost/srv/", "/srv/"),
            ("file://./sessions", "./sessions"),
            ("file://../up/s", "../up/s"),
            ("file://~/sessions", "~/sessions"),
            ("file://.", "."),
        ] {
            assert_eq!(dir(url), Path::new(path), "{url}");
        }
        let message = refused("file://otherhost/srv/sessions");
        assert!(message.contains("names host `otherhost`"), "{message}");
        assert!(
            message.contains("file://./otherhost/srv/sessions"),
            "{message}"
        );
        // Read as RFC 8089 reads it, `file://sessions` names a host too.
        assert!(refused("file://sessions").contains("names host `sessions`"));
        for empty in ["file://", "file://localhost", "file://localhost?"] {
            refused(empty);
        }
        assert!(refused("file://localhost").contains("names no directory"));
    }

    #[test]
    fn file_urls_take_no_query_options_or_fragment() {
        for (url, key) in [
            ("file://./d?x=1", "x"),
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
        for url in ["file://./d?", "file://./d#x", "file:///d?#"] {
            let message = refused(url);
            assert!(
                message.contains("takes no query or fragment"),
                "{url}: {message}"
            );
        }
    }

    #[test]
    fn memory_takes_no_path_and_no_options() {
        assert_eq!(storage_type("memory://").unwrap(), StorageType::Memory);
        assert_eq!(storage_type(" Memory:// ").unwrap(), StorageType::Memory);
        let message = refused("memory://foo");
        assert!(message.contains("memory:// takes no path"), "{message}");
        let message = refused("memory://?x=1");
        assert!(message.contains("unknown query parameter `x`"), "{message}");
        assert!(refused("memory:foo").contains("is not memory://"));
        for url in ["memory://foo", "memory://?x=1", "memory:foo"] {
            assert!(!refused(url).contains("unknown storage scheme"), "{url}");
        }
    }

    #[test]
    fn file_url_paths_are_percent_decoded() {
        assert_eq!(dir("file:///tmp/my%20dir"), Path::new("/tmp/my dir"));
        assert_eq!(dir("file://./a%3Fb%23c%25"), Path::new("./a?b#c%"));
        // A plain path is a path: nothing in it is an escape.
        assert_eq!(dir("./my%20dir"), Path::new("./my%20dir"));
        assert!(refused("file:///a%2Fb").contains("%2F"));
        assert!(refused("file:///a%FF").contains("not valid UTF-8"));
    }

    #[test]
    fn schemes_are_case_insensitive() {
        for (url, expected) in [
            ("FILE:///srv/s", StorageType::FileSystem("/srv/s".into())),
            ("SQLite://s.db", StorageType::Sqlite("sqlite://s.db".into())),
            (
                "Redis://h:6379/0",
                StorageType::Redis("redis://h:6379/0".into()),
            ),
            (
                "REDISS+Cluster://a:1,b:2",
                StorageType::Redis("rediss+cluster://a:1,b:2".into()),
            ),
            (
                "PostgreSQL://db/app",
                StorageType::Postgres("postgresql://db/app".into()),
            ),
        ] {
            assert_eq!(storage_type(url).unwrap(), expected, "{url}");
        }
        // Their location is read as the lower-case URL's.
        let upper = storage_type("SQLITE:///x.db").unwrap();
        let lower = storage_type("sqlite:///x.db").unwrap();
        assert!(upper.same_storage(&lower).unwrap());
    }

    #[test]
    fn server_urls_need_their_slashes_and_anything_else_is_a_path() {
        for url in ["redis:h", "postgres:app", "rediss+cluster:a:1"] {
            assert!(refused(url).contains("needs `//`"), "{url}");
        }
        assert!(refused("mongodb://h/db").contains("unknown storage scheme `mongodb://`"));
        for path in [
            r"C:\sessions",
            "C:/sessions",
            "notes:2024",
            "./a://b",
            "memory/",
        ] {
            assert_eq!(dir(path), Path::new(path), "{path}");
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
            "file:/x",
            "~/literal",
            ".hidden",
            "/tmp/a b?c#d%20e",
        ] {
            let url = StorageType::FileSystem(path.into()).to_string();
            let back = dir(&url);
            let same = back == Path::new(path) || back == Path::new(".").join(path);
            assert!(same, "{path} -> {url} -> {}", back.display());
        }
        assert_eq!(
            StorageType::FileSystem("sessions".into()).to_string(),
            "file://./sessions"
        );
        assert_eq!(
            StorageType::FileSystem("/srv/s".into()).to_string(),
            "file:///srv/s"
        );
    }
}
