//! The pages of bulk delete: the list of selected sessions with the form that deletes
//! them, and the report of what was deleted and what failed.

use askama::Template;
use fusion::storage::{Expiry, Revision, SessionInfo, SessionMeta};
use fusion_core::StoredExpiry;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::assets::{AssetUrls, URLS};

/// One selected session as the confirmation lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub id: String,
    /// The title, when it has one.
    pub title: Option<String>,
    /// Its message count; `None` when nothing is stored under the id (already gone) or
    /// its facts cannot be read.
    pub count: Option<usize>,
    /// Why its facts cannot be read (a damaged metadata file): a session that is most
    /// wanted gone, and which the delete itself, reading none of them, can remove.
    pub damage: Option<String>,
    /// The revision it was read at ([`Revision::ABSENT`] when nothing is stored; `None`
    /// when damaged): its delete goes ahead only while it is still exactly that.
    pub revision: Option<Revision>,
    /// When it was last written (messages or metadata), in Unix microseconds as the
    /// backend records it, where it records one: its delete goes ahead only while it has
    /// not been written since, so a rename in another tab is not deleted unseen either.
    pub updated: Option<i64>,
    /// Its metadata as read ([`meta_digest`]; `None` when not stored or damaged): its
    /// delete goes ahead only while that is unchanged too.
    pub meta: Option<u64>,
}

impl Listed {
    /// Session `id`, described by what reading its facts gave: `Ok(None)` when nothing is
    /// stored under it. An error is `Err` unless it is damage to the session itself
    /// ([`Error::Corrupt`](fusion::Error::Corrupt)), which the page shows instead.
    pub(crate) fn read(
        id: String,
        info: fusion::Result<Option<SessionInfo>>,
    ) -> Result<Self, fusion::Error> {
        let info = match info {
            Ok(info) => info,
            Err(err @ fusion::Error::Corrupt { .. }) => {
                return Ok(Self {
                    id,
                    title: None,
                    count: None,
                    // Shown on the page: without the secrets a storage of the caller's
                    // own may quote, nor the server's paths, as `PageError::storage`
                    // shows its errors.
                    damage: Some(crate::shown_error::shown_error(&err.to_string())),
                    revision: None,
                    updated: None,
                    meta: None,
                });
            }
            Err(err) => return Err(err),
        };
        Ok(Self {
            id,
            title: info.as_ref().and_then(|info| info.meta.title.clone()),
            count: info.as_ref().map(|info| info.message_count),
            damage: None,
            revision: Some(info.as_ref().map_or(Revision::ABSENT, |info| Revision {
                generation: info.generation,
                len: info.message_count,
            })),
            updated: info
                .as_ref()
                .and_then(|info| info.updated_at)
                .map(fusion_core::unix_micros),
            meta: info.as_ref().map(|info| meta_digest(&info.meta)),
        })
    }
}

