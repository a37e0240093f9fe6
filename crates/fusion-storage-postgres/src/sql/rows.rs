//! How the rows a load reads become a history again: in seq order, without a gap, each
//! a message, and (for `load_revision`) as many as the `sessions` row counts.

use fusion_core::sql::{check_count, corrupt_row, missing_row, revision_of};
use fusion_core::{ChatMessage, Result, Revision};

use crate::error::BACKEND;

/// `(seq, body)` rows in seq order as messages; a gap or an unreadable row is
/// [`Error::Corrupt`](fusion_core::Error::Corrupt) naming the seq.
pub(crate) fn decode_rows(
    session_id: &str,
    rows: impl IntoIterator<Item = (i64, String)>,
) -> Result<Vec<ChatMessage>> {
    (0..)
        .zip(rows)
        .map(|(expected, (seq, body))| {
            if seq != expected {
                return Err(missing_row(BACKEND, session_id, expected, seq));
            }
            serde_json::from_str(&body).map_err(|e| corrupt_row(BACKEND, session_id, seq, &e))
        })
        .collect()
}

/// The rows of [`LOAD_REVISION`](super::LOAD_REVISION) as a history and its revision; a count that disagrees
/// with the rows is [`Error::Corrupt`](fusion_core::Error::Corrupt).
pub(crate) fn decode_revision(
    session_id: &str,
    rows: Vec<(i64, i64, Option<i64>, Option<String>)>,
) -> Result<(Vec<ChatMessage>, Revision)> {
    let Some(&(generation, count, ..)) = rows.first() else {
        return Ok((Vec::new(), Revision::ABSENT));
    };
    let revision = revision_of(Some((generation, count)));
    let messages = rows
        .into_iter()
        .filter_map(|(.., seq, body)| Some((seq?, body?)));
    let history = decode_rows(session_id, messages)?;
    check_count(BACKEND, session_id, revision.len, history.len())?;
    Ok((history, revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_in_order_and_gaps_are_corrupt() {
        let body = |text: &str| serde_json::to_string(&ChatMessage::user(text)).unwrap();
        let ok = decode_rows("s", [(0, body("a")), (1, body("b"))]).unwrap();
        assert_eq!(ok, [ChatMessage::user("a"), ChatMessage::user("b")]);
        let gap = decode_rows("s", [(0, body("a")), (2, body("c"))]).unwrap_err();
        assert!(gap.to_string().contains("seq 1 is missing"), "{gap}");
        let bad = decode_rows("s", [(0, "{".to_string())]).unwrap_err();
        assert!(bad.to_string().contains("seq 0"), "{bad}");
    }

    #[test]
    fn a_revision_needs_its_count_to_match_the_rows() {
        let body = serde_json::to_string(&ChatMessage::user("a")).unwrap();
        let rows = vec![(7, 1, Some(0), Some(body.clone()))];
        let (history, at) = decode_revision("s", rows).unwrap();
        assert_eq!((history.len(), at.generation, at.len), (1, 7, 1));
        assert_eq!(decode_revision("s", vec![]).unwrap().1, Revision::ABSENT);
        let short = vec![(7, 2, Some(0), Some(body))];
        assert!(decode_revision("s", short).is_err());
        let empty = vec![(7, 1, None, None)];
        assert!(decode_revision("s", empty).is_err());
    }
}
