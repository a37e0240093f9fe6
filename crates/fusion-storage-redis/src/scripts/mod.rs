//! The Lua scripts that change a session's keys, and its indexes on one server, in one
//! atomic step, and those a listing or a purge reads with.
//!
//! A script runs atomically on the server, unlike `MULTI`, where a command that fails
//! (say `RPUSH` on a key of the wrong type) leaves the others applied. But Redis keeps
//! what a script wrote before an error too, so everything that could make a script fail
//! is checked before its first write: every argument, and the types of the session's
//! keys, which the first command on each key checks by failing (`HMGET` on a meta key
//! that is not a hash; `LLEN`, or the append's `RPUSH`, on a list key that is not a list)
//! before anything is written. After that the scripts only run commands that cannot fail
//! on their arguments (the TTL and the expiry are whole numbers Redis accepts, the push
//! is chunked below Lua's `unpack` limit). Both keys of a session share a hash tag (see
//! `keys.rs`), so the scripts are valid on Redis Cluster too. Timestamps come from the
//! server's clock, read once per script, so writers on machines with skewed clocks still
//! agree.
//!
//! Every write script is also a conditional write (issue #13): it reads the session's
//! generation (the meta hash's `gen` field) and length (and, for
//! `Expect::UnwrittenSince` only, its `updated_at`), compares them with what the
//! caller expects, and writes only if they match; the unconditional `save`, `append` and
//! `truncate` pass the expectation `any`. A mismatch is not an error reply but a result
//! (`{0, generation, length}`), returned before the first write like any other refusal.
//!
//! The indexes (issue #16): on one server the scripts keep them in the same atomic step,
//! the key of an owner's indexes named by the script from the prefix and the owner it
//! reads (a server without slots lets a script reach keys it was not given; a cluster
//! does not, and there the caller updates the indexes after the script, from the
//! `updated_at`, owner and expiry it returns). They change the indexes before the
//! session, so an index is never behind the session it lists.
//!
//! Retention: a session's expiry is two fields of its meta hash (`stored.rs`), a
//! `PEXPIREAT` on both its keys, and an entry in the expiry index; every script treats a
//! session whose instant has passed as absent (`parts.rs`), and `retention.rs` has the
//! purge.
//!
//! Exactly once (issue #18): the write script skips a message whose id is among the
//! session's last ones, kept in its meta hash, in the same atomic step as the push
//! (`window.rs`), so two copies of one batch racing store it once.
//!
//! Changes published (`RedisOptions::publish_changes`): each script that changes
//! sessions comes in two forms ([`Writing`]), one calling `PUBLISH` after each change it
//! makes and one in which those lines are comments (`notify.rs`).
//!
//! Each `redis.call` costs the server about as much as a command of its own, and a busy
//! server's throughput is what its scripts cost (issue #15's W5), so the common append
//! makes only the calls it needs; `writes.rs` counts them.

mod notify;
mod parts;
mod reads;
mod retention;
mod window;
mod writes;

use std::sync::LazyLock;

use fusion_core::{DEDUP_WINDOW, LEGACY_GENERATION, MAX_IDLE};
use redis::{FromRedisValue, ParsingError, Script, Value};

use crate::config::MAX_TTL;
use parts::{CLOCK, COMMON, CONDITION, DIGITS, DROP, INDEX, TTL, UNINDEX};
use window::FINGERPRINT;

pub(crate) use window::fingerprint;

/// The latest expiry instant the scripts accept, in µs since the epoch: the end of the
/// year 9999, as `fusion_core::Expiry::validate` checks first. It keeps the `PEXPIREAT`
/// the scripts set far inside what Redis accepts.
const LATEST_MICROS: &str = "253402300799999999";

/// The save/append script; see [`writes::WRITE`].
pub(crate) static WRITE: LazyLock<Writing> = LazyLock::new(|| {
    Writing::of(
        "ARGV[8]",
        &[COMMON, DIGITS, CLOCK, TTL, CONDITION, INDEX, writes::WRITE],
    )
});

/// The truncate script; see [`writes::TRUNCATE`].
pub(crate) static TRUNCATE: LazyLock<Writing> = LazyLock::new(|| {
    Writing::of(
        "ARGV[8]",
        &[
            COMMON,
            DIGITS,
            CLOCK,
            TTL,
            CONDITION,
            INDEX,
            UNINDEX,
            FINGERPRINT,
            writes::TRUNCATE,
        ],
    )
});

/// The delete script; see [`writes::DELETE`].
pub(crate) static DELETE: LazyLock<Writing> =
    LazyLock::new(|| Writing::of("ARGV[2]", &[COMMON, INDEX, UNINDEX, writes::DELETE]));

