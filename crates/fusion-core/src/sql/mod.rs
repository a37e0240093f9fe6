//! Pieces the SQL backends (`fusion-storage-sqlite`, `fusion-storage-postgres`) share, so
//! their error messages, revision columns and schema-version checks cannot drift apart.
//!
//! Nothing here but `migrations` touches a driver: each backend still maps its driver's
//! errors itself and reads its own rows, then hands plain values to these helpers.
//! Application code does not need this module.
//!
//! - [`Op`] names what was being done when an error happened, for the message.
//! - [`corrupt_row`], [`missing_row`], [`count_mismatch`] (checked by [`check_count`]),
//!   [`count_behind_rows`] and [`wrongly_typed`] are the [`Error::Corrupt`]s of a
//!   `sessions`/`messages` schema; [`batch_too_long`] refuses a write longer than the
//!   backend binds at once.
//! - [`to_column`] and [`revision_of`] convert between a [`Revision`] and the
//!   `(generation, message_count)` columns of a `sessions` row.
//! - [`check_migrations`] decides from the recorded migrations whether a stored schema is
//!   current, older or newer than the build.
//! - `migrations` (feature `sql-migrations`, the one place this module touches sqlx; not
//!   linked, since without the feature it is not there to link to): a backend's embedded
//!   migrations, read the same from an LF or a CRLF checkout, and `migrations::migrator`,
//!   sqlx's migrator of a list of migrations, made through sqlx's public API only.

#[cfg(feature = "sql-migrations")]
pub mod migrations;

use std::fmt;

use crate::{Error, Result, Revision};

/// How an error message places a session in its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A database file: `append of session "s" in /data/sessions.db`.
    InFile,
    /// A database server: `append of session "s" on postgres://app:***@db/chat`.
    OnServer,
}

/// What was being done when an error happened, for the message: `append of session "s" in
/// /data/sessions.db`, or `open of postgres://app:***@db/chat`.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// The database: a file's path (or `:memory:`), or a server's URL with the password
    /// hidden ([`crate::redact_url`]).
    pub db: &'a str,
    /// The operation: `open`, `append`, `load`, ...
    pub name: &'static str,
    /// The session involved, if any.
    pub session_id: Option<&'a str>,
    /// Whether `db` is a file or a server, which words the message.
    pub place: Place,
}

impl<'a> Op<'a> {
    /// Operation `name` on the database `db`, about `session_id` if any.
    pub fn new(place: Place, db: &'a str, name: &'static str, session_id: Option<&'a str>) -> Self {
        Self {
            db,
            name,
            session_id,
            place,
        }
    }

    /// Opening the storage on the database `db`.
    pub fn open(place: Place, db: &'a str) -> Self {
        Self::new(place, db, "open", None)
    }
}

impl fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let preposition = match self.place {
            Place::InFile => "in",
            Place::OnServer => "on",
        };
        match self.session_id {
            Some(id) => write!(
                f,
                "{} of session \"{id}\" {preposition} {}",
                self.name, self.db
            ),
            None => write!(f, "{} of {}", self.name, self.db),
        }
    }
}

/// A stored message of `session_id`, numbered `seq`, that is not valid message JSON.
pub fn corrupt_row(
    backend: &'static str,
    session_id: &str,
    seq: i64,
    err: &serde_json::Error,
) -> Error {
    Error::corrupt(
        backend,
        session_id,
        format!("message seq {seq} is not a valid chat message: {err}"),
    )
}

/// A gap in the seqs of `session_id`: the row `expected` is gone, `found` comes next.
pub fn missing_row(backend: &'static str, session_id: &str, expected: i64, found: i64) -> Error {
    Error::corrupt(
        backend,
        session_id,
        format!("message seq {expected} is missing (next stored seq is {found})"),
    )
}

/// A `sessions` row of `session_id` that counts `count` messages where `rows` are stored.
pub fn count_mismatch(backend: &'static str, session_id: &str, count: usize, rows: usize) -> Error {
    Error::corrupt(
        backend,
        session_id,
        format!("the session row counts {count} messages, but {rows} are stored"),
    )
}

