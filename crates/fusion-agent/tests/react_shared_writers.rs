//! Two writers on one text ReAct session whose turns overlap: A's action runs its tool
//! while B's whole turn runs, so B's opening answers A's action as interrupted and A's real
//! observation and answer land after B's answer. The loop's observations name the reply
//! they answer, so undo and the view treat the late one as native mode treats a late tool
//! result: it is A's, not a message of the user's.

mod common;

use std::sync::Arc;

use common::gated::{Gated, REAL_RESULT, overlap, shown, undo_b_s_turn_then_a_s};
use common::{Harness, SESSION, text_client};
use fusion_agent::{AgentSession, ToolRegistry};

const ACTION: &str = "Thought: wait for it\nAction: gated\nAction Input: {}";

/// A's text-mode turn acts with the `gated` tool; B's whole text-mode turn runs while it
/// waits; then A's real observation and answer land after B's messages. Returns the two
/// sessions after both turns.
async fn overlapping_text_turns(h: &Harness) -> (AgentSession, AgentSession) {
    let gated = Gated::default();
    let text_session = |tools: ToolRegistry| {
        AgentSession::builder(SESSION)
            .llm(Arc::new(text_client(&h.server)))
            .storage(h.storage.clone())
            .system_prompt("You are a test agent.")
            .tools(tools)
            .build()
    };
    let mut a = text_session(ToolRegistry::new().with(gated.clone()))
        .await
        .unwrap();
    let mut b = text_session(ToolRegistry::new()).await.unwrap();
    h.server
        .push_text(ACTION)
        .push_text("Final Answer: B answer")
        .push_text("Final Answer: A answer");

    assert_eq!(overlap(&mut a, &mut b, &gated).await, "A answer");
    let real = format!("Observation: {REAL_RESULT}");
    assert_eq!(
        shown(&h.stored().await)[1..],
        [
            "from A",
            ACTION,
            "<interrupted>",
            "from B",
            "Final Answer: B answer",
            real.as_str(),
            "Final Answer: A answer"
        ]
    );
    (a, b)
}

#[tokio::test]
async fn undoing_a_turn_another_writer_s_late_observation_follows_removes_that_turn_alone() {
    let h = Harness::new().await;
    let (_a, mut b) = overlapping_text_turns(&h).await;
    // B's turn goes, and A's real observation and answer stay, after A's action.
    let real = format!("Observation: {REAL_RESULT}");
    let a_s_turn = [
        "from A",
        ACTION,
        "<interrupted>",
        real.as_str(),
        "Final Answer: A answer",
    ];
    undo_b_s_turn_then_a_s(&h, &mut b, &a_s_turn).await;
}

#[tokio::test]
async fn the_model_sees_one_observation_for_the_action_the_real_one_after_it() {
    let h = Harness::new().await;
    overlapping_text_turns(&h).await;

    // A session reading storage afresh shows the action with its real observation only,
    // as native mode shows a late real result in place of an interrupted one.
    let mut c = AgentSession::builder(SESSION)
        .llm(Arc::new(text_client(&h.server)))
        .storage(h.storage.clone())
        .tools(ToolRegistry::new())
        .build()
        .await
        .unwrap();
    h.server.push_text("Final Answer: C answer");
    c.send_message("from C").await.unwrap();
    let request = h.request_messages(3);
    let sent: Vec<&str> = request[1..]
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    let real = format!("Observation: {REAL_RESULT}");
    assert_eq!(
        sent,
        [
            "from A",
            ACTION,
            real.as_str(),
            "from B",
            "Final Answer: B answer",
            "Final Answer: A answer",
            "from C"
        ]
    );
}
