//! Whether the scripts that only read go as `EVALSHA_RO` (`scripting.rs`), and when it
//! is tried again after the server refused it.
//!
//! A refusal (a server older than Redis 7, which lacks the command; an ACL that denies
//! it) sends the read scripts as `EVALSHA` for [`RETRY_READ_ONLY`], not for the life of the
//! process: a server upgraded since, or an ACL granting the command since, is used again
//! within a minute. Then one call (whichever asks first) tries `EVALSHA_RO`, the others
//! keep to `EVALSHA` meanwhile; a refusal costs that call one round trip more, once a
//! minute at most. A server whose version `connect` read as older than 7 counts as having
//! refused at `connect`.
//!
//! The time is read from a [`Clock`], the system's monotonic one, which a test replaces
//! by one it moves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[cfg(test)]
use std::sync::Arc;

use redis::RedisError;

/// How long after a refusal of `EVALSHA_RO` the read scripts go as `EVALSHA` before one
/// tries it again.
pub(crate) const RETRY_READ_ONLY: Duration = Duration::from_secs(60);

/// What [`ReadOnlyScripts`] reads the time from.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    /// The system's monotonic clock, counted from this instant.
    System(Instant),
    /// Milliseconds a test sets by hand.
    #[cfg(test)]
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The system's clock, counted from now.
    pub(crate) fn system() -> Self {
        Clock::System(Instant::now())
    }

    /// Milliseconds since the clock's start.
    fn now_ms(&self) -> u64 {
        match self {
            Clock::System(start) => u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            #[cfg(test)]
            Clock::Manual(ms) => ms.load(Ordering::Relaxed),
        }
    }
}

/// A call that goes as `EVALSHA_RO` ([`ReadOnlyScripts::wanted`]), to be settled by what
/// the server answered: [`accepted`](Self::accepted), [`refused`](Self::refused), or
/// dropped unsettled, which counts as [`unanswered`](ReadOnlyScripts::unanswered): a call
/// that failed otherwise, or whose future was dropped (a read cancelled, a timeout of the
/// caller's) before an answer came.
#[derive(Debug)]
#[must_use = "dropped, the attempt counts as unanswered"]
pub(crate) struct Attempt<'a> {
    scripts: &'a ReadOnlyScripts,
    /// When it is the call trying `EVALSHA_RO` again after a refusal: the next try's
    /// millisecond it moved, and to what.
    retry: Option<(u64, u64)>,
    settled: bool,
}

impl Attempt<'_> {
    /// The server ran the script: `EVALSHA_RO` stays in use (see
    /// [`ReadOnlyScripts::accepted`]).
    pub(crate) fn accepted(mut self, url: &str) {
        self.settled = true;
        self.scripts.accepted(url);
    }

    /// The server refused `EVALSHA_RO` (see [`ReadOnlyScripts::refused`]).
    pub(crate) fn refused(mut self, err: &RedisError, url: &str) {
        self.settled = true;
        self.scripts.refused(err, url);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.scripts.unanswered(self.retry);
        }
    }
}

/// Whether the read scripts go as `EVALSHA_RO`: shared by every clone of a storage.
#[derive(Debug)]
pub(crate) struct ReadOnlyScripts {
    clock: Clock,
    /// `0` while `EVALSHA_RO` is used; after a refusal, the clock's millisecond from
    /// which it is tried again (never 0: [`RETRY_READ_ONLY`] after the clock's start at
    /// the earliest): even when a refusal set it, odd when the call trying it again did
    /// (a millisecond later), so that only that call's own mark is undone if it is
    /// [`unanswered`](Self::unanswered).
    retry_at: AtomicU64,
}

impl ReadOnlyScripts {
    /// In use if `accepted` (a server of Redis 7 or newer, or of a version unknown), else
    /// as though refused now.
    pub(crate) fn new(clock: Clock, accepted: bool) -> Self {
        let scripts = Self {
            clock,
            retry_at: AtomicU64::new(0),
        };
        if !accepted {
            scripts
                .retry_at
                .store(scripts.next_try(), Ordering::Relaxed);
        }
        scripts
    }

    /// Whether the next read script goes as `EVALSHA_RO` (`Some`): while in use, and
    /// after a refusal for the one call that comes first once [`RETRY_READ_ONLY`] has
    /// passed (the next try after that one is a minute later again, unless it is
    /// accepted, or [`unanswered`](Self::unanswered)).
    pub(crate) fn wanted(&self) -> Option<Attempt<'_>> {
        let attempt = |retry| Attempt {
            scripts: self,
            retry,
            settled: false,
        };
        let retry_at = self.retry_at.load(Ordering::Relaxed);
        if retry_at == 0 {
            return Some(attempt(None));
        }
        let next = self.next_try() | 1;
        let now = self.clock.now_ms();
        let won = now >= retry_at
            && self
                .retry_at
                .compare_exchange(retry_at, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        won.then(|| attempt(Some((retry_at, next))))
    }

