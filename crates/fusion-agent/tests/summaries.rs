//! Summaries that must not be stored, and what a summary may cover: a reply cut short is
//! refused like an empty one (by hand and automatically, where it is then not asked for
//! again on every turn), and the latest user message is never condensed away.

mod common;

use common::Harness;
use fusion_agent::ContextPolicy;
use fusion_agent::context::is_context_record;
use fusion_agent::testing::MockReply;
use fusion_core::Error;

/// A session with two short turns stored.
async fn two_turns(h: &Harness) -> fusion_agent::AgentSession {
    let mut session = h.session().await;
    h.server.push_text("a0").push_text("a1");
    session
        .send_message("My name is Ada and I want a report on X by Friday")
        .await
        .unwrap();
    session.send_message("ok").await.unwrap();
    session
}

#[tokio::test]
async fn a_summary_cut_short_is_refused_and_nothing_is_stored() {
    for (reason, said) in [
        ("length", "output token limit"),
        ("content_filter", "content filter"),
    ] {
        let h = Harness::new().await;
        let mut session = two_turns(&h).await;
        let before = h.stored().await;
        h.server.push(MockReply::finished(
            "The user's name is Ada and she wa",
            reason,
        ));
        let error = session.summarize_history(0).await.unwrap_err();
        let Error::Llm { message, .. } = &error else {
            panic!("expected Error::Llm, got {error:?}");
        };
        assert!(message.contains("cut short"), "{message}");
        assert!(
            message.contains(said) && message.contains(reason),
            "{message}"
        );
        assert!(message.contains("nothing was stored"), "{message}");
        assert_eq!(h.stored().await, before, "{reason}");
        assert!(!session.history().iter().any(is_context_record));
    }
}

#[tokio::test]
async fn an_automatic_summary_cut_short_is_not_stored_and_the_turn_goes_on() {
    let h = Harness::new().await;
    let mut session = two_turns(&h).await;
    session.set_context_policy(ContextPolicy {
        summary_keep_last: 0,
        auto_summarize_at_tokens: Some(1),
        ..ContextPolicy::default()
    });
    h.server
        .push(MockReply::finished(
            "The user's name is Ada and she wa",
            "length",
        ))
        .push_text("still here");
    let result = session.send_message("and now?").await.unwrap();
    assert_eq!(result.result, "still here");
    assert_eq!(h.server.request_count(), 4);
    assert!(!h.stored().await.iter().any(is_context_record));
}

/// An automatic summary cut short is not asked for again on every turn, each time sending
/// the whole conversation to be cut short the same way: the next try waits until the
/// conversation holds twice the messages it held at the failure, and then works as before.
#[tokio::test]
async fn an_automatic_summary_cut_short_is_tried_again_only_once_the_conversation_doubles() {
    let h = Harness::new().await;
    let mut session = two_turns(&h).await;
    session.set_context_policy(ContextPolicy {
        summary_keep_last: 0,
        auto_summarize_at_tokens: Some(1),
        ..ContextPolicy::default()
    });
    h.server
        .push(MockReply::finished(
            "The user's name is Ada and she wa",
            "length",
        ))
        .push_text("a2");
    assert_eq!(session.send_message("third").await.unwrap().result, "a2");
    assert_eq!(h.server.request_count(), 4, "the summary, then the answer");

    // The failed summary was asked when the turn's message was the 6th stored: the 7th
    // to 10th message of the conversation ask for none.
    for (message, answer) in [("fourth", "a3"), ("fifth", "a4")] {
        h.server.push_text(answer);
        assert_eq!(session.send_message(message).await.unwrap().result, answer);
    }
    assert_eq!(
        h.server.request_count(),
        6,
        "one request a turn, no summary"
    );
    assert!(!h.stored().await.iter().any(is_context_record));

    h.server
        .push_text("Ada wants a report on X by Friday.")
        .push_text("a5");
    assert_eq!(session.send_message("sixth").await.unwrap().result, "a5");
    assert_eq!(h.server.request_count(), 8, "the summary is tried again");
    assert!(h.stored().await.iter().any(is_context_record));
}

/// A failure that may pass (here a 500) is tried again by the very next turn.
#[tokio::test]
async fn an_automatic_summary_that_failed_on_a_server_error_is_tried_again_next_turn() {
    let h = Harness::new().await;
    let mut session = two_turns(&h).await;
    session.set_context_policy(ContextPolicy {
        summary_keep_last: 0,
        auto_summarize_at_tokens: Some(1),
        ..ContextPolicy::default()
    });
    h.server.push_status(500).push_text("a2");
    assert_eq!(session.send_message("third").await.unwrap().result, "a2");
    h.server
        .push_text("Ada wants a report on X by Friday.")
        .push_text("a3");
    assert_eq!(session.send_message("fourth").await.unwrap().result, "a3");
    assert_eq!(h.server.request_count(), 6);
    assert!(h.stored().await.iter().any(is_context_record));
}

/// "The latest user message is always sent" holds for summaries too: `summarize_history`
/// stops before it however few messages it is told to keep.
#[tokio::test]
async fn summarize_history_never_condenses_the_latest_user_message_away() {
    let h = Harness::new().await;
    let mut session = two_turns(&h).await;
    h.server.push_text("Ada wants a report on X by Friday.");
    let report = session.summarize_history(0).await.unwrap().unwrap();
    // System prompt, Ada's message, a0 condensed; "ok" and a1 kept.
    assert_eq!((report.covers, report.summarized), (3, 2));
    let transcript = h.request_messages(2)[1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(transcript.contains("report on X"), "{transcript}");
    assert!(!transcript.contains("User: ok"), "{transcript}");
    let view: Vec<(String, String)> = session
        .request_view()
        .iter()
        .map(|m| (format!("{:?}", m.role), m.content.clone()))
        .collect();
    assert_eq!(view.len(), 3, "{view:?}");
    assert!(view[0].1.ends_with("Ada wants a report on X by Friday."));
    assert_eq!(view[1].1, "ok");
    assert_eq!(view[2].1, "a1");
    // Nothing before the latest user message is left to condense.
    assert!(session.summarize_history(0).await.unwrap().is_none());
    assert_eq!(h.server.request_count(), 3);
}

/// In text ReAct mode a tool's output comes back as a user message starting
/// `Observation: `. The summarizer reads it as a tool result, cut like one, never as
/// something the user said ("keep every fact the user stated").
#[tokio::test]
async fn a_text_mode_observation_is_summarized_as_a_tool_result() {
    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("notes.txt"), "x".repeat(5_000)).unwrap();
    let mut session = common::builder(
        std::sync::Arc::new(common::text_client(&h.server)),
        h.storage.clone(),
        h.workspace.path(),
    )
    .build()
    .await
    .unwrap();
    h.server
        .push_text("Action: read_file\nAction Input: {\"path\": \"notes.txt\"}")
        .push_text("Final Answer: It is all x.")
        .push_text("Final Answer: Fine.");
    session.send_message("What is in notes.txt?").await.unwrap();
    session.send_message("ok").await.unwrap();
    h.server
        .push_text("The user asked about notes.txt, which holds only x.");
    session.summarize_history(0).await.unwrap().unwrap();
    let transcript = h.request_messages(3)[1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(transcript.contains("Tool result: xxx"), "{transcript}");
    assert!(!transcript.contains("User: Observation"), "{transcript}");
    // Cut like any tool output, not carried whole.
    assert!(transcript.contains("more bytes]"), "{transcript}");
    assert!(transcript.len() < 3_000, "{} bytes", transcript.len());
}