/// A digest of a session's title, owner, tags, data and expiry, for a delete to require
/// them as its page read them. The last write and the revision do not always tell: every
/// backend keeps the later of its stored last write and the clock's time, so after the
/// clock was set back a rename leaves both as they were; and a release before counters
/// renamed a file-system session without moving the last write it reports.
///
/// Stable across builds and releases, so a page served by one build and posted to an
/// upgraded one is not refused for nothing: the first 8 bytes, big-endian, of the SHA-256
/// of [`meta_encoding`]. (It was `DefaultHasher` over the `Debug` text, neither of which
/// is stable between Rust releases or builds.)
pub(crate) fn meta_digest(meta: &SessionMeta) -> u64 {
    let hash = Sha256::digest(meta_encoding(meta));
    let mut first = [0; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// The canonical bytes [`meta_digest`] hashes: `fusion-ui meta v1`, then the owner and
/// title (each `0`, or `1` and the text), the tags (their count, then each text), the data
/// map ([`encode_json`]) and the expiry ([`encode_expiry`]). A text is its length in
/// bytes as a `u64`, then its UTF-8; every number is big-endian.
///
/// `SessionMeta` is `#[non_exhaustive]` and fusion-core a semver dependency, so a build
/// may take a release with a field this encoding does not know. Left out, a change of it
/// alone would go unseen and its session be deleted, so metadata the known fields do not
/// rebuild whole ([`known_fields`]) gets `255` and its `Debug` text after them. That text
/// is not stable between Rust releases, but it is between two requests to one server,
/// and an upgrade can only refuse a delete posted from a page served before it (a 409;
/// a reload shows the page again), never let one through. Metadata using no such field
/// is encoded as it always was. The tests fail at once on a field added in this
/// workspace (`every_field_of_session_meta_counts`), so it is given its own encoding.
fn meta_encoding(meta: &SessionMeta) -> Vec<u8> {
    let mut out = b"fusion-ui meta v1".to_vec();
    for text in [&meta.owner, &meta.title] {
        match text {
            None => out.push(0),
            Some(text) => {
                out.push(1);
                encode_text(&mut out, text);
            }
        }
    }
    out.extend_from_slice(&(meta.tags.len() as u64).to_be_bytes());
    for tag in &meta.tags {
        encode_text(&mut out, tag);
    }
    encode_object(&mut out, &meta.data);
    encode_expiry(&mut out, meta.expiry.as_ref());
    if known_fields(meta) != *meta {
        out.push(255);
        encode_text(&mut out, &format!("{meta:?}"));
    }
    out
}

/// `meta` with only the fields [`meta_encoding`] encodes copied (the rest at their
/// defaults): equal to `meta` unless it uses a field added to `SessionMeta` since.
fn known_fields(meta: &SessionMeta) -> SessionMeta {
    let mut known = SessionMeta::new();
    known.owner.clone_from(&meta.owner);
    known.title.clone_from(&meta.title);
    known.tags.clone_from(&meta.tags);
    known.data.clone_from(&meta.data);
    known.expiry = meta.expiry;
    known
}

/// An expiry: `0` for none; `1` and the instant in Unix microseconds as an `i64`; `2`
/// and the idle span's seconds as a `u64` and nanoseconds as a `u32`.
///
/// A kind of expiry added to fusion-core after this encoding (`Expiry` is
/// `#[non_exhaustive]`) gets `3` and the form every backend stores it in
/// ([`encode_stored_expiry`]): numbers, stable between builds and releases, which tell
/// apart every two expiries a backend can tell apart. (It was the `Debug` text, which
/// is not stable between Rust releases.)
fn encode_expiry(out: &mut Vec<u8>, expiry: Option<&Expiry>) {
    match expiry {
        None => out.push(0),
        Some(Expiry::At(at)) => {
            out.push(1);
            out.extend_from_slice(&fusion_core::unix_micros(*at).to_be_bytes());
        }
        Some(Expiry::Idle(span)) => {
            out.push(2);
            out.extend_from_slice(&span.as_secs().to_be_bytes());
            out.extend_from_slice(&span.subsec_nanos().to_be_bytes());
        }
        Some(other) => {
            out.push(3);
            // Stored as if written at the epoch: a fixed instant, so the numbers depend
            // on the expiry alone.
            encode_stored_expiry(out, StoredExpiry::of(Some(other), 0));
        }
    }
}

/// An expiry as a backend stores it: its instant and its idle span, each `0`, or `1` and
/// the microseconds as an `i64`.
fn encode_stored_expiry(out: &mut Vec<u8>, stored: StoredExpiry) {
    // Whole, so a number added to the stored form cannot be left out unseen.
    let StoredExpiry { expires_at, idle } = stored;
    for micros in [expires_at, idle] {
        match micros {
            None => out.push(0),
            Some(micros) => {
                out.push(1);
                out.extend_from_slice(&micros.to_be_bytes());
            }
        }
    }
}

/// Its length in bytes (a big-endian `u64`), then its UTF-8.
fn encode_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// A JSON value, whatever order its object's keys were stored in: `n` null; `t`, `f`;
/// `u`, `i`, `d` and a number (`u64`, `i64`, or an `f64`'s bits), each big-endian; `s`
/// and a text; `a`, the count and each item; `o` and [`encode_object`].
fn encode_json(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(b'n'),
        Value::Bool(true) => out.push(b't'),
        Value::Bool(false) => out.push(b'f'),
        Value::Number(number) => {
            if let Some(n) = number.as_u64() {
                out.push(b'u');
                out.extend_from_slice(&n.to_be_bytes());
            } else if let Some(n) = number.as_i64() {
                out.push(b'i');
                out.extend_from_slice(&n.to_be_bytes());
            } else {
                out.push(b'd');
                let n = number.as_f64().unwrap_or(f64::NAN);
                out.extend_from_slice(&n.to_bits().to_be_bytes());
            }
        }
        Value::String(text) => {
            out.push(b's');
            encode_text(out, text);
        }
        Value::Array(items) => {
            out.push(b'a');
            out.extend_from_slice(&(items.len() as u64).to_be_bytes());
            for item in items {
                encode_json(out, item);
            }
        }
        Value::Object(map) => {
            out.push(b'o');
            encode_object(out, map);
        }
    }
}

/// An object: its count of keys, then each key (a text) and value, in the keys' byte
/// order.
fn encode_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
    for (key, value) in entries {
        encode_text(out, key);
        encode_json(out, value);
    }
}

