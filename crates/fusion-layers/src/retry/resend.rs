//! What another attempt at an append sends: the messages of the batch the session lacks,
//! or, when an earlier attempt stored them all, the batch's last message again
//! ([`send_echo`]), for the backend to find stored and redo the work after the write
//! that it reported failed.

use std::borrow::Cow;
use std::collections::HashSet;

use fusion_core::{
    Change, ChatMessage, ConversationStorage, DEDUP_WINDOW, Error, Expect, MessageId, Result,
    Revision, unstored,
};

/// For another attempt at appending a batch, what the read of the session found.
pub(super) struct Unstored<'b> {
    /// The messages of the batch the session does not hold yet.
    pub(super) fresh: Cow<'b, [ChatMessage]>,
    /// The session's revision, `None` when it could not be read (then `fresh` is the
    /// whole batch).
    pub(super) revision: Option<Revision>,
    /// When `fresh` is empty, what to send anyway ([`echo`]); else empty.
    pub(super) echo: &'b [ChatMessage],
}

impl<'b> Unstored<'b> {
    /// What the session (`history`, at `revision`) lacks of `batch`.
    pub(super) fn of(
        history: &[ChatMessage],
        revision: Revision,
        batch: &'b [ChatMessage],
    ) -> Self {
        let stored: HashSet<&MessageId> = history.iter().filter_map(|m| m.id.as_ref()).collect();
        let fresh = unstored(batch, |id| stored.contains(id));
        let echo = match fresh.is_empty() {
            true => echo(history, batch),
            false => &[],
        };
        Self {
            fresh,
            revision: Some(revision),
            echo,
        }
    }

    /// The whole batch, the session unread.
    pub(super) fn unread(batch: &'b [ChatMessage]) -> Self {
        Self {
            fresh: Cow::Borrowed(batch),
            revision: None,
            echo: &[],
        }
    }
}

/// What another attempt at `batch`, every message of which `history` holds, sends anyway:
/// the batch's last message, if it has an id and is among the last [`DEDUP_WINDOW`]
/// messages of `history`, else nothing. The earlier attempt may have stored the messages
/// and failed after (on a Redis Cluster, the index requests that follow the write): a
/// backend with upkeep to redo does it when it meets a resent message already stored (its
/// window finds it, so it stores nothing twice), and never sees a retry that sends nothing.
/// A message outside the window would be stored again: it is not sent.
fn echo<'b>(history: &[ChatMessage], batch: &'b [ChatMessage]) -> &'b [ChatMessage] {
    let Some(last) = batch.last() else {
        return &[];
    };
    let Some(id) = &last.id else {
        return &[];
    };
    let window = &history[history.len().saturating_sub(DEDUP_WINDOW)..];
    match window.iter().any(|m| m.id.as_ref() == Some(id)) {
        true => std::slice::from_ref(last),
        false => &[],
    }
}

/// Sends `echo`, the last message of a batch the session (read at `revision`) holds
/// whole ([`Unstored::echo`]; nothing when empty), to `inner` as an append on condition
/// of that exact revision: the backend finds it stored, stores nothing, and redoes what
/// may have failed after the attempt that stored it (a Redis Cluster's index requests,
/// sent again on meeting a stored append or a conflict). A session written since refuses
/// it, and that conflict is ignored: the batch was stored, and is not stored again. The
/// generation alone would not do: a deleted session would be created anew, and appends
/// by others, which keep the generation, may have pushed the message out of the window
/// the backend looks for it in, where it would be stored a second time. Another error is
/// returned, for the layer to retry: the backend's work after the write is not known
/// done.
///
/// Cost: a conditional append of one message; a backend without its own
/// [`write_if`](ConversationStorage::write_if) loads the session for it (the trait's
/// default), on this rare path only.
pub(super) async fn send_echo(
    inner: &dyn ConversationStorage,
    session_id: &str,
    revision: Revision,
    echo: &[ChatMessage],
) -> Result<()> {
    if echo.is_empty() {
        return Ok(());
    }
    let (expected, change) = (Expect::Exactly(revision), Change::Append(echo));
    match inner.write_if(session_id, expected, change).await {
        Ok(_) | Err(Error::Conflict { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stored_last_message_in_the_window_is_sent_again() {
        let batch = [
            ChatMessage::user("a").with_new_id(),
            ChatMessage::assistant("b").with_new_id(),
        ];
        let mut history = vec![ChatMessage::user("before")];
        history.extend_from_slice(&batch);
        let at = Revision {
            generation: 7,
            len: history.len(),
        };
        let found = Unstored::of(&history, at, &batch);
        assert!(found.fresh.is_empty());
        assert_eq!(found.echo, &batch[1..]);
        // Pushed out of the window by others' messages: a resend would store it again.
        history.extend((0..DEDUP_WINDOW).map(|_| ChatMessage::user("other")));
        assert!(Unstored::of(&history, at, &batch).echo.is_empty());
        // Part of the batch unstored: that part is sent, and nothing else.
        let partly = Unstored::of(&batch[..1], at, &batch);
        assert_eq!(&*partly.fresh, &batch[1..]);
        assert!(partly.echo.is_empty());
        // A last message without an id cannot be found stored.
        let plain = [batch[0].clone(), ChatMessage::user("no id")];
        assert!(echo(&history, &plain).is_empty());
    }
}
