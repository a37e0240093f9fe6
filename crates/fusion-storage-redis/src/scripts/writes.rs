//! The Lua of the scripts that change a session: its messages (save, append, truncate),
//! its metadata, or its removal. Each runs after the prologue parts of `mod.rs` it names.
//!
//! Every one reads the keys it will write before writing anything (the first read of a
//! key of another type fails, so a foreign key stops the script before its first write),
//! then updates the indexes (on one server), then writes the session's keys: an index
//! entry may be ahead of the session for an instant, never behind it.
//!
//! Retention: each reads the session's `expires_at` and `idle` when it has an expiry
//! (`read_meta()`; the message scripts learn that from the `PTTL` they make anyway). A
//! session whose instant has passed is absent: the write removes what is left of it
//! (`DROP`) and goes on as on an absent session. A write that leaves a session with an
//! expiry moves an idle one to `updated_at` plus its span (`expiry()`), sets `PEXPIREAT`
//! on both keys (`touch()`) and, on one server, scores it in the expiry index; a session
//! without one pays none of this.

/// Replaces or extends a session, if it meets the expectation, and scores it in the
/// by-update indexes (and lists it in the by-id ones when it creates or replaces it).
///
/// KEYS: list, meta, and on one server the indexes of every session by id and by update
/// time and the expiry index. ARGV: `replace` or `append`, TTL in ms (0 = none), the
/// condition (see `CONDITION`), the session id, the key prefix, the number of metadata
/// fields `k`, then `k` field/value pairs (`owner`, `title`, `tags`, `data`, and the
/// expiry as `expires_at` or `idle`, in µs: stored only when this write creates the
/// session, which is how `create_session` gives a session its metadata in the same step
/// as its first messages), then the messages as JSON: at least one to replace, any number
/// to append (none only checks).
///
/// Returns `{1, generation, length}` after a write on one server (which has updated the
/// indexes) and when there was nothing to write, `{1, generation, length, updated_at,
/// owner, due}` after a write on a cluster (what the caller's index updates need; `due`
/// is the ms the session expires, rounded up, if the write moved its entry of the expiry
/// index: it created the session, or the expiry is idle), or `{0, generation, length}` as
/// found when the expectation failed. A write that creates the session (no
/// list yet, or an expired one) or replaces it gives it the fresh generation; an append
/// to an existing session keeps the one it has.
///
/// The common append (`any`, with messages, on a session that has a generation) makes six
/// calls, seven for an owned session: `HMGET` of the generation and owner, `PTTL` (which
/// says whether it has an expiry to read; see `TTL`), `TIME`, the `ZADD`s of the new
/// `updated_at`, `RPUSH` (whose reply is the length, so no `LLEN`), `HSET updated_at`.
/// One with an expiry makes three more: the `HMGET` of it and a `PEXPIREAT` per key, and
/// with an idle one a fourth, the `ZADD` that moves its entry in the expiry index (a
/// fixed expiry's entry stays where the session's creation put it). A session without a generation (a new one, or one
/// stored before generations) takes the path that counts its list first.
pub(super) const WRITE: &str = r#"
local mode, id, prefix, fields = ARGV[1], ARGV[7], ARGV[8], tonumber(ARGV[9])
if mode ~= 'replace' and mode ~= 'append' then return bad_arg('mode', mode) end
if not fields or fields < 0 or fields % 1 ~= 0 then return bad_arg('metadata count', ARGV[9]) end
local first = 10 + 2 * fields
local count = #ARGV - first + 1
if count < 0 then return bad_arg('metadata count', ARGV[9]) end
if mode == 'replace' and count < 1 then return bad_arg('message count', count) end
local new_owner, new_at, new_idle = false, false, false
for i = 10, first - 1, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if field == 'owner' then
    new_owner = value
  elseif field == 'expires_at' then
    if not (whole(value) and at_most(value, '@LATEST_MICROS@')) then return bad_arg('expiry', value) end
    new_at = value
  elseif field == 'idle' then
    if not (whole(value) and value ~= '0' and at_most(value, '@MAX_IDLE_MICROS@')) then
      return bad_arg('idle expiry', value)
    end
    new_idle = value
  elseif field ~= 'title' and field ~= 'tags' and field ~= 'data' then
    return bad_arg('metadata field', field)
  end
end
-- Lua's unpack() is limited to a few thousand values, so push in chunks; the script
-- is atomic either way. Returns the length after.
local function push()
  local len
  for i = first, #ARGV, 1000 do
    len = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  return len
