//! The text ReAct mode end to end, for models without native tool calling: tools are
//! described in the system prompt, replies are parsed, observations go back as user
//! messages, and an unreadable reply gets a corrective observation.

mod common;

use std::sync::Arc;

use common::cancelled::{Stuck, assert_answered_as_interrupted, cancel_once_its_tool_runs};
use common::{Harness, roles, text_client};
use fusion_agent::ToolRegistry;
use fusion_core::Role;
use tokio::sync::Notify;

/// The harness's session, talking to its server through a client without native tools.
async fn text_session(h: &Harness) -> fusion_agent::AgentSession {
    common::builder(
        Arc::new(text_client(&h.server)),
        h.storage.clone(),
        h.workspace.path(),
    )
    .build()
    .await
    .unwrap()
}

/// A text-mode session of the harness whose only tool is a [`Stuck`] `final_answer`
/// (smolagents' way of ending a turn), saying it started on `started`.
async fn with_stuck_final_answer(h: &Harness, started: Arc<Notify>) -> fusion_agent::AgentSession {
    fusion_agent::AgentSession::builder(common::SESSION)
        .llm(Arc::new(text_client(&h.server)))
        .storage(h.storage.clone())
        .tools(ToolRegistry::new().with(Stuck {
            name: "final_answer",
            started,
        }))
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_text_mode_turn_calls_a_tool_recovers_from_a_bad_reply_and_answers() {
    let h = Harness::new().await;
    let mut session = text_session(&h).await;
    assert!(session.uses_text_react());
    h.server
        .push_text(
            "Thought: I should create the file.\nAction: write_file\n\
             Action Input: {\"path\": \"todo.txt\", \"content\": \"ship it\"}",
        )
        .push_text("Hmm, let me think about this some more.")
        .push_text("Thought: The file is written.\nFinal Answer: Created todo.txt.");
    let result = session
        .send_message("Create todo.txt saying ship it")
        .await
        .unwrap();

    assert!(result.success);
    assert_eq!(result.result, "Created todo.txt.");
    assert_eq!(result.iterations, 3);
    assert_eq!(result.steps.len(), 1);
    assert_eq!(result.steps[0].tool, "write_file");
    assert!(result.steps[0].success);
    assert_eq!(
        std::fs::read_to_string(h.workspace.path().join("todo.txt")).unwrap(),
        "ship it"
    );

    let requests = h.server.requests();
    // No native tools field; the tools are in the system prompt instead.
    assert!(requests[0].get("tools").is_none());
    let system = requests[0]["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are a test agent."), "{system}");
    assert!(
        system.contains("write_file") && system.contains("Action Input:"),
        "{system}"
    );

    let second = h.request_messages(1);
    assert_eq!(roles(&second), ["system", "user", "assistant", "user"]);
    let observation = second[3]["content"].as_str().unwrap();
    assert!(
        observation.starts_with("Observation: Wrote 7 bytes"),
        "{observation}"
    );

    let third = h.request_messages(2);
    assert_eq!(
        roles(&third),
        ["system", "user", "assistant", "user", "assistant", "user"]
    );
    let correction = third[5]["content"].as_str().unwrap();
    assert!(
        correction.starts_with("Observation: Error: your reply could not be read"),
        "{correction}"
    );

    // Stored as plain text: assistant replies verbatim, observations as user messages,
    // and the system prompt without the (regenerated) tool instructions.
    let stored = h.stored().await;
    assert_eq!(stored.len(), 7);
    assert!(
        stored
            .iter()
            .all(|m| m.role != Role::Tool && m.tool_calls.is_empty())
    );
    assert_eq!(stored[0].content, "You are a test agent.");
    assert!(
        stored[2]
            .content
            .starts_with("Thought: I should create the file.")
    );
}

#[tokio::test]
async fn text_mode_reports_tool_errors_as_observations() {
    let h = Harness::new().await;
    let mut session = text_session(&h).await;
    h.server
        .push_text("Action: read_file\nAction Input: {\"path\": \"/etc/passwd\"}")
        .push_text("Action: fly\nAction Input: {}")
        .push_text("Final Answer: I cannot.");
    let result = session.send_message("Read /etc/passwd").await.unwrap();
    assert!(result.success);
    assert_eq!(result.steps.len(), 2);
    assert!(
        result.steps[0]
            .observation
            .contains("outside the workspace")
    );
    assert!(result.steps[1].observation.contains("no tool named `fly`"));
    let last = h.request_messages(2);
    assert!(
        last[5]["content"]
            .as_str()
            .unwrap()
            .contains("Available tools: read_file")
    );
}

