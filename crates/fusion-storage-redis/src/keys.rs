//! The Redis key layout: which keys hold a session, and the indexes that list sessions.
//!
//! For prefix `fusion`, session `user-1` and owner `alice`:
//! - `fusion:s:{user-1}`: a LIST, one JSON message per element, oldest first;
//! - `fusion:m:{user-1}`: a HASH with `created_at` and `updated_at` (ms since the epoch),
//!   `gen`, the session's generation (absent for sessions stored before generations
//!   existed, which read as `LEGACY_GENERATION`), and the metadata: `owner`, `title`,
//!   `tags` (a JSON array) and `data` (a JSON object), each absent when unset; for a
//!   session with an expiry, `expires_at` (µs since the epoch) and, for an idle one,
//!   `idle` (the span in µs);
//! - `fusion:ids`: a ZSET of every session id, all at score 0, so it is ordered by id
//!   (`ZRANGE ... BYLEX`);
//! - `fusion:updated`: a ZSET of every session id scored by its `updated_at`, for the
//!   newest-first listing;
//! - `fusion:owner:{alice}:ids` and `fusion:owner:{alice}:updated`: the same two for the
//!   sessions owned by `alice`;
//! - `fusion:expiry`: a ZSET of the sessions that have an expiry, scored by the
//!   millisecond they expire (their `expires_at` rounded up), each as its member
//!   (`expiry_member`): the id, then `/` and the owner if it has one, so a purge can
//!   clear an owner's indexes after Redis dropped the meta hash naming it.
//!   Sessions without an expiry are not in it. On a cluster it also holds look-again
//!   entries (`look_again_member`): `!`, the id, `/` and a claimer's id, left by a delete
//!   (also a replace with nothing, or a repair finding the session gone) while it takes a
//!   session out of the listings, so that a purge looks at the session again and lists it
//!   if a writer created it meanwhile, should that delete stop first;
//! - `fusion:claim:{fusion:expiry}:<id>`: on a cluster, a LIST naming the entries of
//!   `fusion:expiry` a purge round claimed (`scripts::retention::CLAIM`), for the claim's
//!   lease at most; its hash tag is the expiry index's name, so it shares its slot;
//! - `fusion:changes`: not a key but the pub/sub channel the write scripts publish each
//!   change on, with `RedisOptions::publish_changes` (`scripts/notify.rs`);
//! - `fusion:sessions`: the SET of session ids that releases before the ZSETs kept; read
//!   only to move its ids into the ZSETs (see `storage/index.rs`), then gone.
//!
//! The braces are a Redis Cluster hash tag: both keys of one session hash to the same
//! slot, so the Lua scripts that change them together are valid on a cluster, and both
//! indexes of one owner share a slot too. The indexes live in other slots than the
//! sessions, so on a cluster they are changed by requests of their own. Session ids and
//! owners are validated by [`fusion_core::SessionId`], which rules out braces, so neither
//! can end or shift a tag; every key starts with the prefix, so an ACL rule on the prefix
//! (`~fusion:*`) covers them all. The write scripts name an owner's keys themselves on one
//! server (see `scripts/mod.rs`), with the same format as [`Keys::owner_ids`] here.

use std::sync::Arc;

/// Builds the keys of one storage instance's prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: Arc<str>,
    ids: Arc<str>,
    updated: Arc<str>,
    expiry: Arc<str>,
    legacy: Arc<str>,
}

/// Which sessions an index pair covers: all of them, or one owner's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scope<'a> {
    /// Every session.
    All,
    /// The sessions of one owner.
    Owner(&'a str),
}

impl Keys {
    /// The keys under `prefix` (already validated: no braces or glob characters).
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
            ids: format!("{prefix}:ids").into(),
            updated: format!("{prefix}:updated").into(),
            expiry: format!("{prefix}:expiry").into(),
            legacy: format!("{prefix}:sessions").into(),
        }
    }

    /// The prefix every key starts with.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The LIST holding the messages of `session_id`.
    pub(crate) fn list(&self, session_id: &str) -> String {
        self.tagged("s", session_id)
    }

    /// The HASH holding the timestamps, generation and metadata of `session_id`.
    pub(crate) fn meta(&self, session_id: &str) -> String {
        self.tagged("m", session_id)
    }

    /// `prefix:kind:{tag}`, built by hand: every call on a session names its keys, and
    /// `format!` took about a thousand instructions for each (a tenth of an append's work
    /// on the client, docs/performance.md).
    fn tagged(&self, kind: &str, tag: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + tag.len() + 4);
        key.push_str(&self.prefix);
        key.push(':');
        key.push_str(kind);
        key.push_str(":{");
        key.push_str(tag);
        key.push('}');
        key
    }

    /// The ZSET of every session id, by id.
    pub(crate) fn ids(&self) -> &str {
        &self.ids
    }

    /// The ZSET of every session id, scored by `updated_at`.
    pub(crate) fn updated(&self) -> &str {
        &self.updated
    }

    /// The ZSET of the sessions that have an expiry, by the millisecond they expire.
    pub(crate) fn expiry(&self) -> &str {
        &self.expiry
    }

    /// The record of what the claimer `id` claimed of the expiry index (see
    /// `scripts::retention::CLAIM`), in the expiry index's slot: its hash tag is that
    /// key's whole name, which has no braces.
    pub(crate) fn claim_record(&self, id: &str) -> String {
        format!("{}:claim:{{{}}}:{id}", self.prefix, self.expiry)
    }

    /// The pub/sub channel the write scripts publish changes on (`scripts/notify.rs`
    /// names it the same way).
    pub(crate) fn changes(&self) -> String {
        format!("{}:changes", self.prefix)
    }

    /// The ZSET of the ids of `owner`'s sessions, by id.
    pub(crate) fn owner_ids(&self, owner: &str) -> String {
        format!("{}:owner:{{{owner}}}:ids", self.prefix)
    }

    /// The ZSET of the ids of `owner`'s sessions, scored by `updated_at`.
    pub(crate) fn owner_updated(&self, owner: &str) -> String {
        format!("{}:owner:{{{owner}}}:updated", self.prefix)
    }

    /// The by-id and by-update indexes of `scope`.
    pub(crate) fn scope(&self, scope: Scope<'_>) -> (String, String) {
        match scope {
            Scope::All => (self.ids.to_string(), self.updated.to_string()),
            Scope::Owner(owner) => (self.owner_ids(owner), self.owner_updated(owner)),
        }
    }

    /// The SET index of releases before the ZSETs.
    pub(crate) fn legacy_index(&self) -> &str {
        &self.legacy
    }
}

