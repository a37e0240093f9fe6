//! `tools/call`, sent raw and read one content block at a time.
//!
//! The SDK's typed call reads the whole result into its own types: one content block of
//! a type it does not know (one a newer revision of the specification added) makes the
//! whole result unreadable, and the tool's output, though the tool ran, would reach the
//! model as a vague failure. Read here, such a block becomes a note and the rest is kept,
//! as `tools/list` is read one tool at a time ([`list_tools`](crate::connection::list_tools)).

use rmcp::model::{
    CallToolRequestParams, CallToolResult, CancelledNotification, CancelledNotificationParam,
    ClientNotification, ClientRequest, ContentBlock, CustomRequest, RequestId, ServerResult,
};
use rmcp::service::{Peer, PeerRequestOptions, RoleClient, ServiceError};
use serde_json::Value;

/// Calls a tool; dropped before the answer (a timeout), it tells the server with
/// `notifications/cancelled`, as the SDK's own call does.
pub async fn call_tool(
    peer: &Peer<RoleClient>,
    params: CallToolRequestParams,
) -> Result<CallToolResult, ServiceError> {
    let params = serde_json::to_value(&params).map_err(|_| ServiceError::UnexpectedResponse)?;
    let request = ClientRequest::CustomRequest(CustomRequest::new("tools/call", Some(params)));
    let abandoned = "the call was abandoned (its timeout passed)";
    match send_cancellable(peer, request, abandoned).await? {
        ServerResult::CallToolResult(result) => Ok(result),
        // `{}`, or only `resultType` / `_meta`: a result without content, as the SDK's
        // call reads it.
        ServerResult::EmptyResult(_) | ServerResult::TaskAckResult(_) => {
            Ok(CallToolResult::success(Vec::new()))
        }
        ServerResult::CustomResult(raw) => lenient(raw.0).ok_or(ServiceError::UnexpectedResponse),
        _ => Err(ServiceError::UnexpectedResponse),
    }
}

/// Sends `request` and waits for its answer. Dropped before the answer (a timeout, a
/// re-listing given up), it tells the server with `notifications/cancelled` giving
/// `reason`, as the SDK's typed requests do with a timeout of their own: a server need not
/// go on with a request nobody waits for, and over stdio the notification is what takes
/// the request out of the requests in flight ([`in_flight`](crate::in_flight)), which
/// otherwise, never answered, would stay there and keep an error without an id from
/// being tied to the request it answers for as long as the server runs.
pub async fn send_cancellable(
    peer: &Peer<RoleClient>,
    request: ClientRequest,
    reason: &'static str,
) -> Result<ServerResult, ServiceError> {
    let handle = peer
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await?;
    let mut guard = CancelOnDrop {
        peer: peer.clone(),
        id: Some(handle.id.clone()),
        reason,
    };
    let reply = handle.await_response().await;
    guard.id = None;
    reply
}

/// Sends `notifications/cancelled` for request `id` unless the answer came.
struct CancelOnDrop {
    peer: Peer<RoleClient>,
    id: Option<RequestId>,
    reason: &'static str,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        let peer = self.peer.clone();
        let params = CancelledNotificationParam::new(Some(id), Some(self.reason.to_owned()));
        let notification =
            ClientNotification::CancelledNotification(CancelledNotification::new(params));
        // Dropped inside the runtime (a timeout, a turn stopped); a server that has gone
        // meanwhile cannot be told, and needs not be.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = peer.send_notification(notification).await;
            });
        }
    }
}

/// A `tools/call` result the SDK could not read whole: its content one block at a time,
/// a block of an unknown type as a note naming the type; no `content` is none. `None` when
/// it is not a result at all (not an object, or a `content` that is not a list).
fn lenient(raw: Value) -> Option<CallToolResult> {
    let no_blocks = Vec::new();
    let blocks = match raw.as_object()?.get("content") {
        Some(content) => content.as_array()?,
        None => &no_blocks,
    };
    let content = blocks
        .iter()
        .map(|block| {
            serde_json::from_value::<ContentBlock>(block.clone()).unwrap_or_else(|_| {
                let kind = block["type"].as_str().unwrap_or("(none)");
                let kind: String = kind.chars().take(40).collect();
                ContentBlock::text(format!(
                    "[content of a type this client cannot read ({kind:?}), not shown]"
                ))
            })
        })
        .collect();
    let mut result = CallToolResult::success(content);
    result.is_error = raw.get("isError").and_then(Value::as_bool);
    result.structured_content = raw.get("structuredContent").cloned();
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unknown_block_becomes_a_note_and_the_rest_is_kept() {
        let raw = json!({
            "content": [
                {"type": "text", "text": "important text result"},
                {"type": "hologram", "data": "…"},
            ],
            "isError": false,
        });
        let result = lenient(raw).unwrap();
        let texts: Vec<String> = result
            .content
            .iter()
            .filter_map(|b| b.as_text().map(|t| t.text.clone()))
            .collect();
        assert_eq!(
            texts,
            [
                "important text result",
                "[content of a type this client cannot read (\"hologram\"), not shown]"
            ]
        );
        assert_eq!(result.is_error, Some(false));
        assert!(lenient(json!({"content": "not a list"})).is_none());
        assert!(lenient(json!(["not", "an", "object"])).is_none());
        let meta_only = lenient(json!({"_meta": {"x": 1}})).unwrap();
        assert!(meta_only.content.is_empty());
    }
}
