//! The observability layer on the memory backend: the conformance suite through it (it
//! changes nothing a caller sees), the metrics it records, and the storage calls it does
//! not add. Its spans are checked in `observability_spans.rs`.
#![cfg(feature = "observability")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use fusion_core::testkit::StorageHarness;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Expect, Intercept, Intercepted, Result, SessionMeta,
    SessionQuery, StorageExt,
};
use fusion_layers::ObservabilityLayer;
use fusion_storage_memory::InMemoryStorage;
use metrics::Unit;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshot};

struct Harness(InMemoryStorage);

#[async_trait]
impl StorageHarness for Harness {
    type Storage = Intercepted<Arc<dyn ConversationStorage>>;
    async fn open(&self) -> Result<Self::Storage> {
        Ok(Intercepted(
            Arc::new(self.0.clone()).layer(ObservabilityLayer::new()),
        ))
    }
}

async fn harness() -> Option<Harness> {
    Some(Harness(InMemoryStorage::new()))
}

fusion_core::conformance_suite!(conformance_observed_memory, harness);

/// What a recorder holds after the calls of one test, read once (reading resets it).
struct Recorded(Vec<(metrics_util::CompositeKey, Option<Unit>, DebugValue)>);

impl Recorded {
    fn of(snapshot: Snapshot) -> Self {
        let entries = snapshot.into_vec().into_iter();
        Self(
            entries
                .map(|(key, unit, _, value)| (key, unit, value))
                .collect(),
        )
    }

