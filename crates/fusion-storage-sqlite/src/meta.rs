//! A session's facts as stored (migrations 0003 and 0004): the columns of `sessions` and
//! `session_meta` that make a [`SessionInfo`], how a row read back becomes one, and what a
//! metadata update writes.
//!
//! The expiry is the two microsecond columns of [`StoredExpiry`] (see `crate::expiry`): a
//! row read back carries them, [`InfoRow::is_expired_at`] says whether the session is gone,
//! and a metadata update stores the expiry it sets, or moves an idle one with its
//! `updated_at`. Timestamps are Unix milliseconds in the columns; [`SessionInfo`] carries them as
//! `SystemTime`s of whole milliseconds, so a listing cursor made from one (microseconds,
//! `fusion_core::Position`) converts back exactly (see `crate::listing`).
//! `owner` and `title` are plain nullable text; `tags` and `data` are the JSON forms of
//! [`SessionMeta::tags_json`] and [`SessionMeta::data_json`]. A cell that does not hold
//! them (damaged by hand or by another program) is [`Error::Corrupt`] naming the session,
//! never a panic and never a silently empty value; so is a cell of the wrong type (SQLite
//! keeps text in a column declared `INTEGER`), which the drivers would fail to decode
//! without a word of which session holds it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fusion_core::{Error, MetaUpdate, Result, SessionInfo, SessionMeta, StoredExpiry};
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use crate::error::BACKEND;
use crate::expiry::millis;

/// The columns of one session's facts, in the order of [`InfoRow`], for a query that
/// reads [`from_sessions!`]. A session without a `session_meta` row reads the defaults;
/// `tags` and `data` read NULL when the cell is not text (text that is not UTF-8 is noted
/// by the decoding, as below), so a damaged cell is reported as corrupt, by session and
/// column, on both drivers and in a listing too. The other cells are read as they
/// are: a typeof test of each costs every row of every page (a 50-row page took 40% longer
/// in SQLite) for a row only a hand edit damages, so the decoding ([`InfoRow::from_sqlx`],
/// [`InfoRow::from_rusqlite`]) notes a cell of the wrong type instead.
macro_rules! info_columns {
    () => {
        "s.id, s.message_count, s.created_at, s.updated_at, s.generation, s.owner, m.title, \
         CASE WHEN m.session_id IS NULL THEN '[]' WHEN typeof(m.tags) = 'text' THEN m.tags END, \
         CASE WHEN m.session_id IS NULL THEN '{}' WHEN typeof(m.data) = 'text' THEN m.data END, \
         s.expires_at, s.expiry_idle"
    };
}
pub(crate) use info_columns;

/// The tables [`info_columns!`] reads: `sessions` as `s`, and its `session_meta` row as `m`
/// when it has one.
macro_rules! from_sessions {
    () => {
        "sessions AS s LEFT JOIN session_meta AS m ON m.session_id = s.id"
    };
}
pub(crate) use from_sessions;

/// The statement that reads one session's facts, as a literal for `concat!`.
macro_rules! read_info {
    () => {
        concat!(
            "SELECT ",
            $crate::meta::info_columns!(),
            " FROM ",
            $crate::meta::from_sessions!(),
            " WHERE s.id = ?1"
        )
    };
}
pub(crate) use read_info;

/// One session's facts, [`InfoRow`], or no row when it is absent: `session_info`, and
/// the read of a metadata update inside its write transaction. One lookup of the
/// session's key in each table. An expired row is read too: the caller drops it
/// ([`InfoRow::is_expired_at`]).
pub(crate) const READ_INFO: &str = read_info!();

/// After a write to session `id` failed on its times (`crate::error::refused_for_times`):
/// the [`Error::Corrupt`] `session_info` reports for its row, naming the damaged column;
/// `None` when the row decodes (or cannot be read), and the write's own error stands. One
/// key lookup, on failure only.
pub(crate) async fn damaged(pool: &SqlitePool, id: &str) -> Option<Error> {
    let row = sqlx::query(READ_INFO).bind(id).fetch_optional(pool).await;
    InfoRow::from_sqlx(&row.ok()??).ok()?.decode().err()
}

