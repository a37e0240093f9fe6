//! Session metadata in this backend beyond the shared suite: what bad input and damaged
//! cells do, that the `session_tags` and `session_meta` rows follow the metadata and go
//! with the session, and where a crafted cursor resumes. Each test runs on a database file (writes through the direct path) and on
//! `sqlite::memory:` (writes through sqlx).

use fusion_core::{
    ChatMessage, ConversationStorage, Cursor, Error, MAX_TAGS, MAX_TITLE_CHARS, MetaUpdate,
    SessionMeta, SessionOrder, SessionQuery,
};
use fusion_storage_sqlite::SqliteStorage;

/// A storage on a new file and one on a new in-memory database, with what keeps the file.
async fn both_paths() -> Vec<(Option<tempfile::TempDir>, SqliteStorage)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    vec![
        (Some(dir), SqliteStorage::connect(&url).await.unwrap()),
        (
            None,
            SqliteStorage::connect("sqlite::memory:").await.unwrap(),
        ),
    ]
}

fn said(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::user(text)]
}

/// The `session_tags` rows as `(tag, session_id)`, sorted.
async fn tag_rows(storage: &SqliteStorage) -> Vec<(String, String)> {
    sqlx::query_as("SELECT tag, session_id FROM session_tags ORDER BY tag, session_id")
        .fetch_all(storage.pool())
        .await
        .unwrap()
}

async fn ids(storage: &SqliteStorage, query: SessionQuery) -> Vec<String> {
    let page = storage.list_page(&query).await.unwrap();
    page.sessions.into_iter().map(|s| s.id).collect()
}

fn assert_corrupt(err: &Error, session: &str, column: &str) {
    match err {
        Error::Corrupt {
            backend,
            session_id,
            detail,
        } => {
            assert_eq!((*backend, session_id.as_str()), ("sqlite", session));
            assert!(detail.contains(column), "{detail}");
        }
        other => panic!("expected Corrupt for {session}, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_tags_and_titles_are_refused_and_nothing_is_written() {
    for (_dir, storage) in both_paths().await {
        let bad = [
            SessionMeta::new().tags(["a,b"]),
            SessionMeta::new().tags([""]),
            SessionMeta::new().tags(["x".repeat(65)]),
            SessionMeta::new().tags((0..=MAX_TAGS).map(|i| format!("t{i}"))),
            SessionMeta::new().title("x".repeat(MAX_TITLE_CHARS + 1)),
            SessionMeta::new().title("two\nlines"),
        ];
        for meta in &bad {
            let err = storage
                .create_session("s", meta, &said("hi"))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::InvalidMeta(_)), "{meta:?}: {err:?}");
        }
        assert!(storage.list_sessions().await.unwrap().is_empty());
        assert!(tag_rows(&storage).await.is_empty());

        let meta = SessionMeta::new().title("ok").tags(["keep"]);
        storage
            .create_session("s", &meta, &said("hi"))
            .await
            .unwrap();
        let before = storage.session_info("s").await.unwrap().unwrap();
        let updates = [
            MetaUpdate::new().add_tag("a,b"),
            MetaUpdate::new().add_tag(" padded"),
            MetaUpdate::new().title(Some("x".repeat(MAX_TITLE_CHARS + 1))),
            MetaUpdate::new().title(Some("bell\u{7}")),
            MetaUpdate::new().owner(Some("not an id")),
        ];
        for update in &updates {
            let err = storage.update_session("s", update).await.unwrap_err();
            assert!(matches!(err, Error::InvalidMeta(_)), "{update:?}: {err:?}");
        }
        let after = storage.session_info("s").await.unwrap().unwrap();
        assert_eq!(after, before, "nothing changed, updated_at included");
        assert_eq!(tag_rows(&storage).await, [("keep".into(), "s".into())]);
    }
}

