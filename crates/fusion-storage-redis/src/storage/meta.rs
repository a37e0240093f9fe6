//! A session's facts and metadata (issue #16): `session_info`, `create_session` and
//! `update_session`.
//!
//! The metadata lives in the session's meta hash (see `stored.rs`), beside its
//! timestamps and generation, so it shares the session's slot, TTL and lifetime: `DEL`
//! removes it with the list. `create_session` is the write script creating the session
//! with the metadata as extra fields, so nobody ever sees the session without its owner;
//! `create_session_with_times` is the same, with the times of a copy as two fields more.
//! `update_session` reads the fields, applies the change and validates the result in
//! Rust (the rules live in `fusion_core` once), then writes them back with a script that
//! first checks they still hold what was read, and starts over when they do not. The
//! expiry is not compared: an update that sets it sets it, one that does not keeps the
//! one the session has when the script runs.

use fusion_core::{
    ChatMessage, Error, Expect, MetaUpdate, Result, SessionInfo, SessionMeta, SessionTimes,
    check_creation,
};
use futures::future::join;
use redis::{FromRedisValue, Value};

use super::RedisStorage;
use super::followed::Did;
use super::forget::forget_limit;
use super::upkeep::{Left, within};
use super::write::evalsha;
use crate::error::{BACKEND, parse_redis_error};
use crate::keys::Scope;
use crate::scripts::{self, Written};
use crate::stored::{self, Stored};

/// How many times `update_session` starts over when the metadata changed between its
/// read and its write, before it reports a conflict. Each retry means another update
/// got through, so this only bounds how long one caller can lose the race.
const UPDATE_ATTEMPTS: usize = 32;

impl RedisStorage {
    /// The facts of `id` (already validated), or `None` if it holds no messages: one
    /// atomic read (the `INFO` script), one round trip.
    pub(super) async fn info(&self, id: &str) -> Result<Option<SessionInfo>> {
        let stored = self.stored_one("session_info", id).await?;
        stored.map(|stored| stored.info(&self.keys, id)).transpose()
    }

    /// `id` as the `INFO` script reads it; a key of another type fails, naming it.
    async fn stored_one(&self, name: &'static str, id: &str) -> Result<Option<Stored>> {
        let (list, meta) = (self.keys.list(id), self.keys.meta(id));
        let mut call = evalsha(&scripts::INFO, &[&list, &meta]);
        call.arg("strict");
        let op = self.op(name, Some(id)).on_keys(&[&list, &meta]);
        let reply: Value = self
            .eval(&scripts::INFO, &call)
            .await
            .map_err(|err| parse_redis_error(err, op))?;
        Stored::from_reply(reply).map_err(|err| parse_redis_error(err.into(), op))
    }

    /// Creates `id` with `meta` and `messages` in one script: the conditional append
    /// expecting no session (so a taken id is a conflict) that stores `meta` with the
    /// timestamps and generation: the script's clock, or the `times` of a copy (checked
    /// by the caller), none later than that clock.
    pub(super) async fn create(
        &self,
        id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: Option<SessionTimes>,
    ) -> Result<u64> {
        check_creation(BACKEND, id, meta, messages)?;
        let mut created_with = stored::fields(meta);
        created_with.extend(times.iter().flat_map(stored::times_fields));
        let expected = Expect::Generation(0);
        let name = match times {
            None => "create_session",
            Some(_) => "create_session_with_times",
        };
        let outcome = self
            .write(name, id, "append", Some(expected), messages, &created_with)
            .await?;
        let generation = stored::generation(&self.keys, id, &outcome.generation)?;
        if !outcome.applied {
            return Err(expected.conflict(BACKEND, id, generation, Some(outcome.len)));
        }
        Ok(generation)
    }

