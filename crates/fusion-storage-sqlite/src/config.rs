//! Connection options for [`SqliteStorage`](crate::SqliteStorage) and parsing of `sqlite:` URLs.
//!
//! Unlike the raw `sqlx` options, these only expose what a conversation store needs to
//! tune (how long to wait for a busy database, how durable a commit is, pool size) and
//! bake in the rest: WAL, foreign keys on, and the file created when missing.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use fusion_core::{Error, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::files::{shown, special_file};

/// How hard SQLite works to make a commit survive a crash (`PRAGMA synchronous`).
///
/// The database is always in WAL mode, where both levels keep the file consistent after
/// any crash; they differ only in whether the last commits survive a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = NORMAL` (the default): commits are not fsynced one by one, only at
    /// WAL checkpoints. A crash of the process loses nothing; a power loss or OS crash
    /// may roll back the last commits before the checkpoint, never corrupt the file.
    /// Appends are then as cheap as a write to the page cache.
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is fsynced before `append`/`save` return, so an
    /// acknowledged message survives a power loss. Costs one fsync per call.
    Full,
}

impl Durability {
    fn pragma(self) -> SqliteSynchronous {
        match self {
            Durability::Normal => SqliteSynchronous::Normal,
            Durability::Full => SqliteSynchronous::Full,
        }
    }
}

/// Options for [`SqliteStorage::connect_with`](crate::SqliteStorage::connect_with).
///
/// ```no_run
/// # async fn demo() -> fusion_core::Result<()> {
/// use std::time::Duration;
/// use fusion_storage_sqlite::{Durability, SqliteOptions, SqliteStorage};
///
/// let options = SqliteOptions::new()
///     .busy_timeout(Duration::from_secs(10))
///     .durability(Durability::Full);
/// let storage = SqliteStorage::connect_with("sqlite://sessions.db", options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    pub(crate) busy_timeout: Duration,
    pub(crate) durability: Durability,
    pub(crate) max_connections: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            durability: Durability::Normal,
            max_connections: 8,
        }
    }
}

impl SqliteOptions {
    /// The defaults: 5 s busy timeout, [`Durability::Normal`], 8 connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a write waits for another connection or process to release the database
    /// before failing with a retryable error. Default 5 s.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The crash-durability of a commit; see [`Durability`]. Default [`Durability::Normal`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The most connections the pool opens (at least 1), and on a database file the most
    /// direct read connections too. Default 8.
    ///
    /// SQLite runs one writer at a time whatever this is; more connections let more loads
    /// run at once, alongside a write. `sqlite::memory:` always uses exactly one connection.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }
}

/// How the direct path (`crate::direct`) opens the database file: like the pool's
/// connections, from the same URL and options.
#[derive(Debug, Clone)]
pub(crate) struct DirectOptions {
    pub(crate) path: PathBuf,
    /// The URL's `mode`: `ro`, or `immutable=true`, opens read-only.
    pub(crate) read_only: bool,
    /// Create the file when missing (no `mode`, or `mode=rwc`).
    pub(crate) create: bool,
    /// The URL's `vfs`, if any.
    pub(crate) vfs: Option<String>,
    /// The URL's `immutable=true`.
    pub(crate) immutable: bool,
    pub(crate) busy_timeout: Duration,
    pub(crate) durability: Durability,
    /// Reader connections at most, idle or in use: the pool size of [`SqliteOptions`].
    pub(crate) max_readers: usize,
}

/// Where a parsed URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A private in-memory database that lives as long as the storage's pool.
    Memory,
    /// A database file; `create` says whether to create it (and its directory) if missing.
    File { path: PathBuf, create: bool },
}

/// A `sqlite:` URL turned into everything needed to open it.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) location: Location,
    /// The pool's connections.
    pub(crate) connect: SqliteConnectOptions,
    /// The direct connections (`crate::direct`) of a database file, opened the same way.
    pub(crate) direct: Option<DirectOptions>,
}

