//! `fusion chat`: the interactive REPL over one persistent agent session.
//!
//! On a terminal it uses rustyline (line editing, history) and shows a spinner while the
//! model thinks; when stdin is a pipe it reads plain lines and prints only answers, so a
//! conversation can be scripted (`printf 'hi\n/history\n' | fusion chat`). In a script the
//! first failing turn ends the run with a non-zero exit; on a terminal it is reported and
//! the conversation goes on.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use fusion::SessionId;
use fusion::agent::AgentEvent;
use fusion::api::session::{AgentSession, SessionBuilder, Step, StorageType};
use fusion::storage::ConversationStorage;
use indicatif::{ProgressBar, ProgressStyle};
use rustyline::error::ReadlineError;

use crate::{ChatArgs, render, sessions};

const HELP: &str = "\
commands:
  /help          show this help
  /history       show how many messages the session holds
  /sessions      list the sessions in this storage
  /undo          remove your last message and everything the agent did after it
  /summarize [N] summarize all but the last N messages for the model (default 10; stored history is kept)
  /clear         delete this session's whole history
  /exit          leave (Ctrl-D works too)
anything else is sent to the agent";

/// The session and what the commands need besides it.
struct Chat {
    session: AgentSession,
    storage: Arc<dyn ConversationStorage>,
    id: String,
    interactive: bool,
    /// The spinner of the running turn, shared with the event observer so tool-call
    /// lines print above it.
    spinner: Arc<Mutex<ProgressBar>>,
}

/// Runs `fusion chat`.
pub async fn run(storage_type: StorageType, args: ChatArgs) -> Result<ExitCode> {
    if !llm_configured() {
        eprintln!("{NO_LLM}");
        return Ok(ExitCode::FAILURE);
    }
    SessionId::validate(&args.session)?;
    let storage = sessions::open(&storage_type).await?;
    // The builder reads OPENAI_BASE_URL, OPENAI_API_KEY and FUSION_MODEL itself.
    let current_spinner = Arc::new(Mutex::new(ProgressBar::hidden()));
    let mut builder = SessionBuilder::new(args.session.clone())
        .storage(storage.clone())
        .on_event(show_event(current_spinner.clone()));
    if let Some(prompt) = &args.system {
        builder = builder.system_prompt(prompt.clone());
    }
    if let Some(iterations) = args.max_iterations {
        builder = builder.max_iterations(iterations as usize);
    }
    let session = builder
        .build()
        .await
        .with_context(|| format!("cannot open session \"{}\"", args.session))?;

    let interactive = std::io::stdin().is_terminal();
    let mut chat = Chat {
        session,
        storage,
        id: args.session,
        interactive,
        spinner: current_spinner,
    };
    let mut input = if interactive {
        let model = std::env::var("FUSION_MODEL").map_or(String::new(), |m| format!(", model {m}"));
        println!(
            "fusion chat: session {} on {storage_type}{model} ({})",
            chat.id,
            render::plural(chat.session.message_count(), "message"),
        );
        println!("type /help for commands, /exit to leave");
        Input::editor()?
    } else {
        Input::Piped(std::io::stdin().lines())
    };

    while let Some(line) = input.read_line()? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let outcome = match line.strip_prefix('/') {
            Some(command) => chat.command(command).await,
            None => chat.turn(line).await,
        };
        match outcome {
            Ok(Flow::Continue) => {}
            Ok(Flow::Exit) => break,
            // On a terminal the user can react; in a script, carrying on would send later
            // lines into a conversation that is not the one the script expects.
            Err(err) if interactive => eprintln!("error: {}", crate::one_line(&err)),
            Err(err) => return Err(err),
        }
    }
    input.save_history();
    Ok(ExitCode::SUCCESS)
}

enum Flow {
    Continue,
    Exit,
}

impl Chat {
    /// One user message: run the agent, show the tool calls it made, then its answer.
    async fn turn(&mut self, message: &str) -> Result<Flow> {
        let spinner = spinner();
        *self.spinner.lock().unwrap_or_else(|e| e.into_inner()) = spinner.clone();
        let result = tokio::select! {
            result = self.session.send_message(message) => result,
            _ = tokio::signal::ctrl_c(), if self.interactive => {
                spinner.finish_and_clear();
                // Whatever the agent stored before the interrupt stays stored; reloading
                // makes the in-memory history agree with it.
                self.session.reload().await?;
                println!("(interrupted)");
                return Ok(Flow::Continue);
            }
        };
        spinner.finish_and_clear();
        let result = result?;

        // The tool calls were shown as they ran (see `show_event`).
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", result.result)?;
        if !result.success {
            writeln!(
                out,
                "(stopped after {} without a final answer)",
                render::plural(result.iterations, "model request")
            )?;
        }
        out.flush()?;
        Ok(Flow::Continue)
    }

