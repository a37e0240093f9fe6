//! Server-sent events: the bytes of a `text/event-stream` body in, as pieces arrive; the
//! events they make out.
//!
//! Follows the WHATWG event-stream rules for what a streamed chat reply uses: lines end in
//! `\r\n`, `\n` or `\r`, even when a piece ends between the `\r` and the `\n`; a leading
//! byte-order mark is skipped; a line is `field: value` (one space after the colon
//! dropped), a bare `field`, a `:` comment, or empty, which ends the event. `data` lines
//! are joined with `\n` and `event` names the event's type; `id` and `retry` serve a
//! client that reconnects, which this one never does (a cut reply is retried whole or
//! reported), so they are ignored like any unknown field. At the end of the body an
//! unfinished line or event is dropped, as the rules say.
//!
//! The parser does no I/O: [`super::stream`] waits for pieces, times the pauses and caps
//! the size of an unfinished event ([`SseParser::unfinished_len`]). Unlike `eventsource-stream`, which it replaces and which searched an
//! unfinished line from its start again for every piece (minutes for one large event),
//! it remembers how far it has searched, so each byte is looked at a bounded number of
//! times however the body is cut.
//!
//! ```ignore
//! let mut parser = SseParser::default();
//! parser.feed(b"data: {\"choices\":[]}\n\ndata: [DO");
//! assert_eq!(parser.next_event()?.unwrap().data, "{\"choices\":[]}");
//! assert!(parser.next_event()?.is_none()); // `[DO` waits for the rest of its line
//! ```

use std::mem;

/// The byte-order mark a stream may start with (U+FEFF in UTF-8).
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SseEvent {
    /// The type its `event` field named, or `message` when it had none.
    pub event: String,
    /// Its `data` lines, joined with `\n`.
    pub data: String,
}

/// The body is not UTF-8, so not an event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InvalidUtf8 {
    /// Where in the body the first invalid byte is.
    pub offset: usize,
}

/// Reads an event stream piece by piece: [`feed`](Self::feed) each piece as it arrives,
/// then take the events it completed with [`next_event`](Self::next_event) until `None`.
///
/// Cost: linear in the bytes fed, however they are cut. Memory: the event being built and
/// the unread part of the body (one unfinished line once the events are taken), with at
/// most as much again of lines already read and not yet dropped.
#[derive(Debug, Default)]
pub(super) struct SseParser {
    /// Bytes fed and not yet dropped; `buf[start..]` is the part not yet read as lines.
    buf: Vec<u8>,
    /// Where the unread part of `buf` begins.
    start: usize,
    /// Where the search for the next line end resumes: `buf[start..scanned]` was searched
    /// and holds none. This is what keeps a long line that arrives in many pieces linear.
    scanned: usize,
    /// Bytes of the body dropped from the front of `buf`, for an error's offset.
    dropped: usize,
    /// The last line ended in a `\r` that was the last byte fed, so a `\n` that comes
    /// first in the next piece is the rest of that line end, not an empty line.
    after_cr: bool,
    /// Whether a leading byte-order mark was looked for.
    started: bool,
    /// The event the lines read so far are building.
    pending: PendingEvent,
    /// How many bytes the line-end search went over, so a test can check that no byte is
    /// searched twice.
    #[cfg(test)]
    searched: usize,
}

