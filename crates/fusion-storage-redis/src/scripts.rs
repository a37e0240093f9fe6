//! The Lua scripts that change a session's list and meta hash in one atomic step.
//!
//! A script runs atomically on the server, unlike `MULTI`, where a command that fails
//! (say `RPUSH` on a key of the wrong type) leaves the others applied. But Redis keeps
//! what a script wrote before an error too, so everything that could make a script fail
//! is checked before its first write: every argument, and the types of both keys, which
//! the first command on each key checks by failing (`HGET` on a meta key that is not a
//! hash; `LLEN`, or the append's `RPUSH`, on a list key that is not a list) before
//! anything is written. After that the scripts only run commands that cannot fail on
//! their arguments (the TTL is a whole number Redis accepts, the push is chunked below
//! Lua's `unpack` limit). Both keys share a hash tag (see `keys.rs`), so the scripts are
//! valid on Redis Cluster too. Timestamps come from the server's clock, so writers on
//! machines with skewed clocks still agree.
//!
//! Every script is also a conditional write (issue #13): it reads the session's
//! generation (the meta hash's `gen` field) and length, compares them with what the
//! caller expects, and writes only if they match; the unconditional `save`, `append` and
//! `truncate` pass the expectation `any`. A mismatch is not an error reply but a result
//! (`{0, generation, length}`), returned before the first write like any other refusal.
//!
//! Each `redis.call` costs the server about as much as a command of its own, and a busy
//! server's throughput is what its scripts cost (issue #15's W5), so the common append
//! (`any`, with messages) makes only the calls it needs: the generation, the push (whose
//! reply is the length, so no `LLEN`), the clock, the `updated_at` field, and one `PTTL`
//! that spares the two `PERSIST`s when the session has no expiry.

use std::sync::LazyLock;

use fusion_core::LEGACY_GENERATION;
use redis::Script;

use crate::config::MAX_TTL;

/// Shared prologue: effect replication (implicit since Redis 5, needed before `TIME` on
/// older servers; asked for only before Redis 7), the checks of the arguments, then the
/// helpers `check()`, `now_ms()` and `touch()`.
///
/// `ARGV[2]` of every script is the TTL in ms, `0` for none. It must be a whole number as
/// Redis parses one (digits, no leading zero) and at most `@MAX_TTL_MS@` (substituted
/// from [`MAX_TTL`]), which `RedisOptions` already ensures; checked again here because a
/// failing `PEXPIRE` would come after the writes.
/// It is handed to `PEXPIRE` as the string it arrived as: a Lua number would be
/// formatted in exponent notation above 10^17, which `PEXPIRE` refuses.
///
/// `ARGV[3..=6]` of every script are the condition: the fresh generation the script gives
/// the session if it creates or rewrites it (made by the client, so the script stays
/// deterministic), the expectation (`any`, `gen` or `exact`), and the expected generation
/// and length (`0` where unused). Generations are compared as the decimal strings they
/// are stored as, never as Lua numbers. A session whose list exists but whose meta has
/// no `gen` (stored before generations existed) is at `@LEGACY_GENERATION@`.
const PROLOGUE: &str = r#"
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
local ttl_arg = ARGV[2]
if not (whole(ttl_arg) and at_most(ttl_arg, '@MAX_TTL_MS@')) then
  return bad_arg('TTL', ttl_arg)
end
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
-- The session's revision now, and whether it is what the caller expects: nil if so,
-- else the reply that reports the conflict (and writes nothing). Reading both keys also
-- checks their types: HGET and LLEN fail on a key of another type, before any write.
local function check()
  local stored = redis.call('HGET', KEYS[2], 'gen')
  local len = redis.call('LLEN', KEYS[1])
  local gen = '0'
  if len > 0 then gen = stored or '@LEGACY_GENERATION@' end
  if expect == 'any' or (gen == want_gen
      and (expect == 'gen' or gen == '0' or tonumber(want_len) == len)) then
    return nil, gen, len
  end
  return {0, gen, len}, gen, len
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

