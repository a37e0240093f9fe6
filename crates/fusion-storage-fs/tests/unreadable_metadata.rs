//! Listings of a directory where one session's metadata file, or its file, cannot be read
//! (an I/O error, not damage): the others are listed all the same.
#![cfg(unix)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fusion_core::testkit::{all_pages, said};
use fusion_core::{ConversationStorage, Error, Expiry, SessionMeta, SessionOrder, SessionQuery};
use fusion_storage_fs::FileSystemStorage;

/// Replaces the file at `path` with a symbolic link to itself, which no open gets past
/// (`ELOOP`, an I/O error, not damage); returns what it held.
fn loop_in_place_of(path: &Path) -> Vec<u8> {
    let held = std::fs::read(path).unwrap();
    std::fs::remove_file(path).unwrap();
    std::os::unix::fs::symlink(path, path).unwrap();
    held
}

/// The ids of every page of `query`.
async fn listed(storage: &FileSystemStorage, query: SessionQuery) -> Vec<String> {
    let mut ids = all_pages(storage, query.limit(1)).await;
    ids.sort();
    ids
}

/// Found by a review: one session whose metadata file could not be read failed every
/// listing that read its facts (newest first, by id, by owner) and `rebuild_index`,
/// hiding every other session; and one whose counters were lost too, so that only that
/// file records its expiry, failed `list_sessions`. A purge already left such a session
/// out with a warning. Listings now leave it out as they leave out a damaged one, with a
/// warning, and a build of the index too (rebuilt once the file reads, it is listed
/// again); `list_sessions` keeps it, its expiry unknown, as it keeps one whose lock file
/// is damaged, its own calls reporting the error.
#[tokio::test]
async fn a_session_whose_metadata_file_cannot_be_read_hides_no_other_in_a_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let storage = FileSystemStorage::connect(&dir).await.unwrap();
    let owned = SessionMeta::new().owner("o");
    for id in ["a", "b"] {
        storage.create_session(id, &owned, &said(id)).await.unwrap();
    }
    // `c` has expired (a purge is due to remove it), and its counters are lost: its
    // metadata file alone records that.
    let expiring = owned
        .clone()
        .expiry(Expiry::At(SystemTime::now() - Duration::from_secs(60)));
    storage
        .create_session("c", &expiring, &said("c"))
        .await
        .unwrap();
    std::fs::write(dir.join(".c.lock"), "0000000000000042").unwrap();
    let held: Vec<_> = ["b", "c"]
        .map(|id| loop_in_place_of(&dir.join(format!(".{id}.meta"))))
        .into();
    let newest = || SessionQuery::new();
    let by_id = || SessionQuery::new().order(SessionOrder::Id);
    let by_owner = || SessionQuery::new().owner("o");

    for query in [newest(), by_id(), by_owner()] {
        assert_eq!(listed(&storage, query).await, ["a"]);
    }
    let err = storage.session_info("b").await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let mut ids = storage.list_sessions().await.unwrap();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"]);

    storage.rebuild_index().await.unwrap();
    for query in [newest(), by_id(), by_owner()] {
        assert_eq!(listed(&storage, query).await, ["a"]);
    }
    let mut ids = storage.list_sessions().await.unwrap();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"]);

    // Readable again, and the index rebuilt: every session is listed, but `c`, found
    // expired.
    for (id, held) in ["b", "c"].into_iter().zip(held) {
        let meta = dir.join(format!(".{id}.meta"));
        std::fs::remove_file(&meta).unwrap();
        std::fs::write(&meta, held).unwrap();
    }
    storage.rebuild_index().await.unwrap();
    for query in [newest(), by_id(), by_owner()] {
        assert_eq!(listed(&storage, query).await, ["a", "b"]);
    }
    let mut ids = storage.list_sessions().await.unwrap();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
}

