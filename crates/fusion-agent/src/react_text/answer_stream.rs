//! Streaming the answer of a text ReAct reply while the model writes it.
//!
//! A text-mode reply mixes reasoning (`Thought:`), tool requests (`Action:`) and the answer
//! (`Final Answer:`); only the answer is for the user. [`FinalAnswerStream`] is fed the
//! reply piece by piece and gives back the text that belongs to the answer as soon as that
//! is certain, using the same label reading as [`parse_react`](super::parse_react): nothing
//! before a `Final Answer:` label, nothing when an `Action:` comes first, and nothing after
//! the next label. A line that might still turn out to be a label (`Obs`…) is held until it
//! cannot be. The complete reply is still parsed as a whole afterwards; that parse, not the
//! stream, decides what the turn does, so the stream errs on the side of showing less.
//! A run of `*` at the end of what was given out is held back too ([`BoldTail`]): the
//! parse drops the dangling `**` of a whole bolded `**Final Answer: …**` line, and the
//! stream must not have shown it.

use super::parse::{COLONS, Label, match_label};

/// A continuation line this long without a colon cannot be a label any more.
const LONGEST_LABEL_PREFIX: usize = 40;

/// An unfinished line up to this long is read for a label whenever it grows; a longer
/// one only once it has doubled since it was last read (and always once it ends).
/// Reading a line is linear in it (decoration before a label, or blanks after one, may
/// run on), so reading it at every piece made a long line quadratic: a reply of a
/// million `-` took minutes. Ordinary lines are shorter and stream as they arrive.
const SHORT_LINE: usize = 256;

/// Where in the reply the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No label that decides yet.
    Searching,
    /// Inside the answer. `on_label_line` while the current line is the one holding the
    /// `Final Answer:` label, whose text after the label belongs to the answer.
    Answering { on_label_line: bool },
    /// An action came first or the answer ended: nothing more is answer text.
    Over,
}

/// Picks the `Final Answer:` text out of a text ReAct reply as it streams in.
#[derive(Debug)]
pub(crate) struct FinalAnswerStream {
    state: State,
    /// The current line, not yet ended by a line break.
    line: String,
    /// Whether `line` starts inside a code fence (labels there do not count).
    in_fence: bool,
    /// How much of `line` was given out; `None` when nothing of it was (not even the line
    /// break before it).
    sent_in_line: Option<usize>,
    /// Blank answer lines seen since the last text given out, owed as line breaks.
    blank_lines: usize,
    /// Whether any answer text was given out.
    sent_any: bool,
    /// How long the current line was when it was last read for a label, unfinished.
    read_at: usize,
    /// The answer text not given out yet because it may be a dangling `**`.
    tail: BoldTail,
    /// Bytes of lines read for a label, so a test can check the work stays linear.
    #[cfg(test)]
    label_work: std::cell::Cell<usize>,
}

impl FinalAnswerStream {
    pub(crate) fn new() -> Self {
        Self {
            state: State::Searching,
            line: String::new(),
            in_fence: false,
            sent_in_line: None,
            blank_lines: 0,
            sent_any: false,
            read_at: 0,
            tail: BoldTail::default(),
            #[cfg(test)]
            label_work: std::cell::Cell::new(0),
        }
    }

    /// Whether any answer text was given out.
    pub(crate) fn sent_any(&self) -> bool {
        self.tail.gave_any
    }

    /// Feeds the next piece of the reply; returns the answer text it completes (often
    /// empty).
    pub(crate) fn push(&mut self, piece: &str) -> String {
        let mut answer = String::new();
        for part in piece.split_inclusive('\n') {
            match part.strip_suffix('\n') {
                Some(rest) => {
                    self.line.push_str(rest);
                    self.end_line(&mut answer);
                }
                None => {
                    self.line.push_str(part);
                    self.continue_line(&mut answer);
                }
            }
        }
        let mut out = self.tail.give(&answer);
        if self.state == State::Over {
            out.push_str(&self.tail.settle());
        }
        out
    }

