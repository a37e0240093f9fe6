//! `ToolExecutor`: runs the tool calls of one assistant message and turns every outcome,
//! good or bad, into a result the model can read.
//!
//! The calls of one message run concurrently (on the agent's task, so a cancelled turn
//! also cancels its tools), each under a timeout: all at once ([`ToolExecutor::execute_all`])
//! or yielded one by one as each finishes ([`ToolExecutor::execute_each`]). Nothing a tool or the
//! model does ends the turn: an unknown tool, arguments that are not JSON or do not fit
//! the tool's schema, a tool error, a timeout and a panic each become an observation
//! starting with `Error:` that says what went wrong, and the loop goes on. Errors that do
//! end a turn (storage, the LLM) are the session's business, not the executor's.
//!
//! ```no_run
//! use fusion_agent::{ExecutorConfig, ToolExecutor, ToolRegistry};
//! use fusion_core::ToolCall;
//!
//! # async fn demo() -> fusion_core::Result<()> {
//! let executor = ToolExecutor::new(ToolRegistry::with_file_tools(["."])?, ExecutorConfig::default());
//! let outcomes = executor.execute_all(&[ToolCall::new("c1", "list_directory", "{}")]).await;
//! println!("{}", outcomes[0].output);
//! # Ok(()) }
//! ```

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use fusion_core::{ChatMessage, ToolCall};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, Stream};
use serde_json::Value;
use tracing::{Instrument, debug, field, info, info_span, trace};

use crate::approval::{Approval, ApprovalPolicy, ApprovalRequest, Gate};
use crate::tools::registry::ToolRegistry;
use crate::tools::schema::{bare_text_property, check_and_fit_arguments, takes_one_string};

/// How long one tool call may run unless configured otherwise.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// The most bytes of one call's output kept unless configured otherwise: 1 MiB and 8 KiB,
/// what the built-in `read_file` returns at most
/// ([`DEFAULT_MAX_READ_BYTES`](crate::tools::files::DEFAULT_MAX_READ_BYTES)) and room for
/// its note of a cut (which quotes the path) and an approval's note, so it bounds the
/// tools that set no bound of their own and cuts none of the built-in ones. Lower it for
/// a model whose context window is smaller than a megabyte of text (some 250,000 tokens).
pub const DEFAULT_MAX_TOOL_OUTPUT_BYTES: usize =
    crate::tools::files::DEFAULT_MAX_READ_BYTES + 8 * 1024;

/// Longest stretch of the model's raw arguments quoted back in an error.
const QUOTE_MAX_CHARS: usize = 200;

/// Settings for running tool calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// How long one call may run before it is abandoned and reported as timed out.
    pub tool_timeout: Duration,
    /// The most bytes of one call's output (or error) the model is shown: what a session
    /// stores and sends back in every later request.
    /// [`DEFAULT_MAX_TOOL_OUTPUT_BYTES`] unless set; `usize::MAX` for no bound.
    ///
    /// A longer output keeps its start (three quarters of what fits) and its end, with a
    /// note between them saying how many bytes of how many were left out, all within this
    /// many bytes and cut on character boundaries. A bound below the note's length (some
    /// 200 bytes) leaves the note alone.
    pub max_output_bytes: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            tool_timeout: DEFAULT_TOOL_TIMEOUT,
            max_output_bytes: DEFAULT_MAX_TOOL_OUTPUT_BYTES,
        }
    }
}

/// What came of one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    /// The id of the call this answers.
    pub call_id: String,
    /// The tool the model asked for.
    pub tool: String,
    /// The arguments exactly as the model sent them.
    pub arguments: String,
    /// What the model is shown: the tool's output, or an `Error: ...` explanation, cut to
    /// [`ExecutorConfig::max_output_bytes`] when longer.
    pub output: String,
    /// Whether the tool ran and returned `Ok`.
    pub success: bool,
    /// How long the call took, checks and any wait for a person's approval included.
    pub duration: Duration,
    /// How approval went, when an [`ApprovalPolicy`] asked or refused; `None` when the
    /// call ran without one (or never got as far: an unknown tool, invalid arguments).
    pub approval: Option<Approval>,
}

