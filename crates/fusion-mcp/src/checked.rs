//! A stdio server's output on its way to the SDK, with invalid responses made into errors.
//!
//! rmcp skips a line it cannot read as a JSON-RPC message. For a response that is JSON but
//! not a valid one (`{"jsonrpc":"2.0","id":3}`, with neither `result` nor `error`; an
//! `error` without a `message`) that leaves the request waiting for the whole call
//! timeout, and the model reads that the server did not answer. Here such a line, when it
//! says it is JSON-RPC (`"jsonrpc":"2.0"`), carries an `id` and no `method` (which would
//! make it a request or a notification of the server's), is replaced by a JSON-RPC error
//! for that id saying the response was invalid, so the call ends at once and says why;
//! whatever else it holds (an extra member, a typo such as `"results"`) it is a response
//! gone wrong. A line whose first value is JSON without `"jsonrpc":"2.0"` (a JSON log
//! line, `{"level":30,"id":3}`, `{"id":3,"result":"started"}`; `[0] listening`, what
//! `concurrently` puts before each line; `[]`) is no message, whatever members it has, and
//! is not passed on: rmcp reads a line as far as its first value and answers one that is
//! JSON but no message by sending the server an `Invalid request` error, once per such
//! line. A line that is not JSON (`Loading model...`, `[INFO] ready`) rmcp skips without
//! a word, and it passes. Every other line passes unchanged, byte for byte; lines longer
//! than [`CHECKED_LINE_BYTES`] pass unchecked, without being held whole.
//!
//! A line longer than rmcp reads as one message ([`MAX_LINE_BYTES`], 16 MiB) rmcp
//! discards, and the request it answers would wait out its timeout too, the model told
//! that the server did not answer. Such a line still passes (rmcp needs its end to go on
//! reading), and is followed by a JSON-RPC error for its `id`, saying the response was too
//! large ([`TOO_LARGE_RESPONSE`]). The line is not held: its members are read from its
//! first [`CHECKED_LINE_BYTES`] (where the Python SDK writes `jsonrpc` and `id`) and its
//! last bytes (where the TypeScript SDK does, after `result`), and it is taken for a
//! response when the member too long to be read there is its `result` or `error` and,
//! as for a short line, `"jsonrpc":"2.0"`, an `id`, and no `method` (a request or a
//! notification of the server's, whose `id` is of its own numbering) are seen there. A
//! request whose `params` are too long is no response even when its `method` comes after
//! them, out of sight.
//!
//! A JSON-RPC batch (an array of messages) rmcp skips whole, and the requests it answers
//! would wait out their timeout. Batches left MCP in its 2025-06-18 revision, but a server
//! of an earlier one may still send them, so a batch line is passed on as one line for
//! each of its messages, each checked as a line of its own (an array in it is no message,
//! and passes as it is, not split again; a message longer than [`CHECKED_LINE_BYTES`]
//! passes unchecked, as such a line does), as they are read: a batch that stops reading as
//! JSON partway has those before passed on and the rest of its line after them, and the
//! batch is never listed whole (see [`pass_batch`]). A batch line longer than
//! [`CHECKED_LINE_BYTES`] is held whole for it, up to [`MAX_LINE_BYTES`] (the longest
//! line rmcp reads, so no message of it is longer); a longer one passes as it comes, for
//! rmcp to discard, as any line that long.

use rmcp::model::{ErrorCode, JsonRpcMessage, ServerJsonRpcMessage};

use crate::in_flight::InFlight;
use crate::json_members::{leading_members, scalar_id, skip_space, trailing_members, trim_end};
use crate::server_config::shown;
pub use rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH as MAX_LINE_BYTES;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
    DuplexStream,
};

/// The longest line checked; a longer one is passed on as it comes.
pub const CHECKED_LINE_BYTES: usize = 64 << 10;

/// The code of the error an invalid response is replaced by (JSON-RPC's "internal
/// error"), with [`INVALID_RESPONSE`] as its message.
pub const INVALID_RESPONSE_CODE: ErrorCode = ErrorCode::INTERNAL_ERROR;

/// The message of the error an invalid response is replaced by.
pub const INVALID_RESPONSE: &str = "fusion: the server sent an invalid response";

/// The message of the error that follows a response longer than [`MAX_LINE_BYTES`], with
/// [`INVALID_RESPONSE_CODE`] as its code.
pub const TOO_LARGE_RESPONSE: &str =
    "fusion: the server's response is larger than the client reads";

/// How many of a long line's last bytes are kept to read its `id` from.
const TAIL_BYTES: usize = 1024;

