//! Upkeep of the indexes that list sessions (by id and by update time, of every session
//! and of each owner) and of the expiry index (see `keys.rs`): following a write on a
//! cluster, indexing a session as it is stored after a write on a cluster whose own index
//! requests may never have been sent (`reindex`), pruning and repairing what a listing
//! finds stale, and moving the SET index of earlier releases into them. Taking sessions
//! that went out of them all on a cluster (`deleted`, `forget`, after a delete or a purge)
//! is in `retention.rs`, beside the purge that finishes one that stopped part way.
//!
//! An index may hold more than it should, never less (the "superset discipline"): an id
//! whose session expired or went, one that a write scored an instant before storing, one
//! in the indexes of an owner the session no longer has, an expiry entry of a session
//! written again since it expired (a purge meets it and replaces it). Readers check
//! every entry against the session's meta hash and skip, prune or repair what disagrees.
//! Removing an entry is always followed by a second look at the session, and an entry a
//! concurrent writer needed is put back, so pruning never drops a live session; on one
//! server a prune is one script instead, which removes only the entries of sessions not
//! there.
//!
//! On a cluster the discipline needs the index requests that follow each write: a write
//! whose reply was lost never sent them, so `reindex` sends them from the session as
//! stored, at once and again when the retry meets what its first copy did. A listing
//! could not: it never meets a session its index lacks.

use fusion_core::{Result, SessionId};
use futures::future::{join, try_join_all};
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisResult};

use super::followed::{Applied, stored_before};
use super::write::{Acked, evalsha};
use super::{RedisStorage, Request};
use crate::error::{Op, parse_redis_error};
use crate::keys::{Scope, expiry_member};
use crate::scripts::{self, Written};
use crate::stored::Stored;

/// How many commands a pipeline carries at most, so a huge index does not build one
/// enormous request and reply.
const PIPELINE_CHUNK: usize = 1000;

/// How many ids of the legacy SET index are moved at a time.
const LEGACY_BATCH: usize = 500;

/// Index commands, each with the key it changes (which decides its cluster slot).
pub(super) type IndexWrites = Vec<(String, Cmd)>;

/// A session taken out of the indexes on a cluster: its id and the owners whose indexes
/// may list it.
pub(super) struct Gone<'a> {
    pub(super) id: &'a str,
    pub(super) owners: Vec<&'a str>,
}

impl RedisStorage {
    /// After a write script on a cluster, where the script could not reach the indexes:
    /// scores the session at its new `updated_at` (and lists it by id when `listed`, a
    /// write that created or replaced it), in its owner's indexes too, and at the
    /// millisecond it expires in the expiry index if it has an expiry; or, after a
    /// delete, unindexes it ([`deleted`](Self::deleted)). On one server the script did all
    /// this already.
    ///
    /// `ZADD ... GT` keeps the highest score, so of two writers whose `ZADD`s arrive in
    /// the other order, the later write's time stays. The requests go side by side, each
    /// with its `WAIT` when the storage waits for replicas.
    pub(super) async fn follow(
        &self,
        op: Op<'_>,
        id: &str,
        written: &Written,
        listed: bool,
    ) -> Result<()> {
        if !self.conn.is_cluster() {
            return Ok(());
        }
        let owner = written.owner.as_deref();
        let Some(updated) = &written.updated else {
            let gone = |_: &()| (written.owner.clone(), written.due.is_some(), true);
            // `deleted` says of its errors that the session was deleted.
            return self.deleted(op.name, id, async { Ok(()) }, gone).await;
        };
        let mut writes = IndexWrites::new();
        for scope in [Some(Scope::All), owner.map(Scope::Owner)]
            .into_iter()
            .flatten()
        {
            let (ids, by_update) = self.keys.scope(scope);
            writes.push((by_update.clone(), zadd(&by_update, "GT", updated, id)));
            if listed {
                writes.push((ids.clone(), zadd(&ids, "NX", "0", id)));
            }
        }
        if let Some(due) = &written.due {
            let expiry = self.keys.expiry();
            let member = expiry_member(id, owner);
            writes.push((expiry.to_string(), zadd(expiry, "", due, &member)));
        }
        self.send_index(op, writes, true)
            .await
            .map_err(|err| stored_before(err, Applied::Stored))
    }

