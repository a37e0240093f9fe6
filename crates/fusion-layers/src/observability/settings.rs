//! What an [`ObservabilityLayer`](super::ObservabilityLayer) was configured with, shared
//! behind an `Arc` by every storage it wraps: the metric names (built once from the
//! prefix, so a call never formats a name) and whether spans carry session ids.

use std::sync::Arc;

use metrics::SharedString;

/// The prefix of every metric name unless [`ObservabilityLayer::prefix`] says otherwise.
///
/// [`ObservabilityLayer::prefix`]: super::ObservabilityLayer::prefix
pub const DEFAULT_PREFIX: &str = "fusion_storage";

/// The layer's settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) names: MetricNames,
    pub(crate) session_ids: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            names: MetricNames::new(DEFAULT_PREFIX),
            session_ids: true,
        }
    }
}

/// The five metric names under one prefix. Each is an `Arc<str>` inside, so the clone a
/// metrics macro takes on every call is a reference count, not a copy.
#[derive(Debug, Clone)]
pub(crate) struct MetricNames {
    pub(crate) calls: SharedString,
    pub(crate) messages: SharedString,
    pub(crate) bytes: SharedString,
    pub(crate) errors: SharedString,
    pub(crate) seconds: SharedString,
}

impl MetricNames {
    pub(crate) fn new(prefix: &str) -> Self {
        let name =
            |suffix: &str| SharedString::from_shared(Arc::from(format!("{prefix}_{suffix}")));
        Self {
            calls: name("calls_total"),
            messages: name("messages_total"),
            bytes: name("bytes_total"),
            errors: name("errors_total"),
            seconds: name("call_seconds"),
        }
    }
}
