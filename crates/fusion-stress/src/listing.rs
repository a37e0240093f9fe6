//! Rule 8 of the checker: once every worker has exited, what the storage lists agrees with
//! what it stores. The run's writes, deletes and forks race each other, and every backend
//! keeps its listings beside the histories (index tables, journals, sorted sets, on a
//! Redis Cluster in other slots, written after the session), so this is where an index
//! left behind or ahead of its sessions shows:
//!
//! - `list_sessions` names each session that holds messages, once, and no other;
//! - `session_info` counts the messages `load` returns, and finds nothing where it
//!   returns none;
//! - `list_page`, read page by page in both orders, lists each of those sessions once,
//!   in order (each page starts strictly after the last), with the same counts; and so
//!   does each owner's listing for that owner's sessions (the workers give every shared
//!   session an owner, and forks copy it) and each tag's for the sessions with that tag
//!   (the workers' labels), which backends keep in indexes of their own.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use fusion_core::{
    ChatMessage, ConversationStorage, Cursor, Position, SessionInfo, SessionOrder, SessionQuery,
};

/// Sessions per page of `list_page`: small, so that a run's few sessions take several
/// pages and every cursor is used.
const PAGE: usize = 3;

/// What the storage listed after the run.
#[derive(Debug, Clone, Default)]
pub struct Listings {
    /// What `list_sessions` returned.
    pub ids: Vec<String>,
    /// `session_info` of every session the run may have left: the shared ones, the forks
    /// and whatever was listed.
    pub infos: BTreeMap<String, Option<SessionInfo>>,
    /// Every page of `list_page` in each order, for all sessions and for each owner and
    /// each tag `session_info` named.
    pub listed: Vec<Listed>,
}

/// Which sessions a listing selects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filter {
    /// All of them.
    All,
    /// An owner's.
    Owner(String),
    /// Those with a tag.
    Tag(String),
}

impl Filter {
    /// `query` with this filter.
    fn apply(&self, query: SessionQuery) -> SessionQuery {
        match self {
            Filter::All => query,
            Filter::Owner(owner) => query.owner(owner),
            Filter::Tag(tag) => query.tag(tag),
        }
    }

    /// Whether it selects the session `info` describes.
    fn admits(&self, info: &SessionInfo) -> bool {
        match self {
            Filter::All => true,
            Filter::Owner(owner) => info.meta.owner.as_ref() == Some(owner),
            Filter::Tag(tag) => info.meta.tags.contains(tag),
        }
    }

    /// What the sessions it selects are, beyond stored: `""`, `" of that owner"`, ...
    fn scope(&self) -> &'static str {
        match self {
            Filter::All => "",
            Filter::Owner(_) => " of that owner",
            Filter::Tag(_) => " with that tag",
        }
    }
}

/// One listing read page by page: `list_page` with one order and filter.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Which sessions it selects.
    pub filter: Filter,
    /// The order asked for.
    pub order: SessionOrder,
    /// The pages' sessions, concatenated in the order read.
    pub sessions: Vec<SessionInfo>,
    /// Whether the last page said there was no next one (within as many pages as the run
    /// could fill).
    pub ended: bool,
}

impl Listed {
    /// How the violations name it.
    fn name(&self) -> String {
        match &self.filter {
            Filter::All => format!("list_page ({:?})", self.order),
            Filter::Owner(owner) => format!("list_page ({:?}, owner {owner})", self.order),
            Filter::Tag(tag) => format!("list_page ({:?}, tag {tag})", self.order),
        }
    }
}

/// Reads the listings of `storage`: `session_info` of each of `candidates` and of every
/// listed id.
pub async fn read(
    storage: &dyn ConversationStorage,
    candidates: &BTreeSet<String>,
) -> Result<Listings> {
    let ids = storage.list_sessions().await.context("list_sessions")?;
    let mut infos = BTreeMap::new();
    for id in candidates.iter().chain(&ids) {
        let info = storage
            .session_info(id)
            .await
            .with_context(|| format!("session_info of {id}"))?;
        infos.insert(id.clone(), info);
    }
    let mut filters = BTreeSet::from([Filter::All]);
    for info in infos.values().flatten() {
        filters.extend(info.meta.owner.clone().map(Filter::Owner));
        filters.extend(info.meta.tags.iter().cloned().map(Filter::Tag));
    }
    // Every page holds at least one session until the last: more pages than sessions
    // means the listing does not end.
    let most_pages = candidates.len() + ids.len() + 2;
    let mut listed = Vec::new();
    for filter in filters {
        for order in [SessionOrder::UpdatedDesc, SessionOrder::Id] {
            let mut read = Listed {
                filter: filter.clone(),
                order,
                sessions: Vec::new(),
                ended: false,
            };
            let mut cursor = None::<Cursor>;
            for _ in 0..most_pages {
                let query = SessionQuery::new().order(order).limit(PAGE).after(cursor);
                let page = storage
                    .list_page(&filter.apply(query))
                    .await
                    .with_context(|| read.name())?;
                read.sessions.extend(page.sessions);
                cursor = page.next;
                if cursor.is_none() {
                    read.ended = true;
                    break;
                }
            }
            listed.push(read);
        }
    }
    Ok(Listings { ids, infos, listed })
}

