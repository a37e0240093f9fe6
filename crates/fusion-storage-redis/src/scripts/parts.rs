//! The Lua every write script starts with, in the order the scripts concatenate them:
//! checking arguments ([`COMMON`], [`DIGITS`]), the one clock reading and what is
//! computed from it ([`CLOCK`]), the TTL ([`TTL`]), removing an expired session
//! ([`DROP`]), the condition of a conditional write ([`CONDITION`]) and the indexes on
//! one server ([`INDEX`], [`UNINDEX`]).
//!
//! Each `local function` costs every run of the script a closure: about 400 instructions
//! of the server, and some 250 more for each local of the script it refers to (measured
//! with callgrind; an append costs about 100,000). So a script takes only the parts it
//! calls, and the functions on the common append's path refer to few outer locals.

/// Effect replication (implicit since Redis 5, needed before `TIME` on older servers;
/// asked for only before Redis 7), and the error reply of a bad argument.
pub(super) const COMMON: &str = r#"
-- Since Redis 5 effects are what replicates, and since 7 (which has REDIS_VERSION)
-- the call is deprecated, yet still costs about as much as a command.
if redis.replicate_commands and not redis.REDIS_VERSION then redis.replicate_commands() end
local function bad_arg(what, value)
  return redis.error_reply('ERR fusion: invalid ' .. what .. ' argument ' .. tostring(value) .. '; nothing was written')
end
"#;

/// Whole numbers as decimal strings: the scripts never turn one above 2^53 into a Lua
/// number (a double), which would round it.
pub(super) const DIGITS: &str = r#"
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

/// The server's clock, read once per script (`TIME`) into `clock` and `now` (ms, as a
/// decimal string: the seconds followed by the microseconds' first three of six digits;
/// joining strings costs the server less than arithmetic), and the expiry arithmetic on
/// it. Every time a script stores or compares comes from that one reading, so an idle
/// session's `expires_at` is exactly its `updated_at` (ms) plus its span (µs).
///
/// `expires_at` values are µs since the epoch, up to the year 9999 (beyond 2^53), so they
/// are compared as strings; the milliseconds Redis is told (rounded up, so the keys never
/// go before the instant) and `updated_at` plus a span of at most 100 years stay below
/// 2^53, where Lua's doubles are exact. `expiry()` takes the clock as an argument and
/// checks digits itself, so its closure refers to no local of the script.
pub(super) const CLOCK: &str = r#"
local clock = redis.call('TIME')
local now = clock[1] .. string.sub('00000' .. clock[2], -6, -4)
-- The expiry a write at `clock` leaves a session with, from the `expires_at` (µs) and
-- `idle` (µs) its meta hash holds or it is created with (either may be false): `false`,
-- its `expires_at` after the write (an idle one moves to the clock's ms plus its span)
-- and the ms Redis drops it, rounded up; only `true` if `check` and the stored instant
-- has passed; `false, false, false` for values Fusion did not write, which never expire
-- here (readers report them).
local function expiry(at, idle, check, clock)
  local function digits(text)
    return type(text) == 'string' and (text == '0' or string.match(text, '^[1-9]%d*$') ~= nil)
  end
  if check and digits(at) then
    local t = clock[1] .. string.sub('00000' .. clock[2], -6)
    local passed = #at < #t
    if #at == #t then
      passed = true
      for i = 1, #at do
        local a, b = string.byte(at, i), string.byte(t, i)
        if a ~= b then
          passed = a < b
          break
        end
      end
    end
    if passed then return true end
  end
  if idle then
    if not digits(idle) then return false, false, false end
    idle = string.rep('0', 4 - #idle) .. idle
    local ms = clock[1] .. string.sub('00000' .. clock[2], -6, -4)
    at = string.format('%.0f', tonumber(ms) + tonumber(string.sub(idle, 1, -4))) .. string.sub(idle, -3)
  elseif not digits(at) then
    return false, false, false
  end
  if #at <= 3 then
    if at == '0' then return false, at, '0' end
    return false, at, '1'
  end
  local ms = string.sub(at, 1, -4)
  if string.sub(at, -3) ~= '000' then ms = string.format('%.0f', tonumber(ms) + 1) end
  return false, at, ms
end
"#;

/// `ARGV[2]` of every script that sets a TTL is the TTL in ms, `0` for none. It must be
/// a whole number as Redis parses one (digits, no leading zero) and at most
/// `@MAX_TTL_MS@` (substituted from [`MAX_TTL`](crate::MAX_TTL)), which `RedisOptions`
/// already ensures; checked again here because a failing `PEXPIRE` would come after the
/// writes. It is handed to `PEXPIRE` as the string it arrived as: a Lua number would be
/// formatted in exponent notation above 10^17, which `PEXPIRE` refuses. Then
/// `read_meta()` and `touch()`.
///
/// A session with an expiry is the only one whose list carries a TTL when the storage
/// sets none (`touch()` sets it at every write), so there the list's `PTTL`, which
/// `touch()` needs anyway, says whether to read the expiry at all: a session without one
/// costs no call more than before expiries existed. With a TTL every session's list
/// carries one, and `expires_at` is a field more of the `HMGET`.
pub(super) const TTL: &str = r#"
local ttl_arg = ARGV[2]
if not (whole(ttl_arg) and at_most(ttl_arg, '@MAX_TTL_MS@')) then
  return bad_arg('TTL', ttl_arg)
end
-- The meta hash's `gen`, `owner`, `expires_at` and `idle` (the last two only if it has
-- an expiry), with `recent` (the window of exactly-once appends, `window.rs`) fifth when
-- asked for, read by the same HMGET; and the list's PTTL if it read it. HMGET fails on a
-- meta key of another type.
local function read_meta(ttl_arg, with_recent)
  local stored, pttl
  if ttl_arg == '0' then
    if with_recent then
      stored = redis.call('HMGET', KEYS[2], 'gen', 'owner', 'recent')
      stored[3], stored[5] = false, stored[3]
    else
      stored = redis.call('HMGET', KEYS[2], 'gen', 'owner')
    end
    pttl = redis.call('PTTL', KEYS[1])
    if pttl >= 0 then
      local more = redis.call('HMGET', KEYS[2], 'expires_at', 'idle')
      stored[3], stored[4] = more[1], more[2]
    end
  else
    if with_recent then
      stored = redis.call('HMGET', KEYS[2], 'gen', 'owner', 'expires_at', 'recent')
      stored[4], stored[5] = false, stored[4]
    else
      stored = redis.call('HMGET', KEYS[2], 'gen', 'owner', 'expires_at')
    end
    if stored[3] then stored[4] = redis.call('HGET', KEYS[2], 'idle') end
  end
  return stored, pttl
end
-- Sets when both keys go: at `due` (ms) for a session with an expiry, unless the TTL
-- comes first; else after the TTL; without either makes them persistent again. The
-- scripts give both keys the same expiry, so the list's (the messages, which must not
-- expire when nothing says so) tells whether there is any to remove; it is read before
-- the write, as a rewrite drops the list's (`pttl`, if read_meta() read it). `now` is
-- the script's time in ms.
local function touch(due, pttl, now)
  if due and not (ttl_arg ~= '0' and #ttl_arg < 16
      and tonumber(now) + tonumber(ttl_arg) < tonumber(due)) then
    redis.call('PEXPIREAT', KEYS[1], due)
    redis.call('PEXPIREAT', KEYS[2], due)
  elseif ttl_arg ~= '0' then
    redis.call('PEXPIRE', KEYS[1], ttl_arg)
    redis.call('PEXPIRE', KEYS[2], ttl_arg)
  elseif (pttl or redis.call('PTTL', KEYS[1])) >= 0 then
    redis.call('PERSIST', KEYS[1])
    redis.call('PERSIST', KEYS[2])
  end
