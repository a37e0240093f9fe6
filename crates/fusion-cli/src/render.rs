//! Human-readable renderings: the session table of `sessions list` (and `/sessions` in
//! chat), the terminal transcript of `sessions show`, the Markdown of
//! `sessions export --format markdown`, and UTC timestamps.
//!
//! Both renderings show every message, including tool calls with their raw arguments and
//! tool results labelled with the tool that produced them, because "what did the agent
//! actually do" is the usual reason to look at a transcript.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use fusion::storage::SessionInfo;
use fusion::{ChatMessage, Role};

/// The table of `sessions list`: id, message count and last update, one session a line.
///
/// A session whose info could not be read shows its error in place of the figures. With
/// `current`, a first column marks that session with `*` (chat's `/sessions`).
pub fn session_table(
    sessions: &[(String, fusion::Result<SessionInfo>)],
    current: Option<&str>,
) -> String {
    let width = sessions
        .iter()
        .map(|(id, _)| id.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let marker = |id: Option<&str>| match current {
        None => "",
        Some(current) if id == Some(current) => "* ",
        Some(_) => "  ",
    };
    let mut out = format!(
        "{}{:<width$}  {:>8}  UPDATED\n",
        marker(None),
        "ID",
        "MESSAGES"
    );
    for (id, info) in sessions {
        let marker = marker(Some(id));
        let _ = match info {
            Ok(info) => {
                let updated = info.updated_at.map_or_else(|| "-".into(), rfc3339);
                writeln!(
                    out,
                    "{marker}{id:<width$}  {:>8}  {updated}",
                    info.message_count
                )
            }
            Err(err) => writeln!(out, "{marker}{id:<width$}  {:>8}  error: {err}", "?"),
        };
    }
    out
}

/// The plain-text transcript printed by `sessions show` (and `/history` in chat).
pub fn transcript(id: &str, messages: &[ChatMessage]) -> String {
    let tools = tool_names(messages);
    let mut out = format!("session {id} ({})\n", plural(messages.len(), "message"));
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

/// A Markdown transcript: one section per message, tool calls and results in code blocks.
pub fn markdown(id: &str, messages: &[ChatMessage]) -> String {
    let tools = tool_names(messages);
    let mut out = format!(
        "# Session `{id}`\n\n{}\n",
        plural(messages.len(), "message")
    );
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
        let text = transcript("s1", &sample());
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
        let text = markdown("s1", &sample());
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
    fn session_table_marks_the_current_session_and_shows_errors_in_place() {
        let info = |id: &str, count| {
            let mut info = SessionInfo::new(id, count);
            info.created_at = None;
            info.updated_at = Some(UNIX_EPOCH);
            info
        };
        let sessions = vec![
            ("a".to_string(), Ok(info("a", 3))),
            (
                "broken".to_string(),
                Err(fusion::Error::Config("corrupt".into())),
            ),
            ("me".to_string(), Ok(info("me", 1))),
        ];
        let plain = session_table(&sessions, None);
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines[0], "ID      MESSAGES  UPDATED");
        assert_eq!(lines[1], "a              3  1970-01-01T00:00:00Z");
        assert!(
            lines[2].starts_with("broken         ?  error: ") && lines[2].contains("corrupt"),
            "{plain}"
        );

        let marked = session_table(&sessions, Some("me"));
        let lines: Vec<&str> = marked.lines().collect();
        assert!(lines[0].starts_with("  ID "), "{marked}");
        assert!(lines[1].starts_with("  a "), "{marked}");
        assert!(lines[3].starts_with("* me "), "{marked}");
    }
}
