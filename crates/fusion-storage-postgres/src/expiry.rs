//! Session retention as this backend stores it (migration 0003, issue #16): the server's
//! clock in microseconds, the SQL that treats an expired session as absent, and the
//! expiry a write binds.
//!
//! A session's [`StoredExpiry`] lives in two `bigint` columns of its `sessions` row,
//! microseconds: `expires_at` (indexed by `sessions_expiry` where set) and `expiry_idle`.
//! Every instant comes from the server's clock, `now()`, as `updated_at` always has: a
//! write computes an idle session's `expires_at` in its own statement from the
//! `updated_at` it stores ([`micros!`]), and every check compares `expires_at` with
//! [`now_us!`] of the statement's transaction. No client clock is involved, so processes
//! on machines whose clocks disagree still agree on which sessions have expired.
//!
//! - Readers skip an expired row in their SQL ([`unexpired!`]; `load` by one lookup of the
//!   session's row, [`expired!`]).
//! - The append's upsert refuses an expired row (`ON CONFLICT DO UPDATE ... WHERE`): no
//!   row comes back, and only then a transaction removes the session and runs the append
//!   again (`crate::write::append`). A save does the same inside its transaction; a
//!   conditional write reads the expiry with the row it locks; a metadata update and a
//!   truncate find no session.
//! - A creation given the times a session had elsewhere (`create_session_with_times`)
//!   stores each at most `now()` ([`given_or_now!`]), in that same statement, so a given
//!   time later than the server's clock never leaves `updated_at` ahead of the writes to
//!   come; an idle expiry counts from the `updated_at` it stores, as for any write.
//! - `purge_expired` is one statement deleting the first `batch` sessions of
//!   `sessions_expiry` that have expired, each locked (`FOR UPDATE SKIP LOCKED`) and so
//!   still expired when deleted.

use fusion_core::{Expiry, SessionTimes, StoredExpiry, unix_micros};
use sqlx::postgres::types::PgInterval;

/// SQL: `$t` (a `timestamptz` expression) in whole microseconds since the Unix epoch, as
/// `updated_at` is read back (`extract` is exact, `numeric`, from PostgreSQL 14 on).
macro_rules! micros {
    ($t:expr) => {
        concat!("(extract(epoch FROM ", $t, ") * 1000000)::int8")
    };
}
pub(crate) use micros;

/// SQL: the stored `timestamptz` column `$c` in whole microseconds, as [`micros!`], or
/// NULL for a time no session can have, which only a hand edit stores: `infinity` or
/// `-infinity`, or from the year 294247 on, past `int8` microseconds since the Unix epoch
/// (where [`micros!`] would fail the whole statement, and with it every other row it
/// reads). Read as `Option<i64>`, `None` is the row's damage (`crate::meta`).
macro_rules! stored_micros {
    ($c:literal) => {
        concat!(
            "CASE WHEN isfinite(",
            $c,
            ") AND ",
            $c,
            " < timestamptz '294247-01-01 00:00:00+00' THEN ",
            $crate::expiry::micros!($c),
            " END"
        )
    };
}
pub(crate) use stored_micros;

/// SQL: a write's condition on the row it changes (columns prefixed by `$p`, e.g.
/// `"cur."` or `""`): true when its `created_at` and `updated_at` are times a session can
/// have, and otherwise the statement's failure (converting them as [`micros!`] does):
/// `crate::meta::damaged_time` then makes that `Error::Corrupt` naming the column, as
/// every read reports it, where a write that went on would keep the damage (`greatest`
/// keeps an infinite `updated_at`) with nothing to say so.
macro_rules! times_hold {
    ($p:literal) => {
        concat!(
            "(",
            $crate::expiry::micros!(concat!($p, "created_at")),
            " IS NOT NULL AND ",
            $crate::expiry::micros!(concat!($p, "updated_at")),
            " IS NOT NULL)"
        )
    };
}
pub(crate) use times_hold;

