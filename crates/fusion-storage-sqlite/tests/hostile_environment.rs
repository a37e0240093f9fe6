//! `SqliteStorage` in the environments a deployment meets that are not its own: a file
//! that is not a database or is damaged, another application's database, a directory
//! it cannot write, a full disk, another process holding the write lock, odd URLs and
//! symbolic links. Each gives a clear error naming the file, says whether retrying can
//! help, and leaves what was stored as it was.

#[cfg(unix)]
#[path = "support/hostile.rs"]
mod hostile;

use std::path::{Path, PathBuf};
use std::task::Poll;
use std::time::Duration;

use fusion_core::{ChatMessage, ConversationStorage, Error, MetaUpdate, SessionMeta};
use fusion_storage_sqlite::{SqliteOptions, SqliteStorage};

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
        // A pool has no URL to change: the way out speaks of the pool.
        let text = err.to_string();
        assert!(
            text.contains("give `from_pool` a pool on a new file"),
            "{text}"
        );
        assert!(!text.contains("URL"), "{text}");
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
    // sqlx's bookkeeping alone, as `sqlx migrate run` or a failed first migration leaves
    // it: not another application's data.
    let bookkeeping = dir.path().join("bookkeeping.db");
    rusqlite::Connection::open(&bookkeeping)
        .unwrap()
        .execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT \
             NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success \
             BOOLEAN NOT NULL, checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);",
        )
        .unwrap();
    for path in [empty, blank, bookkeeping] {
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

/// `?immutable=true` reads a file nothing writes to, taking no locks: opening it leaves
/// no `-wal` or `-shm` beside it (the look for another application's tables, made before
/// the pool opens, used to).
#[tokio::test]
async fn an_immutable_database_gets_no_files_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
    storage.append("s", &turn("one")).await.unwrap();
    storage.close().await;
    drop(storage);
    assert_eq!(entries(dir.path()), ["s.db"]);
    let immutable = format!("{}?immutable=true", url(&path));
    let storage = SqliteStorage::connect(&immutable).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), turn("one"));
    storage.close().await;
    drop(storage);
    assert_eq!(entries(dir.path()), ["s.db"]);
}

