//! A batch of messages serialised for an append, with the ids its messages carry: what
//! the append compares with the ids at the end of the session file, under the session's
//! lock, so that it stores each id once.

use std::borrow::Cow;

use fusion_core::{ChatMessage, MessageId, Result};

use crate::jsonl;

/// The messages of one append, serialised before the session is locked.
#[derive(Debug)]
pub(crate) struct Batch {
    /// One line per message, with batch markers: what is written when none is stored yet.
    lines: Vec<u8>,
    /// Each message's id, in order; empty when no message has one, so that such a batch
    /// (every batch written before ids existed) costs no check.
    ids: Vec<Option<MessageId>>,
}

impl Batch {
    /// Serialises `messages` with batch markers and keeps their ids.
    pub(crate) fn encode(messages: &[ChatMessage]) -> Result<Self> {
        let lines = jsonl::encode_batch(messages)?;
        let ids = if messages.iter().any(|m| m.id.is_some()) {
            messages.iter().map(|m| m.id.clone()).collect()
        } else {
            Vec::new()
        };
        Ok(Self { lines, ids })
    }

    /// Each message's id, in order, or nothing when no message has one.
    pub(crate) fn ids(&self) -> &[Option<MessageId>] {
        &self.ids
    }

    /// The lines of every message, as written when none is stored yet.
    pub(crate) fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// The lines of the messages that are not `stored` (one flag per message, as
    /// [`ids`](Self::ids) gives them), marked as a batch of their own: all or nothing
    /// like the whole one. Borrows the whole batch when nothing of it is stored.
    pub(crate) fn unstored_lines(&self, stored: &[bool]) -> Cow<'_, [u8]> {
        if !stored.contains(&true) {
            return Cow::Borrowed(&self.lines);
        }
        let body = self.lines.strip_suffix(b"\n").unwrap_or(&self.lines);
        let kept: Vec<&[u8]> = body
            .split(|&b| b == b'\n')
            .zip(stored)
            .filter(|&(_, &stored)| !stored)
            .map(|(line, _)| line)
            .collect();
        let mut lines = Vec::with_capacity(self.lines.len());
        for (index, line) in kept.iter().enumerate() {
            // Unmarked first: the marker counted the lines of the whole batch.
            match jsonl::marker_len(line) {
                Some(marker) => {
                    lines.extend_from_slice(&line[..line.len() - marker]);
                    lines.push(b'}');
                }
                None => lines.extend_from_slice(line),
            }
            jsonl::mark(&mut lines, kept.len() - 1 - index);
            lines.push(b'\n');
        }
        Cow::Owned(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_without_ids_carries_none_to_check() {
        let batch = Batch::encode(&[ChatMessage::user("a"), ChatMessage::user("b")]).unwrap();
        assert!(batch.ids().is_empty());
        assert_eq!(
            batch.lines(),
            jsonl::encode_batch(&[ChatMessage::user("a"), ChatMessage::user("b")]).unwrap()
        );
        assert!(matches!(batch.unstored_lines(&[]), Cow::Borrowed(_)));
    }

    #[test]
    fn the_unstored_rest_is_marked_as_a_batch_of_its_own() {
        let messages = vec![
            ChatMessage::user("a").with_new_id(),
            ChatMessage::user("no id"),
            ChatMessage::assistant("b").with_new_id(),
            ChatMessage::tool_result("c", "call_1").with_new_id(),
        ];
        let batch = Batch::encode(&messages).unwrap();
        assert_eq!(batch.ids().len(), 4);
        assert!(batch.ids()[1].is_none());
        let all = batch.unstored_lines(&[false; 4]);
        assert!(matches!(all, Cow::Borrowed(_)));

        let rest = batch.unstored_lines(&[true, false, false, true]);
        assert_eq!(rest, jsonl::encode_batch(&messages[1..3]).unwrap());
        let last = batch.unstored_lines(&[true, true, true, false]);
        assert_eq!(last, jsonl::encode_batch(&messages[3..]).unwrap());
        assert!(batch.unstored_lines(&[true; 4]).is_empty());
    }
}
