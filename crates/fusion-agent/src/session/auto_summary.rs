//! The automatic summary a turn makes when the conversation passes the context policy's
//! threshold, and how it is held back after a failure that retrying cannot help.
//!
//! A summary asked for by hand ([`AgentSession::summarize_history`]) reports its failure
//! to the caller; an automatic one only logs it and lets the turn go on. A failure that may
//! pass (a timeout, a 5xx, an empty reply) is tried again by the next turn. One that will
//! not (the summary cut short by the model's output limit or a content filter, a request
//! the server refuses) would be paid for again on every turn, each try sending the whole
//! conversation: it is tried again only once the conversation holds twice as many
//! messages as when it failed, so the tries that fail cost at most about as much as one
//! summary of the final conversation. That hold lasts as long as the session value
//! (a fork inherits it); a new policy, a stored summary or a cleared history lifts it.

use fusion_core::{ChatMessage, Error, Expect, Result};
use tracing::{debug, info, warn};

use super::AgentSession;
use super::store::{TURN_CONFLICT, explain_conflict};
use crate::context::summary::SummaryReport;
use crate::context::{Layout, summary_request, visible_tokens_up_to};

impl AgentSession {
    /// Summarizes during a turn, right after its opening was stored, if the policy's
    /// threshold says so. The summary stops before the turn's own user message, so it
    /// covers what the threshold counted before that message, as if made just before it.
    ///
    /// A failed summary never fails the turn: the turn goes on with the window and budget
    /// as its only limits, and a later turn tries again (the next one, or after a failure
    /// that retrying cannot help, the first with twice the messages). Only a conflict
    /// fails the turn (the session was rewritten or deleted since the opening was
    /// stored), as any append of the turn would.
    pub(super) async fn auto_summarize(&mut self) -> Result<()> {
        let Some(threshold) = self.context.auto_summarize_at_tokens else {
            return Ok(());
        };
        let opened = self.revision();
        // The opening ends with the user message; in storage it sits at this index or
        // later (others may have appended before it, never rewritten the prefix).
        let user_message = opened.len - 1;
        if let Some(retry_at) = self.auto_summary_retry_at
            && user_message < retry_at
        {
            debug!(
                messages = user_message,
                retry_at, "automatic summary held back after a failure retrying cannot help"
            );
            return Ok(());
        }
        // Counts newest first and stops past the threshold: O(threshold), not O(history).
        let layout = Layout::new(&self.history);
        if visible_tokens_up_to(&layout, self.token_counter.as_ref(), threshold) <= threshold {
            return Ok(());
        }
        let user = self.history[user_message].clone();
        match self
            .auto_summary(opened.generation, &user, user_message)
            .await
        {
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
            Err(err @ Error::Conflict { .. }) => return Err(explain_conflict(err, TURN_CONFLICT)),
            // The model's own answer: asking again gets the same. A storage failure
            // (disk full, a damaged session) is not the summary's to hold back.
            Err(err @ Error::Llm { .. }) if !err.is_retryable() => {
                let retry_at = user_message.max(1).saturating_mul(2);
                self.auto_summary_retry_at = Some(retry_at);
                warn!(
                    error = %err,
                    messages = user_message,
                    retry_at,
                    "automatic summary failed, and trying again would fail the same way; \
                     continuing without it, and not trying again until the conversation \
                     holds {retry_at} messages"
                );
            }
            Err(err) => warn!(
                error = %err,
                "automatic summary failed; continuing without it"
            ),
        }
        Ok(())
    }

    /// The automatic summary of what storage holds before index `end`, if the session is
    /// still at `generation`.
    ///
    /// The reread leaves memory ending with the turn's message `user`, as the opening did:
    /// what other writers stored behind it since belongs to their turns, and the request
    /// this turn sends next must end with its own message (shown another writer's last
    /// question, the model answers that one). The next turn's catch-up reads the rest.
    async fn auto_summary(
        &mut self,
        generation: u64,
        user: &ChatMessage,
        end: usize,
    ) -> Result<Option<SummaryReport>> {
        let now = self.refresh().await?;
        if now.generation != generation {
            return Err(Expect::Generation(generation).conflict(
                self.shared.storage.backend_name(),
                self.id.as_str(),
                now.generation,
                Some(now.len),
            ));
        }
        self.keep_up_to(user);
        let end = end.min(self.history.len());
        let job = summary_request(&self.history[..end], self.context.summary_keep_last);
        let Some((record, report)) = self.write_summary(job).await? else {
            return Ok(None);
        };
        // Without "interrupted" results: this turn's opening, just stored, answered its own
        // old calls, so an unanswered call at the end of storage is another writer's, still
        // running. Views skip records, so the record may sit between that call and its
        // results.
        self.append(vec![record]).await?;
        Ok(Some(self.stored_summary(report)))
    }
}
