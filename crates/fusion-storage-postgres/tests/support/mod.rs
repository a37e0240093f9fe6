//! Shared test setup: the crate's own [`fusion_storage_postgres::testing`] harness, and a
//! port that refuses connections, for the tests of an absent server.

#![allow(dead_code, unused_imports)] // each test binary uses a different part of this module

pub use fusion_storage_postgres::testing::{
    Harness, execute_from_a_thread, harness, server_url, unique_schema,
};

/// A TCP port of 127.0.0.1 that refuses connections for as long as this is held: a
/// socket of ours is bound to it and does not listen. A port found free and let go (what
/// this used to be) could be taken meanwhile by any listener bound to port 0, as the
/// tests running beside these bind theirs, and a test expecting "cannot reach" met that
/// server instead. Bound without `SO_REUSEADDR`, the socket keeps every other socket off
/// the port.
pub struct RefusingPort {
    /// The port.
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

/// A [`RefusingPort`] the kernel chose.
pub fn refusing_port() -> RefusingPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("creating a socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("binding a port");
    let port = socket.local_addr().expect("local address").port();
    RefusingPort {
        port,
        _socket: socket,
    }
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

/// A database of one test's own on the server, for names that a second run of the same
/// test must not share (a schema named `user` is one per database); dropped, its
/// connections ended, when this is dropped, also when the test panics.
pub struct ScratchDatabase {
    /// The database's URL.
    pub url: String,
    /// The server's URL, from which it was created and is dropped.
    server: String,
    name: String,
}

/// A fresh database on the server of [`harness`], or `None` when no server answers (skip,
/// or panic under `FUSION_REQUIRE_BACKENDS`).
pub async fn scratch_database() -> Option<ScratchDatabase> {
    use sqlx::Connection;
    let server = fusion_storage_postgres::testing::reachable_url().await?;
    let name = unique_schema();
    let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let (base, query) = server.split_once('?').unwrap_or((&server, ""));
    let (host, _) = base.rsplit_once('/').expect("the URL names a database");
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    Some(ScratchDatabase {
        url: format!("{host}/{name}{query}"),
        server,
        name,
    })
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let drop_database = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = execute_from_a_thread(&self.server, &drop_database) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}
