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
//! Modules: [`storage`] (the trait and the backends compiled in), [`api::session`] (the
//! session API), [`agent`] (LLM clients, tools, the ReAct loop).
//!
//! Cargo features (each backend is compiled only when named):
#![doc = "| feature | what it adds |\n|---|---|"]
#![doc = "| `memory` (default) | `InMemoryStorage`, `StorageType::Memory` |"]
#![doc = "| `fs` (default) | `FileSystemStorage`, `StorageType::FileSystem` |"]
#![doc = "| `sqlite` | `SqliteStorage`, `StorageType::Sqlite` |"]
#![doc = "| `redis` | `RedisStorage`, `StorageType::Redis` |"]
#![doc = "| `redis-tls` | `rediss://` URLs |"]
#![doc = "| `full` | all of the above |"]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod storage_type;

pub mod agent;
pub mod api;
pub mod storage;

#[doc(inline)]
pub use fusion_core::{ChatMessage, Error, Result, Role, SessionId, SessionInfo, ToolCall};
