//! The Lua scripts that change a session's list and meta hash in one atomic step.
//!
//! A script runs atomically on the server, unlike `MULTI`, where a command that fails
//! (say `RPUSH` on a key of the wrong type) leaves the others applied. Each script first
//! checks the types of both keys and refuses before writing anything. Both keys share a
//! hash tag (see `keys.rs`), so the scripts are valid on Redis Cluster too. Timestamps
//! come from the server's clock, so writers on machines with skewed clocks still agree.

use std::sync::LazyLock;

use redis::Script;

/// Shared prologue: effect replication (implicit since Redis 5, needed before `TIME`
/// on older servers) and the type check that runs before any write.
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
local function now_ms()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local function touch(ttl_ms)
  local ttl = tonumber(ttl_ms)
  for i = 1, 2 do
    if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) else redis.call('PERSIST', KEYS[i]) end
  end
end
"#;

/// Replaces or extends a session.
///
/// KEYS: list, meta. ARGV: `replace` or `append`, TTL in ms (0 = none), then the
/// messages as JSON. Returns the new length of the list.
const WRITE_BODY: &str = r#"
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
touch(ARGV[2])
return redis.call('LLEN', KEYS[1])
"#;

/// Keeps the first messages of a session.
///
/// KEYS: list, meta. ARGV: the length to keep (at least 1), TTL in ms (0 = none).
/// Returns 1 if messages were removed, 0 if the list was already short enough or absent.
const TRUNCATE_BODY: &str = r#"
local keep = tonumber(ARGV[1])
if redis.call('LLEN', KEYS[1]) <= keep then return 0 end
redis.call('LTRIM', KEYS[1], 0, keep - 1)
redis.call('HSET', KEYS[2], 'updated_at', now_ms())
touch(ARGV[2])
return 1
"#;

/// The save/append script; see [`WRITE_BODY`].
pub(crate) static WRITE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{PROLOGUE}{WRITE_BODY}")));

/// The truncate script; see [`TRUNCATE_BODY`].
pub(crate) static TRUNCATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{PROLOGUE}{TRUNCATE_BODY}")));
