//! When a session expires ([`Expiry`]) and how every backend stores, refreshes and checks
//! it ([`StoredExpiry`]).
//!
//! A session may carry one expiry, set in its [`SessionMeta`](crate::SessionMeta) when it
//! is created or later with a [`MetaUpdate`](crate::MetaUpdate):
//! - [`Expiry::At`] a fixed instant, whatever is written meanwhile;
//! - [`Expiry::Idle`] a span after the session's last write: every write (append, save,
//!   truncate, metadata update) pushes the expiry back.
//!
//! From the instant it expires a session is gone for every reader (`load`,
//! `session_info`, `list_sessions`, `list_page`) and every writer treats it as absent: an
//! append starts a fresh session with no metadata and a new generation. What is left of
//! it on disk is removed by
//! [`ConversationStorage::purge_expired`](crate::ConversationStorage::purge_expired) in
//! bounded batches; Redis removes it itself with native key expiry.
//!
//! Backends keep two numbers per session, both microseconds ([`StoredExpiry`]): the
//! instant it expires (indexed, so finding expired sessions reads only those) and, for an
//! idle expiry, the span to add at each write. Both come from the same clock reading as
//! the write's `updated_at`, so an idle session's `expires_at` is exactly its
//! `updated_at` plus the span.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{ConversationStorage, Error, Result, from_unix_micros, unix_micros};

/// The shortest idle span accepted.
pub const MIN_IDLE: Duration = Duration::from_millis(1);
/// The longest idle span accepted: a hundred years of 365 days.
pub const MAX_IDLE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// When a session expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expiry {
    /// At this instant (kept to the microsecond), whatever is written meanwhile.
    At(SystemTime),
    /// This long after the session's last write; every write pushes it back.
    Idle(Duration),
}

impl Expiry {
    /// Expires `span` from now: [`Expiry::At`] the current time plus `span`.
    ///
    /// A span too long for the system clock to add (`Duration::MAX`) gives an instant
    /// after the year 9999, which [`validate`](Self::validate) refuses, rather than a panic.
    pub fn after(span: Duration) -> Self {
        let beyond_latest = || UNIX_EPOCH + Duration::from_micros(LATEST_MICROS.unsigned_abs() + 1);
        Expiry::At(
            SystemTime::now()
                .checked_add(span)
                .unwrap_or_else(beyond_latest),
        )
    }

