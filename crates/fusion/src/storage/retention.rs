//! Removing the sessions nobody has written for a while ([`purge_not_written_since`],
//! what `fusion sessions purge --older-than 30d` runs). Expired sessions go with
//! [`purge_all_expired`](fusion_core::purge_all_expired).

use std::time::SystemTime;

use fusion_core::{
    Change, ConversationStorage, Cursor, Error, Expect, Result, Revision, SessionInfo,
    SessionQuery, from_unix_micros, unix_micros,
};

/// Which sessions [`purge_not_written_since`] removes.
#[derive(Debug, Clone)]
pub struct StalePurge {
    /// Sessions last written strictly before this instant.
    pub before: SystemTime,
    /// Only this owner's sessions, if set.
    pub owner: Option<String>,
    /// Report what would be deleted, deleting nothing.
    pub dry_run: bool,
    /// How many sessions to read per page (1 to [`SessionQuery::MAX_LIMIT`]).
    pub page: usize,
}

impl StalePurge {
    /// Every session last written before `before`, a page of 500 at a time.
    pub fn before(before: SystemTime) -> Self {
        Self {
            before,
            owner: None,
            dry_run: false,
            page: 500,
        }
    }
}

/// What [`purge_not_written_since`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StalePurgeReport {
    /// Sessions deleted (or, in a dry run, that would be).
    pub deleted: usize,
    /// Sessions kept because someone wrote them between the listing and the delete.
    pub written_meanwhile: usize,
}

/// Deletes every session `purge` selects (last written before `purge.before`, of
/// `purge.owner` if set), calling `on_session` with each one before it goes.
///
/// Walks the newest-first listing from [`Cursor::updated_before`], a page at a time, so
/// it reads only the sessions it deletes. Each delete is conditional on the session being
/// exactly as listed and written last before the cutoff ([`Expect::UnwrittenSince`]): a
/// session written meanwhile, be it only a new title or tag, is kept and counted in
/// [`StalePurgeReport::written_meanwhile`], so nothing a writer just did is lost.
///
/// The cutoff is taken to the whole millisecond below `purge.before`, the coarsest
/// precision a bundled backend records instants at, so every backend draws the line at
/// the same instant.
pub async fn purge_not_written_since(
    storage: &dyn ConversationStorage,
    purge: &StalePurge,
    mut on_session: impl FnMut(&SessionInfo),
) -> Result<StalePurgeReport> {
    let cutoff = whole_millisecond_below(purge.before);
    let mut query = SessionQuery::new()
        .limit(purge.page)
        .after(Some(Cursor::updated_before(cutoff)));
    if let Some(owner) = &purge.owner {
        query = query.owner(owner.clone());
    }
    let mut report = StalePurgeReport::default();
    loop {
        let page = storage.list_page(&query).await?;
        for info in &page.sessions {
            if purge.dry_run {
                on_session(info);
                report.deleted += 1;
                continue;
            }
            let unwritten = Expect::UnwrittenSince {
                revision: Revision {
                    generation: info.generation,
                    len: info.message_count,
                },
                since: cutoff,
            };
            match storage
                .write_if(&info.id, unwritten, Change::Truncate(0))
                .await
            {
                Ok(_) => {
                    on_session(info);
                    report.deleted += 1;
                }
                Err(Error::Conflict { .. }) => report.written_meanwhile += 1,
                Err(err) => return Err(err),
            }
        }
        match page.next {
            Some(next) => query = query.after(Some(next)),
            None => return Ok(report),
        }
    }
}

