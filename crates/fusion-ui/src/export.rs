//! A session as a file: the `json`, `jsonl` and `markdown` formats of
//! `fusion sessions export`, for the transcript page's download links.
//!
//! Unlike the pages, which show a window of a session as HTML, an export holds the whole
//! session as text another tool (or `fusion sessions import`) reads:
//! - `json`: one object, `{"id": "...", "meta": {...}, "messages": [...]}`, `meta` left
//!   out when the session has none and its unset fields left out; an expiry is
//!   `{"at": "<RFC 3339, exact>"}` or `{"idle_seconds": N}`;
//! - `jsonl`: one message per line (the file-system backend's shape), no metadata;
//! - `markdown`: a readable transcript, tool calls and output in code fences.
//!
//! It depends on nothing of the CLI, so the CLI can call it in place of its own writer.
//!
//! ```
//! use fusion::ChatMessage;
//! use fusion::storage::SessionMeta;
//! use fusion_ui::export::{ExportFormat, export};
//!
//! let format: ExportFormat = "jsonl".parse()?;
//! let text = export(format, "s-1", &SessionMeta::new(), &[ChatMessage::user("hi")])?;
//! assert_eq!(text, "{\"role\":\"user\",\"content\":\"hi\"}\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use fusion::storage::{Expiry, SessionMeta};
use fusion::{ChatMessage, Role};
use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::format::rfc3339_exact;

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

/// Why a session could not be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The format asked for is not one of `json`, `jsonl`, `markdown`.
    #[error("unknown export format {0:?}: use json, jsonl or markdown")]
    UnknownFormat(String),
    /// The session holds something this version cannot write (an expiry of a kind it
    /// does not know, a span with no JSON number).
    #[error("cannot export the session: {0}")]
    Unsupported(String),
    /// Serializing the messages failed.
    #[error("cannot export the session as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Session `id`, with its metadata `meta` and `messages`, as a file in `format`, ending
/// with a newline. Cost: linear in the messages' size.
pub fn export(
    format: ExportFormat,
    id: &str,
    meta: &SessionMeta,
    messages: &[ChatMessage],
) -> Result<String, ExportError> {
    Ok(match format {
        ExportFormat::Json => {
            let doc = Doc {
                id,
                meta: meta_doc(meta)?,
                messages,
            };
            let mut text = serde_json::to_string_pretty(&doc)?;
            text.push('\n');
            text
        }
        ExportFormat::Jsonl => {
            let mut text = String::new();
            for message in messages {
                // serde_json escapes newlines inside strings: one message, one line.
                text.push_str(&serde_json::to_string(message)?);
                text.push('\n');
            }
            text
        }
        ExportFormat::Markdown => markdown(id, meta, messages),
    })
}

/// The `json` document.
#[derive(Serialize)]
struct Doc<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<MetaDoc<'a>>,
    messages: &'a [ChatMessage],
}

/// A session's metadata in the `json` document, unset fields left out, in the CLI's key
/// order (a struct, not a map, which would sort the keys).
#[derive(Serialize)]
struct MetaDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    #[serde(skip_serializing_if = "Map::is_empty")]
    data: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<Value>,
}

/// `meta` as the `json` export writes it, `None` when it is empty.
fn meta_doc(meta: &SessionMeta) -> Result<Option<MetaDoc<'_>>, ExportError> {
    if meta.is_empty() {
        return Ok(None);
    }
    Ok(Some(MetaDoc {
        owner: meta.owner.as_deref(),
        title: meta.title.as_deref(),
        tags: &meta.tags,
        data: &meta.data,
        expiry: meta.expiry.as_ref().map(expiry_doc).transpose()?,
    }))
}

/// An expiry as `{"at": "..."}` or `{"idle_seconds": N}` (a fraction below a second's
/// precision, to the microsecond backends keep).
fn expiry_doc(expiry: &Expiry) -> Result<Value, ExportError> {
    let (key, value) = match expiry {
        Expiry::At(at) => ("at", Value::from(rfc3339_exact(*at))),
        Expiry::Idle(span) if span.subsec_nanos() == 0 => ("idle_seconds", span.as_secs().into()),
        Expiry::Idle(span) => {
            let seconds = Number::from_f64(span.as_micros() as f64 / 1e6).ok_or_else(|| {
                ExportError::Unsupported(format!("the idle span {span:?} has no JSON number"))
            })?;
            ("idle_seconds", Value::Number(seconds))
        }
        other => {
            return Err(ExportError::Unsupported(format!(
                "this version cannot export the expiry {other:?}"
            )));
        }
    };
    Ok(Value::Object(Map::from_iter([(key.to_string(), value)])))
}