/// Found by a review: a bare `Action Input: notes.txt` (no JSON) was refused as not JSON
/// even for a tool whose one required property takes that text. It is given to that
/// property now (so is a JSON string); a tool with two required properties still gets an
/// observation showing its schema.
#[tokio::test]
async fn a_bare_text_input_goes_to_the_tools_one_string_property() {
    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("notes.txt"), "buy milk").unwrap();
    let mut session = text_session(&h).await;
    h.server
        .push_text("Action: read_file\nAction Input: notes.txt")
        .push_text("Action: read_file\nAction Input: \"notes.txt\"")
        .push_text("Action: write_file\nAction Input: notes.txt")
        .push_text("Action: read_file\nAction Input: {\"path\": notes.txt}")
        .push_text("Final Answer: buy milk");
    let result = session.send_message("What is in notes.txt?").await.unwrap();
    assert_eq!(result.steps.len(), 4);
    for read in &result.steps[..2] {
        assert!(read.success, "{}", read.observation);
        assert!(
            read.observation.contains("buy milk"),
            "{}",
            read.observation
        );
        assert_eq!(read.arguments, r#"{"path":"notes.txt"}"#);
    }
    for refused in &result.steps[2..] {
        assert!(!refused.success);
        assert!(
            refused.observation.contains("are not valid JSON")
                && refused.observation.contains("\"required\""),
            "{}",
            refused.observation
        );
    }
    assert_eq!(
        std::fs::read_to_string(h.workspace.path().join("notes.txt")).unwrap(),
        "buy milk"
    );
}

/// A text-mode reply stopped by the output token limit may end inside its action's input
/// (or before it began, read as `{}`): the action is not run, whatever the input reads
/// as, and the model is told why.
#[tokio::test]
async fn a_text_mode_action_cut_by_the_token_limit_is_answered_not_run() {
    let h = Harness::new().await;
    let mut session = text_session(&h).await;
    h.server
        .push(fusion_agent::testing::MockReply::finished(
            "Thought: I should create the file.\nAction: write_file\n\
             Action Input: {\"path\": \"todo.txt\", \"content\": \"ship it\"}",
            "length",
        ))
        .push_text("Thought: It was cut.\nFinal Answer: I will try again.");
    let result = session.send_message("Write todo.txt").await.unwrap();

    assert!(result.success);
    assert_eq!(result.steps.len(), 1);
    let step = &result.steps[0];
    assert!(!step.success);
    assert!(
        step.observation.contains("not run") && step.observation.contains("output token limit"),
        "{}",
        step.observation
    );
    assert!(!h.workspace.path().join("todo.txt").exists());
}

/// Small models often wrap their whole reply in a code fence. The answer the user is shown
/// (streamed, and in the result) ends where the answer does, without the fence that closes
/// the wrapper, which would open a code block in any markdown view.
#[tokio::test]
async fn a_final_answer_in_a_reply_fenced_as_a_whole_ends_without_the_fence() {
    use fusion_agent::AgentEvent;
    use futures::StreamExt;

    let h = Harness::new().await;
    let mut session = text_session(&h).await;
    h.server
        .push_text("```\nThought: I know it.\nFinal Answer: The file has 3 lines.\n```");
    let mut shown = String::new();
    let mut result = None;
    let mut events = session.send_message_stream("How long is a.txt?");
    while let Some(event) = events.next().await {
        match event.unwrap() {
            AgentEvent::TextDelta { text, .. } => shown.push_str(&text),
            AgentEvent::Finished(finished) => result = Some(finished),
            _ => {}
        }
    }
    let result = result.unwrap();
    assert!(result.success);
    assert_eq!(result.result, "The file has 3 lines.");
    assert_eq!(shown, "The file has 3 lines.");
}

