//! What a session's lock file stores: its generation and its counters (when it was
//! created and last written, how many messages it holds and how long its file is, and
//! when it expires), in a fixed-width text form that every write stores with one in-place
//! `write()`.
//!
//! ```text
//! 0000004242424242                                               <- generation, padded to 64 bytes
//! created +0001733000000123456 updated +0001733000000654321 messages 00000000000000000012 bytes 00000000000000001234
//! created +0001733000000123456 updated +0001733000000654321 messages 00000000000000000012 bytes 00000000000000001234 expires +0001733003600654321 idle 00000000003600000000 indexed +0001733003600123456
//! created +0001600000000000000 updated +0001700000000000000 messages 00000000000000000012 bytes 00000000000000001234 copied +0001733000000123456
//! ```
//!
//! The second line is one of the three: the first for a session that never expires, the
//! second for one that does, the third for one created as a copy with the times it had
//! elsewhere. `expires` is the instant it expires and `idle` the span an
//! idle expiry adds to each write's time (absent for a fixed instant): the numbers of
//! [`StoredExpiry`], here because every write reads this line under its lock anyway, so
//! moving an idle expiry costs no extra read or write. `indexed` is the instant the
//! expiry index lists the session at (see [`crate::index`]), at or before `expires`.
//! `copied` is when the index recorded the creation of a copy, whose journal line is
//! placed at its given `updated` (see `crate::index::journal`). Each is optional, and a
//! line without them (a session without expiry, or written before expiries existed)
//! reads as no expiry and no copy. The line is padded with spaces to one length, so
//! each rewrite overwrites the whole of the one before.
//!
//! The generation keeps the place and width earlier versions gave it (they read the first
//! 64 bytes and trim them), so they still read it. The counters are a cache of facts the
//! session file also holds: `bytes` is the length of the session file they describe, and a
//! reader that finds another length (a crash between a write and its counters, a hand
//! edit, an earlier version's write) counts the lines again instead of trusting them. The
//! expiry is not such a fact; the metadata file keeps what it was set to, so that it
//! survives the loss of these counters ([`crate::meta_file`]). Timestamps are Unix
//! microseconds, the precision listings sort by.

use std::fmt::Write as _;

use fusion_core::StoredExpiry;

/// Where the counters start: the generation field before them is this long.
pub(crate) const GENERATION_FIELD: usize = 64;
/// How many digits a stored generation takes (below 2^53, so 16 decimal digits).
const GENERATION_WIDTH: usize = 16;
/// A `bytes` value that matches no file: stored before a rewrite replaces the session
/// file, so a crash before the final counters are stored makes readers count again.
pub(crate) const UNKNOWN_LEN: u64 = u64::MAX;

/// A session's counters; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    /// When the session was created, in Unix microseconds.
    pub(crate) created_us: i64,
    /// When the session was last written (messages or metadata), in Unix microseconds.
    pub(crate) updated_us: i64,
    /// How many messages the session file holds when it is `len` bytes long.
    pub(crate) count: u64,
    /// The length of the session file these counters describe, or [`UNKNOWN_LEN`].
    pub(crate) len: u64,
    /// When the session expires: written with `updated_us` by every write, which moves an
    /// idle expiry.
    pub(crate) expiry: StoredExpiry,
    /// The instant the expiry index lists the session at, if it does: at or before
    /// `expiry.expires_at`, so that a purge finds the session once it has expired.
    pub(crate) indexed: Option<i64>,
    /// For a session created as a copy with the times it had elsewhere: when the index
    /// recorded that creation, later than every line it held for the id then. Its
    /// journal line, placed at its given `updated_us`, may sort before lines of an earlier
    /// session of the id; those were recorded before this (see `crate::listing`).
    pub(crate) copied: Option<i64>,
}

/// The lock file's contents, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockContents {
    /// The stored generation; `None` if none is stored (an empty lock file) or what is
    /// stored is not one.
    pub(crate) generation: Option<u64>,
    /// Whether anything at all was stored in the generation field.
    pub(crate) generation_text: bool,
    /// The counters, if stored and well formed.
    pub(crate) counters: Option<Counters>,
}

impl LockContents {
    /// Whether the lock file holds anything: a new one (made by a session's first write
    /// or read, or after a delete unlinked the last) holds nothing.
    pub(crate) fn holds_anything(&self) -> bool {
        self.generation_text || self.counters.is_some()
    }
}

