//! The conformance cases of session metadata and listing: owner, title, tags and data
//! round trip and survive rewrites ([`ConversationStorage::create_session`],
//! [`ConversationStorage::update_session`]); pages come in the documented order and a
//! cursor stays correct while sessions are written ([`ConversationStorage::list_page`]);
//! what an [`OwnerScope`](crate::OwnerScope) shows and writes is in `owners.rs`.

use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{StorageHarness, all_pages, expected_order, info, open, said};
use crate::{
    ConversationStorage, Error, MetaUpdate, SessionInfo, SessionMeta, SessionOrder, SessionPage,
    SessionQuery,
};

/// A session created with metadata reports it, with its count, timestamps and the
/// generation the creation returned; appends, saves and truncates keep it; another
/// instance sees it; a delete removes it, and a session written again starts bare.
pub async fn metadata_round_trips_and_survives_rewrites<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let meta = SessionMeta::new()
        .owner("user-1")
        .title("Tidy the logs — \"quoted\" 🦀")
        .tags(["ops", "logs"])
        .data("ticket", 42)
        .data("nested", json!({"a": [1, "two", null]}));
    let generation = store.create_session("m", &meta, &said("hi")).await.unwrap();
    let created = info(&store, "m").await;
    assert_eq!(created.id, "m");
    assert_eq!(created.meta, meta);
    assert_eq!(created.message_count, 2);
    assert_eq!(created.generation, generation);
    assert_eq!(
        store.load_revision("m").await.unwrap().1.generation,
        generation
    );
    let (Some(created_at), Some(updated_at)) = (created.created_at, created.updated_at) else {
        panic!("bundled backends keep both timestamps: {created:?}");
    };
    assert!(updated_at >= created_at);

    store.append("m", &said("more")).await.unwrap();
    store.save("m", &said("rewritten")).await.unwrap();
    store.append("m", &said("again")).await.unwrap();
    store.truncate("m", 3).await.unwrap();
    let kept = info(&open(harness).await, "m").await;
    assert_eq!(kept.meta, meta, "rewrites keep the metadata");
    assert_eq!(kept.message_count, 3);
    assert_eq!(kept.created_at, Some(created_at), "created_at never moves");
    assert!(kept.updated_at.unwrap() >= updated_at);

    store.delete("m").await.unwrap();
    assert_eq!(store.session_info("m").await.unwrap(), None);
    store.append("m", &said("new")).await.unwrap();
    assert_eq!(
        info(&store, "m").await.meta,
        SessionMeta::new(),
        "deleted with the session"
    );
}

