//! The writes, statement by statement, and the conditional write's check: what runs inside
//! the transaction of a `save`, `truncate`, `delete`, `write_if` or `update_session`, and
//! the append: one statement (which also creates sessions with their metadata) and, when
//! that statement refuses, a transaction that locks the session first.
//!
//! Generations follow the rules of [`fusion_core::Revision`] exactly as the SQLite
//! backend's: a fresh one ([`new_generation`]) whenever a write creates the session
//! (an append or a save) or rewrites its history (a save, a truncate that shortens it),
//! the old one kept by an append to an existing session, and 0 for a deleted session.
//! Here each statement *returns* the generation it leaves, so the conditional write needs
//! no table of its own of which change leaves which generation.
//!
//! A session that has expired (`crate::expiry`) is absent to every write: the append and
//! the save find their upsert refused and only then remove it and write again, a
//! conditional write removes it after its check, a truncate and a metadata update find
//! nothing.

use fusion_core::sql::{revision_of, to_column};
use fusion_core::{
    Change, Expect, MessageId, Revision, SessionMeta, SessionTimes, from_unix_micros,
    new_generation,
};
use sqlx::{Executor, PgConnection, PgPool, Postgres};

use crate::batch::{Batch, window, window_len};
use crate::expiry;
use crate::sql::{
    APPEND, APPEND_CHECKED, APPEND_WITH_IDS, CREATE, CREATE_WITH_IDS, CUT_TAIL, DELETE_MESSAGES,
    DELETE_SESSION, INSERT_MESSAGES, LAST_IDS, LOCK_REVISION, READ_REVISION, SAVE_SESSION,
    TRUNCATE_SESSION, count,
};

/// Whether an append may add to an existing session or only creates one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Add to the session, creating it when it does not exist ([`APPEND`]).
    Append,
    /// Write only if the session does not exist ([`CREATE`]): `create_session`, or a
    /// conditional write that found it absent. It is created and last written at the
    /// times given (`create_session_with_times`), each at most the server's clock, or
    /// now with `None`.
    Create(Option<SessionTimes>),
}

/// Appends `batch` (not empty) to `session_id` ([`append_once`]), creating the session
/// with a fresh generation and the metadata `meta` when it has none (an existing session
/// keeps its own). With [`Mode::Create`], writes only if the session does not exist, and
/// returns `None` when it does. Messages whose ids the session's last messages hold are
/// left out, whichever path below stores the batch.
///
/// One statement, one round trip ([`append_once`]), unless it did not store the batch
/// (a fingerprint of the batch's ids is on the session's row: a retry, or another id
/// sharing a fingerprint; the row's are unknown; the session has expired; or, with
/// [`Mode::Create`], it exists): then one transaction sorts it out under the row's lock
/// ([`append_locked`]).
pub(crate) async fn append(
    pool: &PgPool,
    session_id: &str,
    batch: &Batch<'_>,
    meta: &SessionMeta,
    mode: Mode,
) -> sqlx::Result<Option<u64>> {
    if let Appended::Stored(generation) = append_once(pool, session_id, batch, meta, mode).await? {
        return Ok(Some(generation));
    }
    // Dropping an uncommitted transaction (an error, a cancelled call) rolls it back.
    let mut tx = pool.begin().await?;
    let generation = append_locked(&mut tx, session_id, batch, meta, mode).await?;
    tx.commit().await?;
    Ok(generation)
}

/// Creates `session_id` with `meta` and `batch` (not empty) at `times` (`None`: now) if it
/// does not exist ([`append`] in [`Mode::Create`]); `Err` with its revision, writing
/// nothing, when it does. The body of `create_session` and `create_session_with_times`.
pub(crate) async fn create(
    pool: &PgPool,
    session_id: &str,
    batch: &Batch<'_>,
    meta: &SessionMeta,
    times: Option<SessionTimes>,
) -> sqlx::Result<Result<u64, Revision>> {
    match append(pool, session_id, batch, meta, Mode::Create(times)).await? {
        Some(generation) => Ok(Ok(generation)),
        None => Ok(Err(revision(pool, session_id).await?)),
    }
}

