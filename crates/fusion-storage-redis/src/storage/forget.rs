//! Taking sessions out of the indexes on a cluster, after a delete, a purge or a prune:
//! the look-again entries a delete or a prune leaves in the expiry index before its
//! removals (and the due ones of others it takes up), `forget`'s removals and second
//! look, and the `CLAIMED` script's actions on the expiry index. The purge that finishes
//! what stopped part way is in `retention.rs`; the prune in `index.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use fusion_core::{Result, SessionId};
use futures::future::{join, try_join};
use redis::Value;

use super::RedisStorage;
use super::followed::{Applied, of_session, stored_before};
use super::index::{Gone, IndexWrites, zadd};
use super::upkeep::within;
use super::write::evalsha;
use crate::error::parse_redis_error;
use crate::keys::{Scope, expiry_member, look_again_member, member_session};
use crate::scripts;

/// How long a cluster's purge holds the due entries it claimed (see `retention.rs`), and
/// a delete or prune its look-again entries: far longer than a round of a purge takes,
/// so a purge beside it does not sweep them too, and short enough that those of a purge
/// (or delete) that never finished come due again soon.
pub(super) const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// How many members of the expiry index one `CLAIMED` call names at most, so one call
/// does not hold the node for long.
const CLAIMED_CHUNK: usize = 1000;

impl RedisStorage {
    /// Session `id` deleted on a cluster by `script` (the `DELETE` script's call; nothing
    /// for a truncate to nothing whose script ran), whose reply tells by `gone` its owner,
    /// whether it had an expiry entry and whether anything was stored to delete: sends beside it the session's look-again entry
    /// (`keys::look_again_member`, due a [`CLAIM_LEASE`] later, which needs no owner),
    /// then [`forget`](Self::forget)s it ([`unindex`](Self::unindex)).
    /// A delete is four round trips so, the entry's removal after the second look
    /// included; one that stops part way is finished by the first purge after the lease
    /// (or a later delete or prune that takes the entry up, see
    /// [`look_again`](Self::look_again)), also for a session with an expiry entry, which
    /// may come due only years later. On
    /// one server only the script, which kept the indexes. Returns the script's reply;
    /// an error after the script says the session was deleted, or, when nothing was
    /// stored under `id`, that there was nothing to delete and only taking it out of the
    /// indexes failed (see [`stored_before`](super::followed::stored_before)).
    pub(super) async fn deleted<T>(
        &self,
        name: &'static str,
        id: &str,
        script: impl Future<Output = Result<T>>,
        gone: impl FnOnce(&T) -> (Option<String>, bool, bool),
    ) -> Result<T> {
        if !self.conn.is_cluster() {
            return script.await;
        }
        let token = scripts::claim_token();
        let ids = [id.to_string()];
        let look = self.look_again(name, &token, &ids);
        // Side by side, but each to its end: the script may have deleted the session when
        // the look fails, and cancelled mid-flight it would leave its own work (its
        // replicas' `WAIT`, the repair after a lost reply) undone and its answer unheard.
        let (reply, look) = join(script, look).await;
        let reply = reply?;
        let (owner, had_expiry, existed) = gone(&reply);
        // From here the session is gone: an error says so (that it was deleted, or that
        // nothing was there to delete), not that the delete wrote nothing.
        let applied = if existed {
            Applied::Deleted
        } else {
            Applied::Absent
        };
        self.unindex(name, id, owner.as_deref(), had_expiry, look, &token)
            .await
            .map_err(|err| stored_before(of_session(err, self.op(name, Some(id))), applied))?;
        Ok(reply)
    }

    /// On a cluster, takes session `id`, which [`reindex`](Self::reindex) found not
    /// stored, out of the indexes as [`deleted`](Self::deleted) does after its script.
    /// Its errors are the steps' own, saying nothing of a delete: the write that found the
    /// session gone (one refused as a conflict, or an append that another caller's delete
    /// overtook) deleted nothing, and may never have met the session at all.
    pub(super) async fn unindex_absent(&self, name: &'static str, id: &str) -> Result<()> {
        let token = scripts::claim_token();
        let look = self.look_again(name, &token, &[id.to_string()]).await;
        self.unindex(name, id, None, false, look, &token).await
    }