    /// The reply is complete: returns the answer text its last line still held.
    pub(crate) fn finish(&mut self) -> String {
        let mut answer = String::new();
        if !self.line.is_empty() {
            self.end_line(&mut answer);
        }
        let mut out = self.tail.give(&answer);
        out.push_str(&self.tail.settle());
        out
    }

    /// The label at the start of the current line, unless it is inside a code fence.
    fn label(&self) -> Option<(Label, usize)> {
        if self.in_fence {
            return None;
        }
        let line = self.line.trim_end_matches('\r');
        #[cfg(test)]
        self.label_work.set(self.label_work.get() + line.len());
        match_label(line).map(|(label, rest)| (label, line.len() - rest.len()))
    }

    /// Whether the unfinished line is worth reading for a label again (see [`SHORT_LINE`]).
    fn worth_reading(&mut self) -> bool {
        let len = self.line.len();
        if len <= SHORT_LINE || len >= 2 * self.read_at {
            self.read_at = len;
            true
        } else {
            false
        }
    }

    /// The current line ended (with a line break, or with the reply).
    fn end_line(&mut self, out: &mut String) {
        match self.state {
            State::Searching => match self.label() {
                Some((Label::FinalAnswer, start)) => {
                    self.state = State::Answering {
                        on_label_line: true,
                    };
                    self.send(out, start);
                }
                Some((Label::Action | Label::ActionInput, _)) => self.state = State::Over,
                _ => {}
            },
            State::Answering { on_label_line } => {
                let start = if on_label_line {
                    self.label().map_or(0, |(_, start)| start)
                } else {
                    0
                };
                if !on_label_line && self.sent_in_line.is_none() && self.label().is_some() {
                    self.state = State::Over;
                } else {
                    let before = self.sent_in_line;
                    self.send(out, start);
                    let blank = before.is_none() && self.sent_in_line.is_none();
                    if blank && !on_label_line && self.sent_any {
                        self.blank_lines += 1;
                    }
                }
            }
            State::Over => {}
        }
        if self.line.matches("```").count() % 2 == 1 {
            self.in_fence = !self.in_fence;
        }
        if let State::Answering { .. } = self.state {
            self.state = State::Answering {
                on_label_line: false,
            };
        }
        self.line.clear();
        self.sent_in_line = None;
        self.read_at = 0;
    }

    /// More of the current line arrived; gives out what is certain to be answer text.
    fn continue_line(&mut self, out: &mut String) {
        match self.state {
            State::Searching => {
                if self.worth_reading()
                    && let Some((Label::FinalAnswer, start)) = self.label()
                {
                    self.state = State::Answering {
                        on_label_line: true,
                    };
                    self.send(out, start);
                }
            }
            State::Answering {
                on_label_line: true,
            } => {
                if self.sent_in_line.is_some() {
                    // The answer began: where is settled, and the rest follows it.
                    self.send(out, 0);
                } else if self.worth_reading() {
                    // Recomputed: decoration after the colon (`**`) may arrive late.
                    let start = self.label().map_or(0, |(_, start)| start);
                    self.send(out, start);
                }
            }
            State::Answering {
                on_label_line: false,
            } => {
                if self.sent_in_line.is_some() || self.worth_reading() && !self.may_become_label() {
                    self.send(out, 0);
                }
            }
            State::Over => {}
        }
    }

    /// Whether the current, incomplete line could still turn out to start with a label.
    fn may_become_label(&self) -> bool {
        if self.in_fence {
            return false;
        }
        if self.line.contains(COLONS) {
            return self.label().is_some();
        }
        self.line.len() < LONGEST_LABEL_PREFIX
    }

