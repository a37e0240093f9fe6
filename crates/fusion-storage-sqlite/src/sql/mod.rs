//! The SQL of every operation, and the write model both paths run: [`Write`], the values
//! it binds and how a stored row becomes a message again.
//!
//! Each write is one `BEGIN IMMEDIATE` transaction ([`BEGIN_WRITE`], spelled here only) of
//! the statements of one [`WriteSql`] (`statements.rs`), defined once by `write_sql!` and
//! run either statement by statement (`crate::direct`) or as one script
//! (`crate::pooled`). A write with a [`Check`] first reads the session's row inside the
//! same transaction and lets the check decide ([`Verdict`]) whether its statements run or
//! it rolls back: a conditional write or a creation ([`Write::conditional`],
//! [`Write::create`]) reads its revision ([`READ_REVISION_TO_WRITE`]; under `UnwrittenSince`,
//! with `updated_at`: [`READ_REVISION_AND_UPDATED`](check::READ_REVISION_AND_UPDATED)) and
//! `crate::generation` decides; an append whose messages carry ids, plain or conditional,
//! also reads the fingerprints of the session's last ids ([`READ_REVISION_AND_RECENT`]),
//! and the ids themselves only when those cannot decide ([`READ_LAST_IDS`]), and binds
//! only the messages not stored and the new fingerprints (`dedup.rs`), unless, on the
//! direct path, a plain append's own statement decided first ([`Write::deciding`]); a
//! metadata update ([`Write::update_meta`]) reads its facts ([`READ_INFO`]) and
//! `crate::meta` decides, and what it decided is bound after the write's own values. A
//! check that finds the session expired (`crate::expiry`) counts it as absent and has
//! [`REMOVE`] run first. A write without a check learns that its session had expired from
//! its own last statement ([`Ends`]).
//! Parameters: ?1 the session id, ?2 now in Unix microseconds (stored as `?2 / 1000` in
//! the millisecond columns), ?3 a message count, ?4 a fresh generation (stored where
//! `crate::generation` says a write stores one), ?5 the messages as one JSON array whose
//! elements are each message as `serde_json` writes it, ?6 the session's `recent_ids`
//! after the write (NULL: an append that keeps it; the batch's fingerprints, for the
//! statement that records them itself). A creation ([`CREATE`]), a
//! metadata update ([`UPDATE_META`]) and a purge ([`PURGE`]) number their own.
//! `json_each(?5)` yields the elements in order, with `key` the index and `value` an
//! object's JSON text: minified JSON goes in, so the same text comes out and is what the
//! `message` column stores (`tests/write_scripts.rs` checks it).
//!
//! sqlx binds a script's parameters statement by statement, and a slot a statement skips
//! (?2 in a statement that uses only ?1 and ?3) takes the next value of a count that runs
//! on through the script; once that count passes the last value, sqlx stops binding the
//! statement, and its later parameters are silently NULL. So each write's parameters are
//! numbered for few gaps, and a unit test below replays sqlx's rule on every write.

use std::borrow::Cow;

use fusion_core::sql::{corrupt_row, missing_row, to_column};
use fusion_core::{
    Change, ChatMessage, Expect, MetaUpdate, Result, SessionMeta, SessionTimes, StoredExpiry,
    new_generation,
};

use crate::error::{BACKEND, not_text};
use crate::expiry::{millis, now_micros};
use crate::generation::Condition;
pub(crate) use crate::meta::READ_INFO;
use crate::meta::read_info;

/// The statement that opens every write, as a literal for `write_sql!`'s `concat!`.
macro_rules! begin_write {
    () => {
        "BEGIN IMMEDIATE"
    };
}

/// Defines a [`WriteSql`] from its statements, so every form comes from one text.
macro_rules! write_sql {
    (bounded: $bounded:expr, ends: $ends:expr $(, $statement:expr)* $(,)?) => {
        WriteSql {
            statements: &[$($statement),*],
            script: concat!(begin_write!(), "; ", $($statement, "; ",)* "COMMIT"),
            counted: concat!(begin_write!(), "; ", $($statement, "; ",)* "SELECT changes(); COMMIT"),
            rest: concat!($($statement, "; ",)* "COMMIT"),
            body: concat!($($statement, "; ",)*),
            bounded: $bounded,
            ends: $ends,
        }
    };
}