/// The most capacity the line buffer keeps from one line to the next: what a checked line
/// needs, its vector grown by doubling past [`CHECKED_LINE_BYTES`]. A batch held whole
/// grows it to as much as twice [`MAX_LINE_BYTES`]; batches are rare, so that is given back
/// after the line rather than held for the life of the connection.
const KEPT_LINE_CAPACITY: usize = 2 * CHECKED_LINE_BYTES;

/// `output` as the SDK is to read it: a task copies it line by line, replacing invalid
/// responses and taking the requests answered out of `in_flight` (an error without an id
/// goes to the sole request in it: see [`in_flight`](crate::in_flight)), and ends when
/// `output` ends or the reader is dropped.
pub fn checked(
    output: impl AsyncRead + Send + Unpin + 'static,
    in_flight: InFlight,
) -> DuplexStream {
    let (mut into, out) = tokio::io::duplex(CHECKED_LINE_BYTES);
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(CHECKED_LINE_BYTES, output);
        let mut line = Vec::new();
        while copy_line(&mut reader, &mut line, &mut into, &in_flight)
            .await
            .is_some()
        {}
    });
    out
}

/// Copies the next line of `reader` into `into`, checked, holding it in `line` (left with
/// at most [`KEPT_LINE_CAPACITY`]); `None` when the copying must stop (the output ended, or
/// the reader has gone).
async fn copy_line(
    reader: &mut BufReader<impl AsyncRead + Unpin>,
    line: &mut Vec<u8>,
    into: &mut DuplexStream,
    in_flight: &InFlight,
) -> Option<()> {
    line.clear();
    let limit = CHECKED_LINE_BYTES as u64;
    match reader.take(limit).read_until(b'\n', line).await {
        Ok(0) | Err(_) => return None,
        Ok(_) => {}
    }
    // A batch is split whatever its length, so it is held whole, up to the longest line
    // rmcp reads: its messages, passed on one by one, are within that.
    if !line.ends_with(b"\n") && line.len() >= CHECKED_LINE_BYTES && is_batch(line) {
        let limit = (MAX_LINE_BYTES - line.len()) as u64;
        reader.take(limit).read_until(b'\n', line).await.ok()?;
    }
    let whole = line.ends_with(b"\n");
    if whole && is_batch(line) {
        pass_batch(line, into, in_flight).await?;
    } else {
        let verdict = if whole {
            verdict(line, in_flight)
        } else {
            Verdict::Pass
        };
        pass(verdict, line, into).await?;
    }
    if !whole && line.len() >= CHECKED_LINE_BYTES {
        let (rest, tail) = pass_rest(reader, into).await?;
        let id = long_response_id(line, &tail);
        if let Some(id) = &id {
            in_flight.answered(id);
        }
        if let Some(id) = id.filter(|_| line.len() + rest > MAX_LINE_BYTES) {
            into.write_all(&error_line(id, TOO_LARGE_RESPONSE))
                .await
                .ok()?;
        }
    }
    line.clear();
    line.shrink_to(KEPT_LINE_CAPACITY);
    Some(())
}

/// Copies the rest of a long line through, up to and including its `\n`: how many bytes
/// that was, and the line's last [`TAIL_BYTES`]. `None` when the copying must stop (the
/// output ended before the line did, or the reader has gone).
async fn pass_rest(
    reader: &mut BufReader<impl AsyncRead + Unpin>,
    into: &mut DuplexStream,
) -> Option<(usize, Vec<u8>)> {
    let mut passed = 0;
    let mut tail = Vec::with_capacity(2 * TAIL_BYTES);
    loop {
        let buffer = reader.fill_buf().await.ok()?;
        if buffer.is_empty() {
            return None;
        }
        let (end, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buffer.len(), false),
        };
        into.write_all(&buffer[..end]).await.ok()?;
        tail.extend_from_slice(&buffer[end.saturating_sub(TAIL_BYTES)..end]);
        tail.drain(..tail.len().saturating_sub(TAIL_BYTES));
        passed += end;
        reader.consume(end);
        if done {
            return Some((passed, tail));
        }
    }
}

/// The error line to follow a response too long for rmcp, whose first bytes are `head` and
/// last bytes `tail`; `None` when it is no response or no `id` can be read.
#[cfg(test)]
fn too_large(head: &[u8], tail: &[u8]) -> Option<Vec<u8>> {
    Some(error_line(
        long_response_id(head, tail)?,
        TOO_LARGE_RESPONSE,
    ))
}

