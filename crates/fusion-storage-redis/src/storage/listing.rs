//! Listing sessions (issue #16): `list_page` walks the index of its order and owner from
//! its cursor and checks each entry against the session; `list_sessions` reads the by-id
//! index whole.
//!
//! A page reads its index in batches of `limit + 1` entries (the by-update index with
//! the `WALK` script, the by-id one with `ZRANGE ... BYLEX`), then reads those sessions
//! (the `INFO` script, one pipeline on one server, side by side on a cluster). An entry
//! whose session is gone, or belongs to another owner now, is skipped and pruned; one
//! whose score is not the session's `updated_at` is placed by the session's own time and
//! repaired. Since an index may be ahead of its sessions but is never behind (see
//! `index.rs`), a session is placed no later than its entry, so once the walk has passed
//! a position, every session before it is known: the page is complete when `limit + 1`
//! sessions are. A page therefore costs O(limit) reads however many sessions are stored
//! and however deep the cursor is, plus whatever stale entries it meets on the way (each
//! pruned or repaired once; a prune or repair that fails is upkeep left for a later
//! listing, logged once, and the page is still what the walk read). A tag filter is the
//! exception: it reads batches of at least [`FILTER_BATCH`] until enough sessions carry
//! the tag, O(limit / the share of sessions tagged so) — there is no index per tag, which
//! would cost every append a `ZADD` per tag.
//!
//! A search (`SessionQuery::search`) is checked the same way, on the sessions the walk
//! reads anyway (`SessionQuery::admits`: the id, and the title in the meta hash): batches
//! of at least [`FILTER_BATCH`] in the index's order, stopping at the batch that completes
//! the page, so O(limit / the share of sessions that match) reads and round trips, up to
//! every session of the index (or owner) for a text nothing matches. Nothing cheaper is
//! honest here: a Lua script cannot read the sessions of a Cluster's other slots, and an
//! index of titles' substrings would cost every title change many writes.

use std::collections::BTreeMap;

use fusion_core::{
    Position, Result, SessionId, SessionInfo, SessionOrder, SessionPage, SessionQuery,
};

use super::upkeep::Left;
use super::write::evalsha;
use super::{RedisStorage, Request};
use crate::error::parse_redis_error;
use crate::keys::Scope;
use crate::scripts;

/// The smallest batch a listing filtered by tag or searched reads, so a rare tag or text
/// takes fewer round trips (each batch is two: the walk, then one pipeline of sessions).
const FILTER_BATCH: usize = 200;

/// An index entry: a session id and, in a by-update index, its score as Redis replied it
/// and in ms.
#[derive(Debug, Clone)]
struct Entry {
    id: String,
    score: Option<(String, i64)>,
}

/// Where a walk of an index resumes: strictly after this.
#[derive(Debug, Clone, Default)]
enum After {
    /// At the start.
    #[default]
    Start,
    /// After an id (the by-id index).
    Id(String),
    /// After a score and, at that score, after a member (empty: the whole group at that
    /// score comes after).
    Score(String, String),
}

impl After {
    /// Where a page that starts after `position` resumes the walk.
    fn of(position: Option<Position>) -> Self {
        match position {
            None => After::Start,
            Some(Position::Id(id)) => After::Id(id),
            // Scores are whole milliseconds. A position between two of them (from a
            // cursor this backend did not hand out) comes before the whole group at the
            // millisecond below it.
            Some(Position::Updated { micros, id }) if micros % 1000 == 0 => {
                After::Score((micros / 1000).to_string(), id)
            }
            Some(Position::Updated { micros, .. }) => {
                After::Score(micros.div_euclid(1000).to_string(), String::new())
            }
        }
    }
}

impl Entry {
    /// The entry's place in the listing order: where its session would be if the index
    /// were exact.
    fn position(&self, order: SessionOrder) -> Position {
        match (&self.score, order) {
            (Some((_, ms)), SessionOrder::UpdatedDesc) => Position::Updated {
                micros: ms.saturating_mul(1000),
                id: self.id.clone(),
            },
            _ => Position::Id(self.id.clone()),
        }
    }