/// A load the caller started and stopped polling (pinned in a `select!` that went
/// elsewhere) holds its reader connection: `close` waits for it no longer than the busy
/// timeout, then returns (it waited for ever, and a shutdown hung), saying it closed
/// while a connection was still out.
///
/// The load is polled once and left. Whether that poll leaves it midway is up to the
/// scheduler: the reading thread starts during the poll, and when it keeps ahead of the
/// parsing for the whole history, the poll parses all of it, and the reader comes back on
/// its own a moment later. That poll still returns `Pending` (the load's join polled the
/// reading thread's handle first, before it had read anything), so nothing before `close`
/// tells the two apart; `close`'s warning does. A close that met no reader still out
/// tested nothing, so the test starts again on a new storage, until one did.
#[tokio::test]
async fn close_does_not_wait_for_ever_on_a_load_left_unpolled() {
    let logs = fusion_core::testkit::logs::Logs::new();
    // This thread's runtime runs `close`: its log is ours.
    let _logging = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let options = SqliteOptions::new().busy_timeout(Duration::from_millis(500));
    let url = url(&path);
    let open = || SqliteStorage::connect_with(&url, options.clone());
    let mut storage = open().await.unwrap();
    // Larger than the batches the reading thread may hand over without being polled.
    let big: Vec<ChatMessage> = (0..2_000)
        .map(|i| ChatMessage::user(format!("{i} {}", "x".repeat(4_000))))
        .collect();
    storage.save("big", &big).await.unwrap();
    // A try that leaves nothing out takes a few hundred ms; about one in four did, on a
    // busy machine.
    const TRIES: usize = 20;
    for _ in 0..TRIES {
        let mut load = Box::pin(storage.load("big"));
        let _once = std::future::poll_fn(|cx| Poll::Ready(load.as_mut().poll(cx))).await;
        // Let the reading thread fill what it may hand over, then close while it waits.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let closed = tokio::time::timeout(HANG_GUARD, storage.close()).await;
        assert!(closed.is_ok(), "close waited for the unpolled load");
        if logs
            .text()
            .contains("closing while a connection is still out")
        {
            return;
        }
        // The poll loaded the whole history: nothing was left unpolled.
        drop(load);
        storage = open().await.unwrap();
    }
    panic!(
        "no load was left unpolled midway in {TRIES} tries: {}",
        logs.text()
    );
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
/// on every call, since the storage watched a file named `file:...`), a path ending in
/// `/` (SQLite dropped the slash and created a file where a directory was meant), and no
/// path with a `mode` other than `memory` (SQLite opened a private temporary database,
/// and every call reported it deleted). `?mode=memory` alone is `sqlite::memory:`. A
/// directory given as the path is named as one, and so is a FIFO or a device (SQLite says
/// only "disk I/O error"). Percent-escapes are decoded, and a path
/// may hold any byte but NUL, a newline included.
#[tokio::test]
async fn urls_that_name_something_else_are_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    for bad in [
        format!("sqlite://file:{}?mode=rwc", path.display()),
        format!("sqlite:file:{}", path.display()),
        format!("{}/", url(&path)),
        // An escaped `/` would split one name into directories (`..%2F..%2Fetc`).
        format!("{}/..%2Fescaped.db", url(dir.path())),
        format!("{}/a%2fb.db", url(dir.path())),
        "sqlite://?mode=rwc".to_owned(),
        "sqlite:?mode=rw".to_owned(),
    ] {
        let err = SqliteStorage::connect(&bad).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
        assert!(entries(dir.path()).is_empty(), "{bad} created files");
    }
    let memory = SqliteStorage::connect("sqlite://?mode=memory")
        .await
        .unwrap();
    memory.append("s", &turn("one")).await.unwrap();
    assert_eq!(memory.load("s").await.unwrap(), turn("one"));
    assert_eq!(memory.database(), ":memory:");

    let err = SqliteStorage::connect(&url(dir.path())).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("it is a directory"), "{text}");
    assert!(text.contains(&*dir.path().to_string_lossy()), "{text}");
    assert!(!err.is_retryable(), "{text}");

    #[cfg(unix)]
    {
        let fifo = dir.path().join("fifo.db");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo {fifo:?}");
        for special in [fifo.as_path(), Path::new("/dev/null")] {
            let err = SqliteStorage::connect(&url(special)).await.unwrap_err();
            assert_clear(&err, special, "not a regular file");
        }
        // Its name shown escaped, like every path in a message.
        std::fs::rename(&fifo, dir.path().join("fifo\n.db")).unwrap();
        let fifo = dir.path().join("fifo\n.db");
        let err = SqliteStorage::connect(&format!("{}/fifo%0A.db", url(dir.path())))
            .await
            .unwrap_err();
        assert_clear(&err, &dir.path().join("fifo\\n.db"), "not a regular file");
        assert!(!err.to_string().contains('\n'), "{err}");
        // Refused before SQLite opens it, which wrote a journal beside a device (in /dev,
        // when run as root).
        assert!(!Path::new("/dev/null-journal").exists());
        std::fs::remove_file(&fifo).unwrap();
    }

    let escaped = format!("{}/a%20b%0Ac.db", url(dir.path()));
    let storage = SqliteStorage::connect(&escaped).await.unwrap();
    storage.append("s", &turn("one")).await.unwrap();
    storage.close().await;
    assert_eq!(entries(dir.path()), ["a b\nc.db"]);

    // A control character in the path is escaped wherever the path is shown: printed raw,
    // a newline would forge a line of the log.
    let missing = format!("{}/forged%0Aline%1B.db?mode=rw", url(dir.path()));
    let text = SqliteStorage::connect(&missing)
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("forged\\nline\\u{1b}.db"), "{text}");
    assert!(!text.contains(['\n', '\u{1b}']), "{text}");

    // Only the message shows the escaped name: the hints look at the file by its own
    // (here, that it is a directory).
    std::fs::create_dir(dir.path().join("sub\ndir")).unwrap();
    let err = SqliteStorage::connect(&format!("{}/sub%0Adir", url(dir.path())))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("it is a directory"), "{text}");
    assert!(text.contains("sub\\ndir/sessions.db"), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

/// The database path may be a symbolic link to a database (SQLite resolves it and keeps
/// its log and shared-memory file beside the file it points to); a dangling one is
/// refused, naming the link and where it points, before anything is created (SQLite
/// would create the file wherever it points).
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
    let elsewhere = dir.path().join("missing-dir").join("real.db");
    let far = dir.path().join("far.db");
    symlink(&elsewhere, &far).unwrap();
    for (dangling, target) in [(&link, &real), (&far, &elsewhere)] {
        let err = SqliteStorage::connect(&url(dangling)).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains(&*dangling.to_string_lossy()), "{text}");
        assert!(
            text.contains(&format!("symbolic link to {}", target.display())),
            "{text}"
        );
        assert_eq!(entries(dir.path()), ["far.db", "link.db"]);
    }
    std::fs::remove_file(&far).unwrap();
    // A link that cannot be followed (here a loop) is refused saying so, not as one that
    // SQLite would create a database through.
    let looped = dir.path().join("loop.db");
    symlink(&looped, &looped).unwrap();
    let err = SqliteStorage::connect(&url(&looped)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{text}");
    assert!(text.contains("cannot be followed"), "{text}");
    assert!(!text.contains("would create"), "{text}");
    std::fs::remove_file(&looped).unwrap();
    // Once the database exists, the link to it is followed.
    SqliteStorage::connect(&url(&real))
        .await
        .unwrap()
        .close()
        .await;
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

/// A database file holding the session `s` (`turn("kept")`), closed so the file is all
/// there is.
async fn database_with_a_session(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("sessions.db");
    let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
    storage.save("s", &turn("kept")).await.unwrap();
    storage.close().await;
    path
}

/// Asserts that `err` is not retryable, names the file at `path` and says `what`.
fn assert_clear(err: &Error, path: &Path, what: &str) {
    let text = err.to_string();
    assert!(text.contains(&*path.to_string_lossy()), "{text}");
    assert!(text.contains(what), "expected {what:?}: {text}");
    assert!(!err.is_retryable(), "{text}");
}

/// A file of zeros, a copy of a database cut short, and one with a page of its messages
/// table overwritten: the first two are refused when opened, the third is reported
/// corrupt (naming the file, not retryable) by the load that reads the damaged page,
/// after which the storage refuses every write; none of them is changed by trying.
#[tokio::test]
async fn files_that_are_not_databases_or_are_damaged_are_refused_or_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    let storage = SqliteStorage::connect(&url(&source)).await.unwrap();
    let history: Vec<ChatMessage> = (0..200)
        .map(|i| ChatMessage::user(format!("{i:03} {}", "x".repeat(500))))
        .collect();
    storage.save("long", &history).await.unwrap();
    storage.close().await;
    let bytes = std::fs::read(&source).unwrap();
    assert!(bytes.len() >= 16 * 4096, "{} bytes", bytes.len());

    let zeros = dir.path().join("zeros.db");
    std::fs::write(&zeros, vec![0u8; 8192]).unwrap();
    let cut = dir.path().join("cut.db");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for (path, what) in [(&zeros, "not a SQLite database"), (&cut, "corrupt")] {
        let before = std::fs::read(path).unwrap();
        let err = SqliteStorage::connect(&url(path)).await.unwrap_err();
        assert_clear(&err, path, what);
        assert!(
            std::fs::read(path).unwrap() == before,
            "{path:?} was changed"
        );
    }

    // Most pages of this file hold the session's messages: overwrite one in the middle,
    // keeping its header. Opening reads only the schema, so it succeeds; the load that
    // reads the page fails.
    let damaged = dir.path().join("damaged.db");
    let mut pages = bytes.clone();
    let middle = pages.len() / 2 / 4096 * 4096;
    for byte in &mut pages[middle + 16..middle + 4000] {
        *byte ^= 0x5a;
    }
    std::fs::write(&damaged, &pages).unwrap();
    let storage = SqliteStorage::connect(&url(&damaged)).await.unwrap();
    let err = storage.load("long").await.unwrap_err();
    assert_clear(&err, &damaged, "corrupt");
    assert!(err.to_string().contains(".recover"), "{err}");
    assert_eq!(storage.list_sessions().await.unwrap(), ["long"]);
    // Writes that would not touch the damaged page (a new session) are refused from now
    // on: writing into a damaged file can spread the damage.
    let meta = SessionMeta::new();
    for err in [
        storage.append("new", &turn("one")).await.unwrap_err(),
        storage
            .create_session("other", &meta, &turn("one"))
            .await
            .unwrap_err(),
        storage.delete("long").await.unwrap_err(),
    ] {
        assert_clear(&err, &damaged, "found the database file corrupt");
        assert!(err.to_string().contains("nothing was done"), "{err}");
    }
    storage.close().await;
    assert!(
        std::fs::read(&damaged).unwrap() == pages,
        "it was written to"
    );

    // A caller's pool loads through sqlx: the damage it finds refuses writes all the same.
    let pool = fusion_storage_sqlite::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new().filename(&damaged),
    )
    .await
    .unwrap();
    let storage = SqliteStorage::from_pool(pool).await.unwrap();
    let err = storage.load("long").await.unwrap_err();
    assert_clear(&err, &damaged, "corrupt");
    let err = storage.append("new", &turn("one")).await.unwrap_err();
    assert_clear(&err, &damaged, "found the database file corrupt");
    storage.close().await;
    assert!(
        std::fs::read(&damaged).unwrap() == pages,
        "the pool wrote to it"
    );
}

