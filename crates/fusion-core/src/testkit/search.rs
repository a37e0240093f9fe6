//! The conformance cases of a listing's text search ([`SessionQuery::search`]): the id or
//! the title contains the text, ASCII letters in either case and every other character
//! (`%`, `_` and `\` included) only itself; a search combines with the owner, the tag, both
//! orders and an [`OwnerScope`]; its pages continue after their cursors; a bad search text
//! is refused.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{StorageHarness, all_pages, expected_order, info, open, said};
use crate::{
    ConversationStorage, Error, OwnerScope, SessionInfo, SessionMeta, SessionOrder, SessionQuery,
};

/// The sessions the search cases look through: `(id, owner, title, tags)`. Each text
/// that a backend's query could match too widely (a wildcard left unescaped, Unicode case
/// folding) has sessions it must not match sorting before one it must: a query that let
/// them through would fill the page with rows the check in `page_of` then drops, and the
/// listing would end before the session it must find.
const SESSIONS: [Seed; 16] = [
    ("deploy-1", Some("alice"), Some("Deploy the API"), &["ops"]),
    ("DEPLOY-2", Some("bob"), None, &["ops"]),
    ("notes", Some("alice"), Some("Re: deploy plan"), &[]),
    ("lunch", Some("alice"), Some("Lunch"), &["ops"]),
    ("a-pct", None, Some("50 percent done"), &[]),
    ("b-pct", None, Some("50 percent more"), &[]),
    ("pct", None, Some("50% done"), &[]),
    ("underAscore", None, None, &[]),
    ("underXscore", None, None, &[]),
    ("under_score", None, None, &[]),
    ("back", None, Some("build"), &[]),
    ("no-slash", None, Some("C:build out"), &[]),
    ("slash", None, Some(r"C:\build\out"), &[]),
    ("ete", Some("bob"), Some("Été report"), &[]),
    ("ete-2", None, Some("Été summary"), &[]),
    ("zz-ete", None, Some("l'été"), &[]),
];

/// A session the cases create: id, owner, title, tags.
type Seed = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static [&'static str],
);

/// A filtered search: owner, tag, text, and the ids it finds.
type Filtered = (
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    &'static [&'static str],
);

/// A store holding [`SESSIONS`], each with two messages, and what `session_info` reports
/// of each.
async fn seeded<H: StorageHarness>(harness: &H) -> (H::Storage, Vec<SessionInfo>) {
    let store = open(harness).await;
    let mut infos = Vec::new();
    for (id, owner, title, tags) in SESSIONS {
        let mut meta = SessionMeta::new().tags(tags.iter().copied());
        meta.owner = owner.map(str::to_string);
        meta.title = title.map(str::to_string);
        store.create_session(id, &meta, &said("hi")).await.unwrap();
        infos.push(info(&store, id).await);
    }
    (store, infos)
}

/// The ids a search finds, from every page of it by id, one session a page.
async fn found(
    store: &(impl ConversationStorage + ?Sized),
    query: SessionQuery,
) -> BTreeSet<String> {
    let ids = all_pages(store, query.order(SessionOrder::Id).limit(1)).await;
    let set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "no session listed twice: {ids:?}");
    set
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

