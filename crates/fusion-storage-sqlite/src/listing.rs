//! A page of a listing ([`page`]): one keyset query per kind of page, reading from the
//! cursor on in one index of migration 0003 and stopping after `limit + 1` rows.
//!
//! | page | walks | per row |
//! |---|---|---|
//! | every session, newest first | `sessions_by_updated`, backwards | — |
//! | an owner's, newest first | `sessions_by_owner_updated`, backwards | — |
//! | an owner's with a tag, newest first | `sessions_by_owner_updated`, backwards | a probe of `session_tags`' key |
//! | every session by id | the `sessions` primary key | — |
//! | an owner's by id | `sessions_by_owner_id` | — |
//! | an owner's with a tag, by id | `sessions_by_owner_id` | a probe of `session_tags`' key |
//! | a tag's by id | the `session_tags` primary key | the `sessions` row by key |
//! | a tag's, newest first | for a tag on more than 2,000 sessions `sessions_by_updated`, backwards, at most 2,000 entries; else (or when those hold too few) all of the tag's `session_tags` rows | a probe of `session_tags`' key; else the `sessions` row by key, then a top-n sort |
//!
//! Each row also reads its `session_meta` row by key, if it has one. So a page costs
//! O(limit) index steps however many sessions are stored, with two exceptions: an owner
//! and a tag together walk the owner's sessions until `limit + 1` carry the tag, O(the
//! owner's sessions) at worst; and a tag's page newest first, for a tag more than 2,000
//! sessions carry, looks through at most 2,000 sessions in update order for the page, and
//! when fewer than `limit + 1` of them carry the tag (or the tag is on fewer sessions)
//! reads every session carrying it, O(the tag's sessions) (migration 0003 says why
//! `session_tags` keeps no `updated_at`). A unit test below checks each plan with `EXPLAIN QUERY PLAN`.
//!
//! Every query also skips the sessions that have expired (`crate::expiry`), by a test of
//! the row it reads anyway, bound to now in microseconds as its next to last parameter. An
//! expired session no purge has removed yet still costs its index step, so a walk past
//! many of them reads more than `limit + 1` entries; `purge_expired` keeps that bounded.
//!
//! # Search
//!
//! A search (`SessionQuery::search`) is one more test of each row the walk reads, in the
//! same statement: `s.id LIKE ?p ESCAPE '\' OR title LIKE ?p ESCAPE '\'`, the pattern
//! (`SessionQuery::like_pattern`) bound as the last parameter, NULL when there is no
//! search (then the test is `?p IS NULL`, and passes). SQLite's `LIKE` folds the case of
//! ASCII letters only, which is the search's rule. No index serves a substring, so a page
//! walks its index until `limit + 1` rows match: O(page) for a common text, up to every
//! session the filters leave for a rare one. The title is `session_meta`'s, read by key
//! (the tag's newest-first subquery reads it with a scalar subquery, only for rows whose
//! id does not match).
//!
//! # Cursors and milliseconds
//!
//! `updated_at` is kept in milliseconds; a cursor holds microseconds
//! (`fusion_core::Position::Updated`). A cursor this backend handed out was made from a
//! whole millisecond, so `micros / 1000` is exact and the page resumes after
//! `(updated_at, id) < (ms, id)`. A cursor crafted with a time that is not a whole
//! millisecond sorts between two milliseconds: the sessions after it are those whose
//! `updated_at * 1000 < micros`, whatever their id, which is
//! `updated_at < ceil(micros / 1000)`, written `(updated_at, id) < (ceil, '')` since every
//! id sorts after the empty string.
//!
//! The first page starts after every stored cell, not after the largest number: its bound
//! is `(X'FF…', '~')` ([`AFTER_EVERY_CELL`]), a blob, since SQLite sorts every number before
//! any text and any text before any blob. A session whose `updated_at` a hand edit left
//! text, a blob or a real past i64 sorts newest, so the first page holds it and fails
//! as corrupt naming it, as the page by id holding it does; with a number for bound every
//! newest-first page passed over it. The bound costs nothing: the walk starts at the same
//! end of the index. Every valid id sorts before `~`.

use fusion_core::{Position, Result, SessionOrder, SessionPage, SessionQuery};
use sqlx::SqlitePool;
use sqlx::sqlite::Sqlite;

use crate::error::{Op, parse_sqlite_error};
use crate::expiry::unexpired;
use crate::meta::{InfoRow, from_sessions, info_columns};

