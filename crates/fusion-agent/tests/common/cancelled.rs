//! Turns cancelled while a tool runs: a tool that never finishes, the cancelled turn, and
//! what the next turn must send and store after a text-mode action was cut off so.

use std::sync::Arc;

use async_trait::async_trait;
use fusion_agent::{AgentSession, Tool};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{HANG_GUARD, Harness, roles};

/// A tool named `name` that says it started (on `started`), then never finishes.
pub struct Stuck {
    pub name: &'static str,
    pub started: Arc<Notify>,
}

impl Stuck {
    /// The tool `stuck`, saying it started on `started`.
    pub fn new(started: Arc<Notify>) -> Self {
        Self {
            name: "stuck",
            started,
        }
    }
}

#[async_trait]
impl Tool for Stuck {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        "never returns"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }
    async fn call(&self, _args: Value) -> fusion_core::Result<String> {
        self.started.notify_one();
        std::future::pending().await
    }
}

/// Sends `message` on `session` and drops the turn once `started` says its tool runs.
pub async fn cancel_once_its_tool_runs(
    session: &mut AgentSession,
    message: &str,
    started: &Notify,
) {
    tokio::time::timeout(HANG_GUARD, async {
        tokio::select! {
            _ = session.send_message(message) => panic!("the turn should hang"),
            _ = started.notified() => {}
        }
    })
    .await
    .unwrap();
}

/// After a turn cancelled while its text-mode action calling `tool` ran, the next turn
/// (the last request, which sent `message`) answered that action as interrupted, right
/// after it; stored too, in the action's turn, so undo takes the new turn only.
pub async fn assert_answered_as_interrupted(
    h: &Harness,
    session: &mut AgentSession,
    tool: &str,
    message: &str,
) {
    let request = h.request_messages(1);
    assert_eq!(
        roles(&request),
        ["system", "user", "assistant", "user", "user"]
    );
    let observation = request[3]["content"].as_str().unwrap();
    let interrupted = format!("Observation: Error: the call to `{tool}` was interrupted");
    assert!(observation.starts_with(&interrupted), "{observation}");
    assert_eq!(request[4]["content"], message);
    assert_eq!(h.stored().await.len(), 6);
    assert_eq!(session.undo_last_turn().await.unwrap(), 2);
}