    /// What [`deleted`](Self::deleted) does after its script, given its look-again call's
    /// outcome (`looked`, at `token`): [`forget`](Self::forget)s session `id`, in the
    /// indexes of `owner` too and its expiry entry when `had_expiry`, beside the second
    /// look at the entries the call took up ([`finish_taken`](Self::finish_taken)).
    async fn unindex(
        &self,
        name: &'static str,
        id: &str,
        owner: Option<&str>,
        had_expiry: bool,
        looked: Result<(Vec<String>, Vec<String>)>,
        token: &str,
    ) -> Result<()> {
        let (marks, taken) = looked?;
        let gone = [Gone {
            id,
            owners: owner.into_iter().collect(),
        }];
        let members: Vec<String> = had_expiry
            .then(|| expiry_member(id, owner))
            .into_iter()
            .collect();
        let own = self.forget(name, &gone, &members, &marks, token);
        let ((), own) = join(self.finish_taken(name, &taken, token), own).await;
        own.map(drop)
    }

    /// On a cluster, before a step that takes `ids` out of listings (a delete, a prune):
    /// adds the look-again entry of each (`keys::look_again_member`) for the claimer of
    /// `token`, due a [`CLAIM_LEASE`] later, so that a purge (or another caller of this)
    /// takes it up only once the caller should have dropped it after its second look ([`forget`](Self::forget),
    /// [`prune`](Self::prune)), and finishes that look if the caller stopped. Returns the
    /// entries, and the due look-again entries of others that the same call took up (at
    /// most `scripts::retention::TAKE_UP` a call, leased at `token`), which the caller's
    /// second look finishes and drops: a store whose purge never runs would otherwise
    /// keep one per delete or prune that stopped. Due entries of another kind (those of
    /// expired sessions no purge has removed yet) are skipped, left to the purge. A
    /// call sent again after a dropped connection takes up nothing (however often sent,
    /// it leases at most `TAKE_UP` a chunk), and returns none of what its first copy took
    /// up: those stay leased at `token`, due again a lease later.
    pub(super) async fn look_again(
        &self,
        name: &'static str,
        token: &str,
        ids: &[String],
    ) -> Result<(Vec<String>, Vec<String>)> {
        let marks: Vec<String> = ids.iter().map(|id| look_again_member(id, token)).collect();
        let after = format!("+{}", CLAIM_LEASE.as_millis());
        let expiry = self.keys.expiry();
        let mut taken = Vec::new();
        for chunk in marks.chunks(CLAIMED_CHUNK) {
            let mut call = evalsha(&scripts::CLAIMED, &[expiry]);
            call.arg(&after).arg(token).arg(chunk);
            let more: Vec<String> = self
                .eval(&scripts::CLAIMED, &call)
                .await
                .map_err(|err| parse_redis_error(err, self.op(name, None).on_key(expiry)))?;
            taken.extend(more);
        }
        Ok((marks, taken))
    }

    /// [`look_again`](Self::look_again) for a prune, which is upkeep: for at most the
    /// response timeout per call it makes (one per [`CLAIMED_CHUNK`] ids, one after the
    /// other: a bound for the whole would leave a large prune, of a slow link, undone at
    /// every listing), so that a listing or an owner change is not held up by the expiry
    /// index's node (retrying while it does not answer) any more than failed by it. Not
    /// the connect timeout, which bounds opening a connection and is often set short to
    /// find a dead host soon: a node answering later than that but within the response
    /// timeout (a fork for a save, another client's slow command) is busy, not gone, and
    /// a prune cut there is left undone at every listing, each leaving its entries
    /// behind for a purge. `None` when it failed or was cut, logged once
    /// (`upkeep::Left::log`). Cut short after it was sent, it may have left its entries
    /// and taken others up: all leased, finished a lease later (a `CLAIMED` landing late
    /// only leases; nothing follows it).
    pub(super) async fn look_again_soon(
        &self,
        name: &'static str,
        token: &str,
        ids: &[String],
    ) -> Option<(Vec<String>, Vec<String>)> {
        let limit = look_again_limit(self.response_timeout, ids.len());
        let left = match within(limit, self.look_again(name, token, ids)).await {
            Ok(entries) => return Some(entries),
            Err(left) => left,
        };
        // Pruning is upkeep: left undone, the entries wait for a later listing, and
        // readers skip them meanwhile.
        left.log("a prune left for a later listing", ids.len());
        None
    }

    /// Drops a prune's look-again entries `marks` (of the claimer of `token`) after its
    /// second look, bounded as [`look_again_soon`](Self::look_again_soon) is: the prune
    /// is done, and entries left (a failure, a node that does not answer) are finished by
    /// a take-up or purge a lease later, so a listing or an owner change neither fails nor
    /// waits on the expiry index's node for them. Logged when left.
    pub(super) async fn drop_look_again_soon(
        &self,
        name: &'static str,
        token: &str,
        marks: &[String],
    ) {
        let limit = look_again_limit(self.response_timeout, marks.len());
        if let Err(left) = within(limit, self.claimed(name, "drop", token, marks)).await {
            left.log("look-again entries of a prune left", marks.len());
        }
    }

