//! Human-readable renderings for the terminal: the session table of `sessions list` (and
//! `/sessions` in chat), the metadata and transcript of `sessions show`, and how a
//! session's expiry reads.
//!
//! The transcript shows every message, including tool calls with their raw arguments and
//! tool results labelled with the tool that produced them, because "what did the agent
//! actually do" is the usual reason to look at one. Its labels are the markdown export's
//! ([`export::message_headings`]), so `show` and `export --format markdown` name a message
//! alike; the markdown itself is the library's, with the other export formats.

use std::borrow::Cow;
use std::fmt::Write as _;

use fusion::ChatMessage;
use fusion::agent::escape_hidden;
use fusion::api::export;
use fusion::storage::{Expiry, SessionInfo};

use crate::time::{format_span, rfc3339};

// `sessions show`, `expire` and the metadata comparisons of import and migrate word an
// expiry as the markdown export does.
pub use fusion::api::time::describe_expiry as expiry;

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

/// The plain-text transcript printed by `sessions show`, its metadata lines (if `info`)
/// under the heading.
pub fn transcript(id: &str, info: Option<&SessionInfo>, messages: &[ChatMessage]) -> String {
    let mut out = format!("session {id} ({})\n", plural(messages.len(), "message"));
    if let Some(info) = info {
        out.push_str(&meta_lines(info));
    }
    let headings = export::message_headings(messages);
    for ((index, message), heading) in messages.iter().enumerate().zip(headings) {
        out.push('\n');
        let _ = writeln!(out, "[{}] {heading}", index + 1);
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
    printable(&out).into_owned()
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|line| format!("{prefix}{line}\n"))
        .collect()
}

/// "1 message", "3 messages".
pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// Prints `line` and a new line to stdout, returning the write's error where `println!`
/// would panic: a reader that went away (`fusion sessions delete x | head -0`) then ends the
/// command through `main`'s report, which takes a closed pipe for the reader's choice, not
/// a failure (`println!` printed a panic and a backtrace, and exited 101).
pub fn say(line: impl std::fmt::Display) -> std::io::Result<()> {
    use std::io::Write as _;
    writeln!(stdout(), "{line}")
}

/// [`say`] for a command whose work goes on when nobody reads its lines (migrate's
/// report, `fusion ui`'s address): a reader that went away drops the line, and the
/// command carries on with its work; any other failed write (a full disk) is returned,
/// named as stdout's.
pub fn say_unless_gone(line: impl std::fmt::Display) -> std::io::Result<()> {
    match say(line) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        said => said,
    }
}

/// Stdout for a command's output. A write that fails says it was stdout's (`cannot write
/// to stdout: No space left on device`), where the bare error could be taken for the
/// storage's, whose errors read the same; it keeps its kind, so a closed pipe still is one
/// to [`report`].
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout())
}

/// See [`stdout`].
pub struct Stdout(std::io::Stdout);

impl Stdout {
    fn named(err: std::io::Error) -> std::io::Error {
        std::io::Error::new(err.kind(), format!("cannot write to stdout: {err}"))
    }
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(Self::named)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(Self::named)
    }
}

/// Prints `line` and a new line to stderr, for what a command tells the person running it
/// beside its output. A stderr that cannot be written to loses the line, not the command.
pub fn note(line: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Prints `err` as one line with its causes, and picks the exit code.
pub fn report(err: &anyhow::Error) -> std::process::ExitCode {
    // A closed pipe (`fusion sessions show x | head`) is the reader's choice, not a failure.
    if reader_went_away(err) {
        return std::process::ExitCode::SUCCESS;
    }
    note(format_args!("fusion: error: {}", crate::one_line(err)));
    std::process::ExitCode::FAILURE
}

/// Whether `err` is a write to stdout that failed because its reader went away (a pipe
/// closed at its other end): nothing more the command prints can be read. Only stdout's
/// own broken pipe, though: a storage whose connection broke says "broken pipe" too, and
/// that write failed.
pub fn reader_went_away(err: &anyhow::Error) -> bool {
    let broken_pipe = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    broken_pipe && stdout_reader_gone()
}

/// Whether stdout is a pipe (or socket) whose reader has gone: the kernel reports an error
/// condition on its write end then.
#[cfg(unix)]
pub fn stdout_reader_gone() -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(&stdout),
        PollFlags::POLLOUT,
    )];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|events| events.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

#[cfg(not(unix))]
pub fn stdout_reader_gone() -> bool {
    true
}

