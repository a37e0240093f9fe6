//! The generation rules of this backend (issue #13): where a session's generation lives,
//! what a conditional write checks, and which generation each write leaves behind.
//!
//! The generation is the `generation` column of the session's `sessions` row (migration
//! 0002); a session without a row is absent, generation 0. The SQL of `crate::sql` stores a
//! fresh one, bound from Rust ([`fusion_core::new_generation`]), whenever a write rewrites
//! a history (a save, a truncate that shortens it) or an append creates the row, and
//! keeps it on an append to an existing row. Rows from schema version 1 read
//! [`LEGACY_GENERATION`](fusion_core::LEGACY_GENERATION), the column's default.
//!
//! A conditional write ([`Condition`]) reads the row's generation and message count inside
//! its `BEGIN IMMEDIATE` transaction, before its statements, and decides here whether they
//! run. Both runners (`crate::direct` and `crate::pooled`) call this one decision, so they
//! cannot disagree on what a write requires or what it returns. Under
//! [`Expect::UnwrittenSince`] the same read also takes the row's `updated_at`, which every
//! write, a metadata update included, moves under the same lock: so nothing can write the
//! session between that comparison and the statements it lets run.

use fusion_core::{Change, Expect, Revision, from_unix_micros};

/// What a conditional write requires of its session, and which generation it leaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Condition {
    /// `None`: any revision will do (a plain append whose check is for its ids).
    expected: Option<Expect>,
    after: After,
}

/// Which generation a write leaves, given the revision it found before it ran.
#[derive(Debug, Clone, Copy)]
enum After {
    /// An append of nothing: the session as it was (absent stays absent).
    Unchanged,
    /// An append: the generation found, or the fresh one its statements store when they
    /// create the row.
    Appended { fresh: u64 },
    /// A truncate to `len` (more than 0) messages: the fresh generation its statements
    /// store when that shortens the history, otherwise the one found.
    Truncated { len: usize, fresh: u64 },
    /// A replace (or rewrite) by a non-empty history, which stores this fresh generation.
    Replaced { fresh: u64 },
    /// A truncate to 0 or a replace by nothing: the row is deleted.
    Deleted,
}

impl Condition {
    /// The condition of `change` under `expected`, for statements that store `fresh` as the
    /// new generation where the rules call for one.
    pub(crate) fn new(expected: Expect, change: Change<'_>, fresh: u64) -> Self {
        Self::of(Some(expected), change, fresh)
    }

    /// The condition of `change` whatever the session's revision: only which generation it
    /// leaves. What a plain append checks when it reads the session's row anyway.
    pub(crate) fn always(change: Change<'_>, fresh: u64) -> Self {
        Self::of(None, change, fresh)
    }

    fn of(expected: Option<Expect>, change: Change<'_>, fresh: u64) -> Self {
        let after = match change {
            Change::Append([]) => After::Unchanged,
            Change::Append(_) => After::Appended { fresh },
            Change::Truncate(0) | Change::Replace([]) | Change::Rewrite([]) => After::Deleted,
            Change::Truncate(len) => After::Truncated { len, fresh },
            Change::Replace(_) | Change::Rewrite(_) => After::Replaced { fresh },
        };
        Self { expected, after }
    }

    /// Whether [`check`](Self::check) needs the row's `updated_at`: only under
    /// [`Expect::UnwrittenSince`], so that every other write reads what it did before.
    pub(crate) fn reads_updated(&self) -> bool {
        matches!(self.expected, Some(Expect::UnwrittenSince { .. }))
    }

