//! Approval: a person confirms a tool call before it runs.
//!
//! An [`ApprovalPolicy`] says, per tool, whether a call runs at once
//! ([`ApprovalMode::Auto`]), waits for a person's decision ([`ApprovalMode::Ask`]) or is
//! refused ([`ApprovalMode::Deny`]). Rules match tool names with `*` wildcards, first match
//! wins; a tool no rule names falls back to one mode for tools whose
//! [`effects`](crate::Tool::effects) say they are destructive or not read-only, and
//! another for the rest. Asking goes to an [`Approver`]: the CLI's asks on the terminal,
//! a web page's shows buttons, a library user's is any async callback.
//!
//! A session without a policy runs every call, as it always has. With one, the outcome
//! is part of the tool result stored in the history (`[The user approved this call.]`
//! before the output; a refusal is the whole result), so a resumed session, and the
//! model, know what was refused.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::FutureExt;
use serde_json::Value;

use crate::tools::tool::{Tool, ToolEffects};

/// What happens to a call before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    /// It runs without asking.
    Auto,
    /// A person decides, through the policy's [`Approver`].
    Ask,
    /// It is refused without asking.
    Deny,
}

/// A person's answer to an [`ApprovalRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalDecision {
    /// Run this call.
    Approve,
    /// Do not run it; the model reads that the user declined.
    Deny,
    /// Run this call and every later call of the same tool in this session without asking.
    AlwaysApprove,
}

/// A call waiting for a person's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    /// The tool the model wants to call.
    pub tool: String,
    /// The call's id, as the model gave it.
    pub call_id: String,
    /// The arguments, already checked against the tool's schema.
    pub arguments: Value,
    /// What the tool declares a call may change.
    pub effects: ToolEffects,
}

impl ApprovalRequest {
    /// The call as a person reads it: `delete_file(path="old.log")`, each argument as
    /// `name=JSON`, values longer than [`DISPLAY_VALUE_CHARS`] cut. A name that is not a
    /// plain word (letters, digits, `_`, `-`, `.`) is shown as a JSON string, so that no
    /// name can end the line or pose as another argument, and cut like a value.
    ///
    /// Characters a screen hides, reorders or obeys (a bidi override, a zero-width space,
    /// a terminal's escape) are written as JSON `\u` escapes
    /// ([`escape_hidden`](crate::escape_hidden)), in the tool's name too, so an approver
    /// may print the line as it is.
    pub fn display(&self) -> String {
        let arguments = match &self.arguments {
            Value::Object(map) => map
                .iter()
                .map(|(name, value)| {
                    format!(
                        "{}={}",
                        cut(&display_name(name), DISPLAY_VALUE_CHARS),
                        cut(&value.to_string(), DISPLAY_VALUE_CHARS)
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            other => cut(&other.to_string(), DISPLAY_VALUE_CHARS),
        };
        // One line: only the tool's name can hold a line break (values are JSON, names
        // that are not plain words quoted JSON), and `escape_hidden` keeps `\n`.
        crate::escape_hidden(&format!("{}({arguments})", self.tool)).replace('\n', "\\n")
    }

    /// Whether [`display`](Self::display) cuts a name or a value: then a person asked to
    /// approve the call has not seen all of it.
    pub fn display_is_cut(&self) -> bool {
        let long = |text: &str| text.chars().count() > DISPLAY_VALUE_CHARS;
        match &self.arguments {
            Value::Object(map) => map
                .iter()
                .any(|(name, value)| long(&display_name(name)) || long(&value.to_string())),
            other => long(&other.to_string()),
        }
    }
}

/// An argument's name as [`ApprovalRequest::display`] shows it: as it is when it is a
/// plain word, else quoted and escaped as JSON (a model chooses the names, and a schema
/// may allow any).
fn display_name(name: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if !name.is_empty() && name.chars().all(plain) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(Value::from(name).to_string())
    }
}

/// The longest argument value [`ApprovalRequest::display`] shows whole, in characters.
pub const DISPLAY_VALUE_CHARS: usize = 120;

/// `text`, cut to `max` characters with an ellipsis.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Decides calls the policy asks about: a terminal prompt, buttons in a page, a callback.
///
/// Calls of one assistant message are asked about one at a time, in order.
#[async_trait]
pub trait Approver: Send + Sync {
    /// The person's decision on `request`.
    async fn decide(&self, request: &ApprovalRequest) -> ApprovalDecision;
}

/// An [`Approver`] made from an async closure ([`ApprovalPolicy::ask_with`]).
struct FnApprover<F>(F);

#[async_trait]
impl<F, Fut> Approver for FnApprover<F>
where
    F: Fn(ApprovalRequest) -> Fut + Send + Sync,
    Fut: Future<Output = ApprovalDecision> + Send,
{
    async fn decide(&self, request: &ApprovalRequest) -> ApprovalDecision {
        (self.0)(request.clone()).await
    }
}

/// Which calls run at once, which wait for a person, which are refused.
///
/// Rules match tool names with `*` wildcards, first match wins; a tool no rule names
/// gets one mode when its [`effects`](crate::Tool::effects) say it is destructive or not
/// read-only, another otherwise. [`ApprovalMode::Ask`] goes to the policy's [`Approver`].
/// Set on a session with [`SessionBuilder::approval`](crate::SessionBuilder::approval);
/// the outcome of each call is recorded in its stored tool result.
///
/// ```no_run
/// use fusion_agent::{AgentSession, ApprovalDecision, ApprovalMode, ApprovalPolicy};
///
/// # async fn demo(storage: std::sync::Arc<dyn fusion_core::ConversationStorage>) -> fusion_core::Result<()> {
/// let policy = ApprovalPolicy::ask_destructive()
///     .rule("read_*", ApprovalMode::Auto)
///     .ask_with(|request| async move {
///         println!("the agent wants to run {}", request.display());
///         ApprovalDecision::Approve
///     });
/// let session = AgentSession::builder("s1").storage(storage).approval(policy).build().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ApprovalPolicy {
    /// `(pattern, mode)`, first match wins.
    rules: Vec<(String, ApprovalMode)>,
    /// For tools no rule names that are destructive or not read-only.
    changing: ApprovalMode,
    /// For read-only tools no rule names.
    read_only: ApprovalMode,
    approver: Option<Arc<dyn Approver>>,
}

impl ApprovalPolicy {
    /// Every call runs without asking, unless a [`rule`](Self::rule) says otherwise.
    pub fn auto() -> Self {
        Self::with_defaults(ApprovalMode::Auto, ApprovalMode::Auto)
    }