/// The search test of session `s` whose title is `$title`, with the `LIKE` pattern bound
/// as `$pattern`: every row passes when the pattern is NULL (no search).
macro_rules! searched {
    ($title:literal, $pattern:literal) => {
        concat!(
            "(",
            $pattern,
            " IS NULL OR s.id LIKE ",
            $pattern,
            " ESCAPE '\\' OR ",
            $title,
            " LIKE ",
            $pattern,
            " ESCAPE '\\')"
        )
    };
}

/// The newest-first pages: filters, then the keyset bound `(ms, id)`, then the limit.
const BY_UPDATED: &str = concat!(
    "SELECT ",
    info_columns!(),
    " FROM ",
    from_sessions!(),
    " WHERE (s.updated_at, s.id) < (?1, ?2) AND ",
    unexpired!("s", "?4"),
    " AND ",
    searched!("m.title", "?5"),
    " ORDER BY s.updated_at DESC, s.id DESC LIMIT ?3"
);
const OWNER_BY_UPDATED: &str = concat!(
    "SELECT ",
    info_columns!(),
    " FROM ",
    from_sessions!(),
    " WHERE s.owner = ?1 AND (s.updated_at, s.id) < (?2, ?3) AND ",
    unexpired!("s", "?5"),
    " AND ",
    searched!("m.title", "?6"),
    " ORDER BY s.updated_at DESC, s.id DESC LIMIT ?4"
);

/// The test both walks of [`TAG_BY_UPDATED`] keep a candidate `s` by, written once:
/// unexpired at ?5 and matching the search ?6, its title read by key (neither walk joins
/// the metadata).
macro_rules! tag_candidate {
    () => {
        concat!(
            unexpired!("s", "?5"),
            " AND ",
            searched!(
                "(SELECT m.title FROM session_meta AS m WHERE m.session_id = s.id)",
                "?6"
            )
        )
    };
}

// A tag's page newest first, in two ways decided inside the statement (one snapshot):
// - `near`, for a tag more than 2,000 sessions carry (counted on its key, at most 2,001
//   rows): the sessions after the cursor in update order, each probed for the tag, down
//   to the 2,000th one (`OFFSET 1999`; its `updated_at`, found on the covering index, bounds
//   the walk), stopping once `limit + 1` carry the tag. Those are the page whenever that
//   many are found: any other tagged session is older than the whole window. A tag carried
//   by more than one session in 40 fills a page this way, at O(limit / share) steps.
// - `far`, only when `near` found fewer (SQLite tests such constant conditions before the
//   loop): the tag's rows by key and each of their sessions by key, keeping the newest
//   `limit + 1` ids (a top-n sort over every session carrying the tag: at most 2,000 for a
//   tag `near` skips).
// Only then the page's rows are read whole, so the sort carries ids, not every candidate's
// metadata. CROSS JOIN keeps each join in the order written.
const TAG_BY_UPDATED: &str = concat!(
    "WITH near AS (SELECT s.id AS id FROM sessions AS s \
       WHERE (SELECT count(*) FROM (SELECT 1 FROM session_tags AS k WHERE k.tag = ?1 LIMIT 2001)) > 2000 \
       AND (s.updated_at, s.id) < (?2, ?3) \
       AND s.updated_at >= coalesce((SELECT w.updated_at FROM sessions AS w \
         WHERE (w.updated_at, w.id) < (?2, ?3) \
         ORDER BY w.updated_at DESC, w.id DESC LIMIT 1 OFFSET 1999), -9223372036854775808) \
       AND EXISTS (SELECT 1 FROM session_tags AS t WHERE t.tag = ?1 AND t.session_id = s.id) \
       AND ",
    tag_candidate!(),
    " ORDER BY s.updated_at DESC, s.id DESC LIMIT ?4), \
     far AS (SELECT s.id AS id FROM session_tags AS t CROSS JOIN sessions AS s \
       WHERE (SELECT count(*) FROM near) < ?4 \
       AND t.tag = ?1 AND s.id = t.session_id AND (s.updated_at, s.id) < (?2, ?3) AND ",
    tag_candidate!(),
    " ORDER BY s.updated_at DESC, s.id DESC LIMIT ?4), \
     picked AS (SELECT id FROM near WHERE (SELECT count(*) FROM near) >= ?4 \
       UNION ALL SELECT id FROM far) \
     SELECT ",
    info_columns!(),
    " FROM picked AS p CROSS JOIN ",
    from_sessions!(),
    " WHERE s.id = p.id ORDER BY s.updated_at DESC, s.id DESC"
);
const OWNER_TAG_BY_UPDATED: &str = concat!(
    "SELECT ",
    info_columns!(),
    " FROM ",
    from_sessions!(),
    " WHERE s.owner = ?1 \
     AND EXISTS (SELECT 1 FROM session_tags AS t WHERE t.tag = ?2 AND t.session_id = s.id) \
     AND (s.updated_at, s.id) < (?3, ?4) AND ",
    unexpired!("s", "?6"),
    " AND ",
    searched!("m.title", "?7"),
    " ORDER BY s.updated_at DESC, s.id DESC LIMIT ?5"
);

