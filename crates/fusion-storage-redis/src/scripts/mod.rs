//! The Lua scripts that change a session's keys, and its indexes on one server, in one
//! atomic step, and those a listing reads with.
//!
//! A script runs atomically on the server, unlike `MULTI`, where a command that fails
//! (say `RPUSH` on a key of the wrong type) leaves the others applied. But Redis keeps
//! what a script wrote before an error too, so everything that could make a script fail
//! is checked before its first write: every argument, and the types of the session's
//! keys, which the first command on each key checks by failing (`HMGET` on a meta key
//! that is not a hash; `LLEN`, or the append's `RPUSH`, on a list key that is not a list)
//! before anything is written. After that the scripts only run commands that cannot fail
//! on their arguments (the TTL is a whole number Redis accepts, the push is chunked below
//! Lua's `unpack` limit). Both keys of a session share a hash tag (see `keys.rs`), so the
//! scripts are valid on Redis Cluster too. Timestamps come from the server's clock, so
//! writers on machines with skewed clocks still agree.
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
//! `updated_at` and owner it returns). They change the indexes before the session, so an
//! index is never behind the session it lists.
//!
//! Each `redis.call` costs the server about as much as a command of its own, and a busy
//! server's throughput is what its scripts cost (issue #15's W5), so the common append
//! makes only the calls it needs; `writes.rs` counts them.

mod reads;
mod writes;

use std::sync::LazyLock;

use fusion_core::LEGACY_GENERATION;
use redis::{FromRedisValue, ParsingError, Script, Value};

use crate::config::MAX_TTL;

/// What every script that writes starts with: effect replication (implicit since Redis 5,
/// needed before `TIME` on older servers; asked for only before Redis 7), and the helpers
/// that check arguments.
const COMMON: &str = r#"
-- Since Redis 5 effects are what replicates, and since 7 (which has REDIS_VERSION)
-- the call is deprecated, yet still costs about as much as a command.
if redis.replicate_commands and not redis.REDIS_VERSION then redis.replicate_commands() end
local function bad_arg(what, value)
  return redis.error_reply('ERR fusion: invalid ' .. what .. ' argument ' .. tostring(value) .. '; nothing was written')
end
-- Digits without a leading zero: the integers Redis itself parses.
local function whole(text)
  return type(text) == 'string' and (text == '0' or string.match(text, '^[1-9]%d*$') ~= nil)
end
-- Compared digit by digit: a Lua number is a double, which rounds above 2^53.
local function at_most(text, max)
  if #text ~= #max then return #text < #max end
  for i = 1, #text do
    local a, b = string.byte(text, i), string.byte(max, i)
    if a ~= b then return a < b end
  end
  return true
end
"#;

/// `ARGV[2]` of every script that sets a TTL is the TTL in ms, `0` for none. It must be
/// a whole number as Redis parses one (digits, no leading zero) and at most
/// `@MAX_TTL_MS@` (substituted from [`MAX_TTL`]), which `RedisOptions` already ensures;
/// checked again here because a failing `PEXPIRE` would come after the writes. It is
/// handed to `PEXPIRE` as the string it arrived as: a Lua number would be formatted in
/// exponent notation above 10^17, which `PEXPIRE` refuses. Then the helpers `now_ms()`
/// and `touch()`.
const TTL: &str = r#"
local ttl_arg = ARGV[2]
if not (whole(ttl_arg) and at_most(ttl_arg, '@MAX_TTL_MS@')) then
  return bad_arg('TTL', ttl_arg)
end
-- TIME gives seconds and microseconds as decimal strings; the milliseconds are the
-- seconds followed by the microseconds' first three of six digits. Joining strings
-- costs the server less than arithmetic and formatting.
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.sub('00000' .. t[2], -6, -4)
end
-- Sets the TTL on both keys, or without one makes them persistent again. The scripts
-- give both keys the same expiry, so the list's (the messages, which must not expire
-- when no TTL is set) tells whether there is any to remove.
local function touch()
  if ttl_arg ~= '0' then
    redis.call('PEXPIRE', KEYS[1], ttl_arg)
    redis.call('PEXPIRE', KEYS[2], ttl_arg)
  elseif redis.call('PTTL', KEYS[1]) ~= -1 then
    redis.call('PERSIST', KEYS[1])
    redis.call('PERSIST', KEYS[2])
  end
end
"#;

/// `ARGV[3..=6]` of the message scripts are the condition: the fresh generation the
/// script gives the session if it creates or rewrites it (made by the client, so the
/// script stays deterministic), the expectation (`any`, `gen` or `exact`), and the
/// expected generation and length (`0` where unused). Generations are compared as the
/// decimal strings they are stored as, never as Lua numbers. A session whose list exists
/// but whose meta has no `gen` (stored before generations existed) is at
/// `@LEGACY_GENERATION@`. Then `check()`.
const CONDITION: &str = r#"
local fresh, expect, want_gen, want_len = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if not whole(fresh) or fresh == '0' or fresh == '@LEGACY_GENERATION@' then
  return bad_arg('generation', fresh)
end
if expect ~= 'any' and expect ~= 'gen' and expect ~= 'exact' then
  return bad_arg('expectation', expect)
