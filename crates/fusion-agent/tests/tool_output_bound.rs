//! A tool's output is bounded before it is stored: a tool that returns far more than a
//! model can read keeps its start and end around a note, in storage, in the step the turn
//! reports and in every later request.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::{Harness, SESSION};
use fusion_agent::{AgentSession, DEFAULT_MAX_TOOL_OUTPUT_BYTES, Tool, ToolRegistry};
use fusion_core::Role;
use serde_json::{Value, json};

/// Returns `head`, then `filler` repeated to `len` bytes, then `tail`.
struct Flood {
    len: usize,
}

impl Flood {
    const HEAD: &str = "BEGIN-OF-OUTPUT ";
    const TAIL: &str = " END-OF-OUTPUT: 3 errors";

    fn output(&self) -> String {
        // A character of 3 bytes: a bound falling inside one must not panic.
        let filler = "€".repeat((self.len - Self::HEAD.len() - Self::TAIL.len()) / 3);
        format!("{}{filler}{}", Self::HEAD, Self::TAIL)
    }
}

#[async_trait]
impl Tool for Flood {
    fn name(&self) -> &str {
        "flood"
    }
    fn description(&self) -> &str {
        "returns a lot"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }
    async fn call(&self, _args: Value) -> fusion_core::Result<String> {
        Ok(self.output())
    }
}

fn session_with(h: &Harness, flood: Flood) -> fusion_agent::SessionBuilder {
    AgentSession::builder(SESSION)
        .llm(Arc::new(common::client(&h.server)))
        .storage(h.storage.clone())
        .system_prompt("You are a test agent.")
        .tools(ToolRegistry::new().with(flood))
}

/// The stored tool result, after checking the step and the next request carry it too.
async fn bounded_result(h: &Harness, session: &mut AgentSession) -> String {
    h.server.push_tool_call("flood", "{}").push_text("done");
    let result = session.send_message("flood me").await.unwrap();
    let stored = h.stored().await;
    let kept = stored
        .iter()
        .find(|m| m.role == Role::Tool)
        .unwrap()
        .content
        .clone();
    assert_eq!(result.steps[0].observation, kept);
    let sent = h.request_messages(1);
    assert_eq!(sent.last().unwrap()["content"], json!(kept));
    kept
}

/// Found by a review: a tool's output went into the session whole, 100 MB included, and
/// with it into every later request.
#[tokio::test]
async fn a_tool_output_past_the_bound_keeps_its_start_and_end() {
    let h = Harness::new().await;
    let flood = Flood { len: 300_001 };
    let whole = flood.output();
    let mut session = session_with(&h, flood)
        .max_tool_output_bytes(10_000)
        .build()
        .await
        .unwrap();
    let kept = bounded_result(&h, &mut session).await;
    assert!(kept.len() <= 10_000, "{} bytes", kept.len());
    assert!(kept.len() > 9_000, "{} bytes", kept.len());
    assert!(kept.starts_with(Flood::HEAD), "{}", &kept[..40]);
    assert!(kept.ends_with(Flood::TAIL));
    let left_out = whole.len() - (kept.len() - note_len(&kept));
    assert!(
        kept.contains(&format!(
            "[tool output cut: {left_out} of its {} bytes left out here",
            whole.len()
        )),
        "{kept}"
    );
}

/// By default an output up to [`DEFAULT_MAX_TOOL_OUTPUT_BYTES`] is kept whole, and one
/// past it is cut to it.
#[tokio::test]
async fn the_default_bound_keeps_a_megabyte_and_cuts_past_it() {
    let h = Harness::new().await;
    let flood = Flood {
        len: DEFAULT_MAX_TOOL_OUTPUT_BYTES,
    };
    let whole = flood.output();
    let mut session = session_with(&h, flood).build().await.unwrap();
    assert_eq!(bounded_result(&h, &mut session).await, whole);

    let h = Harness::new().await;
    let flood = Flood {
        len: 3 * DEFAULT_MAX_TOOL_OUTPUT_BYTES,
    };
    let mut session = session_with(&h, flood).build().await.unwrap();
    let kept = bounded_result(&h, &mut session).await;
    assert!(kept.len() <= DEFAULT_MAX_TOOL_OUTPUT_BYTES);
    assert!(kept.starts_with(Flood::HEAD) && kept.ends_with(Flood::TAIL));
}

/// The length of the note in `kept`, with the blank lines around it.
fn note_len(kept: &str) -> usize {
    let start = kept.find("\n\n[tool output cut: ").unwrap();
    kept[start..].find("]\n\n").unwrap() + 3
}
