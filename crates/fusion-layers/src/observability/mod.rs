//! Observability for any storage: a `tracing` span and `metrics` counters and a latency
//! histogram for every call, whatever the backend.
//!
//! Where the encryption layer changes what is stored, this one changes nothing: it
//! watches. It overrides every call of [`ConversationStorage`], adds no storage call of
//! its own, and keeps `append` O(new messages): the only extra work per call is one
//! serialization of the messages it carries into a byte counter (no allocation), to
//! report their size.
//!
//! ```no_run
//! use std::sync::Arc;
//! use fusion_core::{ConversationStorage, StorageExt};
//! use fusion_layers::observability::ObservabilityLayer;
//!
//! # fn demo(storage: Arc<dyn ConversationStorage>) {
//! // Install a `tracing` subscriber and a `metrics` recorder (for example
//! // `metrics-exporter-prometheus`'s) at start-up, then:
//! let storage = storage.layer(ObservabilityLayer::new().prefix("chat_storage"));
//! # }
//! ```
//!
//! # Spans and events
//!
//! Each call runs inside a span named `storage` at `DEBUG` level, so anything the backend
//! logs nests under it. Its fields:
//!
//! | field | value |
//! | --- | --- |
//! | `backend` | [`ConversationStorage::backend_name`]: `memory`, `fs`, `sqlite`, ... |
//! | `operation` | the method: `append`, `load`, `write_if`, `list_page`, ... |
//! | `session_id` | the session, for calls on one session (unless turned off); an invalid id (which the backend refuses) escaped and shortened, as its error shows it |
//! | `messages` | how many messages the call writes, or read back |
//! | `bytes` | their size as JSON |
//! | `outcome` | `ok`, `error`, `cancelled` for a call its caller stopped waiting for, or `panicked` for one the backend panicked in |
//! | `error_kind` | for an error, its kind ([`error_kind`]) |
//!
//! `messages` and `bytes` are set on calls that carry messages: `save`, `append`,
//! `write_if`, `create_session` and `create_session_with_times` (written, even when
//! refused) and `load` and `load_revision` (read). A failed call also logs one event inside its span: at `WARN`,
//! or at `DEBUG` for [`Error::Conflict`](fusion_core::Error::Conflict) and
//! [`Error::TitleChanged`](fusion_core::Error::TitleChanged), the expected answer of a
//! conditional write that lost a race. Spans are at `DEBUG` because an agent
//! turn makes several storage calls: at `INFO` they would drown the application's logs.
//!
//! A call whose future is dropped before it finishes (a caller's timeout, a `select!`, a
//! web request whose client went away) is recorded as `cancelled`, with the time it ran,
//! and logs a `DEBUG` event: a backend that hangs until every caller gives up still shows
//! its calls and their latency. A call the backend panicked in (its future dropped as the
//! panic unwinds out of the backend) is recorded as `panicked` the same way, with a `WARN`
//! event; one dropped as a panic elsewhere unwinds (another future of the caller's
//! `join!`) is `cancelled`, its backend having done nothing wrong.
//!
//! With [`session_ids(false)`](ObservabilityLayer::session_ids) neither spans nor events
//! name the session (the event then leaves out the error's text, which names it): for
//! tracing backends that bill per distinct value, or ids that are personal data.
//!
//! # Metrics
//!
//! Recorded through the [`metrics`] facade, so any exporter works: install one recorder
//! at start-up, such as `metrics-exporter-prometheus` or an OpenTelemetry bridge. Without
//! one, recording costs next to nothing. `fusion_storage` is the default prefix
//! ([`ObservabilityLayer::prefix`]).
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | `fusion_storage_calls_total` | counter | `backend`, `operation`, `outcome` | every call; `outcome` is `ok`, `error`, `cancelled` or `panicked` |
//! | `fusion_storage_messages_total` | counter | `backend`, `operation` | messages written (`save`, `append`, `write_if`, `create_session`, `create_session_with_times`) or read (`load`, `load_revision`) by successful calls |
//! | `fusion_storage_bytes_total` | counter | `backend`, `operation` | the same messages' size as JSON |
//! | `fusion_storage_errors_total` | counter | `backend`, `operation`, `kind` | failed calls, by [`error_kind`] |
//! | `fusion_storage_call_seconds` | histogram | `backend`, `operation` | how long each call took, in seconds, whatever its outcome (a cancelled call: until it was cancelled) |
//!
//! Every label value comes from a small fixed set (backend names, method names, error
//! kinds): no session id ever becomes a label, so the number of series stays bounded.

mod kind;
mod observed;
mod settings;

use std::sync::Arc;

use fusion_core::{ConversationStorage, Intercepted, Layer};
use metrics::{Unit, describe_counter, describe_histogram};

pub use kind::error_kind;
pub use settings::DEFAULT_PREFIX;

use observed::Observed;
use settings::{MetricNames, Settings};

/// Traces and measures every call of the storage it wraps: see the [module
/// docs](self) for the span fields and the metric names.
#[derive(Debug, Clone, Default)]
pub struct ObservabilityLayer {
    settings: Settings,
}

impl ObservabilityLayer {
    /// A layer with the default prefix ([`DEFAULT_PREFIX`]) that records session ids.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the metrics `{prefix}_calls_total`, `{prefix}_call_seconds`, ... instead of
    /// `fusion_storage_...`. Keep to ASCII letters, digits and `_` for Prometheus.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.settings.names = MetricNames::new(prefix);
        self
    }

    /// Whether spans carry the `session_id` field (default `true`).
    pub fn session_ids(mut self, record: bool) -> Self {
        self.settings.session_ids = record;
        self
    }

    /// Gives the metrics their units and help texts in the current recorder, for
    /// exporters that show them (Prometheus's `# HELP`).
    fn describe(&self) {
        let names = &self.settings.names;
        describe_counter!(names.calls.clone(), Unit::Count, "Storage calls.");
        describe_counter!(
            names.messages.clone(),
            Unit::Count,
            "Messages written or read by storage calls."
        );
        describe_counter!(
            names.bytes.clone(),
            Unit::Bytes,
            "Size as JSON of the messages written or read."
        );
        describe_counter!(names.errors.clone(), Unit::Count, "Failed storage calls.");
        describe_histogram!(
            names.seconds.clone(),
            Unit::Seconds,
            "Duration of storage calls."
        );
    }
}

impl Layer for ObservabilityLayer {
    fn layer(&self, inner: Arc<dyn ConversationStorage>) -> Arc<dyn ConversationStorage> {
        self.describe();
        Arc::new(Intercepted(Observed {
            inner,
            settings: Arc::new(self.settings.clone()),
        }))
    }
}
