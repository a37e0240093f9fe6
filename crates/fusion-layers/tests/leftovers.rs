//! Defects an audit of the layers found and left: a long encrypted load when the operating
//! system refuses a thread.

/// A long encrypted load in a process that may start no thread.
#[cfg(all(unix, feature = "encryption"))]
mod no_threads {
    use std::os::unix::process::CommandExt;
    use std::sync::Arc;

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
    /// The user and group `nobody`.
    const NOBODY: u32 = 65534;

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
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args(["--exact", CHILD, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1");
        if nix::unistd::geteuid().is_root() {
            child.uid(NOBODY).gid(NOBODY);
        }
        let out = child.output().expect("starting the child test process");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the load without threads failed: {}\n{stdout}\n{stderr}",
            out.status
        );
        // The child ran the test by that name, rather than finding none to run.
        assert!(stdout.contains("1 passed"), "{stdout}");
    }
}
