//! Messages as the write statements bind them: their JSON texts, their ids lined up with
//! them, and the ids a session keeps when these messages end its history.
//!
//! Everything here is computed once in Rust, before any SQL runs, so the statements only
//! compare and copy ids (`crate::sql::APPEND_WITH_IDS`), and a batch without ids costs
//! nothing more than its bodies: it has no id lists, and its append runs
//! `crate::sql::APPEND`, which checks no id.

use fusion_core::{ChatMessage, DEDUP_WINDOW, MessageId, Result};

/// A batch of messages ready to bind.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    /// Each message's JSON as the `body` column stores it (`serde_json`, minified, the id
    /// first).
    pub bodies: Vec<String>,
    /// Each message's id, NULL for one without; `None` when no message has one, which is
    /// what makes the append skip every id check.
    pub ids: Option<Vec<Option<&'a str>>>,
    /// The ids of the batch's last [`DEDUP_WINDOW`] messages that have one, oldest first:
    /// the `recent_ids` of a session whose history these messages are (a save) or start (an
    /// append that creates it). `None` (NULL) when there are none.
    pub window: Option<Vec<&'a str>>,
}

impl<'a> Batch<'a> {
    /// Encodes `messages` (already checked by `fusion_core::check_storable`, so no two
    /// share an id).
    pub fn of(messages: &'a [ChatMessage]) -> Result<Self> {
        let bodies = messages
            .iter()
            .map(|m| serde_json::to_string(m).map_err(Into::into))
            .collect::<Result<Vec<String>>>()?;
        let id = |m: &'a ChatMessage| m.id.as_ref().map(MessageId::as_str);
        let ids = messages
            .iter()
            .any(|m| m.id.is_some())
            .then(|| messages.iter().map(id).collect());
        let mut window: Vec<&str> = messages
            .iter()
            .rev()
            .filter_map(id)
            .take(DEDUP_WINDOW)
            .collect();
        window.reverse();
        Ok(Self {
            bodies,
            ids,
            window: (!window.is_empty()).then_some(window),
        })
    }

    /// No messages at all.
    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }
}

/// [`DEDUP_WINDOW`] as the statements bind it.
pub(crate) fn window_len() -> i32 {
    i32::try_from(DEDUP_WINDOW).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_line_up_with_bodies_and_the_window_keeps_the_last_ones() {
        let plain = [ChatMessage::user("a"), ChatMessage::user("b")];
        let plain = Batch::of(&plain).unwrap();
        assert_eq!(plain.bodies.len(), 2);
        assert!(
            plain.ids.is_none() && plain.window.is_none(),
            "no ids, no checks"
        );

        let a = ChatMessage::user("a").with_id("m-a".parse().unwrap());
        let mixed = [a, ChatMessage::user("b")];
        let batch = Batch::of(&mixed).unwrap();
        assert_eq!(batch.ids, Some(vec![Some("m-a"), None]));
        assert_eq!(batch.window, Some(vec!["m-a"]));
        // A truncate reads ids back from the start of the stored text (`sql::CUT_TAIL`).
        assert!(
            batch.bodies[0].starts_with(r#"{"id":"m-a","#),
            "{}",
            batch.bodies[0]
        );

        let many: Vec<ChatMessage> = (0..DEDUP_WINDOW + 3)
            .map(|i| ChatMessage::user("x").with_id(format!("m{i}").parse().unwrap()))
            .collect();
        let window = Batch::of(&many).unwrap().window.unwrap();
        assert_eq!(window.len(), DEDUP_WINDOW);
        assert_eq!(window[0], "m3");
        assert_eq!(window[DEDUP_WINDOW - 1], format!("m{}", DEDUP_WINDOW + 2));
    }
}