    /// A call sent as `EVALSHA_RO` failed other than by a refusal (a dropped connection,
    /// a timeout, an error of the script) or was dropped before an answer came: nothing
    /// says whether the server takes it. If the call was trying it again after a refusal
    /// (`retry`, its [`Attempt`]'s), the next read tries again, with no minute's wait:
    /// only a refusal starts one. A refusal or an acceptance since stands.
    fn unanswered(&self, retry: Option<(u64, u64)>) {
        if let Some((was, set)) = retry {
            let _ = self
                .retry_at
                .compare_exchange(set, was, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The server refused `EVALSHA_RO` (`err`): the read scripts go as `EVALSHA` until
    /// [`RETRY_READ_ONLY`] has passed.
    pub(crate) fn refused(&self, err: &RedisError, url: &str) {
        let was = self.retry_at.swap(self.next_try(), Ordering::Relaxed);
        if was == 0 {
            tracing::debug!(url, error = %err, retry_in = ?RETRY_READ_ONLY, "read scripts go as EVALSHA: EVALSHA_RO was refused");
        }
    }

    /// The server ran a read script sent as `EVALSHA_RO`: it stays in use.
    pub(crate) fn accepted(&self, url: &str) {
        if self.retry_at.load(Ordering::Relaxed) != 0
            && self.retry_at.swap(0, Ordering::Relaxed) != 0
        {
            tracing::debug!(
                url,
                "read scripts go as EVALSHA_RO again: the server accepted it"
            );
        }
    }

    /// The clock's millisecond [`RETRY_READ_ONLY`] from now, or the one before to make it
    /// even (see `retry_at`).
    fn next_try(&self) -> u64 {
        let wait = u64::try_from(RETRY_READ_ONLY.as_millis()).unwrap_or(u64::MAX);
        self.clock.now_ms().saturating_add(wait) & !1
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::error::server_reply_error as server;
    use std::future::Future;

    /// A clock at 0 ms that the test moves, and the handle it moves it with.
    pub(crate) fn manual_clock() -> (Clock, Arc<AtomicU64>) {
        let ms = Arc::new(AtomicU64::new(0));
        (Clock::Manual(Arc::clone(&ms)), ms)
    }

    /// Moves `clock` on by `by`.
    pub(crate) fn advance(clock: &AtomicU64, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap();
        clock.fetch_add(by, Ordering::Relaxed);
    }

    fn refusal() -> RedisError {
        server("NOPERM this user has no permissions to run the 'evalsha_ro' command")
    }

    #[test]
    fn a_refusal_is_tried_again_by_one_call_once_the_wait_has_passed() {
        let (clock, ms) = manual_clock();
        let scripts = ReadOnlyScripts::new(clock, true);
        assert!(
            scripts.wanted().is_some() && scripts.wanted().is_some(),
            "in use from the start"
        );
        scripts.refused(&refusal(), "redis://test");
        assert!(scripts.wanted().is_none(), "refused just now");
        advance(&ms, RETRY_READ_ONLY - Duration::from_millis(1));
        assert!(
            scripts.wanted().is_none(),
            "a millisecond before the wait ends"
        );
        advance(&ms, Duration::from_millis(1));
        let trying = scripts
            .wanted()
            .expect("the first call once the wait has passed tries it");
        assert!(
            scripts.wanted().is_none(),
            "the others keep to EVALSHA while it does"
        );
        trying.refused(&refusal(), "redis://test");
        advance(&ms, RETRY_READ_ONLY / 2);
        assert!(scripts.wanted().is_none(), "refused again: another wait");
        advance(&ms, RETRY_READ_ONLY / 2);
        let trying = scripts.wanted().expect("the wait has passed again");
        trying.accepted("redis://test");
        assert!(
            scripts.wanted().is_some() && scripts.wanted().is_some(),
            "accepted: in use by every call"
        );
    }

    /// Found by a review: the call trying `EVALSHA_RO` again after a refusal moved the
    /// next try a minute on, and a failure of that call other than a refusal (a dropped
    /// connection, a timeout) left it there, so one lost connection cost the reads
    /// another minute of `EVALSHA`. Only a refusal starts the wait now.
    #[test]
    fn a_retry_that_fails_otherwise_than_by_a_refusal_is_tried_again_by_the_next_read() {
        let (clock, ms) = manual_clock();
        let scripts = ReadOnlyScripts::new(clock, true);
        scripts.refused(&refusal(), "redis://test");
        advance(&ms, RETRY_READ_ONLY);
        let attempt = scripts.wanted().expect("the wait has passed");
        assert!(scripts.wanted().is_none(), "one call tries it at a time");
        drop(attempt);
        let attempt = scripts.wanted().expect("tried again at once");
        assert!(scripts.wanted().is_none());

        // A refusal since stands: the late failure of another try does not undo it.
        scripts.refused(&refusal(), "redis://test");
        drop(attempt);
        assert!(scripts.wanted().is_none(), "refused: the wait stands");
        advance(&ms, RETRY_READ_ONLY);
        assert!(scripts.wanted().is_some());

        // A call made while in use that fails changes nothing.
        scripts.accepted("redis://test");
        let attempt = scripts.wanted().expect("in use");
        drop(attempt);
        assert!(scripts.wanted().is_some() && scripts.wanted().is_some());
    }

    /// Found by a review: a read trying `EVALSHA_RO` again whose future was dropped
    /// before an answer (the caller's timeout, a `select!` that went the other way) left
    /// the next try a minute on, as a refusal does. Its attempt, dropped with it, counts as
    /// unanswered: the next read tries again.
    #[test]
    fn a_retry_dropped_before_an_answer_is_tried_again_by_the_next_read() {
        let (clock, ms) = manual_clock();
        let scripts = ReadOnlyScripts::new(clock, true);
        scripts.refused(&refusal(), "redis://test");
        advance(&ms, RETRY_READ_ONLY);
        let cancelled = async {
            let _attempt = scripts.wanted().expect("the wait has passed");
            std::future::pending::<()>().await;
        };
        let mut cancelled = Box::pin(cancelled);
        let waker = std::task::Waker::noop();
        let polled = cancelled
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        assert!(polled.is_pending());
        assert!(scripts.wanted().is_none(), "its call is under way");
        drop(cancelled);
        assert!(scripts.wanted().is_some(), "tried again at once");
    }

    #[test]
    fn a_server_older_than_redis_7_at_connect_is_tried_after_the_wait() {
        let (clock, ms) = manual_clock();
        let scripts = ReadOnlyScripts::new(clock, false);
        assert!(scripts.wanted().is_none());
        advance(&ms, RETRY_READ_ONLY);
        assert!(scripts.wanted().is_some());
    }

    /// An ACL user of its own on the server at `REDIS_URL` (the shared one: the test only
    /// adds a user, removed with every key under `prefix` when this drops, even if the
    /// test panics), allowed the keys under `prefix` and what `rules` say.
    struct AclUser {
        admin_url: String,
        name: String,
        prefix: String,
        /// `REDIS_URL` as this user.
        url: String,
    }

    impl AclUser {
        async fn create(admin_url: &str, prefix: &str, rules: &str) -> Self {
            let unique = unique();
            let name = format!("fusion-test-{unique}");
            let user = Self {
                admin_url: admin_url.to_string(),
                url: admin_url.replacen("redis://", &format!("redis://{name}:pw-{unique}@"), 1),
                name,
                prefix: prefix.to_string(),
            };
            let keys = format!("~{prefix}:*");
            let password = format!(">pw-{unique}");
            let base = [
                "on",
                &password,
                "resetkeys",
                &keys,
                "resetchannels",
                "+@all",
                "-@dangerous",
            ];
            user.set(&base).await;
            user.set(&rules.split(' ').collect::<Vec<_>>()).await;
            user
        }

        /// Adds `rules` to the user's.
        async fn set(&self, rules: &[&str]) {
            let mut admin = redis::Client::open(self.admin_url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg(&self.name)
                .arg(rules)
                .query_async::<()>(&mut admin)
                .await
                .unwrap();
        }
    }

    impl Drop for AclUser {
        fn drop(&mut self) {
            let Ok(mut admin) = redis::Client::open(self.admin_url.as_str())
                .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
            else {
                return;
            };
            let _: redis::RedisResult<()> = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&self.name)
                .query(&mut admin);
            let pattern = format!("{}:*", self.prefix);
            let mut cursor = 0u64;
            loop {
                let scanned: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut admin);
                let Ok((next, keys)) = scanned else {
                    return;
                };
                for key in keys {
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query(&mut admin);
                }
                if next == 0 {
                    return;
                }
                cursor = next;
            }
        }
    }

    /// `REDIS_URL`, or `None` (skip, or panic under `FUSION_REQUIRE_BACKENDS`).
    fn redis_url() -> Option<String> {
        let url = std::env::var("REDIS_URL").ok();
        let url = url.filter(|url| !url.trim().is_empty());
        if url.is_none() {
            fusion_core::testkit::unavailable::<()>("redis", "set REDIS_URL to run");
        }
        url
    }

    /// A name no other run uses: the process and the system clock's nanoseconds.
    fn unique() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{}-{nanos}", std::process::id())
    }

    /// After a real refusal of `EVALSHA_RO` (an ACL denying it) the read scripts go as
    /// `EVALSHA`, and a minute later `EVALSHA_RO` is tried again, so an ACL granting it
    /// since is used: here one that now denies `EVALSHA`, so that a read script works only
    /// as `EVALSHA_RO`. It was `EVALSHA` for the life of the process.
    #[tokio::test]
    async fn read_scripts_go_as_evalsha_ro_again_a_minute_after_a_refusal() {
        use fusion_core::{ChatMessage, ConversationStorage, SessionQuery};

        let Some(url) = redis_url() else { return };
        let prefix = format!("fusion-test-read-only:{}", unique());
        let user = AclUser::create(&url, &prefix, "-evalsha_ro -eval_ro").await;
        let options = crate::RedisOptions::new().key_prefix(&prefix);
        let mut store = crate::RedisStorage::connect_with(&user.url, options)
            .await
            .unwrap();
        let (clock, ms) = manual_clock();
        store.read_only_scripts = Arc::new(ReadOnlyScripts::new(clock, true));
        store.append("s", &[ChatMessage::user("a")]).await.unwrap();
        let info = store.session_info("s").await.unwrap();
        assert_eq!(
            info.map(|info| info.message_count),
            Some(1),
            "refused, then EVALSHA"
        );

        user.set(&["+evalsha_ro", "+eval_ro", "-evalsha", "-eval"])
            .await;
        let err = store.session_info("s").await.unwrap_err();
        assert!(
            err.to_string().contains("evalsha"),
            "EVALSHA within the minute: {err}"
        );
        advance(&ms, RETRY_READ_ONLY);
        let info = store
            .session_info("s")
            .await
            .expect("EVALSHA_RO tried again");
        assert_eq!(info.map(|info| info.message_count), Some(1));
        let page = store.list_page(&SessionQuery::default()).await.unwrap();
        assert_eq!(page.sessions.len(), 1, "and kept, in a pipeline too");
        assert_eq!(store.list_sessions().await.unwrap(), ["s"]);
    }

    /// The read that tries `EVALSHA_RO` again a minute after a refusal loses its
    /// connection (each copy: a read goes once more after a drop), and the next read
    /// tries it again: here the ACL grants `EVALSHA_RO` since and denies `EVALSHA`, so
    /// that read works only as `EVALSHA_RO`. It went as `EVALSHA` for another minute.
    #[tokio::test]
    async fn a_retry_whose_connection_dropped_is_tried_again_by_the_next_read() {
        use fusion_core::testkit::faults::FaultProxy;
        use fusion_core::{ChatMessage, ConversationStorage};

        let Some(url) = redis_url() else { return };
        let prefix = format!("fusion-test-read-only:{}", unique());
        let user = AclUser::create(&url, &prefix, "-evalsha_ro -eval_ro").await;
        let (proxy, through) = FaultProxy::start_for_url(&user.url, 6379).await;
        let options = crate::RedisOptions::new().key_prefix(&prefix);
        let mut store = crate::RedisStorage::connect_with(&through, options)
            .await
            .unwrap();
        let (clock, ms) = manual_clock();
        store.read_only_scripts = Arc::new(ReadOnlyScripts::new(clock, true));
        store.append("s", &[ChatMessage::user("a")]).await.unwrap();
        let info = store.session_info("s").await.unwrap();
        assert!(info.is_some(), "refused, then EVALSHA");

        user.set(&["+evalsha_ro", "+eval_ro", "-evalsha", "-eval"])
            .await;
        advance(&ms, RETRY_READ_ONLY);
        proxy.cut_randomly_containing("EVALSHA_RO", 1.0, 5);
        let err = store
            .session_info("s")
            .await
            .expect_err("every reply to EVALSHA_RO was lost");
        proxy.stop_cutting();
        assert!(err.is_retryable(), "{err}");
        assert!(proxy.cuts() >= 1);
        let info = store
            .session_info("s")
            .await
            .expect("EVALSHA_RO tried again at once");
        assert_eq!(info.map(|info| info.message_count), Some(1));
    }
}
