//! Approval end to end over HTTP: a person approves, declines or always approves a call;
//! a policy refuses one; what was decided is in the stored history, so a session opened
//! again (a restart) still shows the model what was refused.

mod common;

use std::sync::{Arc, Mutex};

use common::Harness;
use fusion_agent::{
    AgentSession, Approval, ApprovalDecision, ApprovalMode, ApprovalPolicy, ApprovalRequest,
};
use fusion_core::{Error, Role};

/// An approver answering from a script and remembering what it was asked.
fn scripted(answers: Vec<ApprovalDecision>) -> (ApprovalPolicy, Arc<Mutex<Vec<ApprovalRequest>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let policy = ApprovalPolicy::ask_destructive().ask_with(move |request| {
        seen.lock().unwrap().push(request);
        let answer = answers
            .lock()
            .unwrap()
            .next()
            .expect("asked more than scripted");
        async move { answer }
    });
    (policy, asked)
}

fn tool_results(history: &[fusion_core::ChatMessage]) -> Vec<String> {
    history
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.clone())
        .collect()
}

#[tokio::test]
async fn an_approved_call_runs_and_the_approval_is_recorded() {
    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("old.log"), "x").unwrap();
    let (policy, asked) = scripted(vec![ApprovalDecision::Approve]);
    let mut session = h.builder().approval(policy).build().await.unwrap();
    h.server
        .push_tool_call("delete_file", r#"{"path": "old.log"}"#)
        .push_text("Deleted.");
    let result = session.send_message("delete old.log").await.unwrap();

    assert!(!h.workspace.path().join("old.log").exists());
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].display(), r#"delete_file(path="old.log")"#);
    assert!(asked[0].effects.destructive);
    assert_eq!(result.steps[0].approval, Some(Approval::Approved));
    assert!(result.steps[0].success);
    let stored = tool_results(&h.stored().await);
    assert!(
        stored[0].starts_with("[The user approved this call.]\n"),
        "{stored:?}"
    );
}

