//! The state a [`MockLlmServer`](super::MockLlmServer) shares with its request handler:
//! the script, the records and the counters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::watch;

use super::gate::GateState;
use super::reply::{MockReply, RecordedRequest};

pub(super) type Rule = Arc<dyn Fn(&Value) -> MockReply + Send + Sync>;

/// Mutable script and records, behind one short-held lock.
pub(super) struct Script {
    pub queue: VecDeque<MockReply>,
    pub default: Option<MockReply>,
    pub rule: Option<Rule>,
    pub api_key: Option<String>,
    pub record: bool,
    pub requests: Vec<RecordedRequest>,
    /// Answer `"stream": true` with a 400, as servers without streaming do.
    pub reject_streaming: bool,
    /// Answer a request offering tools with a 400, as Ollama does for models without
    /// tool support.
    pub reject_tools: bool,
    /// Send each streamed reply that has no pauses as one body with a length, as a
    /// buffering proxy in front of the model does.
    pub buffer_streams: bool,
    /// Gates for the next streamed replies, taken one per stream.
    pub held_streams: VecDeque<Arc<GateState>>,
}

/// The state the handler and the [`MockLlmServer`](super::MockLlmServer) share.
pub(super) struct Shared {
    script: Mutex<Script>,
    /// Requests received, including rejected ones.
    pub count: AtomicUsize,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// Nanoseconds spent inside the handler, summed over requests.
    pub server_nanos: AtomicU64,
    /// Replies not yet sent in full nor abandoned by their client.
    pub in_progress: watch::Sender<usize>,
    /// The number in the next server-assigned call id.
    pub next_call_id: AtomicU64,
}

impl Shared {
    /// An empty script that records requests.
    pub fn new() -> Self {
        Shared {
            script: Mutex::new(Script {
                queue: VecDeque::new(),
                default: None,
                rule: None,
                api_key: None,
                record: true,
                requests: Vec::new(),
                reject_streaming: false,
                reject_tools: false,
                buffer_streams: false,
                held_streams: VecDeque::new(),
            }),
            count: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            server_nanos: AtomicU64::new(0),
            in_progress: watch::Sender::new(0),
            next_call_id: AtomicU64::new(1),
        }
    }

    /// The script and records, locked.
    pub fn script(&self) -> MutexGuard<'_, Script> {
        // A panic while holding the lock cannot leave the script half-updated in a way
        // that matters to a test, so a poisoned lock is still usable.
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts one reply in progress for as long as it lives: held by the handler while it
/// waits, and by a streamed body until the body ends or its client goes away.
pub(super) struct ReplyInProgress(Arc<Shared>);

impl ReplyInProgress {
    /// Counts a reply in progress until the returned guard is dropped.
    pub fn start(shared: &Arc<Shared>) -> Self {
        shared.in_progress.send_modify(|n| *n += 1);
        ReplyInProgress(shared.clone())
    }
}

impl Drop for ReplyInProgress {
    fn drop(&mut self) {
        self.0.in_progress.send_modify(|n| *n -= 1);
    }
}
