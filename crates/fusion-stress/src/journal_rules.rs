//! The checker's rules that the journal alone can break, whatever was stored: an undo
//! that says it removed more than its own turn (rule 5, first half), a failure no
//! interleaving of writers may cause (rule 7), and a turn answered with another turn's
//! answer (rule 10). The rules are listed in [`crate::checker`].

use crate::journal::{Entry, Op};
use crate::tags::{answer, tags_in};

/// Adds a violation line to `out` for each break of rules 5 (first half), 7 and 10.
pub fn check(journal: &[Entry], out: &mut Vec<String>) {
    check_undo_reports(journal, out);
    check_turn_answers(journal, out);
    check_no_impossible_failure(journal, out);
}

/// Rule 7.
fn check_no_impossible_failure(journal: &[Entry], out: &mut Vec<String>) {
    for entry in journal {
        if let Some(failure) = entry.op.failure().filter(|f| f.impossible) {
            out.push(format!(
                "{}: worker {}'s {} failed as no interleaving may: {}",
                entry.session,
                entry.worker,
                entry.op.kind(),
                failure.text
            ));
        }
    }
}

/// Rule 10.
fn check_turn_answers(journal: &[Entry], out: &mut Vec<String>) {
    for entry in journal {
        let Op::Turn {
            tag,
            message,
            answer: Some(given),
            failure: None,
        } = &entry.op
        else {
            continue;
        };
        let own = tags_in(message).first().map(|tag| answer(*tag));
        if own.as_deref() != Some(given.as_str()) {
            out.push(format!(
                "{}: worker {}'s turn {tag} was answered {given:?}, not its own message's answer",
                entry.session, entry.worker
            ));
        }
    }
}

/// Rule 5, first half: what each successful undo says it removed.
fn check_undo_reports(journal: &[Entry], out: &mut Vec<String>) {
    for entry in journal {
        if let Op::Undo {
            intended,
            removed,
            failure: None,
            ..
        } = &entry.op
        {
            let others: Vec<&String> = removed.iter().filter(|r| *r != intended).collect();
            if !others.is_empty() {
                out.push(format!(
                    "{}: worker {}'s undo of {intended} also removed {others:?}",
                    entry.session, entry.worker
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::{Tag, user_message};

    fn turn(worker: usize, answered: Tag) -> Entry {
        let own = Tag {
            worker,
            session: 0,
            turn: 1,
        };
        Entry {
            worker,
            session: "shared-0".into(),
            start_ns: 10,
            end_ns: 20,
            faults: 0,
            op: Op::Turn {
                tag: own.to_string(),
                message: user_message(own),
                answer: Some(answer(answered)),
                failure: None,
            },
        }
    }

    #[test]
    fn a_turn_answered_with_another_turns_answer_is_a_violation() {
        let other = Tag {
            worker: 1,
            session: 0,
            turn: 3,
        };
        let mut out = Vec::new();
        check(&[turn(0, other)], &mut out);
        assert_eq!(
            out,
            [
                "shared-0: worker 0's turn w0-s0-k1 was answered \"ack w1-s0-k3\", not its own \
              message's answer"
            ]
        );
        let own = Tag {
            worker: 0,
            session: 0,
            turn: 1,
        };
        out.clear();
        check(&[turn(0, own)], &mut out);
        assert!(out.is_empty(), "{out:#?}");
    }
}