/// The pages by id: filters, then the id the page starts after, then the limit.
const BY_ID: &str = concat!(
    "SELECT ",
    info_columns!(),
    " FROM ",
    from_sessions!(),
    " WHERE s.id > ?1 AND ",
    unexpired!("s", "?3"),
    " AND ",
    searched!("m.title", "?4"),
    " ORDER BY s.id LIMIT ?2"
);
const OWNER_BY_ID: &str = concat!(
    "SELECT ",
    info_columns!(),
    " FROM ",
    from_sessions!(),
    " WHERE s.owner = ?1 AND s.id > ?2 AND ",
    unexpired!("s", "?4"),
    " AND ",
    searched!("m.title", "?5"),
    " ORDER BY s.id LIMIT ?3"
);
const TAG_BY_ID: &str = concat!(
    "SELECT ",
    info_columns!(),
    " FROM session_tags AS t CROSS JOIN ",
    from_sessions!(),
    " WHERE t.tag = ?1 AND s.id = t.session_id AND t.session_id > ?2 AND ",
    unexpired!("s", "?4"),
    " AND ",
    searched!("m.title", "?5"),
    " ORDER BY t.session_id LIMIT ?3"
);
const OWNER_TAG_BY_ID: &str = concat!(
    "SELECT ",
    info_columns!(),
    " FROM ",
    from_sessions!(),
    " WHERE s.owner = ?1 \
     AND EXISTS (SELECT 1 FROM session_tags AS t WHERE t.tag = ?2 AND t.session_id = s.id) \
     AND s.id > ?3 AND ",
    unexpired!("s", "?5"),
    " AND ",
    searched!("m.title", "?6"),
    " ORDER BY s.id LIMIT ?4"
);

/// The `updated_at` bound of a first newest-first page, a blob sorting after every number
/// and text, and every blob that does not start with 32 bytes 0xFF: see the
/// [module documentation](self).
const AFTER_EVERY_CELL: &[u8] = &[0xFF; 32];

/// A value bound to a page query, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    Int(i64),
    Blob(&'static [u8]),
    /// The search's `LIKE` pattern, NULL for none.
    Pattern(Option<String>),
}

/// The SQL of the page `query` asks for, starting after `start`, and its arguments, the
/// last two being `now` (Unix µs: the sessions expired by then are left out) and the
/// search's pattern.
pub(crate) fn page_sql<'q>(
    query: &'q SessionQuery,
    start: Option<&'q Position>,
    now: i64,
) -> (&'static str, Vec<Arg<'q>>) {
    let mut args = Vec::with_capacity(7);
    args.extend(query.owner.as_deref().map(Arg::Text));
    args.extend(query.tag.as_deref().map(Arg::Text));
    let filters = (query.owner.is_some(), query.tag.is_some());
    let sql = match query.order {
        SessionOrder::UpdatedDesc => {
            let (updated, id) = match start {
                Some(Position::Updated { micros, id }) => {
                    let (ms, id) = updated_bound(*micros, id);
                    (Arg::Int(ms), id)
                }
                // `validate` refused a cursor of the other order.
                Some(Position::Id(_)) | None => (Arg::Blob(AFTER_EVERY_CELL), "~"),
            };
            args.extend([updated, Arg::Text(id)]);
            match filters {
                (false, false) => BY_UPDATED,
                (true, false) => OWNER_BY_UPDATED,
                (false, true) => TAG_BY_UPDATED,
                (true, true) => OWNER_TAG_BY_UPDATED,
            }
        }
        SessionOrder::Id => {
            let after = match start {
                Some(Position::Id(id)) => id.as_str(),
                Some(Position::Updated { .. }) | None => "",
            };
            args.push(Arg::Text(after));
            match filters {
                (false, false) => BY_ID,
                (true, false) => OWNER_BY_ID,
                (false, true) => TAG_BY_ID,
                (true, true) => OWNER_TAG_BY_ID,
            }
        }
    };
    // One row past the page says whether another page follows.
    let fetch = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
    args.push(Arg::Int(fetch));
    args.push(Arg::Int(now));
    args.push(Arg::Pattern(query.like_pattern()));
    (sql, args)
}