/// Replaces or extends a session, if it meets the expectation, and indexes it when it
/// creates or replaces it.
///
/// KEYS: list, meta, and on one server the index (a cluster keeps it in another slot, so
/// there the caller indexes). ARGV: `replace` or `append`, TTL in ms (0 = none), the
/// condition (see [`PROLOGUE`]), the session id (for the index), then the messages as
/// JSON: at least one to replace, any number to append (none only checks). Returns
/// `{1, generation, length}` after the write, or `{0, generation, length}` as found when
/// the expectation failed.
///
/// A write that creates the session (no list yet) or replaces it gives it the fresh
/// generation; an append to an existing session keeps the one it has.
const WRITE_BODY: &str = r#"
local mode, count = ARGV[1], #ARGV - 7
if mode ~= 'replace' and mode ~= 'append' then return bad_arg('mode', mode) end
if mode == 'replace' and count < 1 then return bad_arg('message count', count) end
-- Lua's unpack() is limited to a few thousand values, so push in chunks; the script
-- is atomic either way. Returns the length after.
local function push()
  local len
  for i = 8, #ARGV, 1000 do
    len = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  return len
end
local gen, before
if mode == 'append' and expect == 'any' and count > 0 then
  -- Nothing to compare: read the generation (HGET fails on a meta key of another
  -- type), then push (RPUSH fails on a list key of another type before writing), whose
  -- reply tells the length before.
  gen = redis.call('HGET', KEYS[2], 'gen') or '@LEGACY_GENERATION@'
  before = push() - count
else
  local conflict
  conflict, gen, before = check()
  if conflict then return conflict end
  if count == 0 then return {1, gen, before} end
  if mode == 'replace' and before > 0 then
    redis.call('DEL', KEYS[1])
  end
  push()
end
local now = now_ms()
if before == 0 then
  redis.call('HSET', KEYS[2], 'created_at', now, 'gen', fresh, 'updated_at', now)
  gen = fresh
elseif mode == 'replace' then
  redis.call('HSET', KEYS[2], 'gen', fresh, 'updated_at', now)
  gen = fresh
else
  redis.call('HSET', KEYS[2], 'updated_at', now)
end
if gen == fresh and KEYS[3] then
  redis.call('SADD', KEYS[3], ARGV[7])
end
touch()
if mode == 'replace' then return {1, gen, count} end
return {1, gen, before + count}
"#;

/// Keeps the first messages of a session, if it meets the expectation.
///
/// KEYS: list, meta. ARGV: the length to keep (`0` deletes both keys), TTL in ms
/// (0 = none), the condition (see [`PROLOGUE`]). Returns `{1, generation, length}`
/// after (`{1, '0', 0}` once deleted), or `{0, generation, length}` as found when the
/// expectation failed. A truncate that removes messages gives the session the fresh
/// generation; one that removes none changes nothing, not even the TTL.
const TRUNCATE_BODY: &str = r#"
if not whole(ARGV[1]) then return bad_arg('length', ARGV[1]) end
local keep = tonumber(ARGV[1])
local conflict, gen, len = check()
if conflict then return conflict end
if len <= keep then return {1, gen, len} end
if keep == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {1, '0', 0}
end
redis.call('LTRIM', KEYS[1], 0, keep - 1)
redis.call('HSET', KEYS[2], 'gen', fresh, 'updated_at', now_ms())
touch()
return {1, fresh, keep}
"#;

/// The save/append script; see [`WRITE_BODY`].
pub(crate) static WRITE: LazyLock<Script> = LazyLock::new(|| Script::new(&source(WRITE_BODY)));

/// The truncate script; see [`TRUNCATE_BODY`].
pub(crate) static TRUNCATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&source(TRUNCATE_BODY)));

