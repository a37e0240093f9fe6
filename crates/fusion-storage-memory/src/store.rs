//! The data behind [`InMemoryStorage`](crate::InMemoryStorage): every session by id, and
//! ordered indexes for listing (by id, and newest first; each for all sessions and per
//! owner), kept in step by the few functions here that change a session.
//!
//! Ids are shared (`Arc<str>`) between the map and the indexes, so moving a session to the
//! front of the newest-first order on an append costs two B-tree updates and no copy of
//! its id.
//!
//! Every method takes the caller's `now` (Unix microseconds), read once per storage call,
//! so one call sees one instant: a session is expired for all of it or for none. Readers
//! skip an expired session; writers drop it first ([`Store::drop_expired`]), so they see
//! it absent; [`Store::purge`] walks an index of expiry instants.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;
use std::time::SystemTime;

use fusion_core::{
    ChatMessage, DEDUP_WINDOW, MetaUpdate, Position, Result, Revision, SessionInfo, SessionMeta,
    SessionOrder, SessionPage, SessionQuery, StoredExpiry, from_unix_micros, new_generation,
    unstored,
};

use crate::recent::RecentFingerprints;

/// The maps by session id and by owner. foldhash rather than std's SipHash: an append
/// looks its session up twice, and SipHash took about 160 instructions a lookup of a W5
/// id, a tenth of the append's work under the lock. Its seed is random per map, as
/// SipHash's is, so ids chosen to collide would have to be chosen for this process.
type HashMap<K, V> = foldhash::HashMap<K, V>;

/// A session's place in the newest-first order: `updated_at` in microseconds, then id,
/// both descending, exactly as [`Position`] orders them.
type NewestKey = (Reverse<i64>, Reverse<Arc<str>>);

/// A stored session.
#[derive(Debug, Clone)]
struct Entry {
    id: Arc<str>,
    messages: Vec<ChatMessage>,
    /// The fingerprints of the last ids of `messages`, so an append looks at a stored
    /// message only when one of its ids may be stored; rebuilt whenever `messages` is.
    recent: RecentFingerprints,
    generation: u64,
    created_at: SystemTime,
    /// `updated_at` in Unix microseconds, the precision listings sort by.
    updated_micros: i64,
    /// `meta.expiry` as stored: its instant moves with each write of an idle expiry.
    expiry: StoredExpiry,
    meta: SessionMeta,
}

impl Entry {
    fn is_live(&self, now: i64) -> bool {
        !self.expiry.is_expired_at(now)
    }

    /// The key of the expiry index, for a session that expires.
    fn expiry_key(&self) -> Option<(i64, Arc<str>)> {
        Some((self.expiry.expires_at?, self.id.clone()))
    }

    fn newest_key(&self) -> NewestKey {
        (Reverse(self.updated_micros), Reverse(self.id.clone()))
    }

    fn info(&self) -> SessionInfo {
        let mut info = SessionInfo::new(&*self.id, self.messages.len());
        info.created_at = Some(self.created_at);
        info.updated_at = Some(from_unix_micros(self.updated_micros));
        info.generation = self.generation;
        info.expires_at = self.expiry.expires_at_time();
        info.meta = self.meta.clone();
        info
    }
}

/// The ordered indexes of one set of sessions (all of them, or one owner's).
#[derive(Debug, Default)]
struct Index {
    by_id: BTreeSet<Arc<str>>,
    newest: BTreeSet<NewestKey>,
}

impl Index {
    fn insert(&mut self, entry: &Entry) {
        self.by_id.insert(entry.id.clone());
        self.newest.insert(entry.newest_key());
    }

    fn remove(&mut self, entry: &Entry) {
        self.by_id.remove(&entry.id);
        self.newest.remove(&entry.newest_key());
    }

    /// Ids from just after `start` on, in `order`.
    fn ids_after<'a>(
        &'a self,
        order: SessionOrder,
        start: Option<Position>,
    ) -> Box<dyn Iterator<Item = &'a Arc<str>> + 'a> {
        match (order, start) {
            (SessionOrder::Id, Some(Position::Id(id))) => Box::new(
                self.by_id
                    .range::<str, _>((Bound::Excluded(id.as_str()), Bound::Unbounded)),
            ),
            (SessionOrder::UpdatedDesc, Some(Position::Updated { micros, id })) => {
                let after = (Reverse(micros), Reverse(Arc::from(id)));
                Box::new(
                    self.newest
                        .range((Bound::Excluded(after), Bound::Unbounded))
                        .map(|(_, Reverse(id))| id),
                )
            }
            (SessionOrder::Id, _) => Box::new(self.by_id.iter()),
            (SessionOrder::UpdatedDesc, _) => {
                Box::new(self.newest.iter().map(|(_, Reverse(id))| id))
            }
        }
    }
}

