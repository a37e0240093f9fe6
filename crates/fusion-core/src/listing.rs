//! Paged, filtered listing of sessions: what to list ([`SessionQuery`]), one page of the
//! answer ([`SessionPage`]) and where the next page starts ([`Cursor`]).
//!
//! # Order and cursors
//!
//! Sessions are listed newest first ([`SessionOrder::UpdatedDesc`]: by `updated_at`
//! truncated to whole microseconds, then by id, both descending) or by id
//! ([`SessionOrder::Id`], ascending). A cursor holds the sort key of the last session of
//! a page, and the next page starts strictly after it (keyset paging), so a page costs
//! what its rows cost however deep into the list it is, and paging stays correct while
//! sessions are written:
//! - a session that exists throughout and is not written while the pages are read
//!   appears exactly once;
//! - no session appears twice: a write moves a session to the front of the newest-first
//!   order, before any cursor already handed out;
//! - a session created, written or deleted while the pages are read may or may not
//!   appear.
//!
//! A cursor is opaque text: pass back what [`SessionPage::next`] returned, with the same
//! query otherwise.
//!
//! # Search
//!
//! [`SessionQuery::search`] keeps the sessions whose id or title contains a text, ASCII
//! letters in either case (the `search` module says why not Unicode case folding). It is a
//! filter like the owner and the tag: the order and the cursors are unchanged, so a
//! search's next page continues after its cursor in the same order. Unlike them it has no
//! index in any backend: a page walks the order's index until `limit + 1` sessions match,
//! so a text few sessions contain costs a walk of most of them (per backend in
//! `docs/storage-backends.md`).

mod search;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::session_meta::validate_owner;
use crate::{Error, Result, SessionId, SessionInfo, SessionMeta};

/// How a listing is sorted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SessionOrder {
    /// Most recently written first (ties by id, descending).
    #[default]
    UpdatedDesc,
    /// By id, ascending.
    Id,
}

/// What [`ConversationStorage::list_page`](crate::ConversationStorage::list_page) lists.
///
/// ```
/// use fusion_core::SessionQuery;
///
/// let first = SessionQuery::new().owner("user-42").tag("ops").limit(20);
/// first.validate()?;
/// let found = SessionQuery::new().search("deploy").limit(20);
/// found.validate()?;
/// # Ok::<(), fusion_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionQuery {
    /// Only sessions of this owner.
    pub owner: Option<String>,
    /// Only sessions carrying this tag.
    pub tag: Option<String>,
    /// Only sessions whose id or title contains this text, ASCII letters in either case
    /// and every other character exactly (see [`SessionQuery::search`]).
    pub search: Option<String>,
    /// The sort order.
    pub order: SessionOrder,
    /// The most sessions one page holds: 1 to [`SessionQuery::MAX_LIMIT`].
    pub limit: usize,
    /// Where the page starts: the previous page's [`SessionPage::next`]; `None` for the
    /// first page.
    pub cursor: Option<Cursor>,
}

