//! Core types shared by every Fusion crate: messages, session ids, errors and the storage trait.
//!
//! Backends (`fusion-storage-*`) and the agent (`fusion-agent`) depend on this crate only, so
//! it carries no driver and no HTTP client. Application code normally reaches these types
//! through the `fusion` facade.

mod error;
pub mod file_url;
mod flag;
mod layer;
mod listing;
mod message;
mod message_id;
mod owner_scope;
mod recent_ids;
mod redact;
pub mod regular_file;
mod retention;
mod revision;
mod session_id;
mod session_meta;
mod session_times;
pub mod sql;
mod stable_hash;
mod storable;
mod storage;
mod url_param;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{Error, Result};
pub use flag::parse_flag;
pub use layer::{Intercept, Intercepted, Layer, StorageExt};
pub use listing::{
    Cursor, Position, SessionOrder, SessionPage, SessionQuery, from_unix_micros, unix_micros,
};
pub use message::{ChatMessage, Role, ToolCall};
pub use message_id::{DEDUP_WINDOW, MessageId, unstored};
pub use owner_scope::OwnerScope;
pub use recent_ids::RecentIds;
pub use redact::{redact_text, redact_url};
pub use retention::{
    Expiry, MAX_IDLE, MAX_PURGE_BATCH, MIN_IDLE, StoredExpiry, check_purge_batch, is_expired,
    purge_all_expired,
};
pub use revision::{Change, Expect, LEGACY_GENERATION, Revision, new_generation};
pub use session_id::SessionId;
pub use session_meta::{
    MAX_DATA_BYTES, MAX_DATA_DEPTH, MAX_TAG_LEN, MAX_TAGS, MAX_TITLE_CHARS, MetaUpdate,
    SessionInfo, SessionMeta, validate_owner,
};
pub use session_times::SessionTimes;
pub use stable_hash::fnv1a;
pub use storable::{MAX_METADATA_DEPTH, check_storable};
pub use storage::{ConversationStorage, check_creation};
pub use url_param::{
    UrlQueryProblem, percent_decode, refuse_query, split_url_param, url_param, url_query,
    url_query_problem, url_without_query,
};