impl ToolOutcome {
    /// The tool-result message carrying [`output`](Self::output) back to the model.
    pub fn to_message(&self) -> ChatMessage {
        ChatMessage::tool_result(&self.call_id, &self.output)
    }
}

/// Runs tool calls against a [`ToolRegistry`].
#[derive(Debug, Clone, Default)]
pub struct ToolExecutor {
    tools: ToolRegistry,
    config: ExecutorConfig,
    /// The approval policy in force, if any; without one every call runs.
    gate: Option<Gate>,
}

impl ToolExecutor {
    /// An executor for `tools` with `config`; every call runs without asking.
    pub fn new(tools: ToolRegistry, config: ExecutorConfig) -> Self {
        Self {
            tools,
            config,
            gate: None,
        }
    }

    /// Checks every call against `policy` before it runs (see [`ApprovalPolicy`]). A
    /// policy that may ask needs an approver; without one, such calls are declined.
    pub fn with_approval(mut self, policy: ApprovalPolicy) -> Self {
        self.gate = Some(Gate::new(policy));
        self
    }

    /// The same executor with approvals of its own: the same policy and approver, and no
    /// tool approved "always" yet (for a forked session).
    pub(crate) fn with_own_approvals(&self) -> Self {
        Self {
            gate: self.gate.as_ref().map(Gate::with_own_approvals),
            ..self.clone()
        }
    }

    /// The tools calls are dispatched to.
    pub fn tools(&self) -> &ToolRegistry {
        &self.tools
    }

    /// The settings calls run with.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// Runs `calls` concurrently; the outcomes are in the same order as the calls.
    ///
    /// Cost: the calls themselves, plus one schema check each.
    pub async fn execute_all(&self, calls: &[ToolCall]) -> Vec<ToolOutcome> {
        futures::future::join_all(calls.iter().map(|call| self.execute(call))).await
    }