impl Default for SessionQuery {
    fn default() -> Self {
        Self {
            owner: None,
            tag: None,
            search: None,
            order: SessionOrder::default(),
            limit: Self::DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

impl SessionQuery {
    /// The page size when none is given.
    pub const DEFAULT_LIMIT: usize = 50;
    /// The largest page.
    pub const MAX_LIMIT: usize = 1000;
    /// The longest search text, in characters.
    pub const MAX_SEARCH_CHARS: usize = 200;

    /// The first page of every session, newest first, [`DEFAULT_LIMIT`](Self::DEFAULT_LIMIT)
    /// at a time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only sessions of `owner`.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Only sessions tagged `tag`.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Only sessions whose id or title contains `text`. ASCII letters match in either
    /// case (`"ops"` finds `"Ops review"`); every other character only matches itself
    /// (`"é"` does not find `"É"`): the case folding SQLite's `LIKE` and PostgreSQL's
    /// `ILIKE` under collation `"C"` both do natively, so every backend lists the same
    /// sessions. `%`, `_` and `\` are plain characters. The text is matched as given,
    /// spaces included; [`validate`](Self::validate) refuses one that is blank, longer
    /// than [`MAX_SEARCH_CHARS`](Self::MAX_SEARCH_CHARS) or holds a control character.
    pub fn search(mut self, text: impl Into<String>) -> Self {
        self.search = Some(text.into());
        self
    }

    /// Sorted by `order`.
    pub fn order(mut self, order: SessionOrder) -> Self {
        self.order = order;
        self
    }

    /// At most `limit` sessions per page.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The page after `cursor` (or the first page for `None`).
    pub fn after(mut self, cursor: Option<Cursor>) -> Self {
        self.cursor = cursor;
        self
    }

    /// Checks the owner, tag, search text, limit and cursor, returning
    /// [`Error::InvalidQuery`]. Backends call this before reading anything.
    pub fn validate(&self) -> Result<()> {
        // An owner or tag filter follows the rules of the metadata it matches, but it is the
        // query that is wrong.
        let in_query = |err| match err {
            Error::InvalidMeta(detail) => Error::InvalidQuery(detail),
            other => other,
        };
        if let Some(owner) = &self.owner {
            validate_owner(owner).map_err(in_query)?;
        }
        if let Some(tag) = &self.tag {
            SessionMeta::new()
                .tags([tag.as_str()])
                .validate()
                .map_err(in_query)?;
        }
        if let Some(text) = &self.search {
            search::validate(text)?;
        }
        if !(1..=Self::MAX_LIMIT).contains(&self.limit) {
            return Err(Error::InvalidQuery(format!(
                "a page limit of {} is out of range 1..={}",
                self.limit,
                Self::MAX_LIMIT
            )));
        }
        if let Some(cursor) = &self.cursor {
            cursor.position(self.order)?;
        }
        Ok(())
    }

    /// Where the page starts, parsed from the cursor; `None` for the first page.
    pub fn start(&self) -> Result<Option<Position>> {
        self.cursor
            .as_ref()
            .map(|c| c.position(self.order))
            .transpose()
    }

    /// Whether `info` passes the owner, tag and search filters.
    pub fn admits(&self, info: &SessionInfo) -> bool {
        self.owner
            .as_ref()
            .is_none_or(|o| info.meta.owner.as_ref() == Some(o))
            && self
                .tag
                .as_ref()
                .is_none_or(|t| info.meta.tags.iter().any(|x| x == t))
            && self
                .search
                .as_deref()
                .is_none_or(|text| search::matches(text, info))
    }

    /// The search as a SQL `LIKE` pattern, `None` without one: `%text%` with `%`, `_`
    /// and `\` in the text escaped by `\`. It matches what [`admits`](Self::admits) does
    /// as `id LIKE pattern ESCAPE '\' OR title LIKE pattern ESCAPE '\'` in SQLite (whose
    /// `LIKE` folds ASCII case only) and with `COLLATE "C" ILIKE` in PostgreSQL.
    pub fn like_pattern(&self) -> Option<String> {
        self.search.as_deref().map(search::like_pattern)
    }

    /// The page holding the first `limit` of `candidates` that come after the cursor and
    /// pass the filters, in this query's order, with the cursor after it when more
    /// followed. `candidates` may be in any order; this sorts them. The trait's default
    /// listing uses it on every session (O(all sessions)); backends with an index pass only
    /// the `limit + 1` rows it returned.
    pub fn page_of(
        &self,
        candidates: impl IntoIterator<Item = SessionInfo>,
    ) -> Result<SessionPage> {
        let start = self.start()?;
        let mut rows: Vec<(Position, SessionInfo)> = candidates
            .into_iter()
            .filter(|info| self.admits(info))
            .map(|info| (Position::of(self.order, &info), info))
            .filter(|(at, _)| start.as_ref().is_none_or(|s| at > s))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let more = rows.len() > self.limit;
        rows.truncate(self.limit);
        let next = more
            .then(|| rows.last().map(|(at, _)| at.cursor()))
            .flatten();
        Ok(SessionPage {
            sessions: rows.into_iter().map(|(_, info)| info).collect(),
            next,
        })
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SessionPage {
    /// The sessions, in the query's order.
    pub sessions: Vec<SessionInfo>,
    /// Where the next page starts; `None` when this was the last page.
    pub next: Option<Cursor>,
}

impl SessionPage {
    /// A page of `sessions` followed by `next`.
    pub fn new(sessions: Vec<SessionInfo>, next: Option<Cursor>) -> Self {
        Self { sessions, next }
    }
}

/// A session's place in one order, which is what a cursor holds. Ordered the way the
/// listing runs: a smaller position comes first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// In [`SessionOrder::UpdatedDesc`]: `updated_at` in Unix microseconds, and the id.
    Updated {
        /// `updated_at` in microseconds since the Unix epoch.
        micros: i64,
        /// The session id.
        id: String,
    },
    /// In [`SessionOrder::Id`]: the id.
    Id(String),
}

impl Position {
    /// Where `info` sits in `order` (a session without `updated_at` sorts as the epoch).
    pub fn of(order: SessionOrder, info: &SessionInfo) -> Self {
        match order {
            SessionOrder::UpdatedDesc => Position::Updated {
                micros: info.updated_at.map_or(0, unix_micros),
                id: info.id.clone(),
            },
            SessionOrder::Id => Position::Id(info.id.clone()),
        }
    }

    /// The cursor of a page that ends here.
    pub fn cursor(&self) -> Cursor {
        Cursor(match self {
            Position::Updated { micros, id } => format!("u.{micros}.{id}"),
            Position::Id(id) => format!("i.{id}"),
        })
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self, other) {
            (Position::Updated { micros: a, id: x }, Position::Updated { micros: b, id: y }) => {
                (b, y).cmp(&(a, x))
            }
            (Position::Id(x), Position::Id(y)) => x.cmp(y),
            (Position::Updated { .. }, Position::Id(_)) => std::cmp::Ordering::Less,
            (Position::Id(_), Position::Updated { .. }) => std::cmp::Ordering::Greater,
        }
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Where the next page of a listing starts. Opaque: pass back what a page returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor(String);

impl Cursor {
    /// The cursor as text (for a URL or a CLI flag).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A cursor that starts a newest-first ([`SessionOrder::UpdatedDesc`]) listing at the
    /// sessions last written strictly before `time`: the page after it holds the newest of
    /// those, so paging on from it visits every session older than `time` (what `fusion
    /// sessions purge --older-than` deletes).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use fusion_core::{Cursor, SessionQuery};
    ///
    /// let month_ago = SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
    /// let stale = SessionQuery::new().after(Some(Cursor::updated_before(month_ago)));
    /// stale.validate()?;
    /// # Ok::<(), fusion_core::Error>(())
    /// ```
    pub fn updated_before(time: SystemTime) -> Cursor {
        // Pages start after the cursor in the order (updated desc, id desc). "+" is the
        // smallest valid session id, so no session written at `time` itself sorts after
        // this one, and every session written before it does.
        Position::Updated {
            micros: unix_micros(time),
            id: "+".to_string(),
        }
        .cursor()
    }

    /// The position this cursor holds, checked against the order it is used with.
    pub fn position(&self, order: SessionOrder) -> Result<Position> {
        let bad = |why: &str| Error::InvalidQuery(format!("invalid cursor {:?}: {why}", self.0));
        let position = if let Some(rest) = self.0.strip_prefix("u.") {
            let (micros, id) = rest.split_once('.').ok_or_else(|| bad("no id"))?;
            Position::Updated {
                micros: micros.parse().map_err(|_| bad("not a time"))?,
                id: id.to_string(),
            }
        } else if let Some(id) = self.0.strip_prefix("i.") {
            Position::Id(id.to_string())
        } else {
            return Err(bad("not a cursor this version wrote"));
        };
        let (Position::Updated { id, .. } | Position::Id(id)) = &position;
        SessionId::validate(id).map_err(|_| bad("not a session id"))?;
        match (&position, order) {
            (Position::Updated { .. }, SessionOrder::UpdatedDesc)
            | (Position::Id(_), SessionOrder::Id) => Ok(position),
            _ => Err(bad("it was handed out for another sort order")),
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Cursor {
    type Err = Error;

    /// Reads a cursor from text; whether it fits a query's order is checked when the
    /// query runs.
    fn from_str(text: &str) -> Result<Self> {
        let cursor = Cursor(text.to_string());
        let order = if text.starts_with("i.") {
            SessionOrder::Id
        } else {
            SessionOrder::UpdatedDesc
        };
        cursor.position(order)?;
        Ok(cursor)
    }
}

/// `time` in whole microseconds since the Unix epoch (negative before it), the precision
/// listings sort by.
pub fn unix_micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// The time `micros` microseconds after the Unix epoch.
pub fn from_unix_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, micros: i64, owner: Option<&str>, tags: &[&str]) -> SessionInfo {
        let mut info = SessionInfo::new(id, 1);
        info.updated_at = Some(from_unix_micros(micros));
        info.meta.owner = owner.map(str::to_string);
        info.meta.tags = tags.iter().map(|t| t.to_string()).collect();
        info
    }

    fn ids(page: &SessionPage) -> Vec<&str> {
        page.sessions.iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn pages_run_newest_first_and_resume_after_the_cursor() {
        let all = vec![
            info("a", 10, Some("u"), &["x"]),
            info("b", 30, Some("u"), &[]),
            info("c", 20, Some("v"), &["x"]),
            info("d", 30, Some("u"), &["x"]),
        ];
        let query = SessionQuery::new().limit(2);
        let first = query.page_of(all.clone()).unwrap();
        assert_eq!(ids(&first), ["d", "b"]);
        let second = query
            .clone()
            .after(first.next.clone())
            .page_of(all.clone())
            .unwrap();
        assert_eq!(ids(&second), ["c", "a"]);
        assert_eq!(second.next, None);

        let owned = SessionQuery::new()
            .owner("u")
            .tag("x")
            .page_of(all.clone())
            .unwrap();
        assert_eq!(ids(&owned), ["d", "a"]);
        let by_id = SessionQuery::new()
            .order(SessionOrder::Id)
            .limit(3)
            .page_of(all)
            .unwrap();
        assert_eq!(ids(&by_id), ["a", "b", "c"]);
        assert_eq!(by_id.next.unwrap().as_str(), "i.c");
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage_and_the_wrong_order() {
        let at = Position::Updated {
            micros: -5,
            id: "s.1".into(),
        };
        let text = at.cursor().to_string();
        let cursor: Cursor = text.parse().unwrap();
        assert_eq!(cursor.position(SessionOrder::UpdatedDesc).unwrap(), at);
        assert!(cursor.position(SessionOrder::Id).is_err());
        for garbage in ["", "x.1", "u.1", "u.t.a", "i.../etc", "u.1.a/b"] {
            let err = garbage.parse::<Cursor>().unwrap_err();
            assert!(err.to_string().contains("invalid cursor"), "{err}");
        }
        assert!(SessionQuery::new().limit(0).validate().is_err());
        assert!(SessionQuery::new().limit(1001).validate().is_err());
        assert!(SessionQuery::new().owner("a b").validate().is_err());
        assert!(SessionQuery::new().search(" \t").validate().is_err());
    }

    #[test]
    fn microseconds_round_trip_on_both_sides_of_the_epoch() {
        for micros in [-1_500_000, -1, 0, 1, 1_733_000_000_123_456] {
            assert_eq!(unix_micros(from_unix_micros(micros)), micros);
        }
    }
}
