//! `StorageType`: which backend holds the sessions, and where.
//!
//! Every variant exists whatever features are enabled, so code written against one build
//! compiles against another; opening a variant whose backend feature is off fails with
//! [`Error::FeatureDisabled`] naming the feature to enable.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use fusion_core::{ConversationStorage, Error, Result, redact_url};

use super::location::{self, StorageLocation};

/// Where conversation histories are stored.
///
/// Parses from a URL: `memory://`, `file://./sessions` (or a plain path),
/// `sqlite://sessions.db`, `sqlite::memory:`, `redis://127.0.0.1:6379/0`, `rediss://...`,
/// `redis+cluster://10.0.0.1:7000,10.0.0.2:7000`, `postgres://app@db.internal/app`.
///
/// Two values that differ may still name the same data (`./d` and its absolute path):
/// compare them with [`same_storage`](StorageType::same_storage), not `==`.
///
/// ```
/// use fusion::storage::StorageType;
///
/// let storage: StorageType = "sqlite://sessions.db".parse()?;
/// assert_eq!(storage, StorageType::Sqlite("sqlite://sessions.db".into()));
/// assert_eq!("./sessions".parse::<StorageType>()?, StorageType::FileSystem("./sessions".into()));
/// # Ok::<(), fusion::Error>(())
/// ```
///
/// Neither `Display` nor `Debug` shows a password in a URL ([`redact_url`]).
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageType {
    /// In-process memory, shared by every `Memory` opened in this process and lost when it
    /// ends (feature `memory`). For a private store, construct an `InMemoryStorage`.
    Memory,
    /// One JSON Lines file per session in this directory (feature `fs`).
    FileSystem(PathBuf),
    /// A SQLite database URL: `sqlite://path`, `sqlite:path` or `sqlite::memory:` (feature `sqlite`).
    Sqlite(String),
    /// A Redis URL: `redis://[:password@]host:port[/db][?key_prefix=PREFIX]` or
    /// `rediss://...` for one server, `redis+cluster://[:password@]host:port,host:port,...`
    /// or `rediss+cluster://...` for a Redis Cluster (feature `redis`). The `key_prefix`
    /// parameter picks the prefix of every key (default `fusion`), like
    /// `RedisOptions::key_prefix`; `publish_changes=true` makes every write publish what
    /// it changed, like `RedisOptions::publish_changes` (see
    /// [`open_redis`](StorageType::open_redis)).
    Redis(String),
    /// A PostgreSQL URL: `postgres://[user[:password]@]host[:port]/database[?params]` or
    /// `postgresql://...` (feature `postgres`). `sslmode` and the driver's other parameters
    /// pass through; the `schema` parameter picks the schema holding the tables (default
    /// `fusion`), as `PostgresOptions::new` reads it.
    Postgres(String),
}

