//! Time to the first text delta: what the library adds, from `send_message_stream` to its
//! first `AgentEvent::TextDelta`, over a raw reqwest read of the same stream.
//!
//! The session holds `history` messages; each sample is one turn. The raw side posts the
//! body the library sends for that turn (encoded once, untimed) with a bare `reqwest`
//! client and reads the server-sent events until the first chunk with text. The library
//! side also stores the user message, builds the request view, encodes the body and parses
//! the events. The two alternate, sample by sample, against the same loopback server,
//! which streams its answer word by word.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fusion_agent::testing::{MockLlmServer, MockReply};
use fusion_agent::{
    AgentEvent, AgentSession, ChatRequest, OpenAiClient, OpenAiConfig, ToolRegistry,
};
use fusion_core::ChatMessage;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use crate::backends::Backend;
use crate::stats::Stats;
use crate::workload;

/// The user message of every timed turn.
const QUESTION: &str = "Summarise the conversation so far.";

/// The server's answer, streamed one word per chunk.
const ANSWER: &str = "The first words of an answer that goes on for a while.";

/// Time to the first text at one history size.
#[derive(Debug, Clone, Serialize)]
pub struct FirstDeltaPoint {
    /// Messages in the session when each timed turn starts.
    pub history: usize,
    /// A raw reqwest read of the same stream: post to first text chunk, ms.
    pub raw: Stats,
    /// `send_message_stream` to its first `TextDelta`, ms.
    pub library: Stats,
    /// Library minus raw, sample by sample, ms: what the library adds.
    pub added: Stats,
}

/// Measures `(history size, samples)` pairs on `backend`, namespace `first_delta`.
pub async fn run(backend: &Backend, plan: &[(usize, usize)]) -> Result<Vec<FirstDeltaPoint>> {
    let server = MockLlmServer::start().await;
    server.set_record_requests(false);
    server.set_default(MockReply::text(ANSWER));
    let client = OpenAiConfig::new("mock-model")
        .base_url(server.base_url())
        .max_retries(0)
        .build()?;
    let raw_http = fusion_agent::http_client_builder()?.build()?;
    let endpoint = format!("{}/chat/completions", server.base_url());
    let storage = backend.open("first_delta").await?;
    let mut points = Vec::new();
    for &(history, samples) in plan {
        let id = format!("first-delta-{history}");
        let seed = workload::messages(history);
        storage.append(&id, &seed).await?;
        let mut session = AgentSession::builder(id.as_str())
            .llm(Arc::new(client.clone()))
            .storage(storage.clone())
            .tools(ToolRegistry::new())
            .build()
            .await?;
        let body = streaming_body(&client, &seed)?;
        let (mut raw, mut library, mut added) = (Vec::new(), Vec::new(), Vec::new());
        // Sample 0 is an untimed warm-up (connections, first allocations).
        for sample in 0..=samples {
            let raw_first = sample % 2 == 0;
            let mut pair = [Duration::ZERO; 2];
            for side in if raw_first { [0, 1] } else { [1, 0] } {
                pair[side] = if side == 0 {
                    raw_read(&raw_http, &endpoint, &body).await?
                } else {
                    let took = library_turn(&mut session).await?;
                    storage.truncate(&id, history).await?;
                    session.reload().await?;
                    took
                };
            }
            if sample > 0 {
                raw.push(pair[0]);
                library.push(pair[1]);
                added.push(pair[1].saturating_sub(pair[0]));
            }
        }
        points.push(FirstDeltaPoint {
            history,
            raw: Stats::of(&raw),
            library: Stats::of(&library),
            added: Stats::of(&added),
        });
    }
    Ok(points)
}

/// The body the library sends for a turn on `seed`: the history and the question, asking
/// for a stream with usage (the raw side must ask the server for exactly the same work).
fn streaming_body(client: &OpenAiClient, seed: &[ChatMessage]) -> Result<Vec<u8>> {
    let question = ChatMessage::user(QUESTION);
    let request = ChatRequest {
        messages: seed.iter().chain([&question]).map(Cow::Borrowed).collect(),
        ..Default::default()
    };
    let mut body: Value = serde_json::from_slice(&client.request_body(&request)?)?;
    body["stream"] = Value::Bool(true);
    body["stream_options"] = serde_json::json!({"include_usage": true});
    Ok(serde_json::to_vec(&body)?)
}

/// Posts `body` and reads the event stream until a chunk carries text; returns how long
/// that took, then reads the rest (untimed) so the connection goes back to the pool.
async fn raw_read(http: &reqwest::Client, endpoint: &str, body: &[u8]) -> Result<Duration> {
    let started = Instant::now();
    let response = http
        .post(endpoint)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await?
        .error_for_status()?;
    let mut bytes = response.bytes_stream();
    let mut seen = Vec::new();
    let mut took = None;
    while let Some(chunk) = bytes.next().await {
        seen.extend_from_slice(&chunk?);
        if took.is_none() && has_text(&seen) {
            took = Some(started.elapsed());
        }
    }
    took.context("the raw stream carried no text")
}

/// Whether the events read so far hold a chunk with non-empty `delta.content`.
fn has_text(events: &[u8]) -> bool {
    String::from_utf8_lossy(events)
        .split("\n\n")
        .filter_map(|event| event.trim().strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .any(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|text| !text.is_empty())
        })
}

/// One turn of `session`; returns the time to its first text delta, after checking the
/// whole answer arrived.
async fn library_turn(session: &mut AgentSession) -> Result<Duration> {
    let started = Instant::now();
    let mut took = None;
    let mut events = session.send_message_stream(QUESTION);
    while let Some(event) = events.next().await {
        match event? {
            AgentEvent::TextDelta { .. } if took.is_none() => took = Some(started.elapsed()),
            AgentEvent::Finished(result) => {
                ensure!(
                    result.result == ANSWER,
                    "unexpected answer {:?}",
                    result.result
                );
                return took.context("the turn streamed no text");
            }
            _ => {}
        }
    }
    bail!("the turn's stream ended without its result")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_found_only_in_a_chunk_with_content() {
        let role_only =
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        assert!(!has_text(role_only));
        let with_text = [
            &role_only[..],
            b"data: {\"choices\":[{\"delta\":{\"content\":\"The \"}}]}\n\n",
        ]
        .concat();
        assert!(has_text(&with_text));
        assert!(!has_text(b"data: {\"choices\":[{\"delta\":{\"cont"));
    }
}
