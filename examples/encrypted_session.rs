//! A conversation stored encrypted: every message goes through `EncryptionLayer`, so the
//! SQLite file holds no word of it, while the agent reads it back as usual.
//!
//! ```bash
//! export FUSION_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | base64)"   # keep it safe
//! cargo run --example encrypted_session [sqlite://encrypted.db]
//! ```
//! The first run tells the agent a secret, later runs ask for it; `sqlite3 encrypted.db
//! 'select content from messages'` shows only `fusion:enc:v1:...`. Without the key, or with
//! another one, reading fails with an error naming the session and the key id.

use std::process::ExitCode;
use std::sync::Arc;

use fusion::agent::{OpenAiClient, SessionBuilder};
use fusion::layers::encryption::{EncryptionKeys, EncryptionLayer, KEY_ENV};
use fusion::storage::{StorageExt, StorageType};
use fusion_examples::{exit_code, init_tracing};

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite://encrypted.db".to_string());
    exit_code(run(&url).await)
}

async fn run(url: &str) -> fusion::Result<()> {
    let keys = EncryptionKeys::from_env()?.ok_or_else(|| {
        fusion::Error::Config(format!(
            "{KEY_ENV} is not set: export {KEY_ENV}=\"$(head -c 32 /dev/urandom | base64)\""
        ))
    })?;
    let raw = url.parse::<StorageType>()?.open().await?;
    let storage = raw.clone().layer(EncryptionLayer::new(keys));
    let mut session = SessionBuilder::new("encrypted-demo")
        .llm(Arc::new(OpenAiClient::from_env()?))
        .storage(storage.clone())
        .build()
        .await?;
    let question = if session.message_count() == 0 {
        "Remember this for me: the vault code is 7-3-9-1. Just acknowledge."
    } else {
        "What is the vault code I told you?"
    };
    println!("you> {question}");
    let result = session.send_message(question).await?;
    println!("agent> {}", result.result);
    let stored = storage.load("encrypted-demo").await?;
    println!(
        "{} messages stored encrypted in {url} (key id {})",
        stored.len(),
        // What the layer wrote: read below the layer, the content is ciphertext.
        key_id_of(&raw.load("encrypted-demo").await?[0].content)
    );
    Ok(())
}

/// The key id in a stored `fusion:enc:v1:<key id>:...` content.
fn key_id_of(stored: &str) -> &str {
    stored.split(':').nth(3).unwrap_or("(not encrypted)")
}
