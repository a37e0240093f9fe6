//! The clusters of a test run that was killed (a signal, a runner's timeout, Ctrl-C, none
//! of which runs `Drop`): their servers, started by `pg_ctl` as daemons no process of the
//! run owns, went on running, each holding its port, shared memory and a directory under
//! the temp dir, until someone stopped them by hand. Every cluster now holds a lock on a
//! file in its directory for its life ([`OwnerLock`]), which the system releases however
//! the process ends, and a cluster being made stops and removes each directory whose lock
//! is free ([`reap`]).

use std::fs::{File, OpenOptions};
use std::path::Path;

use fusion_core::regular_file;

/// How a cluster's directory under the temp dir is named: this, then a unique schema name.
pub(super) const PREFIX: &str = "fusion-pg-";

/// The file of [`OwnerLock`] in a cluster's directory.
const OWNER: &str = "owner.lock";

/// The lock a live cluster holds on its directory's `owner.lock`.
pub(super) struct OwnerLock {
    _file: File,
}

impl OwnerLock {
    /// Takes the lock of the cluster directory `dir`. The file is made and locked under
    /// another name, then renamed into place, so no [`reap`] finds it unlocked while its
    /// cluster lives.
    pub(super) fn take(dir: &Path) -> std::io::Result<OwnerLock> {
        let new = dir.join("owner.lock.new");
        let file = OpenOptions::new().write(true).create_new(true).open(&new)?;
        file.lock()?;
        std::fs::rename(&new, dir.join(OWNER))?;
        Ok(OwnerLock { _file: file })
    }
}

/// Stops with `stop` (given the directory) and removes every cluster directory under
/// `parent` owned by `uid` whose [`OwnerLock`] is free: its process ended without
/// dropping it. A directory without the lock file (a cluster being made, or made before
/// these locks) is left alone, as is one of another owner: its server's pid file could
/// name any process for `pg_ctl stop` to signal.
pub(super) fn reap(parent: &Path, uid: u32, stop: impl Fn(&Path)) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let named = entry.file_name().to_str().is_some_and(|name| {
            name.strip_prefix(PREFIX)
                .is_some_and(|rest| rest.starts_with("fusion_test_"))
        });
        if !named || !owned_dir(&dir, uid) {
            continue;
        }
        // Read-only, not following a link nor waiting on a FIFO another user put there.
        let Ok((lock, _)) =
            regular_file::open_not_following(OpenOptions::new().read(true), &dir.join(OWNER))
        else {
            continue;
        };
        // Held while the leftover goes, so two clusters starting at once do not both
        // stop it; a live cluster's lock is taken (another open file of this process's
        // too: a lock is its open file's).
        if lock.try_lock().is_err() {
            continue;
        }
        stop(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Whether `dir` is a directory (not a link to one) owned by `uid`.
fn owned_dir(dir: &Path, uid: u32) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(dir).is_ok_and(|meta| meta.is_dir() && meta.uid() == uid)
    }
    #[cfg(not(unix))]
    {
        let _ = (dir, uid);
        false
    }
}

/// The owner of `path` (0 where there are none).
pub(super) fn owner(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).map_or(0, |meta| meta.uid())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        0
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::super::Cluster;

    /// A cluster whose test run was killed (its lock released by the system, no `Drop`)
    /// has its server stopped and its directory removed by the next cluster made.
    #[test]
    fn a_cluster_left_by_a_killed_run_is_stopped_and_removed_by_the_next() {
        let Some(mut killed) = Cluster::start_new() else {
            return;
        };
        let (dir, port) = (killed.dir.clone(), killed.port.port);
        // Its lock released as the system does for a killed process; its `Drop`, which
        // a killed run never reaches, still cleans up after this test if the reap did not.
        drop(killed.owner.take());
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "not started"
        );
        let next = Cluster::start_new().expect("started once already");
        assert!(!dir.exists(), "{} left", dir.display());
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the server on port {port} still runs"
        );
        drop(next);
        drop(killed);
    }
}