/// `text` cut to `max_chars` characters, with `…` when something was cut.
pub fn shorten(text: &str, max_chars: usize) -> String {
    let text = printable(text);
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

/// `text` safe to print on a terminal: every control character but new line and tab
/// written as a visible escape (`\x1b`, `\r`, `\u{9b}`), except the `\r` of a `\r\n`
/// line end, which is left out; and every character that is invisible or reorders what
/// follows escaped as [`escape_hidden`] escapes it (`\u202e`, `\u200b`, `\u2028`).
///
/// What reaches the terminal (the model's text, tool results, a stored session, an error
/// line) is untrusted: a prompt-injected model or an MCP server could otherwise clear the
/// screen, set the window title or the clipboard (OSC 52), overwrite a `[failed]` mark
/// with `\r` and a line of its own, or make a line read as another (a bidi override
/// turning `txt.exe` around, a zero-width space inside a command).
///
/// The zero-width joiner and non-joiner and the variation selectors, which
/// [`escape_hidden`] escapes too, are kept: emoji (`⚠️`, `👩‍💻`) and scripts such as
/// Persian and Devanagari are written with them, and they cannot reorder text. Each
/// character is judged alone, so a text printed in pieces (a streamed answer) reads as
/// the whole would.
pub fn printable(text: &str) -> Cow<'_, str> {
    let terminal_control = |c: char| c.is_control() && c != '\n' && c != '\t';
    let mut out = String::with_capacity(text.len() + 8);
    // The run of characters since the last kept joiner or tab, for `escape_hidden`.
    let mut run = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' => run.push_str("\\r"),
            c if terminal_control(c) && u32::from(c) < 0x80 => {
                let _ = write!(run, "\\x{:02x}", u32::from(c));
            }
            c if terminal_control(c) => {
                let _ = write!(run, "\\u{{{:x}}}", u32::from(c));
            }
            '\t' | '\u{200c}' | '\u{200d}' | '\u{fe00}'..='\u{fe0f}' => {
                out.push_str(&escape_hidden(&run));
                run.clear();
                out.push(c);
            }
            c => run.push(c),
        }
    }
    out.push_str(&escape_hidden(&run));
    if out == text {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// A storage whose connection broke says "broken pipe" too: that is a failed command,
    /// not a reader who left (this test's stdout is read to the end).
    #[test]
    fn a_broken_pipe_that_is_not_stdouts_is_a_failure() {
        let storage = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("redis: append to session \"s\": connection lost");
        assert_eq!(report(&storage), std::process::ExitCode::FAILURE);
    }
    use fusion::ToolCall;
    use fusion::storage::SessionMeta;

    #[test]
    fn shorten_cuts_on_characters_and_marks_the_cut() {
        assert_eq!(shorten("héllo", 10), "héllo");
        assert_eq!(shorten("héllo", 2), "hé…");
    }

    #[test]
    fn control_characters_print_as_escapes_but_lines_and_tabs_stay() {
        assert!(matches!(printable("plain\n\ttext"), Cow::Borrowed(_)));
        let hostile = "\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07ok\r\x1b[K\u{9b}31m";
        assert_eq!(
            printable(hostile),
            "\\x1b[2J\\x1b]52;c;cm0gLXJmIH4=\\x07ok\\r\\x1b[K\\u{9b}31m"
        );
        assert_eq!(shorten("\x1b[2J", 3), "\\x1…");
        assert_eq!(printable("one\r\ntwo\r"), "one\ntwo\\r");
        let session = [ChatMessage::user("hi\x1b]0;owned\x07")];
        let shown = transcript("s", None, &session);
        assert!(shown.contains("hi\\x1b]0;owned\\x07"), "{shown}");
        assert!(!shown.contains('\x1b'), "{shown}");
    }

    /// Model text and error lines could read as something else on screen: a bidi
    /// override turns `txt.exe` around, a zero-width space hides inside a command, a line
    /// separator breaks a line where none shows in the text.
    #[test]
    fn characters_that_hide_or_reorder_text_print_as_escapes() {
        assert_eq!(
            printable("report\u{202e}txt.exe a\u{2067}b\u{2069}"),
            r"report\u202etxt.exe a\u2067b\u2069"
        );
        assert_eq!(
            printable("rm\u{200b}-rf\t\u{feff}/\u{2060}\u{2028}\u{2029}\u{ad}"),
            "rm\\u200b-rf\t\\ufeff/\\u2060\\u2028\\u2029\\u00ad"
        );
        let session = [ChatMessage::assistant("ok\u{202d}dlrow")];
        let shown = transcript("s", None, &session);
        assert!(shown.contains(r"ok\u202ddlrow"), "{shown}");
    }

    #[test]
    fn ordinary_text_and_emoji_print_as_they_are_even_in_pieces() {
        // Variation selectors and joiners make these emoji and Persian's half-space.
        let plain = "你好，世界 ⚠️ 👩\u{200d}💻 می\u{200c}خواهم\tok\n";
        assert!(matches!(printable(plain), Cow::Borrowed(_)), "{plain}");
        let text = "a\u{202e}b 👩\u{200d}💻\x1b[2J";
        let whole = printable(text);
        let pieces: String = ["a\u{202e}", "b 👩", "\u{200d}💻\x1b", "[2J"]
            .iter()
            .map(|piece| printable(piece))
            .collect();
        assert_eq!(pieces, whole);
        assert_eq!(whole, "a\\u202eb 👩\u{200d}💻\\x1b[2J");
    }

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
