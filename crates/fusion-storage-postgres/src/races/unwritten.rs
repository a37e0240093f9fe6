//! The interleavings of a delete conditional on the session's last write
//! (`Expect::UnwrittenSince`, what `fusion sessions purge --older-than` runs) with a
//! metadata update, which moves `updated_at` but not the revision: whichever takes the
//! session's row lock first, the other waits for it, so the update never lands between
//! the check of `updated_at` and the delete. Forced as in the parent module: a
//! transaction of the test's own holds the lock until the server reports the other side
//! waiting for it.

use std::time::Duration;

use fusion_core::testkit::{said, wait_past};
use fusion_core::{Change, ConversationStorage, Error, Expect, MetaUpdate, Revision};
use sqlx::Connection;

use super::{setup, until_blocked};
use crate::batch::Batch;
use crate::{update, write};

/// Stores session `s`, and returns the expectation of a purge that listed it and cuts
/// off just after its last write, with the clock already past that cutoff (so every
/// write from now on is a write since).
async fn listed_then_idle(storage: &crate::PostgresStorage) -> Expect {
    storage.append("s", &said("a")).await.unwrap();
    let info = storage.session_info("s").await.unwrap().unwrap();
    let since = info.updated_at.unwrap() + Duration::from_micros(1);
    wait_past(since).await;
    let revision = Revision {
        generation: info.generation,
        len: info.message_count,
    };
    Expect::UnwrittenSince { revision, since }
}

#[tokio::test]
async fn a_purge_waiting_behind_a_metadata_update_keeps_the_session() {
    let Some((harness, storage, racer, mut raw)) = setup().await else {
        return;
    };
    let unwritten = listed_then_idle(&storage).await;
    let mut retitle = raw.begin().await.unwrap();
    let row = update::lock_info(&mut retitle, "s").await.unwrap();
    assert!(row.is_some());
    let meta = fusion_core::SessionMeta::new().title("renamed meanwhile");
    update::store_meta(&mut retitle, "s", &meta).await.unwrap();
    let purge =
        tokio::spawn(async move { racer.write_if("s", unwritten, Change::Truncate(0)).await });
    until_blocked(&harness, 1).await;
    retitle.commit().await.unwrap();
    let err = purge.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("written since"), "{err}");
    let kept = storage.session_info("s").await.unwrap().unwrap();
    assert_eq!(kept.meta.title.as_deref(), Some("renamed meanwhile"));
    assert_eq!(storage.load("s").await.unwrap(), said("a"));
}

#[tokio::test]
async fn a_metadata_update_waiting_behind_a_purge_finds_no_session() {
    let Some((harness, storage, racer, mut raw)) = setup().await else {
        return;
    };
    let unwritten = listed_then_idle(&storage).await;
    let mut purge = raw.begin().await.unwrap();
    let none = Batch::of("s", &[]).unwrap();
    let done = write::conditional(&mut purge, "s", unwritten, Change::Truncate(0), &none)
        .await
        .unwrap();
    assert_eq!(done, Ok(0), "deleted, uncommitted");
    let retitle = tokio::spawn(async move {
        let title = MetaUpdate::new().title(Some("renamed meanwhile"));
        racer.update_session("s", &title).await
    });
    until_blocked(&harness, 1).await;
    purge.commit().await.unwrap();
    let updated = retitle.await.unwrap().unwrap();
    assert!(updated.is_none(), "{updated:?}");
    assert!(storage.session_info("s").await.unwrap().is_none());
    assert!(storage.load("s").await.unwrap().is_empty());
}
