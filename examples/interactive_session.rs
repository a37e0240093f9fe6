//! An interactive REPL over one persistent session, as in the product description's example 3.
//!
//! ```bash
//! RUST_LOG=info cargo run --example interactive_session [SESSION_ID] [STORAGE_URL]
//! ```
//! Commands: `/clear`, `/history`, `/exit`, `/help`. History is stored under `./sessions`
//! unless a storage URL (`sqlite://chat.db`, `redis://127.0.0.1:6379`, ...) is given.

use std::process::ExitCode;

use fusion::api::session::{self, StorageType};
use fusion_examples::{explain, init_tracing};
use rustyline::error::ReadlineError;

const HELP: &str = "commands: /clear  clear the conversation history
          /history  show the message count
          /exit   leave (the session is already saved)
          /help   this help
anything else is sent to the agent";

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    let mut args = std::env::args().skip(1);
    let session_id = args.next().unwrap_or_else(|| "interactive".to_string());
    let storage = args.next().unwrap_or_else(|| "./sessions".to_string());
    match run(&session_id, &storage).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", explain(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run(session_id: &str, storage: &str) -> fusion::Result<()> {
    let storage: StorageType = storage.parse()?;
    let mut session = session::create_session(session_id, storage.clone()).await?;
    println!(
        "session {} on {storage}: {} messages so far. /help for commands.",
        session.session_id(),
        session.message_count()
    );
    let mut editor =
        rustyline::DefaultEditor::new().map_err(|e| fusion::Error::Config(e.to_string()))?;
    loop {
        let line = match editor.readline("you> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
            Err(err) => return Err(fusion::Error::Config(format!("reading input: {err}"))),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        match line {
            "/exit" | "/quit" => break,
            "/help" => println!("{HELP}"),
            "/history" => println!(
                "{} messages in session {}",
                session.message_count(),
                session.session_id()
            ),
            "/clear" => {
                session.clear_history().await?;
                println!("history cleared");
            }
            command if command.starts_with('/') => {
                println!("unknown command {command}; /help lists them")
            }
            message => match session.send_message(message).await {
                Ok(result) => {
                    for step in &result.steps {
                        println!(
                            "  [tool] {}({}) -> {}",
                            step.tool,
                            step.arguments,
                            first_line(&step.observation)
                        );
                    }
                    let marker = if result.success {
                        "agent>"
                    } else {
                        "agent (stopped)>"
                    };
                    println!("{marker} {}", result.result);
                }
                // One failed turn (network, model) does not end the REPL; what was said is stored.
                Err(err) => eprintln!("error: {err}"),
            },
        }
    }
    Ok(())
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(120)
        .collect()
}
