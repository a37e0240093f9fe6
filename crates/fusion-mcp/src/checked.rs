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
//! gone wrong. A line without `"jsonrpc":"2.0"` (a JSON log line, `{"level":30,"id":3}`,
//! `{"id":3,"result":"started"}`) is not a response, whatever members it has, and passes
//! to be skipped. Every other line passes unchanged, byte for byte; lines longer than
//! [`CHECKED_LINE_BYTES`] pass unchecked, without being held whole.

use rmcp::model::{ErrorCode, ServerJsonRpcMessage};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

/// The longest line checked; a longer one is passed on as it comes.
pub const CHECKED_LINE_BYTES: usize = 64 << 10;

/// The code of the error an invalid response is replaced by (JSON-RPC's "internal
/// error"), with [`INVALID_RESPONSE`] as its message.
pub const INVALID_RESPONSE_CODE: ErrorCode = ErrorCode::INTERNAL_ERROR;

/// The message of the error an invalid response is replaced by.
pub const INVALID_RESPONSE: &str = "fusion: the server sent an invalid response";

/// `output` as the SDK is to read it: a task copies it line by line, replacing invalid
/// responses, and ends when `output` ends or the reader is dropped.
pub fn checked(output: impl AsyncRead + Send + Unpin + 'static) -> DuplexStream {
    let (mut into, out) = tokio::io::duplex(CHECKED_LINE_BYTES);
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(CHECKED_LINE_BYTES, output);
        let mut line = Vec::new();
        loop {
            line.clear();
            let limit = CHECKED_LINE_BYTES as u64;
            match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let whole = line.ends_with(b"\n");
            let replaced = whole.then(|| replacement(&line)).flatten();
            if into
                .write_all(replaced.as_deref().unwrap_or(&line))
                .await
                .is_err()
            {
                break;
            }
            if !whole && line.len() >= CHECKED_LINE_BYTES && pass_rest(&mut reader, &mut into).await
            {
                break;
            }
        }
    });
    out
}

/// Copies the rest of a long line through; true when the copying must stop.
async fn pass_rest(
    reader: &mut BufReader<impl AsyncRead + Unpin>,
    into: &mut DuplexStream,
) -> bool {
    loop {
        let Ok(buffer) = reader.fill_buf().await else {
            return true;
        };
        if buffer.is_empty() {
            return true;
        }
        let (end, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buffer.len(), false),
        };
        if into.write_all(&buffer[..end]).await.is_err() {
            return true;
        }
        reader.consume(end);
        if done {
            return false;
        }
    }
}

/// The error line to put in place of `line`, when it is a response the SDK would skip.
fn replacement(line: &[u8]) -> Option<Vec<u8>> {
    let text = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.is_empty() || serde_json::from_slice::<ServerJsonRpcMessage>(text).is_ok() {
        return None;
    }
    let value: Value = serde_json::from_slice(text).ok()?;
    // Only what says it is JSON-RPC and is no request or notification: a response. A
    // server that logs JSON to stdout (`{"level":30,"id":3}`, `{"id":3,"error":"ENOENT"}`)
    // must not fail the request whose id its log line happens to carry, whatever its
    // members are named; the SDK skips such lines. Every JSON-RPC 2.0 message carries
    // `"jsonrpc":"2.0"`, and a log line has no reason to.
    let object = value.as_object()?;
    if object.get("jsonrpc") != Some(&Value::from("2.0")) || object.contains_key("method") {
        return None;
    }
    let id = object
        .get("id")
        .filter(|id| id.is_string() || id.is_number())?;
    let error = json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": INVALID_RESPONSE_CODE.0, "message": INVALID_RESPONSE}});
    let mut line = error.to_string().into_bytes();
    line.push(b'\n');
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_invalid_responses_with_an_id_are_replaced() {
        let replaced =
            |line: &str| replacement(line.as_bytes()).map(|l| String::from_utf8(l).unwrap());
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
            // JSON log lines that carry an id of their own, with whatever members.
            "{\"level\":30,\"id\":7,\"msg\":\"handling tools/call\"}\n",
            "{\"id\":7,\"result\":\"started\"}\n",
            "{\"id\":7,\"error\":\"ENOENT\"}\n",
            "{\"jsonrpc\":\"1.0\",\"id\":7}\n",
            // A request of the server's the SDK cannot read is not a response.
            "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"no/such\",\"params\":5}\n",
            "Loading model... 50%\n",
            "\n",
        ] {
            assert_eq!(replaced(passed), None, "{passed}");
        }
    }

    #[tokio::test]
    async fn lines_pass_byte_for_byte_and_long_ones_unchecked() {
        let long = format!(
            "{{\"id\":1,\"x\":\"{}\"}}\n",
            "a".repeat(3 * CHECKED_LINE_BYTES)
        );
        let input = format!("not json\r\n{long}{{\"jsonrpc\":\"2.0\",\"id\":2}}\npartial");
        let mut out = checked(std::io::Cursor::new(input.clone().into_bytes()));
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
