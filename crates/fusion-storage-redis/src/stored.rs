//! What a session's meta hash holds and how it reads back: the metadata fields a
//! [`SessionMeta`] is stored as, and the reply of the `INFO` script (a session's count
//! and meta hash, read in one step) turned into a [`SessionInfo`].
//!
//! Fields the hash lacks mean "unset": no owner, no title, no tags, an empty data map,
//! no expiry. Sessions stored by earlier releases have none of them, and read as sessions
//! without metadata; sessions stored before generations have no `gen` either and read as
//! [`LEGACY_GENERATION`]. A field that is not what Fusion writes (tags that are not a JSON
//! array of strings, say) makes the session [`Error::Corrupt`], naming it and the field.
//!
//! An expiry is two fields, both microseconds ([`StoredExpiry`]): `expires_at`, the
//! instant, and for an idle expiry `idle`, the span each write adds to its `updated_at`.
//! The scripts compute `expires_at` from the same clock reading they store as
//! `updated_at`, so an idle session's `expires_at` is exactly `updated_at` plus `idle`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fusion_core::{
    Error, Expiry, LEGACY_GENERATION, Result, SessionInfo, SessionMeta, SessionTimes, StoredExpiry,
    is_expired, unix_micros, validate_owner,
};
use redis::{FromRedisValue, ParsingError, Value};

use crate::error::BACKEND;
use crate::keys::Keys;

/// The metadata fields of the meta hash, in the order the scripts take them.
pub(crate) const META_FIELDS: [&str; 4] = ["owner", "title", "tags", "data"];

/// The stored value of each metadata field of `meta`, in [`META_FIELDS`] order: `None`
/// for what is unset (no owner, no title, no tags, an empty data map), which the meta
/// hash then lacks.
pub(crate) fn values(meta: &SessionMeta) -> [Option<String>; 4] {
    [
        meta.owner.clone(),
        meta.title.clone(),
        (!meta.tags.is_empty()).then(|| meta.tags_json()),
        (!meta.data.is_empty()).then(|| meta.data_json()),
    ]
}

/// The metadata fields `meta` stores, as (field, value): only those set, so a session
/// without metadata stores none. Its expiry comes last, as [`expiry_arg`] gives it.
pub(crate) fn fields(meta: &SessionMeta) -> Vec<(&'static str, String)> {
    META_FIELDS
        .into_iter()
        .zip(values(meta))
        .filter_map(|(field, value)| Some((field, value?)))
        .chain(expiry_arg(meta.expiry.as_ref()))
        .collect()
}

/// How a script is told of an expiry: `("expires_at", µs since the epoch)` for a fixed
/// instant, `("idle", µs)` for an idle span, from which the script computes `expires_at`
/// with the clock reading it stores as `updated_at`.
pub(crate) fn expiry_arg(expiry: Option<&Expiry>) -> Option<(&'static str, String)> {
    let StoredExpiry { expires_at, idle } = StoredExpiry::of(expiry, 0);
    match (idle, expires_at) {
        (Some(idle), _) => Some(("idle", idle.to_string())),
        (None, Some(at)) => Some(("expires_at", at.to_string())),
        (None, None) => None,
    }
}

/// How the write script is told the times of a session copied from elsewhere
/// (`create_session_with_times`): `created_at` and `updated_at` in ms, as it stores its
/// own (the µs below a ms cut, as from its clock), for it to keep up to its clock.
pub(crate) fn times_fields(times: &SessionTimes) -> [(&'static str, String); 2] {
    let millis = |at| unix_micros(at).div_euclid(1000).to_string();
    [
        ("created_at", millis(times.created_at)),
        ("updated_at", millis(times.updated_at)),
    ]
}

/// One session as the `INFO` script read it: its length and its meta hash's fields, raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) len: usize,
    created_at: Option<String>,
    updated_at: Option<String>,
    generation: Option<String>,
    /// `owner`, `title`, `tags`, `data` as stored ([`META_FIELDS`] order).
    pub(crate) meta: [Option<String>; 4],
    /// `expires_at` and `idle` as stored.
    expiry: [Option<String>; 2],
}

impl Stored {
    /// The reply of the `INFO` (or metadata `UPDATE`) script: `None` for a session that
    /// does not exist (or whose keys hold something else), else what it holds.
    pub(crate) fn from_reply(value: Value) -> Result<Option<Self>, ParsingError> {
        let items: Vec<Value> = FromRedisValue::from_redis_value(value)?;
        let mut items = items.into_iter();
        let len: i64 = match items.next() {
            Some(len) => FromRedisValue::from_redis_value(len)?,
            None => return Err("an empty reply to a session read".into()),
        };
        let Ok(len @ 1..) = usize::try_from(len) else {
            return Ok(None);
        };
        let mut fields = [(); 9].map(|()| None);
        for (slot, value) in fields.iter_mut().zip(items) {
            *slot = FromRedisValue::from_redis_value(value)?;
        }
        let [
            created_at,
            updated_at,
            generation,
            owner,
            title,
            tags,
            data,
            expires_at,
            idle,
        ] = fields;
        Ok(Some(Self {
            len,
            created_at,
            updated_at,
            generation,
            meta: [owner, title, tags, data],
            expiry: [expires_at, idle],
        }))
    }