mod batch;
mod check;
mod dedup;
mod reads;
mod statements;

pub(crate) use check::{Check, Found, Go, Verdict, Written};
pub(crate) use dedup::{
    BEGIN_AND_READ_REVISION_AND_RECENT, Kept, READ_LAST_IDS, READ_REVISION_AND_RECENT,
    is_undecided, register,
};
use dedup::{Dedup, recent_of};
pub(crate) use reads::{
    LIST_SESSIONS, LOAD_ARRAY, LOAD_REVISION_ARRAY, LOAD_ROWS, MESSAGE_SEPARATOR,
};
use statements::{
    APPEND, APPEND_RECORDING_IDS, CREATE, NOTHING, PURGE, REWRITE, SAVE, TRUNCATE, UPDATE_META,
};
pub(crate) use statements::{REMOVE, REMOVE_EXPIRED};
use statements::{time_holds, times_hold};

/// Every write starts with this, so the transaction holds SQLite's write lock from its
/// first statement. A plain (deferred) `BEGIN` would start as a reader and fail with
/// `SQLITE_BUSY` when upgrading to a writer while another writer is active, which the busy
/// timeout cannot wait out; `IMMEDIATE` makes concurrent writers queue instead.
pub(crate) const BEGIN_WRITE: &str = begin_write!();

/// The statement that reads a session's revision, as a literal for `concat!`.
macro_rules! read_revision {
    () => {
        "SELECT generation, message_count, expires_at FROM sessions WHERE id = ?1"
    };
}

/// One session's revision, `(generation, message_count)`, and its `expires_at`, or no row
/// when it is absent: the check of a conditional write (inside its transaction) and the
/// first read of `load_revision` (in the same read transaction as the rows), each of which
/// counts an expired row as absent. One lookup of the `sessions` row's key;
/// `message_count` is exact (the seqs are `0..message_count`), so no message is counted.
pub(crate) const READ_REVISION: &str = read_revision!();

/// [`READ_REVISION`] for a write's check: only if the row's times hold (`times_hold!`),
/// else `Corrupt` naming the column, so a write its check refuses (a wrong expectation, a
/// creation of one that exists) says so too, not a conflict no reload and retry resolves.
pub(crate) const READ_REVISION_TO_WRITE: &str = concat!(read_revision!(), " AND ", times_hold!());

/// A checked write's first round trip on the sqlx path: the lock, [`READ_REVISION_TO_WRITE`].
pub(crate) const BEGIN_AND_READ_REVISION: &str = concat!(
    begin_write!(),
    "; ",
    read_revision!(),
    " AND ",
    times_hold!()
);

/// A metadata update's first round trip on the sqlx path: take the write lock and read the
/// session's facts ([`READ_INFO`]).
pub(crate) const BEGIN_AND_READ_INFO: &str = concat!(begin_write!(), "; ", read_info!());

/// One write transaction's SQL, in the forms its two runners need.
#[derive(Debug)]
pub(crate) struct WriteSql {
    /// The statements between [`BEGIN_WRITE`] and `COMMIT`, for stepping one by one.
    pub(crate) statements: &'static [&'static str],
    /// The same wrapped as one `BEGIN IMMEDIATE; ...; COMMIT` script, for sqlx.
    pub(crate) script: &'static str,
    /// [`script`](Self::script) with `SELECT changes()` before `COMMIT`: the one row it
    /// returns is what the last statement changed, for a write whose [`Ends`] asks.
    pub(crate) counted: &'static str,
    /// The statements and `COMMIT` without the `BEGIN`, for sqlx once a conditional write
    /// has begun and checked the session ([`BEGIN_AND_READ_REVISION`]).
    pub(crate) rest: &'static str,
    /// The statements alone, each followed by `; `, to run before another write's
    /// [`rest`](Self::rest) in one script.
    pub(crate) body: &'static str,
    /// Whether its work grows only with the values bound to it, never with what is already
    /// stored: only such a write, and a small one, may run on an async task's own thread.
    pub(crate) bounded: bool,
    /// What the rows its last statement changed tell.
    pub(crate) ends: Ends,
}

