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

/// Where conversation histories are stored.
///
/// Parses from a URL: `memory://`, `file://./sessions` (or a plain path),
/// `sqlite://sessions.db`, `sqlite::memory:`, `redis://127.0.0.1:6379/0`, `rediss://...`.
///
/// ```
/// use fusion::storage::StorageType;
///
/// let storage: StorageType = "sqlite://sessions.db".parse()?;
/// assert_eq!(storage, StorageType::Sqlite("sqlite://sessions.db".into()));
/// assert_eq!("./sessions".parse::<StorageType>()?, StorageType::FileSystem("./sessions".into()));
/// # Ok::<(), fusion::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageType {
    /// In-process memory, shared by every `Memory` opened in this process and lost when it
    /// ends (feature `memory`). For a private store, construct an `InMemoryStorage`.
    Memory,
    /// One JSON Lines file per session in this directory (feature `fs`).
    FileSystem(PathBuf),
    /// A SQLite database URL: `sqlite://path`, `sqlite:path` or `sqlite::memory:` (feature `sqlite`).
    Sqlite(String),
    /// A Redis URL: `redis://[:password@]host:port[/db]` or `rediss://...` (feature `redis`).
    Redis(String),
}

impl StorageType {
    /// The cargo feature of the `fusion` crate that provides this backend.
    pub fn feature(&self) -> &'static str {
        match self {
            StorageType::Memory => "memory",
            StorageType::FileSystem(_) => "fs",
            StorageType::Sqlite(_) => "sqlite",
            StorageType::Redis(_) => "redis",
        }
    }

    /// Opens the storage this value names.
    ///
    /// `Memory` opens the process-wide in-memory store, so sessions created through it are
    /// visible to `list_all_sessions(&StorageType::Memory)`; the others connect to (and
    /// create, where needed) the named location.
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
            StorageType::Redis(url) => Ok(Arc::new(
                fusion_storage_redis::RedisStorage::connect(url).await?,
            )),
            #[allow(unreachable_patterns)]
            other => Err(Error::FeatureDisabled {
                what: format!("storage `{other}`"),
                feature: other.feature(),
            }),
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
    /// Renders the storage as a URL, with any password hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageType::Memory => f.write_str("memory://"),
            StorageType::FileSystem(dir) => write!(f, "file://{}", dir.display()),
            StorageType::Sqlite(url) | StorageType::Redis(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl FromStr for StorageType {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        let url = url.trim();
        if url.is_empty() {
            return Err(Error::Config("empty storage URL".into()));
        }
        if url == "memory" || url == "memory://" {
            return Ok(StorageType::Memory);
        }
        if let Some(dir) = url.strip_prefix("file://") {
            if dir.is_empty() {
                return Err(Error::Config(
                    "file:// URL needs a directory, e.g. file://./sessions".into(),
                ));
            }
            return Ok(StorageType::FileSystem(PathBuf::from(dir)));
        }
        if url.starts_with("sqlite:") {
            return Ok(StorageType::Sqlite(url.to_string()));
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Ok(StorageType::Redis(url.to_string()));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(Error::Config(format!(
                "unknown storage scheme `{scheme}://` in {}; use memory://, file://DIR, sqlite://FILE, redis://HOST:PORT or a plain directory path",
                redact_url(url)
            )));
        }
        Ok(StorageType::FileSystem(PathBuf::from(url)))
    }
}

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