impl SseParser {
    /// Adds the next piece of the body. Cheap: it copies `piece` after the unread part,
    /// and moves that part to the front only once the lines read before it take at least
    /// as much room (so each byte is moved at most once on average, and a long unfinished
    /// line is not moved again for every piece of it).
    pub fn feed(&mut self, piece: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() - self.start {
            self.buf.drain(..self.start);
            self.dropped += self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(piece);
    }

    /// Bytes held for the event not yet complete: its unfinished line and its data so
    /// far. Once [`next_event`](Self::next_event) returned `None`, this is what the parser
    /// holds (but for lines already read and not yet dropped), so a caller bounds the
    /// parser's memory by checking it then.
    pub fn unfinished_len(&self) -> usize {
        self.buf.len() - self.start + self.pending.data.len() + self.pending.event.len()
    }

    /// The next event the pieces fed so far complete, or `None` until more arrive.
    ///
    /// Fails when a line is not UTF-8; after that the parser should be dropped. A line is
    /// checked once it is whole, and line ends are ASCII, which never occurs inside a
    /// multi-byte character, so a character cut between pieces is no error.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, InvalidUtf8> {
        if !self.started {
            let unread = &self.buf[self.start..];
            if unread.len() < BOM.len() && BOM.starts_with(unread) {
                // Could still become a byte-order mark: wait for more.
                return Ok(None);
            }
            if unread.starts_with(BOM) {
                self.start += BOM.len();
                self.scanned = self.start;
            }
            self.started = true;
        }
        while let Some((end, next)) = self.next_line_end() {
            let line = &self.buf[self.start..end];
            let line = std::str::from_utf8(line).map_err(|err| InvalidUtf8 {
                offset: self.dropped + self.start + err.valid_up_to(),
            })?;
            let event = self.pending.read_line(line);
            self.start = next;
            self.scanned = next;
            if event.is_some() {
                return Ok(event);
            }
        }
        Ok(None)
    }

    /// Finds the end of the next whole line in the unread part: where the line stops and
    /// where the next one starts. Searches only what was not searched before.
    fn next_line_end(&mut self) -> Option<(usize, usize)> {
        if self.after_cr && self.start < self.buf.len() {
            self.after_cr = false;
            if self.buf[self.start] == b'\n' {
                self.start += 1;
                self.scanned = self.start;
            }
        }
        let from = self.scanned;
        let found = memchr::memchr2(b'\n', b'\r', &self.buf[from..]);
        #[cfg(test)]
        {
            self.searched += found.map_or(self.buf.len() - from, |at| at + 1);
        }
        let Some(at) = found else {
            self.scanned = self.buf.len();
            return None;
        };
        let end = from + at;
        let next = match (self.buf[end], self.buf.get(end + 1)) {
            (b'\r', Some(b'\n')) => end + 2,
            (b'\r', None) => {
                // The line has ended either way; only its `\n` may be still to come.
                self.after_cr = true;
                end + 1
            }
            _ => end + 1,
        };
        Some((end, next))
    }
}

/// The event being built from the lines read since the last one.
#[derive(Debug, Default)]
struct PendingEvent {
    /// The last `event` field's value; empty for none.
    event: String,
    /// Each `data` field's value followed by `\n`; empty when there was none.
    data: String,
}