/// What the number of rows a write's last statement changed tells its runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ends {
    /// Nothing.
    Written,
    /// None changed: the statements met a session expired at ?2 and wrote nothing. The
    /// runner then removes it ([`REMOVE_EXPIRED`]) and runs them again, which writes a
    /// fresh session: in the same transaction on the direct path, in a second one on the
    /// pool. A session that has not expired always changes a row.
    UnlessExpired,
    /// It is the result: how many sessions a purge deleted ([`Written::Purged`]).
    Counted,
}

/// A value bound to a write's parameters `?1`, `?2`, ... in order.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
    Blob(Vec<u8>),
    Null,
}

impl Value {
    pub(crate) fn text_or_null(text: Option<&str>) -> Self {
        text.map_or(Value::Null, |text| Value::Text(text.to_owned()))
    }

    pub(crate) fn int_or_null(n: Option<i64>) -> Self {
        n.map_or(Value::Null, Value::Int)
    }
}

/// A write ready to run: its SQL, the values of its parameters and what it checks first,
/// if anything.
#[derive(Debug)]
pub(crate) struct Write {
    pub(crate) sql: &'static WriteSql,
    pub(crate) values: Vec<Value>,
    /// Decided after `BEGIN` and before the statements.
    pub(crate) check: Option<Check>,
    /// Statements that answer the check's question themselves, with the same values, for
    /// the direct path's writer, which has the SQL functions they call ([`register`]) to
    /// run first: an append with ids whose statement records them
    /// ([`APPEND_RECORDING_IDS`]). When they cannot decide ([`is_undecided`]) they change
    /// nothing, and the write runs as `sql` after its check.
    pub(crate) deciding: Option<&'static WriteSql>,
}

/// Where APPEND's values hold the number of messages (?3), which the check of an append
/// with ids may lower ([`Write::decided_values`]).
const COUNT_AT: usize = 2;
/// Where APPEND's values hold the messages (?5), which the check of an append with ids may
/// cut down.
const BATCH_AT: usize = 4;
/// Where APPEND's values hold `recent_ids` (?6), which the check of an append with ids
/// decides.
const RECENT_AT: usize = 5;

impl Write {
    /// Appends `messages` (not empty) after the stored history of `session_id`, creating
    /// the session with a fresh generation if it has none (or it has expired). Messages
    /// whose ids the session stores already are left out (`dedup.rs`): a batch with ids
    /// reads which inside the transaction, a check that admits any revision, unless its
    /// statement can tell ([`deciding`](Self::deciding), binding the batch's fingerprints
    /// as ?6, which the check replaces with what it decides).
    pub(crate) fn append(session_id: &str, messages: &[ChatMessage]) -> Result<Self> {
        let fresh = new_generation();
        let now = now_micros();
        let (mut write, dedup) = Self::appending(session_id, messages, fresh, now)?;
        if let Some(dedup) = dedup {
            if let Some(fingerprints) = dedup.fingerprints() {
                write.values[RECENT_AT] = Value::Blob(fingerprints);
                write.deciding = Some(&APPEND_RECORDING_IDS);
            }
            let condition = Condition::always(Change::Append(messages), fresh);
            write.check = Some(Check::Revision {
                condition,
                now,
                dedup: Some(dedup),
            });
        }
        Ok(write)
    }

    /// APPEND of `messages`, and for a batch with ids what its check needs to leave out
    /// the messages already stored and to decide `recent_ids` (?6, NULL until then: an
    /// append without ids keeps it).
    fn appending(
        session_id: &str,
        messages: &[ChatMessage],
        fresh: u64,
        now: i64,
    ) -> Result<(Self, Option<Dedup>)> {
        let (batch, dedup) = dedup::encode(session_id, messages)?;
        let write = Self::with_batch(
            &APPEND,
            session_id,
            messages.len(),
            batch,
            fresh,
            now,
            Value::Null,
        );
        Ok((write, dedup))
    }

