//! `SqliteStorage` against databases it must refuse or survive: not SQLite, newer schema,
//! read-only, locked by another writer, a corrupt row. Each gives a clear error and leaves
//! the data as it was.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fusion_core::{ChatMessage, ConversationStorage, Error};
use fusion_storage_sqlite::{SqliteOptions, SqliteStorage};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, SqliteConnection};

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn turn(text: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::user(text),
        ChatMessage::assistant(format!("{text}-reply")),
    ]
}

/// A database file holding one session, closed again so the file is all there is.
async fn database_with_a_session(dir: &Path) -> (PathBuf, Vec<ChatMessage>) {
    let path = dir.join("sessions.db");
    let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
    let history = turn("kept");
    storage.save("s", &history).await.unwrap();
    storage.close().await;
    (path, history)
}

/// A plain sqlx connection, bypassing `SqliteStorage`, to tamper with a database.
async fn raw_connection(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_refused_by_path_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    let garbage: Vec<u8> = b"these are my notes, not a database\n"
        .iter()
        .copied()
        .cycle()
        .take(8192)
        .collect();
    std::fs::write(&path, &garbage).unwrap();

    let err = SqliteStorage::connect(&url(&path)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&*path.to_string_lossy()), "{text}");
    assert!(text.contains("not a SQLite database"), "{text}");
    assert!(!err.is_retryable(), "{text}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file was modified"
    );
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "side files were created: {entries:?}");
}

#[tokio::test]
async fn a_database_with_a_newer_schema_is_refused_and_not_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let (path, history) = database_with_a_session(dir.path()).await;
    let mut conn = raw_connection(&path).await;
    conn.execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', TRUE, x'00', 0)",
    )
    .await
    .unwrap();

    let err = SqliteStorage::connect(&url(&path)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&*path.to_string_lossy()), "{text}");
    assert!(text.contains("99990101000000"), "{text}");
    assert!(text.contains("newer"), "{text}");
    assert!(!err.is_retryable());

    // Nothing was changed: remove the future row and the old data is all there.
    conn.execute("DELETE FROM _sqlx_migrations WHERE version = 99990101000000")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), history);
}

/// Whether this process can write to a file the permissions say is read-only (root can).
fn permissions_are_enforced(path: &Path) -> bool {
    std::fs::OpenOptions::new().write(true).open(path).is_err()
}

#[cfg(unix)]
#[tokio::test]
async fn a_read_only_database_refuses_writes_clearly_and_keeps_its_data() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let (path, history) = database_with_a_session(dir.path()).await;
    let set_mode = |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
    set_mode(0o444).unwrap();
    // Root ignores file permissions; ask SQLite itself for a read-only connection then,
    // which takes the same error path inside SQLite.
    let read_only_url = if permissions_are_enforced(&path) {
        url(&path)
    } else {
        format!("{}?mode=ro", url(&path))
    };

    let storage = SqliteStorage::connect(&read_only_url).await.unwrap();
    assert_eq!(
        storage.load("s").await.unwrap(),
        history,
        "reads still work"
    );
    let err = storage.append("s", &turn("lost")).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("read-only"), "{text}");
    assert!(text.contains(&*path.to_string_lossy()), "{text}");
    assert!(text.contains("append of session \"s\""), "{text}");
    assert!(!err.is_retryable());
    assert!(storage.save("s", &[]).await.is_err());
    assert!(storage.delete("s").await.is_err());
    storage.close().await;

    set_mode(0o644).unwrap();
    let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), history);
}

/// The URL parameters that make SQLite read-only apply to every connection the storage
/// opens, the direct ones included, and other parameters reach them too (`unix` is the
/// default VFS there).
#[cfg(unix)]
#[tokio::test]
async fn read_only_url_parameters_reach_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (path, history) = database_with_a_session(dir.path()).await;
    for query in ["?mode=ro", "?immutable=1", "?immutable=true"] {
        let storage = SqliteStorage::connect(&format!("{}{query}", url(&path)))
            .await
            .unwrap();
        assert_eq!(storage.load("s").await.unwrap(), history, "{query}");
        let err = storage.append("s", &turn("lost")).await.unwrap_err();
        assert!(err.to_string().contains("read-only"), "{query}: {err}");
        storage.close().await;
    }
    // Named explicitly, the default VFS opens every connection the same way.
    let storage = SqliteStorage::connect(&format!("{}?vfs=unix", url(&path)))
        .await
        .unwrap();
    storage.append("s", &turn("kept")).await.unwrap();
    let mut expected = history;
    expected.extend(turn("kept"));
    assert_eq!(storage.load("s").await.unwrap(), expected);
}

