//! What a session's meta hash holds and how it reads back: the metadata fields a
//! [`SessionMeta`] is stored as, and the reply of the `INFO` script (a session's count
//! and meta hash, read in one step) turned into a [`SessionInfo`].
//!
//! Fields the hash lacks mean "unset": no owner, no title, no tags, an empty data map.
//! Sessions stored by earlier releases have none of them, and read as sessions without
//! metadata; sessions stored before generations have no `gen` either and read as
//! [`LEGACY_GENERATION`]. A field that is not what Fusion writes (tags that are not a JSON
//! array of strings, say) makes the session [`Error::Corrupt`], naming it and the field.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fusion_core::{
    Error, LEGACY_GENERATION, Result, SessionInfo, SessionMeta, unix_micros, validate_owner,
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
/// without metadata stores none.
pub(crate) fn fields(meta: &SessionMeta) -> Vec<(&'static str, String)> {
    META_FIELDS
        .into_iter()
        .zip(values(meta))
        .filter_map(|(field, value)| Some((field, value?)))
        .collect()
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
        let mut fields = [(); 7].map(|()| None);
        for (slot, value) in fields.iter_mut().zip(items) {
            *slot = FromRedisValue::from_redis_value(value)?;
        }
        let [created_at, updated_at, generation, owner, title, tags, data] = fields;
        Ok(Some(Self {
            len,
            created_at,
            updated_at,
            generation,
            meta: [owner, title, tags, data],
        }))
    }

    /// The owner, as stored.
    pub(crate) fn owner(&self) -> Option<&str> {
        self.meta[0].as_deref()
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
            .data("k", json!([1]));
        let stored = fields(&meta);
        let names: Vec<&str> = stored.iter().map(|(field, _)| *field).collect();
        assert_eq!(names, ["owner", "tags", "data"]);
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
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(read.updated_ms(), 1_700_000_000_456);
        let info = read.info(&keys, "s").unwrap();
        assert_eq!((info.message_count, info.generation), (2, 42));
        assert_eq!(info.meta, meta);
    }

    #[test]
    fn absent_and_foreign_sessions_read_as_none_and_bare_hashes_as_legacy() {
        for len in [0, -1] {
            let value = Value::Array(vec![Value::Int(len)]);
            assert_eq!(Stored::from_reply(value).unwrap(), None);
        }
        let bare = Stored::from_reply(reply(&[None; 7])).unwrap().unwrap();
        let info = bare.info(&Keys::new("p"), "s").unwrap();
        assert_eq!(info.generation, LEGACY_GENERATION);
        assert_eq!((info.created_at, info.updated_at), (None, None));
        assert_eq!(bare.updated_ms(), 0);
        assert!(info.meta.is_empty());
    }

    #[test]
    fn a_field_fusion_did_not_write_is_corrupt_naming_session_and_field() {
        let cases: [(usize, &str, &str); 5] = [
            (2, "x7", "`gen`"),
            (3, "no spaces allowed", "`owner`"),
            (5, "{\"not\": \"a list\"}", "`tags`"),
            (5, "[1, 2]", "`tags`"),
            (6, "[\"not an object\"]", "`data`"),
        ];
        for (at, text, field) in cases {
            let mut items = [None; 7];
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
