//! What changes a session's history, or how it is sent, outside a turn: the context
//! policy setters, pruning, summaries, undo, fork, clear. The policies themselves, pure
//! functions over a history, are in [`crate::context`]; this file adds the storage and LLM
//! calls around them.

use std::borrow::Cow;
use std::sync::Arc;

use fusion_core::{ChatMessage, Error, Result, SessionId};
use tracing::{debug, info, warn};

use super::AgentSession;
use crate::context::policy::ContextPolicy;
use crate::context::prune::PruneReport;
use crate::context::summary::SummaryReport;
use crate::context::tokens::TokenCounter;
use crate::context::{
    Layout, interrupted_results, latest_user_message, plan_prune, summary_record, summary_request,
    visible_tokens_up_to,
};
use crate::llm::{ChatRequest, SamplingOptions};

impl AgentSession {
    /// The policy that shapes what each request carries.
    pub fn context_policy(&self) -> &ContextPolicy {
        &self.context
    }

    /// Replaces the context policy; `ContextPolicy::default()` sends everything again.
    pub fn set_context_policy(&mut self, policy: ContextPolicy) {
        self.context = policy;
    }

    /// Sliding window: requests carry at most the last `n` messages, besides the system
    /// prompt and the summary. Stored history is unchanged; a tool call and its results
    /// stay or leave together, and the latest user message always stays.
    pub fn set_max_history_length(&mut self, n: usize) {
        self.context.max_messages = Some(n);
    }

    /// Token budget: requests carry at most `max_tokens` tokens of messages (counted by the
    /// [token counter](Self::set_token_counter)), dropping the oldest first. Tool
    /// definitions and the reply come on top.
    pub fn set_max_context_tokens(&mut self, max_tokens: usize) {
        self.context.max_tokens = Some(max_tokens);
    }

    /// Summarizes automatically, at the start of a turn, when the conversation the model
    /// can see would exceed `threshold_tokens`, keeping the newest
    /// [`summary_keep_last`](ContextPolicy::summary_keep_last) messages as they are.
    pub fn set_auto_summarize(&mut self, threshold_tokens: usize) {
        self.context.auto_summarize_at_tokens = Some(threshold_tokens);
    }

    /// The counter for the token budget and the auto-summarize threshold.
    pub fn set_token_counter(&mut self, counter: Arc<dyn TokenCounter>) {
        self.token_counter = counter;
    }

    /// The counter for the token budget and the auto-summarize threshold.
    pub fn token_counter(&self) -> &dyn TokenCounter {
        self.token_counter.as_ref()
    }

    /// Shortens what matters least in older turns, as the context policy's
    /// [`prune`](ContextPolicy::prune) settings allow: old tool outputs first, then the
    /// assistant's notes beside its tool calls; never the latest turn.
    ///
    /// Storage keeps every original: the decision is appended as a context record (see
    /// [`plan_prune`]), so it holds for later requests and after a restart. Costs one count
    /// of the visible conversation and, when anything is pruned, one append.
    pub async fn prune_unimportant_messages(&mut self) -> Result<PruneReport> {
        self.settle().await?;
        let plan = plan_prune(&self.history, &self.context, self.token_counter.as_ref());
        if let Some(record) = plan.record {
            self.append_record(record).await?;
            info!(
                session_id = %self.id,
                tool_outputs = plan.report.tool_outputs,
                chatter = plan.report.chatter,
                tokens_before = plan.report.tokens_before,
                tokens_after = plan.report.tokens_after,
                "pruned old messages from the model's view"
            );
        }
        Ok(plan.report)
    }

    /// Asks the model to condense everything before the last `last_n_messages` visible
    /// messages into a summary, which requests then carry instead of those messages.
    ///
    /// The summary is appended to storage as a context record, so it is not recomputed by
    /// later turns or a restarted process, and everything it covers stays stored. An
    /// earlier summary is folded into the new one, so each call condenses only what is new.
    /// Returns `None`, without calling the model, when nothing is left to condense. A tool
    /// call and its results are never split: the boundary moves earlier instead.
    pub async fn summarize_history(
        &mut self,
        last_n_messages: usize,
    ) -> Result<Option<SummaryReport>> {
        self.settle().await?;
        self.summarize(last_n_messages).await
    }

    /// Deletes the conversation, in storage and in memory. The next message starts a new
    /// one, with the system prompt.
    pub async fn clear_history(&mut self) -> Result<()> {
        self.shared.storage.delete(self.id.as_str()).await?;
        self.history.clear();
        self.needs_reload = false;
        info!(session_id = %self.id, "history cleared");
        Ok(())
    }

