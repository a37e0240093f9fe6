//! Where `fusion chat` reads lines from: rustyline (line editing, history) on a terminal,
//! plain lines from a pipe.
//!
//! Each read runs on a blocking thread (`spawn_blocking`), which takes the line editor
//! along and hands it back with the line. The chat loop stays free meanwhile: while an
//! approval question waits for its answer it keeps polling the turn, so a call of the same
//! model message that is already running (a slow tool, an MCP server's restart) goes on
//! and is not cut by its timeout because the user took a while to answer.
//!
//! Reading is cancel-safe: a read the loop stops waiting for stays open, and the line it
//! gets is the next one read. That happens when a turn is stopped (Ctrl-C arriving as a
//! signal) while its question is on screen: the line typed after it is the next message.
//! A read is never cut short, so rustyline always leaves the terminal as it found it;
//! only an exit that cannot wait for the read (SIGTERM, SIGHUP, an error while a
//! question waits) puts the terminal back itself ([`Input::release_terminal`]).

use anyhow::{Context, Result, bail};
use rustyline::error::ReadlineError;
use std::io::Write;
use tokio::task::JoinHandle;

/// What a read got.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// A line typed (or piped).
    Line(String),
    /// Ctrl-D, or the end of the input.
    Ended,
    /// Ctrl-C typed at the prompt.
    Interrupted,
}

/// Where lines come from, and the read under way, if any.
pub struct Input {
    /// The terminal or the pipe; `None` while a read holds it on its thread.
    source: Option<Source>,
    /// The read under way, which hands the source back when it ends.
    open: Option<Open>,
    /// The terminal's settings before line editing changed them (raw mode during a read).
    #[cfg(unix)]
    terminal: Option<nix::sys::termios::Termios>,
}

/// A read running on its thread.
struct Open {
    reading: JoinHandle<(Source, Result<Asked>)>,
    /// Whether its prompt is an approval question's (rather than the line prompt).
    question: bool,
}

/// What lines are read from.
enum Source {
    /// A terminal: line editing, with history kept across runs.
    Editor(Box<rustyline::DefaultEditor>),
    /// A pipe or file: one line at a time, no prompt.
    Piped(std::io::Stdin),
}

impl Source {
    /// Shows `prompt` (on a terminal) and reads one line; blocks until it is in.
    fn read(&mut self, prompt: &str) -> Result<Asked> {
        match self {
            Source::Editor(editor) => match editor.readline(prompt) {
                Ok(line) => Ok(Asked::Line(line)),
                Err(ReadlineError::Eof) => Ok(Asked::Ended),
                Err(ReadlineError::Interrupted) => Ok(Asked::Interrupted),
                Err(err) => Err(err).context("cannot read the terminal"),
            },
            Source::Piped(stdin) => {
                let mut line = String::new();
                if stdin.read_line(&mut line).context("cannot read stdin")? == 0 {
                    return Ok(Asked::Ended);
                }
                // As `BufRead::lines` reads it: without `\n` or `\r\n`.
                if line.ends_with('\n') {
                    line.pop();
                    if line.ends_with('\r') {
                        line.pop();
                    }
                }
                Ok(Asked::Line(line))
            }
        }
    }
}

impl Input {
    /// Line editing on the terminal, with the history of earlier runs loaded.
    pub fn editor() -> Result<Self> {
        #[cfg(unix)]
        let terminal = nix::sys::termios::tcgetattr(std::io::stdin()).ok();
        let mut editor = rustyline::DefaultEditor::new().context("cannot start line editing")?;
        if let Some(path) = history_file() {
            // No history yet is the normal first run.
            let _ = editor.load_history(&path);
        }
        Ok(Input {
            source: Some(Source::Editor(Box::new(editor))),
            open: None,
            #[cfg(unix)]
            terminal,
        })
    }

    /// Plain lines from stdin.
    pub fn piped() -> Self {
        Input::from(Source::Piped(std::io::stdin()))
    }

    fn from(source: Source) -> Self {
        Input {
            source: Some(source),
            open: None,
            #[cfg(unix)]
            terminal: None,
        }
    }

