//! Test support (feature `testing`): a private schema per test on the server at
//! `FUSION_POSTGRES_URL` (else a PostgreSQL `DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`), for this crate's tests and for every other
//! crate whose tests need PostgreSQL (the CLI's, the examples').
//!
//! Every [`Harness`] gets a schema name no other run or test uses (pid, counter, random)
//! and drops that schema when it is dropped, also when the test panics. When no server
//! answers, [`harness`] prints `skipped: postgres: ...` and returns `None`, or panics under
//! `FUSION_REQUIRE_BACKENDS`, like the Redis tests.
//!
//! [`Cluster`] is a throwaway server of a test's own, for tests that stop and restart it.

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{PostgresOptions, PostgresStorage};
use fusion_core::redact_url;
use fusion_core::testkit::port::{ReservedPort, reserve_port};
use fusion_core::testkit::{StorageHarness, unavailable};
use leftovers::OwnerLock;
use sqlx::{Connection, PgConnection};

mod leftovers;

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
    fn drop(&mut self) {
        let drop_schema = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        if let Err(e) = execute_from_a_thread(&self.url, &drop_schema) {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}

/// Runs `sql` on the server at `url` from a thread with a runtime of its own: what a
/// `Drop` that cleans up after a test does, since drop cannot be async and the test's
/// runtime may be shutting down.
pub fn execute_from_a_thread(
    url: &str,
    sql: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut conn = PgConnection::connect(&url).await?;
            sqlx::query(&sql).execute(&mut conn).await?;
            conn.close().await?;
            Ok(())
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the thread running it panicked".into()))
}

/// A harness on the server, or `None` when none answers (skip, or panic under
/// `FUSION_REQUIRE_BACKENDS`).
pub async fn harness() -> Option<Harness> {
    Some(Harness {
        url: reachable_url().await?,
        schema: unique_schema(),
    })
}

/// [`server_url`] once a connection to it succeeded, for a test that makes its own schemas
/// (or has another program make them); `None` when no server answers within 5 s (skip, or
/// panic under `FUSION_REQUIRE_BACKENDS`).
pub async fn reachable_url() -> Option<String> {
    let url = server_url();
    let probe = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await;
    let reason = match probe {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            return Some(url);
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

/// A throwaway PostgreSQL cluster of one test's own, which the test may stop and restart:
/// `initdb` into a temporary directory (data, socket, log), a server on a port of
/// 127.0.0.1 reserved for it ([`reserve_port`]), user `postgres` with `trust`
/// authentication, `fsync` off. Dropping it stops the server and removes the directory,
/// also when the test panics; a cluster left by a run that was killed is stopped and
/// removed by the next one made (`leftovers`).
///
/// `initdb` and `pg_ctl` are taken from `PATH`, else from the newest
/// `/usr/lib/postgresql/VERSION/bin` (Debian keeps them off `PATH`). PostgreSQL refuses to
/// run as root, so as root they run as the `postgres` user (`runuser`), which must exist.
/// Every method blocks its thread until `pg_ctl` returns (about a second).
///
/// (`xtask` starts a cluster the same way for the test runner; it cannot share this code.)
pub struct Cluster {
    /// The cluster's directory: `data/`, the Unix socket and `server.log`.
    dir: PathBuf,
    /// The directory holding `initdb` and `pg_ctl`.
    bin: PathBuf,
    /// The server's port, reserved while the cluster lives.
    port: ReservedPort,
    /// Whether the binaries run as the `postgres` user (this process is root).
    as_postgres: bool,
    /// Held for the cluster's life: a free one marks a leftover to remove.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "held, never read: its drop releases the lock")
    )]
    owner: Option<OwnerLock>,
}

impl Cluster {
    /// Creates and starts a cluster, or returns `None` when PostgreSQL is not installed
    /// (skip, or panic under `FUSION_REQUIRE_BACKENDS`). Panics, with the server's log,
    /// when it is installed but the cluster does not start. A port that another program
    /// took between its reservation and the server's start (one outside this crate's
    /// reservations that binds it by number) is replaced by another, a few times.
    pub fn start_new() -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            return unavailable(
                "postgres",
                "no initdb and pg_ctl on PATH or in /usr/lib/postgresql/VERSION/bin; install \
                 postgresql (Debian/Ubuntu: `apt-get install postgresql`, macOS: `brew \
                 install postgresql`)",
            );
        };
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
        let parent = std::env::temp_dir();
        let dir = parent.join(format!("{}{}", leftovers::PREFIX, unique_schema()));
        std::fs::create_dir_all(&dir).expect("creating the cluster's directory");
        // Before anything else is in the directory, so no leftover is taken for it.
        let owner = OwnerLock::take(&dir).expect("locking the cluster's directory");
        // From here on, `Drop` removes the directory whatever fails.
        let mut cluster = Cluster {
            dir,
            bin,
            port: reserve_port(),
            as_postgres,
            owner: Some(owner),
        };
        if as_postgres {
            let chown = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&cluster.dir)
                .output();
            check("chown -R postgres:", chown, None);
        }
        // The leftovers of killed runs: those of the owner this cluster's directory has.
        leftovers::reap(&parent, leftovers::owner(&cluster.dir), |dir| {
            cluster.stop_at_once(dir);
        });
        let mut initdb = cluster.command("initdb");
        initdb.args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ]);
        check(
            "initdb",
            initdb.arg(cluster.dir.join("data")).output(),
            None,
        );
        for _ in 1..PORT_TRIES {
            match cluster.try_start() {
                Ok(()) => return Some(cluster),
                Err(log) if log.contains("Address already in use") => {
                    cluster.port = reserve_port();
                }
                Err(log) => panic!("{log}"),
            }
        }
        cluster.start();
        Some(cluster)
    }

    /// The server's URL: `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port.port)
    }

    /// Starts the stopped server on its port and waits until it accepts connections.
    pub fn start(&self) {
        if let Err(log) = self.try_start() {
            panic!("{log}");
        }
    }

    /// [`start`](Self::start), or what went wrong and the server's log since this start.
    fn try_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        let logged = std::fs::metadata(&log).map_or(0, |meta| meta.len());
        let mut start = self.pg_ctl("start");
        start
            .args(["-w", "-t", "60", "-o", &options, "-l"])
            .arg(&log);
        let output = start.output();
        let failed = |why: String| {
            let text = std::fs::read(&log).unwrap_or_default();
            let since = text
                .get(usize::try_from(logged).unwrap_or(0)..)
                .unwrap_or(&text);
            format!(
                "pg_ctl start failed ({why})\nserver log ({}):\n{}",
                log.display(),
                String::from_utf8_lossy(since)
            )
        };
        match output {
            Err(e) => Err(failed(format!("could not run it: {e}"))),
            Ok(out) if !out.status.success() => Err(failed(format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))),
            Ok(_) => Ok(()),
        }
    }

    /// Stops the server (`-m fast`: its sessions are ended at once, each client told so)
    /// and waits until it is down.
    pub fn stop(&self) {
        let mut stop = self.pg_ctl("stop");
        stop.args(["-w", "-m", "fast"]);
        check(
            "pg_ctl stop",
            stop.output(),
            Some(&self.dir.join("server.log")),
        );
    }

    /// Stops the server, then starts it again on the same port.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    /// `pg_ctl ACTION -D DATA`.
    fn pg_ctl(&self, action: &str) -> Command {
        self.pg_ctl_in(&self.dir, action)
    }

    /// `pg_ctl ACTION -D DATA` of the cluster directory `dir` (this one's or a leftover's).
    fn pg_ctl_in(&self, dir: &Path, action: &str) -> Command {
        let mut command = self.command_in(dir, "pg_ctl");
        command.arg(action).arg("-D").arg(dir.join("data"));
        command
    }

    /// Stops the server of the cluster directory `dir` at once, if one runs there.
    fn stop_at_once(&self, dir: &Path) {
        let _ = self
            .pg_ctl_in(dir, "stop")
            .args(["-w", "-m", "immediate"])
            .output();
    }

    /// The binary `name`, run as `postgres` when this process is root, in the cluster's
    /// directory (that user may not be allowed into the current one).
    fn command(&self, name: &str) -> Command {
        self.command_in(&self.dir, name)
    }

    /// [`command`](Self::command) in the cluster directory `dir`.
    fn command_in(&self, dir: &Path, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(dir);
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_at_once(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How many ports [`Cluster::start_new`] tries before it gives up.
const PORT_TRIES: usize = 5;

/// The directory holding `initdb` and `pg_ctl`: on `PATH`, else the newest
/// `/usr/lib/postgresql/VERSION/bin`.
fn bin_dir() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|dir| has_both(dir)) {
        return Some(dir);
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

/// Panics with `what`'s output (and the server's `log`) unless it ran and succeeded.
fn check(what: &str, output: std::io::Result<std::process::Output>, log: Option<&Path>) {
    let output = output.unwrap_or_else(|e| panic!("could not run {what}: {e}"));
    if !output.status.success() {
        let log = log.map_or_else(String::new, |log| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            format!("\nserver log ({}):\n{text}", log.display())
        });
        panic!(
            "{what} failed ({}): {}{}{log}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
