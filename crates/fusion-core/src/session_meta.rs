//! What an application knows about a session besides its messages: who owns it, what it
//! is called, its tags and a small map of its own data ([`SessionMeta`]); how to change
//! that ([`MetaUpdate`]); and everything a listing shows ([`SessionInfo`]).
//!
//! Every backend stores the same metadata under the same rules, checked here once
//! ([`SessionMeta::validate`]) before anything is written:
//! - an owner follows the session id rule ([`SessionId`]), since backends key indexes
//!   by it (a Redis key, an fs directory name);
//! - a title is at most [`MAX_TITLE_CHARS`] characters with no control characters;
//! - at most [`MAX_TAGS`] tags, each 1 to [`MAX_TAG_LEN`] bytes with no control
//!   characters, no comma (the CLI separates tags with commas) and no leading or trailing
//!   space; tags are kept sorted and without duplicates (a list set on the field directly
//!   must be so too);
//! - `data` is at most [`MAX_DATA_BYTES`] of JSON, nesting at most [`MAX_DATA_DEPTH`]
//!   levels, and holds no `null` value at its top level (a key is either there or not; in
//!   a [`MetaUpdate`], `null` removes a key).

use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::storable::nests_deeper_than;
use crate::{Error, Expiry, Result, SessionId};

/// The longest accepted title, in characters.
pub const MAX_TITLE_CHARS: usize = 512;
/// The most tags one session may carry.
pub const MAX_TAGS: usize = 32;
/// The longest accepted tag, in bytes.
pub const MAX_TAG_LEN: usize = 64;
/// The largest accepted `data` map, in bytes of minified JSON.
pub const MAX_DATA_BYTES: usize = 16 * 1024;
/// How deeply `data` values may nest arrays and objects.
pub const MAX_DATA_DEPTH: usize = 16;

/// The metadata an application sets on a session.
///
/// Built with [`SessionMeta::new`] and its setters:
///
/// ```
/// use fusion_core::SessionMeta;
///
/// let meta = SessionMeta::new()
///     .owner("user-42")
///     .title("Clean up the logs")
///     .tags(["ops", "logs"])
///     .data("ticket", 1234);
/// meta.validate()?;
/// assert_eq!(meta.tags, ["logs", "ops"], "kept sorted");
/// # Ok::<(), fusion_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SessionMeta {
    /// Who the session belongs to (a user or tenant id), if anyone.
    pub owner: Option<String>,
    /// A title to show in a list of sessions.
    pub title: Option<String>,
    /// Labels to filter a listing by, sorted and without duplicates.
    pub tags: Vec<String>,
    /// A small free-form map of the application's own data.
    pub data: Map<String, Value>,
    /// When the session expires, if ever (see [`Expiry`]).
    pub expiry: Option<Expiry>,
}

