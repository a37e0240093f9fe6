//! Test support (feature `testing`): a private schema per test on the server at
//! `FUSION_POSTGRES_URL` (else a PostgreSQL `DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`), for this crate's tests and for every other
//! crate whose tests need PostgreSQL (the CLI's, the examples').
//!
//! Every [`Harness`] gets a schema name no other run or test uses (pid, counter, random)
//! and drops that schema when it is dropped, also when the test panics. When no server
//! answers, [`harness`] prints `skipped: postgres: ...` and returns `None`, or panics under
//! `FUSION_REQUIRE_BACKENDS`, like the Redis tests.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{PostgresOptions, PostgresStorage};
use fusion_core::redact_url;
use fusion_core::testkit::{StorageHarness, unavailable};
use sqlx::{Connection, PgConnection};

/// The server used when neither variable is set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server under test: `FUSION_POSTGRES_URL`, else `DATABASE_URL` when it is a
/// PostgreSQL URL (it may name another application's SQLite file), else [`DEFAULT_URL`].
pub fn server_url() -> String {
    let var = |name| {
        std::env::var(name)
            .ok()
            .filter(|url| !url.trim().is_empty())
    };
    var("FUSION_POSTGRES_URL")
        .or_else(|| {
            var("DATABASE_URL")
                .filter(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"))
        })
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// A schema name no other run or test uses.
pub fn unique_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = RandomState::new().hash_one((std::process::id(), n)) & 0xffff_ffff;
    format!("fusion_test_{}_{n}_{random:08x}", std::process::id())
}

/// One test's private schema on the server; dropped with it.
pub struct Harness {
    /// The server's URL (without a `schema` parameter).
    pub url: String,
    /// The schema, created by the first storage opened on it.
    pub schema: String,
}

impl Harness {
    /// The URL of this harness's schema as `fusion::storage::StorageType` and the CLI
    /// read it: the server's URL with a `schema` parameter.
    pub fn storage_url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{separator}schema={}", self.url, self.schema)
    }

    /// Options for a new storage instance on this harness's schema.
    pub fn options(&self) -> PostgresOptions {
        PostgresOptions::new(&self.url)
            .schema(&self.schema)
            .max_connections(4)
    }

    /// Whether the schema exists on the server (a storage opened on it creates it).
    pub async fn exists(&self) -> bool {
        let mut conn = PgConnection::connect(&self.url).await.expect("connecting");
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
            .bind(&self.schema)
            .fetch_one(&mut conn)
            .await
            .expect("reading pg_namespace");
        let _ = conn.close().await;
        count == 1
    }

    /// A plain connection with the schema on its `search_path`, for poking at tables the
    /// way another program would.
    pub async fn raw(&self) -> PgConnection {
        let mut conn = PgConnection::connect(&self.url).await.expect("connecting");
        sqlx::query(&format!("SET search_path TO {}", self.schema))
            .execute(&mut conn)
            .await
            .expect("setting the search path");
        conn
    }
}

#[async_trait::async_trait]
impl StorageHarness for Harness {
    type Storage = PostgresStorage;

    async fn open(&self) -> fusion_core::Result<PostgresStorage> {
        PostgresStorage::connect_with(self.options()).await
    }
}

impl Drop for Harness {
    // Drop cannot be async, and the test's runtime may be shutting down: drop the schema
    // from a thread with a runtime of its own.
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url).await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}

/// A harness on the server, or `None` when none answers (skip, or panic under
/// `FUSION_REQUIRE_BACKENDS`).
pub async fn harness() -> Option<Harness> {
    let url = server_url();
    let probe = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await;
    let reason = match probe {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            return Some(Harness {
                url,
                schema: unique_schema(),
            });
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 5 s".to_string(),
    };
    unavailable(
        "postgres",
        &format!(
            "no PostgreSQL server at {} ({reason}); install and start PostgreSQL, or set \
             FUSION_POSTGRES_URL (or DATABASE_URL) to a server's postgres:// URL",
            redact_url(&url)
        ),
    )
}
