//! Special files where a session's regular files belong: a FIFO (named pipe), a directory,
//! a socket, or a symlink to a FIFO or to `/dev/null`; and a symlink to any file where the
//! backend keeps a file of its own (lock, metadata, temporary and index files). Every call
//! returns at once; those that need the file fail with `Error::Corrupt` naming it, and
//! none replaces, removes or writes through it.
#![cfg(unix)]

use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fusion_core::testkit::{all_pages, said};
use fusion_core::{
    Change, ConversationStorage, Error, Expect, MetaUpdate, SessionMeta, SessionQuery,
};
use fusion_storage_fs::{FileSystemOptions, FileSystemStorage};

/// The session given a special file.
const ID: &str = "abc";

/// How long a call may run before it counts as hung: generous, for a loaded CI machine.
/// A hang detector, not a timing assertion.
const HANG: Duration = Duration::from_secs(30);

/// Runs `call` on a clone of `storage` in a task of its own (a call blocked on the task's
/// own thread, where inline calls run, would block a timeout there too) and returns its
/// result. A call still running after [`HANG`] is stuck in a system call nothing can
/// cancel, which dropping the runtime would wait for: the test binary exits instead, so
/// that CI fails rather than hangs.
async fn promptly<T, F>(
    storage: &FileSystemStorage,
    what: &str,
    call: impl FnOnce(FileSystemStorage) -> F,
) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::time::timeout(HANG, tokio::spawn(call(storage.clone()))).await {
        Ok(done) => done.expect("the call panicked"),
        Err(_) => {
            // Past the test harness's capture of `eprintln!`, which the exit would lose.
            let _ = writeln!(std::io::stderr(), "`{what}` hung on a special file");
            std::process::exit(1);
        }
    }
}

/// `promptly(&storage, "s.load(ID).await", ...)` for `promptly!(storage, |s| s.load(ID).await)`.
macro_rules! promptly {
    ($storage:expr, |$s:ident| $call:expr) => {
        promptly(&$storage, stringify!($call), move |$s| async move { $call }).await
    };
}

/// What stands where a regular file belongs.
#[derive(Debug, Clone, Copy)]
enum Special {
    Fifo,
    Directory,
    Socket,
    LinkToFifo,
    LinkToDevNull,
    /// A symlink to a person's regular file outside the directory: followed where the
    /// session's data file belongs, refused where a file of the backend's own does.
    LinkToRegular,
}

const EVERY_KIND: [Special; 5] = [
    Special::Fifo,
    Special::Directory,
    Special::Socket,
    Special::LinkToFifo,
    Special::LinkToDevNull,
];

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.unwrap().success(), "mkfifo {}", path.display());
}

/// Puts a `kind` at `path` in place of the file there, if any.
fn put(kind: Special, path: &Path) {
    let _ = std::fs::remove_file(path);
    match kind {
        Special::Fifo => mkfifo(path),
        Special::Directory => std::fs::create_dir(path).unwrap(),
        Special::Socket => drop(std::os::unix::net::UnixListener::bind(path).unwrap()),
        Special::LinkToFifo => {
            let target = path.with_file_name("elsewhere.fifo");
            mkfifo(&target);
            std::os::unix::fs::symlink(target, path).unwrap();
        }
        Special::LinkToDevNull => std::os::unix::fs::symlink("/dev/null", path).unwrap(),
        Special::LinkToRegular => {
            let target = outside(path);
            std::fs::write(&target, PRECIOUS).unwrap();
            std::os::unix::fs::symlink(target, path).unwrap();
        }
    }
}

/// What the file a [`Special::LinkToRegular`] names holds, and must still hold.
const PRECIOUS: &str = "a person's notes, which no session call may touch\n";

/// The file beside the directory `sessions` that a link at `path` (inside it) names.
fn outside(path: &Path) -> PathBuf {
    let sessions = path.ancestors().find(|dir| dir.ends_with("sessions"));
    let name = path.file_name().unwrap().to_string_lossy();
    let name = format!("precious-{}", name.trim_start_matches('.'));
    sessions.expect("a path in sessions/").with_file_name(name)
}