/// What the one statement of an append did ([`append_once`]).
#[derive(Debug)]
pub(crate) enum Appended {
    /// It stored the batch, leaving this generation.
    Stored(u64),
    /// It stored nothing: a fingerprint of the batch is on the session's row or the
    /// row's are unknown (the ids must be checked under the row's lock), the session has
    /// expired, or it exists and the append was a [`Mode::Create`].
    Refused,
}

/// A row as [`LOCK_REVISION`] reads it: generation, message count, whether it has
/// expired, and `updated_at` in microseconds since the Unix epoch.
type Locked = (i64, i64, bool, i64);

/// A session's revision and the ids of its last messages, read together.
#[derive(Debug)]
pub(crate) struct Seen {
    generation: i64,
    count: i64,
    /// The ids of the last [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW) messages that
    /// have one, oldest first.
    ids: Vec<String>,
}

/// An append inside `tx`, the session's row locked first ([`LOCK_REVISION`]): a session
/// that has expired is removed and the batch appended as a fresh one (this transaction
/// holds the deleted row, so a writer that would create the session waits for it); an
/// existing one refuses a [`Mode::Create`] append and otherwise takes the exact check with
/// ids read after the lock ([`LAST_IDS`], [`append_checked`]); an absent one is created
/// by [`append_once`].
///
/// Each round but the last follows a change that another writer made after this
/// transaction's lookup (it created the session), after which this transaction holds
/// the row's lock or has deleted the row: three rounds at most.
pub(crate) async fn append_locked(
    tx: &mut PgConnection,
    session_id: &str,
    batch: &Batch<'_>,
    meta: &SessionMeta,
    mode: Mode,
) -> sqlx::Result<Option<u64>> {
    loop {
        let row: Option<Locked> = sqlx::query_as(LOCK_REVISION)
            .bind(session_id)
            .fetch_optional(&mut *tx)
            .await?;
        let seen = match row {
            Some((_, _, true, _)) => {
                remove(tx, session_id).await?;
                continue;
            }
            Some(_) if mode != Mode::Append => return Ok(None),
            Some((generation, count, ..)) => seen_locked(tx, session_id, generation, count).await?,
            None => match append_once(&mut *tx, session_id, batch, meta, mode).await? {
                Appended::Stored(generation) => return Ok(Some(generation)),
                Appended::Refused => continue,
            },
        };
        if let Some(generation) = append_checked(&mut *tx, session_id, batch, &seen).await? {
            return Ok(Some(generation));
        }
    }
}

/// What the exact check compares a batch with: the revision `generation` and `count` of
/// the session whose row `tx` has locked, and the ids of its last messages, read in a
/// statement of its own ([`LAST_IDS`]) so that its snapshot, taken after the lock, holds
/// every message an appender committed before.
async fn seen_locked(
    tx: &mut PgConnection,
    session_id: &str,
    generation: i64,
    count: i64,
) -> sqlx::Result<Seen> {
    let ids: Option<Vec<String>> = sqlx::query_scalar(LAST_IDS)
        .bind(session_id)
        .bind(i64::from(window_len()))
        .fetch_one(&mut *tx)
        .await?;
    Ok(Seen {
        generation,
        count,
        ids: ids.unwrap_or_default(),
    })
}

/// The exact check: store the messages of `batch` whose ids are not among the ids
/// `seen` read, with the window rebuilt from those ids and the ones stored, if the
/// session is still at the revision `seen` was read at ([`APPEND_CHECKED`]). `None` when
/// it is not (a writer came in between), or has expired.
pub(crate) async fn append_checked<'c>(
    executor: impl Executor<'c, Database = Postgres>,
    session_id: &str,
    batch: &Batch<'_>,
    seen: &Seen,
) -> sqlx::Result<Option<u64>> {
    // An id edited by hand into something that is not an id matches no message's id.
    let stored: Vec<MessageId> = seen.ids.iter().filter_map(|id| id.parse().ok()).collect();
    let (bodies, ids) = batch.unstored(&stored);
    let window = window(stored.iter().chain(ids.iter().copied()));
    let generation: Option<i64> = sqlx::query_scalar(APPEND_CHECKED)
        .bind(session_id)
        .bind(count(bodies.len()))
        .bind(&bodies)
        .bind(&window)
        .bind(seen.generation)
        .bind(seen.count)
        .fetch_optional(executor)
        .await?;
    Ok(generation.map(i64::cast_unsigned))
}

