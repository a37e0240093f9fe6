//! Waiting out a busy database while opening: the one retry loop every step of opening a
//! storage goes through.
//!
//! A write waits for the lock inside SQLite, whose busy handler retries until the busy
//! timeout. Opening cannot rely on that alone. Switching a new file to WAL starts from a
//! read lock and must then take the write lock; SQLite answers `SQLITE_BUSY` at once,
//! without calling the busy handler, when another connection already holds the write
//! lock (waiting could deadlock, since that connection in turn waits for the read lock to
//! go). So when several processes open one new file together, all but one fail that step
//! however long the busy timeout is. sqlx's documentation says the same of
//! `SqliteConnectOptions::journal_mode`. Opening therefore runs each step (the pool's first
//! connection with its `PRAGMA`s, the schema migration, the direct connections) through
//! [`wait_while_busy_until`], which repeats the step, with a short growing pause, for as
//! long as it fails busy or locked and the busy timeout of the whole opening, shared by
//! its steps, has not run out.
//!
//! Only opening goes through here: a write's `BEGIN IMMEDIATE` starts from no lock, so
//! SQLite's own busy handler already waits for it, and a loop around it would only slow
//! it down.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::MaybeBusy;

/// The pause before the first repeat: the connection holding the lock is usually done
/// with a switch to WAL or a migration quickly, so start short.
const FIRST_PAUSE: Duration = Duration::from_millis(1);

/// The longest pause between repeats, so a lock released while waiting is noticed soon;
/// below the longest sleep of SQLite's own busy handler.
const LONGEST_PAUSE: Duration = Duration::from_millis(50);

/// [`wait_while_busy_until`] `busy_timeout` from now.
#[cfg(test)]
pub(crate) async fn wait_while_busy<T, E, F, Fut>(busy_timeout: Duration, step: F) -> Result<T, E>
where
    E: MaybeBusy,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    wait_while_busy_until(Instant::now() + busy_timeout, step).await
}

/// Runs `step` until it succeeds, fails other than busy or locked, or `deadline` has
/// passed; then returns its last result. A deadline already passed tries once.
///
/// Every step of opening a storage shares one deadline, the busy timeout from the start
/// of the opening: a busy file is waited for once, not once per step.
///
/// Each try must leave nothing behind when it fails (a half-open pool, an open
/// transaction): the next try starts from scratch.
pub(crate) async fn wait_while_busy_until<T, E, F, Fut>(
    deadline: Instant,
    mut step: F,
) -> Result<T, E>
where
    E: MaybeBusy,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = FIRST_PAUSE;
    let mut tries = 1_u32;
    loop {
        let error = match step().await {
            Err(error) if error.is_busy() => error,
            done => return done,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::debug!(tries, "opening SQLite stayed busy past the busy timeout");
            return Err(error);
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
        tries += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A stand-in error: busy or not.
    #[derive(Debug, PartialEq)]
    struct Failed {
        busy: bool,
    }

    impl MaybeBusy for Failed {
        fn is_busy(&self) -> bool {
            self.busy
        }
    }

    #[tokio::test]
    async fn a_busy_step_is_repeated_until_it_succeeds() {
        let tries = Cell::new(0);
        let result = wait_while_busy(Duration::from_secs(60), || {
            tries.set(tries.get() + 1);
            let busy = tries.get() < 4;
            async move {
                if busy {
                    Err(Failed { busy })
                } else {
                    Ok("opened")
                }
            }
        })
        .await;
        assert_eq!(result, Ok("opened"));
        assert_eq!(tries.get(), 4);
    }

    #[tokio::test]
    async fn other_failures_are_returned_at_once() {
        let tries = Cell::new(0);
        let result: Result<(), _> = wait_while_busy(Duration::from_secs(60), || {
            tries.set(tries.get() + 1);
            async { Err(Failed { busy: false }) }
        })
        .await;
        assert_eq!(result, Err(Failed { busy: false }));
        assert_eq!(tries.get(), 1);
    }

    #[tokio::test]
    async fn a_step_still_busy_at_the_deadline_fails_busy() {
        let tries = Cell::new(0);
        let result: Result<(), _> = wait_while_busy(Duration::ZERO, || {
            tries.set(tries.get() + 1);
            async { Err(Failed { busy: true }) }
        })
        .await;
        assert_eq!(result, Err(Failed { busy: true }));
        assert_eq!(tries.get(), 1);
        // A short timeout is waited out, then the busy error comes back.
        let result: Result<(), _> = wait_while_busy(Duration::from_millis(20), || async {
            Err(Failed { busy: true })
        })
        .await;
        assert_eq!(result, Err(Failed { busy: true }));
    }
}