/// Models writing Chinese or Japanese often end the labels with the full-width colon
/// (U+FF1A). Such a reply is read like any other, not answered as unreadable until the
/// iteration limit.
#[tokio::test]
async fn labels_ending_in_a_full_width_colon_are_read() {
    let h = Harness::new().await;
    let mut session = text_session(&h).await;
    h.server
        .push_text(
            "Thought\u{ff1a}\u{5148}\u{5217}\u{51fa}\u{6587}\u{4ef6}\u{3002}\n\
             Action\u{ff1a} list_directory\nAction Input\u{ff1a} {}",
        )
        .push_text("Thought\u{ff1a}\u{597d}\u{4e86}\u{3002}\nFinal Answer\u{ff1a}\u{6ca1}\u{6709}\u{6587}\u{4ef6}\u{3002}");
    let result = session
        .send_message("\u{6709}\u{4ec0}\u{4e48}\u{6587}\u{4ef6}\u{ff1f}")
        .await
        .unwrap();
    assert!(result.success);
    assert_eq!(result.result, "\u{6ca1}\u{6709}\u{6587}\u{4ef6}\u{3002}");
    assert_eq!(result.iterations, 2);
    assert_eq!(result.steps.len(), 1);
    assert_eq!(result.steps[0].tool, "list_directory");
    assert!(result.steps[0].success, "{}", result.steps[0].observation);
}

/// Stores `old_turn` (a question, a reply, the loop's observation, the final answer) after
/// a turn of today's, as an earlier release stored it, and checks that undoing the last
/// turn removes it whole, the user's question included: the observation is the loop's,
/// not a message of the user's starting a turn.
async fn undo_removes_the_whole_stored_turn(reply: &str, observation: &str) {
    use fusion_core::{ChatMessage, ConversationStorage};

    let h = Harness::new().await;
    let mut session = text_session(&h).await;
    h.server.push_text("Final Answer: Hello.");
    session.send_message("Hi").await.unwrap();
    let before = h.storage.load(common::SESSION).await.unwrap().len();
    let old_turn = [
        ChatMessage::user("Which files?"),
        ChatMessage::assistant(reply),
        ChatMessage::user(observation),
        ChatMessage::assistant("Final Answer: a.txt"),
    ];
    h.storage.append(common::SESSION, &old_turn).await.unwrap();
    let mut session = text_session(&h).await;
    assert_eq!(session.undo_last_turn().await.unwrap(), 4);
    assert_eq!(h.storage.load(common::SESSION).await.unwrap().len(), before);
}

/// A history stored before labels ending in the full-width colon were read holds such a
/// reply and the loop's answer that it could not be read. Read now, the reply is a final
/// answer, and that answer is still the loop's.
#[tokio::test]
async fn the_loops_answer_to_a_reply_stored_as_unreadable_stays_in_its_turn() {
    undo_removes_the_whole_stored_turn(
        "Final Answer\u{ff1a} a.txt",
        "Observation: Error: your reply could not be read: the reply has no `Action:` line \
         and no `Final Answer:` line.",
    )
    .await;
}

/// Earlier releases read `Action: Final Answer` as a call of a tool so named and answered
/// that there is no such tool. Read now, the reply is a final answer, and that answer is
/// still the loop's.
#[tokio::test]
async fn the_old_answer_to_an_action_named_final_answer_stays_in_its_turn() {
    undo_removes_the_whole_stored_turn(
        "Action: Final Answer\nAction Input: \"a.txt\"",
        "Observation: Error: there is no tool named `Final Answer`. Available tools: \
         read_file, write_file.",
    )
    .await;
}

/// LangChain's agents end with `Action: Final Answer` and the answer as its `Action Input`
/// (often a JSON string). That ends the turn with the answer, not a call of a tool named
/// "Final Answer".
#[tokio::test]
async fn an_action_named_final_answer_ends_the_turn_with_its_input() {
    let h = Harness::new().await;
    let mut session = text_session(&h).await;
    h.server
        .push_text("Thought: I know.\nAction: Final Answer\nAction Input: \"It is 42.\"");
    let result = session.send_message("What is it?").await.unwrap();
    assert!(result.success);
    assert_eq!(result.result, "It is 42.");
    assert_eq!(result.iterations, 1);
    assert!(result.steps.is_empty(), "{:?}", result.steps);
}