    /// Whether the write may run on a session `found` at this revision, last written at
    /// `updated_ms` (the row's `updated_at`, in Unix milliseconds, when
    /// [`reads_updated`](Self::reads_updated)): `Ok` with the generation the session has
    /// once it has run, or `Err(found)` to refuse it.
    pub(crate) fn check(&self, found: Revision, updated_ms: Option<i64>) -> Result<u64, Revision> {
        // The instant as recorded, exactly (`updated_at` holds whole milliseconds): earlier
        // than `since` is then `updated_ms < ceil(since in ms)`, the comparison in the
        // column's own unit, whatever part of a millisecond `since` has.
        let updated_at = || updated_ms.map(|ms| from_unix_micros(ms.saturating_mul(1000)));
        if let Some(expected) = self.expected
            && !expected.is_met_by(found.generation, || found.len, updated_at)
        {
            return Err(found);
        }
        Ok(match self.after {
            After::Unchanged => found.generation,
            After::Appended { fresh } if !found.exists() => fresh,
            After::Appended { .. } => found.generation,
            After::Truncated { len, fresh } if found.len > len => fresh,
            After::Truncated { .. } => found.generation,
            After::Replaced { fresh } => fresh,
            After::Deleted => 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use fusion_core::ChatMessage;

    use super::*;

    const AT: Revision = Revision {
        generation: 7,
        len: 3,
    };

    #[test]
    fn each_change_leaves_the_generation_the_rules_give() {
        let one = [ChatMessage::user("m")];
        let fresh = 99;
        let under = |change| Condition::new(Expect::Generation(7), change, fresh).check(AT, None);
        assert_eq!(under(Change::Append(&one)), Ok(7), "an append keeps it");
        assert_eq!(under(Change::Append(&[])), Ok(7));
        assert_eq!(under(Change::Truncate(2)), Ok(fresh), "a shorter history");
        assert_eq!(under(Change::Truncate(3)), Ok(7), "nothing to cut");
        assert_eq!(under(Change::Truncate(0)), Ok(0));
        assert_eq!(under(Change::Replace(&one)), Ok(fresh));
        assert_eq!(under(Change::Replace(&[])), Ok(0));

        let create = |change| {
            Condition::new(Expect::Generation(0), change, fresh).check(Revision::ABSENT, None)
        };
        assert_eq!(
            create(Change::Append(&one)),
            Ok(fresh),
            "an append creates it"
        );
        assert_eq!(create(Change::Append(&[])), Ok(0), "absent stays absent");
        assert_eq!(create(Change::Truncate(2)), Ok(0));

        let always = |found| Condition::always(Change::Append(&one), fresh).check(found, None);
        assert_eq!(always(AT), Ok(7), "any revision admits it");
        assert_eq!(always(Revision::ABSENT), Ok(fresh));
    }

    #[test]
    fn an_unmet_expectation_refuses_with_what_was_found() {
        let stale = Expect::Exactly(Revision {
            generation: 7,
            len: 2,
        });
        let condition = Condition::new(stale, Change::Truncate(1), 99);
        assert_eq!(condition.check(AT, None), Err(AT));
        let create = Condition::new(Expect::Generation(0), Change::Append(&[]), 99);
        assert_eq!(create.check(AT, None), Err(AT));
    }

    /// `since` may fall inside a millisecond (the purge takes a whole one, a caller need
    /// not): the recorded millisecond counts as written since unless it ends by `since`.
    #[test]
    fn unwritten_since_compares_the_recorded_millisecond() {
        let at_micros = |micros| Expect::UnwrittenSince {
            revision: AT,
            since: from_unix_micros(micros),
        };
        let delete = |expect| Condition::new(expect, Change::Truncate(0), 99);
        assert!(delete(at_micros(5_000_000)).reads_updated());
        assert_eq!(delete(at_micros(5_000_001)).check(AT, Some(5_000)), Ok(0));
        assert_eq!(delete(at_micros(5_000_000)).check(AT, Some(4_999)), Ok(0));
        assert_eq!(
            delete(at_micros(5_000_000)).check(AT, Some(5_000)),
            Err(AT),
            "written in the millisecond of `since`"
        );
        assert_eq!(delete(at_micros(4_999_999)).check(AT, Some(5_000)), Err(AT));
        assert_eq!(
            delete(at_micros(5_000_001)).check(AT, Some(-1)),
            Ok(0),
            "a damaged (negative) time is early"
        );
        let moved = Revision { len: 4, ..AT };
        assert_eq!(
            delete(at_micros(5_000_001)).check(moved, Some(4_000)),
            Err(moved)
        );
        for other in [Expect::Exactly(AT), Expect::Generation(7)] {
            assert!(!delete(other).reads_updated(), "{other:?}");
        }
    }
}
