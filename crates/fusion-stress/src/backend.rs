//! Where a run stores its sessions, and opening that storage from any process.
//!
//! Each run gets a fresh location: a new directory (fs), a new SQLite file, or a Redis key
//! prefix unique to the run (its keys are deleted afterwards). A [`Location`] travels to
//! the workers as command-line arguments; each process opens its own storage instance.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, Result};
use fusion_core::ConversationStorage;
use fusion_storage_fs::FileSystemStorage;
use fusion_storage_redis::{RedisOptions, RedisStorage};
use fusion_storage_sqlite::SqliteStorage;

/// A storage backend the stress run can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `fusion-storage-fs` in a fresh directory.
    Fs,
    /// `fusion-storage-sqlite` on a fresh database file.
    Sqlite,
    /// `fusion-storage-redis` under a fresh key prefix.
    Redis,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Fs => "fs",
            Backend::Sqlite => "sqlite",
            Backend::Redis => "redis",
        })
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fs" => Ok(Backend::Fs),
            "sqlite" => Ok(Backend::Sqlite),
            "redis" => Ok(Backend::Redis),
            other => Err(format!("unknown backend `{other}` (fs, sqlite or redis)")),
        }
    }
}

/// One run's storage: the backend and what it opens (a directory, a `sqlite://` URL, or a
/// Redis URL with a key prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The backend.
    pub backend: Backend,
    /// The directory, `sqlite://` URL or Redis URL.
    pub target: String,
    /// The Redis key prefix (Redis only).
    pub prefix: Option<String>,
}

impl Location {
    /// A fresh location for `backend` inside `run_dir` (fs, SQLite) or on `redis_url`.
    pub fn fresh(backend: Backend, run_dir: &Path, redis_url: &str) -> Location {
        match backend {
            Backend::Fs => Location {
                backend,
                target: run_dir.join("sessions").display().to_string(),
                prefix: None,
            },
            Backend::Sqlite => Location {
                backend,
                target: format!("sqlite://{}", run_dir.join("sessions.db").display()),
                prefix: None,
            },
            Backend::Redis => Location {
                backend,
                target: redis_url.to_string(),
                prefix: Some(format!("fusion-stress:{:016x}", rand::random::<u64>())),
            },
        }
    }

    /// Opens a new storage instance on this location.
    pub async fn open(&self) -> Result<Arc<dyn ConversationStorage>> {
        let opened: Arc<dyn ConversationStorage> = match self.backend {
            Backend::Fs => Arc::new(FileSystemStorage::connect(&self.target).await?),
            Backend::Sqlite => Arc::new(SqliteStorage::connect(&self.target).await?),
            Backend::Redis => {
                let prefix = self
                    .prefix
                    .clone()
                    .context("a Redis location needs a prefix")?;
                let options = RedisOptions::new().key_prefix(prefix);
                Arc::new(
                    RedisStorage::connect_with(&self.target, options)
                        .await
                        .with_context(|| {
                            format!(
                                "Redis at {} is unreachable",
                                fusion_core::redact_url(&self.target)
                            )
                        })?,
                )
            }
        };
        Ok(opened)
    }

    /// Removes what the run stored in Redis (every key under its prefix); directories and
    /// database files go with the run's temporary directory. Returns the keys deleted.
    pub async fn cleanup(&self) -> Result<usize> {
        let (Backend::Redis, Some(prefix)) = (self.backend, &self.prefix) else {
            return Ok(0);
        };
        fusion_bench::redis_keys::delete_under_prefix(&self.target, prefix).await
    }

    /// The worker arguments naming this location.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--backend".into(),
            self.backend.to_string(),
            "--target".into(),
            self.target.clone(),
        ];
        if let Some(prefix) = &self.prefix {
            args.extend(["--prefix".into(), prefix.clone()]);
        }
        args
    }
}