impl Target {
    /// How the database is named in error messages: its path (control characters
    /// escaped, see [`shown`]), or `:memory:`.
    pub(crate) fn label(&self) -> String {
        match &self.location {
            Location::Memory => ":memory:".to_string(),
            Location::File { path, .. } => shown(&path.display().to_string()),
        }
    }

    /// The database file, by its real name; `None` for `:memory:`.
    pub(crate) fn file(&self) -> Option<std::sync::Arc<Path>> {
        match &self.location {
            Location::Memory => None,
            Location::File { path, .. } => Some(path.as_path().into()),
        }
    }

    /// The pool for this database, after the checks on its path a pool cannot make: a
    /// dangling symbolic link is refused (SQLite would create the file wherever it points),
    /// so is a FIFO, socket or device (SQLite writes a `-journal` beside a device before
    /// it fails on it), and a file to be created gets its directory.
    pub(crate) fn pool_options(&self, options: &SqliteOptions) -> Result<SqlitePoolOptions> {
        let pool_options = match &self.location {
            Location::Memory => SqlitePoolOptions::new()
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            Location::File { path, create } => {
                refuse_dangling_link(path)?;
                if special_file(path) {
                    return Err(Error::Config(format!(
                        "cannot use the SQLite database {}: it is not a regular file but a \
                         FIFO, socket or device; name a regular file instead",
                        self.label()
                    )));
                }
                if *create {
                    ensure_parent_dir(path)?;
                }
                SqlitePoolOptions::new().max_connections(options.max_connections)
            }
        };
        // sqlx pings a pooled connection before handing it out, to catch dropped network
        // links. An in-process SQLite connection does not go stale, so that is a wasted
        // round trip to its worker thread on every call; worse, a call cancelled during
        // the ping makes sqlx close the connection, and with `:memory:` the database.
        Ok(pool_options.test_before_acquire(false))
    }
}

/// Parses `sqlite://PATH`, `sqlite:PATH` or `sqlite::memory:` (with optional sqlx query
/// parameters such as `?mode=ro`) and applies `options`.
///
/// Without a `mode` parameter the file is created when missing; with one, SQLite's
/// meaning applies (`ro` read-only, `rw` must exist, `rwc` create).
pub(crate) fn parse_url(url: &str, options: &SqliteOptions) -> Result<Target> {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        // Print only the scheme: a URL meant for another backend may carry a password.
        let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
        return Err(Error::Config(format!(
            "not a SQLite URL (scheme `{scheme}`); use sqlite://PATH, sqlite:PATH or sqlite::memory:"
        )));
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let mode = param("mode");
    // SQLite opens an empty name as a private temporary database, which the direct
    // connections (opened by path) cannot share: only `mode=memory` may name none.
    if path.is_empty() && mode.as_deref() != Some("memory") {
        return Err(Error::Config(
            "SQLite URL has no database path; use sqlite://PATH or sqlite::memory:".into(),
        ));
    }

    refuse_misleading_path(path)?;
    let mut connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("invalid SQLite URL for {}: {e}", shown(path))))?;
    let in_memory = path == ":memory:" || mode.as_deref() == Some("memory");
    let read_only = mode.as_deref() == Some("ro");
    let mut direct = None;
    let location = if in_memory {
        Location::Memory
    } else {
        let create = mode.is_none() || mode.as_deref() == Some("rwc");
        connect = connect.create_if_missing(create);
        let path = connect.get_filename().to_path_buf();
        // sqlx has accepted the parameters, so their values are valid.
        direct = Some(DirectOptions {
            path: path.clone(),
            read_only,
            create,
            vfs: param("vfs"),
            immutable: matches!(param("immutable").as_deref(), Some("true" | "1")),
            busy_timeout: options.busy_timeout,
            durability: options.durability,
            max_readers: usize::try_from(options.max_connections).unwrap_or(usize::MAX),
        });
        Location::File { path, create }
    };

    connect = connect
        .busy_timeout(options.busy_timeout)
        .foreign_keys(true)
        .synchronous(options.durability.pragma());
    // Switching to WAL writes the file header, which neither a read-only connection nor
    // an in-memory database can do; both keep the journal mode they have.
    // Checkpoints then run off the write path (see `crate::checkpoint`).
    if !in_memory && !read_only {
        connect = connect
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("wal_autocheckpoint", "0");
    }
    Ok(Target {
        location,
        connect,
        direct,
    })
}