end
local gen, owner, at, idle, due, before, stored, pttl = false, false, false, false, false
if mode == 'append' and expect == 'any' and count > 0 then
  -- Nothing to compare.
  stored, pttl = read_meta(ttl_arg)
  gen, owner, at, idle = stored[1], stored[2], stored[3] or false, stored[4] or false
  if at then
    local gone
    gone, at, due = expiry(at, idle, true, clock)
    idle = at and idle
    -- An expired session: check() below removes it and this write creates it anew.
    if gone then gen, stored = false, nil end
  end
end
if gen then
  -- A session with a generation: score it (its expiry entry moves with an idle expiry
  -- only), then push (RPUSH fails on a list key of another type before writing), whose
  -- reply tells the length before.
  index(prefix, id, owner, now, false, idle and due)
  before = push() - count
  if before == 0 then
    -- Its list had vanished on its own, under a meta hash that outlived it: a new
    -- session after all, without that hash's owner or expiry, to be listed by id (after
    -- the push, the one index write that follows a session write).
    owner, at, idle, due = false, false, false, false
    if indexed then redis.call('ZADD', KEYS[3], 0, id) end
  end
else
  local conflict
  if not stored then stored, pttl = read_meta(ttl_arg) end
  conflict, gen, before, owner, at, due, idle = check(stored)
  if conflict then return conflict end
  if count == 0 then return {1, gen, before} end
  if before == 0 then
    owner, at, idle, due = new_owner, new_at, new_idle, false
    if at or idle then
      local _
      _, at, due = expiry(at, idle, false, clock)
      idle = at and idle
    end
  end
  index(prefix, id, owner, now, before == 0 or mode == 'replace', (before == 0 or idle) and due)
  if mode == 'replace' and before > 0 then
    redis.call('DEL', KEYS[1])
  end
  push()
end
if before == 0 then
  -- A new session has only the metadata it is created with, whatever a meta hash left
  -- behind by a vanished list held.
  redis.call('DEL', KEYS[2])
  if idle then
    redis.call('HSET', KEYS[2], 'created_at', now, 'gen', fresh, 'updated_at', now,
      'expires_at', at, unpack(ARGV, 10, first - 1))
  else
    redis.call('HSET', KEYS[2], 'created_at', now, 'gen', fresh, 'updated_at', now,
      unpack(ARGV, 10, first - 1))
  end
  gen = fresh
elseif mode == 'replace' then
  if idle then
    redis.call('HSET', KEYS[2], 'gen', fresh, 'updated_at', now, 'expires_at', at)
  else
    redis.call('HSET', KEYS[2], 'gen', fresh, 'updated_at', now)
  end
  gen = fresh
elseif idle then
  redis.call('HSET', KEYS[2], 'updated_at', now, 'expires_at', at)
else
  redis.call('HSET', KEYS[2], 'updated_at', now)
end
touch(due, pttl, now)
local len = before + count
if mode == 'replace' then len = count end
-- On one server the indexes are done: the caller needs no more.
if indexed then return {1, gen, len} end
return {1, gen, len, now, owner, (before == 0 or idle) and due}
"#;

/// Keeps the first messages of a session, if it meets the expectation.
///
/// KEYS: as [`WRITE`]. ARGV: the length to keep (`0` deletes both keys and unindexes the
/// session), TTL in ms (0 = none), the condition, the session id, the key prefix. Returns
/// what [`WRITE`] does (`{1, '0', 0, nil, owner, expires_at}` once deleted, on one server
/// too: `expires_at` says it had an entry in the expiry index), and `{1, generation,
/// length}` when it had nothing to remove (then it changes nothing, not even the TTL). A
/// truncate that removes messages gives the session the fresh generation and moves an
/// idle expiry.
pub(super) const TRUNCATE: &str = r#"
if not whole(ARGV[1]) then return bad_arg('length', ARGV[1]) end
local keep, id, prefix = tonumber(ARGV[1]), ARGV[7], ARGV[8]
local stored, pttl = read_meta(ttl_arg)
local conflict, gen, len, owner, at, due, idle = check(stored)
if conflict then return conflict end
if len <= keep then return {1, gen, len} end
if keep == 0 then
  unindex(prefix, id, owner, at)
  redis.call('DEL', KEYS[1], KEYS[2])
  return {1, '0', 0, false, owner, at}
end
index(prefix, id, owner, now, false, idle and due)
redis.call('LTRIM', KEYS[1], 0, keep - 1)
if idle then
  redis.call('HSET', KEYS[2], 'gen', fresh, 'updated_at', now, 'expires_at', at)
else
  redis.call('HSET', KEYS[2], 'gen', fresh, 'updated_at', now)
end
touch(due, pttl, now)
if indexed then return {1, fresh, keep} end
return {1, fresh, keep, now, owner, idle and due}
"#;

