//! The on-disk format: one JSON message per `\n`-terminated line, and the torn-tail rule.
//!
//! A line only counts once its `\n` is written. `append` writes each batch with a single
//! `write()`, so a process killed mid-append can leave at most one unterminated fragment,
//! at the very end of the file: the *torn tail*. It is never data: `load` skips it with a
//! warning, and the next `append` (under the session lock) cuts it off before writing. The
//! one exception is a tail that is a complete message missing only its `\n` (a crash
//! between the last byte and the newline, or a hand-edited file without a final newline):
//! it holds no partial data, so it is kept and the next append adds the newline.
//!
//! Any other line that does not parse is corruption, reported as [`Error::Corrupt`] with
//! its line number, because skipping it would silently drop part of a conversation.

use fusion_core::{ChatMessage, Error, Result};

use crate::error::BACKEND;

/// Serialises `messages` into one buffer of complete lines, ready for a single `write()`.
///
/// `serde_json` escapes control characters inside strings, so a message never contains a
/// raw `\n` and each one occupies exactly one line.
pub(crate) fn encode(messages: &[ChatMessage]) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(messages.len() * 128);
    for message in messages {
        serde_json::to_writer(&mut buf, message)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// What follows the last `\n` of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Nothing: the file is empty or ends with `\n`.
    Clean,
    /// A complete message without its `\n`. It is data; the next append writes the `\n`.
    Unterminated,
    /// `len` bytes of an interrupted append. Not data; the next append removes them.
    Torn {
        /// How many bytes the fragment has.
        len: usize,
    },
}

/// A parsed session file.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The messages, in file order.
    pub(crate) messages: Vec<ChatMessage>,
    /// What the end of the file looks like.
    pub(crate) tail: Tail,
}

/// Parses a whole session file. Fails with [`Error::Corrupt`] naming the first bad line.
pub(crate) fn decode(session_id: &str, bytes: &[u8]) -> Result<Decoded> {
    let complete = complete_len(bytes);
    let (body, rest) = bytes.split_at(complete);
    let mut messages = Vec::with_capacity(body.len() / 128);
    if !body.is_empty() {
        // `body` ends with `\n`, so the last split piece is the empty string after it.
        let lines = body[..body.len() - 1].split(|&b| b == b'\n');
        for (index, line) in lines.enumerate() {
            messages.push(parse_line(session_id, index + 1, line)?);
        }
    }
    let tail = if rest.is_empty() {
        Tail::Clean
    } else if let Ok(last) = serde_json::from_slice(rest) {
        messages.push(last);
        Tail::Unterminated
    } else {
        Tail::Torn { len: rest.len() }
    };
    Ok(Decoded { messages, tail })
}

/// Classifies the bytes after the last `\n` of a file.
pub(crate) fn classify_tail(rest: &[u8]) -> Tail {
    if rest.is_empty() {
        Tail::Clean
    } else if serde_json::from_slice::<ChatMessage>(rest).is_ok() {
        Tail::Unterminated
    } else {
        Tail::Torn { len: rest.len() }
    }
}

/// The length of the part of `bytes` made of complete (`\n`-terminated) lines.
pub(crate) fn complete_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1)
}

/// The length of the first `lines` lines of `bytes`, or of all of them if there are fewer.
///
/// Like [`decode`], it counts an unterminated complete message as a line and a torn tail
/// as nothing, so the result never ends inside a message.
pub(crate) fn prefix_len(bytes: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return 0;
    }
    let newline = bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(lines - 1);
    if let Some((newline, _)) = newline {
        return newline + 1;
    }
    let complete = complete_len(bytes);
    match classify_tail(&bytes[complete..]) {
        Tail::Unterminated => bytes.len(),
        Tail::Clean | Tail::Torn { .. } => complete,
    }
}

fn parse_line(session_id: &str, number: usize, line: &[u8]) -> Result<ChatMessage> {
    serde_json::from_slice(line).map_err(|err| {
        let what = if line.iter().all(u8::is_ascii_whitespace) {
            "is blank".to_string()
        } else {
            format!("is not a valid message ({err})")
        };
        Error::corrupt(BACKEND, session_id, format!("line {number} {what}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(messages: &[ChatMessage]) -> Vec<u8> {
        encode(messages).unwrap()
    }

    #[test]
    fn one_message_per_line_round_trips() {
        let history = fusion_core::testkit::cases::sample_history();
        let bytes = lines(&history);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), history.len());
        let decoded = decode("s", &bytes).unwrap();
        assert_eq!(decoded.messages, history);
        assert_eq!(decoded.tail, Tail::Clean);
        assert!(decode("s", b"").unwrap().messages.is_empty());
    }

    #[test]
    fn torn_tail_is_skipped_not_mixed_in() {
        let history = vec![ChatMessage::user("one"), ChatMessage::user("two")];
        let mut bytes = lines(&history);
        let whole = bytes.len();
        bytes.extend_from_slice(br#"{"role":"user","cont"#);
        let decoded = decode("s", &bytes).unwrap();
        assert_eq!(decoded.messages, history);
        assert_eq!(decoded.tail, Tail::Torn { len: 20 });
        assert_eq!(complete_len(&bytes), whole);
    }

    #[test]
    fn a_complete_message_without_newline_is_kept() {
        let mut bytes = lines(&[ChatMessage::user("one")]);
        bytes.extend_from_slice(br#"{"role":"user","content":"two"}"#);
        let decoded = decode("s", &bytes).unwrap();
        assert_eq!(decoded.messages.len(), 2);
        assert_eq!(decoded.tail, Tail::Unterminated);
    }

    #[test]
    fn a_bad_complete_line_is_corrupt_and_named() {
        let mut bytes = lines(&[ChatMessage::user("one")]);
        bytes.extend_from_slice(b"{broken\n");
        bytes.extend_from_slice(&lines(&[ChatMessage::user("three")]));
        let err = decode("user-1", &bytes).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { backend: "fs", session_id, detail }
                if session_id == "user-1" && detail.starts_with("line 2 ")),
            "{err}"
        );
        let blank = decode("user-1", b"\n").unwrap_err().to_string();
        assert!(blank.contains("line 1 is blank"), "{blank}");
    }

    #[test]
    fn prefixes_are_counted_in_lines() {
        let bytes = b"a\nbb\nccc\ntorn";
        assert_eq!(prefix_len(bytes, 0), 0);
        assert_eq!(prefix_len(bytes, 1), 2);
        assert_eq!(prefix_len(bytes, 3), 9);
        assert_eq!(prefix_len(bytes, 7), 9);
        assert_eq!(complete_len(b"no newline"), 0);
        let unterminated = br#"{"role":"user","content":"a"}
{"role":"user","content":"b"}"#;
        assert_eq!(prefix_len(unterminated, 1), 30);
        assert_eq!(prefix_len(unterminated, 2), unterminated.len());
    }
}