    /// The entry named `name` whose labels are exactly `labels`, in any order.
    fn find(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<&(metrics_util::CompositeKey, Option<Unit>, DebugValue)> {
        self.0.iter().find(|(key, _, _)| {
            let key = key.key();
            let mut have: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
            let mut want = labels.to_vec();
            have.sort();
            want.sort();
            key.name() == name && have == want
        })
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        match self.find(name, labels)? {
            (key, _, DebugValue::Counter(n)) if key.kind() == MetricKind::Counter => Some(*n),
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    /// How many durations the histogram `name` holds (their values are timings: not
    /// checked).
    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        match self.find(name, labels) {
            Some((_, _, DebugValue::Histogram(values))) => values.len(),
            None => 0,
            Some(other) => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    fn names(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(key, _, _)| key.key().name().to_string())
            .collect()
    }
}

fn json_size(messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| serde_json::to_vec(m).unwrap().len() as u64)
        .sum()
}

fn turn() -> Vec<ChatMessage> {
    vec![
        ChatMessage::user("what is the capital of France?"),
        ChatMessage::assistant("Paris."),
    ]
}

// The recorder is installed for the test's thread only; `#[tokio::test]` runs every
// future on that thread, and the memory backend spawns nothing.

#[tokio::test]
async fn append_and_load_count_calls_messages_and_bytes() {
    let recorder = DebuggingRecorder::new();
    let snapshots = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let storage = Arc::new(InMemoryStorage::new()).layer(ObservabilityLayer::new());

    let turn = turn();
    storage.append("chat-1", &turn).await.unwrap();
    assert_eq!(storage.load("chat-1").await.unwrap(), turn);
    storage.delete("chat-1").await.unwrap();

    let got = Recorded::of(snapshots.snapshot());
    for operation in ["append", "load", "delete"] {
        let ok = [
            ("backend", "memory"),
            ("operation", operation),
            ("outcome", "ok"),
        ];
        assert_eq!(
            got.counter("fusion_storage_calls_total", &ok),
            Some(1),
            "{operation}"
        );
        let by_op = [("backend", "memory"), ("operation", operation)];
        assert_eq!(
            got.samples("fusion_storage_call_seconds", &by_op),
            1,
            "{operation}"
        );
    }
    for operation in ["append", "load"] {
        let by_op = [("backend", "memory"), ("operation", operation)];
        assert_eq!(
            got.counter("fusion_storage_messages_total", &by_op),
            Some(2)
        );
        assert_eq!(
            got.counter("fusion_storage_bytes_total", &by_op),
            Some(json_size(&turn))
        );
    }
    let delete = [("backend", "memory"), ("operation", "delete")];
    assert_eq!(
        got.counter("fusion_storage_messages_total", &delete),
        None,
        "delete carries no messages"
    );
    assert!(
        !got.names()
            .iter()
            .any(|n| n == "fusion_storage_errors_total"),
        "{:?}",
        got.names()
    );
    let bytes = got.find(
        "fusion_storage_bytes_total",
        &[("backend", "memory"), ("operation", "append")],
    );
    assert_eq!(
        bytes.and_then(|(_, unit, _)| *unit),
        Some(Unit::Bytes),
        "described with its unit"
    );
}

#[tokio::test]
async fn failing_calls_count_errors_by_kind_and_no_messages() {
    let recorder = DebuggingRecorder::new();
    let snapshots = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let storage = Arc::new(InMemoryStorage::new()).layer(ObservabilityLayer::new());

    storage.append("../etc/passwd", &turn()).await.unwrap_err();
    storage.append("chat-2", &turn()).await.unwrap();
    let stale = storage
        .write_if("chat-2", Expect::Generation(0), Change::Append(&turn()))
        .await
        .unwrap_err();
    assert!(
        matches!(stale, fusion_core::Error::Conflict { .. }),
        "{stale:?}"
    );

    let got = Recorded::of(snapshots.snapshot());
    let error = |operation| {
        [
            ("backend", "memory"),
            ("operation", operation),
            ("outcome", "error"),
        ]
    };
    let ok = [
        ("backend", "memory"),
        ("operation", "append"),
        ("outcome", "ok"),
    ];
    assert_eq!(
        got.counter("fusion_storage_calls_total", &error("append")),
        Some(1)
    );
    assert_eq!(got.counter("fusion_storage_calls_total", &ok), Some(1));
    assert_eq!(
        got.counter("fusion_storage_calls_total", &error("write_if")),
        Some(1)
    );
    let kind = |operation, kind| {
        [
            ("backend", "memory"),
            ("operation", operation),
            ("kind", kind),
        ]
    };
    assert_eq!(
        got.counter(
            "fusion_storage_errors_total",
            &kind("append", "invalid_session_id")
        ),
        Some(1)
    );
    assert_eq!(
        got.counter("fusion_storage_errors_total", &kind("write_if", "conflict")),
        Some(1)
    );
    // Only the accepted append's messages count as written.
    let append = [("backend", "memory"), ("operation", "append")];
    assert_eq!(
        got.counter("fusion_storage_messages_total", &append),
        Some(2)
    );
    let write_if = [("backend", "memory"), ("operation", "write_if")];
    assert_eq!(
        got.counter("fusion_storage_messages_total", &write_if),
        None
    );
}

#[tokio::test]
async fn a_prefix_renames_every_metric() {
    let recorder = DebuggingRecorder::new();
    let snapshots = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let storage =
        Arc::new(InMemoryStorage::new()).layer(ObservabilityLayer::new().prefix("chat_store"));

    storage.append("chat-3", &turn()).await.unwrap();
    storage.load("bad id!").await.unwrap_err();

    let mut names = Recorded::of(snapshots.snapshot()).names();
    names.sort();
    names.dedup();
    assert_eq!(
        names,
        [
            "chat_store_bytes_total",
            "chat_store_call_seconds",
            "chat_store_calls_total",
            "chat_store_errors_total",
            "chat_store_messages_total",
        ]
    );
}

/// Counts the calls that reach the storage under it: every call an [`Intercept`] does
/// not override goes through `inner()` once.
struct Counting {
    inner: Arc<dyn ConversationStorage>,
    calls: Arc<AtomicUsize>,
}

impl Intercept for Counting {
    fn inner(&self) -> &dyn ConversationStorage {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.as_ref()
    }

    // Asked by the layer above on every call; not a storage call.
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

#[tokio::test]
async fn the_layer_adds_no_storage_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counting: Arc<dyn ConversationStorage> = Arc::new(Intercepted(Counting {
        inner: Arc::new(InMemoryStorage::new()),
        calls: calls.clone(),
    }));
    let storage = counting.layer(ObservabilityLayer::new());

    let turn = turn();
    storage
        .create_session("chat-4", &SessionMeta::new().owner("ann"), &turn[..1])
        .await
        .unwrap();
    storage.append("chat-4", &turn[1..]).await.unwrap();
    let (history, revision) = storage.load_revision("chat-4").await.unwrap();
    storage
        .write_if("chat-4", Expect::Exactly(revision), Change::Truncate(1))
        .await
        .unwrap();
    storage.session_info("chat-4").await.unwrap();
    storage.list_page(&SessionQuery::new()).await.unwrap();
    storage.list_sessions().await.unwrap();
    storage.purge_expired(10).await.unwrap();
    assert_eq!(history, turn);
    assert_eq!(calls.load(Ordering::SeqCst), 8, "one inner call per call");
}

/// A storage whose `load` never finishes, as a backend that hangs, or, with `panics`,
/// panics, as a backend with a bug.
struct Broken {
    inner: InMemoryStorage,
    panics: bool,
}

impl Broken {
    fn storage(panics: bool) -> Arc<dyn ConversationStorage> {
        let inner = InMemoryStorage::new();
        let broken: Arc<dyn ConversationStorage> = Arc::new(Intercepted(Self { inner, panics }));
        broken.layer(ObservabilityLayer::new())
    }
}

#[async_trait]
impl Intercept for Broken {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn load(&self, _session_id: &str) -> Result<Vec<ChatMessage>> {
        assert!(!self.panics, "a backend bug");
        std::future::pending().await
    }
}

/// A caller that stops waiting (a timeout, a `select!`, a client that went away) drops the
/// call's future: the call still counts, as `cancelled`, with its latency, so a backend
/// that hangs until every caller gives up does not vanish from the metrics.
#[tokio::test]
async fn a_call_its_caller_stopped_waiting_for_counts_as_cancelled() {
    let recorder = DebuggingRecorder::new();
    let snapshots = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let storage = Broken::storage(false);

    let load = storage.load("chat-5");
    let gave_up = tokio::select! {
        biased;
        _ = load => false,
        () = std::future::ready(()) => true,
    };
    assert!(gave_up, "the load never finishes");

    let got = Recorded::of(snapshots.snapshot());
    let cancelled = [
        ("backend", "memory"),
        ("operation", "load"),
        ("outcome", "cancelled"),
    ];
    assert_eq!(
        got.counter("fusion_storage_calls_total", &cancelled),
        Some(1)
    );
    let by_op = [("backend", "memory"), ("operation", "load")];
    assert_eq!(got.samples("fusion_storage_call_seconds", &by_op), 1);
    assert_eq!(got.counter("fusion_storage_messages_total", &by_op), None);
    assert!(
        !got.names()
            .iter()
            .any(|n| n == "fusion_storage_errors_total"),
        "a cancelled call is not an error: {:?}",
        got.names()
    );
}

/// The `load` calls counted `panicked` and `cancelled`, and the latencies recorded, while
/// a task that panics runs `body` on this test's thread (a current-thread runtime, where
/// the local recorder is).
async fn load_outcomes_of_a_panicking<F>(body: F) -> (Option<u64>, Option<u64>, usize)
where
    F: std::future::Future + Send + 'static,
    F::Output: std::fmt::Debug + Send + 'static,
{
    let recorder = DebuggingRecorder::new();
    let snapshots = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    assert!(tokio::spawn(body).await.unwrap_err().is_panic());

    let got = Recorded::of(snapshots.snapshot());
    let outcome = |outcome| {
        let labels = [
            ("backend", "memory"),
            ("operation", "load"),
            ("outcome", outcome),
        ];
        got.counter("fusion_storage_calls_total", &labels)
    };
    let by_op = [("backend", "memory"), ("operation", "load")];
    let samples = got.samples("fusion_storage_call_seconds", &by_op);
    (outcome("panicked"), outcome("cancelled"), samples)
}

/// A call the backend panicked in is dropped as its panic unwinds, like a cancelled one:
/// it counts as `panicked`, not as a call its caller stopped waiting for, which would
/// send whoever reads the dashboard after a slow backend rather than a crashing one.
#[tokio::test]
async fn a_call_the_backend_panicked_in_counts_as_panicked_not_cancelled() {
    let storage = Broken::storage(true);
    let load = async move { storage.load("chat-6").await };
    assert_eq!(load_outcomes_of_a_panicking(load).await, (Some(1), None, 1));
}

/// A call dropped as a panic unwinds that is not the backend's (another future of the
/// caller's `join!` panicking, the call still waiting on the backend) was cancelled, not
/// panicked: the backend did nothing wrong, and a `panicked` count would send whoever reads
/// the dashboard after a crashing backend that is not there.
#[tokio::test]
async fn a_call_dropped_by_a_panic_elsewhere_counts_as_cancelled() {
    let storage = Broken::storage(false);
    // The load is polled (and waits on the backend) before its neighbour panics.
    let beside = async move {
        let elsewhere = async {
            tokio::task::yield_now().await;
            panic!("a bug beside the storage call");
        };
        tokio::join!(storage.load("chat-7"), elsewhere)
    };
    assert_eq!(
        load_outcomes_of_a_panicking(beside).await,
        (None, Some(1), 1)
    );
}
