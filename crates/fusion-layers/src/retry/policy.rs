//! How often a [`RetryLayer`](super::RetryLayer) tries a call, and how long it waits
//! between attempts.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// How often and how long to wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) max_attempts: u32,
    pub(crate) first: Duration,
    pub(crate) max: Duration,
}

impl Policy {
    /// The pause after failed attempt `attempt` (1-based): `first * 2^(attempt-1)`, at
    /// most `max`, scaled by a random factor in [0.5, 1].
    pub(crate) fn pause(&self, attempt: u32) -> Duration {
        let full = self
            .first
            .saturating_mul(1 << (attempt - 1).min(20))
            .min(self.max);
        jittered(full, RandomState::new().hash_one(attempt))
    }
}

/// `full` scaled by a factor in [0.5, 1] that `random` picks (1,024 steps):
/// `(1023 + k) / 2046`, in integer nanoseconds: never above `full`, so any `Duration`
/// works. A float factor (`mul_f64`) rounded a pause near `Duration::MAX` up past it and
/// panicked, one pause in 1,024.
fn jittered(full: Duration, random: u64) -> Duration {
    const NANOS: u128 = 1_000_000_000;
    let nanos = full.as_nanos() * (1023 + u128::from(random % 1024)) / 2046;
    let secs = u64::try_from(nanos / NANOS).expect("at most `full`'s seconds");
    Duration::new(secs, (nanos % NANOS) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_maximum_with_jitter() {
        let policy = Policy {
            max_attempts: 4,
            first: Duration::from_millis(10),
            max: Duration::from_millis(50),
        };
        for _ in 0..100 {
            let first = policy.pause(1);
            assert!(first >= Duration::from_millis(5) && first <= Duration::from_millis(10));
            let third = policy.pause(3);
            assert!(third >= Duration::from_millis(20) && third <= Duration::from_millis(40));
            let late = policy.pause(30);
            assert!(late >= Duration::from_millis(25) && late <= Duration::from_millis(50));
        }
    }

    /// A backoff as long as a `Duration` holds (a caller's "no limit") pauses for it, at
    /// every jitter, rather than panicking in the conversion through seconds as a float.
    #[test]
    fn the_longest_backoff_pauses_at_every_jitter_without_panicking() {
        let policy = Policy {
            max_attempts: 4,
            first: Duration::MAX,
            max: Duration::MAX,
        };
        policy.pause(3);
        for random in 0..1024 {
            let pause = jittered(Duration::MAX, random);
            assert!(
                pause >= Duration::MAX / 2 - Duration::from_secs(1),
                "{pause:?}"
            );
        }
        assert_eq!(
            jittered(Duration::from_millis(20), 0),
            Duration::from_millis(10)
        );
        let longest = jittered(Duration::from_millis(20), 1023);
        assert!(longest <= Duration::from_millis(20), "{longest:?}");
        assert!(longest > Duration::from_micros(19_999), "{longest:?}");
    }
}