impl SessionMeta {
    /// No owner, no title, no tags, no data.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the owner.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets the title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Adds tags (duplicates are dropped; tags are kept sorted).
    pub fn tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.tags.extend(tags.into_iter().map(Into::into));
        normalize_tags(&mut self.tags);
        self
    }

    /// Sets one entry of the data map.
    pub fn data(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    /// Sets when the session expires.
    pub fn expiry(mut self, expiry: Expiry) -> Self {
        self.expiry = Some(expiry);
        self
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.owner.is_none()
            && self.title.is_none()
            && self.tags.is_empty()
            && self.data.is_empty()
            && self.expiry.is_none()
    }

    /// Checks the rules every backend stores metadata under, returning
    /// [`Error::InvalidMeta`] naming the first one broken: an owner follows the session-id
    /// rule ([`SessionId`]); a title is at most [`MAX_TITLE_CHARS`] characters with no
    /// control character; at most [`MAX_TAGS`] tags, each 1 to [`MAX_TAG_LEN`] bytes with
    /// no control character, no comma and no leading or trailing space, sorted and without
    /// duplicates (as [`tags`](Self::tags) keeps them); `data` is at most
    /// [`MAX_DATA_BYTES`] of JSON, nests at most [`MAX_DATA_DEPTH`] levels and holds no
    /// top-level `null`; an expiry is in range ([`Expiry::validate`]).
    pub fn validate(&self) -> Result<()> {
        if let Some(expiry) = &self.expiry {
            expiry.validate()?;
        }
        if let Some(owner) = &self.owner {
            validate_owner(owner)?;
        }
        if let Some(title) = &self.title {
            let chars = title.chars().count();
            if chars > MAX_TITLE_CHARS {
                return invalid(format!(
                    "the title is {chars} characters long; the limit is {MAX_TITLE_CHARS}"
                ));
            }
            if title.chars().any(char::is_control) {
                return invalid("the title contains a control character");
            }
        }
        if self.tags.len() > MAX_TAGS {
            return invalid(format!("{} tags; the limit is {MAX_TAGS}", self.tags.len()));
        }
        for tag in &self.tags {
            validate_tag(tag)?;
        }
        // The setters keep tags sorted and unique, and every backend stores and returns
        // them so; a list assigned to the field directly could otherwise read back in
        // another order than it was written.
        if self.tags.windows(2).any(|pair| pair[0] >= pair[1]) {
            return invalid(
                "the tags are not sorted or hold a duplicate; set them with \
                 SessionMeta::tags, which sorts them and drops duplicates",
            );
        }
        if let Some(key) = self.data.iter().find_map(|(k, v)| v.is_null().then_some(k)) {
            return invalid(format!(
                "the data value of {key:?} is null; leave the key out instead \
                 (in a MetaUpdate, null removes a key)"
            ));
        }
        if self
            .data
            .values()
            .any(|v| nests_deeper_than(v, MAX_DATA_DEPTH - 1))
        {
            return invalid(format!(
                "the data map nests deeper than {MAX_DATA_DEPTH} levels"
            ));
        }
        let bytes = serde_json::to_vec(&self.data)?.len();
        if bytes > MAX_DATA_BYTES {
            return invalid(format!(
                "the data map is {bytes} bytes of JSON; the limit is {MAX_DATA_BYTES}"
            ));
        }
        Ok(())
    }

    /// The tags as one JSON array, the form the SQL backends store.
    pub fn tags_json(&self) -> String {
        serde_json::to_string(&self.tags).expect("a list of strings serializes")
    }

    /// The data map as one JSON object, the form the SQL and Redis backends store.
    pub fn data_json(&self) -> String {
        serde_json::to_string(&self.data).expect("a JSON map serializes")
    }

    /// Tags and data read back from the JSON forms of [`tags_json`](Self::tags_json) and
    /// [`data_json`](Self::data_json); `None` when either is not what those write.
    pub fn parse_stored(tags: &str, data: &str) -> Option<(Vec<String>, Map<String, Value>)> {
        Some((
            serde_json::from_str(tags).ok()?,
            serde_json::from_str(data).ok()?,
        ))
    }
}

/// Checks an owner id: the session id rule ([`SessionId`]), reported as
/// [`Error::InvalidMeta`].
pub fn validate_owner(owner: &str) -> Result<()> {
    SessionId::validate(owner).map_err(|err| match err {
        Error::InvalidSessionId { id, reason } => {
            Error::InvalidMeta(format!("invalid owner \"{id}\": {reason}"))
        }
        other => other,
    })
}

fn validate_tag(tag: &str) -> Result<()> {
    let reason = if tag.is_empty() {
        "it is empty".to_string()
    } else if tag.len() > MAX_TAG_LEN {
        format!("it is {} bytes long; the limit is {MAX_TAG_LEN}", tag.len())
    } else if tag.chars().any(|c| c.is_control() || c == ',') {
        "it contains a comma or a control character".to_string()
    } else if tag.trim() != tag {
        "it starts or ends with white space".to_string()
    } else {
        return Ok(());
    };
    let shown: String = tag.chars().take(MAX_TAG_LEN).collect();
    invalid(format!("invalid tag {shown:?}: {reason}"))
}

fn invalid<T>(detail: impl Into<String>) -> Result<T> {
    Err(Error::InvalidMeta(detail.into()))
}

fn normalize_tags(tags: &mut Vec<String>) {
    tags.sort_unstable();
    tags.dedup();
}

