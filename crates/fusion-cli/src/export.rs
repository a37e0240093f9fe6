//! The export formats of `sessions export` and their reader for `sessions import`.
//!
//! `json` is one object, `{"id": "...", "meta": {...}, "messages": [...]}`; `jsonl` is one
//! message per line, the same shape the file-system backend stores, so a session file
//! copied out of a sessions directory imports as is. Messages use the OpenAI
//! chat-completions shape of [`ChatMessage`], so exports are readable by other tools.
//! Import accepts both formats and tells them apart by content, not by file extension.
//!
//! `meta` (owner, title, tags, data, expiry) is left out when the session has none, and is
//! optional on import, so exports written before sessions had metadata (or expiry) still
//! import; `jsonl` has nowhere to keep it. An expiry is `"expiry": {"at": "<RFC 3339>"}`
//! (a fixed instant, to the microsecond) or `"expiry": {"idle_seconds": N}` (a span after
//! the last write; a fraction when it is not whole seconds).

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use fusion::ChatMessage;
use fusion::storage::{Expiry, SessionMeta};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::ExportFormat;
use crate::{render, time};

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expiry: Option<ExpiryDoc>,
}

/// An [`Expiry`] in an export: one key saying which kind, its value saying when.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ExpiryDoc {
    /// A fixed instant, RFC 3339 in UTC with the fraction of a second it holds.
    At(String),
    /// A span after the last write, in seconds: a whole number, or a fraction when the
    /// span is not whole seconds.
    IdleSeconds(Number),
}

impl ExpiryDoc {
    fn of(expiry: &Expiry) -> Result<Self> {
        Ok(match expiry {
            Expiry::At(at) => ExpiryDoc::At(time::rfc3339_exact(*at)),
            Expiry::Idle(span) if span.subsec_nanos() == 0 => {
                ExpiryDoc::IdleSeconds(span.as_secs().into())
            }
            Expiry::Idle(span) => ExpiryDoc::IdleSeconds(
                Number::from_f64(span.as_micros() as f64 / 1e6)
                    .context("an idle span has no JSON number")?,
            ),
            other => bail!("this version cannot export the expiry {other:?}"),
        })
    }

    fn into_expiry(self) -> Result<Expiry> {
        match self {
            ExpiryDoc::At(text) => time::parse_rfc3339(&text)
                .map(Expiry::At)
                .map_err(|err| anyhow!("\"expiry\": {err}")),
            ExpiryDoc::IdleSeconds(number) => {
                let span = match (number.as_u64(), number.as_f64()) {
                    (Some(secs), _) => Some(Duration::from_secs(secs)),
                    // Backends keep spans to the microsecond: round there, not below.
                    (None, Some(secs)) if secs.is_finite() && secs >= 0.0 => {
                        Some(Duration::from_micros((secs * 1e6).round() as u64))
                    }
                    _ => None,
                };
                span.map(Expiry::Idle).with_context(|| {
                    format!("\"expiry\": idle_seconds is {number}, not a number of seconds")
                })
            }
        }
    }
}

impl MetaDoc {
    fn of(meta: &SessionMeta) -> Result<Option<Self>> {
        if meta.is_empty() {
            return Ok(None);
        }
        Ok(Some(MetaDoc {
            owner: meta.owner.clone(),
            title: meta.title.clone(),
            tags: meta.tags.clone(),
            data: meta.data.clone(),
            expiry: meta.expiry.as_ref().map(ExpiryDoc::of).transpose()?,
        }))
    }

    fn into_meta(self) -> Result<SessionMeta> {
        // Through the setters: `SessionMeta` is non-exhaustive, and `tags` sorts and
        // deduplicates what a hand-edited file may hold.
        let mut meta = SessionMeta::new().tags(self.tags);
        meta.owner = self.owner;
        meta.title = self.title;
        meta.data = self.data;
        meta.expiry = self.expiry.map(ExpiryDoc::into_expiry).transpose()?;
        Ok(meta)
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
        let meta = doc.meta.map(MetaDoc::into_meta).transpose();
        Imported {
            id: doc.id,
            meta: meta
                .context("the export's \"meta\" cannot be read")?
                .unwrap_or_default(),
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
        let at = std::time::UNIX_EPOCH + Duration::from_micros(4_102_444_800_123_456);
        SessionMeta::new()
            .owner("alice")
            .title("Logs")
            .tags(["ops", "b"])
            .data("ticket", serde_json::json!({"n": [1, 2]}))
            .expiry(Expiry::At(at))
    }

    fn with_meta(meta: &str) -> String {
        format!(r#"{{"meta":{meta},"messages":[{{"role":"user","content":"hi"}}]}}"#)
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
    fn an_expiry_is_exported_as_an_instant_or_idle_seconds() {
        let text = write(ExportFormat::Json, "s", &meta(), &sample()).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc["meta"]["expiry"],
            serde_json::json!({"at": "2100-01-01T00:00:00.123456Z"})
        );
        for (span, json) in [
            (
                Duration::from_secs(30 * 86_400),
                serde_json::json!(2_592_000),
            ),
            (Duration::from_millis(1_500), serde_json::json!(1.5)),
            (Duration::from_micros(1_001), serde_json::json!(0.001001)),
        ] {
            let idle = SessionMeta::new().expiry(Expiry::Idle(span));
            let text = write(ExportFormat::Json, "s", &idle, &sample()).unwrap();
            let doc: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                doc["meta"],
                serde_json::json!({"expiry": {"idle_seconds": json}})
            );
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
            let err = format!("{:#}", read(&with_meta(meta)).unwrap_err());
            assert!(
                err.contains("\"meta\"") && err.contains(expected),
                "{meta}: {err}"
            );
        }
        let err = format!(
            "{:#}",
            read(&with_meta(r#"{"expiry":{"never":1}}"#)).unwrap_err()
        );
        assert!(err.contains("at") && err.contains("idle_seconds"), "{err}");
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