#[tokio::test]
async fn a_database_locked_past_the_busy_timeout_gives_a_retryable_error_and_no_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (path, history) = database_with_a_session(dir.path()).await;
    let options = SqliteOptions::new().busy_timeout(Duration::from_millis(50));
    let storage = SqliteStorage::connect_with(&url(&path), options)
        .await
        .unwrap();

    let mut holder = raw_connection(&path).await;
    holder.execute("BEGIN EXCLUSIVE").await.unwrap();
    let err = storage.append("s", &turn("blocked")).await.unwrap_err();
    let text = err.to_string();
    assert!(err.is_retryable(), "{text}");
    assert!(matches!(err, Error::Backend { .. }), "{text}");
    assert!(text.contains("locked"), "{text}");
    assert!(text.contains(&*path.to_string_lossy()), "{text}");
    assert!(
        storage
            .save("s", &turn("blocked"))
            .await
            .unwrap_err()
            .is_retryable()
    );
    assert!(storage.truncate("s", 1).await.unwrap_err().is_retryable());
    // WAL readers are not blocked by a writer.
    assert_eq!(storage.load("s").await.unwrap(), history);
    holder.execute("ROLLBACK").await.unwrap();

    // The retry the error promised succeeds, and nothing half-written is left behind.
    storage.append("s", &turn("retried")).await.unwrap();
    let mut expected = history;
    expected.extend(turn("retried"));
    assert_eq!(storage.load("s").await.unwrap(), expected);
    assert_eq!(
        storage
            .session_info("s")
            .await
            .unwrap()
            .unwrap()
            .message_count,
        4
    );
}

/// A database file, read directly by the storage, and `:memory:`, read through sqlx: the
/// two ways `load` reads rows.
fn both_read_paths(dir: &Path) -> [String; 2] {
    [url(&dir.join("s.db")), "sqlite::memory:".to_string()]
}

#[tokio::test]
async fn a_row_that_is_not_a_message_is_corrupt_naming_session_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    for url in both_read_paths(dir.path()) {
        a_row_that_is_not_a_message_is_corrupt_on(&url).await;
    }
}

async fn a_row_that_is_not_a_message_is_corrupt_on(url: &str) {
    let storage = SqliteStorage::connect(url).await.unwrap();
    let mut history = turn("one");
    history.extend(turn("two"));
    storage.save("damaged", &history).await.unwrap();
    storage.save("healthy", &history).await.unwrap();
    sqlx::query(
        "UPDATE messages SET message = '{\"role\": \"us' WHERE session_id = ?1 AND seq = 2",
    )
    .bind("damaged")
    .execute(storage.pool())
    .await
    .unwrap();

    match storage.load("damaged").await {
        Err(Error::Corrupt {
            backend,
            session_id,
            detail,
        }) => {
            assert_eq!(backend, "sqlite");
            assert_eq!(session_id, "damaged");
            assert!(detail.contains("seq 2"), "{url}: {detail}");
        }
        other => panic!("{url}: expected Corrupt, got {other:?}"),
    }
    assert_eq!(storage.load("healthy").await.unwrap(), history);
    // `load_revision` reads the same rows (on the pool, again one by one in one
    // transaction once the array fails) and names the same seq.
    let err = storage.load_revision("damaged").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{url}: {err}");
    assert!(err.to_string().contains("seq 2"), "{url}: {err}");
    let (loaded, at) = storage.load_revision("healthy").await.unwrap();
    assert_eq!((&loaded, at.len), (&history, 4));

    // A number where the JSON text belongs.
    set_message_2(&storage, "damaged", "42", "").await;
    let err = storage.load("damaged").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{url}: {err}");
    assert!(err.to_string().contains("seq 2"), "{url}: {err}");

    // Bytes where the text belongs, as a blob (the column's TEXT affinity turns a number
    // into text, but keeps a blob) or as text (SQLite stores text unchecked). Both paths
    // take them as the message's text: garbage, bytes that are not UTF-8, or two messages
    // in one row are corrupt naming the seq (on the pool, the one-array read fails its
    // UTF-8 check, parse or count and the rows name it, where it failed the load with
    // sqlx's decoding error naming no seq)...
    let two = format!("{},{}", json(&history[2]), json(&history[3]));
    for (bytes, error) in [
        ("X'7B7B'", "seq 2 is not a valid chat message"),
        ("CAST(?2 AS BLOB)", "seq 2 is not a valid chat message"),
        ("X'FF7B'", "seq 2 is not text"),
        ("CAST(X'FF7B' AS TEXT)", "seq 2 is not text"),
    ] {
        set_message_2(&storage, "damaged", bytes, &two).await;
        for err in [
            storage.load("damaged").await.map(|_| ()).unwrap_err(),
            storage
                .load_revision("damaged")
                .await
                .map(|_| ())
                .unwrap_err(),
        ] {
            assert!(matches!(err, Error::Corrupt { .. }), "{url} {bytes}: {err}");
            assert!(err.to_string().contains(error), "{url} {bytes}: {err}");
        }
    }
    // ...and a blob holding a message's JSON in UTF-8 is that message, on both paths, so
    // that the pool's one-array read needs no per-row look at the column's type.
    set_message_2(&storage, "healthy", "CAST(?2 AS BLOB)", &json(&history[2])).await;
    assert_eq!(storage.load("healthy").await.unwrap(), history, "{url}");
    let (loaded, at) = storage.load_revision("healthy").await.unwrap();
    assert_eq!((&loaded, at.len), (&history, 4), "{url}");

    // A missing row is corruption too, named by the seq that is gone.
    sqlx::query("DELETE FROM messages WHERE session_id = ?1 AND seq = 1")
        .bind("healthy")
        .execute(storage.pool())
        .await
        .unwrap();
    let err = storage.load("healthy").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{url}: {err}");
    assert!(err.to_string().contains("seq 1 is missing"), "{url}: {err}");
    let err = storage.load_revision("healthy").await.unwrap_err();
    assert!(err.to_string().contains("seq 1 is missing"), "{url}: {err}");
}

