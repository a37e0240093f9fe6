//! Agent overhead: the library's own time per agent iteration against an instant LLM.
//!
//! `MockLlmServer` answers from a rule with no delay: a tool call when the conversation
//! ends with the user, a final answer once the tool result is in. A turn is therefore two
//! iterations (two requests) and runs the whole loop: request building and JSON encoding
//! of the history, HTTP on loopback, reply parsing, tool dispatch and four appends. The
//! server's own handler time is subtracted; what remains is Fusion plus the HTTP stack.
//!
//! Each history size is measured three ways, turn by turn in rotation so all see the same
//! machine state: with the reply in one JSON body (`OpenAiConfig::stream(false)`); streamed
//! as server-sent events (the default), one chunk per event as model servers send them;
//! and streamed with the same events delivered as one body, as a buffering proxy passes them
//! on (`MockLlmServer::buffer_streams`). The last isolates Fusion's own streaming code
//! (reading events, assembling the reply, the deltas) from the HTTP stack's cost per chunk.
//! The mock server writes a stream's chunks after its handler returns, so that part of the
//! server's work counts as library time in the streaming figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use async_trait::async_trait;
use fusion_agent::testing::{MockLlmServer, MockReply};
use fusion_agent::{AgentSession, LlmClient, OpenAiConfig, Tool, ToolRegistry};
use fusion_core::ChatMessage;
use serde::Serialize;
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::stats::{Stats, millis};
use crate::workload;

/// The overhead at one history size.
#[derive(Debug, Clone, Serialize)]
pub struct AgentPoint {
    /// Messages in the session when each timed turn starts.
    pub history: usize,
    /// Timed turns.
    pub turns: usize,
    /// LLM requests over those turns.
    pub iterations: usize,
    /// Per-iteration library time (turn time minus server time, over iterations) with each
    /// reply in one JSON body, ms.
    pub library: Stats,
    /// Mean server handler time per iteration, ms (already subtracted above).
    pub server_mean_ms: f64,
    /// The same, with each reply streamed, ms.
    pub streaming: Stats,
    /// Mean server handler time per streamed iteration, ms (already subtracted above).
    pub streaming_server_mean_ms: f64,
    /// The same, with each stream's events delivered as one body, ms.
    pub streaming_one_body: Stats,
    /// Mean server handler time per such iteration, ms (already subtracted above).
    pub streaming_one_body_server_mean_ms: f64,
}

/// One way of talking to the model, and what its timed turns measured.
struct Variant<'s> {
    server: &'s MockLlmServer,
    session: AgentSession,
    id: String,
    samples: Vec<Duration>,
    iterations: usize,
    server_total: Duration,
}

/// A tool that does nothing, so the measurement is the loop around it.
struct Noop;

#[async_trait]
impl Tool for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn description(&self) -> &str {
        "Does nothing and says ok."
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }
    async fn call(&self, _args: Value) -> fusion_core::Result<String> {
        Ok("ok".into())
    }
}

