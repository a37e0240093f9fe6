//! A turn's opening whose write applied although the storage answered a conflict: what
//! a `RetryLayer` answers when an attempt applied, its reply was lost, another writer
//! changed the session, and the read that should have settled it failed too (found by
//! `fusion-stress --faults` on PostgreSQL, where the user message was stored twice).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use common::{builder, client, contents};
use fusion_agent::testing::MockLlmServer;
use fusion_core::{Change, ConversationStorage, Expect, Intercept, Intercepted, Result, Revision};
use fusion_storage_memory::InMemoryStorage;

/// Applies every conditional write; the first one armed then answers a conflict, as if
/// nothing had been written.
struct AppliedYetConflict {
    inner: InMemoryStorage,
    armed: AtomicBool,
}

#[async_trait]
impl Intercept for AppliedYetConflict {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        let generation = self.inner.write_if(session_id, expected, change).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(
                Expect::Exactly(Revision::ABSENT).conflict("memory", session_id, generation, None)
            );
        }
        Ok(generation)
    }
}

#[tokio::test]
async fn an_opening_stored_by_an_attempt_reported_as_a_conflict_is_not_stored_again() {
    let server = MockLlmServer::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let storage = Arc::new(Intercepted(AppliedYetConflict {
        inner: InMemoryStorage::new(),
        armed: AtomicBool::new(false),
    }));
    let mut session = builder(Arc::new(client(&server)), storage.clone(), workspace.path())
        .build()
        .await
        .unwrap();
    server.push_text("first answer");
    session.send_message("first").await.unwrap();

    storage.0.armed.store(true, Ordering::SeqCst);
    server.push_text("second answer");
    let result = session.send_message("second").await.unwrap();
    assert_eq!(result.result, "second answer");
    let stored = storage.load(common::SESSION).await.unwrap();
    assert_eq!(
        contents(&stored)[1..],
        ["first", "first answer", "second", "second answer"]
    );
    assert_eq!(session.history(), stored.as_slice());
}

/// Makes the first `conflicts` conditional writes meet another writer's rewrite of the
/// session (a genuine conflict, nothing written), then applies the next one and answers
/// a conflict, as `AppliedYetConflict` does.
struct RewrittenThenApplied {
    inner: InMemoryStorage,
    conflicts: std::sync::atomic::AtomicUsize,
    armed: AtomicBool,
}

#[async_trait]
impl Intercept for RewrittenThenApplied {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        if !self.armed.load(Ordering::SeqCst) {
            return self.inner.write_if(session_id, expected, change).await;
        }
        let left = self.conflicts.load(Ordering::SeqCst);
        if left > 0 {
            self.conflicts.store(left - 1, Ordering::SeqCst);
            let (history, revision) = self.inner.load_revision(session_id).await?;
            let theirs = Expect::Generation(revision.generation);
            self.inner
                .write_if(session_id, theirs, Change::Rewrite(&history))
                .await?;
            return self.inner.write_if(session_id, expected, change).await;
        }
        self.armed.store(false, Ordering::SeqCst);
        let generation = self.inner.write_if(session_id, expected, change).await?;
        Err(Expect::Exactly(Revision::ABSENT).conflict("memory", session_id, generation, None))
    }
}

#[tokio::test]
async fn an_opening_stored_by_its_last_attempt_reported_as_a_conflict_is_not_an_error() {
    let server = MockLlmServer::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let storage = Arc::new(Intercepted(RewrittenThenApplied {
        inner: InMemoryStorage::new(),
        conflicts: std::sync::atomic::AtomicUsize::new(2),
        armed: AtomicBool::new(false),
    }));
    let mut session = builder(Arc::new(client(&server)), storage.clone(), workspace.path())
        .build()
        .await
        .unwrap();
    server.push_text("first answer");
    session.send_message("first").await.unwrap();

    storage.0.armed.store(true, Ordering::SeqCst);
    server.push_text("second answer");
    let result = session.send_message("second").await.unwrap();
    assert_eq!(result.result, "second answer");
    let stored = storage.load(common::SESSION).await.unwrap();
    assert_eq!(
        contents(&stored)[1..],
        ["first", "first answer", "second", "second answer"]
    );
    assert_eq!(session.history(), stored.as_slice());
}

/// Applies every conditional write; the first one armed then fails with a retryable
/// error, as a `RetryLayer` answers when it cannot tell whether a write applied.
struct AppliedYetUnknown {
    inner: InMemoryStorage,
    armed: AtomicBool,
}

#[async_trait]
impl Intercept for AppliedYetUnknown {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        let generation = self.inner.write_if(session_id, expected, change).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(fusion_core::Error::Backend {
                backend: "memory",
                message: "whether this write applied is unknown".into(),
                retryable: true,
                source: None,
            });
        }
        Ok(generation)
    }
}

#[tokio::test]
async fn an_opening_stored_by_an_attempt_whose_outcome_was_unknown_goes_on() {
    let server = MockLlmServer::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let storage = Arc::new(Intercepted(AppliedYetUnknown {
        inner: InMemoryStorage::new(),
        armed: AtomicBool::new(false),
    }));
    let mut session = builder(Arc::new(client(&server)), storage.clone(), workspace.path())
        .build()
        .await
        .unwrap();
    server.push_text("first answer");
    session.send_message("first").await.unwrap();

    storage.0.armed.store(true, Ordering::SeqCst);
    server.push_text("second answer");
    let result = session.send_message("second").await.unwrap();
    assert_eq!(result.result, "second answer");
    let stored = storage.load(common::SESSION).await.unwrap();
    assert_eq!(
        contents(&stored)[1..],
        ["first", "first answer", "second", "second answer"]
    );
    assert_eq!(session.history(), stored.as_slice());
}
