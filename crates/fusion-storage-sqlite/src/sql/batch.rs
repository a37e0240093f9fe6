//! A write's messages as the one JSON text it binds, and the longest text SQLite takes.

use fusion_core::{ChatMessage, Error, Result};

use crate::error::BACKEND;

/// The longest string SQLite binds or makes: `SQLITE_MAX_LENGTH` as the SQLite this crate
/// builds has it (the default, 10^9 bytes), every connection's length limit unless lowered.
/// Longer, a bound value fails the statement with `SQLITE_TOOBIG` once the transaction has
/// begun.
const MAX_TEXT_BYTES: usize = 1_000_000_000;

/// Serialises messages written to `session_id` as one JSON array before a transaction
/// starts, so the write lock is held only for the inserts and a serialisation failure
/// touches nothing. The array's elements are exactly each message's
/// `serde_json::to_string`. An array past [`MAX_TEXT_BYTES`] is
/// [`Error::InvalidMessage`] naming the first message that takes it there: no statement
/// could bind it.
pub(super) fn encode(session_id: &str, messages: &[ChatMessage]) -> Result<String> {
    encode_within(session_id, messages, MAX_TEXT_BYTES)
}

/// [`encode`] for a connection whose longest string is `max` bytes.
fn encode_within(session_id: &str, messages: &[ChatMessage], max: usize) -> Result<String> {
    let json = serde_json::to_string(messages)?;
    if json.len() > max {
        return Err(too_long(session_id, messages, max));
    }
    Ok(json)
}

/// The refusal of a write of `messages`, whose array passes `max` bytes, naming the first
/// message that takes it past: each is encoded again to find it (a path only gigabytes
/// take).
fn too_long(session_id: &str, messages: &[ChatMessage], max: usize) -> Error {
    // The brackets, and a comma or the closing bracket after each message.
    let mut bytes = 1;
    let index = messages
        .iter()
        .position(|message| {
            bytes += serde_json::to_string(message).map_or(0, |json| json.len()) + 1;
            bytes > max
        })
        .unwrap_or(messages.len().saturating_sub(1));
    fusion_core::sql::batch_too_long(
        BACKEND,
        session_id,
        index,
        messages.len(),
        &format!("{bytes} bytes"),
        &format!("SQLite binds at most {max} bytes in one value"),
    )
}

#[cfg(test)]
mod tests {
    use rusqlite::ErrorCode;
    use rusqlite::limits::Limit;

    use super::*;

    /// The refusal follows SQLite's own rule on a connection whose longest string is a few
    /// hundred bytes rather than 10^9 (so the test holds nothing): an array of exactly the
    /// limit binds, is written and is encoded; one byte more fails SQLite's bind with
    /// `SQLITE_TOOBIG` and is refused before, naming the message that passes the limit.
    #[test]
    fn a_batch_past_the_longest_string_is_refused_as_sqlite_would_refuse_it() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        assert_eq!(
            usize::try_from(conn.limit(Limit::SQLITE_LIMIT_LENGTH)).unwrap(),
            MAX_TEXT_BYTES,
            "the SQLite this crate builds"
        );
        let message = |len| ChatMessage::user("x".repeat(len));
        let batch = [message(100), message(100), message(100)];
        let max = serde_json::to_string(&batch).unwrap().len();
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, i32::try_from(max).unwrap());
        let stored = |json: &str| {
            conn.query_row("SELECT count(*) FROM json_each(?1)", [json], |row| {
                row.get::<_, i64>(0)
            })
        };

        let json = encode_within("s", &batch, max).unwrap();
        assert_eq!(stored(&json).unwrap(), 3);

        let longer = [message(100), message(101), message(100)];
        let json = serde_json::to_string(&longer).unwrap();
        let err = stored(&json).unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(ErrorCode::TooBig), "{err}");
        match encode_within("s", &longer, max) {
            Err(Error::InvalidMessage { index, detail, .. }) => {
                assert_eq!(index, 2, "the first message past the limit: {detail}");
                assert!(detail.contains("smaller batches"), "{detail}");
            }
            other => panic!("expected InvalidMessage, got {other:?}"),
        }
        match encode_within("s", &[message(max)], max) {
            Err(Error::InvalidMessage { index, detail, .. }) => {
                assert_eq!(index, 0);
                assert!(!detail.contains("batches"), "one message: {detail}");
            }
            other => panic!("expected InvalidMessage, got {other:?}"),
        }
    }
}