/// Asserts that `path` still holds the `kind` [`put`] put there.
fn assert_left(kind: Special, path: &Path, after: &str) {
    let found = std::fs::symlink_metadata(path)
        .unwrap_or_else(|err| panic!("{} is gone after {after}: {err}", path.display()))
        .file_type();
    let followed = std::fs::metadata(path).unwrap().file_type();
    let left = match kind {
        Special::Fifo => found.is_fifo(),
        Special::Directory => found.is_dir(),
        Special::Socket => found.is_socket(),
        Special::LinkToFifo => found.is_symlink() && followed.is_fifo(),
        Special::LinkToDevNull => found.is_symlink() && followed.is_char_device(),
        Special::LinkToRegular => {
            let target = std::fs::read_to_string(outside(path)).unwrap();
            assert_eq!(
                target,
                PRECIOUS,
                "written through {} by {after}",
                path.display()
            );
            found.is_symlink() && followed.is_file()
        }
    };
    assert!(
        left,
        "{} is no longer a {kind:?} after {after}",
        path.display()
    );
}

/// Asserts that `err` is the refusal of the file at `path` of session [`ID`].
fn assert_refused(err: Error, path: &Path, after: &str) {
    assert!(!err.is_retryable(), "{after}: {err}");
    match err {
        Error::Corrupt {
            backend: "fs",
            session_id,
            detail,
        } => {
            assert_eq!(session_id, ID, "{after}");
            let named = detail.starts_with(&path.display().to_string());
            assert!(
                named && detail.contains("not a regular file"),
                "{after}: {detail}"
            );
            assert!(detail.contains("move it aside"), "{after}: {detail}");
        }
        other => panic!("{after}: expected Corrupt, got {other:?}"),
    }
}

/// Asserts that every call on session [`ID`] fails at once with the refusal of the `kind`
/// at `path`, and leaves it there.
async fn assert_every_call_refused(storage: &FileSystemStorage, kind: Special, path: &Path) {
    let refusals = [
        ("load", promptly!(storage, |s| s.load(ID).await.map(drop))),
        (
            "load_revision",
            promptly!(storage, |s| s.load_revision(ID).await.map(drop)),
        ),
        (
            "append",
            promptly!(storage, |s| s.append(ID, &said("more")).await),
        ),
        (
            "save",
            promptly!(storage, |s| s.save(ID, &said("new")).await),
        ),
        ("truncate", promptly!(storage, |s| s.truncate(ID, 1).await)),
        (
            "write_if",
            promptly!(storage, |s| {
                let change = Change::Append(&said("if"));
                s.write_if(ID, Expect::Generation(0), change)
                    .await
                    .map(drop)
            }),
        ),
        (
            "session_info",
            promptly!(storage, |s| s.session_info(ID).await.map(drop)),
        ),
        (
            "update_session",
            promptly!(storage, |s| {
                let update = MetaUpdate::new().title(Some("t"));
                s.update_session(ID, &update).await.map(drop)
            }),
        ),
        (
            "create_session",
            promptly!(storage, |s| {
                let meta = SessionMeta::new().owner("u");
                s.create_session(ID, &meta, &said("hi")).await.map(drop)
            }),
        ),
        ("delete", promptly!(storage, |s| s.delete(ID).await)),
    ];
    for (call, result) in refusals {
        let after = format!("{call} with {kind:?}");
        assert_refused(result.expect_err(&after), path, &after);
        assert_left(kind, path, &after);
    }
}

/// Storage in `dir` with sessions [`ID`] and `good`, both owned by `u`.
async fn two_sessions(dir: &Path, options: FileSystemOptions) -> FileSystemStorage {
    let storage = FileSystemStorage::connect_with(dir, options).await.unwrap();
    let meta = SessionMeta::new().owner("u");
    for id in [ID, "good"] {
        storage.create_session(id, &meta, &said(id)).await.unwrap();
    }
    storage
}

fn options() -> [FileSystemOptions; 2] {
    [
        FileSystemOptions::new(),
        FileSystemOptions::new().inline_calls(false),
    ]
}