/// The one statement of an append: [`APPEND_WITH_IDS`] when a message of `batch` has an
/// id, else [`APPEND`], which checks no id; for a [`Mode::Create`], [`CREATE_WITH_IDS`]
/// or [`CREATE`], which also take its times.
pub(crate) async fn append_once<'c>(
    executor: impl Executor<'c, Database = Postgres>,
    session_id: &str,
    batch: &Batch<'_>,
    meta: &SessionMeta,
    mode: Mode,
) -> sqlx::Result<Appended> {
    // $1-$10 as every statement takes them; $11-$13 the check's, for those with ids; the
    // creation's times last.
    let (expires_at, idle) = expiry::bound(meta.expiry.as_ref());
    let statement = match (mode, &batch.fingerprints) {
        (Mode::Append, Some(_)) => APPEND_WITH_IDS,
        (Mode::Append, None) => APPEND,
        (Mode::Create(_), Some(_)) => CREATE_WITH_IDS,
        (Mode::Create(_), None) => CREATE,
    };
    let query = sqlx::query_scalar(statement)
        .bind(session_id)
        .bind(count(batch.bodies.len()))
        .bind(to_column(new_generation()))
        .bind(&batch.bodies)
        .bind(meta.owner.as_deref())
        .bind(meta.title.as_deref())
        .bind(stored_tags(meta))
        .bind(meta.data_json())
        .bind(expires_at)
        .bind(idle);
    let query = match &batch.fingerprints {
        Some(fingerprints) => query
            .bind(fingerprints)
            .bind(&batch.window)
            .bind(window_len()),
        None => query,
    };
    let query = match mode {
        Mode::Create(times) => {
            let [created, updated] = expiry::given(times);
            query.bind(created).bind(updated)
        }
        Mode::Append => query,
    };
    let generation: Option<i64> = query.fetch_optional(executor).await?;
    Ok(generation.map_or(Appended::Refused, |g| Appended::Stored(g.cast_unsigned())))
}

/// The tags as the `tags` column stores them: NULL for none, so untagged sessions stay
/// out of the partial GIN index `sessions_tags`.
pub(crate) fn stored_tags(meta: &SessionMeta) -> Option<&[String]> {
    (!meta.tags.is_empty()).then_some(meta.tags.as_slice())
}

/// The revision of `session_id` as a statement of its own sees it: what a refused
/// creation reports.
pub(crate) async fn revision<'c>(
    executor: impl Executor<'c, Database = Postgres>,
    session_id: &str,
) -> sqlx::Result<Revision> {
    let row = sqlx::query_as(READ_REVISION)
        .bind(session_id)
        .fetch_optional(executor)
        .await?;
    Ok(revision_of(row))
}

/// Whether a save is the session's latest write or a rewrite that keeps its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Times {
    /// It moves `updated_at` and an idle expiry.
    Write,
    /// An existing session keeps both (`Change::Rewrite`).
    Keep,
}