/// The `id` of a response too long to be held, whose first bytes are `head` and last bytes
/// `tail`; `None` when it is no response (as [`verdict`] tells one, from the members
/// readable there) or no `id` can be read.
fn long_response_id(head: &[u8], tail: &[u8]) -> Option<Value> {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let ((leading, unread), trailing) = (leading_members(head), trailing_members(tail));
    // A message of exactly the length checked is whole in `head`, no member going past it.
    let Some(unread) = unread else {
        return whole_response_id(head);
    };
    // What is too long to read is a response's `result` or `error`, not a request's
    // `params`, whose `method` may come after them, where neither end shows it.
    if !matches!(unread, b"\"result\"" | b"\"error\"") {
        return None;
    }
    let value = |key: &[u8]| {
        let mut members = leading.iter().chain(&trailing);
        members.find(|(k, _)| *k == key).map(|(_, v)| *v)
    };
    // A JSON log line carrying an `id` must not fail the request of that id, nor must a
    // request of the server's, whose `id` is of its own numbering.
    if value(b"\"jsonrpc\"") != Some(b"\"2.0\"") || value(b"\"method\"").is_some() {
        return None;
    }
    scalar_id(value(b"\"id\"")?)
}

/// The `id` of the response `text` holds whole (a long line's or a batch message's first
/// [`CHECKED_LINE_BYTES`], when it is exactly that long), read by the rules of
/// [`long_response_id`]: `"jsonrpc":"2.0"`, a `result` or an `error`, no `method`.
fn whole_response_id(text: &[u8]) -> Option<Value> {
    let Ok(Value::Object(message)) = serde_json::from_slice(text) else {
        return None;
    };
    let answer = message.contains_key("result") || message.contains_key("error");
    if message.get("jsonrpc") != Some(&Value::from("2.0")) || message.contains_key("method") {
        return None;
    }
    let id = message
        .get("id")
        .filter(|id| id.is_number() || id.is_string());
    id.filter(|_| answer).cloned()
}

/// A JSON-RPC error line for the request `id`, with [`INVALID_RESPONSE_CODE`].
fn error_line(id: Value, message: &str) -> Vec<u8> {
    let error = json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": INVALID_RESPONSE_CODE.0, "message": message}});
    let mut line = error.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Whether `line` is (or starts) a JSON-RPC batch: a JSON array whose first element is an
/// object, as a message is.
///
/// A line that opens with a bracket but no object is no batch, and is not split: a log line
/// such as `[INFO] ready` or `[0] listening` (what `concurrently` puts before each line of
/// the process it runs), or `[]`; it is checked whole as any line is ([`verdict`]).
fn is_batch(line: &[u8]) -> bool {
    let text = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let at = skip_space(text, 0);
    text.get(at) == Some(&b'[') && text.get(skip_space(text, at + 1)) == Some(&b'{')
}

/// What becomes of a whole line (or a message of a batch) on its way to rmcp.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Passed on as it is.
    Pass,
    /// A response rmcp would skip: this error line for its id goes in its place.
    Replace(Vec<u8>),
    /// JSON but no message (a log line): not passed on.
    Drop,
}

/// The [`Verdict`] on `line` (a message, with or without its `\n`); a response, valid or
/// replaced, takes its request out of `in_flight`.
fn verdict(line: &[u8], in_flight: &InFlight) -> Verdict {
    let text = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.is_empty() {
        return Verdict::Pass;
    }
    if let Ok(message) = serde_json::from_slice::<ServerJsonRpcMessage>(text) {
        return answer(message, in_flight);
    }
    // What rmcp reads of a line: its first value. Not JSON, it skips it without a word.
    let mut read = serde_json::Deserializer::from_slice(text).into_iter::<Value>();
    let Some(Ok(value)) = read.next() else {
        return Verdict::Pass;
    };
    // JSON that does not say it is JSON-RPC is no message: a server that logs JSON to
    // stdout (`{"level":30,"id":3}`, `{"id":3,"error":"ENOENT"}`, `[0] listening`) must
    // neither fail the request whose id its log line happens to carry, whatever its
    // members are named, nor be sent an error for each line by rmcp, which answers JSON
    // that is no message so. Every JSON-RPC 2.0 message carries `"jsonrpc":"2.0"`, and a
    // log line has no reason to.
    let Some(object) = value
        .as_object()
        .filter(|object| object.get("jsonrpc") == Some(&Value::from("2.0")))
    else {
        tracing::debug!(
            "skipping a line of the server's that is JSON but no message: {}",
            shown(&String::from_utf8_lossy(text))
        );
        return Verdict::Drop;
    };
    // A request or notification of the server's rmcp cannot read is rmcp's to answer;
    // what remains is a response.
    if object.contains_key("method") {
        return Verdict::Pass;
    }
    let Some(id) = object
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
    else {
        return Verdict::Pass;
    };
    in_flight.answered(id);
    Verdict::Replace(error_line(id.clone(), INVALID_RESPONSE))
}