fn json(message: &ChatMessage) -> String {
    serde_json::to_string(message).unwrap()
}

/// Stores `value` (SQL, binding ?2 to `bound`) as message seq 2 of `session_id`, behind
/// the storage's back.
async fn set_message_2(storage: &SqliteStorage, session_id: &str, value: &str, bound: &str) {
    sqlx::query(&format!(
        "UPDATE messages SET message = {value} WHERE session_id = ?1 AND seq = 2"
    ))
    .bind(session_id)
    .bind(bound)
    .execute(storage.pool())
    .await
    .unwrap();
}

/// A storage at `url` holding session "s" of `turn("one")`, then changed behind its back
/// by `sql`.
async fn one_turn_changed_by(url: &str, sql: &str) -> SqliteStorage {
    let storage = SqliteStorage::connect(url).await.unwrap();
    storage.save("s", &turn("one")).await.unwrap();
    sqlx::query(sql).execute(storage.pool()).await.unwrap();
    storage
}

/// A revision's length is the `sessions` row's count, so a history whose rows end before
/// that count would give callers positions that are not there: `load_revision` calls it
/// corrupt instead, on both read paths.
#[tokio::test]
async fn a_count_the_rows_do_not_reach_is_corrupt_for_load_revision() {
    let dir = tempfile::tempdir().unwrap();
    for url in both_read_paths(dir.path()) {
        let changed = "DELETE FROM messages WHERE session_id = 's' AND seq = 1";
        let storage = one_turn_changed_by(&url, changed).await;
        match storage.load_revision("s").await {
            Err(Error::Corrupt { detail, .. }) => {
                assert!(
                    detail.contains("counts 2 messages, but 1"),
                    "{url}: {detail}"
                );
            }
            other => panic!("{url}: expected Corrupt, got {other:?}"),
        }
        storage.close().await;
    }
}

/// Appends number their rows from the `sessions` row's count, so a count behind the rows
/// makes the next append meet a stored seq: the session's corruption, named as such on
/// both paths, not SQLite's "UNIQUE constraint failed". Nothing is written.
#[tokio::test]
async fn a_count_behind_the_rows_is_corrupt_for_the_append_that_meets_it() {
    let dir = tempfile::tempdir().unwrap();
    for url in both_read_paths(dir.path()) {
        let changed = "UPDATE sessions SET message_count = 1 WHERE id = 's'";
        let storage = one_turn_changed_by(&url, changed).await;
        match storage.append("s", &turn("two")).await {
            Err(Error::Corrupt {
                session_id, detail, ..
            }) => {
                assert_eq!(session_id, "s", "{url}");
                assert!(detail.contains("count"), "{url}: {detail}");
            }
            other => panic!("{url}: expected Corrupt, got {other:?}"),
        }
        assert_eq!(storage.load("s").await.unwrap(), turn("one"), "{url}");
        storage.append("t", &turn("two")).await.unwrap();
        storage.close().await;
    }
}

/// Through sqlx, `load` reads a history as one JSON array that SQLite joins from the
/// rows; a row holding two messages would make that array parse, one message too long. It
/// must be caught and named like any other bad row, never loaded as an extra message.
#[tokio::test]
async fn a_row_holding_two_messages_is_corrupt_not_an_extra_message() {
    let dir = tempfile::tempdir().unwrap();
    for url in both_read_paths(dir.path()) {
        a_row_holding_two_messages_is_corrupt_on(&url).await;
    }
}

