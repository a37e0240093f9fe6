//! Shared helpers for the examples; this package exists so `cargo run --example NAME` works
//! from the workspace root.

use fusion::Error;

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

/// Installs a `tracing` subscriber that honours `RUST_LOG` (e.g. `RUST_LOG=info`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
}