    /// Runs `calls` concurrently, yielding each outcome as its call finishes, with the
    /// call's position in `calls`: for a caller that keeps each result at once rather than
    /// when the slowest call is done. The calls run while the stream is polled, on the
    /// polling task; dropping it cancels those still running.
    pub fn execute_each<'a>(
        &'a self,
        calls: &'a [ToolCall],
    ) -> impl Stream<Item = (usize, ToolOutcome)> + Send + 'a {
        calls
            .iter()
            .enumerate()
            .map(|(at, call)| self.execute(call).map(move |outcome| (at, outcome)))
            .collect::<FuturesUnordered<_>>()
    }

    /// Runs one call. Never fails: every problem is reported in the outcome.
    pub async fn execute(&self, call: &ToolCall) -> ToolOutcome {
        let span = info_span!(
            "tool_call",
            tool = %call.name,
            call_id = %call.id,
            success = field::Empty,
            duration_ms = field::Empty,
        );
        async {
            debug!(arguments = %call.arguments, "tool call started");
            let started = Instant::now();
            let (result, approval) = self.run(call).await;
            let duration = started.elapsed();
            let success = result.is_ok();
            let span = tracing::Span::current();
            span.record("success", success);
            span.record("duration_ms", duration.as_millis() as u64);
            let output = bounded(
                result.unwrap_or_else(|error| error),
                self.config.max_output_bytes,
            );
            if success {
                info!("tool call finished");
            } else {
                info!(error = %output, "tool call failed");
            }
            trace!(output = %output, "tool output");
            ToolOutcome {
                call_id: call.id.clone(),
                tool: call.name.clone(),
                arguments: call.arguments.clone(),
                output,
                success,
                duration,
                approval,
            }
        }
        .instrument(span)
        .await
    }

    /// The tool's output, or the observation explaining why there is none, and how
    /// approval went. A person's approval is noted before the output.
    async fn run(&self, call: &ToolCall) -> (Result<String, String>, Option<Approval>) {
        let (tool, args) = match self.prepare(call) {
            Ok(ready) => ready,
            Err(observation) => return (Err(observation), None),
        };
        let approval = match &self.gate {
            Some(gate) => {
                let request = ApprovalRequest {
                    tool: call.name.clone(),
                    call_id: call.id.clone(),
                    arguments: args.clone(),
                    effects: tool.effects(),
                };
                gate.check(tool.as_ref(), request).await
            }
            None => None,
        };
        if let Some(refusal) = approval.and_then(|a| a.refusal(&call.name)) {
            return (Err(refusal), approval);
        }
        let result = self.call(tool.as_ref(), args).await;
        let result = match approval.and_then(Approval::note) {
            Some(note) => match result {
                Ok(output) => Ok(format!("{note}\n{output}")),
                Err(error) => Err(format!("{note}\n{error}")),
            },
            None => result,
        };
        (result, approval)
    }

    /// The arguments of a text-mode action whose input is bare text (`Action Input:
    /// notes.txt`) or one JSON string (`"notes.txt"`): an object giving the text to the
    /// tool's one string property ([`bare_text_property`]), what the model meant, or the
    /// JSON string for a tool whose schema is one string ([`takes_one_string`]). Any
    /// other input is returned as it is: JSON, text that begins like an object or array
    /// or by naming a property (`path="notes.txt"`: JSON the model got wrong, never a
    /// value), or text for a tool without such a property, which
    /// [`execute`](Self::execute) refuses as not JSON, showing the schema. A number or
    /// boolean written bare (`42`, `true`) is text as `notes.txt` is, given as written
    /// (`42` as `"42"`), unless the schema takes it as it is.
    pub(crate) fn react_arguments(&self, tool: &str, input: String) -> String {
        let mut scalar = None;
        let text = match serde_json::from_str::<Value>(&input) {
            Ok(Value::String(text)) if object_encoded_twice(&input).is_none() => text,
            // `007` is no JSON, so bare text for the tool's string; `7` no less so.
            Ok(value @ (Value::Number(_) | Value::Bool(_))) => {
                scalar = Some(value);
                input.trim().to_owned()
            }
            Ok(_) => return input,
            Err(_) if input.trim_start().starts_with(['{', '[']) => return input,
            Err(_) => input.clone(),
        };
        let Some(tool) = self.tools.get(tool) else {
            return input;
        };
        // User code: a panic is reported when the call is prepared, as for any call.
        let Ok(schema) = std::panic::catch_unwind(AssertUnwindSafe(|| tool.parameters())) else {
            return input;
        };
        if scalar.is_some_and(|mut value| check_and_fit_arguments(&schema, &mut value).is_ok()) {
            return input;
        }
        match bare_text_property(&schema, &text) {
            Some(name) => serde_json::json!({ name: text }).to_string(),
            None if takes_one_string(&schema) => Value::String(text).to_string(),
            None => input,
        }
    }

    /// The tool and its checked arguments, or the observation saying what is wrong.
    fn prepare(&self, call: &ToolCall) -> Result<(std::sync::Arc<dyn crate::Tool>, Value), String> {
        let name = call.name.as_str();
        let Some(tool) = self.tools.get(name) else {
            let available = self.tools.names();
            let available = if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(", ")
            };
            // The name is the model's text, of any length: quoted, cut.
            return Err(format!(
                "{NO_SUCH_TOOL}{}. Available tools: {available}.",
                quote(name)
            ));
        };
        // User code, as `call` is: a panic fails this call, not the turn (a tool whose
        // definition panics fails the session's build or turn before any call).
        let schema =
            std::panic::catch_unwind(AssertUnwindSafe(|| tool.parameters())).map_err(|panic| {
                format!(
                    "Error: tool `{name}` crashed when asked for its parameters ({}); it was \
                     not run.",
                    crate::panics::describe(panic.as_ref())
                )
            })?;
        // Models often send "" for a tool without parameters, and Ollama sends `null` (its
        // empty arguments map, written out by Go): both mean no arguments.
        let mut args: Value = if call.arguments.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            match serde_json::from_str(&call.arguments) {
                Ok(Value::Null) => Value::Object(Default::default()),
                Ok(args) => args,
                Err(e) => {
                    return Err(format!(
                        "Error: the arguments for `{name}` are not valid JSON ({e}): {}. Call \
                         the tool again with one JSON object matching this schema: {schema}",
                        quote(&call.arguments)
                    ));
                }
            }
        };
        // Some servers (and proxies) encode the arguments twice: a JSON string holding the
        // JSON object. The model does not choose that, so the object is what it meant,
        // when the schema would refuse the string.
        if let Value::String(text) = &args
            && let Ok(inner @ Value::Object(_)) = serde_json::from_str::<Value>(text)
            && check_and_fit_arguments(&schema, &mut args.clone()).is_err()
        {
            args = inner;
        }
        check_and_fit_arguments(&schema, &mut args).map_err(|problems| {
            format!(
                "Error: invalid arguments for `{name}`: {problems}. Call the tool again with \
                 arguments matching this schema: {schema}"
            )
        })?;
        Ok((tool, args))
    }

    /// Runs the tool under the timeout, turning an error or a panic into an observation.
    async fn call(&self, tool: &dyn crate::Tool, args: Value) -> Result<String, String> {
        let name = tool.name();
        // Tools are user code: a panic must not take the agent (or the process) down.
        // `call` itself inside too: a hand-written one may panic before its future exists.
        let call = AssertUnwindSafe(async { tool.call(args).await }).catch_unwind();
        match tokio::time::timeout(self.config.tool_timeout, call).await {
            Ok(Ok(Ok(output))) => Ok(output),
            Ok(Ok(Err(error))) => Err(format!("Error: {error}")),
            Ok(Err(panic)) => Err(format!(
                "Error: tool `{name}` crashed ({}); its result is unknown.",
                crate::panics::describe(panic.as_ref())
            )),
            Err(_) => Err(format!(
                "Error: tool `{name}` did not finish within {:?} and was abandoned; it may \
                 have done part of its work, and may still finish it.",
                self.config.tool_timeout
            )),
        }
    }
}

