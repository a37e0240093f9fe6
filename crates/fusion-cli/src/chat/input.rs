//! Where `fusion chat` reads lines from: rustyline (line editing, history) on a terminal,
//! plain lines from a pipe.

use anyhow::{Context, Result};
use rustyline::error::ReadlineError;

/// What [`Input::ask`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// A line typed (or piped).
    Line(String),
    /// Ctrl-D, or the end of the input, in place of an answer.
    Ended,
    /// Ctrl-C in place of an answer.
    Interrupted,
}

/// Where lines come from: rustyline on a terminal, plain lines from a pipe.
pub enum Input {
    /// A terminal: line editing, with history kept across runs.
    Editor(Box<rustyline::DefaultEditor>),
    /// A pipe or file: one line at a time, no prompt.
    Piped(std::io::Lines<std::io::StdinLock<'static>>),
}

impl Input {
    /// Line editing on the terminal, with the history of earlier runs loaded.
    pub fn editor() -> Result<Self> {
        let mut editor = rustyline::DefaultEditor::new().context("cannot start line editing")?;
        if let Some(path) = history_file() {
            // No history yet is the normal first run.
            let _ = editor.load_history(&path);
        }
        Ok(Input::Editor(Box::new(editor)))
    }

    /// Plain lines from stdin.
    pub fn piped() -> Self {
        Input::Piped(std::io::stdin().lines())
    }

    /// The next line, or `None` at end of input (Ctrl-D, or the end of the pipe).
    ///
    /// Reading blocks; `block_in_place` keeps the runtime's other workers (and the
    /// spinner's and storage's tasks) free meanwhile.
    pub fn read_line(&mut self) -> Result<Option<String>> {
        match self {
            Input::Piped(lines) => tokio::task::block_in_place(|| lines.next())
                .transpose()
                .context("cannot read stdin"),
            Input::Editor(editor) => loop {
                match tokio::task::block_in_place(|| editor.readline("> ")) {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        return Ok(Some(line));
                    }
                    // Ctrl-C at the prompt abandons the line, as in a shell.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => return Ok(None),
                    Err(err) => return Err(err).context("cannot read the terminal"),
                }
            },
        }
    }

    /// Asks `prompt` on the terminal and returns the answer, kept out of the line history.
    pub fn ask(&mut self, prompt: &str) -> Result<Asked> {
        match self {
            // A pipe has no prompt: the answer is its next line.
            Input::Piped(_) => Ok(self.read_line()?.map_or(Asked::Ended, Asked::Line)),
            Input::Editor(editor) => {
                match tokio::task::block_in_place(|| editor.readline(prompt)) {
                    Ok(line) => Ok(Asked::Line(line)),
                    Err(ReadlineError::Eof) => Ok(Asked::Ended),
                    Err(ReadlineError::Interrupted) => Ok(Asked::Interrupted),
                    Err(err) => Err(err).context("cannot read the terminal"),
                }
            }
        }
    }

    /// Keeps the terminal's line history for the next run; a no-op for a pipe.
    pub fn save_history(&mut self) {
        if let (Input::Editor(editor), Some(path)) = (self, history_file()) {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // Losing line-editing history is not worth failing the exit for.
            let _ = editor.save_history(&path);
        }
    }
}

fn history_file() -> Option<std::path::PathBuf> {
    dirs::data_dir().map(|dir| dir.join("fusion").join("chat_history.txt"))
}
