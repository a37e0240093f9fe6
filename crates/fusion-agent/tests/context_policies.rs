//! Context policies on the wire: what a real loopback OpenAI-compatible server receives
//! under a sliding window, a token budget, pruning and summaries, and what storage keeps;
//! plus undo and fork.

mod common;

use std::sync::Arc;

use common::{Harness, SESSION, assert_every_call_answered, builder, client, roles, text_client};
use fusion_agent::context::{
    EstimateCounter, PRUNE_KEY, SUMMARY_HEADER, SUMMARY_KEY, count_request, count_tools,
    is_context_record, plan_prune, pruned_tool_output, visible_tokens,
};
use fusion_agent::testing::{MockLlmServer, MockReply, MockToolCall};
use fusion_agent::{AgentSession, ContextPolicy, TokenCounter, ToolDefinition};
use fusion_core::{ChatMessage, ConversationStorage, Error};
use fusion_storage_fs::FileSystemStorage;
use serde_json::Value;

/// One turn that reads `f{n}.txt` (holding `bytes` bytes) and answers `answer {n}`:
/// stores user, assistant call, tool result, assistant answer.
async fn tool_turn(h: &Harness, session: &mut AgentSession, n: usize, bytes: usize) {
    let file = format!("f{n}.txt");
    std::fs::write(h.workspace.path().join(&file), "x".repeat(bytes)).unwrap();
    h.server
        .push(MockReply::ToolCalls {
            content: format!("I will read {file} now."),
            calls: vec![MockToolCall::new(
                "read_file",
                format!(r#"{{"path": "{file}"}}"#),
            )],
        })
        .push_text(format!("answer {n}"));
    let result = session
        .send_message(&format!("question {n}"))
        .await
        .unwrap();
    assert!(result.success && result.steps[0].success);
}

/// The messages of the last request the server received.
fn last_request(h: &Harness) -> Vec<Value> {
    h.request_messages(h.server.request_count() - 1)
}

fn as_messages(sent: &[Value]) -> Vec<ChatMessage> {
    sent.iter()
        .map(|m| serde_json::from_value(m.clone()).unwrap())
        .collect()
}

/// Tokens of the tools the first request offered, as a budget counts them.
fn offered_tools_tokens(h: &Harness) -> usize {
    let offered: Vec<ToolDefinition> = h.server.requests()[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| serde_json::from_value(tool["function"].clone()).unwrap())
        .collect();
    count_tools(&EstimateCounter, &offered)
}

fn texts(sent: &[Value]) -> Vec<&str> {
    sent.iter()
        .map(|m| m["content"].as_str().unwrap_or(""))
        .collect()
}

#[tokio::test]
async fn the_window_sends_the_system_prompt_and_the_last_messages_without_splitting_pairs() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    for n in 0..3 {
        tool_turn(&h, &mut session, n, 50).await;
    }
    session.set_max_history_length(3);
    h.server.push_text("ok");
    session.send_message("question 3").await.unwrap();
    // The last 3 would start with `f2.txt`'s result; it leaves together with its call.
    let sent = last_request(&h);
    assert_eq!(roles(&sent), ["system", "assistant", "user"]);
    assert_eq!(texts(&sent)[1..], ["answer 2", "question 3"]);

    // Room for the pair: it comes back whole.
    session.set_max_history_length(6);
    h.server.push_text("ok");
    session.send_message("question 4").await.unwrap();
    let sent = last_request(&h);
    assert_eq!(
        roles(&sent),
        [
            "system",
            "assistant",
            "tool",
            "assistant",
            "user",
            "assistant",
            "user"
        ]
    );
    assert_eq!(texts(&sent)[0], "You are a test agent.");
    assert_every_call_answered(&sent);

    // Storage keeps everything.
    assert_eq!(h.stored().await.len(), 1 + 3 * 4 + 2 * 2);
}

