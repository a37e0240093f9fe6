//! Reads a streamed chat completion: server-sent events in, [`ChatDelta`]s out.
//!
//! The bytes go through [`SseParser`] (which handles events cut anywhere, comments and
//! line endings, in time linear in the body); each event's data is a
//! `chat.completion.chunk` read with the same lenient helpers as a whole reply ([`wire`]).
//! The [`Assembler`] keeps the reply so far: text, and tool calls by `index`, since calls
//! may be streamed interleaved, with their id and name in the first piece and the
//! arguments in many; a piece bringing a new id to an index whose call has another one
//! starts a new call (Ollama numbers every parallel call 0), and servers that leave out
//! `index` have their pieces placed by id ([`slots`]). Unlike the whole-reply decoder,
//! this one must also tell a finished reply from one whose connection was cut.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use fusion_core::{ChatMessage, ToolCall};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::time::Instant;

use super::error::{self, Context, Failure};
use super::sse::{InvalidUtf8, SseEvent, SseParser};
use super::wire::{self, PieceIndex, WireChunk, WireToolCallDelta};
use crate::llm::{ChatDelta, ChatResponse, Usage};

mod slots;

/// Why no more events can be read, short of the body's end.
#[derive(Debug)]
enum BodyError {
    /// Reading failed (connection reset, broken chunked encoding...).
    Transport(reqwest::Error),
    /// Nothing arrived within the idle timeout.
    Stalled,
    /// Nothing of the reply arrived within the progress timeout, however much else did.
    NoProgress,
    /// One event went on past [`MAX_EVENT_BYTES`] without ending.
    EventTooLong,
    /// The body is not UTF-8, so not an event stream.
    NotUtf8(InvalidUtf8),
}

/// The most one streamed reply may assemble (its text, refusal, tool-call names, ids and
/// arguments, and [`CALL_OVERHEAD`] per call):
/// far more than any model writes in one reply (a million tokens is about 4 MiB of text),
/// so a stream that never ends is stopped with an error rather than read until the memory
/// runs out. It caps what is kept, not the body: OpenAI sends each token in an event of
/// its own, some 270 bytes of JSON, so the body of a long but real reply (64,000 tokens:
/// 256 KiB of text, 17 MB of body) is many times its text.
pub(super) const MAX_REPLY_BYTES: usize = 16 << 20;

/// What one tool call counts against [`MAX_REPLY_BYTES`] besides its name, id and
/// arguments (about what it takes in memory), so that ever more empty calls are stopped
/// too.
const CALL_OVERHEAD: usize = 64;

/// The most one event (its unfinished line and the data lines before it) may take before
/// it ends, so that a server sending one endless line cannot exhaust the memory either.
/// Four times [`MAX_REPLY_BYTES`]: one event may carry a whole reply (Ollama sends a tool
/// call's arguments in one piece), and JSON escapes make it longer than its text.
pub(super) const MAX_EVENT_BYTES: usize = 4 * MAX_REPLY_BYTES;

/// A piece of the body as the HTTP client gave it, boxed (its buffer type is not ours to
/// name).
type BodyPiece = Box<dyn AsRef<[u8]> + Send>;

/// One streamed reply being read: yields its deltas, then [`ChatDelta::Done`] or a
/// [`Failure`], then nothing.
pub(super) struct SseReply<'a> {
    body: BoxStream<'a, Result<BodyPiece, reqwest::Error>>,
    /// The longest pause allowed between two pieces of the body.
    idle_timeout: Duration,
    /// When the reply last made progress (or began): text, reasoning, a tool-call piece,
    /// the finish reason. The context's progress timeout runs from here.
    progressed_at: Instant,
    /// Bytes of body received so far, for the cut-off message.
    received: usize,
    parser: SseParser,
    ctx: Context<'a>,
    assembler: Assembler,
    /// Deltas of the last chunk not yet handed out (a chunk may hold several).
    ready: VecDeque<ChatDelta>,
    /// Whether a delta was handed out: an error event after that is final (a retry would
    /// show the reply's start twice).
    delivered: bool,
    finished: bool,
}

