//! The SQL of every operation, and the write model both paths run: [`Write`], the values
//! it binds and how a stored row becomes a message again.
//!
//! Each write is one `BEGIN IMMEDIATE` transaction ([`BEGIN_WRITE`], spelled here only) of
//! the statements of one [`WriteSql`], defined once by `write_sql!` and run either
//! statement by statement (`crate::direct`) or as one script (`crate::pooled`). A write
//! with a [`Check`] first reads the session's row inside the same transaction and lets the
//! check decide ([`Verdict`]) whether its statements run or it rolls back: a conditional
//! write or a creation ([`Write::conditional`], [`Write::create`]) reads its revision
//! ([`READ_REVISION`]) and `crate::generation` decides; a metadata update
//! ([`Write::update_meta`]) reads its facts ([`READ_INFO`]) and `crate::meta` decides, and
//! what it decided is bound after the write's own values.
//! Parameters: ?1 the session id, ?2 now in Unix milliseconds, ?3 a message count, ?4 a
//! fresh generation (stored where `crate::generation` says a write stores one), ?5 the
//! messages as one JSON array whose elements are each message as `serde_json` writes it.
//! A creation ([`CREATE`]) and a metadata update ([`UPDATE_META`]) number their own.
//! `json_each(?5)` yields the elements in order, with `key` the index and `value` an
//! object's JSON text: minified JSON goes in, so the same text comes out and is what the
//! `message` column stores (`tests/write_scripts.rs` checks it).
//!
//! sqlx binds a script's parameters statement by statement, and a slot a statement skips
//! (?2 in a statement that uses only ?1 and ?3) takes the next value of a count that runs
//! on through the script; once that count passes the last value, sqlx stops binding the
//! statement, and its later parameters are silently NULL. So each write's parameters are
//! numbered for few gaps, and a unit test below replays sqlx's rule on every write.

use fusion_core::sql::{corrupt_row, missing_row, to_column};
use fusion_core::{Change, ChatMessage, Expect, MetaUpdate, Result, SessionMeta, new_generation};

use crate::error::{BACKEND, not_text};
use crate::generation::Condition;
pub(crate) use crate::meta::READ_INFO;
use crate::meta::{now_millis, read_info};

mod check;

pub(crate) use check::{Check, Found, Verdict, Written};

/// The statement that opens every write, as a literal for `write_sql!`'s `concat!`.
macro_rules! begin_write {
    () => {
        "BEGIN IMMEDIATE"
    };
}

/// Every write starts with this, so the transaction holds SQLite's write lock from its
/// first statement. A plain (deferred) `BEGIN` would start as a reader and fail with
/// `SQLITE_BUSY` when upgrading to a writer while another writer is active, which the busy
/// timeout cannot wait out; `IMMEDIATE` makes concurrent writers queue instead.
pub(crate) const BEGIN_WRITE: &str = begin_write!();

/// The statement that reads a session's revision, as a literal for `concat!`.
macro_rules! read_revision {
    () => {
        "SELECT generation, message_count FROM sessions WHERE id = ?1"
    };
}

/// One session's revision, `(generation, message_count)`, or no row when it is absent:
/// the check of a conditional write (inside its transaction) and the first read of
/// `load_revision` (in the same read transaction as the rows). One lookup of the
/// `sessions` row's key; `message_count` is exact (the seqs are `0..message_count`), so
/// no message is counted.
pub(crate) const READ_REVISION: &str = read_revision!();

/// A conditional write's first round trip on the sqlx path: take the write lock and read
/// the revision to check. The rest of the write follows as [`WriteSql::rest`].
pub(crate) const BEGIN_AND_READ_REVISION: &str = concat!(begin_write!(), "; ", read_revision!());

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
    /// The statements and `COMMIT` without the `BEGIN`, for sqlx once a conditional write
    /// has begun and checked the session ([`BEGIN_AND_READ_REVISION`]).
    pub(crate) rest: &'static str,
    /// Whether its work grows only with the values bound to it, never with what is already
    /// stored: only such a write, and a small one, may run on an async task's own thread.
    pub(crate) bounded: bool,
}

