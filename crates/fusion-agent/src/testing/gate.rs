//! [`StreamGate`]: a streamed reply held after its first part until the test lets it go,
//! for checking that a client shows text before the server has sent all of it.

use std::sync::Arc;

use tokio::sync::watch;

/// The two flags a held stream and its test share.
///
/// `watch` channels rather than `Notify`: a waiter that arrives after the flag went up
/// must still see it, and the flags never go down again.
pub(super) struct GateState {
    first_part_sent: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

impl GateState {
    /// A closed gate whose stream has sent nothing.
    pub fn new() -> Arc<GateState> {
        Arc::new(GateState {
            first_part_sent: watch::Sender::new(false),
            released: watch::Sender::new(false),
        })
    }

    /// Called by the stream once its first part has been handed to the connection.
    pub fn mark_first_part_sent(&self) {
        self.first_part_sent.send_replace(true);
    }

    /// Resolves once the test has released the gate (at once if it already has).
    pub async fn released(&self) {
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = self.released.subscribe().wait_for(|open| *open).await;
    }
}

/// A test's handle on a streamed reply that the server holds after its first part, from
/// [`MockLlmServer::hold_next_stream`](super::MockLlmServer::hold_next_stream).
///
/// The held reply sends its role chunk and first delta (for a text reply, the first word),
/// then waits for [`release`](Self::release) before sending the rest. Dropping the gate
/// releases it too, so a failing test never leaves a stream hanging.
pub struct StreamGate {
    state: Arc<GateState>,
}

impl StreamGate {
    pub(super) fn new(state: Arc<GateState>) -> StreamGate {
        StreamGate { state }
    }

    /// Waits until the server has handed the first part of the held reply to the
    /// connection (at once if it already has). Never resolves if no streamed reply comes,
    /// so tests wrap it in a timeout.
    pub async fn first_part_sent(&self) {
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = self
            .state
            .first_part_sent
            .subscribe()
            .wait_for(|sent| *sent)
            .await;
    }

    /// Whether the first part has been handed to the connection yet.
    pub fn is_first_part_sent(&self) -> bool {
        *self.state.first_part_sent.borrow()
    }

    /// Lets the held reply send the rest. Releasing twice does nothing more.
    pub fn release(&self) {
        self.state.released.send_replace(true);
    }
}

impl Drop for StreamGate {
    fn drop(&mut self) {
        self.release();
    }
}

impl std::fmt::Debug for StreamGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamGate")
            .field("first_part_sent", &self.is_first_part_sent())
            .field("released", &*self.state.released.borrow())
            .finish()
    }
}