    /// Gives out the current line from byte `start` (or from where it was left), with the
    /// line breaks owed before it when it is a new line of the answer.
    fn send(&mut self, out: &mut String, start: usize) {
        let line = self.line.trim_end_matches('\r');
        let from = self.sent_in_line.map_or(start, |sent| sent.max(start));
        let text = line.get(from..).unwrap_or_default();
        if text.is_empty() {
            return;
        }
        if self.sent_in_line.is_none() && self.sent_any {
            let on_label_line = matches!(
                self.state,
                State::Answering {
                    on_label_line: true
                }
            );
            if !on_label_line {
                for _ in 0..=self.blank_lines {
                    out.push('\n');
                }
            }
        }
        let text = if self.sent_any {
            text
        } else {
            text.trim_start()
        };
        if text.is_empty() {
            return;
        }
        out.push_str(text);
        self.blank_lines = 0;
        self.sent_in_line = Some(line.len());
        self.sent_any = true;
    }
}

/// Holds back a run of `*` (with the blanks around it) at the end of the answer text, which
/// may be the dangling `**` the parse drops (`strip_unbalanced_bold`): a `**` that leaves
/// the answer's count of `**` odd, at its very end. Held stars go out with the next text;
/// when the answer ends, they go out unless they are that `**`. The held text is kept as
/// its parts, so a long run (a model stuck repeating `*`) is not read again at every piece.
#[derive(Debug, Default)]
struct BoldTail {
    /// The blanks before the held run of `*`.
    before: String,
    /// How many `*` are held; 0 when nothing is.
    stars: usize,
    /// The blanks after the held run.
    after: String,
    /// Whether the text given out holds an odd number of `**` (counted as `str::matches`
    /// counts, left to right; a run of stars is never split between two pieces given
    /// out, since a piece never ends in one, so the pieces' counts add up).
    odd: bool,
    gave_any: bool,
    /// Bytes read, so a test can check the work stays linear.
    #[cfg(test)]
    work: usize,
}

impl BoldTail {
    /// Takes more answer text; returns what can be given out now: all of the held text
    /// and `text` but a run of `*` at their end, with the blanks around it.
    fn give(&mut self, text: &str) -> String {
        #[cfg(test)]
        {
            self.work += text.len();
        }
        let body = text.trim_end();
        let rest = &text[body.len()..];
        if body.is_empty() {
            // Blanks only: after the held run, or out at once when none is held.
            if self.stars == 0 {
                return self.emit(text.to_owned());
            }
            self.after.push_str(text);
            return String::new();
        }
        if !body.ends_with('*') {
            let mut out = self.take();
            out.push_str(text);
            return self.emit(out);
        }
        let run_start = body.trim_end_matches('*').len();
        let blanks_start = body[..run_start].trim_end().len();
        let out = if blanks_start > 0 {
            // The run and the blanks before it begin in `text`: what precedes them goes.
            let mut out = self.take();
            out.push_str(&text[..blanks_start]);
            self.before = text[blanks_start..run_start].to_owned();
            out
        } else if run_start == 0 && self.after.is_empty() {
            // `text` starts with stars that continue the held run (or starts one).
            self.stars += body.len();
            self.after = rest.to_owned();
            return String::new();
        } else {
            // Blanks, then a new run: the held run goes, its blanks now before the new one.
            let mut out = std::mem::take(&mut self.before);
            out.extend(std::iter::repeat_n('*', self.stars));
            self.before = std::mem::take(&mut self.after);
            self.before.push_str(&text[..run_start]);
            out
        };
        self.stars = body.len() - run_start;
        self.after = rest.to_owned();
        self.emit(out)
    }

    /// The held text, no longer held.
    fn take(&mut self) -> String {
        let mut held = std::mem::take(&mut self.before);
        held.extend(std::iter::repeat_n('*', std::mem::take(&mut self.stars)));
        held.push_str(&std::mem::take(&mut self.after));
        held
    }

    /// The answer ended: returns the held text, less a dangling `**`.
    fn settle(&mut self) -> String {
        let stars = self.stars;
        let odd = self.odd ^ (stars / 2 % 2 == 1);
        let mut held = self.take();
        if odd && stars >= 2 {
            // Less the `**` and the blanks after it, and before it if nothing is left.
            held.truncate(held.trim_end().len() - 2);
            held.truncate(held.trim_end().len());
        }
        self.emit(held)
    }