/// A copy of the database at `source` at `copy` with the first page of the b-tree `name`
/// (a table or index) made invalid (its page type): SQLite finds it damaged when it reads
/// that page, and only then.
fn with_a_damaged_btree(source: &Path, copy: &Path, name: &str) -> Vec<u8> {
    let conn = rusqlite::Connection::open(source).unwrap();
    let (root, page_size): (usize, usize) = conn
        .query_row(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master \
             WHERE name = ?1",
            [name],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(source).unwrap();
    bytes[(root - 1) * page_size] = 0x01;
    std::fs::write(copy, &bytes).unwrap();
    bytes
}

/// Listings and `session_info` read through the pool, not the direct connections: the
/// damage they find refuses later writes too (here writes that would not touch the
/// damaged page, which would otherwise succeed), and the file is left as it was.
#[tokio::test]
async fn damage_found_by_a_listing_or_session_info_refuses_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    let storage = SqliteStorage::connect(&url(&source)).await.unwrap();
    let meta = SessionMeta::new().owner("alice").title("kept");
    for i in 0..3 {
        storage
            .create_session(&format!("owned-{i}"), &meta, &turn("one"))
            .await
            .unwrap();
    }
    storage.close().await;

    let by_owner = fusion_core::SessionQuery::new().owner("alice");
    for (btree, reads_it) in [
        ("sessions_by_owner_updated", "list_page"),
        ("session_meta", "session_info"),
    ] {
        let damaged = dir.path().join(format!("{btree}.db"));
        let bytes = with_a_damaged_btree(&source, &damaged, btree);
        let storage = SqliteStorage::connect(&url(&damaged)).await.unwrap();
        let err = match reads_it {
            "list_page" => storage.list_page(&by_owner).await.map(drop).unwrap_err(),
            _ => storage.session_info("owned-0").await.map(drop).unwrap_err(),
        };
        assert_clear(&err, &damaged, "corrupt");
        // A session with no owner and no metadata touches neither b-tree.
        let err = storage.append("plain", &turn("one")).await.unwrap_err();
        assert_clear(&err, &damaged, "found the database file corrupt");
        storage.close().await;
        assert!(
            std::fs::read(&damaged).unwrap() == bytes,
            "{btree}: it was written to"
        );
    }
}