/// The generation field alone, [`GENERATION_FIELD`] bytes: what earlier versions stored.
pub(crate) fn format_generation(generation: u64) -> String {
    let mut text = format!("{generation:0GENERATION_WIDTH$}");
    while text.len() < GENERATION_FIELD - 1 {
        text.push(' ');
    }
    text.push('\n');
    text
}

/// The whole lock file for `generation` and `counters`: always the same length.
pub(crate) fn format(generation: u64, counters: &Counters) -> Vec<u8> {
    let mut text = format_generation(generation);
    let Counters {
        created_us,
        updated_us,
        count,
        len,
        expiry,
        indexed,
        copied,
    } = *counters;
    let _ = write!(
        text,
        "created {created_us:+020} updated {updated_us:+020} messages {count:020} bytes {len:020}"
    );
    if let Some(at) = expiry.expires_at {
        let _ = write!(text, " expires {at:+020}");
    }
    if let Some(idle) = expiry.idle {
        let _ = write!(text, " idle {idle:020}");
    }
    if let Some(at) = indexed {
        let _ = write!(text, " indexed {at:+020}");
    }
    if let Some(at) = copied {
        let _ = write!(text, " copied {at:+020}");
    }
    while text.len() < FORMATTED_LEN - 1 {
        text.push(' ');
    }
    text.push('\n');
    text.into_bytes()
}

/// The length of every lock file [`format()`] writes: the generation field, then
/// `created ` (8), `updated `, `messages `, `bytes ` with their separators (9, 10, 7), four
/// 20-character numbers, room for ` expires `, ` idle `, ` indexed `, ` copied ` (9, 6,
/// 9, 8) and their numbers, and the `\n`.
pub(crate) const FORMATTED_LEN: usize =
    GENERATION_FIELD + 8 + 9 + 10 + 7 + 4 * 20 + 9 + 6 + 9 + 8 + 4 * 20 + 1;

impl Counters {
    /// The lowest timestamp the session's next write or delete may get: after its last
    /// write and, for a copy, after its creation was recorded, so that the line of that
    /// write is the session's line recorded last (see `crate::index::journal`) whichever
    /// instance, on whichever clock, recorded the one before.
    pub(crate) fn next_floor(&self) -> i64 {
        let recorded = self
            .copied
            .map_or(self.updated_us, |c| c.max(self.updated_us));
        recorded.saturating_add(1)
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            created_us: 0,
            updated_us: 0,
            count: 0,
            len: UNKNOWN_LEN,
            expiry: StoredExpiry::NEVER,
            indexed: None,
            copied: None,
        }
    }
}

/// Parses a lock file's first bytes (at least [`FORMATTED_LEN`] of them if there are
/// that many). Never fails: what is not well formed reads as absent.
pub(crate) fn parse(bytes: &[u8]) -> LockContents {
    let head = &bytes[..bytes.len().min(GENERATION_FIELD)];
    let head = String::from_utf8_lossy(head);
    let head = head.trim();
    let generation = head.parse::<u64>().ok();
    let counters = bytes
        .get(GENERATION_FIELD..)
        .and_then(|rest| std::str::from_utf8(rest).ok())
        // Only a whole line: a write cut short in its padding has no `\n` yet.
        .and_then(|rest| rest.split_once('\n'))
        .and_then(|(line, _)| parse_counters(line));
    LockContents {
        generation,
        generation_text: !head.is_empty(),
        counters,
    }
}

fn parse_counters(line: &str) -> Option<Counters> {
    let mut words = Words(line.trim_end_matches(' ').split(' ').peekable());
    let created_us = words.field("created")?.parse().ok()?;
    let updated_us = words.field("updated")?.parse().ok()?;
    let count = words.field("messages")?.parse().ok()?;
    let len = words.field("bytes")?.parse().ok()?;
    let expiry = StoredExpiry {
        expires_at: words.optional("expires")?,
        idle: words.optional("idle")?,
    };
    let indexed = words.optional("indexed")?;
    let copied = words.optional("copied")?;
    words.0.next().is_none().then_some(Counters {
        created_us,
        updated_us,
        count,
        len,
        expiry,
        indexed,
        copied,
    })
}