/// The [`Verdict`] on a valid message: passed on, its request (if it answers one) taken
/// out of `in_flight`; but an error without an id, which rmcp would drop, goes to the one
/// request in flight, when only one is.
fn answer(message: ServerJsonRpcMessage, in_flight: &InFlight) -> Verdict {
    let answered = match &message {
        JsonRpcMessage::Response(response) => Some(&response.id),
        JsonRpcMessage::Error(error) => error.id.as_ref(),
        _ => return Verdict::Pass,
    };
    if let Some(id) = answered {
        in_flight.answered(&json!(id));
        return Verdict::Pass;
    }
    let JsonRpcMessage::Error(mut error) = message else {
        return Verdict::Pass;
    };
    let Some(sole) = in_flight.sole() else {
        // The server's text, shown escaped as its stderr is: raw, a line break in it forges
        // a log line of its own and an escape sequence drives the terminal.
        tracing::warn!(
            code = error.error.code.0,
            message = %shown(&error.error.message),
            "the MCP server answered a request it could not read with an error without an \
             id, and not one request alone is in flight: the one it answers waits out its \
             timeout"
        );
        return Verdict::Pass;
    };
    in_flight.answered(&sole);
    error.id = serde_json::from_value(sole).ok();
    let mut line = serde_json::to_vec(&error).unwrap_or_default();
    line.push(b'\n');
    Verdict::Replace(line)
}

/// Writes `line` to `into` as `verdict` says.
async fn pass(verdict: Verdict, line: &[u8], into: &mut (impl AsyncWrite + Unpin)) -> Option<()> {
    match verdict {
        Verdict::Pass => into.write_all(line).await.ok(),
        Verdict::Replace(error) => into.write_all(&error).await.ok(),
        Verdict::Drop => Some(()),
    }
}

/// Passes the messages of the batch `line` on, one a line as written, each checked as a
/// line is; `None` when the copying must stop (the reader has gone).
///
/// Each message is passed on as it is read, and the batch is never listed whole: a batch
/// may be as long as rmcp reads a line (16 MiB), and a list of one of millions of tiny
/// messages (`[{},{},…]`) took 16 bytes a message, with a copy of each, some
/// 128 MiB for a 16 MiB line, where this takes the line and a message at a time. (Capping
/// how many messages a batch may hold would bound it too, but JSON-RPC sets no such cap,
/// and the calls a batch over it answered would wait out their timeout.) So a batch that
/// stops reading as JSON partway has the messages before that passed on; the rest of its
/// line follows as a line of its own, for rmcp to skip as any line it cannot read.
async fn pass_batch(line: &[u8], into: &mut DuplexStream, in_flight: &InFlight) -> Option<()> {
    let text = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let bom = line.len() - text.len();
    let mut out = BufWriter::with_capacity(CHECKED_LINE_BYTES, into);
    // Where in `line` what is not passed on yet starts.
    let mut unread = 0;
    let mut at = skip_space(text, 0) + 1;
    loop {
        at = skip_space(text, at);
        if text.get(at) == Some(&b']') && trim_end(&text[at + 1..]).is_empty() {
            return out.flush().await.ok();
        }
        // Read without being built (a message is checked as a line is, below), at any
        // depth: serde_json walks past nested arrays and objects without recursing.
        let mut read = serde_json::Deserializer::from_slice(&text[at..]).into_iter::<IgnoredAny>();
        let Some(Ok(_)) = read.next() else {
            break;
        };
        let end = at + read.byte_offset();
        let message = &text[at..end];
        // A batch in a batch is no message: passed on as it is, not split again a level at
        // a time (a copy and a parse each, as deep as the line goes, where the stack gave
        // out). A message longer than a line checked passes unchecked, as such a line does:
        // built as a value, a message of many tiny values takes many times its length
        // (32 bytes a value), which rmcp's own reading of it takes already.
        let checked = message.len() < CHECKED_LINE_BYTES && !is_batch(message);
        match if checked {
            verdict(message, in_flight)
        } else {
            answered_unchecked(message, in_flight);
            Verdict::Pass
        } {
            Verdict::Pass => {
                out.write_all(message).await.ok()?;
                out.write_all(b"\n").await.ok()?;
            }
            verdict => pass(verdict, message, &mut out).await?,
        }
        at = skip_space(text, end);
        let separated = text.get(at) == Some(&b',');
        at += usize::from(separated);
        unread = bom + at;
        if !separated && text.get(at) != Some(&b']') {
            break;
        }
    }
    out.write_all(&line[unread..]).await.ok()?;
    out.flush().await.ok()
}