/// The latest `updated_at` (milliseconds) that a newest-first cursor, microseconds in an
/// `i64` (`fusion_core::Position`), holds exactly. A later one, or one before 1970 (no
/// time once decoded), made a cursor that does not resume where SQLite's order left the
/// page, so the next pages passed over sessions: [`InfoRow::decode`] reports it as
/// corrupt, as a cell of the wrong type. No write stores a time outside that range (the
/// clock's microseconds saturate at its end, a copy's times are validated and at most the
/// clock's; only a clock before 1970, which Linux does not let be set, would), so
/// `created_at` is held to it too: one before 1970 read as no time, and `fusion migrate`
/// then gave the copy the target's time for both, its valid `updated_at` lost unsaid.
const LATEST_UPDATED_MS: i64 = i64::MAX / 1000;

/// A row of [`info_columns!`], not yet checked.
#[derive(Debug, Clone)]
pub(crate) struct InfoRow {
    id: String,
    message_count: i64,
    created_at: i64,
    updated_at: i64,
    generation: i64,
    owner: Option<String>,
    title: Option<String>,
    /// `None` when the cell is not text.
    tags: Option<String>,
    /// `None` when the cell is not text.
    data: Option<String>,
    expiry: StoredExpiry,
    /// The first column whose cell is not of the type Fusion stores there, if any (its
    /// value above is then 0 or `None`).
    wrongly_typed: Option<&'static str>,
}

/// The [`InfoRow`] that `$row` holds, each cell read with the driver's getter `$get`
/// (sqlx's `try_get`, rusqlite's `get`): a cell of the wrong type reads 0 or `None`, and
/// the first is noted for [`InfoRow::decode`].
macro_rules! info_row {
    ($row:expr, $get:ident) => {{
        let mut wrong = None;
        Ok(Self {
            id: $row.$get(0)?,
            message_count: cell($row.$get(1), "message_count", &mut wrong)?,
            created_at: cell($row.$get(2), "created_at", &mut wrong)?,
            updated_at: cell($row.$get(3), "updated_at", &mut wrong)?,
            generation: cell($row.$get(4), "generation", &mut wrong)?,
            owner: cell($row.$get(5), "owner", &mut wrong)?,
            title: cell($row.$get(6), "title", &mut wrong)?,
            tags: cell($row.$get(7), "tags", &mut wrong)?,
            data: cell($row.$get(8), "data", &mut wrong)?,
            expiry: StoredExpiry {
                expires_at: cell($row.$get(9), "expires_at", &mut wrong)?,
                idle: cell($row.$get(10), "expiry_idle", &mut wrong)?,
            },
            wrongly_typed: wrong,
        })
    }};
}

impl InfoRow {
    /// Reads the row of [`info_columns!`] that `row` (sqlx) holds ([`info_row!`]).
    pub(crate) fn from_sqlx(row: &SqliteRow) -> sqlx::Result<Self> {
        info_row!(row, try_get)
    }