    /// On a cluster, sends the index entries of session `id` as it is stored now: by id
    /// and by update time (`ZADD NX`, `ZADD GT`), of every session and of its owner, and
    /// its entry of the expiry index if it has an expiry; or, when it is gone, takes it
    /// out of the indexes of every session ([`unindex_absent`](Self::unindex_absent),
    /// whose errors say nothing of a delete). Nothing on one server, where the scripts
    /// keep the indexes. With `acked`, the `ZADD`s wait for the replicas as a write's do
    /// when the storage asks for them.
    ///
    /// The repair after a write that may have applied without its index requests being
    /// sent: its reply was lost (`run_write`), or its retry met what it did (`write`,
    /// `trim`). Computed from the stored session rather than from the lost reply, it is
    /// right whatever the write was and whatever wrote since, and sending it twice, or
    /// after another writer's, changes nothing: `GT` keeps the later time.
    ///
    /// A writer between the read and the `ZADD`s leaves what the superset discipline
    /// allows: a session deleted meanwhile (or moved to another owner) keeps entries
    /// that the listings skip and prune when they meet them (its expiry entry, the
    /// purge), as they do for sessions Redis dropped; a session written meanwhile is
    /// scored by its writer, whose later time `GT` keeps. The owner of a session gone
    /// before the read is unknown: its owner's entries wait for that owner's listing.
    pub(super) async fn reindex(&self, name: &'static str, id: &str, acked: bool) -> Result<()> {
        if !self.conn.is_cluster() {
            return Ok(());
        }
        let found = self.stored_many(name, &[id.to_string()]).await?;
        let Some(stored) = found.into_iter().next().flatten() else {
            return self.unindex_absent(name, id).await;
        };
        let mut writes = IndexWrites::new();
        self.list_as_stored(&mut writes, id, &stored);
        if let Some((member, due)) = stored.expiry_entry(id) {
            let expiry = self.keys.expiry();
            let due = due.to_string();
            writes.push((expiry.to_string(), zadd(expiry, "", &due, &member)));
        }
        self.send_index(self.op(name, Some(id)), writes, acked)
            .await
    }

    /// Pushes the `ZADD`s that list `id` as `stored` holds it: by id and by update time,
    /// of every session and of its owner.
    pub(super) fn list_as_stored(&self, writes: &mut IndexWrites, id: &str, stored: &Stored) {
        let updated = stored.updated_ms().to_string();
        let owner = stored.owner().map(Scope::Owner);
        for scope in [Some(Scope::All), owner].into_iter().flatten() {
            let (by_id, by_update) = self.keys.scope(scope);
            writes.push((by_id.clone(), zadd(&by_id, "NX", "0", id)));
            writes.push((by_update.clone(), zadd(&by_update, "GT", &updated, id)));
        }
    }