    /// Applies `update` to the metadata of `id` (already validated): read, apply and
    /// validate, then the compare-and-set script, again while another writer changed the
    /// metadata in between. Two round trips when nobody races it (three on a cluster:
    /// the indexes follow).
    pub(super) async fn update(
        &self,
        id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        if update.is_empty() {
            return self.info(id).await;
        }
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(found) = self.stored_one("update_session", id).await? else {
                return Ok(None);
            };
            let mut meta = found.info(&self.keys, id)?.meta;
            if let Err(refused) = update.apply_to_stored(id, &mut meta) {
                // A conditional hand-over (`if_owner`) retried after its reply was lost
                // finds the session already with the new owner: its first copy applied,
                // and on a cluster that copy's index requests may never have been sent.
                if matches!(refused, Error::NotOwner { .. })
                    && let Some(Some(owner)) = &update.owner
                    && meta.owner.as_ref() == Some(owner)
                {
                    self.reindex("update_session", id, true).await?;
                }
                return Err(refused);
            }
            let (list, meta_key) = (self.keys.list(id), self.keys.meta(id));
            let keys = self.script_keys(&list, &meta_key);
            let mut call = evalsha(self.writing(&scripts::UPDATE), &keys);
            call.arg(id).arg(self.ttl_ms()).arg(self.keys.prefix());
            for value in found.meta.iter().cloned().chain(stored::values(&meta)) {
                call.arg(value.map_or_else(|| "-".to_string(), |value| format!("+{value}")));
            }
            // Whatever the read saw, `keep` keeps the expiry the session has when the
            // script runs (moving an idle one, as any write does).
            match &update.expiry {
                None => call.arg("keep").arg(""),
                Some(expiry) => match stored::expiry_arg(expiry.as_ref()) {
                    None => call.arg("none").arg(""),
                    Some((kind, value)) => call.arg(kind).arg(value),
                },
            };
            let op = self.op("update_session", Some(id));
            let reply: Value = self
                .run_write(
                    self.writing(&scripts::UPDATE),
                    &call,
                    op,
                    &keys,
                    Did::Update,
                )
                .await?;
            let items: Vec<Value> = FromRedisValue::from_redis_value(reply)
                .map_err(|err| parse_redis_error(err.into(), op))?;
            if matches!(items.first(), Some(Value::Int(-1))) {
                continue;
            }
            let Some(after) = Stored::from_reply(Value::Array(items))
                .map_err(|err| parse_redis_error(err.into(), op))?
            else {
                return Ok(None);
            };
            let (old, new) = (found.owner(), after.owner());
            let entry = after.expiry_entry(id);
            let written = Written {
                updated: Some(after.updated_ms().to_string()),
                owner: new.map(str::to_string),
                due: entry.as_ref().map(|(_, due)| due.to_string()),
            };
            // Listed by id too, whether or not the owner changed: the retry of an update
            // whose reply was lost applies it again and finds the owner already changed,
            // and that first copy's index requests were never sent. On a cluster this
            // costs an update a `ZADD` more to the index of every session, side by side
            // with the others; on one server the script did it all.
            let moved = old.filter(|old| Some(*old) != new && self.conn.is_cluster());
            let (token, ids) = (scripts::claim_token(), [id.to_string()]);
            // The look-again entry of the prune below goes beside the index requests.
            // Without it the prune is left to the old owner's listings (which skip the
            // stale entries meanwhile), as in `prune`: the update does not fail for it.
            let marks = async {
                match moved {
                    Some(_) => self.look_again_soon(op.name, &token, &ids).await,
                    None => None,
                }
            };
            let (followed, marks) = join(self.follow(op, id, &written, true), marks).await;
            followed?;
            if self.conn.is_cluster() {
                if let (Some(old), Some((marks, taken))) = (moved, marks) {
                    let prune = self.prune_marked(op.name, Scope::Owner(old), &ids, &marks, &token);
                    let ((), pruned) =
                        join(self.finish_taken(op.name, &taken, &token), prune).await;
                    // The update applied: failing it now would have its caller retry a
                    // write that happened. The prune is upkeep, as a listing's is: the
                    // old owner's listings skip the stale entries and prune them, and a
                    // purge finishes a prune stopped part way from its look-again entry.
                    if let Err(err) = pruned {
                        Left::Failed(err).log("an owner change's prune left for later listings", 1);
                    }
                }
                // The entry of the expiry index the session had, if it has another now
                // (another owner) or none. Upkeep too, after the update applied: an
                // entry left is met by a purge when it comes due, which finds the
                // session as it is.
                if let Some((was, _)) = found.expiry_entry(id)
                    && entry.is_none_or(|(member, _)| member != was)
                {
                    // Bounded as other upkeep is (`upkeep::within`, the response timeout
                    // a round trip): the update is done, and its caller does not wait on
                    // the expiry index's node for this.
                    let token = scripts::claim_token();
                    let was = [was];
                    let forget = self.forget(op.name, &[], &was, &[], &token);
                    let limit = forget_limit(self.response_timeout, was.len());
                    if let Err(left) = within(limit, forget).await {
                        left.log("an expiry entry left for a purge", 1);
                    }
                }
            }
            return after.info(&self.keys, id).map(Some);
        }
        Err(Error::Conflict {
            backend: BACKEND,
            session_id: id.to_string(),
            detail: format!(
                "its metadata changed between the read and the write of {UPDATE_ATTEMPTS} \
                 attempts in a row to update it; try again"
            ),
        })
    }
}
