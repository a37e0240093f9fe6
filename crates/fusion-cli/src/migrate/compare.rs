//! How migrate compares a source history with the target's, message by message: the
//! functions behind its "diverged" lines and its read-back after each write.

use anyhow::{Result, bail};
use fusion::ChatMessage;

use crate::render;

/// How many of `target`'s first messages equal `source`'s, in order.
pub(super) fn copied(source: &[ChatMessage], target: &[ChatMessage]) -> usize {
    source
        .iter()
        .zip(target)
        .take_while(|(original, copy)| original == copy)
        .count()
}

/// Says how `target` differs from `source`, for a "diverged" line.
pub(super) fn divergence(source: &[ChatMessage], target: &[ChatMessage]) -> String {
    let first = copied(source, target);
    if first == source.len() {
        return format!(
            "the target has {} the source lacks",
            render::plural(target.len() - source.len(), "message")
        );
    }
    format!(
        "the histories differ from message {} (source {}, target {})",
        first + 1,
        render::plural(source.len(), "message"),
        render::plural(target.len(), "message")
    )
}

/// Checks that the target, read back, holds exactly `expected`: the count first, for a
/// clear message, then every message.
pub(super) fn verify(copy: &[ChatMessage], expected: &[ChatMessage]) -> Result<()> {
    if copy.len() != expected.len() {
        bail!(
            "verification failed: the target holds {} after copying {}",
            render::plural(copy.len(), "message"),
            expected.len()
        );
    }
    let held = copied(expected, copy);
    if held < expected.len() {
        bail!(
            "verification failed: message {} of the copy differs from the source",
            held + 1
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_where_two_histories_part() {
        let source = [ChatMessage::user("a"), ChatMessage::assistant("b")];
        assert_eq!(copied(&source, &source), 2);
        verify(&source, &source).unwrap();
        let edited = [source[0].clone(), ChatMessage::assistant("c")];
        assert_eq!(copied(&source, &edited), 1);
        let err = verify(&edited, &source).unwrap_err().to_string();
        assert!(err.contains("message 2 of the copy differs"), "{err}");
        assert_eq!(
            divergence(&source, &edited),
            "the histories differ from message 2 (source 2 messages, target 2 messages)"
        );
        // An id is part of a message: a copy that gained one is not the source's.
        let labelled = [source[0].clone().with_new_id(), source[1].clone()];
        assert_eq!(copied(&source, &labelled), 0);
        let longer = [source.to_vec(), vec![ChatMessage::user("later")]].concat();
        assert_eq!(
            divergence(&source, &longer),
            "the target has 1 message the source lacks"
        );
    }
}
