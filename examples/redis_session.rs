//! An agent session stored in a Redis server, so any process or machine that reaches it can continue the session.
//!
//! ```bash
//! cargo run --example redis_session [STORAGE_URL]     # default redis://127.0.0.1:6379
//! ```
//! Run it twice: the second run continues the conversation the first one stored.

use std::process::ExitCode;

use fusion::api::session::{self, StorageType};
use fusion_examples::{explain, init_tracing};

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
    match run(url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", explain(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run(url: String) -> fusion::Result<()> {
    let storage = StorageType::Redis(url);
    let mut session = session::create_session("redis-demo", storage.clone()).await?;
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
