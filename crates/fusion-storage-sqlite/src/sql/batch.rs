//! A write's messages as the one JSON text it binds, and the longest text SQLite takes.

use fusion_core::{ChatMessage, Error, Result};

use crate::error::BACKEND;

/// The longest string SQLite binds or makes: `SQLITE_MAX_LENGTH` as the SQLite this crate
/// builds has it (the default, 10^9 bytes). Longer, a bound value fails the statement
/// with `SQLITE_TOOBIG` once the transaction has begun.
const MAX_TEXT_BYTES: usize = 1_000_000_000;

/// Serialises messages written to `session_id` as one JSON array before a transaction
/// starts, so the write lock is held only for the inserts and a serialisation failure
/// touches nothing. The array's elements are exactly each message's
/// `serde_json::to_string`. An array past [`MAX_TEXT_BYTES`] is
/// [`Error::InvalidMessage`] naming the first message that takes it there: no statement
/// could bind it.
pub(super) fn encode(session_id: &str, messages: &[ChatMessage]) -> Result<String> {
    let json = serde_json::to_string(messages)?;
    if json.len() > MAX_TEXT_BYTES {
        return Err(too_long(session_id, messages));
    }
    Ok(json)
}

/// The refusal of a write of `messages`, whose array passes [`MAX_TEXT_BYTES`], naming the
/// first message that takes it past: each is encoded again to find it (a path only
/// gigabytes take).
fn too_long(session_id: &str, messages: &[ChatMessage]) -> Error {
    // The brackets, and a comma or the closing bracket after each message.
    let mut bytes = 1;
    let index = messages
        .iter()
        .position(|message| {
            bytes += serde_json::to_string(message).map_or(0, |json| json.len()) + 1;
            bytes > MAX_TEXT_BYTES
        })
        .unwrap_or(messages.len().saturating_sub(1));
    let advice = if messages.len() > 1 {
        "; append the messages in smaller batches"
    } else {
        ""
    };
    Error::InvalidMessage {
        backend: BACKEND,
        session_id: session_id.to_string(),
        index,
        detail: format!(
            "the write's messages up to this one are {bytes} bytes of JSON, and SQLite binds \
             at most {MAX_TEXT_BYTES} in one value{advice}"
        ),
    }
}