fn path_of(storage: &FileSystemStorage, name: &str) -> PathBuf {
    storage.dir().join(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_special_file_for_a_session_file_is_refused_by_every_call_and_left_in_place() {
    for options in options() {
        for kind in EVERY_KIND {
            let tmp = tempfile::tempdir().unwrap();
            let storage = two_sessions(tmp.path(), options.clone()).await;
            let data = storage.session_path(ID).unwrap();
            put(kind, &data);
            assert_every_call_refused(&storage, kind, &data).await;

            // Listings skip it, as they skip any file that is no session's, and show the
            // other session; a purge passes it by.
            let listed = promptly!(storage, |s| s.list_sessions().await).unwrap();
            assert_eq!(listed, ["good"], "{kind:?}");
            for query in [SessionQuery::new(), SessionQuery::new().owner("u")] {
                let page = promptly!(storage, |s| all_pages(&s, query).await);
                assert_eq!(page, ["good"], "{kind:?}");
            }
            assert_eq!(
                promptly!(storage, |s| s.purge_expired(10).await).unwrap(),
                0
            );
            assert_left(kind, &data, "the listings");
            assert_eq!(storage.load("good").await.unwrap(), said("good"));

            // Moved aside, as the error says, it leaves a session that can be written.
            std::fs::rename(&data, tmp.path().join("aside")).unwrap();
            storage.append(ID, &said("again")).await.unwrap();
            assert_eq!(storage.load(ID).await.unwrap(), said("again"), "{kind:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_named_like_a_session_of_an_empty_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    let data = storage.session_path(ID).unwrap();
    mkfifo(&data);
    assert_every_call_refused(&storage, Special::Fifo, &data).await;
    let listed = promptly!(storage, |s| s.list_sessions().await).unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_for_the_lock_file_is_refused_by_every_call_and_left_in_place() {
    for options in options() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = two_sessions(tmp.path(), options).await;
        let lock = path_of(&storage, ".abc.lock");
        put(Special::Fifo, &lock);
        assert_every_call_refused(&storage, Special::Fifo, &lock).await;
        // Its data file is there: listed, for its own calls to report the damage.
        let mut listed = promptly!(storage, |s| s.list_sessions().await).unwrap();
        listed.sort();
        assert_eq!(listed, [ID, "good"]);
        let page = promptly!(storage, |s| all_pages(&s, SessionQuery::new()).await);
        assert_eq!(page, ["good"]);
        assert_left(Special::Fifo, &lock, "the listings");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_for_the_metadata_file_is_damaged_metadata() {
    for options in options() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = two_sessions(tmp.path(), options).await;
        let meta = path_of(&storage, ".abc.meta");
        put(Special::Fifo, &meta);
        // The messages need no metadata: they load and take writes.
        let loaded = promptly!(storage, |s| s.load(ID).await).unwrap();
        assert_eq!(loaded, said(ID));
        promptly!(storage, |s| s.append(ID, &said("more")).await).unwrap();
        promptly!(storage, |s| s.save(ID, &said("new")).await).unwrap();
        assert_eq!(storage.load(ID).await.unwrap(), said("new"));
        assert_left(Special::Fifo, &meta, "the writes");
        // What reads it reports it; listings leave the session out (and only it).
        let info = promptly!(storage, |s| s.session_info(ID).await);
        assert_refused(info.unwrap_err(), &meta, "session_info");
        let update = promptly!(storage, |s| {
            let update = MetaUpdate::new().title(Some("t"));
            s.update_session(ID, &update).await
        });
        assert_refused(update.unwrap_err(), &meta, "update_session");
        let page = promptly!(storage, |s| all_pages(&s, SessionQuery::new()).await);
        assert_eq!(page, ["good"]);
        let mut listed = promptly!(storage, |s| s.list_sessions().await).unwrap();
        listed.sort();
        assert_eq!(listed, [ID, "good"]);
        assert_left(Special::Fifo, &meta, "the reads");
        // Deleting the session clears it, as it clears damaged metadata.
        promptly!(storage, |s| s.delete(ID).await).unwrap();
        assert!(
            std::fs::symlink_metadata(&meta).is_err(),
            "removed with its session"
        );
        assert_eq!(storage.list_sessions().await.unwrap(), ["good"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_for_the_temporary_file_of_a_save_fails_it_and_keeps_the_session() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = two_sessions(tmp.path(), FileSystemOptions::new()).await;
    let temp = path_of(&storage, ".abc.tmp");
    put(Special::Fifo, &temp);
    // Opened for writing with no reader: the open itself fails, and is named for it.
    let saved = promptly!(storage, |s| s.save(ID, &said("new")).await);
    assert_refused(saved.unwrap_err(), &temp, "save");
    assert_left(Special::Fifo, &temp, "save");
    assert_eq!(
        storage.load(ID).await.unwrap(),
        said(ID),
        "the session is as it was"
    );
    storage.append(ID, &said("more")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_for_a_file_of_the_backends_own_is_refused_and_never_written_through() {
    for options in options() {
        // The lock file, which every call writes or locks.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sessions");
        let storage = two_sessions(&dir, options.clone()).await;
        let lock = path_of(&storage, ".abc.lock");
        put(Special::LinkToRegular, &lock);
        assert_every_call_refused(&storage, Special::LinkToRegular, &lock).await;
        std::fs::remove_file(&lock).unwrap();
        storage.append(ID, &said("again")).await.unwrap();

        // The temporary file of a save or truncate, which they would empty and fill.
        let temp = path_of(&storage, ".abc.tmp");
        put(Special::LinkToRegular, &temp);
        let before = storage.load(ID).await.unwrap();
        let saved = promptly!(storage, |s| s.save(ID, &said("new")).await);
        assert_refused(saved.unwrap_err(), &temp, "save");
        let truncated = promptly!(storage, |s| s.truncate(ID, 1).await);
        assert_refused(truncated.unwrap_err(), &temp, "truncate");
        assert_left(Special::LinkToRegular, &temp, "save and truncate");
        assert_eq!(
            storage.load(ID).await.unwrap(),
            before,
            "the session is as it was"
        );

        // The metadata's temporary file, and the metadata a creation writes in place.
        let meta_temp = path_of(&storage, ".abc.meta-tmp");
        put(Special::LinkToRegular, &meta_temp);
        let updated = promptly!(storage, |s| {
            let update = MetaUpdate::new().title(Some("t"));
            s.update_session(ID, &update).await
        });
        assert_refused(updated.unwrap_err(), &meta_temp, "update_session");
        assert_left(Special::LinkToRegular, &meta_temp, "update_session");
        let meta = path_of(&storage, ".fresh.meta");
        put(Special::LinkToRegular, &meta);
        let created = promptly!(storage, |s| {
            let meta = SessionMeta::new().owner("u");
            s.create_session("fresh", &meta, &said("hi")).await
        });
        match created.unwrap_err() {
            Error::Corrupt {
                session_id, detail, ..
            } => {
                assert_eq!(session_id, "fresh");
                assert!(detail.contains("symbolic link"), "{detail}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_left(Special::LinkToRegular, &meta, "create_session");
        assert!(storage.load("fresh").await.unwrap().is_empty());
        let left = path_of(&storage, "fresh.jsonl");
        assert!(!left.exists(), "a failed creation leaves no session file");

        // The index's files, which a creation writes in place (an instance that opened
        // them already keeps its handles: a new one opens them).
        for name in ["lock", "ids-log"] {
            let file = dir.join(".fusion-index").join(name);
            put(Special::LinkToRegular, &file);
            let storage = FileSystemStorage::connect_with(&dir, options.clone())
                .await
                .unwrap();
            let created = promptly!(storage, |s| s.append("other", &said("hi")).await);
            let err = created.unwrap_err().to_string();
            assert!(
                err.contains(&file.display().to_string()) && err.contains("symbolic link"),
                "{err}"
            );
            assert_left(Special::LinkToRegular, &file, "a creation");
            std::fs::remove_file(&file).unwrap();
        }
    }
}

/// Found by a review: the index's markers (owner, tag, expiry) were opened following a
/// symbolic link at their path, with `O_CREAT`: a link there naming a file that did not
/// exist made a creation create that file wherever the link pointed, outside the
/// directory. A marker is refused as any file of the backend's own is, and nothing is
/// created through the link.
#[tokio::test]
async fn a_symlink_for_a_marker_creates_nothing_where_it_points() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let storage = FileSystemStorage::connect(&dir).await.unwrap();
    let meta = SessionMeta::new().owner("u");
    storage
        .create_session("first", &meta, &said("hi"))
        .await
        .unwrap();
    let marker = dir.join(".fusion-index/owner/u/fresh");
    let target = tmp.path().join("made-through-a-link");
    std::os::unix::fs::symlink(&target, &marker).unwrap();
    let created = storage.create_session("fresh", &meta, &said("hi")).await;
    assert!(!target.exists(), "created through the link: {created:?}");
    let err = created.unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    assert!(storage.load("fresh").await.unwrap().is_empty());
}

/// Found by a review: a rebuild of the index that met a symbolic link at a session's
/// marker failed, and with it every listing after it, for all sessions. The build leaves
/// that session out with a warning, as a damaged one, and lists the others.
#[tokio::test]
async fn a_symlink_for_a_marker_leaves_its_session_alone_out_of_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let storage = FileSystemStorage::connect(&dir).await.unwrap();
    for id in ["linked", "plain"] {
        let meta = SessionMeta::new().owner("u");
        storage
            .create_session(id, &meta, &said("hi"))
            .await
            .unwrap();
    }
    let marker = dir.join(".fusion-index/owner/u/linked");
    std::fs::remove_file(&marker).unwrap();
    let target = tmp.path().join("made-through-a-link");
    std::os::unix::fs::symlink(&target, &marker).unwrap();
    promptly!(storage, |s| s.rebuild_index().await).unwrap();
    assert!(!target.exists());
    let listed = promptly!(storage, |s| all_pages(&s, SessionQuery::new()).await);
    assert!(listed.contains(&"plain".to_string()), "{listed:?}");
}