    /// Where a walk resumes after this entry.
    fn after(&self) -> After {
        match &self.score {
            Some((text, _)) => After::Score(text.clone(), self.id.clone()),
            None => After::Id(self.id.clone()),
        }
    }
}

impl RedisStorage {
    /// One page of `query`; see the module documentation.
    pub(super) async fn page(&self, query: &SessionQuery) -> Result<SessionPage> {
        query.validate()?;
        let start = query.start()?;
        let order = query.order;
        let scope = query.owner.as_deref().map_or(Scope::All, Scope::Owner);
        let (by_id, by_update) = self.keys.scope(scope);
        let index = match order {
            SessionOrder::UpdatedDesc => by_update,
            SessionOrder::Id => by_id,
        };
        let want = query.limit + 1;
        let batch = if query.tag.is_some() || query.search.is_some() {
            want.max(FILTER_BATCH)
        } else {
            want
        };
        let mut after = After::of(start.clone());
        // The index of an earlier release is looked for beside the first batch; if there
        // was one, its ids are in the ZSETs now and the batch is read again.
        let (moved, first) = futures::try_join!(
            self.upgrade_legacy("list_page"),
            self.walk(order, &index, &after, batch)
        )?;
        let mut entries = match moved {
            true => self.walk(order, &index, &after, batch).await?,
            false => first,
        };
        let mut rows: BTreeMap<Position, SessionInfo> = BTreeMap::new();
        let (mut stale, mut repairs) = (Vec::new(), Vec::new());
        let edge = loop {
            let valid: Vec<&Entry> = entries
                .iter()
                .filter(|entry| match SessionId::validate(&entry.id) {
                    Ok(()) => true,
                    Err(_) => {
                        tracing::warn!(index, id = entry.id, "ignoring an invalid id in an index");
                        false
                    }
                })
                .collect();
            let ids: Vec<String> = valid.iter().map(|entry| entry.id.clone()).collect();
            let found = self.stored_many("list_page", &ids).await?;
            for (entry, stored) in valid.into_iter().zip(found) {
                let Some(stored) = stored else {
                    stale.push(entry.id.clone());
                    continue;
                };
                if let Scope::Owner(owner) = scope
                    && stored.owner() != Some(owner)
                {
                    stale.push(entry.id.clone());
                    continue;
                }
                if let Some((text, ms)) = &entry.score
                    && *ms != stored.updated_ms()
                {
                    repairs.push((entry.id.clone(), text.clone(), stored.updated_ms()));
                }
                let info = stored.info(&self.keys, &entry.id)?;
                let at = Position::of(order, &info);
                if start.as_ref().is_some_and(|start| at <= *start) || !query.admits(&info) {
                    continue;
                }
                rows.insert(at, info);
                if rows.len() > want {
                    rows.pop_last();
                }
            }
            let Some(last) = entries.last().filter(|_| entries.len() == batch) else {
                break None; // the index is exhausted: every row is known
            };
            let edge = last.position(order);
            if rows.range(..=&edge).count() >= want {
                break Some(edge);
            }
            after = last.after();
            entries = self.walk(order, &index, &after, batch).await?;
        };
        // Upkeep: the page is what the walk read, whatever becomes of it.
        self.prune_or_leave("list_page", scope, &stale).await;
        let repaired = repairs.len();
        if repaired > 0
            && let Err(err) = self.repair("list_page", &index, repairs).await
        {
            Left::Failed(err).log(
                "a listing's repair of index scores left for later",
                repaired,
            );
        }
        let mut sessions: Vec<SessionInfo> = rows
            .into_iter()
            .filter(|(at, _)| edge.as_ref().is_none_or(|edge| at <= edge))
            .map(|(_, info)| info)
            .collect();
        let more = sessions.len() > query.limit;
        sessions.truncate(query.limit);
        let next = sessions
            .last()
            .filter(|_| more)
            .map(|info| Position::of(order, info).cursor());
        Ok(SessionPage::new(sessions, next))
    }

