//! What a delete that stopped past its journal line (a crash, a full disk writing the id
//! log) leaves for the writes after it: the session's lock file, holding what it held,
//! which a delete unlinks last. Every creation is stamped after the latest delete the
//! index state holds (see `crate::index`), which such a delete did not raise; its line,
//! stamped ahead by an instance whose clock runs ahead, would stand above the creation's,
//! and every listing would take the new session's lines for the deleted one's. So a
//! creation that finds the lock file holding anything takes its floor from the live
//! journals' delete lines, and whoever removes such a lock file without a session (a
//! delete made again, a purge, a refused conditional write) first raises the state's
//! latest delete to them: read on those rare paths only.

use fusion_core::Result;

use super::{Current, SessionFiles};
use crate::counters::{Counters, LockContents};
use crate::lock::SessionLock;

impl SessionFiles {
    /// The lowest timestamp a write may get, the session holding `before` (its generation
    /// and counters) or nothing: after the session's last one (see
    /// [`Counters::next_floor`]), so that its journal line is the session's newest
    /// whichever instance wrote the last one; for a creation, [`Self::creation_floor`].
    pub(super) fn write_floor(
        &self,
        lock: &SessionLock,
        current: &Current,
        before: Option<&(u64, Counters)>,
    ) -> Result<i64> {
        match before {
            Some((_, counters)) => Ok(counters.next_floor()),
            None => self.creation_floor(lock, current),
        }
    }

    /// The floor of a creation's timestamp: none of its own ([`crate::index::Index::record`]
    /// stamps every creation after the latest delete the index state holds), unless the
    /// lock file still holds anything of an earlier session of the id (its counters, or
    /// a generation alone: a session whose counters were lost, which a delete marks
    /// before its line if its lock file holds nothing; see the module docs). A write
    /// that removed an expired session before it goes on recorded that delete whole.
    fn creation_floor(&self, lock: &SessionLock, current: &Current) -> Result<i64> {
        if current.removed_here {
            return Ok(i64::MIN);
        }
        if self.lock_contents(lock, current)?.holds_anything() {
            Ok(self.index.latest_delete()?.saturating_add(1))
        } else {
            Ok(i64::MIN)
        }
    }

    /// Unlinks the lock file of a session that does not exist, as found under its
    /// exclusive lock (`current`), first keeping what a delete that stopped may have left
    /// in it ([`Self::keep_stopped_delete`]), unless this lock's holder removed the
    /// session whole itself (an expired one).
    pub(super) fn unlink_alone(&self, lock: &SessionLock, current: &Current) -> Result<()> {
        if !current.removed_here {
            self.keep_stopped_delete(&self.lock_contents(lock, current)?)?;
        }
        lock.unlink(&self.lock)
    }

    /// What the lock file holds: as `current` found it under the lock, or read now.
    fn lock_contents(&self, lock: &SessionLock, current: &Current) -> Result<LockContents> {
        match current.contents {
            Some(contents) => Ok(contents),
            None => lock.contents(&self.lock),
        }
    }

    /// Before a lock file that holds `contents` without a session is unlinked: if it holds
    /// anything, the index state's latest delete is raised to the live journals' (see the
    /// module docs), which the next creation, finding a new lock file, is stamped after
    /// (where lock files are never removed, not Unix, an emptied one).
    pub(super) fn keep_stopped_delete(&self, contents: &LockContents) -> Result<()> {
        if contents.holds_anything() {
            let latest = self.index.latest_delete()?;
            self.index.raise_deleted(latest)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use fusion_core::{ChatMessage, ConversationStorage};

    use crate::dirs::tests::Watch;
    use crate::{FileSystemStorage, file_name};

    /// Found by a review: under `OnReplace` (an append fsyncs neither a lock file's
    /// counters nor its name) nothing made the lock file durable before its delete's
    /// line, so a power loss just after the line could lose the file, and with it the
    /// sign of a delete that stopped: the next creation, stamped below the line of an
    /// instance whose clock runs ahead, was passed over by every listing. Now the lock
    /// file's contents and the session directory are synced before the line: here the
    /// line cannot be written (the index's `live` is a file), and both were synced.
    #[tokio::test]
    async fn a_delete_makes_its_lock_file_durable_before_its_journal_line() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        let storage = FileSystemStorage::connect(root).await.unwrap();
        storage
            .append("s", &[ChatMessage::user("hi")])
            .await
            .unwrap();
        drop(storage);
        let live = root.join(file_name::INDEX_DIR).join("live");
        fs::remove_dir_all(&live).unwrap();
        fs::write(&live, b"").unwrap();
        let storage = FileSystemStorage::connect(root).await.unwrap();
        let watch = Watch::new(root);
        let err = storage.delete("s").await.unwrap_err();
        assert!(err.to_string().contains("live"), "{err}");
        let lock = root.join(file_name::lock_file_name("s"));
        assert_eq!(watch.synced(), [lock, root.to_path_buf()]);
    }
}
