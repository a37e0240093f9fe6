//! Core types shared by every Fusion crate: messages, session ids, errors and the storage trait.
//!
//! Backends (`fusion-storage-*`) and the agent (`fusion-agent`) depend on this crate only, so
//! it carries no driver and no HTTP client. Application code normally reaches these types
//! through the `fusion` facade.

mod error;
mod message;
mod redact;
mod revision;
mod session_id;
pub mod sql;
mod storable;
mod storage;
mod url_param;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{Error, Result};
pub use message::{ChatMessage, Role, ToolCall};
pub use redact::redact_url;
pub use revision::{Change, Expect, LEGACY_GENERATION, Revision, new_generation};
pub use session_id::SessionId;
pub use storable::{MAX_METADATA_DEPTH, check_storable};
pub use storage::{ConversationStorage, SessionInfo};
pub use url_param::{split_url_param, url_param};