    /// Up to `n` entries of `index` after `after`, in `order`: newest first in a
    /// by-update index, by id in a by-id one.
    async fn walk(
        &self,
        order: SessionOrder,
        index: &str,
        after: &After,
        n: usize,
    ) -> Result<Vec<Entry>> {
        let by_update = |score: &str, member: &str| {
            let mut call = evalsha(&scripts::WALK, &[index]);
            call.arg(score).arg(member).arg(n);
            call
        };
        let entries = match (order, after) {
            (SessionOrder::Id, After::Id(id)) => self.by_id(index, &format!("({id}"), n).await,
            (SessionOrder::Id, _) => self.by_id(index, "-", n).await,
            (SessionOrder::UpdatedDesc, After::Score(score, member)) => {
                self.scored(&by_update(score, member)).await
            }
            (SessionOrder::UpdatedDesc, _) => self.scored(&by_update("", "")).await,
        };
        entries.map_err(|err| parse_redis_error(err, self.op("list_page", None).on_key(index)))
    }

    /// [`prune`](Self::prune) for a listing, which is a read: a prune that fails (at any
    /// step: on a cluster its look-again entries are in place by then, for a purge to
    /// finish it) is logged once and left to a later listing, which meets the entries
    /// again, and the listing answers what it read. Returns the ids put back (none when
    /// it failed: their sessions were gone when the listing looked).
    async fn prune_or_leave(
        &self,
        name: &'static str,
        scope: Scope<'_>,
        ids: &[String],
    ) -> Vec<String> {
        match self.prune(name, scope, ids).await {
            Ok(back) => back,
            Err(err) => {
                Left::Failed(err).log("a listing's prune left for a later listing", ids.len());
                Vec::new()
            }
        }
    }

    /// `ZRANGE index <from> + BYLEX LIMIT 0 n`.
    async fn by_id(&self, index: &str, from: &str, n: usize) -> redis::RedisResult<Vec<Entry>> {
        let mut zrange = redis::cmd("ZRANGE");
        zrange
            .arg(index)
            .arg(from)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(n);
        let ids: Vec<String> = self.read(Request::Cmd(&zrange)).await?;
        Ok(ids
            .into_iter()
            .map(|id| Entry { id, score: None })
            .collect())
    }

    /// The entries the `WALK` call returns.
    async fn scored(&self, call: &redis::Cmd) -> redis::RedisResult<Vec<Entry>> {
        let flat: Vec<(String, String)> = self.eval(&scripts::WALK, call).await?;
        Ok(flat
            .into_iter()
            .map(|(id, text)| {
                // Fusion's scores are whole ms; anything else is read as the ms below.
                let ms = text.parse::<f64>().map_or(0, |score| score.floor() as i64);
                Entry {
                    id,
                    score: Some((text, ms)),
                }
            })
            .collect())
    }

