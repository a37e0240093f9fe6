//! [`ContextPolicy`]: the settings that decide how much of a stored conversation each
//! request carries. The functions that apply them are in the sibling modules.

/// How much of the stored conversation each request carries.
///
/// The default keeps everything. Limits apply to the messages after the system prompt and
/// the summary, if any; whatever they leave out stays in storage.
///
/// ```
/// use fusion_agent::ContextPolicy;
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
    /// Token budget for the whole request: its messages (counted as in
    /// [`count_request`](super::count_request)) and the tools it offers (natively,
    /// [`count_tools`](super::count_tools), or the text ReAct prompt); the oldest messages
    /// leave first. The reply comes on top of it, so leave room for it below the model's
    /// context window.
    pub max_tokens: Option<usize>,
    /// Summarize automatically when a new turn starts and the conversation the model can
    /// see (the summary and everything after it, before the window and the budget) would
    /// exceed this many tokens.
    pub auto_summarize_at_tokens: Option<usize>,
    /// How many of the newest messages an automatic summary leaves as they are.
    pub summary_keep_last: usize,
    /// What [`plan_prune`](super::plan_prune) may shorten.
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

/// What pruning may shorten; see [`plan_prune`](super::plan_prune).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneSettings {
    /// The newest turns (a turn is a user message and everything after it) that are never
    /// pruned. At least the latest turn is always kept, even when this is 0.
    pub keep_recent_turns: usize,
    /// Tool outputs shorter than this many bytes are kept: a marker would save nothing.
    pub min_tool_output_bytes: usize,
    /// Stop pruning once the visible conversation fits in this many tokens. Without it,
    /// [`ContextPolicy::max_tokens`] is the target, for the whole request as the budget
    /// counts it: a session's `prune_unimportant_messages` stops once the conversation
    /// fits the budget less the tools its requests offer (the public
    /// [`plan_prune`](super::plan_prune) counts the conversation alone). Without either,
    /// everything eligible is pruned.
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