/// A file busy when opening starts is waited for once, up to the busy timeout: not by
/// the look at the file (is it another application's?) and then again by the pool. Once
/// the look gives up, opening fails, retryable, even though the file is free a moment
/// later (which a second wait would have seen).
#[tokio::test]
async fn a_file_busy_at_open_is_waited_for_once() {
    let logs = fusion_core::testkit::logs::Logs::new();
    // This thread's runtime runs the opening task: its log is ours.
    let _logging = tracing::subscriber::set_default(logs.subscriber(tracing::Level::DEBUG));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    // A database with no tables in rollback-journal mode, where an exclusive lock keeps
    // every reader out (in WAL mode readers go on).
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder
        .execute_batch("PRAGMA user_version = 1; BEGIN EXCLUSIVE;")
        .unwrap();
    let opening = tokio::spawn({
        let url = url(&path);
        let options = SqliteOptions::new().busy_timeout(Duration::from_secs(3));
        async move { SqliteStorage::connect_with(&url, options).await }
    });
    let gave_up = async {
        while !logs.text().contains("stayed busy past the busy timeout") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, gave_up).await.unwrap();
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let err = opening.await.unwrap().unwrap_err();
    let text = err.to_string();
    assert!(err.is_retryable(), "{text}");
    assert!(text.contains("locked"), "{text}");
    assert!(text.contains(&*path.to_string_lossy()), "{text}");
    // The retry the error asks for opens it.
    SqliteStorage::connect(&url(&path))
        .await
        .unwrap()
        .close()
        .await;
}