    /// Finishes the look-again entries `taken` up by [`look_again`](Self::look_again)
    /// for the claimer of `token`, beside the caller's own second look: their sessions
    /// looked at and listed as found, then the entries dropped (at this token already,
    /// `forget`'s `claim` leaves them as they are). Best effort, for at most the response
    /// timeout a round trip ([`forget_limit`]): a failure here, on other sessions' nodes, is not the caller's, and leaves
    /// the entries leased, due again a lease later for the next delete, prune or purge.
    /// Nothing to send when none were taken up.
    pub(super) async fn finish_taken(&self, name: &'static str, taken: &[String], token: &str) {
        if taken.is_empty() {
            return;
        }
        // Bounded as the caller's own look-again call is ([`look_again_soon`]): the
        // caller's work may be done, and the nodes of these sessions are none of its
        // business, but one busy for longer than a connection attempt (and answering
        // within the response timeout) is waited for, or every take-up would be left to a
        // purge. A look cut short is safe anywhere (it only lists what it finds, then
        // drops), its entries leased.
        let finish = self.forget(name, &[], taken, &[], token);
        let limit = forget_limit(self.response_timeout, taken.len());
        if let Err(left) = within(limit, finish).await {
            left.log("look-again entries left for later", taken.len());
        }
    }

    /// On a cluster, after sessions went (purged, or deleted): takes each of `gone` out
    /// of the indexes of every session and of the owners named, and `members` out of the
    /// expiry index, then looks at those sessions again and puts back what is there now:
    /// a session a writer created again is listed again, and one with an expiry gets the
    /// expiry entry its meta hash calls for. Returns those expiry entries (member, ms).
    ///
    /// The listing entries go first and the second look after, as in `prune`: a writer
    /// stores before it indexes, so a session written meanwhile is either indexed by its
    /// writer after the removals or seen here. A `forget` that stops between the two
    /// (failed, dropped, its process killed) would leave such a session unlisted (its
    /// writer indexed it before the removals), so something in the expiry index stays
    /// until the second look is done, for a purge to meet and finish it: a purge's
    /// claimed entries (`members`), and a delete's look-again entry (`marks`, in place
    /// already: see [`deleted`](Self::deleted)). A purge that takes either up looks at
    /// every session its entries name and lists what it finds (a look-again entry is not
    /// swept, counted nor published).
    ///
    /// Those entries are only claimed first (the `CLAIMED` script) and go last, those
    /// still claimed by this call (`token`, see [`scripts::claim_token`]: the purge's,
    /// whose `CLAIM` leased them, or a new one), after the listings the second look puts
    /// back: a failure at any step leaves them in the index, so a live session never
    /// loses the entry that has it purged once it expires, nor its listing. A writer that
    /// scores its entry meanwhile unclaims it, and it stays; so does one another claimer
    /// holds, left to that claimer's second look.
    pub(super) async fn forget(
        &self,
        name: &'static str,
        gone: &[Gone<'_>],
        members: &[String],
        marks: &[String],
        token: &str,
    ) -> Result<Vec<(String, i64)>> {
        let op = self.op(name, None);
        let mut writes = IndexWrites::new();
        for Gone { id, owners } in gone {
            let scopes = owners.iter().copied().map(Scope::Owner);
            for scope in [Scope::All].into_iter().chain(scopes) {
                let (by_id, by_update) = self.keys.scope(scope);
                for key in [by_id, by_update] {
                    let mut zrem = redis::cmd("ZREM");
                    zrem.arg(&key).arg(id);
                    writes.push((key, zrem));
                }
            }
        }
        try_join(
            self.send_index(op, writes, false),
            self.claimed(name, "claim", token, members),
        )
        .await?;

        let ids: Vec<String> = (gone.iter().map(|g| g.id))
            .chain(members.iter().map(|m| member_session(m)))
            .filter(|id| SessionId::validate(id).is_ok())
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .map(str::to_string)
            .collect();
        let found = self.stored_many(name, &ids).await?;
        let (mut writes, mut kept) = (IndexWrites::new(), Vec::new());
        let expiry = self.keys.expiry();
        for (id, stored) in ids.iter().zip(found) {
            let Some(stored) = stored else { continue };
            // Also a session named by a member only (a purge met it live, or met the
            // look-again entry of a `forget` that stopped): that `forget` may have left it
            // unlisted, written again between its sweep (or delete) and its removals.
            self.list_as_stored(&mut writes, id, &stored);
            if let Some((member, due)) = stored.expiry_entry(id) {
                let due_ms = due.to_string();
                writes.push((expiry.to_string(), zadd(expiry, "", &due_ms, &member)));
                kept.push((member, due));
            }
        }
        let stale: Vec<&String> = (members.iter().chain(marks))
            .filter(|member| !kept.iter().any(|(kept, _)| kept == *member))
            .collect();
        // Listed first (nothing to send when the sessions are gone): a look-again entry
        // dropped before would leave a listing that failed to nobody.
        self.send_index(op, writes, false).await?;
        self.claimed(name, "drop", token, &stale).await?;
        Ok(kept)
    }

    /// On a cluster, the `CLAIMED` script's `action` (`claim`, `drop`, `+ms` or the
    /// score to release to) on `members` of the expiry index, for the claimer of `token` (see
    /// [`scripts::claim_token`]), on the writes' connection, sent again after a dropped
    /// connection: sent twice, it does what it did once.
    pub(super) async fn claimed(
        &self,
        name: &'static str,
        action: &str,
        token: &str,
        members: &[impl AsRef<str>],
    ) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        let expiry = self.keys.expiry();
        // In chunks: a listing may prune (and mark) every id of a large index at once.
        for chunk in members.chunks(CLAIMED_CHUNK) {
            let mut call = evalsha(&scripts::CLAIMED, &[expiry]);
            call.arg(action).arg(token);
            for member in chunk {
                call.arg(member.as_ref());
            }
            let _: Value = self
                .eval(&scripts::CLAIMED, &call)
                .await
                .map_err(|err| parse_redis_error(err, self.op(name, None).on_key(expiry)))?;
        }
        Ok(())
    }
}

