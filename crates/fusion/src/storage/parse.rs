//! Reading a storage URL into a [`StorageType`].
//!
//! A string is a URL when it starts with a scheme this crate knows, in any case (`FILE:`,
//! `Redis:`), or with any other scheme followed by `//`; anything else is a directory path
//! (`C:\sessions` and `notes:2024` too). A `file:` URL is read by
//! [`fusion_core::file_url`], as `FileSystemStorage::connect` reads it: everything after
//! `file://` is the path. A URL that names nothing this crate can open (a query option, a
//! path after `memory://`) is refused, naming what is wrong, rather than read as a
//! directory of that name.

use std::path::PathBuf;

use fusion_core::{Error, Result, file_url, redact_url, refuse_query};

use super::StorageType;

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
        "file" => file_url::directory(rest).map(StorageType::FileSystem),
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
        // A URL that should have had `//` may hold a password all the same.
        return Err(Error::Config(format!(
            "storage URL `{}` is not memory://, the in-memory store",
            redact_url(&format!("memory:{rest}"))
        )));
    };
    if after.is_empty() {
        return Ok(StorageType::Memory);
    }
    let url = format!("memory:{rest}");
    refuse_query(&url, "memory://")?;
    Err(Error::Config(format!(
        "memory:// takes no path, but {} has `{after}`: it names the process's one in-memory store (for a directory, write file://DIR)",
        redact_url(&url)
    )))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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
    fn everything_after_file_slashes_is_the_path() {
        // The documented `file://DIR`, like `sqlite://FILE`: DIR may be relative.
        for (url, path) in [
            ("file://sessions", "sessions"),
            ("file://localhost/x", "localhost/x"),
            ("file://./sessions", "./sessions"),
            ("file://~/sessions", "~/sessions"),
            (" file:///var/lib/fusion ", "/var/lib/fusion"),
            ("file:/var/lib/fusion", "/var/lib/fusion"),
            ("file:///tmp/my%20dir", "/tmp/my dir"),
        ] {
            assert_eq!(dir(url), Path::new(path), "{url}");
        }
        assert!(refused("file:sessions").contains("is not a file URL"));
        assert!(refused("file://").contains("names no directory"));
        assert!(refused("file://d?x=1").contains("unknown query parameter `x`"));
        assert!(refused("file://d#x").contains("takes no query or fragment"));
        assert!(refused("file:///a%2Fb").contains("%2F"));
        // A plain path is a path: nothing in it is an escape.
        assert_eq!(dir("./my%20dir"), Path::new("./my%20dir"));
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
        let message = refused("memory:app:s3cret@db");
        assert!(message.contains("is not memory://"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        for url in ["memory://foo", "memory://?x=1", "memory:foo"] {
            assert!(!refused(url).contains("unknown storage scheme"), "{url}");
        }
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
            "./sessions",
            "sessions",
            "localhost/x",
            "file:/x",
            "~/literal",
            "/tmp/a b?c#d%20e",
            // This parser trims what it reads: a name's own blanks are escaped.
            "/tmp/trailing ",
            "sessions\t",
        ] {
            let url = StorageType::FileSystem(path.into()).to_string();
            assert_eq!(dir(&url), Path::new(path), "{path} -> {url}");
        }
        assert_eq!(
            StorageType::FileSystem("sessions".into()).to_string(),
            "file://sessions"
        );
        assert_eq!(
            StorageType::FileSystem("/srv/s".into()).to_string(),
            "file:///srv/s"
        );
    }
}
