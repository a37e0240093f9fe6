//! How a scripted reply becomes the event sequence of a streamed chat completion, in
//! OpenAI's `chat.completion.chunk` format: the pure part of streaming, with no I/O and
//! no timing (`sse.rs` writes the result).
//!
//! A complete reply is cut up the way real servers cut it: text into words (each with the
//! whitespace after it), tool-call arguments into a few fragments, one of them ending
//! inside an escape sequence of the JSON text when there is one, so a client that decodes
//! fragments on their own instead of joining them first is caught.

use serde_json::{Value, json};

use super::reply::{MockDelta, MockStreamEnd, MockToolCall};

/// Into how many fragments (at most, before the escape-sequence cut) tool-call arguments
/// are split.
const ARGUMENT_FRAGMENTS: usize = 3;

/// What every chunk of one reply repeats, and what the usage chunk reports.
pub(super) struct ReplyInfo {
    /// The completion id, the same in every chunk.
    pub id: String,
    /// The model name echoed from the request.
    pub model: Value,
    /// The prompt's size in tokens, roughly.
    pub prompt_tokens: usize,
    /// Whether the request asked for `stream_options.include_usage`.
    pub include_usage: bool,
}

/// How a stream ends after its deltas.
pub(super) enum Ending {
    /// The reply is complete: a chunk with this `finish_reason`, the usage chunk when the
    /// request asked for it, then `[DONE]`.
    Finish(&'static str),
    /// The reply breaks off as a [`MockReply::Partial`](super::MockReply::Partial) says.
    BreakOff(MockStreamEnd),
}

/// The events of one streamed reply and what follows the last of them.
#[derive(Debug)]
pub(super) struct StreamPlan {
    /// The payloads of the `data:` events, in order: JSON chunks, an error object, or
    /// `[DONE]`.
    pub events: Vec<String>,
    /// How many leading events form the "first part" a held stream sends before it waits
    /// for its gate: the role chunk and the first delta.
    pub first_part: usize,
    /// What the server does after the last event.
    pub tail: Tail,
}

/// What the server does after a stream's last event.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tail {
    /// Ends the body normally.
    End,
    /// Sends nothing more and keeps the connection open until the client goes away.
    Stall,
    /// Drops the connection without ending the body.
    Close,
}

/// The deltas a streaming server sends for a complete reply: the text word by word, then
/// each call's opening and its arguments in fragments. `call_id` names a call the script
/// left unnamed.
pub(super) fn reply_deltas(
    content: &str,
    calls: &[MockToolCall],
    mut call_id: impl FnMut(&MockToolCall) -> String,
) -> Vec<MockDelta> {
    let mut deltas: Vec<MockDelta> = split_words(content)
        .into_iter()
        .map(MockDelta::text)
        .collect();
    for (index, call) in calls.iter().enumerate() {
        deltas.push(MockDelta::tool_call_start(
            index,
            call_id(call),
            call.name.as_str(),
        ));
        deltas.extend(
            split_arguments(&call.arguments)
                .into_iter()
                .map(|fragment| MockDelta::tool_call_arguments(index, fragment)),
        );
    }
    deltas
}

