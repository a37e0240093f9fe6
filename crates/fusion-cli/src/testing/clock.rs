//! [`ClockAhead`]: a test storage whose clock runs ahead of this process's, or behind it,
//! as far as a copy's times, expiry instants and facts go.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use fusion::ChatMessage;
use fusion::storage::{
    ConversationStorage, Expiry, Intercept, MetaUpdate, SessionInfo, SessionMeta, SessionTimes,
};

/// A storage (inside [`Intercepted`](fusion::storage::Intercepted)) whose clock reads
/// `ahead` later than this process's, as far as a copy's times, expiry instants and
/// facts go: times `T` (or an expiry instant `T`) it is given are stored as `T - ahead`,
/// which is what the inner storage, on a clock reading now, makes of `T` where the clock
/// reads now plus `ahead`: an expiry runs out `ahead` sooner than the source's clock
/// says. The facts it answers with carry its own clock's times, `ahead` later. Made
/// [`behind`](Self::behind), all of it the other way.
pub struct ClockAhead<S> {
    inner: S,
    ahead: Duration,
    behind: bool,
}

impl<S> ClockAhead<S> {
    /// `inner` with a clock `ahead` of this process's.
    pub fn new(inner: S, ahead: Duration) -> Self {
        Self {
            inner,
            ahead,
            behind: false,
        }
    }

    /// `inner` with a clock `behind` this process's.
    pub fn behind(inner: S, behind: Duration) -> Self {
        Self {
            inner,
            ahead: behind,
            behind: true,
        }
    }

    /// Time `time` of this storage's clock as the inner storage's clock reads it.
    fn to_inner(&self, time: SystemTime) -> SystemTime {
        if self.behind {
            time + self.ahead
        } else {
            time - self.ahead
        }
    }

    /// Time `time` of the inner storage's clock as this storage's clock reads it.
    fn to_own(&self, time: SystemTime) -> SystemTime {
        if self.behind {
            time - self.ahead
        } else {
            time + self.ahead
        }
    }

    /// `expiry` as the inner storage is given it: an instant on the inner storage's clock.
    fn stored_expiry(&self, expiry: Expiry) -> Expiry {
        match expiry {
            Expiry::At(at) => Expiry::At(self.to_inner(at)),
            other => other,
        }
    }

    /// The inner storage's facts of a session, on this storage's clock.
    fn on_own_clock(&self, mut info: SessionInfo) -> SessionInfo {
        for time in [
            &mut info.created_at,
            &mut info.updated_at,
            &mut info.expires_at,
        ] {
            *time = time.map(|time| self.to_own(time));
        }
        if let Some(Expiry::At(at)) = &mut info.meta.expiry {
            *at = self.to_own(*at);
        }
        info
    }
}

#[async_trait]
impl<S: ConversationStorage> Intercept for ClockAhead<S> {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> fusion::Result<u64> {
        let on_inner = SessionTimes::new(
            self.to_inner(times.created_at),
            self.to_inner(times.updated_at),
        );
        let mut meta = meta.clone();
        meta.expiry = meta.expiry.map(|expiry| self.stored_expiry(expiry));
        self.inner
            .create_session_with_times(session_id, &meta, messages, on_inner)
            .await
    }

    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> fusion::Result<Option<SessionInfo>> {
        let mut update = update.clone();
        update.expiry = update
            .expiry
            .map(|set| set.map(|expiry| self.stored_expiry(expiry)));
        let updated = self.inner.update_session(session_id, &update).await?;
        Ok(updated.map(|info| self.on_own_clock(info)))
    }

    async fn session_info(&self, session_id: &str) -> fusion::Result<Option<SessionInfo>> {
        let info = self.inner.session_info(session_id).await?;
        Ok(info.map(|info| self.on_own_clock(info)))
    }
}