/// The keyset bound `(ms, id)` in the millisecond column of a newest-first cursor at
/// `micros`: the sessions after the cursor are those with `(updated_at, id) < bound`.
/// See the [module documentation](self).
fn updated_bound(micros: i64, id: &str) -> (i64, &str) {
    let ms = micros.div_euclid(1000);
    if micros.rem_euclid(1000) == 0 {
        (ms, id)
    } else {
        (ms + 1, "")
    }
}

/// One page of `query` as of `now` (Unix µs), read through `pool` in one statement (one
/// snapshot). A session whose metadata cells are damaged fails the page with
/// `Error::Corrupt` naming it.
pub(crate) async fn page(
    pool: &SqlitePool,
    query: &SessionQuery,
    now: i64,
    op: Op<'_>,
) -> Result<SessionPage> {
    query.validate()?;
    let start = query.start()?;
    let (sql, args) = page_sql(query, start.as_ref(), now);
    let mut statement = sqlx::query::<Sqlite>(sql);
    for arg in args {
        statement = match arg {
            Arg::Text(text) => statement.bind(text),
            Arg::Int(n) => statement.bind(n),
            Arg::Blob(bytes) => statement.bind(bytes),
            Arg::Pattern(pattern) => statement.bind(pattern),
        };
    }
    let rows = statement
        .fetch_all(pool)
        .await
        .and_then(|rows| {
            rows.iter()
                .map(InfoRow::from_sqlx)
                .collect::<sqlx::Result<Vec<_>>>()
        })
        .map_err(|e| parse_sqlite_error(e, op))?;
    let infos = rows
        .into_iter()
        .map(InfoRow::decode)
        .collect::<Result<Vec<_>>>()?;
    // The rows are the page already, in order; `page_of` cuts the extra row and makes the
    // cursor, the same way for every backend.
    query.page_of(infos)
}

#[cfg(test)]
mod tests {
    use fusion_core::{SessionInfo, from_unix_micros, unix_micros};

    use super::*;

    #[test]
    fn a_cursor_of_a_whole_millisecond_resumes_after_that_session() {
        assert_eq!(
            updated_bound(1_700_000_000_123_000, "b"),
            (1_700_000_000_123, "b")
        );
        assert_eq!(updated_bound(0, "b"), (0, "b"));
        assert_eq!(updated_bound(-2_000, "b"), (-2, "b"));
    }

    /// A cursor, of a whole millisecond or crafted between two, admits exactly the rows
    /// that `Position`'s order puts after it.
    #[test]
    fn every_cursor_admits_what_position_order_admits() {
        for micros in [1_500, 1_001, 1_999, -1_500, -1, 1, 0, 1_000, -2_000] {
            let (bound_ms, bound_id) = updated_bound(micros, "m");
            let cursor = Position::Updated {
                micros,
                id: "m".into(),
            };
            for ms in -3..=3 {
                for id in ["a", "m", "z"] {
                    let mut info = SessionInfo::new(id, 1);
                    info.updated_at = Some(from_unix_micros(ms * 1000));
                    assert_eq!(unix_micros(info.updated_at.unwrap()), ms * 1000);
                    let after = Position::of(SessionOrder::UpdatedDesc, &info) > cursor;
                    let in_sql = (ms, id) < (bound_ms, bound_id);
                    assert_eq!(after, in_sql, "cursor {micros} µs, row {ms} ms {id}");
                }
            }
        }
    }

