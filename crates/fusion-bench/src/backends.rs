//! Opening each backend as `Arc<dyn ConversationStorage>` in a fresh namespace of this run.
//!
//! A namespace is a directory (fs), a database file (SQLite), a key prefix (Redis), a
//! schema (PostgreSQL) or a store (memory). Each workload gets its own, so W3's `list_sessions` sees only W3's
//! sessions and nothing a previous run left behind can skew a number.
//!
//! W5's worker processes reach the same namespaces through [`Backend::attach`], given the
//! run's [`Backend::root_id`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use fusion_bench::redis_conn::RedisConn;
use fusion_core::ConversationStorage;
use fusion_storage_fs::FileSystemStorage;
use fusion_storage_memory::InMemoryStorage;
use fusion_storage_postgres::{Durability, PostgresOptions, PostgresStorage};
use fusion_storage_redis::{RedisOptions, RedisStorage};
use fusion_storage_sqlite::SqliteStorage;
use sqlx::Connection;
use tempfile::TempDir;

use fusion_bench::layer::StorageLayer;

/// The backends this runner knows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `fusion-storage-memory`.
    Memory,
    /// `fusion-storage-fs`.
    Fs,
    /// `fusion-storage-sqlite`.
    Sqlite,
    /// `fusion-storage-redis`.
    Redis,
    /// `fusion-storage-postgres`.
    Postgres,
    /// `fusion-storage-redis` on a Redis Cluster.
    #[serde(rename = "redis-cluster")]
    RedisCluster,
}

/// The servers the shared backends run against.
#[derive(Debug, Clone)]
pub struct Servers {
    /// The Redis server for `redis`.
    pub redis_url: String,
    /// The Redis Cluster for `redis-cluster` (`redis+cluster://host:port,...`).
    pub redis_cluster_url: String,
    /// The PostgreSQL server (and database) for `postgres`.
    pub postgres_url: String,
    /// Whether `postgres` commits with `synchronous_commit = off` (`Durability::Relaxed`).
    pub postgres_relaxed: bool,
    /// How many replicas each `redis` and `redis-cluster` write waits for
    /// (`RedisOptions::replica_acks`), if any.
    pub redis_replica_acks: Option<usize>,
}

impl Servers {
    /// Hands these servers to a child process of this binary: the URLs through the
    /// environment variables its arguments read (so a password in a URL stays out of
    /// `ps`), the durability as a flag.
    pub fn pass_to(&self, child: &mut std::process::Command) {
        child
            .env("REDIS_URL", &self.redis_url)
            .env("FUSION_REDIS_CLUSTER_URL", &self.redis_cluster_url)
            .env("FUSION_POSTGRES_URL", &self.postgres_url);
        if self.postgres_relaxed {
            child.arg("--postgres-relaxed");
        }
        if let Some(replicas) = self.redis_replica_acks {
            child.args(["--redis-replica-acks", &replicas.to_string()]);
        }
    }
}

impl Kind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Fs => "fs",
            Kind::Sqlite => "sqlite",
            Kind::Redis => "redis",
            Kind::Postgres => "postgres",
            Kind::RedisCluster => "redis-cluster",
        }
    }

    /// Whether several processes can share this backend's data (all but memory).
    pub fn is_shared(self) -> bool {
        self != Kind::Memory
    }
}

/// Where one backend keeps this run's data.
enum Root {
    /// One store per namespace; "a new instance" of a namespace is a clone sharing it,
    /// since a truly new in-memory store would be empty.
    Memory(Mutex<HashMap<String, InMemoryStorage>>),
    /// A directory: this run's temporary one (`_temp`, removed when the run ends), or the
    /// one a W5 worker was handed (`_temp` is `None`: its parent owns it).
    Dir {
        path: PathBuf,
        _temp: Option<TempDir>,
    },
    /// A key prefix unique to this run, whose keys are deleted by [`Backend::cleanup`];
    /// `url` is a single server's or a `redis+cluster://` one.
    Redis {
        url: String,
        prefix: String,
        replica_acks: Option<usize>,
    },
    /// A schema-name prefix unique to this run: namespace `ns` is schema `{prefix}_{ns}`,
    /// dropped by [`Backend::cleanup`].
    Postgres {
        url: String,
        prefix: String,
        level: Durability,
    },
}

/// How long a write waits for its replicas under `--redis-replica-acks`: far above a
/// loopback replica's delay, so a timeout means a missing replica, not a slow one.
const REPLICA_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// One backend, ready to open storages in fresh namespaces.
pub struct Backend {
    /// Which backend.
    pub kind: Kind,
    root: Root,
    /// The durability settings in effect, for the report.
    pub durability: String,
    /// The layer [`Backend::open`] wraps every storage in.
    pub layer: StorageLayer,
}