/// Deletes a session and, on one server, unindexes it.
///
/// KEYS: as [`WRITE`]. ARGV: the session id, the key prefix. Returns `{keys deleted,
/// owner, expires_at}`, `expires_at` set when the session had an expiry (so an entry in
/// the expiry index). Whatever holds the session's keys is deleted, foreign values
/// included (as `DEL` always did); a meta key of another type just has no owner to
/// unindex.
pub(super) const DELETE: &str = r#"
local id, prefix = ARGV[1], ARGV[2]
local found = redis.pcall('HMGET', KEYS[2], 'owner', 'expires_at')
local owner, at = false, false
if not found.err then owner, at = found[1], found[2] end
unindex(prefix, id, owner, at)
return {redis.call('DEL', KEYS[1], KEYS[2]), owner, at}
"#;

/// Replaces a session's metadata fields if they still hold what the caller read: the
/// compare-and-set half of `update_session`, which applies and validates the change in
/// Rust (so the rules live in one place, `fusion_core::SessionMeta::validate`).
///
/// KEYS: as [`WRITE`]. ARGV: the session id, TTL in ms, the key prefix, then `owner`,
/// `title`, `tags` and `data` as read, then the same four to store, each `-` for absent
/// or `+` followed by the value, then the expiry: `keep` (an idle one moves, as at every
/// write), `none`, or `expires_at` or `idle` followed by its µs. Returns `{0}` if the
/// session does not exist (or has expired: then what is left of it is removed), `{-1}`
/// if a field changed since it was read (nothing written), else what [`INFO`] returns
/// after the write, which moved `updated_at`, the indexes and the TTL like any write.
///
/// [`INFO`]: super::reads::INFO
pub(super) const UPDATE: &str = r#"
local id, prefix, kind, value = ARGV[1], ARGV[3], ARGV[12], ARGV[13]
for i = 4, 11 do
  local v = ARGV[i]
  if v ~= '-' and string.sub(v, 1, 1) ~= '+' then return bad_arg('metadata', v) end
end
if kind == 'expires_at' then
  if not (whole(value) and at_most(value, '@LATEST_MICROS@')) then return bad_arg('expiry', value) end
elseif kind == 'idle' then
  if not (whole(value) and value ~= '0' and at_most(value, '@MAX_IDLE_MICROS@')) then
    return bad_arg('idle expiry', value)
  end
elseif kind ~= 'keep' and kind ~= 'none' then
  return bad_arg('expiry kind', kind)
end
local len = redis.call('LLEN', KEYS[1])
if len == 0 then return {0} end
local fields = {'owner', 'title', 'tags', 'data'}
local found = redis.call('HMGET', KEYS[2], 'owner', 'title', 'tags', 'data', 'expires_at', 'idle')
if found[5] and expiry(found[5], false, true, clock) then
  local owner = found[1]
@DROP@
  return {0}
end
for i = 1, 4 do
  local had = '-'
  if found[i] then had = '+' .. found[i] end
  if had ~= ARGV[3 + i] then return {-1} end
end
local old, new = found[1], false
if ARGV[8] ~= '-' then new = string.sub(ARGV[8], 2) end
local at, idle, due = found[5], found[6], false
if kind == 'none' then
  at, idle = false, false
elseif kind == 'expires_at' then
  at, idle = value, false
elseif kind == 'idle' then
  idle = value
end
if at or idle then
  local _
  _, at, due = expiry(at, idle, false, clock)
  idle = at and idle
end
if old ~= new then
  unindex_owner(prefix, id, old)
  index(prefix, id, new, now, true, due)
else
  index(prefix, id, new, now, false, due)
end
if indexed and found[5] and (old ~= new or not due) then
  -- The entry of the expiry index the session had, which is not its entry now.
  local entry = id
  if old then entry = id .. '/' .. old end
  redis.call('ZREM', prefix .. ':expiry', entry)
end
local set, gone = {'updated_at', now}, {}
for i = 1, 4 do
  local v = ARGV[7 + i]
  if v == '-' then
    gone[#gone + 1] = fields[i]
  else
    set[#set + 1] = fields[i]
    set[#set + 1] = string.sub(v, 2)
  end
end
if at then
  set[#set + 1] = 'expires_at'
  set[#set + 1] = at
elseif found[5] then
  gone[#gone + 1] = 'expires_at'
end
if idle then
  set[#set + 1] = 'idle'
  set[#set + 1] = idle
elseif found[6] then
  gone[#gone + 1] = 'idle'
end
redis.call('HSET', KEYS[2], unpack(set))
if #gone > 0 then redis.call('HDEL', KEYS[2], unpack(gone)) end
-- Read before touch(): an expiry already past removes the keys at once.
local f = redis.call('HMGET', KEYS[2], 'created_at', 'updated_at', 'gen', 'owner', 'title',
  'tags', 'data', 'expires_at', 'idle')
touch(due, nil, now)
return {len, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]}
"#;