    fn emit(&mut self, text: String) -> String {
        #[cfg(test)]
        {
            self.work += text.len();
        }
        self.odd ^= text.matches("**").count() % 2 == 1;
        self.gave_any |= !text.is_empty();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::react_text::{ReactStep, parse_react};

    /// Streams `reply` cut into `size`-byte pieces (on char boundaries).
    fn stream(reply: &str, size: usize) -> String {
        let mut streamer = FinalAnswerStream::new();
        let mut out = String::new();
        let mut rest = reply;
        while !rest.is_empty() {
            let mut cut = size.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            out.push_str(&streamer.push(&rest[..cut]));
            rest = &rest[cut..];
        }
        out.push_str(&streamer.finish());
        out
    }

    fn answer_of(reply: &str) -> Option<String> {
        match parse_react(reply) {
            ReactStep::FinalAnswer { answer, .. } => Some(answer),
            _ => None,
        }
    }

    #[test]
    fn the_streamed_answer_is_the_parsed_answer_at_every_piece_size() {
        let replies = [
            "Thought: easy.\nFinal Answer: Paris is the capital.",
            "Final Answer: line one\nline two\n\nline four",
            "I know this.\n**Final Answer:** It is 42.\n",
            "Final Answer:\n  Here are the files: a.txt, b.txt\n",
            "Final Answer: use this:\n```\nAction: not a label in a fence\n```\ndone",
            "Final Answer: café — naïve ünïcödé\r\nsecond line\r\n",
            // The parse drops the dangling `**` of a bolded line, and keeps balanced ones.
            "**Final Answer: all good**",
            "**Final Answer: all good** \n",
            "**Final Answer: two\nlines**\nObservation: invented",
            "Final Answer: It is **done**.",
            "Final Answer: It is **done**",
            "Final Answer: a **b** c***",
            "Final Answer: a * b **\n\nmore **bold** text",
        ];
        for reply in replies {
            let expected = answer_of(reply).expect(reply);
            for size in 1..=reply.len() {
                assert_eq!(
                    stream(reply, size).trim_end(),
                    expected,
                    "{reply:?} in {size}-byte pieces"
                );
            }
        }
    }

    #[test]
    fn an_answer_of_a_dangling_bold_mark_alone_shows_nothing() {
        let reply = "Final Answer: **";
        for size in 1..=reply.len() {
            assert_eq!(stream(reply, size), "", "{size}-byte pieces");
        }
    }

    #[test]
    fn a_long_line_is_read_for_labels_in_linear_time() {
        // Found by fuzzing: every piece of an unfinished line read the line again for a
        // label, through its whole run of decoration or blanks, so a reply of a million
        // `-` (a model stuck repeating one) took minutes to stream.
        let dashes = "-".repeat(1 << 16);
        let blanks = " ".repeat(1 << 16);
        for reply in [
            format!("{dashes}\nFinal Answer: done"),
            format!("{dashes}Final Answer: done"),
            format!("Final Answer:{blanks}done"),
            format!("Final Answer: {dashes}"),
            format!("Thought: {blanks}x\nFinal Answer: a\n{blanks}b"),
        ] {
            let mut streamer = FinalAnswerStream::new();
            let mut streamed = String::new();
            for piece in reply.as_bytes().chunks(8) {
                streamed.push_str(&streamer.push(std::str::from_utf8(piece).unwrap()));
            }
            streamed.push_str(&streamer.finish());
            assert_eq!(Some(streamed.trim_end()), answer_of(&reply).as_deref());
            let read = streamer.label_work.get();
            assert!(
                read <= 8 * reply.len(),
                "{read} bytes read for labels in a reply of {}",
                reply.len()
            );
        }
    }

    #[test]
    fn a_long_run_of_stars_is_held_in_linear_time() {
        // A model stuck repeating `*`: the held run was read again, and copied, at every
        // piece, so a reply of 2^18 stars took a minute and a half to stream.
        let stars = "*".repeat(1 << 16);
        for reply in [
            format!("Final Answer: {stars}"),
            format!("Final Answer: a {stars}"),
            format!("Final Answer: a\n{stars}  \n  \n"),
            format!("Final Answer: a {}", "* ".repeat(1 << 15)),
            format!("Final Answer: a ** {}", " ".repeat(1 << 16)),
        ] {
            let mut streamer = FinalAnswerStream::new();
            let mut streamed = String::new();
            for piece in reply.as_bytes().chunks(8) {
                streamed.push_str(&streamer.push(std::str::from_utf8(piece).unwrap()));
            }
            streamed.push_str(&streamer.finish());
            assert_eq!(Some(streamed.trim_end()), answer_of(&reply).as_deref());
            let read = streamer.tail.work;
            assert!(
                read <= 4 * reply.len(),
                "{read} bytes read for {} given",
                reply.len()
            );
        }
    }

    #[test]
    fn thoughts_actions_and_invented_observations_are_never_answer_text() {
        for reply in [
            "Thought: I should look.\nAction: list_directory\nAction Input: {}",
            "Action: read_file\nAction Input: {\"path\": \"a\"}\nFinal Answer: too early",
            "Thought: hmm\nObservation: nothing",
        ] {
            for size in 1..=reply.len() {
                assert_eq!(stream(reply, size), "", "{reply:?} in {size}-byte pieces");
            }
        }
    }

    #[test]
    fn the_answer_ends_at_the_next_label() {
        let reply = "Final Answer: the answer\nObservation: invented by the model";
        assert_eq!(answer_of(reply).as_deref(), Some("the answer"));
        for size in 1..=reply.len() {
            assert_eq!(stream(reply, size).trim_end(), "the answer");
        }
    }

    #[test]
    fn answer_text_is_given_out_before_the_reply_is_complete() {
        let mut streamer = FinalAnswerStream::new();
        assert_eq!(streamer.push("Thought: ok\nFinal Ans"), "");
        assert_eq!(streamer.push("wer: The files"), "The files");
        assert_eq!(streamer.push(" are here.\nThey"), " are here.");
        // "They" could still become "They:"-less prose or a label; a longer line cannot.
        assert_eq!(
            streamer.push(" were all found in the project directory"),
            "\nThey were all found in the project directory"
        );
        assert!(streamer.sent_any());
    }

    #[test]
    fn generated_replies_stream_their_parsed_answer_or_nothing() {
        // Property check over replies built from the pieces that decide a stream (labels,
        // bold marks, stars, blanks, line breaks of both kinds, fences) at several piece
        // sizes: what the stream gives out is the stored answer, or nothing (then the
        // turn shows the stored answer whole, as `sent_any` says); never other text.
        let tokens = [
            "Final Answer:",
            "**Final Answer:**",
            "Final Answer\u{ff1a}",
            "**",
            "*",
            " ",
            "\t",
            "\n",
            "\r\n",
            "\n\n",
            "a",
            "b.",
            ":",
            "_",
            "```",
            "Observation: x",
            "Action: t",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        for _ in 0..20_000 {
            let reply: String = (0..=next(8)).map(|_| tokens[next(tokens.len())]).collect();
            let expected = answer_of(&reply);
            for size in [1, 2, 3, 5, 8, reply.len()] {
                let mut streamer = FinalAnswerStream::new();
                let mut got = String::new();
                // Pieces of `size` bytes, longer where a character would be cut.
                let mut rest = reply.as_str();
                while !rest.is_empty() {
                    let mut cut = size.min(rest.len());
                    while !rest.is_char_boundary(cut) {
                        cut += 1;
                    }
                    got.push_str(&streamer.push(&rest[..cut]));
                    rest = &rest[cut..];
                }
                got.push_str(&streamer.finish());
                assert_eq!(streamer.sent_any(), !got.is_empty(), "{reply:?} by {size}");
                if !got.is_empty() {
                    assert_eq!(
                        Some(got.trim_end()),
                        expected.as_deref(),
                        "{reply:?} by {size}"
                    );
                }
            }
        }
    }
}
