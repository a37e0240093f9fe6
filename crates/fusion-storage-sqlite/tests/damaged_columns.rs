//! `sessions` cells of the wrong type: SQLite keeps what it is given whatever a column
//! declares, so a hand-edited or damaged database can hold text where Fusion stores an
//! integer. Every call that reads such a cell reports the session as corrupt, naming it
//! and the column, on both paths (a database file read directly, `:memory:` through
//! sqlx): never a driver's decoding error, which named no session and read as the
//! backend's failure.

use std::path::Path;

use fusion_core::testkit::writes::{Expectations, every_write_is_refused};
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, MessageId, MetaUpdate, SessionMeta,
    SessionOrder, SessionQuery,
};
use fusion_storage_sqlite::SqliteStorage;

fn turn(text: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::user(text),
        ChatMessage::assistant(format!("{text}-reply")),
    ]
}

/// A database file, read directly by the storage, and `:memory:`, read through sqlx.
fn both_paths(dir: &Path) -> [String; 2] {
    [
        format!("sqlite://{}", dir.join("s.db").display()),
        "sqlite::memory:".to_string(),
    ]
}

/// Whether `result` is the corruption of session "s", its detail naming `column` when
/// `named`.
fn is_corrupt<T: std::fmt::Debug>(
    result: fusion_core::Result<T>,
    column: &str,
    named: bool,
) -> bool {
    match result {
        Err(err) if corrupt_naming(&err, column, named) => true,
        other => {
            eprintln!("{column}: {other:?}");
            false
        }
    }
}

/// Whether `err` is the corruption of session "s", its detail naming `column` when `named`.
fn corrupt_naming(err: &Error, column: &str, named: bool) -> bool {
    matches!(err, Error::Corrupt { session_id, detail, .. }
        if session_id == "s" && (!named || detail.contains(&format!("`{column}`"))))
}

/// The calls that read a session's facts: each names the damaged column. The listing is
/// by id here; the newest-first pages are `a_newest_first_listing_reports_...` below.
async fn facts_calls(storage: &SqliteStorage, column: &str) -> Vec<(&'static str, bool)> {
    let update = MetaUpdate::new().title(Some("renamed"));
    let by_id = SessionQuery::new().order(SessionOrder::Id);
    vec![
        (
            "session_info",
            is_corrupt(storage.session_info("s").await, column, true),
        ),
        (
            "update_session",
            is_corrupt(storage.update_session("s", &update).await, column, true),
        ),
        (
            "list_page",
            is_corrupt(storage.list_page(&by_id).await, column, true),
        ),
    ]
}

/// The calls that read a session's revision (its generation and count): each names the
/// damaged column, on the sqlx path too, where sqlx's error gives its position ("column 1").
async fn revision_calls(storage: &SqliteStorage, column: &str) -> Vec<(&'static str, bool)> {
    let expect = Expect::Generation(1);
    let append = Change::Append(&[]);
    vec![
        (
            "load_revision",
            is_corrupt(storage.load_revision("s").await, column, true),
        ),
        (
            "write_if",
            is_corrupt(storage.write_if("s", expect, append).await, column, true),
        ),
    ]
}

#[tokio::test]
async fn a_sessions_cell_of_the_wrong_type_is_corrupt_naming_session_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("message_count", "'x'", true),
        ("generation", "'x'", true),
        ("created_at", "'x'", false),
        ("updated_at", "x'00'", false),
        ("owner", "x'05'", false),
        ("expires_at", "'x'", false),
        // A real that is not a whole number stays one in an `INTEGER` column (3.0 would be
        // stored as 3), as does a number past i64 (stored as a real).
        ("message_count", "2.5", true),
        ("created_at", "9223372036854775808", false),
        // Integers no write stores (before 1970, past what a cursor holds): read as no
        // time, or a time of the year 292 million.
        ("created_at", "-1", false),
        ("created_at", "9223372036854776", false),
    ];
    for url in both_paths(dir.path()) {
        for (column, value, revision) in cases {
            let storage = SqliteStorage::connect(&url).await.unwrap();
            storage.save("s", &turn("one")).await.unwrap();
            storage.save("t", &turn("other")).await.unwrap();
            let damage = format!("UPDATE sessions SET {column} = {value} WHERE id = 's'");
            sqlx::query(&damage).execute(storage.pool()).await.unwrap();
            let mut calls = facts_calls(&storage, column).await;
            if revision {
                calls.extend(revision_calls(&storage, column).await);
            }
            let wrong: Vec<_> = calls.iter().filter(|(_, ok)| !ok).collect();
            assert!(wrong.is_empty(), "{url}, {column}: {wrong:?}");
            // The other session is untouched; the damaged one's messages still load.
            assert_eq!(storage.load("t").await.unwrap(), turn("other"), "{url}");
            assert_eq!(storage.load("s").await.unwrap(), turn("one"), "{url}");
            storage.close().await;
            let _ = std::fs::remove_file(dir.path().join("s.db"));
        }
    }
}