/// The full text of the script with `body`: the prologue, then the body, with the TTL
/// bound and the legacy generation filled in.
fn source(body: &str) -> String {
    format!("{PROLOGUE}{body}")
        .replace("@MAX_TTL_MS@", &MAX_TTL.as_millis().to_string())
        .replace("@LEGACY_GENERATION@", &LEGACY_GENERATION.to_string())
}

/// What a script reports: whether it wrote, and the session's generation (as stored: a
/// decimal string, or whatever else someone wrote there) and length, after the write or
/// as found when the expectation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) applied: bool,
    pub(crate) generation: String,
    pub(crate) len: usize,
}

impl redis::FromRedisValue for Outcome {
    fn from_redis_value(value: redis::Value) -> Result<Self, redis::ParsingError> {
        let (applied, generation, len): (i64, String, usize) =
            redis::FromRedisValue::from_redis_value(value)?;
        Ok(Self {
            applied: applied == 1,
            generation,
            len,
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

    #[test]
    fn the_scripts_carry_the_ttl_bound_and_legacy_generation_of_the_crate() {
        let bound = MAX_TTL.as_millis().to_string();
        for body in [WRITE_BODY, TRUNCATE_BODY] {
            let text = source(body);
            assert!(!text.contains('@'), "placeholder left in the script");
            assert!(
                text.contains(&format!("at_most(ttl_arg, '{bound}')")),
                "{text}"
            );
            assert!(
                text.contains(&format!("or '{LEGACY_GENERATION}' end")),
                "{text}"
            );
        }
    }

    #[test]
    fn a_write_with_an_argument_that_would_fail_later_fails_first_and_writes_nothing() {
        let Some(mut conn) = server() else { return };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let (list, meta) = (
            format!("fusion-test:scripts-{nanos}:s:{{x}}"),
            format!("fusion-test:scripts-{nanos}:m:{{x}}"),
        );
        let message = r#"{"role":"user","content":"hi"}"#;
        let good = ["12345", "any", "0", "0"];
        let bad_writes: [(&str, &str, [&str; 4], &[&str]); 12] = [
            ("append", "9223372036854775808", good, &[message]), // 2^63: PEXPIRE refuses it
            ("append", "4611686018427387905", good, &[message]), // MAX_TTL + 1 ms
            ("append", "abc", good, &[message]),
            ("append", "0600", good, &[message]),
            ("append", "1e5", good, &[message]),
            ("insert", "0", good, &[message]),
            ("replace", "0", good, &[]),
            ("append", "0", ["1", "any", "0", "0"], &[message]), // the legacy generation
            ("append", "0", ["0", "any", "0", "0"], &[message]), // absent
            ("append", "0", ["7x", "any", "0", "0"], &[message]),
            ("append", "0", ["12345", "maybe", "0", "0"], &[message]),
            ("append", "0", ["12345", "exact", "-1", "0"], &[message]),
        ];
        for (mode, ttl, condition, messages) in bad_writes {
            let result: redis::RedisResult<Outcome> = WRITE
                .key(&list)
                .key(&meta)
                .arg(mode)
                .arg(ttl)
                .arg(&condition)
                .arg("x")
                .arg(messages)
                .invoke(&mut conn);
            let what = format!("mode {mode}, TTL {ttl}, condition {condition:?}");
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
            .arg(message)
            .invoke(&mut conn)
            .unwrap();
        let expected = Outcome {
            applied: true,
            generation: "12345".into(),
            len: 1,
        };
        assert_eq!(created, expected);
        for length in ["-1", "01", "x"] {
            let truncate: redis::RedisResult<Outcome> = TRUNCATE
                .key(&list)
                .key(&meta)
                .arg(length)
                .arg(&bound)
                .arg(&["678", "any", "0", "0"])
                .invoke(&mut conn);
            assert!(truncate.is_err(), "a length of {length} must be refused");
        }
        let _: i64 = redis::cmd("DEL")
            .arg(&list)
            .arg(&meta)
            .query(&mut conn)
            .unwrap();
    }
}