/// The words of a counters line: `name value` pairs, each value 20 characters.
struct Words<'a>(std::iter::Peekable<std::str::Split<'a, char>>);

impl<'a> Words<'a> {
    /// The value of the field `name`, which must come next.
    fn field(&mut self, name: &str) -> Option<&'a str> {
        (self.0.next()? == name).then_some(())?;
        let value = self.0.next()?;
        (value.len() == 20).then_some(value)
    }

    /// The number in the field `name` if it comes next: `Some(None)` if it does not,
    /// `None` if it is malformed.
    fn optional(&mut self, name: &str) -> Option<Option<i64>> {
        if self.0.peek() != Some(&name) {
            return Some(None);
        }
        self.field(name)?.parse().ok().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_round_trip_at_one_fixed_length() {
        let counters = Counters {
            created_us: -5,
            updated_us: 1_733_000_000_123_456,
            count: 12,
            len: UNKNOWN_LEN,
            ..Counters::default()
        };
        let bytes = format(4_242_424_242, &counters);
        assert_eq!(bytes.len(), FORMATTED_LEN);
        assert_eq!(
            format(u64::from(u32::MAX), &Counters::default()).len(),
            bytes.len()
        );
        let parsed = parse(&bytes);
        assert_eq!(parsed.generation, Some(4_242_424_242));
        assert_eq!(parsed.counters, Some(counters));
        // Every field at its widest, and each expiry field alone.
        let widest = Counters {
            created_us: i64::MIN,
            updated_us: i64::MAX,
            count: u64::MAX,
            len: u64::MAX,
            expiry: StoredExpiry {
                expires_at: Some(i64::MIN),
                idle: Some(i64::MAX),
            },
            indexed: Some(i64::MIN),
            copied: Some(i64::MAX),
        };
        let fixed = Counters {
            expiry: StoredExpiry {
                expires_at: Some(1_733_003_600_000_000),
                idle: None,
            },
            ..counters
        };
        let moved = Counters {
            indexed: Some(7),
            ..counters
        };
        let copied = Counters {
            copied: Some(1_733_000_000_999_999),
            ..counters
        };
        for counters in [widest, fixed, moved, copied] {
            let bytes = format(1, &counters);
            assert_eq!(bytes.len(), FORMATTED_LEN, "{counters:?}");
            assert_eq!(parse(&bytes).counters, Some(counters));
        }
    }

    #[test]
    fn a_line_without_expiry_fields_reads_as_no_expiry() {
        // What the previous version of this format stored: no expiry fields, no padding.
        let line = "created +0000000000000000005 updated +0000000000000000009 \
                    messages 00000000000000000002 bytes 00000000000000000040\n";
        let mut bytes = format!("{:<63}\n", "0000000000000042").into_bytes();
        bytes.extend_from_slice(line.as_bytes());
        let counters = parse(&bytes).counters.unwrap();
        assert_eq!((counters.count, counters.len), (2, 40));
        assert_eq!(
            (counters.expiry, counters.indexed, counters.copied),
            (StoredExpiry::NEVER, None, None)
        );
        // Fields out of order, or repeated, are damage.
        let swapped = line.replace(" bytes", " idle 00000000000000000001 bytes");
        bytes.truncate(64);
        bytes.extend_from_slice(swapped.as_bytes());
        assert_eq!(parse(&bytes).counters, None);
    }

    #[test]
    fn earlier_lock_files_and_junk_read_as_absent_counters() {
        // What earlier versions store: the bare generation, or nothing.
        let old = parse(b"0000000000000042");
        assert_eq!((old.generation, old.counters), (Some(42), None));
        let empty = parse(b"");
        assert_eq!(
            (empty.generation, empty.generation_text, empty.counters),
            (None, false, None)
        );
        let mut torn = format(7, &Counters::default());
        torn.truncate(torn.len() - 10);
        assert_eq!(parse(&torn).counters, None);
        assert_eq!(parse(&torn).generation, Some(7));
        let junk = parse(b"not a number at all");
        assert_eq!((junk.generation, junk.generation_text), (None, true));
        // Earlier versions read the generation from the first 64 bytes, trimmed.
        let new = format(99, &Counters::default());
        let head = String::from_utf8_lossy(&new[..64]);
        assert_eq!(head.trim().parse::<u64>().unwrap(), 99);
    }
}
