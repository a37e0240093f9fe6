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
//! expiry entry of a session written again since it expired included. That removal and
//! second look (`forget`) also follow a delete; one that stops part way leaves an entry
//! in the expiry index for a purge to finish it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{MutexGuard, PoisonError};

use fusion_core::{Result, SessionId, check_purge_batch};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use redis::Value;

use super::followed::Did;
use super::forget::CLAIM_LEASE;
use super::index::Gone;
use super::write::{Acked, evalsha};
use super::{RedisStorage, Request};
use crate::cluster::may_have_applied;
use crate::error::parse_redis_error;
use crate::keys::split_member;
use crate::scripts;

/// How many entries of the expiry index one script (one server) or one round of
/// requests (a cluster) looks at, so a large batch does not hold the server for long.
const PURGE_CHUNK: usize = 500;

/// The operation's name, for errors.
const NAME: &str = "purge_expired";

/// A cluster's purge round whose claim may stand unknown to it (its `CLAIM` failed after
/// it may have run, or it failed later and kept or could not release entries), for the
/// next round of the storage to take up: its claimer's id, and the sessions whose
/// `expired` its sweeps published.
pub(super) struct Unsettled {
    token: String,
    published: BTreeSet<String>,
}

/// A purge round's claim until it is settled: one dropped unsettled (the round failed
/// where its claim may stand, or its future was dropped part way, a purge cancelled by
/// its caller's timeout say) is left to the next round of the storage, as one that failed.
struct Round<'a> {
    storage: &'a RedisStorage,
    claim: Unsettled,
    settled: bool,
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.storage.unsettle(Unsettled {
                token: std::mem::take(&mut self.claim.token),
                published: std::mem::take(&mut self.claim.published),
            });
        }
    }
}

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
            .and_then(|acked| self.acknowledged_as(acked, op, |_| Did::Purge))?;
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
    /// the connection. Not those of the sessions a sweep of it removed and published
    /// `expired` for: swept again, those would be published twice. It keeps them, and
    /// leaves its claimer's id and those sessions to the next round of this storage (any
    /// clone), which claims as it (the claimer's record, see `scripts::retention::CLAIM`)
    /// and sweeps them without publishing again: those whose entry is still at its token
    /// (one a writer scored since names a session written again, published when it goes
    /// in its turn). A `CLAIM` sent again after its reply was
    /// lost finds the entries its first copy claimed likewise; one that failed so (every
    /// copy's reply lost, or timed out), or a release that failed, leaves its id to the
    /// next round too, and a round that took one up and failed at its `CLAIM` (even one
    /// refused) leaves it again, as does a round dropped part way (cancelled by its
    /// caller). A claim no round of this process takes up (the process killed)
    /// leaves its entries in the expiry index, due again when the lease ends (and its
    /// swept sessions published again then): taken out, they would be lost, and the
    /// sessions they name never purged nor counted, their index entries left to the
    /// listings. A sweep whose reply was lost may have published too, unknown to the
    /// purge: its session is released and published again by the next sweep. One whose
    /// reply came short of replica acknowledgements is known to have removed and
    /// published: kept as one that succeeded.
    async fn purge_spread(&self, limit: usize) -> Result<(usize, bool)> {
        let expiry = self.keys.expiry();
        let taken_up = self.take_unsettled();
        let taking_up = taken_up.is_some();
        let claim = taken_up.unwrap_or_else(|| Unsettled {
            token: scripts::claim_token(),
            published: BTreeSet::new(),
        });
        let token = claim.token.clone();
        let mut round = Round {
            storage: self,
            claim,
            settled: false,
        };
        let record = self.keys.claim_record(&token);
        let mut call = evalsha(&scripts::CLAIM, &[expiry, &record]);
        call.arg(limit)
            .arg(CLAIM_LEASE.as_millis().to_string())
            .arg(&token);
        let claimed: (i64, Vec<String>, Vec<String>) = match self.eval(&scripts::CLAIM, &call).await
        {
            Ok(claimed) => claimed,
            Err(err) => {
                // One taken up stays unsettled whatever this claim did: its entries are
                // still held at its token, and its sessions published.
                round.settled = !taking_up && !may_have_applied(&err);
                return Err(parse_redis_error(err, self.op(NAME, None).on_key(expiry)));
            }
        };
        let (now, due, still_held) = claimed;
        let published = &mut round.claim.published;
        // A session a failed round published whose entry is no longer at its token was
        // written again since (a writer scored the entry): a new session, whose removal
        // is published.
        for member in due.iter().filter(|member| !still_held.contains(member)) {
            published.remove(split_member(member).0);
        }
        let swept = (self.sweep_claimed(now, &due, limit, &token, published)).await;
        let (held, released): (Vec<&String>, Vec<&String>) =
            (due.iter()).partition(|member| published.contains(split_member(member).0));
        // A claim taken up gives back at most `limit` of the entries it holds (`CLAIM`),
        // so as not to purge more than asked: any more stay held, for the next round.
        let rest = taking_up && due.len() == limit;
        let settled = match &swept {
            Ok(_) => Ok(!rest),
            Err(_) => (self.claimed(NAME, &now.to_string(), &token, &released))
                .await
                .map(|()| held.is_empty() && !rest),
        };
        match settled {
            Ok(true) => {
                round.settled = true;
                let del = redis::cmd("DEL").arg(&record).clone();
                if let Err(err) = self.send_index_request::<Value>(Request::Cmd(&del)).await {
                    tracing::debug!(%err, "a purge's claim record stays until its lease ends");
                }
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(%err, "a failed purge could not release its claim; the next purge takes it up");
            }
        }
        // A round that took up a failed one's entries may have met fewer than were due, or
        // none, with another failed round still to take up: the purge goes on (a round
        // more, which ends it when nothing is left).
        swept.map(|(purged, more)| (purged, more || taking_up))
    }

    /// Takes a round whose claim may stand unknown to it, if one is left.
    fn take_unsettled(&self) -> Option<Unsettled> {
        self.unsettled().pop()
    }

    /// Leaves `unsettled` to a next round, beside those of other rounds that failed at
    /// once (two purges of the storage side by side): one in place of another would leave
    /// that one's entries leased to nobody, and its sessions published again.
    fn unsettle(&self, unsettled: Unsettled) {
        self.unsettled().push(unsettled);
    }

    fn unsettled(&self) -> MutexGuard<'_, Vec<Unsettled>> {
        (self.unsettled_claim.lock()).unwrap_or_else(PoisonError::into_inner)
    }

    /// [`purge_spread`](Self::purge_spread) once its `CLAIM`, read at `now`, gave `due`,
    /// leased with `token`. `published`: the sessions whose `expired` a sweep of this
    /// purge published, not published again; those its sweeps publish are added as each
    /// reply comes, also when another fails or the purge is dropped.
    async fn sweep_claimed(
        &self,
        now: i64,
        due: &[String],
        limit: usize,
        token: &str,
        published: &mut BTreeSet<String>,
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
        let sweeps: Vec<_> = (ids.iter().copied())
            .map(|id| {
                let again = if published.contains(id) { "1" } else { "0" };
                async move {
                    let (list, meta) = (self.keys.list(id), self.keys.meta(id));
                    let mut call = evalsha(self.writing(&scripts::PURGE_ONE), &[&list, &meta]);
                    call.arg(self.keys.prefix()).arg(id).arg(again);
                    let op = self.op(NAME, Some(id));
                    let reply: Result<Acked<Swept>> = self
                        .run_script(self.writing(&scripts::PURGE_ONE), &call)
                        .await
                        .map_err(|err| parse_redis_error(err, op.on_keys(&[&list, &meta])));
                    // Known also when too few replicas acknowledged it: the primary
                    // removed the session (and published its `expired`).
                    let removed = reply.as_ref().is_ok_and(|acked| acked.value().0 == 1);
                    let swept =
                        reply.and_then(|acked| self.acknowledged_as(acked, op, |_| Did::Purge));
                    (id, removed, swept)
                }
            })
            .collect();
        let (swept, failed) = record_sweeps(sweeps, published).await;
        if let Some(err) = failed {
            return Err(err);
        }
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
        let kept = self.forget(NAME, &gone, due, &[], token).await?;
        let stuck = kept.iter().filter(|(_, score)| *score <= now).count();
        let progress = purged > 0 || stuck < due.len();
        Ok((purged, due.len() == limit && progress))
    }
}

