//! The observability layer's `tracing` output, captured by a subscriber layer: one
//! `storage` span per call with its fields, and one event per failed or cancelled call.
#![cfg(feature = "observability")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fusion_core::{
    Change, ChatMessage, ConversationStorage, Expect, Intercept, Intercepted, Result, StorageExt,
};
use fusion_layers::ObservabilityLayer;
use fusion_storage_memory::InMemoryStorage;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

type Fields = BTreeMap<String, String>;

/// Every field value as text.
struct Text<'a>(&'a mut Fields);

impl Visit for Text<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

/// What the subscriber saw: closed spans by name and fields, and events with their level,
/// fields and the span they were in.
#[derive(Default)]
struct Seen {
    spans: Vec<(String, Fields)>,
    events: Vec<(Level, Fields, Option<String>)>,
}

/// A subscriber layer keeping the fields of every span until it closes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Seen>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Text(&mut fields));
        ctx.span(id).unwrap().extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut extensions = span.extensions_mut();
        values.record(&mut Text(extensions.get_mut::<Fields>().unwrap()));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Text(&mut fields));
        let parent = ctx.event_span(event).map(|s| s.name().to_string());
        let seen = (*event.metadata().level(), fields, parent);
        self.0.lock().unwrap().events.push(seen);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        let fields = span.extensions_mut().remove::<Fields>().unwrap();
        let seen = (span.name().to_string(), fields);
        self.0.lock().unwrap().spans.push(seen);
    }
}

/// Runs `calls` on the memory backend under `layer` with a capturing subscriber set for
/// this thread (`#[tokio::test]` polls every future on it).
async fn capture<F>(layer: ObservabilityLayer, calls: F) -> Seen
where
    F: AsyncFnOnce(Arc<dyn ConversationStorage>),
{
    capture_on(Arc::new(InMemoryStorage::new()), layer, calls).await
}