    /// Checks the expiry's range, returning [`Error::InvalidMeta`]: an instant between the
    /// Unix epoch and the year 9999, an idle span between [`MIN_IDLE`] and [`MAX_IDLE`].
    pub fn validate(&self) -> Result<()> {
        match *self {
            Expiry::At(at) => {
                let micros = unix_micros(at);
                if !(0..=LATEST_MICROS).contains(&micros) {
                    return Err(Error::InvalidMeta(format!(
                        "the expiry instant is {micros} µs from the Unix epoch; \
                         it must lie between the epoch and the year 9999"
                    )));
                }
            }
            Expiry::Idle(span) => {
                if !(MIN_IDLE..=MAX_IDLE).contains(&span) {
                    return Err(Error::InvalidMeta(format!(
                        "the idle expiry is {span:?}; it must lie between {MIN_IDLE:?} \
                         and {MAX_IDLE:?}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// 9999-12-31T23:59:59Z in microseconds since the Unix epoch.
pub(crate) const LATEST_MICROS: i64 = 253_402_300_799_000_000;

/// An expiry as a backend stores it: two nullable microsecond columns (or hash fields,
/// or numbers in a file), written by [`StoredExpiry::at_write`] on every write and read
/// back by [`StoredExpiry::expiry`].
///
/// ```
/// use std::time::Duration;
/// use fusion_core::{Expiry, StoredExpiry};
///
/// let idle = StoredExpiry::of(Some(&Expiry::Idle(Duration::from_secs(60))), 1_000_000);
/// assert_eq!(idle.expires_at, Some(61_000_000));
/// assert_eq!(idle.at_write(5_000_000).expires_at, Some(65_000_000), "a write pushes it back");
/// assert!(!idle.is_expired_at(60_999_999));
/// assert!(idle.is_expired_at(61_000_000));
/// assert_eq!(idle.expiry(), Some(Expiry::Idle(Duration::from_secs(60))));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredExpiry {
    /// When the session expires, in microseconds since the Unix epoch; `None`: never.
    pub expires_at: Option<i64>,
    /// For an idle expiry, the span in microseconds that each write adds to its time.
    pub idle: Option<i64>,
}

impl StoredExpiry {
    /// No expiry.
    pub const NEVER: StoredExpiry = StoredExpiry {
        expires_at: None,
        idle: None,
    };

    /// The stored form of `expiry` for a session written at `now` (microseconds).
    pub fn of(expiry: Option<&Expiry>, now: i64) -> Self {
        match expiry {
            None => Self::NEVER,
            Some(Expiry::At(at)) => StoredExpiry {
                expires_at: Some(unix_micros(*at)),
                idle: None,
            },
            Some(Expiry::Idle(span)) => {
                let idle = i64::try_from(span.as_micros()).unwrap_or(i64::MAX);
                StoredExpiry {
                    expires_at: Some(now.saturating_add(idle)),
                    idle: Some(idle),
                }
            }
        }
    }

    /// This expiry after a write at `now`: an idle expiry moves to `now` plus its span, a
    /// fixed one stays.
    pub fn at_write(self, now: i64) -> Self {
        match self.idle {
            Some(idle) => StoredExpiry {
                expires_at: Some(now.saturating_add(idle)),
                idle: Some(idle),
            },
            None => self,
        }
    }

    /// Whether a session with this expiry is gone at `now` (microseconds): it is from its
    /// expiry instant on.
    pub fn is_expired_at(&self, now: i64) -> bool {
        is_expired(self.expires_at, now)
    }

    /// The [`Expiry`] these numbers stand for.
    pub fn expiry(&self) -> Option<Expiry> {
        match (self.idle, self.expires_at) {
            (Some(idle), _) => Some(Expiry::Idle(Duration::from_micros(idle.max(0) as u64))),
            (None, Some(at)) => Some(Expiry::At(from_unix_micros(at))),
            (None, None) => None,
        }
    }

    /// When the session expires, as a time.
    pub fn expires_at_time(&self) -> Option<SystemTime> {
        self.expires_at.map(from_unix_micros)
    }
}

/// Whether a session that expires at `expires_at` (microseconds; `None`: never) is gone
/// at `now`.
pub fn is_expired(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_some_and(|at| at <= now)
}

/// Calls [`purge_expired`](ConversationStorage::purge_expired) with batches of `batch`
/// sessions until one comes back short, and returns how many sessions it deleted in all.
///
/// Each batch is bounded, so the storage is never held for long; run it from a periodic
/// job. Expired sessions are invisible to readers before this runs: it frees their space.
pub async fn purge_all_expired(storage: &dyn ConversationStorage, batch: usize) -> Result<usize> {
    let mut total = 0;
    loop {
        let purged = storage.purge_expired(batch).await?;
        total += purged;
        if purged < batch {
            return Ok(total);
        }
    }
}

/// The largest batch one [`purge_expired`](crate::ConversationStorage::purge_expired)
/// call accepts.
pub const MAX_PURGE_BATCH: usize = 10_000;

/// Checks a purge batch size: 1 to [`MAX_PURGE_BATCH`], else [`Error::InvalidMeta`].
pub fn check_purge_batch(batch: usize) -> Result<()> {
    if (1..=MAX_PURGE_BATCH).contains(&batch) {
        Ok(())
    } else {
        Err(Error::InvalidMeta(format!(
            "a purge batch of {batch} sessions; it must be 1 to {MAX_PURGE_BATCH}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_expiry_ignores_writes_and_round_trips() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let stored = StoredExpiry::of(Some(&Expiry::At(at)), 5);
        assert_eq!(stored.at_write(1_800_000_000_000_000), stored);
        assert_eq!(stored.expiry(), Some(Expiry::At(at)));
        assert_eq!(stored.expires_at_time(), Some(at));
        assert_eq!(StoredExpiry::of(None, 5), StoredExpiry::NEVER);
        assert!(!StoredExpiry::NEVER.is_expired_at(i64::MAX));
        assert_eq!(StoredExpiry::NEVER.expiry(), None);
    }

    #[test]
    fn ranges_are_checked() {
        assert!(Expiry::Idle(Duration::ZERO).validate().is_err());
        assert!(
            Expiry::Idle(MAX_IDLE + Duration::from_secs(1))
                .validate()
                .is_err()
        );
        assert!(Expiry::Idle(MIN_IDLE).validate().is_ok());
        assert!(
            Expiry::At(UNIX_EPOCH - Duration::from_secs(1))
                .validate()
                .is_err()
        );
        let far = UNIX_EPOCH + Duration::from_micros(LATEST_MICROS as u64 + 1);
        let err = Expiry::At(far).validate().unwrap_err();
        assert!(err.to_string().contains("9999"), "{err}");
        assert!(Expiry::after(Duration::from_secs(60)).validate().is_ok());
        // Too long for the clock to add: refused, not a panic.
        let err = Expiry::after(Duration::MAX).validate().unwrap_err();
        assert!(err.to_string().contains("9999"), "{err}");
        assert!(check_purge_batch(0).is_err());
        assert!(check_purge_batch(MAX_PURGE_BATCH + 1).is_err());
        assert!(check_purge_batch(100).is_ok());
    }
}