/// `Ok` when the `sessions` row of `session_id` counts `count` messages and `rows` are
/// stored, otherwise the [`count_mismatch`] error.
pub fn check_count(
    backend: &'static str,
    session_id: &str,
    count: usize,
    rows: usize,
) -> Result<()> {
    if count == rows {
        Ok(())
    } else {
        Err(count_mismatch(backend, session_id, count, rows))
    }
}

/// An append of `op`'s session (`session_id`) whose new message met a stored seq
/// (`detail`, the database's words). Every write numbers new rows from the `sessions`
/// row's count while it holds the session's write lock, so only a count behind the
/// stored rows, changed outside Fusion, gets there: nothing was written, and a retry
/// cannot mend it.
pub fn count_behind_rows(
    backend: &'static str,
    session_id: &str,
    op: Op<'_>,
    detail: &str,
) -> Error {
    Error::corrupt(
        backend,
        session_id,
        format!(
            "{op}: its message count is behind its stored messages, so a new message's seq \
             is taken ({detail}); the rows were changed outside Fusion. Nothing was written; \
             `load` still reads every row, and a `save` of them renumbers the session"
        ),
    )
}

/// A stored value of `op`'s session that the driver could not decode as the type Fusion
/// stores in its column (`what`: which, in the driver's words). A database that keeps
/// whatever it is given (SQLite keeps text in a column declared `INTEGER`) holds one only
/// when the row was changed outside Fusion. For an `op` about one session.
pub fn wrongly_typed(backend: &'static str, op: Op<'_>, what: &str) -> Error {
    Error::corrupt(
        backend,
        op.session_id.unwrap_or("?"),
        format!(
            "{op}: a stored value is not of the type Fusion stores there ({what}); the row \
             was changed outside Fusion"
        ),
    )
}

/// The refusal of a write of `count` messages to `session_id` whose message `index` is
/// the first to take what the write binds past what the backend takes at once: `bound`
/// says how much that is (`"1030 MiB"`), `limit` the backend's limit in its words
/// (`"PostgreSQL takes at most 1023 MiB in one statement"`).
pub fn batch_too_long(
    backend: &'static str,
    session_id: &str,
    index: usize,
    count: usize,
    bound: &str,
    limit: &str,
) -> Error {
    let advice = if count > 1 {
        "; append the messages in smaller batches"
    } else {
        ""
    };
    Error::InvalidMessage {
        backend,
        session_id: session_id.to_string(),
        index,
        detail: format!(
            "the write's messages up to this one are {bound} of JSON, and {limit}{advice}"
        ),
    }
}

/// A generation as a 64-bit signed `generation` column stores it. Generations are below
/// 2^53, so the value is the same number; the cast only keeps a damaged row's negative
/// value distinct.
pub fn to_column(generation: u64) -> i64 {
    generation.cast_signed()
}

/// The revision a `sessions` row `(generation, message_count)` records, or
/// [`Revision::ABSENT`] when there is no row.
pub fn revision_of(row: Option<(i64, i64)>) -> Revision {
    row.map_or(Revision::ABSENT, |(generation, count)| Revision {
        generation: generation.cast_unsigned(),
        len: usize::try_from(count).unwrap_or(0),
    })
}

/// A stored schema that needs no migration: what [`check_migrations`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    /// Every migration of this build is applied, unchanged.
    Current,
    /// The database records these migration versions, which this build does not have: a
    /// newer release wrote it, and it must not be opened.
    Newer(Vec<i64>),
}

