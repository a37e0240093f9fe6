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
    /// entries it still holds (at its token, `scripts::claim_token`), due again at once
    /// for the next purge to sweep and count: best effort, as the failure may have been
    /// the connection. A claim this purge does
    /// not see fail (the `CLAIM` sent again after its reply was lost, the process killed,
    /// the release failing too) leaves its entries in the expiry index, due again when the
    /// lease ends: taken out, they would be lost, and the sessions they name never purged
    /// nor counted, their index entries left to the listings.
    async fn purge_spread(&self, limit: usize) -> Result<(usize, bool)> {
        let expiry = self.keys.expiry();
        let token = scripts::claim_token();
        let mut call = evalsha(&scripts::CLAIM, &[expiry]);
        call.arg(limit)
            .arg(CLAIM_LEASE.as_millis().to_string())
            .arg(&token);
        let (now, due): (i64, Vec<String>) = self
            .eval(&scripts::CLAIM, &call)
            .await
            .map_err(|err| parse_redis_error(err, self.op(NAME, None).on_key(expiry)))?;
        let swept = self.sweep_claimed(now, &due, limit, &token).await;
        if swept.is_err()
            && let Err(err) = self.claimed(NAME, &now.to_string(), &token, &due).await
        {
            tracing::warn!(%err, "a failed purge could not release its claim; due again when the lease ends");
        }
        swept
    }

    /// [`purge_spread`](Self::purge_spread) once its `CLAIM`, read at `now`, gave `due`,
    /// leased with `token`.
    async fn sweep_claimed(
        &self,
        now: i64,
        due: &[String],
        limit: usize,
        token: &str,
    ) -> Result<(usize, bool)> {
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
        let kept = self.forget(NAME, &gone, due, token).await?;
        let stuck = kept.iter().filter(|(_, score)| *score <= now).count();
        let progress = purged > 0 || stuck < due.len();
        Ok((purged, due.len() == limit && progress))
    }

    /// On a cluster, the `CLAIMED` script's `action` (`claim`, `drop`, or the score to
    /// release to) on `members` of the expiry index, for the claimer of `token` (see
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
        let mut call = evalsha(&scripts::CLAIMED, &[expiry]);
        call.arg(action).arg(token);
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

#[cfg(test)]
mod tests {
    use redis::Script;

    use crate::scripts;
    use crate::scripts::tests::{prefix, server};

    fn score(conn: &mut redis::Connection, key: &str, member: &str) -> Option<f64> {
        redis::cmd("ZSCORE")
            .arg(key)
            .arg(member)
            .query(conn)
            .unwrap()
    }

    fn zadd(conn: &mut redis::Connection, key: &str, score: f64, member: &str) {
        let _: () = redis::cmd("ZADD")
            .arg(key)
            .arg(score)
            .arg(member)
            .query(conn)
            .unwrap();
    }

    /// `CLAIMED`'s `action` for the claimer of `token`.
    fn claimed(conn: &mut redis::Connection, key: &str, action: &str, token: &str, of: &[&str]) {
        let _: () = Script::new(scripts::CLAIMED.source())
            .key(key)
            .arg(action)
            .arg(token)
            .arg(of)
            .invoke(conn)
            .unwrap();
    }

