//! A session as a file and back: the `json`, `jsonl` and `markdown` formats of
//! `fusion sessions export` (and the web UI's downloads), and the reader of
//! `fusion sessions import`.
//!
//! Where [`session`](super::session) opens and manages sessions in storage, this turns
//! one session's metadata and messages, already loaded, into text another tool reads, and
//! such text back into what [`create_session`](crate::storage::ConversationStorage::create_session)
//! stores; it touches no storage itself.
//!
//! - `json` is one object, `{"version": 1, "id": "...", "meta": {...}, "messages": [...]}`.
//!   `version` is [`JSON_VERSION`]; [`read`] refuses a file of a newer version (a newer
//!   release wrote it, and what it added would be dropped) or of version 0, checked
//!   before the rest of the file is read, and reads one without it as
//!   version 1 (exports from before it had one, or written by hand). `meta`
//!   (owner, title, tags, data, expiry) is left out when the session has none, and its
//!   unset fields too; an expiry is `"expiry": {"at": "<RFC 3339>"}` (a fixed instant, to
//!   the microsecond) or `"expiry": {"idle_seconds": N}` (a span after the last write; a
//!   fraction when it is not whole seconds).
//! - `jsonl` is one message per line, the same shape the file-system backend stores, so a
//!   session file copied out of a sessions directory imports as is; it has nowhere to keep
//!   metadata.
//! - `markdown` is a transcript for people, tool calls and output in code fences; it is not
//!   read back.
//!
//! Messages use the OpenAI chat-completions shape of [`ChatMessage`], so exports are
//! readable by other tools. [`read`] accepts `json` and `jsonl` and tells them apart by
//! content, not by file extension; `meta` is optional, so exports written before sessions
//! had metadata still import.
//!
//! ```
//! use fusion::ChatMessage;
//! use fusion::api::export::{self, ExportFormat};
//! use fusion::storage::SessionMeta;
//!
//! let meta = SessionMeta::new().title("Logs");
//! let messages = [ChatMessage::user("hi"), ChatMessage::assistant("hello")];
//! let format: ExportFormat = "json".parse()?;
//! let text = export::write(format, "s-1", &meta, &messages)?;
//! let back = export::read(&text)?;
//! assert_eq!(back.id.as_deref(), Some("s-1"));
//! assert_eq!((back.meta, back.messages.as_slice()), (meta, &messages[..]));
//!
//! let line = export::write(ExportFormat::Jsonl, "s-1", &SessionMeta::new(), &messages[..1])?;
//! assert_eq!(line, "{\"role\":\"user\",\"content\":\"hi\"}\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod document;
mod error;
mod markdown;

use std::str::FromStr;

pub use error::{ExportError, ImportError};
pub use markdown::message_headings;

use self::document::{ExportDoc, ImportDoc, MetaDoc, VersionDoc};
use crate::ChatMessage;
use crate::storage::SessionMeta;

/// The version of the `json` export this release writes, and the newest it reads.
pub const JSON_VERSION: u64 = 1;

/// The file formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExportFormat {
    /// One JSON object with the id, metadata and messages.
    Json,
    /// One JSON message per line.
    Jsonl,
    /// A Markdown transcript for people.
    Markdown,
}

impl ExportFormat {
    /// The file name extension: `json`, `jsonl` or `md`.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Json => "json",
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Markdown => "md",
        }
    }

    /// The media type to serve the file with.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Json => "application/json",
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Markdown => "text/markdown; charset=utf-8",
        }
    }
}

impl FromStr for ExportFormat {
    type Err = ExportError;

    /// `json`, `jsonl` or `markdown` (also `md`), as `fusion sessions export --format`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "json" => Ok(ExportFormat::Json),
            "jsonl" => Ok(ExportFormat::Jsonl),
            "markdown" | "md" => Ok(ExportFormat::Markdown),
            other => Err(ExportError::UnknownFormat(other.to_string())),
        }
    }
}

/// A file [`read`] back: what to store as a session.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Imported {
    /// The id recorded in the file (`json` exports only).
    pub id: Option<String>,
    /// The metadata recorded in the file (`json` exports only; empty when none), valid.
    pub meta: SessionMeta,
    /// The messages, in order; never empty.
    pub messages: Vec<ChatMessage>,
}

/// Session `id`, with its metadata `meta` and `messages`, as a file in `format`, ending
/// with a newline. Cost: linear in the messages' size, all in memory.
pub fn write(
    format: ExportFormat,
    id: &str,
    meta: &SessionMeta,
    messages: &[ChatMessage],
) -> Result<String, ExportError> {
    Ok(match format {
        ExportFormat::Json => {
            let doc = ExportDoc {
                version: JSON_VERSION,
                id,
                meta: MetaDoc::of(meta)?,
                messages,
            };
            let mut text = serde_json::to_string_pretty(&doc)?;
            text.push('\n');
            text
        }
        ExportFormat::Jsonl => {
            let mut text = String::new();
            for message in messages {
                // serde_json escapes newlines inside strings, so each message is one line.
                text.push_str(&serde_json::to_string(message)?);
                text.push('\n');
            }
            text
        }
        ExportFormat::Markdown => markdown::markdown(id, meta, messages),
    })
}

/// Parses a `json` or `jsonl` export (a leading byte-order mark is skipped), and checks
/// that its metadata could be stored. Cost: linear in the text's size.
pub fn read(text: &str) -> Result<Imported, ImportError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(first_line) = text.lines().find(|line| !line.trim().is_empty()) else {
        return Err(ImportError::Empty);
    };
    // A jsonl file's first line is a complete message on its own; a pretty-printed json
    // export's first line is just `{`. Deciding on that, rather than trying one format and
    // then the other, means a broken file gets the error of the format it was meant to be.
    let first_is_message = serde_json::from_str::<serde_json::Value>(first_line)
        .ok()
        .is_some_and(|value| value.get("role").is_some());
    let imported = if first_is_message {
        read_jsonl(text)?
    } else {
        let VersionDoc { version } = serde_json::from_str(text).map_err(ImportError::Document)?;
        if let Some(found) = version.filter(|found| !(1..=JSON_VERSION).contains(found)) {
            return Err(ImportError::UnknownVersion { found });
        }
        let doc: ImportDoc = serde_json::from_str(text).map_err(ImportError::Document)?;
        Imported {
            id: doc.id,
            meta: doc
                .meta
                .map(MetaDoc::into_meta)
                .transpose()?
                .unwrap_or_default(),
            messages: doc.messages,
        }
    };
    if imported.messages.is_empty() {
        return Err(ImportError::NoMessages);
    }
    imported.meta.validate().map_err(ImportError::InvalidMeta)?;
    Ok(imported)
}

fn read_jsonl(text: &str) -> Result<Imported, ImportError> {
    let mut messages = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let message = serde_json::from_str(line).map_err(|source| ImportError::Line {
            line: index + 1,
            source,
        })?;
        messages.push(message);
    }
    Ok(Imported {
        id: None,
        meta: SessionMeta::new(),
        messages,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::ToolCall;
    use crate::storage::Expiry;

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
        assert!(matches!(read("  \n"), Err(ImportError::Empty)));
        let no_messages = r#"{"id":"x","messages":[]}"#;
        assert!(matches!(read(no_messages), Err(ImportError::NoMessages)));
        let wrong_role = r#"{"role":"wizard","content":"hi"}"#;
        assert!(chain(&read(wrong_role).unwrap_err()).starts_with("line 1 is not"));
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
}