/// The metadata compare-and-set script; see [`writes::UPDATE`].
pub(crate) static UPDATE: LazyLock<Writing> = LazyLock::new(|| {
    Writing::of(
        "ARGV[3]",
        &[COMMON, DIGITS, CLOCK, TTL, INDEX, UNINDEX, writes::UPDATE],
    )
});

/// The read of a session's messages on a server out of memory; see [`reads::SNAPSHOT`].
pub(crate) static SNAPSHOT: LazyLock<Lua> = LazyLock::new(|| reading(&[reads::SNAPSHOT]));

/// The read of one session's facts; see [`reads::INFO`].
pub(crate) static INFO: LazyLock<Lua> = LazyLock::new(|| reading(&[DIGITS, reads::INFO]));

/// The walk of a by-update index; see [`reads::WALK`].
pub(crate) static WALK: LazyLock<Lua> = LazyLock::new(|| reading(&[reads::WALK]));

/// A prune on one server; see [`reads::PRUNE`].
pub(crate) static PRUNE: LazyLock<Lua> = LazyLock::new(|| script(&[DIGITS, reads::PRUNE]));

/// The repair of one index score; see [`reads::REINDEX`].
pub(crate) static REINDEX: LazyLock<Lua> = LazyLock::new(|| script(&[reads::REINDEX]));

/// A batch of `purge_expired` on one server; see [`retention::PURGE`].
pub(crate) static PURGE: LazyLock<Writing> = LazyLock::new(|| {
    Writing::of(
        "ARGV[1]",
        &[COMMON, DIGITS, CLOCK, retention::SWEEP, retention::PURGE],
    )
});

/// The purge of one session on a cluster; see [`retention::PURGE_ONE`].
pub(crate) static PURGE_ONE: LazyLock<Writing> = LazyLock::new(|| {
    Writing::of(
        "ARGV[1]",
        &[
            COMMON,
            DIGITS,
            CLOCK,
            retention::SWEEP,
            retention::PURGE_ONE,
        ],
    )
});

/// The due entries of the expiry index on a cluster, claimed for a lease; see
/// [`retention::CLAIM`].
pub(crate) static CLAIM: LazyLock<Lua> =
    LazyLock::new(|| script(&[COMMON, DIGITS, CLOCK, retention::TOKEN, retention::CLAIM]));

/// The entries of the expiry index a cluster's purge or delete takes out, claimed,
/// dropped or released; see [`retention::CLAIMED`].
pub(crate) static CLAIMED: LazyLock<Lua> =
    LazyLock::new(|| script(&[retention::TOKEN, retention::CLAIMED]));

/// A claimer's id: what picks the fraction of a ms past a whole one its claims of expiry
/// entries are scored at, its token (`CLAIM`, `CLAIMED`, see [`retention::TOKEN`]), so
/// that a claimer drops or releases only the entries it claimed itself. Picked at random
/// (below 2^24) for each purge round and each `forget`: two claimers of one entry at
/// once (a purge and a delete, or a purge and one whose lease ended) share a token about
/// once in 4,000 times at today's scores (once in 31 at those of the year 9999), and
/// then act as though neither had a token, as before tokens.
pub(crate) fn claim_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (random % (1 << 24)).to_string()
}

/// What [`retention::TOKEN`] gives for `whole` (positive, in ms) and the claimer `id`:
/// for tests.
#[cfg(test)]
pub(crate) fn token_of(whole: f64, id: u64) -> f64 {
    // `math.frexp`'s exponent: `whole` is below 2^exponent and at least half of it.
    let exponent = i64::try_from((whole.to_bits() >> 52) & 0x7ff).unwrap_or(0) - 1022;
    let bits = (53 - exponent).clamp(4, 16);
    let span = 1u64 << bits;
    let k = id % (span - 1) + 1;
    k as f64 / span as f64
}

fn script(parts: &[&str]) -> Lua {
    Lua::new(source(parts))
}

/// A script that only reads: it may go as `EVALSHA_RO` (see [`Lua::read_only`]).
fn reading(parts: &[&str]) -> Lua {
    Lua {
        read_only: true,
        ..script(parts)
    }
}

/// A script and its text: called by its sha (`EVALSHA`, which sends only the sha), and
/// by its text (`EVAL`) where the server does not know the sha (see `storage/scripting.rs`).
/// Dereferences to the driver's [`Script`].
#[derive(Clone)]
pub(crate) struct Lua {
    script: Script,
    source: String,
    read_only: bool,
}

