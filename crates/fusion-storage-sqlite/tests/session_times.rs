//! `create_session_with_times` in this backend beyond the shared suite, whose times are all
//! whole milliseconds: a time with microseconds is stored as its whole millisecond, as a
//! write's own time is; a time ahead of the clock is stored as the write's own
//! millisecond; an idle expiry counts from the `updated_at` stored, to the microsecond; a
//! copy whose expiry has passed is stored expired and gives way to the next creation; a
//! failed copy names its operation. Each test runs on a database file (writes through the
//! direct path), on `sqlite::memory:` and on a caller's pool (both through sqlx).

mod paths;

use std::time::{Duration, SystemTime};

use fusion_core::testkit::said;
use fusion_core::{
    ConversationStorage, Expiry, SessionMeta, SessionTimes, from_unix_micros, unix_micros,
};
use fusion_storage_sqlite::SqliteStorage;
use paths::every_path;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// `span` in microseconds, as the `expiry_idle` column holds it.
fn micros(span: Duration) -> i64 {
    i64::try_from(span.as_micros()).unwrap()
}

/// The instant `micros` after the Unix epoch.
fn at(micros: i64) -> SystemTime {
    from_unix_micros(micros)
}

/// The `(created_at, updated_at, expires_at)` columns of `id`: milliseconds, milliseconds
/// and microseconds.
async fn stored_times(storage: &SqliteStorage, id: &str) -> (i64, i64, Option<i64>) {
    sqlx::query_as("SELECT created_at, updated_at, expires_at FROM sessions WHERE id = ?1")
        .bind(id)
        .fetch_one(storage.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_given_time_is_stored_in_whole_milliseconds_and_an_idle_expiry_counts_from_it() {
    let idle = SessionMeta::new().expiry(Expiry::Idle(DAY));
    for (_dir, storage) in every_path().await {
        let now = unix_micros(SystemTime::now());
        // Microseconds past a whole millisecond, which the time columns do not keep.
        let (created, updated) = (
            now - 3 * micros(DAY) + 123_456,
            now - micros(HOUR) + 789_999,
        );
        let times = SessionTimes::new(at(created), at(updated));
        storage
            .create_session_with_times("copied", &idle, &said("a"), times)
            .await
            .unwrap();

        let (created_ms, updated_ms) = (created.div_euclid(1000), updated.div_euclid(1000));
        let expires_at = updated_ms * 1000 + micros(DAY);
        assert_eq!(
            stored_times(&storage, "copied").await,
            (created_ms, updated_ms, Some(expires_at)),
            "{}",
            storage.database()
        );
        let info = storage.session_info("copied").await.unwrap().unwrap();
        assert_eq!(
            (info.created_at, info.updated_at, info.expires_at),
            (
                Some(at(created_ms * 1000)),
                Some(at(updated_ms * 1000)),
                Some(at(expires_at))
            )
        );
    }
}

#[tokio::test]
async fn a_time_ahead_of_the_clock_is_stored_as_the_writes_own_millisecond() {
    let idle = SessionMeta::new().expiry(Expiry::Idle(HOUR));
    for (_dir, storage) in every_path().await {
        let before = unix_micros(SystemTime::now());
        let ahead = SessionTimes::new(at(before + micros(DAY)), at(before + 2 * micros(DAY)));
        storage
            .create_session_with_times("ahead", &idle, &said("a"), ahead)
            .await
            .unwrap();
        let after = unix_micros(SystemTime::now());

        let (created, updated, expires_at) = stored_times(&storage, "ahead").await;
        assert_eq!(
            created, updated,
            "both are the one clock reading of the write"
        );
        assert!(
            before.div_euclid(1000) <= updated && updated <= after.div_euclid(1000),
            "{updated} ms, written between {before} and {after} µs"
        );
        assert_eq!(
            expires_at,
            Some(updated * 1000 + micros(HOUR)),
            "the idle expiry counts from the last write stored, not the one given"
        );
    }
}

#[tokio::test]
async fn a_copy_whose_expiry_has_passed_is_stored_expired_and_gives_way_to_the_next() {
    let idle = SessionMeta::new().expiry(Expiry::Idle(HOUR));
    for (_dir, storage) in every_path().await {
        let now = unix_micros(SystemTime::now());
        let lapsed = SessionTimes::new(at(now - micros(DAY)), at(now - 2 * micros(HOUR)));
        let old = idle.clone().tags(["old"]);
        storage
            .create_session_with_times("lapsed", &old, &said("a"), lapsed)
            .await
            .unwrap();
        let (_, updated, expires_at) = stored_times(&storage, "lapsed").await;
        assert_eq!(expires_at, Some(updated * 1000 + micros(HOUR)));
        assert_eq!(storage.session_info("lapsed").await.unwrap(), None);

        let recent = SessionTimes::new(at(now - micros(DAY)), at(now - micros(HOUR) / 2));
        let new = idle.clone().tags(["new"]);
        storage
            .create_session_with_times("lapsed", &new, &said("b"), recent)
            .await
            .unwrap();
        assert_eq!(storage.load("lapsed").await.unwrap(), said("b"));
        let tags: Vec<String> =
            sqlx::query_scalar("SELECT tag FROM session_tags WHERE session_id = 'lapsed'")
                .fetch_all(storage.pool())
                .await
                .unwrap();
        assert_eq!(tags, ["new"], "the expired copy's rows went with it");
    }
}

#[tokio::test]
async fn a_failed_copy_names_its_operation() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ro.db").display());
    SqliteStorage::connect(&url).await.unwrap().close().await;
    let read_only = SqliteStorage::connect(&format!("{url}?mode=ro"))
        .await
        .unwrap();
    let now = SystemTime::now();
    let err = read_only
        .create_session_with_times(
            "s",
            &SessionMeta::new(),
            &said("a"),
            SessionTimes::new(now, now),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("create_session_with_times of session \"s\""),
        "{err}"
    );
}
