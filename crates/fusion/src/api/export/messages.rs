//! The messages of an import, read one by one, and the first reason to refuse the import:
//! a message that loses something in the reading, or one no server would take in a history.

use std::collections::HashSet;

use serde::Deserialize;

use super::error::{ImportError, MessagePlace};
use super::fields;
use crate::{ChatMessage, Role};

/// The messages of an import, read as they come, and why the first refused is: it loses
/// something in the reading, or could never be sent.
pub(super) struct Messages {
    pub(super) read: Vec<ChatMessage>,
    pub(super) refused: Option<ImportError>,
    /// The ids of the assistant's tool calls read so far, which a tool result may answer.
    calls: HashSet<String>,
}

impl Messages {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Messages {
            read: Vec::with_capacity(capacity),
            refused: None,
            calls: HashSet::new(),
        }
    }

    /// Reads `written`, the message at `place`, and checks what it loses and whether it
    /// could be sent, unless one before it was refused already.
    pub(super) fn push(
        &mut self,
        written: serde_json::Value,
        place: MessagePlace,
    ) -> serde_json::Result<()> {
        let message = ChatMessage::deserialize(&written)?;
        if self.refused.is_none() {
            self.refused = fields::lost(&written, &message, place)
                .or_else(|| self.unsendable(&message, place));
        }
        if message.role == Role::Assistant {
            self.calls
                .extend(message.tool_calls.iter().map(|call| call.id.clone()));
        }
        self.read.push(message);
        Ok(())
    }

    /// Why `message`, at `place`, could be stored but never sent, if so: a tool result
    /// without the id of the call it answers (none, or one empty or of blanks only), or
    /// with an id that no tool call of the assistant before it has. Every
    /// OpenAI-compatible server refuses a request whose history holds either.
    ///
    /// A call without its result is let through: a turn stopped while its tools ran
    /// leaves one (at the end of a history, or before later turns), and the agent answers
    /// it as interrupted in every request it sends. A result after other messages, or a
    /// second result of one call (two writers on one session), is let through too: the
    /// agent puts the result with its call.
    fn unsendable(&self, message: &ChatMessage, place: MessagePlace) -> Option<ImportError> {
        if message.role != Role::Tool {
            return None;
        }
        match message.tool_call_id.as_deref() {
            Some(id) if id.trim().is_empty() => {
                Some(ImportError::ToolResultWithoutCallId { place })
            }
            None => Some(ImportError::ToolResultWithoutCallId { place }),
            Some(id) if !self.calls.contains(id) => Some(ImportError::ToolResultWithoutCall {
                place,
                call_id: id.to_owned(),
            }),
            Some(_) => None,
        }
    }
}