#[tokio::test]
async fn a_damaged_tags_or_data_cell_is_corrupt_naming_the_session() {
    for (_dir, storage) in both_paths().await {
        let meta = SessionMeta::new().owner("o").tags(["t"]);
        for id in ["good", "bad"] {
            storage.create_session(id, &meta, &said(id)).await.unwrap();
        }
        let elsewhere = SessionMeta::new().owner("p");
        storage
            .create_session("other", &elsewhere, &said("x"))
            .await
            .unwrap();
        let damages = [
            ("tags", "'[\"t\"'", "`tags`"),
            ("tags", "'[1]'", "`tags`"),
            ("data", "'[]'", "`data`"),
            // TEXT affinity stores the number as the text "7": valid JSON, not an object.
            ("data", "7", "`data`"),
            ("tags", "x'5b5d'", "does not hold text"),
        ];
        for (column, value, expected) in damages {
            let repair =
                "UPDATE session_meta SET tags = '[\"t\"]', data = '{}' WHERE session_id = 'bad'";
            sqlx::query(repair).execute(storage.pool()).await.unwrap();
            let damage =
                format!("UPDATE session_meta SET {column} = {value} WHERE session_id = 'bad'");
            sqlx::query(&damage).execute(storage.pool()).await.unwrap();
            let err = storage.session_info("bad").await.unwrap_err();
            assert_corrupt(&err, "bad", expected);
            for query in [
                SessionQuery::new(),
                SessionQuery::new().owner("o"),
                SessionQuery::new().tag("t"),
                SessionQuery::new().order(SessionOrder::Id),
            ] {
                let err = storage.list_page(&query).await.unwrap_err();
                assert_corrupt(&err, "bad", expected);
            }
            let err = storage
                .update_session("bad", &MetaUpdate::new().title(Some("x")))
                .await
                .unwrap_err();
            assert_corrupt(&err, "bad", expected);

            // Everything else keeps working.
            assert!(storage.session_info("good").await.unwrap().is_some());
            assert_eq!(
                ids(&storage, SessionQuery::new().owner("p")).await,
                ["other"]
            );
            assert_eq!(storage.load("bad").await.unwrap(), said("bad"));
        }
    }
}

#[tokio::test]
async fn tag_rows_follow_the_metadata_and_go_with_the_session() {
    for (_dir, storage) in both_paths().await {
        let meta = SessionMeta::new().tags(["a", "b"]);
        storage
            .create_session("one", &meta, &said("1"))
            .await
            .unwrap();
        storage
            .create_session("two", &meta, &said("2"))
            .await
            .unwrap();
        let update = MetaUpdate::new().remove_tag("a").add_tag("c");
        storage.update_session("one", &update).await.unwrap();
        let rows = tag_rows(&storage).await;
        let expected = [("a", "two"), ("b", "one"), ("b", "two"), ("c", "one")];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(t, s)| ((*t).into(), (*s).into()))
            .collect();
        assert_eq!(rows, expected);
        assert_eq!(ids(&storage, SessionQuery::new().tag("a")).await, ["two"]);
        assert_eq!(ids(&storage, SessionQuery::new().tag("c")).await, ["one"]);

        // Whichever write moves `updated_at`, the tag's order follows it: `older` is set
        // back in time by hand, then written.
        for (write, older) in [
            ("append", "one"),
            ("save", "two"),
            ("truncate", "one"),
            ("update", "two"),
        ] {
            sqlx::query("UPDATE sessions SET updated_at = CASE id WHEN ?1 THEN 1000 ELSE 2000 END")
                .bind(older)
                .execute(storage.pool())
                .await
                .unwrap();
            assert_ne!(newest(&storage, "b").await, older);
            match write {
                "append" => storage.append(older, &said("more")).await.unwrap(),
                "save" => storage.save(older, &said("again")).await.unwrap(),
                "truncate" => {
                    storage.append(older, &said("x")).await.unwrap();
                    storage.truncate(older, 1).await.unwrap();
                }
                _ => {
                    let retitle = MetaUpdate::new().title(Some(write));
                    storage.update_session(older, &retitle).await.unwrap();
                }
            }
            assert_eq!(newest(&storage, "b").await, older, "{write}");
            let info = storage.session_info(older).await.unwrap().unwrap();
            assert!(
                info.meta.tags.contains(&"b".to_owned()),
                "{write} kept the tags"
            );
        }
        assert_eq!(
            tag_rows(&storage).await,
            expected,
            "no write of messages touched them"
        );

        storage.delete("one").await.unwrap();
        assert!(tag_rows(&storage).await.iter().all(|(_, s)| s == "two"));
        assert!(ids(&storage, SessionQuery::new().tag("c")).await.is_empty());
        storage.truncate("two", 0).await.unwrap();
        assert!(tag_rows(&storage).await.is_empty());
        let meta_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM session_meta")
            .fetch_one(storage.pool())
            .await
            .unwrap();
        assert_eq!(
            meta_rows, 0,
            "title, tags and data went with their sessions"
        );
    }
}

/// The newest session tagged `tag`.
async fn newest(storage: &SqliteStorage, tag: &str) -> String {
    let first = ids(storage, SessionQuery::new().tag(tag).limit(1)).await;
    first.into_iter().next().expect("a tagged session")
}

