//! The on-disk format: one JSON message per `\n`-terminated line, batch markers, and the
//! torn-tail rule.
//!
//! A line only counts once its `\n` is written. `append` writes each batch with a single
//! `write()`, so a process killed mid-append can leave only an unfinished batch at the very
//! end of the file: the *torn tail*. It is never data: `load` skips it with a warning, and
//! the next `append` (under the session lock) cuts it off before writing.
//!
//! # Batch markers
//!
//! A `write()` cut short can still have stored some complete lines of a batch. So that an
//! append of several messages is all or nothing, every line of such a batch but the last
//! ends with an extra top-level key saying how many lines of the batch follow it:
//!
//! ```text
//! {"role":"user","content":"run it","fusion_batch_more":2}
//! {"role":"assistant","content":"","tool_calls":[...],"fusion_batch_more":1}
//! {"role":"tool","content":"done","tool_call_id":"call_1"}
//! ```
//!
//! A file whose last lines are all marked therefore ends inside a batch, and those lines
//! are part of the torn tail. The marker sits at the end of the line so that an append
//! checks it by reading a few bytes, whatever the size of the message; it is recognised
//! textually (`ChatMessage` never ends with a number, so no message can end like it) and
//! ignored by the message parser, so versions that predate it still read the file.
//! `save` needs no markers: it replaces the file with a rename, which is atomic already.
//!
//! The one unterminated line that is data is a complete, unmarked message missing only its
//! `\n` (a crash between the last byte and the newline, or a hand-edited file without a
//! final newline): it holds no partial data, so it is kept and the next append adds the
//! newline.
//!
//! Any other line that does not parse is corruption, reported as [`Error::Corrupt`] with
//! its line number, because skipping it would silently drop part of a conversation.

use fusion_core::{ChatMessage, Error, Result};

use crate::error::BACKEND;

/// The key that marks a line of a batch that continues on the next line.
const BATCH_KEY: &[u8] = br#","fusion_batch_more":"#;

/// The most bytes a line's marker takes: the key, 20 digits and the closing brace. An
/// append reads this much of the end of the file to see whether it ends inside a batch.
pub(crate) const MARKER_MAX: usize = BATCH_KEY.len() + 20 + 1;

/// Serialises `messages` into one buffer of complete lines, ready for a single `write()`
/// or a replacement of the whole file; no batch markers.
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

/// Like [`encode`], but marks every line but the last with how many lines follow it, so
/// that the batch is appended all or nothing (see the module docs).
pub(crate) fn encode_batch(messages: &[ChatMessage]) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(ChatMessage::json_len_hint(messages) + 16 * messages.len());
    for (index, message) in messages.iter().enumerate() {
        serde_json::to_writer(&mut buf, message)?;
        mark(&mut buf, messages.len() - 1 - index);
        buf.push(b'\n');
    }
    Ok(buf)
}

/// Ends the unmarked line at the end of `buf` (an object, without its `\n`) with the
/// marker saying `more` lines of its batch follow; the last line of a batch (`more` 0)
/// stays as it is.
pub(crate) fn mark(buf: &mut Vec<u8>, more: usize) {
    if more > 0 {
        // A message always serialises as an object, so the last byte is its `}`.
        buf.pop();
        buf.extend_from_slice(BATCH_KEY);
        buf.extend_from_slice(more.to_string().as_bytes());
        buf.push(b'}');
    }
}

/// The length of the marker that ends `line` (without its `\n`), if it has one. `line`
/// may be just the end of a longer line: only its last [`MARKER_MAX`] bytes are looked at.
pub(crate) fn marker_len(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    body[..body.len() - digits]
        .ends_with(BATCH_KEY)
        .then_some(BATCH_KEY.len() + digits + 1)
}

/// Removes the marker of the last line of `bytes` (which end with `\n`), so that a prefix
/// cut inside a batch ends with a complete one.
pub(crate) fn unmark_last_line(bytes: &mut Vec<u8>) {
    let Some(line) = bytes.strip_suffix(b"\n") else {
        return;
    };
    if let Some(marker) = marker_len(line) {
        let end = line.len();
        bytes.truncate(end - marker);
        bytes.extend_from_slice(b"}\n");
    }
}

