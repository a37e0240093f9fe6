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
//! generation (the meta hash's `gen` field) and length, compares them with what the
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
//! Each `redis.call` costs the server about as much as a command of its own, and a busy
//! server's throughput is what its scripts cost (issue #15's W5), so the common append
//! makes only the calls it needs; `writes.rs` counts them.

mod parts;
mod reads;
mod retention;
mod writes;

use std::sync::LazyLock;

use fusion_core::{LEGACY_GENERATION, MAX_IDLE};
use redis::{FromRedisValue, ParsingError, Script, Value};

use crate::config::MAX_TTL;
use parts::{CLOCK, COMMON, CONDITION, DIGITS, DROP, INDEX, TTL, UNINDEX};

/// The latest expiry instant the scripts accept, in µs since the epoch: the end of the
/// year 9999, as `fusion_core::Expiry::validate` checks first. It keeps the `PEXPIREAT`
/// the scripts set far inside what Redis accepts.
const LATEST_MICROS: &str = "253402300799999999";

/// The save/append script; see [`writes::WRITE`].
pub(crate) static WRITE: LazyLock<Script> =
    LazyLock::new(|| script(&[COMMON, DIGITS, CLOCK, TTL, CONDITION, INDEX, writes::WRITE]));

/// The truncate script; see [`writes::TRUNCATE`].
pub(crate) static TRUNCATE: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        COMMON,
        DIGITS,
        CLOCK,
        TTL,
        CONDITION,
        INDEX,
        UNINDEX,
        writes::TRUNCATE,
    ])
});

/// The delete script; see [`writes::DELETE`].
pub(crate) static DELETE: LazyLock<Script> =
    LazyLock::new(|| script(&[COMMON, INDEX, UNINDEX, writes::DELETE]));

/// The metadata compare-and-set script; see [`writes::UPDATE`].
pub(crate) static UPDATE: LazyLock<Script> =
    LazyLock::new(|| script(&[COMMON, DIGITS, CLOCK, TTL, INDEX, UNINDEX, writes::UPDATE]));

/// The read of one session's facts; see [`reads::INFO`].
pub(crate) static INFO: LazyLock<Script> = LazyLock::new(|| script(&[DIGITS, reads::INFO]));

/// The walk of a by-update index; see [`reads::WALK`].
pub(crate) static WALK: LazyLock<Script> = LazyLock::new(|| script(&[reads::WALK]));

/// The repair of one index score; see [`reads::REINDEX`].
pub(crate) static REINDEX: LazyLock<Script> = LazyLock::new(|| script(&[reads::REINDEX]));

/// A batch of `purge_expired` on one server; see [`retention::PURGE`].
pub(crate) static PURGE: LazyLock<Script> =
    LazyLock::new(|| script(&[COMMON, DIGITS, CLOCK, retention::SWEEP, retention::PURGE]));

/// The purge of one session on a cluster; see [`retention::PURGE_ONE`].
pub(crate) static PURGE_ONE: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        COMMON,
        DIGITS,
        CLOCK,
        retention::SWEEP,
        retention::PURGE_ONE,
    ])
});

/// The due entries of the expiry index on a cluster; see [`retention::DUE`].
pub(crate) static DUE: LazyLock<Script> =
    LazyLock::new(|| script(&[COMMON, DIGITS, CLOCK, retention::DUE]));

fn script(parts: &[&str]) -> Script {
    Script::new(&source(parts))
}