impl StorageType {
    /// The cargo feature of the `fusion` crate that provides this backend.
    pub fn feature(&self) -> &'static str {
        match self {
            StorageType::Memory => "memory",
            StorageType::FileSystem(_) => "fs",
            StorageType::Sqlite(_) => "sqlite",
            StorageType::Redis(_) => "redis",
            StorageType::Postgres(_) => "postgres",
        }
    }

    /// Where this storage keeps its sessions, so that two spellings of one storage can be
    /// recognised: `None` for `sqlite::memory:` (and `?mode=memory`), a database every
    /// open creates afresh.
    ///
    /// Paths are canonicalized, including ones that do not exist yet (the nearest
    /// existing ancestor is); Redis URLs give host, port, database and key prefix (a
    /// cluster URL its seed nodes and key prefix), and
    /// PostgreSQL URLs host, port, database and schema, with the defaults filled in. Reads the file system, never opens a database or a
    /// connection. Fails with [`Error::Config`] for a SQLite or Redis URL that
    /// [`open`](StorageType::open) would refuse too (no path, no host, a bad port or
    /// database number).
    pub fn location(&self) -> Result<Option<StorageLocation>> {
        match self {
            StorageType::Memory => Ok(Some(StorageLocation::ProcessMemory)),
            StorageType::FileSystem(dir) => Ok(Some(location::directory(dir))),
            StorageType::Sqlite(url) => location::sqlite(url),
            StorageType::Redis(url) => location::redis(url).map(Some),
            StorageType::Postgres(url) => location::postgres(url).map(Some),
        }
    }

    /// Whether `self` and `other` open the same data, whatever their spelling.
    ///
    /// ```
    /// use fusion::storage::StorageType;
    ///
    /// let relative: StorageType = "./sessions".parse()?;
    /// let absolute = StorageType::FileSystem(std::env::current_dir()?.join("sessions"));
    /// assert!(relative.same_storage(&absolute)?);
    /// let a: StorageType = "redis://127.0.0.1".parse()?;
    /// let b: StorageType = "redis://127.0.0.1:6379/0?key_prefix=fusion".parse()?;
    /// assert!(a.same_storage(&b)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Compares [`location`](StorageType::location)s: an in-memory SQLite database is the
    /// same as nothing, not even itself; `memory://` is the same as `memory://` (one
    /// store per process). Errors as `location` does.
    pub fn same_storage(&self, other: &StorageType) -> Result<bool> {
        Ok(match (self.location()?, other.location()?) {
            (Some(mine), Some(theirs)) => mine.same_data(&theirs),
            _ => false,
        })
    }

    /// Opens the Redis storage this value names, as itself rather than behind the trait:
    /// for what only Redis offers, such as following changes
    /// ([`RedisStorage::subscribe_changes`](fusion_storage_redis::RedisStorage::subscribe_changes)).
    /// Any other storage is [`Error::Config`], since only Redis publishes changes.
    ///
    /// ```no_run
    /// # async fn demo() -> fusion::Result<()> {
    /// use fusion::storage::StorageType;
    ///
    /// let storage = StorageType::Redis("redis://127.0.0.1:6379?publish_changes=true".into());
    /// let mut changes = storage.open_redis().await?.subscribe_changes().await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub async fn open_redis(&self) -> Result<fusion_storage_redis::RedisStorage> {
        match self {
            StorageType::Redis(url) => connect_redis(url).await,
            other => Err(Error::Config(format!(
                "storage {other} is not Redis: only a Redis storage publishes session changes"
            ))),
        }
    }

    /// Opens the storage this value names.
    ///
    /// `Memory` opens the process-wide in-memory store, so sessions created through it are
    /// visible to `list_all_sessions(&StorageType::Memory)`; the others connect to (and
    /// create, where needed) the named location. [`open_existing`](StorageType::open_existing)
    /// creates nothing.
    pub async fn open(&self) -> Result<Arc<dyn ConversationStorage>> {
        match self {
            #[cfg(feature = "memory")]
            StorageType::Memory => {
                static PROCESS_STORE: std::sync::OnceLock<fusion_storage_memory::InMemoryStorage> =
                    std::sync::OnceLock::new();
                Ok(Arc::new(
                    PROCESS_STORE.get_or_init(Default::default).clone(),
                ))
            }
            #[cfg(feature = "fs")]
            StorageType::FileSystem(dir) => Ok(Arc::new(
                fusion_storage_fs::FileSystemStorage::new(dir.clone()),
            )),
            #[cfg(feature = "sqlite")]
            StorageType::Sqlite(url) => Ok(Arc::new(
                fusion_storage_sqlite::SqliteStorage::connect(url).await?,
            )),
            #[cfg(feature = "redis")]
            StorageType::Redis(url) => Ok(Arc::new(connect_redis(url).await?)),
            #[cfg(feature = "postgres")]
            StorageType::Postgres(url) => Ok(Arc::new(
                fusion_storage_postgres::PostgresStorage::connect(url).await?,
            )),
            #[allow(unreachable_patterns)]
            other => Err(Error::FeatureDisabled {
                what: format!("storage `{other}`"),
                feature: other.feature(),
            }),
        }
    }

    /// Opens the storage this value names only if it exists already, creating nothing:
    /// `None` for a SQLite database file that does not exist and for a PostgreSQL schema
    /// without Fusion's tables (a mistyped name, or a store never written).
    ///
    /// For a program that reads sessions, or changes only ones that exist, and must not
    /// leave an empty database or schema behind (the `fusion` CLI's `sessions list`, or a
    /// dry run's target). The others open as with [`open`](StorageType::open), which
    /// creates nothing for them either: `memory://`, an in-memory SQLite database (nothing
    /// on disk), a file-system directory (made by the first write) and Redis (keys are
    /// made by writes). A SQLite path that cannot be looked at (no permission) counts as
    /// existing, so that opening it says why; an existing PostgreSQL storage of an older
    /// release is upgraded in place, as `open` upgrades it
    /// (`PostgresStorage::connect_existing`). Writes through the storage returned create
    /// what they need, as ever.
    ///
    /// ```no_run
    /// use fusion::storage::StorageType;
    ///
    /// # async fn demo() -> fusion::Result<()> {
    /// let storage: StorageType = "postgres://app@db.internal/app?schema=chat".parse()?;
    /// match storage.open_existing().await? {
    ///     Some(store) => println!("{} sessions", store.list_sessions().await?.len()),
    ///     None => println!("no sessions stored in {storage}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn open_existing(&self) -> Result<Option<Arc<dyn ConversationStorage>>> {
        match self {
            #[cfg(feature = "sqlite")]
            StorageType::Sqlite(_) if self.missing_path().is_some() => Ok(None),
            #[cfg(feature = "postgres")]
            StorageType::Postgres(url) => {
                let options = fusion_storage_postgres::PostgresOptions::new(url);
                let opened = fusion_storage_postgres::PostgresStorage::connect_existing(options);
                Ok(opened
                    .await?
                    .map(|storage| Arc::new(storage) as Arc<dyn ConversationStorage>))
            }
            _ => self.open().await.map(Some),
        }
    }

    /// The directory of a file-system storage or the database file of a SQLite one, when
    /// it surely does not exist: for a program that must not read a typo as an empty
    /// store. One that cannot be looked at (no permission) counts as existing, and so does
    /// a URL [`location`](StorageType::location) refuses, so that opening it says why.
    /// `None` for every other storage.
    pub fn missing_path(&self) -> Option<PathBuf> {
        match self.location() {
            Ok(Some(StorageLocation::Directory(path) | StorageLocation::SqliteFile(path))) => {
                matches!(path.try_exists(), Ok(false)).then_some(path)
            }
            _ => None,
        }
    }
}