    /// Removes `ids` from the indexes of `scope`, then puts back those that, looked at
    /// again, exist and belong there (a writer created or changed them meanwhile);
    /// returns those.
    ///
    /// On a cluster a look-again entry of each goes into the expiry index first
    /// ([`look_again`](Self::look_again)), one round trip more, and is dropped after the
    /// second look, one more: a prune that stops between its removals and that look
    /// (failed, dropped, its process killed) would leave a session a writer created and
    /// listed meanwhile unlisted for good, and the first purge (or delete or prune taking
    /// the entries up) after the lease finishes the look instead, as for a delete. When those entries cannot be added, nothing is
    /// pruned (returns none), and the caller goes on.
    pub(super) async fn prune(
        &self,
        name: &'static str,
        scope: Scope<'_>,
        ids: &[String],
    ) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if !self.conn.is_cluster() {
            return self.prune_at_once(name, scope, ids).await;
        }
        let token = scripts::claim_token();
        // A listing does not fail for the node of the expiry index, which it needs for
        // nothing else, nor wait on it: the prune is left (and logged) instead.
        let Some((marks, taken)) = self.look_again_soon(name, &token, ids).await else {
            return Ok(Vec::new());
        };
        let prune = self.prune_marked(name, scope, ids, &marks, &token);
        let ((), back) = join(self.finish_taken(name, &taken, &token), prune).await;
        back
    }

    /// [`prune`](Self::prune) on one server: the `PRUNE` script, which removes only the
    /// entries of sessions not there, in one atomic step, a chunk of ids a call (sent
    /// again after a dropped connection: twice, it does what it did once).
    async fn prune_at_once(
        &self,
        name: &'static str,
        scope: Scope<'_>,
        ids: &[String],
    ) -> Result<Vec<String>> {
        let (by_id, by_update) = self.keys.scope(scope);
        let owner = match scope {
            Scope::All => "",
            Scope::Owner(owner) => owner,
        };
        let mut kept = Vec::new();
        for chunk in ids.chunks(PIPELINE_CHUNK) {
            let mut call = evalsha(&scripts::PRUNE, &[&by_id, &by_update]);
            call.arg(self.keys.prefix()).arg(owner).arg(chunk);
            let more: Vec<String> = self
                .eval(&scripts::PRUNE, &call)
                .await
                .map_err(|err| parse_redis_error(err, self.op(name, None).on_key(&by_id)))?;
            kept.extend(more);
        }
        Ok(kept)
    }

    /// [`prune`](Self::prune) on a cluster, with its look-again entries `marks` (of the
    /// claimer of `token`) in place already: drops them after the second look, best
    /// effort.
    pub(super) async fn prune_marked(
        &self,
        name: &'static str,
        scope: Scope<'_>,
        ids: &[String],
        marks: &[String],
        token: &str,
    ) -> Result<Vec<String>> {
        let op = self.op(name, None);
        let (by_id, by_update) = self.keys.scope(scope);
        let mut writes = IndexWrites::new();
        for chunk in ids.chunks(PIPELINE_CHUNK) {
            for key in [&by_id, &by_update] {
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(key).arg(chunk);
                writes.push((key.clone(), zrem));
            }
        }
        self.send_index(op, writes, false).await?;
        // On a cluster a writer stores before it indexes: if the session appeared after
        // the caller looked, its writer either indexes after our ZREM (fine) or already
        // did, and we see the session now.
        let found = self.stored_many(name, ids).await?;
        let back: Vec<(&String, Stored)> = ids
            .iter()
            .zip(found)
            .filter_map(|(id, stored)| {
                let stored = stored?;
                let belongs = match scope {
                    Scope::All => true,
                    Scope::Owner(owner) => stored.owner() == Some(owner),
                };
                belongs.then_some((id, stored))
            })
            .collect();
        let mut writes = IndexWrites::new();
        for (id, stored) in &back {
            let updated = stored.updated_ms().to_string();
            writes.push((by_id.clone(), zadd(&by_id, "NX", "0", id)));
            writes.push((by_update.clone(), zadd(&by_update, "GT", &updated, id)));
        }
        self.send_index(op, writes, false).await?;
        // The prune is done. Its entries left (the expiry index's node failing now) are
        // finished by the next take-up or purge a lease later, a second look that lists
        // what it finds: nothing for the caller, a listing or an owner change already
        // applied, to fail for, nor to wait on past the bound of the look-again call.
        self.drop_look_again_soon(name, token, marks).await;
        Ok(back.into_iter().map(|(id, _)| id.clone()).collect())
    }

    /// Sets the scores of `stale` entries of the by-update index `key` — (id, score as
    /// read, the session's `updated_at`) — to the session's time, each only if its score
    /// is still the one read (a writer may have moved it since).
    pub(super) async fn repair(
        &self,
        name: &'static str,
        key: &str,
        stale: Vec<(String, String, i64)>,
    ) -> Result<()> {
        let calls = stale
            .iter()
            .map(|(id, read, updated)| {
                let mut call = evalsha(&scripts::REINDEX, &[key]);
                call.arg(id).arg(read).arg(updated);
                call
            })
            .collect();
        self.eval_all(&scripts::REINDEX, calls)
            .await
            .map_err(|err| parse_redis_error(err, self.op(name, None).on_key(key)))?;
        Ok(())
    }

    /// The sessions `ids` as they are now (`None`: absent, or a key of another type),
    /// each read atomically with the `INFO` script: in pipelines on one server, side by
    /// side on a cluster.
    pub(super) async fn stored_many(
        &self,
        name: &'static str,
        ids: &[String],
    ) -> Result<Vec<Option<Stored>>> {
        self.info_each(name, ids, "lenient", |reply| Ok(Stored::from_reply(reply)?))
            .await
    }

    /// Moves the ids of the SET index that releases before the ZSETs kept into the
    /// ZSETs, a batch at a time; returns whether there were any.
    ///
    /// Every listing calls it first (the one `SRANDMEMBER` costs nothing when the SET is
    /// gone), so a keyspace written by an earlier release is upgraded on first use, and
    /// so are sessions an old process still running creates later. Processes doing it at
    /// once are safe: indexing uses `ZADD NX`/`GT`, which another process's newer entry
    /// wins over, and an id leaves the SET only after it was indexed. An id whose session
    /// is gone is dropped.
    ///
    /// The `SRANDMEMBER` is a read, on the reads' connection: on the writes' one a write
    /// of this storage that `CLIENT PAUSE WRITE` holds would hold every listing behind it.
    pub(super) async fn upgrade_legacy(&self, name: &'static str) -> Result<bool> {
        let legacy = self.keys.legacy_index();
        let op = self.op(name, None).on_key(legacy);
        let mut moved = false;
        loop {
            let ids: Vec<String> = self
                .read(Request::Cmd(
                    redis::cmd("SRANDMEMBER").arg(legacy).arg(LEGACY_BATCH),
                ))
                .await
                .map_err(|err| parse_redis_error(err, op))?;
            if ids.is_empty() {
                return Ok(moved);
            }
            let (valid, invalid): (Vec<String>, Vec<String>) = ids
                .iter()
                .cloned()
                .partition(|id| SessionId::validate(id).is_ok());
            if !invalid.is_empty() {
                tracing::warn!(
                    legacy,
                    ?invalid,
                    "dropping invalid session ids from the old index"
                );
            }
            self.adopt(name, &valid).await?;
            self.run::<()>(Request::Cmd(redis::cmd("SREM").arg(legacy).arg(&ids)))
                .await
                .map_err(|err| parse_redis_error(err, op))?;
            moved = true;
        }
    }

    /// Indexes those of `ids` that exist, as they are now: by id, by update time, and in
    /// their owner's indexes.
    async fn adopt(&self, name: &'static str, ids: &[String]) -> Result<()> {
        let found = self.stored_many(name, ids).await?;
        let mut writes = IndexWrites::new();
        for (id, stored) in ids.iter().zip(found) {
            let Some(stored) = stored else { continue };
            self.list_as_stored(&mut writes, id, &stored);
        }
        self.send_index(self.op(name, None), writes, false).await
    }

    /// Sends index commands, their replies ignored: one pipeline on one server; on a
    /// cluster one per key, side by side. With `acked`, each request also waits for the
    /// replicas when the storage asks for them.
    ///
    /// Each is sent again after a refused or dropped connection, as a read is: an index
    /// command does no harm twice (`ZADD NX` or `GT`, `ZREM`, the `ZADD` of an expiry
    /// entry computed once), and one whose reply was lost would otherwise fail the write
    /// it follows. They go on the writes' connection, not the reads' (`connect.rs`): a
    /// write `CLIENT PAUSE WRITE` holds would hold every read sent behind it there.
    pub(super) async fn send_index(
        &self,
        op: Op<'_>,
        writes: IndexWrites,
        acked: bool,
    ) -> Result<()> {
        let mut requests: Vec<(String, Pipeline)> = Vec::new();
        for (key, cmd) in writes {
            let at = if self.conn.is_cluster() {
                requests.iter().position(|(k, _)| *k == key)
            } else {
                requests.first().map(|_| 0)
            };
            let at = at.unwrap_or_else(|| {
                requests.push((key, redis::pipe()));
                requests.len() - 1
            });
            requests[at].1.add_command(cmd).ignore();
        }
        let acks = self.replica_acks.filter(|_| acked);
        let sends = requests.iter_mut().map(|(key, pipe)| async move {
            let op = op.on_key(key);
            let Some(acks) = acks else {
                let sent: RedisResult<()> = self.send_index_request(Request::Pipe(pipe)).await;
                return sent.map_err(|err| parse_redis_error(err, op));
            };
            let timeout = u64::try_from(acks.timeout.as_millis()).unwrap_or(u64::MAX);
            pipe.cmd("WAIT").arg(acks.replicas).arg(timeout);
            let (replicas,): (usize,) = self
                .send_index_request(Request::Pipe(pipe))
                .await
                .map_err(|err| parse_redis_error(err, op))?;
            self.acknowledged(Acked::new((), Some(replicas)), op)
        });
        try_join_all(sends).await.map(drop)
    }

    /// One request of [`send_index`](Self::send_index), on the writes' connection; also a
    /// call of the `REINDEX` script (`scripting.rs`).
    pub(super) async fn send_index_request<T: FromRedisValue>(
        &self,
        request: Request<'_>,
    ) -> RedisResult<T> {
        let again = |err: &RedisError| err.is_connection_refusal() || err.is_connection_dropped();
        self.conn.clone().send_again_if(request, again).await
    }

    /// Which of `ids` are sessions now: a message list and no expiry passed (the `INFO`
    /// script's `exists` mode, which reads the clock only for a session with an expiry),
    /// in chunks: pipelined on one server, side by side on a cluster, where each session
    /// has a slot of its own. A key of another type under the list's name (something
    /// else wrote there, and our writes to it failed) is no session either. `name` is the
    /// operation, for errors.
    pub(super) async fn existing(&self, name: &'static str, ids: &[String]) -> Result<Vec<bool>> {
        self.info_each(name, ids, "exists", |reply| {
            let (len,): (i64,) = redis::FromRedisValue::from_redis_value(reply)?;
            Ok(len > 0)
        })
        .await
    }

    /// Runs the `INFO` script in `mode` on each of `ids`, in chunks (pipelined on one
    /// server, side by side on a cluster), and reads each reply with `read`. `name` is
    /// the operation, for errors.
    async fn info_each<T>(
        &self,
        name: &'static str,
        ids: &[String],
        mode: &str,
        read: impl Fn(redis::Value) -> RedisResult<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(PIPELINE_CHUNK) {
            let calls = chunk
                .iter()
                .map(|id| {
                    let mut call =
                        evalsha(&scripts::INFO, &[self.keys.list(id), self.keys.meta(id)]);
                    call.arg(mode);
                    call
                })
                .collect();
            let replies = self
                .eval_all(&scripts::INFO, calls)
                .await
                .map_err(|err| parse_redis_error(err, self.op(name, None)))?;
            for reply in replies {
                out.push(read(reply).map_err(|err| parse_redis_error(err, self.op(name, None)))?);
            }
        }
        Ok(out)
    }
}