/// [`capture`] on the storage `inner`.
async fn capture_on<F>(
    inner: Arc<dyn ConversationStorage>,
    layer: ObservabilityLayer,
    calls: F,
) -> Seen
where
    F: AsyncFnOnce(Arc<dyn ConversationStorage>),
{
    let seen = Capture::default();
    let subscriber = tracing_subscriber::registry().with(seen.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    calls(inner.layer(layer)).await;
    std::mem::take(&mut *seen.0.lock().unwrap())
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    let pairs = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    pairs.collect()
}

#[tokio::test]
async fn each_call_is_a_storage_span_with_its_fields() {
    let turn = [ChatMessage::user("hello"), ChatMessage::assistant("hi!")];
    let size: usize = turn
        .iter()
        .map(|m| serde_json::to_vec(m).unwrap().len())
        .sum();
    let seen = capture(ObservabilityLayer::new(), async |storage| {
        storage.append("chat-1", &turn).await.unwrap();
        storage.load("chat-1").await.unwrap();
        storage.list_sessions().await.unwrap();
    })
    .await;

    let size = size.to_string();
    let expected = [
        fields(&[
            ("backend", "memory"),
            ("operation", "append"),
            ("session_id", "chat-1"),
            ("messages", "2"),
            ("bytes", &size),
            ("outcome", "ok"),
        ]),
        fields(&[
            ("backend", "memory"),
            ("operation", "load"),
            ("session_id", "chat-1"),
            ("messages", "2"),
            ("bytes", &size),
            ("outcome", "ok"),
        ]),
        fields(&[
            ("backend", "memory"),
            ("operation", "list_sessions"),
            ("outcome", "ok"),
        ]),
    ];
    let spans: Vec<_> = seen.spans.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(spans, expected);
    assert!(seen.spans.iter().all(|(name, _)| name == "storage"));
    assert!(seen.events.is_empty(), "no event for a call that succeeds");
}

#[tokio::test]
async fn a_failed_call_records_its_kind_and_warns_inside_its_span() {
    let seen = capture(ObservabilityLayer::new(), async |storage| {
        storage.load("bad id!").await.unwrap_err();
    })
    .await;

    let [(_, span)] = &seen.spans[..] else {
        panic!("one span: {:?}", seen.spans)
    };
    assert_eq!(span["outcome"], "error");
    assert_eq!(span["error_kind"], "invalid_session_id");
    assert!(!span.contains_key("messages"), "nothing was read");
    let [(level, event, parent)] = &seen.events[..] else {
        panic!("one event: {:?}", seen.events)
    };
    assert_eq!(*level, Level::WARN);
    assert_eq!(parent.as_deref(), Some("storage"));
    assert_eq!(event["error_kind"], "invalid_session_id");
    assert!(event["error"].contains("bad id!"), "{event:?}");
}

#[tokio::test]
async fn a_lost_race_is_a_debug_event_not_a_warning() {
    let turn = [ChatMessage::user("first")];
    let seen = capture(ObservabilityLayer::new(), async |storage| {
        storage.append("chat-2", &turn).await.unwrap();
        let again = Change::Append(&turn);
        let lost = storage.write_if("chat-2", Expect::Generation(0), again);
        lost.await.unwrap_err();
    })
    .await;

    let (_, write_if) = &seen.spans[1];
    assert_eq!(write_if["operation"], "write_if");
    assert_eq!(write_if["error_kind"], "conflict");
    assert_eq!(write_if["messages"], "1", "what the refused write carried");
    let [(level, event, _)] = &seen.events[..] else {
        panic!("one event: {:?}", seen.events)
    };
    assert_eq!(
        (*level, event["error_kind"].as_str()),
        (Level::DEBUG, "conflict")
    );

    // A rename that lost its race to another rename: the same.
    let seen = capture(ObservabilityLayer::new(), async |storage| {
        let meta = fusion_core::SessionMeta::new().title("theirs");
        storage
            .create_session("chat-4", &meta, &turn)
            .await
            .unwrap();
        let rename = fusion_core::MetaUpdate::new()
            .title(Some("mine"))
            .if_title(Some("shown"));
        storage.update_session("chat-4", &rename).await.unwrap_err();
    })
    .await;
    let [(level, event, _)] = &seen.events[..] else {
        panic!("one event: {:?}", seen.events)
    };
    assert_eq!(
        (*level, event["error_kind"].as_str()),
        (Level::DEBUG, "title_changed")
    );
}

#[tokio::test]
async fn session_ids_can_be_kept_out_of_spans_and_events() {
    let layer = ObservabilityLayer::new().session_ids(false);
    let seen = capture(layer, async |storage| {
        storage
            .append("chat-3", &[ChatMessage::user("x")])
            .await
            .unwrap();
        storage.load("bad id!").await.unwrap_err();
    })
    .await;

    assert_eq!(seen.spans.len(), 2);
    for (_, span) in &seen.spans {
        assert!(!span.contains_key("session_id"), "{span:?}");
    }
    let [(_, event, _)] = &seen.events[..] else {
        panic!("one event: {:?}", seen.events)
    };
    assert_eq!(
        event.get("error"),
        None,
        "the error's text names the session"
    );
    assert_eq!(event["error_kind"], "invalid_session_id");
}

/// The span opens before the backend checks the id, so an id it then refuses is shown as
/// its error shows it, escaped and shortened: never as given, where a line break forges a
/// log line, an escape sequence reaches the terminal, and a megabyte lands in the logs.
#[tokio::test]
async fn an_invalid_session_id_is_shown_escaped_and_shortened() {
    let forged = "chat-1\n2026-12-07T00:00:00Z  INFO forged line \u{1b}[2J";
    let long = "x".repeat(1 << 20);
    let seen = capture(ObservabilityLayer::new(), async |storage| {
        storage.load(forged).await.unwrap_err();
        let said = [ChatMessage::user("x")];
        storage.append(&long, &said).await.unwrap_err();
    })
    .await;

    let shown: Vec<&str> = seen
        .spans
        .iter()
        .map(|(_, span)| span["session_id"].as_str())
        .collect();
    let [forged_shown, long_shown] = shown[..] else {
        panic!("two spans: {:?}", seen.spans)
    };
    assert!(
        forged_shown.starts_with("chat-1\\n2026"),
        "{forged_shown:?}"
    );
    assert!(!forged_shown.contains(['\n', '\u{1b}']), "{forged_shown:?}");
    assert!(long_shown.starts_with("xxx"), "{long_shown:?}");
    assert!(long_shown.len() < 100, "{} bytes", long_shown.len());
    for (_, event, _) in &seen.events {
        let error = &event["error"];
        assert!(
            !error.contains(['\n', '\u{1b}']) && error.len() < 500,
            "{error:?}"
        );
    }
}

/// A storage whose `load` never finishes, as a backend that hangs.
struct Hanging(InMemoryStorage);

#[async_trait::async_trait]
impl Intercept for Hanging {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.0
    }

    async fn load(&self, _session_id: &str) -> Result<Vec<ChatMessage>> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_call_its_caller_stopped_waiting_for_closes_its_span_as_cancelled() {
    let hanging = Arc::new(Intercepted(Hanging(InMemoryStorage::new())));
    let seen = capture_on(hanging, ObservabilityLayer::new(), async |storage| {
        tokio::select! {
            biased;
            _ = storage.load("chat-4") => panic!("the load never finishes"),
            () = std::future::ready(()) => {}
        }
    })
    .await;

    let [(_, span)] = &seen.spans[..] else {
        panic!("one span: {:?}", seen.spans)
    };
    assert_eq!(span["operation"], "load");
    assert_eq!(span["outcome"], "cancelled");
    assert!(!span.contains_key("error_kind"), "{span:?}");
    let [(level, _, parent)] = &seen.events[..] else {
        panic!("one event: {:?}", seen.events)
    };
    assert_eq!((*level, parent.as_deref()), (Level::DEBUG, Some("storage")));
}