impl Lua {
    fn new(source: String) -> Self {
        Self {
            script: Script::new(&source),
            source,
            read_only: false,
        }
    }

    /// Whether the script only reads, so Redis 7 may run it as `EVALSHA_RO`, which
    /// `CLIENT PAUSE WRITE` (a failover: `FAILOVER`, `CLUSTER FAILOVER`) does not hold and
    /// a replica runs.
    /// Without a `#!lua flags=no-writes` line, which Redis 6.2 would take for a syntax
    /// error: `EVALSHA_RO` alone marks the call as a read (and fails a write in it).
    pub(crate) fn read_only(&self) -> bool {
        self.read_only
    }

    /// The script's text, as `EVAL` takes it.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }
}

impl std::ops::Deref for Lua {
    type Target = Script;

    fn deref(&self) -> &Script {
        &self.script
    }
}

/// A script that changes sessions, in the two forms a storage picks from by
/// [`RedisOptions::publish_changes`](crate::RedisOptions::publish_changes): as written,
/// its `--publish` lines comments, or with them run (`notify.rs`).
pub(crate) struct Writing {
    quiet: Lua,
    publishing: Lua,
}

impl Writing {
    /// The script of `parts`, whose argument `prefix` (a Lua expression, `ARGV[n]`) is
    /// the key prefix, which names the channel the publishing form publishes on.
    fn of(prefix: &str, parts: &[&str]) -> Self {
        let quiet = source(parts);
        Self {
            publishing: Lua::new(notify::publishing(prefix, &quiet)),
            quiet: Lua::new(quiet),
        }
    }

    /// The form that publishes each change, or the one that does not.
    pub(crate) fn publishing(&self, publish: bool) -> &Lua {
        if publish {
            &self.publishing
        } else {
            &self.quiet
        }
    }
}

/// The full text of a script made of `parts`, with the removal of an expired session,
/// the window's functions, the bounds, the legacy generation and the dedup window filled
/// in.
fn source(parts: &[&str]) -> String {
    parts
        .concat()
        .replace("@DROP@", DROP)
        .replace("@WINDOW@", window::WINDOW)
        .replace("@MAX_TTL_MS@", &MAX_TTL.as_millis().to_string())
        .replace("@LEGACY_GENERATION@", &LEGACY_GENERATION.to_string())
        .replace("@LATEST_MICROS@", LATEST_MICROS)
        // The latest time a copied session may give, in ms (`writes::WRITE`).
        .replace("@LATEST_MILLIS@", &LATEST_MICROS[..LATEST_MICROS.len() - 3])
        .replace("@MAX_IDLE_MICROS@", &MAX_IDLE.as_micros().to_string())
        .replace("@DEDUP_WINDOW@", &DEDUP_WINDOW.to_string())
        .replace("@TAKE_UP@", &retention::TAKE_UP.to_string())
        .replace("@TAKE_UP_SCAN@", &retention::TAKE_UP_SCAN.to_string())
}

/// What a message script reports: whether it wrote, the session's generation (as
/// stored: a decimal string, or whatever else someone wrote there) and length, after the
/// write or as found when the expectation failed, and what the write left for the
/// indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) applied: bool,
    pub(crate) generation: String,
    pub(crate) len: usize,
    /// `Some` when the script wrote.
    pub(crate) wrote: Option<Written>,
}

/// What a write left: what the indexes need to follow it on a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    /// The session's new `updated_at` (ms, as stored), `None` once it was deleted.
    pub(crate) updated: Option<String>,
    /// The session's owner, if it has one (before the delete, for a delete).
    pub(crate) owner: Option<String>,
    /// After a write that moved the session's entry in the expiry index (it created the
    /// session, or its expiry is idle), the ms it expires, rounded up: the entry's new
    /// score. After a delete, its `expires_at` if it had one: it had an entry there.
    pub(crate) due: Option<String>,
}

impl FromRedisValue for Outcome {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        let mut items: Vec<Value> = FromRedisValue::from_redis_value(value)?;
        let wrote = if items.len() >= 6 {
            let due = items.pop().expect("six items");
            let owner = items.pop().expect("five items");
            let updated = items.pop().expect("four items");
            Some(Written {
                updated: FromRedisValue::from_redis_value(updated)?,
                owner: FromRedisValue::from_redis_value(owner)?,
                due: FromRedisValue::from_redis_value(due)?,
            })
        } else {
            None
        };
        let (applied, generation, len): (i64, String, usize) =
            FromRedisValue::from_redis_value(Value::Array(items))?;
        Ok(Self {
            applied: applied == 1,
            generation,
            len,
            wrote,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
