//! The export formats: round trips, shapes, and what a broken file is told.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::ToolCall;
use crate::storage::Expiry;

mod meta_data;
mod place;
mod round_trip;
mod scans;
mod tool_results;
mod wording;

fn sample() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("be brief"),
        ChatMessage::user("line one\nline two, ünïcödé"),
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall::new("c1", "read_file", "{not json")],
        ),
        ChatMessage::tool_result("c1", ""),
        ChatMessage::assistant("done").with_metadata("kind", json!("summary")),
    ]
}

fn meta() -> SessionMeta {
    let at = std::time::UNIX_EPOCH + Duration::from_micros(4_102_444_800_123_456);
    SessionMeta::new()
        .owner("alice")
        .title("Logs")
        .tags(["ops", "b"])
        .data("ticket", json!({"n": [1, 2]}))
        .expiry(Expiry::At(at))
}

fn with_meta(meta: &str) -> String {
    format!(r#"{{"meta":{meta},"messages":[{{"role":"user","content":"hi"}}]}}"#)
}

/// The error and its sources, joined as `anyhow` shows them with `{:#}`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

#[test]
fn json_and_jsonl_round_trip_exactly() {
    for format in [ExportFormat::Json, ExportFormat::Jsonl] {
        let text = write(format, "s-1", &meta(), &sample()).unwrap();
        let back = read(&text).unwrap();
        assert_eq!(back.messages, sample(), "{format:?}");
        let expected_id = (format == ExportFormat::Json).then(|| "s-1".to_string());
        assert_eq!(back.id, expected_id);
        let expected_meta = match format {
            ExportFormat::Json => meta(),
            _ => SessionMeta::new(),
        };
        assert_eq!(back.meta, expected_meta, "{format:?}");
    }
}

#[test]
fn json_is_pretty_with_meta_keys_in_a_fixed_order() {
    let one = [ChatMessage::user("hi")];
    let text = write(ExportFormat::Json, "s", &meta(), &one).unwrap();
    let expected = r#"{
  "version": 1,
  "id": "s",
  "meta": {
    "owner": "alice",
    "title": "Logs",
    "tags": [
      "b",
      "ops"
    ],
    "data": {
      "ticket": {
        "n": [
          1,
          2
        ]
      }
    },
    "expiry": {
      "at": "2100-01-01T00:00:00.123456Z"
    }
  },
  "messages": [
    {
      "role": "user",
      "content": "hi"
    }
  ]
}
"#;
    assert_eq!(text, expected);
}

