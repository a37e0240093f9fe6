//! Message ids: what makes an append safe to retry.
//!
//! A message may carry an id ([`ChatMessage::id`](crate::ChatMessage::id)), given once when
//! the message is created and kept wherever the message goes. Storage uses it to store a
//! message at most once: an append whose reply was lost (the server applied it, the
//! connection dropped before the answer came back) can be sent again, and the messages
//! already stored are not stored twice (see [`DEDUP_WINDOW`] for exactly what every
//! backend promises).
//!
//! [`MessageId::new`] makes a UUIDv7: 48 bits of milliseconds since the Unix epoch, then
//! random bits, so ids sort roughly by creation time and never collide in practice. Any
//! other id an application already has (a ULID, a database key, an upstream event id)
//! works as long as it fits [`MessageId::parse`]'s rules.

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{ChatMessage, Error};

/// How far back every backend looks for a message's id when it is appended again: the
/// ids of the session's last `DEDUP_WINDOW` messages.
///
/// An [`append`](crate::ConversationStorage::append) does not store a message whose id
/// is one of those (it is already there), and stores the rest of the batch in order. So a
/// retry of an append is exactly-once as long as fewer than `DEDUP_WINDOW` messages were
/// appended to the session by others between the first attempt and the retry; a
/// [`RetryLayer`](https://docs.rs/fusion-layers) retries within milliseconds. Backends
/// may look further. Messages without an
/// id are always stored.
pub const DEDUP_WINDOW: usize = 64;

/// The messages of `batch` an append stores: every message without an id, and every
/// message whose id `is_stored` does not find among the session's stored ids, in order.
/// Borrows `batch` when it stores all of it, the usual case.
///
/// Backends that deduplicate in Rust (memory, the file system, the trait's default
/// `append`) call this with a lookup of the ids of the session's last [`DEDUP_WINDOW`]
/// messages (or more); the server-side backends do the same inside their write.
///
/// ```
/// use fusion_core::{ChatMessage, MessageId, unstored};
///
/// let a = ChatMessage::user("a").with_new_id();
/// let b = ChatMessage::user("b").with_new_id();
/// let stored = [a.id.clone().unwrap()];
/// let batch = [a, b.clone(), ChatMessage::user("no id")];
/// let fresh = unstored(&batch, |id| stored.contains(id));
/// assert_eq!(fresh.len(), 2);
/// assert_eq!(fresh[0], b);
/// ```
pub fn unstored<'a>(
    batch: &'a [ChatMessage],
    mut is_stored: impl FnMut(&MessageId) -> bool,
) -> Cow<'a, [ChatMessage]> {
    let mut stored = |m: &ChatMessage| m.id.as_ref().is_some_and(&mut is_stored);
    let Some(first) = batch.iter().position(&mut stored) else {
        return Cow::Borrowed(batch);
    };
    let mut kept = batch[..first].to_vec();
    kept.extend(batch[first + 1..].iter().filter(|m| !stored(m)).cloned());
    Cow::Owned(kept)
}