/// How long the tests below let a write wait for a lock another process holds: short,
/// since waiting out the whole timeout is the point.
const SHORT_BUSY: Duration = Duration::from_millis(200);

/// A hang guard only: every call here should end within the busy timeout.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// `<what>|<database path>` for a holding child: `write` holds `BEGIN IMMEDIATE`, `read`
/// a read transaction with a snapshot.
const HOLDER_ENV: &str = "FUSION_SQLITE_TEST_HOLD";

#[tokio::test]
async fn child_holds_a_transaction_when_asked() {
    let Ok(task) = std::env::var(HOLDER_ENV) else {
        return;
    };
    let (what, path) = task.split_once('|').unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    if what == "write" {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    } else {
        conn.execute_batch("BEGIN").unwrap();
        let _: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |row| row.get(0))
            .unwrap();
    }
    hostile::hold_until_released();
    conn.execute_batch("ROLLBACK").unwrap();
}

/// Another process holding the write lock past the busy timeout makes every write fail
/// with a retryable "locked" error once the timeout has passed (not a hang, not a
/// panic), while reads go on; once it lets go, the writes succeed.
#[cfg(unix)]
#[tokio::test]
async fn another_process_holding_the_write_lock_gets_retryable_errors_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = database_with_a_session(dir.path()).await;
    let options = SqliteOptions::new().busy_timeout(SHORT_BUSY);
    let storage = SqliteStorage::connect_with(&url(&path), options)
        .await
        .unwrap();
    let holder = hostile::Holder::start(
        "child_holds_a_transaction_when_asked",
        HOLDER_ENV,
        &format!("write|{}", path.display()),
    );

    let meta = SessionMeta::new().title("new");
    let update = MetaUpdate::new().title(Some("renamed"));
    let failures = tokio::time::timeout(HANG_GUARD, async {
        vec![
            storage.append("s", &turn("blocked")).await.unwrap_err(),
            storage.save("s", &turn("blocked")).await.unwrap_err(),
            storage
                .create_session("new", &meta, &turn("blocked"))
                .await
                .unwrap_err(),
            storage.update_session("s", &update).await.unwrap_err(),
            storage.delete("s").await.unwrap_err(),
        ]
    })
    .await
    .expect("a write hung past the busy timeout");
    for err in failures {
        let text = err.to_string();
        assert!(err.is_retryable(), "{text}");
        assert!(text.contains("locked"), "{text}");
        assert!(text.contains(&*path.to_string_lossy()), "{text}");
    }
    assert_eq!(storage.load("s").await.unwrap(), turn("kept"));
    assert_eq!(storage.list_sessions().await.unwrap(), ["s"]);
    holder.release();

    storage.append("s", &turn("retried")).await.unwrap();
    storage
        .create_session("new", &meta, &turn("retried"))
        .await
        .unwrap();
    let mut expected = turn("kept");
    expected.extend(turn("retried"));
    assert_eq!(storage.load("s").await.unwrap(), expected);
    storage.close().await;
}

