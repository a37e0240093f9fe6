//! Human-readable renderings: the session table of `sessions list` (and `/sessions` in
//! chat), the metadata and terminal transcript of `sessions show`, the Markdown of
//! `sessions export --format markdown`, and how a session's expiry reads.
//!
//! Both renderings show every message, including tool calls with their raw arguments and
//! tool results labelled with the tool that produced them, because "what did the agent
//! actually do" is the usual reason to look at a transcript.

use std::collections::HashMap;
use std::fmt::Write as _;

use fusion::storage::{Expiry, SessionInfo, SessionMeta};
use fusion::{ChatMessage, Role};

use crate::time::{format_span, rfc3339, rfc3339_exact};

/// The table of `sessions list`: id, message count, last update, owner, tags and title,
/// one session a line (the title last, as the one column with spaces in it).
///
/// With `current`, a first column marks that session with `*` (chat's `/sessions`).
pub fn session_table(sessions: &[SessionInfo], current: Option<&str>) -> String {
    let width = |column: &dyn Fn(&SessionInfo) -> usize, header: &str| {
        sessions
            .iter()
            .map(column)
            .max()
            .unwrap_or(0)
            .max(header.len())
    };
    let id_width = width(&|info| info.id.len(), "ID");
    let owner_width = width(&|info| owner(info).chars().count(), "OWNER");
    let tags_width = width(&|info| tags(info).chars().count(), "TAGS");
    let marker = |id: Option<&str>| match current {
        None => "",
        Some(current) if id == Some(current) => "* ",
        Some(_) => "  ",
    };
    let mut out = format!(
        "{}{:<id_width$}  {:>8}  {:<20}  {:<owner_width$}  {:<tags_width$}  TITLE\n",
        marker(None),
        "ID",
        "MESSAGES",
        "UPDATED",
        "OWNER",
        "TAGS",
    );
    for info in sessions {
        let updated = info.updated_at.map_or_else(|| "-".into(), rfc3339);
        let line = format!(
            "{}{:<id_width$}  {:>8}  {updated:<20}  {:<owner_width$}  {:<tags_width$}  {}",
            marker(Some(&info.id)),
            info.id,
            info.message_count,
            owner(info),
            tags(info),
            info.meta.title.as_deref().unwrap_or("-"),
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn owner(info: &SessionInfo) -> &str {
    info.meta.owner.as_deref().unwrap_or("-")
}

fn tags(info: &SessionInfo) -> String {
    if info.meta.tags.is_empty() {
        "-".into()
    } else {
        info.meta.tags.join(",")
    }
}

/// The metadata lines `sessions show` prints above the transcript: title, owner, tags,
/// data, the times the backend keeps, and when the session expires; fields that are not
/// set are left out.
pub fn meta_lines(info: &SessionInfo) -> String {
    let meta = &info.meta;
    let mut out = String::new();
    let mut line = |name: &str, value: &str| {
        let _ = writeln!(out, "{name:<8} {value}");
    };
    if let Some(title) = &meta.title {
        line("title:", title);
    }
    if let Some(owner) = &meta.owner {
        line("owner:", owner);
    }
    if !meta.tags.is_empty() {
        line("tags:", &meta.tags.join(", "));
    }
    if !meta.data.is_empty() {
        line(
            "data:",
            &serde_json::Value::Object(meta.data.clone()).to_string(),
        );
    }
    if let Some(created) = info.created_at {
        line("created:", &rfc3339(created));
    }
    if let Some(updated) = info.updated_at {
        line("updated:", &rfc3339(updated));
    }
    if let Some(expires) = expires(info) {
        line("expires:", &expires);
    }
    out
}

/// When session `info` expires, `None` if never: the instant, followed for an idle expiry
/// by its span (`2026-03-01T09:00:00Z (after 30d idle)`), as `sessions show` and
/// `sessions expire` print it.
pub fn expires(info: &SessionInfo) -> Option<String> {
    let at = info.expires_at.or(match info.meta.expiry {
        Some(Expiry::At(at)) => Some(at),
        _ => None,
    });
    let idle = match info.meta.expiry {
        Some(Expiry::Idle(span)) => Some(format!("after {} idle", format_span(span))),
        _ => None,
    };
    match (at, idle) {
        (Some(at), Some(idle)) => Some(format!("{} ({idle})", rfc3339(at))),
        (Some(at), None) => Some(rfc3339(at)),
        // A backend that reports the span but not the instant it leads to.
        (None, idle) => idle,
    }
}

/// An expiry in a few words, exact to the microsecond so two that differ never read the
/// same: `at 2026-03-01T09:00:00.5Z`, `after 30d idle`.
pub fn expiry(expiry: &Expiry) -> String {
    match expiry {
        Expiry::At(at) => format!("at {}", rfc3339_exact(*at)),
        Expiry::Idle(span) => format!("after {} idle", format_span(*span)),
        // `Expiry` may grow; its debug form still says what it is.
        other => format!("{other:?}"),
    }
}

/// The plain-text transcript printed by `sessions show`, its metadata lines (if `info`)
/// under the heading.
pub fn transcript(id: &str, info: Option<&SessionInfo>, messages: &[ChatMessage]) -> String {
    let tools = tool_names(messages);
    let mut out = format!("session {id} ({})\n", plural(messages.len(), "message"));
    if let Some(info) = info {
        out.push_str(&meta_lines(info));
    }
    for (index, message) in messages.iter().enumerate() {
        out.push('\n');
        let _ = writeln!(out, "[{}] {}", index + 1, heading(message, &tools));
        if !message.content.is_empty() {
            out.push_str(&indent(&message.content, "    "));
        }
        for call in &message.tool_calls {
            let _ = writeln!(
                out,
                "    -> {}({})  [call {}]",
                call.name, call.arguments, call.id
            );
        }
    }
    out
}

/// A Markdown transcript: the title, owner and tags, then one section per message, tool
/// calls and results in code blocks.
pub fn markdown(id: &str, meta: &SessionMeta, messages: &[ChatMessage]) -> String {
    let tools = tool_names(messages);
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
    if let Some(expiry) = &meta.expiry {
        let _ = writeln!(out, "Expires: {}  ", self::expiry(expiry));
    }
    let _ = writeln!(out, "{}", plural(messages.len(), "message"));
    for (index, message) in messages.iter().enumerate() {
        let _ = write!(out, "\n## {}. {}\n\n", index + 1, heading(message, &tools));
        if !message.content.is_empty() {
            if message.role == Role::Tool {
                // Tool output is usually file contents or listings: keep it verbatim.
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

/// "user", "assistant", or "tool result (read_file, call call_1)".
fn heading(message: &ChatMessage, tools: &HashMap<&str, &str>) -> String {
    let mut heading = match (&message.role, &message.tool_call_id) {
        (Role::Tool, Some(call_id)) => match tools.get(call_id.as_str()) {
            Some(tool) => format!("tool result ({tool}, call {call_id})"),
            None => format!("tool result (call {call_id})"),
        },
        (role, _) => role.as_str().to_string(),
    };
    if let Some(name) = &message.name {
        let _ = write!(heading, " [{name}]");
    }
    if let Some(kind) = message.metadata.get("kind").and_then(|kind| kind.as_str()) {
        // Stored summaries and similar annotations would otherwise look like ordinary messages.
        let _ = write!(heading, " <{kind}>");
    }
    heading
}

/// Tool call id -> tool name, so a result can say which tool produced it.
fn tool_names(messages: &[ChatMessage]) -> HashMap<&str, &str> {
    messages
        .iter()
        .flat_map(|message| &message.tool_calls)
        .map(|call| (call.id.as_str(), call.name.as_str()))
        .collect()
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|line| format!("{prefix}{line}\n"))
        .collect()
}

/// A fenced code block whose fence is longer than any backtick run inside `text`.
fn fenced(text: &str, lang: &str) -> String {
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run.max(2) + 1);
    format!("{fence}{lang}\n{}\n{fence}\n", text.trim_end_matches('\n'))
}

/// "1 message", "3 messages".
pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// `text` cut to `max_chars` characters, with `…` when something was cut.
pub fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusion::ToolCall;

    #[test]
    fn shorten_cuts_on_characters_and_marks_the_cut() {
        assert_eq!(shorten("héllo", 10), "héllo");
        assert_eq!(shorten("héllo", 2), "hé…");
    }
    use std::time::{Duration, UNIX_EPOCH};

    fn sample() -> Vec<ChatMessage> {
        vec![
            ChatMessage::user("What is in /tmp?"),
            ChatMessage::assistant_with_tool_calls(
                "",
                vec![ToolCall::new(
                    "call_1",
                    "list_directory",
                    r#"{"path":"/tmp"}"#,
                )],
            ),
            ChatMessage::tool_result("call_1", "notes.txt\n```x```"),
            ChatMessage::assistant("Just notes.txt."),
        ]
    }

    #[test]
    fn transcript_shows_tool_calls_with_arguments_and_labelled_results() {
        let text = transcript("s1", None, &sample());
        assert!(text.starts_with("session s1 (4 messages)"), "{text}");
        assert!(
            text.contains(r#"-> list_directory({"path":"/tmp"})  [call call_1]"#),
            "{text}"
        );
        assert!(
            text.contains("[3] tool result (list_directory, call call_1)\n    notes.txt"),
            "{text}"
        );
    }

    #[test]
    fn markdown_fences_outlast_backticks_in_tool_output() {
        let text = markdown("s1", &SessionMeta::new(), &sample());
        assert!(text.contains("## 2. assistant"), "{text}");
        assert!(text.contains("````\nnotes.txt\n```x```\n````"), "{text}");
        assert!(text.contains("```json\n{\"path\":\"/tmp\"}\n```"), "{text}");
    }

    #[test]
    fn session_table_marks_the_current_session_and_puts_the_title_last() {
        let info = |id: &str, count| {
            let mut info = SessionInfo::new(id, count);
            info.updated_at = Some(UNIX_EPOCH);
            info
        };
        let mut titled = info("a", 3);
        titled.meta = SessionMeta::new()
            .owner("alice")
            .title("Logs, and more")
            .tags(["ops", "x"]);
        let sessions = vec![titled, info("me", 1)];
        let plain = session_table(&sessions, None);
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(
            lines[0],
            "ID  MESSAGES  UPDATED               OWNER  TAGS   TITLE"
        );
        assert_eq!(
            lines[1],
            "a          3  1970-01-01T00:00:00Z  alice  ops,x  Logs, and more"
        );
        assert_eq!(
            lines[2],
            "me         1  1970-01-01T00:00:00Z  -      -      -"
        );

        let marked = session_table(&sessions, Some("me"));
        let lines: Vec<&str> = marked.lines().collect();
        assert!(lines[0].starts_with("  ID "), "{marked}");
        assert!(lines[1].starts_with("  a "), "{marked}");
        assert!(lines[2].starts_with("* me "), "{marked}");
    }

    #[test]
    fn metadata_lines_show_what_is_set() {
        let mut info = SessionInfo::new("s", 1);
        info.meta = SessionMeta::new().title("T").tags(["a", "b"]).data("n", 1);
        info.created_at = Some(UNIX_EPOCH);
        assert_eq!(
            meta_lines(&info),
            "title:   T\ntags:    a, b\ndata:    {\"n\":1}\ncreated: 1970-01-01T00:00:00Z\n"
        );
        assert_eq!(meta_lines(&SessionInfo::new("s", 1)), "");
    }

    #[test]
    fn an_expiry_shows_its_instant_and_an_idle_one_its_span() {
        let at = UNIX_EPOCH + Duration::from_secs(86_400);
        let mut fixed = SessionInfo::new("s", 1);
        fixed.meta = SessionMeta::new().expiry(Expiry::At(at));
        assert_eq!(meta_lines(&fixed), "expires: 1970-01-02T00:00:00Z\n");
        fixed.expires_at = Some(at);
        assert_eq!(meta_lines(&fixed), "expires: 1970-01-02T00:00:00Z\n");

        let mut idle = SessionInfo::new("s", 1);
        idle.meta = SessionMeta::new().expiry(Expiry::Idle(Duration::from_secs(30 * 86_400)));
        assert_eq!(expires(&idle).as_deref(), Some("after 30d idle"));
        idle.expires_at = Some(at);
        assert_eq!(
            meta_lines(&idle),
            "expires: 1970-01-02T00:00:00Z (after 30d idle)\n"
        );
        assert_eq!(expires(&SessionInfo::new("s", 1)), None);
        assert_eq!(
            expiry(&Expiry::At(at + Duration::from_millis(5))),
            "at 1970-01-02T00:00:00.005Z"
        );
    }

    /// What `sessions show` prints for a session the memory backend holds, read back the
    /// way the command reads it.
    #[tokio::test]
    async fn show_prints_the_expiry_a_backend_reports() {
        use fusion::storage::{ConversationStorage, InMemoryStorage};
        let store = InMemoryStorage::new();
        let idle = SessionMeta::new().expiry(Expiry::Idle(Duration::from_secs(2 * 3_600)));
        store
            .create_session("s", &idle, &[ChatMessage::user("hi")])
            .await
            .unwrap();
        let info = store.session_info("s").await.unwrap().unwrap();
        let updated = info.updated_at.expect("the memory backend keeps times");
        let text = transcript("s", Some(&info), &[ChatMessage::user("hi")]);
        let line = format!(
            "expires: {} (after 2h idle)\n",
            rfc3339(updated + Duration::from_secs(2 * 3_600))
        );
        assert!(text.contains(&line), "{text}");
    }
}