/// Every session and its indexes. All changes go through the methods below, which keep
/// the indexes in step with the sessions.
#[derive(Debug, Default)]
pub(crate) struct Store {
    sessions: HashMap<String, Entry>,
    all: Index,
    by_owner: HashMap<String, Index>,
    /// Sessions that expire, by expiry instant.
    expiring: BTreeSet<(i64, Arc<str>)>,
}

impl Store {
    /// The session `id` if it is there and has not expired at `now`.
    fn live(&self, id: &str, now: i64) -> Option<&Entry> {
        self.sessions.get(id).filter(|e| e.is_live(now))
    }

    pub(crate) fn messages(&self, id: &str, now: i64) -> Option<&[ChatMessage]> {
        self.live(id, now).map(|e| e.messages.as_slice())
    }

    pub(crate) fn ids(&self, now: i64) -> Vec<String> {
        let live = self.sessions.values().filter(|e| e.is_live(now));
        live.map(|e| e.id.to_string()).collect()
    }

    pub(crate) fn revision(&self, id: &str, now: i64) -> Revision {
        self.live(id, now).map_or(Revision::ABSENT, |e| Revision {
            generation: e.generation,
            len: e.messages.len(),
        })
    }

    pub(crate) fn info(&self, id: &str, now: i64) -> Option<SessionInfo> {
        self.live(id, now).map(Entry::info)
    }

    /// Removes `id` if it has expired at `now`, so a write that follows finds it absent.
    pub(crate) fn drop_expired(&mut self, id: &str, now: i64) {
        if self.sessions.get(id).is_some_and(|e| !e.is_live(now)) {
            self.remove(id);
        }
    }

    /// Removes up to `batch` sessions expired at `now`, oldest expiry first.
    pub(crate) fn purge(&mut self, batch: usize, now: i64) -> usize {
        let due: Vec<Arc<str>> = self
            .expiring
            .range(..(now.saturating_add(1), Arc::from("")))
            .take(batch)
            .map(|(_, id)| id.clone())
            .collect();
        for id in &due {
            self.remove(id);
        }
        due.len()
    }

    /// Adds `messages` (not empty) to a session, creating it without metadata if needed,
    /// except those whose id is among its last [`DEDUP_WINDOW`] messages' (a retried
    /// append). An append that adds nothing changes nothing. The messages are the
    /// caller's copy, moved in: the lock is not held while they are copied.
    pub(crate) fn append(&mut self, id: &str, messages: Vec<ChatMessage>, now: i64) {
        let entry = match self.sessions.get(id) {
            Some(entry) if entry.is_live(now) => entry,
            absent_or_expired => {
                if absent_or_expired.is_some() {
                    self.remove(id);
                }
                self.create(id, SessionMeta::default(), messages, now);
                return;
            }
        };
        if let Some(fingerprints) = entry.recent.all_fresh(&messages) {
            // The usual append: no id of the batch was stored lately.
            self.change(id, now, |entry| {
                entry.recent.record_fresh(&fingerprints);
                entry.messages.extend(messages);
            });
            return;
        }
        let recent = &entry.messages[entry.messages.len().saturating_sub(DEDUP_WINDOW)..];
        let fresh = unstored(&messages, |new| {
            entry.recent.may_hold(new) && recent.iter().any(|m| m.id.as_ref() == Some(new))
        });
        if fresh.is_empty() {
            return;
        }
        self.change(id, now, |entry| {
            entry.recent.record(&fresh);
            entry.messages.extend_from_slice(&fresh);
        });
    }

    /// Keeps the first `len` messages; a shorter history gets a new generation.
    pub(crate) fn truncate(&mut self, id: &str, len: usize, now: i64) {
        self.drop_expired(id, now);
        match self.sessions.get(id) {
            None => {}
            Some(_) if len == 0 => self.remove(id),
            Some(entry) if entry.messages.len() > len => self.change(id, now, |entry| {
                entry.messages.truncate(len);
                entry.recent = RecentFingerprints::of(&entry.messages);
                entry.generation = new_generation();
            }),
            Some(_) => {}
        }
    }

    /// Replaces a history (an empty one removes the session) under a new generation,
    /// keeping the session's metadata and `created_at`.
    pub(crate) fn replace(&mut self, id: &str, history: &[ChatMessage], now: i64) {
        self.drop_expired(id, now);
        if history.is_empty() {
            self.remove(id);
        } else if self.sessions.contains_key(id) {
            self.change(id, now, |entry| {
                entry.messages = history.to_vec();
                entry.recent = RecentFingerprints::of(history);
                entry.generation = new_generation();
            });
        } else {
            self.create(id, SessionMeta::default(), history.to_vec(), now);
        }
    }

    pub(crate) fn remove(&mut self, id: &str) {
        if let Some(entry) = self.sessions.remove(id) {
            self.unfile(&entry);
        }
    }