/// A reader in another process holding one snapshot open for the whole run keeps the log
/// from being checkpointed past it, but fails no write: more writes than the log's hard
/// limit (see `src/checkpoint.rs`) all succeed, and all of them are there after the
/// reader ends and the database is opened again.
#[cfg(unix)]
#[tokio::test]
async fn a_long_reader_in_another_process_fails_no_write_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = database_with_a_session(dir.path()).await;
    let options = SqliteOptions::new().busy_timeout(Duration::from_millis(50));
    let storage = SqliteStorage::connect_with(&url(&path), options)
        .await
        .unwrap();
    let holder = hostile::Holder::start(
        "child_holds_a_transaction_when_asked",
        HOLDER_ENV,
        &format!("read|{}", path.display()),
    );
    let mut expected = turn("kept");
    for i in 0..600 {
        let message = ChatMessage::user(format!("during the read {i}"));
        storage
            .append("s", std::slice::from_ref(&message))
            .await
            .unwrap();
        expected.push(message);
    }
    assert_eq!(storage.load("s").await.unwrap(), expected);
    holder.release();
    storage.close().await;

    let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), expected);
    storage.close().await;
}

/// `<case>|<directory>` for the child run as a user that permissions apply to.
const READ_ONLY_ENV: &str = "FUSION_SQLITE_TEST_READ_ONLY";

#[tokio::test]
async fn child_checks_read_only_when_asked() {
    let Ok(task) = std::env::var(READ_ONLY_ENV) else {
        return;
    };
    let (case, dir) = task.split_once('|').unwrap();
    let path = Path::new(dir).join("sessions.db");
    if case == "file" {
        // The file is read-only, its directory is not: SQLite opens it read-only, reads
        // work, writes fail.
        let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
        assert_eq!(storage.load("s").await.unwrap(), turn("kept"));
        let meta = SessionMeta::new();
        for err in [
            storage.append("s", &turn("lost")).await.unwrap_err(),
            storage.save("s", &turn("lost")).await.unwrap_err(),
            storage
                .create_session("new", &meta, &turn("lost"))
                .await
                .unwrap_err(),
            storage.delete("s").await.unwrap_err(),
        ] {
            assert_clear(&err, &path, "read-only");
        }
        assert_eq!(storage.load("s").await.unwrap(), turn("kept"));
        storage.close().await;
    } else {
        // The directory is read-only: SQLite cannot create the shared-memory file a WAL
        // database needs even to be read. Opening says so; `immutable` reads it.
        let err = SqliteStorage::connect(&url(&path)).await.unwrap_err();
        assert_clear(&err, &path, "it is in WAL mode");
        assert!(err.to_string().contains("?immutable=true"), "{err}");
        let immutable = format!("{}?immutable=true", url(&path));
        let storage = SqliteStorage::connect(&immutable).await.unwrap();
        assert_eq!(storage.load("s").await.unwrap(), turn("kept"));
        let err = storage.append("s", &turn("lost")).await.unwrap_err();
        assert_clear(&err, &path, "read-only");
        storage.close().await;
    }
}

