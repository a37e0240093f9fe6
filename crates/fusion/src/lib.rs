//! Fusion: persistent multi-turn LLM agent sessions over swappable conversation storage.
//!
//! An agent session remembers earlier turns ("now delete the files you just found"),
//! persists every message as it is produced, and survives process restarts, on the storage
//! your deployment already runs: memory, files, SQLite or Redis, switched with one value.
//!
//! ```no_run
//! use fusion::api::session::{self, StorageType};
//! use std::path::PathBuf;
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let mut session = session::create_session(
//!     "user-123",
//!     StorageType::FileSystem(PathBuf::from("./sessions")),
//! ).await?;
//! let result = session.send_message("What files are in /tmp?").await?;
//! println!("{}", result.result);
//! # Ok(()) }
//! ```
//!
//! Modules: [`storage`] (the trait, [`StorageType`](storage::StorageType) and the backends
//! compiled in), [`api::session`] (creating, listing and deleting sessions), [`agent`]
//! ([`AgentSession`](agent::AgentSession), LLM clients, tools, the ReAct loop), and with
//! the `mcp` feature `mcp` (tools from MCP servers), with `encryption` or `observability`
//! `layers` (storage layers). Each public
//! item has one home there; `api::session` also re-exports `StorageType`, because the
//! product description imports it from there.
//!
//! # Cargo features
#![doc = document_features::document_features!()]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod agent;
pub mod api;
#[cfg(any(feature = "encryption", feature = "observability", feature = "retry"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "encryption", feature = "observability", feature = "retry")))
)]
pub mod layers;
#[cfg(feature = "mcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "mcp")))]
pub mod mcp;
pub mod storage;

#[doc(inline)]
pub use fusion_core::{ChatMessage, Error, MessageId, Result, Role, SessionId, ToolCall};
