//! Why a call found no pooled connection within the connect timeout.
//!
//! While a call waits for a connection, the pool opens new ones as it may, and sqlx
//! retries one the server refuses as too many (SQLSTATE 53300), as starting (57P03) or
//! outright (a server that is down) until the timeout, then reports the timeout alone
//! (`PoolTimedOut`): the server's own reason is gone. So a call that timed out tries one
//! new connection itself, within the connect timeout, and its error says what that met
//! ([`Cause`]): the server's refusal, no answer, or a connection opened at once (the
//! pool's were all in use). A cause sqlx does not retry (a wrong password, a missing
//! database) it reports at once, without a timeout, and it is worded as always.
//!
//! One storage tries one such connection at a time, and a call that times out takes the
//! finding of one tried since it began, if there is one: a pool whose connections are
//! all in use under load, whose calls time out together, does not open one more
//! connection per call on a server that may be near its own limit.

use std::time::{Duration, Instant};

use fusion_core::Error;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::sync::Mutex;

use crate::error::{Cause, Op, pool_timed_out};

/// The last finding of one storage, and the lock that makes its tries one at a time.
#[derive(Debug, Default)]
pub(crate) struct Finder {
    last: Mutex<Option<(Instant, Cause)>>,
}

impl Finder {
    /// The error of a call of `op`, begun at `began`, that waited out `pool`'s timeout for
    /// a connection.
    pub(crate) async fn pool_timed_out(&self, pool: &PgPool, op: Op<'_>, began: Instant) -> Error {
        let options = pool.options();
        let connect = pool.connect_options();
        let waited = Waited {
            connect: &connect,
            timeout: options.get_acquire_timeout(),
            max: options.get_max_connections(),
            // As the call timed out: the try below may take the connect timeout again,
            // while the pool's connections close and open.
            size: pool.size(),
        };
        self.timed_out(op, waited, began).await
    }

    /// The error of a call of `op`, begun at `began`, that waited out a pool's timeout for
    /// a connection, as `pool` says (at open, for a pool that is gone).
    pub(crate) async fn timed_out(&self, op: Op<'_>, pool: Waited<'_>, began: Instant) -> Error {
        let cause = self.cause(pool.connect, pool.timeout, began).await;
        let cause = read(cause, pool.size, pool.max);
        pool_timed_out(op, pool.timeout, pool.max, &cause)
    }

    /// What a new connection with `connect` meets within `timeout`, or what the last one
    /// met if it was tried after `began` (waiting for one being tried).
    async fn cause(&self, connect: &PgConnectOptions, timeout: Duration, began: Instant) -> Cause {
        let (cause, opened) = self.find(connect, timeout, began).await;
        if let Some(conn) = opened {
            // Closing politely is a courtesy to the server; it is done either way. Done
            // with the lock released: a call waiting for this finding need not wait for a
            // network round (up to `timeout`) that tells it nothing.
            let _ = tokio::time::timeout(timeout, conn.close()).await;
        }
        cause
    }

    /// [`Self::cause`]'s finding, made under the lock, and the new connection if it opened,
    /// for the caller to close once the lock is released.
    async fn find(
        &self,
        connect: &PgConnectOptions,
        timeout: Duration,
        began: Instant,
    ) -> (Cause, Option<PgConnection>) {
        let mut last = self.last.lock().await;
        if let Some((at, cause)) = last.as_ref()
            && *at >= began
        {
            return (cause.clone(), None);
        }
        let tried = Instant::now();
        let (cause, opened) = match tokio::time::timeout(timeout, connect.connect()).await {
            Ok(Ok(conn)) => (Cause::InUse, Some(conn)),
            Ok(Err(err)) => (Cause::failed(err), None),
            Err(_) => (Cause::NoAnswer, None),
        };
        *last = Some((tried, cause.clone()));
        (cause, opened)
    }
}

/// A pool whose wait for a connection timed out, as a new connection is tried for it.
pub(crate) struct Waited<'a> {
    /// How the pool connects.
    pub(crate) connect: &'a PgConnectOptions,
    /// The pool's connect timeout, which a new connection is given too.
    pub(crate) timeout: Duration,
    /// The most connections the pool may hold.
    pub(crate) max: u32,
    /// The connections it held (open, or being opened) as the wait timed out.
    pub(crate) size: u32,
}

/// What a new connection's `cause` says of a pool of at most `max` connections holding
/// `size` (open, or being opened) once the call timed out: one opening at once means the
/// pool's were all in use only if the pool had all it may; with room for more, the pool
/// was opening its own and failing (a server down or at its limit a moment before). A
/// cause retrying cannot mend is not why a full pool's call timed out (the pool gives up
/// at once on such a cause): its connections were in use, and the call may be retried.
fn read(cause: Cause, size: u32, max: u32) -> Cause {
    match cause {
        Cause::InUse if size < max => Cause::Reopened,
        Cause::Failed {
            cause,
            retryable: false,
        } if size >= max => Cause::InUseAndFailed { cause },
        cause => cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a review: a pool that could not open a connection (the server down or at
    /// its limit until the timeout) and a new connection that opened right after (the
    /// server back) were reported as every pooled connection in use, to be mended by a
    /// larger pool.
    #[test]
    fn a_connection_opening_at_once_blames_the_pool_only_when_it_was_full() {
        assert_eq!(read(Cause::InUse, 4, 4), Cause::InUse);
        assert_eq!(read(Cause::InUse, 3, 4), Cause::Reopened);
        assert_eq!(read(Cause::InUse, 0, 1), Cause::Reopened);
        assert_eq!(read(Cause::NoAnswer, 0, 1), Cause::NoAnswer);
    }

    /// Found by a review: the new connection was closed with the lock held, so a call
    /// waiting for the finding waited for that close too. The lock is free once the
    /// finding is made, the connection still open, to be closed after.
    #[tokio::test]
    async fn the_new_connection_is_closed_after_the_lock_is_released() {
        let Some(url) = crate::testing::reachable_url().await else {
            return;
        };
        let connect: PgConnectOptions = url.parse().unwrap();
        let finder = Finder::default();
        let timeout = Duration::from_secs(30);
        let (cause, opened) = finder.find(&connect, timeout, Instant::now()).await;
        assert_eq!(cause, Cause::InUse);
        assert!(finder.last.try_lock().is_ok(), "the lock is released");
        let mut conn = opened.expect("the new connection, still to close");
        conn.ping().await.unwrap();
        conn.close().await.unwrap();
    }

    /// Found by a review: a full pool's call that timed out, whose new connection met a
    /// cause retrying cannot mend (a password changed since the pool's connections
    /// opened), was reported as not retryable, though a retry gets a pooled connection.
    #[test]
    fn a_full_pool_stays_retryable_whatever_a_new_connection_met() {
        let failed = |retryable| Cause::Failed {
            cause: "password authentication failed".into(),
            retryable,
        };
        let full = read(failed(false), 2, 2);
        assert!(matches!(full, Cause::InUseAndFailed { .. }), "{full:?}");
        // With room for more, the pool met it too (or what it met changed since).
        assert_eq!(read(failed(false), 1, 2), failed(false));
        assert_eq!(read(failed(true), 2, 2), failed(true));
    }
}
