//! What changes a session's history, or how it is sent, outside a turn: the context
//! policy setters, pruning, summaries, undo, fork, clear. The policies themselves, pure
//! functions over a history, are in [`crate::context`]; this file adds the storage and LLM
//! calls around them.
//!
//! With several writers on one session, each operation here takes storage, not memory, as
//! its truth:
//! - pruning and summaries reread storage first and decide on what it holds; their record
//!   is appended only if the session was not rewritten or deleted meanwhile, so the stored
//!   positions it names (a summary's `covers`, prune marks) are true, and messages other
//!   writers append meanwhile come after them;
//! - undo truncates only if storage holds exactly what this session read, so it never
//!   removes another writer's messages: otherwise it undoes nothing, rereads, and says so;
//! - fork reads the source and writes the copy only into an id that does not exist, in one
//!   conditional write, so a concurrent writer of the target either wins or loses whole;
//! - clear deletes unconditionally: it is an explicit request to forget the session.
//!
//! A conflict stores nothing and leaves the session reloaded from storage.

use std::borrow::Cow;
use std::sync::Arc;

use fusion_core::{Change, ChatMessage, Error, Expect, Result, Revision, SessionId};
use tracing::info;

use super::store::{Write, explain_conflict};
use super::{AgentSession, Unread};
use crate::context::policy::ContextPolicy;
use crate::context::prune::PruneReport;
use crate::context::summary::{SummaryJob, SummaryReport};
use crate::context::tokens::TokenCounter;
use crate::context::{
    last_turn, plan_prune_besides, summary_record, summary_request_sparing_latest_turn,
    tools_tokens,
};
use crate::llm::{ChatRequest, RequestCache, SamplingOptions};

/// What a conflict means for a summary or prune record.
const RECORD_CONFLICT: &str = "nothing was stored: another writer deleted or rewrote the \
    session while this was being decided; the session has been reloaded, so try again";

/// How many times a record that answers a cancelled turn's calls is tried while other
/// writers keep appending (each try rereads the session first), as a turn's opening is.
const RECORD_ATTEMPTS: usize = 3;

impl AgentSession {
    /// The policy that shapes what each request carries.
    pub fn context_policy(&self) -> &ContextPolicy {
        &self.context
    }

    /// Replaces the context policy; `ContextPolicy::default()` sends everything again.
    pub fn set_context_policy(&mut self, policy: ContextPolicy) {
        self.context = policy;
        // Another summary to try: one held back after a failure may work now.
        self.auto_summary_retry_at = None;
    }

    /// Sliding window: requests carry at most the last `n` messages, besides the system
    /// prompt and the summary. Stored history is unchanged; a tool call and its results
    /// stay or leave together, and the latest user message always stays.
    pub fn set_max_history_length(&mut self, n: usize) {
        self.context.max_messages = Some(n);
    }

    /// Token budget: requests carry at most `max_tokens` tokens of messages and tool
    /// definitions (counted by the [token counter](Self::set_token_counter)), dropping the
    /// oldest messages first. The reply comes on top.
    pub fn set_max_context_tokens(&mut self, max_tokens: usize) {
        self.context.max_tokens = Some(max_tokens);
    }