    /// The owner, as stored.
    pub(crate) fn owner(&self) -> Option<&str> {
        self.meta[0].as_deref()
    }

    /// The expiry member of this session in the expiry index, if it has an expiry, and
    /// the millisecond it is scored at; `None` also for an `expires_at` that is not a
    /// number (reading the session reports that).
    pub(crate) fn expiry_entry(&self, id: &str) -> Option<(String, i64)> {
        let at: i64 = self.expiry[0].as_deref()?.parse().ok()?;
        let member = crate::keys::expiry_member(id, self.owner());
        Some((member, due_ms(at)))
    }

    /// `updated_at` in ms since the epoch, as the listing sorts by it: 0 when unknown
    /// (a session stored before meta hashes), which sorts it as the epoch, as
    /// [`fusion_core::Position::of`] does a session without `updated_at`.
    pub(crate) fn updated_ms(&self) -> i64 {
        self.updated_at
            .as_deref()
            .and_then(parse_millis)
            .map_or(0, |at| unix_micros(at) / 1000)
    }

    /// The session's facts and metadata; [`Error::Corrupt`] if a field is not what
    /// Fusion writes there.
    pub(crate) fn info(&self, keys: &Keys, id: &str) -> Result<SessionInfo> {
        let corrupt = |field: &str, what: &str, why: String| {
            Error::corrupt(
                BACKEND,
                id,
                format!(
                    "field `{field}` of hash `{}` is not {what}: {why}",
                    keys.meta(id)
                ),
            )
        };
        let mut info = SessionInfo::new(id, self.len);
        info.created_at = self.created_at.as_deref().and_then(parse_millis);
        info.updated_at = self.updated_at.as_deref().and_then(parse_millis);
        info.generation = match &self.generation {
            None => LEGACY_GENERATION,
            Some(text) => generation(keys, id, text)?,
        };
        let [owner, title, tags, data] = &self.meta;
        if let Some(owner) = owner {
            validate_owner(owner).map_err(|err| corrupt("owner", "an owner", err.to_string()))?;
        }
        info.meta.owner.clone_from(owner);
        info.meta.title.clone_from(title);
        if let Some(tags) = tags {
            info.meta.tags = serde_json::from_str(tags)
                .map_err(|err| corrupt("tags", "a JSON array of strings", err.to_string()))?;
        }
        if let Some(data) = data {
            info.meta.data = serde_json::from_str(data)
                .map_err(|err| corrupt("data", "a JSON object", err.to_string()))?;
        }
        let [expires_at, idle] = &self.expiry;
        let micros = |field: &str, text: &Option<String>| {
            text.as_deref()
                .map(|text| {
                    text.parse::<i64>()
                        .map_err(|err| corrupt(field, "a number of microseconds", err.to_string()))
                })
                .transpose()
        };
        let expiry = StoredExpiry {
            expires_at: micros("expires_at", expires_at)?,
            idle: micros("idle", idle)?,
        };
        info.expires_at = expiry.expires_at_time();
        info.meta.expiry = expiry.expiry();
        Ok(info)
    }
}

/// A stored generation, read back; anything else under `gen` (someone other than Fusion
/// wrote it) makes the session corrupt, as an unreadable message does.
pub(crate) fn generation(keys: &Keys, id: &str, text: &str) -> Result<u64> {
    text.parse().map_err(|_| {
        Error::corrupt(
            BACKEND,
            id,
            format!(
                "field `gen` of hash `{}` is not a generation: {text:?}",
                keys.meta(id)
            ),
        )
    })
}

/// Whether a session whose `expires_at` field holds `expires_at` has expired at the
/// server time `(seconds, microseconds)` that `TIME` replied. A value Fusion did not write
/// never expires here: `session_info` reports it as corrupt.
pub(crate) fn is_past(expires_at: Option<&str>, (secs, micros): (i64, i64)) -> bool {
    let at = expires_at.and_then(|text| text.parse::<i64>().ok());
    is_expired(at, secs.saturating_mul(1_000_000).saturating_add(micros))
}

/// The millisecond Redis is told to drop a session expiring at `micros`: rounded up, so
/// the keys never go before the instant the session reports.
pub(crate) fn due_ms(micros: i64) -> i64 {
    micros.div_euclid(1000) + i64::from(micros.rem_euclid(1000) != 0)
}

