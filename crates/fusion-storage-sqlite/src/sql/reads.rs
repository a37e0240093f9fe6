//! The statements that read histories and ids. Each binds ?1 the session id (where there
//! is one) and now in microseconds, and reads an expired session as absent
//! (`crate::expiry`).

use crate::expiry::{expired, unexpired};

/// A history row by row, in seq order; nothing for an expired session (?2 now).
pub(crate) const LOAD_ROWS: &str = concat!(
    "SELECT seq, message FROM messages WHERE session_id = ?1 AND NOT ",
    expired!(),
    " ORDER BY seq"
);

/// The rows of a history in seq order, for the one-row loads below; nothing for an
/// expired session (?2 now).
macro_rules! ordered_rows {
    () => {
        concat!(
            "(SELECT seq, message FROM messages WHERE session_id = ?1 AND NOT ",
            expired!(),
            " ORDER BY seq)"
        )
    };
}

/// The seqs of the rows below joined by commas. Nothing per row but the seq itself: a row
/// holding a blob needs no mark of its own (see [`LOAD_ARRAY`]).
macro_rules! seqs {
    () => {
        "coalesce(group_concat(seq), '')"
    };
}

/// The messages of the rows below joined by [`MESSAGE_SEPARATOR`], as written in SQL.
macro_rules! messages {
    () => {
        "coalesce(group_concat(message, '\u{1e}'), '')"
    };
}

/// The byte [`messages!`] puts between two messages: ASCII's record separator, a control
/// character, which JSON allows neither between tokens nor raw in a string, so it never
/// appears in a stored message (serde_json writes it as `\u001e`), and a message that
/// ends right before it (or at the end) is exactly one row's. A comma, as in a JSON
/// array, would not tell: a row holding two messages and two rows each holding half of
/// one (cut anywhere, the comma joining the halves again) parse as many messages as there
/// are rows, none of them a row's.
pub(crate) const MESSAGE_SEPARATOR: char = '\u{1e}';

/// A whole history as one row, for sqlx: the stored JSON texts joined by
/// [`MESSAGE_SEPARATOR`], and the seqs joined by commas. sqlx hands each result row across
/// from the connection's worker thread on its own, which for a long history costs several
/// times SQLite's scan; one row avoids that. The rows reach the aggregate in the order of
/// the inner ORDER BY (SQLite runs an ordered subquery under an aggregate as is), and
/// because both lists are built in that one pass, seqs reading 0,1,2,... and as many
/// messages, each one row's, prove the messages are complete and in order.
/// `group_concat(x ORDER BY seq)` would say so itself but sorts a copy of every message,
/// doubling the cost.
///
/// A row holding a blob (the column's TEXT affinity keeps one; only a hand edit stores
/// it) joins its bytes in as they are, and both read paths take a message's bytes as its
/// text whatever their type: a blob spelling a message's JSON in UTF-8 is that message,
/// on the direct path too. Any other row (not UTF-8, not one message) fails the UTF-8
/// check or its parse, which sends the load to the rows one by one and the error naming
/// its seq. So a healthy load pays nothing per row for blobs: a
/// `CASE WHEN typeof(message) = 'text' ...` in [`seqs!`] to find them cost about 550
/// instructions a row, 8% of a pooled load of 1,000 messages of 330 bytes.
pub(crate) const LOAD_ARRAY: &str = concat!(
    "SELECT ",
    seqs!(),
    ", ",
    messages!(),
    " FROM ",
    ordered_rows!()
);

/// A whole history as one row, like [`LOAD_ARRAY`], and the session's revision
/// `(generation, message_count)` (0 and 0 when there is no `sessions` row, or it has
/// expired at ?2): one statement, so one snapshot of both tables. The revision's columns
/// are named as in `sessions`, so that a cell of the wrong type is reported by its name.
pub(crate) const LOAD_REVISION_ARRAY: &str = concat!(
    "SELECT coalesce((SELECT generation FROM sessions AS s WHERE s.id = ?1 AND ",
    unexpired!("s", "?2"),
    "), 0) AS generation, \
     coalesce((SELECT message_count FROM sessions AS s WHERE s.id = ?1 AND ",
    unexpired!("s", "?2"),
    "), 0) AS message_count, \
     ",
    seqs!(),
    ", ",
    messages!(),
    " FROM ",
    ordered_rows!()
);

/// Every session id that has not expired at ?1, from the `sessions` table only.
pub(crate) const LIST_SESSIONS: &str = concat!(
    "SELECT s.id FROM sessions AS s WHERE ",
    unexpired!("s", "?1"),
    " ORDER BY s.id"
);
