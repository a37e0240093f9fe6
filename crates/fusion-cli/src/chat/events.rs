//! What `fusion chat` shows while a turn runs ([`TurnView`]): a spinner until the model's
//! first words, then its text as it arrives, one line per tool call as it starts and as it
//! finishes, and the spinner again while the model is asked once more.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use fusion::agent::{AgentEvent, Approval, Step, TaskResult, escape_hidden};
use indicatif::{ProgressBar, ProgressStyle};

use crate::render;

/// The longest argument or output excerpt shown on one line, in characters.
const EXCERPT_CHARS: usize = 200;

/// One turn on the screen. Fed every [`AgentEvent`] of the turn, then its end.
pub struct TurnView {
    /// Spins (on a terminal) while the model has not started writing.
    spinner: ProgressBar,
    /// Whether the cursor is after text without a line break.
    mid_line: bool,
    /// Whether the last piece of streamed text ended with `\r`, held back until the next
    /// shows whether it began a `\r\n` ([`render::printable`]).
    held_cr: bool,
    /// Whether the reply being shown is text the model wrote in the turn's last request
    /// (then the answer is already on screen when the turn ends).
    answer_shown: bool,
    /// The failed write that said stdout's reader went away (`fusion chat | head -1`): the
    /// turn runs on unseen to its end, so that it is stored whole (its answer, already
    /// paid for, was dropped with it), and [`finish`](Self::finish) returns it, which ends
    /// the chat.
    gone: Option<io::Error>,
}

impl TurnView {
    /// Starts showing a turn: the spinner, while the model reads the request.
    pub fn start() -> Self {
        TurnView {
            spinner: spinner(),
            mid_line: false,
            held_cr: false,
            answer_shown: false,
            gone: None,
        }
    }

    /// Shows `event`; nothing once stdout's reader went away.
    pub fn show(&mut self, event: &AgentEvent) -> io::Result<()> {
        if self.gone.is_some() {
            return Ok(());
        }
        match self.show_now(event) {
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                self.gone = Some(err);
                Ok(())
            }
            shown => shown,
        }
    }

    /// The error that ends the chat when stdout's reader went away during the turn.
    fn went_away(&mut self) -> io::Result<()> {
        self.gone.take().map_or(Ok(()), Err)
    }

    fn show_now(&mut self, event: &AgentEvent) -> io::Result<()> {
        match event {
            AgentEvent::TextDelta { text, .. } => {
                self.spinner.finish_and_clear();
                let mut shown = String::new();
                if std::mem::take(&mut self.held_cr) && !text.starts_with('\n') {
                    shown.push_str("\\r");
                }
                let body = text.strip_suffix('\r');
                self.held_cr = body.is_some();
                shown.push_str(&render::printable(body.unwrap_or(text)));
                let mut out = render::stdout();
                out.write_all(shown.as_bytes())?;
                out.flush()?;
                self.mid_line = !text.ends_with('\n');
                self.answer_shown = true;
            }
            AgentEvent::ToolCallStarted {
                tool, arguments, ..
            } => {
                self.answer_shown = false;
                // What ran is shown as it is: a bidi override or a zero-width character
                // in a name or an argument could make it read as another call.
                let line = format!(
                    "  -> {}({})",
                    escape_hidden(&render::printable(tool)),
                    escape_hidden(&render::shorten(arguments, EXCERPT_CHARS))
                );
                self.line(&line)?;
            }
            AgentEvent::ToolCallFinished(step) => self.line(&result_line(step))?,
            AgentEvent::IterationFinished { tool_calls, .. } if *tool_calls > 0 => {
                // The results go back to the model, which takes a while to answer again.
                self.spinner.finish_and_clear();
                self.spinner = spinner();
            }
            AgentEvent::SwitchedToTextReact { .. } => self.line(
                "  (the model does not support native tool calling; this session now \
                 describes its tools in the prompt instead)",
            )?,
            _ => {}
        }
        Ok(())
    }

    /// The turn is over: ends the streamed answer's line, or prints the result when no
    /// answer was streamed (the iteration limit stopped the turn).
    pub fn finish(mut self, result: &TaskResult) -> io::Result<()> {
        self.spinner.finish_and_clear();
        self.went_away()?;
        self.end_line()?;
        let mut out = render::stdout();
        if !(result.success && self.answer_shown) {
            writeln!(out, "{}", render::printable(&result.result))?;
        }
        if !result.success {
            writeln!(
                out,
                "(stopped after {} without a final answer)",
                render::plural(result.iterations, "model request")
            )?;
        }
        if let Some(because) = result.answer_cut_because() {
            writeln!(out, "(the answer is cut short: {because})")?;
        }
        out.flush()
    }

    /// The turn was interrupted or failed: clears the spinner and ends any partial line,
    /// so what follows starts on a line of its own.
    pub fn stop(mut self) -> io::Result<()> {
        self.spinner.finish_and_clear();
        // Once stdout's reader went away, what stopped the turn says how the chat goes on
        // (the turn's error, reported; Ctrl-C's line, which then fails).
        if self.gone.is_some() {
            return Ok(());
        }
        self.end_line()
    }

    /// Makes room for a question: clears the spinner and ends any partial line. The
    /// spinner comes back when the model is asked again. Once stdout's reader went away,
    /// returns that error: a question nobody sees is not asked, and the turn stops there
    /// (what it stored stays stored).
    pub fn pause(&mut self) -> io::Result<()> {
        self.spinner.finish_and_clear();
        self.went_away()?;
        self.end_line()
    }

    /// Prints `line` on a line of its own, above the spinner.
    fn line(&mut self, line: &str) -> io::Result<()> {
        self.end_line()?;
        self.spinner.suspend(|| render::say(line))
    }

    /// Ends a line of streamed text.
    fn end_line(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.held_cr) {
            render::stdout().write_all(b"\\r")?;
        }
        if self.mid_line {
            self.mid_line = false;
            let mut out = render::stdout();
            writeln!(out)?;
            out.flush()?;
        }
        Ok(())
    }
}

/// `     <- first line of the output (+N lines)`, marked when the call failed.
fn result_line(step: &Step) -> String {
    let mut output = step.observation.lines();
    if matches!(
        step.approval,
        Some(Approval::Approved | Approval::ApprovedAlways)
    ) {
        output.next(); // the approval note the model reads; the user gave it
    }
    // Controls as the rest of the chat shows them (`\x1b`), then what hides or reorders.
    let first = escape_hidden(&render::shorten(output.next().unwrap_or(""), EXCERPT_CHARS));
    let more = output.count();
    let more = if more > 0 {
        format!(" (+{more} lines)")
    } else {
        String::new()
    };
    let failed = match step.approval {
        Some(Approval::Declined | Approval::Refused) => " [declined]",
        Some(Approval::Failed) => " [not approved: asking failed]",
        _ if !step.success => " [failed]",
        _ => "",
    };
    format!("     <- {first}{more}{failed}")
}

/// A spinner (on stderr) while the model thinks, only when a person is watching: typing
/// on a terminal, with the spinner's own stream on one.
pub fn spinner() -> ProgressBar {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        spinner.set_style(style);
    }
    spinner.set_message("thinking…");
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}
