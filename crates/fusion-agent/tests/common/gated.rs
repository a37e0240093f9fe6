//! A tool that holds its answer until the test releases it: how two writers' turns are
//! made to overlap (one writer's tool runs while another's whole turn does), without sleeps,
//! and how the stored result of such overlapping turns is shown.

use std::sync::Arc;

use async_trait::async_trait;
use fusion_agent::{AgentSession, Tool};
use fusion_core::ChatMessage;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{HANG_GUARD, Harness};

/// What [`Gated`] answers once released.
pub const REAL_RESULT: &str = "the real result";

/// The tool `gated`: says it started (on `started`), then waits for `release` before it
/// answers [`REAL_RESULT`]. Clones share the two signals.
#[derive(Clone, Default)]
pub struct Gated {
    pub started: Arc<Notify>,
    pub release: Arc<Notify>,
}

#[async_trait]
impl Tool for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    fn description(&self) -> &str {
        "answers when released"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }
    async fn call(&self, _args: Value) -> fusion_core::Result<String> {
        self.started.notify_one();
        self.release.notified().await;
        Ok(REAL_RESULT.into())
    }
}

/// Runs `a`'s turn, sending "from A", whose model asks for the tool `gated` (a clone of
/// `gated`), and `b`'s whole turn, sending "from B", while that tool waits; the tool answers
/// once B's turn is done. B's opening answers A's call (or action) as interrupted, and A's
/// real result and answer land after B's messages. Returns A's answer.
pub async fn overlap(a: &mut AgentSession, b: &mut AgentSession, gated: &Gated) -> String {
    let a_turn = async { a.send_message("from A").await.unwrap() };
    let b_turn = async {
        gated.started.notified().await;
        b.send_message("from B").await.unwrap();
        gated.release.notify_one();
    };
    let (a_result, ()) = tokio::time::timeout(HANG_GUARD, async { tokio::join!(a_turn, b_turn) })
        .await
        .unwrap();
    a_result.result
}

/// The stored contents, with "<interrupted>" for a result or observation the loop stored
/// for a call or action it found unanswered.
pub fn shown(history: &[ChatMessage]) -> Vec<&str> {
    history
        .iter()
        .map(|m| {
            if fusion_agent::context::is_interrupted(m) {
                "<interrupted>"
            } else {
                m.content.as_str()
            }
        })
        .collect()
}

/// Undoes with `b` after [`overlap`], whose late messages `b` has not read: the first undo
/// refuses, as for any write since; the second removes B's turn alone, leaving A's
/// (`a_s_turn`, as [`shown`] after the system prompt) in storage and in `b`; the third
/// removes A's turn whole.
pub async fn undo_b_s_turn_then_a_s(h: &Harness, b: &mut AgentSession, a_s_turn: &[&str]) {
    let err = b.undo_last_turn().await.unwrap_err();
    assert!(err.to_string().contains("nothing was undone"), "{err}");

    assert_eq!(b.undo_last_turn().await.unwrap(), 2);
    let stored = h.stored().await;
    assert_eq!(shown(&stored)[1..], *a_s_turn);
    assert_eq!(b.history(), stored.as_slice());
    assert_eq!(b.undo_last_turn().await.unwrap(), a_s_turn.len());
    assert_eq!(h.stored().await.len(), 1);
}