impl Backend {
    /// Prepares `kind`: a temporary directory, or a reachable server from `servers`.
    pub async fn setup(kind: Kind, servers: &Servers) -> Result<Self> {
        let temp = || -> Result<Root> {
            let temp = tempfile::Builder::new()
                .prefix("fusion-bench-")
                .tempdir()
                .context("creating a temporary directory")?;
            Ok(Root::Dir {
                path: temp.path().to_path_buf(),
                _temp: Some(temp),
            })
        };
        let (root, durability) = match kind {
            Kind::Memory => (
                Root::Memory(Mutex::default()),
                "none: process memory only".to_string(),
            ),
            Kind::Fs => (
                temp()?,
                "SyncPolicy::OnReplace (default): append = one write(), no fsync; \
                 save/truncate fsync + rename"
                    .to_string(),
            ),
            Kind::Sqlite => (
                temp()?,
                "Durability::Normal (default): WAL, synchronous=NORMAL, pool of 8".to_string(),
            ),
            Kind::Redis | Kind::RedisCluster => {
                let (url, variable) = if kind == Kind::Redis {
                    (&servers.redis_url, "REDIS_URL")
                } else {
                    (&servers.redis_cluster_url, "FUSION_REDIS_CLUSTER_URL")
                };
                let prefix = format!("fusion-bench:{:016x}", rand::random::<u64>());
                let server = redis_persistence(url).await.with_context(|| {
                    format!(
                        "Redis at {} is unreachable (set {variable} to a running server)",
                        fusion_core::redact_url(url)
                    )
                })?;
                let root = Root::Redis {
                    url: url.clone(),
                    prefix,
                    replica_acks: servers.redis_replica_acks,
                };
                let acks = servers.redis_replica_acks.map_or(String::new(), |n| {
                    format!("; every write waits for {n} replica(s) (replica_acks, WAIT)")
                });
                (root, format!("server persistence: {server}{acks}"))
            }
            Kind::Postgres => {
                let url = servers.postgres_url.clone();
                let commit = postgres_commit_setting(&url).await.with_context(|| {
                    format!(
                        "PostgreSQL at {} is unreachable (set FUSION_POSTGRES_URL to a running server)",
                        fusion_core::redact_url(&url)
                    )
                })?;
                let prefix = format!("fusion_bench_{:012x}", rand::random::<u64>() >> 16);
                let (level, durability) = if servers.postgres_relaxed {
                    (
                        Durability::Relaxed,
                        "Durability::Relaxed: synchronous_commit = off for its connections, pool of 8"
                            .to_string(),
                    )
                } else {
                    (
                        Durability::Server,
                        format!(
                            "Durability::Server (default): the server's synchronous_commit = {commit}, pool of 8"
                        ),
                    )
                };
                (Root::Postgres { url, prefix, level }, durability)
            }
        };
        Ok(Self {
            kind,
            root,
            durability,
            layer: StorageLayer::None,
        })
    }

    /// What names this run's data: the directory (fs, SQLite), key prefix (Redis) or
    /// schema-name prefix (PostgreSQL); empty for memory, which no other process can reach.
    pub fn root_id(&self) -> String {
        match &self.root {
            Root::Memory(_) => String::new(),
            Root::Dir { path, .. } => path.display().to_string(),
            Root::Redis { prefix, .. } | Root::Postgres { prefix, .. } => prefix.clone(),
        }
    }

    /// The backend another process set up, reached through its [`Backend::root_id`]: the
    /// same namespaces, with nothing to clean up here (the owner does that).
    pub fn attach(kind: Kind, servers: &Servers, root_id: &str) -> Result<Self> {
        let root = match kind {
            Kind::Memory => bail!("memory cannot be shared between processes"),
            Kind::Fs | Kind::Sqlite => Root::Dir {
                path: PathBuf::from(root_id),
                _temp: None,
            },
            Kind::Redis => Root::Redis {
                url: servers.redis_url.clone(),
                prefix: root_id.to_string(),
                replica_acks: servers.redis_replica_acks,
            },
            Kind::RedisCluster => Root::Redis {
                url: servers.redis_cluster_url.clone(),
                prefix: root_id.to_string(),
                replica_acks: servers.redis_replica_acks,
            },
            Kind::Postgres => Root::Postgres {
                url: servers.postgres_url.clone(),
                prefix: root_id.to_string(),
                level: if servers.postgres_relaxed {
                    Durability::Relaxed
                } else {
                    Durability::Server
                },
            },
        };
        Ok(Self {
            kind,
            root,
            durability: String::new(),
            layer: StorageLayer::None,
        })
    }

    /// This backend with every storage [`Backend::open`] returns wrapped in `layer`.
    pub fn wrapped_in(self, layer: StorageLayer) -> Self {
        Self { layer, ..self }
    }

    /// A new storage instance in namespace `ns`: a new directory handle, SQLite pool or
    /// Redis connection each time (memory: a clone of the namespace's store), wrapped in
    /// this backend's layer.
    pub async fn open(&self, ns: &str) -> Result<Arc<dyn ConversationStorage>> {
        Ok(self.layer.wrap(self.open_bare(ns).await?))
    }