/// Asked by a review of fdad962: a call whose arguments a server encoded twice (a JSON
/// string holding the object) runs with the object inside, and the person approving it
/// is shown that object, what will run, not the string; streamed and whole.
#[tokio::test]
async fn a_call_encoded_twice_is_asked_about_with_the_object_that_will_run() {
    for stream in [true, false] {
        let h = Harness::new().await;
        std::fs::write(h.workspace.path().join("old.log"), "x").unwrap();
        let (policy, asked) = scripted(vec![ApprovalDecision::Approve]);
        let llm = fusion_agent::OpenAiConfig::new("mock-model")
            .base_url(h.server.base_url())
            .max_retries(0)
            .stream(stream)
            .build()
            .unwrap();
        let mut session = common::builder(Arc::new(llm), h.storage.clone(), h.workspace.path())
            .approval(policy)
            .build()
            .await
            .unwrap();
        let twice = serde_json::to_string(r#"{"path": "old.log"}"#).unwrap();
        h.server
            .push_tool_call("delete_file", twice.clone())
            .push_text("Deleted.");
        let result = session.send_message("delete old.log").await.unwrap();

        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "stream {stream}");
        assert_eq!(asked[0].arguments, serde_json::json!({"path": "old.log"}));
        assert_eq!(asked[0].display(), r#"delete_file(path="old.log")"#);
        assert!(result.steps[0].success, "{}", result.steps[0].observation);
        assert_eq!(
            result.steps[0].arguments, twice,
            "the step keeps what was sent"
        );
        assert!(!h.workspace.path().join("old.log").exists());
    }
}

#[tokio::test]
async fn a_declined_call_does_not_run_and_a_restarted_session_still_knows() {
    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("keep.txt"), "precious").unwrap();
    let (policy, _) = scripted(vec![ApprovalDecision::Deny]);
    let mut session = h.builder().approval(policy).build().await.unwrap();
    h.server
        .push_tool_call("delete_file", r#"{"path": "keep.txt"}"#)
        .push_text("Understood, I left it.");
    let result = session.send_message("delete keep.txt").await.unwrap();

    assert!(result.success, "the loop goes on after a denial");
    assert_eq!(
        std::fs::read_to_string(h.workspace.path().join("keep.txt")).unwrap(),
        "precious"
    );
    let step = &result.steps[0];
    assert_eq!(step.approval, Some(Approval::Declined));
    assert!(!step.success);
    assert!(step.observation.contains("the user declined this call"));
    // The model read the denial.
    let second = h.request_messages(1);
    assert!(second[3]["content"].as_str().unwrap().contains("declined"));
    drop(session);

    // A new session over the same storage (as after a restart) sends the denial again.
    let mut reopened = h.session().await;
    h.server.push_text("You declined that earlier.");
    reopened.send_message("what happened?").await.unwrap();
    let last = h.server.requests().last().unwrap()["messages"].clone();
    let tool = last
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    assert!(
        tool["content"]
            .as_str()
            .unwrap()
            .contains("the user declined this call"),
        "{tool}"
    );
}

#[tokio::test]
async fn always_approves_later_calls_of_that_tool_without_asking() {
    let h = Harness::new().await;
    for name in ["a.txt", "b.txt", "c.txt"] {
        std::fs::write(h.workspace.path().join(name), name).unwrap();
    }
    let (policy, asked) = scripted(vec![ApprovalDecision::AlwaysApprove]);
    let mut session = h.builder().approval(policy).build().await.unwrap();
    h.server
        .push_tool_call("delete_file", r#"{"path": "a.txt"}"#)
        .push_tool_call("delete_file", r#"{"path": "b.txt"}"#)
        .push_tool_call("read_file", r#"{"path": "c.txt"}"#)
        .push_text("Done.");
    let result = session.send_message("clean up").await.unwrap();

    assert_eq!(
        asked.lock().unwrap().len(),
        1,
        "asked once, for the first delete"
    );
    let approvals: Vec<_> = result.steps.iter().map(|s| s.approval).collect();
    assert_eq!(
        approvals,
        [
            Some(Approval::Approved),
            Some(Approval::ApprovedAlways),
            None, // read-only: never asked
        ]
    );
    assert!(!h.workspace.path().join("a.txt").exists());
    assert!(!h.workspace.path().join("b.txt").exists());
    assert_eq!(result.steps[2].observation, "c.txt");
}

/// An app forking one template session per user must not let one user's "always"
/// approve calls in another's (found by an audit: it did, with a false note stored).
#[tokio::test]
async fn an_always_in_one_fork_does_not_approve_calls_in_another_or_the_parent() {
    let h = Harness::new().await;
    for name in ["a.txt", "b.txt", "c.txt"] {
        std::fs::write(h.workspace.path().join(name), name).unwrap();
    }
    let (policy, asked) = scripted(vec![
        ApprovalDecision::AlwaysApprove,
        ApprovalDecision::Deny,
        ApprovalDecision::Deny,
    ]);
    let mut template = h.builder().approval(policy).build().await.unwrap();
    h.server.push_text("ready");
    template.send_message("set up").await.unwrap();
    let mut first = template.fork("user-a").await.unwrap();
    let mut second = template.fork("user-b").await.unwrap();

    for (session, file) in [
        (&mut first, "a.txt"),
        (&mut second, "b.txt"),
        (&mut template, "c.txt"),
    ] {
        h.server
            .push_tool_call("delete_file", format!(r#"{{"path": "{file}"}}"#))
            .push_text("done");
        session.send_message("delete it").await.unwrap();
    }
    assert_eq!(
        asked.lock().unwrap().len(),
        3,
        "each session asked for itself"
    );
    assert!(!h.workspace.path().join("a.txt").exists());
    assert!(h.workspace.path().join("b.txt").exists());
    assert!(h.workspace.path().join("c.txt").exists());

    // The fork that said "always" keeps it.
    std::fs::write(h.workspace.path().join("a.txt"), "again").unwrap();
    h.server
        .push_tool_call("delete_file", r#"{"path": "a.txt"}"#)
        .push_text("done");
    let result = first.send_message("again").await.unwrap();
    assert_eq!(result.steps[0].approval, Some(Approval::ApprovedAlways));
    assert_eq!(asked.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_policy_refuses_without_asking_and_rules_come_first() {
    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("x.txt"), "x").unwrap();
    let policy = ApprovalPolicy::deny_destructive().rule("write_*", ApprovalMode::Auto);
    let mut session = h.builder().approval(policy).build().await.unwrap();
    h.server
        .push_tool_call("delete_file", r#"{"path": "x.txt"}"#)
        .push_tool_call("write_file", r#"{"path": "y.txt", "content": "y"}"#)
        .push_text("ok");
    let result = session.send_message("go").await.unwrap();

    assert_eq!(result.steps[0].approval, Some(Approval::Refused));
    assert!(
        result.steps[0]
            .observation
            .contains("approval policy refuses `delete_file`")
    );
    assert!(h.workspace.path().join("x.txt").exists());
    assert_eq!(result.steps[1].approval, None);
    assert!(h.workspace.path().join("y.txt").exists());
}

#[tokio::test]
async fn a_policy_that_asks_needs_an_approver_and_no_policy_changes_nothing() {
    let h = Harness::new().await;
    let err = h
        .builder()
        .approval(ApprovalPolicy::ask_destructive())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Config(ref m) if m.contains("no approver")),
        "{err}"
    );

    // Without a policy, the library runs every call, as it always has.
    std::fs::write(h.workspace.path().join("gone.txt"), "x").unwrap();
    let mut session: AgentSession = h.session().await;
    h.server
        .push_tool_call("delete_file", r#"{"path": "gone.txt"}"#)
        .push_text("ok");
    let result = session.send_message("delete").await.unwrap();
    assert_eq!(result.steps[0].approval, None);
    assert!(!h.workspace.path().join("gone.txt").exists());
    assert!(
        !h.stored()
            .await
            .iter()
            .any(|m| m.content.contains("approved"))
    );
}

#[tokio::test]
async fn an_approver_that_panics_refuses_that_call_and_the_turn_goes_on() {
    use fusion_agent::testing::{MockReply, MockToolCall};

    let h = Harness::new().await;
    let policy =
        ApprovalPolicy::ask_destructive().ask_with(|request: ApprovalRequest| async move {
            if request.arguments["path"] == "b.txt" {
                panic!("the approval window closed");
            }
            ApprovalDecision::Approve
        });
    let mut session = h.builder().approval(policy).build().await.unwrap();
    let write = |path: &str| {
        MockToolCall::new(
            "write_file",
            format!(r#"{{"path": "{path}", "content": "x"}}"#),
        )
    };
    h.server.push(MockReply::ToolCalls {
        content: String::new(),
        calls: vec![write("a.txt"), write("b.txt"), write("c.txt")],
    });
    h.server.push_text("Two of three written.");
    let result = session.send_message("write three files").await.unwrap();

    assert!(result.success);
    let approvals: Vec<_> = result.steps.iter().map(|s| s.approval).collect();
    assert_eq!(
        approvals,
        [
            Some(Approval::Approved),
            Some(Approval::Failed),
            Some(Approval::Approved)
        ]
    );
    assert!(h.workspace.path().join("a.txt").exists());
    assert!(!h.workspace.path().join("b.txt").exists());
    assert!(h.workspace.path().join("c.txt").exists());
    let stored = tool_results(&h.stored().await);
    assert_eq!(stored.len(), 3, "every call answered: {stored:?}");
    assert!(stored[1].contains("could not be approved"), "{stored:?}");
    assert!(stored[0].contains("Wrote 1 byte"), "{stored:?}");
}

/// An approver written without `async_trait` that panics before it makes its future.
struct PanicsAtOnce;

impl fusion_agent::Approver for PanicsAtOnce {
    fn decide<'a, 'b, 'c>(
        &'a self,
        _request: &'b ApprovalRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ApprovalDecision> + Send + 'c>>
    where
        'a: 'c,
        'b: 'c,
    {
        panic!("no terminal to ask on")
    }
}

#[tokio::test]
async fn an_approver_that_panics_before_its_future_exists_refuses_the_call_too() {
    let h = Harness::new().await;
    let policy = ApprovalPolicy::ask_destructive().approver(PanicsAtOnce);
    let mut session = h.builder().approval(policy).build().await.unwrap();
    h.server
        .push_tool_call("write_file", r#"{"path": "a.txt", "content": "x"}"#)
        .push_text("Not written.");
    let result = session.send_message("write a file").await.unwrap();
    assert_eq!(result.steps[0].approval, Some(Approval::Failed));
    assert!(!h.workspace.path().join("a.txt").exists());
}
