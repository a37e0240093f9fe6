//! An agent session stored in an embedded SQLite database file (created when missing).
//!
//! ```bash
//! cargo run --example sqlite_session [STORAGE_URL]     # default sqlite://sessions.db
//! ```
//! Run it twice: the second run continues the conversation the first one stored.

use std::process::ExitCode;

use fusion::api::session::StorageType;

#[tokio::main]
async fn main() -> ExitCode {
    fusion_examples::remember_across_runs(
        "sqlite-demo",
        "sqlite://sessions.db",
        StorageType::Sqlite,
    )
    .await
}
