//! `--approve`: whether `fusion chat` asks before a tool changes something.
//!
//! On a terminal the default is to ask about every call of a tool that is destructive or
//! not declared read-only (the built-in `write_file` and `delete_file`, most MCP tools):
//! the call is shown as `delete_file(path="old.log")` and the user answers `[y]es`, `[n]o`
//! or `[a]lways for this tool`. Reading from a pipe nobody can answer, so there the
//! choice must be explicit: `--approve all` runs every call, `--approve none` refuses the
//! ones that would ask.
//!
//! The agent asks through [`ask_the_loop`]: each question goes to the chat loop, which
//! owns the terminal and asks it ([`answer`]) between the events of the turn.

use anyhow::{Result, bail};
use clap::ValueEnum;
use fusion::agent::{ApprovalDecision, ApprovalPolicy, ApprovalRequest, escape_hidden};
use tokio::sync::{mpsc, oneshot};

use super::input::{Asked, Input};
use crate::render;

/// The values of `--approve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApproveMode {
    /// Ask before each call of a tool that may change something: on the terminal in
    /// `fusion chat` (not from a pipe), with the page's buttons in `fusion ui`.
    Ask,
    /// Run every call without asking.
    All,
    /// Refuse every call of a tool that may change something.
    None,
}

/// A question for the user and where the answer goes.
pub struct Question {
    /// The call waiting for a decision.
    pub request: ApprovalRequest,
    /// Receives the decision; dropping it declines the call.
    pub answer: oneshot::Sender<ApprovalDecision>,
}

/// Sends `request` to the chat loop and waits for the user's answer.
async fn ask_the_loop(
    questions: mpsc::UnboundedSender<Question>,
    request: ApprovalRequest,
) -> ApprovalDecision {
    let (answer, decision) = oneshot::channel();
    if questions.send(Question { request, answer }).is_err() {
        return ApprovalDecision::Deny;
    }
    // No answer (the turn was stopped) is no approval.
    decision.await.unwrap_or(ApprovalDecision::Deny)
}

/// The policy for `mode`, and where its questions arrive when it asks.
///
/// Fails when nobody could answer: asking (explicitly or by default) with input from a
/// pipe.
pub fn policy(
    mode: Option<ApproveMode>,
    interactive: bool,
) -> Result<(ApprovalPolicy, Option<mpsc::UnboundedReceiver<Question>>)> {
    let mode = match (mode, interactive) {
        (Some(ApproveMode::Ask), false) => bail!(
            "--approve ask needs a terminal to ask on, and input comes from a pipe; \
             pass --approve all or --approve none"
        ),
        (None, false) => bail!(
            "input comes from a pipe, so nobody can approve a tool call that changes \
             something (writing or deleting a file, most MCP tools); pass --approve all to \
             run them or --approve none to refuse them (or set FUSION_APPROVE)"
        ),
        (Some(mode), _) => mode,
        (None, true) => ApproveMode::Ask,
    };
    Ok(match mode {
        ApproveMode::All => (ApprovalPolicy::auto(), None),
        ApproveMode::None => (ApprovalPolicy::deny_destructive(), None),
        ApproveMode::Ask => {
            let (questions, asked) = mpsc::unbounded_channel();
            let policy = ApprovalPolicy::ask_destructive()
                .ask_with(move |request| ask_the_loop(questions.clone(), request));
            (policy, Some(asked))
        }
    })
}

/// The prompt for `request`; it offers `[v]iew` when the call shown is cut.
///
/// What the model chose (the arguments) and what a tool's maker chose (its name) is shown
/// with every character a terminal would hide, reorder or obey escaped, on one line, as
/// [`ApprovalRequest::display`] writes it: a U+202E could make `"txt.exe"` read
/// `"exe.txt"`, a raw ESC or CSI could rewrite the question on screen.
pub fn prompt(request: &ApprovalRequest) -> String {
    let view = if request.display_is_cut() {
        " / [v]iew it whole"
    } else {
        ""
    };
    format!(
        "  allow {}? [y]es / [n]o / [a]lways for this tool{view}: ",
        request.display()
    )
}

/// `text` (a tool's name) as [`escape_hidden`] shows it, on one line, as
/// [`ApprovalRequest::display`] shows the name: it must not end the line it heads.
fn one_line(text: &str) -> String {
    escape_hidden(text).replace('\n', "\\n")
}

