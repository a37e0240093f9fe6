//! Which ids of a batch are among the ids of the last lines of a session file: what an
//! append checks, under the session's lock, so that it stores each id once.
//!
//! The file is read backwards from where its data ends, a chunk at a time, and only as
//! far back as the last [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW) lines reach (sooner
//! when every id of the batch has been found), so the check costs a read of those lines
//! at most, whatever the history's length, and holds a chunk in memory, whatever the
//! lines' length.
//!
//! Lines are not parsed. This backend writes a message's id as its first key, so a line
//! with an id starts with `{"id":"` and the id is the text up to the next `"` (ids never
//! need escaping); of the rest of such a line only its `\n` is looked for (with
//! `memchr`, a few GB/s). A line that starts otherwise is searched for the string `"id"`:
//! if it holds one, it may be hand-written with its id in another place
//! (`{"role":"user","id":"x",...}`, or with spaces), so it is read again and parsed once
//! the scan is over, if an id is still unfound. The same goes for an id-less message
//! whose tool calls have ids (`"tool_calls":[{"id":...`): a session written before ids
//! existed pays for those lines when a batch with ids comes. Searching for `"id"` rather
//! than `"id":` also catches a hand-written `"id" :`; inside a JSON string a `"` is
//! always escaped, so message text never matches.
//!
//! A search that looked at every line of the window also reports the window's ids as
//! [`RecentIds`], which the append keeps ([`crate::recent_cache`]) so that its next append
//! need not search at all.

use std::io;
use std::ops::Range;

use fusion_core::{MessageId, RecentIds};
use serde::Deserialize;

/// How a line whose message has an id starts, as this backend writes it.
const ID_PREFIX: &[u8] = br#"{"id":""#;
/// The most bytes of a line's start that can hold the prefix, an id and its closing `"`.
const HEAD_LEN: usize = ID_PREFIX.len() + MessageId::MAX_LEN + 1;
/// The string a line with an id anywhere holds (see the module docs).
const ID_KEY: &[u8] = br#""id""#;

/// Where the data to search ends, and how to read it.
pub(crate) struct Source<R> {
    /// Where the data ends (before a torn tail).
    pub(crate) data_end: u64,
    /// Whether the data ends with `\n` (not with a complete message missing it).
    pub(crate) terminated: bool,
    /// Fills a buffer from an offset of the file.
    pub(crate) read_at: R,
}

/// Sizes of the reads, growing from `first` to `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunks {
    /// The size of the first read: enough for the last lines of most sessions.
    pub(crate) first: usize,
    /// The size no read goes beyond.
    pub(crate) max: usize,
}

/// What the search found and what it cost.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// For each id of the batch (in its order), whether it is stored; `false` for none.
    pub(crate) stored: Vec<bool>,
    /// How many bytes of the file were read.
    pub(crate) bytes_read: u64,
    /// The ids of the window's lines (the last
    /// [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW) at most), if the search looked at
    /// every line of the window; `None` if it stopped sooner, every id of the batch found.
    pub(crate) window: Option<RecentIds>,
}

/// Which of `ids` are among the ids of the last `window` lines of `source`'s data.
pub(crate) fn find_stored<R>(
    ids: &[Option<MessageId>],
    window: usize,
    chunks: Chunks,
    mut source: Source<R>,
) -> io::Result<Found>
where
    R: FnMut(&mut [u8], u64) -> io::Result<()>,
{
    let mut scan = Scan::new(ids, window, source.data_end);
    let mut bytes_read = 0;
    if source.data_end > 0 {
        // The final `\n` ends the last line; no line follows it.
        let mut end = source.data_end - u64::from(source.terminated);
        scan.line_end = end;
        let mut size = chunks.first;
        let mut buf = Vec::new();
        while end > 0 && !scan.is_done() {
            let start = end.saturating_sub(size as u64);
            buf.resize(usize::try_from(end - start).unwrap_or(0), 0);
            (source.read_at)(&mut buf, start)?;
            bytes_read += buf.len() as u64;
            scan.feed(&buf, start);
            end = start;
            size = (size * 2).min(chunks.max);
        }
        if end == 0 && !scan.is_done() {
            // The file's first line has no `\n` before it.
            scan.line_done(&[], 0);
            scan.at_start = true;
        }
        for line in std::mem::take(&mut scan.to_parse) {
            if scan.missing == 0 {
                // The ids of the lines left unparsed stay unknown: no window reported.
                scan.unparsed = true;
                break;
            }
            buf.resize(usize::try_from(line.end - line.start).unwrap_or(0), 0);
            (source.read_at)(&mut buf, line.start)?;
            bytes_read += buf.len() as u64;
            // A line that does not parse is corrupt (`load` says so) and has no id.
            if let Ok(IdOnly { id: Some(id) }) = serde_json::from_slice(&buf) {
                scan.found(id.as_str().as_bytes());
                scan.seen.push((line.start, id.fingerprint()));
            }
        }
    }
    let whole = scan.at_start || scan.lines >= scan.window || source.data_end == 0;
    Ok(Found {
        window: (whole && !scan.unparsed).then(|| scan.window_ids()),
        stored: scan.stored,
        bytes_read,
    })
}

