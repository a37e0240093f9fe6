//! Shared test setup: the crate's own [`fusion_storage_postgres::testing`] harness, and a
//! free port for the tests of an absent server.

#![allow(dead_code, unused_imports)] // each test binary uses a different part of this module

pub use fusion_storage_postgres::testing::{Harness, harness, server_url, unique_schema};

/// A TCP port on 127.0.0.1 that nothing listens on (it was free a moment ago).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

/// Every row of both tables, as text, so a test can tell that nothing at all changed.
pub async fn snapshot(raw: &mut sqlx::PgConnection) -> (Vec<String>, Vec<String>) {
    let sessions = sqlx::query_scalar("SELECT s::text FROM sessions AS s ORDER BY id")
        .fetch_all(&mut *raw)
        .await
        .unwrap();
    let messages = sqlx::query_scalar("SELECT m::text FROM messages AS m ORDER BY 1")
        .fetch_all(&mut *raw)
        .await
        .unwrap();
    (sessions, messages)
}
