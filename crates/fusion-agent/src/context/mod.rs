//! Context policies: what part of a long conversation the model is shown, without ever
//! rewriting what is stored.
//!
//! Storage keeps every message a session produced ([`crate::view`] turns that history into
//! a request). A [`ContextPolicy`] shapes the request further: a sliding window of the last
//! messages, a token budget, a stored summary that stands in for older messages, and pruned
//! (shortened) old tool output. Summaries and prunings are decisions worth keeping, so they
//! are stored too, as *context records*: system messages marked in their `metadata`
//! (never sent to the model) that are appended like any other message. Storage stays
//! append-only and complete, a restarted process sees the same view, and undoing a turn
//! (truncating storage) drops the records made after it.
//!
//! Every policy keeps an assistant tool call together with its results, keeps the leading
//! system prompt, and keeps the latest user message and the newest message group.
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

mod groups;
mod prune;
mod summary;
mod tokens;
mod window;

use fusion_core::{ChatMessage, Role};

pub use prune::{PRUNE_KEY, PrunePlan, PruneReport, plan_prune, pruned_tool_output};
pub use summary::{SUMMARY_HEADER, SUMMARY_KEY, SummaryReport, summary_record};
pub use tokens::{
    Encoding, EstimateCounter, REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, TOKENS_PER_NAME,
    TOKENS_PER_TOOL_CALL, TiktokenCounter, TokenCounter, count_request, counter_for_model,
};
pub use window::{build_view, visible_tokens};

pub(crate) use groups::{Layout, latest_user_message};
pub(crate) use summary::summary_request;
pub(crate) use window::visible_tokens_up_to;

#[cfg(test)]
mod tests;

/// How much of the stored conversation each request carries.
///
/// The default keeps everything. Limits apply to the messages after the system prompt and
/// the summary, if any; whatever they leave out stays in storage.
///
/// ```
/// use fusion_agent::context::ContextPolicy;
///
/// let policy = ContextPolicy {
///     max_messages: Some(50),
///     max_tokens: Some(32_000),
///     ..ContextPolicy::default()
/// };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextPolicy {
    /// Sliding window: send at most this many messages (the newest), besides the system
    /// prompt and the summary.
    pub max_messages: Option<usize>,
    /// Token budget for the whole request's messages (counted as in
    /// [`count_request`]); the oldest messages leave first. Tool definitions and the reply
    /// come on top of it, so leave room for them below the model's context window.
    pub max_tokens: Option<usize>,
    /// Summarize automatically when a new turn starts and the conversation the model can
    /// see (the summary and everything after it, before the window and the budget) would
    /// exceed this many tokens.
    pub auto_summarize_at_tokens: Option<usize>,
    /// How many of the newest messages an automatic summary leaves as they are.
    pub summary_keep_last: usize,
    /// What [`plan_prune`] may shorten.
    pub prune: PruneSettings,
}

impl Default for ContextPolicy {
    fn default() -> Self {
        Self {
            max_messages: None,
            max_tokens: None,
            auto_summarize_at_tokens: None,
            summary_keep_last: 10,
            prune: PruneSettings::default(),
        }
    }
}

/// What pruning may shorten; see [`plan_prune`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneSettings {
    /// The newest turns (a turn is a user message and everything after it) that are never
    /// pruned. At least the latest turn is always kept, even when this is 0.
    pub keep_recent_turns: usize,
    /// Tool outputs shorter than this many bytes are kept: a marker would save nothing.
    pub min_tool_output_bytes: usize,
    /// Stop pruning once the visible conversation fits in this many tokens. Without it,
    /// [`ContextPolicy::max_tokens`] is the target; without either, everything eligible is
    /// pruned.
    pub target_tokens: Option<usize>,
}

impl Default for PruneSettings {
    fn default() -> Self {
        Self {
            keep_recent_turns: 2,
            min_tool_output_bytes: 200,
            target_tokens: None,
        }
    }
}

/// Whether `message` is a context record (a stored summary or pruning decision), which
/// shapes the view and is never sent as itself.
pub fn is_context_record(message: &ChatMessage) -> bool {
    message.role == Role::System
        && !message.metadata.is_empty()
        && (message.metadata.contains_key(SUMMARY_KEY) || message.metadata.contains_key(PRUNE_KEY))
}