    /// Calls of tools that are destructive or not declared read-only (the built-in
    /// `write_file` and `delete_file`, most MCP tools) wait for a person; read-only tools
    /// run at once. The CLI's default.
    pub fn ask_destructive() -> Self {
        Self::with_defaults(ApprovalMode::Ask, ApprovalMode::Auto)
    }

    /// Calls of tools that are destructive or not declared read-only are refused; the
    /// rest run. What `fusion chat --approve none` uses.
    pub fn deny_destructive() -> Self {
        Self::with_defaults(ApprovalMode::Deny, ApprovalMode::Auto)
    }

    /// A policy whose unnamed tools get `changing` when they are destructive or not
    /// read-only, `read_only` otherwise.
    pub fn with_defaults(changing: ApprovalMode, read_only: ApprovalMode) -> Self {
        Self {
            rules: Vec::new(),
            changing,
            read_only,
            approver: None,
        }
    }

    /// Adds a rule: tools whose name matches `pattern` (`*` matches any run of
    /// characters, e.g. `fs__*`) get `mode`. Rules added first win.
    pub fn rule(mut self, pattern: impl Into<String>, mode: ApprovalMode) -> Self {
        self.rules.push((pattern.into(), mode));
        self
    }

    /// Who decides the calls this policy asks about.
    pub fn approver(mut self, approver: impl Approver + 'static) -> Self {
        self.approver = Some(Arc::new(approver));
        self
    }

