//! SQLite conversation storage for Fusion, on sqlx and rusqlite: one database file, one row
//! per message.
//!
//! See [`SqliteStorage`] for what it offers, [`SqliteOptions`] for tuning, and the crate
//! README for the schema and how to inspect sessions with the `sqlite3` shell.
//!
//! # Layers
//!
//! Each module imports only modules of the layers below it:
//!
//! 1. `files` (the database file and the files beside it, looked at by their real names,
//!    and a path as messages show it), `config` (options, URL parsing, how the direct
//!    connections open), `error` (every
//!    driver error mapped to a [`fusion_core::Error`], and which ones mean a busy
//!    database), `expiry` (the clock of every operation, and the SQL that reads an
//!    expired session as absent) and `generation` (where a session's generation lives,
//!    what a conditional write checks and which generation each write leaves);
//! 2. `corrupt`: the flag that refuses writes once any call found the file damaged, and
//!    `busy`: the one loop that repeats a step of opening while the database is busy,
//!    and `meta`: a session's facts as stored (the columns of its metadata, a row read
//!    back as a `SessionInfo`, what a metadata update writes);
//! 3. `sql`: the SQL of every operation and the write model both paths run (`Write`,
//!    `Value`, `write_sql!`, the one `BEGIN IMMEDIATE`, the checks a write decides inside
//!    its transaction, the messages an append leaves out because their ids are stored,
//!    turning a row back into a message), and `checkpoint`: when the WAL is
//!    checkpointed, and the bound on its size;
//! 4. the paths: `direct` (SQLite called directly on a database file this crate opened:
//!    `direct/open.rs` opens its connections, `direct/load.rs` is its load), `pooled` (sqlx
//!    only, for `sqlite::memory:` and a caller's pool), `listing` (a page of sessions,
//!    one keyset query on the pool whichever path writes) and `migrate` (the schema);
//! 5. `storage`: [`SqliteStorage`], its constructors (`storage/open.rs`) and its
//!    `ConversationStorage` impl.

mod busy;
mod checkpoint;
mod config;
mod corrupt;
mod direct;
mod error;
mod expiry;
mod files;
mod generation;
mod listing;
mod meta;
mod migrate;
mod pooled;
mod sql;
mod storage;

pub use config::{Durability, SqliteOptions};
pub use storage::SqliteStorage;

/// The sqlx pool type taken by [`SqliteStorage::from_pool`], re-exported so callers need
/// not name the matching sqlx version themselves.
pub use sqlx::SqlitePool;
