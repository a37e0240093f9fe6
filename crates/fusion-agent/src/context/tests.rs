//! Unit tests of the context policies: views, summaries in views, and pruning.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use fusion_core::{ChatMessage, Role, ToolCall};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::policy::ContextPolicy;
use super::tokens::TokenCounter;
use super::*;
use crate::react_text::render_observation;

/// [`super::window::apply_policy`] without a session noting its warning.
fn apply_policy<'a>(
    history: &'a [ChatMessage],
    policy: &ContextPolicy,
    counter: &dyn TokenCounter,
    other_tokens: usize,
) -> Vec<Cow<'a, ChatMessage>> {
    super::window::apply_policy(history, policy, counter, other_tokens, None)
}

fn call(id: &str) -> ToolCall {
    ToolCall::new(id, "read_file", format!(r#"{{"path":"{id}.txt"}}"#))
}

/// System prompt, then `turns` turns of: user, call, two results, answer.
fn conversation(turns: usize) -> Vec<ChatMessage> {
    let mut history = vec![ChatMessage::system("sys")];
    for t in 0..turns {
        history.push(ChatMessage::user(format!("question {t}")));
        history.push(ChatMessage::assistant_with_tool_calls(
            format!("Let me look at the files for question {t}."),
            vec![call(&format!("a{t}")), call(&format!("b{t}"))],
        ));
        history.push(ChatMessage::tool_result(format!("a{t}"), "A".repeat(300)));
        history.push(ChatMessage::tool_result(format!("b{t}"), "B".repeat(300)));
        history.push(ChatMessage::assistant(format!("answer {t}")));
    }
    history
}

fn contents<'a>(view: &'a [Cow<'_, ChatMessage>]) -> Vec<&'a str> {
    view.iter().map(|m| m.content.as_str()).collect()
}

fn policy(max_messages: Option<usize>, max_tokens: Option<usize>) -> ContextPolicy {
    ContextPolicy {
        max_messages,
        max_tokens,
        ..ContextPolicy::default()
    }
}

/// Panics unless every call in `view` is followed by all its results, no result lacks a
/// call before it, and the view does not start with a result.
fn assert_pairs_intact(view: &[Cow<'_, ChatMessage>]) {
    for (i, message) in view.iter().enumerate() {
        let results: Vec<&str> = view[i + 1..]
            .iter()
            .take_while(|m| m.role == Role::Tool)
            .filter_map(|m| m.tool_call_id.as_deref())
            .collect();
        for call in &message.tool_calls {
            assert!(results.contains(&call.id.as_str()), "{i}: {view:#?}");
        }
        if message.role == Role::Tool {
            let owner = view[..i].iter().rev().find(|m| m.role != Role::Tool);
            assert!(owner.is_some_and(|m| m.has_tool_calls()), "{i}: {view:#?}");
        }
    }
}

/// Counts `count_message` calls, to pin what a view costs.
#[derive(Default)]
struct Counting(AtomicUsize);

impl TokenCounter for Counting {
    fn count_text(&self, text: &str) -> usize {
        EstimateCounter.count_text(text)
    }
    fn count_message(&self, message: &ChatMessage) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed);
        EstimateCounter.count_message(message)
    }
}

#[test]
fn the_default_policy_sends_everything_borrowed() {
    let history = conversation(3);
    let view = apply_policy(&history, &ContextPolicy::default(), &EstimateCounter, 0);
    assert_eq!(view.len(), history.len());
    assert!(view.iter().all(|m| matches!(m, Cow::Borrowed(_))));
}

#[test]
fn the_window_keeps_the_system_prompt_and_the_last_messages() {
    let history = conversation(3);
    let view = apply_policy(&history, &policy(Some(5), None), &EstimateCounter, 0);
    assert_eq!(view[0].content, "sys");
    assert_eq!(view[1..], borrowed(&history[11..])[..]);
}

#[test]
fn the_window_drops_a_call_and_its_results_together() {
    let history = conversation(2);
    // The last 3 messages would be `b1`'s result and the answer; the call needs its results.
    for n in [2, 3, 4] {
        let view = apply_policy(&history, &policy(Some(n), None), &EstimateCounter, 0);
        assert_pairs_intact(&view);
        assert_eq!(view[0].content, "sys");
        // The latest user message is kept even when the window cannot hold its turn.
        assert_eq!(view[1].content, "question 1", "n = {n}");
        assert_eq!(view.last().unwrap().content, "answer 1");
        assert!(view.len() <= n + 2);
    }
    let view = apply_policy(&history, &policy(Some(5), None), &EstimateCounter, 0);
    assert_eq!(view.len(), 6);
}

#[test]
fn the_newest_group_is_kept_even_when_it_alone_exceeds_the_limits() {
    let mut history = conversation(1);
    history.truncate(5); // Mid-turn: the results just came in.
    for p in [
        policy(Some(0), None),
        policy(Some(1), None),
        policy(None, Some(1)),
    ] {
        let view = apply_policy(&history, &p, &EstimateCounter, 0);
        assert_eq!(contents(&view)[..2], ["sys", "question 0"]);
        assert_eq!(view.len(), 5, "{p:?}");
    }
}

fn borrowed(messages: &[ChatMessage]) -> Vec<Cow<'_, ChatMessage>> {
    messages.iter().map(Cow::Borrowed).collect()
}

/// Found by a review: the text ReAct prompt joins the system message after the budget
/// was applied, uncounted, so the request exceeded the budget by the prompt's size.
#[test]
fn the_token_budget_counts_the_text_react_prompt() {
    let history = conversation(6);
    let prompt = "Use the tools this way. ".repeat(100);
    let full = visible_tokens(&history, &EstimateCounter);
    let budget = full / 2 + EstimateCounter.count_text(&prompt);
    let view = request_view(
        &history,
        &policy(None, Some(budget)),
        &EstimateCounter,
        Some(&prompt),
    );
    assert!(view[0].content.ends_with(&prompt));
    let used = count_request(&EstimateCounter, view.iter().map(|m| m.as_ref()));
    assert!(used <= budget, "{used} > {budget}");
    assert!(view.len() > 3, "{}", view.len());
}

/// Found by a review of 277d6a8: tools that alone exceed the budget (a budget set below
/// the window by the tools' size, as once documented, counts them twice) left every request
/// the latest turn alone, silently. The latest question is still sent, and a warning says
/// why the rest is not. Found by the next review: a session said so at every request (a
/// turn sends one per step); it says it once, and again only after a request that fitted.
#[test]
fn tools_that_alone_exceed_the_budget_keep_the_latest_turn_and_say_so() {
    use fusion_core::testkit::logs::Logs;
    use std::sync::atomic::AtomicBool;

    let history = conversation(3);
    let tools = [crate::llm::ToolDefinition {
        name: "search".to_owned(),
        description: "Searches everything. ".repeat(200),
        parameters: serde_json::json!({"type": "object"}),
    }];
    let budget = count_tools(&EstimateCounter, &tools) - 1;
    let view = |budget: usize, warned: Option<&AtomicBool>| {
        let p = policy(None, Some(budget));
        request_view_with_tools(&history, &p, &EstimateCounter, None, &tools, warned)
    };
    // How many warnings the views at `budgets` log, noted in `warned` if some.
    let warnings = |budgets: &[usize], warned: Option<&AtomicBool>| {
        let logs = Logs::new();
        tracing::subscriber::with_default(logs.subscriber(tracing::Level::WARN), || {
            for &budget in budgets {
                view(budget, warned);
            }
        });
        let logged = logs.text();
        assert!(logged.is_empty() || logged.contains(&format!("budget={budget}")));
        logged.matches("only the latest turn is sent").count()
    };
    let short = view(budget, None);
    assert_eq!(contents(&short)[..2], ["sys", "question 2"]);
    assert_eq!(short.last().unwrap().content, "answer 2");
    assert_eq!(warnings(&[budget, budget, budget], None), 3);
    let session = AtomicBool::new(false);
    assert_eq!(warnings(&[budget, budget, budget], Some(&session)), 1);
    // A budget that holds the tools says nothing, and a later short one is said again.
    assert_eq!(warnings(&[budget * 2], Some(&session)), 0);
    assert_eq!(warnings(&[budget, budget], Some(&session)), 1);
}

#[test]
fn the_token_budget_drops_the_oldest_groups_first_and_is_respected() {
    let history = conversation(6);
    let counter = TiktokenCounter::new(Encoding::O200kBase);
    let full = visible_tokens(&history, &counter);
    // The system prompt and the whole last turn.
    let last_turn = count_request(&counter, history[..1].iter().chain(&history[26..]));
    for budget in [last_turn, last_turn + 100, full / 2, full - 1, full] {
        let view = apply_policy(&history, &policy(None, Some(budget)), &counter, 0);
        let used = count_request(&counter, view.iter().map(|m| m.as_ref()));
        assert!(used <= budget, "{used} > {budget}");
        assert_eq!(view[0].content, "sys");
        // A suffix of the history: the oldest left first.
        let first_kept = history.len() - (view.len() - 1);
        assert_eq!(view[1..], borrowed(&history[first_kept..])[..]);
    }
    assert_eq!(
        apply_policy(&history, &policy(None, Some(full)), &counter, 0).len(),
        history.len()
    );
    assert!(
        apply_policy(&history, &policy(None, Some(full - 1)), &counter, 0).len() < history.len()
    );
    // Below what the last turn needs, its tool group goes and its question and answer stay.
    let view = apply_policy(&history, &policy(None, Some(last_turn - 1)), &counter, 0);
    assert_eq!(contents(&view), ["sys", "question 5", "answer 5"]);
}

#[test]
fn window_and_budget_together_keep_the_smaller_view() {
    let history = conversation(6);
    let by_window = apply_policy(&history, &policy(Some(10), None), &EstimateCounter, 0).len();
    let by_budget = apply_policy(&history, &policy(None, Some(300)), &EstimateCounter, 0).len();
    let both = apply_policy(&history, &policy(Some(10), Some(300)), &EstimateCounter, 0).len();
    assert_eq!(both, by_window.min(by_budget));
}

#[test]
fn a_budget_counts_only_what_it_keeps_however_long_the_history() {
    let history = conversation(2_000);
    let counter = Counting::default();
    let view = apply_policy(&history, &policy(None, Some(2_000)), &counter, 0);
    let counted = counter.0.load(Ordering::Relaxed);
    // Kept messages, the system prompt, and the one group that did not fit.
    assert!(
        counted <= view.len() + 5,
        "{counted} counts for {} kept",
        view.len()
    );
    assert!(view.len() < 60);
    // A window alone counts nothing.
    let counter = Counting::default();
    apply_policy(&history, &policy(Some(50), None), &counter, 0);
    assert_eq!(counter.0.load(Ordering::Relaxed), 0);
}

#[test]
fn a_summary_replaces_the_messages_it_covers() {
    let mut history = conversation(3);
    history.push(summary_record("Questions 0 and 1 were answered.", 11));
    history.push(ChatMessage::user("question 3"));
    let view = apply_policy(&history, &ContextPolicy::default(), &EstimateCounter, 0);
    assert_eq!(view[0].role, Role::System);
    assert_eq!(
        view[0].content,
        format!("sys\n\n{SUMMARY_HEADER}\nQuestions 0 and 1 were answered.")
    );
    assert!(view[0].metadata.is_empty());
    assert_eq!(view[1].content, "question 2");
    assert_eq!(view.len(), 1 + 5 + 1);
    assert!(!view.iter().any(|m| is_context_record(m)));
    assert!(!contents(&view).contains(&"question 0"));
}

#[test]
fn the_latest_summary_wins_and_works_without_a_system_prompt() {
    let mut history = conversation(3);
    history.remove(0);
    history.push(summary_record("old", 5));
    history.push(summary_record("new", 10));
    let view = apply_policy(&history, &ContextPolicy::default(), &EstimateCounter, 0);
    assert_eq!(view[0].content, format!("{SUMMARY_HEADER}\nnew"));
    assert_eq!(view[1].content, "question 2");
    assert_eq!(view.len(), 6);
}

#[test]
fn results_whose_call_a_summary_covers_are_not_sent() {
    let mut history = conversation(2);
    // A hand-written record that covers a call but not its results.
    history.push(summary_record("s", 3));
    let view = apply_policy(&history, &ContextPolicy::default(), &EstimateCounter, 0);
    assert_pairs_intact(&view);
    assert_eq!(view[1].content, "answer 0");
}

#[test]
fn limits_apply_after_the_summary() {
    let mut history = conversation(4);
    history.push(summary_record("s", 16));
    let view = apply_policy(&history, &policy(Some(3), None), &EstimateCounter, 0);
    assert!(view[0].content.ends_with("\ns"));
    assert_eq!(contents(&view)[1..], ["question 3", "answer 3"][..]);
}

#[test]
fn prune_shortens_old_tool_output_first_and_never_the_recent_turns() {
    let history = conversation(4);
    let plan = plan_prune(&history, &ContextPolicy::default(), &EstimateCounter);
    // Turns 0 and 1 are old; 2 and 3 are kept by default.
    assert_eq!(plan.report.tool_outputs, 4);
    assert_eq!(plan.report.chatter, 2);
    assert!(plan.report.tokens_after < plan.report.tokens_before);
    let chatter_bytes = history[2].content.len() + history[7].content.len();
    let marker_bytes = pruned_tool_output(300).len();
    assert_eq!(
        plan.report.bytes_removed,
        4 * (300 - marker_bytes) + chatter_bytes
    );
    let mut history = history;
    history.push(plan.record.unwrap());
    let view = apply_policy(&history, &ContextPolicy::default(), &EstimateCounter, 0);
    assert_eq!(view[3].content, pruned_tool_output(300));
    assert_eq!(view[3].tool_call_id.as_deref(), Some("a0"));
    assert_eq!(view[2].content, "");
    assert_eq!(view[2].tool_calls.len(), 2);
    assert_eq!(view[13].content, "A".repeat(300)); // turn 2 untouched
    assert_eq!(view.len(), 21);
    // Pruned messages are not pruned again.
    let again = plan_prune(&history, &ContextPolicy::default(), &EstimateCounter);
    assert!(again.report.is_empty() && again.record.is_none());
}

#[test]
fn prune_stops_once_the_target_is_met() {
    let history = conversation(6);
    let full = visible_tokens(&history, &EstimateCounter);
    let mut p = ContextPolicy::default();
    p.prune.keep_recent_turns = 1;
    p.prune.target_tokens = Some(full - 50);
    let plan = plan_prune(&history, &p, &EstimateCounter);
    // One 300-byte output saves ~65 tokens.
    assert_eq!((plan.report.tool_outputs, plan.report.chatter), (1, 0));
    assert!(plan.report.tokens_after <= full - 50);
    // A target only chatter can meet: every old output goes first.
    p.prune.target_tokens = Some(
        plan_prune(
            &history,
            &{
                let mut all = p.clone();
                all.prune.target_tokens = None;
                all
            },
            &EstimateCounter,
        )
        .report
        .tokens_after
            + 5,
    );
    let plan = plan_prune(&history, &p, &EstimateCounter);
    assert_eq!(plan.report.tool_outputs, 10);
    assert!(plan.report.chatter >= 1 && plan.report.chatter <= 5);
    // Already under target: nothing to do.
    p.prune.target_tokens = Some(full);
    assert!(plan_prune(&history, &p, &EstimateCounter).record.is_none());
}

#[test]
fn prune_keeps_short_outputs_and_the_latest_turn_even_at_zero() {
    let mut history = conversation(2);
    history[3].content = "ok".into();
    let mut p = ContextPolicy::default();
    p.prune.keep_recent_turns = 0;
    let plan = plan_prune(&history, &p, &EstimateCounter);
    assert_eq!(plan.report.tool_outputs, 1); // b0 only: a0 is short, turn 1 is the latest
    assert!(
        plan_prune(&conversation(1), &p, &EstimateCounter)
            .record
            .is_none()
    );
}

#[test]
fn text_mode_observations_are_pruned_as_tool_output() {
    let output = "line\n".repeat(100);
    let history = vec![
        ChatMessage::system("sys"),
        ChatMessage::user("list"),
        ChatMessage::assistant("Thought: look\nAction: list_dir\nAction Input: {}"),
        ChatMessage::user(render_observation(&output)),
        ChatMessage::assistant("Final Answer: many lines"),
        ChatMessage::user("thanks"),
    ];
    let mut p = ContextPolicy::default();
    p.prune.keep_recent_turns = 1;
    let plan = plan_prune(&history, &p, &EstimateCounter);
    assert_eq!(plan.report.tool_outputs, 1);
    let mut history = history;
    history.push(plan.record.unwrap());
    let view = apply_policy(&history, &ContextPolicy::default(), &EstimateCounter, 0);
    assert_eq!(
        view[3].content,
        format!("Observation: {}", pruned_tool_output(500))
    );
    assert_eq!(view[5].content, "thanks");
}

#[test]
fn records_decide_only_about_messages_before_them() {
    let history = conversation(3);
    let mut p = ContextPolicy::default();
    p.prune.keep_recent_turns = 1;
    let record = plan_prune(&history, &p, &EstimateCounter).record.unwrap();
    let mut forged = record.clone();
    forged.metadata.insert(
        PRUNE_KEY.into(),
        serde_json::json!({"tool_outputs": [3, 19]}),
    );
    let mut history = history;
    history.push(forged);
    history.extend(conversation(1).into_iter().skip(1));
    let view = apply_policy(&history, &ContextPolicy::default(), &EstimateCounter, 0);
    let pruned: Vec<_> = view
        .iter()
        .filter(|m| m.content.starts_with("[pruned"))
        .collect();
    assert_eq!(pruned.len(), 1, "only index 3 is before the record");
    assert_eq!(pruned[0].tool_call_id.as_deref(), Some("a0"));
}

/// Random shapes of history against every invariant a view promises.
#[test]
fn views_of_random_histories_keep_every_promise() {
    let mut rng = StdRng::seed_from_u64(6);
    for round in 0..300 {
        let history = random_history(&mut rng);
        let p = policy(
            rng.random_bool(0.7).then(|| rng.random_range(0..12)),
            rng.random_bool(0.7).then(|| rng.random_range(0..600)),
        );
        let view = apply_policy(&history, &p, &EstimateCounter, 0);
        assert_pairs_intact(&view);
        assert_eq!(view[0].content, "sys", "round {round}");
        assert!(view[1..].iter().all(|m| m.role != Role::System));
        let latest_user = history.iter().rev().find(|m| m.role == Role::User);
        if let Some(user) = latest_user {
            assert!(
                view.iter().any(|m| std::ptr::eq(m.as_ref(), user)),
                "round {round}"
            );
        }
        if history.len() > 1 {
            assert_eq!(view.last().unwrap().as_ref(), history.last().unwrap());
        }
    }
}

fn random_history(rng: &mut StdRng) -> Vec<ChatMessage> {
    let mut history = vec![ChatMessage::system("sys")];
    let mut id = 0;
    for _ in 0..rng.random_range(0..25) {
        match rng.random_range(0..4) {
            0 | 1 => history.push(ChatMessage::user("u".repeat(rng.random_range(1..200)))),
            2 => history.push(ChatMessage::assistant("a".repeat(rng.random_range(0..200)))),
            _ => {
                let calls: Vec<ToolCall> = (0..rng.random_range(1..4))
                    .map(|_| {
                        id += 1;
                        call(&format!("c{id}"))
                    })
                    .collect();
                let results: Vec<ChatMessage> = calls
                    .iter()
                    .map(|c| ChatMessage::tool_result(&c.id, "r".repeat(rng.random_range(0..400))))
                    .collect();
                history.push(ChatMessage::assistant_with_tool_calls("", calls));
                history.extend(results);
            }
        }
    }
    history
}