    /// Replaces the history of `session_id` with `history` (not empty), with a fresh
    /// generation. Its ids are stored as they are: `check_storable` refused a repeated one.
    pub(crate) fn save(session_id: &str, history: &[ChatMessage]) -> Result<Self> {
        Self::saving(&SAVE, session_id, history, new_generation(), now_micros())
    }

    /// SAVE, or REWRITE, which binds the same values.
    fn saving(
        sql: &'static WriteSql,
        session_id: &str,
        history: &[ChatMessage],
        fresh: u64,
        now: i64,
    ) -> Result<Self> {
        let batch = batch::encode(session_id, history)?;
        Ok(Self::with_batch(
            sql,
            session_id,
            history.len(),
            batch,
            fresh,
            now,
            Value::Blob(recent_of(history)),
        ))
    }

    /// APPEND and SAVE bind the same values: the time, how many messages, the generation
    /// of a new or rewritten row, the messages as one JSON array and `recent_ids` (at
    /// [`COUNT_AT`], [`BATCH_AT`] and [`RECENT_AT`]).
    fn with_batch(
        sql: &'static WriteSql,
        session_id: &str,
        len: usize,
        batch: String,
        fresh: u64,
        now: i64,
        recent: Value,
    ) -> Self {
        let values = vec![
            Value::Int(now),
            Value::Int(count(len)),
            Value::Int(to_column(fresh)),
            Value::Text(batch),
            recent,
        ];
        Self::new(sql, session_id, values)
    }

    /// Keeps the first `len` (more than 0) messages of `session_id`, with a fresh
    /// generation if that shortens it.
    pub(crate) fn truncate(session_id: &str, len: usize) -> Self {
        Self::truncate_with(session_id, len, new_generation(), now_micros())
    }

    fn truncate_with(session_id: &str, len: usize, fresh: u64, now: i64) -> Self {
        let values = vec![
            Value::Int(now),
            Value::Int(count(len)),
            Value::Int(to_column(fresh)),
        ];
        Self::new(&TRUNCATE, session_id, values)
    }

    /// Deletes the rows of `session_id` from every table.
    pub(crate) fn remove(session_id: &str) -> Self {
        Self::new(&REMOVE, session_id, Vec::new())
    }

    /// Creates `session_id` holding `messages` (not empty) with `meta`, with a fresh
    /// generation, if it does not exist (or has expired: it is removed first); otherwise
    /// refuses with what it found. It is created and last written now, or at `times` (a
    /// copy's, each at most now: `SessionTimes::stored_at`), in whole milliseconds; an
    /// idle expiry counts from that last write.
    pub(crate) fn create(
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: Option<SessionTimes>,
    ) -> Result<Self> {
        let fresh = new_generation();
        let now = now_micros();
        let (created, updated) = times.map_or((now, now), |times| times.stored_at(now));
        let updated_ms = millis(updated);
        let expiry = StoredExpiry::of(meta.expiry.as_ref(), updated_ms.saturating_mul(1000));
        let values = vec![
            Value::Text(batch::encode(session_id, messages)?),
            Value::Text(meta.tags_json()),
            Value::Int(millis(created)),
            Value::Int(updated_ms),
            Value::Int(count(messages.len())),
            Value::Int(to_column(fresh)),
            Value::text_or_null(meta.owner.as_deref()),
            Value::text_or_null(meta.title.as_deref()),
            Value::Text(meta.data_json()),
            Value::int_or_null(expiry.expires_at),
            Value::int_or_null(expiry.idle),
            Value::Blob(recent_of(messages)),
        ];
        // A new session stores no id yet: nothing to leave out.
        let mut write = Self::new(&CREATE, session_id, values);
        let condition = Condition::new(Expect::Generation(0), Change::Append(messages), fresh);
        write.check = Some(Check::Revision {
            condition,
            now,
            dedup: None,
        });
        Ok(write)
    }