/// One tool call, then a final answer once the conversation ends with a tool result.
fn rule(request: &Value) -> MockReply {
    let last_role = request["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .and_then(|message| message["role"].as_str());
    if last_role == Some("tool") {
        MockReply::text("done")
    } else {
        MockReply::tool_call("noop", "{}")
    }
}

/// Measures `(history size, timed turns)` pairs on `backend`, namespace `agent`.
pub async fn run(backend: &Backend, plan: &[(usize, usize)]) -> Result<Vec<AgentPoint>> {
    let server = MockLlmServer::start_with(rule).await;
    let buffering = MockLlmServer::start_with(rule).await;
    buffering.buffer_streams(true);
    for server in [&server, &buffering] {
        // Recording 10,000-message bodies would add the server's copying to its time and
        // grow memory with every request.
        server.set_record_requests(false);
    }
    let client = |server: &MockLlmServer, stream: bool| -> Result<Arc<dyn LlmClient>> {
        Ok(Arc::new(
            OpenAiConfig::new("mock-model")
                .base_url(server.base_url())
                .max_retries(0)
                .stream(stream)
                .build()?,
        ))
    };
    let ways = [
        (&server, client(&server, false)?, "whole"),
        (&server, client(&server, true)?, "stream"),
        (&buffering, client(&buffering, true)?, "stream-one-body"),
    ];
    let storage = backend.open("agent").await?;
    let mut points = Vec::new();
    for &(history, turns) in plan {
        let mut variants = Vec::new();
        for (server, llm, name) in &ways {
            let id = format!("agent-{history}-{name}");
            storage.append(&id, &seed_history(history)).await?;
            let session = AgentSession::builder(id.as_str())
                .llm(llm.clone())
                .storage(storage.clone())
                .tools(ToolRegistry::new().with(Noop))
                .build()
                .await?;
            variants.push(Variant {
                server,
                session,
                id,
                samples: Vec::with_capacity(turns),
                iterations: 0,
                server_total: Duration::ZERO,
            });
        }
        // Turn 0 is an untimed warm-up (connection setup, first allocation of buffers).
        for turn in 0..=turns {
            // Rotate which goes first, so none always follows another's work.
            for step in 0..variants.len() {
                let variant = &mut variants[(turn + step) % ways.len()];
                timed_turn(variant, turn > 0).await?;
                // Back to exactly `history` messages, so every turn sees the same history
                // (untimed).
                storage.truncate(&variant.id, history).await?;
                variant.session.reload().await?;
            }
        }
        let [whole, streamed, one_body] = [&variants[0], &variants[1], &variants[2]];
        points.push(AgentPoint {
            history,
            turns,
            iterations: whole.iterations,
            library: Stats::of(&whole.samples),
            server_mean_ms: whole.server_mean_ms(),
            streaming: Stats::of(&streamed.samples),
            streaming_server_mean_ms: streamed.server_mean_ms(),
            streaming_one_body: Stats::of(&one_body.samples),
            streaming_one_body_server_mean_ms: one_body.server_mean_ms(),
        });
    }
    Ok(points)
}

impl Variant<'_> {
    /// Mean server handler time per timed iteration, ms.
    fn server_mean_ms(&self) -> f64 {
        millis(self.server_total) / self.iterations.max(1) as f64
    }
}

/// One turn of `variant`, recorded when `timed`.
async fn timed_turn(variant: &mut Variant<'_>, timed: bool) -> Result<()> {
    let server = variant.server;
    let server_before = server.server_time();
    let started = Instant::now();
    let result = variant
        .session
        .send_message("Call the noop tool, then say done.")
        .await?;
    let elapsed = started.elapsed();
    let server_spent = server.server_time() - server_before;
    ensure!(
        result.success && result.iterations == 2,
        "agent: expected a tool call then an answer, got {result:?}"
    );
    if timed {
        let per_iteration = u32::try_from(result.iterations)?;
        variant
            .samples
            .push(elapsed.saturating_sub(server_spent) / per_iteration);
        variant.iterations += result.iterations;
        variant.server_total += server_spent;
    }
    Ok(())
}

/// The first `n` canonical messages. Where the cut falls between a tool call and its
/// result, the dangling call is dropped (its text kept), so no turn has to answer it with
/// an "interrupted" result and every timed turn does the same work.
fn seed_history(n: usize) -> Vec<ChatMessage> {
    let mut history = workload::messages(n);
    if let Some(last) = history.last_mut() {
        last.tool_calls.clear();
    }
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_calls_the_tool_first_and_answers_after_its_result() {
        let asking = json!({"messages": [{"role": "user", "content": "go"}]});
        assert_eq!(rule(&asking), MockReply::tool_call("noop", "{}"));
        let answered = json!({"messages": [{"role": "tool", "content": "ok"}]});
        assert_eq!(rule(&answered), MockReply::text("done"));
    }

    #[test]
    fn seeded_histories_end_without_a_dangling_tool_call() {
        for n in [10, 1000, 10_000] {
            let history = seed_history(n);
            assert_eq!(history.len(), n);
            assert!(!history[n - 1].has_tool_calls());
        }
    }
}
