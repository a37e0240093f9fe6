//! Session facts and the paged listing: a `sessions` row read back as [`SessionInfo`]
//! (metadata included), and the keyset query of one page of a [`SessionQuery`].
//!
//! A page is one statement that walks an index from the cursor on and stops after
//! `limit + 1` rows (the extra row says whether a next page exists): newest first it reads
//! `sessions_owner_updated` for an owner and `sessions_updated` otherwise, from the first
//! entry after the cursor's `(updated_at, id)`; by id it reads the primary key from the
//! first id after the cursor's. Its cost is the page, however many sessions are stored.
//! A tag filter skips the entries without the tag (or, for a rare tag, PostgreSQL reads
//! the tag's entries in `sessions_tags` and sorts them); ordering one owner's sessions by
//! id sorts that owner's sessions. Every page also skips the sessions that have expired
//! (`crate::expiry`), a test of each row it walks: an expired session no purge has
//! removed yet still costs its index step.
//!
//! A search (`SessionQuery::search`) is one more test of each row walked:
//! `id COLLATE "C" ILIKE $p ESCAPE E'\\' OR title COLLATE "C" ILIKE $p ESCAPE E'\\'`,
//! with the pattern of `SessionQuery::like_pattern` (`E'\\'`, one backslash whatever
//! `standard_conforming_strings` says). Under collation `"C"`, `ILIKE` folds the
//! case of ASCII letters only, whatever the database's locale: the search's rule, on every
//! server. No index serves a substring (a trigram index would need the `pg_trgm`
//! extension and a migration), so a page walks its index until `limit + 1` rows match:
//! O(page) for a common text, up to every session the other filters leave for a rare one.

use fusion_core::{
    Error, Position, Result, SessionInfo, SessionMeta, SessionOrder, SessionQuery, StoredExpiry,
    from_unix_micros,
};
use serde_json::{Map, Value};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, Decode, Postgres, Row, Type};

use crate::error::BACKEND;
use crate::expiry::unexpired;
use crate::sql::info_columns;

/// One `sessions` row's columns ([`info_columns`]), decoded to their SQL types.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Columns {
    pub(crate) id: String,
    pub(crate) message_count: i64,
    pub(crate) generation: i64,
    pub(crate) owner: Option<String>,
    pub(crate) title: Option<String>,
    /// NULL (`None`) when the session has no tags.
    pub(crate) tags: Option<Vec<String>>,
    /// The data map's JSON text.
    pub(crate) data: String,
    pub(crate) expires_at: Option<i64>,
    pub(crate) expiry_idle: Option<i64>,
    pub(crate) created_us: i64,
    pub(crate) updated_us: i64,
}

/// A row of [`info_columns`] as [`SessionInfo`]. A column that does not decode (a NULL
/// tag or a tags array of two dimensions, written by hand) or a data column that is not a
/// JSON object is [`Error::Corrupt`] naming the session and the column, as a damaged
/// message row is.
pub(crate) fn decode_info(row: &PgRow) -> Result<SessionInfo> {
    let id: String = row
        .try_get("id")
        .map_err(|e| Error::corrupt(BACKEND, "?", format!("a session id does not read: {e}")))?;
    let columns = Columns {
        message_count: column(row, &id, "message_count")?,
        generation: column(row, &id, "generation")?,
        owner: column(row, &id, "owner")?,
        title: column(row, &id, "title")?,
        tags: column(row, &id, "tags")?,
        data: column(row, &id, "data")?,
        expires_at: column(row, &id, "expires_at")?,
        expiry_idle: column(row, &id, "expiry_idle")?,
        created_us: time_column(row, &id, "created")?,
        updated_us: time_column(row, &id, "updated")?,
        id,
    };
    info_of(columns)
}