/// Refuses what looks like a path but would not open the file its writer meant; each of
/// these used to open something else. The messages do not echo the path: a mistaken
/// URL may hold a password.
///
/// - `file:...`, SQLite's own URI form: sqlx hands it to SQLite as a URI (opening the file
///   it names) while this crate watched a file named `file:...`, found none, and took the
///   database for deleted on every call.
/// - `~/...`: no shell expands it, so it created a directory named `~` in the working
///   directory.
/// - a path ending in `/`: SQLite drops the slash and creates a file where a directory
///   was meant.
/// - `user:password@host/...`: a SQLite URL has no user or host, so it became a directory
///   named after the credentials, printed in every error message.
/// - `%2F`, an escaped `/`: decoded, it splits what reads as one file name into
///   directories, so a name escaped into a URL (`sqlite://data/{name}.db`) could climb out
///   of its directory (`..%2F..%2Fetc`). A file name cannot hold a `/`; a real separator
///   is written as `/`.
fn refuse_misleading_path(path: &str) -> Result<()> {
    let first = path.split('/').next().unwrap_or_default();
    let problem = if path.starts_with("file:") {
        "is a SQLite `file:` URI; write sqlite://PATH, with parameters such as `mode=ro` \
         after `?`"
    } else if first == "~" {
        "starts with `~`, which is not expanded to a home directory here; write the full path"
    } else if path.ends_with('/') && path != ":memory:" {
        "ends with `/`, so it names a directory; name the database file in it, such as \
         sqlite://DIR/sessions.db"
    } else if path.to_ascii_lowercase().contains("%2f") {
        "holds `%2F`, an escaped `/`, which would split the name into directories; write \
         `/` itself where a directory is meant (a file name cannot hold one)"
    } else if looks_like_credentials(path) {
        "looks like `user:password@host`, which a SQLite URL does not have; write \
         sqlite://PATH"
    } else {
        return Ok(());
    };
    Err(Error::Config(format!(
        "the path of this SQLite URL {problem}"
    )))
}

/// Whether `path` starts `user:password@host/` (or `:password@host/`): a `:` before an
/// `@` in its first segment, with more path after it. Not a file name holding both
/// (`session@10:30.db`, `backup:v1@host.db`), nor a Windows path (`C:\...`).
fn looks_like_credentials(path: &str) -> bool {
    let Some((first, _)) = path.split_once('/') else {
        return false;
    };
    let Some((user, _host)) = first.split_once('@') else {
        return false;
    };
    !first.contains('\\') && user.contains(':')
}

/// Refuses a symbolic link at `path` that leads nowhere: SQLite follows it and creates the
/// database wherever it points (another directory, a name the user never wrote), which
/// is more often a leftover link than a wish. A link to an existing file is followed; one
/// that cannot be followed (a loop, a directory on the way this user may not search) is
/// refused saying why, as SQLite could not open it either.
fn refuse_dangling_link(path: &Path) -> Result<()> {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let Some(e) = std::fs::metadata(path).err().filter(|_| is_link) else {
        return Ok(());
    };
    let target = std::fs::read_link(path).map_or_else(
        |e| format!("(unreadable: {e})"),
        |target| shown(&target.display().to_string()),
    );
    let why = match e.kind() {
        std::io::ErrorKind::NotFound => "which does not exist, and SQLite would create the \
             database there; nothing was created. Remove the link, point it at an existing \
             database, or name the file itself"
            .to_owned(),
        _ => format!("which cannot be followed ({e}); nothing was created"),
    };
    Err(Error::Config(format!(
        "cannot use the SQLite database {}: it is a symbolic link to {target}, {why}",
        shown(&path.display().to_string())
    )))
}

