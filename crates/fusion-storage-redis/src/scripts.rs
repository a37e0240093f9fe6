//! The Lua scripts that change a session's list and meta hash in one atomic step.
//!
//! A script runs atomically on the server, unlike `MULTI`, where a command that fails
//! (say `RPUSH` on a key of the wrong type) leaves the others applied. But Redis keeps
//! what a script wrote before an error too, so everything that could make a script fail
//! is checked before its first write: the types of both keys, the TTL and every other
//! argument. After those checks the scripts only run commands that cannot fail on their
//! arguments (the list's and hash's types are known, the TTL is a whole number Redis
//! accepts, the push is chunked below Lua's `unpack` limit). Both keys share a hash tag
//! (see `keys.rs`), so the scripts are valid on Redis Cluster too. Timestamps come from
//! the server's clock, so writers on machines with skewed clocks still agree.

use std::sync::LazyLock;

use redis::Script;

use crate::config::MAX_TTL;

/// Shared prologue: effect replication (implicit since Redis 5, needed before `TIME`
/// on older servers), then the checks that run before any write.
///
/// ARGV[2] of every script is the TTL in ms, `0` for none. It must be a whole number as
/// Redis parses one (digits, no leading zero) and at most `@MAX_TTL_MS@` (substituted
/// from [`MAX_TTL`]), which `RedisOptions` already ensures; checked again here because a
/// failing `PEXPIRE` would come after the writes.
/// It is handed to `PEXPIRE` as the string it arrived as: a Lua number would be
/// formatted in exponent notation above 10^17, which `PEXPIRE` refuses.
const PROLOGUE: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local function wrong_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE key ' .. key .. ' holds a ' .. t .. ', not a ' .. want)
  end
end
local err = wrong_type(KEYS[1], 'list') or wrong_type(KEYS[2], 'hash')
if err then return err end
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
local function now_ms()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local function touch()
  for i = 1, 2 do
    if ttl_arg ~= '0' then
      redis.call('PEXPIRE', KEYS[i], ttl_arg)
    else
      redis.call('PERSIST', KEYS[i])
    end
  end
end
"#;

/// Replaces or extends a session.
///
/// KEYS: list, meta. ARGV: `replace` or `append`, TTL in ms (0 = none), then at least
/// one message as JSON. Returns the new length of the list.
const WRITE_BODY: &str = r#"
if ARGV[1] ~= 'replace' and ARGV[1] ~= 'append' then return bad_arg('mode', ARGV[1]) end
if #ARGV < 3 then return bad_arg('message count', #ARGV - 2) end
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[2], 'created_at', now)
elseif ARGV[1] == 'replace' then
  redis.call('DEL', KEYS[1])
end
-- Lua's unpack() is limited to a few thousand values, so push in chunks; the script
-- is atomic either way.
for i = 3, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('HSET', KEYS[2], 'updated_at', now)
touch()
return redis.call('LLEN', KEYS[1])
"#;

/// Keeps the first messages of a session.
///
/// KEYS: list, meta. ARGV: the length to keep (at least 1), TTL in ms (0 = none).
/// Returns 1 if messages were removed, 0 if the list was already short enough or absent.
const TRUNCATE_BODY: &str = r#"
if not whole(ARGV[1]) or ARGV[1] == '0' then return bad_arg('length', ARGV[1]) end
local keep = tonumber(ARGV[1])
if redis.call('LLEN', KEYS[1]) <= keep then return 0 end
redis.call('LTRIM', KEYS[1], 0, keep - 1)
redis.call('HSET', KEYS[2], 'updated_at', now_ms())
touch()
return 1
"#;

/// The save/append script; see [`WRITE_BODY`].
pub(crate) static WRITE: LazyLock<Script> = LazyLock::new(|| Script::new(&source(WRITE_BODY)));

/// The truncate script; see [`TRUNCATE_BODY`].
pub(crate) static TRUNCATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&source(TRUNCATE_BODY)));

/// The full text of the script with `body`: the prologue, with the TTL bound filled in,
/// then the body.
fn source(body: &str) -> String {
    let prologue = PROLOGUE.replace("@MAX_TTL_MS@", &MAX_TTL.as_millis().to_string());
    format!("{prologue}{body}")
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
    fn the_scripts_carry_the_ttl_bound_of_the_options() {
        let bound = MAX_TTL.as_millis().to_string();
        for body in [WRITE_BODY, TRUNCATE_BODY] {
            let text = source(body);
            assert!(
                !text.contains("@MAX_TTL_MS@"),
                "placeholder left in the script"
            );
            assert!(
                text.contains(&format!("at_most(ttl_arg, '{bound}')")),
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
        let bad_writes: [(&str, &str, &[&str]); 7] = [
            ("append", "9223372036854775808", &[message]), // 2^63: PEXPIRE refuses it
            ("append", "4611686018427387905", &[message]), // MAX_TTL + 1 ms
            ("append", "abc", &[message]),
            ("append", "0600", &[message]),
            ("append", "1e5", &[message]),
            ("insert", "0", &[message]),
            ("append", "0", &[]),
        ];
        for (mode, ttl, messages) in bad_writes {
            let result: redis::RedisResult<i64> = WRITE
                .key(&list)
                .key(&meta)
                .arg(mode)
                .arg(ttl)
                .arg(messages)
                .invoke(&mut conn);
            let err = result.expect_err(&format!("mode {mode}, TTL {ttl}: should fail"));
            assert!(err.to_string().contains("nothing was written"), "{err}");
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&list)
                .arg(&meta)
                .query(&mut conn)
                .unwrap();
            assert_eq!(exists, 0, "mode {mode}, TTL {ttl}: a key was written");
        }
        let bound = MAX_TTL.as_millis().to_string();
        let len: i64 = WRITE
            .key(&list)
            .key(&meta)
            .arg("append")
            .arg(&bound)
            .arg(message)
            .invoke(&mut conn)
            .unwrap();
        assert_eq!(len, 1);
        let truncate: redis::RedisResult<i64> = TRUNCATE
            .key(&list)
            .key(&meta)
            .arg("0")
            .arg(&bound)
            .invoke(&mut conn);
        assert!(truncate.is_err(), "a length of 0 must be refused");
        let _: i64 = redis::cmd("DEL")
            .arg(&list)
            .arg(&meta)
            .query(&mut conn)
            .unwrap();
    }
}
