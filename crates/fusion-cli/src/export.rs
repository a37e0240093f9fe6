//! The export formats of `sessions export` and their reader for `sessions import`.
//!
//! `json` is one object, `{"id": "...", "meta": {...}, "messages": [...]}`; `jsonl` is one
//! message per line, the same shape the file-system backend stores, so a session file
//! copied out of a sessions directory imports as is. Messages use the OpenAI
//! chat-completions shape of [`ChatMessage`], so exports are readable by other tools.
//! Import accepts both formats and tells them apart by content, not by file extension.
//!
//! `meta` (owner, title, tags, data) is left out when the session has none, and is
//! optional on import, so exports written before sessions had metadata still import;
//! `jsonl` has nowhere to keep it.

use anyhow::{Context, Result, bail};
use fusion::ChatMessage;
use fusion::storage::SessionMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ExportFormat;
use crate::render;

/// The `json` export document.
#[derive(Serialize)]
struct ExportDoc<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<MetaDoc>,
    messages: &'a [ChatMessage],
}

/// What import reads back; `id` and `meta` are optional so a hand-written file needs only
/// messages.
#[derive(Deserialize)]
struct ImportDoc {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    meta: Option<MetaDoc>,
    messages: Vec<ChatMessage>,
}

/// A session's metadata in an export: [`SessionMeta`] in JSON, unset fields left out.
#[derive(Serialize, Deserialize, Default)]
struct MetaDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    data: Map<String, Value>,
}

impl MetaDoc {
    fn of(meta: &SessionMeta) -> Option<Self> {
        (!meta.is_empty()).then(|| MetaDoc {
            owner: meta.owner.clone(),
            title: meta.title.clone(),
            tags: meta.tags.clone(),
            data: meta.data.clone(),
        })
    }

    fn into_meta(self) -> SessionMeta {
        // Through the setters: `SessionMeta` is non-exhaustive, and `tags` sorts and
        // deduplicates what a hand-edited file may hold.
        let mut meta = SessionMeta::new().tags(self.tags);
        meta.owner = self.owner;
        meta.title = self.title;
        meta.data = self.data;
        meta
    }
}

/// A parsed import file.
#[derive(Debug)]
pub struct Imported {
    /// The id recorded in the file (json exports only).
    pub id: Option<String>,
    /// The metadata recorded in the file (json exports only; empty when none).
    pub meta: SessionMeta,
    /// The messages, in order.
    pub messages: Vec<ChatMessage>,
}

/// Renders session `id` (with its metadata `meta`) in `format`, ending with a newline.
pub fn write(
    format: ExportFormat,
    id: &str,
    meta: &SessionMeta,
    messages: &[ChatMessage],
) -> Result<String> {
    Ok(match format {
        ExportFormat::Json => {
            let doc = ExportDoc {
                id,
                meta: MetaDoc::of(meta),
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
        ExportFormat::Markdown => render::markdown(id, meta, messages),
    })
}

/// Parses a json or jsonl export. Errors name the line (and column) that is wrong.
pub fn read(text: &str) -> Result<Imported> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(first_line) = text.lines().find(|line| !line.trim().is_empty()) else {
        bail!("the file is empty");
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
        let doc: ImportDoc = serde_json::from_str(text).context(
            "not a valid json export ({\"id\": ..., \"meta\": {...}, \"messages\": [...]}) or jsonl file (one message per line)",
        )?;
        Imported {
            id: doc.id,
            meta: doc.meta.map(MetaDoc::into_meta).unwrap_or_default(),
            messages: doc.messages,
        }
    };
    if imported.messages.is_empty() {
        bail!("the file holds no messages");
    }
    imported
        .meta
        .validate()
        .context("the export's \"meta\" cannot be stored")?;
    Ok(imported)
}

fn read_jsonl(text: &str) -> Result<Imported> {
    let mut messages = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let message = serde_json::from_str(line)
            .with_context(|| format!("line {} is not a valid message", index + 1))?;
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
    use super::*;
    use fusion::ToolCall;

    fn sample() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("line one\nline two, ünïcödé"),
            ChatMessage::assistant_with_tool_calls(
                "",
                vec![ToolCall::new("c1", "read_file", "{not json")],
            ),
            ChatMessage::tool_result("c1", ""),
            ChatMessage::assistant("done").with_metadata("kind", serde_json::json!("summary")),
        ]
    }

    fn meta() -> SessionMeta {
        SessionMeta::new()
            .owner("alice")
            .title("Logs")
            .tags(["ops", "b"])
            .data("ticket", serde_json::json!({"n": [1, 2]}))
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
    fn metadata_is_optional_both_ways() {
        let text = write(ExportFormat::Json, "s", &SessionMeta::new(), &sample()).unwrap();
        assert!(!text.contains("\"meta\""), "{text}");
        let old = r#"{"id":"x","messages":[{"role":"user","content":"hi"}]}"#;
        assert!(read(old).unwrap().meta.is_empty());
        let partial = r#"{"meta":{"title":"T","tags":["b","a","b"]},"messages":[{"role":"user","content":"hi"}]}"#;
        let back = read(partial).unwrap().meta;
        assert_eq!(back, SessionMeta::new().title("T").tags(["a", "b"]));
        let invalid = r#"{"meta":{"tags":["a,b"]},"messages":[{"role":"user","content":"hi"}]}"#;
        let err = format!("{:#}", read(invalid).unwrap_err());
        assert!(
            err.contains("\"meta\" cannot be stored") && err.contains("comma"),
            "{err}"
        );
    }

    #[test]
    fn jsonl_has_one_message_per_line() {
        let text = write(ExportFormat::Jsonl, "s", &meta(), &sample()).unwrap();
        assert_eq!(text.lines().count(), sample().len());
    }

    #[test]
    fn broken_files_name_what_is_wrong() {
        let jsonl = "{\"role\":\"user\",\"content\":\"hi\"}\n{\"role\":\"user\",\"cont";
        assert!(format!("{:#}", read(jsonl).unwrap_err()).contains("line 2"));
        let json = "{\n  \"id\": \"x\",\n  \"messages\": [\n    {\"role\": \"user\"";
        let err = format!("{:#}", read(json).unwrap_err());
        assert!(err.contains("not a valid json export"), "{err}");
        assert!(format!("{:#}", read("  \n").unwrap_err()).contains("empty"));
        let no_messages = r#"{"id":"x","messages":[]}"#;
        assert!(format!("{:#}", read(no_messages).unwrap_err()).contains("no messages"));
        let wrong_role = r#"{"role":"wizard","content":"hi"}"#;
        assert!(format!("{:#}", read(wrong_role).unwrap_err()).contains("line 1"));
    }
}
