//! PostgreSQL for the tests: `FUSION_POSTGRES_URL` if set, else `DATABASE_URL` when it is
//! a PostgreSQL URL, else a server on 127.0.0.1:5432 (user `postgres`, database `test`),
//! else a throwaway cluster started here (`initdb` and `pg_ctl` on a port reserved for it, data in a
//! temporary directory, stopped and removed when the guard drops). PostgreSQL refuses to
//! run as root, so when this runs as root the cluster runs as the `postgres` user, which
//! Debian's `postgresql` package creates; that package is installed with apt-get when no
//! `initdb` is found.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Reach, answers_at_any, apt_install, is_root, on_path, reach, redact, with_port};
use fusion_test_ports::{ReservedPort, try_reserve_port};

const INSTALL_HINT: &str = "install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`, \
     macOS: `brew install postgresql`) or set FUSION_POSTGRES_URL to a reachable server";

/// The server used when nothing is configured and one answers on the standard port.
const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A PostgreSQL server for the tests; stops the cluster on drop if this task started it.
pub struct Postgres {
    /// The URL tests connect to.
    pub url: String,
    /// Where the URL came from, for the log.
    pub origin: &'static str,
    /// Held for its `Drop`, which stops the cluster this task started.
    _cluster: Option<Cluster>,
}

/// A throwaway cluster: its directory (data, socket, log) and how to stop it.
struct Cluster {
    dir: PathBuf,
    pg_ctl: PathBuf,
    as_postgres: bool,
    /// The cluster's port, kept from every other reservation while it runs (dropped after
    /// `Drop` stopped the cluster).
    _port: ReservedPort,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = command(&self.pg_ctl, self.as_postgres)
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&data)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Postgres {
    /// The URL with any password masked, for messages.
    pub fn shown(&self) -> String {
        redact(&self.url)
    }
}

/// Finds or starts a PostgreSQL server.
pub fn postgres() -> Result<Postgres> {
    for (variable, origin) in [
        ("FUSION_POSTGRES_URL", "FUSION_POSTGRES_URL"),
        ("DATABASE_URL", "DATABASE_URL"),
    ] {
        let Ok(url) = std::env::var(variable) else {
            continue;
        };
        if variable == "DATABASE_URL" && host_port(&url).is_none() {
            // Another application's database (say, a MySQL URL): not ours to use.
            continue;
        }
        let addr = host_port(&url).with_context(|| {
            format!(
                "{variable}={} is not a postgres://HOST[:PORT]/DB URL I can probe",
                redact(&url)
            )
        })?;
        match reach(&addr, speaks_postgres) {
            Reach::Answers => {}
            Reach::Silent => bail!(
                "{variable}={} does not answer as a PostgreSQL server; start it, unset \
                 {variable}, or {INSTALL_HINT}",
                redact(&url)
            ),
            Reach::Unresolved(why) => bail!(
                "{variable}={}: {why}; correct the host name, unset {variable}, or \
                 {INSTALL_HINT}",
                redact(&url)
            ),
        }
        return Ok(Postgres {
            url,
            origin,
            _cluster: None,
        });
    }
    if answers_as_postgres("127.0.0.1:5432") {
        return Ok(Postgres {
            url: LOCAL_URL.into(),
            origin: "server on the standard port",
            _cluster: None,
        });
    }
    start_throwaway()
}

fn start_throwaway() -> Result<Postgres> {
    let bin = match bin_dir() {
        Some(bin) => bin,
        None => {
            apt_install("postgresql", INSTALL_HINT)?;
            bin_dir().with_context(|| {
                format!("initdb still not found after installing postgresql: {INSTALL_HINT}")
            })?
        }
    };
    let reserved = try_reserve_port()?;
    let port = reserved.port;
    let as_postgres = is_root();
    let dir = std::env::temp_dir().join(format!("fusion-xtask-pg-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cluster = Cluster {
        dir: dir.clone(),
        pg_ctl: bin.join("pg_ctl"),
        as_postgres,
        _port: reserved,
    };
    if as_postgres {
        run(Command::new("chown").args(["-R", "postgres:"]).arg(&dir))
            .context("giving the cluster's directory to the postgres user")?;
    }
    let data = dir.join("data");
    run(command(&bin.join("initdb"), as_postgres)
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data))
    .context("initdb")?;
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
        dir.display()
    );
    run(command(&cluster.pg_ctl, as_postgres)
        .args(["start", "-w", "-t", "60", "-o", &options, "-l"])
        .arg(dir.join("server.log"))
        .arg("-D")
        .arg(&data))
    .with_context(|| {
        format!(
            "pg_ctl start (its log: {})",
            dir.join("server.log").display()
        )
    })?;
    Ok(Postgres {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        origin: "throwaway cluster started by xtask",
        _cluster: Some(cluster),
    })
}

/// Where `initdb` and `pg_ctl` are: on `PATH`, else in the newest
/// `/usr/lib/postgresql/VERSION/bin` (Debian keeps them off `PATH`).
fn bin_dir() -> Option<PathBuf> {
    if on_path("initdb") && on_path("pg_ctl") {
        let paths = std::env::var_os("PATH")?;
        return std::env::split_paths(&paths).find(|dir| dir.join("initdb").is_file());
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    versions
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

/// `program`, run as the `postgres` user when `as_postgres`.
fn command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Runs `command`, failing with its output when it fails.
fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// `host:port` of a `postgres[ql]://[user[:pass]@]host[:port][/db][?...]` URL with a host;
/// `None` without one or with a port that is no port number.
fn host_port(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let authority = rest.split(['/', '?']).next()?;
    with_port(authority.rsplit('@').next()?, 5432)
}

/// True when the server at `addr` (`host:port`, at any address it names) answers
/// PostgreSQL's `SSLRequest` with `S` or `N`, which only a PostgreSQL server does.
fn answers_as_postgres(addr: &str) -> bool {
    answers_at_any(addr, speaks_postgres)
}

/// Whether the server at `addr` answers as PostgreSQL ([`answers_as_postgres`]).
fn speaks_postgres(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    // Length 8, then the SSLRequest code 80877103.
    if stream
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .is_err()
    {
        return false;
    }
    let mut reply = [0u8; 1];
    matches!(stream.read(&mut reply), Ok(1) if matches!(reply[0], b'S' | b'N'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_port_and_hide_passwords() {
        assert_eq!(
            host_port("postgres://u:p@db.example:6543/app?sslmode=require").as_deref(),
            Some("db.example:6543")
        );
        assert_eq!(
            host_port("postgresql://127.0.0.1/test").as_deref(),
            Some("127.0.0.1:5432")
        );
        assert_eq!(host_port("postgres:///test?host=/run/pg"), None);
        assert_eq!(host_port("mysql://h/db"), None);
        // A port that is no port number names no server (it was blamed on the host name).
        assert_eq!(host_port("postgres://u@h:54321/db"), Some("h:54321".into()));
        assert_eq!(host_port("postgres://u@h:654321/db"), None);
        assert_eq!(
            host_port("postgres://[::1]/db").as_deref(),
            Some("[::1]:5432")
        );
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        // A userinfo without a `:` may be a token: it is hidden whole, as the library does.
        assert_eq!(redact("postgres://u@h/db"), "postgres://***@h/db");
        assert_eq!(
            redact("postgres://h/db?sslmode=require"),
            "postgres://h/db?sslmode=require"
        );
    }
}
