//! Retention (issue #16): `purge_expired`, and on a cluster the upkeep of the indexes
//! after sessions went.
//!
//! Redis drops an expired session's keys itself (`PEXPIREAT`, set by every write), but
//! its index entries stay: the ZSETs have no per-member expiry. The expiry index
//! (`PREFIX:expiry`) names every session that has an expiry, with its owner, scored by
//! the millisecond it expires, so a purge reads only the entries due, O(batch) however
//! many sessions are stored. For each, a session still expired (its keys gone, or its
//! instant passed in the millisecond before Redis drops them) loses what is left of its
//! keys and every index entry, and counts; a session written again since it expired is a
//! new session and is kept, its entry replaced by the one it calls for.
//!
//! On one server a batch is one script, atomic. On a cluster the expiry index, the
//! sessions and the other indexes live in different slots, so a purge follows the
//! cluster discipline of `index.rs`: the due entries, claimed by one script on the expiry
//! index (scored a lease ahead, so two purges at once do not sweep, count and publish one
//! session twice), then each session's own script, then the index removals, then a
//! second look at those sessions that puts back whatever a writer stored meanwhile, the
//! expiry entry of a session written again since it expired included.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use fusion_core::{Result, SessionId, check_purge_batch};
use futures::future::try_join_all;
use redis::Value;

use super::RedisStorage;
use super::index::Gone;
use super::write::evalsha;
use crate::error::parse_redis_error;
use crate::keys::split_member;
use crate::scripts;

/// How many entries of the expiry index one script (one server) or one round of
/// requests (a cluster) looks at, so a large batch does not hold the server for long.
const PURGE_CHUNK: usize = 500;

/// How long a cluster's purge holds the due entries it claimed (see `purge_spread`):
/// far longer than a round of [`PURGE_CHUNK`] entries takes, so a purge beside it does
/// not sweep them too, and short enough that those of a purge that never finished come
/// due again soon.
const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// The operation's name, for errors.
const NAME: &str = "purge_expired";

impl RedisStorage {
    /// Deletes up to `batch` expired sessions; see the module documentation. Looks at
    /// entries until `batch` sessions are purged or none is due, so a batch that met
    /// sessions written again since they expired still purges what it can.
    pub(super) async fn purge(&self, batch: usize) -> Result<usize> {
        check_purge_batch(batch)?;
        let mut purged = 0;
        while purged < batch {
            let limit = (batch - purged).min(PURGE_CHUNK);
            let (done, more) = if self.conn.is_cluster() {
                self.purge_spread(limit).await?
            } else {
                self.purge_here(limit).await?
            };
            purged += done;
            if !more {
                break;
            }
        }
        Ok(purged)
    }

    /// One server: the `PURGE` script on up to `limit` due entries. Returns how many
    /// sessions it purged and whether more entries may be due.
    async fn purge_here(&self, limit: usize) -> Result<(usize, bool)> {
        let keys = [self.keys.ids(), self.keys.updated(), self.keys.expiry()];
        let mut call = evalsha(self.writing(&scripts::PURGE), &keys);
        call.arg(self.keys.prefix()).arg(limit);
        let op = self.op(NAME, None);
        let (purged, looked): (usize, usize) = self
            .run_script(self.writing(&scripts::PURGE), &call)
            .await
            .map_err(|err| parse_redis_error(err, op.on_keys(&keys)))
            .and_then(|acked| self.acknowledged(acked, op))?;
        Ok((purged, looked == limit))
    }