/// A message's id and nothing else; serde skips the rest of the line unread into values.
#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<MessageId>,
}

/// The state of a search going backwards through the data.
struct Scan<'a> {
    ids: &'a [Option<MessageId>],
    stored: Vec<bool>,
    /// How many ids are not found yet.
    missing: usize,
    /// How many lines to look at, and how many were.
    window: usize,
    lines: usize,
    /// The first bytes of the line being scanned, as far as it was read back.
    head: Vec<u8>,
    /// Whether the part of that line read so far holds [`ID_KEY`].
    mentions_id: bool,
    /// Where that line ends (before its `\n`).
    line_end: u64,
    /// The lines to parse whole (see the module docs).
    to_parse: Vec<Range<u64>>,
    /// Where each line with an id starts, and its id's fingerprint, as met (not in order:
    /// the lines parsed whole come last).
    seen: Vec<(u64, u32)>,
    /// Whether the first line of the data was looked at (the window reaches it).
    at_start: bool,
    /// Whether a line to parse was left unparsed, every id of the batch found sooner.
    unparsed: bool,
}

impl<'a> Scan<'a> {
    fn new(ids: &'a [Option<MessageId>], window: usize, data_end: u64) -> Self {
        Scan {
            ids,
            stored: vec![false; ids.len()],
            missing: ids.iter().flatten().count(),
            window,
            lines: 0,
            head: Vec::with_capacity(HEAD_LEN),
            mentions_id: false,
            line_end: data_end,
            to_parse: Vec::new(),
            seen: Vec::new(),
            at_start: false,
            unparsed: false,
        }
    }

    /// The ids of the lines looked at, oldest first.
    fn window_ids(&mut self) -> RecentIds {
        self.seen.sort_unstable_by_key(|&(start, _)| start);
        RecentIds::from_fingerprints(self.seen.iter().map(|&(_, fingerprint)| fingerprint))
    }

    fn is_done(&self) -> bool {
        self.missing == 0 || self.lines >= self.window
    }

    /// Scans `bytes`, which start at `offset` and end where the previous chunk started.
    fn feed(&mut self, bytes: &[u8], offset: u64) {
        let mut end = bytes.len();
        while !self.is_done() {
            let Some(newline) = memchr::memrchr(b'\n', &bytes[..end]) else {
                self.carry(&bytes[..end]);
                return;
            };
            self.line_done(&bytes[newline + 1..end], offset + newline as u64 + 1);
            end = newline;
        }
    }

    /// Keeps what a line continued in earlier reads needs of `part`, its bytes in this
    /// read: the first bytes for its head, and whether it holds [`ID_KEY`]. Only the few
    /// lines that cross a read's start come here.
    fn carry(&mut self, part: &[u8]) {
        if part.is_empty() {
            return;
        }
        self.mentions_id = self.mentions_id || mentions_id(part, &self.head);
        let take = part.len().min(HEAD_LEN);
        self.head.splice(0..0, part[..take].iter().copied());
        self.head.truncate(HEAD_LEN);
    }

    /// The current line starts at `start` with `first` (up to where this read goes or
    /// the line ends): looks for its id and moves to the line before.
    fn line_done(&mut self, first: &[u8], start: u64) {
        let spans_reads = !self.head.is_empty();
        if spans_reads {
            self.carry(first);
        }
        let mut carried = std::mem::take(&mut self.head);
        let head = if spans_reads { &carried[..] } else { first };
        if let Some(rest) = head.strip_prefix(ID_PREFIX) {
            // No closing quote within an id's length: the line is corrupt and has no id.
            let rest = &rest[..rest.len().min(MessageId::MAX_LEN + 1)];
            if let Some(close) = memchr::memchr(b'"', rest) {
                let id = &rest[..close];
                self.found(id);
                // An id that does not parse cannot equal one a batch brings.
                if let Some(id) = std::str::from_utf8(id).ok().and_then(|s| s.parse().ok()) {
                    self.seen.push((start, MessageId::fingerprint(&id)));
                }
            }
        } else if (spans_reads && self.mentions_id) || (!spans_reads && mentions_id(first, &[])) {
            // Searched only now, for the lines without an id first: most lines have one.
            self.to_parse.push(start..self.line_end);
        }
        self.lines += 1;
        carried.clear();
        self.head = carried;
        self.mentions_id = false;
        self.line_end = start.saturating_sub(1);
    }