#[tokio::test]
async fn the_window_keeps_a_long_turn_s_question_and_its_newest_pairs() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    session.set_max_history_length(5);
    for n in 0..3 {
        std::fs::write(h.workspace.path().join(format!("f{n}.txt")), "data").unwrap();
        h.server
            .push_tool_call("read_file", format!(r#"{{"path": "f{n}.txt"}}"#));
    }
    h.server.push_text("done");
    session.send_message("read three files").await.unwrap();
    let sent = last_request(&h);
    // The question, then as many of the newest call/result pairs as fit.
    assert_eq!(
        roles(&sent),
        ["system", "user", "assistant", "tool", "assistant", "tool"]
    );
    assert_eq!(texts(&sent)[1], "read three files");
    assert_every_call_answered(&sent);
}

#[tokio::test]
async fn the_token_budget_drops_the_oldest_messages_until_the_request_fits() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    for n in 0..4 {
        tool_turn(&h, &mut session, n, 400).await;
    }
    // 400 for the messages, besides the tools.
    let budget = offered_tools_tokens(&h) + 400;
    session.set_max_context_tokens(budget);
    h.server.push_text("ok");
    session.send_message("question 4").await.unwrap();

    let sent = last_request(&h);
    let counted = count_request(&EstimateCounter, &as_messages(&sent)) + offered_tools_tokens(&h);
    assert!(counted <= budget, "{counted} tokens sent, budget {budget}");
    assert_eq!(roles(&sent)[0], "system");
    assert_eq!(*texts(&sent).last().unwrap(), "question 4");
    assert_every_call_answered(&sent);
    assert!(!texts(&sent).contains(&"question 0"));
    // What was sent is the newest part of the conversation (before the reply), in order.
    let stored = h.stored().await;
    let before_reply = &stored[..stored.len() - 1];
    let first_sent = before_reply.len() - (sent.len() - 1);
    // Stored messages carry ids; the wire carries none.
    let without_ids: Vec<ChatMessage> = before_reply[first_sent..]
        .iter()
        .map(|m| ChatMessage {
            id: None,
            ..m.clone()
        })
        .collect();
    assert_eq!(as_messages(&sent)[1..], without_ids);
    // And the next older message would not have fitted.
    let older = &before_reply[first_sent - 1];
    assert!(counted + EstimateCounter.count_message(older) > budget);
}

/// Found by a review: the budget counted the messages alone, so the tool definitions
/// each native-mode request offers came on top of it and the request exceeded the budget
/// by their size. They are counted now: messages and tools fit in it together.
#[tokio::test]
async fn the_token_budget_holds_for_the_messages_and_the_tools_offered() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    for n in 0..8 {
        tool_turn(&h, &mut session, n, 400).await;
    }
    let tools = offered_tools_tokens(&h);
    assert!(tools > 100, "{tools} tokens of tools");
    let budget = tools + 600;
    session.set_max_context_tokens(budget);
    h.server.push_text("ok");
    session.send_message("question 8").await.unwrap();

    let sent = last_request(&h);
    let counted = count_request(&EstimateCounter, &as_messages(&sent)) + tools;
    assert!(counted <= budget, "{counted} tokens sent, budget {budget}");
    assert!(!texts(&sent).contains(&"question 0"));
    assert!(texts(&sent).contains(&"answer 7"));
    assert_every_call_answered(&sent);
}

/// Found by a review of 277d6a8: the token budget counts the tools offered, but pruning
/// to it (no `target_tokens`) still stopped once the conversation alone fitted, so the
/// budget then dropped messages that pruning one more old output would have kept.
#[tokio::test]
async fn pruning_to_the_token_budget_counts_the_tools_as_the_budget_does() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    for n in 0..4 {
        tool_turn(&h, &mut session, n, 4_000).await;
    }
    let tools = offered_tools_tokens(&h);
    let stored = h.stored().await;
    let before = visible_tokens(&stored, &EstimateCounter);
    // What pruning one old output saves.
    let mut one = ContextPolicy::default();
    one.prune.target_tokens = Some(before - 1);
    let one = plan_prune(&stored, &one, &EstimateCounter).report;
    assert_eq!(one.tool_outputs, 1);
    let saved = before - one.tokens_after;
    assert!(
        tools < saved,
        "{tools} tokens of tools, {saved} saved by one output"
    );
    // The conversation fits once one output goes; the request, tools and all, once two do.
    let budget = before - saved + tools / 2;
    session.set_max_context_tokens(budget);
    let report = session.prune_unimportant_messages().await.unwrap();
    assert_eq!(report.tool_outputs, 2, "{report:?}");
    assert!(
        report.tokens_after + tools <= budget,
        "{} + {tools} > {budget}",
        report.tokens_after
    );
}

#[tokio::test]
async fn pruned_tool_output_is_sent_as_a_marker_and_stays_pruned_after_a_restart() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    for n in 0..3 {
        tool_turn(&h, &mut session, n, 5_000).await;
    }
    let report = session.prune_unimportant_messages().await.unwrap();
    // Turns 0 is old; turns 1 and 2 are the two most recent, kept by default.
    assert_eq!((report.tool_outputs, report.chatter), (1, 1));
    assert!(report.tokens_after + 1_000 < report.tokens_before);

    h.server.push_text("ok");
    session.send_message("question 3").await.unwrap();
    let sent = last_request(&h);
    assert_eq!(sent[3]["content"], pruned_tool_output(5_000));
    assert_eq!(sent[3]["tool_call_id"], sent[2]["tool_calls"][0]["id"]);
    assert!(sent[2]["content"].is_null(), "chatter dropped: {}", sent[2]);
    assert_eq!(sent[7]["content"].as_str().unwrap().len(), 5_000);
    assert!(sent.iter().all(|m| m.get("metadata").is_none()));
    assert_every_call_answered(&sent);

    // Storage has the original output and the decision.
    let stored = h.stored().await;
    assert_eq!(stored[3].content.len(), 5_000);
    let record = stored.iter().find(|m| is_context_record(m)).unwrap();
    assert_eq!(
        record.metadata[PRUNE_KEY]["tool_outputs"],
        serde_json::json!([3])
    );

    let mut reopened = h.session().await;
    h.server.push_text("ok");
    reopened.send_message("question 4").await.unwrap();
    assert_eq!(last_request(&h)[3]["content"], pruned_tool_output(5_000));
}