/// A message of a batch passed unchecked (one longer than a line checked) that answers a
/// request takes it out of `in_flight`, its `id` read as a long line's is, from its first
/// and last bytes ([`long_response_id`]): left in, a request answered would count as in
/// flight for as long as the server runs, and an error without an id would never again be
/// tied to the sole request really in flight.
fn answered_unchecked(message: &[u8], in_flight: &InFlight) {
    if is_batch(message) {
        return;
    }
    let head = &message[..message.len().min(CHECKED_LINE_BYTES)];
    let tail = &message[message.len().saturating_sub(TAIL_BYTES)..];
    if let Some(id) = long_response_id(head, tail) {
        in_flight.answered(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ChildProcess;
    use crate::server_config::StdioServerConfig;

    /// An error without an id goes to the request in flight when it is the only one; with
    /// two, either could be the one answered, and failing the other would lose its answer.
    #[test]
    fn an_error_without_an_id_goes_to_the_sole_request_in_flight() {
        let unread =
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;
        let in_flight = InFlight::default();
        for id in [4, 5] {
            let request = json!({"jsonrpc": "2.0", "id": id, "method": "ping"}).to_string();
            let mut stdin = crate::in_flight::Recording::new(Vec::<u8>::new(), in_flight.clone());
            futures::executor::block_on(stdin.write_all(format!("{request}\n").as_bytes()))
                .unwrap();
        }
        assert_eq!(verdict(unread, &in_flight), Verdict::Pass);
        let answer = json!({"jsonrpc": "2.0", "id": 4, "result": {}}).to_string();
        assert_eq!(verdict(answer.as_bytes(), &in_flight), Verdict::Pass);
        let Verdict::Replace(line) = verdict(unread, &in_flight) else {
            panic!("not tied to the request in flight");
        };
        let error: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(error["id"], 5, "{error}");
        assert_eq!(error["error"]["message"], "Parse error", "{error}");
        assert_eq!(in_flight.sole(), None);
    }

    /// Found by a review: the message of an error without an id that could be tied to no
    /// request, and a JSON line that is no message, went to the log as the server wrote
    /// them, where a line break in them forged a log line and an escape sequence drove the
    /// terminal. They are logged with their control characters escaped, as stderr is.
    #[test]
    fn the_servers_text_is_logged_escaped() {
        use fusion_core::testkit::logs::Logs;
        let logs = Logs::new();
        tracing::subscriber::with_default(logs.subscriber(tracing::Level::DEBUG), || {
            let unread = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700,
                "message": "Parse error\nERROR forged line \u{1b}[2J"}});
            let passed = verdict(unread.to_string().as_bytes(), &InFlight::default());
            assert_eq!(passed, Verdict::Pass);
            // A carriage return is JSON's white space.
            let log_line = "{\"level\":30,\r\"msg\":\"ready\"}";
            let dropped = verdict(log_line.as_bytes(), &InFlight::default());
            assert_eq!(dropped, Verdict::Drop);
        });
        let text = logs.text();
        assert!(
            text.contains(r"Parse error\nERROR forged line \u{1b}[2J"),
            "{text}"
        );
        assert!(text.contains(r#"{"level":30,\r"msg":"ready"}"#), "{text}");
        assert!(!text.contains(['\r', '\x1b']), "{text:?}");
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn only_invalid_responses_with_an_id_are_replaced() {
        let replaced = |line: &str| match verdict(line.as_bytes(), &InFlight::default()) {
            Verdict::Replace(error) => Some(String::from_utf8(error).unwrap()),
            _ => None,
        };
        for invalid in [
            "{\"jsonrpc\":\"2.0\",\"id\":7}\n",
            "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-1}}\r\n",
            // A member no response has, or a typo, does not make it a log line.
            "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-1},\"data\":1}\n",
            "{\"jsonrpc\":\"2.0\",\"id\":7,\"results\":{}}\n",
        ] {
            let error: Value = serde_json::from_str(&replaced(invalid).unwrap()).unwrap();
            assert_eq!(error["id"], 7, "{invalid}");
            assert_eq!(error["error"]["message"], INVALID_RESPONSE);
        }
        for passed in [
            "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\n",
            "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-1,\"message\":\"no\"}}\n",
            "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n",
            "{\"jsonrpc\":\"2.0\",\"id\":null}\n",
            // A request of the server's the SDK cannot read is not a response.
            "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"no/such\",\"params\":5}\n",
            // Not JSON: rmcp skips it without a word.
            "Loading model... 50%\n",
            "[INFO] ready\n",
            "\n",
        ] {
            assert_eq!(
                verdict(passed.as_bytes(), &InFlight::default()),
                Verdict::Pass,
                "{passed}"
            );
        }
        for dropped in [
            // JSON log lines that carry an id of their own, with whatever members.
            "{\"level\":30,\"id\":7,\"msg\":\"handling tools/call\"}\n",
            "{\"id\":7,\"result\":\"started\"}\n",
            "{\"id\":7,\"error\":\"ENOENT\"}\n",
            "{\"jsonrpc\":\"1.0\",\"id\":7}\n",
            // JSON as far as the first value, which is what rmcp reads.
            "[0] listening\n",
            "[]\n",
            "42\n",
        ] {
            assert_eq!(
                verdict(dropped.as_bytes(), &InFlight::default()),
                Verdict::Drop,
                "{dropped}"
            );
        }
    }

    #[test]
    fn the_id_of_a_long_response_is_read_at_either_end_of_it() {
        let error = |head: &str, tail: &str| {
            let line = too_large(head.as_bytes(), tail.as_bytes())?;
            let error: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(error["error"]["message"], TOO_LARGE_RESPONSE);
            Some(error["id"].clone())
        };
        let head = r#"{"jsonrpc":"2.0","id":"a\"}","result":{"content":[{"type":"text","text":"xx"#;
        assert_eq!(error(head, "xx\"}]}}\n"), Some(json!("a\"}")));
        let head = r#"{"result":{"content":[{"type":"text","text":"xxxx"#;
        assert_eq!(
            error(head, r#"xx"}]},"jsonrpc":"2.0","id":42}"#),
            Some(json!(42))
        );
        assert_eq!(
            error(head, "xx\"}]},\"jsonrpc\":\"2.0\",\"id\":\"q\\\"x\"}\r\n"),
            Some(json!("q\"x"))
        );
        // The id first, "jsonrpc" last.
        let head = r#"{"id":7,"result":{"content":[{"type":"text","text":"xx"#;
        assert_eq!(error(head, r#"xx"}]},"jsonrpc":"2.0"}"#), Some(json!(7)));
        // Says it is JSON-RPC 2.0 and shows no id at its start: any id is the tail's.
        let no_id = r#"{"jsonrpc":"2.0","result":{"content":[{"type":"text","text":"xx"#;
        for (head, tail) in [
            // A request or a notification of the server's.
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage","params":{"#,
                "}}}\n",
            ),
            (
                r#"{"method":"notifications/message","params":{"data":"xx"#,
                r#"x"},"id":3}"#,
            ),
            (
                r#"{"params":{"data":"xx"#,
                r#"x"},"jsonrpc":"2.0","method":"sampling/createMessage","id":3}"#,
            ),
            // Not JSON-RPC: a JSON log line with an id of its own, at either end.
            (r#"{"level":30,"id":7,"msg":"xx"#, "xx\"}\n"),
            (r#"{"msg":"xx"#, r#"xx","id":7}"#),
            (r#"{"jsonrpc":"1.0","id":7,"result":"xx"#, "xx\"}\n"),
            // No id to be read, though the line says it is JSON-RPC 2.0: nested, cut, at
            // the start of the tail (nothing shows it is the object's own), or none.
            (no_id, r#"xx"}],"id":5}}"#),
            (no_id, "99}\n"),
            (no_id, r#""id":5}"#),
            (no_id, "xx\"}]}}\n"),
            ("not json at all", "at all\n"),
            // A request whose `params` are too long, its `method` after them, out of sight
            // of either end.
            (
                r#"{"jsonrpc":"2.0","id":3,"params":{"data":"xx"#,
                r#"xx"},"method":"sampling/createMessage","_meta":{"k":"v"}}"#,
            ),
        ] {
            assert_eq!(error(head, tail), None, "{head} … {tail}");
        }
    }

    /// What [`checked`] passes on of `input`.
    async fn copied(input: String) -> String {
        copied_with(input, InFlight::default()).await
    }

    #[tokio::test]
    async fn a_batch_is_passed_on_one_message_a_line_each_checked() {
        let batch = "[{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}},{\"jsonrpc\":\"2.0\",\"id\":2},\
                     {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}]\n";
        let lines = copied(format!("{batch}[]\n[ ]\r\n")).await;
        let lines: Vec<Value> = lines
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        // `[]` is no batch (no message opens it), and JSON, which rmcp would answer with an
        // error sent to the server: not passed on.
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
        assert_eq!(lines[1]["id"], 2);
        assert_eq!(lines[1]["error"]["message"], INVALID_RESPONSE);
        assert_eq!(lines[2]["method"], "notifications/message");
    }

    /// Each message is passed on as it is read, none listed first (which took many times
    /// the line for a batch of many tiny messages): those before where a batch stops
    /// reading as JSON are passed on, and the rest of its line after them.
    #[tokio::test]
    async fn a_batch_is_passed_on_as_far_as_it_reads() {
        let note = r#"{"jsonrpc":"2.0","method":"n"}"#;
        let tiny = vec![note; 100_000].join(",");
        let input = format!(
            "[{tiny}, {{\"jsonrpc\":\"2.0\",\"id\":2}} ,{{\"id\":3,]\n\
             [INFO] listening\n\
             [0] listening\n\
             [[1], 2 3]\n\
             [] [1]\n\
             [{{}}, 1] trailing\n"
        );
        let read = copied(input).await;
        let rest = read
            .strip_prefix(&format!("{note}\n").repeat(100_000))
            .unwrap();
        let (error, rest) = rest.split_once('\n').unwrap();
        let error: Value = serde_json::from_str(error).unwrap();
        assert_eq!(error["id"], 2);
        assert_eq!(error["error"]["message"], INVALID_RESPONSE);
        assert_eq!(
            rest, "{\"id\":3,]\n[INFO] listening\n[[1], 2 3]\n] trailing\n",
            "`[0] listening`, `[] [1]`, `{{}}` and `1` are JSON but no message: not passed on"
        );
    }

    /// A message of a batch is checked as a line is: one longer than a line checked passes
    /// unchecked, not built as a value a second time (rmcp builds it) at many times its
    /// length.
    #[tokio::test]
    async fn a_long_message_of_a_batch_passes_unchecked_as_a_long_line() {
        let long = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"results\":[{}0]}}",
            "0,".repeat(CHECKED_LINE_BYTES)
        );
        let read = copied(format!("[{long},{{\"jsonrpc\":\"2.0\",\"id\":2}}]\n")).await;
        let rest = read.strip_prefix(&format!("{long}\n")).unwrap();
        let error: Value = serde_json::from_str(rest).unwrap();
        assert_eq!(error["id"], 2);
        assert_eq!(error["error"]["message"], INVALID_RESPONSE);
    }

    /// Found by a review: the answer to a request, in a batch and longer than a message
    /// checked, left its request listed in flight, so that an error without an id was
    /// never again tied to the sole request really in flight. Its id is read from its ends,
    /// as a long line's is, wherever the SDK writing it puts `id`.
    #[tokio::test]
    async fn a_long_answer_in_a_batch_takes_its_request_out_of_flight() {
        let in_flight = calls_in_flight(&[1, 2, 3]).await;
        let big = "a".repeat(2 * CHECKED_LINE_BYTES);
        let id_first = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"x":"{big}"}}}}"#);
        let id_last = format!(r#"{{"result":{{"x":"{big}"}},"jsonrpc":"2.0","id":2}}"#);
        let batch = format!("[{id_first}, {id_last}]\n");
        let read = copied_with(batch, in_flight.clone()).await;
        assert_eq!(read, format!("{id_first}\n{id_last}\n"));
        assert_eq!(in_flight.sole(), Some(Value::from(3)));
    }

    /// Found by a review: an answer of exactly [`CHECKED_LINE_BYTES`] passes unchecked (on
    /// a line of its own, or in a batch), but what was read of it to find its `id` was all
    /// of it, no member going past, and it was taken for no response: its request stayed
    /// in flight for as long as the server ran.
    #[tokio::test]
    async fn an_answer_of_exactly_the_checked_length_takes_its_request_out_of_flight() {
        let in_flight = calls_in_flight(&[1, 2, 3]).await;
        let exactly = |id: u32| {
            let short = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"x":""}}}}"#);
            let pad = "a".repeat(CHECKED_LINE_BYTES - short.len());
            let answer = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"x":"{pad}"}}}}"#);
            assert_eq!(answer.len(), CHECKED_LINE_BYTES);
            answer
        };
        let (line, member) = (exactly(1), exactly(2));
        let input = format!("{line}\n[{member}]\n");
        let read = copied_with(input, in_flight.clone()).await;
        assert_eq!(read, format!("{line}\n{member}\n"));
        assert_eq!(in_flight.sole(), Some(Value::from(3)));
    }

    /// Requests `tools/call` of the ids `ids`, written to a server's stdin as the
    /// connection writes them, so listed in flight.
    async fn calls_in_flight(ids: &[u32]) -> InFlight {
        let in_flight = InFlight::default();
        let mut stdin = crate::in_flight::Recording::new(Vec::<u8>::new(), in_flight.clone());
        for id in ids {
            let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call"});
            stdin
                .write_all(format!("{request}\n").as_bytes())
                .await
                .unwrap();
        }
        in_flight
    }

    /// What [`checked`] makes of `input`, noting answers in `in_flight`.
    async fn copied_with(input: String, in_flight: InFlight) -> String {
        let mut out = checked(std::io::Cursor::new(input.into_bytes()), in_flight);
        let mut read = String::new();
        out.read_to_string(&mut read).await.unwrap();
        read
    }

    #[tokio::test]
    async fn a_long_batch_is_split_up_to_the_longest_line_rmcp_reads() {
        let message = |id: usize, bytes: usize| {
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"x\":\"{}\"}}}}",
                "a".repeat(bytes)
            )
        };
        let (first, second) = (message(1, 2 * CHECKED_LINE_BYTES), message(2, 10));
        let long = format!("[{first}, {second}]\n");
        let too_long = format!("[{}]\n", message(3, MAX_LINE_BYTES));
        let input = format!("{long}{too_long}[{{\"jsonrpc\":\"2.0\",\"id\":4}}]\n");
        let mut out = checked(
            std::io::Cursor::new(input.into_bytes()),
            InFlight::default(),
        );
        let mut read = String::new();
        out.read_to_string(&mut read).await.unwrap();
        // Its messages as written, one a line.
        let rest = read.strip_prefix(&format!("{first}\n{second}\n")).unwrap();
        // Longer than rmcp reads: passed on for it to discard, as any such line.
        let rest = rest.strip_prefix(&too_long).unwrap();
        let error: Value = serde_json::from_str(rest).unwrap();
        assert_eq!(error["id"], 4);
        assert_eq!(error["error"]["message"], INVALID_RESPONSE);
    }

    /// A batch inside a batch is no message: passed on as its line, not split again, a
    /// copy of it made and parsed once a level (as deep as a line goes, which overflowed
    /// the stack).
    #[tokio::test]
    async fn a_batch_nested_in_a_batch_is_not_split_again() {
        let depth = 2 * CHECKED_LINE_BYTES;
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let note = r#"{"jsonrpc":"2.0","method":"n"}"#;
        let input = format!("[{note}, {nested}, [], 1]\n{{\"jsonrpc\":\"2.0\",\"id\":4}}\n");
        let mut out = checked(
            std::io::Cursor::new(input.into_bytes()),
            InFlight::default(),
        );
        let mut read = String::new();
        out.read_to_string(&mut read).await.unwrap();
        let rest = read.strip_prefix(&format!("{note}\n{nested}\n")).unwrap();
        let error: Value = serde_json::from_str(rest).unwrap();
        assert_eq!(error["id"], 4);
    }

    /// A server's process writes a batch line of 1 MiB, which is held whole to be split,
    /// then short lines: the buffer that held it does not keep its megabytes for them.
    #[tokio::test]
    async fn a_long_batch_line_s_buffer_is_given_back_after_it() {
        let script = r#"
            const text = (id, text) => ({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text }] } });
            process.stdout.write(JSON.stringify([text(1, 'x'.repeat(1 << 20)), text(2, 'y')]) + '\n');
            for (let id = 3; id < 6; id++) process.stdout.write(JSON.stringify(text(id, 'z')) + '\n');
        "#;
        let config = StdioServerConfig::new("node").args(["-e", script]);
        let mut process = ChildProcess::spawn("batch", &config).unwrap();
        let (stdout, _stdin) = process.take_stdio().unwrap();
        let (mut into, mut out) = tokio::io::duplex(CHECKED_LINE_BYTES);
        let read = tokio::spawn(async move {
            let mut read = String::new();
            out.read_to_string(&mut read).await.unwrap();
            read
        });
        let mut reader = BufReader::with_capacity(CHECKED_LINE_BYTES, stdout);
        let mut line = Vec::new();
        let mut capacities = Vec::new();
        while copy_line(&mut reader, &mut line, &mut into, &InFlight::default())
            .await
            .is_some()
        {
            capacities.push(line.capacity());
        }
        drop(into);
        let ids: Vec<Value> = read
            .await
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap()["id"].clone())
            .collect();
        // The batch was split (so held whole) and every line copied.
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert_eq!(capacities.len(), 4, "{capacities:?}");
        assert!(
            capacities
                .iter()
                .all(|&capacity| capacity <= KEPT_LINE_CAPACITY),
            "{capacities:?}"
        );
    }

    #[tokio::test]
    async fn lines_pass_byte_for_byte_and_long_ones_unchecked() {
        let long = format!(
            "{{\"id\":1,\"x\":\"{}\"}}\n",
            "a".repeat(3 * CHECKED_LINE_BYTES)
        );
        let input = format!("not json\r\n{long}{{\"jsonrpc\":\"2.0\",\"id\":2}}\npartial");
        let mut out = checked(
            std::io::Cursor::new(input.clone().into_bytes()),
            InFlight::default(),
        );
        let mut read = String::new();
        out.read_to_string(&mut read).await.unwrap();
        let rest = read.strip_prefix(&format!("not json\r\n{long}")).unwrap();
        let (error, rest) = rest.split_once('\n').unwrap();
        let error: Value = serde_json::from_str(error).unwrap();
        assert_eq!(error["id"], 2);
        assert_eq!(error["error"]["message"], INVALID_RESPONSE);
        assert_eq!(rest, "partial");
    }
}