/// The events for `deltas` under `info`, ending as `ending` says.
pub(super) fn plan(deltas: &[MockDelta], ending: Ending, info: &ReplyInfo) -> StreamPlan {
    // OpenAI opens every stream with the role and empty content, before any token.
    let mut events = vec![chunk(
        info,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    events.extend(
        deltas
            .iter()
            .map(|delta| chunk(info, delta_json(delta), None)),
    );
    let first_part = events.len().min(2);
    let tail = match ending {
        Ending::Finish(reason) => {
            events.push(chunk(info, json!({}), Some(reason)));
            if info.include_usage {
                events.push(usage_chunk(info, deltas));
            }
            events.push("[DONE]".to_owned());
            Tail::End
        }
        Ending::BreakOff(MockStreamEnd::Stall) => Tail::Stall,
        Ending::BreakOff(MockStreamEnd::Close) => Tail::Close,
        Ending::BreakOff(MockStreamEnd::Error(message)) => {
            events.push(json!({"error": {"message": message, "type": "server_error"}}).to_string());
            Tail::End
        }
    };
    StreamPlan {
        events,
        first_part,
        tail,
    }
}

/// `text` cut after each run of whitespace: words with the whitespace that follows them
/// (leading whitespace is a piece of its own). Empty text has no pieces.
pub(super) fn split_words(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut after_whitespace = false;
    for (at, c) in text.char_indices() {
        if after_whitespace && !c.is_whitespace() {
            pieces.push(&text[start..at]);
            start = at;
        }
        after_whitespace = c.is_whitespace();
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// `arguments` in a few fragments, cut on char boundaries, one cut falling just after the
/// first backslash so an escape sequence (`\"`, `\n`, `\u00e9`) spans two fragments. Empty
/// arguments have no fragments.
pub(super) fn split_arguments(arguments: &str) -> Vec<&str> {
    let mut cuts: Vec<usize> = (1..ARGUMENT_FRAGMENTS)
        .map(|k| arguments.floor_char_boundary(arguments.len() * k / ARGUMENT_FRAGMENTS))
        .collect();
    // A backslash is one byte, so the index after it is a char boundary.
    cuts.extend(arguments.find('\\').map(|at| at + 1));
    cuts.retain(|&cut| cut > 0 && cut < arguments.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut fragments = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        fragments.push(&arguments[start..cut]);
        start = cut;
    }
    if start < arguments.len() {
        fragments.push(&arguments[start..]);
    }
    fragments
}

/// One `chat.completion.chunk` carrying `delta` (and `finish_reason` when given).
fn chunk(info: &ReplyInfo, delta: Value, finish_reason: Option<&str>) -> String {
    let mut chunk = json!({
        "id": info.id,
        "object": "chat.completion.chunk",
        "created": 0,
        "model": info.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    });
    // With include_usage OpenAI puts `"usage": null` in every chunk but the last; a client
    // must accept it.
    if info.include_usage {
        chunk["usage"] = Value::Null;
    }
    chunk.to_string()
}

/// The `delta` object of one scripted delta.
fn delta_json(delta: &MockDelta) -> Value {
    match delta {
        MockDelta::Text(text) => json!({"content": text}),
        MockDelta::ToolCallStart { index, id, name } => json!({"tool_calls": [{
            "index": index, "id": id, "type": "function",
            "function": {"name": name, "arguments": ""},
        }]}),
        MockDelta::ToolCallArguments { index, fragment } => json!({"tool_calls": [{
            "index": index, "function": {"arguments": fragment},
        }]}),
    }
}

/// The closing usage chunk: no choices, rough token counts (4 bytes a token) so clients
/// that log usage have something real.
fn usage_chunk(info: &ReplyInfo, deltas: &[MockDelta]) -> String {
    let completion_len: usize = deltas
        .iter()
        .map(|delta| match delta {
            MockDelta::Text(text) => text.len(),
            MockDelta::ToolCallStart { id, name, .. } => id.len() + name.len(),
            MockDelta::ToolCallArguments { fragment, .. } => fragment.len(),
        })
        .sum();
    let completion_tokens = completion_len / 4 + 1;
    json!({
        "id": info.id,
        "object": "chat.completion.chunk",
        "created": 0,
        "model": info.model,
        "choices": [],
        "usage": {"prompt_tokens": info.prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": info.prompt_tokens + completion_tokens},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(include_usage: bool) -> ReplyInfo {
        ReplyInfo {
            id: "chatcmpl-mock-1".to_owned(),
            model: Value::from("mock-model"),
            prompt_tokens: 10,
            include_usage,
        }
    }

    fn parsed(plan: &StreamPlan) -> Vec<Value> {
        plan.events
            .iter()
            .filter(|event| *event != "[DONE]")
            .map(|event| serde_json::from_str(event).unwrap())
            .collect()
    }

    /// The `delta` of every choice-carrying chunk.
    fn deltas_of(chunks: &[Value]) -> Vec<&Value> {
        chunks
            .iter()
            .filter_map(|chunk| chunk["choices"].get(0))
            .map(|choice| &choice["delta"])
            .collect()
    }

    #[test]
    fn words_keep_the_whitespace_that_follows_them() {
        assert_eq!(
            split_words("Hello there,\n  world."),
            ["Hello ", "there,\n  ", "world."]
        );
        assert_eq!(split_words("  lead"), ["  ", "lead"]);
        assert!(split_words("").is_empty());
        for text in ["héllo wörld ", "one", " \t\n", "a  b\u{3000}c"] {
            assert_eq!(split_words(text).concat(), text);
        }
    }

    #[test]
    fn arguments_split_inside_an_escape_sequence_and_rejoin_exactly() {
        let arguments = r#"{"path":"say \"hi\".txt","mode":"w"}"#;
        let fragments = split_arguments(arguments);
        assert!(fragments.len() >= 3, "{fragments:?}");
        assert_eq!(fragments.concat(), arguments);
        assert!(fragments.iter().any(|f| f.ends_with('\\')), "{fragments:?}");
    }

    #[test]
    fn arguments_split_on_char_boundaries() {
        // Slicing off a char boundary would panic; every cut must land between chars.
        let arguments = r#"{"text":"ééééééé…"}"#;
        assert_eq!(split_arguments(arguments).concat(), arguments);
        assert_eq!(split_arguments("é"), ["é"]);
        assert!(split_arguments("").is_empty());
    }

    #[test]
    fn a_text_reply_streams_role_words_finish_usage_and_done() {
        let deltas = reply_deltas("Hi there you", &[], |_| unreachable!("no calls"));
        let plan = plan(&deltas, Ending::Finish("stop"), &info(true));
        assert_eq!(plan.events.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(plan.tail, Tail::End);
        assert_eq!(plan.first_part, 2);
        let chunks = parsed(&plan);
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = deltas_of(&chunks)
            .iter()
            .filter_map(|delta| delta["content"].as_str())
            .collect();
        assert_eq!(text, "Hi there you");
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        let usage = &chunks[chunks.len() - 1];
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["prompt_tokens"], 10);
        assert!(usage["usage"]["completion_tokens"].as_u64() > Some(0));
        assert!(chunks.iter().all(|chunk| chunk["id"] == "chatcmpl-mock-1"));
    }

    #[test]
    fn without_include_usage_there_is_no_usage_chunk() {
        let deltas = reply_deltas("Hi", &[], |_| unreachable!("no calls"));
        let chunks = parsed(&plan(&deltas, Ending::Finish("stop"), &info(false)));
        assert!(chunks.iter().all(|chunk| chunk.get("usage").is_none()));
        assert!(chunks.iter().all(|chunk| chunk["choices"] != json!([])));
    }

    #[test]
    fn tool_calls_stream_an_opening_then_argument_fragments() {
        let calls = [
            MockToolCall::new("read_file", r#"{"path":"a\nb"}"#),
            MockToolCall {
                id: Some("call_given".to_owned()),
                ..MockToolCall::new("ls", "{}")
            },
        ];
        let mut numbered = 0;
        let deltas = reply_deltas("Looking.", &calls, |call| {
            call.id.clone().unwrap_or_else(|| {
                numbered += 1;
                format!("call_{numbered}")
            })
        });
        let plan = plan(&deltas, Ending::Finish("tool_calls"), &info(false));
        let chunks = parsed(&plan);
        let deltas = deltas_of(&chunks);
        assert_eq!(deltas[1]["content"], "Looking.");
        assert_eq!(
            deltas[2]["tool_calls"][0],
            json!({"index": 0, "id": "call_1", "type": "function",
                   "function": {"name": "read_file", "arguments": ""}})
        );
        for (index, id, arguments) in [(0, "call_1", r#"{"path":"a\nb"}"#), (1, "call_given", "{}")]
        {
            let calls: Vec<&Value> = deltas
                .iter()
                .filter_map(|delta| delta["tool_calls"].get(0))
                .filter(|call| call["index"] == index)
                .collect();
            assert_eq!(calls[0]["id"], id);
            let joined: String = calls
                .iter()
                .filter_map(|call| call["function"]["arguments"].as_str())
                .collect();
            assert_eq!(joined, arguments);
        }
        let finish = chunks.last().unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn a_partial_reply_breaks_off_without_finish_or_done() {
        let deltas = [
            MockDelta::text("Let me "),
            MockDelta::tool_call_start(0, "call_9", "read_file"),
            MockDelta::tool_call_arguments(0, r#"{"pa"#),
        ];
        for (end, tail) in [
            (MockStreamEnd::Stall, Tail::Stall),
            (MockStreamEnd::Close, Tail::Close),
        ] {
            let plan = plan(&deltas, Ending::BreakOff(end), &info(true));
            assert_eq!(plan.tail, tail);
            assert_eq!(plan.events.len(), 1 + deltas.len());
            let chunks = parsed(&plan);
            assert!(
                chunks
                    .iter()
                    .all(|chunk| chunk["choices"][0]["finish_reason"].is_null())
            );
        }
        let plan = plan(
            &deltas,
            Ending::BreakOff(MockStreamEnd::Error("overloaded".to_owned())),
            &info(true),
        );
        assert_eq!(plan.tail, Tail::End);
        let last: Value = serde_json::from_str(plan.events.last().unwrap()).unwrap();
        assert_eq!(
            last,
            json!({"error": {"message": "overloaded", "type": "server_error"}})
        );
    }

    #[test]
    fn an_empty_stream_has_only_the_role_chunk_as_its_first_part() {
        let plan = plan(&[], Ending::BreakOff(MockStreamEnd::Stall), &info(false));
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.first_part, 1);
    }
}