/// The Markdown transcript: a heading with the id, the metadata lines, then one section
/// per message.
fn markdown(id: &str, meta: &SessionMeta, messages: &[ChatMessage]) -> String {
    let tools: HashMap<&str, &str> = messages
        .iter()
        .flat_map(|message| &message.tool_calls)
        .map(|call| (call.id.as_str(), call.name.as_str()))
        .collect();
    let mut out = format!("# Session `{id}`\n\n");
    if let Some(title) = &meta.title {
        let _ = writeln!(out, "Title: {title}  ");
    }
    if let Some(owner) = &meta.owner {
        let _ = writeln!(out, "Owner: `{owner}`  ");
    }
    if !meta.tags.is_empty() {
        let tags: Vec<String> = meta.tags.iter().map(|tag| format!("`{tag}`")).collect();
        let _ = writeln!(out, "Tags: {}  ", tags.join(", "));
    }
    match &meta.expiry {
        Some(Expiry::At(at)) => {
            let _ = writeln!(out, "Expires: at {}  ", rfc3339_exact(*at));
        }
        Some(Expiry::Idle(span)) => {
            let _ = writeln!(out, "Expires: after {} idle  ", span_text(*span));
        }
        Some(other) => {
            let _ = writeln!(out, "Expires: {other:?}  ");
        }
        None => {}
    }
    let noun = if messages.len() == 1 { "" } else { "s" };
    let _ = writeln!(out, "{} message{noun}", messages.len());
    for (index, message) in messages.iter().enumerate() {
        let _ = write!(out, "\n## {}. {}\n\n", index + 1, heading(message, &tools));
        if !message.content.is_empty() {
            if message.role == Role::Tool {
                // Tool output is usually file contents or listings: kept verbatim.
                out.push_str(&fenced(&message.content, ""));
            } else {
                out.push_str(message.content.trim_end());
                out.push('\n');
            }
        }
        for (nth, call) in message.tool_calls.iter().enumerate() {
            if nth > 0 || !message.content.is_empty() {
                out.push('\n');
            }
            let _ = write!(out, "Tool call `{}` (id `{}`):\n\n", call.name, call.id);
            out.push_str(&fenced(&call.arguments, "json"));
        }
    }
    out
}

/// "user", "assistant", "tool result (read_file, call c1)", with the sender's name and
/// a stored `kind` (a summary looks like any message otherwise).
fn heading(message: &ChatMessage, tools: &HashMap<&str, &str>) -> String {
    let mut heading = match (message.role, &message.tool_call_id) {
        (Role::Tool, Some(call)) => match tools.get(call.as_str()) {
            Some(tool) => format!("tool result ({tool}, call {call})"),
            None => format!("tool result (call {call})"),
        },
        (role, _) => role.as_str().to_string(),
    };
    if let Some(name) = &message.name {
        let _ = write!(heading, " [{name}]");
    }
    if let Some(kind) = message.metadata.get("kind").and_then(Value::as_str) {
        let _ = write!(heading, " <{kind}>");
    }
    heading
}

/// A code block whose fence is longer than any run of backticks in `text`, so no
/// output can close it early.
fn fenced(text: &str, lang: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}{lang}\n{}\n{fence}\n", text.trim_end_matches('\n'))
}

/// A span in the largest unit it is a whole number of (`30d`, `90m`), as the CLI
/// prints one; below a second, `ms` or `µs`.
fn span_text(span: Duration) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("w", 604_800),
        ("d", 86_400),
        ("h", 3600),
        ("m", 60),
        ("s", 1),
    ];
    if span.subsec_nanos() == 0 {
        let secs = span.as_secs();
        match UNITS
            .iter()
            .find(|(_, length)| secs.is_multiple_of(*length))
        {
            Some((name, length)) if secs > 0 => format!("{}{name}", secs / length),
            _ => "0s".to_string(),
        }
    } else if span.as_micros().is_multiple_of(1000) {
        format!("{}ms", span.as_millis())
    } else {
        format!("{}µs", span.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use fusion::ToolCall;

    use super::*;

    fn sample() -> Vec<ChatMessage> {
        vec![
            ChatMessage::user("list it"),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c1", "ls", "{}")]),
            ChatMessage::tool_result("c1", "has ``` inside"),
        ]
    }

    #[test]
    fn json_holds_id_meta_and_messages_and_jsonl_one_message_a_line() {
        let at = UNIX_EPOCH + Duration::from_micros(4_102_444_800_123_456);
        let meta = SessionMeta::new()
            .owner("ann")
            .title("T")
            .tags(["b", "a"])
            .expiry(Expiry::At(at));
        let text = export(ExportFormat::Json, "s-1", &meta, &sample()).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["id"], "s-1");
        assert_eq!(
            doc["meta"],
            serde_json::json!({"owner": "ann", "title": "T", "tags": ["a", "b"],
                "expiry": {"at": "2100-01-01T00:00:00.123456Z"}})
        );
        let back: Vec<ChatMessage> = serde_json::from_value(doc["messages"].clone()).unwrap();
        assert_eq!(back, sample());
        let bare = export(ExportFormat::Json, "s", &SessionMeta::new(), &sample()).unwrap();
        assert!(!bare.contains("\"meta\""), "{bare}");
        let idle = SessionMeta::new().expiry(Expiry::Idle(Duration::from_millis(1_500)));
        let text = export(ExportFormat::Json, "s", &idle, &sample()).unwrap();
        assert!(text.contains("\"idle_seconds\": 1.5"), "{text}");
        let lines = export(ExportFormat::Jsonl, "s", &meta, &sample()).unwrap();
        let back: Vec<ChatMessage> = lines
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(back, sample());
    }

    #[test]
    fn markdown_names_tools_and_fences_outlast_backticks() {
        let meta = SessionMeta::new()
            .title("T")
            .expiry(Expiry::Idle(Duration::from_secs(30 * 86_400)));
        let text = export(ExportFormat::Markdown, "s-1", &meta, &sample()).unwrap();
        assert!(
            text.starts_with("# Session `s-1`\n\nTitle: T  \n"),
            "{text}"
        );
        assert!(text.contains("Expires: after 30d idle"), "{text}");
        assert!(text.contains("## 3. tool result (ls, call c1)"), "{text}");
        assert!(text.contains("````\nhas ``` inside\n````"), "{text}");
        assert!(
            text.contains("Tool call `ls` (id `c1`):\n\n```json\n{}\n```"),
            "{text}"
        );
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!(
            "md".parse::<ExportFormat>().unwrap(),
            ExportFormat::Markdown
        );
        let err = "xml".parse::<ExportFormat>().unwrap_err().to_string();
        assert!(err.contains("json, jsonl or markdown"), "{err}");
    }
}
