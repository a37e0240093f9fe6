//! Every field `write` writes, for every kind of message, reads back whole: `read`'s
//! refusals (a field this release does not know, a key written twice, a content part
//! holding more than its text) never refuse an export this release wrote.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::super::*;
use crate::storage::Expiry;
use crate::{MessageId, ToolCall};

/// A session holding every kind of message and every field a message has, set and empty.
fn rich() -> Vec<ChatMessage> {
    let id = |text: &str| MessageId::parse(text).unwrap();
    let calls = vec![
        ToolCall::new("c1", "read_file", r#"{"path":"a.txt"}"#),
        ToolCall::new("c2", "ls", ""),
        ToolCall::new("c3", "broken", "{not json \"quoted\" \\ [1,"),
    ];
    let metadata = json!({
        "null": null,
        "empty array": [],
        "empty object": {},
        "nested": {"a": [1, -2, 3.5, 1e300, -0.0, u64::MAX, i64::MIN, true, "x", null, {}]},
        "fusion_batch_more": 1,
        "": "an empty key",
    });
    let mut annotated = ChatMessage::assistant("summary").with_id(id("m-4"));
    for (key, value) in metadata.as_object().unwrap() {
        annotated = annotated.with_metadata(key.clone(), value.clone());
    }
    vec![
        ChatMessage::system("be brief").with_name("policy"),
        ChatMessage::user("line one\r\nline two, ünïcödé \u{0}\u{1b}[1m \"quoted\"")
            .with_id(id("m-1"))
            .with_name(""),
        ChatMessage::user("").with_id(id("m-2")),
        ChatMessage::assistant_with_tool_calls("", calls.clone()).with_id(id("m-3")),
        ChatMessage::assistant_with_tool_calls("calling", calls[..1].to_vec()).with_name("bot"),
        ChatMessage::tool_result("c1", "first line\nsecond line").with_name("read_file"),
        ChatMessage::tool_result("c2", "").with_id(id("01a251ab-5d58-7b79-8ea0-0aeefaa2a413")),
        // Not `tool_result("", ...)`: `read` refuses a tool result answering no call.
        ChatMessage::tool_result("c3", "answers the broken call"),
        annotated,
    ]
}

fn rich_meta() -> SessionMeta {
    SessionMeta::new()
        .owner("alice")
        .title("Logs \"quoted\" ünï")
        .tags(["ops", "b"])
        .data(
            "ticket",
            json!({"n": [1, 2.5, null], "empty": {}, "none": []}),
        )
        .data("plain", json!("x"))
        .expiry(Expiry::Idle(Duration::from_micros(90_500_001)))
}

/// A session with every kind of message, every field set and left empty, metadata of
/// every JSON kind, exported in each format `read` reads (with and without times) and read
/// back: the same messages, metadata and times, and written again, the same text.
#[test]
fn an_export_of_this_release_reads_back_whole_in_every_format() {
    let mut info = SessionInfo::new("s-rich", 9);
    info.meta = rich_meta();
    info.created_at = Some(UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001));
    info.updated_at = Some(UNIX_EPOCH + Duration::from_micros(1_700_000_060_250_000));
    for format in [ExportFormat::Json, ExportFormat::Jsonl] {
        for with_times in [true, false] {
            let text = match with_times {
                true => write_session(format, &info, &rich()).unwrap(),
                false => write(format, "s-rich", &info.meta, &rich()).unwrap(),
            };
            let back = read(&text).unwrap_or_else(|err| panic!("{format:?}: {err}\n{text}"));
            assert_eq!(back.messages, rich(), "{format:?}");
            let json = format == ExportFormat::Json;
            assert_eq!(
                back.meta,
                if json {
                    rich_meta()
                } else {
                    SessionMeta::new()
                }
            );
            let times = (json && with_times)
                .then(|| SessionTimes::of(&info))
                .flatten();
            assert_eq!(back.times, times, "{format:?}");
            let mut again = info.clone();
            again.meta = back.meta.clone();
            (again.created_at, again.updated_at) = match back.times {
                Some(times) => (Some(times.created_at), Some(times.updated_at)),
                None => (None, None),
            };
            let rewritten = match with_times && json {
                true => write_session(format, &again, &back.messages).unwrap(),
                false => write(format, "s-rich", &again.meta, &back.messages).unwrap(),
            };
            assert_eq!(rewritten, text, "{format:?}: written again");
            // With a byte-order mark and CRLF line ends, as an editor may save it.
            let edited = format!("\u{feff}{}", text.replace('\n', "\r\n"));
            assert_eq!(read(&edited).unwrap().messages, rich(), "{format:?}: CRLF");
        }
    }
}