#[tokio::test]
async fn a_summary_replaces_old_messages_and_survives_a_restart_without_being_recomputed() {
    let server = MockLlmServer::start().await;
    let sessions = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let open = async || {
        let storage: Arc<dyn ConversationStorage> =
            Arc::new(FileSystemStorage::new(sessions.path()));
        builder(Arc::new(client(&server)), storage, workspace.path())
            .build()
            .await
            .unwrap()
    };
    let mut session = open().await;
    for (question, answer) in [
        ("My favourite colour is blue.", "Noted."),
        ("I live in Lisbon.", "Nice city."),
        ("What should I wear today?", "Something light."),
    ] {
        server.push_text(answer);
        session.send_message(question).await.unwrap();
    }
    server.push_text("The user likes blue and lives in Lisbon.");
    let report = session.summarize_history(2).await.unwrap().unwrap();
    assert_eq!((report.covers, report.summarized), (5, 4));

    // The summarization request: the transcript of what it covers, no tools.
    let requests = server.requests();
    let summarize = &requests[3];
    assert!(summarize.get("tools").is_none());
    let transcript = summarize["messages"][1]["content"].as_str().unwrap();
    assert!(
        transcript.contains("User: My favourite colour is blue."),
        "{transcript}"
    );
    assert!(transcript.contains("Assistant: Nice city."));
    assert!(!transcript.contains("What should I wear"));

    server.push_text("Blue.");
    session
        .send_message("Which colour do I like?")
        .await
        .unwrap();
    let sent = server.requests()[4]["messages"].as_array().unwrap().clone();
    assert_eq!(roles(&sent), ["system", "user", "assistant", "user"]);
    assert_eq!(
        sent[0]["content"],
        format!(
            "You are a test agent.\n\n{SUMMARY_HEADER}\nThe user likes blue and lives in Lisbon."
        )
    );
    assert_eq!(
        texts(&sent)[1..],
        [
            "What should I wear today?",
            "Something light.",
            "Which colour do I like?"
        ]
    );

    // A restart reads the stored summary: one request for the turn, none to summarize.
    drop(session);
    let mut reopened = open().await;
    let stored = reopened.history().to_vec();
    assert_eq!(stored.len(), 1 + 6 + 1 + 2);
    assert_eq!(stored[7].metadata[SUMMARY_KEY]["covers"], 5);
    assert_eq!(stored[1].content, "My favourite colour is blue.");
    server.push_text("Lisbon.");
    reopened.send_message("Where do I live?").await.unwrap();
    assert_eq!(server.request_count(), 6);
    let sent = server.requests()[5]["messages"].as_array().unwrap().clone();
    assert!(
        sent[0]["content"]
            .as_str()
            .unwrap()
            .ends_with("lives in Lisbon.")
    );
    assert_eq!(sent.len(), 1 + 5);

    // Nothing new to condense: no request at all.
    assert!(reopened.summarize_history(10).await.unwrap().is_none());
    assert_eq!(server.request_count(), 6);
}

#[tokio::test]
async fn auto_summarize_runs_before_a_turn_that_would_cross_the_threshold() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    session.set_context_policy(ContextPolicy {
        summary_keep_last: 2,
        ..ContextPolicy::default()
    });
    session.set_auto_summarize(120);
    for n in 0..3 {
        h.server
            .push_text(format!("answer {n} {}", "words ".repeat(20)));
        session
            .send_message(&format!("question {n}"))
            .await
            .unwrap();
    }
    // The first turns fit; the third request was made without a summary.
    assert_eq!(h.server.request_count(), 3);
    h.server.push_text("Summary: three questions answered.");
    h.server.push_text("ok");
    session.send_message("question 3").await.unwrap();
    assert_eq!(h.server.request_count(), 5);
    let summarize = h.request_messages(3);
    assert!(
        summarize[1]["content"]
            .as_str()
            .unwrap()
            .contains("question 1")
    );
    let sent = h.request_messages(4);
    assert!(
        sent[0]["content"]
            .as_str()
            .unwrap()
            .ends_with("three questions answered.")
    );
    assert_eq!(roles(&sent), ["system", "user", "assistant", "user"]);
    assert_eq!(
        [texts(&sent)[1], texts(&sent)[3]],
        ["question 2", "question 3"]
    );
}

