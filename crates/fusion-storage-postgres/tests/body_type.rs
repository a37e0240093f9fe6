//! The measurement behind storing message bodies as `text` rather than `jsonb` (see the
//! crate docs). Ignored by default; run it with
//! `cargo test -p fusion-storage-postgres --release --test body_type -- --ignored --nocapture`.
//!
//! Two tables shaped like `messages`, one per column type, in the harness's private
//! schema: N one-message appends into each (the statement shape `append` uses), then
//! loads of the whole history, parse into `ChatMessage`s included. The two types take
//! turns, so drift of the machine's load hits both alike.

mod support;

use std::time::{Duration, Instant};

use fusion_core::{ChatMessage, ToolCall};
use sqlx::{Connection, Executor, PgConnection};

const MESSAGES: usize = 2000;
const LOADS: usize = 20;

/// A realistic message: 1 KiB of text, a tool call and some metadata.
fn message(i: usize) -> String {
    let call = ToolCall::new(
        format!("call_{i}"),
        "search",
        r#"{"query":"postgres jsonb"}"#,
    );
    let message = ChatMessage::assistant_with_tool_calls("x".repeat(1024), vec![call])
        .with_metadata(
            "turn",
            serde_json::json!({ "index": i, "tokens": [12, 34, 56] }),
        );
    serde_json::to_string(&message).unwrap()
}

async fn append_all(conn: &mut PgConnection, table: &str, cast: &str) -> Duration {
    let sql = format!(
        "INSERT INTO {table} (session_id, seq, body) \
         SELECT 's', $1 + m.ord - 1, m.body{cast} FROM unnest($2::text[]) WITH ORDINALITY AS m (body, ord)"
    );
    let started = Instant::now();
    for i in 0..MESSAGES {
        sqlx::query(&sql)
            .bind(i64::try_from(i).unwrap())
            .bind(vec![message(i)])
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    started.elapsed()
}

async fn load(conn: &mut PgConnection, table: &str, cast: &str) -> Duration {
    let sql = format!("SELECT seq, body{cast} FROM {table} WHERE session_id = 's' ORDER BY seq");
    let started = Instant::now();
    let rows: Vec<(i64, String)> = sqlx::query_as(&sql).fetch_all(&mut *conn).await.unwrap();
    let history: Vec<ChatMessage> = rows
        .iter()
        .map(|(_, body)| serde_json::from_str(body).unwrap())
        .collect();
    assert_eq!(history.len(), MESSAGES);
    started.elapsed()
}

#[tokio::test]
#[ignore = "a measurement, not a check; run by hand"]
async fn text_and_jsonb_bodies_compared() {
    let Some(harness) = support::harness().await else {
        return;
    };
    let mut conn = PgConnection::connect(&harness.url).await.unwrap();
    let schema = &harness.schema;
    conn.execute(format!("CREATE SCHEMA {schema}; SET search_path TO {schema}").as_str())
        .await
        .unwrap();
    let kinds = [("m_text", "text", ""), ("m_jsonb", "jsonb", "::jsonb")];
    for (table, column, _) in kinds {
        let ddl = format!(
            "CREATE TABLE {table} (session_id text, seq bigint, body {column} NOT NULL, \
             PRIMARY KEY (session_id, seq))"
        );
        conn.execute(ddl.as_str()).await.unwrap();
    }
    for (table, column, cast) in kinds {
        let took = append_all(&mut conn, table, cast).await;
        let per = took / u32::try_from(MESSAGES).unwrap();
        println!("{column:>5}: {MESSAGES} appends of 1 message: {took:?} total, {per:?} each");
    }
    let mut loads = [Duration::ZERO; 2];
    for _ in 0..LOADS {
        for (k, (table, _, _)) in kinds.iter().enumerate() {
            // Loading jsonb as text makes the server re-serialize it.
            let cast = if k == 1 { "::text" } else { "" };
            loads[k] += load(&mut conn, table, cast).await;
        }
    }
    for (k, (_, column, _)) in kinds.iter().enumerate() {
        let per = loads[k] / u32::try_from(LOADS).unwrap();
        println!("{column:>5}: load of {MESSAGES} messages, parse included: {per:?} each");
    }
    for (table, _, _) in kinds {
        let size: i64 = sqlx::query_scalar(&format!("SELECT pg_total_relation_size('{table}')"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        println!("{table}: {} KiB on disk", size / 1024);
    }
}