/// Replaces the history of `session_id` with `batch` (not empty) under a fresh
/// generation, which it returns, and the session's window with the fingerprints of the
/// last ids of `batch`. With `must_create`, writes only if the session does not exist, and returns
/// `None` when it does. A session that has expired is removed first (its upsert refused,
/// the row locked), and the history written as a fresh session. With [`Times::Keep`] an
/// existing session keeps its `updated_at` and expiry.
pub(crate) async fn replace(
    tx: &mut PgConnection,
    session_id: &str,
    batch: &Batch<'_>,
    must_create: bool,
    times: Times,
) -> sqlx::Result<Option<u64>> {
    let fresh = new_generation();
    let save = || {
        sqlx::query_scalar::<_, i64>(SAVE_SESSION)
            .bind(session_id)
            .bind(count(batch.bodies.len()))
            .bind(to_column(fresh))
            .bind(must_create)
            .bind(&batch.window)
            .bind(times == Times::Keep)
    };
    let mut locked = save().fetch_optional(&mut *tx).await?;
    if locked.is_none() && !must_create {
        // Refused only because the session has expired: its row is locked, so it still has.
        remove(tx, session_id).await?;
        locked = save().fetch_optional(&mut *tx).await?;
    }
    if locked.is_none() {
        return Ok(None);
    }
    sqlx::query(DELETE_MESSAGES)
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(INSERT_MESSAGES)
        .bind(session_id)
        .bind(&batch.bodies)
        .execute(&mut *tx)
        .await?;
    Ok(Some(fresh))
}

/// Keeps the first `len` (more than 0) messages of `session_id` ([`TRUNCATE_SESSION`],
/// which leaves its window unknown, then [`CUT_TAIL`]). Returns the fresh generation
/// when that shortened the history, `None` when there was nothing to cut.
pub(crate) async fn truncate(
    tx: &mut PgConnection,
    session_id: &str,
    len: usize,
) -> sqlx::Result<Option<u64>> {
    let fresh = new_generation();
    let cut: Option<i64> = sqlx::query_scalar(TRUNCATE_SESSION)
        .bind(session_id)
        .bind(count(len))
        .bind(to_column(fresh))
        .fetch_optional(&mut *tx)
        .await?;
    if cut.is_none() {
        return Ok(None);
    }
    sqlx::query(CUT_TAIL)
        .bind(session_id)
        .bind(count(len))
        .execute(&mut *tx)
        .await?;
    Ok(Some(fresh))
}