    /// Reads the row of [`info_columns!`] that `row` (rusqlite) holds ([`info_row!`]).
    pub(crate) fn from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        info_row!(row, get)
    }

    /// Whether the session has expired at `now` (microseconds): then it is absent.
    pub(crate) fn is_expired_at(&self, now: i64) -> bool {
        self.expiry.is_expired_at(now)
    }

    /// The session's facts, or [`Error::Corrupt`] naming it when a cell is of the wrong
    /// type, `created_at` or `updated_at` is past [`LATEST_UPDATED_MS`] or negative, or
    /// `tags` or `data` is not the JSON Fusion writes there.
    pub(crate) fn decode(self) -> Result<SessionInfo> {
        if let Some(column) = self.wrongly_typed {
            return Err(Error::corrupt(
                BACKEND,
                self.id,
                format!(
                    "its stored `{column}` is not of the type Fusion stores there; the row \
                     was changed outside Fusion"
                ),
            ));
        }
        for (column, ms) in [
            ("created_at", self.created_at),
            ("updated_at", self.updated_at),
        ] {
            if !(0..=LATEST_UPDATED_MS).contains(&ms) {
                return Err(Error::corrupt(
                    BACKEND,
                    self.id,
                    format!(
                        "its stored `{column}` ({ms} ms) is not a time Fusion writes \
                         (0 to {LATEST_UPDATED_MS} ms); the row was changed outside Fusion"
                    ),
                ));
            }
        }
        let tags = parse_cell(&self.id, "tags", "array of strings", self.tags, |text| {
            serde_json::from_str::<Vec<String>>(text)
        })?;
        let data = parse_cell(&self.id, "data", "object", self.data, |text| {
            serde_json::from_str::<Map<String, Value>>(text)
        })?;
        let mut info = SessionInfo::new(self.id, usize::try_from(self.message_count).unwrap_or(0));
        info.created_at = from_millis(self.created_at);
        info.updated_at = from_millis(self.updated_at);
        info.generation = self.generation.cast_unsigned();
        info.expires_at = self.expiry.expires_at_time();
        let mut meta = SessionMeta::new();
        meta.owner = self.owner;
        meta.title = self.title;
        meta.tags = tags;
        meta.data = data;
        meta.expiry = self.expiry.expiry();
        info.meta = meta;
        Ok(info)
    }
}

/// A driver's error decoding a cell because the value stored there is not of the type
/// asked for (text in an `INTEGER` column, text that is not UTF-8), as opposed to a
/// failure of the read itself.
trait WrongType {
    fn is_wrong_type(&self) -> bool;
}

impl WrongType for sqlx::Error {
    fn is_wrong_type(&self) -> bool {
        matches!(self, sqlx::Error::ColumnDecode { .. })
    }
}

impl WrongType for rusqlite::Error {
    /// sqlx reports each of these as `ColumnDecode`: rusqlite says `FromSqlConversionFailure`
    /// for text that is not UTF-8, which left the direct path's metadata update a backend
    /// error where the other calls said corrupt.
    fn is_wrong_type(&self) -> bool {
        matches!(
            self,
            rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)
        )
    }
}

/// The `column` cell as `read` decoded it, or its type's default (0, `None`) when it
/// holds a value of the wrong type, noting `column` in `wrong` if no cell before it was.
fn cell<T: Default, E: WrongType>(
    read: std::result::Result<T, E>,
    column: &'static str,
    wrong: &mut Option<&'static str>,
) -> std::result::Result<T, E> {
    match read {
        Err(e) if e.is_wrong_type() => {
            wrong.get_or_insert(column);
            Ok(T::default())
        }
        other => other,
    }
}

/// The `column` cell of `session_id` parsed by `parse`, which reads the JSON `shape`.
fn parse_cell<T>(
    session_id: &str,
    column: &str,
    shape: &str,
    cell: Option<String>,
    parse: impl FnOnce(&str) -> serde_json::Result<T>,
) -> Result<T> {
    let corrupt = |why: String| {
        Error::corrupt(
            BACKEND,
            session_id,
            format!("its stored `{column}` is not a JSON {shape}: {why}"),
        )
    };
    let text = cell.ok_or_else(|| corrupt("the cell does not hold text".to_owned()))?;
    parse(&text).map_err(|e| corrupt(e.to_string()))
}

/// What a metadata update writes, decided from the session's row read inside the write
/// transaction: the session's facts after it, its new `updated_at` in milliseconds and
/// its expiry.
#[derive(Debug)]
pub(crate) struct Updated {
    pub(crate) info: SessionInfo,
    pub(crate) updated_ms: i64,
    pub(crate) expiry: StoredExpiry,
}

