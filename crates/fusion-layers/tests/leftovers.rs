//! Defects an audit of the layers found and left: a long encrypted load when the operating
//! system refuses a thread; retries with no tokio timer, what the last error says, logs
//! that name sessions when told not to, and the count of a purge whose reply was lost.

#[cfg(feature = "retry")]
mod common;

/// A long encrypted load in a process that may start no thread.
#[cfg(all(unix, feature = "encryption"))]
mod no_threads {
    use std::sync::Arc;

    use fusion_core::testkit::child::run_test_in_child;
    use fusion_core::{ChatMessage, ConversationStorage, StorageExt};
    use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
    use fusion_storage_memory::InMemoryStorage;
    use nix::sys::resource::{Resource, getrlimit, setrlimit};

    /// Long enough for the layer to open it on several threads on a machine with two cores
    /// or more (on one core it opens every load on the caller's thread anyway).
    const LONG: usize = 4 * 1024 + 7;
    /// Set only in the child process, which may start no thread.
    const CHILD_ENV: &str = "FUSION_LAYERS_TEST_NO_THREADS";
    const CHILD: &str = "no_threads::child_loads_a_long_history_without_threads";

    /// In the child process only: with `RLIMIT_NPROC` at 1 for a user that is not root
    /// (this process alone reaches it), no thread can be started, and a long load still
    /// returns every message.
    #[test]
    fn child_loads_a_long_history_without_threads() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let (_, hard) = getrlimit(Resource::RLIMIT_NPROC).unwrap();
        setrlimit(Resource::RLIMIT_NPROC, 1, hard).unwrap();
        let refused = std::thread::Builder::new().spawn(|| ()).is_err();
        assert!(refused, "the limit should refuse every new thread");

        let keys = EncryptionKeys::new("k1", &[0x5A; 32]).unwrap();
        let storage: Arc<dyn ConversationStorage> =
            Arc::new(InMemoryStorage::new()).layer(EncryptionLayer::new(keys));
        let history: Vec<_> = (0..LONG)
            .map(|i| ChatMessage::user(format!("message {i}")).with_new_id())
            .collect();
        // A current-thread runtime starts no thread of its own.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            storage.save("long", &history).await.unwrap();
            assert_eq!(storage.load("long").await.unwrap(), history);
            let (loaded, _) = storage.load_revision("long").await.unwrap();
            assert_eq!(loaded, history);
        });
    }

    /// The limit binds every user but root, so as root the child runs as `nobody`.
    #[test]
    fn a_long_encrypted_load_returns_every_message_when_no_thread_can_be_started() {
        run_test_in_child(CHILD, CHILD_ENV, "1");
    }
}

/// The retry layer under any executor, its last error, its logs and a lost purge reply.
#[cfg(feature = "retry")]
mod retries {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;

    use async_trait::async_trait;
    use fusion_core::testkit::logs::Logs;
    use fusion_core::testkit::{now_micros, wait_past};
    use fusion_core::{
        ChatMessage, ConversationStorage, Error, Expiry, Intercept, Intercepted, Result,
        SessionMeta, StorageExt,
    };
    use fusion_layers::RetryLayer;
    use fusion_storage_memory::InMemoryStorage;

    use super::common::{Flaky, dropped};

    /// Three attempts with short pauses.
    fn retry() -> RetryLayer {
        RetryLayer::new()
            .max_attempts(3)
            .backoff(Duration::from_millis(1), Duration::from_millis(5))
    }

    fn hi() -> [ChatMessage; 1] {
        [ChatMessage::user("hi")]
    }

