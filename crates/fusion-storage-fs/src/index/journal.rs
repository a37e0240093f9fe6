//! The journal: one line per write to a session, in the order of their timestamps, which
//! is the newest-first listing read backwards.
//!
//! ```text
//! 1733000000123456 w user-1        user-1 written; its updated_at is now this
//! 1733000000123457 w tenant:7:c    created or written
//! 1733000000123460 d user-1        user-1 deleted
//! 1732000000000000 w@1733000000123461 user-1
//!                                   user-1 created anew as a copy last written at
//!                                   the first time, recorded at the second
//! ```
//!
//! Every timestamp is later than the one before (the index lock hands them out), so the
//! file is sorted by `(timestamp, id)` and a cursor is found by binary search. A session
//! written many times has many lines; only the last one is its place in the order, and
//! the others are *stale*. A listing skips a line whose session reports another
//! `updated_at`; compaction drops the stale lines once they are half the file.
//!
//! Which of an id's lines is its place is the one *recorded* last. That is the one with
//! the latest timestamp, but for the line of a session copied from elsewhere with its
//! times (`create_session_with_times`), stamped with its given `updated_at` and written
//! after lines of an earlier session of its id that sort after it (written, then deleted
//! or expired, since that time): such a line carries when it was recorded, `@` and a
//! timestamp after its kind, and supersedes every line of its id recorded before then,
//! later timestamps included. Compaction keeps each id's line recorded last; a listing,
//! which meets lines by timestamp, learns a copy's recording from its counters (see
//! `crate::listing`). Every other line is recorded at its timestamp and carries none, so
//! the lines of appends are as before.
//!
//! Why so: the copy must be listed at the `updated_at` it was given, which its
//! `session_info` reports, so its line cannot move after the earlier session's. A line
//! added at the copy's recording to redirect listings down to its own would be above
//! where a page that starts below it begins, so a listing learns from the session's
//! counters, which it reads for each line anyway, whichever page it reads. Compaction
//! reads no session, so the line itself tells it.

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
    /// When the line was recorded: `t`, but for the creation of a copy, placed at its
    /// given `updated_at` (see the module docs). Of an id's lines, the one recorded last
    /// is its place.
    pub(crate) recorded: i64,
}

/// The line for a write (or delete) of `id` at `t`, recorded then.
pub(crate) fn encode(t: i64, kind: Kind, id: &str) -> Vec<u8> {
    encode_recorded(t, kind, id, t)
}

/// The line for a write (or delete) of `id` at `t`, recorded at `recorded`.
pub(crate) fn encode_recorded(t: i64, kind: Kind, id: &str, recorded: i64) -> Vec<u8> {
    let kind = match kind {
        Kind::Write => 'w',
        Kind::Delete => 'd',
    };
    if recorded == t {
        format!("{t} {kind} {id}\n").into_bytes()
    } else {
        format!("{t} {kind}@{recorded} {id}\n").into_bytes()
    }
}

/// Parses one line (without its `\n`); `None` if it is not one [`encode_recorded`]
/// writes.
pub(crate) fn parse(line: &[u8]) -> Option<Entry> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    let t = parts.next()?.parse().ok()?;
    let kind = parts.next()?;
    let (kind, recorded) = match kind.split_once('@') {
        Some((kind, recorded)) => (kind, recorded.parse().ok()?),
        None => (kind, t),
    };
    let kind = match kind {
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
        recorded,
    })
}

/// The longest line [`encode_recorded`] writes: a 20-character timestamp, the kind, `@`
/// and another timestamp, and a 128-byte id, with separators.
pub(crate) const MAX_LINE: usize = 20 + 3 + 21 + 128 + 1;

/// The offset of the first line of `[0, len)` whose `(t, id)` is not below `target`:
/// every line before it sorts before `target`. A line that does not parse counts as
/// below (it can only be junk, which readers skip).
pub(crate) fn lower_bound(file: &File, len: u64, target: (i64, &str)) -> io::Result<u64> {
    lines::lower_bound(file, len, MAX_LINE, |line| {
        parse(line).is_none_or(|e| (e.t, e.id.as_str()) < target)
    })
}

/// A session as a scan of the session files finds it, for a build of the index: placed
/// at its `updated_at`, recorded then or, for a copy not written since its creation,
/// when that creation was (see [`Entry::recorded`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Scanned {
    /// Its `updated_at`, in Unix microseconds.
    pub(crate) t: i64,
    /// The session.
    pub(crate) id: String,
    /// When its place was recorded.
    pub(crate) recorded: i64,
}

impl Scanned {
    /// A session last written at `t`, recorded then.
    #[cfg(test)]
    pub(crate) fn written_at(t: i64, id: &str) -> Self {
        Self {
            t,
            id: id.to_string(),
            recorded: t,
        }
    }

    /// The journal entry that places the session.
    fn entry(&self) -> Entry {
        Entry {
            t: self.t,
            kind: Kind::Write,
            id: self.id.clone(),
            recorded: self.recorded,
        }
    }
}