/// Every table's rows as text, to tell that a refused write changed nothing.
async fn snapshot(storage: &SqliteStorage) -> Vec<String> {
    let rows = "SELECT quote(id) || quote(created_at) || quote(updated_at) \
                || quote(message_count) || quote(generation) || quote(recent_ids) \
                || quote(expires_at) || quote(owner) FROM sessions \
                UNION ALL SELECT quote(session_id) || seq || message FROM messages \
                UNION ALL SELECT quote(session_id) || quote(title) || tags || data \
                FROM session_meta \
                UNION ALL SELECT quote(session_id) || quote(tag) FROM session_tags ORDER BY 1";
    sqlx::query_scalar(rows)
        .fetch_all(storage.pool())
        .await
        .unwrap()
}

/// A write to a session whose `created_at` or `updated_at` holds no time Fusion writes
/// (text, a blob, a real, an integer out of range: a hand edit) is corrupt naming session
/// and column, as `session_info` says, and writes nothing, on both paths, whichever
/// statement would change the row (an append with and without ids, conditional or not, a
/// save, a rewrite, a truncate, a metadata update, a write under `UnwrittenSince`). Found
/// by a review: an append, save or truncate returned `Ok`, and
/// `MAX(excluded.updated_at, sessions.updated_at)` kept the damage; and a write under
/// `UnwrittenSince` on an `updated_at` past `i64::MAX / 1000` said `Conflict`, which no
/// reload and retry resolves, as PostgreSQL's test of the same calls says `Corrupt`.
#[tokio::test]
async fn a_write_to_a_session_whose_times_are_damaged_is_corrupt_and_writes_nothing() {
    let cases = [
        ("updated_at", "'x'"),
        ("updated_at", "x'00'"),
        ("updated_at", "9223372036854775807"),
        ("updated_at", "1e19"),
        ("updated_at", "2.5"),
        ("updated_at", "-1"),
        ("created_at", "'x'"),
        ("created_at", "-1"),
        ("created_at", "2.5"),
    ];
    damaged_times_refuse(Expectations::Met, &cases).await;
}

/// Runs [`every_write_is_refused`] on session "s" of a fresh storage on both paths with
/// `column` set to `value` (each SQL literal), and checks every write was corrupt naming
/// session and column and wrote nothing; then that a delete removes the session.
async fn damaged_times_refuse(expectations: Expectations, cases: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    for url in both_paths(dir.path()) {
        for &(column, value) in cases {
            let storage = SqliteStorage::connect(&url).await.unwrap();
            let damage = async || {
                let damage = format!("UPDATE sessions SET {column} = {value} WHERE id = 's'");
                sqlx::query(&damage).execute(storage.pool()).await.unwrap();
            };
            let rows = async || snapshot(&storage).await;
            let refused = |err: &Error| corrupt_naming(err, column, true);
            let meta = SessionMeta::new();
            let wrong =
                every_write_is_refused(&storage, "s", &meta, expectations, damage, rows, refused)
                    .await;
            assert!(wrong.is_empty(), "{url}, {column} = {value}: {wrong:#?}");
            storage.delete("s").await.unwrap();
            assert!(storage.session_info("s").await.unwrap().is_none(), "{url}");
            storage.close().await;
            let _ = std::fs::remove_file(dir.path().join("s.db"));
        }
    }
}

/// A text cell of a session's facts holding bytes that are not UTF-8 (a hand edit's
/// `CAST(x'ff' AS TEXT)`) is corrupt, naming session and column, on both paths: the direct
/// path's metadata update said a backend "conversion error", and a listing meeting such
/// `tags` or `data` said "unexpected data" on both, naming no session.
#[tokio::test]
async fn a_text_cell_that_is_not_utf8_is_corrupt_naming_session_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("owner", "sessions", "id"),
        ("title", "session_meta", "session_id"),
        ("tags", "session_meta", "session_id"),
        ("data", "session_meta", "session_id"),
    ];
    for url in both_paths(dir.path()) {
        for (column, table, key) in cases {
            let storage = SqliteStorage::connect(&url).await.unwrap();
            storage.save("s", &turn("one")).await.unwrap();
            let titled = MetaUpdate::new().title(Some("titled")).add_tag("x");
            storage.update_session("s", &titled).await.unwrap();
            let damage =
                format!("UPDATE {table} SET {column} = CAST(x'ff' AS TEXT) WHERE {key} = 's'");
            sqlx::query(&damage).execute(storage.pool()).await.unwrap();
            let calls = facts_calls(&storage, column).await;
            let wrong: Vec<_> = calls.iter().filter(|(_, ok)| !ok).collect();
            assert!(wrong.is_empty(), "{url}, {column}: {wrong:?}");
            assert_eq!(storage.load("s").await.unwrap(), turn("one"), "{url}");
            storage.close().await;
            let _ = std::fs::remove_file(dir.path().join("s.db"));
        }
    }
}

