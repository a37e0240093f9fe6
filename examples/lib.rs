//! Shared helpers for the examples; this package exists so `cargo run --example NAME` works
//! from the workspace root.

use std::process::ExitCode;

use fusion::Error;
use fusion::api::session::{self, StorageType};

/// How to configure an LLM, printed when none is.
pub const LLM_HELP: &str = "No LLM is configured. Point Fusion at an OpenAI-compatible endpoint:

  OpenAI:         export OPENAI_API_KEY=sk-...            (optional: FUSION_MODEL=gpt-4o-mini)
  Local Ollama:   ollama pull llama3.1
                  export OPENAI_BASE_URL=http://localhost:11434/v1 FUSION_MODEL=llama3.1

Any server speaking /v1/chat/completions works (vLLM, llama.cpp server, LM Studio, OpenRouter).";

/// Turns a session-creation error into a message and exit code: a missing LLM
/// configuration gets the setup help, anything else its own message.
pub fn explain(err: &Error) -> String {
    match err {
        Error::Config(detail) => format!("{detail}\n\n{LLM_HELP}"),
        other => other.to_string(),
    }
}

/// The first two command-line arguments, each replaced by its default when missing.
pub fn two_args(first: &str, second: &str) -> (String, String) {
    let mut args = std::env::args().skip(1);
    let first = args.next().unwrap_or_else(|| first.to_string());
    let second = args.next().unwrap_or_else(|| second.to_string());
    (first, second)
}

/// The exit code for what an example's `run` returned, printing its error explained.
pub fn exit_code(result: Result<(), Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", explain(&err));
            ExitCode::FAILURE
        }
    }
}

/// Installs a `tracing` subscriber that honours `RUST_LOG` (e.g. `RUST_LOG=info`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The backend examples' demo: a session on the storage named by the first command-line
/// argument (else `default_url`) is told a fact on its first run and asked for it on every
/// later one, then the stored count and the storage's sessions are printed.
pub async fn remember_across_runs(
    session_id: &str,
    default_url: &str,
    storage: fn(String) -> StorageType,
) -> ExitCode {
    init_tracing();
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| default_url.to_string());
    exit_code(remember(session_id, storage(url)).await)
}

async fn remember(session_id: &str, storage: StorageType) -> fusion::Result<()> {
    let mut session = session::create_session(session_id, storage.clone()).await?;
    let question = if session.message_count() == 0 {
        "Remember: the deploy password hint is 'teal giraffe'. Just acknowledge."
    } else {
        "What was the deploy password hint I gave you?"
    };
    let result = session.send_message(question).await?;
    println!("agent: {}", result.result);
    println!(
        "{} messages stored in {storage}; sessions there: {:?}",
        session.message_count(),
        session::list_all_sessions(&storage).await?
    );
    Ok(())
}
