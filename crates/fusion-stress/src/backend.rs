//! Where a run stores its sessions, and opening that storage from any process.
//!
//! Each run gets a fresh location: a new directory (fs), a new SQLite file, a key prefix
//! unique to the run on Redis or a Redis Cluster (its keys are deleted afterwards), or a
//! schema of its own on PostgreSQL (dropped afterwards). A [`Location`] travels to the
//! workers as command-line arguments; each process opens its own storage instance.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, Result};
use fusion_bench::layer::StorageLayer;
use fusion_core::ConversationStorage;
use fusion_storage_fs::FileSystemStorage;
use fusion_storage_postgres::{PostgresOptions, PostgresStorage};
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
    /// `fusion-storage-redis` on a Redis Cluster, under a fresh key prefix.
    RedisCluster,
    /// `fusion-storage-postgres` in a fresh schema.
    Postgres,
}

impl Backend {
    /// Every backend, in the order `cargo xtask stress` runs them.
    pub const ALL: [Backend; 5] = [
        Backend::Fs,
        Backend::Sqlite,
        Backend::Redis,
        Backend::RedisCluster,
        Backend::Postgres,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Fs => "fs",
            Backend::Sqlite => "sqlite",
            Backend::Redis => "redis",
            Backend::RedisCluster => "redis-cluster",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Backend::ALL
            .into_iter()
            .find(|backend| backend.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Backend::ALL.iter().map(|b| b.name()).collect();
                format!("unknown backend `{s}` ({})", names.join(", "))
            })
    }
}

/// One run's storage: the backend and what it opens (a directory, a `sqlite://` URL, a
/// Redis or `redis+cluster://` URL with a key prefix, or a PostgreSQL URL with a schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The backend.
    pub backend: Backend,
    /// The directory, `sqlite://` URL or server URL.
    pub target: String,
    /// The key prefix (Redis), or what the schema's name starts with (PostgreSQL: the
    /// schema is `{prefix}_sessions`).
    pub prefix: Option<String>,
    /// The layer every storage opened here is wrapped in (`fusion_bench::layer`: one
    /// fixed key for encryption, so every process reads what the others wrote).
    pub layer: StorageLayer,
}

impl Location {
    /// A fresh location for `backend` inside `run_dir` (fs, SQLite) or on the server at
    /// `server_url` (the others), its storages wrapped in `layer`.
    pub fn fresh(
        backend: Backend,
        run_dir: &Path,
        server_url: &str,
        layer: StorageLayer,
    ) -> Location {
        let (target, prefix) = match backend {
            Backend::Fs => (run_dir.join("sessions").display().to_string(), None),
            Backend::Sqlite => (
                format!("sqlite://{}", run_dir.join("sessions.db").display()),
                None,
            ),
            Backend::Redis | Backend::RedisCluster => (
                server_url.to_string(),
                Some(format!("fusion-stress:{:016x}", rand::random::<u64>())),
            ),
            Backend::Postgres => (
                server_url.to_string(),
                Some(format!("fusion_stress_{:016x}", rand::random::<u64>())),
            ),
        };
        Location {
            backend,
            target,
            prefix,
            layer,
        }
    }

    /// Opens a new storage instance on this location, wrapped in its layer.
    pub async fn open(&self) -> Result<Arc<dyn ConversationStorage>> {
        Ok(self.layer.wrap(self.open_bare(&self.target).await?))
    }

    /// Opens a new storage instance of this location's backend on `target` (this
    /// location's own, or the same server through a proxy), unlayered.
    pub async fn open_bare(&self, target: &str) -> Result<Arc<dyn ConversationStorage>> {
        let unreachable = || {
            format!(
                "{} at {} is unreachable",
                self.backend,
                fusion_core::redact_url(target)
            )
        };
        let opened: Arc<dyn ConversationStorage> = match self.backend {
            Backend::Fs => Arc::new(FileSystemStorage::connect(target).await?),
            Backend::Sqlite => Arc::new(SqliteStorage::connect(target).await?),
            Backend::Redis | Backend::RedisCluster => {
                let options = RedisOptions::new().key_prefix(self.prefix()?);
                Arc::new(
                    RedisStorage::connect_with(target, options)
                        .await
                        .with_context(unreachable)?,
                )
            }
            Backend::Postgres => {
                let options = PostgresOptions::new(target)
                    .schema(format!("{}_sessions", self.prefix()?))
                    .max_connections(4);
                Arc::new(
                    PostgresStorage::connect_with(options)
                        .await
                        .with_context(unreachable)?,
                )
            }
        };
        Ok(opened)
    }

    /// Removes what the run stored on a server (every key under its prefix, or its schema);
    /// directories and database files go with the run's temporary directory. Returns the
    /// keys or schemas deleted.
    pub async fn cleanup(&self) -> Result<usize> {
        match (self.backend, &self.prefix) {
            (Backend::Redis | Backend::RedisCluster, Some(prefix)) => {
                fusion_bench::redis_keys::delete_under_prefix(&self.target, prefix).await
            }
            (Backend::Postgres, Some(prefix)) => {
                fusion_bench::postgres_schemas::drop_under_prefix(&self.target, prefix).await
            }
            _ => Ok(0),
        }
    }

    fn prefix(&self) -> Result<&str> {
        self.prefix
            .as_deref()
            .with_context(|| format!("a {} location needs a prefix", self.backend))
    }

    /// The worker arguments naming this location.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--backend".into(),
            self.backend.to_string(),
            "--target".into(),
            self.target.clone(),
            "--layer".into(),
            self.layer.name().into(),
        ];
        if let Some(prefix) = &self.prefix {
            args.extend(["--prefix".into(), prefix.clone()]);
        }
        args
    }
}
