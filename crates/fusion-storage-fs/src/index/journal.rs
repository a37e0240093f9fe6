//! The journal: one line per write to a session, in the order of their timestamps, which
//! is the newest-first listing read backwards.
//!
//! ```text
//! 1733000000123456 w user-1        user-1 written; its updated_at is now this
//! 1733000000123457 w tenant:7:c    created or written
//! 1733000000123460 d user-1        user-1 deleted
//! ```
//!
//! Every timestamp is later than the one before (the index lock hands them out), so the
//! file is sorted by `(timestamp, id)` and a cursor is found by binary search. A session
//! written many times has many lines; only the last one is its place in the order, and
//! the others are *stale*. A listing skips a line whose session reports another
//! `updated_at`; compaction drops the stale lines once they are half the file.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::hash::Hasher;
use std::io::{self, Write};

use super::lines;

/// What a line says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// The session was created or written; its `updated_at` is the line's timestamp.
    Write,
    /// The session was deleted.
    Delete,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The timestamp, in Unix microseconds.
    pub(crate) t: i64,
    /// What happened.
    pub(crate) kind: Kind,
    /// The session.
    pub(crate) id: String,
}

/// The line for a write (or delete) of `id` at `t`.
pub(crate) fn encode(t: i64, kind: Kind, id: &str) -> Vec<u8> {
    let kind = match kind {
        Kind::Write => 'w',
        Kind::Delete => 'd',
    };
    format!("{t} {kind} {id}\n").into_bytes()
}

/// Parses one line (without its `\n`); `None` if it is not one [`encode`] writes.
pub(crate) fn parse(line: &[u8]) -> Option<Entry> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    let t = parts.next()?.parse().ok()?;
    let kind = match parts.next()? {
        "w" => Kind::Write,
        "d" => Kind::Delete,
        _ => return None,
    };
    let id = parts.next()?;
    fusion_core::SessionId::validate(id).ok()?;
    Some(Entry {
        t,
        kind,
        id: id.to_string(),
    })
}

/// The longest line [`encode`] writes: a 20-character timestamp, the kind and a 128-byte
/// id, with separators.
pub(crate) const MAX_LINE: usize = 20 + 3 + 128 + 1;

/// The offset of the first line of `[0, len)` whose `(t, id)` is not below `target`:
/// every line before it sorts before `target`. A line that does not parse counts as
/// below (it can only be junk, which readers skip).
pub(crate) fn lower_bound(file: &File, len: u64, target: (i64, &str)) -> io::Result<u64> {
    lines::lower_bound(file, len, MAX_LINE, |line| {
        parse(line).is_none_or(|e| (e.t, e.id.as_str()) < target)
    })
}

/// Where compaction reads lines from: a journal file's valid prefix, or scanned
/// `(t, id)` writes; each sorted by `(t, id)`.
pub(crate) enum Source<'a> {
    /// `[0, end)` of a journal file.
    File(&'a File, u64),
    /// Writes found by a scan of the session files.
    Scanned(&'a [(i64, String)]),
}

impl Source<'_> {
    /// Calls `f` with every entry, in order; returns whether every line parsed.
    fn for_each(&self, mut f: impl FnMut(Entry)) -> io::Result<bool> {
        match self {
            Source::File(file, end) => for_each_line(file, *end, |_, entry| f(entry)),
            Source::Scanned(records) => {
                for (t, id) in records.iter() {
                    f(Entry {
                        t: *t,
                        kind: Kind::Write,
                        id: id.clone(),
                    });
                }
                Ok(true)
            }
        }
    }

    /// The entries, in order, as an iterator.
    fn entries(&self) -> io::Result<Box<dyn Iterator<Item = io::Result<Entry>> + '_>> {
        Ok(match self {
            Source::File(file, end) => {
                let mut lines = lines::Forward::new(file, 0, *end)?;
                Box::new(std::iter::from_fn(move || {
                    loop {
                        match lines.next_line() {
                            Err(err) => return Some(Err(err)),
                            Ok(None) => return None,
                            Ok(Some(line)) => {
                                if let Some(entry) = parse(line) {
                                    return Some(Ok(entry));
                                }
                            }
                        }
                    }
                }))
            }
            Source::Scanned(records) => Box::new(records.iter().map(|(t, id)| {
                Ok(Entry {
                    t: *t,
                    kind: Kind::Write,
                    id: id.clone(),
                })
            })),
        })
    }
}