/// A read-only database file, and a database in a read-only directory, opened by a user
/// the permissions apply to (`nobody`, in a child process, when the tests run as root):
/// reads work or fail saying why, writes fail clearly and not retryably, and neither
/// file is changed. (In a writable directory SQLite leaves an empty log and a
/// shared-memory file beside a read-only file: removing them takes a write.)
#[cfg(unix)]
#[tokio::test]
async fn a_read_only_file_or_directory_refuses_writes_clearly_and_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };

    let tmp = tempfile::tempdir().unwrap();
    for case in ["file", "directory"] {
        let dir = tmp.path().join(case);
        let path = database_with_a_session(&dir).await;
        if hostile::running_as_root() {
            hostile::hand_to_nobody(tmp.path(), &[&dir, &path]);
        }
        if case == "file" {
            mode(&path, 0o444);
        } else {
            mode(&dir, 0o555);
        }
        let before = std::fs::read(&path).unwrap();
        hostile::run_test_in_child(
            "child_checks_read_only_when_asked",
            READ_ONLY_ENV,
            &format!("{case}|{}", dir.display()),
        );
        assert!(std::fs::read(&path).unwrap() == before, "{case}: changed");
        // A read-only connection cannot remove the log and shared-memory files it opened
        // (that takes a checkpoint); where it could create them they stay, the log empty.
        let log = dir.join("sessions.db-wal");
        let log_len = std::fs::metadata(&log).map_or(0, |metadata| metadata.len());
        assert_eq!(log_len, 0, "{case}: the log holds writes");
        if case == "directory" {
            assert_eq!(entries(&dir), ["sessions.db"], "{case}");
        }
        mode(&dir, 0o755);
    }
}

/// A message of `kib` KiB, numbered.
fn big(i: usize, kib: usize) -> ChatMessage {
    ChatMessage::user(format!("{i:04} {}", "f".repeat(kib * 1024)))
}

/// Appends big messages to `s` until one fails, which must be a clear, not retryable
/// error naming `path`; returns the history acknowledged before it, checked against a
/// load. `saying` is what the error says (the disk is full, or the file may not grow).
async fn append_until_full(storage: &SqliteStorage, path: &Path, saying: &[&str]) -> usize {
    let mut acknowledged = storage.load("s").await.unwrap();
    for i in 0..1000 {
        let message = big(i, 32);
        match storage.append("s", std::slice::from_ref(&message)).await {
            Ok(()) => acknowledged.push(message),
            Err(err) => {
                let text = err.to_string();
                assert!(saying.iter().any(|s| text.contains(s)), "{text}");
                if text.contains("disk full") {
                    assert!(text.contains("nothing of it is stored"), "{text}");
                }
                assert_clear(&err, path, "");
                // The failed write left nothing behind, and the others fail the same way.
                assert_eq!(storage.load("s").await.unwrap(), acknowledged);
                let history = [big(9999, 64)];
                let meta = SessionMeta::new().title("new");
                for err in [
                    storage.save("t", &history).await.unwrap_err(),
                    storage
                        .create_session("u", &meta, &history)
                        .await
                        .unwrap_err(),
                ] {
                    assert_clear(&err, path, "");
                }
                assert_eq!(storage.list_sessions().await.unwrap(), ["s"]);
                return acknowledged.len();
            }
        }
    }
    panic!("1000 appends of 32 KiB fitted: the disk never filled");
}

/// `<directory>` for the child run with a file size limit.
const FILE_SIZE_ENV: &str = "FUSION_SQLITE_TEST_FILE_SIZE";

