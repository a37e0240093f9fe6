//! The ports the tests' own servers listen on (throwaway servers, cluster nodes) and the
//! ports a test needs nothing to listen on: each reserved for as long as the test holds it
//! ([`reserve_port`]).
//!
//! The tests of a binary run side by side, and so do the binaries of the workspace. A
//! port found by binding port 0 and released at once could be drawn again by another test
//! before this one's `redis-server` bound it: the test then ran against the other test's
//! server ([`Throwaway::start`](super::Throwaway::start) only waits for *a* server to
//! answer), or met a server on a port meant to have nothing listening. The scheme is
//! `fusion-storage-postgres`'s for its test clusters (`src/testing/port.rs`), with the same
//! lock directory, so the tests of the two crates keep apart too.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::ops::Range;
use std::path::{Path, PathBuf};

use fusion_core::regular_file;

/// A port of 127.0.0.1 kept for one test until this is dropped.
pub struct ReservedPort {
    pub port: u16,
    /// Locked for as long as this lives, so no other test, of this process or another,
    /// reserves the port (released by the system when the process ends, however it ends).
    _lock: Option<File>,
}

/// How many ports of the range [`reserve_port`] draws before it takes one unlocked.
const DRAWS: u32 = 1000;

/// A port free when picked and reserved until the returned value is dropped: outside the
/// range the kernel hands out for port 0 and for the local end of outgoing connections
/// (`ip_local_port_range` on Linux), so no listener of a test running beside, nor any
/// connection, takes it before the server binds it (or while it is down for a restart),
/// and locked against the other reservations by a file in [`lock_dir`]. A port outside
/// the range is still taken when no lock can be had; the kernel's choice only when that
/// range leaves no room.
pub fn reserve_port() -> ReservedPort {
    let locks = lock_dir();
    let bindable = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let ports = ports_outside_the_ephemeral_range();
    if ports.len() >= 1000 {
        open_to_everyone(&locks);
        let random = RandomState::new();
        let len = u64::try_from(ports.len()).expect("a count");
        let pick = |attempt: u32| {
            let offset = random.hash_one((std::process::id(), attempt)) % len;
            ports.start + u16::try_from(offset).expect("a port")
        };
        for attempt in 0..DRAWS {
            let port = pick(attempt);
            let Some(file) = lock_file(&locks.join(port.to_string())) else {
                continue;
            };
            if file.try_lock().is_ok() && bindable(port) {
                return ReservedPort {
                    port,
                    _lock: Some(file),
                };
            }
        }
        if let Some(port) = (DRAWS..2 * DRAWS).map(pick).find(|&port| bindable(port)) {
            return ReservedPort { port, _lock: None };
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("finding a free port")
        .port();
    ReservedPort { port, _lock: None }
}

/// Where the locks of [`reserve_port`] live: the directory `fusion-storage-postgres`'s
/// test clusters lock theirs in, one for every user.
fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("fusion-pg-ports")
}

/// Creates `locks` if missing, writable by every user and sticky (as `/tmp` is), as
/// `fusion-storage-postgres` does: made with the umask's 0755, it would refuse every other
/// user's lock files. Only a directory made here is given that mode: a path another user
/// could have put a symbolic link at is never changed (the link's target would be).
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
/// another user's file may grant none). Anything else another user may have put in a
/// directory every user writes to is no lock (`None`, and the next port is drawn): a
/// FIFO, whose open for reading would wait for a writer for ever (the test run hung), or
/// a symbolic link, whose target would be opened and locked (and, made here, changed).
pub fn lock_file(path: &Path) -> Option<File> {
    // `create_new` (O_EXCL) fails on anything at `path`, a link included.
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(file) => {
            let _ = set_mode(&file, 0o666);
            Some(file)
        }
        Err(_) => regular_file::open_not_following(OpenOptions::new().read(true), path)
            .ok()
            .map(|(file, _)| file),
    }
}

/// Gives `file` the permission bits `mode`, which the umask kept it from being created
/// with (nothing to do where there are none).
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

/// The larger of the port ranges below and above the kernel's range of ports for port
/// 0 and outgoing connections (above 10000, clear of the usual services' ports); that
/// range is Linux's `ip_local_port_range`, else the IANA one, 49152 to 65535.
fn ports_outside_the_ephemeral_range() -> Range<u16> {
    let (low, high) = ephemeral_range().unwrap_or((49152, 65535));
    let below = 10_000..low.max(10_000);
    let above = high.saturating_add(1).max(10_000)..u16::MAX;
    if below.len() >= above.len() {
        below
    } else {
        above
    }
}

/// Linux's `ip_local_port_range`, when it can be read.
pub fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    Some((bounds.next()??, bounds.next()??))
}