/// The round trips of a [`forget`](RedisStorage::forget) naming no gone session, one
/// after the other: the claim of its members, the second look, the listings put back,
/// the drop.
const FORGET_ROUND_TRIPS: u32 = 4;

/// How long a [`forget`](RedisStorage::forget) of `members` alone (no gone session) is
/// given as upkeep ([`RedisStorage::finish_taken`], an update's removal of its old expiry
/// entry): `per_call` for each round trip, each of its [`CLAIMED_CHUNK`] members (the
/// claim, the drop and the look go a chunk a call). One timeout for the whole would cut a
/// node answering each call within it, but not the four, at every call: the upkeep left
/// to a purge each time.
pub(super) fn forget_limit(per_call: Duration, members: usize) -> Duration {
    let chunks = u32::try_from(members.div_ceil(CLAIMED_CHUNK)).unwrap_or(u32::MAX);
    per_call.saturating_mul(FORGET_ROUND_TRIPS.saturating_mul(chunks.max(1)))
}

/// How long [`RedisStorage::look_again_soon`] gives the look-again entries of `ids` ids,
/// and [`RedisStorage::drop_look_again_soon`] the drop of them: `per_call` for each
/// `CLAIMED` call they take (at least one).
fn look_again_limit(per_call: Duration, ids: usize) -> Duration {
    let calls = u32::try_from(ids.div_ceil(CLAIMED_CHUNK)).unwrap_or(u32::MAX);
    per_call.saturating_mul(calls.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prune's look-again calls go one after the other, a chunk each: bounded as a
    /// whole by one timeout, a large prune over a slow link would be cut short, and left
    /// undone, at every listing.
    #[test]
    fn a_prunes_look_again_gets_the_timeout_per_call() {
        let second = Duration::from_secs(1);
        assert_eq!(look_again_limit(second, 1), second);
        assert_eq!(look_again_limit(second, CLAIMED_CHUNK), second);
        assert_eq!(look_again_limit(second, 2 * CLAIMED_CHUNK + 1), 3 * second);
    }

    /// Found by a review: the second look at entries taken up (`finish_taken`) and an
    /// update's removal of its old expiry entry (`forget`, four round trips one after the
    /// other) shared one response timeout, so a node answering each request within it,
    /// but not all four, had that upkeep cut every time. Each round trip gets it now.
    #[test]
    fn a_forget_as_upkeep_gets_the_timeout_per_round_trip() {
        let second = Duration::from_secs(1);
        assert_eq!(forget_limit(second, 1), 4 * second);
        assert_eq!(forget_limit(second, CLAIMED_CHUNK), 4 * second);
        assert_eq!(forget_limit(second, CLAIMED_CHUNK + 1), 8 * second);
    }
}
