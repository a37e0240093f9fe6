//! Redis for the tests: `REDIS_URL` if set, else a server answering on 127.0.0.1:6379, else
//! a throwaway `redis-server` started here on a port reserved for it ([`try_reserve_port`]),
//! stopped when the guard drops. The `redis-server` binary is also needed by the Redis
//! tests themselves (they restart a private server to test reconnection), so it is
//! installed with apt-get when missing and this runs as root; otherwise the task fails
//! naming what to install.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Reach, answers_at_any, apt_install, on_path, reach, redact, with_port};
use fusion_test_ports::{ReservedPort, try_reserve_port};

const INSTALL_HINT: &str = "install redis-server (Debian/Ubuntu: `apt-get install redis-server`, \
     macOS: `brew install redis`) or set REDIS_URL to a reachable server";

/// A Redis server for the tests; stops the server on drop if this task started it.
pub struct Redis {
    /// The URL tests connect to.
    pub url: String,
    /// Where the URL came from, for the log.
    pub origin: &'static str,
    child: Option<Child>,
    /// The port of the server started here, kept from every other reservation while it
    /// runs (dropped after `child`, which `Drop` stops).
    _port: Option<ReservedPort>,
}

impl Redis {
    /// The URL with any password masked, for messages.
    pub fn shown(&self) -> String {
        redact(&self.url)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Finds or starts a Redis server, making sure `redis-server` is installed.
pub fn redis() -> Result<Redis> {
    ensure_redis_server_installed()?;
    if let Ok(url) = std::env::var("REDIS_URL") {
        check_redis_url(&url)?;
        return Ok(Redis {
            url,
            origin: "REDIS_URL",
            child: None,
            _port: None,
        });
    }
    if answers_ping("127.0.0.1:6379") {
        return Ok(Redis {
            url: "redis://127.0.0.1:6379".into(),
            origin: "server on the standard port",
            child: None,
            _port: None,
        });
    }
    start_throwaway_redis()
}

/// Fails unless the server `REDIS_URL` (`url`) names answers PING, saying whether its
/// host name does not resolve or its server does not answer; its password masked.
fn check_redis_url(url: &str) -> Result<()> {
    let shown = redact(url);
    let addr = host_port(url)
        .with_context(|| format!("REDIS_URL={shown} is not a redis:// URL I can probe"))?;
    match reach(&addr, pings) {
        Reach::Answers => Ok(()),
        Reach::Silent => bail!(
            "REDIS_URL={shown} does not answer PING; start that server, unset REDIS_URL, or {INSTALL_HINT}"
        ),
        Reach::Unresolved(why) => bail!(
            "REDIS_URL={shown}: {why}; correct the host name, unset REDIS_URL, or {INSTALL_HINT}"
        ),
    }
}

fn start_throwaway_redis() -> Result<Redis> {
    let reserved = try_reserve_port()?;
    let port = reserved.port;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting redis-server; {INSTALL_HINT}"))?;
    let redis = Redis {
        url: format!("redis://127.0.0.1:{port}"),
        origin: "throwaway redis-server started by xtask",
        child: Some(child),
        _port: Some(reserved),
    };
    // Startup takes milliseconds; the bound only guards against a server that never comes up.
    let deadline = Instant::now() + Duration::from_secs(15);
    let addr = format!("127.0.0.1:{port}");
    while !answers_ping(&addr) {
        if Instant::now() > deadline {
            bail!("redis-server on port {port} did not answer PING within 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(redis)
}

pub(super) fn ensure_redis_server_installed() -> Result<()> {
    if on_path("redis-server") {
        return Ok(());
    }
    apt_install("redis-server", INSTALL_HINT)?;
    if !on_path("redis-server") {
        bail!("redis-server still not on PATH after installing it: {INSTALL_HINT}");
    }
    Ok(())
}

/// `host:port` of a `redis://[user:pass@]host[:port][/db]` URL; `None` without a host or
/// with a port that is no port number.
pub(super) fn host_port(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))?;
    let authority = rest.split(['/', '?']).next()?;
    with_port(authority.rsplit('@').next()?, 6379)
}

/// True when a Redis server at `addr` (`host:port`, at any address it names) answers an
/// inline PING with +PONG (or asks for auth, which still proves a server is there).
pub(super) fn answers_ping(addr: &str) -> bool {
    answers_at_any(addr, pings)
}

/// Whether the Redis server at `addr` answers an inline PING ([`answers_ping`]).
pub(super) fn pings(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    match stream.read(&mut reply) {
        Ok(n) => reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A server that answers at the second address its name gives (`localhost`'s
    /// `127.0.0.1`, after `::1` where nothing listens) is found: the probe tried the first
    /// alone and called it unreachable.
    #[test]
    fn a_server_at_a_later_address_of_its_name_answers() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = server.local_addr().unwrap();
        let answering = std::thread::spawn(move || {
            let (mut client, _) = server.accept().unwrap();
            let mut ping = [0u8; 6];
            client.read_exact(&mut ping).unwrap();
            client.write_all(b"+PONG\r\n").unwrap();
        });
        // Reserved, so nothing listens there.
        let nobody = fusion_test_ports::reserve_port();
        let dead = SocketAddr::from(([127, 0, 0, 1], nobody.port));
        assert!(answers_at_any(&[dead, live][..], pings));
        answering.join().unwrap();
    }

    /// A `REDIS_URL` whose host name does not resolve is said to be one, naming the name;
    /// "does not answer PING" sent its user looking for a server that was never asked.
    /// (`.invalid` never resolves: RFC 2606.) One that resolves and does not answer still
    /// says so.
    #[test]
    fn a_redis_url_whose_host_name_does_not_resolve_says_so() {
        let url = "redis://nowhere.invalid:6379/0";
        let err = check_redis_url(url).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "REDIS_URL={url}: the host name \"nowhere.invalid\" does not resolve ("
            )) && err.contains("correct the host name, unset REDIS_URL")
                && !err.contains("PING"),
            "{err}"
        );
        let nobody = fusion_test_ports::reserve_port();
        let url = format!("redis://127.0.0.1:{}", nobody.port);
        let err = check_redis_url(&url).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("REDIS_URL={url} does not answer PING;")),
            "{err}"
        );
    }

    /// A `REDIS_URL`'s password is masked in what is said of it, as
    /// `FUSION_POSTGRES_URL`'s is: an error message lands in CI logs.
    #[test]
    fn a_redis_url_s_password_is_masked_in_its_errors() {
        let nobody = fusion_test_ports::reserve_port();
        for (url, shown) in [
            (
                "redis://:hunter2@nowhere.invalid:6379/0".to_string(),
                "REDIS_URL=redis://:***@nowhere.invalid:6379/0: the host name".to_string(),
            ),
            (
                format!("redis://app:hunter2@127.0.0.1:{}", nobody.port),
                format!(
                    "REDIS_URL=redis://app:***@127.0.0.1:{} does not",
                    nobody.port
                ),
            ),
            (
                "http://:hunter2@h:6379".to_string(),
                "REDIS_URL=http://:***@h:6379 is not a redis:// URL".to_string(),
            ),
            // A password written unescaped: its `/` or `?` ended the authority, whose
            // part before it held no `@`, so the whole URL was shown as written.
            (
                "redis://:pa/hunter2@h:6379".to_string(),
                "REDIS_URL=redis://:***@h:6379 is not a redis:// URL".to_string(),
            ),
            (
                "redis://:pa?hunter2@h:6379".to_string(),
                "REDIS_URL=redis://:***@h:6379 is not a redis:// URL".to_string(),
            ),
            // A userinfo without a `:` may be a token (as some services hand out): it was
            // shown whole, having no `:` to mask after.
            (
                "rediss://hunter2@nowhere.invalid".to_string(),
                "REDIS_URL=rediss://***@nowhere.invalid: the host name".to_string(),
            ),
        ] {
            let err = check_redis_url(&url).unwrap_err().to_string();
            assert!(err.starts_with(&shown), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    /// A port that is no port number (a typo, one digit too many) was looked up as the
    /// host name's, and said to be a host name that does not resolve ("invalid port
    /// value"); the URL is now one that cannot be probed, its host left unblamed. An IPv6
    /// host without a port gets the standard one.
    #[test]
    fn a_redis_url_whose_port_is_no_port_number_is_not_blamed_on_its_host() {
        for url in [
            "redis://localhost:637990",
            "redis://localhost:x/0",
            "redis://",
        ] {
            assert_eq!(host_port(url), None, "{url}");
            let err = check_redis_url(url).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "REDIS_URL={url} is not a redis:// URL I can probe"
                )),
                "{url}: {err}"
            );
        }
        assert_eq!(host_port("redis://[::1]").as_deref(), Some("[::1]:6379"));
        assert_eq!(
            host_port("redis://:pw@[::1]:7/0").as_deref(),
            Some("[::1]:7")
        );
        assert_eq!(host_port("redis://h").as_deref(), Some("h:6379"));
    }
}