end
"#;

/// Removes a session whose expiry has passed, as Redis would a moment later, so the
/// write that met it starts afresh: statements (not a function, whose closure every run
/// would pay for), pasted where `@DROP@` stands with `id`, `prefix` and `owner` in scope.
/// On one server (`KEYS[4]` given) its index entries go too, first: a `ZREM` on a key of
/// another type fails before anything is deleted. On a cluster the entries stay for a
/// listing or a purge to clear, as when Redis drops the keys. The expiry index entry is
/// the id, then `/` and the owner if any, as `keys.rs` builds it. Published as
/// `expired` (`notify.rs`).
pub(super) const DROP: &str = r#"
  if KEYS[4] then
    local entry = id
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
    if owner then
      entry = id .. '/' .. owner
      redis.call('ZREM', prefix .. ':owner:{' .. owner .. '}:ids', id)
      redis.call('ZREM', prefix .. ':owner:{' .. owner .. '}:updated', id)
    end
    redis.call('ZREM', prefix .. ':expiry', entry)
  end
  redis.call('DEL', KEYS[1], KEYS[2])
  --publish notify(prefix, 'expired', 0, 0, id)
"#;

/// `ARGV[3..=6]` of the message scripts are the condition: the fresh generation the
/// script gives the session if it creates or rewrites it (made by the client, so the
/// script stays deterministic), the expectation (`any`, `gen`, `exact`, or `before:`
/// and a whole number of ms up to 2^53: `exact` and last written before that ms), and
/// the expected generation and length (`0` where unused); `ARGV[7]` and `ARGV[8]` are the
/// session id and the key prefix. Generations are compared as the decimal strings they
/// are stored as, never as Lua numbers. A session whose list exists but whose meta has no
/// `gen` (stored before generations existed) is at `@LEGACY_GENERATION@`. Then `check()`.
pub(super) const CONDITION: &str = r#"
local fresh, expect, want_gen, want_len = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if not whole(fresh) or fresh == '0' or fresh == '@LEGACY_GENERATION@' then
  return bad_arg('generation', fresh)