/// `ZADD key <flag> score member`; an empty `flag` is none.
pub(super) fn zadd(key: &str, flag: &str, score: &str, member: &str) -> Cmd {
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(key);
    if !flag.is_empty() {
        cmd.arg(flag);
    }
    cmd.arg(score).arg(member);
    cmd
}

#[cfg(test)]
mod tests {
    use fusion_core::testkit::faults::FaultProxy;
    use fusion_core::testkit::said;
    use fusion_core::{ConversationStorage, SessionMeta};

    use crate::keys::Scope;
    use crate::{RedisOptions, RedisStorage};

    /// Found by a review: on one server a prune removed the index entries, then looked at
    /// the sessions again and put back those there, so a prune that stopped between the
    /// two (the look failing, its process killed) left a session a writer had created
    /// again (and listed) meanwhile unlisted for good: a cluster has look-again entries
    /// for that, one server had nothing. The prune is one script now, which removes only
    /// the entries of sessions not there. Here every reply to a second look is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prune_on_one_server_never_unlists_a_session_that_is_there() {
        let Some(url) = crate::scripts::tests::server_url() else {
            return;
        };
        let (proxy, through) = FaultProxy::start_for_url(&url, 6379).await;
        let prefix = format!("prune-at-once-{}", crate::scripts::claim_token());
        let options = RedisOptions::new().key_prefix(&prefix);
        let store = RedisStorage::connect_with(&through, options).await.unwrap();
        // Created again by a writer between a listing's look, which found it gone, and
        // the listing's prune.
        let id = "again".to_string();
        let meta = SessionMeta::new();
        store.create_session(&id, &meta, &said("a")).await.unwrap();
        proxy.cut_randomly_containing("lenient", 1.0, 3);
        let pruned = store
            .prune("list_sessions", Scope::All, std::slice::from_ref(&id))
            .await;
        proxy.stop_cutting();
        let listed = store.list_sessions().await.unwrap();
        store.delete(&id).await.unwrap();
        assert_eq!(listed, [id], "{pruned:?}");
    }
}