/// Defines a [`WriteSql`] from its statements, so every form comes from one text.
macro_rules! write_sql {
    (bounded: $bounded:expr $(, $statement:literal)* $(,)?) => {
        WriteSql {
            statements: &[$($statement),*],
            script: concat!(begin_write!(), "; ", $($statement, "; ",)* "COMMIT"),
            rest: concat!($($statement, "; ",)* "COMMIT"),
            bounded: $bounded,
        }
    };
}

// An append: bump the session's count (creating the row, with the fresh generation ?4;
// an existing row keeps its generation), then insert the new messages after the old
// ones. The seqs come from the count read inside the write transaction, so concurrent
// appenders in any process queue on the write lock and never collide. `MAX` keeps
// updated_at monotonic if the clock steps back.
static APPEND: WriteSql = write_sql!(
    bounded: true,
    "INSERT INTO sessions (id, created_at, updated_at, message_count, generation) \
     VALUES (?1, ?2, ?2, ?3, ?4) \
     ON CONFLICT (id) DO UPDATE SET \
         updated_at = MAX(excluded.updated_at, sessions.updated_at), \
         message_count = sessions.message_count + excluded.message_count",
    "INSERT INTO messages (session_id, seq, message) \
     SELECT ?1, s.message_count - ?3 + j.key, j.value \
     FROM sessions AS s, json_each(?5) AS j WHERE s.id = ?1",
);

// A full save: set the count and the fresh generation (keeping created_at of an existing
// session) and replace every message.
static SAVE: WriteSql = write_sql!(
    bounded: false,
    "INSERT INTO sessions (id, created_at, updated_at, message_count, generation) \
     VALUES (?1, ?2, ?2, ?3, ?4) \
     ON CONFLICT (id) DO UPDATE SET \
         updated_at = MAX(excluded.updated_at, sessions.updated_at), \
         message_count = excluded.message_count, \
         generation = excluded.generation",
    "DELETE FROM messages WHERE session_id = ?1",
    "INSERT INTO messages (session_id, seq, message) SELECT ?1, j.key, j.value FROM json_each(?5) AS j",
);

// Keeps the first ?3 messages. The count only ever goes down, and only then does the
// generation change; the DELETE finds nothing when the session was already that short.
static TRUNCATE: WriteSql = write_sql!(
    bounded: false,
    "UPDATE sessions SET message_count = ?3, updated_at = MAX(?2, updated_at), generation = ?4 \
     WHERE id = ?1 AND message_count > ?3",
    "DELETE FROM messages WHERE session_id = ?1 AND seq >= ?3",
);

// A conditional append of no messages: nothing to write once the check has passed.
static NOTHING: WriteSql = write_sql!(bounded: true);

/// A creation with metadata, run only after its check found no session: the row with its
/// owner, the messages, a `session_meta` row when there is a title, a tag or data, and one
/// `session_tags` row per tag. The tags are the JSON `SessionMeta::tags_json` writes, so
/// `json_each` yields each tag as text. Its own parameters (see the module documentation
/// on gaps): ?1 the id, ?2 the messages, ?3 the tags, ?4 now, ?5 the count, ?6 the fresh
/// generation, ?7 the owner, ?8 the title, ?9 the data.
static CREATE: WriteSql = write_sql!(
    bounded: true,
    "INSERT INTO sessions (id, created_at, updated_at, message_count, generation, owner) \
     VALUES (?1, ?4, ?4, ?5, ?6, ?7)",
    "INSERT INTO messages (session_id, seq, message) SELECT ?1, j.key, j.value FROM json_each(?2) AS j",
    "INSERT INTO session_meta (session_id, tags, title, data) SELECT ?1, ?3, ?8, ?9 \
     WHERE ?3 <> '[]' OR ?8 IS NOT NULL OR ?9 <> '{}'",
    "INSERT INTO session_tags (tag, session_id) SELECT j.value, ?1 FROM json_each(?3) AS j",
);