/// What follows the data of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Nothing: the file is empty or ends with the `\n` of a complete batch.
    Clean,
    /// A complete message without its `\n`. It is data; the next append writes the `\n`.
    Unterminated,
    /// `len` bytes of an interrupted append (a partial line, or the lines of a batch whose
    /// end is missing). Not data; the next append removes them.
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
    let mut decoder = Decoder::new(session_id, bytes);
    decoder.parse_some(usize::MAX)?;
    Ok(decoder.finish())
}

/// A session file parsed a part at a time, so that a long one can be parsed between the
/// awaits of an async task.
#[derive(Debug)]
pub(crate) struct Decoder<'a> {
    session_id: &'a str,
    bytes: &'a [u8],
    /// Where the data ends (see [`data_len`]).
    end: usize,
    /// The data's lines not parsed yet, without the final `\n`; `None` once all are.
    rest: Option<&'a [u8]>,
    messages: Vec<ChatMessage>,
}

impl<'a> Decoder<'a> {
    /// Ready to parse `bytes`, the whole file of `session_id`.
    pub(crate) fn new(session_id: &'a str, bytes: &'a [u8]) -> Self {
        let end = data_len(bytes);
        let data = &bytes[..end];
        // A final piece without `\n` here is a complete message (`data_len` checked it);
        // the empty piece after a final `\n` is no line.
        let rest = (!data.is_empty()).then(|| data.strip_suffix(b"\n").unwrap_or(data));
        Self {
            session_id,
            bytes,
            end,
            rest,
            messages: Vec::with_capacity(end / 128),
        }
    }

    /// Parses the next lines, at least one and no more once `budget` bytes of them are;
    /// returns whether every line is parsed.
    pub(crate) fn parse_some(&mut self, budget: usize) -> Result<bool> {
        let mut spent = 0;
        while let Some(rest) = self.rest {
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(newline) => (&rest[..newline], Some(&rest[newline + 1..])),
                None => (rest, None),
            };
            let number = self.messages.len() + 1;
            self.messages
                .push(parse_line(self.session_id, number, line)?);
            self.rest = next;
            spent += line.len() + 1;
            if spent >= budget {
                break;
            }
        }
        Ok(self.rest.is_none())
    }

    /// The messages parsed, and what follows the data.
    pub(crate) fn finish(self) -> Decoded {
        let tail = if self.end < self.bytes.len() {
            Tail::Torn {
                len: self.bytes.len() - self.end,
            }
        } else if self.bytes.last().is_some_and(|&b| b != b'\n') {
            Tail::Unterminated
        } else {
            Tail::Clean
        };
        Decoded {
            messages: self.messages,
            tail,
        }
    }
}

/// The length of the data of a whole file: everything but its torn tail.
pub(crate) fn data_len(bytes: &[u8]) -> usize {
    data_end(bytes, true).unwrap_or(0)
}

/// Where the data ends in `bytes`, the last part of a file (all of it if `whole`), or
/// `None` if that cannot be told without reading further back.
///
/// The torn tail is a final piece without `\n` that is not a complete unmarked message,
/// together with the run of marked lines just before it (the unfinished batch it
/// belongs to). Only the end of the file is looked at; earlier lines are not parsed.
pub(crate) fn data_end(bytes: &[u8], whole: bool) -> Option<usize> {
    let complete = complete_len(bytes);
    if !whole && complete == 0 {
        // The final piece may start before `bytes`: too little to judge it.
        return None;
    }
    let rest = &bytes[complete..];
    if !rest.is_empty()
        && marker_len(rest).is_none()
        && serde_json::from_slice::<ChatMessage>(rest).is_ok()
    {
        return Some(bytes.len());
    }
    // Drop the run of marked lines that ends the complete part.
    let mut end = complete;
    while end > 0 {
        let line = &bytes[..end - 1];
        let start = line.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = &line[start..];
        // A line reaching the start of a partial `bytes` may begin earlier; its end still
        // shows the marker if enough of it is here, but not where it starts.
        let known_start = whole || start > 0;
        if !known_start && line.len() < MARKER_MAX {
            return None;
        }
        if marker_len(line).is_none() {
            return Some(end);
        }
        if !known_start {
            return None;
        }
        end = start;
    }
    // The run reaches the start of `bytes`: that is the file's start, or the line before
    // decides.
    whole.then_some(0)
}

