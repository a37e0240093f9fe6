//! The chat's fragments: the input form, the live panel of a running turn, one reported
//! [`Frame`] as the live panel shows it, and the line that replaces the panel when the
//! turn ends.
//!
//! Model text and tool output arrive here as plain strings and leave escaped; while a
//! turn runs its text is shown as written (no markdown), and once it ends the transcript
//! shows the stored messages through the same safe markdown as every other message.
//!
//! An approval card shows the call as `fusion chat` asks about it
//! ([`ApprovalRequest::display`]: names that are not plain words quoted, long values cut)
//! and, whenever that cuts something, the arguments whole beside it, so that what is
//! approved is what was seen. Its form names the call it shows (call id and digest).

use askama::Template;
use fusion::agent::{ApprovalDecision, ApprovalRequest, escape_hidden};

use crate::chat::{Asked, Frame, Outcome, Turn};
use crate::format::Cut;
use crate::html::transcript::CUT_CHARS;

/// How many characters of a starting call's arguments the live panel shows.
const ARGUMENT_CHARS: usize = 200;

/// The chat's input form. `oob` sends it out of band, replacing the one on the page (the
/// answer to a send does, to empty it).
#[derive(Template, Debug)]
#[template(path = "chat_form.html")]
pub(crate) struct ChatForm<'a> {
    id: &'a str,
    oob: bool,
    /// The text the box starts with: the last message the session's turn did not send.
    draft: Option<&'a str>,
    /// The note on `draft`: whether it is known not to be stored, or may yet be.
    draft_note: &'static str,
}

impl<'a> ChatForm<'a> {
    /// The form of session `id`.
    pub(crate) fn new(id: &'a str, oob: bool) -> Self {
        Self {
            id,
            oob,
            draft: None,
            draft_note: "",
        }
    }

    /// The form with `message` in its box, saying it was not sent: the end of the turn
    /// that did not send it is gone once the page is reloaded, and with it the text.
    ///
    /// `settled` is false when the turn stopped waiting for a storage write still under
    /// way ([`Turn::unsettled`]): the write may yet store the message, and sent again
    /// it would be stored twice, so the note says to look first (as the turn's end did).
    pub(crate) fn unsent(mut self, message: Option<&'a str>, settled: bool) -> Self {
        self.draft = message;
        self.draft_note = if settled {
            "Your last message was not sent: it is in the box, to send again."
        } else {
            "Your last message may yet be stored: the storage had not finished writing it \
             when its turn stopped. It is in the box; reload the page before sending it \
             again, to see whether it was stored meanwhile."
        };
        self
    }
}

/// The live panel of a running turn, watching its events; with `form`, also a fresh
/// input form out of band.
#[derive(Template, Debug)]
#[template(path = "chat_live.html")]
pub(crate) struct ChatLive<'a> {
    id: &'a str,
    key: &'a str,
    message: &'a str,
    form: Option<String>,
}

impl<'a> ChatLive<'a> {
    /// The panel of `turn`.
    pub(crate) fn new(turn: &'a Turn, form: Option<String>) -> Self {
        Self {
            id: &turn.session,
            key: &turn.key,
            message: &turn.message,
            form,
        }
    }
}

/// A finished tool call as the live panel shows it.
#[derive(Debug)]
pub(crate) struct StepShown {
    tool: String,
    success: bool,
    millis: u128,
    arguments: Cut,
    observation: Cut,
}

/// An approval question as the live panel shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AskedShown {
    Waiting,
    Approved,
    Denied,
    Unanswered,
}

/// One frame, ready for its template.
#[derive(Debug)]
pub(crate) enum Shown {
    Text(String),
    ToolStarted {
        tool: String,
        arguments: String,
    },
    ToolFinished(StepShown),
    Approval {
        card_id: String,
        href: String,
        /// The call in one line, as the terminal asks about it.
        call: String,
        /// The arguments whole, as indented JSON, when `call` cuts something.
        whole: Option<String>,
        /// What the form posts back to name the call it shows.
        call_id: String,
        digest: String,
        state: AskedShown,
        /// Shown to an answer that came after the question was closed: the card says
        /// the answer changed nothing, and why.
        late: bool,
    },
    Notice(String),
}

/// One frame of a turn.
#[derive(Template, Debug)]
#[template(path = "chat_frame.html")]
pub(crate) struct ChatFrame {
    frame: Shown,
}