/// Lets a [`SessionBuilder`](crate::agent::SessionBuilder) take a `StorageType`
/// and open it when the session is built.
#[async_trait::async_trait]
impl fusion_agent::StorageSource for StorageType {
    async fn open_storage(self: Box<Self>) -> Result<Arc<dyn ConversationStorage>> {
        self.open().await
    }
}

impl fmt::Display for StorageType {
    /// Renders the storage as a URL, with any password hidden. A directory's `file://` URL
    /// parses back as the same directory.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageType::Memory => f.write_str("memory://"),
            StorageType::FileSystem(dir) => f.write_str(&fusion_core::file_url::to_url(dir)),
            StorageType::Sqlite(url) | StorageType::Redis(url) | StorageType::Postgres(url) => {
                f.write_str(&redact_url(url))
            }
        }
    }
}

impl fmt::Debug for StorageType {
    /// The variant and its value, with any password in a URL hidden, as `Display` hides it:
    /// `{:?}` is what `unwrap`, `dbg!` and a tracing field print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageType::Memory => f.write_str("Memory"),
            StorageType::FileSystem(dir) => f.debug_tuple("FileSystem").field(dir).finish(),
            StorageType::Sqlite(url) => f.debug_tuple("Sqlite").field(&redact_url(url)).finish(),
            StorageType::Redis(url) => f.debug_tuple("Redis").field(&redact_url(url)).finish(),
            StorageType::Postgres(url) => {
                f.debug_tuple("Postgres").field(&redact_url(url)).finish()
            }
        }
    }
}

impl FromStr for StorageType {
    type Err = Error;

    /// Reads a storage URL, or a directory path. Surrounding whitespace is ignored and
    /// schemes are case-insensitive. `memory://` (or the word `memory`) takes no path and
    /// no option. In a file URL everything after `file://` is the directory, relative or
    /// absolute, percent-decoded ([`fusion_core::file_url`]): `file://sessions` is
    /// `./sessions`, `file://localhost/x` the relative `localhost/x`, `file:///abs` and
    /// `file:/abs` are `/abs`; `file:rel`, a query option (named in the error) and a
    /// fragment are refused. SQLite, Redis and PostgreSQL URLs are kept as given (their
    /// backends read their options when opened). Anything that is not a URL (no known
    /// scheme, and no `//` after an unknown one) is a directory path as written.
    fn from_str(url: &str) -> Result<Self> {
        super::parse::storage_type(url)
    }
}