#[tokio::test]
async fn a_failed_automatic_summary_does_not_fail_the_turn() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server.push_text("hello");
    session.send_message("hi").await.unwrap();
    session.set_context_policy(ContextPolicy {
        summary_keep_last: 0,
        auto_summarize_at_tokens: Some(1),
        ..ContextPolicy::default()
    });
    h.server.push_status(500).push_text("still here");
    let result = session.send_message("again").await.unwrap();
    assert_eq!(result.result, "still here");
    assert!(!h.stored().await.iter().any(is_context_record));
}

#[tokio::test]
async fn undo_removes_the_last_turn_from_storage_and_from_later_requests() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    tool_turn(&h, &mut session, 0, 10).await;
    tool_turn(&h, &mut session, 1, 10).await;
    assert_eq!(session.undo_last_turn().await.unwrap(), 4);
    assert_eq!(session.message_count(), 5);
    let stored = h.stored().await;
    assert_eq!(stored.as_slice(), session.history());
    assert_eq!(stored.last().unwrap().content, "answer 0");

    h.server.push_text("ok");
    session.send_message("question 1 again").await.unwrap();
    assert!(!texts(&last_request(&h)).contains(&"question 1"));
    assert_eq!(session.undo_last_turn().await.unwrap(), 2);
    assert_eq!(session.undo_last_turn().await.unwrap(), 4);
    // Only the system prompt is left, and nothing more to undo.
    assert_eq!(session.undo_last_turn().await.unwrap(), 0);
    assert_eq!(h.stored().await.len(), 1);
}

#[tokio::test]
async fn undo_in_text_mode_removes_observations_with_their_turn() {
    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("a.txt"), "alpha").unwrap();
    let mut session = builder(
        Arc::new(text_client(&h.server)),
        h.storage.clone(),
        h.workspace.path(),
    )
    .build()
    .await
    .unwrap();
    h.server.push_text("Final Answer: hello");
    session.send_message("hi").await.unwrap();
    h.server
        .push_text("Action: read_file\nAction Input: {\"path\": \"a.txt\"}")
        .push_text("Final Answer: it says alpha");
    session.send_message("read a.txt").await.unwrap();
    // user, action, observation (a user message), final answer.
    assert_eq!(session.undo_last_turn().await.unwrap(), 4);
    assert_eq!(
        h.stored().await.last().unwrap().content,
        "Final Answer: hello"
    );
}

#[tokio::test]
async fn fork_copies_the_history_and_the_copies_evolve_apart() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    tool_turn(&h, &mut session, 0, 10).await;
    session.prune_unimportant_messages().await.unwrap();
    let original = h.stored().await;

    let mut fork = session.fork("user-123-fork").await.unwrap();
    assert_eq!(fork.session_id(), "user-123-fork");
    assert_eq!(fork.history(), original.as_slice());
    assert_eq!(h.storage.load("user-123-fork").await.unwrap(), original);

    h.server.push_text("only in the fork");
    fork.send_message("fork question").await.unwrap();
    assert_eq!(h.stored().await, original);
    assert_eq!(
        h.storage.load("user-123-fork").await.unwrap().len(),
        original.len() + 2
    );
    // The fork's request carries the shared past.
    assert_eq!(texts(&last_request(&h))[1], "question 0");

    // An id that holds messages is refused and left alone.
    let err = session.fork("user-123-fork").await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("already holds"), "{err}");
    assert_eq!(
        h.storage.load("user-123-fork").await.unwrap().len(),
        original.len() + 2
    );
    assert!(matches!(
        session.fork("../escape").await,
        Err(Error::InvalidSessionId { .. })
    ));
    assert_eq!(session.session_id(), SESSION);
}

#[tokio::test]
async fn a_custom_token_counter_drives_the_budget() {
    /// Every message costs 100 tokens.
    struct Flat;
    impl TokenCounter for Flat {
        fn count_text(&self, _: &str) -> usize {
            0
        }
        fn count_message(&self, _: &ChatMessage) -> usize {
            100
        }
    }
    let h = Harness::new().await;
    let mut session = h.session().await;
    for n in 0..3 {
        h.server.push_text(format!("answer {n}"));
        session
            .send_message(&format!("question {n}"))
            .await
            .unwrap();
    }
    session.set_token_counter(Arc::new(Flat));
    // System prompt, priming and 4 messages.
    session.set_max_context_tokens(3 + 5 * 100);
    h.server.push_text("ok");
    session.send_message("question 3").await.unwrap();
    let sent = last_request(&h);
    assert_eq!(roles(&sent)[0], "system");
    assert_eq!(
        texts(&sent)[1..],
        ["answer 1", "question 2", "answer 2", "question 3"]
    );
}
