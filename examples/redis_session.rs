//! An agent session stored in a Redis server, so any process or machine that reaches it can continue the session.
//!
//! ```bash
//! cargo run --example redis_session [STORAGE_URL]     # default redis://127.0.0.1:6379
//! ```
//! Run it twice: the second run continues the conversation the first one stored.

use std::process::ExitCode;

use fusion::api::session::StorageType;

#[tokio::main]
async fn main() -> ExitCode {
    fusion_examples::remember_across_runs(
        "redis-demo",
        "redis://127.0.0.1:6379",
        StorageType::Redis,
    )
    .await
}
