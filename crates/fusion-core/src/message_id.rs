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
use std::hash::{BuildHasher, Hash, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ChatMessage, Error};

/// How far back every backend looks for a message's id when it is appended again: the
/// ids of the session's last `DEDUP_WINDOW` messages.
///
/// An [`append`](crate::ConversationStorage::append) does not store a message whose id
/// is one of those (it is already there), and stores the rest of the batch in order. So a
/// resent append is exactly-once as long as fewer than `DEDUP_WINDOW` messages were
/// appended to the session by others between the first attempt and the resend. A
/// [`RetryLayer`](https://docs.rs/fusion-layers) reads the session before another
/// attempt and sends only what it lacks, so its retries are exactly-once whatever others
/// appended. Backends may look further. Messages without an id are always stored.
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
///
/// Cheap to clone (a reference count, no copy of the text): an id travels with its message
/// into every store, layer and retry, and a clone per message per append must cost next
/// to nothing beside the append itself. Stored and sent as a plain JSON string.
#[derive(Clone, Eq, PartialOrd, Ord)]
pub struct MessageId(Arc<str>);

impl PartialEq for MessageId {
    /// Equal texts, compared from the end first: ids [`MessageId::new`] makes in one
    /// millisecond share their first 13 characters and differ in their last ones, so two
    /// different ids usually differ in their last 8 bytes, and one comparison of those
    /// spares the call that compares whole texts (every append checks that its batch
    /// holds no id twice: [`check_storable`](crate::check_storable)).
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.last_chunk::<8>() == b.last_chunk::<8>() && a == b
    }
}

impl Hash for MessageId {
    /// The text's hash, so equal ids (equal texts) hash alike.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

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
        // Written on the stack, so the id's one allocation is the shared text itself.
        let mut text = [0u8; 36];
        let mut at = 0;
        for (value, digits) in [
            (high >> 32, 8),
            (high >> 16, 4),
            (high, 4),
            (low >> 48, 4),
            (low, 12),
        ] {
            if at > 0 {
                text[at] = b'-';
                at += 1;
            }
            push_hex(&mut text[at..at + digits], value);
            at += digits;
        }
        let text = std::str::from_utf8(&text).expect("hex digits and dashes are ASCII");
        MessageId(Arc::from(text))
    }

    /// Checks `id` against the rules above; [`Error::InvalidMessageId`] says which it
    /// breaks.
    pub fn parse(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        match invalid_because(&id) {
            None => Ok(MessageId(Arc::from(id))),
            Some(reason) => Err(Error::InvalidMessageId { id, reason }),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `id` if it is valid: the one check every way in shares, before the text is copied
    /// into its shared allocation.
    fn checked(id: &str) -> Result<Self, &'static str> {
        match invalid_because(id) {
            None => Ok(MessageId(Arc::from(id))),
            Some(reason) => Err(reason),
        }
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

/// Fills `out` with the low `out.len()` hex digits of `value`, most significant first.
fn push_hex(out: &mut [u8], value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = out.len();
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = HEX[((value >> (4 * (digits - 1 - i))) & 0xf) as usize];
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

/// A JSON string, as `String` would be.
impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Stored ids are checked when read, so a hand-edited file cannot smuggle an id that a
/// backend's own encoding (a Lua pattern, a separator) would misread.
///
/// The text is checked where the deserializer holds it (borrowed from the input, or in its
/// scratch buffer) and copied once, into the id's shared allocation: no `String` first.
impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(IdVisitor)
    }
}

/// Builds a [`MessageId`] from whichever string the deserializer hands over.
struct IdVisitor;

impl Visitor<'_> for IdVisitor {
    type Value = MessageId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message id (a string)")
    }

    fn visit_str<E: de::Error>(self, id: &str) -> Result<MessageId, E> {
        MessageId::checked(id)
            .map_err(|reason| E::custom(format!("invalid message id {id:?}: {reason}")))
    }

    /// UTF-8 bytes, as `String` accepts them from formats that send text so.
    fn visit_bytes<E: de::Error>(self, id: &[u8]) -> Result<MessageId, E> {
        let id = std::str::from_utf8(id)
            .map_err(|_| E::invalid_value(de::Unexpected::Bytes(id), &self))?;
        self.visit_str(id)
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
    fn a_clone_shares_the_text() {
        let id = MessageId::new();
        let copy = id.clone();
        assert!(Arc::ptr_eq(&id.0, &copy.0));
        assert_eq!(copy, id);
        assert_eq!(format!("{copy:?}"), format!("MessageId({id})"));
    }

    #[test]
    fn every_string_a_deserializer_hands_over_is_read_and_checked() {
        let borrowed: MessageId = serde_json::from_str(r#""abc-1""#).unwrap();
        // An escape makes serde_json unescape into its scratch buffer: a transient `&str`.
        let unescaped: MessageId = serde_json::from_str(r#""abc\u002d1""#).unwrap();
        // A `Value` hands over its owned `String`.
        let owned: MessageId = serde_json::from_value(serde_json::json!("abc-1")).unwrap();
        assert_eq!(
            [&borrowed, &unescaped, &owned].map(MessageId::as_str),
            ["abc-1"; 3]
        );
        let bad = serde_json::from_value::<MessageId>(serde_json::json!("a b")).unwrap_err();
        assert!(bad.to_string().contains("invalid message id"), "{bad}");
        let not_text = serde_json::from_str::<MessageId>("17").unwrap_err();
        assert!(not_text.to_string().contains("a message id"), "{not_text}");
    }

    #[test]
    fn a_stored_id_is_checked_when_read() {
        let id: MessageId = serde_json::from_str(r#""abc-1""#).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""abc-1""#);
        let err = serde_json::from_str::<MessageId>(r#""a b""#).unwrap_err();
        assert!(err.to_string().contains("invalid message id"), "{err}");
    }
}