/// The length of the part of `bytes` made of complete (`\n`-terminated) lines.
pub(crate) fn complete_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1)
}

/// How many lines the data of a whole file holds (its messages, if none is corrupt).
pub(crate) fn line_count(bytes: &[u8]) -> usize {
    let data = &bytes[..data_len(bytes)];
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    newlines + usize::from(data.last().is_some_and(|&b| b != b'\n'))
}

/// The length of the first `lines` lines of the data of `bytes`, or of all of it if it
/// has fewer. Lines are counted, not parsed; the torn tail counts as nothing, so the result
/// never ends inside a message.
pub(crate) fn prefix_len(bytes: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return 0;
    }
    let data = &bytes[..data_len(bytes)];
    data.iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(lines - 1)
        .map_or(data.len(), |(newline, _)| newline + 1)
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
    fn a_file_parsed_a_part_at_a_time_gives_what_one_parse_gives() {
        let history = fusion_core::testkit::cases::sample_history();
        let mut bytes = lines(&history);
        bytes.extend_from_slice(br#"{"role":"user","cont"#);
        for budget in [0, 1, 40, 200, usize::MAX] {
            let mut decoder = Decoder::new("s", &bytes);
            let mut parts = 1;
            while !decoder.parse_some(budget).unwrap() {
                parts += 1;
            }
            let decoded = decoder.finish();
            assert_eq!(decoded.messages, history, "budget {budget}");
            assert_eq!(decoded.tail, Tail::Torn { len: 20 });
            // At least one line a part, and no more once the budget is spent.
            match budget {
                0 | 1 => assert_eq!(parts, history.len(), "one line a part"),
                40 => assert!(parts <= history.len(), "{parts}"),
                200 => assert!(parts > 1 && parts < history.len(), "{parts}"),
                _ => assert_eq!(parts, 1),
            }
        }
        // A final message without its `\n`, and a blank line, a part at a time.
        let mut unterminated = lines(&history);
        unterminated.extend_from_slice(br#"{"role":"user","content":"last"}"#);
        let mut decoder = Decoder::new("s", &unterminated);
        while !decoder.parse_some(1).unwrap() {}
        let decoded = decoder.finish();
        assert_eq!(decoded.messages.len(), history.len() + 1);
        assert_eq!(decoded.tail, Tail::Unterminated);
        let mut blank = lines(&history[..1]);
        blank.extend_from_slice(b"\n");
        blank.extend_from_slice(&lines(&history[1..2]));
        let mut decoder = Decoder::new("s", &blank);
        assert!(!decoder.parse_some(1).unwrap());
        let err = decoder.parse_some(1).unwrap_err().to_string();
        assert!(err.contains("line 2 is blank"), "{err}");
        // A bad line is named by its number in the file, whichever part it is in.
        let mut bad = lines(&history);
        bad.extend_from_slice(b"{broken\n");
        let mut decoder = Decoder::new("s", &bad);
        let err = loop {
            match decoder.parse_some(1) {
                Ok(false) => {}
                Ok(true) => panic!("the bad line was parsed"),
                Err(err) => break err.to_string(),
            }
        };
        let number = history.len() + 1;
        assert!(err.contains(&format!("line {number} ")), "{err}");
        let mut empty = Decoder::new("s", b"");
        assert!(empty.parse_some(0).unwrap());
        assert!(empty.finish().messages.is_empty());
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
    fn batch() -> Vec<ChatMessage> {
        vec![
            ChatMessage::user("run it"),
            ChatMessage::assistant("running").with_metadata("n", serde_json::json!(7)),
            ChatMessage::tool_result("done", "call_1"),
        ]
    }

    /// `data_end` as an append uses it: on ever larger pieces of the end of the file.
    fn data_end_from_the_end(bytes: &[u8]) -> usize {
        let mut size = 1;
        loop {
            let start = bytes.len().saturating_sub(size);
            if let Some(end) = data_end(&bytes[start..], start == 0) {
                return start + end;
            }
            size *= 2;
        }
    }

    #[test]
    fn batch_lines_are_marked_yet_plain_messages() {
        let bytes = encode_batch(&batch()).unwrap();
        let lines: Vec<&[u8]> = bytes
            .strip_suffix(b"\n")
            .unwrap()
            .split(|&b| b == b'\n')
            .collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with(br#","fusion_batch_more":2}"#));
        assert!(lines[1].ends_with(br#","fusion_batch_more":1}"#));
        assert_eq!(marker_len(lines[2]), None);
        // A reader that knows nothing of markers (an older Fusion, `jq`) still reads them.
        for (line, message) in lines.iter().zip(batch()) {
            assert_eq!(
                serde_json::from_slice::<ChatMessage>(line).unwrap(),
                message
            );
        }
        let decoded = decode("s", &bytes).unwrap();
        assert_eq!(decoded.messages, batch());
        assert_eq!(decoded.tail, Tail::Clean);
        // One message needs no marker, and nothing a message holds looks like one.
        let single = encode_batch(&[
            ChatMessage::user("x").with_metadata("fusion_batch_more", serde_json::json!(3))
        ])
        .unwrap();
        assert_eq!(marker_len(single.strip_suffix(b"\n").unwrap()), None);
    }

    #[test]
    fn a_batch_cut_at_any_byte_loads_all_of_it_or_none() {
        let before = encode(&[ChatMessage::user("one"), ChatMessage::user("two")]).unwrap();
        let written = encode_batch(&batch()).unwrap();
        for cut in 0..=written.len() {
            let bytes = [before.as_slice(), &written[..cut]].concat();
            let decoded = decode("s", &bytes).unwrap();
            // Only the final `\n` may be missing for the batch to count.
            let whole = cut + 1 >= written.len();
            let expected = if whole { 2 + 3 } else { 2 };
            assert_eq!(decoded.messages.len(), expected, "cut at {cut}");
            let end = if whole { bytes.len() } else { before.len() };
            assert_eq!(data_len(&bytes), end, "cut at {cut}");
            assert_eq!(data_end_from_the_end(&bytes), end, "cut at {cut}");
            let tail = match (whole, cut) {
                (_, c) if c == written.len() => Tail::Clean,
                (true, _) => Tail::Unterminated,
                (false, 0) => Tail::Clean,
                (false, c) => Tail::Torn { len: c },
            };
            assert_eq!(decoded.tail, tail, "cut at {cut}");
            assert_eq!(line_count(&bytes), expected, "cut at {cut}");
        }
    }

    #[test]
    fn a_torn_batch_at_the_start_leaves_no_data() {
        let written = encode_batch(&batch()).unwrap();
        let two_lines = complete_len(&written[..written.len() - 1]);
        let bytes = &written[..two_lines];
        assert!(decode("s", bytes).unwrap().messages.is_empty());
        assert_eq!(data_len(bytes), 0);
        assert_eq!(data_end_from_the_end(bytes), 0);
        assert_eq!(prefix_len(bytes, 5), 0);
    }

    #[test]
    fn a_prefix_cut_inside_a_batch_is_unmarked_into_a_complete_one() {
        let mut bytes = encode(&[ChatMessage::user("one")]).unwrap();
        bytes.extend(encode_batch(&batch()).unwrap());
        let keep = prefix_len(&bytes, 3);
        let mut kept = bytes[..keep].to_vec();
        unmark_last_line(&mut kept);
        let decoded = decode("s", &kept).unwrap();
        assert_eq!(decoded.messages.len(), 3);
        assert_eq!(decoded.messages[1..], batch()[..2]);
        assert_eq!(decoded.tail, Tail::Clean);
        // Lines of a torn batch are not counted, so no truncate can bring them back.
        let torn = &bytes[..complete_len(&bytes[..bytes.len() - 1])];
        assert_eq!(prefix_len(torn, 3), prefix_len(torn, 1));
        // An unmarked last line is left alone.
        let mut plain = kept.clone();
        unmark_last_line(&mut plain);
        assert_eq!(plain, kept);
    }
}