/// A search finds the sessions whose id or title contains its text, ASCII letters in
/// either case; `%`, `_` and `\` match only themselves, and a letter outside ASCII only
/// in its own case.
pub async fn search_finds_ids_and_titles_in_either_ascii_case<H: StorageHarness>(harness: &H) {
    let (store, _) = seeded(harness).await;
    let cases: [(&str, &[&str]); 12] = [
        // A title's substring, in another case.
        ("THE api", &["deploy-1"]),
        // An id's substring, in another case, and titles holding it.
        ("deploy", &["deploy-1", "DEPLOY-2", "notes"]),
        ("Ploy-2", &["DEPLOY-2"]),
        // Wildcards of LIKE are plain characters.
        ("50%", &["pct"]),
        ("%", &["pct"]),
        ("r_s", &["under_score"]),
        (r"\b", &["slash"]),
        (r":\", &["slash"]),
        // Letters outside ASCII match in their own case only.
        ("Été", &["ete", "ete-2"]),
        ("été", &["zz-ete"]),
        ("ÉTÉ", &[]),
        ("nothing like it", &[]),
    ];
    for (text, expected) in cases {
        let query = SessionQuery::new().search(text);
        assert_eq!(found(&store, query).await, set(expected), "search {text:?}");
    }
}

/// A search combines with the owner and the tag filters in both orders, keeps the order
/// of the listing, and an [`OwnerScope`] passes it on.
pub async fn search_combines_with_owner_tag_and_order<H: StorageHarness>(harness: &H) {
    let (store, infos) = seeded(harness).await;
    let filters: [Filtered; 5] = [
        (None, None, "DEPLOY", &["deploy-1", "DEPLOY-2", "notes"]),
        (Some("alice"), None, "deploy", &["deploy-1", "notes"]),
        (None, Some("ops"), "deploy", &["deploy-1", "DEPLOY-2"]),
        (Some("alice"), Some("ops"), "Deploy", &["deploy-1"]),
        (Some("bob"), Some("ops"), "lunch", &[]),
    ];
    for order in [SessionOrder::UpdatedDesc, SessionOrder::Id] {
        for (owner, tag, text, expected) in filters {
            let mut query = SessionQuery::new().order(order).limit(1).search(text);
            query.owner = owner.map(str::to_string);
            query.tag = tag.map(str::to_string);
            let selected: Vec<SessionInfo> = infos
                .iter()
                .filter(|i| expected.contains(&i.id.as_str()))
                .cloned()
                .collect();
            assert_eq!(
                all_pages(&store, query).await,
                expected_order(selected, order),
                "{order:?} owner {owner:?} tag {tag:?} search {text:?}"
            );
        }
    }
    let shared: Arc<dyn ConversationStorage> = Arc::new(store);
    let alice = OwnerScope::new(shared.clone(), "alice").unwrap();
    assert_eq!(
        found(&alice, SessionQuery::new().search("DEPLOY")).await,
        set(&["deploy-1", "notes"])
    );
    let bob = OwnerScope::new(shared, "bob").unwrap();
    assert_eq!(
        found(&bob, SessionQuery::new().search("report")).await,
        set(&["ete"])
    );
}

/// A search's pages follow its cursors: nine matches among twenty-seven sessions, three
/// a page, are exactly three pages in the listing's order, the last one without a cursor.
pub async fn search_pages_continue_after_their_cursor<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let mut matching = Vec::new();
    for i in 0..27 {
        // Every third session matches: by its title or by its id, in another case.
        let (id, title) = match i % 6 {
            0 => (format!("p{i:02}"), "Weekly SYNC".to_string()),
            3 => (format!("Sync-{i:02}"), format!("other {i}")),
            _ => (format!("p{i:02}"), format!("other {i}")),
        };
        let meta = SessionMeta::new().title(title);
        store.create_session(&id, &meta, &said("hi")).await.unwrap();
        if i % 3 == 0 {
            matching.push(info(&store, &id).await);
        }
    }
    for order in [SessionOrder::UpdatedDesc, SessionOrder::Id] {
        let expected = expected_order(matching.clone(), order);
        let mut query = SessionQuery::new().order(order).limit(3).search("sYNC");
        let mut pages = Vec::new();
        loop {
            let page = store.list_page(&query).await.unwrap();
            pages.push(
                page.sessions
                    .iter()
                    .map(|s| s.id.clone())
                    .collect::<Vec<_>>(),
            );
            match page.next {
                Some(next) => query = query.after(Some(next)),
                None => break,
            }
        }
        let chunks: Vec<Vec<String>> = expected.chunks(3).map(<[String]>::to_vec).collect();
        assert_eq!(pages, chunks, "{order:?}");
    }
}

/// A search text that is blank, longer than [`SessionQuery::MAX_SEARCH_CHARS`] or holds
/// a control character is refused as [`Error::InvalidQuery`]; the longest valid one runs.
pub async fn listing_refuses_a_bad_search<H: StorageHarness>(harness: &H) {
    let store: Arc<dyn ConversationStorage> = Arc::new(open(harness).await);
    store.append("a", &said("x")).await.unwrap();
    let scoped = OwnerScope::new(store.clone(), "o").unwrap();
    let long = "x".repeat(SessionQuery::MAX_SEARCH_CHARS + 1);
    for text in ["", "  ", "line\nbreak", "nul\0", long.as_str()] {
        let query = SessionQuery::new().search(text);
        let err = store.list_page(&query).await.unwrap_err();
        assert!(matches!(err, Error::InvalidQuery(_)), "{text:?}: {err:?}");
        let err = scoped.list_page(&query).await.unwrap_err();
        assert!(matches!(err, Error::InvalidQuery(_)), "{text:?}: {err:?}");
    }
    let longest = "é".repeat(SessionQuery::MAX_SEARCH_CHARS);
    let page = store
        .list_page(&SessionQuery::new().search(longest))
        .await
        .unwrap();
    assert!(page.sessions.is_empty() && page.next.is_none());
}