/// Creates the parent directory of a database file about to be created, so that
/// `sqlite://data/sessions.db` works on a fresh checkout like the file-system backend does.
pub(crate) fn ensure_parent_dir(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target> {
        parse_url(url, &SqliteOptions::default())
    }

    #[test]
    fn accepts_the_three_url_forms() {
        let t = parse("sqlite://data/sessions.db").unwrap();
        assert_eq!(
            t.location,
            Location::File {
                path: "data/sessions.db".into(),
                create: true
            }
        );
        let t = parse("sqlite:/abs/sessions.db").unwrap();
        assert_eq!(t.label(), "/abs/sessions.db");
        let t = parse("sqlite::memory:").unwrap();
        assert_eq!(t.location, Location::Memory);
        assert_eq!(t.label(), ":memory:");
    }

    #[test]
    fn a_mode_parameter_turns_off_creation() {
        for (url, create) in [
            ("sqlite://a.db?mode=ro", false),
            ("sqlite://a.db?mode=rw", false),
            ("sqlite://a.db?mode=rwc", true),
        ] {
            match parse(url).unwrap().location {
                Location::File { create: c, .. } => assert_eq!(c, create, "{url}"),
                Location::Memory => panic!("{url} parsed as memory"),
            }
        }
        assert_eq!(
            parse("sqlite://?mode=memory").unwrap().location,
            Location::Memory
        );
    }

    #[test]
    fn foreign_urls_are_rejected_without_echoing_them() {
        let err = parse("postgres://admin:hunter2@db/app").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{text}");
        assert!(text.contains("`postgres`"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        for url in [
            "sqlite://",
            "sqlite://?mode=rw",
            "sqlite:?mode=rwc",
            "sqlite://?mode=ro",
        ] {
            assert!(matches!(parse(url), Err(Error::Config(_))), "{url}");
        }
        assert!(matches!(
            parse("sqlite://a.db?mode=bogus"),
            Err(Error::Config(_))
        ));
        // The path it names shown escaped, as everywhere.
        let text = parse("sqlite://a\nb.db?mode=bogus")
            .unwrap_err()
            .to_string();
        assert!(text.contains("a\\nb.db"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    /// Paths that would open something other than what their writer meant are refused,
    /// without echoing them; the ordinary forms of each still parse.
    #[test]
    fn misleading_paths_are_refused_without_echoing_them() {
        for url in [
            "sqlite://file:mine.db?mode=rwc",
            "sqlite:file:mine.db",
            "sqlite://~/mine.db",
            "sqlite:~",
            "sqlite://data/",
            "sqlite:///var/lib/fusion/",
            "sqlite://admin:hunter2@db.example.com/mine.db",
            "sqlite://:hunter2@db.example.com/mine.db",
            "sqlite://a:hunter2@db.example.com/mine.db",
        ] {
            let err = parse(url).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::Config(_)), "{url}: {text}");
            for secret in ["hunter2", "mine.db", "var/lib"] {
                assert!(!text.contains(secret), "{url}: {text}");
            }
        }
        for url in [
            "sqlite://profile:v2.db",
            "sqlite://data/~backup.db",
            "sqlite://alice@example.com.db",
            "sqlite://data/user:1@x.db",
            "sqlite://session@10:30.db",
            "sqlite://backup:v1@host.db",
            "sqlite://C:\\data\\alice@example.com.db",
        ] {
            assert!(parse(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn options_clamp_the_pool_to_one_connection() {
        let options = SqliteOptions::new().max_connections(0);
        assert_eq!(options.max_connections, 1);
        assert_eq!(SqliteOptions::new().durability, Durability::Normal);
    }
}