#[test]
fn metadata_is_optional_both_ways() {
    let text = write(ExportFormat::Json, "s", &SessionMeta::new(), &sample()).unwrap();
    assert!(!text.contains("\"meta\""), "{text}");
    let old = r#"{"id":"x","messages":[{"role":"user","content":"hi"}]}"#;
    assert!(read(old).unwrap().meta.is_empty());
    let partial = with_meta(r#"{"title":"T","tags":["b","a","b"]}"#);
    let back = read(&partial).unwrap().meta;
    assert_eq!(back, SessionMeta::new().title("T").tags(["a", "b"]));
    let err = read(&with_meta(r#"{"tags":["a,b"]}"#)).unwrap_err();
    assert!(matches!(err, ImportError::InvalidMeta(_)), "{err:?}");
    let err = chain(&err);
    assert!(
        err.contains("\"meta\" cannot be stored") && err.contains("comma"),
        "{err}"
    );
}

#[test]
fn an_expiry_is_exported_as_an_instant_or_idle_seconds() {
    let text = write(ExportFormat::Json, "s", &meta(), &sample()).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        doc["meta"]["expiry"],
        json!({"at": "2100-01-01T00:00:00.123456Z"})
    );
    for (span, seconds) in [
        (Duration::from_secs(30 * 86_400), json!(2_592_000)),
        (Duration::from_millis(1_500), json!(1.5)),
        (Duration::from_micros(1_001), json!(0.001001)),
    ] {
        let idle = SessionMeta::new().expiry(Expiry::Idle(span));
        let text = write(ExportFormat::Json, "s", &idle, &sample()).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["meta"], json!({"expiry": {"idle_seconds": seconds}}));
        assert_eq!(read(&text).unwrap().meta, idle, "{span:?} reads back");
    }
}

#[test]
fn a_malformed_expiry_is_named() {
    let cases = [
        (r#"{"expiry":{"at":"tomorrow"}}"#, "2026-01-31T09:00:00Z"),
        (
            r#"{"expiry":{"idle_seconds":-3}}"#,
            "not a number of seconds",
        ),
        (r#"{"expiry":{"idle_seconds":0}}"#, "idle expiry"),
        (r#"{"expiry":{"at":"1960-01-01T00:00:00Z"}}"#, "epoch"),
    ];
    for (meta, expected) in cases {
        let err = chain(&read(&with_meta(meta)).unwrap_err());
        assert!(
            err.contains("\"meta\"") && err.contains(expected),
            "{meta}: {err}"
        );
    }
    let err = chain(&read(&with_meta(r#"{"expiry":{"never":1}}"#)).unwrap_err());
    assert!(err.contains("at") && err.contains("idle_seconds"), "{err}");
}

#[test]
fn a_json_export_of_a_newer_version_is_refused_and_one_without_a_version_read() {
    let messages = r#""messages":[{"role":"user","content":"hi"}]"#;
    for version in [0, 2, u64::MAX] {
        let text = format!(r#"{{"version":{version},"later_field":{{}},{messages}}}"#);
        let err = read(&text).unwrap_err();
        assert!(
            matches!(err, ImportError::UnknownVersion { found } if found == version),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(&format!("version {version}")), "{message}");
        assert!(message.contains("reads version 1"), "{message}");
        // Version 0 is no newer release's: the message does not say it is.
        let newer = message.contains("newer release");
        assert_eq!(newer, version > JSON_VERSION, "{message}");
    }
    for text in [
        format!("{{{messages}}}"),
        format!(r#"{{"version":1,{messages}}}"#),
    ] {
        assert_eq!(read(&text).unwrap().messages, [ChatMessage::user("hi")]);
    }
}

#[test]
fn jsonl_has_one_message_per_line() {
    let text = write(ExportFormat::Jsonl, "s", &meta(), &sample()).unwrap();
    assert_eq!(text.lines().count(), sample().len());
    assert_eq!(read(&format!("\u{feff}{text}")).unwrap().messages, sample());
}

#[test]
fn broken_files_name_what_is_wrong() {
    let jsonl = "{\"role\":\"user\",\"content\":\"hi\"}\n{\"role\":\"user\",\"cont";
    let err = read(jsonl).unwrap_err();
    assert!(matches!(err, ImportError::Line { line: 2, .. }), "{err:?}");
    let json = "{\n  \"id\": \"x\",\n  \"messages\": [\n    {\"role\": \"user\"";
    let err = chain(&read(json).unwrap_err());
    assert!(
        err.starts_with("not a valid json export") && err.contains("line 4"),
        "{err}"
    );
    let blank = read("  \n").unwrap_err();
    assert!(matches!(blank, ImportError::Empty), "{blank:?}");
    // `read` takes text from anywhere (stdin, memory): an empty one is not called a file.
    assert_eq!(
        blank.to_string(),
        "the export is empty: it holds nothing but blanks"
    );
    let no_messages = r#"{"id":"x","messages":[]}"#;
    assert!(matches!(read(no_messages), Err(ImportError::NoMessages)));
    let wrong_role = r#"{"role":"wizard","content":"hi"}"#;
    assert!(chain(&read(wrong_role).unwrap_err()).starts_with("line 1 is not"));
    // A JSON array is named as one; text that merely starts with `[` is not called one.
    for array in ["[{\"role\":\"user\",\"content\":\"hi\"}]", "[\n]\n", "[1]"] {
        let err = chain(&read(array).unwrap_err());
        assert!(err.contains("the export is a JSON array"), "{array}: {err}");
    }
    for not_json in [
        "[INFO] started\n",
        "[general]\nkey = 1\n",
        "[{\"role\": \"user\"},\n",
    ] {
        let err = chain(&read(not_json).unwrap_err());
        assert!(
            !err.contains("JSON array") && err.contains("line"),
            "{not_json}: {err}"
        );
    }
}

#[test]
fn formats_parse_by_name() {
    assert_eq!(
        "md".parse::<ExportFormat>().unwrap(),
        ExportFormat::Markdown
    );
    let format: ExportFormat = "jsonl".parse().unwrap();
    assert_eq!(
        (format.extension(), format.content_type()),
        ("jsonl", "application/x-ndjson")
    );
    let err = "xml".parse::<ExportFormat>().unwrap_err().to_string();
    assert!(err.contains("json, jsonl or markdown"), "{err}");
}

fn info_with_times() -> SessionInfo {
    let mut info = SessionInfo::new("s-1", sample().len());
    info.meta = meta();
    info.created_at = Some(std::time::UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001));
    info.updated_at = Some(std::time::UNIX_EPOCH + Duration::from_micros(1_700_000_090_500_000));
    info
}

#[test]
fn a_json_export_keeps_the_times_to_the_microsecond_and_markdown_shows_them() {
    let info = info_with_times();
    let text = write_session(ExportFormat::Json, &info, &sample()).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["created_at"], "2023-11-14T22:13:20.000001Z");
    assert_eq!(doc["updated_at"], "2023-11-14T22:14:50.5Z");
    let at = |key: &str| text.find(&format!("\"{key}\":")).unwrap();
    let keys = [
        "version",
        "id",
        "created_at",
        "updated_at",
        "meta",
        "messages",
    ];
    assert!(
        keys.windows(2).all(|pair| at(pair[0]) < at(pair[1])),
        "{text}"
    );
    let back = read(&text).unwrap();
    assert_eq!(back.times, SessionTimes::of(&info));
    assert_eq!((back.meta, back.messages), (meta(), sample()));

    let markdown = write_session(ExportFormat::Markdown, &info, &sample()).unwrap();
    assert!(
        markdown.contains("Created: 2023-11-14T22:13:20Z  \nLast written: 2023-11-14T22:14:50Z"),
        "{markdown}"
    );
    // Without times (a storage that keeps none, or `write`), none are written or read.
    let plain = write(ExportFormat::Json, "s-1", &meta(), &sample()).unwrap();
    assert!(!plain.contains("created_at"), "{plain}");
    assert_eq!(read(&plain).unwrap().times, None);
    let mut timeless = info;
    timeless.updated_at = None;
    let text = write_session(ExportFormat::Json, &timeless, &sample()).unwrap();
    assert_eq!(read(&text).unwrap().times, None);
}

#[test]
fn times_that_cannot_be_stored_are_refused_by_name() {
    let at = |created: &str, updated: &str| {
        let mut doc = serde_json::Map::new();
        for (name, value) in [("created_at", created), ("updated_at", updated)] {
            if !value.is_empty() {
                doc.insert(name.into(), json!(value));
            }
        }
        doc.insert(
            "messages".into(),
            json!([{"role": "user", "content": "hi"}]),
        );
        Value::Object(doc).to_string()
    };
    let cases = [
        (at("2024-01-02T00:00:00Z", ""), "without the other"),
        (at("", "2024-01-02T00:00:00Z"), "without the other"),
        (
            at("2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z"),
            "later than updated_at",
        ),
        (at("yesterday", "2024-01-01T00:00:00Z"), "\"created_at\": "),
        (
            at("2024-01-01T00:00:00Z", "2024-01-01T00:00:00+01:00"),
            "\"updated_at\": ",
        ),
    ];
    for (text, said) in cases {
        let err = read(&text).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ImportError::Times(_)), "{text}: {err:?}");
        assert!(message.contains(said), "{text}: {message}");
    }
}

/// A message field this release does not know (a newer release's, in a `jsonl` file,
/// which has no version, or in a `json` export's messages) refuses the import, naming the
/// field and where it is: read, it was dropped without a word. A field holding nothing
/// loses nothing, and imports.
#[test]
fn a_message_field_this_release_does_not_know_is_refused_by_place_and_path() {
    let user = r#"{"role":"user","content":"hi"}"#;
    let call = r#"{"role":"assistant","content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"ls","arguments":"{}","strict":true}}]}"#;
    let lang = r#"{"role":"user","content":"a","lang":"en"}"#;
    let cases = [
        (
            format!(
                "{user}\n\n{{\"role\":\"assistant\",\"content\":\"yo\",\"reasoning\":\"r\"}}\n"
            ),
            MessagePlace::Line(3),
            "reasoning",
        ),
        (
            format!("{user}\n{call}\n"),
            MessagePlace::Line(2),
            "tool_calls[0].function.strict",
        ),
        (
            format!(r#"{{"version":1,"id":"x","messages":[{user},{lang}]}}"#),
            MessagePlace::Message(2),
            "lang",
        ),
    ];
    for (text, place, path) in cases {
        let err = read(&text).unwrap_err();
        let said = err.to_string();
        assert!(
            matches!(&err, ImportError::UnknownField { place: at, field } if *at == place && field == path),
            "{text}: {err:?}"
        );
        assert_eq!(
            said,
            format!(
                "{place} holds {path:?}, which this release of fusion does not know and would \
                 drop (a newer release probably wrote it): import it with that release, or \
                 remove {path:?} to import the rest"
            )
        );
    }
    // Holding nothing, it loses nothing; a known field read in another shape is read.
    let empty = r#"{"role":"user","content":[{"type":"text","text":"hi"}],"name":null,"later":{}}"#;
    assert_eq!(read(empty).unwrap().messages, [ChatMessage::user("hi")]);
}

/// What a content part holds besides its text (an image) is dropped by every release:
/// the refusal names it and sends nobody looking for a newer one.
#[test]
fn a_content_part_holding_more_than_its_text_is_refused() {
    let image = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}"#;
    let err = read(image).unwrap_err();
    assert!(
        matches!(&err, ImportError::ContentPart { place: MessagePlace::Message(1), field } if field == "content[1].image_url"),
        "{err:?}"
    );
    let line = r#"{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}"#;
    let err = read(line).unwrap_err().to_string();
    assert_eq!(
        err,
        "line 1 holds \"content[0].cache_control\", which fusion would drop: it keeps the text \
         of a message's content parts and nothing else; remove \"content[0].cache_control\" to \
         import the text"
    );
}

/// A file-system session file imports as it is, its batch markers no field of a message,
/// unless it ends inside a batch whose last line was never written: the store's own load
/// leaves those lines out, and imported they would be messages the store never held.
#[test]
fn a_file_system_session_file_ending_inside_a_batch_is_refused() {
    let user = r#"{"role":"user","content":"run it"}"#;
    let call = r#"{"role":"assistant","content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"ls","arguments":"{}"}}],"fusion_batch_more":1}"#;
    let result = r#"{"role":"tool","content":"done","tool_call_id":"c"}"#;
    let whole = format!("{user}\n{call}\n{result}\n");
    assert_eq!(read(&whole).unwrap().messages.len(), 3);
    // The batch's last line (the tool's result) never written: the store loads the
    // user's message alone.
    let torn = format!("{user}\n{call}\n");
    let err = read(&torn).unwrap_err();
    assert!(
        matches!(
            err,
            ImportError::UnfinishedBatch {
                first_line: 2,
                last_line: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "line 2 begins a batch of messages whose end is missing (\"fusion_batch_more\" says \
         more lines follow): the file-system backend stopped while appending it, and its own \
         load leaves it out; remove those lines to import the rest"
    );
    let marked = r#"{"role":"user","content":"a","fusion_batch_more":2}"#;
    let torn = format!("{user}\n{marked}\n\n{call}");
    let err = read(&torn).unwrap_err().to_string();
    assert!(err.starts_with("line 2 to line 4 begin a batch"), "{err}");
    // Elsewhere than at the top of a line's message, the marker is a field like any other.
    let nested = r#"{"role":"user","content":"x","tool_calls":[{"id":"c","type":"function","function":{"name":"ls","arguments":"","fusion_batch_more":1}}]}"#;
    let err = read(nested).unwrap_err().to_string();
    assert!(
        err.contains("\"tool_calls[0].function.fusion_batch_more\""),
        "{err}"
    );
    let in_json = format!(r#"{{"messages":[{call}]}}"#);
    let err = read(&in_json).unwrap_err().to_string();
    assert!(
        err.starts_with("message 1 holds \"fusion_batch_more\""),
        "{err}"
    );
}

/// A key written twice in a message would lose its first value: refused, where it is,
/// as the message's own fields written twice are.
#[test]
fn a_key_written_twice_in_a_message_is_refused() {
    let cases = [
        r#"{"role":"user","content":"a","metadata":{"k":1,"k":2}}"#,
        r#"{"role":"user","content":"a","content":"b"}"#,
        r#"{"messages":[{"role":"user","content":"a","metadata":{"k":1,"k":2}}]}"#,
    ];
    for text in cases {
        let err = chain(&read(text).unwrap_err());
        assert!(
            err.contains("is written twice at line 1 column"),
            "{text}: {err}"
        );
    }
}

/// A message that is none (a role no release writes) is named where it is in the file,
/// as serde finds it: the message read as written alone would say no more than what.
#[test]
fn a_message_that_is_none_is_named_by_line_and_column() {
    let jsonl =
        "{\"role\":\"user\",\"content\":\"hi\"}\n{\"role\":\"wizard\",\"content\":\"hi\"}\n";
    let err = chain(&read(jsonl).unwrap_err());
    assert!(
        err.starts_with("line 2 is not a valid message: unknown variant `wizard`")
            && err.ends_with("at line 1 column 16"),
        "{err}"
    );
    let json = "{\n  \"messages\": [\n    {\"role\": \"user\", \"content\": 7}\n  ]\n}\n";
    let err = chain(&read(json).unwrap_err());
    assert!(
        err.starts_with("not a valid json export") && err.contains("at line 3 column"),
        "{err}"
    );
}