    /// Removes the last user message and everything after it, from storage (with
    /// [`ConversationStorage::truncate`](fusion_core::ConversationStorage::truncate)) and
    /// from memory, and returns how many messages went. 0 when there is no user message.
    ///
    /// Summaries and prunings recorded after that message go with it.
    pub async fn undo_last_turn(&mut self) -> Result<usize> {
        self.settle().await?;
        let Some(at) = latest_user_message(&self.history) else {
            return Ok(0);
        };
        self.shared.storage.truncate(self.id.as_str(), at).await?;
        let removed = self.history.len() - at;
        self.history.truncate(at);
        info!(session_id = %self.id, removed, "undid the last turn");
        Ok(removed)
    }

    /// Copies this session's stored history (context records included) to `new_id` and
    /// returns a session on the copy, with the same client, tools, storage and settings.
    /// The two then evolve independently.
    ///
    /// Fails with [`Error::Config`] when `new_id` already holds messages, rather than
    /// overwriting them. The check and the copy are two storage calls, so two processes
    /// forking into the same new id at the same moment can still race.
    pub async fn fork(&self, new_id: &str) -> Result<AgentSession> {
        let id = SessionId::new(new_id)?;
        let existing = self.shared.storage.session_info(id.as_str()).await?;
        if let Some(info) = existing.filter(|info| info.message_count > 0) {
            return Err(Error::Config(format!(
                "cannot fork session \"{}\" into \"{id}\": that session already holds {} \
                 messages; fork into an unused id",
                self.id, info.message_count
            )));
        }
        // Storage, not memory, is the truth (memory may be stale after a failed turn).
        let history = self.shared.storage.load(self.id.as_str()).await?;
        self.shared.storage.save(id.as_str(), &history).await?;
        info!(from = %self.id, to = %id, messages = history.len(), "forked session");
        Ok(AgentSession {
            id,
            history,
            shared: Arc::clone(&self.shared),
            context: self.context.clone(),
            token_counter: Arc::clone(&self.token_counter),
            needs_reload: false,
        })
    }

    /// Summarizes before a turn stores `incoming` if the policy's threshold says so.
    ///
    /// Never fails the turn: if the summary cannot be made, the turn goes on with the
    /// window and budget as its only limits, and the next turn tries again.
    pub(super) async fn auto_summarize(&mut self, incoming: &str) {
        let Some(threshold) = self.context.auto_summarize_at_tokens else {
            return;
        };
        let counter = self.token_counter.as_ref();
        let limit = threshold.saturating_sub(counter.count_message(&ChatMessage::user(incoming)));
        // Counts newest first and stops past the limit: O(threshold), not O(history).
        if visible_tokens_up_to(&Layout::new(&self.history), counter, limit) <= limit {
            return;
        }
        match self.summarize(self.context.summary_keep_last).await {
            Ok(Some(report)) => info!(
                covers = report.covers,
                summarized = report.summarized,
                threshold,
                "summarized the conversation automatically"
            ),
            Ok(None) => debug!(
                threshold,
                "over the summary threshold, but nothing to condense"
            ),
            Err(err) => warn!(
                error = %err,
                "automatic summary failed; continuing without it"
            ),
        }
    }

    async fn summarize(&mut self, keep_last: usize) -> Result<Option<SummaryReport>> {
        let Some(job) = summary_request(&self.history, keep_last) else {
            return Ok(None);
        };
        let request = ChatRequest {
            messages: job.request.iter().map(Cow::Borrowed).collect(),
            // The summarizer reads a transcript and must not call tools.
            tools: Vec::new(),
            options: SamplingOptions::default(),
        };
        let response = self.shared.llm.chat(&request).await?;
        let summary = response.message.content.trim().to_owned();
        if summary.is_empty() {
            return Err(Error::Llm {
                message: "the model returned an empty summary; nothing was stored".into(),
                status: None,
                retryable: true,
                source: None,
            });
        }
        self.append_record(summary_record(&summary, job.covers))
            .await?;
        info!(
            session_id = %self.id,
            covers = job.covers,
            summarized = job.summarized,
            "stored a summary of the conversation"
        );
        Ok(Some(SummaryReport {
            covers: job.covers,
            summarized: job.summarized,
            summary,
        }))
    }

    /// Appends a context record, after "interrupted" results for any tool call a
    /// cancelled turn left unanswered: the record must not come between a call and the
    /// results the next turn would add.
    async fn append_record(&mut self, record: ChatMessage) -> Result<()> {
        let mut batch = interrupted_results(&self.history);
        batch.push(record);
        self.persist(batch).await
    }

    /// Reloads the history if the last turn did not finish (memory may disagree with
    /// storage then).
    async fn settle(&mut self) -> Result<()> {
        if self.needs_reload {
            self.reload().await?;
        }
        Ok(())
    }
}