/// Writes, sorted by `(t, id)`, the lines of `sources` that are still the place of a
/// live session: for each id only its newest line (once), and not if that is a delete.
/// Returns how many bytes were written, and whether every line of the sources parsed
/// (the rest are left out). Memory: one 128-bit hash per distinct id.
pub(crate) fn compact_into(
    sources: &[Source<'_>],
    out: &mut impl Write,
) -> io::Result<(u64, bool)> {
    // The newest line of each id, and whether it is a write not yet written out.
    let mut newest: HashMap<u128, (i64, bool)> = HashMap::new();
    let mut all_parsed = true;
    for source in sources {
        all_parsed &= source.for_each(|entry| {
            let slot = newest.entry(id_hash(&entry.id)).or_insert((entry.t, false));
            if entry.t >= slot.0 {
                *slot = (entry.t, entry.kind == Kind::Write);
            }
        })?;
    }
    // Merge the sorted sources, smallest `(t, id)` first.
    let mut iters = Vec::with_capacity(sources.len());
    for source in sources {
        iters.push(source.entries()?);
    }
    let mut heads: BinaryHeap<Reverse<(i64, String, usize, Kind)>> = BinaryHeap::new();
    for (index, iter) in iters.iter_mut().enumerate() {
        if let Some(entry) = iter.next().transpose()? {
            heads.push(Reverse((entry.t, entry.id, index, entry.kind)));
        }
    }
    let mut written = 0;
    while let Some(Reverse((t, id, index, kind))) = heads.pop() {
        if let Some(entry) = iters[index].next().transpose()? {
            heads.push(Reverse((entry.t, entry.id, index, entry.kind)));
        }
        let slot = newest
            .get_mut(&id_hash(&id))
            .expect("seen in the first pass");
        if kind == Kind::Write && *slot == (t, true) {
            slot.1 = false;
            let line = encode(t, kind, &id);
            written += line.len() as u64;
            out.write_all(&line)?;
        }
    }
    Ok((written, all_parsed))
}

/// Calls `f` with the index and contents of every well-formed line of `[0, end)`;
/// returns whether every line was.
pub(crate) fn for_each_line(
    file: &File,
    end: u64,
    mut f: impl FnMut(u64, Entry),
) -> io::Result<bool> {
    let mut all_parsed = true;
    lines::for_each_line(file, 0, end, |index, line| match parse(line) {
        Some(entry) => f(index, entry),
        None => all_parsed = false,
    })?;
    Ok(all_parsed)
}

/// A 128-bit hash of an id: two SipHash runs with fixed, different keys, so that ids
/// never collide in practice (2^-64 for a billion ids).
fn id_hash(id: &str) -> u128 {
    let hash = |salt: u8| {
        let mut hasher = std::hash::DefaultHasher::new();
        hasher.write_u8(salt);
        hasher.write(id.as_bytes());
        hasher.finish()
    };
    (u128::from(hash(1)) << 64) | u128::from(hash(2))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::lines::Backward;
    use super::*;

    fn journal(entries: &[(i64, Kind, &str)]) -> (File, u64) {
        let mut file = tempfile::tempfile().unwrap();
        for &(t, kind, id) in entries {
            file.write_all(&encode(t, kind, id)).unwrap();
        }
        let len = file.metadata().unwrap().len();
        (file, len)
    }

    fn backward(file: &File, end: u64) -> Vec<i64> {
        let mut lines = Backward::new(file, end);
        let mut ts = Vec::new();
        while let Some(line) = lines.next_line().unwrap() {
            ts.push(parse(&line).unwrap().t);
        }
        ts
    }

    #[test]
    fn lines_are_read_backwards_and_found_by_binary_search() {
        let entries: Vec<(i64, Kind, String)> = (0..5000)
            .map(|i| (i * 2, Kind::Write, format!("s{}", i % 7)))
            .collect();
        let refs: Vec<(i64, Kind, &str)> = entries
            .iter()
            .map(|(t, k, id)| (*t, *k, id.as_str()))
            .collect();
        let (file, len) = journal(&refs);
        let all = backward(&file, len);
        assert_eq!(all.len(), 5000);
        assert!(all.windows(2).all(|w| w[0] == w[1] + 2));
        for (t, id) in [
            (0, "s0"),
            (1, "a"),
            (4000, "s0"),
            (4000, "s9"),
            (99_999, "x"),
        ] {
            let at = lower_bound(&file, len, (t, id)).unwrap();
            let before = backward(&file, at);
            let expected = refs
                .iter()
                .filter(|(et, _, eid)| (*et, *eid) < (t, id))
                .count();
            assert_eq!(before.len(), expected, "({t}, {id})");
        }
        assert_eq!(lower_bound(&file, 0, (5, "a")).unwrap(), 0);
    }

    #[test]
    fn compaction_keeps_the_last_line_of_each_live_session() {
        let (file, len) = journal(&[
            (1, Kind::Write, "a"),
            (2, Kind::Write, "b"),
            (3, Kind::Write, "a"),
            (4, Kind::Delete, "b"),
            (5, Kind::Write, "c"),
        ]);
        let mut out = Vec::new();
        let written = compact_into(&[Source::File(&file, len)], &mut out).unwrap();
        assert_eq!(out, b"3 w a\n5 w c\n");
        // Several sorted sources merge; the same write twice is written once.
        let (other, other_len) = journal(&[(2, Kind::Write, "d"), (6, Kind::Write, "a")]);
        let scanned = vec![(5, "c".to_string()), (7, "e".to_string())];
        let mut merged = Vec::new();
        compact_into(
            &[
                Source::File(&file, len),
                Source::File(&other, other_len),
                Source::Scanned(&scanned),
            ],
            &mut merged,
        )
        .unwrap();
        assert_eq!(merged, b"2 w d\n5 w c\n6 w a\n7 w e\n");
        assert_eq!(written, (out.len() as u64, true));
        assert_eq!(parse(b"12 x a"), None);
        assert_eq!(parse(b"12 w ../a"), None);
    }
}