    /// [`Backend::open`] without the layer.
    async fn open_bare(&self, ns: &str) -> Result<Arc<dyn ConversationStorage>> {
        Ok(match &self.root {
            Root::Memory(stores) => {
                let mut stores = stores.lock().unwrap_or_else(|e| e.into_inner());
                Arc::new(stores.entry(ns.to_string()).or_default().clone())
            }
            Root::Dir { .. } if self.kind == Kind::Fs => {
                Arc::new(FileSystemStorage::new(self.path(ns)?))
            }
            Root::Dir { .. } => Arc::new(SqliteStorage::connect(&self.sqlite_url(ns)?).await?),
            Root::Redis {
                url, replica_acks, ..
            } => {
                let options = RedisOptions::new().key_prefix(self.redis_prefix(ns)?);
                let options = match replica_acks {
                    Some(n) => options.replica_acks(*n, REPLICA_ACK_TIMEOUT),
                    None => options,
                };
                Arc::new(RedisStorage::connect_with(url, options).await?)
            }
            Root::Postgres { url, level, .. } => Arc::new(
                PostgresStorage::connect_with(
                    PostgresOptions::new(url.clone())
                        .schema(self.postgres_schema(ns)?)
                        .durability(*level),
                )
                .await?,
            ),
        })
    }

    /// The directory (fs) or database file (SQLite) of namespace `ns`.
    pub fn path(&self, ns: &str) -> Result<PathBuf> {
        match (&self.root, self.kind) {
            (Root::Dir { path, .. }, Kind::Fs) => Ok(path.join(ns)),
            (Root::Dir { path, .. }, Kind::Sqlite) => Ok(path.join(format!("{ns}.db"))),
            _ => bail!("{} has no path", self.kind.name()),
        }
    }

    /// The `sqlite://` URL of namespace `ns`.
    pub fn sqlite_url(&self, ns: &str) -> Result<String> {
        Ok(format!("sqlite://{}", self.path(ns)?.display()))
    }

    /// The Redis server (or `redis+cluster://`) URL.
    pub fn redis_url(&self) -> Result<&str> {
        match &self.root {
            Root::Redis { url, .. } => Ok(url),
            _ => bail!("{} is not Redis", self.kind.name()),
        }
    }

    /// The key prefix of namespace `ns`.
    pub fn redis_prefix(&self, ns: &str) -> Result<String> {
        match &self.root {
            Root::Redis { prefix, .. } => Ok(format!("{prefix}:{ns}")),
            _ => bail!("{} is not Redis", self.kind.name()),
        }
    }

    /// The PostgreSQL server URL.
    pub fn postgres_url(&self) -> Result<&str> {
        match &self.root {
            Root::Postgres { url, .. } => Ok(url),
            _ => bail!("{} is not PostgreSQL", self.kind.name()),
        }
    }

    /// Whether the postgres backend commits with `synchronous_commit = off`, so its floor
    /// can do the same.
    pub fn postgres_relaxed(&self) -> bool {
        matches!(
            self.root,
            Root::Postgres {
                level: Durability::Relaxed,
                ..
            }
        )
    }

    /// The schema of namespace `ns` (lower case, `_` for anything a schema name cannot hold).
    pub fn postgres_schema(&self, ns: &str) -> Result<String> {
        match &self.root {
            Root::Postgres { prefix, .. } => {
                let ns: String = ns
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                Ok(format!("{prefix}_{ns}"))
            }
            _ => bail!("{} is not PostgreSQL", self.kind.name()),
        }
    }

    /// Removes what this run stored: Redis keys under the run's prefix, or the run's
    /// PostgreSQL schemas (directories go when the backend is dropped). Returns how many
    /// keys or schemas were deleted.
    pub async fn cleanup(&self) -> Result<usize> {
        match &self.root {
            Root::Redis { url, prefix, .. } => {
                fusion_bench::redis_keys::delete_under_prefix(url, prefix).await
            }
            Root::Postgres { url, prefix, .. } => {
                fusion_bench::postgres_schemas::drop_under_prefix(url, prefix).await
            }
            _ => Ok(0),
        }
    }
}

/// The server's persistence settings, as `appendonly=.. appendfsync=.. save='..'` (on a
/// cluster, those of whichever node answers); also the reachability check, so an absent
/// server fails before any workload starts.
async fn redis_persistence(url: &str) -> Result<String> {
    let connect = RedisConn::connect(url);
    let mut conn = tokio::time::timeout(std::time::Duration::from_secs(3), connect)
        .await
        .context("connection timed out")??;
    let mut parts = Vec::new();
    for name in ["appendonly", "appendfsync", "save"] {
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let value = pair.get(1).cloned().unwrap_or_else(|| "?".into());
        parts.push(format!("{name}='{value}'"));
    }
    Ok(parts.join(" "))
}

/// The server's `synchronous_commit`; also the reachability check, so an absent server
/// fails before any workload starts.
async fn postgres_commit_setting(url: &str) -> Result<String> {
    let connect = sqlx::PgConnection::connect(url);
    let mut conn = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
        .await
        .context("connection timed out")??;
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(setting)
}
