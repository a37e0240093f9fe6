//! Ports of 127.0.0.1 for the servers tests start themselves (a throwaway PostgreSQL
//! cluster, a `redis-server`, cluster nodes) and for ports a test needs nothing to listen
//! on: each reserved for as long as the test holds it ([`reserve_port`]).
//!
//! Unlike a port found by binding port 0 and released at once, a reserved one is no other
//! test's meanwhile: the tests of a binary run side by side, and so do the binaries of the
//! workspace. A port from port 0 could be drawn again by another test before this one's
//! server bound it (the test then ran against the other test's server, or met a server on
//! a port meant to have nothing listening), or taken by another test's listener while the
//! server was down for a restart (the restart failed). Every crate's tests reserve from
//! one lock directory, so they keep apart from each other's too.
//!
//! ```no_run
//! use fusion_core::testkit::port::reserve_port;
//!
//! let reserved = reserve_port();
//! let url = format!("redis://127.0.0.1:{}", reserved.port);
//! // Start the server on `reserved.port`; keep `reserved` alive as long as the server.
//! # drop(url);
//! ```

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::regular_file;

/// A port of 127.0.0.1 kept for one test's server until this is dropped.
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
pub fn reserve_port() -> ReservedPort {
    reserve_port_in(&lock_dir())
}

/// Where the locks of [`reserve_port`] live: one directory under the temp dir for every
/// crate's tests and every user, since the tests of two users' runs share the ports as
/// much as two of one's.
fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("fusion-test-ports")
}

/// [`reserve_port`] with its locks in `locks`.
fn reserve_port_in(locks: &Path) -> ReservedPort {
    let bindable = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let ports = ports_outside_the_ephemeral_range();
    if ports.len() >= 1000 {
        open_to_everyone(locks);
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

/// Creates `locks` if missing, writable by every user and sticky (as `/tmp` is): made
/// with the umask's 0755, it refused every other user's lock files, whose tests then fell
/// back to port 0. Only a directory made here is given that mode: a path another user
/// could have put a symbolic link at is never changed (the link's target would be).
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
mod tests {
    use super::*;

    /// The kernel's range for port 0, or `None` where there is none to compare with.
    fn ephemeral() -> Option<std::ops::RangeInclusive<u16>> {
        let (low, high) = ephemeral_range()?;
        Some(low..=high)
    }

    /// A reserved port is one the kernel hands to nobody else (it was one of port 0's,
    /// which a listener of another test could take while a server was down for a
    /// restart), and no two reservations hold one port.
    #[test]
    fn a_reserved_port_is_outside_the_ephemeral_range_and_its_own() {
        let Some(range) = ephemeral() else {
            return; // Not Linux: nothing to compare with.
        };
        let first = reserve_port();
        let second = reserve_port();
        for port in [first.port, second.port] {
            assert!(!range.contains(&port), "port {port} is in {range:?}");
        }
        assert_ne!(first.port, second.port);
    }

    /// Where no lock can be made (here a directory that cannot exist, under a file; for
    /// another user, one of ours they may not write to), the port is still outside the
    /// ephemeral range: port 0's would bring back the failed restarts.
    #[test]
    fn without_a_lock_the_port_is_still_outside_the_ephemeral_range() {
        let Some(range) = ephemeral() else {
            return;
        };
        let private = tempfile::tempdir().unwrap();
        let file = private.path().join("file");
        std::fs::write(&file, "").unwrap();
        let reserved = reserve_port_in(&file.join("locks"));
        assert!(
            !range.contains(&reserved.port),
            "port {} is in {range:?}",
            reserved.port
        );
    }

    /// Where the kernel's range cannot be read, the ports are outside every system's
    /// default one: Linux's as well as the IANA range.
    #[test]
    fn an_unknown_kernel_range_keeps_clear_of_every_systems_default() {
        let ports = outside(None);
        for (low, high) in [(32768, 60999), (49152, 65535)] {
            assert!(
                ports.end <= low || ports.start > high,
                "{ports:?} meets {low}..={high}"
            );
        }
        assert!(ports.len() >= 1000, "{ports:?}");
        assert_eq!(parse_range("40000 50000\n"), Some((40000, 50000)));
        assert_eq!(outside(parse_range("40000 50000\n")), 10_000..40_000);
        assert_eq!(parse_range("40000\n"), None);
    }

    /// A lock file or lock directory that is a symbolic link (another user may put one in
    /// a directory every user writes to) changes nothing it points to: the mode of its
    /// target, which may be any file of the user running the tests, is never changed, and
    /// a link in place of a lock file is not followed (that port is drawn no more).
    #[cfg(unix)]
    #[test]
    fn the_locks_change_no_file_a_link_points_to() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let private = tempfile::tempdir().unwrap();
        let private = private.path();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        let target = private.join("target");
        std::fs::write(&target, "kept").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = private.join("12345");
        symlink(&target, &link).unwrap();
        assert!(
            lock_file(&link).is_none(),
            "a link is not followed to a lock"
        );
        assert_eq!(mode(&target), 0o600);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept");

        let target_dir = private.join("target-dir");
        std::fs::create_dir(&target_dir).unwrap();
        std::fs::set_permissions(&target_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let dir_link = private.join("locks");
        symlink(&target_dir, &dir_link).unwrap();
        open_to_everyone(&dir_link);
        assert_eq!(mode(&target_dir), 0o700);
    }

    /// The lock directory and its files are writable by every user (the directory sticky,
    /// as `/tmp`): made with the umask's modes, another user's tests could lock nothing
    /// there.
    #[cfg(unix)]
    #[test]
    fn the_locks_are_open_to_every_user() {
        use std::os::unix::fs::PermissionsExt;
        if ports_outside_the_ephemeral_range().len() < 1000 {
            return; // No room for locked ports: nothing is locked.
        }
        let private = tempfile::tempdir().unwrap();
        let locks = private.path().join("locks");
        let reserved = reserve_port_in(&locks);
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&locks), 0o1777);
        assert_eq!(mode(&locks.join(reserved.port.to_string())), 0o666);
    }

    /// A FIFO in place of a lock file (another user may make one in the lock directory) is
    /// no lock: opened for reading as a file, it waited for a writer for ever (the test run
    /// hung at a server's start). The test holds it open for writing itself, so that an
    /// open of it returns either way.
    #[cfg(unix)]
    #[test]
    fn a_fifo_in_place_of_a_lock_file_is_no_lock() {
        use std::os::unix::fs::OpenOptionsExt;
        let private = tempfile::tempdir().unwrap();
        let fifo = private.path().join("12345");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        // O_RDWR on a FIFO never waits (Linux), and makes this process its writer.
        let _writer = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        assert!(lock_file(&fifo).is_none(), "a FIFO taken for a lock file");
    }
}
