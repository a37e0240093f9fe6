//! The requests sent to a stdio server that it has not answered yet, so that an error
//! response without an `id` can be tied to the request it answers when there is no doubt
//! which one that is.
//!
//! A server that cannot read a request (JSON-RPC's parse error, an invalid request)
//! answers with `"id": null`, and rmcp drops such an error, since it names no request: the
//! call waits out its whole timeout, and the model reads that the server did not answer.
//! With one request in flight, and no other message the server may not have read yet (a
//! notification or an answer to the server, which a server could fail to read as well,
//! written after it or after the last request the server answered), it can only be
//! answering that one, which then ends at once with the server's error. With several it could be answering any of them, and failing
//! one that is being answered would lose its result: they are left to their answers or
//! their timeout, and the error is logged.
//!
//! [`Recording`] reads the id of each request as rmcp writes it to the server, and
//! [`checked`](crate::checked) takes it out when its response (or an error for it)
//! comes back, or when rmcp cancels it (a server need not answer a cancelled request).
//! An answer too long to be checked (past 64 KiB, on a line of its own or inside a batch)
//! has its id read from its first and last bytes. A request whose answer's id is not read
//! even so (written between two long members) stays in the list: that errs towards tying
//! nothing, never towards tying the wrong request. A request given up before its answer
//! (a call's timeout, a listing abandoned) is cancelled with `notifications/cancelled`,
//! which takes it out (see [`send_cancellable`](crate::call::send_cancellable)).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWrite;

/// How much of a line sent to the server is kept to read a request's id from. rmcp
/// writes `jsonrpc`, `id` and `method` before `params`, so the head of a request with
/// long arguments is enough (see [`Sent::read`]).
const HEAD_BYTES: usize = 4 << 10;

/// The requests sent to one server and not answered.
#[derive(Clone, Default, Debug)]
pub struct InFlight(Arc<Mutex<Written>>);

/// What was written to one server, each message numbered in order.
#[derive(Default, Debug)]
struct Written {
    /// The requests not answered: their ids (as their JSON text) and numbers.
    requests: BTreeMap<String, u64>,
    /// How many messages were written.
    count: u64,
    /// The number of the last message that was no request (a notification, an answer to
    /// the server's request, a line not read): one the server may have failed to read too.
    last_other: u64,
    /// The number of the last request the server answered: it has read what came before.
    read_through: u64,
}

impl InFlight {
    fn written(&self) -> std::sync::MutexGuard<'_, Written> {
        // A panic while the lock was held left it whole: each change is one statement.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sent(&self, id: &Value) {
        let mut written = self.written();
        written.count += 1;
        let count = written.count;
        written.requests.insert(id.to_string(), count);
    }

    fn sent_other(&self) {
        let mut written = self.written();
        written.count += 1;
        written.last_other = written.count;
    }

    /// The server answered the request `id`, so it has read every message written before it.
    pub fn answered(&self, id: &Value) {
        let mut written = self.written();
        if let Some(number) = written.requests.remove(&id.to_string()) {
            written.read_through = written.read_through.max(number);
        }
    }

    /// The request `id` was cancelled: it needs no answer, and the server need not have read
    /// anything.
    fn cancelled(&self, id: &Value) {
        self.written().requests.remove(&id.to_string());
    }

    /// The one request in flight, when exactly one is and no other message is one the
    /// server may not have read yet: neither one written after the request, nor one written
    /// after the last request the server answered (the notification that goes just before
    /// the first `tools/list`, whose error may come while that is in flight). An error
    /// without an id answers some message the server could not read, which may be a
    /// notification (a server that answers one it does not know, though none should)
    /// rather than the request.
    pub fn sole(&self) -> Option<Value> {
        let written = self.written();
        let others_read = written.last_other <= written.read_through;
        match written.requests.first_key_value() {
            Some((id, &number))
                if written.requests.len() == 1 && number > written.last_other && others_read =>
            {
                serde_json::from_str(id).ok()
            }
            _ => None,
        }
    }
}

/// The server's stdin, noting in an [`InFlight`] the id of each request written to it.
pub struct Recording<W> {
    inner: W,
    in_flight: InFlight,
    /// The first [`HEAD_BYTES`] of the line being written.
    head: Vec<u8>,
    /// Whether the line being written is longer than what `head` holds of it.
    cut: bool,
}

impl<W> Recording<W> {
    pub fn new(inner: W, in_flight: InFlight) -> Self {
        Self {
            inner,
            in_flight,
            head: Vec::new(),
            cut: false,
        }
    }