    /// A cluster: up to `limit` due entries, claimed (the `CLAIM` script scores them
    /// [`CLAIM_LEASE`] ahead), each session's `PURGE_ONE` on its own slot, side by side,
    /// then [`forget`](Self::forget) the purged sessions and every entry claimed, which
    /// scores again those of sessions still there (written again since they expired).
    /// Returns how many sessions it purged and whether another round may purge more: not
    /// when fewer entries were due, nor when every one belonged to a live session that is
    /// still due by the expiry index's clock (the nodes' clocks differ a little).
    ///
    /// A purge that fails after its claim (a sweep, the second look) releases the
    /// entries still claimed, due again at once for the next purge to sweep and count:
    /// best effort, as the failure may have been the connection. A claim this purge does
    /// not see fail (the `CLAIM` sent again after its reply was lost, the process killed,
    /// the release failing too) leaves its entries in the expiry index, due again when the
    /// lease ends: taken out, they would be lost, and the sessions they name never purged
    /// nor counted, their index entries left to the listings.
    async fn purge_spread(&self, limit: usize) -> Result<(usize, bool)> {
        let expiry = self.keys.expiry();
        let mut call = evalsha(&scripts::CLAIM, &[expiry]);
        call.arg(limit).arg(CLAIM_LEASE.as_millis().to_string());
        let (now, due): (i64, Vec<String>) = self
            .eval(&scripts::CLAIM, &call)
            .await
            .map_err(|err| parse_redis_error(err, self.op(NAME, None).on_key(expiry)))?;
        let swept = self.sweep_claimed(now, &due, limit).await;
        if swept.is_err()
            && let Err(err) = self.claimed(NAME, &now.to_string(), &due).await
        {
            tracing::warn!(%err, "a failed purge could not release its claim; due again when the lease ends");
        }
        swept
    }

    /// [`purge_spread`](Self::purge_spread) once its `CLAIM`, read at `now`, gave `due`.
    async fn sweep_claimed(&self, now: i64, due: &[String], limit: usize) -> Result<(usize, bool)> {
        let entries: Vec<(&str, Option<&str>)> = due
            .iter()
            .map(|entry| split_member(entry))
            .filter(|(id, _)| SessionId::validate(id).is_ok())
            .collect();
        // A session has two entries while an owner change is settling (`id` and
        // `id/owner`): swept once, so its removal is published once.
        let mut ids: Vec<&str> = entries.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let sweeps = ids.iter().map(|id| async move {
            let (list, meta) = (self.keys.list(id), self.keys.meta(id));
            let mut call = evalsha(self.writing(&scripts::PURGE_ONE), &[&list, &meta]);
            call.arg(self.keys.prefix()).arg(*id);
            let op = self.op(NAME, Some(id));
            let swept: (i64, Option<String>) = self
                .run_script(self.writing(&scripts::PURGE_ONE), &call)
                .await
                .map_err(|err| parse_redis_error(err, op.on_keys(&[&list, &meta])))
                .and_then(|acked| self.acknowledged(acked, op))?;
            Ok::<_, fusion_core::Error>(swept)
        });
        let swept: HashMap<&str, (i64, Option<String>)> = ids
            .iter()
            .copied()
            .zip(try_join_all(sweeps).await?)
            .collect();
        let mut gone: Vec<Gone<'_>> = Vec::new();
        for (id, owner) in &entries {
            let (removed, meta_owner) = &swept[id];
            if *removed == 1 {
                let mut owners: Vec<&str> = owner.iter().copied().collect();
                if let Some(meta_owner) = meta_owner.as_deref().filter(|o| Some(*o) != *owner) {
                    owners.push(meta_owner);
                }
                gone.push(Gone { id, owners });
            }
        }
        let purged = gone.iter().map(|g| g.id).collect::<BTreeSet<_>>().len();
        let kept = self.forget(NAME, &gone, due).await?;
        let stuck = kept.iter().filter(|(_, score)| *score <= now).count();
        let progress = purged > 0 || stuck < due.len();
        Ok((purged, due.len() == limit && progress))
    }

    /// On a cluster, the `CLAIMED` script's `action` (`claim`, `drop`, or the score to
    /// release to) on `members` of the expiry index, on the writes' connection, sent again
    /// after a dropped connection: sent twice, it does what it did once.
    pub(super) async fn claimed(
        &self,
        name: &'static str,
        action: &str,
        members: &[impl AsRef<str>],
    ) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        let expiry = self.keys.expiry();
        let mut call = evalsha(&scripts::CLAIMED, &[expiry]);
        call.arg(action);
        for member in members {
            call.arg(member.as_ref());
        }
        let _: Value = self
            .eval(&scripts::CLAIMED, &call)
            .await
            .map_err(|err| parse_redis_error(err, self.op(name, None).on_key(expiry)))?;
        Ok(())
    }
}