async fn a_row_holding_two_messages_is_corrupt_on(url: &str) {
    let storage = SqliteStorage::connect(url).await.unwrap();
    storage.save("s", &turn("one")).await.unwrap();
    let two = format!(
        "{},{}",
        serde_json::to_string(&ChatMessage::user("a")).unwrap(),
        serde_json::to_string(&ChatMessage::user("b")).unwrap()
    );
    sqlx::query("UPDATE messages SET message = ?2 WHERE session_id = ?1 AND seq = 1")
        .bind("s")
        .bind(two)
        .execute(storage.pool())
        .await
        .unwrap();

    let err = storage.load("s").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{url}: {err}");
    assert!(err.to_string().contains("seq 1"), "{url}: {err}");
    let err = storage.load_revision("s").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{url}: {err}");
    assert!(err.to_string().contains("seq 1"), "{url}: {err}");

    // The extra message cancelled out by two rows holding one message between them (cut
    // in its text, where SQLite's comma between them would have joined them again): as
    // many messages as rows, yet none of the three rows is one.
    storage.append("s", &turn("two")).await.unwrap();
    let whole = serde_json::to_string(&ChatMessage::user("c,d")).unwrap();
    let cut = whole.find("c,d").unwrap() + 1;
    for (seq, part) in [(2, &whole[..cut]), (3, &whole[cut + 1..])] {
        sqlx::query("UPDATE messages SET message = ?3 WHERE session_id = ?1 AND seq = ?2")
            .bind("s")
            .bind(seq)
            .bind(part)
            .execute(storage.pool())
            .await
            .unwrap();
    }
    let err = storage.load("s").await.expect_err(url);
    assert!(err.to_string().contains("seq 1"), "{url}: {err}");
    let err = storage.load_revision("s").await.expect_err(url);
    assert!(err.to_string().contains("seq 1"), "{url}: {err}");
}

/// Deleting the file under an open storage, or moving another file over it, would leave
/// its connections writing to a file no path leads to, gone with every write when the
/// storage closes: the write that finds it, and every call after, fail instead.
#[tokio::test]
async fn a_database_file_deleted_or_replaced_while_open_refuses_to_write_into_nothing() {
    for replaced in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
        storage.append("s", &turn("kept")).await.unwrap();
        if replaced {
            let other = dir.path().join("restored.db");
            std::fs::write(&other, b"").unwrap();
            std::fs::rename(&other, &path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }

        let err = storage.append("s", &turn("lost")).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&*path.to_string_lossy()), "{text}");
        assert!(text.contains("deleted or replaced"), "{text}");
        assert!(text.contains("this write went only to"), "{text}");
        assert!(!err.is_retryable(), "{text}");

        // Later calls do nothing, and say so.
        for err in [
            storage.append("t", &turn("new")).await.unwrap_err(),
            storage.load("s").await.unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(text.contains("nothing was done"), "{text}");
            assert!(!err.is_retryable(), "{text}");
        }
        storage.close().await;
    }
}

/// A connection the pool opens after the file was moved away (here, for a listing while
/// the pool's open connections are all in use) fails to find it: it does not create an
/// empty database at the old path, which the next process would then open as the store.
#[tokio::test]
async fn a_database_file_moved_while_open_is_not_created_again_at_its_old_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
    storage.append("s", &turn("one")).await.unwrap();
    let mut held = Vec::new();
    while storage.pool().num_idle() > 0 {
        held.push(storage.pool().acquire().await.unwrap());
    }
    std::fs::rename(&path, dir.path().join("moved.db")).unwrap();

    let err = storage.list_sessions().await.unwrap_err();
    assert!(
        !path.exists(),
        "an empty database was created at {path:?}: {err}"
    );
    let text = err.to_string();
    assert!(text.contains(&*path.to_string_lossy()), "{text}");
    assert!(text.contains("check that it exists"), "{text}");
    drop(held);
    storage.close().await;
}

/// A file renamed while open is still the same file, found under its new name with every
/// write: nothing is lost, and writes go on.
#[tokio::test]
async fn a_database_file_renamed_while_open_keeps_taking_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
    storage.append("s", &turn("one")).await.unwrap();
    let moved = dir.path().join("moved.db");
    std::fs::rename(&path, &moved).unwrap();
    storage.append("s", &turn("two")).await.unwrap();
    storage.close().await;
    for suffix in ["-wal", "-shm"] {
        let mut from = path.clone().into_os_string();
        from.push(suffix);
        let mut to = moved.clone().into_os_string();
        to.push(suffix);
        let _ = std::fs::rename(from, to);
    }

    let reopened = SqliteStorage::connect(&url(&moved)).await.unwrap();
    let mut expected = turn("one");
    expected.extend(turn("two"));
    assert_eq!(reopened.load("s").await.unwrap(), expected);
    reopened.close().await;
}