/// Connects to a Redis URL, its `key_prefix` and `publish_changes` parameters taken off
/// as the options they name (the driver never sees them).
#[cfg(feature = "redis")]
async fn connect_redis(url: &str) -> Result<fusion_storage_redis::RedisStorage> {
    let (url, options) = redis_options(url)?;
    fusion_storage_redis::RedisStorage::connect_with(&url, options).await
}

/// The driver's URL and the options of a Redis URL's own parameters.
#[cfg(feature = "redis")]
fn redis_options(url: &str) -> Result<(String, fusion_storage_redis::RedisOptions)> {
    let (url, key_prefix) = fusion_core::split_url_param(url, location::KEY_PREFIX_PARAM);
    let (url, publish) = fusion_core::split_url_param(&url, PUBLISH_CHANGES_PARAM);
    let mut options = fusion_storage_redis::RedisOptions::new();
    if let Some(prefix) = key_prefix {
        options = options.key_prefix(prefix);
    }
    if let Some(publish) = publish {
        let name = format!("{PUBLISH_CHANGES_PARAM} in a Redis URL");
        options = options.publish_changes(fusion_core::parse_flag(&name, &publish)?);
    }
    Ok((url, options))
}

/// The query parameter of a Redis URL that turns on `RedisOptions::publish_changes`.
#[cfg(feature = "redis")]
const PUBLISH_CHANGES_PARAM: &str = "publish_changes";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        let cases = [
            ("memory://", StorageType::Memory),
            ("memory", StorageType::Memory),
            (
                "file://./sessions",
                StorageType::FileSystem("./sessions".into()),
            ),
            (
                "/var/lib/fusion",
                StorageType::FileSystem("/var/lib/fusion".into()),
            ),
            ("sessions", StorageType::FileSystem("sessions".into())),
            (
                "sqlite://sessions.db",
                StorageType::Sqlite("sqlite://sessions.db".into()),
            ),
            (
                "sqlite::memory:",
                StorageType::Sqlite("sqlite::memory:".into()),
            ),
            (
                "redis://127.0.0.1:6379/0",
                StorageType::Redis("redis://127.0.0.1:6379/0".into()),
            ),
            (
                "rediss://h:6380",
                StorageType::Redis("rediss://h:6380".into()),
            ),
            (
                "postgres://app@db/app",
                StorageType::Postgres("postgres://app@db/app".into()),
            ),
            (
                "postgresql://db:6543/app?sslmode=require",
                StorageType::Postgres("postgresql://db:6543/app?sslmode=require".into()),
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(url.parse::<StorageType>().unwrap(), expected, "{url}");
        }
    }

    #[test]
    fn rejects_unknown_schemes_and_empty_input() {
        for url in ["", "   ", "file://", "mongodb://secret:pw@h/db"] {
            let err = url.parse::<StorageType>().unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{url}: {err}");
            assert!(!err.to_string().contains("pw@"), "password leaked: {err}");
        }
    }

    #[test]
    fn display_hides_passwords() {
        let storage = StorageType::Redis("redis://user:s3cret@host:6379/2".into());
        assert_eq!(storage.to_string(), "redis://user:***@host:6379/2");
        let storage = StorageType::Postgres("postgres://app:s3cret@db/app".into());
        assert_eq!(storage.to_string(), "postgres://app:***@db/app");
    }

    #[test]
    fn debug_hides_passwords_too() {
        // `{:?}` is what `unwrap`, `dbg!` and `tracing`'s `?storage` print: it must hide
        // what `Display` hides.
        for (storage, shown) in [
            (
                StorageType::Redis("redis://user:s3cret@host:6379/2".into()),
                r#"Redis("redis://user:***@host:6379/2")"#,
            ),
            (
                StorageType::Postgres("postgres://app:s3cret@db/app?password=s3cret".into()),
                r#"Postgres("postgres://app:***@db/app?password=***")"#,
            ),
            (
                StorageType::Sqlite("sqlite://x.db?mode=ro".into()),
                r#"Sqlite("sqlite://x.db?mode=ro")"#,
            ),
            (StorageType::Memory, "Memory"),
            (
                StorageType::FileSystem("./d".into()),
                r#"FileSystem("./d")"#,
            ),
        ] {
            assert_eq!(format!("{storage:?}"), shown);
        }
    }

    fn same(a: &str, b: &str) -> bool {
        let (a, b): (StorageType, StorageType) = (a.parse().unwrap(), b.parse().unwrap());
        let forward = a.same_storage(&b).unwrap();
        assert_eq!(
            forward,
            b.same_storage(&a).unwrap(),
            "{a} vs {b}: not symmetric"
        );
        forward
    }

    #[test]
    fn a_directory_is_the_same_storage_however_it_is_spelled() {
        let tmp = tempfile::tempdir().unwrap();
        let cwd = std::env::current_dir().unwrap();
        // Relative spellings resolve against the working directory: `./d` is `cwd/d`.
        let absolute = cwd.join("d-not-created");
        assert!(same("./d-not-created", &absolute.display().to_string()));
        assert!(same(
            "d-not-created/",
            &format!("file://{}", absolute.display())
        ));
        assert!(same("./x/../d-not-created", "d-not-created"));
        assert!(!same("./d-not-created", "./other"));

        let existing = tmp.path().join("real");
        std::fs::create_dir(&existing).unwrap();
        let link = tmp.path().join("link");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&existing, &link).unwrap();
            assert!(same(
                &existing.display().to_string(),
                &link.display().to_string()
            ));
            // A missing directory under a symlink resolves through the link.
            assert!(same(
                &existing.join("new/sessions").display().to_string(),
                &link.join("new/./sessions").display().to_string()
            ));
        }
        assert!(!same(
            &existing.display().to_string(),
            &existing.join("sub").display().to_string()
        ));
    }

    #[test]
    fn a_sqlite_file_is_the_same_storage_in_every_url_form() {
        let cwd = std::env::current_dir().unwrap();
        let relative_file = cwd.join("x-not-created.db");
        assert!(same(
            "sqlite://x-not-created.db",
            &format!("sqlite://{}", relative_file.display())
        ));
        assert!(same("sqlite://x-not-created.db", "sqlite:x-not-created.db"));
        assert!(same("sqlite:///x.db", "sqlite:/x.db"));
        assert!(same("sqlite:///x.db", "sqlite:///x.db?mode=rwc"));
        assert!(same("sqlite:///x%20y.db", "sqlite:/x y.db"));
        // `sqlite://x.db` is relative to the working directory, not `/x.db`.
        assert_eq!(
            same("sqlite://x.db", "sqlite:///x.db"),
            cwd == std::path::Path::new("/")
        );
        assert!(!same("sqlite:///x.db", "sqlite:///y.db"));
        // The same path as a directory is another backend, not the same storage.
        assert!(!same("sqlite:///x.db", "/x.db"));
        for memory in ["sqlite::memory:", "sqlite://?mode=memory"] {
            assert!(!same(memory, memory), "{memory}");
            assert!(!same(memory, "sqlite:///x.db"), "{memory}");
        }
        assert!(same("memory://", "memory"), "one process-wide store");
        assert!(!same("memory://", "sqlite::memory:"));
    }

    #[test]
    fn missing_path_names_a_directory_or_database_file_that_does_not_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sessions");
        let file = tmp.path().join("s.db");
        let fs = StorageType::FileSystem(dir.clone());
        let sqlite = StorageType::Sqlite(format!("sqlite://{}", file.display()));
        let root = tmp.path().canonicalize().unwrap();
        assert_eq!(fs.missing_path(), Some(root.join("sessions")));
        assert_eq!(sqlite.missing_path(), Some(root.join("s.db")));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(&file, b"").unwrap();
        assert_eq!(fs.missing_path(), None);
        assert_eq!(sqlite.missing_path(), None);
        for other in [
            "memory://",
            "sqlite::memory:",
            "redis://127.0.0.1",
            "postgres://h/db",
        ] {
            let storage: StorageType = other.parse().unwrap();
            assert_eq!(storage.missing_path(), None, "{other}");
        }
    }

    #[test]
    fn a_redis_storage_is_its_server_database_and_key_prefix() {
        assert!(same("redis://127.0.0.1", "redis://127.0.0.1:6379/0"));
        assert!(same(
            "redis://127.0.0.1:6379",
            "redis://:pw@127.0.0.1:6379/"
        ));
        assert!(same(
            "redis://LocalHost/2",
            "rediss://user:pw@localhost:6379/2"
        ));
        assert!(same("redis://h", "redis://h/0?key_prefix=fusion"));
        assert!(same("redis://[::1]/1", "redis://[::1]:6379/1"));
        assert!(!same("redis://127.0.0.1/0", "redis://127.0.0.1/1"));
        assert!(!same("redis://127.0.0.1:6379", "redis://127.0.0.1:6380"));
        assert!(!same(
            "redis://h/0?key_prefix=a",
            "redis://h/0?key_prefix=b"
        ));
        assert!(!same("redis://h/0?key_prefix=a", "redis://h/0"));
        // Two seed lists of one cluster share a node; a cluster is not one of its nodes.
        assert!(same(
            "redis+cluster://h1:7000,h2:7001",
            "redis+cluster://:pw@H2:7001,h3:7002/0"
        ));
        assert!(!same("redis+cluster://h1:7000", "redis+cluster://h2:7000"));
        assert!(!same(
            "redis+cluster://h1:7000?key_prefix=a",
            "redis+cluster://h1:7000"
        ));
        assert!(!same("redis+cluster://h1:7000", "redis://h1:7000"));
        // Every loopback spelling is one server; other names are not resolved.
        for loopback in [
            "redis://127.0.0.1",
            "redis://[::1]",
            "redis://LOCALHOST.",
            "redis://127.0.1.1",
            "redis://0.0.0.0",
            "redis://[::ffff:127.0.0.1]",
            "redis://app.localhost",
        ] {
            assert!(same("redis://localhost", loopback), "{loopback}");
        }
        assert!(same(
            "redis+cluster://localhost:7000",
            "redis+cluster://127.0.0.1:7000,h:7001"
        ));
        assert!(same("redis://[0:0::a]", "redis://[::A]"));
        assert!(!same("redis://localhost", "redis://10.0.0.1"));
        assert!(!same("redis://db.internal", "redis://10.0.0.1"));
        for bad in [
            "redis://",
            "redis://h:port",
            "redis://h/db",
            "redis://:pw@/0",
        ] {
            let storage: StorageType = bad.parse().unwrap();
            let err = storage.location().unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
            assert!(!err.to_string().contains("pw@"), "password leaked: {err}");
        }
    }

    #[test]
    fn a_postgres_storage_is_its_server_database_and_schema() {
        assert!(same(
            "postgres://app@DB.example/app",
            "postgresql://app:pw@db.example:5432/app?schema=fusion&sslmode=require"
        ));
        // The database defaults to the user's name, as the server's does.
        assert!(same("postgres://app@db/", "postgres://app@db/app"));
        assert!(!same("postgres://app@db/app", "postgres://app@db/other"));
        assert!(!same("postgres://db/app", "postgres://db:5433/app"));
        assert!(!same("postgres://db/app?schema=a", "postgres://db/app"));
        assert!(!same("postgres://db/app", "redis://db/0"));
        assert!(same(
            "postgres://localhost/app",
            "postgres://127.0.0.1:5432/app"
        ));
        // The driver's parameters override the URL's parts, the last one given winning.
        assert!(same(
            "postgres://ignored:1/nope?host=db&port=5433&dbname=app",
            "postgres://db:5433/app"
        ));
        assert!(same("postgres:///app?host=db", "postgres://db/app"));
        assert!(same(
            "postgres://x/app?host=elsewhere&hostaddr=10.0.0.1",
            "postgres://10.0.0.1/app"
        ));
        assert!(same("postgres://db/?user=app", "postgres://db/app"));
        assert!(same(
            "postgres://db/?dbname=my%20app",
            "postgres://db/my%20app"
        ));
        assert!(same(
            "postgres://db/?dbname=my+app",
            "postgres://db/my%20app"
        ));
        assert!(same(
            "postgres://db/app?%68ost=other",
            "postgres://other/app"
        ));
        assert!(!same(
            "postgres://x/app?host=/run/PG",
            "postgres://x/app?host=/run/pg"
        ));
        assert!(!same("postgres://db/app?host=other", "postgres://db/app"));
        for bad in [
            "postgres://",
            "postgres://:pw@/app",
            "postgres://db:port/app",
            "postgres://db",
            "postgres:///app",
            "postgres://db/app?port=x",
        ] {
            let storage: StorageType = bad.parse().unwrap();
            let err = storage.location().unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
            assert!(!err.to_string().contains("pw@"), "password leaked: {err}");
        }
    }

    #[test]
    fn the_key_prefix_parameter_is_taken_out_of_the_driver_url() {
        let cases = [
            ("redis://h/0", "redis://h/0", None),
            ("redis://h/0?key_prefix=app", "redis://h/0", Some("app")),
            (
                "redis://h/0?protocol=resp3&key_prefix=a:b/c&x=1",
                "redis://h/0?protocol=resp3&x=1",
                Some("a:b/c"),
            ),
            (
                "rediss://h?key_prefix=p#insecure",
                "rediss://h#insecure",
                Some("p"),
            ),
        ];
        for (url, driver, prefix) in cases {
            let (driver_url, key_prefix) =
                fusion_core::split_url_param(url, location::KEY_PREFIX_PARAM);
            assert_eq!(
                (driver_url.as_str(), key_prefix.as_deref()),
                (driver, prefix),
                "{url}"
            );
        }
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_redis_urls_own_parameters_become_options() {
        use fusion_storage_redis::RedisOptions;
        let (url, options) =
            redis_options("redis://h/0?key_prefix=app&publish_changes=true&protocol=resp3")
                .unwrap();
        assert_eq!(url, "redis://h/0?protocol=resp3");
        let expected = RedisOptions::new().key_prefix("app").publish_changes(true);
        assert_eq!(options, expected);
        for (quiet, driver) in [
            ("redis://h?publish_changes=0", "redis://h"),
            (
                "redis+cluster://a:1,b:2?publish_changes=false",
                "redis+cluster://a:1,b:2",
            ),
            ("redis://h", "redis://h"),
        ] {
            let (url, options) = redis_options(quiet).unwrap();
            assert_eq!(
                (url.as_str(), options),
                (driver, RedisOptions::new()),
                "{quiet}"
            );
        }
        let err = redis_options("redis://h?publish_changes=maybe").unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(
            err.to_string().contains(
                "publish_changes in a Redis URL must be true or false (or 1/0), not \"maybe\""
            ),
            "{err}"
        );
    }

    #[cfg(feature = "redis")]
    #[test]
    fn the_default_key_prefix_is_the_redis_backends() {
        assert_eq!(
            location::DEFAULT_REDIS_KEY_PREFIX,
            fusion_storage_redis::DEFAULT_KEY_PREFIX
        );
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn open_existing_creates_no_sqlite_file_and_opens_one_that_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("typo").join("sessions.db");
        let storage = StorageType::Sqlite(format!("sqlite://{}", file.display()));
        assert!(storage.open_existing().await.unwrap().is_none());
        assert!(
            !file.exists() && !file.parent().unwrap().exists(),
            "created"
        );

        std::fs::create_dir(file.parent().unwrap()).unwrap();
        let written = storage.open().await.unwrap();
        written
            .append("s", &[fusion_core::ChatMessage::user("hi")])
            .await
            .unwrap();
        let found = storage
            .open_existing()
            .await
            .unwrap()
            .expect("the file exists");
        assert_eq!(found.load("s").await.unwrap().len(), 1);

        // In memory there is nothing on disk to create: it opens.
        let in_memory = StorageType::Sqlite("sqlite::memory:".into());
        assert!(in_memory.open_existing().await.unwrap().is_some());
    }

    #[cfg(feature = "fs")]
    #[tokio::test]
    async fn open_existing_opens_a_missing_directory_as_open_does_without_making_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sessions");
        let storage = StorageType::FileSystem(dir.clone());
        let found = storage.open_existing().await.unwrap().expect("fs opens");
        assert!(found.list_sessions().await.unwrap().is_empty());
        assert!(!dir.exists(), "opening made the directory");
    }

    #[tokio::test]
    async fn disabled_backend_is_an_error_naming_its_feature() {
        #[cfg(not(feature = "redis"))]
        {
            let err = StorageType::Redis("redis://127.0.0.1:1".into())
                .open()
                .await
                .err()
                .unwrap();
            assert!(
                matches!(
                    err,
                    Error::FeatureDisabled {
                        feature: "redis",
                        ..
                    }
                ),
                "{err}"
            );
        }
        #[cfg(feature = "memory")]
        assert!(StorageType::Memory.open().await.is_ok());
    }
}