/// A message's stable id: 1 to [`MessageId::MAX_LEN`] characters from `A-Z a-z 0-9`
/// and `-_.:`, so it needs no escaping in JSON, SQL, Lua or a log line.
///
/// ```
/// use fusion_core::MessageId;
///
/// let fresh = MessageId::new();
/// assert_eq!(fresh.as_str().len(), 36); // a UUIDv7, e.g. 0193a5c4-...
/// let mine: MessageId = "evt_01J9Z3".parse()?;
/// assert!("two words".parse::<MessageId>().is_err());
/// # Ok::<(), fusion_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// The longest id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// A fresh UUIDv7: the time in milliseconds, then 74 bits that differ for every id
    /// this process makes (a per-process random key mixed with a counter), so two ids
    /// never repeat within a process and collide across processes with chance 2^-74 per
    /// millisecond.
    ///
    /// Costs no system call: the random key is drawn once per process.
    #[allow(clippy::new_without_default)] // Every call is a different id: not a default.
    pub fn new() -> Self {
        static KEY: LazyLock<u64> = LazyLock::new(|| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            hasher.finish()
        });
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Two outputs of a bijective mix of (key + counter): distinct for every counter.
        let a = mix(KEY.wrapping_add(count));
        let b = mix(a ^ 0x9e37_79b9_7f4a_7c15);
        let high = (millis << 16) | 0x7000 | (b >> 52); // version 7 and 12 bits
        let low = (a >> 2) | 0x8000_0000_0000_0000; // variant 10 and 62 bits
        let mut text = String::with_capacity(36);
        for (value, digits) in [
            (high >> 32, 8),
            (high >> 16, 4),
            (high, 4),
            (low >> 48, 4),
            (low, 12),
        ] {
            if !text.is_empty() {
                text.push('-');
            }
            push_hex(&mut text, value, digits);
        }
        MessageId(text)
    }

    /// Checks `id` against the rules above; [`Error::InvalidMessageId`] says which it
    /// breaks.
    pub fn parse(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        match invalid_because(&id) {
            None => Ok(MessageId(id)),
            Some(reason) => Err(Error::InvalidMessageId { id, reason }),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why `id` is not a valid message id, or `None` if it is.
fn invalid_because(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("it is empty")
    } else if id.len() > MessageId::MAX_LEN {
        Some("it is longer than 64 bytes")
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        Some("it holds a character other than A-Z, a-z, 0-9, '-', '_', '.' and ':'")
    } else {
        None
    }
}

/// SplitMix64's finaliser: a bijection of `u64` that scatters neighbouring inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn push_hex(out: &mut String, value: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(HEX[((value >> (4 * i)) & 0xf) as usize] as char);
    }
}

impl FromStr for MessageId {
    type Err = Error;

    fn from_str(id: &str) -> Result<Self, Error> {
        MessageId::parse(id)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

impl AsRef<str> for MessageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Stored ids are checked when read, so a hand-edited file cannot smuggle an id that a
/// backend's own encoding (a Lua pattern, a separator) would misread.
impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        match invalid_because(&id) {
            None => Ok(MessageId(id)),
            Some(reason) => Err(serde::de::Error::custom(format!(
                "invalid message id {id:?}: {reason}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_uuid_v7_distinct_and_time_ordered() {
        let mut seen = std::collections::HashSet::new();
        let first = MessageId::new();
        for _ in 0..10_000 {
            let id = MessageId::new();
            let text = id.as_str();
            assert_eq!(text.len(), 36, "{text}");
            let dashes: Vec<usize> = text.match_indices('-').map(|(i, _)| i).collect();
            assert_eq!(dashes, [8, 13, 18, 23], "{text}");
            assert_eq!(&text[14..15], "7", "version 7: {text}");
            assert!(
                matches!(&text[19..20], "8" | "9" | "a" | "b"),
                "variant: {text}"
            );
            assert!(invalid_because(text).is_none());
            assert!(seen.insert(id), "an id repeated");
        }
        // The first 48 bits are milliseconds: a later id never sorts before an earlier one
        // made a millisecond or more before it.
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(MessageId::new().as_str()[..13] > first.as_str()[..13]);
    }

    #[test]
    fn parse_refuses_what_would_need_escaping() {
        for good in ["a", "evt_01J9Z3", "msg:1.2-3", &"x".repeat(64)] {
            assert_eq!(MessageId::parse(good).unwrap().as_str(), good);
        }
        for (bad, why) in [
            ("", "empty"),
            (&"x".repeat(65) as &str, "longer than 64"),
            ("a b", "character"),
            ("a\"b", "character"),
            ("a\nb", "character"),
            ("é", "character"),
        ] {
            let err = MessageId::parse(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidMessageId { id, .. } if id == bad),
                "{err:?}"
            );
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    #[test]
    fn a_stored_id_is_checked_when_read() {
        let id: MessageId = serde_json::from_str(r#""abc-1""#).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""abc-1""#);
        let err = serde_json::from_str::<MessageId>(r#""a b""#).unwrap_err();
        assert!(err.to_string().contains("invalid message id"), "{err}");
    }
}
