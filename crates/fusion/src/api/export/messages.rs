//! The messages of an import, read one by one, and the first reason to refuse the import:
//! a message that loses something in the reading.

use serde::Deserialize;

use super::error::{ImportError, MessagePlace};
use super::fields;
use crate::ChatMessage;

/// The messages of an import, read as they come, and why the first refused is: it loses
/// something in the reading.
///
/// A tool result is taken whatever call it names, or none: a storage keeps any message,
/// so a session it holds may have one (a result whose call a window or another program
/// cut off, a second writer's), and the agent leaves out of each request a result that
/// answers no call the request carries, so such a session is sent as it is. Refusing it
/// here would only make `fusion sessions export` and `import` of a stored session fail.
pub(super) struct Messages {
    pub(super) read: Vec<ChatMessage>,
    pub(super) refused: Option<ImportError>,
}

impl Messages {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Messages {
            read: Vec::with_capacity(capacity),
            refused: None,
        }
    }

    /// Reads `written`, the message at `place`, and checks what it loses, unless one
    /// before it was refused already.
    pub(super) fn push(
        &mut self,
        written: serde_json::Value,
        place: MessagePlace,
    ) -> serde_json::Result<()> {
        let message = ChatMessage::deserialize(&written)?;
        if self.refused.is_none() {
            self.refused = fields::lost(&written, &message, place);
        }
        self.read.push(message);
        Ok(())
    }
}
