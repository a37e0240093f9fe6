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
//!   in order (each page starts strictly after the last), with the same counts.

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
    /// Every page of `list_page` in each order, concatenated in the order read; `false`
    /// beside it when the pages did not end within as many pages as the run could fill.
    pub pages: Vec<(SessionOrder, Vec<SessionInfo>, bool)>,
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
    // Every page holds at least one session until the last: more pages than sessions
    // means the listing does not end.
    let most_pages = candidates.len() + ids.len() + 2;
    let mut pages = Vec::new();
    for order in [SessionOrder::UpdatedDesc, SessionOrder::Id] {
        let (mut listed, mut cursor, mut ended) = (Vec::new(), None::<Cursor>, false);
        for _ in 0..most_pages {
            let query = SessionQuery::new().order(order).limit(PAGE).after(cursor);
            let page = storage
                .list_page(&query)
                .await
                .with_context(|| format!("list_page ({order:?})"))?;
            listed.extend(page.sessions);
            cursor = page.next;
            if cursor.is_none() {
                ended = true;
                break;
            }
        }
        pages.push((order, listed, ended));
    }
    Ok(Listings { ids, infos, pages })
}

/// Rule 8: `listings` against the histories `stored` (every session that holds
/// messages); one line per disagreement.
pub fn check(listings: &Listings, stored: &BTreeMap<String, Vec<ChatMessage>>) -> Vec<String> {
    let mut out = Vec::new();
    let holding: BTreeSet<&String> = stored.keys().collect();
    compare_ids("list_sessions", &listings.ids, &holding, &mut out);
    for (id, info) in &listings.infos {
        let counted = info.as_ref().map(|info| info.message_count);
        let loaded = stored.get(id).map(Vec::len);
        if counted != loaded {
            out.push(format!(
                "{id}: session_info counts {counted:?} messages, load returned {loaded:?}"
            ));
        }
    }
    for (order, listed, ended) in &listings.pages {
        let what = format!("list_page ({order:?})");
        if !ended {
            out.push(format!("{what}: the pages did not end"));
        }
        for pair in listed.windows(2) {
            let (a, b) = (
                Position::of(*order, &pair[0]),
                Position::of(*order, &pair[1]),
            );
            if a >= b {
                out.push(format!("{what}: {a:?} is listed before {b:?}"));
            }
        }
        for info in listed {
            let loaded = stored.get(&info.id).map(Vec::len);
            if loaded.is_some_and(|len| len != info.message_count) {
                out.push(format!(
                    "{what}: {} listed with {} messages, load returned {loaded:?}",
                    info.id, info.message_count
                ));
            }
        }
        let ids: Vec<String> = listed.iter().map(|info| info.id.clone()).collect();
        compare_ids(&what, &ids, &holding, &mut out);
    }
    out
}

/// That `listed` names each of `holding` once and nothing else.
fn compare_ids(what: &str, listed: &[String], holding: &BTreeSet<&String>, out: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    for id in listed {
        if !seen.insert(id) {
            out.push(format!("{what}: {id} is listed twice"));
        }
        if !holding.contains(id) {
            out.push(format!("{what}: {id} is listed but holds no message"));
        }
    }
    for id in holding.iter().filter(|id| !seen.contains(*id)) {
        out.push(format!("{what}: {id} holds messages but is not listed"));
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

    /// A listing that agrees with `a` (2 messages, written last) and `b` (1).
    fn agreeing() -> Listings {
        let (a, b) = (info("a", 2, 20), info("b", 1, 10));
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
            pages: vec![
                (SessionOrder::UpdatedDesc, vec![a.clone(), b.clone()], true),
                (SessionOrder::Id, vec![a, b], true),
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
            text.contains("list_sessions: b is listed but holds no message"),
            "{text}"
        );
        assert!(
            text.contains("list_sessions: c holds messages but is not listed"),
            "{text}"
        );
        assert!(
            text.contains("list_page (Id): c holds messages but is not listed"),
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
        let (a, b) = (info("a", 2, 20), info("b", 1, 10));
        listings.pages = vec![
            (SessionOrder::UpdatedDesc, vec![b.clone(), a.clone()], true),
            (SessionOrder::Id, vec![a.clone(), a, b], false),
        ];
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