/// "Delete these N sessions?" with the form that does it.
#[derive(Template, Debug)]
#[template(path = "bulk_confirm.html")]
pub(crate) struct ConfirmBulk {
    title: String,
    assets: &'static AssetUrls,
    sessions: Vec<Listed>,
}

impl ConfirmBulk {
    /// The question for `sessions`.
    pub(crate) fn new(sessions: Vec<Listed>) -> Self {
        Self {
            title: format!("Delete {} sessions?", sessions.len()),
            assets: &URLS,
            sessions,
        }
    }
}

/// A session bulk delete could not delete, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub id: String,
    pub reason: String,
}

/// What a bulk delete did.
#[derive(Template, Debug)]
#[template(path = "bulk_done.html")]
pub(crate) struct BulkDone {
    title: String,
    assets: &'static AssetUrls,
    deleted: Vec<String>,
    failed: Vec<Failure>,
}

impl BulkDone {
    /// The report of `deleted` and `failed`.
    pub(crate) fn new(deleted: Vec<String>, failed: Vec<Failure>) -> Self {
        let title = if failed.is_empty() {
            format!("Deleted {} sessions", deleted.len())
        } else {
            format!("{} of the sessions could not be deleted", failed.len())
        };
        Self {
            title,
            assets: &URLS,
            deleted,
            failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    /// The digests of fixed metadata, pinned: a page served by one build is posted to
    /// another, so a change of them refuses every delete from a page still open across an
    /// upgrade. Change them only on purpose, with a new version in [`meta_encoding`].
    #[test]
    fn the_digest_of_fixed_metadata_is_pinned() {
        let meta = SessionMeta::new()
            .owner("amy")
            .title("Clean up the logs")
            .tags(["ops", "logs"])
            .data("ticket", 1234)
            .data("nested", json!({"b": [1.5, -2, null, true], "a": "x"}))
            .expiry(Expiry::Idle(Duration::new(3600, 5)));
        assert_eq!(meta_digest(&meta), GOLDEN);
        assert_eq!(meta_digest(&SessionMeta::new()), GOLDEN_EMPTY);
        let at = fusion_core::from_unix_micros(1_700_000_000_123_456);
        let expiring = SessionMeta::new().expiry(Expiry::At(at));
        assert_eq!(meta_digest(&expiring), GOLDEN_AT);
    }

    #[test]
    fn every_field_counts_and_none_bleeds_into_another() {
        let digests = [
            SessionMeta::new(),
            SessionMeta::new().title("a"),
            SessionMeta::new().owner("a"),
            SessionMeta::new().title(""),
            SessionMeta::new().tags(["a"]),
            SessionMeta::new().tags(["a", "b"]),
            SessionMeta::new().tags(["ab"]),
            SessionMeta::new().data("a", "b"),
            SessionMeta::new().data("a", 1),
            SessionMeta::new().data("a", -1),
            SessionMeta::new().data("a", 1.0),
            SessionMeta::new().data("a", json!(["b"])),
            SessionMeta::new().expiry(Expiry::Idle(Duration::from_secs(60))),
            SessionMeta::new().expiry(Expiry::Idle(Duration::from_secs(61))),
            SessionMeta::new().expiry(Expiry::At(fusion_core::from_unix_micros(60))),
        ]
        .map(|meta| meta_digest(&meta));
        let distinct: std::collections::HashSet<_> = digests.iter().collect();
        assert_eq!(distinct.len(), digests.len(), "{digests:?}");
    }

    /// Each field of `SessionMeta` by the name its `Debug` text gives it, with metadata
    /// setting it. A field added to fusion-core fails this until it has a row here, is
    /// copied by [`known_fields`] and counts in [`meta_encoding`] of its own (not only
    /// through the `Debug` fallback, which is not stable between Rust releases).
    #[test]
    fn every_field_of_session_meta_counts() {
        let setting = [
            ("owner", SessionMeta::new().owner("a")),
            ("title", SessionMeta::new().title("a")),
            ("tags", SessionMeta::new().tags(["a"])),
            ("data", SessionMeta::new().data("a", 1)),
            (
                "expiry",
                SessionMeta::new().expiry(Expiry::Idle(Duration::from_secs(1))),
            ),
        ];
        let covered: Vec<&str> = setting.iter().map(|(field, _)| *field).collect();
        assert_eq!(
            covered,
            field_names(&SessionMeta::new()),
            "SessionMeta has a field the digest does not encode on its own"
        );
        let none = meta_digest(&SessionMeta::new());
        for (field, meta) in &setting {
            assert_eq!(known_fields(meta), *meta, "{field} is not copied");
            assert_ne!(meta_digest(meta), none, "{field} does not count");
        }
    }

    /// The names of a struct's fields, from its derived pretty `Debug` text: each at the
    /// first level of indentation, before its colon.
    fn field_names(value: &impl std::fmt::Debug) -> Vec<String> {
        format!("{value:#?}")
            .lines()
            .filter_map(|line| line.strip_prefix("    "))
            .filter(|line| !line.starts_with(' '))
            .filter_map(|line| line.split_once(':'))
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// A kind of expiry added to fusion-core after this encoding cannot be made here; what
    /// it is encoded by, its stored numbers, is pinned (it was its `Debug` text, which is
    /// not stable between Rust releases) and tells every stored form apart.
    #[test]
    fn an_expiry_kind_added_later_is_encoded_by_its_stored_numbers() {
        let encoded = |expires_at, idle| {
            let mut out = Vec::new();
            encode_stored_expiry(&mut out, StoredExpiry { expires_at, idle });
            out
        };
        let at_one = [&[1][..], &1_i64.to_be_bytes(), &[0]].concat();
        assert_eq!(encoded(Some(1), None), at_one);
        let forms = [
            encoded(None, None),
            encoded(Some(1), None),
            encoded(None, Some(1)),
            encoded(Some(1), Some(1)),
            encoded(Some(1), Some(2)),
            encoded(Some(-1), None),
        ];
        let distinct: std::collections::HashSet<_> = forms.iter().collect();
        assert_eq!(distinct.len(), forms.len(), "{forms:?}");
    }

    #[test]
    fn the_order_data_keys_were_stored_in_does_not_count() {
        let mut one = Map::new();
        one.insert("a".into(), json!({"x": 1, "y": 2}));
        one.insert("b".into(), json!(2));
        let mut other = Map::new();
        other.insert("b".into(), json!(2));
        other.insert("a".into(), json!({"y": 2, "x": 1}));
        let (mut first, mut second) = (SessionMeta::new(), SessionMeta::new());
        first.data = one;
        second.data = other;
        assert_eq!(meta_encoding(&first), meta_encoding(&second));
    }

    // Computed independently too, from the encoding as documented (Python's hashlib).
    const GOLDEN: u64 = 7_139_552_794_045_640_605;
    const GOLDEN_EMPTY: u64 = 16_371_360_165_131_711_221;
    const GOLDEN_AT: u64 = 5_180_485_641_988_021_927;
}