impl ChatFrame {
    /// `frame` of `turn`.
    pub(crate) fn new(turn: &Turn, frame: &Frame) -> Self {
        let (id, key) = (&turn.session, &turn.key);
        let frame = match frame {
            Frame::Text(text) => Shown::Text(text.clone()),
            // The call as its approval card would show it ([`whole`]).
            Frame::ToolStarted { tool, arguments } => Shown::ToolStarted {
                tool: escape_hidden(tool),
                arguments: Cut::new(&escape_hidden(arguments), ARGUMENT_CHARS).head,
            },
            Frame::ToolFinished(step) => Shown::ToolFinished(StepShown {
                tool: escape_hidden(&step.tool),
                success: step.success,
                millis: step.duration.as_millis(),
                arguments: Cut::new(&escape_hidden(&step.arguments), CUT_CHARS),
                observation: Cut::new(&step.observation, CUT_CHARS),
            }),
            Frame::Approval {
                question,
                request,
                digest,
                state,
            } => Shown::Approval {
                card_id: format!("turn-{key}-q{question}"),
                href: format!("/sessions/{id}/turns/{key}/approvals/{question}"),
                call: request.display(),
                whole: request.display_is_cut().then(|| whole(request)),
                call_id: request.call_id.clone(),
                digest: digest.clone(),
                state: match state {
                    Asked::Waiting => AskedShown::Waiting,
                    Asked::Answered(ApprovalDecision::Deny) => AskedShown::Denied,
                    Asked::Answered(_) => AskedShown::Approved,
                    Asked::Unanswered => AskedShown::Unanswered,
                },
                late: false,
            },
            Frame::Notice(text) => Shown::Notice(text.clone()),
            Frame::Settling => Shown::Notice(
                "Stopping: waiting for the storage to finish the write under way.".to_string(),
            ),
        };
        Self { frame }
    }

    /// The frame as shown to an answer that came too late: a question's card says the
    /// answer changed nothing (answered first elsewhere, or the turn had ended).
    pub(crate) fn answered_late(mut self) -> Self {
        if let Shown::Approval { late, .. } = &mut self.frame {
            *late = true;
        }
        self
    }
}

/// The arguments of `request` whole, as indented JSON (as `fusion chat`'s "view it
/// whole" prints them), with what a page would hide or reorder escaped
/// ([`escape_hidden`]: a model could otherwise make `"txt.exe"` read as `"exe.txt"`).
fn whole(request: &ApprovalRequest) -> String {
    let arguments = serde_json::to_string_pretty(&request.arguments)
        .unwrap_or_else(|_| request.arguments.to_string());
    escape_hidden(&arguments)
}

/// Why a message a turn's end did not find stored may be stored all the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Doubt {
    /// A storage write of the turn had not ended when the turn stopped waiting for it
    /// ([`Turn::unsettled`]): it may land later.
    WriteUnfinished,
    /// The turn read its session, but the session could not be read since it ended.
    Unread,
}

/// What replaces the live panel when turn `key` ends, with the transcript's newest
/// messages (already rendered) out of band.
#[derive(Template, Debug)]
#[template(path = "chat_end.html")]
pub(crate) struct ChatEnd {
    key: String,
    class: &'static str,
    summary: String,
    messages: Option<String>,
    /// The user's message, when the turn ended without storing it, and its badge.
    unsent: Option<(String, &'static str)>,
}

impl ChatEnd {
    /// The end of turn `key` as `outcome` says, and the messages to show now.
    pub(crate) fn new(key: &str, outcome: &Outcome, messages: Option<String>) -> Self {
        let (class, summary) = match outcome {
            Outcome::Finished(result) => {
                let requests = plural(result.iterations, "request");
                let tokens = result
                    .usage
                    .as_ref()
                    .map(|usage| format!(", {}", plural(usage.total_tokens as usize, "token")))
                    .unwrap_or_default();
                let how = if result.success {
                    "Finished"
                } else {
                    "Stopped at the iteration limit"
                };
                let cut = result
                    .answer_cut_because()
                    .map(|because| format!(" The answer is cut short: {because}."))
                    .unwrap_or_default();
                ("done", format!("{how}: {requests}{tokens}.{cut}"))
            }
            Outcome::Stopped => (
                "stopped",
                "Stopped. What was stored before stays stored; a reply cut off mid-stream is \
                 not stored."
                    .to_string(),
            ),
            Outcome::Failed(error) => ("failed", format!("The turn failed: {error}")),
        };
        Self {
            key: key.to_string(),
            class,
            summary,
            messages,
            unsent: None,
        }
    }

    /// The end showing `message`, the user's, again when the turn did not store it: the
    /// live panel this end replaces was the only place still showing it, so the text
    /// the user typed was lost from the page.
    ///
    /// With a `doubt`, the message was not found stored but may be: the end says so, and
    /// why, rather than that it was not sent (sent again, it would be stored twice).
    pub(crate) fn unsent(mut self, message: Option<&str>, doubt: Option<Doubt>) -> Self {
        if let Some(message) = message {
            // A failure's text most often ends without a full stop ("... HTTP 400").
            if !self.summary.ends_with(['.', '!', '?']) {
                self.summary.push('.');
            }
            let why = match doubt {
                None => "",
                Some(Doubt::WriteUnfinished) => {
                    "the storage had not finished writing it when the turn stopped"
                }
                Some(Doubt::Unread) => "the session could not be read to check",
            };
            let (note, badge) = if why.is_empty() {
                (
                    " Your message was not sent: it is shown above, to copy and send again."
                        .to_string(),
                    "not sent",
                )
            } else {
                (
                    format!(
                        " Your message may not be stored: {why}. It is shown above; reload \
                         the page to see whether it was stored before sending it again."
                    ),
                    "may not be stored",
                )
            };
            self.summary.push_str(&note);
            self.unsent = Some((message.to_string(), badge));
        }
        self
    }