/// Applies `update` at `now` (microseconds) to the session read as `row`: `Ok(None)`
/// when there is no session or it has expired (nothing is written),
/// [`Error::NotOwner`] when the update's owner condition fails, [`Error::InvalidMeta`]
/// when the result breaks a rule of [`SessionMeta::validate`] and [`Error::Corrupt`] when
/// the row is damaged (nothing is written in each case).
/// `updated_at` moves to `now`'s millisecond, or stays if the clock stepped back; the
/// expiry is the one `update` sets, or the stored one after a write at that `updated_at`
/// (an idle one moves with it).
pub(crate) fn apply_update(
    row: Option<InfoRow>,
    update: &MetaUpdate,
    now: i64,
) -> Result<Option<Updated>> {
    let Some(row) = row.filter(|row| !row.is_expired_at(now)) else {
        return Ok(None);
    };
    let updated_ms = row.updated_at.max(millis(now));
    let written_at = updated_ms.saturating_mul(1000);
    let stored = row.expiry;
    let mut info = row.decode()?;
    update.apply_to_stored(&info.id, &mut info.meta)?;
    let expiry = match &update.expiry {
        Some(expiry) => StoredExpiry::of(expiry.as_ref(), written_at),
        None => stored.at_write(written_at),
    };
    info.updated_at = from_millis(updated_ms);
    info.expires_at = expiry.expires_at_time();
    info.meta.expiry = expiry.expiry();
    Ok(Some(Updated {
        info,
        updated_ms,
        expiry,
    }))
}