/// A metadata update, run with what `crate::meta` decided from the facts it read: ?2 the
/// new updated_at, ?3 the owner, ?4 the tags (JSON array), ?5 the title, ?6 the data. The
/// tag rows are replaced whole (at most `fusion_core::MAX_TAGS`).
static UPDATE_META: WriteSql = write_sql!(
    bounded: true,
    "UPDATE sessions SET updated_at = ?2, owner = ?3 WHERE id = ?1",
    "INSERT INTO session_meta (session_id, tags, title, data) VALUES (?1, ?4, ?5, ?6) \
     ON CONFLICT (session_id) DO UPDATE \
     SET tags = excluded.tags, title = excluded.title, data = excluded.data",
    "DELETE FROM session_tags WHERE session_id = ?1",
    "INSERT INTO session_tags (tag, session_id) SELECT j.value, ?1 FROM json_each(?4) AS j",
);

// Every table explicitly: a pool given to `from_pool` may have foreign keys (and so the
// cascade) off. The metadata goes with the session.
static REMOVE: WriteSql = write_sql!(
    bounded: false,
    "DELETE FROM messages WHERE session_id = ?1",
    "DELETE FROM session_tags WHERE session_id = ?1",
    "DELETE FROM session_meta WHERE session_id = ?1",
    "DELETE FROM sessions WHERE id = ?1",
);

/// A history row by row, in seq order.
pub(crate) const LOAD_ROWS: &str =
    "SELECT seq, message FROM messages WHERE session_id = ?1 ORDER BY seq";

/// A whole history as one row, for sqlx: the stored JSON texts joined into one JSON
/// array, and the seqs joined the same way. sqlx hands each result row across from the
/// connection's worker thread on its own, which for a long history costs several times
/// SQLite's scan; one row and one serde parse avoid that. The rows reach the aggregate in
/// the order of the inner ORDER BY (SQLite runs an ordered subquery under an aggregate as
/// is), and because both lists are built in that one pass, seqs reading 0,1,2,... prove
/// the messages are complete and in order. `group_concat(x ORDER BY seq)` would say so
/// itself but sorts a copy of every message, doubling the cost.
pub(crate) const LOAD_ARRAY: &str = "\
    SELECT coalesce(group_concat(seq), ''), '[' || coalesce(group_concat(message), '') || ']' \
    FROM (SELECT seq, message FROM messages WHERE session_id = ?1 ORDER BY seq)";

/// A whole history as one row, like [`LOAD_ARRAY`], and the session's revision
/// `(generation, message_count)` (0 and 0 when there is no `sessions` row): one statement,
/// so one snapshot of both tables.
pub(crate) const LOAD_REVISION_ARRAY: &str = "\
    SELECT coalesce((SELECT generation FROM sessions WHERE id = ?1), 0), \
        coalesce((SELECT message_count FROM sessions WHERE id = ?1), 0), \
        coalesce(group_concat(seq), ''), '[' || coalesce(group_concat(message), '') || ']' \
    FROM (SELECT seq, message FROM messages WHERE session_id = ?1 ORDER BY seq)";

/// Every session id, from the `sessions` table only.
pub(crate) const LIST_SESSIONS: &str = "SELECT id FROM sessions ORDER BY id";

/// A value bound to a write's parameters `?1`, `?2`, ... in order.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
    Null,
}

impl Value {
    pub(crate) fn text_or_null(text: Option<&str>) -> Self {
        text.map_or(Value::Null, |text| Value::Text(text.to_owned()))
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
}

impl Write {
    /// Appends `messages` (not empty) after the stored history of `session_id`, creating
    /// the session with a fresh generation if it has none.
    pub(crate) fn append(session_id: &str, messages: &[ChatMessage]) -> Result<Self> {
        Self::with_messages(&APPEND, session_id, messages, new_generation())
    }