/// `time` with its part below a millisecond dropped (towards the past, also before 1970).
/// Saturating: the earliest instants (`unix_micros` of one before -292,000 years) have no
/// whole millisecond in range below them, and a product that wrapped would be one in the
/// far future, before which every session was written.
fn whole_millisecond_below(time: SystemTime) -> SystemTime {
    from_unix_micros(unix_micros(time).div_euclid(1000).saturating_mul(1000))
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::time::Duration;

    use fusion_core::{
        ChatMessage, Expiry, Intercept, Intercepted, MetaUpdate, SessionMeta, SessionPage,
        SessionTimes,
    };
    use fusion_storage_memory::InMemoryStorage;

    use super::*;
    use fusion_core::purge_all_expired;

    #[tokio::test]
    async fn stale_sessions_go_and_fresh_or_rewritten_ones_stay() {
        let store = InMemoryStorage::new();
        let said = [ChatMessage::user("hi")];
        for id in ["old-a", "old-b", "old-c"] {
            let meta = SessionMeta::new().owner(if id == "old-c" { "bob" } else { "amy" });
            store.create_session(id, &meta, &said).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cutoff = SystemTime::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        store.append("new", &said).await.unwrap();

        let mut seen = Vec::new();
        let dry = StalePurge {
            dry_run: true,
            page: 1,
            ..StalePurge::before(cutoff)
        };
        let report = purge_not_written_since(&store, &dry, |i| seen.push(i.id.clone()))
            .await
            .unwrap();
        assert_eq!(report.deleted, 3);
        seen.sort();
        assert_eq!(seen, ["old-a", "old-b", "old-c"]);
        assert_eq!(store.list_sessions().await.unwrap().len(), 4, "dry run");

        let amy = StalePurge {
            owner: Some("amy".into()),
            ..StalePurge::before(cutoff)
        };
        let report = purge_not_written_since(&store, &amy, |_| {}).await.unwrap();
        assert_eq!(report.deleted, 2);
        let mut left = store.list_sessions().await.unwrap();
        left.sort();
        assert_eq!(left, ["new", "old-c"]);
    }

    #[tokio::test]
    async fn a_cutoff_before_every_millisecond_in_range_deletes_nothing() {
        let store = InMemoryStorage::new();
        store.append("s", &[ChatMessage::user("hi")]).await.unwrap();
        // Its microseconds saturate at -i64::MAX, whose millisecond below is out of range.
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(10_000_000_000_000);
        for dry_run in [true, false] {
            let purge = StalePurge {
                dry_run,
                ..StalePurge::before(before)
            };
            let report = purge_not_written_since(&store, &purge, |_| {})
                .await
                .unwrap();
            assert_eq!(report, StalePurgeReport::default(), "dry run: {dry_run}");
        }
        assert_eq!(store.list_sessions().await.unwrap(), ["s"]);
    }

    #[tokio::test]
    async fn expired_sessions_are_purged_batch_after_batch() {
        let store = InMemoryStorage::new();
        let soon = SessionMeta::new().expiry(Expiry::after(Duration::from_millis(1)));
        for i in 0..7 {
            let id = format!("s{i}");
            store
                .create_session(&id, &soon, &[ChatMessage::user("x")])
                .await
                .unwrap();
        }
        store
            .append("kept", &[ChatMessage::user("y")])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(purge_all_expired(&store, 3).await.unwrap(), 7);
        assert_eq!(store.list_sessions().await.unwrap(), ["kept"]);
        assert!(purge_all_expired(&store, 0).await.is_err());
    }

    /// Retitles session `old-b` each time the listing is read: a metadata-only write
    /// landing between the purge's listing and its delete.
    struct RetitlesAfterListing(InMemoryStorage);

    #[async_trait::async_trait]
    impl Intercept for RetitlesAfterListing {
        fn inner(&self) -> &dyn ConversationStorage {
            &self.0
        }

        async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
            let page = self.0.list_page(query).await?;
            let retitle = MetaUpdate::new().title(Some("still wanted"));
            self.0.update_session("old-b", &retitle).await?;
            Ok(page)
        }
    }

    #[tokio::test]
    async fn a_session_retitled_after_the_listing_is_kept() {
        // Its revision did not move, so the conditional delete alone removed it.
        let store = InMemoryStorage::new();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        for id in ["old-a", "old-b"] {
            let times = SessionTimes::new(long_ago, long_ago);
            let said = [ChatMessage::user("hi")];
            store
                .create_session_with_times(id, &SessionMeta::new(), &said, times)
                .await
                .unwrap();
        }
        let purging = Intercepted(RetitlesAfterListing(store.clone()));
        let cutoff = SystemTime::now() - Duration::from_secs(60);
        let report = purge_not_written_since(&purging, &StalePurge::before(cutoff), |_| {})
            .await
            .unwrap();
        let kept = StalePurgeReport {
            deleted: 1,
            written_meanwhile: 1,
        };
        assert_eq!(report, kept);
        assert_eq!(store.list_sessions().await.unwrap(), ["old-b"]);
    }
}
