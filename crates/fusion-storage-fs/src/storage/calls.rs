//! Where a call's file work runs: the common append and the read of a short session on
//! the calling task's thread when that needs no waiting ([`FileSystemOptions::inline_calls`]),
//! every other file system call on Tokio's blocking pool; and a load's parse on the task,
//! a part at a time.
//!
//! [`FileSystemOptions::inline_calls`]: crate::FileSystemOptions::inline_calls

#[cfg(doc)]
use fusion_core::Error;
use fusion_core::{ChatMessage, Expect, Result, Revision, SessionId};

use super::FileSystemStorage;
use crate::batch::Batch;
use crate::error::{BACKEND, from_join};
use crate::jsonl;
use crate::session_files::SessionFiles;

/// The most JSON an append may write on the calling task's thread (see
/// [`crate::FileSystemOptions::inline_calls`]): an agent's turn is a few kB, and a bigger write
/// would hold the thread for longer than a short call should.
const INLINE_MAX_BYTES: usize = 16 * 1024;
/// The longest session file a load may read on the calling task's thread: about 800
/// messages of an agent's turns, copied from the page cache in some 30 µs.
const INLINE_READ_MAX_BYTES: u64 = 256 * 1024;
/// How much of a session a load parses on the task's thread between two yields: as much
/// as a read there may bring (about 0.35 ms of reading and parsing here), so a load of such
/// a session never yields. A `yield_now` on a busy multi-thread runtime puts the task back
/// only at its worker's next maintenance, some 61 polls of other tasks later: with 64 KiB
/// parts, every load of a session past 64 KiB waited 4 ms there in W5. A longer session,
/// read on a blocking thread, is parsed a part of this size at a time.
const PARSE_PART_BYTES: usize = INLINE_READ_MAX_BYTES as usize;

impl FileSystemStorage {
    /// Validates `session_id`, then runs `op` on its files on the blocking pool; an I/O
    /// error names `operation` and the session ([`Error::during`]), since its path may be
    /// an index or lock file.
    pub(super) async fn on_session<T: Send + 'static>(
        &self,
        operation: &'static str,
        session_id: &str,
        op: impl FnOnce(&SessionFiles) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        SessionId::validate(session_id)?;
        let files = self.inner.directory().files(session_id);
        blocking(move || op(&files).map_err(|err| err.during(operation, files.id()))).await
    }

    /// Appends `batch` (if the session meets `expected`) on this task's thread, when
    /// inline calls are on and [`SessionFiles::try_append_now`] finds it can: the
    /// generation after it, or `None` if it must be made on a blocking thread.
    pub(super) async fn append_now(
        &self,
        operation: &'static str,
        files: &SessionFiles,
        expected: Option<Expect>,
        batch: &Batch,
    ) -> Option<Result<u64>> {
        if !self.inner.options.inline_calls || batch.lines().len() > INLINE_MAX_BYTES {
            return None;
        }
        let appended = files
            .try_append_now(expected, batch)?
            .map_err(|err| err.during(operation, files.id()));
        if let Ok((_, Some(due))) = appended {
            // The messages are stored: a failure from here on is no failed append (the
            // upkeep logs its own, and the next write retries it).
            let index = self.inner.index.clone();
            if let Err(err) = tokio::task::spawn_blocking(move || index.upkeep(due)).await {
                tracing::warn!(backend = BACKEND, error = %err, "index upkeep did not run; retried later");
            }
        }
        // Nothing here waited: let a task that appends in a loop give way to the others on
        // its thread now and then, as an awaited append would.
        tokio::task::consume_budget().await;
        Some(appended.map(|(generation, _)| generation))
    }

    /// Reads and parses a session, warning about a torn tail: its messages and its
    /// revision. An I/O error names `operation` and the session.
    pub(super) async fn read(
        &self,
        operation: &'static str,
        session_id: &str,
    ) -> Result<Option<(Vec<ChatMessage>, Revision)>> {
        SessionId::validate(session_id)?;
        let files = self.inner.directory().files(session_id);
        let inline = match self.inner.options.inline_calls {
            true => files.try_read_now(INLINE_READ_MAX_BYTES),
            false => None,
        };
        // Read here or on a blocking thread, parsed here either way: the blocking thread's
        // part stays short, so it gets a CPU soon however busy the runtime's threads are,
        // and the parse gives way to the other tasks of this thread between parts.
        let (stored, files) = match inline {
            Some(stored) => (stored, files),
            None => {
                blocking(move || match files.read() {
                    Ok(stored) => Ok((stored, files)),
                    Err(err) => Err(err.during(operation, files.id())),
                })
                .await?
            }
        };
        let Some(stored) = stored else {
            return Ok(None);
        };
        let mut decoder = jsonl::Decoder::new(files.id(), stored.bytes());
        while !decoder.parse_some(PARSE_PART_BYTES)? {
            tokio::task::yield_now().await;
        }
        let decoded = decoder.finish();
        Ok(Some(stored.history(&files, decoded)))
    }
}

/// Runs `op` on Tokio's blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(op).await.map_err(from_join)?
}