/// Rule 8: `listings` against the histories `stored` (every session that holds
/// messages); one line per disagreement.
pub fn check(listings: &Listings, stored: &BTreeMap<String, Vec<ChatMessage>>) -> Vec<String> {
    let mut out = Vec::new();
    let holding: BTreeSet<&String> = stored.keys().collect();
    compare_ids("list_sessions", &listings.ids, &holding, "", &mut out);
    for (id, info) in &listings.infos {
        let counted = info.as_ref().map(|info| info.message_count);
        let loaded = stored.get(id).map(Vec::len);
        if counted != loaded {
            out.push(format!(
                "{id}: session_info counts {counted:?} messages, load returned {loaded:?}"
            ));
        }
    }
    for listed in &listings.listed {
        let what = listed.name();
        if !listed.ended {
            out.push(format!("{what}: the pages did not end"));
        }
        for pair in listed.sessions.windows(2) {
            let (a, b) = (
                Position::of(listed.order, &pair[0]),
                Position::of(listed.order, &pair[1]),
            );
            if a >= b {
                out.push(format!("{what}: {a:?} is listed before {b:?}"));
            }
        }
        for info in &listed.sessions {
            let loaded = stored.get(&info.id).map(Vec::len);
            if loaded.is_some_and(|len| len != info.message_count) {
                out.push(format!(
                    "{what}: {} listed with {} messages, load returned {loaded:?}",
                    info.id, info.message_count
                ));
            }
            if !listed.filter.admits(info) {
                out.push(format!(
                    "{what}: {} listed, which it does not select (owner {:?}, tags {:?})",
                    info.id, info.meta.owner, info.meta.tags
                ));
            }
        }
        // A filtered listing holds the stored sessions `session_info` says it selects.
        let selected: BTreeSet<&String> = holding
            .iter()
            .copied()
            .filter(|id| {
                listed.filter == Filter::All
                    || listings
                        .infos
                        .get(*id)
                        .and_then(Option::as_ref)
                        .is_some_and(|info| listed.filter.admits(info))
            })
            .collect();
        let ids: Vec<String> = listed.sessions.iter().map(|info| info.id.clone()).collect();
        compare_ids(&what, &ids, &selected, listed.filter.scope(), &mut out);
    }
    out
}