    /// Creates a session (which must not exist, or have expired) at `now` and returns
    /// its generation.
    pub(crate) fn create(
        &mut self,
        id: &str,
        mut meta: SessionMeta,
        messages: Vec<ChatMessage>,
        now: i64,
    ) -> u64 {
        self.drop_expired(id, now);
        let expiry = StoredExpiry::of(meta.expiry.as_ref(), now);
        // Kept to the microsecond, as every backend keeps it.
        meta.expiry = expiry.expiry();
        let entry = Entry {
            id: Arc::from(id),
            recent: RecentFingerprints::of(&messages),
            messages,
            generation: new_generation(),
            // Both timestamps at the listing's precision, so `updated_at >= created_at`.
            created_at: from_unix_micros(now),
            updated_micros: now,
            expiry,
            meta,
        };
        let generation = entry.generation;
        self.file(entry);
        generation
    }

    /// Stores `entry` and adds it to the indexes.
    fn file(&mut self, entry: Entry) {
        self.expiring.extend(entry.expiry_key());
        self.all.insert(&entry);
        if let Some(owner) = &entry.meta.owner {
            self.by_owner
                .entry(owner.clone())
                .or_default()
                .insert(&entry);
        }
        self.sessions.insert(entry.id.to_string(), entry);
    }

    /// Applies `update` to an existing session's metadata if the result is valid.
    pub(crate) fn update(
        &mut self,
        id: &str,
        update: &MetaUpdate,
        now: i64,
    ) -> Result<Option<SessionInfo>> {
        let Some(entry) = self.live(id, now) else {
            return Ok(None);
        };
        let mut meta = entry.meta.clone();
        update.apply_to(&mut meta);
        meta.validate()?;
        // Rare enough to re-file the session from scratch: its owner may change.
        let mut entry = self.sessions.remove(id).expect("checked above");
        self.unfile(&entry);
        entry.updated_micros = entry.updated_micros.max(now);
        entry.expiry = match update.expiry {
            Some(expiry) => StoredExpiry::of(expiry.as_ref(), entry.updated_micros),
            None => entry.expiry.at_write(entry.updated_micros),
        };
        meta.expiry = entry.expiry.expiry();
        entry.meta = meta;
        let info = entry.info();
        self.file(entry);
        Ok(Some(info))
    }

    /// One page of `query`: walks the narrowest index from the cursor on, so the cost is
    /// the page (plus the sessions a tag filter skips), not the number of sessions.
    pub(crate) fn page(&self, query: &SessionQuery, now: i64) -> Result<SessionPage> {
        let index = match &query.owner {
            Some(owner) => match self.by_owner.get(owner) {
                Some(index) => index,
                None => return Ok(SessionPage::new(Vec::new(), None)),
            },
            None => &self.all,
        };
        let candidates = index
            .ids_after(query.order, query.start()?)
            .filter_map(|id| self.live(id, now))
            .map(Entry::info)
            .filter(|info| query.admits(info))
            .take(query.limit + 1);
        query.page_of(candidates)
    }

    /// Runs `edit` on an existing session's messages, then moves its `updated_at`
    /// forward to `now` (never back, whatever the clock does), an idle expiry with it, and
    /// its place in the indexes. Owners do not change here (see [`update`](Self::update)).
    fn change(&mut self, id: &str, now: i64, edit: impl FnOnce(&mut Entry)) {
        let Store {
            sessions,
            all,
            by_owner,
            expiring,
        } = self;
        let Some(entry) = sessions.get_mut(id) else {
            return;
        };
        let old_key = entry.newest_key();
        edit(entry);
        entry.updated_micros = entry.updated_micros.max(now);
        if entry.updated_micros == old_key.0.0 {
            return;
        }
        let old_expiry = entry.expiry_key();
        entry.expiry = entry.expiry.at_write(entry.updated_micros);
        if entry.expiry.idle.is_some() {
            let new_expiry = entry.expiry_key();
            expiring.remove(&old_expiry.expect("an idle expiry has an instant"));
            expiring.extend(new_expiry);
        }
        let new_key = entry.newest_key();
        let owner_index = entry.meta.owner.as_ref().and_then(|o| by_owner.get_mut(o));
        for newest in [Some(&mut all.newest), owner_index.map(|i| &mut i.newest)]
            .into_iter()
            .flatten()
        {
            newest.remove(&old_key);
            newest.insert(new_key.clone());
        }
    }

    /// Removes `entry` from every index.
    fn unfile(&mut self, entry: &Entry) {
        if let Some(key) = entry.expiry_key() {
            self.expiring.remove(&key);
        }
        self.all.remove(entry);
        if let Some(owner) = &entry.meta.owner {
            self.remove_from_owner(owner, entry);
        }
    }

    fn remove_from_owner(&mut self, owner: &str, entry: &Entry) {
        if let Some(index) = self.by_owner.get_mut(owner) {
            index.remove(entry);
            if index.by_id.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }
}
