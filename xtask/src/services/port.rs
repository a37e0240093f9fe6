//! Ports of 127.0.0.1 for the servers this task starts, each reserved for as long as its
//! server runs ([`reserve_port`]).
//!
//! A port found by binding port 0 and released at once was the kernel's to hand out again
//! before the server bound it: to another process's listener, or as the local end of any
//! outgoing connection (a test run makes thousands), and the server then failed to start,
//! or the tests ran against another process's server. These ports are drawn outside the
//! kernel's range for port 0 and outgoing connections, and locked in the directory the
//! tests' own servers lock theirs in (`fusion_core::testkit::port`, the same directory and
//! files), so a test's server never draws one of them either.
//!
//! This is not `fusion_core::testkit::port` itself: that module comes with the `testkit`
//! feature, which builds tokio, tracing-subscriber, serde and their proc-macros (47 crates
//! where xtask builds 3), and `cargo xtask tidy` runs before every commit.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A port of 127.0.0.1 kept for one server until this is dropped.
#[derive(Debug)]
pub struct ReservedPort {
    pub port: u16,
    /// Locked for as long as this lives, so no reservation of xtask or of a test takes the
    /// port (released by the system when the process ends, however it ends).
    _lock: Option<File>,
}

/// How many ports of the range [`reserve_port`] draws before it takes one unlocked.
const DRAWS: u32 = 1000;

/// A port bindable when drawn, outside the kernel's ephemeral range, locked by a file in
/// `$TMPDIR/fusion-test-ports` until the returned value is dropped: keep it as long as the
/// server. Unlocked (still outside the range) when no lock can be had, the kernel's port 0
/// only when the range leaves no room.
pub fn reserve_port() -> Result<ReservedPort> {
    reserve_port_in(&lock_dir())
}

/// The lock directory of `fusion_core::testkit::port`, which the tests' servers use.
fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("fusion-test-ports")
}

fn reserve_port_in(locks: &Path) -> Result<ReservedPort> {
    let bindable = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    let ports = outside(ephemeral_range());
    if ports.len() >= 1000 {
        make_shared_dir(locks);
        let random = RandomState::new();
        let len = u64::try_from(ports.len()).context("a count of ports")?;
        let pick = |attempt: u32| {
            let offset = random.hash_one((std::process::id(), attempt)) % len;
            ports.start + u16::try_from(offset).expect("below the range's length, a u16")
        };
        for attempt in 0..DRAWS {
            let port = pick(attempt);
            let Some(file) = lock_file(&locks.join(port.to_string())) else {
                continue;
            };
            if file.try_lock().is_ok() && bindable(port) {
                return Ok(ReservedPort {
                    port,
                    _lock: Some(file),
                });
            }
        }
        if let Some(port) = (DRAWS..2 * DRAWS).map(pick).find(|&port| bindable(port)) {
            return Ok(ReservedPort { port, _lock: None });
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    Ok(ReservedPort { port, _lock: None })
}

/// Creates `locks` if missing, writable by every user and sticky, as the tests do (only a
/// directory made here: a link someone put in its place is never changed).
fn make_shared_dir(locks: &Path) {
    if let Some(parent) = locks.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if std::fs::create_dir(locks).is_ok() {
        let _ = File::open(locks).and_then(|dir| set_mode(&dir, 0o1777));
    }
}

/// The lock file at `path`, made here (mode 0666) or an existing regular file opened for
/// reading. Anything else another user may have put in that shared directory is no lock: a
/// FIFO (its open would wait for a writer for ever) or a symbolic link (its target would be
/// locked, and, made here, changed).
fn lock_file(path: &Path) -> Option<File> {
    // `create_new` (O_EXCL) fails on anything at `path`, a link included.
    if let Ok(file) = OpenOptions::new().write(true).create_new(true).open(path) {
        let _ = set_mode(&file, 0o666);
        return Some(file);
    }
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path).ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

fn set_mode(file: &File, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (file, mode);
        Ok(())
    }
}

/// Linux's `ip_local_port_range`, low and high inclusive; `None` where it cannot be read.
fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    Some((bounds.next()??, bounds.next()??))
}

/// The larger of the ranges below and above the kernel's (above 10000, clear of the usual
/// services); where the kernel's is unknown, Linux's default and the IANA range together
/// (32768 to 65535).
fn outside(kernel: Option<(u16, u16)>) -> Range<u16> {
    let (low, high) = kernel.unwrap_or((32768, 65535));
    let below = 10_000..low.max(10_000);
    let above = high.saturating_add(1).max(10_000)..u16::MAX;
    if below.len() >= above.len() {
        below
    } else {
        above
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reserved port is none the kernel hands out for port 0 or an outgoing connection,
    /// and it stays locked against every other reservation, the tests' included, while
    /// held: a port from port 0, released before the server bound it, was neither.
    #[test]
    fn a_reserved_port_is_outside_the_ephemeral_range_and_locked_while_held() {
        let Some((low, high)) = ephemeral_range() else {
            return; // Not Linux: no range to compare with.
        };
        let private = std::env::temp_dir().join(format!("xtask-port-test-{}", std::process::id()));
        let reserved = reserve_port_in(&private).unwrap();
        assert!(
            !(low..=high).contains(&reserved.port),
            "port {} is in the ephemeral range {low}..={high}",
            reserved.port
        );
        let lock = private.join(reserved.port.to_string());
        let other = File::open(&lock).expect("the port's lock file");
        assert!(
            other.try_lock().is_err(),
            "the port is not locked while held"
        );
        drop(reserved);
        assert!(
            other.try_lock().is_ok(),
            "the lock outlived the reservation"
        );
        let _ = std::fs::remove_dir_all(&private);
    }

    /// A symbolic link or a FIFO in place of a lock file is no lock, and is not followed.
    #[cfg(unix)]
    #[test]
    fn a_link_or_a_fifo_is_no_lock_file() {
        let private = std::env::temp_dir().join(format!("xtask-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&private).unwrap();
        let target = private.join("target");
        std::fs::write(&target, "kept").unwrap();
        let link = private.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(lock_file(&link).is_none(), "a link was followed");
        let fifo = private.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        assert!(lock_file(&fifo).is_none(), "a FIFO taken for a lock file");
        let _ = std::fs::remove_dir_all(&private);
    }
}
