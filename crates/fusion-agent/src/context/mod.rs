//! Context: what part of a long conversation the model is shown, without ever rewriting
//! what is stored.
//!
//! Storage keeps every message a session produced. The **view** is what the model is sent
//! for one request: [`request_view`] builds it from the history and a
//! [`ContextPolicy`](crate::ContextPolicy), and nothing else in this crate is called a
//! view. A policy shapes it: a sliding window of the last messages, a token budget, a
//! stored summary that stands in for older messages, and pruned (shortened) old tool
//! output. Summaries and prunings are decisions worth keeping, so they are stored too, as
//! *context records*: system messages marked in their `metadata` (never sent to the
//! model) that are appended like any other message. Storage stays append-only and
//! complete, a restarted process sees the same view, and undoing a turn (truncating
//! storage) drops the records made after it.
//!
//! Every policy keeps an assistant tool call together with its results, keeps the leading
//! system prompt, and keeps the latest user message and the newest message group.
//!
//! The types a session's methods take and return ([`ContextPolicy`](crate::ContextPolicy),
//! [`PruneSettings`](crate::PruneSettings), [`TokenCounter`](crate::TokenCounter),
//! [`PruneReport`](crate::PruneReport), [`SummaryReport`](crate::SummaryReport)) are at the
//! crate root; this module holds the functions behind them, for code that works on a
//! stored history directly.
//!
//! ```no_run
//! use std::sync::Arc;
//! use fusion_agent::{AgentSession, OpenAiClient};
//! use fusion_storage_memory::InMemoryStorage;
//!
//! # async fn demo() -> fusion_core::Result<()> {
//! let mut session = AgentSession::builder("user-123")
//!     .llm(Arc::new(OpenAiClient::from_env()?))
//!     .storage(Arc::new(InMemoryStorage::new()))
//!     .build()
//!     .await?;
//! session.set_max_history_length(50); // the last 50 messages, plus the system prompt
//! session.set_max_context_tokens(32_000); // and at most this many tokens of them
//! session.send_message("Summarise the files in this folder").await?;
//! session.prune_unimportant_messages().await?; // shorten old tool output
//! session.summarize_history(10).await?; // condense all but the last 10 messages
//! # Ok(()) }
//! ```
//!
//! Inside, the modules form layers: `records` (the stored format) and the token
//! counters at the bottom, then the grouping of a history, then the window, pruning and
//! summaries over it, then the view on top.

mod groups;
pub(crate) mod policy;
pub(crate) mod prune;
mod records;
pub(crate) mod summary;
pub(crate) mod tokens;
mod undo;
mod view;
mod window;

pub use groups::{OBSERVED_REPLY_METADATA_KEY, is_observation, observed_reply};
pub use prune::{PrunePlan, plan_prune};
pub use records::{
    PRUNE_KEY, SUMMARY_HEADER, SUMMARY_KEY, is_context_record, pruned_tool_output, summary_record,
};
pub use tokens::{
    Encoding, EstimateCounter, REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, TOKENS_PER_NAME,
    TOKENS_PER_TOOL_CALL, TiktokenCounter, count_request, count_tools, counter_for_model,
};
pub use undo::{Interleaved, LastTurn, last_turn};
pub use view::{
    INTERRUPTED_METADATA_KEY, LATE_RESULT_METADATA_KEY, REACT_ACTION_METADATA_KEY,
    interrupted_observation, interrupted_results, is_interrupted, is_repair, request_view,
};
pub use window::visible_tokens;

pub(crate) use groups::{Layout, observation, user_message};
pub(crate) use prune::plan_prune_besides;
pub(crate) use summary::{summary_request, summary_request_sparing_latest_turn};
pub(crate) use view::{request_view_with_tools, tools_tokens};
pub(crate) use window::visible_tokens_up_to;

#[cfg(test)]
mod tests;