    /// `future` run to its end on this thread by the smallest executor there is, which
    /// knows nothing of tokio.
    fn block_on<F: Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            std::thread::park();
        }
    }

    /// A storage whose first two appends fail retryably, behind the retry layer, and its
    /// count of calls.
    fn failing_twice() -> (Arc<dyn ConversationStorage>, Arc<AtomicUsize>) {
        let flaky = Flaky::new(2, dropped);
        let calls = Arc::clone(&flaky.calls);
        (Arc::new(Intercepted(flaky)).layer(retry()), calls)
    }

    #[test]
    fn a_retry_without_a_tokio_timer_pauses_and_passes() {
        // In a runtime built without `enable_time()`.
        let without_timer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (store, calls) = failing_twice();
        without_timer.block_on(store.append("s", &hi())).unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "two pauses, three attempts"
        );
        assert_eq!(block_on(store.load("s")).unwrap().len(), 1);
        // Outside any runtime.
        let (store, calls) = failing_twice();
        block_on(store.append("s", &hi())).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(block_on(store.load("s")).unwrap().len(), 1);
    }

    fn reset_with_source() -> Error {
        Error::Backend {
            backend: "flaky",
            message: "append of session \"s\": connection reset".into(),
            retryable: true,
            source: Some(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))),
        }
    }

    #[tokio::test]
    async fn the_last_error_says_how_many_attempts_were_made_and_keeps_its_kind() {
        let store = Arc::new(Intercepted(Flaky::new(10, reset_with_source))).layer(retry());
        let err = store.append("s", &hi()).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("after 3 attempts"), "{err}");
        let Error::Backend {
            backend: "flaky",
            source: Some(source),
            ..
        } = &err
        else {
            panic!("still the backend's error: {err:?}");
        };
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the source kept");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
        // A call that was not retried returns its error as it was.
        let once =
            Arc::new(Intercepted(Flaky::new(1, reset_with_source))).layer(retry().max_attempts(1));
        let err = once.append("s", &hi()).await.unwrap_err();
        assert!(!err.to_string().contains("attempts"), "{err}");
    }

    /// Logs written on this thread, at every level, while `run` runs, as text.
    fn logged<T>(run: impl FnOnce() -> T) -> (T, String) {
        let logs = Logs::new();
        let output = tracing::subscriber::with_default(logs.subscriber(tracing::Level::TRACE), run);
        (output, logs.text())
    }

    fn timed_out() -> Error {
        let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
        Error::io("/sessions/secret-session.jsonl", timed_out)
    }

    #[test]
    fn a_last_error_without_a_message_of_its_own_is_returned_as_is_and_its_attempts_logged() {
        let store = Arc::new(Intercepted(Flaky::new(10, timed_out))).layer(retry());
        let (result, logs) = logged(|| block_on(store.append("secret-session", &hi())));
        let err = result.unwrap_err();
        let Error::Io { source, .. } = &err else {
            panic!("still the I/O error: {err:?}");
        };
        assert_eq!(source.kind(), std::io::ErrorKind::TimedOut);
        let last = logs.lines().last().unwrap_or_default();
        assert!(
            last.contains("WARN") && last.contains("attempts=3"),
            "{logs}"
        );
        assert!(
            last.contains("secret-session"),
            "the error, by default: {logs}"
        );
    }

    #[test]
    fn without_session_ids_no_log_line_of_the_retry_layer_names_the_session() {
        for error in [timed_out as fn() -> Error, || Error::Backend {
            backend: "flaky",
            message: "append of session \"secret-session\": connection reset".into(),
            retryable: true,
            source: None,
        }] {
            let quiet = retry().session_ids(false);
            let store = Arc::new(Intercepted(Flaky::new(10, error))).layer(quiet);
            let (result, logs) = logged(|| block_on(store.append("secret-session", &hi())));
            assert!(result.is_err());
            assert!(logs.contains("retrying"), "the layer logged: {logs}");
            assert!(!logs.contains("secret-session"), "{logs}");
        }
        // By default the lines carry the error's text, session and all.
        let store = Arc::new(Intercepted(Flaky::new(1, timed_out))).layer(retry());
        let (result, logs) = logged(|| block_on(store.append("secret-session", &hi())));
        result.unwrap();
        assert!(logs.contains("secret-session"), "{logs}");
    }

    /// Purges, and loses the reply of the first purge that deleted something.
    struct LosePurgeReply {
        inner: InMemoryStorage,
        lost: AtomicBool,
    }

    #[async_trait]
    impl Intercept for LosePurgeReply {
        fn inner(&self) -> &dyn ConversationStorage {
            &self.inner
        }

        async fn purge_expired(&self, batch: usize) -> Result<usize> {
            let purged = self.inner.purge_expired(batch).await?;
            if purged > 0 && !self.lost.swap(true, Ordering::SeqCst) {
                return Err(dropped());
            }
            Ok(purged)
        }
    }

    #[tokio::test]
    async fn a_purge_whose_reply_was_lost_counts_only_the_attempt_that_answered() {
        let raw = LosePurgeReply {
            inner: InMemoryStorage::new(),
            lost: AtomicBool::new(false),
        };
        let store = Arc::new(Intercepted(raw)).layer(retry());
        let soon = now_micros() + Duration::from_millis(50);
        let expiring = SessionMeta::new().expiry(Expiry::At(soon));
        for i in 0..5 {
            let id = format!("p{i}");
            store.create_session(&id, &expiring, &hi()).await.unwrap();
        }
        wait_past(soon).await;
        // The caller's loop: until a batch comes back short.
        let mut counted = 0;
        loop {
            let purged = store.purge_expired(2).await.unwrap();
            counted += purged;
            if purged < 2 {
                break;
            }
        }
        assert!(
            store.list_sessions().await.unwrap().is_empty(),
            "all purged"
        );
        // The two the lost reply deleted are not in the count: a lower bound.
        assert_eq!(counted, 3);
    }
}
