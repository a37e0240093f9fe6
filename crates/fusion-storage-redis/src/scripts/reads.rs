//! The Lua of the scripts that only read: a session's messages when a `MULTI` is refused
//! ([`SNAPSHOT`]), and those a listing runs: a session's facts in one atomic read ([`INFO`],
//! after the `DIGITS` part), a page of an index by update time after a cursor
//! ([`WALK`]), the repair of an index score that lags its session ([`REINDEX`]), and, on
//! one server, its prune ([`PRUNE`]). Each but [`PRUNE`] uses one slot's keys only, so
//! those are valid on a cluster; [`PRUNE`] names the sessions' keys itself from the prefix
//! (as `keys.rs` builds them), which only a server without slots allows.

/// A session's messages, some fields of its meta hash and the server's clock, of one
/// instant: what `load` and `load_revision` read in a `MULTI`, for a server out of memory,
/// which refuses a `MULTI`'s commands but runs a script that only reads.
///
/// KEYS: list, meta. ARGV: the fields. Returns `{elements, {fields...}, TIME}`.
pub(super) const SNAPSHOT: &str = r#"
return {redis.call('LRANGE', KEYS[1], 0, -1), redis.call('HMGET', KEYS[2], unpack(ARGV)),
  redis.call('TIME')}
"#;

/// A session's count, timestamps, generation, metadata and expiry, read in one atomic
/// step; a session whose expiry has passed is absent, even in the instant before Redis
/// drops its keys (`PEXPIREAT` is in whole ms, rounded up).
///
/// KEYS: list, meta. ARGV: `strict`, to fail on a key of another type as any command
/// would (`session_info`), `lenient`, to report it as `{-1}` (a listing skips it, as
/// `list_sessions` skips a foreign key), or `exists`, as `lenient` but returning only
/// `{length}`. Returns `{0}` for an absent session, else `{length, created_at,
/// updated_at, gen, owner, title, tags, data, expires_at, idle}` with `nil` for each
/// field the meta hash lacks. Reads the clock (`TIME`) only for a session with an expiry.
pub(super) const INFO: &str = r#"
local call = redis.pcall
if ARGV[1] == 'strict' then call = redis.call end
local len = call('LLEN', KEYS[1])
if type(len) == 'table' then return {-1} end
if len == 0 then return {0} end
local f = call('HMGET', KEYS[2], 'created_at', 'updated_at', 'gen', 'owner', 'title', 'tags',
  'data', 'expires_at', 'idle')
if f.err then return {-1} end
if f[8] and whole(f[8]) then
  local t = redis.call('TIME')
  if at_most(f[8], t[1] .. string.sub('00000' .. t[2], -6)) then return {0} end
end
if ARGV[1] == 'exists' then return {len} end
return {len, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]}
"#;

/// Up to `n` members of a ZSET scored by update time, newest first (ties: the greater
/// member first), strictly after a position.
///
/// KEYS: the ZSET. ARGV: the position's score (empty: start at the top), its member
/// (empty: the whole group at that score comes after it), and `n`. Returns members and
/// scores, alternating (`WITHSCORES`).
///
/// Keyset paging needs "at the same score, members below this one", which no single
/// command gives: `ZREVRANK` of the cursor's member does when it is still at the cursor's
/// score; when it moved or left since (written or deleted between two pages), the first
/// member of the group below it is found by bisection over the group's ranks, O(log n)
/// each. Members compare bytewise, as Redis orders them (Lua's `<` on strings follows the
/// server's locale).
pub(super) const WALK: &str = r#"
local key, score, member, n = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local function from(rank)
  return redis.call('ZRANGE', key, rank, rank + n - 1, 'REV', 'WITHSCORES')
end
if score == '' then return from(0) end
local above = redis.call('ZCOUNT', key, '(' .. score, '+inf')
if member == '' then return from(above) end
local at = redis.call('ZSCORE', key, member)
if at and tonumber(at) == tonumber(score) then
  return from(redis.call('ZREVRANK', key, member) + 1)
end
local function below(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local lo, hi = above, above + redis.call('ZCOUNT', key, score, score)
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  if below(redis.call('ZRANGE', key, mid, mid, 'REV')[1], member) then hi = mid else lo = mid + 1 end
end
return from(lo)
"#;

/// Sets a member's score if it still has the one a listing read, so a writer's newer
/// score is never undone by a repair based on an older read.
///
/// KEYS: the ZSET. ARGV: the member, the score as read (the text Redis replied), the new
/// score. Returns 1 if it changed the score, else 0.
pub(super) const REINDEX: &str = r#"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"#;

/// A prune on one server, in one atomic step: takes out of an index those of the ids
/// whose session is not there (as [`INFO`] reads it: no messages, a key of another type,
/// or its expiry passed) or, for an owner's index, belongs to another owner now. A writer
/// that creates a session again does so before or after the whole, never between a
/// removal and a second look, so a prune never unlists a session that is there, even one
/// that stops part way (a cluster needs look-again entries for that, `storage/forget.rs`).
///
/// KEYS: the index by id, the one by update time. ARGV: the key prefix, the owner (empty:
/// the index of every session), then the ids. Returns the ids kept.
pub(super) const PRUNE: &str = r#"
local prefix, owner = ARGV[1], ARGV[2]
local kept = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local len = redis.pcall('LLEN', prefix .. ':s:{' .. id .. '}')
  local there = type(len) == 'number' and len > 0
  local f = there and redis.pcall('HMGET', prefix .. ':m:{' .. id .. '}', 'owner', 'expires_at')
  if there and f.err then there = false end
  if there and f[2] and whole(f[2]) then
    local t = redis.call('TIME')
    if at_most(f[2], t[1] .. string.sub('00000' .. t[2], -6)) then there = false end
  end
  if there and owner ~= '' and f[1] ~= owner then there = false end
  if there then
    kept[#kept + 1] = id
  else
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  end
end
return kept
"#;
