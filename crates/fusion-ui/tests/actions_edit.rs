//! The transcript's metadata actions and exports, and bulk delete, through the router:
//! rename, tags, the three export formats as downloads, and the select / confirm /
//! delete pages, with their refusals and bad input.

mod common;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use fusion::ChatMessage;
use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta};

use common::*;

async fn meta_of(storage: &InMemoryStorage, id: &str) -> SessionMeta {
    storage.session_info(id).await.unwrap().unwrap().meta
}

/// A store holding session `s-1` titled `title`, and the app over it.
async fn titled(title: &str) -> (Arc<InMemoryStorage>, Router) {
    let storage = store();
    put(
        &storage,
        "s-1",
        SessionMeta::new().title(title),
        &exchange(),
    )
    .await;
    let app = app(storage.clone());
    (storage, app)
}

#[tokio::test]
async fn renaming_sets_and_an_empty_title_removes_it() {
    let (storage, app) = titled("Old").await;
    let reply = send(
        &app,
        post_form("/sessions/s-1/title", "title=New+%3Cname%3E"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header("location"), "/sessions/s-1");
    assert_eq!(
        meta_of(&storage, "s-1").await.title.as_deref(),
        Some("New <name>")
    );
    let page = send(&app, get("/sessions/s-1")).await.body;
    assert!(page.contains("<h1>New &#60;name&#62;</h1>"), "{page}");
    assert_inert(&page);
    let reply = send(&app, post_form("/sessions/s-1/title", "title=++")).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(meta_of(&storage, "s-1").await.title, None);
}

#[tokio::test]
async fn a_rename_from_a_page_older_than_another_rename_changes_nothing() {
    let (storage, app) = titled("Old").await;
    let page = send(&app, get("/sessions/s-1")).await.body;
    assert!(
        page.contains(r#"<input type="hidden" name="shown" value="Old">"#),
        "{page}"
    );

    // Two tabs showed "Old"; the first renames, the second arrives after it.
    let first = send(
        &app,
        post_form("/sessions/s-1/title", "shown=Old&title=Mine"),
    )
    .await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    let second = send(
        &app,
        post_form("/sessions/s-1/title", "shown=Old&title=Yours"),
    )
    .await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.body);
    assert!(
        second.body.contains("was renamed since it was read")
            && second.body.contains("nothing was written"),
        "{}",
        second.body
    );
    assert!(second.body.contains("&#34;Mine&#34;"), "{}", second.body);
    assert_eq!(
        meta_of(&storage, "s-1").await.title.as_deref(),
        Some("Mine")
    );

    // A page showing the title as it is renames; an untitled session shows an empty one.
    let third = send(&app, post_form("/sessions/s-1/title", "shown=Mine&title=")).await;
    assert_eq!(third.status, StatusCode::SEE_OTHER, "{}", third.body);
    let fourth = send(&app, post_form("/sessions/s-1/title", "shown=&title=New")).await;
    assert_eq!(fourth.status, StatusCode::SEE_OTHER, "{}", fourth.body);
    assert_eq!(meta_of(&storage, "s-1").await.title.as_deref(), Some("New"));

    // Another program renames (or removes the title) under the page: the storage's own
    // condition refuses the page's rename.
    for (theirs, now) in [(Some("Theirs"), "&#34;Theirs&#34;"), (None, "none")] {
        let rename = fusion::storage::MetaUpdate::new().title(theirs);
        storage.update_session("s-1", &rename).await.unwrap();
        let stale = send(
            &app,
            post_form("/sessions/s-1/title", "shown=New&title=Ours"),
        )
        .await;
        assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
        assert!(stale.body.contains(now), "{}", stale.body);
        assert_eq!(meta_of(&storage, "s-1").await.title.as_deref(), theirs);
    }
}

#[tokio::test]
async fn renaming_refuses_bad_input_unknown_sessions_and_other_sites() {
    let (storage, app) = titled("Kept").await;
    let long = "x".repeat(fusion::storage::MAX_TITLE_CHARS + 1);
    let reply = send(
        &app,
        post_form("/sessions/s-1/title", &format!("title={long}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("title"), "{}", reply.body);
    let reply = send(&app, post_form("/sessions/s-1/title", "name=x")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("no field"), "{}", reply.body);
    // Bytes that are not UTF-8 (no page of ours sends them) are refused, not stored
    // with U+FFFD in their place; so is such a tag.
    for (path, body) in [
        ("/sessions/s-1/title", "title=%FF%FEabc"),
        ("/sessions/s-1/tags", "add=%C3%28"),
    ] {
        let reply = send(&app, post_form(path, body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(reply.body.contains("not text"), "{}", reply.body);
    }
    assert!(meta_of(&storage, "s-1").await.tags.is_empty());
    let reply = send(&app, post_form("/sessions/nope/title", "title=x")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = send(&app, post_cross_site("/sessions/s-1/title", "title=pwned")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = send(&app, get("/sessions/s-1/title")).await;
    assert_eq!(
        reply.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "a GET changes nothing"
    );
    assert_eq!(
        meta_of(&storage, "s-1").await.title.as_deref(),
        Some("Kept")
    );
}

#[tokio::test]
async fn tags_are_added_comma_separated_and_removed_one_by_one() {
    let storage = store();
    put(
        &storage,
        "s-1",
        SessionMeta::new().tags(["old"]),
        &exchange(),
    )
    .await;
    let app = app(storage.clone());
    let reply = send(
        &app,
        post_form("/sessions/s-1/tags", "add=ops%2C+urgent+%2C"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(
        meta_of(&storage, "s-1").await.tags,
        ["old", "ops", "urgent"]
    );
    let page = send(&app, get("/sessions/s-1")).await.body;
    assert!(
        page.contains(
            r#"<button type="submit" name="remove" value="ops" aria-label="Remove tag ops">"#
        ),
        "{page}"
    );
    let reply = send(
        &app,
        post_form("/sessions/s-1/tags", "remove=old&remove=urgent"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(meta_of(&storage, "s-1").await.tags, ["ops"]);
    for bad in ["", "add=&remove=", "add=tab%09inside"] {
        let reply = send(&app, post_form("/sessions/s-1/tags", bad)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad:?}: {}",
            reply.body
        );
    }
    let reply = send(&app, post_cross_site("/sessions/s-1/tags", "add=x")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = send(&app, post_form("/sessions/nope/tags", "add=x")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(meta_of(&storage, "s-1").await.tags, ["ops"]);
}

#[tokio::test]
async fn each_export_format_downloads_with_a_safe_file_name() {
    let storage = store();
    let meta = SessionMeta::new()
        .owner("ann")
        .title("Chores")
        .tags(["ops"]);
    put(&storage, "team:a.1", meta, &exchange()).await;
    let app = app(storage.clone());
    let page = send(&app, get("/sessions/team:a.1")).await.body;
    assert!(
        page.contains(r#"href="/sessions/team:a.1/export?format=jsonl" download"#),
        "{page}"
    );

    let reply = send(&app, get("/sessions/team:a.1/export?format=json")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(
        reply.header("content-disposition"),
        r#"attachment; filename="team_a.1.json""#
    );
    let doc: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(doc["id"], "team:a.1");
    assert_eq!(
        doc["meta"],
        serde_json::json!({"owner": "ann", "title": "Chores", "tags": ["ops"]})
    );
    let messages: Vec<ChatMessage> = serde_json::from_value(doc["messages"].clone()).unwrap();
    assert_eq!(messages, storage.load("team:a.1").await.unwrap());

    let reply = send(&app, get("/sessions/team:a.1/export?format=jsonl")).await;
    assert_eq!(reply.header("content-type"), "application/x-ndjson");
    assert!(
        reply
            .header("content-disposition")
            .ends_with(r#"filename="team_a.1.jsonl""#)
    );
    assert_eq!(reply.body.lines().count(), exchange().len());

    let reply = send(&app, get("/sessions/team:a.1/export?format=markdown")).await;
    assert_eq!(reply.header("content-type"), "text/markdown; charset=utf-8");
    assert!(
        reply
            .header("content-disposition")
            .ends_with(r#"filename="team_a.1.md""#)
    );
    assert!(
        reply
            .body
            .starts_with("# Session `team:a.1`\n\nTitle: Chores  \n"),
        "{}",
        reply.body
    );
    assert!(
        reply
            .body
            .contains("## 4. tool result (list_files, call call-1)"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn exports_refuse_unknown_formats_and_sessions() {
    let storage = store();
    put(&storage, "s-1", SessionMeta::new(), &exchange()).await;
    let app = app(storage);
    for path in ["/sessions/s-1/export?format=xml", "/sessions/s-1/export"] {
        let reply = send(&app, get(path)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            reply.body.contains("json, jsonl or markdown"),
            "{}",
            reply.body
        );
    }
    let reply = send(&app, get("/sessions/nope/export?format=json")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = send(&app, get("/sessions/bad%20id/export?format=json")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bulk_delete_lists_the_selection_then_deletes_each() {
    let storage = store();
    for id in ["a", "b", "c"] {
        put(
            &storage,
            id,
            SessionMeta::new().title(format!("T {id}")),
            &exchange(),
        )
        .await;
    }
    let app = app(storage.clone());
    let page = send(&app, get("/sessions")).await.body;
    assert!(page.contains(r#"<form id="bulk" class="bulk" method="get" action="/bulk-delete">"#));
    assert!(
        page.contains(r#"<input type="checkbox" name="id" value="b" aria-label="Select T b">"#)
    );
    assert_inert(&page);

    let reply = send(&app, get("/bulk-delete?id=a&id=b&id=a&id=gone")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let html = &reply.body;
    assert!(html.contains("<h1>Delete 3 sessions?</h1>"), "{html}");
    assert!(html.contains("<code>a</code> T a"), "{html}");
    assert!(html.contains("(not stored: already deleted?)"), "{html}");
    assert!(
        html.contains(r#"<input type="hidden" name="id" value="b">"#),
        "{html}"
    );
    assert!(html.contains(r#"<form method="post" action="/bulk-delete" class="confirm">"#));
    assert_eq!(
        storage.list_sessions().await.unwrap().len(),
        3,
        "asking deletes nothing"
    );

    let reply = send(&app, post_form("/bulk-delete", &bulk_form(html))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.body.contains("<h1>Deleted 3 sessions</h1>"),
        "{}",
        reply.body
    );
    assert_eq!(storage.list_sessions().await.unwrap(), ["c"]);
}

#[tokio::test]
async fn bulk_delete_reports_failures_and_refuses_bad_requests() {
    let storage = store();
    put(&storage, "a", SessionMeta::new(), &exchange()).await;
    let app = app(storage.clone());
    let page = send(&app, get("/bulk-delete?id=a")).await.body;
    let form = format!("{}&id=bad+id%21", bulk_form(&page));
    let reply = send(&app, post_form("/bulk-delete", &form)).await;
    // The worst failure is the caller's input (an invalid id).
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let html = &reply.body;
    assert!(html.contains("<h2>Not deleted</h2>"), "{html}");
    assert!(
        html.contains("<code>bad id!</code>: <span class=\"error\">"),
        "{html}"
    );
    assert!(
        html.contains("<ul class=\"deleted\">\n<li><code>a</code></li>"),
        "{html}"
    );
    assert!(storage.list_sessions().await.unwrap().is_empty());

    put(&storage, "b", SessionMeta::new(), &exchange()).await;
    for bad in [
        "/bulk-delete",
        "/bulk-delete?id=",
        "/bulk-delete?id=bad%20id",
    ] {
        let reply = send(&app, get(bad)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let many: Vec<String> = (0..501).map(|n| format!("id=s{n}")).collect();
    let reply = send(&app, post_form("/bulk-delete", &many.join("&"))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("at most 500"), "{}", reply.body);
    let reply = send(&app, post_cross_site("/bulk-delete", "id=b")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(storage.list_sessions().await.unwrap(), ["b"]);
}

#[test]
fn escaped_text_in_a_field_value_is_inert_but_handlers_and_urls_are_not() {
    assert_inert(r#"<input name="title" value="&#60;img onerror=x&#62; javascript:">"#);
    for active in [
        r#"<input value="x" onfocus="alert(1)">"#,
        r#"<a title="t" href="javascript:alert(1)">"#,
        r#"<img alt="a" src=x onerror=alert(1)>"#,
        r#"<b style="color:red">"#,
    ] {
        let caught = std::panic::catch_unwind(|| assert_inert(active));
        assert!(caught.is_err(), "not caught: {active}");
    }
}

#[tokio::test]
async fn a_change_whose_body_is_not_a_form_is_a_415_and_changes_nothing() {
    let (storage, app) = titled("Old").await;
    let post = |path: &str, content_type: &str, body: &str| {
        request("POST", path)
            .header("origin", ORIGIN)
            .header("content-type", content_type)
            .body(axum::body::Body::from(body.to_string()))
            .unwrap()
    };
    // A text body holding a form's text was read as the form, and renamed the session.
    for (content_type, body) in [
        ("text/plain", "title=Renamed"),
        ("application/json", r#"{"title": "Renamed"}"#),
        (
            "multipart/form-data; boundary=b",
            "--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nRenamed\r\n--b--\r\n",
        ),
    ] {
        let reply = send(&app, post("/sessions/s-1/title", content_type, body)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}: {}",
            reply.body
        );
        assert!(
            reply.body.contains("application/x-www-form-urlencoded"),
            "says what is expected: {}",
            reply.body
        );
        assert_eq!(meta_of(&storage, "s-1").await.title.as_deref(), Some("Old"));
    }
    let reply = send(&app, post("/sessions/s-1/tags", "text/plain", "add=x")).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(meta_of(&storage, "s-1").await.tags.is_empty());
    // A form, with or without its charset, and a post that names no type, are read.
    for content_type in [
        "application/x-www-form-urlencoded; charset=UTF-8",
        "Application/X-WWW-Form-Urlencoded",
    ] {
        let reply = send(&app, post("/sessions/s-1/tags", content_type, "add=y")).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{content_type}");
    }
    let untyped = request("POST", "/sessions/s-1/title")
        .header("origin", ORIGIN)
        .body(axum::body::Body::from("title=Kept"))
        .unwrap();
    assert_eq!(send(&app, untyped).await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        meta_of(&storage, "s-1").await.title.as_deref(),
        Some("Kept")
    );
}
