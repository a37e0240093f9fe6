//! `fusion-ui`: a small local web app over any Fusion storage, to browse sessions, read
//! their transcripts, export, rename, tag, fork, undo and delete them.
//!
//! Where the `fusion` CLI prints a session as text, this serves it as pages a person can
//! filter, page through and expand: server-rendered HTML (compiled templates), htmx
//! embedded in the binary for the partial updates, no CDN and no build step. It reads any
//! [`ConversationStorage`](fusion::storage::ConversationStorage), so it works on every
//! backend the caller opened, and lists a page at a time
//! ([`list_page`](fusion::storage::ConversationStorage::list_page)), so it stays fast on a
//! store of a million sessions.
//!
//! It treats the network and the stored text as hostile: a `Host` check against DNS
//! rebinding, an access token whenever the bind is not loopback, a same-origin check on
//! every state-changing request, a strict Content-Security-Policy, and model text and
//! tool output rendered through a sanitizer. `docs/ui.md` describes each defence.
//!
//! ```no_run
//! use std::sync::Arc;
//! use fusion::storage::StorageType;
//! use fusion_ui::UiConfig;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let storage = StorageType::Memory.open().await?;
//! let config = UiConfig::new("127.0.0.1:8765".parse()?);
//! // Prints the URL to open, then serves until Ctrl-C.
//! fusion_ui::serve(storage, config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! [`bind`] and [`BoundUi::serve`] split the same steps for a caller that wants the bound
//! address first (a test on port 0); [`router`] is the app without a socket.
//!
//! Its downloads are json, jsonl or markdown files written by the library's
//! [`fusion::api::export`], the formats of `fusion sessions export`.
//!
//! Inside, the modules form layers: `error`, `config`, `format`, `random`, `turns`,
//! `claims` and `state` at the bottom; `markdown` and `assets`; `html` (the templates);
//! `security` (the middleware) and `routes` (the pages); `router` and `serve` on top.

mod assets;
mod chat;
mod claims;
mod config;
mod error;
mod format;
mod html;
mod markdown;
mod random;
mod router;
mod routes;
mod security;
mod serve;
mod shown_error;
mod state;
mod turns;

pub use chat::ChatAgent;
pub use config::{UiConfig, UiSettings};
pub use error::UiError;
pub use router::router;
pub use serve::{BoundUi, bind, serve};