/// The member of the expiry index for session `id` owned by `owner`: `id`, or
/// `id/owner`. Neither an id nor an owner can hold a `/` ([`fusion_core::SessionId`]), so
/// the member splits back unambiguously ([`split_member`]). The write scripts build it
/// the same way (`member()` in `scripts/mod.rs`).
pub(crate) fn expiry_member(id: &str, owner: Option<&str>) -> String {
    match owner {
        Some(owner) => format!("{id}/{owner}"),
        None => id.to_string(),
    }
}

/// The look-again entry of the expiry index that a delete or a prune by the claimer
/// `token` leaves for session `id` (`storage/forget.rs`): `!id/token`. Neither an id nor an owner nor
/// a claimer's id holds a `!` or a `/`, so it is never an expiry entry, and
/// [`split_member`] reads it as an id that is no session id, which a purge of a build
/// before these entries neither sweeps nor counts, but drops without the second look.
/// A claimer's id in it keeps two deletes (or prunes) of one session from sharing one
/// entry.
pub(crate) fn look_again_member(id: &str, token: &str) -> String {
    format!("!{id}/{token}")
}

/// The session id an expiry index member names: an expiry entry's or a look-again entry's.
pub(crate) fn member_session(member: &str) -> &str {
    split_member(member.strip_prefix('!').unwrap_or(member)).0
}

/// The session id and owner an expiry index member names.
pub(crate) fn split_member(member: &str) -> (&str, Option<&str>) {
    match member.split_once('/') {
        Some((id, owner)) => (id, Some(owner)),
        None => (member, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster's rule: the slot is computed from the text between the first `{` and
    /// the next `}`, if that text is non-empty; otherwise from the whole key.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn keys_of_one_session_share_a_hash_tag_and_so_do_an_owners_indexes() {
        let keys = Keys::new("app:prod");
        for id in ["user-1", "tenant:42:chat-7", "alice@example.com", "a"] {
            assert_eq!(hash_tag(&keys.list(id)), id);
            assert_eq!(hash_tag(&keys.meta(id)), id);
            assert_eq!(hash_tag(&keys.owner_ids(id)), id);
            assert_eq!(hash_tag(&keys.owner_updated(id)), id);
        }
        assert_eq!(keys.list("u"), "app:prod:s:{u}");
        assert_eq!(keys.meta("u"), "app:prod:m:{u}");
        assert_eq!(keys.ids(), "app:prod:ids");
        assert_eq!(keys.updated(), "app:prod:updated");
        assert_eq!(keys.owner_ids("o"), "app:prod:owner:{o}:ids");
        assert_eq!(keys.owner_updated("o"), "app:prod:owner:{o}:updated");
        assert_eq!(keys.legacy_index(), "app:prod:sessions");
        assert_eq!(keys.expiry(), "app:prod:expiry");
        assert_eq!(keys.claim_record("7"), "app:prod:claim:{app:prod:expiry}:7");
        assert_eq!(hash_tag(&keys.claim_record("7")), keys.expiry());
        assert_eq!(
            keys.scope(Scope::Owner("o")),
            (keys.owner_ids("o"), keys.owner_updated("o"))
        );
    }

    #[test]
    fn prefix_related_ids_get_distinct_keys() {
        let keys = Keys::new("fusion");
        assert_ne!(keys.list("on"), keys.list("one"));
        assert_ne!(keys.list("s"), keys.meta("s"));
        assert_ne!(keys.owner_ids("ids"), keys.ids());
    }

    #[test]
    fn an_expiry_member_names_its_session_and_owner() {
        assert_eq!(expiry_member("s-1", Some("alice")), "s-1/alice");
        assert_eq!(expiry_member("s-1", None), "s-1");
        assert_eq!(split_member("s-1/alice"), ("s-1", Some("alice")));
        assert_eq!(split_member("a:b@c"), ("a:b@c", None));
        assert_eq!(look_again_member("s-1", "42"), "!s-1/42");
        for member in ["s-1/alice", "s-1", "!s-1/42"] {
            assert_eq!(member_session(member), "s-1");
        }
        assert!(fusion_core::SessionId::validate(split_member("!s-1/42").0).is_err());
    }
}