/// The column `name` of the row of session `id`, or [`Error::Corrupt`] saying why not.
fn column<'r, T>(row: &'r PgRow, id: &str, name: &str) -> Result<T>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    row.try_get(name).map_err(|e| {
        let cause = match e {
            sqlx::Error::ColumnDecode { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        Error::corrupt(
            BACKEND,
            id,
            format!("the {name} column does not read: {cause}"),
        )
    })
}

/// The column `{what}_us` of the row of session `id` ([`crate::sql::info_columns`]):
/// `{what}_at` in microseconds, or [`Error::Corrupt`] naming `{what}_at` when it holds
/// no time a session can have (infinity, or past the year 294246: a hand edit).
fn time_column(row: &PgRow, id: &str, what: &str) -> Result<i64> {
    let us: Option<i64> = column(row, id, &format!("{what}_us"))?;
    us.ok_or_else(|| bad_time(id, what))
}

/// [`Error::Corrupt`]: the `{what}_at` column of session `id` holds no time a session can
/// have.
fn bad_time(id: &str, what: &str) -> Error {
    Error::corrupt(
        BACKEND,
        id,
        format!(
            "the {what}_at column holds no time a session can have (infinity, or past \
             the year 294246): set it to the session's {what} time, or delete the session"
        ),
    )
}

/// After a statement on session `id` failed converting a time to microseconds (every
/// write's condition, `crate::expiry::times_hold!`; an idle expiry moved, a conditional
/// write's check): the
/// [`Error::Corrupt`] naming the column, when the session's `created_at` or `updated_at`
/// holds no time a session can have (a hand edit); `None` when neither does (or the look
/// fails), and the statement's own error stands. One key lookup, on failure only.
pub(crate) async fn damaged_time(pool: &sqlx::PgPool, id: &str) -> Option<Error> {
    let damaged: Option<(bool, bool)> = sqlx::query_as(concat!(
        "SELECT ",
        crate::expiry::stored_micros!("created_at"),
        " IS NULL, ",
        crate::expiry::stored_micros!("updated_at"),
        " IS NULL FROM sessions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    match damaged? {
        (_, true) => Some(bad_time(id, "updated")),
        (true, false) => Some(bad_time(id, "created")),
        (false, false) => None,
    }
}

/// Decoded columns as [`SessionInfo`]; data that is not a JSON object is
/// [`Error::Corrupt`]. Tags are kept sorted and without duplicates, as
/// [`SessionMeta`] keeps them, even if edited by hand.
pub(crate) fn info_of(columns: Columns) -> Result<SessionInfo> {
    let data: Map<String, Value> = serde_json::from_str(&columns.data).map_err(|e| {
        Error::corrupt(
            BACKEND,
            &columns.id,
            format!("the data column is not a JSON object: {e}"),
        )
    })?;
    let expiry = StoredExpiry {
        expires_at: columns.expires_at,
        idle: columns.expiry_idle,
    };
    let mut meta = SessionMeta::new().tags(columns.tags.unwrap_or_default());
    meta.owner = columns.owner;
    meta.title = columns.title;
    meta.data = data;
    meta.expiry = expiry.expiry();
    let mut info = SessionInfo::new(
        columns.id,
        usize::try_from(columns.message_count).unwrap_or(0),
    );
    info.created_at = Some(from_unix_micros(columns.created_us));
    info.updated_at = Some(from_unix_micros(columns.updated_us));
    info.generation = columns.generation.cast_unsigned();
    info.expires_at = expiry.expires_at_time();
    info.meta = meta;
    Ok(info)
}

/// The SQL and arguments of one page of `query` (validated), starting after `start`
/// (`query`'s parsed cursor): the filters, the keyset condition, the order and a limit
/// one above the page's, so the caller knows whether a next page exists.
///
/// Run it as an unnamed statement (`persistent(false)`), planned for its own arguments
/// each time: a statement prepared once gets a generic plan after five runs, planned for
/// an average owner or tag, and for the owners with few sessions that is a bitmap scan
/// and sort of the whole owner's (or tag's) sessions, which an owner or tag with many
/// sessions would then pay on every page. Planned each time, a large owner's page walks
/// the index and stops after the page. The price is a constant: one more round trip
/// (parse, then execute) and the planning, on a call that is not on the hot path.
pub(crate) fn page_query(
    query: &SessionQuery,
    start: Option<&Position>,
) -> sqlx::Result<(String, PgArguments)> {
    let mut args = PgArguments::default();
    let mut conditions = Vec::new();
    if let Some(owner) = &query.owner {
        conditions.push(format!("owner = {}", bind(&mut args, owner.clone())?));
    }
    if let Some(tag) = &query.tag {
        // `@>` is strict, so this implies `tags IS NOT NULL`, the predicate of the partial
        // index `sessions_tags`: the planner may use it.
        let tag = bind(&mut args, tag.clone())?;
        conditions.push(format!("tags @> ARRAY[{tag}]::text[]"));
    }
    if let Some(pattern) = query.like_pattern() {
        let pattern = bind(&mut args, pattern)?;
        conditions.push(format!(
            r#"(id COLLATE "C" ILIKE {pattern} ESCAPE E'\\' OR title COLLATE "C" ILIKE {pattern} ESCAPE E'\\')"#
        ));
    }
    match start {
        Some(Position::Updated { micros, id }) => {
            let micros = bind(
                &mut args,
                (*micros).clamp(CURSOR_MICROS_MIN, CURSOR_MICROS_MAX),
            )?;
            let id = bind(&mut args, id.clone())?;
            // A row comparison, so the index scan starts right after the cursor's entry.
            // The cursor's microseconds become a timestamptz exactly (both are whole
            // microseconds; the product is computed exactly below 2^53 µs, ±285 years).
            conditions.push(format!(
                "(updated_at, id) < ('epoch'::timestamptz + {micros} * interval '1 microsecond', {id})"
            ));
        }
        Some(Position::Id(id)) => conditions.push(format!("id > {}", bind(&mut args, id.clone())?)),
        None => {}
    }
    conditions.push(unexpired!("").to_owned());
    let filter = format!(" WHERE {}", conditions.join(" AND "));
    let order = match query.order {
        SessionOrder::UpdatedDesc => "updated_at DESC, id DESC",
        SessionOrder::Id => "id",
    };
    let limit = bind(
        &mut args,
        i64::try_from(query.limit + 1).unwrap_or(i64::MAX),
    )?;
    let sql = format!(
        concat!(
            "SELECT ",
            info_columns!(),
            " FROM sessions{} ORDER BY {} LIMIT {}"
        ),
        filter, order, limit
    );
    Ok((sql, args))
}

/// The earliest instant a cursor's microseconds stand for in [`page_query`]: PostgreSQL's
/// first `timestamptz`, 4714-11-24 BC. A cursor holds any `i64` (one made by
/// `Cursor::updated_before` for a time thousands of years back, say), and one past
/// either bound failed the page with "timestamp out of range" or "interval out of range";
/// clamped, it lists what it would have (no session is written before the first instant
/// or after the last).
const CURSOR_MICROS_MIN: i64 = -210_866_803_200_000_000;

/// The latest instant a cursor's microseconds stand for in [`page_query`], about the year
/// 148,000: below `i64::MAX`, which turned into a `float8` for the interval rounds up to
/// 2^63, past the interval's range.
const CURSOR_MICROS_MAX: i64 = 1 << 62;

/// Binds `value` as the next argument and returns its placeholder (`$n`).
fn bind<'q, T>(args: &mut PgArguments, value: T) -> sqlx::Result<String>
where
    T: 'q + sqlx::Encode<'q, Postgres> + Type<Postgres>,
{
    args.add(value).map_err(sqlx::Error::Encode)?;
    Ok(format!("${}", args.len()))
}

#[cfg(test)]
mod tests {
    use fusion_core::unix_micros;

    use super::*;

    fn columns() -> Columns {
        Columns {
            id: "s".into(),
            message_count: 3,
            generation: 7,
            owner: Some("o".into()),
            title: None,
            tags: Some(vec!["b".into(), "a".into(), "b".into()]),
            data: r#"{"k":[1,"x"]}"#.into(),
            expires_at: None,
            expiry_idle: None,
            created_us: 1_700_000_000_000_000,
            updated_us: 1_700_000_000_000_001,
        }
    }

    #[test]
    fn columns_read_back_as_facts_with_exact_microseconds() {
        let info = info_of(columns()).unwrap();
        assert_eq!(
            (info.id.as_str(), info.message_count, info.generation),
            ("s", 3, 7)
        );
        assert_eq!(info.meta.owner.as_deref(), Some("o"));
        assert_eq!(info.meta.tags, ["a", "b"], "sorted, without duplicates");
        assert_eq!(info.meta.data["k"], serde_json::json!([1, "x"]));
        assert_eq!(unix_micros(info.updated_at.unwrap()), 1_700_000_000_000_001);
        assert_eq!(unix_micros(info.created_at.unwrap()), 1_700_000_000_000_000);
        let untagged = Columns {
            tags: None,
            ..columns()
        };
        assert!(
            info_of(untagged).unwrap().meta.tags.is_empty(),
            "NULL is no tags"
        );
        assert_eq!((info.expires_at, info.meta.expiry), (None, None));
        let idle = Columns {
            expires_at: Some(1_700_000_060_000_001),
            expiry_idle: Some(60_000_000),
            ..columns()
        };
        let info = info_of(idle).unwrap();
        assert_eq!(
            info.meta.expiry,
            Some(fusion_core::Expiry::Idle(std::time::Duration::from_secs(
                60
            )))
        );
        assert_eq!(unix_micros(info.expires_at.unwrap()), 1_700_000_060_000_001);
    }

    #[test]
    fn data_that_is_not_a_json_object_is_corrupt_and_names_the_session() {
        for data in ["[1]", "{", "\"text\"", ""] {
            let bad = Columns {
                data: data.into(),
                ..columns()
            };
            let err = info_of(bad).unwrap_err();
            assert!(
                matches!(&err, Error::Corrupt { session_id, .. } if session_id == "s"),
                "{err:?}"
            );
            assert!(err.to_string().contains("data column"), "{err}");
        }
    }

    #[test]
    fn a_page_query_binds_each_filter_once_and_the_keyset_condition() {
        let query = SessionQuery::new().owner("o").tag("t").limit(20);
        let (sql, args) = page_query(&query, None).unwrap();
        assert!(
            sql.contains("WHERE owner = $1 AND tags @> ARRAY[$2]::text[]"),
            "{sql}"
        );
        assert!(
            sql.ends_with("ORDER BY updated_at DESC, id DESC LIMIT $3"),
            "{sql}"
        );
        assert!(
            sql.contains("AND (expires_at IS NULL OR expires_at > "),
            "{sql}"
        );
        assert_eq!(args.len(), 3);

        let after = Position::Updated {
            micros: 5,
            id: "x".into(),
        };
        let (sql, args) = page_query(&SessionQuery::new(), Some(&after)).unwrap();
        assert!(
            sql.contains("WHERE (updated_at, id) < ('epoch'::timestamptz + $1 * interval"),
            "{sql}"
        );
        assert_eq!(args.len(), 3);

        let by_id = SessionQuery::new().order(SessionOrder::Id).limit(1);
        let (sql, _) = page_query(&by_id, Some(&Position::Id("x".into()))).unwrap();
        assert!(
            sql.contains("WHERE id > $1 AND (expires_at IS NULL"),
            "{sql}"
        );
        assert!(sql.ends_with("ORDER BY id LIMIT $2"), "{sql}");

        let searched = SessionQuery::new().owner("o").search("50%");
        let (sql, args) = page_query(&searched, None).unwrap();
        assert!(
            sql.contains(
                r#"WHERE owner = $1 AND (id COLLATE "C" ILIKE $2 ESCAPE E'\\' OR title COLLATE "C" ILIKE $2 ESCAPE E'\\')"#
            ),
            "{sql}"
        );
        assert_eq!(args.len(), 3, "the pattern is bound once");
    }
}