    /// Applies `update` to the metadata of `session_id`, if it exists, has not expired and
    /// the result is valid.
    pub(crate) fn update_meta(session_id: &str, update: &MetaUpdate) -> Self {
        let mut write = Self::new(&UPDATE_META, session_id, Vec::new());
        write.check = Some(Check::Meta {
            update: update.clone(),
            now: now_micros(),
        });
        write
    }

    /// `change` to `session_id`, run only if the session meets `expected` when the
    /// transaction has the write lock: the same statements as the plain writes, after a
    /// check of the revision.
    pub(crate) fn conditional(
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<Self> {
        let fresh = new_generation();
        let now = now_micros();
        let (mut write, dedup) = match change {
            Change::Append([]) => (Self::new(&NOTHING, session_id, Vec::new()), None),
            Change::Append(messages) => Self::appending(session_id, messages, fresh, now)?,
            Change::Truncate(0) | Change::Replace([]) | Change::Rewrite([]) => {
                (Self::remove(session_id), None)
            }
            Change::Truncate(len) => (Self::truncate_with(session_id, len, fresh, now), None),
            Change::Replace(history) => {
                (Self::saving(&SAVE, session_id, history, fresh, now)?, None)
            }
            Change::Rewrite(history) => (
                Self::saving(&REWRITE, session_id, history, fresh, now)?,
                None,
            ),
        };
        let condition = Condition::new(expected, change, fresh);
        write.check = Some(Check::Revision {
            condition,
            now,
            dedup,
        });
        Ok(write)
    }

    /// Deletes up to `batch` sessions expired now, oldest expiry first.
    pub(crate) fn purge(batch: usize) -> Self {
        Self {
            sql: &PURGE,
            values: vec![Value::Int(now_micros()), Value::Int(count(batch))],
            check: None,
            deciding: None,
        }
    }

    /// `sql` with the session id bound to ?1 and `values` to the parameters after it.
    fn new(sql: &'static WriteSql, session_id: &str, values: Vec<Value>) -> Self {
        let values = std::iter::once(Value::Text(session_id.to_owned()))
            .chain(values)
            .collect();
        Self {
            sql,
            values,
            check: None,
            deciding: None,
        }
    }

    /// The values to bind to the statements once the check has decided: the write's own
    /// (`values`, borrowed or not), the batch cut down to what is `kept` and the `recent`
    /// ids an append with ids decided, then `extra`.
    pub(crate) fn decided_values<'a>(
        values: Cow<'a, [Value]>,
        kept: &Kept,
        recent: Option<Vec<u8>>,
        extra: Vec<Value>,
    ) -> Cow<'a, [Value]> {
        let cut = match values.get(BATCH_AT) {
            Some(Value::Text(batch)) => kept.cut(batch),
            _ => None,
        };
        if cut.is_none() && recent.is_none() && extra.is_empty() {
            return values;
        }
        let mut values = values.into_owned();
        if let Some((batch, len)) = cut {
            values[COUNT_AT] = Value::Int(count(len));
            values[BATCH_AT] = Value::Text(batch);
        }
        if let Some(recent) = recent {
            values[RECENT_AT] = Value::Blob(recent);
        }
        values.extend(extra);
        Cow::Owned(values)
    }

    /// The bytes bound to the write, which is what its cost grows with when it is bounded.
    pub(crate) fn bound_bytes(&self) -> usize {
        self.values
            .iter()
            .map(|value| match value {
                Value::Text(text) => text.len(),
                Value::Blob(bytes) => bytes.len(),
                Value::Int(_) | Value::Null => 8,
            })
            .sum()
    }
}

/// One stored row as a message: its `seq` must be the `expected` next one, and its text
/// (`None` when the column does not hold text) a valid message.
pub(crate) fn decode_row(
    session_id: &str,
    expected: i64,
    seq: i64,
    json: Option<&str>,
) -> Result<ChatMessage> {
    if seq != expected {
        return Err(missing_row(BACKEND, session_id, expected, seq));
    }
    let json = json.ok_or_else(|| not_text(session_id, seq))?;
    serde_json::from_str(json).map_err(|e| corrupt_row(BACKEND, session_id, seq, &e))
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
