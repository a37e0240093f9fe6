//! Finds or starts the servers the test suite needs, so `test-all-backends` runs on a
//! fresh machine with nothing configured: Redis ([`redis()`]), Redis Clusters
//! ([`redis_cluster()`], [`failover_cluster()`]) and PostgreSQL ([`postgres()`]), and
//! checks for Node.js and npm ([`node_and_npm()`]), which the MCP suites need, and for
//! Chromium, chromedriver and axe-core ([`chromium_and_driver()`], [`axe_core()`]), which
//! the UI's browser suite needs. Each server is taken from its environment variable, else
//! from the standard port on loopback, else started here as a throwaway server (installed
//! with apt-get when missing and this runs as root), and the task fails, naming what to
//! install, when none of that works.

mod browser;
mod npm;
mod postgres;
mod redis;
mod redis_cluster;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::Command;

use anyhow::{Result, bail};

pub use browser::{axe_core, chromium_and_driver};
pub use npm::node_and_npm;
pub use postgres::postgres;
pub use redis::redis;
pub use redis_cluster::{failover_cluster, redis_cluster};

/// Installs Debian package `package` with apt-get (refreshing the package lists if the
/// first try fails). Fails with `hint` when apt-get is missing or this is not root.
fn apt_install(package: &str, hint: &str) -> Result<()> {
    if !(on_path("apt-get") && is_root()) {
        bail!("{package} is not installed: {hint}");
    }
    eprintln!("xtask: {package} not found; installing it with apt-get");
    let install = |update: bool| -> Result<bool> {
        if update {
            Command::new("apt-get").args(["update", "-q"]).status()?;
        }
        let status = Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        Ok(status.success())
    };
    if !install(false)? && !install(true)? {
        bail!("apt-get could not install {package}: {hint}");
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Whether `probe` finds the server at one of the addresses `host:port` names, tried in
/// the resolver's order. A name can name several (`localhost`: `::1` and `127.0.0.1` where
/// `/etc/hosts` lists both, `::1` first), and a server listening on one of them only (a
/// container's published port, a `bind 127.0.0.1`) answers there alone, as the tests'
/// drivers find it by trying each; the first address alone called it unreachable.
fn answers_at_any(addr: impl ToSocketAddrs, probe: impl Fn(SocketAddr) -> bool) -> bool {
    addr.to_socket_addrs()
        .is_ok_and(|mut addrs| addrs.any(probe))
}

/// What probing a server configured by the user found: it answers, or none of its
/// addresses does, or its host name gives no address at all, which says nothing of a
/// server and is said as such (a typo in the name, a container's name outside its
/// network), not as a server that does not answer.
#[derive(Debug)]
enum Reach {
    /// One of the addresses answered the probe.
    Answers,
    /// Addresses were found, and none answered.
    Silent,
    /// The host name did not resolve: why, naming it.
    Unresolved(String),
}

/// Probes the server `addr` (`host:port`) names, as [`answers_at_any`] does, telling a
/// host name that does not resolve from a server that does not answer.
fn reach(addr: &str, probe: impl Fn(SocketAddr) -> bool) -> Reach {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match addr.to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(err) => {
            return Reach::Unresolved(format!("the host name {host:?} does not resolve ({err})"));
        }
    };
    if addrs.is_empty() {
        return Reach::Unresolved(format!("the host name {host:?} resolves to no address"));
    }
    match answers_at_any(&addrs[..], probe) {
        true => Reach::Answers,
        false => Reach::Silent,
    }
}

/// `host_port` (`host`, `host:port`, `[v6]` or `[v6]:port`, a URL's authority without its
/// credentials) with `default` as its port when it names none; `None` when it names no
/// host, or a port that is no port number (a typo, `:637990`): no server is there to
/// probe, and resolving it would blame the host name.
fn with_port(host_port: &str, default: u16) -> Option<String> {
    if host_port.is_empty() {
        return None;
    }
    let port = match host_port.rfind(']') {
        Some(end) => host_port[end + 1..].strip_prefix(':'),
        None => host_port.rsplit_once(':').map(|(_, port)| port),
    };
    match port {
        None => Some(format!("{host_port}:{default}")),
        Some(port) => port.parse::<u16>().ok().map(|_| host_port.to_string()),
    }
}

// The URL with its password hidden, for messages: a server URL the user configured
// (`postgres://u:***@h/db`, `redis://:***@h:6379`, a cluster URL's one credential).
//
// It is fusion-core's `redact_url` (so xtask hides a password as every error of the
// library does, one written unescaped with `/`, `?` or `@` in it too), compiled in from
// its source file, which needs nothing but std: xtask stays free of fusion-core's
// dependencies, and builds fast before every commit. (Its package would leave that file
// out, so `cargo xtask ci` does not package xtask: `NOT_PACKAGED`.) A plain comment, not a
// doc comment: rustdoc would read the file's own docs, which link `redact_url`, in this
// module's scope, where that name is not.
#[path = "../../../crates/fusion-core/src/redact.rs"]
#[allow(
    dead_code,
    reason = "xtask shows URLs only, not the free text redact_text reads"
)]
mod core_redact;
use core_redact::redact_url as redact;
