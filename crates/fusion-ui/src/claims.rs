//! Which sessions a request is starting a chat turn on, deleting or undoing right now:
//! one request per session at a time.
//!
//! Each of these checks, then acts, with storage calls in between: a delete checks that
//! no turn of the app runs on the session, then deletes it; a Send checks that the
//! session exists, then starts its turn. Two of them on one session could both pass
//! their checks before either acted: a Send between a delete's check and its delete
//! started a turn on a session about to vanish, whose approved tool call then ran and
//! could not be stored. So each holds its session's [`Claim`] from its check to its act,
//! and a second request finding the claim held is refused at once (a 409) instead of
//! waiting: exactly one of the two goes ahead, and the other is told why.
//!
//! A claim is a name in a set, dropped with the request (finished or cancelled), so the
//! set holds only the requests in flight.

use std::collections::HashMap;
use std::sync::Mutex;

/// What a request holding a session's claim does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// A Send: the session is checked, then a chat turn starts on it.
    StartingTurn,
    /// A delete, single or bulk.
    Deleting,
    /// An undo of the last turn.
    Undoing,
    /// A rename or a change of tags: a delete's page compares the metadata it showed
    /// before its write, which cannot compare it, so a rename by this app between the
    /// two must wait its turn (see `routes/delete.rs`).
    Renaming,
}

impl Work {
    /// What is done, as in "another request is ... session s1".
    pub(crate) fn doing(self) -> &'static str {
        match self {
            Work::StartingTurn => "starting a chat turn on",
            Work::Deleting => "deleting",
            Work::Undoing => "undoing the last turn of",
            Work::Renaming => "renaming or retagging",
        }
    }
}

/// The sessions claimed by requests in flight, and by which work.
#[derive(Default)]
pub(crate) struct Claims {
    held: Mutex<HashMap<String, Work>>,
}

/// A session claimed by one request, until it is dropped.
pub(crate) struct Claim<'a> {
    claims: &'a Claims,
    id: String,
}

impl Claims {
    /// Claims session `id` for `work`, or says which work holds it already. Cheap: one
    /// lock of a map of the requests in flight.
    pub(crate) fn claim(&self, id: &str, work: Work) -> Result<Claim<'_>, Work> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&holder) = held.get(id) {
            return Err(holder);
        }
        held.insert(id.to_string(), work);
        Ok(Claim {
            claims: self,
            id: id.to_string(),
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut held = self.claims.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_session_until_it_is_dropped() {
        let claims = Claims::default();
        let delete = claims.claim("s1", Work::Deleting).unwrap();
        assert_eq!(
            claims.claim("s1", Work::StartingTurn).err(),
            Some(Work::Deleting)
        );
        let other = claims.claim("s2", Work::StartingTurn);
        assert!(other.is_ok(), "another session is free");
        drop(delete);
        assert!(claims.claim("s1", Work::Undoing).is_ok());
        drop(other);
        assert!(claims.held.lock().unwrap().is_empty(), "nothing is left");
    }
}