/// How the output of a call of a tool the session does not offer begins, before the name
/// (quoted, as [`quote`] does).
pub(crate) const NO_SUCH_TOOL: &str = "Error: there is no tool named ";

/// `output` as kept: whole when it is at most `max` bytes, else its start and its end
/// around a note saying what was left out ([`ExecutorConfig::max_output_bytes`]).
///
/// A tool that returns a hundred megabytes (a log, a query without a limit) would
/// otherwise be stored whole and sent in every later request of the session, each refused
/// as too long (OpenAI takes at most 10 MiB of text a message) or past the model's context.
/// The end is kept beside the start because that is where a build's errors, a command's
/// summary or a tool's own note of a cut (`read_file`'s) stand.
fn bounded(output: String, max: usize) -> String {
    let total = output.len();
    if total <= max {
        return output;
    }
    let note = |left_out: usize, head: usize, tail: usize| {
        format!(
            "\n\n[tool output cut: {left_out} of its {total} bytes left out here, between the \
             first {head} and the last {tail}; the session shows at most {max} bytes of a \
             call]\n\n"
        )
    };
    // Written with every number at its widest, the note is at least as long as it will be.
    let room = max.saturating_sub(note(total, total, total).len());
    let head = output.floor_char_boundary(room / 4 * 3);
    let tail_start = output.ceil_char_boundary(total - (room - head));
    let tail = total - tail_start;
    tracing::debug!(total, kept = head + tail, "tool output cut");
    let mut kept = String::with_capacity(head + tail + 200);
    kept.push_str(&output[..head]);
    kept.push_str(&note(total - head - tail, head, tail));
    kept.push_str(&output[tail_start..]);
    kept
}