    /// The next line, or `None` at end of input (Ctrl-D, or the end of the pipe).
    pub async fn read_line(&mut self) -> Result<Option<String>> {
        if self.open.as_ref().is_some_and(|open| open.question) {
            // The turn that asked was stopped while its question was on screen, and the
            // question's read goes on: what is typed now is the next message.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"> ").and_then(|()| out.flush());
        }
        loop {
            match self.read("> ", false).await? {
                Asked::Line(line) => {
                    if let Some(Source::Editor(editor)) = &mut self.source
                        && !line.trim().is_empty()
                    {
                        let _ = editor.add_history_entry(line.as_str());
                        // Kept at once, so that a chat ended by a signal (whose read is
                        // still open at the next prompt) or killed loses no line of it.
                        if let Some(path) = writable_history_file() {
                            let _ = editor.append_history(&path);
                        }
                    }
                    return Ok(Some(line));
                }
                // Ctrl-C at the prompt abandons the line, as in a shell.
                Asked::Interrupted => continue,
                Asked::Ended => return Ok(None),
            }
        }
    }

    /// Asks `prompt` and returns the answer, kept out of the line history. A pipe has no
    /// prompt: the answer is its next line.
    ///
    /// Cancel-safe: dropped before the answer, the read goes on, and the next `ask` or
    /// [`read_line`](Self::read_line) gets its line.
    pub async fn ask(&mut self, prompt: &str) -> Result<Asked> {
        self.read(prompt, true).await
    }

    /// Whether a read is open on its thread, waiting for a line: the process cannot wait
    /// for that thread to end (see [`release_terminal`](Self::release_terminal)).
    pub fn is_reading(&self) -> bool {
        self.open.is_some()
    }

    /// Whether a question's read is open: its prompt is on screen, waiting for a line.
    pub fn is_asking(&self) -> bool {
        self.open.as_ref().is_some_and(|open| open.question)
    }

    /// Reads a line on a blocking thread, or waits for the read already open.
    async fn read(&mut self, prompt: &str, question: bool) -> Result<Asked> {
        if self.open.is_none() {
            let Some(mut source) = self.source.take() else {
                bail!("the input was lost when an earlier read failed");
            };
            let prompt = prompt.to_owned();
            let reading = tokio::task::spawn_blocking(move || {
                let got = source.read(&prompt);
                (source, got)
            });
            self.open = Some(Open { reading, question });
        }
        let Some(open) = &mut self.open else {
            unreachable!("a read was just opened")
        };
        let finished = (&mut open.reading).await;
        self.open = None;
        match finished {
            Ok((source, got)) => {
                self.source = Some(source);
                got
            }
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => Err(err).context("reading the input stopped"),
        }
    }

    /// Puts the terminal back as it was before line editing, when a read still holds it
    /// (in raw mode, with bracketed paste on): for an exit that cannot wait for the read
    /// to end. A no-op for a pipe, and when the terminal is gone (a hangup).
    pub fn release_terminal(&self) {
        #[cfg(unix)]
        if self.open.is_some()
            && let Some(settings) = &self.terminal
        {
            use nix::sys::termios::{SetArg, tcsetattr};
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, settings);
            // The line editor turns bracketed paste on for a read and off after it; left
            // on, the shell would see pasted text wrapped in `ESC[200~ ... ESC[201~`.
            let mut stdout = std::io::stdout();
            if std::io::IsTerminal::is_terminal(&stdout) {
                let _ = std::io::Write::write_all(&mut stdout, b"\x1b[?2004l");
                let _ = std::io::Write::flush(&mut stdout);
            }
        }
    }

    /// Keeps the terminal's line history for the next run; a no-op for a pipe.
    pub fn save_history(&mut self) {
        if let Some(Source::Editor(editor)) = &mut self.source
            && let Some(path) = writable_history_file()
        {
            // Losing line-editing history is not worth failing the exit for.
            let _ = editor.save_history(&path);
        }
    }
}

fn history_file() -> Option<std::path::PathBuf> {
    dirs::data_dir().map(|dir| dir.join("fusion").join("chat_history.txt"))
}

/// [`history_file`], its directory made if need be (best effort, as the writes are).
fn writable_history_file() -> Option<std::path::PathBuf> {
    let path = history_file()?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    Some(path)
}