/// SQL: the server's clock in microseconds: `now()`, the start of the transaction.
macro_rules! now_us {
    () => {
        $crate::expiry::micros!("now()")
    };
}
pub(crate) use now_us;

/// SQL: the `timestamptz` a creation stores for the time bound at parameter `$p` (an
/// `interval` since the Unix epoch, whole microseconds, so exact; NULL: none given): that
/// time, but never later than the server's clock (`now()`, which every write stores), and
/// the clock's reading when none is given (`least` skips a NULL).
macro_rules! given_or_now {
    ($p:literal) => {
        concat!("least(timestamptz 'epoch' + ", $p, "::interval, now())")
    };
}
pub(crate) use given_or_now;

/// SQL: the row (columns prefixed by `$p`, e.g. `"cur."` or `""`) has not expired.
macro_rules! unexpired {
    ($p:literal) => {
        concat!(
            "(",
            $p,
            "expires_at IS NULL OR ",
            $p,
            "expires_at > ",
            $crate::expiry::now_us!(),
            ")"
        )
    };
}
pub(crate) use unexpired;

/// SQL: the session $1 has a row that has expired. Uncorrelated, so PostgreSQL runs it
/// once per statement (an InitPlan): one lookup of the row's key.
macro_rules! expired {
    () => {
        concat!(
            "EXISTS (SELECT FROM sessions WHERE id = $1 AND expires_at <= ",
            $crate::expiry::now_us!(),
            ")"
        )
    };
}
pub(crate) use expired;

/// SQL: the `expires_at` a write that sets `updated_at` to the `timestamptz` expression
/// `$t` stores for a row whose idle span is `$idle` and fixed instant `$fixed`: `$t` in
/// microseconds plus the span, or the fixed instant (NULL: none).
macro_rules! expires_at {
    ($t:expr, $fixed:literal, $idle:literal) => {
        concat!(
            "CASE WHEN ",
            $idle,
            " IS NULL THEN ",
            $fixed,
            " ELSE ",
            $crate::expiry::micros!($t),
            " + ",
            $idle,
            " END"
        )
    };
}
pub(crate) use expires_at;

/// The `(fixed instant, idle span)` a write binds for `expiry`, microseconds: the statement
/// computes an idle session's `expires_at` from the `updated_at` it writes
/// ([`expires_at!`]), so only the span is bound.
pub(crate) fn bound(expiry: Option<&Expiry>) -> (Option<i64>, Option<i64>) {
    let stored = StoredExpiry::of(expiry, 0);
    match stored.idle {
        Some(idle) => (None, Some(idle)),
        None => (stored.expires_at, None),
    }
}

/// The creation and last write a creation binds for [`given_or_now!`]: `times` as
/// `interval`s since the Unix epoch, whole microseconds; NULLs (the server's clock) for
/// none. Checked already ([`SessionTimes::validate`]), so no later than the year 9999.
pub(crate) fn given(times: Option<SessionTimes>) -> [Option<PgInterval>; 2] {
    let since_epoch = |at| PgInterval {
        months: 0,
        days: 0,
        microseconds: unix_micros(at),
    };
    times.map_or([None, None], |times| {
        [times.created_at, times.updated_at].map(|at| Some(since_epoch(at)))
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn a_write_binds_the_instant_or_the_span() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001);
        assert_eq!(
            bound(Some(&Expiry::At(at))),
            (Some(1_700_000_000_000_001), None)
        );
        let idle = Expiry::Idle(Duration::from_secs(60));
        assert_eq!(bound(Some(&idle)), (None, Some(60_000_000)));
        assert_eq!(bound(None), (None, None));
        assert_eq!(
            unexpired!("cur."),
            "(cur.expires_at IS NULL OR cur.expires_at > \
             (extract(epoch FROM now()) * 1000000)::int8)"
        );
    }
}
