//! File-system conversation storage for Fusion: one human-readable JSON Lines file per session.
//!
//! ```text
//! sessions/
//!   user-123.jsonl               one message per line, oldest first
//!   tenant%3A42%3Achat-7.jsonl   the session `tenant:42:chat-7`
//!   .user-123.lock               locked by every operation on `user-123`; holds its
//!                                generation and counters (times, message count, expiry)
//!   .user-123.meta               its owner, title, tags, data and expiry, if any
//!   .fusion-index/               what paged listings and purges read (journal, ids,
//!                                owner, tag and expiry markers)
//! ```
//!
//! - **Format**: each line is one [`ChatMessage`](fusion_core::ChatMessage) in the OpenAI
//!   chat message shape, terminated by `\n`, so `cat`, `grep`, `tail -f` and `jq` work on
//!   a session as it grows. File names encode the id injectively and portably, safe on
//!   case-insensitive file systems and Windows (lowercase letters, digits and `- _ . @`
//!   as-is, anything else `%XX`); [`FileSystemStorage::session_path`] names the file of
//!   an id. Every line of an appended batch but its last ends with an extra key,
//!   `"fusion_batch_more":n` (how many lines of the batch follow), which message parsers
//!   ignore.
//! - **Cost**: `append` is one `write()` of the new lines in append mode after reading a
//!   few bytes of the file's end, independent of the history length; `save` and
//!   `truncate` rewrite the file; `load` reads it. The common append and the read of a
//!   short session run on the calling task's thread when the session's lock is free at
//!   that instant, every other file system call on Tokio's blocking pool
//!   ([`FileSystemOptions::inline_calls`]); loads are parsed on the task.
//! - **Message ids**: a message's id is its line's first key (`{"id":"...",...}`). An
//!   append of messages with ids first reads the ids of the session's last
//!   [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW) lines, under the session's lock, and
//!   writes only the messages whose ids are not among them: a retried append stores each
//!   message once. That reads those lines backwards from the file's end (their first
//!   bytes give the ids), never the whole file; a batch without ids reads nothing more.
//!   Each instance remembers the ids of the last lines of the sessions it appended to,
//!   with what identifies the file's exact state (generation, data end, inode): an
//!   append to a session in that state whose ids are all new reads nothing either.
//! - **Concurrency**: every operation first locks the session's own hidden lock file
//!   with the OS's advisory locks ([`std::fs::File::lock`]: exclusive for writes, shared
//!   for reads), so any number of instances and processes can share a directory without
//!   losing or interleaving messages, and a reader never sees half of an append. The lock
//!   is on a separate file because `save` renames a new session file over the old one: a
//!   writer locking the session file itself could end up appending to the replaced,
//!   unlinked copy. `delete` removes the lock file too (on Unix; elsewhere it stays):
//!   every lock taker checks, once it holds the lock, that the path still names the file
//!   it locked, and starts again if not. Advisory locks bind only programs that take
//!   them, and some network file systems do not share them between machines.
//! - **Conditional writes**: the lock file stores the session's generation (see
//!   [`Revision`](fusion_core::Revision)) as decimal digits; an empty one (written by an
//!   earlier version) reads as [`LEGACY_GENERATION`](fusion_core::LEGACY_GENERATION).
//!   `load_revision` reads the file and the generation under one shared lock, and
//!   `write_if` checks and writes under one exclusive lock, so they are atomic between
//!   processes too.
//! - **Crash safety**: `save` and `truncate` replace the file atomically (temp file, fsync,
//!   rename, directory fsync), after storing the new generation. A process killed
//!   mid-`append` can leave only a torn tail (a partial line, or some lines of a batch
//!   without its last), which `load` skips with a `tracing` warning and the next `append`
//!   removes, so a batch is stored whole or not at all. Any other unreadable line is
//!   [`Error::Corrupt`](fusion_core::Error::Corrupt) naming the line, for that session
//!   only. [`SyncPolicy`] chooses whether appends are also fsynced. A directory the
//!   backend creates (the session directory, its missing parents, the index's) has its
//!   entry synced into its parent, so a file fsynced into it survives a power loss with it.
//! - **Metadata and listing**: `create_session` writes the metadata file before the
//!   session's first line, under the session's lock; every write updates the counters in
//!   the lock file in place, so `session_info` reads two small files. `list_page` reads
//!   `.fusion-index/`: journals of writes in time order, one per storage instance so
//!   appends share no lock (newest first is the journals read backwards and merged, a
//!   cursor a binary search in each), the sorted ids and per-owner and per-tag markers,
//!   never every session file. The index may name too much after a crash, never too
//!   little, and listings check each row against the session itself. A directory of an
//!   earlier version gets its index built by its first listing. The crate README has the
//!   formats, costs and measurements.
//! - **Retention**: a session's [`Expiry`](fusion_core::Expiry) is kept in its counters
//!   (where it expires now, and an idle expiry's span), which every reader checks and
//!   every write moves at no extra cost, and in its metadata file (what it was set to, in
//!   case the counters are lost). An expired session is absent to every reader, and every
//!   write removes it first, under its lock, as `delete` does. A session that gets an
//!   expiry gets a marker in `.fusion-index/expiry/`, named by an instant at or before
//!   its expiry, which appends never touch; `purge_expired` reads the markers that are
//!   due, earliest first, and deletes each session that is still expired under its lock.
//!
//! See [`FileSystemStorage`] to get started.

mod batch;
mod counters;
mod dirs;
mod error;
mod file_name;
mod index;
mod jsonl;
mod listing;
mod location;
mod lock;
mod meta_file;
mod options;
mod own_file;
mod recent_cache;
mod retention;
mod session_files;
mod storage;
mod synced_dirs;
mod tail_ids;

// Every file is opened through it: a FIFO where a session file belongs is refused, not
// waited on.
use fusion_core::regular_file;

pub use file_name::id_from_file_name as session_id_from_file_name;
pub use options::{FileSystemOptions, SyncPolicy};
pub use storage::FileSystemStorage;

// Compiles the README's example with the doctests, so it cannot drift from the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
