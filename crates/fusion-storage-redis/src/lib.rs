//! Redis conversation storage for Fusion: one list per session, shared by every process.
//!
//! Where the file-system and SQLite backends keep sessions on one machine, this one keeps
//! them on a Redis server that several processes and machines share, with an optional
//! TTL so abandoned sessions expire on their own. Conditional writes (`write_if`) are
//! native: the check of the session's generation and the write are one Lua script.
//! Session metadata (owner, title, tags, data) lives in the session's meta hash, and
//! sorted sets keep the sessions in order (newest first and by id, of everyone and per
//! owner) for a paged listing that costs O(page) however many sessions there are. A
//! session's own expiry ([`fusion_core::Expiry`]) is Redis's key expiry (`PEXPIREAT`,
//! refreshed by the write scripts for an idle one) plus an index of expiry instants, so
//! `purge_expired` removes what Redis leaves (index entries) in O(batch). An append
//! stores a message with an id once (issue #18), checked in its write script against a
//! window of the session's last ids kept in its meta hash, so a retry is safe. With
//! [`RedisOptions::publish_changes`] every write also publishes what it changed, and
//! [`RedisStorage::subscribe_changes`] lets any process follow those changes as they
//! happen (Redis pub/sub). See
//! [`RedisStorage`] for costs, [`RedisOptions`] for the key prefix, TTL and timeouts, and
//! the crate README for the key layout, generations, expiry, Cluster notes and how to
//! inspect a session with `redis-cli`.
//!
//! ```no_run
//! # async fn demo() -> fusion_core::Result<()> {
//! use std::time::Duration;
//! use fusion_core::{ChatMessage, ConversationStorage};
//! use fusion_storage_redis::{RedisOptions, RedisStorage};
//!
//! let options = RedisOptions::new().ttl(Duration::from_secs(24 * 3600));
//! let storage = RedisStorage::connect_with("redis://127.0.0.1:6379/0", options).await?;
//! storage.append("user-123", &[ChatMessage::user("hello")]).await?;
//! assert_eq!(storage.load("user-123").await?.len(), 1);
//! # Ok(()) }
//! ```

mod changes;
mod cluster;
mod config;
mod connect;
mod connection;
mod error;
mod keys;
mod scripts;
mod settings;
mod storage;
mod stored;
mod url_query;

pub use changes::{ChangeKind, SessionChange, SessionChanges};
pub use config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEY_PREFIX, DEFAULT_RECONNECT_RETRIES,
    DEFAULT_RESPONSE_TIMEOUT, MAX_TTL, RedisOptions,
};
pub use connect::cluster_node_urls;
pub use storage::RedisStorage;

/// Hides passwords in a Redis URL (re-exported from `fusion-core`).
pub use fusion_core::redact_url;
