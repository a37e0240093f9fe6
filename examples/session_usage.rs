//! The product description's examples 1 and 2: a multi-turn conversation that remembers,
//! and a file-system session that survives a restart.
//!
//! ```bash
//! RUST_LOG=info cargo run --example session_usage     # run it twice: the second run recalls "blue"
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use fusion::api::session::{self, StorageType};
use fusion_examples::{explain, init_tracing};

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", explain(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run() -> fusion::Result<()> {
    // Example 1: the second message relies on what the first one found.
    let mut session = session::create_session("user-123", StorageType::Memory).await?;
    let result = session.send_message("What files are in /tmp?").await?;
    println!("Files: {}", result.result);
    let result = session
        .send_message("Delete the .txt files you just found")
        .await?;
    println!("Deleted: {}", result.result);
    println!(
        "({} messages in session {})\n",
        session.message_count(),
        session.session_id()
    );

    // Example 2: run the program twice; the second run remembers the first.
    let mut session = session::create_session(
        "persistent-user",
        StorageType::FileSystem(PathBuf::from("./sessions")),
    )
    .await?;
    if session.message_count() == 0 {
        session
            .send_message("Remember: my favorite color is blue")
            .await?;
        println!("Information stored. Run this program again!");
    } else {
        let result = session.send_message("What is my favorite color?").await?;
        println!("Agent recalled: {}", result.result);
    }
    Ok(())
}