/// A timestamp written by the scripts (ms since the epoch); `None` if someone else
/// wrote something unreadable there, since timestamps are informative only.
fn parse_millis(text: &str) -> Option<SystemTime> {
    let ms: u64 = text.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reply(items: &[Option<&str>]) -> Value {
        let mut values = vec![Value::Int(2)];
        values.extend(items.iter().map(|item| match item {
            Some(text) => Value::BulkString(text.as_bytes().to_vec()),
            None => Value::Nil,
        }));
        Value::Array(values)
    }

    #[test]
    fn metadata_stores_only_what_is_set_and_reads_back_whole() {
        assert!(fields(&SessionMeta::new()).is_empty());
        let meta = SessionMeta::new()
            .owner("o")
            .tags(["b", "a"])
            .data("k", json!([1]))
            .expiry(Expiry::Idle(Duration::from_micros(90_000_500)));
        let stored = fields(&meta);
        let names: Vec<&str> = stored.iter().map(|(field, _)| *field).collect();
        assert_eq!(names, ["owner", "tags", "data", "idle"]);
        let value = |name: &str| {
            stored
                .iter()
                .find(|(f, _)| *f == name)
                .map(|(_, v)| v.as_str())
        };
        let keys = Keys::new("p");
        let read = Stored::from_reply(reply(&[
            Some("1700000000123"),
            Some("1700000000456"),
            Some("42"),
            value("owner"),
            None,
            value("tags"),
            value("data"),
            Some("1700000090456500"),
            value("idle"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(read.updated_ms(), 1_700_000_000_456);
        let info = read.info(&keys, "s").unwrap();
        assert_eq!((info.message_count, info.generation), (2, 42));
        assert_eq!(info.meta, meta);
        assert_eq!(
            info.expires_at,
            Some(info.updated_at.unwrap() + Duration::from_micros(90_000_500))
        );
        let entry = read.expiry_entry("s");
        assert_eq!(entry, Some(("s/o".to_string(), 1_700_000_090_457)));
    }

    #[test]
    fn a_fixed_expiry_is_stored_as_its_instant_and_due_rounds_up() {
        let at = UNIX_EPOCH + Duration::from_micros(1_800_000_000_000_001);
        let arg = expiry_arg(Some(&Expiry::At(at)));
        assert_eq!(arg, Some(("expires_at", "1800000000000001".to_string())));
        assert_eq!(expiry_arg(None), None);
        assert_eq!(due_ms(1_000), 1);
        assert_eq!(due_ms(1_001), 2);
        assert_eq!(due_ms(0), 0);
        assert!(is_past(Some("1700000000000000"), (1_700_000_000, 0)));
        assert!(!is_past(Some("1700000000000001"), (1_700_000_000, 0)));
        assert!(!is_past(None, (i64::MAX, 0)));
        assert!(!is_past(Some("soon"), (i64::MAX, 0)));
    }

    #[test]
    fn a_copys_times_go_to_the_script_in_whole_ms() {
        let at = |micros| UNIX_EPOCH + Duration::from_micros(micros);
        let times = SessionTimes::new(at(1_999), at(1_700_000_000_123_456));
        assert_eq!(
            times_fields(&times),
            [
                ("created_at", "1".to_string()),
                ("updated_at", "1700000000123".to_string())
            ]
        );
    }

    #[test]
    fn absent_and_foreign_sessions_read_as_none_and_bare_hashes_as_legacy() {
        for len in [0, -1] {
            let value = Value::Array(vec![Value::Int(len)]);
            assert_eq!(Stored::from_reply(value).unwrap(), None);
        }
        let bare = Stored::from_reply(reply(&[None; 9])).unwrap().unwrap();
        let info = bare.info(&Keys::new("p"), "s").unwrap();
        assert_eq!(info.generation, LEGACY_GENERATION);
        assert_eq!((info.created_at, info.updated_at), (None, None));
        assert_eq!(bare.updated_ms(), 0);
        assert!(info.meta.is_empty());
    }

    #[test]
    fn a_field_fusion_did_not_write_is_corrupt_naming_session_and_field() {
        let cases: [(usize, &str, &str); 7] = [
            (2, "x7", "`gen`"),
            (3, "no spaces allowed", "`owner`"),
            (5, "{\"not\": \"a list\"}", "`tags`"),
            (5, "[1, 2]", "`tags`"),
            (6, "[\"not an object\"]", "`data`"),
            (7, "soon", "`expires_at`"),
            (8, "1e6", "`idle`"),
        ];
        for (at, text, field) in cases {
            let mut items = [None; 9];
            items[at] = Some(text);
            let stored = Stored::from_reply(reply(&items)).unwrap().unwrap();
            match stored.info(&Keys::new("p"), "s1") {
                Err(Error::Corrupt {
                    session_id, detail, ..
                }) => {
                    assert_eq!(session_id, "s1");
                    assert!(
                        detail.contains(field) && detail.contains("p:m:{s1}"),
                        "{detail}"
                    );
                }
                other => panic!("{text}: expected Corrupt, got {other:?}"),
            }
        }
    }
}
