//! An agent session stored in a PostgreSQL database, so any process or machine that reaches
//! the server can continue the session.
//!
//! ```bash
//! cargo run --example postgres_session [STORAGE_URL]
//! # default postgres://postgres@127.0.0.1:5432/test?schema=fusion_example
//! ```
//! The tables live in the URL's `schema` (created when missing; `fusion` when the URL names
//! none). Run it twice: the second run continues the conversation the first one stored.

use std::process::ExitCode;

use fusion::api::session::StorageType;

#[tokio::main]
async fn main() -> ExitCode {
    fusion_examples::remember_across_runs(
        "postgres-demo",
        "postgres://postgres@127.0.0.1:5432/test?schema=fusion_example",
        StorageType::Postgres,
    )
    .await
}