/// Where compaction reads lines from: a journal file's valid prefix, or scanned
/// sessions; each sorted by `(t, id)`.
pub(crate) enum Source<'a> {
    /// `[0, end)` of a journal file.
    File(&'a File, u64),
    /// The sessions a scan of the session files found.
    Scanned(&'a [Scanned]),
}

impl Source<'_> {
    /// Calls `f` with every entry, in order; returns whether every line parsed.
    fn for_each(&self, mut f: impl FnMut(Entry)) -> io::Result<bool> {
        match self {
            Source::File(file, end) => for_each_line(file, *end, |_, entry| f(entry)),
            Source::Scanned(records) => {
                records.iter().for_each(|record| f(record.entry()));
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
            Source::Scanned(records) => Box::new(records.iter().map(|record| Ok(record.entry()))),
        })
    }
}

/// Writes, sorted by `(t, id)`, the lines of `sources` that are still the place of a
/// live session: for each id only the line recorded last (once), and not if that is a
/// delete. Returns how many bytes were written, and whether every line of the sources
/// parsed (the rest are left out). Memory: one 128-bit hash per distinct id.
pub(crate) fn compact_into(
    sources: &[Source<'_>],
    out: &mut impl Write,
) -> io::Result<(u64, bool)> {
    // The line of each id recorded last, as `(recorded, t)`, and whether it is a write
    // not yet written out. By when it was recorded, not by its timestamp: a copy's
    // creation supersedes an earlier session's lines that sort after it.
    let mut last: HashMap<u128, ((i64, i64), bool)> = HashMap::new();
    let mut all_parsed = true;
    for source in sources {
        all_parsed &= source.for_each(|entry| {
            let at = (entry.recorded, entry.t);
            let slot = last.entry(id_hash(&entry.id)).or_insert((at, false));
            if at >= slot.0 {
                *slot = (at, entry.kind == Kind::Write);
            }
        })?;
    }
    // Merge the sorted sources, smallest `(t, id)` first.
    let mut iters = Vec::with_capacity(sources.len());
    for source in sources {
        iters.push(source.entries()?);
    }
    let head =
        |entry: Entry, index| Reverse((entry.t, entry.id, index, entry.kind, entry.recorded));
    let mut heads = BinaryHeap::new();
    for (index, iter) in iters.iter_mut().enumerate() {
        if let Some(entry) = iter.next().transpose()? {
            heads.push(head(entry, index));
        }
    }
    let mut written = 0;
    while let Some(Reverse((t, id, index, kind, recorded))) = heads.pop() {
        if let Some(entry) = iters[index].next().transpose()? {
            heads.push(head(entry, index));
        }
        let slot = last.get_mut(&id_hash(&id)).expect("seen in the first pass");
        if kind == Kind::Write && *slot == ((recorded, t), true) {
            slot.1 = false;
            let line = encode_recorded(t, kind, &id, recorded);
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
    // Every caller's `end` ends a line (a journal's valid length): not asked again.
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
        let scanned = [Scanned::written_at(5, "c"), Scanned::written_at(7, "e")];
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
        assert_eq!(parse(b"12 w@x a"), None);
    }

    #[test]
    fn compaction_keeps_the_line_recorded_last_though_later_ones_sort_after_it() {
        // `a` written at 4 and deleted at 6, then created anew as a copy last written at
        // 3, recorded at 8; `b` likewise, its earlier session expired (no delete), then
        // written again after the copy, at 10; `c` copied, then deleted at 9.
        let (earlier, earlier_len) = journal(&[
            (4, Kind::Write, "a"),
            (5, Kind::Write, "b"),
            (6, Kind::Delete, "a"),
            (9, Kind::Delete, "c"),
            (10, Kind::Write, "b"),
        ]);
        let mut copies = tempfile::tempfile().unwrap();
        for (t, id, recorded) in [(2, "b", 7), (3, "a", 8), (3, "c", 8)] {
            let line = encode_recorded(t, Kind::Write, id, recorded);
            copies.write_all(&line).unwrap();
        }
        let copies_len = copies.metadata().unwrap().len();
        let sources = [
            Source::File(&earlier, earlier_len),
            Source::File(&copies, copies_len),
        ];
        let mut out = Vec::new();
        compact_into(&sources, &mut out).unwrap();
        assert_eq!(out, b"3 w@8 a\n10 w b\n");
        // Folded again, with what it was folded from, it stays.
        let (folded, folded_len) = (tempfile::tempfile().unwrap(), out.len() as u64);
        (&folded).write_all(&out).unwrap();
        let mut again = Vec::new();
        let sources = [
            Source::File(&folded, folded_len),
            Source::File(&earlier, earlier_len),
        ];
        compact_into(&sources, &mut again).unwrap();
        assert_eq!(again, out);
        assert_eq!(
            parse(b"3 w@8 a"),
            Some(Entry {
                t: 3,
                kind: Kind::Write,
                id: "a".to_string(),
                recorded: 8
            })
        );
    }
}
