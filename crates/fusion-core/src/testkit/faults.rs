//! Faults for the exactly-once tests: writes that apply and then lose their reply.
//!
//! A client whose write failed without an answer cannot tell whether it applied; the
//! retry that follows must not store it twice. Two ways to make that happen on purpose:
//! - [`LoseReplies`] wraps an in-process storage (memory, file system, SQLite): a write
//!   goes to the inner storage and, once it applied, fails with a retryable
//!   [`Error::Backend`] saying its reply was lost;
//! - [`FaultProxy`] sits on the TCP connection between a client and its server (Redis,
//!   PostgreSQL): it forwards a request, waits for the server's first reply byte, then
//!   drops the reply and closes the connection, so the server applied the command and
//!   the client sees a dropped connection.
//!
//! Both arm a one-shot fault or lose replies at random with a seeded probability, and
//! both count the replies they lost. Behind the [`ReplyFault`] trait, the [`cases`] run
//! the same exactly-once scenarios on either (`tests/exactly_once.rs` of each backend):
//!
//! ```no_run
//! use fusion_core::testkit::faults::LoseReplies;
//! use fusion_core::{ChatMessage, ConversationStorage, Intercepted};
//! # async fn demo(inner: impl ConversationStorage) {
//! // An `Intercept`: wrapped in `Intercepted` it is a storage.
//! let store = Intercepted(LoseReplies::new(inner));
//! store.0.arm(); // the next write loses its reply
//! let batch = [ChatMessage::user("hi").with_new_id()];
//! assert!(store.append("s", &batch).await.unwrap_err().is_retryable());
//! store.append("s", &batch).await.unwrap(); // stored once, by the first call
//! assert_eq!(store.load("s").await.unwrap().len(), 1);
//! # }
//! ```

pub mod cases;
mod proxy;

pub use proxy::FaultProxy;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::StorageHarness;
use crate::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Intercept, Intercepted, Result,
    SessionMeta, SessionTimes,
};

/// Something that loses replies on request: what the [`cases`] need of a fault.
pub trait ReplyFault: Send + Sync {
    /// Makes the next write to `session_id` apply and then lose its reply.
    fn lose_next_reply(&self, session_id: &str);

    /// From now on, each request about `session_id` loses its reply with `probability`,
    /// drawn from a generator seeded with `seed`.
    fn lose_replies_at_random(&self, session_id: &str, probability: f64, seed: u64);

    /// How many replies were lost so far.
    fn replies_lost(&self) -> usize;
}

/// A harness whose replies another [`ReplyFault`] loses (the [`FaultProxy`] its storages
/// connect through, the [`FaultSwitch`] they share): it is a [`ReplyFault`] by handing
/// every request on to that one.
pub trait LosesRepliesThrough: Send + Sync {
    /// What loses the replies.
    fn reply_fault(&self) -> &dyn ReplyFault;
}

impl<T: LosesRepliesThrough> ReplyFault for T {
    fn lose_next_reply(&self, session_id: &str) {
        self.reply_fault().lose_next_reply(session_id);
    }

    fn lose_replies_at_random(&self, session_id: &str, probability: f64, seed: u64) {
        self.reply_fault()
            .lose_replies_at_random(session_id, probability, seed);
    }

    fn replies_lost(&self) -> usize {
        self.reply_fault().replies_lost()
    }
}

/// A seeded coin that comes up with a given probability (SplitMix64): the same seed gives
/// the same sequence of throws, whichever task throws them.
#[derive(Debug)]
pub(crate) struct Dice {
    probability: f64,
    state: u64,
}

impl Dice {
    pub(crate) fn new(probability: f64, seed: u64) -> Self {
        assert!(
            (0.0..=1.0).contains(&probability),
            "a probability is between 0 and 1, not {probability}"
        );
        Self {
            probability,
            state: seed,
        }
    }

    /// Whether this throw comes up.
    pub(crate) fn roll(&mut self) -> bool {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        unit < self.probability
    }
}

/// When the writes of one or more [`LoseReplies`] lose their replies, and how many did;
/// clones share it, so several storage instances can lose replies from one seeded
/// sequence and report one count.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch(Arc<SwitchState>);

#[derive(Debug, Default)]
struct SwitchState {
    armed: AtomicBool,
    random: Mutex<Option<Dice>>,
    lost: AtomicUsize,
}

impl FaultSwitch {
    /// A switch that loses nothing until told to.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next write that succeeds (through any storage sharing this switch) lose
    /// its reply. A write that fails on its own keeps the fault armed.
    pub fn arm(&self) {
        self.0.armed.store(true, Ordering::SeqCst);
    }