    #[test]
    fn each_filter_binds_its_values_in_the_order_of_its_sql() {
        let query = SessionQuery::new().owner("o").tag("t").limit(5);
        let start = Position::Updated {
            micros: 2_000,
            id: "s".into(),
        };
        let (sql, args) = page_sql(&query, Some(&start), 9);
        assert_eq!(sql, OWNER_TAG_BY_UPDATED);
        assert_eq!(
            args,
            [
                Arg::Text("o"),
                Arg::Text("t"),
                Arg::Int(2),
                Arg::Text("s"),
                Arg::Int(6),
                Arg::Int(9),
                Arg::Pattern(None)
            ]
        );
        assert!(
            sql.contains("s.expires_at > ?6"),
            "now is the next to last parameter"
        );
        assert!(
            sql.contains("?7 IS NULL OR s.id LIKE ?7 ESCAPE '\\'"),
            "the search pattern is the last one: {sql}"
        );
        let by_id = SessionQuery::new()
            .order(SessionOrder::Id)
            .limit(1)
            .search("50%");
        let (sql, args) = page_sql(&by_id, None, 9);
        assert_eq!(sql, BY_ID);
        assert_eq!(
            args,
            [
                Arg::Text(""),
                Arg::Int(2),
                Arg::Int(9),
                Arg::Pattern(Some("%50\\%%".into()))
            ]
        );
        let newest = SessionQuery::new();
        let (_, args) = page_sql(&newest, None, 9);
        assert_eq!(args[..2], [Arg::Blob(AFTER_EVERY_CELL), Arg::Text("~")]);
    }

    /// Every page query walks the index named in the module documentation from its bound:
    /// SQLite searches (never scans) each table, and sorts nothing but a tag's sessions
    /// newest first (their ids, then the page).
    #[tokio::test]
    async fn every_page_is_an_index_walk_without_a_scan() {
        let storage = crate::SqliteStorage::connect("sqlite::memory:")
            .await
            .unwrap();
        let cases = [
            (BY_UPDATED, "SEARCH s USING INDEX sessions_by_updated ("),
            (
                OWNER_BY_UPDATED,
                "SEARCH s USING INDEX sessions_by_owner_updated (owner=? AND",
            ),
            (
                OWNER_TAG_BY_UPDATED,
                "SEARCH s USING INDEX sessions_by_owner_updated (owner=? AND",
            ),
            (BY_ID, "SEARCH s USING PRIMARY KEY (id>?)"),
            (
                OWNER_BY_ID,
                "SEARCH s USING INDEX sessions_by_owner_id (owner=? AND id>?)",
            ),
            (
                TAG_BY_ID,
                "SEARCH t USING PRIMARY KEY (tag=? AND session_id>?)",
            ),
            (
                OWNER_TAG_BY_ID,
                "SEARCH s USING INDEX sessions_by_owner_id (owner=? AND id>?)",
            ),
        ];
        let by_key = [
            "SEARCH s USING PRIMARY KEY (id=?)",
            "SEARCH m USING PRIMARY KEY (session_id=?)",
            "CORRELATED SCALAR SUBQUERY",
            "SEARCH t USING PRIMARY KEY (tag=? AND session_id=?)",
        ];
        for (sql, walk) in cases {
            let steps = storage.query_plan(sql).await;
            assert!(steps[0].starts_with(walk), "{sql}: {steps:?}");
            for step in &steps[1..] {
                assert!(
                    by_key.iter().any(|k| step.starts_with(k)),
                    "{sql}: {steps:?}"
                );
            }
        }

        // A tag's page newest first: the tag's count on its key, the window's walk in update
        // order (bounded below by its 2,000th entry, found on the covering index), and the
        // tag's rows by key; the
        // only scans are of the statement's own short lists (`near`, `far`), and the only
        // sorts of ids and of the page's rows.
        let steps = storage.query_plan(TAG_BY_UPDATED).await;
        for walk in [
            "SEARCH k USING PRIMARY KEY (tag=?)",
            "SEARCH s USING INDEX sessions_by_updated (updated_at>? AND (updated_at,id)<(?,?))",
            "SEARCH w USING COVERING INDEX sessions_by_updated ((updated_at,id)<(?,?))",
            "SEARCH t USING PRIMARY KEY (tag=?)",
        ] {
            assert!(steps.iter().any(|s| s == walk), "{walk}: {steps:?}");
        }
        for step in &steps {
            // `(subquery-N)` is the tag's count, at most 2,001 rows of its key.
            let table_scan = step.starts_with("SCAN ")
                && !["SCAN near", "SCAN far", "SCAN p", "SCAN picked"].contains(&step.as_str())
                && !step.starts_with("SCAN (subquery-");
            assert!(!table_scan, "{step}: {steps:?}");
        }
    }
}