/// Found by a review: one session file that could not be looked at (a symbolic link to
/// itself here; one into a directory this process may not read is another) failed
/// `list_sessions`, every listing and `rebuild_index`, hiding every other session. They
/// now leave it out with a warning, as they leave out a session whose metadata file
/// cannot be read; its own calls report the error, and once the file reads again it is
/// listed again.
#[tokio::test]
async fn a_session_whose_file_cannot_be_read_hides_no_other_in_a_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let storage = FileSystemStorage::connect(&dir).await.unwrap();
    let owned = SessionMeta::new().owner("o");
    for id in ["a", "b"] {
        storage.create_session(id, &owned, &said(id)).await.unwrap();
    }
    let held = loop_in_place_of(&dir.join("b.jsonl"));
    let queries = || {
        [
            SessionQuery::new(),
            SessionQuery::new().order(SessionOrder::Id),
            SessionQuery::new().owner("o"),
        ]
    };
    for rebuilt in [false, true] {
        if rebuilt {
            storage.rebuild_index().await.unwrap();
        }
        for query in queries() {
            assert_eq!(listed(&storage, query).await, ["a"], "rebuilt: {rebuilt}");
        }
        assert_eq!(storage.list_sessions().await.unwrap(), ["a"]);
    }
    let err = storage.load("b").await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");

    let path = dir.join("b.jsonl");
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, held).unwrap();
    storage.rebuild_index().await.unwrap();
    for query in queries() {
        assert_eq!(listed(&storage, query).await, ["a", "b"]);
    }
}

/// Found by a review: an index built while one session's file or metadata file could not
/// be read (an error that may pass: a file descriptor limit, a network file system, a
/// permission fixed later) was taken as holding every session. Once the file read again,
/// the session was still missing from listings by id (its id was in no file the build
/// wrote), and, where the index was built afresh (removed by hand, or never built), from
/// every listing (no journal line, no owner marker), until the index was rebuilt by hand.
/// Such a build now serves its own listing and notes the session; a listing that finds
/// its file reads again builds the index again, and until then none does (a second
/// review: the next listing, and every one after, built it again, each reading every
/// session, while the file stayed unreadable).
#[tokio::test]
async fn a_session_left_out_of_an_index_build_is_listed_once_its_file_reads_again() {
    let queries = || {
        [
            SessionQuery::new(),
            SessionQuery::new().order(SessionOrder::Id),
            SessionQuery::new().owner("o"),
        ]
    };
    for unreadable in [".b.meta", "b.jsonl"] {
        for index_removed in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("sessions");
            let storage = FileSystemStorage::connect(&dir).await.unwrap();
            let owned = SessionMeta::new().owner("o");
            for id in ["a", "b"] {
                storage.create_session(id, &owned, &said(id)).await.unwrap();
            }
            // `b`'s id merged into the sorted ids, out of the id log a build keeps.
            storage.rebuild_index().await.unwrap();
            let path = dir.join(unreadable);
            let held = loop_in_place_of(&path);
            if index_removed {
                std::fs::remove_dir_all(dir.join(".fusion-index")).unwrap();
            } else {
                storage.rebuild_index().await.unwrap();
            }
            let case = format!("{unreadable}, index removed: {index_removed}");
            // Built once while the file stays unreadable (a build reads every session),
            // not again by every page of every listing.
            let ids = dir.join(".fusion-index/ids");
            let built = || std::fs::metadata(&ids).unwrap().ino();
            let before = (!index_removed).then(built);
            for query in queries() {
                assert_eq!(listed(&storage, query).await, ["a"], "{case}");
            }
            let first = built();
            assert!(before.is_none_or(|before| before == first), "{case}");
            for query in queries() {
                assert_eq!(listed(&storage, query).await, ["a"], "{case}");
            }
            assert_eq!(
                built(),
                first,
                "{case}: built again though nothing reads again"
            );

            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, held).unwrap();
            for query in queries() {
                assert_eq!(listed(&storage, query).await, ["a", "b"], "{case}");
            }
        }
    }
}