impl<'a> SseReply<'a> {
    /// Reads `body`, failing when it pauses longer than `idle_timeout` between pieces.
    pub fn new<B: AsRef<[u8]> + Send + 'static>(
        body: impl Stream<Item = Result<B, reqwest::Error>> + Send + 'a,
        idle_timeout: Duration,
        ctx: Context<'a>,
    ) -> Self {
        Self {
            body: body.map_ok(|piece| Box::new(piece) as BodyPiece).boxed(),
            idle_timeout,
            progressed_at: Instant::now(),
            received: 0,
            parser: SseParser::default(),
            ctx,
            assembler: Assembler::default(),
            ready: VecDeque::new(),
            delivered: false,
            finished: false,
        }
    }

    /// The next delta, the failure that ended the reply, or `None` after either.
    pub async fn next(&mut self) -> Option<Result<ChatDelta, Failure>> {
        loop {
            if let Some(delta) = self.ready.pop_front() {
                self.delivered = true;
                return Some(Ok(delta));
            }
            if self.finished {
                return None;
            }
            let complete = self.assembler.finish_reason.is_some();
            let outcome = match self.next_event().await {
                Ok(Some(event)) => self.read_event(event),
                // Once the model said why it stopped, the reply is whole: a connection
                // that then closes, breaks, stalls or sends bytes that are not text before
                // `[DONE]` (or the usage chunk) loses nothing, as an unreadable event then
                // does not (`read_event`).
                Err(BodyError::NotUtf8(err)) if complete => {
                    tracing::warn!(
                        endpoint = self.ctx.endpoint,
                        offset = err.offset,
                        "ignoring bytes that are not UTF-8 after the reply's finish reason"
                    );
                    Ok(true)
                }
                Ok(None) | Err(_) if complete => Ok(true),
                Err(err) => Err(self.body_failure(err)),
                Ok(None) => Err(error::cut_off_failure(&self.ctx, self.received, None)),
            };
            match outcome {
                Ok(false) => {}
                Ok(true) => {
                    self.finished = true;
                    let response = std::mem::take(&mut self.assembler).finish();
                    self.ready.push_back(ChatDelta::Done(response));
                }
                Err(failure) => {
                    self.finished = true;
                    // Deltas of the event that failed (one past the cap) are not handed out.
                    self.ready.clear();
                    return Some(Err(failure));
                }
            }
        }
    }

    /// The next event of the body, `None` at its end, or why it stopped early.
    async fn next_event(&mut self) -> Result<Option<SseEvent>, BodyError> {
        loop {
            if let Some(event) = self.parser.next_event().map_err(BodyError::NotUtf8)? {
                return Ok(Some(event));
            }
            // Every whole event was taken: what the parser holds is one unfinished event.
            if self.parser.unfinished_len() > MAX_EVENT_BYTES {
                return Err(BodyError::EventTooLong);
            }
            // Checked before each wait, not only by the wait's timeout: a body that always
            // has a piece ready (pings sent as fast as they go) never lets a timeout fire.
            let quiet = self.progressed_at.elapsed();
            let Some(left) = self.ctx.progress_timeout.checked_sub(quiet) else {
                return Err(BodyError::NoProgress);
            };
            let (wait, no_progress) = if left < self.idle_timeout {
                (left, true)
            } else {
                (self.idle_timeout, false)
            };
            let piece = match tokio::time::timeout(wait, self.body.next()).await {
                Err(_) if no_progress => return Err(BodyError::NoProgress),
                Err(_) => return Err(BodyError::Stalled),
                Ok(None) => return Ok(None),
                Ok(Some(Err(err))) => return Err(BodyError::Transport(err)),
                Ok(Some(Ok(piece))) => piece,
            };
            let piece = (*piece).as_ref();
            self.received += piece.len();
            self.parser.feed(piece);
        }
    }

    /// Takes in one event; `Ok(true)` when it ends the reply.
    fn read_event(&mut self, event: SseEvent) -> Result<bool, Failure> {
        if event.event == "error" {
            return Err(error::stream_error_failure(
                &self.ctx,
                &event.data,
                self.delivered,
            ));
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            // `[DONE]` with nothing before it is no answer, whatever it says: as
            // `{"choices":[]}` is for a whole reply, and as the same stream closed
            // without `[DONE]` is.
            if self.assembler.finish_reason.is_none() && self.assembler.is_empty() {
                return Err(error::empty_stream_failure(&self.ctx, self.received));
            }
            // Without a finish reason only `[DONE]` says the reply is whole, and a proxy
            // that lost its upstream may send it anyway: a call whose arguments stop
            // mid-JSON was cut, as when the connection closes there, and must not run.
            if self.assembler.finish_reason.is_none()
                && let Some(call) = self.assembler.unfinished_call()
            {
                return Err(error::unfinished_call_failure(
                    &self.ctx,
                    self.received,
                    &call.name,
                    call.arguments.as_deref().unwrap_or_default(),
                ));
            }
            return Ok(true);
        }
        let chunk = match wire::decode_chunk(data) {
            Ok(chunk) => chunk,
            // The model already said why it stopped: the reply is whole, and what follows
            // (a usage chunk, `[DONE]`) adds nothing worth losing it for.
            Err(detail) if self.assembler.finish_reason.is_some() => {
                tracing::warn!(
                    endpoint = self.ctx.endpoint,
                    detail,
                    "ignoring an unreadable event after the reply's finish reason"
                );
                return Ok(false);
            }
            Err(detail) => return Err(error::malformed_stream_failure(&self.ctx, &detail, data)),
        };
        // An `error` that says nothing beside a delta is no error, as beside a whole reply.
        if chunk.error.as_ref().is_some_and(wire::reports_error) {
            return Err(error::stream_error_failure(&self.ctx, data, self.delivered));
        }
        if self.assembler.add(chunk, &mut self.ready) {
            self.progressed_at = Instant::now();
        }
        if self.assembler.size > MAX_REPLY_BYTES {
            return Err(error::too_long_failure(
                &self.ctx,
                "of text and tool calls",
                MAX_REPLY_BYTES,
            ));
        }
        Ok(false)
    }

    fn body_failure(&self, err: BodyError) -> Failure {
        match err {
            BodyError::Transport(err) => {
                error::cut_off_failure(&self.ctx, self.received, Some(err))
            }
            BodyError::Stalled => error::stalled_failure(&self.ctx, "next piece of the reply"),
            BodyError::NoProgress => error::no_progress_failure(&self.ctx, self.received),
            BodyError::EventTooLong => {
                error::too_long_failure(&self.ctx, "in one event that did not end", MAX_EVENT_BYTES)
            }
            BodyError::NotUtf8(err) => error::malformed_stream_failure(
                &self.ctx,
                &format!(
                    "the body is not UTF-8 (an invalid sequence at byte {})",
                    err.offset
                ),
                "",
            ),
        }
    }
}

/// The reply so far, built from chunks.
#[derive(Default)]
struct Assembler {
    content: String,
    /// A refusal is the model's answer when it sends no content (as in a whole reply).
    refusal: String,
    /// Calls by their slot, which orders them in the reply: the streamed `index`, unless
    /// that was taken (see `slots`).
    calls: BTreeMap<usize, PartialCall>,
    /// The slot the pieces of each streamed `index` go to. Usually the index itself (an
    /// index that is no number the next free slot when first seen); but
    /// a piece bringing a new id to an index whose call has another one starts a new call
    /// in the next free slot, and the later pieces of that index go there (Ollama numbers
    /// every parallel call 0).
    slots: HashMap<PieceIndex, usize>,
    /// The slot of the call the last piece went to, for servers that omit `index`.
    last_call: Option<usize>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    /// Bytes of text, refusal, calls' names, ids and arguments so far, and
    /// [`CALL_OVERHEAD`] per call, for [`MAX_REPLY_BYTES`].
    size: usize,
}

#[derive(Default)]
struct PartialCall {
    id: String,
    /// Whether the server gave `id` (rather than Fusion making one up).
    id_given: bool,
    name: String,
    /// `None` until some arguments arrive; a call without any gets `{}`, as in a whole reply.
    arguments: Option<String>,
    /// Whether the last piece of this call without an `index` named it, with no arguments
    /// since: a repeat (vLLM names a call on its last piece too), or, when the arguments
    /// were whole, the first piece of another call the server gave the same id, whose
    /// arguments then start a new call that takes this name ([`slots`]). A flag rather
    /// than a look at the arguments, so a server that repeats the name on every piece
    /// does not have a long call's arguments parsed per piece.
    named_again: bool,
}

impl Assembler {
    /// Adds `chunk` to the reply and appends the deltas it carries to `out`; whether the
    /// reply made progress: some of its text, refusal, reasoning or calls (each call counts
    /// towards `size`), or its finish reason. Usage, a role or empty pieces are none.
    fn add(&mut self, chunk: WireChunk, out: &mut VecDeque<ChatDelta>) -> bool {
        let (size, finished) = (self.size, self.finish_reason.is_some());
        let reasoning = self.add_choice(chunk, out);
        reasoning || self.size != size || self.finish_reason.is_some() != finished
    }