/// The JSON object inside `arguments` when a server encoded them twice (a JSON string
/// holding the object: `"{\"path\": \"a\"}"`), which is what a call runs with unless
/// its tool's schema takes a string; `None` for any other text. Later requests, the text
/// ReAct rendering of a native call and the summary's transcript show a call so, as run.
pub(crate) fn object_encoded_twice(arguments: &str) -> Option<String> {
    if !arguments.trim_start().starts_with('"') {
        return None;
    }
    let inner = serde_json::from_str::<String>(arguments).ok()?;
    let is_object = inner.trim_start().starts_with('{')
        && serde_json::from_str::<serde::de::IgnoredAny>(&inner).is_ok();
    is_object.then_some(inner)
}

/// `text`, cut to [`QUOTE_MAX_CHARS`] characters.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX_CHARS) {
        Some((cut, _)) => format!("`{}…`", &text[..cut]),
        None => format!("`{text}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tool;
    use async_trait::async_trait;
    use fusion_core::{Error, Result};
    use serde_json::json;

    /// Behaves according to its `mode` argument.
    struct Probe;

    #[async_trait]
    impl Tool for Probe {
        fn name(&self) -> &str {
            "probe"
        }
        fn description(&self) -> &str {
            "test tool"
        }
        fn parameters(&self) -> Value {
            json!({"type": "object", "properties": {"mode": {"type": "string"}}, "required": ["mode"]})
        }
        async fn call(&self, args: Value) -> Result<String> {
            match args["mode"].as_str().unwrap() {
                "ok" => Ok("fine".into()),
                "fail" => Err(Error::Tool {
                    tool: "probe".into(),
                    message: "it broke".into(),
                }),
                "panic" => panic!("boom"),
                _ => std::future::pending().await,
            }
        }
    }

    fn executor() -> ToolExecutor {
        ToolExecutor::new(
            ToolRegistry::new().with(Probe),
            ExecutorConfig {
                tool_timeout: Duration::from_millis(50),
                ..ExecutorConfig::default()
            },
        )
    }

    #[tokio::test]
    async fn every_failure_becomes_an_observation_in_call_order() {
        let calls = [
            ToolCall::new("1", "probe", r#"{"mode":"ok"}"#),
            ToolCall::new("2", "probe", r#"{"mode":"fail"}"#),
            ToolCall::new("3", "probe", r#"{"mode":"panic"}"#),
            ToolCall::new("4", "probe", r#"{"mode":"hang"}"#),
            ToolCall::new("5", "nope", "{}"),
            ToolCall::new("6", "probe", "{mode: ok"),
            ToolCall::new("7", "probe", r#"{"mode": 3}"#),
            ToolCall::new("8", "probe", ""),
            ToolCall::new("9", "probe", "null"),
        ];
        let out = executor().execute_all(&calls).await;
        let ids: Vec<&str> = out.iter().map(|o| o.call_id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
        assert!(out[0].success && out[0].output == "fine");
        assert!(
            out[1..]
                .iter()
                .all(|o| !o.success && o.output.starts_with("Error: "))
        );
        assert!(out[1].output.contains("it broke"), "{}", out[1].output);
        assert!(
            out[2].output.contains("crashed (panicked: boom)"),
            "{}",
            out[2].output
        );
        assert!(
            out[3].output.contains("did not finish within 50ms"),
            "{}",
            out[3].output
        );
        assert!(
            out[4].output.contains("Available tools: probe."),
            "{}",
            out[4].output
        );
        assert!(
            out[5].output.contains("not valid JSON"),
            "{}",
            out[5].output
        );
        assert!(
            out[6].output.contains("`mode` must be a string"),
            "{}",
            out[6].output
        );
        assert!(
            out[7].output.contains("missing required property `mode`"),
            "{}",
            out[7].output
        );
        // `null`, like "", is no arguments at all: the schema says what is missing.
        assert!(
            out[8].output.contains("missing required property `mode`"),
            "{}",
            out[8].output
        );
        assert_eq!(out[1].to_message().tool_call_id.as_deref(), Some("2"));
        // A made-up name of any length is quoted cut, not echoed whole.
        let long = ToolCall::new("9", "T".repeat(100_000), "{}");
        let out = executor().execute_all(&[long]).await;
        assert!(
            out[0].output.contains("no tool named `TTT"),
            "{}",
            out[0].output
        );
        assert!(out[0].output.len() < 500, "{} bytes", out[0].output.len());
    }

    /// Reads `n` as its schema promised: an integer.
    struct Repeat;

    #[async_trait]
    impl Tool for Repeat {
        fn name(&self) -> &str {
            "repeat"
        }
        fn description(&self) -> &str {
            "test tool"
        }
        fn parameters(&self) -> Value {
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
        }
        async fn call(&self, args: Value) -> Result<String> {
            let n = args["n"].as_i64().ok_or_else(|| Error::Tool {
                tool: "repeat".into(),
                message: format!("`n` is not an integer: {}", args["n"]),
            })?;
            Ok("x".repeat(n as usize))
        }
    }

    /// Found by a review: a model's `2.0` for an `"integer"` passed the check (JSON Schema
    /// holds it an integer) but reached the tool as a float, which `as_i64()` refuses.
    #[tokio::test]
    async fn an_integral_float_reaches_an_integer_property_as_an_integer() {
        let executor =
            ToolExecutor::new(ToolRegistry::new().with(Repeat), ExecutorConfig::default());
        let calls = [
            ToolCall::new("1", "repeat", r#"{"n": 2.0}"#),
            ToolCall::new("2", "repeat", r#"{"n": 3}"#),
            ToolCall::new("3", "repeat", r#"{"n": 2.5}"#),
        ];
        let out = executor.execute_all(&calls).await;
        assert!(out[0].success && out[0].output == "xx", "{}", out[0].output);
        assert!(
            out[1].success && out[1].output == "xxx",
            "{}",
            out[1].output
        );
        assert!(
            out[2]
                .output
                .contains("`n` must be an integer but is a number"),
            "{}",
            out[2].output
        );
    }

    /// Found by a review: a tool's output was kept whole, so one returning 100 MB went
    /// into the session and every later request.
    #[test]
    fn a_long_output_keeps_its_start_and_end_within_the_bound() {
        // Characters of 1 to 4 bytes, so that every cut lands inside some.
        let text: String = (0..20_000).map(|i| ['a', 'é', '€', '😀'][i % 4]).collect();
        for max in [0, 10, 250, 256, 257, 1000, 4099, 33_333, text.len() - 1] {
            let kept = bounded(text.clone(), max);
            assert!(kept.len() <= max.max(250), "{} bytes for {max}", kept.len());
            let (head, rest) = kept.split_once("\n\n[tool output cut: ").unwrap();
            let (note, tail) = rest.split_once("]\n\n").unwrap();
            assert!(text.starts_with(head) && text.ends_with(tail), "{max}");
            let left_out = text.len() - head.len() - tail.len();
            assert!(
                note.starts_with(&format!("{left_out} of its {} bytes", text.len())),
                "{note}"
            );
            assert!(note.contains(&format!("at most {max} bytes")), "{note}");
            if max >= 1000 {
                assert!(head.len() >= tail.len() && !tail.is_empty(), "{max}");
                assert!(kept.len() + 32 > max, "{} bytes for {max}", kept.len());
            }
        }
        assert_eq!(bounded(text.clone(), text.len()), text);
        assert_eq!(bounded(String::new(), 0), "");
    }

    /// Takes one string as its arguments.
    struct Say;

    #[async_trait]
    impl Tool for Say {
        fn name(&self) -> &str {
            "say"
        }
        fn description(&self) -> &str {
            "says its arguments"
        }
        fn parameters(&self) -> Value {
            json!({"type": "string"})
        }
        async fn call(&self, args: Value) -> Result<String> {
            Ok(args.as_str().unwrap_or_default().to_owned())
        }
    }

    /// Found by a hunt: a text-mode bare input for a tool whose schema is one string was
    /// refused as not JSON, where the text is the very string the schema asks for.
    #[tokio::test]
    async fn a_bare_text_input_is_the_string_a_one_string_schema_takes() {
        let executor = ToolExecutor::new(
            ToolRegistry::new().with(Say).with(Probe),
            ExecutorConfig::default(),
        );
        let said = executor.react_arguments("say", "hello there".to_owned());
        assert_eq!(said, r#""hello there""#);
        let outcome = executor.execute(&ToolCall::new("1", "say", said)).await;
        assert!(outcome.success, "{}", outcome.output);
        assert_eq!(outcome.output, "hello there");
        assert_eq!(
            executor.react_arguments("probe", "ok".to_owned()),
            r#"{"mode":"ok"}"#
        );
        for kept in ["{\"mode\": ok", "[1"] {
            assert_eq!(executor.react_arguments("say", kept.to_owned()), kept);
        }
    }

    /// Takes one string or number as its arguments.
    struct Count;

    #[async_trait]
    impl Tool for Count {
        fn name(&self) -> &str {
            "count"
        }
        fn description(&self) -> &str {
            "counts"
        }
        fn parameters(&self) -> Value {
            json!({"type": ["string", "number"]})
        }
        async fn call(&self, args: Value) -> Result<String> {
            Ok(args.to_string())
        }
    }

    /// Found by a second review of 9755ece: a bare `Action Input: 42` (or `true`) for a
    /// tool's string was refused as a number, where `042`, no JSON, was the string: text
    /// in ReAct mode either way, and a string can only be meant. It is given as written;
    /// a schema that takes the value as it is gets it so.
    #[tokio::test]
    async fn a_bare_number_is_the_text_a_string_takes() {
        let executor = ToolExecutor::new(
            ToolRegistry::new().with(Say).with(Probe).with(Count),
            ExecutorConfig::default(),
        );
        for (tool, input, sent) in [
            ("say", "42", r#""42""#),
            ("say", " -1.50e3 ", r#""-1.50e3""#),
            ("probe", "7", r#"{"mode":"7"}"#),
            ("probe", "true", r#"{"mode":"true"}"#),
            ("count", "42", "42"),
            ("say", "null", "null"),
        ] {
            let arguments = executor.react_arguments(tool, input.to_owned());
            assert_eq!(arguments, sent, "{tool} {input}");
        }
        let said = executor.react_arguments("say", "42".to_owned());
        let outcome = executor.execute(&ToolCall::new("1", "say", said)).await;
        assert!(outcome.success, "{}", outcome.output);
        assert_eq!(outcome.output, "42");
        let counted = executor.react_arguments("count", "42".to_owned());
        let outcome = executor
            .execute(&ToolCall::new("2", "count", counted))
            .await;
        assert_eq!(outcome.output, "42");
    }

    /// Found by a review of 9755ece: an object written wrong (`tool(path="a")` gives
    /// `path="a"`, a model that left out the braces `"path": "a"`) was taken whole as the
    /// one property's value, running another call than the model meant (`command: ls` as
    /// the command). Text that starts by naming a property is refused as not JSON.
    #[tokio::test]
    async fn a_bare_input_naming_a_property_is_no_value_of_it() {
        let executor =
            ToolExecutor::new(ToolRegistry::new().with(Probe), ExecutorConfig::default());
        for kept in [
            "mode=\"ok\"",
            "\"mode\": \"ok\"",
            "mode: ok",
            " 'mode' = ok",
            "\"mode: ok\"",
        ] {
            assert_eq!(executor.react_arguments("probe", kept.to_owned()), kept);
            let outcome = executor.execute(&ToolCall::new("1", "probe", kept)).await;
            assert!(
                !outcome.success && outcome.output.contains("\"required\""),
                "{kept}: {}",
                outcome.output
            );
        }
        // Text that only begins like the name is a value.
        for (text, sent) in [
            ("model: x", r#"{"mode":"model: x"}"#),
            ("ok", r#"{"mode":"ok"}"#),
        ] {
            assert_eq!(executor.react_arguments("probe", text.to_owned()), sent);
        }
    }
}
