//! Every session id in id order: a sorted file (`ids`, one id per line) and a log of what
//! changed since it was written (`ids-log`: `+id` when a session is created, `-id` when it
//! is deleted), merged when the log grows past 1/32 of the sorted file.
//!
//! A page by id binary-searches the sorted file for its cursor and reads on from there,
//! merging in the log's additions and skipping its removals; the log is read whole, and
//! its bound keeps that cheap. Appends never touch either file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Write};

use fusion_core::SessionId;

use super::lines::{self, Forward};

/// The longest line of either file: a sign and a 128-byte id.
const MAX_LINE: usize = 1 + 128 + 1;

/// The log line for `id` being created (`true`) or deleted (`false`).
pub(crate) fn encode_change(created: bool, id: &str) -> Vec<u8> {
    format!("{}{id}\n", if created { '+' } else { '-' }).into_bytes()
}

fn valid(line: &[u8]) -> Option<&str> {
    let id = std::str::from_utf8(line).ok()?;
    SessionId::validate(id).ok().map(|()| id)
}

/// What the log `[0, end)` says last of each id (`true` created, `false` deleted), and
/// whether it is damaged: holds a line that does not parse or ends inside one (which
/// writes never leave; see [`lines::ends_a_line`]).
pub(crate) fn read_log(log: &File, end: u64) -> io::Result<(HashMap<String, bool>, bool)> {
    let mut last = HashMap::new();
    let mut damaged = false;
    // Read to its end anyway: whether it ends a line comes with it.
    let ends_a_line = lines::for_each_line(log, 0, end, |_, line| {
        let change = match line.split_first() {
            Some((b'+', id)) => valid(id).map(|id| (true, id)),
            Some((b'-', id)) => valid(id).map(|id| (false, id)),
            _ => None,
        };
        match change {
            Some((created, id)) => {
                last.insert(id.to_string(), created);
            }
            None => damaged = true,
        }
    })?;
    Ok((last, damaged || !ends_a_line))
}

/// The ids after a cursor, in order: the sorted file merged with the log.
pub(crate) struct IdsAfter<'f> {
    /// `None` when there is no sorted file yet.
    sorted: Option<Forward<'f>>,
    next_sorted: Option<String>,
    added: VecDeque<String>,
    removed: HashSet<String>,
    damaged: bool,
}

impl<'f> IdsAfter<'f> {
    /// The ids after `after` (all of them for `None`) of the sorted file `[0, sorted_len)`
    /// and the log `[0, log_len)`.
    pub(crate) fn new(
        sorted: Option<&'f File>,
        sorted_len: u64,
        log: &File,
        log_len: u64,
        after: Option<&str>,
    ) -> io::Result<Self> {
        let (changes, mut damaged) = read_log(log, log_len)?;
        if let Some(sorted) = sorted {
            // Checked here, whatever the cursor: a page that starts past the last line
            // that ends would never read the junk after it.
            damaged |= !lines::ends_a_line(sorted, sorted_len)?;
        }
        let mut added: Vec<String> = Vec::new();
        let mut removed = HashSet::new();
        for (id, created) in changes {
            if created {
                if after.is_none_or(|a| id.as_str() > a) {
                    added.push(id);
                }
            } else {
                removed.insert(id);
            }
        }
        added.sort_unstable();
        let sorted = match sorted {
            None => None,
            Some(sorted) => {
                let start = match after {
                    None => 0,
                    Some(after) => lines::lower_bound(sorted, sorted_len, MAX_LINE, |line| {
                        valid(line).is_none_or(|id| id <= after)
                    })?,
                };
                Some(Forward::new(sorted, start, sorted_len)?)
            }
        };
        Ok(Self {
            sorted,
            next_sorted: None,
            added: added.into(),
            removed,
            damaged,
        })
    }

    /// Whether a line that does not parse was met (see [`read_log`]).
    pub(crate) fn damaged(&self) -> bool {
        self.damaged
    }

