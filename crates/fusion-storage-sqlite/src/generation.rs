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
//! cannot disagree on what a write requires or what it returns.

use fusion_core::{Change, Expect, Revision};

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

    /// Whether the write may run on a session `found` at this revision: `Ok` with the
    /// generation the session has once it has run, or `Err(found)` to refuse it.
    pub(crate) fn check(&self, found: Revision) -> Result<u64, Revision> {
        if let Some(expected) = self.expected
            && !expected.is_met_by(found.generation, || found.len)
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
        let under = |change| Condition::new(Expect::Generation(7), change, fresh).check(AT);
        assert_eq!(under(Change::Append(&one)), Ok(7), "an append keeps it");
        assert_eq!(under(Change::Append(&[])), Ok(7));
        assert_eq!(under(Change::Truncate(2)), Ok(fresh), "a shorter history");
        assert_eq!(under(Change::Truncate(3)), Ok(7), "nothing to cut");
        assert_eq!(under(Change::Truncate(0)), Ok(0));
        assert_eq!(under(Change::Replace(&one)), Ok(fresh));
        assert_eq!(under(Change::Replace(&[])), Ok(0));

        let create =
            |change| Condition::new(Expect::Generation(0), change, fresh).check(Revision::ABSENT);
        assert_eq!(
            create(Change::Append(&one)),
            Ok(fresh),
            "an append creates it"
        );
        assert_eq!(create(Change::Append(&[])), Ok(0), "absent stays absent");
        assert_eq!(create(Change::Truncate(2)), Ok(0));

        let always = |found| Condition::always(Change::Append(&one), fresh).check(found);
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
        assert_eq!(condition.check(AT), Err(AT));
        let create = Condition::new(Expect::Generation(0), Change::Append(&[]), 99);
        assert_eq!(create.check(AT), Err(AT));
    }
}