impl PendingEvent {
    /// Takes in one line (without its line end); returns the event an empty line ends.
    fn read_line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        let (field, value) = match line.split_once(':') {
            Some(("", _comment)) => return None,
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            _ => {}
        }
        None
    }

    /// The event so far, if it has data (one without is dropped, as the rules say), and a
    /// fresh start either way.
    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = mem::take(&mut self.event);
        let mut data = mem::take(&mut self.data);
        // No data line, no event; a bare `data:` still counts (it left a `\n`).
        data.pop()?;
        Some(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event `pieces` make, fed in that order, or the error that stopped them.
    fn parse(pieces: &[&[u8]]) -> Result<Vec<SseEvent>, InvalidUtf8> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for piece in pieces {
            parser.feed(piece);
            while let Some(event) = parser.next_event()? {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// The data of every event `text` makes, fed whole.
    fn data(text: &str) -> Vec<String> {
        let events = parse(&[text.as_bytes()]).unwrap();
        events.into_iter().map(|event| event.data).collect()
    }

    fn message(data: &str) -> SseEvent {
        SseEvent {
            event: "message".into(),
            data: data.into(),
        }
    }

    #[test]
    fn every_line_end_ends_a_line() {
        for end in ["\n", "\r\n", "\r"] {
            let text = format!("data: a{end}data: b{end}{end}data: c{end}{end}");
            assert_eq!(data(&text), ["a\nb", "c"], "line end {end:?}");
        }
        assert_eq!(data("data: a\r\n\rdata: b\n\r\n"), ["a", "b"]);
    }

    #[test]
    fn a_crlf_cut_between_pieces_is_one_line_end() {
        let events = parse(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]).unwrap();
        assert_eq!(events, [message("a\nb")]);
        // A `\r` then an empty piece, then the `\n`: still one line end.
        let events = parse(&[b"data: a\r", b"", b"\n\r\n"]).unwrap();
        assert_eq!(events, [message("a")]);
        // A `\r` ending a piece, then a line that is not empty: the `\r` alone ended it.
        let events = parse(&[b"data: a\r", b"data: b\r", b"\r"]).unwrap();
        assert_eq!(events, [message("a\nb")]);
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped_once() {
        assert_eq!(data("\u{feff}data: a\n\n"), ["a"]);
        let events = parse(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]).unwrap();
        assert_eq!(events, [message("a")]);
        // Only at the start of the stream: later it is part of a field's name.
        assert_eq!(data("data: a\n\n\u{feff}data: b\n\n"), ["a"]);
    }

    #[test]
    fn data_lines_are_joined_and_one_space_after_the_colon_dropped() {
        let text = "data: first\ndata:second\ndata:  third\ndata\ndata:\n\n";
        assert_eq!(data(text), ["first\nsecond\n third\n\n"]);
        assert_eq!(data("data: a: b\n\n"), ["a: b"]);
    }

    #[test]
    fn the_event_field_names_the_type_of_its_event_only() {
        let events = parse(&[b"event: error\ndata: x\n\ndata: y\n\n"]).unwrap();
        let error = SseEvent {
            event: "error".into(),
            data: "x".into(),
        };
        assert_eq!(events, [error, message("y")]);
    }

    #[test]
    fn comments_unknown_fields_and_events_without_data_make_nothing() {
        let text = ": keep-alive\n\n:\n\nid: 7\nretry: 10\nevent: ping\n\nfoo: bar\n\ndata: a\n: x\nfoo\n\n";
        assert_eq!(data(text), ["a"]);
        // The type of an event without data does not carry over to the next one.
        let events = parse(&[b"event: error\n\ndata: a\n\n"]).unwrap();
        assert_eq!(events, [message("a")]);
    }

    #[test]
    fn an_unfinished_event_at_the_end_is_not_dispatched() {
        assert!(data("data: a\n").is_empty());
        assert!(data("data: a").is_empty());
    }

    /// A reply of several events, with every kind of line end, a comment and characters of
    /// two, three and four bytes: cut anywhere, it reads the same.
    #[test]
    fn a_reply_cut_at_every_byte_or_fed_byte_by_byte_reads_the_same() {
        let text = "\u{feff}: ping\r\nevent: delta\r\ndata: {\"a\":\"Caf\u{e9}\"}\r\n\r\n\
                    data: \u{20ac}\rdata: \u{1F600}\r\rdata: [DONE]\n\n";
        let whole = parse(&[text.as_bytes()]).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].event, "delta");
        assert_eq!(whole[1], message("\u{20ac}\n\u{1F600}"));
        assert_eq!(whole[2], message("[DONE]"));
        let bytes = text.as_bytes();
        for cut in 1..bytes.len() {
            let events = parse(&[&bytes[..cut], &bytes[cut..]]).unwrap();
            assert_eq!(events, whole, "cut at byte {cut}");
        }
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse(&one_by_one).unwrap(), whole);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_an_error_naming_its_offset() {
        let err = parse(&[b"data: a\n\n", b"data: \xFF\n\n"]).unwrap_err();
        assert_eq!(err, InvalidUtf8 { offset: 15 });
        // A character cut between pieces is whole once its line is.
        assert_eq!(
            parse(&[b"data: \xC3", b"\xA9\n\n"]).unwrap(),
            [message("\u{e9}")]
        );
    }

    /// What made `eventsource-stream` quadratic: one long line in many small pieces.
    #[test]
    fn a_large_event_in_small_pieces_is_read_whole_searching_each_byte_once() {
        let size = 4 << 20;
        let mut body = b"data: ".to_vec();
        body.extend((0..size).map(|i| b'a' + (i % 26) as u8));
        body.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for piece in body.chunks(1024) {
            parser.feed(piece);
            while let Some(event) = parser.next_event().unwrap() {
                events.push(event);
            }
        }
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data.len(), size);
        assert_eq!(events[0].data.as_bytes(), &body[6..6 + size]);
        assert_eq!(events[1], message("[DONE]"));
        assert!(parser.searched <= body.len(), "{}", parser.searched);
        // Nor moved to the front of the buffer (there was nothing before it to drop).
        assert_eq!(parser.dropped, 0);
    }
}