    /// A `/command`.
    async fn command(&mut self, command: &str) -> Result<Flow> {
        let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
        let arg = arg.trim();
        let id = &self.id;
        match name {
            "exit" | "quit" => return Ok(Flow::Exit),
            "help" => println!("{HELP}"),
            "history" => println!(
                "{} in session {id}",
                render::plural(self.session.message_count(), "message")
            ),
            "clear" => {
                self.session.clear_history().await?;
                println!("cleared session {id}");
            }
            "sessions" => list_sessions(self.storage.as_ref(), id).await?,
            "undo" => self.undo().await?,
            "summarize" => {
                let keep = if arg.is_empty() {
                    10
                } else {
                    arg.parse::<usize>()
                        .with_context(|| format!("/summarize takes a message count, not {arg:?}"))?
                };
                self.summarize(keep).await?;
            }
            other => anyhow::bail!("unknown command /{other}; /help lists the commands"),
        }
        Ok(Flow::Continue)
    }

    /// Removes the last user message and everything after it, from storage too.
    async fn undo(&mut self) -> Result<()> {
        match self.session.undo_last_turn().await? {
            0 => println!("nothing to undo"),
            removed => println!(
                "undid your last message ({} removed)",
                render::plural(removed, "message")
            ),
        }
        Ok(())
    }

    /// Condenses all but the last `keep` visible messages into a stored summary, which
    /// the model then sees instead of them; the stored history keeps every message.
    async fn summarize(&mut self, keep: usize) -> Result<()> {
        let spinner = spinner();
        let report = self.session.summarize_history(keep).await;
        spinner.finish_and_clear();
        match report? {
            None => println!(
                "nothing to summarize: the model already sees at most {keep} messages besides any summary"
            ),
            Some(report) => {
                println!(
                    "summarized {} for the model (stored history is kept):",
                    render::plural(report.summarized, "message")
                );
                println!("{}", report.summary);
            }
        }
        Ok(())
    }
}

/// The observer that prints each tool call as it starts (`  -> tool(args)`) and its
/// output as it finishes (`     <- first line`), above the turn's spinner.
fn show_event(spinner: Arc<Mutex<ProgressBar>>) -> impl Fn(&AgentEvent<'_>) + Send + Sync {
    move |event| {
        let line = match event {
            AgentEvent::ToolCallStarted {
                tool, arguments, ..
            } => format!("  -> {tool}({})", shorten(arguments, 200)),
            AgentEvent::ToolCallFinished(step) => result_line(step),
            _ => return,
        };
        let spinner = spinner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        spinner.suspend(|| println!("{line}"));
    }
}

/// `     <- first line of the output (+N lines)`, marked when the call failed.
fn result_line(step: &Step) -> String {
    let mut output = step.observation.lines();
    let first = shorten(output.next().unwrap_or(""), 200);
    let more = output.count();
    let more = if more > 0 {
        format!(" (+{more} lines)")
    } else {
        String::new()
    };
    let failed = if step.success { "" } else { " [failed]" };
    format!("     <- {first}{more}{failed}")
}

fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

async fn list_sessions(storage: &dyn ConversationStorage, current: &str) -> Result<()> {
    let mut ids = storage.list_sessions().await?;
    ids.sort();
    for id in ids {
        let count = match storage.session_info(&id).await {
            Ok(info) => render::plural(info.map_or(0, |info| info.message_count), "message"),
            Err(err) => format!("unreadable: {err}"),
        };
        let marker = if id == current { "*" } else { " " };
        println!("{marker} {id} ({count})");
    }
    Ok(())
}

/// Whether the environment names an LLM. The client defaults the base URL to OpenAI's,
/// which without a key can only fail on the first message, so say so up front instead.
fn llm_configured() -> bool {
    ["OPENAI_API_KEY", "OPENAI_BASE_URL"]
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|value| !value.trim().is_empty()))
}

const NO_LLM: &str = "\
fusion: error: no LLM configured; fusion chat talks to any OpenAI-compatible endpoint:
  OpenAI:        export OPENAI_API_KEY=sk-...            (model: FUSION_MODEL, default gpt-4o-mini)
  local Ollama:  ollama pull llama3.1
                 export OPENAI_BASE_URL=http://localhost:11434/v1 FUSION_MODEL=llama3.1
  (vLLM, llama.cpp server and LM Studio work the same way with their /v1 URL)";

/// A spinner on stdout while the model thinks, only when a person is watching.
fn spinner() -> ProgressBar {
    if !std::io::stdout().is_terminal() {
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

/// Where lines come from: rustyline on a terminal, plain lines from a pipe.
enum Input {
    Editor(Box<rustyline::DefaultEditor>),
    Piped(std::io::Lines<std::io::StdinLock<'static>>),
}

impl Input {
    fn editor() -> Result<Self> {
        let mut editor = rustyline::DefaultEditor::new().context("cannot start line editing")?;
        if let Some(path) = history_file() {
            // No history yet is the normal first run.
            let _ = editor.load_history(&path);
        }
        Ok(Input::Editor(Box::new(editor)))
    }

    /// The next line, or `None` at end of input (Ctrl-D, or the end of the pipe).
    ///
    /// Reading blocks; `block_in_place` keeps the runtime's other workers (and the
    /// spinner's and storage's tasks) free meanwhile.
    fn read_line(&mut self) -> Result<Option<String>> {
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

    fn save_history(&mut self) {
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
