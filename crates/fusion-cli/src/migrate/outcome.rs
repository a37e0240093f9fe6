//! What `fusion migrate` did, or in a dry run would do, to one session ([`Outcome`]).

/// What happened (or, in a dry run, would happen) to one session.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The target was empty and now holds the source's history (this many messages).
    Copied(usize),
    /// The target held a prefix of the source's history; the rest (this many messages)
    /// was appended.
    Extended(usize),
    /// The target already held exactly the source's history.
    UpToDate,
    /// Listed in the source, but it held no message when read: deleted or expired since,
    /// or unreadable (a torn file). Nothing was written.
    Gone,
    /// The source's expiry (`why`: which, and when it ran out) had run out on the target's
    /// clock by the time it was written there, as the source's session is gone from that
    /// instant. `kept` is `None` when the copy was created with it: the copy is gone for
    /// every reader, and its metadata was not synced. It is `Some(done)` when the target's
    /// session existed, `done` being what was done to it (up to date, extended, replaced):
    /// the expiry, which would have made it gone for every reader at once, was left out of
    /// its metadata sync, and the session is kept live.
    Expired {
        why: String,
        kept: Option<Box<Outcome>>,
    },
    /// The target holds messages the source lacks; it was left as it is.
    Diverged(String),
    /// The target held a different history (`previous` messages), replaced because of
    /// `--force` by the source's (`written` messages).
    Replaced { previous: usize, written: usize },
    /// The target held different metadata (`why`: what differed), replaced because of
    /// `--force`; `written` messages were copied too.
    MetaReplaced { why: String, written: usize },
}

impl Outcome {
    /// How many messages were (or would be) written to the target and can be read there.
    pub(super) fn written(&self) -> usize {
        match self {
            Outcome::Copied(written)
            | Outcome::Extended(written)
            | Outcome::Replaced { written, .. }
            | Outcome::MetaReplaced { written, .. } => *written,
            Outcome::Expired {
                kept: Some(done), ..
            } => done.written(),
            Outcome::UpToDate
            | Outcome::Gone
            | Outcome::Expired { kept: None, .. }
            | Outcome::Diverged(_) => 0,
        }
    }

    /// Whether the target session was left as this run found it, or holds nothing a
    /// reader sees: then `--encrypt` has nothing of it to encrypt.
    pub(super) fn left_alone(&self) -> bool {
        matches!(
            self,
            Outcome::Gone | Outcome::Expired { kept: None, .. } | Outcome::Diverged(_)
        )
    }

    /// What was done to the target's messages: for a session reported expired and kept,
    /// the outcome its metadata sync followed; else this one.
    pub(super) fn done(&self) -> &Outcome {
        match self {
            Outcome::Expired {
                kept: Some(done), ..
            } => done,
            other => other,
        }
    }
}
