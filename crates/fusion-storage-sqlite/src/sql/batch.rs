//! A write's messages as the one JSON text it binds, and the longest text SQLite takes.

use fusion_core::{ChatMessage, Error, Result};

use crate::error::BACKEND;

/// The longest string SQLite binds or makes: `SQLITE_MAX_LENGTH` as the SQLite this crate
/// builds has it (the default, 10^9 bytes), every connection's length limit unless lowered.
/// Longer, a bound value fails the statement with `SQLITE_TOOBIG` once the transaction has
/// begun.
const MAX_TEXT_BYTES: usize = 1_000_000_000;

/// Bytes a message's row holds besides the message and its session id: the record's
/// header (its length, and the three columns' types, the texts' up to 5 bytes each) and
/// the seq (up to 8). SQLite refuses a row past its longest string as it refuses a value.
const ROW_OVERHEAD: usize = 20;

/// Serialises messages written to `session_id` as one JSON array before a transaction
/// starts, so the write lock is held only for the inserts and a serialisation failure
/// touches nothing. The array's elements are exactly each message's
/// `serde_json::to_string`. An array past [`MAX_TEXT_BYTES`], or holding a message whose
/// row (beside its session id, [`ROW_OVERHEAD`]) would be, is [`Error::InvalidMessage`]
/// naming the first message that takes it there: no statement could bind or store it.
pub(super) fn encode(session_id: &str, messages: &[ChatMessage]) -> Result<String> {
    encode_within(session_id, messages, MAX_TEXT_BYTES)
}

/// [`encode`] for a connection whose longest string is `max` bytes.
fn encode_within(session_id: &str, messages: &[ChatMessage], max: usize) -> Result<String> {
    let json = serde_json::to_string(messages)?;
    // Every message is shorter than the array, so only an array this long can hold one
    // whose row is too long: the usual write encodes nothing again.
    let near = json.len() > max.saturating_sub(session_id.len() + ROW_OVERHEAD);
    match near.then(|| too_long(session_id, messages, max)).flatten() {
        Some(err) => Err(err),
        None => Ok(json),
    }
}

/// The refusal of a write of `messages` that passes `max` bytes, naming the first message
/// that takes the array past it or whose row would pass it; `None` when none does. Each
/// is encoded again to find it (a path only arrays near `max` take).
fn too_long(session_id: &str, messages: &[ChatMessage], max: usize) -> Option<Error> {
    let longest_message = max.saturating_sub(session_id.len() + ROW_OVERHEAD);
    // The brackets, and a comma or the closing bracket after each message.
    let mut bytes = 1;
    let index = messages.iter().position(|message| {
        let len = serde_json::to_string(message).map_or(0, |json| json.len());
        bytes += len + 1;
        bytes > max || len > longest_message
    })?;
    Some(fusion_core::sql::batch_too_long(
        BACKEND,
        session_id,
        index,
        messages.len(),
        &format!("{bytes} bytes"),
        &format!(
            "SQLite binds at most {max} bytes in one value and stores at most {longest_message} \
             bytes of one message beside this session id"
        ),
    ))
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

    /// A message is stored in a row beside its session id, and SQLite refuses a row past
    /// the longest string as it refuses a value (`SQLITE_TOOBIG` inside the transaction),
    /// so an array that binds can still hold a message too long to store: it is refused
    /// before, and every batch the check lets through is stored.
    #[test]
    fn a_message_whose_row_passes_the_longest_string_is_refused() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE messages (session_id TEXT NOT NULL, seq INTEGER NOT NULL, \
                 message TEXT NOT NULL, PRIMARY KEY (session_id, seq))",
        )
        .unwrap();
        let session_id = "s".repeat(40);
        let max = 1000;
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, i32::try_from(max).unwrap());
        let mut refused = 0;
        for len in 800..max {
            let batch = [ChatMessage::user("x".repeat(len))];
            let Ok(json) = encode_within(&session_id, &batch, max) else {
                refused += 1;
                continue;
            };
            conn.execute(
                "INSERT INTO messages SELECT ?1, j.key, j.value FROM json_each(?2) AS j",
                [&session_id, &json],
            )
            .unwrap_or_else(|e| panic!("{} bytes of JSON: {e}", json.len()));
            conn.execute("DELETE FROM messages", []).unwrap();
        }
        assert!(refused > 0, "the longest were refused");
    }
}