    /// The next id, or `None` after the last.
    pub(crate) fn next_id(&mut self) -> io::Result<Option<String>> {
        if let (None, Some(sorted)) = (&self.next_sorted, &mut self.sorted) {
            while let Some(line) = sorted.next_line()? {
                match valid(line) {
                    None => self.damaged = true,
                    Some(id) if self.removed.contains(id) => {}
                    Some(id) => {
                        self.next_sorted = Some(id.to_string());
                        break;
                    }
                }
            }
        }
        let (take_sorted, duplicate) = match (&self.next_sorted, self.added.front()) {
            (None, None) => return Ok(None),
            (Some(_), None) => (true, false),
            (None, Some(_)) => (false, false),
            (Some(sorted), Some(added)) => (sorted <= added, sorted == added),
        };
        if duplicate {
            self.added.pop_front();
        }
        Ok(if take_sorted {
            self.next_sorted.take()
        } else {
            self.added.pop_front()
        })
    }
}

/// Writes the merge of the sorted file `[0, sorted_len)` and the log `[0, log_len)` to
/// `out`, sorted; returns the bytes written, or `None` if either file is damaged: what
/// was written then lacks the ids the damage hid, and must not replace the files that
/// show the damage.
pub(crate) fn merge_into(
    sorted: &File,
    sorted_len: u64,
    log: &File,
    log_len: u64,
    out: &mut impl Write,
) -> io::Result<Option<u64>> {
    let mut ids = IdsAfter::new(Some(sorted), sorted_len, log, log_len, None)?;
    let mut written = 0;
    while let Some(id) = ids.next_id()? {
        out.write_all(id.as_bytes())?;
        out.write_all(b"\n")?;
        written += id.len() as u64 + 1;
    }
    Ok((!ids.damaged()).then_some(written))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(bytes: &[u8]) -> (File, u64) {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        (file, bytes.len() as u64)
    }

    fn all(sorted: &(File, u64), log: &(File, u64), after: Option<&str>) -> Vec<String> {
        let mut ids = IdsAfter::new(Some(&sorted.0), sorted.1, &log.0, log.1, after).unwrap();
        let mut out = Vec::new();
        while let Some(id) = ids.next_id().unwrap() {
            out.push(id);
        }
        out
    }

    #[test]
    fn the_sorted_file_and_the_log_merge_in_id_order() {
        let sorted = file(b"a\nc\ne\ng\n");
        let log = file(b"+d\n-c\n+a\n+h\n-h\n+b\n-g\n+g\n");
        assert_eq!(all(&sorted, &log, None), ["a", "b", "d", "e", "g"]);
        let junk = file(b"+a\njunk\n");
        let ids = IdsAfter::new(Some(&sorted.0), sorted.1, &junk.0, junk.1, None).unwrap();
        assert!(ids.damaged());
        assert_eq!(all(&sorted, &log, Some("b")), ["d", "e", "g"]);
        assert_eq!(all(&sorted, &log, Some("g")), Vec::<String>::new());
        let mut out = Vec::new();
        let written = merge_into(&sorted.0, sorted.1, &log.0, log.1, &mut out).unwrap();
        assert_eq!(written, Some(out.len() as u64));
        assert_eq!(out, b"a\nb\nd\ne\ng\n");
        let empty = file(b"");
        assert_eq!(all(&empty, &empty, None), Vec::<String>::new());
    }

    #[test]
    fn a_log_that_ends_inside_a_line_or_short_of_its_length_is_damaged() {
        let (whole, len) = file(b"+a\n-b\n");
        assert!(!read_log(&whole, len).unwrap().1);
        assert!(!read_log(&whole, 0).unwrap().1, "empty");
        // Junk after the last line (zeros a power loss left), inside the valid length.
        let (torn, len) = file(b"+a\n-b\n\0\0");
        let (last, damaged) = read_log(&torn, len).unwrap();
        assert!(damaged);
        assert_eq!(last.len(), 2, "the whole lines are still read");
        // A file shorter than the length the state records, even at a line's end.
        assert!(read_log(&whole, len + 3).unwrap().1);
    }
}
