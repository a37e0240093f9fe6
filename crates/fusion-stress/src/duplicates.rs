//! Rule 2 of the checker, first half: no message is stored twice, in a session after the
//! run or in what a reload read during it.
//!
//! A retried write whose first attempt applied (its reply lost) is where a message would
//! be stored twice, so the rule looks at every message, not only at the user messages the
//! turns are checked by:
//! - no message id twice in one session (the agent gives every message it stores one, and
//!   the retry layer every message that has none, so a repeat is one write stored twice);
//! - no turn's tag in two user messages;
//! - no assistant text naming a tag twice (each turn's answer and tool-calling reply name
//!   its tag, and only they do).
//!
//! A reload's snapshot keeps only the user and assistant texts, so there only the last
//! two are checked.

use std::collections::HashMap;
use std::hash::Hash;

use fusion_core::{ChatMessage, Role};

use crate::journal::{Entry, Op};
use crate::tags::tags_in;

/// The violations of a stored session `id`'s `history`.
pub fn in_history(id: &str, history: &[ChatMessage]) -> Vec<String> {
    let mut out = Vec::new();
    let mut ids = Seen::default();
    let mut user_tags = Seen::default();
    let mut answers = Seen::default();
    for (p, message) in history.iter().enumerate() {
        if let Some(first) = message.id.as_ref().and_then(|mid| ids.first(mid, p)) {
            out.push(format!(
                "{id}: message id {} stored twice, at {first} and {p} ({:?} {:?})",
                message
                    .id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                message.role,
                short(&message.content)
            ));
        }
        let text = message.content.as_str();
        match message.role {
            Role::User => {
                for tag in tags_in(text) {
                    if let Some(first) = user_tags.first(tag, p) {
                        out.push(format!(
                            "{id}: user message {tag} stored twice, at {first} and {p}"
                        ));
                    }
                }
            }
            Role::Assistant if !tags_in(text).is_empty() => {
                if let Some(first) = answers.first(text, p) {
                    out.push(format!(
                        "{id}: assistant message {text:?} stored twice, at {first} and {p}"
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// The violations of every successful reload's snapshot in `journal`.
pub fn in_reloads(journal: &[Entry]) -> Vec<String> {
    let mut out = Vec::new();
    for entry in journal {
        let Op::Reload {
            failure: None,
            snapshot,
        } = &entry.op
        else {
            continue;
        };
        let mut seen: Seen<&str> = Seen::default();
        for (p, item) in snapshot.iter().enumerate() {
            // `u:` and `a:` items: a user text repeated, or an assistant text naming a tag.
            let counted = item.starts_with("u:") || item.starts_with("a:") && has_tag(item);
            if let Some(first) = seen.first(item.as_str(), p).filter(|_| counted) {
                out.push(format!(
                    "{} as worker {}'s reload at {} ns read it: {:?} stored twice, at {first} \
                     and {p} of what it read",
                    entry.session, entry.worker, entry.start_ns, item
                ));
            }
        }
    }
    out
}

fn has_tag(text: &str) -> bool {
    !tags_in(text).is_empty()
}

/// First positions of keys.
struct Seen<K>(HashMap<K, usize>);

impl<K> Default for Seen<K> {
    fn default() -> Self {
        Seen(HashMap::new())
    }
}

impl<K: Hash + Eq> Seen<K> {
    /// The first position of `key` if it was seen before, else notes `p` as it.
    fn first(&mut self, key: K, p: usize) -> Option<usize> {
        match self.0.get(&key) {
            Some(&first) => Some(first),
            None => {
                self.0.insert(key, p);
                None
            }
        }
    }
}

fn short(text: &str) -> String {
    let mut short: String = text.chars().take(60).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::{Tag, answer, user_message};

    fn tag(turn: usize) -> Tag {
        Tag {
            worker: 0,
            session: 0,
            turn,
        }
    }

    #[test]
    fn a_message_stored_twice_is_found_by_its_id_its_tag_or_its_answer() {
        let user = ChatMessage::user(user_message(tag(1))).with_new_id();
        let reply = ChatMessage::assistant(answer(tag(1))).with_new_id();
        let tool = ChatMessage::tool_result("call-1", "notes.txt").with_new_id();
        let once = vec![user.clone(), reply.clone(), tool.clone()];
        assert!(in_history("s", &once).is_empty());

        // The same tool result twice, by its id (its text names no tag).
        let twice = vec![user.clone(), tool.clone(), tool.clone()];
        let found = in_history("s", &twice);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("stored twice, at 1 and 2 (Tool"),
            "{found:?}"
        );

        // An answer stored again under another id (a retry that gave it a new one).
        let again = vec![
            user,
            reply.clone(),
            ChatMessage::assistant(answer(tag(1))).with_new_id(),
        ];
        let found = in_history("s", &again);
        assert_eq!(
            found,
            ["s: assistant message \"ack w0-s0-k1\" stored twice, at 1 and 2"]
        );

        // Two assistant messages without a tag may say the same thing.
        let plain = vec![ChatMessage::assistant("ok"), ChatMessage::assistant("ok")];
        assert!(in_history("s", &plain).is_empty());
    }

    #[test]
    fn a_reload_that_read_a_message_twice_is_a_violation() {
        let reload = |seen: &[ChatMessage]| Entry {
            worker: 2,
            session: "shared-0".into(),
            start_ns: 30,
            end_ns: 40,
            faults: 1,
            op: Op::Reload {
                failure: None,
                snapshot: crate::journal::snapshot(seen),
            },
        };
        let user = ChatMessage::user(user_message(tag(4)));
        let reply = ChatMessage::assistant(answer(tag(4)));
        let clean = reload(&[user.clone(), reply.clone()]);
        assert!(in_reloads(&[clean]).is_empty());
        let doubled = reload(&[user.clone(), user, reply.clone(), reply]);
        let found = in_reloads(&[doubled]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("reload at 30 ns read it: \"u:Please remember note w0-s0-k4.\""));
        assert!(found[1].contains("\"a:ack w0-s0-k4\" stored twice, at 2 and 3"));
    }
}
