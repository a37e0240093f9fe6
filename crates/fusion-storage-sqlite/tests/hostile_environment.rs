//! `SqliteStorage` in the environments a deployment meets that are not its own: a file
//! that is not a database or is damaged, another application's database, a directory
//! it cannot write, a full disk, another process holding the write lock, odd URLs and
//! symbolic links. Each gives a clear error naming the file, says whether retrying can
//! help, and leaves what was stored as it was.

use std::path::Path;

use fusion_core::{ChatMessage, ConversationStorage, Error};
use fusion_storage_sqlite::SqliteStorage;

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn turn(text: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::user(text),
        ChatMessage::assistant(format!("{text}-reply")),
    ]
}

/// The names of the tables and indexes of the database at `path`, read with a plain
/// connection that changes nothing.
fn schema_names(path: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut names = conn
        .prepare("SELECT name FROM sqlite_master ORDER BY name")
        .unwrap();
    names
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Asserts that `err` is the refusal of another application's database at `path`.
fn assert_refused_as_foreign(err: &Error, path: &Path, table: &str) {
    let text = err.to_string();
    assert!(text.contains(&*path.to_string_lossy()), "{text}");
    assert!(text.contains("not a Fusion database"), "{text}");
    assert!(text.contains(table), "{text}");
    assert!(!err.is_retryable(), "{text}");
}

/// A database of another application, whatever its tables are called (even `sessions` or
/// `messages` with columns of its own, or its own sqlx migrations), is refused before
/// anything is written: no Fusion table is added, its journal mode is not switched to WAL
/// (the file is the same byte for byte), no half-applied migration is left.
#[tokio::test]
async fn another_applications_database_is_refused_and_left_byte_for_byte_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let other_sqlx_app = "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, \
         description TEXT NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
         success BOOLEAN NOT NULL, checksum BLOB NOT NULL, execution_time BIGINT NOT NULL); \
         INSERT INTO _sqlx_migrations VALUES (1, 'init', '2024-01-01', 1, x'00', 0); \
         CREATE TABLE invoices (id INTEGER PRIMARY KEY);";
    for (name, schema, table) in [
        (
            "shop.db",
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); \
             INSERT INTO customers VALUES (1, 'Ada');",
            "customers",
        ),
        (
            "web.db",
            "CREATE TABLE sessions (token TEXT PRIMARY KEY, user TEXT); \
             INSERT INTO sessions VALUES ('t', 'u');",
            "sessions",
        ),
        (
            "mail.db",
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT);",
            "messages",
        ),
        ("billing.db", other_sqlx_app, "invoices"),
    ] {
        let path = dir.path().join(name);
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(schema)
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let names = schema_names(&path);

        let err = SqliteStorage::connect(&url(&path)).await.unwrap_err();
        assert_refused_as_foreign(&err, &path, table);
        let read_only = format!("{}?mode=ro", url(&path));
        let err = SqliteStorage::connect(&read_only).await.unwrap_err();
        assert_refused_as_foreign(&err, &path, table);
        // Not `assert_eq!`: the file's bytes would fill the report.
        assert!(
            std::fs::read(&path).unwrap() == before,
            "{name} was changed"
        );

        // A caller's pool (its settings are its own) is refused as well, before migrating.
        let pool = fusion_storage_sqlite::SqlitePool::connect(&url(&path))
            .await
            .unwrap();
        let err = SqliteStorage::from_pool(pool.clone()).await.unwrap_err();
        assert_refused_as_foreign(&err, &path, table);
        pool.close().await;
        assert_eq!(schema_names(&path), names, "{name} was migrated");
    }
}

/// An empty file, or a database with no tables yet, is a new database: it opens and
/// gets Fusion's schema, and a database Fusion created opens again.
#[tokio::test]
async fn an_empty_file_or_a_database_without_tables_is_a_new_database() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let blank = dir.path().join("blank.db");
    rusqlite::Connection::open(&blank)
        .unwrap()
        .execute_batch("PRAGMA user_version = 7; VACUUM;")
        .unwrap();
    for path in [empty, blank] {
        for _ in 0..2 {
            let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
            storage.append("s", &turn("one")).await.unwrap();
            storage.close().await;
        }
        let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
        let mut expected = turn("one");
        expected.extend(turn("one"));
        assert_eq!(storage.load("s").await.unwrap(), expected);
        storage.close().await;
    }
}

/// The entries of `dir`, sorted: what opening left behind.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// URLs that would open something other than what they say are refused before anything
/// is created: SQLite's own `file:` URI (it used to open the file, then report it deleted
/// on every call, since the storage watched a file named `file:...`) and a path ending in
/// `/` (SQLite dropped the slash and created a file where a directory was meant). A
/// directory given as the path is named as one. Percent-escapes are decoded, and a path
/// may hold any byte but NUL, a newline included.
#[tokio::test]
async fn urls_that_name_something_else_are_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    for bad in [
        format!("sqlite://file:{}?mode=rwc", path.display()),
        format!("sqlite:file:{}", path.display()),
        format!("{}/", url(&path)),
    ] {
        let err = SqliteStorage::connect(&bad).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
        assert!(entries(dir.path()).is_empty(), "{bad} created files");
    }

    let err = SqliteStorage::connect(&url(dir.path())).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("it is a directory"), "{text}");
    assert!(text.contains(&*dir.path().to_string_lossy()), "{text}");
    assert!(!err.is_retryable(), "{text}");

    let escaped = format!("{}/a%20b%0Ac.db", url(dir.path()));
    let storage = SqliteStorage::connect(&escaped).await.unwrap();
    storage.append("s", &turn("one")).await.unwrap();
    storage.close().await;
    assert_eq!(entries(dir.path()), ["a b\nc.db"]);
}

/// The database path may be a symbolic link (SQLite resolves it and keeps its log and
/// shared-memory file beside the file it points to); a dangling one is created through.
/// A link planted where the log (`-wal`) or shared-memory file (`-shm`) belongs is not
/// followed: SQLite opens those with `O_NOFOLLOW`, so opening fails, saying which link to
/// remove, and the file it points to is not written.
#[cfg(unix)]
#[tokio::test]
async fn symbolic_links_at_the_database_and_beside_it() {
    use std::os::unix::fs::symlink;

    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.db");
    let link = dir.path().join("link.db");
    symlink(&real, &link).unwrap();
    // Dangling: the file is created at the link's target.
    let storage = SqliteStorage::connect(&url(&link)).await.unwrap();
    storage.append("s", &turn("one")).await.unwrap();
    assert!(dir.path().join("real.db-wal").exists());
    storage.close().await;
    assert_eq!(entries(dir.path()), ["link.db", "real.db"]);
    let storage = SqliteStorage::connect(&url(&real)).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), turn("one"));
    storage.close().await;

    for suffix in ["-wal", "-shm"] {
        let victim = dir.path().join(format!("victim{suffix}"));
        std::fs::write(&victim, b"precious").unwrap();
        let side = dir.path().join(format!("real.db{suffix}"));
        symlink(&victim, &side).unwrap();
        let err = SqliteStorage::connect(&url(&real)).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("symbolic link"), "{suffix}: {text}");
        assert!(text.contains(&*side.to_string_lossy()), "{suffix}: {text}");
        assert!(!err.is_retryable(), "{suffix}: {text}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{suffix}");
        std::fs::remove_file(&side).unwrap();
    }
    let storage = SqliteStorage::connect(&url(&real)).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), turn("one"));
    storage.close().await;
}