    /// The end shown for a turn this process does not keep: one that ended long ago, or
    /// one of an earlier run of the server, whose page may still show its questions.
    pub(crate) fn forgotten(key: &str) -> Self {
        Self {
            key: key.to_string(),
            class: "failed",
            summary: "This turn is not kept here (it ended long ago, or the server was \
                      restarted since): reload the page to see the session as stored."
                .to_string(),
            messages: None,
            unsent: None,
        }
    }
}

/// `count` and `noun`, plural unless one.
fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use fusion::agent::TaskResult;

    use super::*;

    fn finished(finish_reason: Option<&str>) -> String {
        let result = TaskResult {
            success: true,
            result: "The first three steps are".into(),
            steps: Vec::new(),
            iterations: 1,
            usage: None,
            finish_reason: finish_reason.map(str::to_string),
        };
        ChatEnd::new("k-3", &Outcome::Finished(result), None).summary
    }

    #[test]
    fn the_live_panel_shows_a_call_with_what_would_reorder_or_hide_it_escaped() {
        let turn = Turn::new(1, "k-1".into(), "s".into(), "hi".into(), Default::default());
        let (tool, arguments) = ("delete\u{2066}_file", "{\"path\":\"\u{202e}txt.exe\"}");
        let started = Frame::ToolStarted {
            tool: tool.into(),
            arguments: arguments.into(),
        };
        let finished = Frame::ToolFinished(fusion::agent::Step {
            tool: tool.into(),
            arguments: arguments.into(),
            observation: "deleted".into(),
            success: true,
            iteration: 1,
            duration: std::time::Duration::ZERO,
            approval: None,
        });
        for frame in [started, finished] {
            let html = ChatFrame::new(&turn, &frame).render().unwrap();
            assert!(!html.contains(['\u{202e}', '\u{2066}']), "{html}");
            assert!(html.contains("delete\\u2066_file"), "{html}");
            assert!(html.contains("&#34;\\u202etxt.exe&#34;"), "{html}");
        }
    }

    #[test]
    fn the_end_of_a_turn_says_when_its_answer_is_cut_short() {
        assert_eq!(finished(Some("stop")), "Finished: 1 request.");
        assert_eq!(finished(None), "Finished: 1 request.");
        assert_eq!(
            finished(Some("length")),
            "Finished: 1 request. The answer is cut short: the model reached its output \
             token limit."
        );
        assert!(finished(Some("content_filter")).ends_with("content filter stopped it."));
    }

    /// Found by a review of dcce4d6: the note ran on from a failure's text, which most
    /// often ends without a full stop ("... the database is down Your message was not
    /// sent").
    #[test]
    fn the_note_on_an_unsent_message_starts_a_sentence_of_its_own() {
        let summary = |outcome: Outcome| {
            ChatEnd::new("k-4", &outcome, None)
                .unsent(Some("hi"), None)
                .summary
        };
        assert_eq!(
            summary(Outcome::Failed(
                "cannot open the session: the database is down".into()
            )),
            "The turn failed: cannot open the session: the database is down. Your message \
             was not sent: it is shown above, to copy and send again."
        );
        assert!(
            summary(Outcome::Stopped).contains("not stored. Your message was not sent:"),
            "one full stop"
        );
    }

    /// Found by a review: the box offered after a reload said "not sent" of a message
    /// whose write was still under way when its turn gave up waiting for it (which the
    /// turn's end calls "may not be stored"): sent again, it was stored twice.
    #[test]
    fn a_message_in_the_box_whose_write_had_not_ended_is_not_called_unsent() {
        let html = ChatForm::new("s", false)
            .unsent(Some("hi"), false)
            .render()
            .unwrap();
        assert!(!html.contains("not sent"), "{html}");
        assert!(html.contains("may yet be stored"), "{html}");
        let html = ChatForm::new("s", false)
            .unsent(Some("hi"), true)
            .render()
            .unwrap();
        assert!(html.contains("Your last message was not sent"), "{html}");
    }

    /// A write still under way when the turn gave up waiting may land later: the end
    /// does not say the message was not sent.
    #[test]
    fn a_message_whose_write_had_not_ended_is_not_called_unsent() {
        let end = ChatEnd::new("k-5", &Outcome::Stopped, None)
            .unsent(Some("hi"), Some(Doubt::WriteUnfinished));
        let html = end.render().unwrap();
        assert!(!html.contains("not sent"), "{html}");
        assert!(html.contains("may not be stored"), "{html}");
        assert!(
            html.contains("reload the page to see whether it was stored"),
            "{html}"
        );
    }
}