/// Deletes `session_id` from both tables: its row ([`DELETE_SESSION`], which takes the
/// row's lock), then, only if there was one, its messages ([`DELETE_MESSAGES`]). With no
/// row there is nothing of the session to remove, and the messages of a writer that
/// creates it after the first statement's snapshot, committed before the second's, are
/// that new session's: deleting them would leave its row counting messages it no longer
/// holds. (With a row, this transaction holds its lock, and a writer that would create
/// the session again waits for the commit.)
pub(crate) async fn remove(tx: &mut PgConnection, session_id: &str) -> sqlx::Result<()> {
    let deleted = sqlx::query(DELETE_SESSION)
        .bind(session_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    #[cfg(test)]
    crate::races::pause_point(session_id).await;
    if deleted == 0 {
        return Ok(());
    }
    sqlx::query(DELETE_MESSAGES)
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A conditional write inside the transaction `tx`: lock the session's row and read its
/// revision and `updated_at` ([`LOCK_REVISION`]), then apply `change` (whose messages are
/// `batch`) if `expected` admits it. `Ok(generation after)` means the caller commits;
/// `Err(found)` means the write was refused at that revision and the caller rolls back. A
/// session that has expired counts as absent, and is removed before `change` is applied.
///
/// The row lock holds off every other writer of an existing session until the
/// transaction ends, a metadata update (`crate::update`, which locks the row first)
/// included: the `updated_at` that [`Expect::UnwrittenSince`] was checked against is
/// still the session's when `change` lands. An absent session has no row to lock, so a
/// write that would create it does so only if no other writer did in the meantime
/// (`must_create`), and is refused otherwise.
pub(crate) async fn conditional(
    tx: &mut PgConnection,
    session_id: &str,
    expected: Expect,
    change: Change<'_>,
    batch: &Batch<'_>,
) -> sqlx::Result<Result<u64, Revision>> {
    let row: Option<Locked> = sqlx::query_as(LOCK_REVISION)
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await?;
    let expired = row.is_some_and(|(_, _, expired, _)| expired);
    let live = row.filter(|_| !expired);
    let found = revision_of(live.map(|(generation, count, ..)| (generation, count)));
    // Read by the statement that took the lock, so no metadata update moves it before
    // this transaction ends; compared exactly, in the microseconds it is stored in.
    let updated_at = || live.map(|(.., updated_us)| from_unix_micros(updated_us));
    if !expected.is_met_by(found.generation, || found.len, updated_at) {
        return Ok(Err(found));
    }
    if expired {
        remove(tx, session_id).await?;
    }
    let must_create = !found.exists();
    let mode = if must_create {
        Mode::Create(None)
    } else {
        Mode::Append
    };
    let after = match change {
        Change::Append([]) => Some(found.generation),
        Change::Append(_) => {
            let none = SessionMeta::new();
            match append_once(&mut *tx, session_id, batch, &none, mode).await? {
                Appended::Stored(generation) => Some(generation),
                // A session created by another writer after the check.
                Appended::Refused if must_create => None,
                // Its ids, read under this transaction's lock: the guard holds.
                Appended::Refused => {
                    let (generation, count) = (to_column(found.generation), count(found.len));
                    let seen = seen_locked(tx, session_id, generation, count).await?;
                    append_checked(&mut *tx, session_id, batch, &seen).await?
                }
            }
        }
        Change::Truncate(0) | Change::Replace([]) | Change::Rewrite([]) => {
            remove(tx, session_id).await?;
            Some(0)
        }
        Change::Truncate(len) => Some(
            truncate(tx, session_id, len)
                .await?
                .unwrap_or(found.generation),
        ),
        Change::Replace(_) => replace(tx, session_id, batch, must_create, Times::Write).await?,
        Change::Rewrite(_) => replace(tx, session_id, batch, must_create, Times::Keep).await?,
    };
    match after {
        Some(generation) => Ok(Ok(generation)),
        // Another writer created the session after the check: report what it wrote. This
        // statement's snapshot is newer than the refused write's, so it sees that row.
        None => Ok(Err(revision(&mut *tx, session_id).await?)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fusion_core::testkit::{StorageHarness, said};
    use fusion_core::{Expiry, SessionMeta, SessionTimes, from_unix_micros};
    use sqlx::Connection;

    use super::*;

    /// A creation stores given times no later than `now()` of its own transaction, the
    /// clock every write stores: a time one microsecond past it is stored as it, one
    /// microsecond before it is kept, and an idle expiry counts from what was stored.
    /// In a transaction of the test's own, whose `now()` the test reads first.
    #[tokio::test]
    async fn given_times_are_clamped_to_the_servers_clock_of_the_write() {
        let Some(harness) = crate::testing::harness().await else {
            return;
        };
        let _storage = harness.open().await.unwrap();
        let mut raw = harness.raw().await;
        let mut tx = raw.begin().await.unwrap();
        let now: i64 = sqlx::query_scalar(concat!("SELECT ", expiry::now_us!()))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let hour = Duration::from_secs(3600);
        let times = SessionTimes::new(from_unix_micros(now - 1), from_unix_micros(now + 1));
        let meta = SessionMeta::new().expiry(Expiry::Idle(hour));
        let messages = said("a");
        let batch = Batch::of("s", &messages).unwrap();
        let mode = Mode::Create(Some(times));
        let created = append_once(&mut *tx, "s", &batch, &meta, mode)
            .await
            .unwrap();
        assert!(matches!(created, Appended::Stored(_)), "{created:?}");
        let stored: (i64, i64, i64) = sqlx::query_as(concat!(
            "SELECT ",
            expiry::micros!("created_at"),
            ", ",
            expiry::micros!("updated_at"),
            ", expires_at FROM sessions WHERE id = 's'"
        ))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        let idle = i64::try_from(hour.as_micros()).unwrap();
        assert_eq!(stored, (now - 1, now, now + idle));
        tx.rollback().await.unwrap();
    }
}
