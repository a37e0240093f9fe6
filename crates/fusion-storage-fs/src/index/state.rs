//! The index's state, stored in its lock file: whether the index covers every session,
//! how much of each shared index file is valid, and which generation of files is
//! current; and, on a line of its own, the latest timestamp a deletion was recorded at,
//! which every creation's line follows (see `Index::record`). Fixed-width text,
//! rewritten in place with one `write()` under the index lock.
//!
//! ```text
//! fusion-index 2 built 1 journal 00000000000000001234 ids 00000000000000000000 ids-log 00000000000000000088 epoch 00000000000000000003
//! deleted +0001733000000123456
//! ```
//!
//! The first line is the whole state of the version before `deleted` (format 2, which
//! reads and rewrites only those bytes), so the two can run on one directory at once:
//! each reads the other's state, rather than taking it for damaged and leaving the index
//! to a full rebuild, back and forth at every creation or deletion. A state without the
//! second line (a lock file that version made, or a torn write) is read with `deleted`
//! unknown ([`None`]), which the index lock's holder recovers from the live journals
//! (see `Index::read_state`). That version's deletions do not raise `deleted`, nor are
//! its creations stamped after it.

use std::fmt::Write as _;

/// The index's state; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    /// Whether the index holds every session (built by a scan, or started in a directory
    /// where only this version wrote); `false` until the first listing builds it.
    pub(crate) built: bool,
    /// The valid length of the compacted journal.
    pub(crate) journal_len: u64,
    /// The valid length of the sorted id file.
    pub(crate) ids_len: u64,
    /// The valid length of the id log.
    pub(crate) ids_log_len: u64,
    /// Changes whenever files are replaced, so that cached handles are reopened.
    pub(crate) epoch: u64,
    /// The latest timestamp of a deletion's journal line ([`i64::MIN`]: none known): a
    /// creation is stamped after it, whatever the clock of the instance that deleted.
    /// `None` while unknown (see the module docs); `Index::read_state` never returns it.
    pub(crate) deleted: Option<i64>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            built: false,
            journal_len: 0,
            ids_len: 0,
            ids_log_len: 0,
            epoch: 0,
            deleted: Some(i64::MIN),
        }
    }
}

const MAGIC: &str = "fusion-index 2";

/// How long the first line is: the whole state of format 2.
const FIRST_LEN: usize = MAGIC.len() + 8 + 29 + 25 + 29 + 27 + 1;

impl State {
    /// The stored form, always [`State::LEN`] bytes.
    pub(crate) fn format(&self) -> Vec<u8> {
        let mut text = String::with_capacity(Self::LEN);
        let _ = writeln!(
            text,
            "{MAGIC} built {} journal {:020} ids {:020} ids-log {:020} epoch {:020}",
            u8::from(self.built),
            self.journal_len,
            self.ids_len,
            self.ids_log_len,
            self.epoch,
        );
        let _ = match self.deleted {
            Some(deleted) => writeln!(text, "deleted {deleted:+020}"),
            None => writeln!(text, "deleted {:20}", ""),
        };
        text.into_bytes()
    }

    /// How long the stored form is.
    pub(crate) const LEN: usize = FIRST_LEN + 8 + 20 + 1;

    /// Parses the stored form; `None` for anything else (a new or damaged lock file). A
    /// first line without a second reads with `deleted` unknown.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes.get(..FIRST_LEN)?).ok()?;
        let rest = text.strip_prefix(MAGIC)?.strip_suffix('\n')?;
        let mut words = rest.split(' ').skip(1);
        let mut field = |name: &str| -> Option<&str> {
            (words.next()? == name).then_some(())?;
            words.next()
        };
        let built = match field("built")? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let state = State {
            built,
            journal_len: field("journal")?.parse().ok()?,
            ids_len: field("ids")?.parse().ok()?,
            ids_log_len: field("ids-log")?.parse().ok()?,
            epoch: field("epoch")?.parse().ok()?,
            deleted: bytes
                .get(FIRST_LEN..Self::LEN)
                .and_then(|line| std::str::from_utf8(line).ok())
                .and_then(|line| line.strip_prefix("deleted ")?.strip_suffix('\n'))
                .and_then(|value| value.parse().ok()),
        };
        words.next().is_none().then_some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_at_a_fixed_length() {
        let state = State {
            built: true,
            journal_len: 1,
            ids_len: 3,
            ids_log_len: 4,
            epoch: u64::MAX,
            deleted: Some(1_733_000_000_123_456),
        };
        let bytes = state.format();
        assert_eq!(bytes.len(), State::LEN);
        assert_eq!(State::default().format().len(), State::LEN);
        assert_eq!(
            State::parse(&State::default().format()),
            Some(State::default())
        );
        assert_eq!(State::parse(&bytes), Some(state));
        let unknown = State {
            deleted: None,
            ..state
        };
        assert_eq!(State::parse(&unknown.format()), Some(unknown));
        // The first line alone (a state format 2 wrote), or with a torn second one.
        assert_eq!(State::parse(&bytes[..FIRST_LEN]), Some(unknown));
        assert_eq!(State::parse(&bytes[..State::LEN - 1]), Some(unknown));
        assert_eq!(State::parse(&bytes[..FIRST_LEN - 1]), None);
        assert_eq!(State::parse(b""), None);
        let mut junk = bytes.clone();
        junk[20] = b'x';
        assert_eq!(State::parse(&junk), None);
    }

    #[test]
    fn the_first_line_is_the_state_format_2_reads_and_writes() {
        let state = State {
            built: true,
            journal_len: 12,
            ids_len: 34,
            ids_log_len: 56,
            epoch: 78,
            deleted: Some(-1),
        };
        // What the version before `deleted` (573ae1f) writes for this state, and all it
        // reads: `fusion-index 2`, then its fields, one line of 133 bytes.
        let earlier = "fusion-index 2 built 1 journal 00000000000000000012 \
             ids 00000000000000000034 ids-log 00000000000000000056 \
             epoch 00000000000000000078\n";
        assert_eq!(earlier.len(), 133);
        let bytes = state.format();
        assert_eq!(&bytes[..earlier.len()], earlier.as_bytes());
        assert_eq!(&bytes[earlier.len()..], b"deleted -0000000000000000001\n");
        // Its write in place of that line keeps the second.
        let mut rewritten = bytes.clone();
        rewritten[..earlier.len()].copy_from_slice(earlier.replace("78", "79").as_bytes());
        let parsed = State::parse(&rewritten).unwrap();
        assert_eq!((parsed.epoch, parsed.deleted), (79, Some(-1)));
    }
}