/// A user may type what the loop writes for a reply it could not read. Sent after an
/// answer, that message starts a turn of its own: undoing the last turn removes it and
/// its answer, not the turn before too.
#[tokio::test]
async fn a_user_message_written_like_the_loops_observation_starts_its_own_turn() {
    let h = Harness::new().await;
    let mut session = text_session(&h).await;
    h.server
        .push_text("Final Answer: Hello.")
        .push_text("Final Answer: That looks like an error message.");
    session.send_message("Hi").await.unwrap();
    let typed = "Observation: Error: your reply could not be read: the reply is empty.";
    session.send_message(typed).await.unwrap();
    assert_eq!(session.undo_last_turn().await.unwrap(), 2);
    let history = session.history();
    assert_eq!(history.last().unwrap().content, "Final Answer: Hello.");
}

/// smolagents' agents register `final_answer` as a tool. In a session that has a tool of
/// that name, `Action: final_answer` calls it; only without one does it end the turn.
#[tokio::test]
async fn an_action_naming_a_registered_final_answer_tool_calls_it() {
    use async_trait::async_trait;
    use fusion_agent::Tool;
    use serde_json::{Value, json};

    /// A tool named like the final answer, returning what it was given.
    struct FinalAnswerTool;

    #[async_trait]
    impl Tool for FinalAnswerTool {
        fn name(&self) -> &str {
            "final_answer"
        }
        fn description(&self) -> &str {
            "records the answer"
        }
        fn parameters(&self) -> Value {
            json!({"type": "object", "properties": {"answer": {"type": "string"}}})
        }
        async fn call(&self, args: Value) -> fusion_core::Result<String> {
            Ok(format!(
                "recorded {}",
                args["answer"].as_str().unwrap_or("")
            ))
        }
    }

    let h = Harness::new().await;
    let mut session = fusion_agent::AgentSession::builder(common::SESSION)
        .llm(Arc::new(text_client(&h.server)))
        .storage(h.storage.clone())
        .tools(ToolRegistry::new().with(FinalAnswerTool))
        .build()
        .await
        .unwrap();
    h.server
        .push_text("Action: final_answer\nAction Input: {\"answer\": \"42\"}")
        .push_text("Final Answer: Recorded.");
    let result = session.send_message("Record it").await.unwrap();
    assert_eq!(result.result, "Recorded.");
    assert_eq!(result.steps.len(), 1, "{:?}", result.steps);
    assert_eq!(result.steps[0].tool, "final_answer");
    let observation = h.request_messages(1)[3]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(observation, "Observation: recorded 42");
}

/// A session's `final_answer` tool (smolagents' way) runs like any tool, so a turn
/// cancelled while it runs leaves its `Action:` reply last, and the next turn answers it
/// as interrupted, as it answers any other action: the model is never shown its call
/// without a result (before, the reply read as a final answer there, and went unanswered).
#[tokio::test]
async fn a_final_answer_tool_cancelled_while_it_runs_is_answered_as_interrupted() {
    let h = Harness::new().await;
    let started = Arc::new(Notify::new());
    let mut session = with_stuck_final_answer(&h, started.clone()).await;
    h.server
        .push_text("Action: final_answer\nAction Input: {\"answer\": \"42\"}");
    cancel_once_its_tool_runs(&mut session, "Record it", &started).await;
    assert_eq!(h.stored().await.len(), 3, "system, user, the action");

    h.server.push_text("Final Answer: It was interrupted.");
    session.send_message("Did it work?").await.unwrap();
    // Stored too, in the action's turn: undo takes the new turn only.
    assert_answered_as_interrupted(&h, &mut session, "final_answer", "Did it work?").await;
}

/// Checks that storage holds two turns of one answer each, and no "interrupted"
/// observation: the first turn's reply (stored by a session in `native` mode, or not) was
/// left unrepaired by the second.
async fn assert_two_turns_unrepaired(h: &Harness, native: bool) {
    let stored = h.stored().await;
    assert!(
        !stored.iter().any(fusion_agent::context::is_interrupted),
        "native: {native}: {:?}",
        common::contents(&stored)
    );
    assert_eq!(stored.len(), 5, "system, user, answer, user, answer");
}