    /// [`approver`](Self::approver) from an async closure.
    pub fn ask_with<F, Fut>(self, decide: F) -> Self
    where
        F: Fn(ApprovalRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ApprovalDecision> + Send + 'static,
    {
        self.approver(FnApprover(decide))
    }

    /// The mode for calls of `tool`.
    pub fn mode_for(&self, tool: &dyn Tool) -> ApprovalMode {
        let name = tool.name();
        if let Some((_, mode)) = self.rules.iter().find(|(p, _)| matches(p, name)) {
            return *mode;
        }
        let effects = tool.effects();
        if effects.destructive || !effects.read_only {
            self.changing
        } else {
            self.read_only
        }
    }

    /// Whether the policy may ask about some call.
    pub(crate) fn may_ask(&self) -> bool {
        self.changing == ApprovalMode::Ask
            || self.read_only == ApprovalMode::Ask
            || self.rules.iter().any(|(_, m)| *m == ApprovalMode::Ask)
    }

    /// Whether an approver is set.
    pub(crate) fn has_approver(&self) -> bool {
        self.approver.is_some()
    }
}

impl fmt::Debug for ApprovalPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalPolicy")
            .field("rules", &self.rules)
            .field("changing", &self.changing)
            .field("read_only", &self.read_only)
            .field("approver", &self.approver.is_some())
            .finish()
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: the whole name must match
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// How a call's approval went, as recorded in its [`ToolOutcome`](crate::ToolOutcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// A person approved this call.
    Approved,
    /// A person approved every call of this tool earlier in the session.
    ApprovedAlways,
    /// A person declined this call; it did not run.
    Declined,
    /// The policy refuses this tool; it did not run.
    Refused,
    /// The approver failed (it panicked) before answering; the call did not run.
    Failed,
}

impl Approval {
    /// What the model reads in place of the output, when the call did not run.
    pub(crate) fn refusal(self, tool: &str) -> Option<String> {
        match self {
            Approval::Declined => {
                Some("Error: the user declined this call; it did not run.".into())
            }
            Approval::Refused => Some(format!(
                "Error: the user declined this call: their approval policy refuses \
                 `{tool}`; it did not run."
            )),
            Approval::Failed => Some(
                "Error: this call could not be approved (asking the user failed); it did \
                 not run."
                    .into(),
            ),
            Approval::Approved | Approval::ApprovedAlways => None,
        }
    }

    /// The line put before the output of a call a person approved.
    pub(crate) fn note(self) -> Option<&'static str> {
        match self {
            Approval::Approved => Some("[The user approved this call.]"),
            Approval::ApprovedAlways => {
                Some("[The user approved every call of this tool for this session.]")
            }
            Approval::Declined | Approval::Refused | Approval::Failed => None,
        }
    }
}

/// A policy in use: the policy, the tools approved "always", and the one question at a
/// time rule.
#[derive(Clone)]
pub(crate) struct Gate {
    policy: ApprovalPolicy,
    always: Arc<Mutex<HashSet<String>>>,
    /// Held while a person is asked, so concurrent calls ask one after another.
    asking: Arc<tokio::sync::Mutex<()>>,
}

impl Gate {
    pub(crate) fn new(policy: ApprovalPolicy) -> Self {
        Self {
            policy,
            always: Arc::default(),
            asking: Arc::default(),
        }
    }

    /// The same policy, with no tool approved "always" yet. Questions still go one at a
    /// time across both, since they reach the same approver.
    pub(crate) fn with_own_approvals(&self) -> Self {
        Self {
            policy: self.policy.clone(),
            always: Arc::default(),
            asking: Arc::clone(&self.asking),
        }
    }