    /// Marks the batch's message with the stored id `id`, if any.
    fn found(&mut self, id: &[u8]) {
        let position = self
            .ids
            .iter()
            .zip(&self.stored)
            .position(|(mine, &stored)| {
                !stored && mine.as_ref().is_some_and(|m| m.as_str().as_bytes() == id)
            });
        if let Some(index) = position {
            self.stored[index] = true;
            self.missing -= 1;
        }
    }
}

/// Whether `part`, followed by `after`, holds [`ID_KEY`] (which may straddle the two).
fn mentions_id(part: &[u8], after: &[u8]) -> bool {
    if memchr::memmem::find(part, ID_KEY).is_some() {
        return true;
    }
    let reach = ID_KEY.len() - 1;
    let mut seam = [0; 2 * (ID_KEY.len() - 1)];
    let before = &part[part.len().saturating_sub(reach)..];
    let after = &after[..after.len().min(reach)];
    seam[..before.len()].copy_from_slice(before);
    seam[before.len()..before.len() + after.len()].copy_from_slice(after);
    memchr::memmem::find(&seam[..before.len() + after.len()], ID_KEY).is_some()
}

#[cfg(test)]
mod tests {
    use fusion_core::{ChatMessage, ToolCall};

    use super::*;
    use crate::jsonl;

    fn id(text: &str) -> MessageId {
        text.parse().unwrap()
    }

    fn message(content: &str, with_id: Option<&str>) -> ChatMessage {
        let message = ChatMessage::user(content);
        match with_id {
            Some(text) => message.with_id(id(text)),
            None => message,
        }
    }

    /// Searches `bytes` (a whole file) as an append does after finding its data end.
    fn search(bytes: &[u8], ids: &[&str], window: usize, chunk: usize) -> Found {
        let data_end = jsonl::data_len(bytes) as u64;
        let terminated = data_end > 0 && bytes[data_end as usize - 1] == b'\n';
        let ids: Vec<Option<MessageId>> = ids.iter().map(|text| Some(id(text))).collect();
        let source = Source {
            data_end,
            terminated,
            read_at: |buf: &mut [u8], offset: u64| {
                let offset = offset as usize;
                buf.copy_from_slice(&bytes[offset..offset + buf.len()]);
                Ok(())
            },
        };
        let chunks = Chunks {
            first: chunk,
            max: chunk * 4,
        };
        find_stored(&ids, window, chunks, source).unwrap()
    }

    fn file(messages: &[ChatMessage]) -> Vec<u8> {
        jsonl::encode(messages).unwrap()
    }

    #[test]
    fn ids_are_found_in_the_window_and_not_before_it() {
        let messages: Vec<ChatMessage> = (0..10)
            .map(|i| message(&format!("m{i}"), Some(&format!("id-{i}"))))
            .collect();
        let bytes = file(&messages);
        let found = search(&bytes, &["id-9", "id-6", "id-5", "new"], 4, 16);
        assert_eq!(found.stored, [true, true, false, false]);
        // A file shorter than the window: every line is looked at, the first one too.
        let found = search(&bytes, &["id-0", "id-9", "new"], 64, 16);
        assert_eq!(found.stored, [true, true, false]);
        assert_eq!(
            found.bytes_read,
            bytes.len() as u64 - 1,
            "all but the final newline"
        );
        assert_eq!(search(b"", &["id-0"], 64, 16).stored, [false]);
    }

    #[test]
    fn the_search_stops_once_every_id_is_found() {
        let messages: Vec<ChatMessage> = (0..100)
            .map(|i| message(&"x".repeat(100), Some(&format!("id-{i}"))))
            .collect();
        let bytes = file(&messages);
        let found = search(&bytes, &["id-99", "id-98"], 64, 64);
        assert_eq!(found.stored, [true, true]);
        let line = bytes.len() as u64 / 100;
        assert!(
            found.bytes_read < 4 * line,
            "{} bytes read",
            found.bytes_read
        );
        // Otherwise it reads the window's lines, plus at most one chunk it did not need.
        let found = search(&bytes, &["new"], 64, 64);
        assert!(
            found.bytes_read <= 64 * line + 256,
            "{} bytes read",
            found.bytes_read
        );
    }