    /// From now on, each write that succeeds loses its reply with `probability`, drawn
    /// from a generator seeded with `seed`; 0 stops it.
    pub fn lose_with_probability(&self, probability: f64, seed: u64) {
        let dice = (probability > 0.0).then(|| Dice::new(probability, seed));
        *self.0.random.lock().unwrap_or_else(PoisonError::into_inner) = dice;
    }

    /// How many replies were lost so far.
    pub fn lost(&self) -> usize {
        self.0.lost.load(Ordering::SeqCst)
    }

    /// Whether the write that just applied loses its reply (and counts it if so).
    fn trips(&self) -> bool {
        let armed = self.0.armed.swap(false, Ordering::SeqCst);
        let tripped = armed
            || self
                .0
                .random
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
                .is_some_and(Dice::roll);
        if tripped {
            self.0.lost.fetch_add(1, Ordering::SeqCst);
        }
        tripped
    }
}

impl ReplyFault for FaultSwitch {
    /// Arms the switch: the next write to any session loses its reply.
    fn lose_next_reply(&self, _session_id: &str) {
        self.arm();
    }

    /// Loses replies of writes to any session, not only `session_id`'s.
    fn lose_replies_at_random(&self, _session_id: &str, probability: f64, seed: u64) {
        self.lose_with_probability(probability, seed);
    }

    fn replies_lost(&self) -> usize {
        self.lost()
    }
}

/// A storage (inside [`Intercepted`]) whose writes (`append`, `save`, `write_if`,
/// `create_session`, `truncate`, `delete`) may apply and then fail with a retryable [`Error::Backend`], as a write
/// whose reply a dropped connection lost; see the [module docs](self).
///
/// Reads and the other calls go to the inner storage untouched, and so does a write that
/// fails on its own (nothing applied, nothing lost).
#[derive(Debug)]
pub struct LoseReplies<S> {
    inner: S,
    switch: FaultSwitch,
}

impl<S: ConversationStorage> LoseReplies<S> {
    /// `inner` behind a switch of its own, losing nothing until told to.
    pub fn new(inner: S) -> Self {
        Self::with_switch(inner, FaultSwitch::new())
    }

    /// `inner` behind `switch`, which other instances may share.
    pub fn with_switch(inner: S, switch: FaultSwitch) -> Self {
        Self { inner, switch }
    }

    /// Makes the next write that succeeds lose its reply (see [`FaultSwitch::arm`]).
    pub fn arm(&self) {
        self.switch.arm();
    }

    /// Loses each successful write's reply with `probability` (seeded).
    pub fn lose_with_probability(&self, probability: f64, seed: u64) {
        self.switch.lose_with_probability(probability, seed);
    }

    /// How many replies were lost so far (by every storage sharing the switch).
    pub fn lost(&self) -> usize {
        self.switch.lost()
    }

    /// The switch, to share with another instance or to arm from elsewhere.
    pub fn switch(&self) -> &FaultSwitch {
        &self.switch
    }

    /// `result` of a write to `session_id`, or the lost reply's error if the switch
    /// trips now that it applied.
    fn reply<T>(&self, operation: &str, session_id: &str, result: Result<T>) -> Result<T> {
        let value = result?;
        if self.switch.trips() {
            return Err(Error::Backend {
                backend: self.inner.backend_name(),
                message: format!(
                    "{operation} of session \"{session_id}\": applied, but the reply was lost \
                     (injected fault)"
                ),
                retryable: true,
                source: None,
            });
        }
        Ok(value)
    }
}

impl<S: ConversationStorage> ReplyFault for LoseReplies<S> {
    fn lose_next_reply(&self, session_id: &str) {
        self.switch.lose_next_reply(session_id);
    }

    fn lose_replies_at_random(&self, session_id: &str, probability: f64, seed: u64) {
        self.switch
            .lose_replies_at_random(session_id, probability, seed);
    }

    fn replies_lost(&self) -> usize {
        self.lost()
    }
}

