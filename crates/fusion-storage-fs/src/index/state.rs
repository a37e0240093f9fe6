//! The index's state, stored in its lock file: whether the index covers every session,
//! how much of each shared index file is valid, and which generation of files is
//! current; and the latest timestamp a deletion was recorded at, which every creation's
//! line follows (see `Index::record`). Fixed-width text, rewritten in place with one
//! `write()` under the index lock.
//!
//! ```text
//! fusion-index 3 built 1 journal 00000000000000001234 ids 00000000000000000000 ids-log 00000000000000000088 epoch 00000000000000000003 deleted +0001733000000123456
//! ```
//!
//! A state of another form (`fusion-index 2` lacked `deleted`) reads as damaged: the index
//! is rebuilt from the session files, as for any damage, and `deleted` is recovered from
//! the live journals, which hold every delete line a listing may meet.

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
    pub(crate) deleted: i64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            built: false,
            journal_len: 0,
            ids_len: 0,
            ids_log_len: 0,
            epoch: 0,
            deleted: i64::MIN,
        }
    }
}

const MAGIC: &str = "fusion-index 3";

impl State {
    /// The stored form, always [`State::LEN`] bytes.
    pub(crate) fn format(&self) -> Vec<u8> {
        let mut text = String::with_capacity(Self::LEN);
        let _ = writeln!(
            text,
            "{MAGIC} built {} journal {:020} ids {:020} ids-log {:020} epoch {:020} deleted {:+020}",
            u8::from(self.built),
            self.journal_len,
            self.ids_len,
            self.ids_log_len,
            self.epoch,
            self.deleted,
        );
        text.into_bytes()
    }

    /// How long the stored form is.
    pub(crate) const LEN: usize = MAGIC.len() + 8 + 29 + 25 + 29 + 27 + 29 + 1;

    /// Parses the stored form; `None` for anything else (a new or damaged lock file).
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes.get(..Self::LEN)?).ok()?;
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
            deleted: field("deleted")?.parse().ok()?,
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
            deleted: 1_733_000_000_123_456,
        };
        let bytes = state.format();
        assert_eq!(bytes.len(), State::LEN);
        assert_eq!(State::default().format().len(), State::LEN);
        assert_eq!(
            State::parse(&State::default().format()),
            Some(State::default())
        );
        assert_eq!(State::parse(&bytes), Some(state));
        assert_eq!(State::parse(&bytes[..State::LEN - 1]), None);
        assert_eq!(State::parse(b""), None);
        let mut junk = bytes.clone();
        junk[20] = b'x';
        assert_eq!(State::parse(&junk), None);
    }
}