    /// Found by a review: a claim was any score past a whole ms, whoever made it, so a
    /// `forget` or a failed purge dropped or released an entry another claimer had
    /// claimed since: a `forget` whose second look saw the session gone removed the
    /// entry a purge beside it had claimed once its session was written again, and if
    /// that purge then failed before scoring it again, the live session had no entry; a
    /// purge's release sent again after its reply was lost released the lease of a purge
    /// that had claimed the entries meanwhile, and a third purge swept and counted them
    /// while that one did. Each claimer marks its entries with its own token now, and
    /// drops or releases only those.
    #[test]
    fn a_claimer_drops_and_releases_only_the_entries_it_claimed() {
        let Some(mut conn) = server() else { return };
        let key = format!("{}:expiry", prefix("claimed"));
        let conn = &mut conn;
        // Ids that a token of sixteenths (15 of them) would not tell apart.
        let (mine, theirs) = ("1", "16");
        let at = |whole: f64, id: &str| Some(whole + scripts::token_of(whole, id.parse().unwrap()));
        zadd(conn, &key, 1000.0, "gone");
        zadd(conn, &key, 2000.0, "live");
        claimed(conn, &key, "claim", mine, &["gone", "live", "absent"]);
        assert_eq!(score(conn, &key, "gone"), at(1000.0, mine));
        assert_eq!(score(conn, &key, "absent"), None, "left absent");
        // Sent again after its reply was lost: the same.
        claimed(conn, &key, "claim", mine, &["gone", "live"]);
        assert_eq!(score(conn, &key, "live"), at(2000.0, mine));

        // A writer scores `live` again (a whole ms), and another claimer claims it.
        zadd(conn, &key, 2500.0, "live");
        claimed(conn, &key, "claim", theirs, &["live"]);
        claimed(conn, &key, "claim", mine, &["live"]);
        let theirs_at = at(2500.0, theirs);
        assert_ne!(theirs_at, at(2500.0, mine));
        assert_eq!(score(conn, &key, "live"), theirs_at, "the other's claim");
        claimed(conn, &key, "drop", mine, &["gone", "live"]);
        assert_eq!(score(conn, &key, "gone"), None, "its own claim goes");
        assert_eq!(score(conn, &key, "live"), theirs_at, "the other's stays");
        claimed(conn, &key, "3000", mine, &["live"]);
        assert_eq!(score(conn, &key, "live"), theirs_at, "nor is it released");
        claimed(conn, &key, "3000", theirs, &["live"]);
        assert_eq!(
            score(conn, &key, "live"),
            Some(3000.0),
            "released by its claimer"
        );
        claimed(conn, &key, "drop", theirs, &["live"]);
        assert_eq!(
            score(conn, &key, "live"),
            Some(3000.0),
            "released: no claim now"
        );

        // A purge's lease (`CLAIM`) is its claimer's too: only its release undoes it.
        let (now, due): (i64, Vec<String>) = Script::new(scripts::CLAIM.source())
            .key(&key)
            .arg(10)
            .arg(60_000)
            .arg(theirs)
            .invoke(conn)
            .unwrap();
        assert_eq!(due, ["live"]);
        let leased = at((now + 60_000) as f64, theirs);
        assert_eq!(score(conn, &key, "live"), leased);
        claimed(conn, &key, "claim", mine, &["live"]);
        claimed(conn, &key, "drop", mine, &["live"]);
        claimed(conn, &key, "1", mine, &["live"]);
        assert_eq!(score(conn, &key, "live"), leased);

        // The last ms of the year 9999, where fewer bits are left past the whole ms: still
        // exact, and still the claimer's own.
        let last = 253_402_300_799_999.0;
        zadd(conn, &key, last, "far");
        claimed(conn, &key, "claim", mine, &["far"]);
        assert_eq!(score(conn, &key, "far"), at(last, mine));
        claimed(conn, &key, "drop", "2", &["far"]);
        assert_eq!(score(conn, &key, "far"), at(last, mine), "not the other's");
        claimed(conn, &key, "drop", mine, &["far"]);
        assert_eq!(score(conn, &key, "far"), None, "its own");
        let _: () = redis::cmd("DEL").arg(&key).query(conn).unwrap();
    }

    /// Found by a review: tokens were one of fifteen sixteenths, so two claimers of one
    /// entry shared one once in 15 times, and dropped or released each other's claims as
    /// before tokens. An id picks one of some 4,000 at today's scores now.
    #[test]
    fn claimer_ids_are_many_more_than_fifteen() {
        let ids: std::collections::BTreeSet<u64> = (0..1000)
            .map(|_| scripts::claim_token().parse().unwrap())
            .collect();
        assert!(ids.len() > 500, "{} ids of 1000", ids.len());
        assert!(ids.iter().all(|id| *id < 1 << 24));
    }
}