    /// [`add`](Self::add) but for its verdict; whether the chunk carried reasoning.
    fn add_choice(&mut self, chunk: WireChunk, out: &mut VecDeque<ChatDelta>) -> bool {
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        // Fusion asks for one choice; a server that sends more numbers the first 0.
        let choice = chunk
            .choices
            .unwrap_or_default()
            .into_iter()
            .find(|choice| match &choice.index {
                Some(PieceIndex::Number(index)) => *index == 0,
                _ => true,
            });
        let Some(choice) = choice else { return false };
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason);
        }
        let Some(delta) = choice.delta else {
            return false;
        };
        let reasoning = delta.has_reasoning();
        let text = delta.content.map(wire::content_text).unwrap_or_default();
        if !text.is_empty() {
            self.size += text.len();
            self.content.push_str(&text);
            out.push_back(ChatDelta::Text(text));
        }
        if let Some(refusal) = delta.refusal.filter(|r| !r.is_empty()) {
            self.size += refusal.len();
            self.refusal.push_str(&refusal);
            out.push_back(ChatDelta::Text(refusal));
        }
        for piece in delta.tool_calls.unwrap_or_default() {
            self.add_call_piece(piece, out);
        }
        reasoning
    }

    fn add_call_piece(&mut self, piece: WireToolCallDelta, out: &mut VecDeque<ChatDelta>) {
        let function = piece.function;
        let (name, arguments) = match function {
            Some(f) => (f.name.filter(|n| !n.is_empty()), f.arguments),
            None => (None, None),
        };
        // A blank id names no call, as a missing one does (`wire::call_id` gives the call a
        // fresh one): matched as given, every piece bringing it would be another call.
        let id = piece.id.filter(|id| !id.trim().is_empty());
        let fragment = arguments.and_then(wire::arguments_text);
        let indexed = piece.index.is_some();
        let (index, name) = match piece.index {
            Some(index) => (self.slot_of(index, id.as_deref(), name.is_some()), name),
            None => {
                let (slot, named) =
                    self.unindexed_slot(id.as_deref(), name.as_deref(), fragment.as_deref());
                (slot, name.or(named))
            }
        };
        self.last_call = Some(index);
        if !self.calls.contains_key(&index) {
            // What a call costs besides its arguments, counted so that a stream of ever
            // new calls or long names cannot grow the reply past the cap either.
            self.size += CALL_OVERHEAD
                + id.as_ref().map_or(0, String::len)
                + name.as_ref().map_or(0, String::len);
        }
        let call = self.calls.entry(index).or_insert_with(|| {
            let call = PartialCall {
                id_given: id.is_some(),
                id: wire::call_id(id.clone()),
                name: name.clone().unwrap_or_default(),
                arguments: None,
                named_again: false,
            };
            out.push_back(ChatDelta::ToolCallStarted {
                index,
                id: call.id.clone(),
                name: call.name.clone(),
            });
            call
        });
        if call.name.is_empty()
            && let Some(name) = name
        {
            // A server that sent the name after the first piece: keep it for the reply.
            self.size += name.len();
            call.name = name;
        } else if !indexed && name.is_some_and(|name| name == call.name) {
            call.named_again = true;
        }
        if let Some(fragment) = fragment {
            let arguments = call.arguments.get_or_insert_with(String::new);
            if !fragment.is_empty() {
                call.named_again = false;
                self.size += fragment.len();
                arguments.push_str(&fragment);
                out.push_back(ChatDelta::ToolCallArguments { index, fragment });
            }
        }
    }

    /// Whether nothing of an answer arrived: no text, refusal or tool call.
    fn is_empty(&self) -> bool {
        self.content.is_empty() && self.refusal.is_empty() && self.calls.is_empty()
    }

    /// The first call whose arguments are not yet whole: they end inside a JSON text
    /// (`{"path": "a`). None at all is a call without arguments, as servers that send no
    /// finish reason call a tool that takes none (a tool that needs some refuses `{}` by
    /// its schema). Arguments that are whole but wrong JSON are the model's own mistake,
    /// which the tool's error lets it fix, not a sign of a cut.
    fn unfinished_call(&self) -> Option<&PartialCall> {
        self.calls.values().find(|call| {
            let arguments = call.arguments.as_deref().unwrap_or_default();
            !arguments.trim().is_empty()
                && serde_json::from_str::<serde::de::IgnoredAny>(arguments)
                    .is_err_and(|err| err.is_eof())
        })
    }

    /// The whole reply.
    fn finish(self) -> ChatResponse {
        let content = if self.content.is_empty() {
            self.refusal
        } else {
            self.content
        };
        let tool_calls = self
            .calls
            .into_values()
            .map(|call| ToolCall {
                id: call.id,
                name: call.name,
                arguments: call.arguments.unwrap_or_else(|| "{}".to_owned()),
            })
            .collect();
        ChatResponse {
            message: ChatMessage::assistant_with_tool_calls(content, tool_calls),
            usage: self.usage,
            finish_reason: self.finish_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use futures::stream;

    use super::*;

    const CTX: Context<'static> = Context {
        base_url: "http://h/v1",
        endpoint: "http://h/v1/chat/completions",
        model: "m",
        api_key: None,
        request_timeout: Duration::from_secs(30),
        progress_timeout: Duration::from_secs(600),
    };

    /// Everything `pieces` reads to: the deltas, and the failure that ended them, if any.
    async fn read(pieces: Vec<Vec<u8>>) -> (Vec<ChatDelta>, Option<String>) {
        let body = stream::iter(pieces.into_iter().map(|p| Ok(Bytes::from(p))));
        let mut reply = SseReply::new(body, CTX.request_timeout, CTX);
        let mut deltas = Vec::new();
        while let Some(item) = reply.next().await {
            match item {
                Ok(delta) => deltas.push(delta),
                Err(failure) => return (deltas, Some(failure.message)),
            }
        }
        (deltas, None)
    }

    async fn read_text(sse: &str) -> (Vec<ChatDelta>, Option<String>) {
        read(vec![sse.as_bytes().to_vec()]).await
    }

    /// The reply a complete stream ends with.
    fn done(deltas: &[ChatDelta]) -> &ChatResponse {
        match deltas.last() {
            Some(ChatDelta::Done(response)) => response,
            other => panic!("the stream did not end with Done: {other:?}"),
        }
    }

    /// `data:` lines for each chunk, then `[DONE]`.
    fn sse(chunks: &[serde_json::Value]) -> String {
        let mut text: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        text.push_str("data: [DONE]\n\n");
        text
    }

    fn delta(delta: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
    }

    fn finish(reason: &str) -> serde_json::Value {
        serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
    }

    /// A chunk holding one tool-call piece without an `index` (as some servers send them):
    /// the call's id, its name when given, and a piece of its arguments.
    fn indexless_piece(id: &str, name: Option<&str>, arguments: &str) -> serde_json::Value {
        let mut piece = serde_json::json!({"id": id, "function": {"arguments": arguments}});
        if let Some(name) = name {
            piece["function"]["name"] = name.into();
        }
        delta(serde_json::json!({"tool_calls": [piece]}))
    }

    /// A reply with text (multi-byte characters included), two tool calls, a keep-alive
    /// comment, a finish reason of its own and a usage chunk: every shape at once.
    const RECORDED: &str = concat!(
        ": keep-alive\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,",
        "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Caf\u{e9} \u{1F600}",
        " \\u00e9\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,",
        "\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"read_file\",",
        "\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,",
        "\"function\":{\"arguments\":\"{\\\"path\\\": \\\"a\\\\\\\"b\"}}]},\"finish_reason\":null}]}\n\n",
        ": ping\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,",
        "\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"ls\",",
        "\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,",
        "\"function\":{\"arguments\":\".txt\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,",
        "\"total_tokens\":19}}\n\n",
        "data: [DONE]\n\n",
    );

    #[tokio::test]
    async fn a_recorded_reply_cut_at_every_byte_reads_the_same() {
        let (whole, failure) = read_text(RECORDED).await;
        assert_eq!(failure, None);
        let response = done(&whole);
        assert_eq!(response.message.content, "Caf\u{e9} \u{1F600} \u{e9}");
        assert_eq!(
            response.message.tool_calls,
            vec![
                ToolCall::new("call_a", "read_file", r#"{"path": "a\"b.txt"}"#),
                ToolCall::new("call_b", "ls", "{}"),
            ]
        );
        assert_eq!(response.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            response.usage,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 7,
                total_tokens: 19
            })
        );
        let bytes = RECORDED.as_bytes();
        for cut in 1..bytes.len() {
            let pieces = vec![bytes[..cut].to_vec(), bytes[cut..].to_vec()];
            let (deltas, failure) = read(pieces).await;
            assert_eq!(failure, None, "cut at byte {cut}");
            assert_eq!(deltas, whole, "cut at byte {cut}");
        }
    }

    #[tokio::test]
    async fn interleaved_tool_calls_are_assembled_by_index() {
        let call = |index: usize, first: bool, arguments: &str| {
            let mut piece =
                serde_json::json!({"index": index, "function": {"arguments": arguments}});
            if first {
                piece["id"] = format!("call_{index}").into();
                piece["function"]["name"] = format!("tool_{index}").into();
            }
            delta(serde_json::json!({"tool_calls": [piece]}))
        };
        let text = sse(&[
            delta(serde_json::json!({"role": "assistant", "content": null})),
            call(1, true, "{\"b\""),
            call(0, true, ""),
            call(0, false, "{\"a\":"),
            call(1, false, ":2}"),
            call(0, false, "1}"),
            finish("tool_calls"),
        ]);
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        let started = |index: usize| ChatDelta::ToolCallStarted {
            index,
            id: format!("call_{index}"),
            name: format!("tool_{index}"),
        };
        let args = |index: usize, fragment: &str| ChatDelta::ToolCallArguments {
            index,
            fragment: fragment.into(),
        };
        assert_eq!(
            deltas[..deltas.len() - 1],
            [
                started(1),
                args(1, "{\"b\""),
                started(0),
                args(0, "{\"a\":"),
                args(1, ":2}"),
                args(0, "1}"),
            ]
        );
        assert_eq!(
            done(&deltas).message.tool_calls,
            vec![
                ToolCall::new("call_0", "tool_0", r#"{"a":1}"#),
                ToolCall::new("call_1", "tool_1", r#"{"b":2}"#),
            ]
        );
    }

    /// A piece bringing a new id at an index whose call has another id is a new call, and
    /// the pieces after it at that index are its own; a piece repeating its call's id (or
    /// bringing none) is more of the same call.
    #[tokio::test]
    async fn a_new_id_at_a_taken_index_starts_another_call() {
        let piece = |id: Option<&str>, name: Option<&str>, arguments: &str| {
            let mut piece = serde_json::json!({"index": 0, "function": {"arguments": arguments}});
            if let Some(id) = id {
                piece["id"] = id.into();
            }
            if let Some(name) = name {
                piece["function"]["name"] = name.into();
            }
            delta(serde_json::json!({"tool_calls": [piece]}))
        };
        let text = sse(&[
            piece(Some("call_a1"), Some("echo"), "{\"x\""),
            piece(Some("call_a1"), Some("echo"), ":\"hello.py\"}"),
            piece(Some("call_b2"), Some("count"), "{"),
            piece(None, None, "}"),
            finish("tool_calls"),
        ]);
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        assert_eq!(
            done(&deltas).message.tool_calls,
            vec![
                ToolCall::new("call_a1", "echo", r#"{"x":"hello.py"}"#),
                ToolCall::new("call_b2", "count", "{}"),
            ]
        );
        let started: Vec<(usize, &str)> = deltas
            .iter()
            .filter_map(|d| match d {
                ChatDelta::ToolCallStarted { index, id, .. } => Some((*index, id.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(started, [(0, "call_a1"), (1, "call_b2")]);
        assert!(deltas.contains(&ChatDelta::ToolCallArguments {
            index: 1,
            fragment: "}".into()
        }));
    }

    #[tokio::test]
    async fn arguments_cut_inside_an_escape_arrive_decoded() {
        // The model writes {"s":"\"é"}; the server sends it as the fragments `{"s":"\`
        // and `"é"}`, and the bytes are cut inside `\"`, `\\` and `\u00e9` of the JSON.
        let first = r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"t","arguments":"{\"s\":\"\\"}}]}}]}"#;
        let second = r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"\u00e9\"}"}}]},"finish_reason":"tool_calls"}]}"#;
        let text = format!("{first}\n\n{second}\n\ndata: [DONE]\n\n");
        let quote = text.find(r#"\"s"#).unwrap() + 1;
        let backslash = text.find(r#"\\"}}"#).unwrap() + 1;
        let unicode = text.find(r"\u00e9").unwrap() + 3;
        let bytes = text.as_bytes();
        let pieces = vec![
            bytes[..quote].to_vec(),
            bytes[quote..backslash].to_vec(),
            bytes[backslash..unicode].to_vec(),
            bytes[unicode..].to_vec(),
        ];
        let (deltas, failure) = read(pieces).await;
        assert_eq!(failure, None);
        let fragments: Vec<&str> = deltas
            .iter()
            .filter_map(|d| match d {
                ChatDelta::ToolCallArguments { fragment, .. } => Some(fragment.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(fragments, [r#"{"s":"\"#, "\"\u{e9}\"}"]);
        assert_eq!(
            done(&deltas).message.tool_calls[0].arguments,
            "{\"s\":\"\\\"\u{e9}\"}"
        );
    }

    #[tokio::test]
    async fn keep_alive_comments_and_empty_pieces_are_ignored() {
        let text = format!(
            ":\n\n: keep-alive\n\n{}: ping\n\n{}",
            sse(&[delta(serde_json::json!({"content": "a"}))]).replace("data: [DONE]\n\n", ""),
            sse(&[finish("stop")]),
        );
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        assert_eq!(deltas[0], ChatDelta::Text("a".into()));
        assert_eq!(deltas.len(), 2);
        assert_eq!(done(&deltas).message.content, "a");
    }

    #[tokio::test]
    async fn usage_comes_from_a_chunk_without_choices() {
        let text = sse(&[
            delta(serde_json::json!({"role": "assistant", "content": "hi"})),
            finish("stop"),
            serde_json::json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
        ]);
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        let usage = done(&deltas).usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.total_tokens), (3, 4));
    }

    #[tokio::test]
    async fn a_finish_reason_in_its_own_chunk_ends_a_reply_closed_without_done() {
        let text = sse(&[
            delta(serde_json::json!({"content": "hi"})),
            finish("length"),
        ])
        .replace("data: [DONE]\n\n", "");
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        assert_eq!(done(&deltas).finish_reason.as_deref(), Some("length"));
        assert_eq!(done(&deltas).message.content, "hi");
    }

    /// Junk after the finish reason (a broken usage chunk, a proxy's stray line) costs
    /// the reply nothing; the same junk before it is an error.
    #[tokio::test]
    async fn an_unreadable_event_after_the_finish_reason_is_ignored_but_not_before() {
        let after = format!(
            "data: {}\n\ndata: {}\n\ndata: {{garbage\n\ndata: [DONE]\n\n",
            delta(serde_json::json!({"content": "complete answer"})),
            finish("stop"),
        );
        let (deltas, failure) = read_text(&after).await;
        assert_eq!(failure, None);
        assert_eq!(done(&deltas).message.content, "complete answer");
        let before = format!(
            "data: {}\n\ndata: {{garbage\n\n",
            delta(serde_json::json!({"content": "half"}))
        );
        let (_, failure) = read_text(&before).await;
        assert!(failure.is_some());
    }

    /// A stream that never ends is stopped at the cap with an error that says so, not
    /// read until the memory runs out.
    #[tokio::test]
    async fn an_endless_reply_stops_at_the_cap() {
        let piece = format!(
            "data: {}\n\n",
            delta(serde_json::json!({"content": "x".repeat(64 << 10)}))
        );
        let body = stream::repeat_with(move || Ok(Bytes::from(piece.clone())));
        let mut reply = SseReply::new(body, CTX.request_timeout, CTX);
        let mut text = 0;
        let failure = loop {
            match reply.next().await.expect("a failure ends it") {
                Ok(ChatDelta::Text(piece)) => text += piece.len(),
                Ok(other) => panic!("{other:?}"),
                Err(failure) => break failure,
            }
        };
        assert!(
            failure
                .message
                .contains("went on past 16 MiB of text and tool calls"),
            "{}",
            failure.message
        );
        assert!(!failure.retryable);
        assert!(text <= MAX_REPLY_BYTES, "{text}");
    }

    /// Calls count against the cap too: their names and ids, and each call itself, so a
    /// stream of ever new calls with long names (and no arguments) is stopped as well.
    #[tokio::test]
    async fn endless_new_calls_stop_at_the_cap() {
        let mut n = 0usize;
        let body = stream::repeat_with(move || {
            n += 1;
            let piece = serde_json::json!({
                "index": n,
                "id": format!("c{n}"),
                "function": {"name": "x".repeat(1 << 20)},
            });
            let event = format!(
                "data: {}\n\n",
                delta(serde_json::json!({"tool_calls": [piece]}))
            );
            Ok(Bytes::from(event))
        });
        let mut reply = SseReply::new(body, CTX.request_timeout, CTX);
        let mut calls = 0;
        let failure = loop {
            match reply.next().await.expect("a failure ends it") {
                Ok(ChatDelta::ToolCallStarted { .. }) => calls += 1,
                Ok(other) => panic!("{other:?}"),
                Err(failure) => break failure,
            }
        };
        assert!(
            failure.message.contains("went on past 16 MiB"),
            "{}",
            failure.message
        );
        assert!(calls <= 16, "{calls} calls of 1 MiB names kept");
    }

    /// A server that gives one call a fresh id on every piece (Poolside, mlx-openai-server)
    /// sends its name once: the pieces without a name are more of that call.
    #[tokio::test]
    async fn a_fresh_id_on_every_piece_of_one_call_is_still_one_call() {
        let piece = |id: &str, name: Option<&str>, arguments: &str| {
            let mut piece =
                serde_json::json!({"index": 0, "id": id, "function": {"arguments": arguments}});
            if let Some(name) = name {
                piece["function"]["name"] = name.into();
            }
            delta(serde_json::json!({"tool_calls": [piece]}))
        };
        let text = sse(&[
            piece("call_first", Some("read_file"), ""),
            piece("call_second", None, "{\"path\":"),
            piece("call_third", None, "\"a.txt\"}"),
            finish("tool_calls"),
        ]);
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        assert_eq!(
            done(&deltas).message.tool_calls,
            vec![ToolCall::new(
                "call_first",
                "read_file",
                r#"{"path":"a.txt"}"#
            )]
        );
    }

    /// Found by a review of 75c31b1: a call whose numeric id comes on its first piece
    /// only is one call, and fields of another type than expected (a choice's `index`
    /// `"0"`, a call's `index` `"1"`, a name that is a number, a `refusal` `false`, a
    /// `finish_reason` object) failed the stream; they read as what they can be, or as
    /// missing (a call without an index is placed by its id).
    #[tokio::test]
    async fn odd_field_types_in_a_stream_keep_its_calls_apart_and_whole() {
        let (deltas, failure) = read_text(&sse(&[
            delta(serde_json::json!({"tool_calls": [{"index": 0, "id": 7,
                "function": {"name": "read_file", "arguments": ""}}]})),
            delta(serde_json::json!({"tool_calls": [{"index": 0,
                "function": {"arguments": "{\"path\":"}}]})),
            delta(serde_json::json!({"tool_calls": [{"index": 0,
                "function": {"arguments": "\"a\"}"}}]})),
            delta(
                serde_json::json!({"refusal": false, "tool_calls": [{"index": "1",
                "id": "c2", "function": {"name": 5, "arguments": "{}"}}]}),
            ),
            serde_json::json!({"choices": [{"index": "0", "delta": {},
                "finish_reason": {"type": "tool_calls"}}]}),
        ]))
        .await;
        assert_eq!(failure, None);
        let calls = &done(&deltas).message.tool_calls;
        let calls: Vec<_> = calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            [("7", "read_file", r#"{"path":"a"}"#), ("c2", "5", "{}")]
        );
    }

    /// Found by a second review of e6bbd2e: a call piece's `index` of another type read as
    /// missing, so interleaved calls whose later pieces carry neither id nor name ran
    /// together: every piece went to the last call started, which ran with both calls'
    /// arguments joined (`{"path":"ab"}`), the other with none. A whole number as a string
    /// is that number; any other value still keeps its call's pieces together.
    #[tokio::test]
    async fn calls_interleaved_under_odd_indexes_stay_apart() {
        let piece = |index: serde_json::Value, first: Option<&str>, arguments: &str| {
            let mut piece =
                serde_json::json!({"index": index, "function": {"arguments": arguments}});
            if let Some(id) = first {
                piece["id"] = id.into();
                piece["function"]["name"] = "read_file".into();
            }
            delta(serde_json::json!({"tool_calls": [piece]}))
        };
        for (a, b) in [
            (serde_json::json!("0"), serde_json::json!("1")),
            (serde_json::json!(-1), serde_json::json!(-2)),
            (serde_json::json!("a"), serde_json::json!({"n": 2})),
        ] {
            let (deltas, failure) = read_text(&sse(&[
                piece(a.clone(), Some("c1"), ""),
                piece(b.clone(), Some("c2"), ""),
                piece(a.clone(), None, "{\"path\":\"a"),
                piece(b.clone(), None, "{\"path\":\"b"),
                piece(a.clone(), None, "\"}"),
                piece(b.clone(), None, "\"}"),
                finish("tool_calls"),
            ]))
            .await;
            assert_eq!(failure, None);
            assert_eq!(
                done(&deltas).message.tool_calls,
                vec![
                    ToolCall::new("c1", "read_file", r#"{"path":"a"}"#),
                    ToolCall::new("c2", "read_file", r#"{"path":"b"}"#),
                ],
                "{a} {b}"
            );
        }
    }

    /// Found by a review of fc58f90: a blank id (`" "`) on every piece of one call gave
    /// the call a fresh id, and each later piece with the name, its id not that fresh
    /// one, started another call. A blank id is no id, as an empty one is.
    #[tokio::test]
    async fn a_blank_id_on_every_piece_of_one_call_is_one_call() {
        let piece = |arguments: &str| {
            delta(serde_json::json!({"tool_calls": [{"index": 0, "id": " ",
                "function": {"name": "read_file", "arguments": arguments}}]}))
        };
        let text = sse(&[
            piece("{\"path\":"),
            piece("\"a.txt\"}"),
            finish("tool_calls"),
        ]);
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        let calls = &done(&deltas).message.tool_calls;
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].arguments, r#"{"path":"a.txt"}"#);
        assert!(calls[0].id.starts_with("call_"), "{:?}", calls[0].id);
    }

    /// Found by a review: a server that omits `index` and repeats a call's id on each of
    /// its pieces (with its name too on the last, as vLLM's last piece has it) had every
    /// piece start a call of its own, the arguments split among them. Found by the next
    /// review: a piece of the same id but another name (two calls a server gave one id)
    /// then continued the call, the second's name lost and the arguments run together.
    #[tokio::test]
    async fn without_an_index_the_pieces_of_one_id_are_one_call() {
        let piece = indexless_piece;
        let text = sse(&[
            piece("call_a", Some("read_file"), "{\"path\":"),
            piece("call_a", None, "\"a.txt\""),
            piece("call_a", Some("read_file"), "}"),
            piece("call_b", Some("ls"), "{}"),
            piece("call_b", Some("pwd"), "{}"),
            finish("tool_calls"),
        ]);
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        assert_eq!(
            done(&deltas).message.tool_calls,
            vec![
                ToolCall::new("call_a", "read_file", r#"{"path":"a.txt"}"#),
                ToolCall::new("call_b", "ls", "{}"),
                ToolCall::new("call_b", "pwd", "{}"),
            ]
        );
    }

    /// Found by a review: without an `index`, two calls a server gave one id and one
    /// name (each sent whole in one piece) were one call, its arguments the two run
    /// together (`{"path":"a"}{"path":"b"}`); a piece of the same id continuing a call's
    /// arguments, or repeating its name once they are whole, is still more of it.
    #[tokio::test]
    async fn without_an_index_new_arguments_after_whole_ones_are_another_call() {
        let piece = indexless_piece;
        let text = sse(&[
            piece("call_x", Some("read_file"), r#"{"path":"a"}"#),
            piece("call_x", Some("read_file"), r#"{"path":"b"}"#),
            piece("call_x", Some("read_file"), r#"{"path":"#),
            piece("call_x", None, r#"{"c":1}"#),
            piece("call_x", None, "}"),
            piece("call_x", Some("read_file"), " "),
            finish("tool_calls"),
        ]);
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        assert_eq!(
            done(&deltas).message.tool_calls,
            vec![
                ToolCall::new("call_x", "read_file", r#"{"path":"a"}"#),
                ToolCall::new("call_x", "read_file", r#"{"path":"b"}"#),
                ToolCall::new("call_x", "read_file", r#"{"path":{"c":1}} "#),
            ]
        );
    }

    /// Found by a review: without an `index`, a server that gives every call one id and
    /// streams each as OpenAI does (the name with empty arguments first, then the
    /// arguments) had its second call's name piece taken as a repeat of the first call's
    /// name (as vLLM sends on a last piece), and the call its arguments then started had
    /// no name: answered "no tool named" although the server named it.
    #[tokio::test]
    async fn without_an_index_a_name_before_new_arguments_names_the_new_call() {
        let piece = |name, arguments| indexless_piece("call_0", name, arguments);
        let text = sse(&[
            piece(Some("read_file"), ""),
            piece(None, r#"{"path":"a"}"#),
            piece(Some("read_file"), ""),
            piece(None, r#"{"path":"b"}"#),
            finish("tool_calls"),
        ]);
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        assert_eq!(
            done(&deltas).message.tool_calls,
            vec![
                ToolCall::new("call_0", "read_file", r#"{"path":"a"}"#),
                ToolCall::new("call_0", "read_file", r#"{"path":"b"}"#),
            ]
        );
        let started: Vec<&str> = deltas
            .iter()
            .filter_map(|delta| match delta {
                ChatDelta::ToolCallStarted { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(started, ["read_file", "read_file"]);
    }

    /// Found by a review: without an `index`, a piece bearing the id of a call before the
    /// last (two calls' pieces interleaved) started a call of no name with it, the
    /// arguments of both calls left cut. The id says whose piece it is.
    #[tokio::test]
    async fn without_an_index_interleaved_pieces_go_to_the_call_of_their_id() {
        let piece = indexless_piece;
        let text = sse(&[
            piece("call_a", Some("read_file"), r#"{"path":"#),
            piece("call_b", Some("ls"), r#"{"dir":"#),
            piece("call_a", None, r#""a.txt"}"#),
            piece("call_b", Some("ls"), r#"".""#),
            delta(serde_json::json!({"tool_calls": [{"function": {"arguments": "}"}}]})),
            finish("tool_calls"),
        ]);
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        assert_eq!(
            done(&deltas).message.tool_calls,
            vec![
                ToolCall::new("call_a", "read_file", r#"{"path":"a.txt"}"#),
                ToolCall::new("call_b", "ls", r#"{"dir":"."}"#),
            ]
        );
    }

    /// A call numbered usize::MAX, then another at that index with another id: no
    /// overflow (a debug build panicked), and both are kept as one rather than lost.
    #[tokio::test]
    async fn a_call_at_the_largest_index_does_not_overflow() {
        let piece = |id: &str, arguments: &str| {
            delta(serde_json::json!({"tool_calls": [{
                "index": usize::MAX, "id": id, "function": {"name": "ls", "arguments": arguments},
            }]}))
        };
        let text = sse(&[piece("a", "{}"), piece("b", ""), finish("tool_calls")]);
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        assert!(!done(&deltas).message.tool_calls.is_empty());
    }

    /// One line that never ends holds no event to count: the parser's share is capped too.
    #[tokio::test]
    async fn an_endless_line_stops_at_the_event_cap() {
        let mut first = true;
        let body = stream::repeat_with(move || {
            let piece = if std::mem::take(&mut first) {
                format!(
                    "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}",
                    "x".repeat(1 << 20)
                )
            } else {
                "x".repeat(1 << 20)
            };
            Ok(Bytes::from(piece))
        });
        let mut reply = SseReply::new(body, CTX.request_timeout, CTX);
        let Some(Err(failure)) = reply.next().await else {
            panic!("an endless line must fail");
        };
        assert!(
            failure.message.contains("went on past 64 MiB in one event"),
            "{}",
            failure.message
        );
        assert!(!failure.retryable);
        assert!(reply.parser.unfinished_len() <= MAX_EVENT_BYTES + (2 << 20));
    }

    #[tokio::test]
    async fn a_stall_after_the_finish_reason_ends_the_reply_but_one_before_it_fails() {
        let finished = sse(&[delta(serde_json::json!({"content": "hi"})), finish("stop")])
            .replace("data: [DONE]\n\n", "");
        let unfinished = format!("data: {}\n\n", delta(serde_json::json!({"content": "hi"})));
        let idle = Duration::from_millis(20);
        for (text, completes) in [(finished, true), (unfinished, false)] {
            // The body never ends: only the idle timeout can.
            let body = stream::iter([Ok(Bytes::from(text))]).chain(stream::pending());
            let mut reply = SseReply::new(body, idle, CTX);
            assert_eq!(
                reply.next().await.unwrap().ok(),
                Some(ChatDelta::Text("hi".into()))
            );
            match reply.next().await.unwrap() {
                Ok(ChatDelta::Done(response)) if completes => {
                    assert_eq!(response.message.content, "hi");
                }
                Err(failure) if !completes => {
                    assert!(
                        failure.message.contains("no next piece"),
                        "{}",
                        failure.message
                    );
                    assert!(failure.retryable);
                }
                Ok(other) => panic!("completes: {completes}, got {other:?}"),
                Err(failure) => panic!("completes: {completes}, got {}", failure.message),
            }
        }
    }

    /// A body sending `first`, then `next(0)`, `next(1)`, … a second apart (in paused
    /// time), until `next` says `None`.
    fn paced(
        first: String,
        next: impl FnMut(usize) -> Option<String> + Send + 'static,
    ) -> impl Stream<Item = Result<Bytes, reqwest::Error>> + Send {
        let rest = stream::unfold((0, next), |(n, mut next)| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let piece = next(n)?;
            Some((Ok(Bytes::from(piece)), (n + 1, next)))
        });
        stream::iter([Ok(Bytes::from(first))]).chain(rest)
    }

    /// [`CTX`] with a progress timeout of 10 s; pieces come far within its 30 s idle
    /// timeout.
    const PATIENT: Context<'static> = Context {
        progress_timeout: Duration::from_secs(10),
        ..CTX
    };

    /// A server that keeps the connection busy with keep-alive comments and chunks that
    /// carry nothing (an empty delta, a role and empty content) is given up on at the
    /// progress timeout, with a retryable error that names the setting: the idle timeout
    /// alone, reset by every piece, waited for ever (here, until the body ends after
    /// 1000 s, a cut).
    #[tokio::test(start_paused = true)]
    async fn pings_and_empty_chunks_for_ever_fail_at_the_progress_timeout() {
        let empty = format!(
            ": ping\n\ndata: {}\n\ndata: {}\n\n",
            delta(serde_json::json!({})),
            delta(serde_json::json!({"role": "assistant", "content": ""})),
        );
        let first = format!("data: {}\n\n", delta(serde_json::json!({"content": "Hel"})));
        let mut reply = SseReply::new(
            paced(first, move |n| (n < 1000).then(|| empty.clone())),
            CTX.request_timeout,
            PATIENT,
        );
        assert_eq!(
            reply.next().await.unwrap().ok(),
            Some(ChatDelta::Text("Hel".into()))
        );
        let Some(Err(failure)) = reply.next().await else {
            panic!("an endless stream without progress must fail");
        };
        assert!(failure.retryable, "{}", failure.message);
        for part in [
            "sent nothing of the reply",
            "for 10s",
            "OpenAiConfig::progress_timeout",
        ] {
            assert!(
                failure.message.contains(part),
                "{part}: {}",
                failure.message
            );
        }
        assert!(reply.next().await.is_none());
    }

    /// Reasoning is progress, in each field servers stream it in: a model that reasons
    /// for longer than the progress timeout before it answers is not cut off. Nor is a
    /// reply whose finish reason came before the pings: it is whole.
    #[tokio::test(start_paused = true)]
    async fn reasoning_is_progress_and_pings_after_the_finish_reason_end_the_reply() {
        let thinking = |n: usize| {
            let field = ["reasoning_content", "reasoning", "reasoning_details"][n % 3];
            let value = if field == "reasoning_details" {
                serde_json::json!([{"type": "reasoning.text", "text": "hmm"}])
            } else {
                serde_json::json!("hmm")
            };
            format!(
                ": ping\n\ndata: {}\n\n",
                delta(serde_json::json!({ field: value }))
            )
        };
        let answer = format!(
            "data: {}\n\ndata: {}\n\n",
            delta(serde_json::json!({"content": "42"})),
            finish("stop")
        );
        let body = paced(thinking(0), move |n| match n {
            0..30 => Some(thinking(n + 1)),
            30 => Some(answer.clone()),
            // (Then the body ends: no test waits for ever.)
            31..1000 => Some(": ping\n\n".to_owned()),
            _ => None,
        });
        let mut reply = SseReply::new(body, CTX.request_timeout, PATIENT);
        let mut deltas = Vec::new();
        while let Some(item) = reply.next().await {
            deltas.push(item.unwrap_or_else(|failure| panic!("{}", failure.message)));
        }
        assert_eq!(done(&deltas).message.content, "42");
    }

    #[tokio::test]
    async fn a_reply_cut_before_its_finish_reason_is_an_error_naming_the_bytes() {
        let text = format!("data: {}\n\n", delta(serde_json::json!({"content": "hi"})));
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(deltas, [ChatDelta::Text("hi".into())]);
        let failure = failure.unwrap();
        assert!(
            failure.contains(&format!("closed mid-reply after {} bytes", text.len())),
            "{failure}"
        );
        assert!(failure.contains(CTX.endpoint), "{failure}");
    }

    /// Without a finish reason, `[DONE]` in the middle of a call's arguments is a reply
    /// cut off there, as the same stream closed without `[DONE]` is: a retryable failure
    /// naming the tool, never a call to run with half its JSON. A call with no arguments
    /// at all is one to a tool that takes none, as servers without finish reasons send it.
    #[tokio::test]
    async fn done_in_the_middle_of_a_call_without_a_finish_reason_is_a_cut_not_a_call() {
        let call = |id: &str, name: &str, arguments: &str| {
            delta(serde_json::json!({"tool_calls": [{
                "index": 0, "id": id, "type": "function",
                "function": {"name": name, "arguments": arguments},
            }]}))
        };
        let cases = [(
            r#"{"path": "a"#,
            "its arguments stop mid-JSON after 11 bytes",
        )];
        for (arguments, says) in cases {
            let text = sse(&[call("call_1", "delete_file", arguments)]);
            let body = stream::iter([Ok(Bytes::from(text.clone()))]);
            let mut reply = SseReply::new(body, CTX.request_timeout, CTX);
            assert!(matches!(
                reply.next().await,
                Some(Ok(ChatDelta::ToolCallStarted { .. }))
            ));
            let failure = loop {
                match reply.next().await {
                    Some(Ok(ChatDelta::ToolCallArguments { .. })) => {}
                    Some(Err(failure)) => break failure,
                    Some(Ok(other)) => panic!("{arguments:?} read as {other:?}"),
                    None => panic!("{arguments:?} ended silently"),
                }
            };
            assert!(failure.retryable, "{}", failure.message);
            for part in [
                "`delete_file`",
                says,
                "not run",
                &format!("{} bytes", text.len()),
            ] {
                assert!(
                    failure.message.contains(part),
                    "{part}: {}",
                    failure.message
                );
            }
            assert!(reply.next().await.is_none());

            // The same stream closed without `[DONE]` was already a retryable cut.
            let (_, failure) = read_text(&text.replace("data: [DONE]\n\n", "")).await;
            assert!(failure.unwrap().contains("closed mid-reply"));
        }

        // Whole arguments, even without a finish reason, are a call; so are arguments
        // that are wrong JSON but end (the model's mistake, which its tool reports).
        for arguments in [r#"{"path": "a.txt"}"#, r#"{"path": "a.txt"}}"#, "", "  "] {
            let (deltas, failure) = read_text(&sse(&[call("c", "delete_file", arguments)])).await;
            assert_eq!(failure, None, "{arguments}");
            assert_eq!(done(&deltas).message.tool_calls[0].arguments, arguments);
        }
        // With a finish reason the model said it stopped there: its reply, as it is.
        let (deltas, failure) = read_text(&sse(&[
            call("c", "delete_file", r#"{"path": "a"#),
            finish("length"),
        ]))
        .await;
        assert_eq!(failure, None);
        assert_eq!(done(&deltas).finish_reason.as_deref(), Some("length"));
    }

    /// Like a whole reply with no choices, and like a stream that closes without a finish
    /// reason: a failure to retry, not an empty answer to store.
    #[tokio::test]
    async fn a_stream_of_only_done_is_a_retryable_failure_not_an_empty_answer() {
        let usage_only = sse(&[serde_json::json!({"choices": [], "usage": {"prompt_tokens": 3}})]);
        // A choice that says nothing (the role alone, as servers open a reply) is none.
        let role_only = sse(&[delta(
            serde_json::json!({"role": "assistant", "content": ""}),
        )]);
        for text in ["data: [DONE]\n\n", usage_only.as_str(), role_only.as_str()] {
            let body = stream::iter([Ok(Bytes::from(text.to_owned()))]);
            let mut reply = SseReply::new(body, CTX.request_timeout, CTX);
            let failure = match reply.next().await {
                Some(Err(failure)) => failure,
                Some(Ok(delta)) => panic!("{text:?} read as {delta:?}"),
                None => panic!("{text:?} ended silently"),
            };
            assert!(failure.retryable, "{}", failure.message);
            assert!(failure.message.contains("no answer"), "{}", failure.message);
            // Said as it may be: a choice came, without text, call or finish reason.
            assert!(
                failure.message.contains("no choice, or none with"),
                "{}",
                failure.message
            );
            assert!(reply.next().await.is_none());
        }
        // `[DONE]` after a finish reason alone is still a (blank) answer the model gave.
        let (deltas, failure) = read_text(&sse(&[finish("stop")])).await;
        assert_eq!(failure, None);
        assert_eq!(done(&deltas).finish_reason.as_deref(), Some("stop"));
    }

    #[tokio::test]
    async fn error_events_end_the_reply_with_the_servers_message() {
        let chunk = format!(
            "data: {}\n\ndata: {{\"error\":{{\"message\":\"out of memory\",\"code\":500}}}}\n\n",
            delta(serde_json::json!({"content": "hi"}))
        );
        let named = "event: error\ndata: model crashed\n\n";
        for (text, said, when) in [
            (chunk.as_str(), "out of memory", "mid-reply"),
            (named, "model crashed", "before the reply began"),
        ] {
            let (_, failure) = read_text(text).await;
            let failure = failure.unwrap();
            assert!(failure.contains(said), "{failure}");
            assert!(failure.contains(when), "{failure}");
        }
    }

    /// An `error` that says nothing beside each delta (empty message, null or 0 code) is no
    /// error, in a stream as in a whole reply: the reply is read, not ended at its start.
    #[tokio::test]
    async fn an_error_field_that_says_nothing_beside_a_delta_is_no_error() {
        let with_error = |mut chunk: serde_json::Value, error: serde_json::Value| {
            chunk["error"] = error;
            chunk
        };
        for error in [
            serde_json::json!(null),
            serde_json::json!({}),
            serde_json::json!({"message": "", "code": null}),
            serde_json::json!({"message": "", "code": 0}),
        ] {
            let text = sse(&[
                with_error(delta(serde_json::json!({"content": "hi"})), error.clone()),
                with_error(finish("stop"), error.clone()),
            ]);
            let (deltas, failure) = read_text(&text).await;
            assert_eq!(failure, None, "{error}");
            assert_eq!(done(&deltas).message.content, "hi", "{error}");
        }
    }

    #[tokio::test]
    async fn a_whole_call_in_one_piece_starts_then_carries_its_arguments() {
        // Ollama's shape: role in every chunk, the whole call at once, arguments as text;
        // and a server that leaves out `index` and `id` and sends arguments as an object.
        let text = sse(&[
            delta(
                serde_json::json!({"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_x", "index": 0, "type": "function",
                 "function": {"name": "get", "arguments": "{\"k\":1}"}}]}),
            ),
            delta(
                serde_json::json!({"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "put", "arguments": {"v": 2}}}]}),
            ),
            finish("tool_calls"),
        ]);
        let (deltas, failure) = read_text(&text).await;
        assert_eq!(failure, None);
        let ChatDelta::ToolCallStarted { id: second_id, .. } = &deltas[2] else {
            panic!("{deltas:?}")
        };
        assert!(second_id.starts_with("call_"), "{second_id}");
        assert_eq!(
            deltas[..4],
            [
                ChatDelta::ToolCallStarted {
                    index: 0,
                    id: "call_x".into(),
                    name: "get".into()
                },
                ChatDelta::ToolCallArguments {
                    index: 0,
                    fragment: "{\"k\":1}".into()
                },
                ChatDelta::ToolCallStarted {
                    index: 1,
                    id: second_id.clone(),
                    name: "put".into()
                },
                ChatDelta::ToolCallArguments {
                    index: 1,
                    fragment: "{\"v\":2}".into()
                },
            ]
        );
        let calls = &done(&deltas).message.tool_calls;
        assert_eq!(calls[1].id, *second_id);
        assert_eq!(calls[1].arguments, r#"{"v":2}"#);
    }

    #[tokio::test]
    async fn a_body_that_is_not_utf8_is_a_clear_error() {
        let text = format!("data: {}\n\n", delta(serde_json::json!({"content": "hi"})));
        let mut body = text.clone().into_bytes();
        body.extend_from_slice(b"data: \xFF\xFE\n\n");
        let (deltas, failure) = read(vec![body]).await;
        assert_eq!(deltas, [ChatDelta::Text("hi".into())]);
        let failure = failure.unwrap();
        let offset = text.len() + "data: ".len();
        assert!(
            failure.contains(&format!("not UTF-8 (an invalid sequence at byte {offset})")),
            "{failure}"
        );
        assert!(failure.contains("FUSION_STREAM"), "{failure}");

        // After the finish reason the reply is whole, as after an unreadable event.
        let mut after = format!(
            "data: {}\n\ndata: {}\n\n",
            delta(serde_json::json!({"content": "complete answer"})),
            finish("stop"),
        )
        .into_bytes();
        after.extend_from_slice(b"data: \xFF\xFE\n\n");
        let (deltas, failure) = read(vec![after]).await;
        assert_eq!(failure, None);
        assert_eq!(done(&deltas).message.content, "complete answer");
    }

    #[tokio::test]
    async fn an_event_that_is_not_a_chunk_is_a_clear_error() {
        let (_, failure) = read_text("data: <html>\n\n").await;
        let failure = failure.unwrap();
        assert!(failure.contains("not JSON"), "{failure}");
        assert!(failure.contains("FUSION_STREAM"), "{failure}");
    }
}