/// Found by a review: the next turn's repair read the last reply again with the tools and
/// mode of the session reading it, not those of the one that stored it. A final answer
/// read so (`Action: final_answer` in a session without such a tool; a native-mode answer
/// holding an `Action:` line) got an "interrupted" observation from a session reopened
/// with a `final_answer` tool, or in text mode; it goes by the loop's mark now.
#[tokio::test]
async fn a_final_answer_is_not_repaired_by_a_session_reading_it_otherwise() {
    for native in [false, true] {
        let h = Harness::new().await;
        let mut first = if native {
            h.session().await
        } else {
            text_session(&h).await
        };
        h.server
            .push_text("Action: final_answer\nAction Input: \"42\"")
            .push_text("Final Answer: Still 42.");
        assert!(first.send_message("What is it?").await.unwrap().success);
        drop(first);
        let mut second = with_stuck_final_answer(&h, Arc::new(Notify::new())).await;
        second.send_message("Sure?").await.unwrap();
        assert_two_turns_unrepaired(&h, native).await;
    }
}

/// The other way round: a call of the session's `final_answer` tool cut off while it ran
/// is answered as interrupted by a session reopened without that tool, and by one in
/// native mode, where it read as a final answer, or not at all, and went unanswered.
#[tokio::test]
async fn a_cut_off_action_is_repaired_by_a_session_reading_it_otherwise() {
    for native in [false, true] {
        let h = Harness::new().await;
        let started = Arc::new(Notify::new());
        let mut first = with_stuck_final_answer(&h, started.clone()).await;
        h.server
            .push_text("Action: final_answer\nAction Input: {\"answer\": \"42\"}");
        cancel_once_its_tool_runs(&mut first, "Record it", &started).await;
        drop(first);
        let mut second = if native {
            h.session().await
        } else {
            text_session(&h).await
        };
        h.server.push_text("Final Answer: It was interrupted.");
        second.send_message("Did it work?").await.unwrap();
        if native {
            let stored = h.stored().await;
            assert_eq!(stored.len(), 6, "{:?}", common::contents(&stored));
            assert!(fusion_agent::context::is_interrupted(&stored[3]));
        } else {
            assert_answered_as_interrupted(&h, &mut second, "final_answer", "Did it work?").await;
        }
    }
}

/// Why an `Action:` reply stored before the mark existed gets no observation (a decision,
/// kept by this test): an unmarked reply left last that reads as a complete action today
/// may be a final answer, and the stored data cannot tell. Both replies here read as a
/// call of `read_file`; neither was one. A native-mode answer quoting the format is stored
/// unmarked, as every answer is, and holds nothing saying which mode made it; a 0.1.0
/// text-mode final answer whose first labels end in full-width colons was read by that
/// release's parser (which knew only `:`) as its `Final Answer:`, and by today's as the
/// earlier action. An "interrupted" observation for either would be stored for good and
/// tell the model that a call it never made may have taken effect; leaving a real legacy
/// action without one costs the model one unanswered action in its context, as 0.1.0
/// itself left it.
#[tokio::test]
async fn an_unmarked_reply_left_last_gets_no_observation_however_it_reads_now() {
    use fusion_core::{ChatMessage, ConversationStorage};

    let native_answer =
        "To read it yourself, reply:\nAction: read_file\nAction Input: {\"path\": \"notes.txt\"}";
    let old_final_answer = "Thought：I know this.\nAction：read_file\nAction Input：{\"path\": \"notes.txt\"}\nFinal Answer: The notes say hello.";
    for (native, answer) in [(true, native_answer), (false, old_final_answer)] {
        let h = Harness::new().await;
        if native {
            let mut first = h.session().await;
            h.server.push_text(answer);
            assert!(
                first
                    .send_message("How do I read it?")
                    .await
                    .unwrap()
                    .success
            );
        } else {
            let legacy = [
                ChatMessage::system("You are a test agent."),
                ChatMessage::user("What do the notes say?"),
                ChatMessage::assistant(answer),
            ];
            h.storage.append(common::SESSION, &legacy).await.unwrap();
        }
        let stored = h.stored().await;
        assert!(stored[2].metadata.is_empty(), "unmarked: {:?}", stored[2]);
        assert!(
            matches!(fusion_agent::parse_react(answer), fusion_agent::ReactStep::Action { tool, .. } if tool == "read_file")
        );
        let mut second = text_session(&h).await;
        h.server.push_text("Final Answer: Fine.");
        second.send_message("Thanks.").await.unwrap();
        assert_two_turns_unrepaired(&h, native).await;
    }
}