    /// Every session id, by id: the by-id index, less the ids that have no message list
    /// (checked again and pruned).
    pub(super) async fn all_ids(&self) -> Result<Vec<String>> {
        self.upgrade_legacy("list_sessions").await?;
        let index = self.keys.ids();
        let mut zrange = redis::cmd("ZRANGE");
        zrange.arg(index).arg(0).arg(-1);
        let ids: Vec<String> = self
            .read(Request::Cmd(&zrange))
            .await
            .map_err(|err| parse_redis_error(err, self.op("list_sessions", None).on_key(index)))?;
        let exists = self.existing("list_sessions", &ids).await?;
        let (mut live, mut gone) = (Vec::with_capacity(ids.len()), Vec::new());
        for (id, exists) in ids.into_iter().zip(exists) {
            if !exists {
                gone.push(id);
            } else if SessionId::validate(&id).is_ok() {
                live.push(id);
            } else {
                tracing::warn!(index, id, "ignoring an invalid session id in the index");
            }
        }
        if !gone.is_empty() {
            tracing::debug!(
                index,
                count = gone.len(),
                "pruning expired sessions from the index"
            );
            live.extend(
                self.prune_or_leave("list_sessions", Scope::All, &gone)
                    .await,
            );
            live.sort_unstable();
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use fusion_core::testkit::logs::Logs;
    use fusion_core::testkit::said;
    use fusion_core::{ConversationStorage, SessionMeta, SessionQuery};
    use redis::AsyncCommands;
    use tracing::instrument::WithSubscriber;

    use crate::{RedisOptions, RedisStorage};

    /// Found by a review: a listing whose prune failed (here refused by a key of another
    /// type where the by-id index goes, which a newest-first page does not read) failed,
    /// where a listing is a read: it answers what it read now, warning once that the
    /// prune was left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listing_whose_prune_fails_answers_what_it_read() {
        let Some(url) = crate::scripts::tests::server_url() else {
            return;
        };
        let prefix = format!("prune-left-{}", crate::scripts::claim_token());
        let options = RedisOptions::new().key_prefix(&prefix);
        let store = RedisStorage::connect_with(&url, options).await.unwrap();
        for id in ["pruned", "kept"] {
            let meta = SessionMeta::new();
            store.create_session(id, &meta, &said("a")).await.unwrap();
        }
        let mut raw = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let gone = [
            format!("{prefix}:s:{{pruned}}"),
            format!("{prefix}:m:{{pruned}}"),
        ];
        let _: () = raw.del(&gone).await.unwrap();
        let ids = format!("{prefix}:ids");
        let _: () = raw.set(&ids, "not an index").await.unwrap();
        let logs = Logs::new();
        let page = store
            .list_page(&SessionQuery::default())
            .with_subscriber(logs.subscriber(tracing::Level::WARN))
            .await;
        let _: () = raw.del(&ids).await.unwrap();
        store.delete("kept").await.unwrap();
        let _: () = raw.del(format!("{prefix}:updated")).await.unwrap();
        let page = page.unwrap();
        let listed: Vec<&str> = page.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(listed, ["kept"]);
        let text = logs.text();
        let phrase = "a listing's prune left for a later listing";
        assert_eq!(text.matches(phrase).count(), 1, "{text}");
        assert!(text.contains("wrong type"), "{text}");
    }

    /// Found by a review: a listing whose repair of stale index scores failed logged the
    /// upkeep left with a count of 1, however many scores it left stale. It counts them
    /// now (here two, whose repairs lose every reply).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listing_whose_repair_fails_counts_the_repairs_it_left() {
        use fusion_core::testkit::faults::FaultProxy;
        use std::time::Duration;

        let Some(url) = crate::scripts::tests::server_url() else {
            return;
        };
        let (proxy, through) = FaultProxy::start_for_url(&url, 6379).await;
        let prefix = format!("repair-left-{}", crate::scripts::claim_token());
        let options = RedisOptions::new()
            .key_prefix(&prefix)
            .connect_timeout(Duration::from_secs(1))
            .reconnect_retries(1);
        let store = RedisStorage::connect_with(&through, options).await.unwrap();
        let ids = ["one", "two", "three"];
        for id in ids {
            let meta = SessionMeta::new();
            store.create_session(id, &meta, &said("a")).await.unwrap();
        }
        let mut raw = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        // Two entries scored at another time than their sessions' `updated_at`.
        let updated = format!("{prefix}:updated");
        let _: () = raw
            .zadd_multiple(&updated, &[(1, "one"), (2, "two")])
            .await
            .unwrap();
        let reindex = crate::scripts::REINDEX.get_hash().to_string();
        proxy.cut_randomly_containing(reindex, 1.0, 5);
        let logs = Logs::new();
        let page = store
            .list_page(&SessionQuery::default())
            .with_subscriber(logs.subscriber(tracing::Level::DEBUG))
            .await;
        proxy.stop_cutting();
        for id in ids {
            store.delete(id).await.unwrap();
        }
        let _: () = raw.del(&updated).await.unwrap();
        assert_eq!(page.unwrap().sessions.len(), 3);
        let text = logs.text();
        let phrase = "a listing's repair of index scores left for later";
        let line = text.lines().find(|line| line.contains(phrase));
        let line = line.unwrap_or_else(|| panic!("no repair left: {text}"));
        assert!(line.contains("count=2"), "{line}");
    }
}
