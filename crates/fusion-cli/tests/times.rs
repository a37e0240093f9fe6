//! A session keeps its creation and last write when it moves: `fusion migrate` copies
//! them to the target, and a `json` export records them for `sessions import` to give
//! back, run as processes between real file-system and SQLite storage. Every time is a
//! whole millisecond, the precision every backend keeps.
//!
//! This process and the `fusion` processes take turns on one SQLite file: each storage this
//! process opens is closed before it goes on ([`with_storage`]), so no process finds the
//! file held by connections still closing on their own threads.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{block_on, conversation, fails, ok};
use fusion::ChatMessage;
use fusion::storage::{
    ConversationStorage, Expiry, SessionInfo, SessionMeta, SessionOrder, SessionQuery,
    SessionTimes, SqliteStorage, StorageType,
};

const DAY: Duration = Duration::from_secs(86_400);

/// Whole milliseconds, `days` days before now.
fn days_ago(days: u32) -> SystemTime {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    UNIX_EPOCH + Duration::from_millis(millis) - DAY * days
}

/// Runs `use_it` on the storage at `url` and, for SQLite, closes it before returning.
/// Dropped, a SQLite storage closes its connections later, on their own threads (the
/// runtime that would close them is gone), so the next `fusion` process could open the
/// file while they still held it, or checkpointed it on their way out: how long that
/// lasts is the scheduler's, and on a loaded machine it outlasted the opening's wait.
fn with_storage<T>(url: &str, use_it: impl AsyncFnOnce(&dyn ConversationStorage) -> T) -> T {
    block_on(async {
        match url.parse::<StorageType>().unwrap() {
            StorageType::Sqlite(url) => {
                let store = SqliteStorage::connect(&url).await.unwrap();
                let got = use_it(&store).await;
                store.close().await;
                got
            }
            other => use_it(other.open().await.unwrap().as_ref()).await,
        }
    })
}

/// Creates `id` in `url` with `meta`, as if created `created` and last written `updated`
/// days ago.
fn create(url: &str, id: &str, meta: &SessionMeta, (created, updated): (u32, u32)) {
    let times = SessionTimes::new(days_ago(created), days_ago(updated));
    with_storage(url, async |store| {
        store
            .create_session_with_times(id, meta, &conversation(1)[..2], times)
            .await
            .expect("creates with times");
    });
}

/// Every session of `url`, newest first, as `session_info` reports them.
fn newest_first(url: &str) -> Vec<SessionInfo> {
    with_storage(url, async |store| {
        let query = SessionQuery::new()
            .order(SessionOrder::UpdatedDesc)
            .limit(100);
        store.list_page(&query).await.unwrap().sessions
    })
}

/// The messages of session `id` in `url`.
fn load(url: &str, id: &str) -> Vec<ChatMessage> {
    with_storage(url, async |store| store.load(id).await.unwrap())
}

fn times(infos: &[SessionInfo]) -> Vec<(String, Option<SessionTimes>)> {
    infos
        .iter()
        .map(|info| (info.id.clone(), SessionTimes::of(info)))
        .collect()
}

fn migrate_keeps_the_times(from: &str, to: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let idle = SessionMeta::new().expiry(Expiry::Idle(30 * DAY));
    create(from, "old", &SessionMeta::new().title("Old"), (400, 300));
    create(from, "idle", &idle, (20, 10));
    create(from, "recent", &SessionMeta::new(), (3, 1));
    let source = newest_first(from);
    assert_eq!(source.len(), 3);

    let out = ok(tmp.path(), ["migrate", "--from", from, "--to", to]);
    assert!(out.contains("3 copied"), "{out}");
    let copied = newest_first(to);
    assert_eq!(
        times(&copied),
        times(&source),
        "the same times, in the same order"
    );
    let idle_copy = copied.iter().find(|info| info.id == "idle").unwrap();
    assert_eq!(
        idle_copy.expires_at,
        Some(idle_copy.updated_at.unwrap() + 30 * DAY),
        "an idle expiry still counts from the last write"
    );
}

#[test]
fn migrate_from_fs_to_sqlite_keeps_each_sessions_times() {
    let tmp = tempfile::tempdir().unwrap();
    let from = format!("file://{}", tmp.path().join("sessions").display());
    let to = format!("sqlite://{}", tmp.path().join("target.db").display());
    migrate_keeps_the_times(&from, &to);
}

#[test]
fn migrate_from_sqlite_to_fs_keeps_each_sessions_times() {
    let tmp = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", tmp.path().join("source.db").display());
    let to = format!("file://{}", tmp.path().join("sessions").display());
    migrate_keeps_the_times(&from, &to);
}

#[test]
fn an_export_keeps_the_times_for_its_import() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let from = format!("sqlite://{}", dir.join("source.db").display());
    let to = format!("file://{}", dir.join("sessions").display());
    create(&from, "kept", &SessionMeta::new().title("Kept"), (40, 2));
    let file = dir.join("kept.json");
    let file = file.to_str().unwrap();
    ok(
        dir,
        ["sessions", "export", "kept", "-o", file, "--storage", &from],
    );
    let markdown = ok(
        dir,
        [
            "sessions",
            "export",
            "kept",
            "--format",
            "markdown",
            "--storage",
            &from,
        ],
    );
    assert!(
        markdown.contains("Created: ") && markdown.contains("Last written: "),
        "{markdown}"
    );

    let out = ok(dir, ["sessions", "import", file, "--storage", &to]);
    assert!(out.contains("imported session kept"), "{out}");
    assert_eq!(times(&newest_first(&to)), times(&newest_first(&from)));
    assert_eq!(
        load(&to, "kept"),
        load(&from, "kept"),
        "the very messages, none given an id"
    );

    // Imported over an existing session, the export's times do not replace its own
    // creation: the replacement is its last write.
    let before = newest_first(&to)[0].clone();
    ok(
        dir,
        ["sessions", "import", file, "--replace", "--storage", &to],
    );
    let replaced = &newest_first(&to)[0];
    assert_eq!(replaced.created_at, before.created_at);
    assert!(replaced.updated_at > before.updated_at);
}

#[test]
fn an_export_whose_idle_expiry_ran_out_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let from = format!("sqlite://{}", dir.join("source.db").display());
    let to = format!("sqlite://{}", dir.join("target.db").display());
    let idle = SessionMeta::new().expiry(Expiry::Idle(DAY));
    create(&from, "lapsing", &idle, (3, 0));
    let file = dir.join("lapsing.json");
    let file = file.to_str().unwrap();
    ok(
        dir,
        [
            "sessions",
            "export",
            "lapsing",
            "-o",
            file,
            "--storage",
            &from,
        ],
    );
    // The export as written two days later: its last write two days back.
    let text = std::fs::read_to_string(file).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["updated_at"] = serde_json::json!(fusion::api::time::rfc3339_exact(days_ago(2)));
    std::fs::write(file, doc.to_string()).unwrap();

    let err = fails(dir, ["sessions", "import", file, "--storage", &to]);
    assert!(
        err.contains("its idle expiry ran out at ") && err.contains("1d after its last write"),
        "{err}"
    );
    assert!(newest_first(&to).is_empty(), "nothing imported");
}
