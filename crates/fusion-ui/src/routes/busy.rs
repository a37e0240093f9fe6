//! The 409s for a session something else is working on: a chat turn of this app runs on
//! it, or another request holds its [`Claim`] (starting a turn, deleting, undoing).

use crate::claims::{Claim, Work};
use crate::html::PageError;
use crate::state::AppState;

/// Claims session `id` for `work` (see `crate::claims`), or a 409 page saying which
/// request holds it.
pub(crate) fn claim<'a>(state: &'a AppState, id: &str, work: Work) -> Result<Claim<'a>, PageError> {
    state
        .claims
        .claim(id, work)
        .map_err(|holder| PageError::conflict(held_by(id, holder, work)))
}

/// [`claim`] for a change (`work`: a delete, an undo) that would pull the session from
/// under a chat turn, refused too while a turn runs on it. The turn is checked under the
/// claim, and a turn starts only under its own claim, so no turn can start between this
/// check and the change.
pub(crate) fn claim_idle<'a>(
    state: &'a AppState,
    id: &str,
    work: Work,
) -> Result<Claim<'a>, PageError> {
    let claim = claim(state, id, work)?;
    no_turn_running(state, id, work)?;
    Ok(claim)
}

/// `Ok` unless a turn of the chat runs on session `id` in this app: then a 409 page
/// saying to stop it first, for a change (`work`: an undo, a delete) that would pull the
/// session from under the turn. The turn would go on asking about and running calls,
/// then fail to store them, so the session would keep no record of what its tools did.
pub(crate) fn no_turn_running(state: &AppState, id: &str, work: Work) -> Result<(), PageError> {
    let what = refused(work);
    match state.chat.as_ref().and_then(|chats| chats.running(id)) {
        None => Ok(()),
        Some(_) => Err(PageError::conflict(format!(
            "A chat turn is running on session {id:?}, so {what} is refused: it would pull \
             the session from under the turn. Stop the turn first (the Stop button on the \
             session's page), or wait for it to end."
        ))),
    }
}

/// Why `wanted` on session `id` is refused while `holder` holds its claim.
pub(crate) fn held_by(id: &str, holder: Work, wanted: Work) -> String {
    let what = refused(wanted);
    match holder {
        // A rename or retag pulls nothing from under a turn (it may run beside one):
        // it waits only for the start, and is told to try again, not to stop the turn.
        Work::StartingTurn if !matches!(wanted, Work::StartingTurn | Work::Renaming) => format!(
            "A chat turn is starting on session {id:?}, so {what} is refused: it would pull \
             the session from under the turn. Stop the turn first (the Stop button on the \
             session's page), or wait for it to end."
        ),
        _ => format!(
            "Another request is {} session {id:?} right now, so {what} is refused. Wait \
             for it to end, then try again.",
            holder.doing()
        ),
    }
}

/// `work` as what is refused: "deleting it".
fn refused(work: Work) -> &'static str {
    match work {
        Work::StartingTurn => "starting a turn",
        Work::Deleting => "deleting it",
        Work::Undoing => "undoing its last turn",
        Work::Renaming => "renaming or retagging it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rename refused while a turn starts was told to stop the turn (which a rename
    /// need not do: it may run beside one); every refusal by a claim says what to do.
    #[test]
    fn a_refusal_by_a_claim_says_what_to_do() {
        let works = [
            Work::StartingTurn,
            Work::Deleting,
            Work::Undoing,
            Work::Renaming,
        ];
        for holder in works {
            for wanted in works {
                let text = held_by("s", holder, wanted);
                assert!(
                    text.contains("try again") || text.contains("Stop the turn first"),
                    "{text}"
                );
            }
        }
        let text = held_by("s", Work::StartingTurn, Work::Renaming);
        assert!(!text.contains("Stop the turn"), "{text}");
        assert!(text.contains("starting a chat turn on session"), "{text}");
        assert!(
            text.contains("renaming or retagging it is refused"),
            "{text}"
        );
    }
}
