//! A base URL with a query (Azure's `?api-version=`, a gateway's `?key=`): requests go to
//! its path plus `/chat/completions` with the query kept, and messages never show a secret
//! the query holds.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::routing::post;
use axum::{Json, Router};
use fusion_agent::{ChatRequest, LlmClient, OpenAiConfig};
use fusion_core::ChatMessage;
use serde_json::json;

/// A server on loopback that answers `POST /v1/chat/completions` (only there) and keeps
/// the query each request came with.
async fn serve() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let queries = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(
                |State(queries): State<Arc<Mutex<Vec<Option<String>>>>>,
                 RawQuery(query): RawQuery| async move {
                    queries.lock().unwrap().push(query);
                    Json(json!({"choices": [{"message": {"role": "assistant",
                        "content": "hello"}, "finish_reason": "stop"}]}))
                },
            ),
        )
        .with_state(queries.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), queries)
}

async fn ask(client: &fusion_agent::OpenAiClient) -> fusion_core::Result<String> {
    let question = ChatMessage::user("hi");
    let request = ChatRequest {
        messages: vec![Cow::Borrowed(&question)],
        ..Default::default()
    };
    Ok(client.chat(&request).await?.message.content)
}

#[tokio::test]
async fn a_query_in_the_base_url_stays_the_query_of_every_request() {
    let (root, queries) = serve().await;
    for (base, stream) in [
        (format!("{root}/v1?api-version=2024-10-21"), false),
        (format!("{root}/v1/?api-version=2024-10-21"), true),
        // The whole endpoint pasted as the base, query included.
        (
            format!("{root}/v1/chat/completions?api-version=2024-10-21"),
            false,
        ),
    ] {
        let client = OpenAiConfig::new("m")
            .base_url(&base)
            .max_retries(0)
            .stream(stream)
            .build()
            .unwrap();
        assert_eq!(
            client.endpoint(),
            format!("{root}/v1/chat/completions?api-version=2024-10-21")
        );
        assert_eq!(ask(&client).await.unwrap(), "hello", "{base}");
    }
    let queries = queries.lock().unwrap().clone();
    assert_eq!(queries, vec![Some("api-version=2024-10-21".to_owned()); 3]);
}

#[tokio::test]
async fn a_secret_in_the_base_urls_query_never_shows() {
    // A listener that closes every connection unanswered: each request fails, and
    // reqwest's error for it names the URL, query and all. (A port bound and released
    // could be taken meanwhile by another test's server, which would answer.)
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    for stream in [false, true] {
        let client = OpenAiConfig::new("m")
            .base_url(format!("http://127.0.0.1:{port}/v1?key=query-secret-77"))
            .max_retries(0)
            .stream(stream)
            .build()
            .unwrap();
        assert!(client.endpoint().ends_with("/v1/chat/completions?key=***"));
        let error = if stream {
            let question = ChatMessage::user("hi");
            let request = ChatRequest {
                messages: vec![Cow::Borrowed(&question)],
                ..Default::default()
            };
            let mut replies = client.chat_stream(&request);
            match futures::StreamExt::next(&mut replies).await {
                Some(Err(error)) => error,
                other => panic!("expected an error, got {other:?}"),
            }
        } else {
            ask(&client).await.unwrap_err()
        };
        // The message, the error's Debug and every cause's text, as a log would print them.
        let mut shown = vec![
            error.to_string(),
            format!("{error:?}"),
            format!("{client:?}"),
        ];
        let mut cause = std::error::Error::source(&error);
        while let Some(err) = cause {
            shown.push(err.to_string());
            cause = err.source();
        }
        for shown in shown {
            assert!(!shown.contains("query-secret-77"), "{shown}");
        }
    }
}
