//! The Redis key layout: which keys hold a session and the index of sessions.
//!
//! For prefix `fusion` and session `user-1`:
//! - `fusion:s:{user-1}`: a LIST, one JSON message per element, oldest first;
//! - `fusion:m:{user-1}`: a HASH with `created_at` and `updated_at` (ms since the epoch)
//!   and `gen`, the session's generation (absent for sessions stored before generations
//!   existed, which read as `LEGACY_GENERATION`);
//! - `fusion:sessions`: a SET of session ids, so listing never needs `KEYS` or `SCAN`.
//!
//! The braces are a Redis Cluster hash tag: both keys of one session hash to the same
//! slot, so the Lua scripts that change them together are valid on a cluster. The index
//! lives in another slot and is only ever changed by single-key commands. Session ids are
//! validated by [`fusion_core::SessionId`], which rules out braces, so an id can never end
//! or shift the tag.

use std::sync::Arc;

/// Builds the keys of one storage instance's prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: Arc<str>,
    index: Arc<str>,
}

impl Keys {
    /// The keys under `prefix` (already validated: no braces or glob characters).
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
            index: format!("{prefix}:sessions").into(),
        }
    }

    /// The prefix every key starts with.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The LIST holding the messages of `session_id`.
    pub(crate) fn list(&self, session_id: &str) -> String {
        format!("{}:s:{{{session_id}}}", self.prefix)
    }

    /// The HASH holding the timestamps and generation of `session_id`.
    pub(crate) fn meta(&self, session_id: &str) -> String {
        format!("{}:m:{{{session_id}}}", self.prefix)
    }

    /// The SET of every session id under this prefix.
    pub(crate) fn index(&self) -> &str {
        &self.index
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
    fn keys_of_one_session_share_a_hash_tag() {
        let keys = Keys::new("app:prod");
        for id in ["user-1", "tenant:42:chat-7", "alice@example.com", "a"] {
            assert_eq!(hash_tag(&keys.list(id)), id);
            assert_eq!(hash_tag(&keys.meta(id)), id);
        }
        assert_eq!(keys.list("u"), "app:prod:s:{u}");
        assert_eq!(keys.meta("u"), "app:prod:m:{u}");
        assert_eq!(keys.index(), "app:prod:sessions");
    }

    #[test]
    fn prefix_related_ids_get_distinct_keys() {
        let keys = Keys::new("fusion");
        assert_ne!(keys.list("on"), keys.list("one"));
        assert_ne!(keys.list("s"), keys.meta("s"));
    }
}