/// That `listed` names each of `expected` once and nothing else; `scope` says what
/// `expected` is beyond "stored" (an owner's listing lists that owner's sessions, say).
fn compare_ids(
    what: &str,
    listed: &[String],
    expected: &BTreeSet<&String>,
    scope: &str,
    out: &mut Vec<String>,
) {
    let mut seen = BTreeSet::new();
    for id in listed {
        if !seen.insert(id) {
            out.push(format!("{what}: {id} is listed twice"));
        }
        if !expected.contains(id) {
            out.push(format!(
                "{what}: {id} is listed but is not a stored session{scope}"
            ));
        }
    }
    for id in expected.iter().filter(|id| !seen.contains(*id)) {
        out.push(format!(
            "{what}: {id} is a stored session{scope} but is not listed"
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn info(id: &str, count: usize, micros: u64) -> SessionInfo {
        let mut info = SessionInfo::new(id, count);
        info.updated_at = Some(UNIX_EPOCH + Duration::from_micros(micros));
        info
    }

    fn stored(sessions: &[(&str, usize)]) -> BTreeMap<String, Vec<ChatMessage>> {
        sessions
            .iter()
            .map(|(id, n)| (id.to_string(), vec![ChatMessage::user("m"); *n]))
            .collect()
    }

    fn listed(filter: Filter, order: SessionOrder, sessions: &[&SessionInfo]) -> Listed {
        Listed {
            filter,
            order,
            sessions: sessions.iter().map(|info| (*info).clone()).collect(),
            ended: true,
        }
    }

    /// A listing that agrees with `a` (2 messages, written last, owned by `o`) and `b` (1).
    fn agreeing() -> Listings {
        let (mut a, b) = (info("a", 2, 20), info("b", 1, 10));
        a.meta.owner = Some("o".into());
        Listings {
            ids: vec!["a".into(), "b".into()],
            infos: [
                ("a", Some(a.clone())),
                ("b", Some(b.clone())),
                ("gone", None),
            ]
            .into_iter()
            .map(|(id, info)| (id.to_string(), info))
            .collect(),
            listed: vec![
                listed(Filter::All, SessionOrder::UpdatedDesc, &[&a, &b]),
                listed(Filter::All, SessionOrder::Id, &[&a, &b]),
                listed(Filter::Owner("o".into()), SessionOrder::UpdatedDesc, &[&a]),
                listed(Filter::Owner("o".into()), SessionOrder::Id, &[&a]),
            ],
        }
    }

    #[test]
    fn a_listing_that_agrees_with_the_histories_passes() {
        let violations = check(&agreeing(), &stored(&[("a", 2), ("b", 1)]));
        assert!(violations.is_empty(), "{violations:#?}");
    }

    #[test]
    fn a_session_listed_without_messages_or_stored_without_a_listing_is_a_violation() {
        let violations = check(&agreeing(), &stored(&[("a", 2), ("c", 1)]));
        let text = violations.join("\n");
        assert!(
            text.contains("list_sessions: b is listed but is not a stored session"),
            "{text}"
        );
        assert!(
            text.contains("list_sessions: c is a stored session but is not listed"),
            "{text}"
        );
        assert!(
            text.contains("list_page (Id): c is a stored session but is not listed"),
            "{text}"
        );
    }

    #[test]
    fn an_owners_listing_holds_that_owners_sessions_only() {
        let mut listings = agreeing();
        let b = info("b", 1, 10);
        listings.listed[3] = listed(Filter::Owner("o".into()), SessionOrder::Id, &[&b]);
        let text = check(&listings, &stored(&[("a", 2), ("b", 1)])).join("\n");
        assert!(
            text.contains("list_page (Id, owner o): b listed, which it does not select"),
            "{text}"
        );
        assert!(
            text.contains(
                "list_page (Id, owner o): b is listed but is not a stored session of that owner"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "list_page (Id, owner o): a is a stored session of that owner but is not listed"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_tags_listing_holds_the_sessions_with_that_tag() {
        let mut listings = agreeing();
        let mut b = info("b", 1, 10);
        b.meta.tags = vec!["t".into()];
        listings.infos.insert("b".into(), Some(b));
        listings
            .listed
            .push(listed(Filter::Tag("t".into()), SessionOrder::Id, &[]));
        let text = check(&listings, &stored(&[("a", 2), ("b", 1)])).join("\n");
        assert!(
            text.contains(
                "list_page (Id, tag t): b is a stored session with that tag but is not listed"
            ),
            "{text}"
        );
    }

    #[test]
    fn counts_that_disagree_with_the_history_are_a_violation() {
        let violations = check(&agreeing(), &stored(&[("a", 3), ("b", 1)]));
        let text = violations.join("\n");
        assert!(
            text.contains("a: session_info counts Some(2) messages, load returned Some(3)"),
            "{text}"
        );
        assert!(
            text.contains("list_page (UpdatedDesc): a listed with 2 messages"),
            "{text}"
        );
    }

    #[test]
    fn pages_out_of_order_twice_or_without_end_are_a_violation() {
        let mut listings = agreeing();
        let (a, b) = (
            &listings.listed[0].sessions[0],
            &listings.listed[0].sessions[1],
        );
        let (a, b) = (a.clone(), b.clone());
        listings.listed[0] = listed(Filter::All, SessionOrder::UpdatedDesc, &[&b, &a]);
        listings.listed[1] = Listed {
            ended: false,
            ..listed(Filter::All, SessionOrder::Id, &[&a, &a, &b])
        };
        let text = check(&listings, &stored(&[("a", 2), ("b", 1)])).join("\n");
        assert!(
            text.contains(
                "list_page (UpdatedDesc): Updated { micros: 10, id: \"b\" } is listed before"
            ),
            "{text}"
        );
        assert!(text.contains("list_page (Id): a is listed twice"), "{text}");
        assert!(
            text.contains("list_page (Id): the pages did not end"),
            "{text}"
        );
    }
}
