//! SQLite conversation storage for Fusion, on sqlx and rusqlite: one database file, one row
//! per message.
//!
//! See [`SqliteStorage`] for what it offers, [`SqliteOptions`] for tuning, and the crate
//! README for the schema and how to inspect sessions with the `sqlite3` shell.

mod checkpoint;
mod config;
mod direct;
mod error;
mod migrate;
mod rows;
mod script;
mod storage;

pub use config::{Durability, SqliteOptions};
pub use storage::SqliteStorage;

/// The sqlx pool type taken by [`SqliteStorage::from_pool`], re-exported so callers need
/// not name the matching sqlx version themselves.
pub use sqlx::SqlitePool;
