//! How a session writes to storage: every write is conditional on the revision the
//! session read ([`fusion_core::Revision`]), runs as its own task so a cancelled caller
//! cannot leave it racing the next read, and updates memory only once storage took it.
//!
//! Storage is the truth; the history in memory is a copy read at `generation`. Appends
//! require that generation ([`Expect::Generation`]): other writers' appends in between are
//! fine, but a session deleted, expired, replaced or truncated since makes the write an
//! [`Error::Conflict`] that stores nothing. Undo requires the exact revision
//! ([`Expect::Exactly`]). The callers in `turn` and `context_ops` decide what a conflict
//! means for them. An append that expects no session (generation 0) creates it, with the
//! metadata the builder gave in the same step (see `creation`).
//!
//! Why a task per write: a storage future dropped mid-write (Ctrl-C drops the turn) may
//! still land later, because SQLite and the file system run it on a blocking thread. A
//! spawned task holds the session's `in_flight` lock until its write is done, whether or
//! not anyone still awaits it, and [`reload`](AgentSession::reload) and every operation
//! that writes take that lock first: nothing reads the session back while one of its own
//! writes may still land. The cost is one `tokio::spawn` and one uncontended lock per
//! write.

use std::collections::HashSet;
use std::sync::Arc;

use fusion_core::{Change, ChatMessage, Error, Expect, Result, Revision};
use tracing::warn;

use super::AgentSession;

/// What a conflict in the middle of a turn means, added to its message.
pub(super) const TURN_CONFLICT: &str = "it was deleted, expired or rewritten by another \
    writer during this turn, so the rest of the turn was not stored (and the session was not \
    recreated as a fragment); the next turn starts from what storage holds";

/// What storage holds, at the session's generation, beyond the history in memory: the
/// messages other writers appended during a turn that a read of the turn saw but left out
/// of memory, because the turn's requests must end with its own messages (a model answers
/// the last question it is shown; another writer's reply may sit between this turn's reply
/// and its results). The next turn's catch-up reads them; until then they are counted
/// here, so that a write requiring the exact stored revision
/// ([`stored_revision`](AgentSession::stored_revision)) does not miss for them again, and
/// their call ids are kept, so that no later reply of the turn reuses one.
///
/// Within a generation storage only grows, so what is counted here is never more than
/// storage holds: a write expecting it misses only when someone wrote since.
#[derive(Debug, Default)]
pub(super) struct Unread {
    /// How many messages.
    len: usize,
    /// The ids of the tool calls they hold.
    call_ids: Vec<String>,
}

impl Unread {
    /// What `stored`, read at the session's generation, holds beyond `memory` (a part of it,
    /// in the same order): its length beyond, and the call ids `memory` lacks.
    pub(super) fn beyond(memory: &[ChatMessage], stored: &[ChatMessage]) -> Self {
        let mine: HashSet<&str> = call_ids(memory).collect();
        Self {
            len: stored.len().saturating_sub(memory.len()),
            call_ids: call_ids(stored)
                .filter(|id| !mine.contains(id))
                .map(str::to_owned)
                .collect(),
        }
    }

    /// How many messages.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether one of these messages calls a tool with id `id`.
    pub(super) fn called(&self, id: &str) -> bool {
        self.call_ids.iter().any(|called| called == id)
    }
}

/// The ids of the tool calls `messages` hold.
fn call_ids(messages: &[ChatMessage]) -> impl Iterator<Item = &str> {
    messages
        .iter()
        .flat_map(|message| message.tool_calls.iter().map(|call| call.id.as_str()))
}

/// A storage write of the session, owned so that it can move into its task.
pub(super) enum Write {
    /// `write_if(expect, Change::Append(messages))`.
    Append(Expect, Vec<ChatMessage>),
    /// `write_if(expect, Change::Truncate(len))`.
    Truncate(Expect, usize),
    /// `write_if(expect, Change::Replace(messages))`.
    Replace(Expect, Vec<ChatMessage>),
    /// An unconditional `delete` (what [`AgentSession::clear_history`] asks for).
    Delete,
}

impl AgentSession {
    /// Runs `write` as its own task and waits for it. Returns the session's generation
    /// after the write, and the messages it appended or stored in place of the history
    /// (empty for a truncate or delete).
    ///
    /// The session is marked for reload while the write runs and stays marked if it fails
    /// or this future is dropped: then memory may disagree with storage.
    pub(super) async fn write(&mut self, write: Write) -> Result<(u64, Vec<ChatMessage>)> {
        // Waits for a write a dropped future left running, so writes land in order.
        let guard = Arc::clone(&self.in_flight).lock_owned().await;
        let shared = Arc::clone(&self.shared);
        let id = self.id.clone();
        let task = tokio::spawn(async move {
            // Held until the write is done, even if nobody awaits this task any more.
            let _guard = guard;
            let id = id.as_str();
            let storage = shared.storage.as_ref();
            match write {
                Write::Append(expect, messages) => {
                    // An append that expects no session creates it, with its metadata.
                    let result = shared
                        .creation
                        .write(storage, id, expect, Change::Append(&messages), None)
                        .await;
                    result.map(|generation| (generation, messages))
                }
                Write::Truncate(expect, len) => storage
                    .write_if(id, expect, Change::Truncate(len))
                    .await
                    .map(|generation| (generation, Vec::new())),
                Write::Replace(expect, messages) => storage
                    .write_if(id, expect, Change::Replace(&messages))
                    .await
                    .map(|generation| (generation, messages)),
                Write::Delete => storage.delete(id).await.map(|()| (0, Vec::new())),
            }
        });
        let was_marked = self.needs_reload;
        self.needs_reload = true;
        let result = match task.await {
            Ok(result) => result,
            // A panicking backend panics the caller, as it did when it ran inline.
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => Err(Error::Backend {
                backend: self.shared.storage.backend_name(),
                message: format!("the storage write was cancelled: {err}"),
                retryable: true,
                source: None,
            }),
        };
        if result.is_ok() {
            self.needs_reload = was_marked;
        }
        result
    }

