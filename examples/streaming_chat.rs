//! One message, with the agent's reply printed as the model writes it and its tool calls as
//! they run; Ctrl-C stops the turn and keeps what was stored.
//!
//! ```bash
//! cargo run --example streaming_chat -- "Which files are here? Then summarise them." [STORAGE_URL]
//! ```
//! The session (`streaming`) is stored under `./sessions` unless a storage URL is given, so
//! a second run continues the same conversation ("now delete the ones you just found").

use std::io::Write;
use std::process::ExitCode;

use fusion::agent::AgentEvent;
use fusion::api::session::{self, StorageType};
use fusion_examples::{exit_code, init_tracing, two_args};
use futures::StreamExt;

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    let (message, storage) = two_args("Which files are in this directory?", "./sessions");
    exit_code(run(&message, &storage).await)
}

async fn run(message: &str, storage: &str) -> fusion::Result<()> {
    let storage: StorageType = storage.parse()?;
    let mut session = session::create_session("streaming", storage).await?;
    println!("you> {message}");
    let mut events = session.send_message_stream(message);
    let mut stdout = std::io::stdout();
    loop {
        let event = tokio::select! {
            // Dropping the stream cancels the turn: the user message and every complete
            // reply stay stored, a reply cut off mid-stream is not.
            _ = tokio::signal::ctrl_c() => {
                println!("\n(interrupted)");
                return Ok(());
            }
            event = events.next() => event,
        };
        match event.transpose()? {
            Some(AgentEvent::TextDelta { text, .. }) => {
                print!("{text}");
                // Show each piece now, not when a line is complete.
                let _ = stdout.flush();
            }
            Some(AgentEvent::ToolCallStarted {
                tool, arguments, ..
            }) => println!("\n  -> {tool}({arguments})"),
            Some(AgentEvent::ToolCallFinished(step)) => {
                let first_line = step.observation.lines().next().unwrap_or("");
                println!("     <- {first_line}");
            }
            Some(AgentEvent::Finished(result)) => {
                println!();
                if let Some(usage) = result.usage {
                    println!(
                        "({} iterations, {} prompt + {} completion tokens)",
                        result.iterations, usage.prompt_tokens, usage.completion_tokens
                    );
                }
            }
            Some(_) => {}
            None => return Ok(()),
        }
    }
}