/// Compares the migrations a database records, `applied` as `(version, checksum,
/// success)` rows, with the ones this build has, `known` as `(version, checksum)`.
///
/// `Some(`[`Schema::Newer`]`)` when a recorded version is unknown to this build (listing
/// those versions), `Some(`[`Schema::Current`]`)` when every known migration is recorded,
/// successful and unchanged, and `None` when the schema is older than this build (a known
/// migration is missing, failed or changed): the migrations must run, and the migrator
/// reports a failed or changed one.
pub fn check_migrations<'k>(
    applied: &[(i64, Vec<u8>, bool)],
    known: impl IntoIterator<Item = (i64, &'k [u8])>,
) -> Option<Schema> {
    let known: Vec<(i64, &[u8])> = known.into_iter().collect();
    let unknown: Vec<i64> = applied
        .iter()
        .map(|(version, ..)| *version)
        .filter(|version| !known.iter().any(|(v, _)| v == version))
        .collect();
    if !unknown.is_empty() {
        return Some(Schema::Newer(unknown));
    }
    let current = known.iter().all(|(version, checksum)| {
        applied
            .iter()
            .any(|(v, sum, ok)| v == version && *ok && sum.as_slice() == *checksum)
    });
    current.then_some(Schema::Current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errors_of_a_write_name_the_session_and_what_to_do() {
        let op = Op::new(Place::InFile, "/data/s.db", "append", Some("s"));
        let err = count_behind_rows("sqlite", "s", op, "UNIQUE constraint failed");
        assert!(matches!(&err, Error::Corrupt { session_id, .. } if session_id == "s"));
        let text = err.to_string();
        assert!(
            text.contains("append of session \"s\" in /data/s.db"),
            "{text}"
        );
        assert!(
            text.contains("count is behind") && text.contains("renumbers"),
            "{text}"
        );

        let limit = "SQLite binds at most 10 bytes in one value";
        for (count, advised) in [(2, true), (1, false)] {
            match batch_too_long("sqlite", "s", count - 1, count, "12 bytes", limit) {
                Error::InvalidMessage { index, detail, .. } => {
                    assert_eq!(index, count - 1);
                    assert!(detail.contains("12 bytes of JSON") && detail.contains(limit));
                    assert_eq!(detail.contains("smaller batches"), advised, "{detail}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn ops_name_the_operation_session_and_database() {
        let file = Op::new(Place::InFile, "/data/s.db", "append", Some("user-1"));
        assert_eq!(
            file.to_string(),
            "append of session \"user-1\" in /data/s.db"
        );
        let server = Op::new(Place::OnServer, "postgres://db/chat", "load", Some("u"));
        assert_eq!(
            server.to_string(),
            "load of session \"u\" on postgres://db/chat"
        );
        assert_eq!(
            Op::open(Place::OnServer, "postgres://db/chat").to_string(),
            "open of postgres://db/chat"
        );
    }

    #[test]
    fn corrupt_rows_name_backend_session_and_seq() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let err = corrupt_row("sqlite", "user-1", 4, &json);
        assert!(
            err.to_string()
                .starts_with("sqlite: session \"user-1\" is corrupt: message seq 4 is not"),
            "{err}"
        );
        assert!(
            missing_row("postgres", "s", 2, 3)
                .to_string()
                .contains("seq 2 is missing")
        );
        assert!(check_count("postgres", "s", 2, 2).is_ok());
        let err = check_count("postgres", "s", 3, 2).unwrap_err();
        assert!(
            err.to_string().contains("counts 3 messages, but 2"),
            "{err}"
        );
    }

    #[test]
    fn a_row_reads_back_as_its_revision() {
        let at = Revision {
            generation: 7,
            len: 3,
        };
        assert_eq!(revision_of(None), Revision::ABSENT);
        assert_eq!(revision_of(Some((to_column(7), 3))), at);
        assert_eq!(revision_of(Some((-1, -1))).len, 0);
    }

    #[test]
    fn migrations_decide_current_older_and_newer() {
        let known = [(1, &b"a"[..]), (2, &b"b"[..])];
        let row = |v: i64, sum: &[u8], ok| (v, sum.to_vec(), ok);
        let all = [row(1, b"a", true), row(2, b"b", true)];
        assert_eq!(check_migrations(&all, known), Some(Schema::Current));
        assert_eq!(check_migrations(&[], known), None, "nothing applied");
        assert_eq!(check_migrations(&all[..1], known), None, "one to run");
        let failed = [row(1, b"a", true), row(2, b"b", false)];
        assert_eq!(check_migrations(&failed, known), None);
        let changed = [row(1, b"a", true), row(2, b"x", true)];
        assert_eq!(check_migrations(&changed, known), None);
        let newer = [row(1, b"a", true), row(2, b"b", true), row(3, b"c", true)];
        assert_eq!(
            check_migrations(&newer, known),
            Some(Schema::Newer(vec![3]))
        );
    }
}