#[tokio::test]
async fn child_appends_past_the_file_size_limit_when_asked() {
    let Ok(dir) = std::env::var(FILE_SIZE_ENV) else {
        return;
    };
    let path = Path::new(&dir).join("sessions.db");
    let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
    let acknowledged = append_until_full(&storage, &path, &["disk full", "I/O error"]).await;
    std::fs::write(
        Path::new(&dir).join("acknowledged"),
        acknowledged.to_string(),
    )
    .unwrap();
    storage.close().await;
}

/// A full disk fails append, save and create_session clearly (not retryable, naming the
/// file); the session reads back as before the failed write, and once there is room
/// again the next write succeeds. Closing while the disk is still full loses nothing:
/// what was acknowledged is there after reopening. Where a small tmpfs can be mounted
/// (root with `CAP_SYS_ADMIN`) the disk is one (`ENOSPC`, SQLite's "database or disk is
/// full"); otherwise a child process may not grow a file past a limit (`ulimit -f`), the
/// nearest an unprivileged user can get.
#[cfg(unix)]
#[tokio::test]
async fn a_full_disk_fails_writes_clearly_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = hostile::SmallDisk::mount(tmp.path(), "1m") else {
        let path = database_with_a_session(tmp.path()).await;
        let dir = tmp.path().display().to_string();
        let test = "child_appends_past_the_file_size_limit_when_asked";
        hostile::run_child_test_with_file_size_limit(test, FILE_SIZE_ENV, &dir, 512);
        let count = std::fs::read_to_string(tmp.path().join("acknowledged")).unwrap();
        let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
        let mut history = storage.load("s").await.unwrap();
        assert_eq!(history.len().to_string(), count);
        storage.append("s", &turn("after")).await.unwrap();
        history.extend(turn("after"));
        assert_eq!(storage.load("s").await.unwrap(), history);
        storage.close().await;
        return;
    };
    let path = disk.dir.join("sessions.db");
    let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
    storage.append("s", &turn("kept")).await.unwrap();
    let filler = disk.dir.join("filler");
    hostile::fill(&filler);
    append_until_full(&storage, &path, &["disk full"]).await;

    // Room again: the next write succeeds, on the same storage.
    std::fs::remove_file(&filler).unwrap();
    storage.append("s", &turn("after")).await.unwrap();
    let mut expected = storage.load("s").await.unwrap();
    assert_eq!(&expected[expected.len() - 2..], turn("after"));

    // Full again, and closed while full (its last checkpoint may not fit either).
    hostile::fill(&filler);
    let len = append_until_full(&storage, &path, &["disk full"]).await;
    expected = storage.load("s").await.unwrap();
    assert_eq!(expected.len(), len);
    storage.close().await;
    drop(storage);
    std::fs::remove_file(&filler).unwrap();
    let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), expected);
    storage.append("s", &turn("reopened")).await.unwrap();
    storage.close().await;
    drop(storage);
    drop(disk);
}

/// `close` returns only once the file holds every write: the last connection to close
/// copies the log into it and removes the log. A background checkpoint started by the
/// last writes held a reader connection past `close`, so about one close in three left
/// the writes in the log, and a copy of the file alone (a backup made after `close`, as
/// its documentation suggests) lacked them. Rounds, since each close may or may not meet
/// a checkpoint still running.
#[tokio::test]
async fn close_returns_once_the_file_alone_holds_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    for round in 0..20 {
        let path = dir.path().join(format!("round-{round}.db"));
        let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
        let history: Vec<ChatMessage> = (0..130)
            .map(|i| ChatMessage::user(format!("{round}-{i}")))
            .collect();
        // One write per message: past the writes that start a background checkpoint.
        for message in &history {
            storage
                .append("s", std::slice::from_ref(message))
                .await
                .unwrap();
        }
        storage.close().await;
        std::fs::copy(&path, &copy).unwrap();
        let copied = SqliteStorage::connect(&url(&copy)).await.unwrap();
        assert_eq!(copied.load("s").await.unwrap(), history, "round {round}");
        copied.close().await;
        std::fs::remove_file(&copy).unwrap();
    }
}