    /// Notes what of the lines being written `written` holds.
    fn record(&mut self, mut written: &[u8]) {
        while !written.is_empty() {
            let end = written.iter().position(|&b| b == b'\n');
            let part = &written[..end.unwrap_or(written.len())];
            let room = HEAD_BYTES - self.head.len();
            self.head.extend_from_slice(&part[..part.len().min(room)]);
            self.cut |= part.len() > room;
            let Some(end) = end else {
                return;
            };
            match Sent::read(&self.head, self.cut) {
                Some(sent) => sent.note(&self.in_flight),
                None => self.in_flight.sent_other(),
            }
            self.head.clear();
            self.cut = false;
            written = &written[end + 1..];
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Recording<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.record(&buf[..n]);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What of a message sent to the server matters here.
#[derive(Deserialize)]
struct Sent {
    id: Option<Value>,
    method: Option<String>,
    params: Option<Value>,
}

impl Sent {
    /// The message whose line starts with `head` (all of it unless `cut`). Of a line longer
    /// than `head`, what comes before `params` (where rmcp writes the id and the method).
    fn read(head: &[u8], cut: bool) -> Option<Sent> {
        if !cut {
            return serde_json::from_slice(head).ok();
        }
        let params = head.windows(10).position(|w| w == b",\"params\":")?;
        let mut before = head[..params].to_vec();
        before.push(b'}');
        serde_json::from_slice(&before).ok()
    }

    fn note(self, in_flight: &InFlight) {
        let scalar = |id: &Value| id.is_number() || id.is_string();
        match (self.method.as_deref(), self.id) {
            (Some("notifications/cancelled"), None) => {
                let cancelled = self.params.as_ref().and_then(|p| p.get("requestId"));
                if let Some(id) = cancelled.filter(|id| scalar(id)) {
                    in_flight.cancelled(id);
                }
                in_flight.sent_other();
            }
            (Some(_), Some(id)) if scalar(&id) => in_flight.sent(&id),
            _ => in_flight.sent_other(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The requests written in pieces however cut, a line longer than what is kept of it
    /// among them, are noted; notifications and the client's answers to the server are not;
    /// an answer or a cancellation takes a request out.
    #[tokio::test]
    async fn requests_are_noted_and_answers_and_cancellations_take_them_out() {
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"a":"{}"}}}}"#,
            "x".repeat(3 * HEAD_BYTES)
        );
        let (head, tail) = long.as_bytes().split_at(100);
        let in_flight = InFlight::default();
        let mut recording = Recording::new(tokio::io::sink(), in_flight.clone());
        for write in [
            &b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\n{\"jsonrpc\":"[..],
            b"\"2.0\",\"method\":\"notifications/initialized\"}\n",
            b"{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{}}\n",
            head,
            tail,
            b"\n",
        ] {
            recording.write_all(write).await.unwrap();
        }
        let ids = |in_flight: &InFlight| {
            let written = in_flight.written();
            written.requests.keys().cloned().collect::<Vec<_>>()
        };
        assert_eq!(ids(&in_flight), ["3", "7"]);
        in_flight.answered(&Value::from(3));
        assert_eq!(ids(&in_flight), ["7"]);
        let cancel =
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}"#;
        recording.write_all(cancel).await.unwrap();
        recording.write_all(b"\n").await.unwrap();
        assert!(in_flight.written().requests.is_empty());
    }

    /// Writes each of `lines` to `recording`, a message a line.
    async fn write_lines(recording: &mut Recording<tokio::io::Sink>, lines: &[&str]) {
        for line in lines {
            recording.write_all(line.as_bytes()).await.unwrap();
            recording.write_all(b"\n").await.unwrap();
        }
    }

    /// An error without an id is tied to the sole request only when nothing else was
    /// written after it, a notification the server may have failed to read instead.
    #[tokio::test]
    async fn a_notification_after_the_sole_request_leaves_it_untied() {
        let in_flight = InFlight::default();
        let mut recording = Recording::new(tokio::io::sink(), in_flight.clone());
        write_lines(
            &mut recording,
            &[r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#],
        )
        .await;
        assert_eq!(in_flight.sole(), Some(Value::from(1)));
        write_lines(
            &mut recording,
            &[r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#],
        )
        .await;
        assert_eq!(in_flight.sole(), None);
    }

    /// A notification written before the sole request, which the server has not been seen
    /// to read (no request written after it answered), may be what an error without an id
    /// answers: `notifications/initialized` goes just before the first `tools/list`, and
    /// a server's error for it may come while that is in flight. Once a later request is
    /// answered, the server has read past it.
    #[tokio::test]
    async fn a_notification_the_server_may_not_have_read_leaves_the_sole_request_untied() {
        let in_flight = InFlight::default();
        let mut recording = Recording::new(tokio::io::sink(), in_flight.clone());
        write_lines(
            &mut recording,
            &[r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#],
        )
        .await;
        in_flight.answered(&Value::from(0));
        write_lines(
            &mut recording,
            &[
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            ],
        )
        .await;
        assert_eq!(in_flight.sole(), None);
        in_flight.answered(&Value::from(1));
        write_lines(
            &mut recording,
            &[r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{}}"#],
        )
        .await;
        assert_eq!(in_flight.sole(), Some(Value::from(2)));
        // A cancellation is no sign the server read anything.
        write_lines(
            &mut recording,
            &[
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#,
                r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}}"#,
            ],
        )
        .await;
        assert_eq!(in_flight.sole(), None);
    }

    /// The id of a call whose arguments make its line longer than what is kept of it is read
    /// as rmcp writes it (`id` and `method` before `params`).
    #[test]
    fn a_long_call_as_rmcp_writes_it_is_noted() {
        use rmcp::model::{
            CallToolRequest, CallToolRequestParams, ClientJsonRpcMessage, ClientRequest,
            JsonRpcRequest, NumberOrString,
        };
        let arguments = serde_json::json!({"text": "x".repeat(3 * HEAD_BYTES)});
        let params = CallToolRequestParams::new("echo")
            .with_arguments(arguments.as_object().unwrap().clone());
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let message =
            ClientJsonRpcMessage::Request(JsonRpcRequest::new(NumberOrString::Number(12), request));
        let line = serde_json::to_vec(&message).unwrap();
        assert!(line.len() > HEAD_BYTES);
        let sent = Sent::read(&line[..HEAD_BYTES], true).expect("read from the head");
        assert_eq!(sent.id, Some(Value::from(12)));
        assert_eq!(sent.method.as_deref(), Some("tools/call"));
    }
}