/// A stored message whose id is not UTF-8 (a hand edit) fails an append that reads the
/// session's last ids as corrupt, naming the session, on both paths: the direct path said
/// a backend "conversion error" where sqlx said corrupt.
#[tokio::test]
async fn a_stored_message_id_that_is_not_utf8_fails_an_append_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let id = |id: &str| MessageId::parse(id).unwrap();
    for url in both_paths(dir.path()) {
        let storage = SqliteStorage::connect(&url).await.unwrap();
        let stored = ChatMessage::user("x").with_id(id("a"));
        storage.save("s", &[stored]).await.unwrap();
        // `{"id":"a"` becomes `{"id":"\xff"`; without the fingerprints of the last ids the
        // append reads the ids themselves.
        let damage = "UPDATE messages SET message = \
                      CAST(x'7b226964223a22ff22' AS TEXT) || substr(message, 12); \
                      UPDATE sessions SET recent_ids = NULL";
        sqlx::raw_sql(damage).execute(storage.pool()).await.unwrap();
        let new = [ChatMessage::user("y").with_id(id("b"))];
        let append = storage.write_if("s", Expect::Generation(1), Change::Append(&new));
        assert!(is_corrupt(append.await, "id", false), "{url}");
        storage.close().await;
        let _ = std::fs::remove_file(dir.path().join("s.db"));
    }
}

/// A session whose `updated_at` is not a whole number of milliseconds in range (text, a
/// blob, a real past i64) fails the first page of every newest-first listing that would
/// hold it as corrupt, naming session and column, as the listings by id do: SQLite sorts
/// such a cell after every number, so it is newest, where the first page's keyset bound
/// (a number) used to leave it out of every page.
#[tokio::test]
async fn a_newest_first_listing_reports_a_session_whose_updated_at_is_not_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let queries = [
        SessionQuery::new(),
        SessionQuery::new().owner("alice"),
        SessionQuery::new().tag("x"),
        SessionQuery::new().owner("alice").tag("x"),
        SessionQuery::new().owner("alice").search("s"),
    ];
    for url in both_paths(dir.path()) {
        for value in ["'x'", "x'00'", "1e19"] {
            let storage = SqliteStorage::connect(&url).await.unwrap();
            let owned = MetaUpdate::new().owner(Some("alice")).add_tag("x");
            for id in ["s", "t"] {
                storage.save(id, &turn(id)).await.unwrap();
                storage.update_session(id, &owned).await.unwrap();
            }
            let damage = format!("UPDATE sessions SET updated_at = {value} WHERE id = 's'");
            sqlx::query(&damage).execute(storage.pool()).await.unwrap();
            for query in &queries {
                let page = storage.list_page(query).await;
                assert!(
                    is_corrupt(page, "updated_at", true),
                    "{url}, {value}, {query:?}"
                );
            }
            // Another owner's listing does not hold the session, and lists as before.
            let other = storage.list_page(&SessionQuery::new().owner("bob")).await;
            assert!(other.unwrap().sessions.is_empty(), "{url}, {value}");
            storage.close().await;
            let _ = std::fs::remove_file(dir.path().join("s.db"));
        }
    }
}

/// A message row whose `seq` is not an integer (a hand edit) fails the loads as corrupt
/// naming the column on both paths: the one-array read does not hold the rows' seqs, so
/// the load reads the rows one by one, where sqlx gave the cell's position ("column 0").
#[tokio::test]
async fn a_message_seq_of_the_wrong_type_is_corrupt_naming_the_column() {
    let dir = tempfile::tempdir().unwrap();
    for url in both_paths(dir.path()) {
        let storage = SqliteStorage::connect(&url).await.unwrap();
        storage.save("s", &turn("one")).await.unwrap();
        let damage = "UPDATE messages SET seq = 'x' WHERE session_id = 's' AND seq = 1";
        sqlx::query(damage).execute(storage.pool()).await.unwrap();
        assert!(is_corrupt(storage.load("s").await, "seq", true), "{url}");
        let revision = storage.load_revision("s").await;
        assert!(is_corrupt(revision, "seq", true), "{url}");
        storage.close().await;
        let _ = std::fs::remove_file(dir.path().join("s.db"));
    }
}

