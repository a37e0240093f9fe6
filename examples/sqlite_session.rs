//! An agent session stored in an embedded SQLite database file (created when missing).
//!
//! ```bash
//! cargo run --example sqlite_session [STORAGE_URL]     # default sqlite://sessions.db
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
        .unwrap_or_else(|| "sqlite://sessions.db".to_string());
    match run(url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", explain(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run(url: String) -> fusion::Result<()> {
    let storage = StorageType::Sqlite(url);
    let mut session = session::create_session("sqlite-demo", storage.clone()).await?;
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
