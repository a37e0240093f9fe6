//! The times a session copied from elsewhere keeps ([`SessionTimes`]), given to
//! [`ConversationStorage::create_session_with_times`](crate::ConversationStorage::create_session_with_times):
//! how `fusion migrate` and `fusion sessions import` give a copy its source's dates, so
//! listings keep their order and a session's age survives a move to another backend.

use std::time::SystemTime;

use crate::retention::LATEST_MICROS;
use crate::{Error, Result, SessionInfo, unix_micros};

/// When a session was created and last written.
///
/// A backend stores them as it stores its own times (whole microseconds; SQLite and
/// Redis whole milliseconds), never later than its own clock ([`stored_at`](Self::stored_at)).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use fusion_core::SessionTimes;
///
/// let created = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let times = SessionTimes::new(created, created + Duration::from_secs(60));
/// times.validate()?;
/// assert!(SessionTimes::new(created + Duration::from_secs(1), created).validate().is_err());
/// # Ok::<(), fusion_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    /// When the session was first written.
    pub created_at: SystemTime,
    /// When the session was last written (messages or metadata); an idle expiry counts
    /// from it.
    pub updated_at: SystemTime,
}

impl SessionTimes {
    /// Created at `created_at`, last written at `updated_at`.
    pub fn new(created_at: SystemTime, updated_at: SystemTime) -> Self {
        Self {
            created_at,
            updated_at,
        }
    }

    /// The times `info` reports, when it reports both (a backend that keeps no times
    /// reports neither).
    pub fn of(info: &SessionInfo) -> Option<Self> {
        Some(Self::new(info.created_at?, info.updated_at?))
    }

    /// Checks the times, returning [`Error::InvalidMeta`]: each between the Unix epoch
    /// and the year 9999, to the microsecond, and the creation no later than the last
    /// write.
    pub fn validate(&self) -> Result<()> {
        let (created, updated) = (unix_micros(self.created_at), unix_micros(self.updated_at));
        for (name, micros) in [("created_at", created), ("updated_at", updated)] {
            if !(0..=LATEST_MICROS).contains(&micros) {
                return Err(Error::InvalidMeta(format!(
                    "{name} is {micros} µs from the Unix epoch; it must lie between the \
                     epoch and the year 9999"
                )));
            }
        }
        if created > updated {
            return Err(Error::InvalidMeta(format!(
                "created_at ({created} µs from the Unix epoch) is later than updated_at \
                 ({updated} µs); a session is created before it is last written"
            )));
        }
        Ok(())
    }

    /// The creation and last write a backend whose clock reads `now` (microseconds since
    /// the Unix epoch) stores, in microseconds: each at most `now`. A time later than the
    /// storage's clock (the copy's source ran on a machine whose clock is ahead) is
    /// stored as the write's own time, so a later write never moves `updated_at` back
    /// and a session is never listed ahead of every write still to come.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use fusion_core::SessionTimes;
    ///
    /// let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
    /// assert_eq!(SessionTimes::new(at(10), at(20)).stored_at(30_000_000), (10_000_000, 20_000_000));
    /// assert_eq!(SessionTimes::new(at(10), at(40)).stored_at(30_000_000), (10_000_000, 30_000_000));
    /// ```
    pub fn stored_at(&self, now: i64) -> (i64, i64) {
        let clamp = |at: SystemTime| unix_micros(at).min(now);
        (clamp(self.created_at), clamp(self.updated_at))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn times_outside_the_range_or_out_of_order_are_refused_by_name() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        let cases = [
            (SessionTimes::new(at(2), at(1)), "later than updated_at"),
            (
                SessionTimes::new(UNIX_EPOCH - Duration::from_secs(1), at(1)),
                "created_at is -1000000 µs",
            ),
            (
                SessionTimes::new(at(1), at(300_000_000_000)),
                "updated_at is 300000000000000000 µs",
            ),
        ];
        for (times, said) in cases {
            let err = times.validate().unwrap_err().to_string();
            assert!(err.contains(said), "{err}");
        }
        SessionTimes::new(at(1), at(1)).validate().unwrap();
    }

    #[test]
    fn a_session_info_gives_its_times_only_when_it_has_both() {
        let mut info = SessionInfo::new("s", 1);
        assert_eq!(SessionTimes::of(&info), None);
        info.created_at = Some(UNIX_EPOCH);
        assert_eq!(SessionTimes::of(&info), None);
        info.updated_at = Some(UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(
            SessionTimes::of(&info),
            Some(SessionTimes::new(
                UNIX_EPOCH,
                UNIX_EPOCH + Duration::from_secs(1)
            ))
        );
    }
}