    /// Replaces the history of `session_id` with `history` (not empty), with a fresh
    /// generation.
    pub(crate) fn save(session_id: &str, history: &[ChatMessage]) -> Result<Self> {
        Self::with_messages(&SAVE, session_id, history, new_generation())
    }

    /// APPEND and SAVE bind the same values: the time, how many messages, the generation
    /// of a new or rewritten row, and the messages as one JSON array.
    fn with_messages(
        sql: &'static WriteSql,
        session_id: &str,
        messages: &[ChatMessage],
        fresh: u64,
    ) -> Result<Self> {
        let values = vec![
            Value::Int(now_millis()),
            Value::Int(count(messages.len())),
            Value::Int(to_column(fresh)),
            Value::Text(encode(messages)?),
        ];
        Ok(Self::new(sql, session_id, values))
    }

    /// Keeps the first `len` (more than 0) messages of `session_id`, with a fresh
    /// generation if that shortens it.
    pub(crate) fn truncate(session_id: &str, len: usize) -> Self {
        Self::truncate_with(session_id, len, new_generation())
    }

    fn truncate_with(session_id: &str, len: usize, fresh: u64) -> Self {
        let values = vec![
            Value::Int(now_millis()),
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
    /// generation, if it does not exist; otherwise refuses with what it found.
    pub(crate) fn create(
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<Self> {
        let fresh = new_generation();
        let values = vec![
            Value::Text(encode(messages)?),
            Value::Text(meta.tags_json()),
            Value::Int(now_millis()),
            Value::Int(count(messages.len())),
            Value::Int(to_column(fresh)),
            Value::text_or_null(meta.owner.as_deref()),
            Value::text_or_null(meta.title.as_deref()),
            Value::Text(meta.data_json()),
        ];
        let mut write = Self::new(&CREATE, session_id, values);
        let absent = Condition::new(Expect::Generation(0), Change::Append(messages), fresh);
        write.check = Some(Check::Revision(absent));
        Ok(write)
    }

    /// Applies `update` to the metadata of `session_id`, if it exists and the result is
    /// valid.
    pub(crate) fn update_meta(session_id: &str, update: &MetaUpdate) -> Self {
        let mut write = Self::new(&UPDATE_META, session_id, Vec::new());
        write.check = Some(Check::Meta {
            update: update.clone(),
            now: now_millis(),
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
        let mut write = match change {
            Change::Append([]) => Self::new(&NOTHING, session_id, Vec::new()),
            Change::Append(messages) => Self::with_messages(&APPEND, session_id, messages, fresh)?,
            Change::Truncate(0) | Change::Replace([]) => Self::remove(session_id),
            Change::Truncate(len) => Self::truncate_with(session_id, len, fresh),
            Change::Replace(history) => Self::with_messages(&SAVE, session_id, history, fresh)?,
        };
        write.check = Some(Check::Revision(Condition::new(expected, change, fresh)));
        Ok(write)
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
        }
    }

    /// The bytes bound to the write, which is what its cost grows with when it is bounded.
    pub(crate) fn bound_bytes(&self) -> usize {
        self.values
            .iter()
            .map(|value| match value {
                Value::Text(text) => text.len(),
                Value::Int(_) | Value::Null => 8,
            })
            .sum()
    }
}

/// Serialises messages as one JSON array before a transaction starts, so the write lock
/// is held only for the inserts and a serialisation failure touches nothing. The array's
/// elements are exactly each message's `serde_json::to_string`.
fn encode(messages: &[ChatMessage]) -> Result<String> {
    serde_json::to_string(messages).map_err(Into::into)
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
mod tests {
    use super::*;

    #[test]
    fn both_forms_of_a_write_come_from_one_text() {
        assert_eq!(
            REMOVE.script,
            "BEGIN IMMEDIATE; DELETE FROM messages WHERE session_id = ?1; \
             DELETE FROM session_tags WHERE session_id = ?1; \
             DELETE FROM session_meta WHERE session_id = ?1; \
             DELETE FROM sessions WHERE id = ?1; COMMIT"
        );
        assert_eq!(
            REMOVE.rest,
            "DELETE FROM messages WHERE session_id = ?1; \
             DELETE FROM session_tags WHERE session_id = ?1; \
             DELETE FROM session_meta WHERE session_id = ?1; \
             DELETE FROM sessions WHERE id = ?1; COMMIT"
        );
        assert!(APPEND.script.starts_with(BEGIN_WRITE));
        assert_eq!(NOTHING.script, "BEGIN IMMEDIATE; COMMIT");
        assert_eq!(Write::remove("s").values.len(), 1);
    }

    /// A conditional write runs the plain write's statements with the same values, so the
    /// generation rules live in one set of statements.
    #[test]
    fn a_conditional_write_is_the_plain_write_after_a_check() {
        let one = [ChatMessage::user("m")];
        let expect = Expect::Generation(0);
        let cases = [
            (Change::Append(&one), &APPEND, 5),
            (Change::Append(&[]), &NOTHING, 1),
            (Change::Truncate(2), &TRUNCATE, 4),
            (Change::Truncate(0), &REMOVE, 1),
            (Change::Replace(&one), &SAVE, 5),
            (Change::Replace(&[]), &REMOVE, 1),
        ];
        for (change, sql, values) in cases {
            let write = Write::conditional("s", expect, change).unwrap();
            assert!(std::ptr::eq(write.sql, sql), "{change:?}");
            assert_eq!(write.values.len(), values, "{change:?}");
            assert!(matches!(write.check, Some(Check::Revision(_))));
        }
        assert!(Write::append("s", &one).unwrap().check.is_none());
        assert_eq!(
            BEGIN_AND_READ_REVISION,
            "BEGIN IMMEDIATE; SELECT generation, message_count FROM sessions WHERE id = ?1"
        );
    }

    /// Replays how sqlx binds a script (see the module documentation): every parameter a
    /// statement names must be bound, for each write with the number of values it binds.
    #[test]
    fn sqlx_binds_every_parameter_of_every_write() {
        let one = [ChatMessage::user("m")];
        let meta = SessionMeta::new();
        let writes = [
            (&APPEND, Write::append("s", &one).unwrap().values.len()),
            (&SAVE, Write::save("s", &one).unwrap().values.len()),
            (&TRUNCATE, Write::truncate("s", 1).values.len()),
            (&REMOVE, Write::remove("s").values.len()),
            (
                &CREATE,
                Write::create("s", &meta, &one).unwrap().values.len(),
            ),
            // The id, then the five values the check decides (`check.rs`).
            (&UPDATE_META, 6),
        ];
        for (sql, values) in writes {
            let mut anonymous = 0;
            for statement in sql.statements {
                let named: Vec<usize> = statement
                    .split('?')
                    .skip(1)
                    .map(|rest| {
                        let digits: String =
                            rest.chars().take_while(char::is_ascii_digit).collect();
                        digits.parse().unwrap()
                    })
                    .collect();
                let slots = named.iter().copied().max().unwrap_or(0);
                assert!(slots <= values, "{statement}: ?{slots} of {values} values");
                for slot in 1..=slots {
                    if named.contains(&slot) {
                        continue;
                    }
                    anonymous += 1;
                    let unbound_after = named.iter().any(|&n| n > slot);
                    assert!(
                        anonymous <= values || !unbound_after,
                        "{statement}: sqlx would stop at ?{slot} and leave later ones NULL"
                    );
                }
            }
        }
    }
}
