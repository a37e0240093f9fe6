//! Human-readable renderings: the session table of `sessions list` (and `/sessions` in
//! chat), the metadata and terminal transcript of `sessions show`, the Markdown of
//! `sessions export --format markdown`, and UTC timestamps.
//!
//! Both renderings show every message, including tool calls with their raw arguments and
//! tool results labelled with the tool that produced them, because "what did the agent
//! actually do" is the usual reason to look at a transcript.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use fusion::storage::{SessionInfo, SessionMeta};
use fusion::{ChatMessage, Role};

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
/// data, and the times the backend keeps; fields that are not set are left out.
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
    out
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

/// RFC 3339 in UTC (`2025-01-31T09:05:00Z`), computed here to avoid a date crate for one format.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(elapsed) => elapsed.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusion::ToolCall;
    use std::time::Duration;

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
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723);
        assert_eq!(rfc3339(leap_day), "2000-02-29T01:02:03Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1969-12-31T23:59:59Z"
        );
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
}