    /// Summarizes automatically, at the start of a turn, when the conversation the model
    /// can see would exceed `threshold_tokens`, keeping the newest
    /// [`summary_keep_last`](ContextPolicy::summary_keep_last) messages as they are.
    pub fn set_auto_summarize(&mut self, threshold_tokens: usize) {
        self.context.auto_summarize_at_tokens = Some(threshold_tokens);
        self.auto_summary_retry_at = None;
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
    /// [`plan_prune`](crate::context::plan_prune)), so it holds for later requests and
    /// after a restart. A token budget as the target counts the tools the session's
    /// requests offer, as the budget does. The decision is made on the history as storage
    /// holds it now (other writers' messages included), and the record is stored only if
    /// the session was not rewritten meanwhile ([`Error::Conflict`] otherwise). Costs one
    /// load, one count of the visible conversation and, when anything is pruned, one
    /// append.
    pub async fn prune_unimportant_messages(&mut self) -> Result<PruneReport> {
        // Marks name stored positions: decide on what storage holds.
        self.reload().await?;
        let counter = self.token_counter.as_ref();
        // A budget as the target holds for the whole request, the tools with the messages.
        let tools = match self.context.max_tokens {
            Some(_) => {
                self.with_offered_tools(|prompt, tools| tools_tokens(counter, prompt, tools))
            }
            None => 0,
        };
        let plan = plan_prune_besides(&self.history, &self.context, counter, tools);
        if let Some(record) = plan.record {
            self.append_record_or_reload(record).await?;
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
    /// messages into a summary, which requests then carry instead of those messages. The
    /// latest user message, which every request carries, is never condensed: the summary
    /// stops before it even when `last_n_messages` would reach past it (0 condenses
    /// everything before the latest turn).
    ///
    /// The summary is appended to storage as a context record, so it is not recomputed by
    /// later turns or a restarted process, and everything it covers stays stored. An
    /// earlier summary is folded into the new one, so each call condenses only what is new.
    /// Returns `None`, without calling the model, when nothing is left to condense. A tool
    /// call and its results are never split: the boundary moves earlier instead. A summary
    /// that is empty or cut short (`finish_reason` `length` or `content_filter`) is an
    /// [`Error::Llm`], and nothing is stored.
    ///
    /// It summarizes the history as storage holds it when called (other writers' messages
    /// included), and stores the summary only if the session was not rewritten or deleted
    /// during the model call ([`Error::Conflict`] otherwise); messages appended meanwhile
    /// come after what it covers and stay visible.
    pub async fn summarize_history(
        &mut self,
        last_n_messages: usize,
    ) -> Result<Option<SummaryReport>> {
        // `covers` names a stored position: summarize what storage holds.
        self.reload().await?;
        let job = summary_request_sparing_latest_turn(&self.history, last_n_messages);
        let Some((record, report)) = self.write_summary(job).await? else {
            return Ok(None);
        };
        self.append_record_or_reload(record).await?;
        Ok(Some(self.stored_summary(report)))
    }

    /// Deletes the conversation, in storage and in memory, whatever other writers stored
    /// in it. The next message starts a new one, with the system prompt.
    pub async fn clear_history(&mut self) -> Result<()> {
        self.write(Write::Delete).await?;
        self.history.clear();
        self.generation = 0;
        self.unread = Unread::default();
        self.needs_reload = false;
        self.auto_summary_retry_at = None;
        info!(session_id = %self.id, "history cleared");
        Ok(())
    }

    /// Removes the last turn, from storage and from memory, and returns how many messages
    /// went: the last user message and everything after it, but for another writer's
    /// messages stored after the turn's answer. 0 when there is no user message.
    ///
    /// Summaries and prunings recorded after that message go with it.
    ///
    /// The write is conditional: it happens only if storage still holds exactly what this
    /// session read and wrote (see [`revision`](Self::revision)), so it never removes a
    /// message this session has not read. If another writer stored messages since, or
    /// rewrote or deleted the session, nothing is undone: the session reloads from
    /// storage and the call fails with [`Error::Conflict`] saying how many messages the
    /// session now holds. Calling it again then undoes the latest turn in storage,
    /// whoever wrote it.
    ///
    /// When another writer's turn was still running as the last turn was stored, that
    /// writer's tool result or reply may follow the last turn's answer. Those stay: the
    /// turn alone is removed and the history rewritten around it. Where its messages and
    /// the turn's cannot be told apart, or a context record after them names positions
    /// the removal would shift, nothing is undone and the call fails with
    /// [`Error::Conflict`] saying why ([`context::last_turn`](crate::context::last_turn)
    /// has the rules); unlike the conflict above, undoing again gives the same answer
    /// until the session changes.
    pub async fn undo_last_turn(&mut self) -> Result<usize> {
        self.settle().await?;
        let turn = match last_turn(&self.history) {
            Ok(Some(turn)) => turn,
            Ok(None) => return Ok(0),
            Err(interleaved) => {
                return Err(Error::Conflict {
                    backend: self.shared.storage.backend_name(),
                    session_id: self.id.to_string(),
                    detail: format!("nothing was undone: {interleaved}"),
                });
            }
        };
        if self.unread.len() > 0 {
            // The last turn counted other writers' messages beyond memory: a write that
            // requires memory's revision is sure to miss, so reload without trying it.
            let unread = Error::Conflict {
                backend: self.shared.storage.backend_name(),
                session_id: self.id.to_string(),
                detail: format!(
                    "storage holds {} messages beyond the {} this session holds",
                    self.unread.len(),
                    self.history.len()
                ),
            };
            return Err(self.undo_refused(unread).await);
        }
        let expect = Expect::Exactly(self.revision());
        let tail = turn.is_tail_of(&self.history);
        let write = if tail {
            Write::Truncate(expect, turn.start)
        } else {
            Write::Replace(expect, turn.remove_from(&self.history))
        };
        let (generation, kept) = match self.write(write).await {
            Ok(written) => written,
            Err(err @ Error::Conflict { .. }) => return Err(self.undo_refused(err).await),
            Err(err) => return Err(err),
        };
        // The write required exactly what memory holds: nothing lies beyond it.
        self.generation = generation;
        self.unread = Unread::default();
        if tail {
            self.history.truncate(turn.start);
        } else {
            self.history = kept;
        }
        let removed = turn.removed();
        info!(session_id = %self.id, removed, "undid the last turn");
        Ok(removed)
    }

    /// An undo refused because storage changed since this session read it: reloads, and
    /// returns `conflict` saying so and how many messages the session now holds.
    ///
    /// Marked for reload first, as a write would have marked it: a reload that fails here
    /// is then made by the next call before anything else, rather than leave memory, and
    /// what it counted beyond, to refuse the next undo again.
    async fn undo_refused(&mut self, conflict: Error) -> Error {
        self.needs_reload = true;
        let now = match self.reload_after_conflict().await {
            Some(len) => format!("it now holds {len} messages, reloaded here"),
            None => "it could not be reloaded yet".to_owned(),
        };
        explain_conflict(
            conflict,
            &format!(
                "nothing was undone: the session changed since this session read it \
                 (another writer stored messages, or rewrote or deleted it); {now}. \
                 Undo again to remove its latest turn, whoever wrote it"
            ),
        )
    }

    /// Copies this session's stored history (context records included) and metadata
    /// (owner, title, tags, data) to `new_id` and returns a session on the copy, with the
    /// same client, tools, storage and settings. The two then evolve independently.
    ///
    /// Fails with [`Error::Config`] when `new_id` already holds messages, rather than
    /// overwriting them. The copy is written only if `new_id` does not exist at that
    /// instant (one conditional write), so of two writers creating `new_id` at once, one
    /// wins whole and the other is refused (a fork) or continues after the copy (a turn).
    pub async fn fork(&self, new_id: &str) -> Result<AgentSession> {
        let id = SessionId::new(new_id)?;
        // A write of this session that a cancelled future left running lands first.
        drop(self.in_flight.lock().await);
        let storage = &self.shared.storage;
        // The copy carries the session's title, tags and data (and owner), written with
        // its first messages.
        let meta = storage
            .session_info(self.id.as_str())
            .await?
            .map(|info| info.meta)
            .unwrap_or_default();
        // Storage, not memory, is the truth (memory may be stale after a failed turn).
        let (history, _) = storage.load_revision(self.id.as_str()).await?;
        let written = self
            .shared
            .creation
            .write(
                storage.as_ref(),
                id.as_str(),
                Expect::Exactly(Revision::ABSENT),
                Change::Replace(&history),
                Some(&meta),
            )
            .await;
        let generation = match written {
            Ok(generation) => generation,
            Err(Error::Conflict { .. }) => {
                let held = match storage.session_info(id.as_str()).await {
                    Ok(Some(info)) => format!("{} messages", info.message_count),
                    _ => "messages".to_owned(),
                };
                return Err(Error::Config(format!(
                    "cannot fork session \"{}\" into \"{id}\": that session already holds \
                     {held}; fork into an unused id",
                    self.id
                )));
            }
            Err(err) => return Err(err),
        };
        info!(from = %self.id, to = %id, messages = history.len(), "forked session");
        Ok(AgentSession {
            id,
            history,
            generation,
            unread: Unread::default(),
            in_flight: Arc::default(),
            shared: Arc::new(self.shared.for_fork()),
            context: self.context.clone(),
            token_counter: Arc::clone(&self.token_counter),
            needs_reload: false,
            native_tools_rejected: self.native_tools_rejected,
            request_cache: RequestCache::new(),
            finished_calls: None,
            // The same history: a summary that could not be made of it still cannot.
            auto_summary_retry_at: self.auto_summary_retry_at,
            budget_warned: Default::default(),
        })
    }

    /// Asks the model for the summary `job` describes: the record to store and the report
    /// to return once it is stored. `None` when there is no job.
    pub(super) async fn write_summary(
        &self,
        job: Option<SummaryJob>,
    ) -> Result<Option<(ChatMessage, SummaryReport)>> {
        let Some(job) = job else {
            return Ok(None);
        };
        let request = ChatRequest {
            messages: job.request.iter().map(Cow::Borrowed).collect(),
            // The summarizer reads a transcript and must not call tools.
            tools: Vec::new(),
            options: SamplingOptions::default(),
            // A one-off request: nothing to reuse for the next one.
            cache: None,
        };
        let response = self.shared.llm.chat(&request).await?;
        // A summary stands in for what it covers from then on: one cut short would lose
        // its end for good, so it is refused like an empty one.
        if let Some(because) = crate::events::cut_because(response.finish_reason.as_deref()) {
            return Err(Error::Llm {
                message: format!(
                    "the model's summary was cut short ({because}: finish_reason `{}`); \
                     nothing was stored",
                    response.finish_reason.as_deref().unwrap_or_default()
                ),
                status: None,
                retryable: false,
                source: None,
            });
        }
        let summary = response.message.content.trim().to_owned();
        if summary.is_empty() {
            return Err(Error::Llm {
                message: "the model returned an empty summary; nothing was stored".into(),
                status: None,
                retryable: true,
                source: None,
            });
        }
        let record = summary_record(&summary, job.covers);
        Ok(Some((
            record,
            SummaryReport {
                covers: job.covers,
                summarized: job.summarized,
                summary,
            },
        )))
    }

    /// Logs a summary that was stored and hands its report back. Summaries work again:
    /// an automatic one is no longer held back (see `auto_summary`).
    pub(super) fn stored_summary(&mut self, report: SummaryReport) -> SummaryReport {
        self.auto_summary_retry_at = None;
        info!(
            session_id = %self.id,
            covers = report.covers,
            summarized = report.summarized,
            "stored a summary of the conversation"
        );
        report
    }

    /// Appends a context record, after "interrupted" results for any tool call a
    /// cancelled turn left unanswered: the record must not come between a call and the
    /// results the next turn would add.
    ///
    /// The record keeps one id across the attempts, and a reread that finds it stored ends
    /// them: a conflict can follow an attempt that applied (see `opening`), and the next,
    /// without the repairs the reread shows stored, stored the record a second time.
    async fn append_record(&mut self, mut record: ChatMessage) -> Result<()> {
        record.ensure_id();
        let read_at = self.generation;
        for attempt in 1.. {
            let mut batch = self.interrupted_repairs();
            let repairs = batch.len();
            batch.push(record.clone());
            match self.append_repairing(repairs, batch).await {
                // Another writer stored something since memory was read (the model call of
                // a summary takes a while): read it again and answer only what is still
                // unanswered. The record still fits a history that was only appended to.
                Err(Error::Conflict { .. }) if repairs > 0 && attempt < RECORD_ATTEMPTS => {
                    self.reload().await?;
                    if self.history.iter().any(|stored| stored.id == record.id) {
                        break;
                    }
                    if self.generation != read_at {
                        return Err(Error::Conflict {
                            backend: self.shared.storage.backend_name(),
                            session_id: self.id.to_string(),
                            detail: "another writer rewrote or deleted the session while \
                                     the record was made; nothing was stored"
                                .into(),
                        });
                    }
                }
                result => {
                    result?;
                    break;
                }
            }
        }
        // Stored, or (for another reply's calls) of no use any more.
        self.finished_calls = None;
        Ok(())
    }

    /// [`append_record`](Self::append_record) outside a turn: on a conflict, reloads and
    /// says that nothing was stored, unless the reload finds the record (the attempt the
    /// conflict answered, or the last one, applied).
    async fn append_record_or_reload(&mut self, mut record: ChatMessage) -> Result<()> {
        record.ensure_id();
        let id = record.id.clone();
        match self.append_record(record).await {
            Err(err @ Error::Conflict { .. }) => {
                self.reload_after_conflict().await;
                if !self.needs_reload && self.history.iter().any(|stored| stored.id == id) {
                    self.finished_calls = None;
                    return Ok(());
                }
                Err(explain_conflict(err, RECORD_CONFLICT))
            }
            result => result,
        }
    }
}