/// Cursors hold microseconds and the column milliseconds: a cursor crafted between two
/// milliseconds resumes after every session of the earlier one, whatever their ids.
#[tokio::test]
async fn a_crafted_cursor_between_milliseconds_resumes_where_the_order_says() {
    for (_dir, storage) in both_paths().await {
        let meta = SessionMeta::new().owner("o").tags(["t"]);
        for (id, ms) in [("a", 1_000), ("b", 2_000), ("c", 2_000), ("d", 3_000)] {
            storage.create_session(id, &meta, &said(id)).await.unwrap();
            // Set by hand to known times.
            sqlx::query("UPDATE sessions SET updated_at = ?1 WHERE id = ?2")
                .bind(ms)
                .bind(id)
                .execute(storage.pool())
                .await
                .unwrap();
        }
        let cases: [(&str, &[&str]); 5] = [
            ("u.2000000.c", &["b", "a"]),
            ("u.2000000.zz", &["c", "b", "a"]),
            ("u.2000500.a", &["c", "b", "a"]),
            ("u.1999999.zz", &["a"]),
            ("u.3000001.a", &["d", "c", "b", "a"]),
        ];
        for (cursor, expected) in cases {
            let cursor: Cursor = cursor.parse().unwrap();
            for query in [
                SessionQuery::new(),
                SessionQuery::new().owner("o"),
                SessionQuery::new().tag("t"),
                SessionQuery::new().owner("o").tag("t"),
            ] {
                let query = query.after(Some(cursor.clone()));
                assert_eq!(ids(&storage, query.clone()).await, expected, "{query:?}");
            }
        }
        // A cursor this backend hands out is a whole millisecond.
        let first = storage
            .list_page(&SessionQuery::new().limit(2))
            .await
            .unwrap();
        assert_eq!(first.next.unwrap().as_str(), "u.2000000.c");
    }
}

/// Every page of `query`'s listing, walked by its cursors: the ids in order.
async fn walk(storage: &SqliteStorage, query: SessionQuery) -> Vec<String> {
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = storage
            .list_page(&query.clone().after(cursor))
            .await
            .unwrap();
        listed.extend(page.sessions.into_iter().map(|s| s.id));
        cursor = page.next;
        if cursor.is_none() {
            return listed;
        }
    }
}

/// A tag on more than 2,000 sessions has its newest-first page looked for among the 2,000
/// sessions after the cursor in update order first, and reads the tag's rows when those
/// hold too few (or the tag is on fewer sessions): every way, and across the window's
/// edge, the pages list what the unfiltered listing lists with the tag.
#[tokio::test]
async fn a_tags_newest_first_pages_are_right_inside_and_beyond_the_window() {
    let storage = SqliteStorage::connect("sqlite::memory:").await.unwrap();
    for i in 0..4_100 {
        let mut tags = Vec::new();
        // On 3,690 sessions, in every window: found in the window.
        if i % 10 != 0 {
            tags.push("dense");
        }
        // On the 2,050 oldest: none in the first window, then the walk reaches them.
        if i < 2_050 {
            tags.push("old");
        }
        // On 6 sessions: read by the tag's rows alone.
        if i < 5 || i == 3_000 {
            tags.push("sparse");
        }
        let meta = SessionMeta::new().tags(tags);
        storage
            .create_session(&format!("s{i:04}"), &meta, &said("hi"))
            .await
            .unwrap();
    }
    let every: Vec<(String, Vec<String>)> = {
        let mut infos = Vec::new();
        let mut cursor = None;
        loop {
            let query = SessionQuery::new().limit(1000).after(cursor);
            let page = storage.list_page(&query).await.unwrap();
            infos.extend(page.sessions.into_iter().map(|s| (s.id, s.meta.tags)));
            cursor = page.next;
            if cursor.is_none() {
                break infos;
            }
        }
    };
    assert_eq!(every.len(), 4_100);
    for (tag, limit) in [
        ("dense", 50),
        ("dense", 700),
        ("old", 50),
        ("sparse", 2),
        ("sparse", 50),
    ] {
        let expected: Vec<String> = every
            .iter()
            .filter(|(_, tags)| tags.iter().any(|t| t == tag))
            .map(|(id, _)| id.clone())
            .collect();
        let listed = walk(&storage, SessionQuery::new().tag(tag).limit(limit)).await;
        let first_difference = listed.iter().zip(&expected).position(|(a, b)| a != b);
        assert!(
            listed == expected,
            "{tag}, {limit} a page: {} listed, {} expected, first difference at {first_difference:?}",
            listed.len(),
            expected.len()
        );
    }
}