/// A timestamp column as a time; `None` for a negative (damaged) one.
fn from_millis(ms: i64) -> Option<SystemTime> {
    u64::try_from(ms)
        .ok()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tags: Option<&str>, data: Option<&str>) -> InfoRow {
        expiring(tags, data, StoredExpiry::NEVER)
    }

    fn expiring(tags: Option<&str>, data: Option<&str>, expiry: StoredExpiry) -> InfoRow {
        InfoRow {
            id: "s".to_owned(),
            message_count: 2,
            created_at: 1_000,
            updated_at: 2_000,
            generation: 7,
            owner: Some("o".to_owned()),
            title: None,
            tags: tags.map(str::to_owned),
            data: data.map(str::to_owned),
            expiry,
            wrongly_typed: None,
        }
    }

    #[test]
    fn a_row_decodes_to_the_facts_it_holds() {
        let info = row(Some(r#"["a","b"]"#), Some(r#"{"k":1}"#))
            .decode()
            .unwrap();
        assert_eq!(info.message_count, 2);
        assert_eq!(info.generation, 7);
        assert_eq!(info.updated_at, Some(UNIX_EPOCH + Duration::from_secs(2)));
        assert_eq!(info.meta.owner.as_deref(), Some("o"));
        assert_eq!(info.meta.tags, ["a", "b"]);
        assert_eq!(info.meta.data["k"], 1);
    }

    #[test]
    fn a_damaged_cell_is_corrupt_and_names_the_session_and_column() {
        let cases = [
            (row(Some("{"), Some("{}")), "`tags`"),
            (row(Some("[1]"), Some("{}")), "`tags`"),
            (row(None, Some("{}")), "does not hold text"),
            (row(Some("[]"), Some("[]")), "`data`"),
        ];
        for (row, expected) in cases {
            match row.decode().unwrap_err() {
                Error::Corrupt {
                    session_id, detail, ..
                } => {
                    assert_eq!(session_id, "s");
                    assert!(detail.contains(expected), "{detail}");
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
    }

    /// The times a write can store decode, to the last millisecond a cursor holds; one
    /// past either end is corrupt, naming its column.
    #[test]
    fn times_decode_up_to_the_last_millisecond_a_cursor_holds() {
        let at = |created_at, updated_at| InfoRow {
            created_at,
            updated_at,
            ..row(Some("[]"), Some("{}"))
        };
        let latest = at(0, LATEST_UPDATED_MS).decode().unwrap();
        let micros = fusion_core::unix_micros(latest.updated_at.unwrap());
        assert_eq!(micros, LATEST_UPDATED_MS * 1000);
        at(LATEST_UPDATED_MS, LATEST_UPDATED_MS).decode().unwrap();
        let past = LATEST_UPDATED_MS + 1;
        for (row, column) in [
            (at(-1, 0), "`created_at`"),
            (at(past, past), "`created_at`"),
            (at(0, -1), "`updated_at`"),
            (at(0, past), "`updated_at`"),
        ] {
            let err = row.decode().unwrap_err().to_string();
            assert!(err.contains(column), "{err}");
        }
    }

    /// Reading a session's facts (every `session_info`, metadata update and listed row)
    /// runs no SQL function per cell to test its type: only `tags` and `data`, which a
    /// cell of text that is not JSON damages anyway, are tested in the statement. A test of
    /// every cell made a 50-row page take 40% longer in SQLite; the decoding finds a
    /// wrongly typed cell instead (`tests/damaged_columns.rs`).
    #[test]
    fn reading_the_facts_tests_no_cell_type_in_sql_but_tags_and_data() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, message_count INTEGER, \
             created_at INTEGER, updated_at INTEGER, generation INTEGER, owner TEXT, \
             expires_at INTEGER, expiry_idle INTEGER); \
             CREATE TABLE session_meta (session_id TEXT PRIMARY KEY, title TEXT, tags TEXT, \
             data TEXT);",
        )
        .unwrap();
        let mut explain = conn.prepare(&format!("EXPLAIN {READ_INFO}")).unwrap();
        let calls = explain
            .query_map(["s"], |row| row.get::<_, String>(1))
            .unwrap()
            .filter(|opcode| matches!(opcode.as_deref(), Ok("Function" | "PureFunc")))
            .count();
        assert!(calls <= 2, "{calls} function calls per row");
    }

    #[test]
    fn an_update_moves_updated_at_but_never_back() {
        let update = MetaUpdate::new().add_tag("x");
        let later = apply_update(Some(row(Some("[]"), Some("{}"))), &update, 5_000_321)
            .unwrap()
            .unwrap();
        assert_eq!((later.updated_ms, later.info.meta.tags.len()), (5_000, 1));
        let stepped_back = apply_update(Some(row(Some("[]"), Some("{}"))), &update, 1)
            .unwrap()
            .unwrap();
        assert_eq!(stepped_back.updated_ms, 2_000);
        assert!(apply_update(None, &update, 1).unwrap().is_none());
        let bad = MetaUpdate::new().add_tag("a,b");
        let err = apply_update(Some(row(Some("[]"), Some("{}"))), &bad, 1).unwrap_err();
        assert!(matches!(err, Error::InvalidMeta(_)), "{err:?}");
    }

    /// An update is a write: an idle expiry moves to the new `updated_at` plus its span, a
    /// new expiry replaces the stored one, and an expired session is absent.
    #[test]
    fn an_update_moves_an_idle_expiry_and_skips_an_expired_session() {
        const MINUTE: i64 = 60_000_000;
        // Written at updated_at = 2,000 ms, so it expires a minute after that.
        let idle = StoredExpiry {
            expires_at: Some(2_000_000 + MINUTE),
            idle: Some(MINUTE),
        };
        let row = || Some(expiring(Some("[]"), Some("{}"), idle));
        let update = MetaUpdate::new().title(Some("t"));
        let stepped_back = apply_update(row(), &update, 1_500).unwrap().unwrap();
        assert_eq!(
            stepped_back.expiry, idle,
            "updated_at did not move, nor does it"
        );
        let later = apply_update(row(), &update, 5_000_321).unwrap().unwrap();
        assert_eq!(later.updated_ms, 5_000);
        assert_eq!(later.expiry.expires_at, Some(5_000_000 + MINUTE));
        assert_eq!(
            later.info.expires_at,
            Some(UNIX_EPOCH + Duration::from_micros((5_000_000 + MINUTE).cast_unsigned()))
        );
        let gone = apply_update(row(), &update, 2_000_000 + MINUTE).unwrap();
        assert!(gone.is_none(), "expired at its instant");
        let never = MetaUpdate::new().expiry(None);
        let kept = apply_update(row(), &never, 5_000_000).unwrap().unwrap();
        assert_eq!(kept.expiry, StoredExpiry::NEVER);
        assert_eq!((kept.info.expires_at, kept.info.meta.expiry), (None, None));
    }
}