/// Only the writes are intercepted; every other call goes to the inner storage through
/// [`Intercept`]'s forwarding.
#[async_trait]
impl<S: ConversationStorage> Intercept for LoseReplies<S> {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        let result = self.inner.save(session_id, history).await;
        self.reply("save", session_id, result)
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        let result = self.inner.delete(session_id).await;
        self.reply("delete", session_id, result)
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        let result = self.inner.append(session_id, messages).await;
        self.reply("append", session_id, result)
    }

    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        let result = self.inner.truncate(session_id, len).await;
        self.reply("truncate", session_id, result)
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        let result = self.inner.write_if(session_id, expected, change).await;
        self.reply("write_if", session_id, result)
    }

    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        let result = self.inner.create_session(session_id, meta, messages).await;
        self.reply("create_session", session_id, result)
    }

    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        let result = self
            .inner
            .create_session_with_times(session_id, meta, messages, times)
            .await;
        self.reply("create_session_with_times", session_id, result)
    }
}

/// `harness`'s storage behind [`LoseReplies`], every instance sharing one
/// [`FaultSwitch`]: how the [`cases`] run on an in-process backend.
pub struct Lossy<H> {
    /// The backend's own harness.
    pub harness: H,
    /// The switch every instance shares.
    pub switch: FaultSwitch,
}

impl<H> Lossy<H> {
    /// `harness` behind a fresh switch.
    pub fn new(harness: H) -> Self {
        Self {
            harness,
            switch: FaultSwitch::new(),
        }
    }
}

#[async_trait]
impl<H: StorageHarness> StorageHarness for Lossy<H> {
    type Storage = Intercepted<LoseReplies<H::Storage>>;

    async fn open(&self) -> Result<Self::Storage> {
        let inner = self.harness.open().await?;
        Ok(Intercepted(LoseReplies::with_switch(
            inner,
            self.switch.clone(),
        )))
    }
}

impl<H: Send + Sync> LosesRepliesThrough for Lossy<H> {
    fn reply_fault(&self) -> &dyn ReplyFault {
        &self.switch
    }
}

/// The lost-reply scenarios of [`cases`] as `#[tokio::test]`s, for one backend's
/// `tests/exactly_once_<backend>.rs`: `$setup` is an async fn returning `Option<H>`
/// (`None` when the backend's server is unavailable, through
/// [`unavailable`](crate::testkit::unavailable)), `H` both the harness and its fault
/// ([`ReplyFault`]), and `$retry` a retry layer (`fusion_layers::RetryLayer`, which this
/// crate cannot name) with a short backoff and enough attempts for the random case.
///
/// ```ignore
/// fusion_core::lost_reply_suite!(harness, retry());
/// ```
#[macro_export]
macro_rules! lost_reply_suite {
    ($setup:path, $retry:expr) => {
        #[tokio::test]
        async fn lost_append_replies_are_retried_exactly_once() {
            let Some(harness) = $setup().await else { return };
            $crate::testkit::faults::cases::lost_append_replies_are_retried_exactly_once(
                &harness, &$retry,
            )
            .await;
        }

        #[tokio::test]
        async fn a_lost_append_reply_fails_retryably_and_the_same_batch_again_stores_once() {
            let Some(harness) = $setup().await else { return };
            $crate::testkit::faults::cases::a_lost_append_reply_fails_retryably_and_the_same_batch_again_stores_once(&harness).await;
        }

        #[tokio::test]
        async fn lost_replies_of_conditional_writes_and_creations_are_retried_to_success() {
            let Some(harness) = $setup().await else { return };
            $crate::testkit::faults::cases::lost_replies_of_conditional_writes_and_creations_are_retried_to_success(&harness, &$retry).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn writers_losing_replies_at_random_store_every_message_once() {
            let Some(harness) = $setup().await else { return };
            let lost = $crate::testkit::faults::cases::writers_losing_replies_at_random_store_every_message_once(&harness, &$retry, 18).await;
            eprintln!("{lost} replies lost after the write applied, and retried");
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_follow_their_seed_and_probability() {
        let throws = |seed| {
            let mut dice = Dice::new(0.25, seed);
            (0..4000).map(|_| dice.roll()).collect::<Vec<_>>()
        };
        assert_eq!(throws(7), throws(7), "one seed, one sequence");
        assert_ne!(throws(7), throws(8));
        let hits = throws(7).iter().filter(|&&hit| hit).count();
        assert!((800..1200).contains(&hits), "{hits} of 4000 at 1/4");
        let mut never = Dice::new(0.0, 1);
        let mut always = Dice::new(1.0, 1);
        assert!((0..1000).all(|_| !never.roll() && always.roll()));
    }

    #[test]
    fn an_armed_switch_trips_once_and_counts() {
        let switch = FaultSwitch::new();
        let shared = switch.clone();
        assert!(!switch.trips());
        shared.arm();
        assert!(switch.trips());
        assert!(!switch.trips(), "one-shot");
        assert_eq!(shared.lost(), 1);
    }
}