/// A session's sweep (`PURGE_ONE`): whether it removed the session (1, or 0 for a live
/// one) and the owner its meta hash named.
type Swept = (i64, Option<String>);

/// Runs `sweeps` (each gives its session's id, whether its reply said it removed the
/// session, and that reply as the purge takes it) side by side, every one to its end,
/// and adds to `published` each session a sweep removed as its reply comes, also one
/// short of replica acknowledgements (an error, but removed and published on the
/// primary): a purge dropped while some are in flight (cancelled by its caller), or
/// failed, leaves its round to the next with those known, which that round sweeps
/// without publishing them again. Returns the replies by session and the first error,
/// if any.
async fn record_sweeps<'a>(
    sweeps: Vec<impl Future<Output = (&'a str, bool, Result<Swept>)>>,
    published: &mut BTreeSet<String>,
) -> (HashMap<&'a str, Swept>, Option<fusion_core::Error>) {
    let mut pending: FuturesUnordered<_> = sweeps.into_iter().collect();
    let (mut swept, mut failed) = (HashMap::new(), None);
    while let Some((id, removed, result)) = pending.next().await {
        if removed {
            published.insert(id.to_string());
        }
        match result {
            Ok(done) => {
                swept.insert(id, done);
            }
            Err(err) => failed = failed.or(Some(err)),
        }
    }
    (swept, failed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use futures::FutureExt;
    use futures::future::BoxFuture;
    use redis::Script;

    use super::{Swept, record_sweeps};

    use crate::keys::Keys;
    use crate::scripts;
    use crate::scripts::tests::{prefix, server};

    fn score(conn: &mut redis::Connection, key: &str, member: &str) -> Option<f64> {
        redis::cmd("ZSCORE")
            .arg(key)
            .arg(member)
            .query(conn)
            .unwrap()
    }

    /// Removes what a test wrote, leaving the server as it found it.
    fn remove(conn: &mut redis::Connection, keys: &[&str]) {
        let _: () = redis::cmd("DEL").arg(keys).query(conn).unwrap();
    }

    fn zadd(conn: &mut redis::Connection, key: &str, score: f64, member: &str) {
        let _: () = redis::cmd("ZADD")
            .arg(key)
            .arg(score)
            .arg(member)
            .query(conn)
            .unwrap();
    }

    /// `CLAIM` of up to 10 entries of `key` for a lease of 60 s, as the claimer `id`
    /// whose record is `record`: `(now, claimed, held already)`.
    fn claim(
        conn: &mut redis::Connection,
        key: &str,
        record: &str,
        id: &str,
    ) -> (i64, Vec<String>, Vec<String>) {
        claim_up_to(conn, key, record, id, 10)
    }

    /// [`claim`] of up to `batch` entries.
    fn claim_up_to(
        conn: &mut redis::Connection,
        key: &str,
        record: &str,
        id: &str,
        batch: usize,
    ) -> (i64, Vec<String>, Vec<String>) {
        Script::new(scripts::CLAIM.source())
            .key(key)
            .key(record)
            .arg(batch)
            .arg(60_000)
            .arg(id)
            .invoke(conn)
            .unwrap()
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
        let (now, due, _) = claim(conn, &key, &format!("{key}:record"), theirs);
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
        remove(conn, &[&key]);
    }

    /// Found by a review: a `CLAIM` sent again after its reply was lost found none of the
    /// entries its first copy had leased (no longer due), which stayed leased to nobody.
    /// The claimer's record gives them back, those it still holds only; with none held, a
    /// claim is made afresh.
    #[test]
    fn a_claim_sent_again_gives_back_the_entries_it_still_holds() {
        let Some(mut conn) = server() else { return };
        let keys = Keys::new(&prefix("held"));
        let (key, record) = (keys.expiry().to_string(), keys.claim_record("5"));
        let conn = &mut conn;
        let claim_as = |conn: &mut redis::Connection, id: &str| -> Vec<String> {
            claim(conn, &key, &keys.claim_record(id), id).1
        };
        for member in ["a", "b", "c"] {
            zadd(conn, &key, 1.0, member);
        }
        assert_eq!(claim_as(conn, "5"), ["a", "b", "c"]);
        assert_eq!(claim_as(conn, "6"), Vec::<String>::new(), "another claimer");
        // A writer scores `b` again; `c` goes (another claimer's drop, say); `d` comes due.
        zadd(conn, &key, 5000.0, "b");
        let _: () = redis::cmd("ZREM").arg(&key).arg("c").query(conn).unwrap();
        zadd(conn, &key, 2.0, "d");
        assert_eq!(
            claim_as(conn, "5"),
            ["a"],
            "sent again: what it still holds"
        );
        let ttl: i64 = redis::cmd("PTTL").arg(&record).query(conn).unwrap();
        assert!(
            ttl > 0 && ttl <= 60_000,
            "the record lasts the lease: {ttl}"
        );
        claimed(conn, &key, "drop", "5", &["a"]);
        assert_eq!(claim_as(conn, "5"), ["d", "b"], "none held: claimed afresh");
        remove(conn, &[&key, &record]);
    }

    /// Found by a review: a claim that gave back the entries a failed round of its
    /// claimer still held left them at that round's lease, so a round taking it up late
    /// in the lease lost them part way to another purge, which swept, counted and
    /// published them again. The claim leases every held entry anew, and its record.
    #[test]
    fn a_claim_taken_up_leases_what_it_holds_anew() {
        let Some(mut conn) = server() else { return };
        let keys = Keys::new(&prefix("renewed"));
        let (key, record) = (keys.expiry().to_string(), keys.claim_record("5"));
        let conn = &mut conn;
        // What a round of claimer 5 left at the end of its lease: three entries held, its
        // record about to go.
        for member in ["a", "b", "c"] {
            zadd(conn, &key, 3.0 + scripts::token_of(3.0, 5), member);
        }
        let _: () = redis::cmd("RPUSH")
            .arg(&record)
            .arg(&["a", "b", "c"])
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("PEXPIRE")
            .arg(&record)
            .arg(1000)
            .query(conn)
            .unwrap();
        let (now, due, held) = claim_up_to(conn, &key, &record, "5", 2);
        assert_eq!(due, ["a", "b"], "as many as asked");
        assert_eq!(held, due);
        let whole = (now + 60_000) as f64;
        for member in ["a", "b", "c"] {
            let leased = Some(whole + scripts::token_of(whole, 5));
            assert_eq!(score(conn, &key, member), leased, "{member}");
        }
        let ttl: i64 = redis::cmd("PTTL").arg(&record).query(conn).unwrap();
        assert!(ttl > 1000, "the record lasts the new lease: {ttl}");
        remove(conn, &[&key, &record]);
    }

    /// Found by a review: a purge recorded the sessions its sweeps removed (and published)
    /// only once every sweep had ended, so a purge dropped while one was in flight (its
    /// caller's timeout) left its round to the next without those whose sweeps had ended,
    /// and that round swept, counted and published them again. Each is recorded as its
    /// reply comes.
    #[test]
    fn a_sweep_that_ended_is_recorded_while_another_is_in_flight() {
        let mut published = BTreeSet::new();
        let sweeps: Vec<Sweep> = vec![
            Box::pin(async { ("removed", true, Ok((1, None))) }),
            Box::pin(async { ("live", false, Ok((0, None))) }),
            Box::pin(std::future::pending()),
        ];
        let mut recording = Box::pin(record_sweeps(sweeps, &mut published));
        assert!(
            recording.as_mut().now_or_never().is_none(),
            "one is in flight"
        );
        drop(recording);
        assert_eq!(published, BTreeSet::from(["removed".to_string()]));
    }

    /// A sweep's reply and what the purge took it for, as `sweep_claimed` gives them.
    type Sweep = BoxFuture<'static, (&'static str, bool, fusion_core::Result<Swept>)>;

    /// Found by a review: a sweep short of replica acknowledgements (an error, though the
    /// primary removed the session and published its `expired`) was not recorded as
    /// published, so its entry was released, and the next purge swept, counted and
    /// published the session again. It is recorded, its entry kept for the round that
    /// takes this one up, which sweeps it without publishing.
    #[test]
    fn a_sweep_short_of_replica_acknowledgements_is_recorded_as_published() {
        let short = || fusion_core::Error::Backend {
            backend: crate::error::BACKEND,
            message: "purged on the primary, but only 0 of 1 replicas acknowledged it".into(),
            retryable: false,
            source: None,
        };
        let mut published = BTreeSet::new();
        let sweeps: Vec<Sweep> = vec![
            Box::pin(async move { ("removed", true, Err(short())) }),
            Box::pin(async move { ("lost", false, Err(short())) }),
        ];
        let (swept, failed) = record_sweeps(sweeps, &mut published)
            .now_or_never()
            .expect("nothing in flight");
        assert!(swept.is_empty());
        assert!(failed.is_some());
        assert_eq!(published, BTreeSet::from(["removed".to_string()]));
    }

    /// A fresh claim tells which of the entries it claims were at its own token already:
    /// those a lease of its that ended left, which no writer scored since, and whose
    /// sessions a failed round of it may have published (`purge_spread` sweeps them
    /// without publishing again); not one a writer scored, nor another claimer's.
    #[test]
    fn a_fresh_claim_tells_the_entries_an_ended_lease_of_its_own_left() {
        let Some(mut conn) = server() else { return };
        let keys = Keys::new(&prefix("ended"));
        let (key, record) = (keys.expiry().to_string(), keys.claim_record("5"));
        let conn = &mut conn;
        zadd(conn, &key, 3.0 + scripts::token_of(3.0, 5), "ended");
        zadd(conn, &key, 4.0, "written");
        zadd(conn, &key, 5.0 + scripts::token_of(5.0, 6), "theirs");
        let (_, due, held) = claim(conn, &key, &record, "5");
        assert_eq!(due, ["ended", "written", "theirs"]);
        assert_eq!(held, ["ended"]);
        remove(conn, &[&key, &record]);
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