    /// Appends `batch` if the session was not rewritten or deleted since memory was read,
    /// then adds it to memory: memory never holds what storage refused.
    ///
    /// Every message gets its id here, when the session first stores it, so a storage
    /// that retries the write (a `RetryLayer`) stores it once however often it is sent.
    pub(super) async fn append(&mut self, batch: Vec<ChatMessage>) -> Result<()> {
        self.append_expecting(Expect::Generation(self.generation), batch)
            .await
    }

    /// [`append`](Self::append) of a batch that opens with answers for the calls of the
    /// last reply memory holds ([`interrupted_repairs`](Self::interrupted_repairs)): it
    /// requires the exact revision memory was read at, so that if another writer stored
    /// anything since (its own answers for those calls, say), nothing is written and the
    /// caller reads the session again rather than answer the calls twice. A batch without
    /// repairs is a plain append.
    pub(super) async fn append_repairing(
        &mut self,
        repairs: usize,
        batch: Vec<ChatMessage>,
    ) -> Result<()> {
        let expect = if repairs == 0 {
            Expect::Generation(self.generation)
        } else {
            Expect::Exactly(self.revision())
        };
        self.append_expecting(expect, batch).await
    }

    /// [`append`](Self::append) requiring `expect` of the session.
    pub(super) async fn append_expecting(
        &mut self,
        expect: Expect,
        mut batch: Vec<ChatMessage>,
    ) -> Result<()> {
        for message in &mut batch {
            message.ensure_id();
        }
        let (generation, batch) = self.write(Write::Append(expect, batch)).await?;
        self.generation = generation;
        self.history.extend(batch);
        Ok(())
    }

    /// [`append`](Self::append) in the middle of a turn, whose earlier messages are
    /// stored: a conflict means the session went away or was rewritten under the turn,
    /// and the turn must end rather than store a fragment.
    pub(super) async fn persist(&mut self, batch: Vec<ChatMessage>) -> Result<()> {
        self.append(batch)
            .await
            .map_err(|err| explain_conflict(err, TURN_CONFLICT))
    }

    /// Reads the history and its revision from storage into memory, after any write of
    /// this session still in flight. Leaves the reload mark alone (a turn keeps it).
    pub(super) async fn refresh(&mut self) -> Result<Revision> {
        drop(self.in_flight.lock().await);
        let (history, revision) = self.shared.storage.load_revision(self.id.as_str()).await?;
        self.history = history;
        self.generation = revision.generation;
        self.unread = Unread::default();
        Ok(revision)
    }

    /// The revision storage holds as far as this session knows: memory's
    /// ([`revision`](Self::revision)) plus the messages a read of this turn left out of
    /// memory ([`Unread`]). What a write requires that must fail if anyone else wrote since.
    pub(super) fn stored_revision(&self) -> Revision {
        Revision {
            generation: self.generation,
            len: self.history.len() + self.unread.len,
        }
    }

    /// Reloads the history if the last turn or write did not finish (memory may disagree
    /// with storage then).
    pub(super) async fn settle(&mut self) -> Result<()> {
        if self.needs_reload {
            self.reload().await?;
        }
        Ok(())
    }

    /// After a conflict: re-reads storage so the next call starts from the truth, and
    /// returns how many messages it holds. A failed reload (`None`) leaves the session
    /// marked for reload, which the next call retries.
    pub(super) async fn reload_after_conflict(&mut self) -> Option<usize> {
        match self.reload().await {
            Ok(()) => Some(self.history.len()),
            Err(err) => {
                warn!(session_id = %self.id, error = %err, "could not reload after a conflict");
                None
            }
        }
    }
}

/// Adds `why` to a conflict's detail, so the message says what it means for the caller;
/// other errors pass through unchanged.
pub(super) fn explain_conflict(err: Error, why: &str) -> Error {
    match err {
        Error::Conflict {
            backend,
            session_id,
            detail,
        } => Error::Conflict {
            backend,
            session_id,
            detail: format!("{why} ({detail})"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CLI and servers drive these from spawned tasks and `select!`s, and the locks
    /// and tasks added for several writers must not make them `!Send`.
    #[allow(dead_code)]
    fn operations_are_send(session: &mut AgentSession) {
        fn is_send<T: Send>(_: T) {}
        is_send(session.reload());
        is_send(session.undo_last_turn());
        is_send(session.summarize_history(1));
        is_send(session.prune_unimportant_messages());
        is_send(session.clear_history());
        is_send(session.fork("other"));
    }
}
