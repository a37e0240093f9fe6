//! [`settle`]: what a stopped turn waits for before it ends.
//!
//! Stop drops the agent's turn, but not a storage write it had started: the agent runs
//! each write as a task of its own, which lands whether or not anyone still awaits it
//! (and SQLite and the file system finish theirs on a blocking thread anyway). A turn
//! that ended at once was judged against storage before such a write landed: a message
//! about to be stored was shown as "not sent", and sent again it was stored twice.

use std::time::Duration;

use fusion::agent::AgentSession;

use super::{Frame, Turn};

/// The longest a stopped turn waits for a storage write under way. A write that takes
/// longer is left to land or fail on its own, and the turn's end says its message may
/// yet be stored ([`Turn::unsettled`]): a storage that hangs must not keep the session
/// busy (unable to send, undo or delete) for as long as it hangs.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// Waits until every storage write `session` started has ended, reading the session
/// again after it ([`AgentSession::reload`], which waits for them), so that the turn's
/// end is judged against storage as the turn left it. While it waits, the page is told
/// ([`Frame::Settling`]); past [`SETTLE_WITHIN`] the turn gives up waiting.
pub(super) async fn settle(turn: &Turn, session: &mut AgentSession) {
    let mut settled = std::pin::pin!(session.reload());
    // A read that fails after the writes ended is no matter here: the end reads again.
    if futures::poll!(settled.as_mut()).is_ready() {
        return;
    }
    turn.push(Frame::Settling);
    if tokio::time::timeout(SETTLE_WITHIN, settled).await.is_err() {
        turn.gave_up_settling();
    }
}