/// The full text of a script made of `parts`, with the removal of an expired session,
/// the bounds and the legacy generation filled in.
fn source(parts: &[&str]) -> String {
    parts
        .concat()
        .replace("@DROP@", DROP)
        .replace("@MAX_TTL_MS@", &MAX_TTL.as_millis().to_string())
        .replace("@LEGACY_GENERATION@", &LEGACY_GENERATION.to_string())
        .replace("@LATEST_MICROS@", LATEST_MICROS)
        .replace("@MAX_IDLE_MICROS@", &MAX_IDLE.as_micros().to_string())
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
mod tests {
    use super::*;

    /// A blocking connection to `REDIS_URL`, or `None` (skip, or panic when the backends
    /// are required) without one.
    fn server() -> Option<redis::Connection> {
        let Some(url) = std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        else {
            return fusion_core::testkit::unavailable("redis", "set REDIS_URL to run");
        };
        let client = redis::Client::open(url).expect("REDIS_URL parses");
        Some(client.get_connection().expect("connecting to REDIS_URL"))
    }

    /// A key prefix of this test's own.
    fn prefix(test: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("fusion-test:{test}-{nanos}")
    }

    #[test]
    fn the_scripts_carry_the_ttl_bound_and_legacy_generation_of_the_crate() {
        let bound = MAX_TTL.as_millis().to_string();
        for last in [writes::WRITE, writes::TRUNCATE] {
            let text = source(&[COMMON, DIGITS, CLOCK, TTL, CONDITION, INDEX, last]);
            assert!(!text.contains('@'), "placeholder left in the script");
            assert!(
                text.contains(&format!("at_most(ttl_arg, '{bound}')")),
                "{text}"
            );
            assert!(
                text.contains(&format!("fresh == '{LEGACY_GENERATION}'")),
                "{text}"
            );
        }
    }

    #[test]
    fn a_write_with_an_argument_that_would_fail_later_fails_first_and_writes_nothing() {
        let Some(mut conn) = server() else { return };
        let prefix = prefix("scripts");
        let (list, meta) = (format!("{prefix}:s:{{x}}"), format!("{prefix}:m:{{x}}"));
        let message = r#"{"role":"user","content":"hi"}"#;
        let good = ["12345", "any", "0", "0"];
        let no_meta: &[&str] = &["0"];
        // Mode, TTL, condition, metadata arguments, messages.
        type Write<'a> = (&'a str, &'a str, [&'a str; 4], &'a [&'a str], &'a [&'a str]);
        let bad_writes: [Write; 19] = [
            ("append", "9223372036854775808", good, no_meta, &[message]), // 2^63
            ("append", "4611686018427387905", good, no_meta, &[message]), // MAX_TTL + 1 ms
            ("append", "abc", good, no_meta, &[message]),
            ("append", "0600", good, no_meta, &[message]),
            ("append", "1e5", good, no_meta, &[message]),
            ("insert", "0", good, no_meta, &[message]),
            ("replace", "0", good, no_meta, &[]),
            ("append", "0", ["1", "any", "0", "0"], no_meta, &[message]), // legacy gen
            ("append", "0", ["0", "any", "0", "0"], no_meta, &[message]), // absent
            ("append", "0", ["7x", "any", "0", "0"], no_meta, &[message]),
            (
                "append",
                "0",
                ["12345", "maybe", "0", "0"],
                no_meta,
                &[message],
            ),
            (
                "append",
                "0",
                ["12345", "exact", "-1", "0"],
                no_meta,
                &[message],
            ),
            ("append", "0", good, &["x"], &[message]),
            ("append", "0", good, &["3", "title", "t"], &[message]), // more pairs than given
            ("append", "0", good, &["1", "colour", "red"], &[message]),
            ("append", "0", good, &["1", "idle", "0"], &[message]),
            (
                "append",
                "0",
                good,
                &["1", "idle", "3153600000000001"],
                &[message],
            ), // MAX_IDLE + 1 µs
            (
                "append",
                "0",
                good,
                &["1", "expires_at", "253402300800000000"],
                &[message],
            ), // 10000
            ("append", "0", good, &["1", "expires_at", "-5"], &[message]),
        ];
        for (mode, ttl, condition, meta_args, messages) in bad_writes {
            let result: redis::RedisResult<Outcome> = WRITE
                .key(&list)
                .key(&meta)
                .arg(mode)
                .arg(ttl)
                .arg(&condition)
                .arg("x")
                .arg(&prefix)
                .arg(meta_args)
                .arg(messages)
                .invoke(&mut conn);
            let what = format!("mode {mode}, TTL {ttl}, condition {condition:?}, {meta_args:?}");
            let err = result.expect_err(&format!("{what}: should fail"));
            assert!(err.to_string().contains("nothing was written"), "{err}");
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&list)
                .arg(&meta)
                .query(&mut conn)
                .unwrap();
            assert_eq!(exists, 0, "{what}: a key was written");
        }
        let bound = MAX_TTL.as_millis().to_string();
        let created: Outcome = WRITE
            .key(&list)
            .key(&meta)
            .arg("append")
            .arg(&bound)
            .arg(&good)
            .arg("x")
            .arg(&prefix)
            .arg(&["1", "owner", "o"])
            .arg(message)
            .invoke(&mut conn)
            .unwrap();
        assert_eq!(
            (created.applied, created.generation.as_str(), created.len),
            (true, "12345", 1)
        );
        let written = created.wrote.expect("the script wrote");
        assert_eq!(written.owner.as_deref(), Some("o"));
        assert!(written.updated.is_some());
        assert_eq!(written.due, None, "no expiry");
        for length in ["-1", "01", "x"] {
            let truncate: redis::RedisResult<Outcome> = TRUNCATE
                .key(&list)
                .key(&meta)
                .arg(length)
                .arg(&bound)
                .arg(&["678", "any", "0", "0"])
                .arg("x")
                .arg(&prefix)
                .invoke(&mut conn);
            assert!(truncate.is_err(), "a length of {length} must be refused");
        }
        let _: i64 = redis::cmd("DEL")
            .arg(&list)
            .arg(&meta)
            .query(&mut conn)
            .unwrap();
    }

    /// The expiry arithmetic is exact over the whole range: the ms Redis is told is the
    /// µs instant rounded up (as strings past 2^53), an idle span in µs is added to the
    /// time in ms the script stores, an instant is compared with the clock to the µs, and
    /// values Fusion did not write are no expiry.
    #[test]
    fn the_expiry_arithmetic_of_the_scripts_is_exact_to_the_year_9999() {
        let Some(mut conn) = server() else { return };
        let probe = Script::new(&source(&[
            COMMON,
            DIGITS,
            CLOCK,
            r#"
            local gone, at, due = expiry(ARGV[1], ARGV[2] ~= '' and ARGV[2], ARGV[3] == 'check', clock)
            if ARGV[2] ~= '' and at then
              at = string.format('%.0f', tonumber(string.sub(at, 1, -4)) - tonumber(now))
                .. string.sub(at, -3)
            end
            return {tostring(gone), tostring(at), tostring(due)}
            "#,
        ]));
        let cases = [
            ("0", "", "", ["false", "0", "0"]),
            ("1", "", "", ["false", "1", "1"]),
            ("999", "", "", ["false", "999", "1"]),
            ("1000", "", "", ["false", "1000", "1"]),
            ("1001", "", "", ["false", "1001", "2"]),
            ("1700000000123456", "", "check", ["true", "nil", "nil"]),
            (
                LATEST_MICROS,
                "",
                "check",
                ["false", LATEST_MICROS, "253402300800000"],
            ),
            (
                "253402300799000000",
                "",
                "",
                ["false", "253402300799000000", "253402300799000"],
            ),
            ("soon", "", "check", ["false", "false", "false"]),
            // With an idle span the instant is the script's time (subtracted here) plus it.
            ("1", "1500", "", ["false", "1500", ""]),
            (
                "",
                "3153600000000000",
                "",
                ["false", "3153600000000000", ""],
            ),
            ("", "x", "", ["false", "false", "false"]),
        ];
        for (at, idle, check, want) in cases {
            let got: [String; 3] = probe
                .arg(at)
                .arg(idle)
                .arg(check)
                .invoke(&mut conn)
                .unwrap();
            let [gone, at_got, due] = &got;
            assert_eq!(
                (gone, at_got),
                (&want[0].to_string(), &want[1].to_string()),
                "{at} {idle}"
            );
            if !want[2].is_empty() {
                assert_eq!(due, want[2], "{at} {idle}");
            }
        }
    }

    /// The walk's order is (score, member) descending, and it resumes strictly after any
    /// position: a member still at its score, one that moved or left, and ties.
    #[test]
    fn the_walk_resumes_strictly_after_any_position_in_score_then_member_order() {
        let Some(mut conn) = server() else { return };
        let key = format!("{}:updated", prefix("walk"));
        let mut entries: Vec<(i64, String)> = Vec::new();
        for (i, score) in [5, 5, 5, 7, 3, 5, 9, 5, 3, 0].into_iter().enumerate() {
            entries.push((score, format!("m{}", (i * 7) % 10)));
        }
        for (score, member) in &entries {
            let _: () = redis::cmd("ZADD")
                .arg(&key)
                .arg(score)
                .arg(member)
                .query(&mut conn)
                .unwrap();
        }
        entries.sort_by(|a, b| b.cmp(a));
        let walk = |conn: &mut redis::Connection, score: &str, member: &str, n: usize| {
            let flat: Vec<String> = WALK
                .key(&key)
                .arg(score)
                .arg(member)
                .arg(n)
                .invoke(conn)
                .unwrap();
            flat.chunks(2)
                .map(|pair| (pair[1].parse::<i64>().unwrap(), pair[0].clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(walk(&mut conn, "", "", 100), entries);
        assert_eq!(walk(&mut conn, "", "", 3), entries[..3]);
        // From every stored position, and from positions between and beyond them.
        let mut probes: Vec<(i64, String)> = entries.clone();
        for score in [10, 5, 4, 3, -1] {
            for member in ["m", "m4", "m45", "n", ""] {
                probes.push((score, member.to_string()));
            }
        }
        for (score, member) in probes {
            let expected: Vec<(i64, String)> = entries
                .iter()
                .filter(|(s, m)| *s < score || (*s == score && (member.is_empty() || *m < member)))
                .cloned()
                .collect();
            let got = walk(&mut conn, &score.to_string(), &member, 100);
            assert_eq!(got, expected, "after ({score}, {member:?})");
            let got = walk(&mut conn, &score.to_string(), &member, 2);
            assert_eq!(
                got,
                expected[..expected.len().min(2)],
                "2 after ({score}, {member:?})"
            );
        }
        let _: () = redis::cmd("DEL").arg(&key).query(&mut conn).unwrap();
    }
}
