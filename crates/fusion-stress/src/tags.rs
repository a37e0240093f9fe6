//! Tags: the unique label every turn's user message carries (`w2-s1-k17`: worker 2, shared
//! session 1, the worker's 17th turn), and finding them in any text.
//!
//! The mock LLM echoes tags (in answers and summaries) and the checker finds them in stored
//! messages, so both sides parse them here, in one place.

use std::fmt;

/// One turn's label: which worker sent it, to which shared session, and its number among
/// that worker's turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    /// The worker's index.
    pub worker: usize,
    /// The shared session's index.
    pub session: usize,
    /// The worker's turn counter (over all its sessions).
    pub turn: usize,
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}-s{}-k{}", self.worker, self.session, self.turn)
    }
}

impl Tag {
    /// Parses exactly `w<d>-s<d>-k<d>`.
    pub fn parse(text: &str) -> Option<Tag> {
        let mut parts = text.split('-');
        let worker = number_after(parts.next()?, 'w')?;
        let session = number_after(parts.next()?, 's')?;
        let turn = number_after(parts.next()?, 'k')?;
        if parts.next().is_some() {
            return None;
        }
        Some(Tag {
            worker,
            session,
            turn,
        })
    }
}

fn number_after(part: &str, letter: char) -> Option<usize> {
    let digits = part.strip_prefix(letter)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every tag in `text`, in order of appearance (repeats included).
///
/// A tag is a maximal run of ASCII letters, digits and `-` that parses as a [`Tag`], so
/// punctuation around it (`"ack w1-s0-k3."`) does not matter.
pub fn tags_in(text: &str) -> Vec<Tag> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter_map(Tag::parse)
        .collect()
}

/// The user message of the turn tagged `tag`.
pub fn user_message(tag: Tag) -> String {
    format!("Please remember note {tag}.")
}

/// The final answer the mock LLM gives to the turn tagged `tag`.
pub fn answer(tag: Tag) -> String {
    format!("ack {tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_are_found_among_punctuation() {
        let tag = Tag {
            worker: 2,
            session: 1,
            turn: 17,
        };
        assert_eq!(tag.to_string(), "w2-s1-k17");
        assert_eq!(Tag::parse("w2-s1-k17"), Some(tag));
        assert_eq!(tags_in(&user_message(tag)), vec![tag]);
        assert_eq!(
            tags_in("Summary: w0-s0-k1, w2-s1-k17. x-w1-s0-k2 w1-s0-k w1-s0-k3-4"),
            vec![
                Tag {
                    worker: 0,
                    session: 0,
                    turn: 1
                },
                tag
            ]
        );
    }
}
