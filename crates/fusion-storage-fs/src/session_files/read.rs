//! Reading a session under its shared lock: the whole file and its generation.

use std::fs::OpenOptions;
use std::io::{self, Read};

use fusion_core::{ChatMessage, Result, Revision};

use super::{SessionFiles, exists, modified_us, now_micros};
use crate::error::{BACKEND, IoContext};
use crate::jsonl::{Decoded, Tail};
use crate::lock::SessionLock;
use crate::regular_file;

/// A session file as read under the shared lock.
#[derive(Debug)]
pub(crate) struct Stored {
    /// The whole file.
    bytes: Vec<u8>,
    /// The generation, if the file holds any message (see [`crate::session_files`]).
    generation: u64,
}

/// What a read of a session under its lock found.
#[derive(Debug)]
enum Found {
    /// No session: never written, removed or expired.
    Nothing,
    /// The session.
    Stored(Stored),
    /// A session file longer than the reader would read.
    Longer,
}

impl Stored {
    /// The file as read, for the caller to parse (a part at a time, with
    /// [`Decoder`](crate::jsonl::Decoder)) after the read released the lock, so that parsing a long
    /// history never holds up writers; then [`history`](Self::history) gives the result.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The messages and revision of this read of the session of `files`, given its
    /// `decoded` bytes, warning about a torn tail.
    pub(crate) fn history(
        &self,
        files: &SessionFiles,
        decoded: Decoded,
    ) -> (Vec<ChatMessage>, Revision) {
        if let Tail::Torn { len } = decoded.tail {
            tracing::warn!(
                backend = BACKEND,
                session_id = files.id(),
                path = %files.data().display(),
                bytes = len,
                "skipping a torn tail left by an interrupted append; \
                 the next append to this session removes it"
            );
        }
        let revision = if decoded.messages.is_empty() {
            Revision::ABSENT
        } else {
            Revision {
                generation: self.generation,
                len: decoded.messages.len(),
            }
        };
        (decoded.messages, revision)
    }
}

impl SessionFiles {
    /// The session file and its generation, read at one instant, or `None` if the session
    /// was never written or has expired (checked in the lock file read for the generation).
    pub(crate) fn read(&self) -> Result<Option<Stored>> {
        // Checked before locking so reading an unknown session creates neither the
        // directory nor a lock file.
        if !exists(&self.data)? {
            return Ok(None);
        }
        let lock = SessionLock::shared(&self.lock)?;
        Ok(match self.read_locked_up_to(&lock, u64::MAX)? {
            Found::Stored(stored) => Some(stored),
            Found::Nothing | Found::Longer => None,
        })
    }

    /// [`read`](Self::read), made only if it can be made without waiting and the file
    /// holds at most `max_len` bytes, for a caller that must not block: `None` unless the
    /// session's lock file exists and nobody holds its lock exclusively right now. Every
    /// error also reads as `None`, for the caller to read the usual way, which reports it.
    pub(crate) fn try_read_now(&self, max_len: u64) -> Option<Option<Stored>> {
        let lock = SessionLock::try_shared(&self.lock).ok()??;
        match self.read_locked_up_to(&lock, max_len).ok()? {
            Found::Stored(stored) => Some(Some(stored)),
            Found::Nothing => Some(None),
            Found::Longer => None,
        }
    }

    /// The session file and its generation, under `lock` (shared or exclusive), unless
    /// the file is longer than `max_len`.
    fn read_locked_up_to(&self, lock: &SessionLock, max_len: u64) -> Result<Found> {
        let opened = regular_file::open(OpenOptions::new().read(true), &self.data);
        let (mut file, metadata) = match opened {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
            other => other.at(&self.data)?,
        };
        if metadata.len() > max_len {
            return Ok(Found::Longer);
        }
        let contents = lock.contents(&self.lock)?;
        let expiry = self.expiry_of(&contents, metadata.len(), || modified_us(&metadata))?;
        if expiry.is_expired_at(now_micros()) {
            return Ok(Found::Nothing);
        }
        let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
        file.read_to_end(&mut bytes).at(&self.data)?;
        let generation = crate::lock::generation_of(&contents, &self.lock);
        Ok(Found::Stored(Stored { bytes, generation }))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::tests::{batch, session, stored};
    use super::*;
    use crate::options::SyncPolicy;

    #[test]
    fn only_a_short_read_no_writer_holds_up_is_made_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let files = session(dir.path(), "s", SyncPolicy::OnReplace);
        // No lock file: the usual read creates it.
        assert!(files.try_read_now(u64::MAX).is_none());
        files.append(&batch("a")).unwrap();
        let whole = stored(&files);
        let read = |max_len| {
            files
                .try_read_now(max_len)
                .map(|stored| stored.map(|stored| stored.bytes))
        };
        assert_eq!(read(u64::MAX), Some(Some(whole.clone())));
        assert_eq!(read(whole.len() as u64), Some(Some(whole.clone())));
        assert_eq!(read(whole.len() as u64 - 1), None, "longer than allowed");

        let writer = SessionLock::exclusive(dir.path(), &files.lock).unwrap();
        assert_eq!(read(u64::MAX), None);
        drop(writer);
        let reader = SessionLock::shared(&files.lock).unwrap();
        assert_eq!(read(u64::MAX), Some(Some(whole)), "readers share the lock");
        drop(reader);

        // A lock file without a session file (a crash mid-delete): no session.
        fs::remove_file(files.data()).unwrap();
        assert_eq!(read(u64::MAX), Some(None));
    }
}