    /// Decides whether the call may run: `None` runs it with no note (auto), otherwise
    /// how approval went.
    pub(crate) async fn check(
        &self,
        tool: &dyn Tool,
        request: ApprovalRequest,
    ) -> Option<Approval> {
        match self.policy.mode_for(tool) {
            ApprovalMode::Auto => None,
            ApprovalMode::Deny => Some(Approval::Refused),
            ApprovalMode::Ask => {
                let _one_at_a_time = self.asking.lock().await;
                if self.is_always(&request.tool) {
                    return Some(Approval::ApprovedAlways);
                }
                let Some(approver) = &self.policy.approver else {
                    // SessionBuilder refuses this combination; a hand-built executor
                    // without an approver declines rather than runs.
                    return Some(Approval::Declined);
                };
                // The approver is user code: a panic must not take the turn (or the caller's
                // task) down, nor lose what the calls before this one did.
                // `decide` itself inside too: a hand-written future may panic before it
                // is first polled.
                let asked =
                    AssertUnwindSafe(async { approver.decide(&request).await }).catch_unwind();
                let decision = match asked.await {
                    Ok(decision) => decision,
                    Err(panic) => {
                        tracing::error!(
                            tool = %request.tool,
                            "the approver panicked ({}); the call does not run",
                            crate::panics::describe(panic.as_ref())
                        );
                        return Some(Approval::Failed);
                    }
                };
                Some(match decision {
                    ApprovalDecision::Approve => Approval::Approved,
                    ApprovalDecision::Deny => Approval::Declined,
                    ApprovalDecision::AlwaysApprove => {
                        self.always
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(request.tool);
                        Approval::Approved
                    }
                })
            }
        }
    }

    fn is_always(&self, tool: &str) -> bool {
        self.always
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(tool)
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("policy", &self.policy)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_wildcards() {
        assert!(matches("delete_file", "delete_file"));
        assert!(!matches("delete_file", "delete_files"));
        assert!(matches("delete_*", "delete_file"));
        assert!(matches("*", "anything"));
        assert!(matches("fs__*_file", "fs__write_file"));
        assert!(!matches("fs__*_file", "fs__write_files"));
        assert!(matches("*file*", "read_file_now"));
        assert!(!matches("read_*", "write_file"));
    }

    #[test]
    fn a_request_reads_like_a_call() {
        let request = ApprovalRequest {
            tool: "delete_file".into(),
            call_id: "c1".into(),
            arguments: serde_json::json!({"path": "old.log"}),
            effects: ToolEffects::DESTRUCTIVE,
        };
        assert_eq!(request.display(), r#"delete_file(path="old.log")"#);
        let long = ApprovalRequest {
            arguments: serde_json::json!({"content": "x".repeat(500)}),
            ..request
        };
        assert!(long.display().ends_with("…)"), "{}", long.display());
        assert!(long.display().chars().count() < 160);
    }

    /// What a screen would hide or reorder reaches no approver that prints the line as it
    /// is: a bidi override in a value or the tool's name, a terminal escape in a name.
    #[test]
    fn a_request_shows_hidden_characters_as_escapes() {
        let request = ApprovalRequest {
            tool: "delete\u{200b}_file\n".into(),
            call_id: "c1".into(),
            arguments: serde_json::json!({"path": "report\u{202e}gpj.exe", "\u{1b}[2J": 1}),
            effects: ToolEffects::DESTRUCTIVE,
        };
        let shown = request.display();
        assert_eq!(
            shown,
            r#"delete\u200b_file\n("\u001b[2J"=1, path="report\u202egpj.exe")"#
        );
        assert_eq!(crate::escape_hidden(&shown), shown);
    }

    /// A model that adds an argument whose name holds line breaks and a fake prompt could
    /// make the person approve what they did not see (found by an audit: `precious.db`
    /// deleted after `y` to what read as `scratch.tmp`).
    #[test]
    fn an_argument_name_cannot_end_the_line_or_pose_as_another_argument() {
        let spoof = format!(
            "~{}  -> delete_file({{\"path\":\"scratch.tmp\"}})\n  allow delete_file(path",
            "\n".repeat(40)
        );
        let request = ApprovalRequest {
            tool: "delete_file".into(),
            call_id: "c1".into(),
            arguments: serde_json::json!({"path": "precious.db", spoof: "scratch.tmp"}),
            effects: ToolEffects::DESTRUCTIVE,
        };
        let shown = request.display();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(
            shown.starts_with(r#"delete_file(path="precious.db", "~\n\n"#),
            "{shown}"
        );
        assert!(
            request.display_is_cut(),
            "the name is longer than a value may be"
        );

        let plain = ApprovalRequest {
            arguments: serde_json::json!({"dry-run": true, "a.b_c": 1, "": 2, "with space": 3}),
            ..request
        };
        assert_eq!(
            plain.display(),
            r#"delete_file(""=2, a.b_c=1, dry-run=true, "with space"=3)"#
        );
        assert!(!plain.display_is_cut());
    }
}