    #[test]
    fn lines_longer_than_a_chunk_are_followed_to_their_start() {
        let long = "y".repeat(1000);
        let messages = [
            message("short", Some("before")),
            message(&long, Some("long-1")),
            message(&long, None),
            message(&long, Some("long-2")),
        ];
        let bytes = file(&messages);
        for chunk in [1, 7, 16, 80, 4096] {
            let found = search(&bytes, &["long-1", "long-2", "before", "new"], 3, chunk);
            assert_eq!(found.stored, [true, true, false, false], "chunk {chunk}");
        }
    }

    #[test]
    fn a_torn_tail_and_a_missing_newline_are_not_lines_of_the_window() {
        let mut bytes = file(&[message("a", Some("a")), message("b", Some("b"))]);
        let batch = jsonl::encode_batch(&[message("c", Some("c")), message("d", Some("d"))]);
        let batch = batch.unwrap();
        // The first line of a batch whose second is missing: a torn tail, not data.
        bytes.extend_from_slice(&batch[..jsonl::complete_len(&batch[..batch.len() - 1])]);
        bytes.extend_from_slice(br#"{"id":"d","role":"us"#);
        let found = search(&bytes, &["a", "b", "c", "d"], 1, 8);
        assert_eq!(found.stored, [false, true, false, false]);
        // A complete last message without its `\n` is data, and the last line.
        let mut bytes = file(&[message("a", Some("a"))]);
        bytes.extend_from_slice(br#"{"id":"b","role":"user","content":"b"}"#);
        assert_eq!(search(&bytes, &["a", "b"], 1, 8).stored, [false, true]);
        assert_eq!(search(&bytes, &["a", "b"], 2, 8).stored, [true, true]);
    }

    #[test]
    fn a_hand_written_id_elsewhere_is_parsed_and_lines_without_ids_count() {
        let mut bytes = file(&[message("a", Some("first"))]);
        bytes.extend_from_slice(b"{\"role\":\"user\",\"content\":\"b\",\"id\":\"later\"}\n");
        bytes.extend_from_slice(b"{ \"id\" : \"spaced\", \"role\":\"user\",\"content\":\"c\"}\n");
        let tools = ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("t", "f", "")]);
        bytes.extend(file(&[tools, message("no id", None)]));
        let all = ["first", "later", "spaced", "t", "new"];
        // Small reads split `"id"` and the lines' starts at every place.
        for chunk in [1, 2, 3, 5, 16, 4096] {
            let found = search(&bytes, &all, 64, chunk);
            assert_eq!(
                found.stored,
                [true, true, true, false, false],
                "chunk {chunk}"
            );
            // Lines without ids still take their place in the window.
            let found = search(&bytes, &all, 4, chunk);
            assert_eq!(
                found.stored,
                [false, true, true, false, false],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_search_through_the_whole_window_reports_its_ids_in_order() {
        let messages: Vec<ChatMessage> = (0..10)
            .map(|i| {
                message(
                    &format!("m{i}"),
                    (i != 7).then(|| format!("id-{i}")).as_deref(),
                )
            })
            .collect();
        let bytes = file(&messages);
        let expected = |from: usize| RecentIds::of(&messages[from..]);
        for chunk in [1, 16, 4096] {
            let found = search(&bytes, &["new"], 4, chunk);
            assert_eq!(found.window, Some(expected(6)), "chunk {chunk}");
            // Shorter than the window: its first line too.
            let found = search(&bytes, &["new"], 64, chunk);
            assert_eq!(found.window, Some(expected(0)), "chunk {chunk}");
            // Stopped once every id was found: not the whole window.
            let found = search(&bytes, &["id-9"], 4, chunk);
            assert_eq!(found.window, None, "chunk {chunk}");
        }
    }

    #[test]
    fn each_id_marks_one_message_and_ids_less_messages_none() {
        let bytes = file(&[message("a", Some("a"))]);
        let ids = [None, Some(id("a")), None];
        let source = Source {
            data_end: bytes.len() as u64,
            terminated: true,
            read_at: |buf: &mut [u8], offset: u64| {
                buf.copy_from_slice(&bytes[offset as usize..][..buf.len()]);
                Ok(())
            },
        };
        let chunks = Chunks { first: 4, max: 4 };
        let found = find_stored(&ids, 64, chunks, source).unwrap();
        assert_eq!(found.stored, [false, true, false]);
    }
}
