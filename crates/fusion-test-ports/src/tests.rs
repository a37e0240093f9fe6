//! Unit tests of the port reservations: outside the ephemeral range, locked while held and
//! only then, the lock directory and files open to every user, and nothing another user
//! may put in that directory (a link, a FIFO) followed, changed or waited on.

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

/// A reservation's port stays locked against every other reservation, of any process,
/// while it is held, and no longer: the lock is what keeps xtask's servers and the tests'
/// apart.
#[test]
fn a_reserved_port_is_locked_while_held_and_released_on_drop() {
    if ports_outside_the_ephemeral_range().len() < 1000 {
        return; // No room for locked ports: nothing is locked.
    }
    let private = tempfile::tempdir().unwrap();
    let locks = private.path().join("locks");
    let reserved = reserve_port_in(&locks).unwrap();
    let other = File::open(locks.join(reserved.port.to_string())).expect("the port's lock file");
    assert!(
        other.try_lock().is_err(),
        "the port is not locked while held"
    );
    drop(reserved);
    assert!(
        other.try_lock().is_ok(),
        "the lock outlived the reservation"
    );
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
    let reserved = reserve_port_in(&file.join("locks")).unwrap();
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
    let reserved = reserve_port_in(&locks).unwrap();
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