end
if not (whole(want_gen) and whole(want_len)) then
  return bad_arg('expected revision', tostring(want_gen) .. '/' .. tostring(want_len))
end
-- The session's revision and owner now, and whether it is what the caller expects: nil
-- if so, else the reply that reports the conflict (and writes nothing). Reading both
-- keys also checks their types: HMGET and LLEN fail on a key of another type. `stored`
-- is the meta hash's `gen` and `owner` if the caller already read them.
local function check(stored)
  stored = stored or redis.call('HMGET', KEYS[2], 'gen', 'owner')
  local len = redis.call('LLEN', KEYS[1])
  local gen, owner = '0', false
  if len > 0 then gen, owner = stored[1] or '@LEGACY_GENERATION@', stored[2] end
  if expect == 'any' or (gen == want_gen
      and (expect == 'gen' or gen == '0' or tonumber(want_len) == len)) then
    return nil, gen, len, owner
  end
  return {0, gen, len}, gen, len, owner
end
"#;

/// The indexes on one server: `KEYS[3]` and `KEYS[4]` are those of every session (by id,
/// by update time), absent on a cluster, where these helpers do nothing. An owner's two
/// are named here as `keys.rs` names them. (Each `local function` costs every run of the
/// script a closure, about what a command costs the server, so a script takes only the
/// parts it calls: [`UNINDEX`] is apart.)
const INDEX: &str = r#"
local indexed = KEYS[4] ~= nil
-- Scores the session at `now` in the by-update indexes, its owner's too; when `listed`,
-- also adds it to the by-id ones, which never move.
local function index(prefix, id, owner, now, listed)
  if not indexed then return end
  redis.call('ZADD', KEYS[4], now, id)
  if listed then redis.call('ZADD', KEYS[3], 0, id) end
  if owner then
    local key = prefix .. ':owner:{' .. owner .. '}:'
    redis.call('ZADD', key .. 'updated', now, id)
    if listed then redis.call('ZADD', key .. 'ids', 0, id) end
  end
end
"#;

/// Removing a session from the indexes on one server, after [`INDEX`].
const UNINDEX: &str = r#"
local function unindex_owner(prefix, id, owner)
  if not (indexed and owner) then return end
  local key = prefix .. ':owner:{' .. owner .. '}:'
  redis.call('ZREM', key .. 'ids', id)
  redis.call('ZREM', key .. 'updated', id)
end
local function unindex(prefix, id, owner)
  if not indexed then return end
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  unindex_owner(prefix, id, owner)
end
"#;

/// The save/append script; see [`writes::WRITE`].
pub(crate) static WRITE: LazyLock<Script> =
    LazyLock::new(|| script(&[COMMON, TTL, CONDITION, INDEX, writes::WRITE]));

/// The truncate script; see [`writes::TRUNCATE`].
pub(crate) static TRUNCATE: LazyLock<Script> =
    LazyLock::new(|| script(&[COMMON, TTL, CONDITION, INDEX, UNINDEX, writes::TRUNCATE]));

/// The delete script; see [`writes::DELETE`].
pub(crate) static DELETE: LazyLock<Script> =
    LazyLock::new(|| script(&[COMMON, INDEX, UNINDEX, writes::DELETE]));

/// The metadata compare-and-set script; see [`writes::UPDATE`].
pub(crate) static UPDATE: LazyLock<Script> =
    LazyLock::new(|| script(&[COMMON, TTL, INDEX, UNINDEX, writes::UPDATE]));

/// The read of one session's facts; see [`reads::INFO`].
pub(crate) static INFO: LazyLock<Script> = LazyLock::new(|| script(&[reads::INFO]));

/// The walk of a by-update index; see [`reads::WALK`].
pub(crate) static WALK: LazyLock<Script> = LazyLock::new(|| script(&[reads::WALK]));

/// The repair of one index score; see [`reads::REINDEX`].
pub(crate) static REINDEX: LazyLock<Script> = LazyLock::new(|| script(&[reads::REINDEX]));

fn script(parts: &[&str]) -> Script {
    Script::new(&source(parts))
}

/// The full text of a script made of `parts`, with the TTL bound and the legacy
/// generation filled in.
fn source(parts: &[&str]) -> String {
    parts
        .concat()
        .replace("@MAX_TTL_MS@", &MAX_TTL.as_millis().to_string())
        .replace("@LEGACY_GENERATION@", &LEGACY_GENERATION.to_string())
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
}

impl FromRedisValue for Outcome {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        let mut items: Vec<Value> = FromRedisValue::from_redis_value(value)?;
        let wrote = if items.len() >= 5 {
            let owner = items.pop().expect("five items");
            let updated = items.pop().expect("four items");
            Some(Written {
                updated: FromRedisValue::from_redis_value(updated)?,
                owner: FromRedisValue::from_redis_value(owner)?,
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
        for parts in [
            [COMMON, TTL, CONDITION, INDEX, writes::WRITE],
            [COMMON, TTL, CONDITION, INDEX, writes::TRUNCATE],
        ] {
            let text = source(&parts);
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
        let bad_writes: [Write; 15] = [
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