/// A change to the metadata of an existing session, applied atomically by
/// [`ConversationStorage::update_session`](crate::ConversationStorage::update_session).
///
/// Fields left at their default change nothing, so two callers that touch different
/// fields (one adds a tag, another retitles) never undo each other.
///
/// ```
/// use fusion_core::{MetaUpdate, SessionMeta};
///
/// let mut meta = SessionMeta::new().title("old").tags(["a", "b"]);
/// MetaUpdate::new()
///     .title(Some("new"))
///     .add_tag("c")
///     .remove_tag("a")
///     .set_data("k", 1)
///     .apply_to(&mut meta);
/// assert_eq!(meta.title.as_deref(), Some("new"));
/// assert_eq!(meta.tags, ["b", "c"]);
/// assert_eq!(meta.data["k"], 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MetaUpdate {
    /// `Some(owner)` sets the owner (`Some(None)` removes it); `None` keeps it.
    pub owner: Option<Option<String>>,
    /// `Some(title)` sets the title (`Some(None)` removes it); `None` keeps it.
    pub title: Option<Option<String>>,
    /// Tags to add.
    pub add_tags: Vec<String>,
    /// Tags to remove (after adding).
    pub remove_tags: Vec<String>,
    /// Entries to set in the data map; a `null` value removes its key.
    pub data: Map<String, Value>,
    /// `Some(expiry)` sets the expiry (`Some(None)`: the session never expires); `None`
    /// keeps it.
    pub expiry: Option<Option<Expiry>>,
    /// `Some(owner)`: apply the change only if the session's owner is `owner` when it is
    /// applied, else refuse it with [`Error::NotOwner`], changing nothing. Checked in the
    /// same atomic step as the change ([`apply_to_stored`](Self::apply_to_stored)), so a
    /// session deleted and created again by another owner since the caller looked at it
    /// is never changed. Not a change itself: an update with nothing else
    /// [`is_empty`](Self::is_empty), and a backend answers it by reading.
    pub if_owner: Option<String>,
    /// `Some(title)`: apply the change only if the session's title is `title` when it is
    /// applied (`Some(None)`: only if it has none), else refuse it with
    /// [`Error::TitleChanged`], changing nothing. Checked in the same atomic step as the
    /// change, like [`if_owner`](Self::if_owner): a rename that names the title its caller
    /// showed never overwrites another writer's rename unseen.
    pub if_title: Option<Option<String>>,
}

impl MetaUpdate {
    /// A change that changes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (`Some`) or removes (`None`) the owner.
    pub fn owner(mut self, owner: Option<impl Into<String>>) -> Self {
        self.owner = Some(owner.map(Into::into));
        self
    }

    /// Sets (`Some`) or removes (`None`) the title.
    pub fn title(mut self, title: Option<impl Into<String>>) -> Self {
        self.title = Some(title.map(Into::into));
        self
    }

    /// Adds a tag.
    pub fn add_tag(mut self, tag: impl Into<String>) -> Self {
        self.add_tags.push(tag.into());
        self
    }

    /// Removes a tag.
    pub fn remove_tag(mut self, tag: impl Into<String>) -> Self {
        self.remove_tags.push(tag.into());
        self
    }