/// `create_session` refuses an existing session, bad metadata, no messages and a hostile
/// id, and writes nothing when it does.
pub async fn creation_refuses_what_it_cannot_store_and_writes_nothing<H: StorageHarness>(
    harness: &H,
) {
    let store = open(harness).await;
    store.append("taken", &said("first")).await.unwrap();
    let err = store
        .create_session("taken", &SessionMeta::new().owner("x"), &said("second"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    let taken = info(&store, "taken").await;
    assert_eq!((taken.message_count, taken.meta), (2, SessionMeta::new()));

    let bad = [
        SessionMeta::new().owner("no spaces"),
        SessionMeta::new().tags(["a,b"]),
        SessionMeta::new().title("x".repeat(crate::MAX_TITLE_CHARS + 1)),
    ];
    for meta in bad {
        let err = store
            .create_session("fresh", &meta, &said("x"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidMeta(_)), "{err:?}");
    }
    let err = store
        .create_session("fresh", &SessionMeta::new(), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMeta(_)), "{err:?}");
    let err = store
        .create_session("../etc", &SessionMeta::new(), &said("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSessionId { .. }), "{err:?}");
    assert_eq!(store.session_info("fresh").await.unwrap(), None);
    assert_eq!(store.list_sessions().await.unwrap(), ["taken"]);
}

/// An update changes only the fields it names, moves `updated_at`, is refused whole when
/// its result breaks a rule, does nothing to an absent session, and concurrent updates
/// of different tags from separate instances lose none.
pub async fn updates_change_only_what_they_name<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let meta = SessionMeta::new()
        .owner("o")
        .title("t")
        .tags(["keep"])
        .data("k", 1);
    store.create_session("u", &meta, &said("hi")).await.unwrap();
    let before = info(&store, "u").await;

    let after = store
        .update_session(
            "u",
            &MetaUpdate::new().title(Some("retitled")).add_tag("new"),
        )
        .await
        .unwrap()
        .expect("the session exists");
    assert_eq!(after.meta.title.as_deref(), Some("retitled"));
    assert_eq!(after.meta.tags, ["keep", "new"]);
    assert_eq!(after.meta.owner.as_deref(), Some("o"));
    assert_eq!(after.meta.data, meta.data);
    assert_eq!(after.message_count, 2);
    assert_eq!(
        after.generation, before.generation,
        "metadata is not the history"
    );
    assert!(after.updated_at >= before.updated_at);
    assert_eq!(
        info(&store, "u").await,
        after,
        "what the update returned is stored"
    );

    let too_many = (0..crate::MAX_TAGS).fold(MetaUpdate::new(), |u, i| u.add_tag(format!("t{i}")));
    let err = store.update_session("u", &too_many).await.unwrap_err();
    assert!(matches!(err, Error::InvalidMeta(_)), "{err:?}");
    assert_eq!(info(&store, "u").await.meta, after.meta, "nothing changed");

    assert_eq!(
        store
            .update_session("absent", &MetaUpdate::new().title(Some("x")))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.session_info("absent").await.unwrap(),
        None,
        "not created"
    );

    let mut writers = Vec::new();
    for w in 0..2 {
        let store = Arc::new(open(harness).await);
        writers.push(tokio::spawn(async move {
            for i in 0..10 {
                let tag = format!("w{w}-{i}");
                store
                    .update_session(
                        "u",
                        &MetaUpdate::new().add_tag(tag).set_data(format!("d{w}"), i),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let raced = info(&store, "u").await;
    for w in 0..2 {
        for i in 0..10 {
            assert!(
                raced.meta.tags.contains(&format!("w{w}-{i}")),
                "tag w{w}-{i} lost"
            );
        }
        assert_eq!(raced.meta.data[&format!("d{w}")], 9);
    }
    assert_eq!(raced.message_count, 2);
}

/// A rename conditional on the title ([`MetaUpdate::if_title`]) applies only while the
/// session has that title (or none, for `if_title(None)`), else is refused with
/// [`Error::TitleChanged`] changing nothing; of two instances renaming from the title
/// both read, exactly one gets through.
pub async fn renames_conditional_on_the_title_never_overwrite_another<H: StorageHarness>(
    harness: &H,
) {
    let store = open(harness).await;
    store
        .create_session("r", &SessionMeta::new(), &said("hi"))
        .await
        .unwrap();
    let from_none = MetaUpdate::new()
        .title(Some("first"))
        .if_title(None::<String>);
    let renamed = store.update_session("r", &from_none).await.unwrap();
    assert_eq!(renamed.unwrap().meta.title.as_deref(), Some("first"));
    let before = info(&store, "r").await;
    let err = store.update_session("r", &from_none).await.unwrap_err();
    assert!(
        matches!(&err, Error::TitleChanged { found: Some(t), expected: None, .. } if t == "first"),
        "{err:?}"
    );
    let stale = MetaUpdate::new().add_tag("x").if_title(Some("zeroth"));
    let err = store.update_session("r", &stale).await.unwrap_err();
    assert!(matches!(err, Error::TitleChanged { .. }), "{err:?}");
    assert_eq!(info(&store, "r").await, before, "a refusal writes nothing");

    let mut renamers = Vec::new();
    for w in 0..2 {
        let store = open(harness).await;
        renamers.push(tokio::spawn(async move {
            let rename = MetaUpdate::new()
                .title(Some(format!("by {w}")))
                .if_title(Some("first"));
            store.update_session("r", &rename).await
        }));
    }
    let mut winners = Vec::new();
    for (w, renamer) in renamers.into_iter().enumerate() {
        match renamer.await.unwrap() {
            Ok(Some(info)) => winners.push((w, info.meta.title)),
            Err(Error::TitleChanged { found, .. }) => {
                assert!(found.is_some_and(|t| t.starts_with("by ")), "w{w}")
            }
            other => panic!("renamer {w}: {other:?}"),
        }
    }
    let [(winner, title)] = winners.as_slice() else {
        panic!("exactly one of two renames from one title must apply: {winners:?}")
    };
    assert_eq!(title.as_deref(), Some(format!("by {winner}").as_str()));
    assert_eq!(
        info(&store, "r").await.meta.title,
        *title,
        "the winner's title is stored"
    );
}

/// Pages run newest first (or by id), filtered by owner and tag, in the order the
/// sessions' own `updated_at` gives, and together hold each selected session once.
pub async fn pages_follow_the_order_and_filters<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    for i in 0..23 {
        let owner = ["alice", "bob"][i % 2];
        let mut meta = SessionMeta::new().owner(owner).title(format!("chat {i}"));
        if i % 3 == 0 {
            meta = meta.tags(["red"]);
        }
        store
            .create_session(&format!("s{i:02}"), &meta, &said("hi"))
            .await
            .unwrap();
    }
    store.append("unowned", &said("hi")).await.unwrap();
    // SQLite and Redis keep `updated_at` in milliseconds: let the clock move past the writes above
    // so the bump below is strictly the newest, not tied with one of them.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.append("s03", &said("bump")).await.unwrap();
    let mut infos = Vec::new();
    for id in store.list_sessions().await.unwrap() {
        infos.push(info(&store, &id).await);
    }
    assert_eq!(infos.len(), 24);

    let filters: [(Option<&str>, Option<&str>); 4] = [
        (None, None),
        (Some("alice"), None),
        (None, Some("red")),
        (Some("bob"), Some("red")),
    ];
    for order in [SessionOrder::UpdatedDesc, SessionOrder::Id] {
        for (owner, tag) in filters {
            let mut query = SessionQuery::new().order(order).limit(5);
            query.owner = owner.map(str::to_string);
            query.tag = tag.map(str::to_string);
            let selected: Vec<SessionInfo> =
                infos.iter().filter(|i| query.admits(i)).cloned().collect();
            let expected = expected_order(selected, order);
            assert!(!expected.is_empty());
            assert_eq!(
                all_pages(&store, query).await,
                expected,
                "{order:?} owner {owner:?} tag {tag:?}"
            );
        }
    }
    let first = store
        .list_page(&SessionQuery::new().limit(1))
        .await
        .unwrap();
    assert_eq!(
        first.sessions[0].id, "s03",
        "the last session written comes first"
    );
    assert_eq!(first.sessions[0].message_count, 4);
    assert_eq!(first.sessions[0].meta.title.as_deref(), Some("chat 3"));
    let none = SessionQuery::new().owner("carol");
    assert_eq!(
        store.list_page(&none).await.unwrap(),
        SessionPage::new(vec![], None)
    );
}

/// A cursor stays correct while sessions are written between pages: nothing appears
/// twice, and every session left alone appears exactly once.
pub async fn cursors_stay_correct_while_sessions_are_written<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    for i in 0..40 {
        store
            .append(&format!("c{i:02}"), &said("hi"))
            .await
            .unwrap();
    }
    for order in [SessionOrder::UpdatedDesc, SessionOrder::Id] {
        let mut seen = Vec::new();
        let mut written = HashSet::new();
        let mut query = SessionQuery::new().order(order).limit(6);
        let mut round = 0;
        loop {
            let page = store.list_page(&query).await.unwrap();
            seen.extend(page.sessions.iter().map(|s| s.id.clone()));
            // Between pages: write one session already listed, one not yet listed, and
            // create one.
            let listed = format!("c{:02}", (round * 7) % 40);
            let unlisted = format!("c{:02}", (round * 11 + 3) % 40);
            for id in [&listed, &unlisted] {
                store.append(id, &said("between pages")).await.unwrap();
                written.insert(id.clone());
            }
            let created = format!("n{order:?}{round}");
            store.append(&created, &said("new")).await.unwrap();
            written.insert(created);
            round += 1;
            match page.next {
                Some(next) => query = query.after(Some(next)),
                None => break,
            }
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &seen {
            *counts.entry(id).or_default() += 1;
        }
        for (id, n) in &counts {
            assert_eq!(*n, 1, "{order:?}: {id} listed {n} times");
        }
        for i in 0..40 {
            let id = format!("c{i:02}");
            if !written.contains(&id) {
                assert!(
                    counts.contains_key(id.as_str()),
                    "{order:?}: {id} never listed"
                );
            }
        }
    }
}

/// A listing refuses a query it cannot run: a limit out of range, a cursor that is not
/// one, or one handed out for the other order.
pub async fn listing_refuses_a_bad_query<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    store.append("a", &said("x")).await.unwrap();
    store.append("b", &said("x")).await.unwrap();
    let page = store
        .list_page(&SessionQuery::new().limit(1))
        .await
        .unwrap();
    let newest_cursor = page.next.expect("two sessions, one per page");
    let queries = [
        SessionQuery::new().limit(0),
        SessionQuery::new().limit(SessionQuery::MAX_LIMIT + 1),
        SessionQuery::new()
            .order(SessionOrder::Id)
            .after(Some(newest_cursor)),
        SessionQuery::new().owner("../x"),
    ];
    for query in queries {
        let err = store.list_page(&query).await.unwrap_err();
        assert!(matches!(err, Error::InvalidQuery(_)), "{query:?}: {err:?}");
    }
    assert!("u.1.../etc".parse::<crate::Cursor>().is_err());
}