/// Whether a typed answer asks to see the call whole.
pub fn wants_view(line: &str) -> bool {
    matches!(line.trim().to_ascii_lowercase().as_str(), "v" | "view")
}

/// The call of `request` whole, its arguments as indented JSON, to print above the
/// prompt asked again; escaped as the [`prompt`] is.
pub fn whole(request: &ApprovalRequest) -> String {
    let arguments = serde_json::to_string_pretty(&request.arguments)
        .unwrap_or_else(|_| request.arguments.to_string());
    // Pretty JSON keeps its own line breaks; inside its strings they are escaped already.
    format!(
        "  {} with arguments:\n{}",
        one_line(&request.tool),
        escape_hidden(&arguments)
    )
}

/// The decision a typed answer means, if it means one.
pub fn parse_answer(line: &str) -> Option<ApprovalDecision> {
    match line.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Some(ApprovalDecision::Approve),
        "n" | "no" => Some(ApprovalDecision::Deny),
        "a" | "always" => Some(ApprovalDecision::AlwaysApprove),
        _ => None,
    }
}

/// The next question of the approval policy; never resolves when it asks none.
pub async fn next_question(
    questions: &mut Option<mpsc::UnboundedReceiver<Question>>,
) -> Option<Question> {
    match questions {
        Some(questions) => questions.recv().await,
        None => std::future::pending().await,
    }
}

/// Asks `question`, when there is one, until the answer means something: the decision,
/// and whether the turn goes on. Ctrl-D declines, as `n` does, and the turn goes on;
/// Ctrl-C declines and stops the turn. Without a question it never resolves.
///
/// Cancel-safe, as [`Input::ask`] is: the turn loop makes this future anew after each
/// event of the turn, and it goes on waiting for the read already open.
pub async fn answer(
    question: Option<&Question>,
    input: &mut Input,
) -> Result<(ApprovalDecision, bool)> {
    let Some(question) = question else {
        return std::future::pending().await;
    };
    let prompt = prompt(&question.request);
    loop {
        return Ok(match input.ask(&prompt).await? {
            Asked::Line(line) if wants_view(&line) => {
                render::say(whole(&question.request))?;
                continue;
            }
            Asked::Line(line) => match parse_answer(&line) {
                Some(decision) => (decision, true),
                None => continue,
            },
            Asked::Ended => (ApprovalDecision::Deny, true),
            Asked::Interrupted => (ApprovalDecision::Deny, false),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_loosely_and_anything_else_is_asked_again() {
        assert_eq!(parse_answer(" Y "), Some(ApprovalDecision::Approve));
        assert_eq!(parse_answer("no"), Some(ApprovalDecision::Deny));
        assert_eq!(parse_answer("a"), Some(ApprovalDecision::AlwaysApprove));
        assert_eq!(parse_answer(""), None);
        assert_eq!(parse_answer("maybe"), None);
    }

    /// A tool's name is not the model's, but an MCP server or a library user names
    /// tools, and the name is on the line the user approves.
    #[test]
    fn a_tool_name_cannot_hide_reorder_or_break_the_question() {
        let request = ApprovalRequest {
            tool: "rm\u{202e}\u{1b}[2J\u{9b}\nallow read_file".into(),
            call_id: "c1".into(),
            arguments: serde_json::json!({"path": "a\u{200b}b"}),
            effects: fusion::agent::ToolEffects::DESTRUCTIVE,
        };
        let tool = r"rm\u202e\u001b[2J\u009b\nallow read_file";
        assert_eq!(
            prompt(&request),
            format!(r#"  allow {tool}(path="a\u200bb")? [y]es / [n]o / [a]lways for this tool: "#)
        );
        assert_eq!(
            whole(&request),
            format!("  {tool} with arguments:\n{{\n  \"path\": \"a\\u200bb\"\n}}")
        );
    }

    #[test]
    fn a_pipe_needs_an_explicit_choice() {
        let err = policy(None, false).unwrap_err().to_string();
        assert!(
            err.contains("--approve all") && err.contains("--approve none"),
            "{err}"
        );
        assert!(policy(Some(ApproveMode::Ask), false).is_err());
        assert!(policy(Some(ApproveMode::None), false).unwrap().1.is_none());
        assert!(policy(None, true).unwrap().1.is_some());
    }
}
