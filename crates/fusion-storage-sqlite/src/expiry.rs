//! Session retention as this backend stores it (migration 0004, issue #16): the clock
//! every read and write takes `now` from, and the SQL that treats an expired session as
//! absent.
//!
//! A session's [`StoredExpiry`](fusion_core::StoredExpiry) lives in two columns of its
//! `sessions` row, microseconds: `expires_at` (indexed by `sessions_by_expiry` where set)
//! and `expiry_idle`. Every operation reads the clock once ([`now_micros`]): a write
//! stores `updated_at` as that instant in whole milliseconds ([`millis`]) and, for an idle
//! expiry, `expires_at = updated_at * 1000 + expiry_idle`, so the two agree exactly; the
//! expiry checks compare `expires_at` with the full microsecond reading, the same way in
//! Rust ([`fusion_core::is_expired`]) and in SQL ([`unexpired!`], [`expired!`]).
//!
//! - Readers skip an expired row: `load` and `list_sessions` in their SQL, `session_info`
//!   and `load_revision` on the row they read, a page inside its keyset query.
//! - A plain append or save refuses an expired row in the UPDATE of the upsert it runs
//!   anyway (`ON CONFLICT DO UPDATE ... WHERE` [`unexpired!`]), and its later statements
//!   skip it too, so its last statement changes no row; only then does the runner remove
//!   the session (`REMOVE_EXPIRED` of `crate::sql`) and run the write again: a fresh
//!   session.
//! - A write that reads the row first (a conditional write, a creation, a metadata
//!   update) decides in Rust from `expires_at`: an expired session counts as absent, and
//!   is removed before the write's statements run (a metadata update writes nothing).
//! - `purge_expired` deletes, in one transaction, the first `batch` sessions of
//!   `sessions_by_expiry` whose instant is not after now: still expired at delete time,
//!   since the transaction holds the write lock.

use std::time::SystemTime;

use fusion_core::unix_micros;

/// Now, in microseconds since the Unix epoch: the one clock reading of an operation.
pub(crate) fn now_micros() -> i64 {
    unix_micros(SystemTime::now())
}

/// The whole milliseconds of `micros`: the `created_at` / `updated_at` a write at that
/// instant stores.
pub(crate) fn millis(micros: i64) -> i64 {
    micros.div_euclid(1000)
}

/// SQL: the row `$s` (a table alias) has not expired at the microsecond parameter `$now`.
macro_rules! unexpired {
    ($s:literal, $now:literal) => {
        concat!(
            "(",
            $s,
            ".expires_at IS NULL OR ",
            $s,
            ".expires_at > ",
            $now,
            ")"
        )
    };
}
pub(crate) use unexpired;

/// SQL, for the `DO UPDATE SET` of an upsert into `sessions`: an idle expiry moves to the
/// row's new `updated_at` (milliseconds, the `MAX` of the old and the new) plus its span;
/// a fixed one, or none, stays.
macro_rules! moved_expiry {
    () => {
        "expires_at = CASE WHEN sessions.expiry_idle IS NULL THEN sessions.expires_at \
             ELSE MAX(excluded.updated_at, sessions.updated_at) * 1000 \
                 + sessions.expiry_idle END"
    };
}
pub(crate) use moved_expiry;

/// SQL: the session ?1 has a row that has expired at ?2 (microseconds). SQLite runs this
/// uncorrelated subquery once per statement: one lookup of the row's key.
macro_rules! expired {
    () => {
        "EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND expires_at <= ?2)"
    };
}
pub(crate) use expired;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_millisecond_of_an_instant_is_its_floor() {
        assert_eq!(millis(1_700_000_000_123_999), 1_700_000_000_123);
        assert_eq!(millis(0), 0);
        assert_eq!(millis(-1), -1);
        assert_eq!(
            unexpired!("s", "?4"),
            "(s.expires_at IS NULL OR s.expires_at > ?4)"
        );
    }
}