    /// Sets one entry of the data map (`Value::Null` removes it).
    pub fn set_data(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    /// Sets (`Some`) or removes (`None`) the expiry.
    pub fn expiry(mut self, expiry: Option<Expiry>) -> Self {
        self.expiry = Some(expiry);
        self
    }

    /// Applies the change only if the session's owner is `owner` then (see
    /// [`if_owner`](Self::if_owner)).
    pub fn if_owner(mut self, owner: impl Into<String>) -> Self {
        self.if_owner = Some(owner.into());
        self
    }

    /// Applies the change only if the session's title is `title` then (`None`: only if
    /// it has none; see [`if_title`](Self::if_title)).
    ///
    /// ```
    /// use fusion_core::{Error, MetaUpdate, SessionMeta};
    ///
    /// let rename = MetaUpdate::new().title(Some("Trip to Lyon")).if_title(Some("Trip"));
    /// let mut meta = SessionMeta::new().title("Trip plans");
    /// let refused = rename.apply_to_stored("s1", &mut meta);
    /// assert!(matches!(refused, Err(Error::TitleChanged { .. })));
    /// assert_eq!(meta.title.as_deref(), Some("Trip plans"));
    /// ```
    pub fn if_title(mut self, title: Option<impl Into<String>>) -> Self {
        self.if_title = Some(title.map(Into::into));
        self
    }

    /// Whether this changes nothing (a condition alone changes nothing).
    pub fn is_empty(&self) -> bool {
        self.owner.is_none()
            && self.title.is_none()
            && self.add_tags.is_empty()
            && self.remove_tags.is_empty()
            && self.data.is_empty()
            && self.expiry.is_none()
    }

    /// What a backend's [`update_session`](crate::ConversationStorage::update_session)
    /// does with the metadata of `session_id` it read in the atomic step (transaction,
    /// lock or compare-and-set) that will store the result: checks the condition
    /// ([`if_owner`](Self::if_owner): [`Error::NotOwner`]; [`if_title`](Self::if_title):
    /// [`Error::TitleChanged`]), applies the change and validates the result
    /// ([`Error::InvalidMeta`]). On an error, `meta` is as it was: store nothing.
    pub fn apply_to_stored(&self, session_id: &str, meta: &mut SessionMeta) -> Result<()> {
        if let Some(owner) = &self.if_owner
            && meta.owner.as_ref() != Some(owner)
        {
            return Err(Error::NotOwner {
                session_id: session_id.to_string(),
                owner: owner.clone(),
            });
        }
        if let Some(expected) = &self.if_title
            && meta.title != *expected
        {
            return Err(Error::TitleChanged {
                session_id: session_id.to_string(),
                expected: expected.clone(),
                found: meta.title.clone(),
            });
        }
        self.apply_to(meta);
        meta.validate()
    }

    /// Applies the change to `meta`, ignoring the conditions
    /// ([`if_owner`](Self::if_owner), [`if_title`](Self::if_title)). Validate the result
    /// before storing it.
    pub fn apply_to(&self, meta: &mut SessionMeta) {
        if let Some(owner) = &self.owner {
            meta.owner.clone_from(owner);
        }
        if let Some(title) = &self.title {
            meta.title.clone_from(title);
        }
        if let Some(expiry) = self.expiry {
            meta.expiry = expiry;
        }
        meta.tags.extend(self.add_tags.iter().cloned());
        meta.tags.retain(|tag| !self.remove_tags.contains(tag));
        normalize_tags(&mut meta.tags);
        for (key, value) in &self.data {
            if value.is_null() {
                meta.data.remove(key);
            } else {
                meta.data.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Facts about one stored session: its metadata and what the backend knows of it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session id.
    pub id: String,
    /// How many messages the session holds.
    pub message_count: usize,
    /// When the session was first written, where the backend keeps it.
    pub created_at: Option<SystemTime>,
    /// When the session was last written (messages or metadata), where the backend keeps it.
    pub updated_at: Option<SystemTime>,
    /// The session's generation (see [`Revision`](crate::Revision)); `LEGACY_GENERATION`
    /// from a backend that keeps none.
    pub generation: u64,
    /// When the session expires, if ever: for an [`Expiry::Idle`] session, `updated_at`
    /// plus the span.
    pub expires_at: Option<SystemTime>,
    /// Owner, title, tags, data and expiry.
    pub meta: SessionMeta,
}

impl SessionInfo {
    /// A session with `message_count` messages, no timestamps, the legacy generation and
    /// no metadata; backends fill in what they keep.
    pub fn new(id: impl Into<String>, message_count: usize) -> Self {
        Self {
            id: id.into(),
            message_count,
            created_at: None,
            updated_at: None,
            generation: crate::LEGACY_GENERATION,
            expires_at: None,
            meta: SessionMeta::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_rule_is_checked_and_named() {
        let ok = SessionMeta::new()
            .owner("tenant:7")
            .title("Hello")
            .tags(["a b", "ü"]);
        ok.validate().unwrap();
        let cases = [
            (SessionMeta::new().owner("../x"), "owner"),
            (
                SessionMeta::new().title("x".repeat(MAX_TITLE_CHARS + 1)),
                "title",
            ),
            (SessionMeta::new().title("a\nb"), "control"),
            (SessionMeta::new().tags([""]), "empty"),
            (SessionMeta::new().tags(["a,b"]), "comma"),
            (SessionMeta::new().tags([" a"]), "white space"),
            (
                SessionMeta::new().tags(["t".repeat(MAX_TAG_LEN + 1)]),
                "limit is 64",
            ),
            (
                SessionMeta::new().tags((0..=MAX_TAGS).map(|i| format!("t{i}"))),
                "tags; the limit",
            ),
            (
                {
                    let mut meta = SessionMeta::new();
                    meta.tags = vec!["b".into(), "a".into()];
                    meta
                },
                "not sorted",
            ),
            (SessionMeta::new().data("gone", Value::Null), "null"),
            (
                SessionMeta::new().data("big", "x".repeat(MAX_DATA_BYTES)),
                "bytes of JSON",
            ),
            (
                SessionMeta::new().data(
                    "deep",
                    (0..MAX_DATA_DEPTH).fold(json!(1), |v, _| json!([v])),
                ),
                "nests deeper",
            ),
        ];
        for (meta, expected) in cases {
            let err = meta.validate().unwrap_err();
            assert!(matches!(err, Error::InvalidMeta(_)), "{err:?}");
            assert!(
                err.to_string().contains(expected),
                "{err} lacks {expected:?}"
            );
        }
        let at_depth_limit = (1..MAX_DATA_DEPTH).fold(json!(1), |v, _| json!([v]));
        SessionMeta::new()
            .data("deep", at_depth_limit)
            .validate()
            .unwrap();
    }

    #[test]
    fn an_update_changes_only_what_it_names() {
        let mut meta = SessionMeta::new()
            .owner("o")
            .title("t")
            .tags(["x"])
            .data("keep", 1);
        let before = meta.clone();
        MetaUpdate::new().apply_to(&mut meta);
        assert_eq!(meta, before);
        assert!(MetaUpdate::new().is_empty());

        MetaUpdate::new()
            .owner(None::<String>)
            .add_tag("x")
            .add_tag("a")
            .set_data("gone", 2)
            .apply_to(&mut meta);
        assert_eq!(meta.owner, None);
        assert_eq!(meta.title.as_deref(), Some("t"));
        assert_eq!(meta.tags, ["a", "x"]);
        MetaUpdate::new()
            .set_data("gone", Value::Null)
            .remove_tag("x")
            .apply_to(&mut meta);
        assert_eq!(meta.tags, ["a"]);
        assert_eq!(Value::Object(meta.data), json!({"keep": 1}));
    }

    #[test]
    fn a_title_condition_is_checked_before_anything_changes() {
        let mut meta = SessionMeta::new().title("t");
        let before = meta.clone();
        for expected in [None, Some("other"), Some("T")] {
            let update = MetaUpdate::new().add_tag("x").if_title(expected);
            assert!(update.if_title.is_some() && !update.is_empty());
            let err = update.apply_to_stored("s", &mut meta).unwrap_err();
            assert!(
                matches!(&err, Error::TitleChanged { found: Some(t), .. } if t == "t"),
                "{err:?}"
            );
            assert_eq!(meta, before, "nothing applied");
        }
        let rename = MetaUpdate::new().title(None::<String>).if_title(Some("t"));
        rename.apply_to_stored("s", &mut meta).unwrap();
        assert_eq!(meta.title, None);
        let titled = MetaUpdate::new().title(Some("u")).if_title(None::<String>);
        titled.apply_to_stored("s", &mut meta).unwrap();
        assert_eq!(meta.title.as_deref(), Some("u"));
    }

    #[test]
    fn stored_forms_round_trip() {
        let meta = SessionMeta::new()
            .tags(["b", "a"])
            .data("k", json!({"n": [1]}));
        let (tags, data) = SessionMeta::parse_stored(&meta.tags_json(), &meta.data_json()).unwrap();
        assert_eq!((tags, data), (meta.tags, meta.data));
        assert!(SessionMeta::parse_stored("{", "{}").is_none());
    }
}
