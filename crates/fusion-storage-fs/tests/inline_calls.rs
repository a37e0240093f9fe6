//! Appends and loads made on the calling task's thread (`FileSystemOptions::inline_calls`,
//! on by default): they never wait there for a lock, and never keep the other tasks of
//! the thread from running. Which calls are made there is tested in the crate
//! (`session_files`); the conformance suite runs appends both ways (with
//! `SyncPolicy::EveryWrite` no append is made inline).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use fusion_core::{Change, ChatMessage, ConversationStorage, Error, Expect};
use fusion_storage_fs::{FileSystemOptions, FileSystemStorage};

fn turn(text: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::user(format!("{text}?")),
        ChatMessage::assistant(format!("{text}.")),
    ]
}

/// Holds the exclusive lock of session `s` in `dir` as another process would, until told
/// to let go or until its patience runs out (should a call block the runtime's only
/// thread, which would then never tell it). Returns once the lock is held.
struct Holder {
    release: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Holder {
    fn lock(dir: &std::path::Path) -> Self {
        let path = dir.join(".s.lock");
        let (locked_tx, locked_rx) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            file.lock().unwrap();
            locked_tx.send(()).unwrap();
            let told = release_rx.recv_timeout(Duration::from_secs(60)).is_ok();
            file.unlock().unwrap();
            told
        });
        locked_rx.recv().unwrap();
        Self { release, thread }
    }

    /// Lets go; `false` if it had given up waiting to be told.
    fn release(self) -> bool {
        let _ = self.release.send(());
        self.thread.join().unwrap()
    }
}

/// Another process holds the session's lock: an append and a load wait for it on blocking
/// threads, while the task's own (only) thread goes on running everything else.
#[tokio::test(flavor = "current_thread")]
async fn calls_meeting_a_held_lock_wait_off_the_tasks_thread() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::connect(dir.path()).await.unwrap();
    storage.append("s", &turn("before")).await.unwrap();
    let holder = Holder::lock(dir.path());
    let appending = tokio::spawn({
        let storage = storage.clone();
        async move { storage.append("s", &turn("waited")).await }
    });
    let loading = tokio::spawn({
        let storage = storage.clone();
        async move { storage.load("s").await }
    });
    // A timer fires only while this thread is free.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !appending.is_finished(),
        "the append did not wait for the lock"
    );
    assert!(!loading.is_finished(), "the load did not wait for the lock");
    assert!(
        holder.release(),
        "a call held the runtime's thread until the lock holder gave up"
    );
    appending.await.unwrap().unwrap();
    let loaded = loading.await.unwrap().unwrap();
    let mut expected = turn("before");
    expected.extend(turn("waited"));
    assert!(
        loaded == turn("before") || loaded == expected,
        "a load sees a whole append or none: {loaded:?}"
    );
    assert_eq!(storage.load("s").await.unwrap(), expected);
}

/// Appends made inline await nothing; a task appending in a loop must still let the other
/// tasks of a single-threaded runtime run.
#[tokio::test(flavor = "current_thread")]
async fn a_task_appending_in_a_loop_lets_other_tasks_run() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::connect(dir.path()).await.unwrap();
    storage.append("s", &turn("first")).await.unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = Arc::clone(&ticks);
        async move {
            loop {
                ticks.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    for i in 0..1_000 {
        storage.append("s", &turn(&format!("{i}"))).await.unwrap();
    }
    let ran = ticks.load(Ordering::Relaxed);
    ticker.abort();
    assert!(ran > 0, "the other task never ran during 1,000 appends");
    assert_eq!(storage.load("s").await.unwrap().len(), 2_002);
}

/// With inline calls off, or for an append too big to be made inline, every append still
/// lands whole and in order, beside inline ones to the same directory; loads of a
/// session too long to be read inline read it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_and_blocking_appends_share_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let inline = FileSystemStorage::connect(dir.path()).await.unwrap();
    let blocking =
        FileSystemStorage::connect_with(dir.path(), FileSystemOptions::new().inline_calls(false))
            .await
            .unwrap();
    let big = "x".repeat(20 * 1024);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let storage = if w % 2 == 0 { &inline } else { &blocking }.clone();
            let big = big.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let text = if i % 25 == 0 {
                        big.clone()
                    } else {
                        format!("{w}-{i}")
                    };
                    storage.append("s", &turn(&text)).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let loaded = inline.load("s").await.unwrap();
    assert_eq!(loaded.len(), 800);
    for w in 0..4 {
        let mine: Vec<_> = loaded
            .chunks(2)
            .map(|pair| pair[0].content.clone())
            .filter(|text| text.starts_with(&format!("{w}-")))
            .collect();
        let expected: Vec<_> = (0..100)
            .filter(|i| i % 25 != 0)
            .map(|i| format!("{w}-{i}?"))
            .collect();
        assert_eq!(mine, expected, "writer {w} in its order");
    }
    let info = blocking.session_info("s").await.unwrap().unwrap();
    assert_eq!(info.message_count, 800);
    assert_eq!(blocking.load("s").await.unwrap(), loaded);
}

/// The common append and a short load need no blocking thread: with the runtime's only
/// one taken, they still complete, and with inline calls off they wait for it.
#[test]
fn the_common_calls_need_no_blocking_thread_unless_inline_calls_are_off() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let inline = FileSystemStorage::connect(dir.path()).await.unwrap();
        let blocking = FileSystemStorage::connect_with(
            dir.path(),
            FileSystemOptions::new().inline_calls(false),
        )
        .await
        .unwrap();
        inline.append("s", &turn("first")).await.unwrap();

        let (release, released) = mpsc::channel::<()>();
        let taken = tokio::task::spawn_blocking(move || {
            released.recv_timeout(Duration::from_secs(60)).is_ok()
        });
        // Bounded so a regression fails instead of hanging; not a timing assertion.
        let patience = Duration::from_secs(60);
        tokio::time::timeout(patience, inline.append("s", &turn("inline")))
            .await
            .expect("the inline append waited for the blocking thread")
            .unwrap();
        let loaded = tokio::time::timeout(patience, inline.load("s"))
            .await
            .expect("the inline load waited for the blocking thread")
            .unwrap();
        assert_eq!(loaded.len(), 4);
        // The conditional append an agent's session makes.
        let (_, revision) = inline.load_revision("s").await.unwrap();
        let expected = Expect::Generation(revision.generation);
        let turn_two = turn("conditional");
        let generation = tokio::time::timeout(
            patience,
            inline.write_if("s", expected, Change::Append(&turn_two)),
        )
        .await
        .expect("the inline conditional append waited for the blocking thread")
        .unwrap();
        assert_eq!(generation, revision.generation);
        let stale = Expect::Generation(revision.generation + 1);
        let refused = inline.write_if("s", stale, Change::Append(&turn_two)).await;
        assert!(
            matches!(refused, Err(Error::Conflict { .. })),
            "{refused:?}"
        );

        let waiting = tokio::spawn(async move { blocking.append("s", &turn("queued")).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "with inline calls off, the append needs the blocking thread"
        );
        release.send(()).unwrap();
        assert!(
            taken.await.unwrap(),
            "the blocking thread was released in time"
        );
        waiting.await.unwrap().unwrap();
        assert_eq!(inline.load("s").await.unwrap().len(), 8);
    });
}
