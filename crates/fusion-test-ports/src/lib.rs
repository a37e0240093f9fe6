//! Ports of 127.0.0.1 for the servers tests and `cargo xtask` start themselves (a
//! throwaway PostgreSQL cluster, a `redis-server`, cluster nodes and their bus ports) and
//! for ports a test needs nothing to listen on: each reserved for as long as its holder
//! keeps it ([`reserve_port`]).
//!
//! Unlike a port found by binding port 0 and released at once, a reserved one is no other
//! test's meanwhile: the tests of a binary run side by side, and so do the binaries of the
//! workspace and the servers of `cargo xtask test-all-backends`. A port from port 0 could
//! be drawn again by another test before this one's server bound it (the test then ran
//! against the other test's server, or met a server on a port meant to have nothing
//! listening), taken by another test's listener while the server was down for a restart
//! (the restart failed), or handed out as the local end of an outgoing connection (a test
//! run makes thousands). Every reservation, of any crate's tests or of xtask, locks in one
//! directory, so they keep apart from each other's too.
//!
//! A crate of its own, on std and libc only, so that xtask shares it without building
//! fusion-core's `testkit` feature (tokio, tracing-subscriber, serde and their
//! proc-macros); tests reach it as `fusion_core::testkit::port`.
//!
//! ```no_run
//! use fusion_test_ports::reserve_port;
//!
//! let reserved = reserve_port();
//! let url = format!("redis://127.0.0.1:{}", reserved.port);
//! // Start the server on `reserved.port`; keep `reserved` alive as long as the server.
//! # drop(url);
//! ```

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::TcpListener;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A port of 127.0.0.1 kept for one server until this is dropped.
#[derive(Debug)]
pub struct ReservedPort {
    /// The port reserved.
    pub port: u16,
    /// Locked for as long as this lives, so no other reservation, of this process or
    /// another, gets the port (released by the system when the process ends, however it
    /// ends).
    _lock: Option<File>,
}

/// How many ports of the range [`reserve_port`] draws before it takes one unlocked.
const DRAWS: u32 = 1000;

/// A port free when picked and reserved until the returned value is dropped: outside the
/// range the kernel hands out for port 0 and for the local end of outgoing connections
/// ([`ephemeral_range`]), so no listener of a test running beside, nor any connection,
/// takes it before the server binds it or while the server is down for a restart, and
/// locked against every other reservation by a file in `$TMPDIR/fusion-test-ports`. A port
/// outside the range is still taken when no lock can be had (the lock only keeps
/// reservations apart; port 0 would bring back the failures above); the kernel's choice
/// only when that range leaves no room.
///
/// # Panics
///
/// When not even port 0 of 127.0.0.1 can be bound ([`try_reserve_port`] says why instead).
pub fn reserve_port() -> ReservedPort {
    try_reserve_port().expect("finding a free port")
}

/// [`reserve_port`], with the error of binding port 0 (the last resort) returned rather
/// than a panic: for a caller that reports failures in its own terms, as xtask does.
pub fn try_reserve_port() -> io::Result<ReservedPort> {
    reserve_port_in(&lock_dir())
}

/// Where the locks of [`reserve_port`] live: one directory under the temp dir for every
/// crate's tests, xtask and every user, since the tests of two users' runs share the ports
/// as much as two of one's.
fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("fusion-test-ports")
}

/// [`try_reserve_port`] with its locks in `locks`.
fn reserve_port_in(locks: &Path) -> io::Result<ReservedPort> {
    let bindable = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    let ports = ports_outside_the_ephemeral_range();
    if ports.len() >= 1000 {
        open_to_everyone(locks);
        let random = RandomState::new();
        let len = u64::try_from(ports.len()).expect("a count of ports fits a u64");
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

/// Creates `locks` if missing, writable by every user and sticky (as `/tmp` is): made
/// with the umask's 0755, it refused every other user's lock files, whose tests then fell
/// back to unlocked ports. Only a directory made here is given that mode: a path another
/// user could have put a symbolic link at is never changed (the link's target would be).
/// Tests of users who cannot write to one made otherwise take unlocked ports.
fn open_to_everyone(locks: &Path) {
    if let Some(parent) = locks.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    // `mkdir` makes the directory or fails: it never follows a link in its place.
    if std::fs::create_dir(locks).is_ok() {
        let _ = File::open(locks).and_then(|dir| set_mode(&dir, 0o1777));
    }
}

/// The lock file at `path`: made here, readable and writable by every user, or else an
/// existing regular file opened for reading only (a lock needs no write access, and
/// another user's file may grant none). Only a file made here is given that mode.
/// Anything else another user may have put in a directory every user writes to is no lock
/// (`None`, and the next port is drawn): a FIFO, whose open for reading would wait for a
/// writer for ever (the test run hung), or a symbolic link, whose target would be opened
/// and locked (as root too when the link's owner made the directory:
/// `fs.protected_symlinks` lets a directory's owner's links be followed), and, made here,
/// changed.
fn lock_file(path: &Path) -> Option<File> {
    // `create_new` (O_EXCL) fails on anything at `path`, a link included.
    if let Ok(file) = OpenOptions::new().write(true).create_new(true).open(path) {
        let _ = set_mode(&file, 0o666);
        return Some(file);
    }
    let mut options = OpenOptions::new();
    options.read(true);
    // As fusion-core's `regular_file::open_not_following`, which this crate cannot use:
    // the open neither follows a link nor waits for a FIFO's writer, and the handle's
    // own metadata, not the path's, says whether it is a regular file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path).ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

/// Gives `file` the permission bits `mode`, which the umask kept it from being created
/// with (nothing to do where there are none).
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
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

/// The kernel's range of ports for port 0 and the local end of outgoing connections,
/// low and high inclusive: Linux's `ip_local_port_range`, `None` where it cannot be read
/// (for a test to check a port is outside it, where there is one to compare with).
pub fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    parse_range(&text)
}

/// `ip_local_port_range`'s "low high".
fn parse_range(text: &str) -> Option<(u16, u16)> {
    let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    Some((bounds.next()??, bounds.next()??))
}

/// The larger of the port ranges below and above the kernel's range of ports for port
/// 0 and outgoing connections (above 10000, clear of the usual services' ports); that
/// range is [`ephemeral_range`], else [`EVERY_SYSTEMS_DEFAULT`].
fn ports_outside_the_ephemeral_range() -> Range<u16> {
    outside(ephemeral_range())
}

/// The ephemeral range taken where the kernel's cannot be read: Linux's default (32768 to
/// 60999) and the IANA one (49152 to 65535, macOS, Windows) together. The IANA one alone
/// left 32768 to 49151 to pick from on a Linux whose setting could not be read, ports
/// its kernel hands out for port 0.
const EVERY_SYSTEMS_DEFAULT: (u16, u16) = (32768, 65535);

/// [`ports_outside_the_ephemeral_range`] of the kernel's range `kernel` (`None`: not
/// known).
fn outside(kernel: Option<(u16, u16)>) -> Range<u16> {
    let (low, high) = kernel.unwrap_or(EVERY_SYSTEMS_DEFAULT);
    let below = 10_000..low.max(10_000);
    let above = high.saturating_add(1).max(10_000)..u16::MAX;
    if below.len() >= above.len() {
        below
    } else {
        above
    }
}

#[cfg(test)]
mod tests;
