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
        let random = RandomState::new().hash_one(attempt);
        let factor = 0.5 + (random % 1024) as f64 / 2046.0;
        full.mul_f64(factor)
    }
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
}