end
if expect ~= 'any' and expect ~= 'gen' and expect ~= 'exact' then
  -- `before:` and a ms: `exact`, and the session not written in that ms or since.
  local ms = type(expect) == 'string' and string.match(expect, '^before:(.*)$')
  if not (whole(ms) and at_most(ms, '9007199254740992')) then
    return bad_arg('expectation', expect)
  end
end
if not (whole(want_gen) and whole(want_len)) then
  return bad_arg('expected revision', tostring(want_gen) .. '/' .. tostring(want_len))
end
-- The session's revision, owner and expiry now, and whether it is what the caller
-- expects: nil if so, else the reply that reports the conflict (and writes nothing but
-- the removal of an expired session, which is absent). Reading both keys also checks
-- their types: HMGET and LLEN fail on a key of another type. `stored` is the meta
-- hash's fields as read_meta() gives them. Also returns the session's `expires_at` after
-- a write now, the ms it is due and its idle span (see expiry()).
local function check(stored)
  local len = redis.call('LLEN', KEYS[1])
  local gen, owner, at, due, idle = '0', false, false, false, false
  if len > 0 then
    gen, owner = stored[1] or '@LEGACY_GENERATION@', stored[2]
    if stored[3] then
      local gone
      idle = stored[4] or false
      gone, at, due = expiry(stored[3], idle, true, clock)
      idle = at and idle
      if gone then
        local id, prefix = ARGV[7], ARGV[8]
@DROP@
        gen, owner, at, due, idle, len = '0', false, false, false, false, 0
      end
    end
  end
  local met = expect == 'any' or (gen == want_gen
      and (expect == 'gen' or gen == '0' or tonumber(want_len) == len))
  -- The one word longer than `exact` is `before:<ms>`, which also wants an existing
  -- session's `updated_at` (ms) below that ms: the one read no other expectation makes.
  -- One missing, or not a number (which readers take for missing too), is not recorded.
  -- Both are below 2^53, where Lua's doubles are exact. Inline, referring to no outer
  -- local check() did not already: each one more costs every write's closure.
  if met and #expect > 5 and gen ~= '0' then
    local updated = redis.call('HGET', KEYS[2], 'updated_at')
    met = not (updated and string.match(updated, '^%d+$'))
      or tonumber(updated) < tonumber(string.sub(expect, 8))
  end
  if met then return nil, gen, len, owner, at, due, idle end
  return {0, gen, len}, gen, len, owner, at, due, idle
end
"#;

/// The indexes on one server: `KEYS[3]` and `KEYS[4]` are those of every session (by
/// id, by update time), absent on a cluster, where these helpers do nothing. An owner's
/// two and the expiry index are named here as `keys.rs` names them (a key more in every
/// call would cost every append, for the few sessions with an expiry), and so is a
/// session's entry in the expiry index: its id, then `/` and its owner if any.
/// ([`UNINDEX`] is apart, for the scripts that do not call it.)
pub(super) const INDEX: &str = r#"
local indexed = KEYS[4] ~= nil
-- Scores the session at `now` in the by-update indexes, its owner's too; when `listed`,
-- also adds it to the by-id ones, which never move; with `due`, its expiry (ms) in the
-- expiry index.
local function index(prefix, id, owner, now, listed, due)
  if not indexed then return end
  redis.call('ZADD', KEYS[4], now, id)
  if listed then redis.call('ZADD', KEYS[3], 0, id) end
  if owner then
    local key = prefix .. ':owner:{' .. owner .. '}:'
    redis.call('ZADD', key .. 'updated', now, id)
    if listed then redis.call('ZADD', key .. 'ids', 0, id) end
  end
  if due then
    local entry = id
    if owner then entry = id .. '/' .. owner end
    redis.call('ZADD', prefix .. ':expiry', due, entry)
  end
end
"#;

/// Removing a session from the indexes on one server, after [`INDEX`]; `at` says it had
/// an expiry, so an entry in the expiry index.
pub(super) const UNINDEX: &str = r#"
local function unindex_owner(prefix, id, owner)
  if not (indexed and owner) then return end
  local key = prefix .. ':owner:{' .. owner .. '}:'
  redis.call('ZREM', key .. 'ids', id)
  redis.call('ZREM', key .. 'updated', id)
end
local function unindex(prefix, id, owner, at)
  if not indexed then return end
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  if at then
    local entry = id
    if owner then entry = id .. '/' .. owner end
    redis.call('ZREM', prefix .. ':expiry', entry)
  end
  unindex_owner(prefix, id, owner)
end
"#;
