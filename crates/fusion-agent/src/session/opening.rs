//! A turn's opening: what is stored before anything else happens in a turn (see the
//! module docs of `turn.rs`, "Other writers").

use fusion_core::{ChatMessage, Error, Result};
use tracing::{info, warn};

use super::store::explain_conflict;
use super::{AgentSession, Unread};
use crate::context::user_message;

/// How many times a turn tries to store its opening when other writers keep changing the
/// session (each conflict means another writer won a race; three in a row is not a race).
pub(super) const OPENING_ATTEMPTS: usize = 3;

impl AgentSession {
    /// Stores the turn's opening: answers for calls an earlier turn left unanswered, the
    /// system prompt if the conversation is new, and the user message, in one append.
    /// Rereads and retries on a conflict (see the module docs).
    ///
    /// The user message keeps one id across the attempts, and a reread that finds it
    /// stored ends them: a conflict can follow an attempt that did apply (its reply lost,
    /// then another writer's change, and a storage that could not tell: a `RetryLayer`
    /// whose settling read failed too), and the opening, stored in one append, is then
    /// there whole. A new message at each attempt was stored a second time.
    pub(super) async fn open(&mut self, message: &str) -> Result<()> {
        let user = user_message(message).with_new_id();
        let mut attempt = 1;
        loop {
            let mut opening = self.interrupted_repairs();
            let repairs = opening.len();
            if repairs > 0 {
                warn!(
                    calls = repairs,
                    "storing results for the tool calls a cancelled turn left unanswered"
                );
            }
            if self.history.is_empty() && !self.shared.system_prompt.is_empty() {
                opening.push(ChatMessage::system(&self.shared.system_prompt));
            }
            opening.push(user.clone());
            let stored = self.append_repairing(repairs, opening).await;
            if stored.is_ok() {
                // Stored, or (for another reply's calls) of no use any more.
                self.finished_calls = None;
            }
            let err = match stored {
                Err(err @ Error::Conflict { .. }) => err,
                Err(err) if err.is_retryable() => {
                    // Whether an attempt whose reply was lost applied can be unknown to the
                    // storage too (a `RetryLayer` out of attempts, or unable to settle):
                    // one reread tells, so that a turn whose opening is stored goes on
                    // rather than fail and have its message sent again.
                    return match self.refresh().await {
                        Ok(_) if self.keep_up_to(&user) => {
                            info!("the opening was stored by an attempt whose reply was lost");
                            Ok(())
                        }
                        _ => Err(err),
                    };
                }
                result => return result,
            };
            info!(
                attempt,
                error = %err,
                "another writer started or rewrote the session; rereading it"
            );
            // The last attempt's conflict too may follow an attempt that applied: a
            // reread that fails then leaves the conflict as the answer.
            let last = attempt >= OPENING_ATTEMPTS;
            match self.refresh().await {
                Err(reread) if !last => return Err(reread),
                Ok(_) if self.keep_up_to(&user) => {
                    info!("the opening was stored by the attempt whose reply was lost");
                    return Ok(());
                }
                _ if last => {
                    return Err(explain_conflict(
                        err,
                        "other writers kept changing the session while this turn tried to \
                         store its first message; nothing of this turn was stored",
                    ));
                }
                _ => attempt += 1,
            }
        }
    }

    /// Whether the history just reread holds this turn's opening (the one ending with
    /// `user`), and if so makes memory the history up to it. What other writers stored
    /// after it belongs to their turns, and the request this turn sends next must end with
    /// its own message: a model answers the last question it is shown, and shown another
    /// writer's, this turn answered that one (found by `fusion-stress --faults`, a turn on
    /// PostgreSQL storing the answer to another worker's note). The next turn's catch-up
    /// reads the rest; until then it is counted in [`Unread`], so the turn's writes that
    /// require the stored revision expect it.
    pub(super) fn keep_up_to(&mut self, user: &ChatMessage) -> bool {
        let Some(at) = self.history.iter().position(|stored| stored.id == user.id) else {
            return false;
        };
        self.unread = Unread::beyond(&self.history[..=at], &self.history);
        self.history.truncate(at + 1);
        self.finished_calls = None;
        true
    }
}