/// Sessions whose `updated_at` integers a hand edit left before 1970 or past what a
/// cursor's microseconds hold fail a newest-first walk as corrupt: each read back as a time
/// its cursor does not match (none, or the cursor's largest), so the next page started
/// elsewhere than SQLite's order left it, and a walk a page at a time ended without a
/// session, reporting nothing.
#[tokio::test]
async fn a_newest_first_walk_reports_an_updated_at_out_of_a_cursors_range() {
    let dir = tempfile::tempdir().unwrap();
    let max = i64::MAX;
    let damaged = [[-1, -2, -3], [max, max - 1, max - 2]];
    for url in both_paths(dir.path()) {
        for values in damaged {
            let storage = SqliteStorage::connect(&url).await.unwrap();
            for id in ["a", "m", "z", "n"] {
                storage.save(id, &turn(id)).await.unwrap();
            }
            for (id, value) in ["a", "z", "m"].into_iter().zip(values) {
                sqlx::query("UPDATE sessions SET updated_at = ?1 WHERE id = ?2")
                    .bind(value)
                    .bind(id)
                    .execute(storage.pool())
                    .await
                    .unwrap();
            }
            let mut query = SessionQuery::new().limit(1);
            let mut listed = Vec::new();
            let failed = loop {
                match storage.list_page(&query).await {
                    Ok(page) => {
                        listed.extend(page.sessions.into_iter().map(|info| info.id));
                        match page.next {
                            Some(next) => query = query.after(Some(next)),
                            None => break None,
                        }
                    }
                    Err(e) => break Some(e),
                }
            };
            assert!(
                matches!(&failed, Some(Error::Corrupt { detail, .. }) if detail.contains("`updated_at`")),
                "{url}, {values:?}: listed {listed:?}, then {failed:?}"
            );
            storage.close().await;
            let _ = std::fs::remove_file(dir.path().join("s.db"));
        }
    }
}

/// A write whose expectation the session does not meet, and a creation of a session that
/// exists, on a session whose `created_at` or `updated_at` a hand edit damaged, is
/// corrupt naming the column, on both paths, as the same write with a met expectation is
/// (`a_write_to_a_session_whose_times_are_damaged_...` above), and as PostgreSQL says: not
/// `Conflict`, which a reload (`load_revision` reads no time) and retry would only turn
/// into `Corrupt`.
#[tokio::test]
async fn a_refused_write_to_a_session_whose_times_are_damaged_is_corrupt() {
    let cases = [
        ("updated_at", "'x'"),
        ("updated_at", "x'00'"),
        ("updated_at", "9223372036854775807"),
        ("updated_at", "1e19"),
        ("updated_at", "2.5"),
        ("updated_at", "-1"),
        ("created_at", "'x'"),
        ("created_at", "-1"),
        ("created_at", "2.5"),
    ];
    damaged_times_refuse(Expectations::Unmet, &cases).await;
}

/// A retried append with ids (every message stored already) on a sound session stores
/// nothing and is `Ok`, the exactly-once retry; on a session whose `created_at` or
/// `updated_at` a hand edit damaged it is corrupt naming the column, on both paths, as
/// every other write there is: the check that finds the ids stored reads the row only if
/// its times hold (f5555a1). Before, the sqlx path said `Ok`.
#[tokio::test]
async fn a_retried_append_with_ids_is_ok_on_a_sound_session_and_corrupt_on_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let ided: Vec<ChatMessage> = turn("one").into_iter().map(|m| m.with_new_id()).collect();
    for url in both_paths(dir.path()) {
        for (column, value) in [("updated_at", "'x'"), ("created_at", "-1")] {
            let storage = SqliteStorage::connect(&url).await.unwrap();
            storage.append("s", &ided).await.unwrap();
            storage.append("s", &ided).await.unwrap();
            assert_eq!(storage.load("s").await.unwrap(), ided, "{url}: stored once");
            let damage = format!("UPDATE sessions SET {column} = {value} WHERE id = 's'");
            sqlx::query(&damage).execute(storage.pool()).await.unwrap();
            let before = snapshot(&storage).await;
            let retried = storage.append("s", &ided).await;
            assert!(
                is_corrupt(retried, column, true),
                "{url}, {column} = {value}"
            );
            assert_eq!(
                snapshot(&storage).await,
                before,
                "{url}, {column} = {value}"
            );
            storage.close().await;
            let _ = std::fs::remove_file(dir.path().join("s.db"));
        }
    }
}
