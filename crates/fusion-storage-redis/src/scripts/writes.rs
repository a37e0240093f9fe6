//! The Lua of the scripts that change a session: its messages (save, append, truncate),
//! its metadata, or its removal. Each runs after the prologue parts of `mod.rs` it names.
//!
//! Every one reads the keys it will write before writing anything (the first read of a
//! key of another type fails, so a foreign key stops the script before its first write),
//! then updates the indexes (on one server), then writes the session's keys: an index
//! entry may be ahead of the session for an instant, never behind it.

/// Replaces or extends a session, if it meets the expectation, and scores it in the
/// by-update indexes (and lists it in the by-id ones when it creates or replaces it).
///
/// KEYS: list, meta, and on one server the indexes of every session by id and by update
/// time. ARGV: `replace` or `append`, TTL in ms (0 = none), the condition (see
/// `CONDITION`), the session id, the key prefix, the number of metadata fields `k`, then
/// `k` field/value pairs (`owner`, `title`, `tags`, `data`: stored only when this write
/// creates the session, which is how `create_session` gives a session its metadata in the
/// same step as its first messages), then the messages as JSON: at least one to replace,
/// any number to append (none only checks).
///
/// Returns `{1, generation, length}` after a write on one server (which has updated the
/// indexes) and when there was nothing to write, `{1, generation, length, updated_at,
/// owner}` after a write on a cluster (what the caller's index updates need), or `{0,
/// generation, length}` as found when the expectation failed. A write that creates the session (no list yet) or replaces it
/// gives it the fresh generation; an append to an existing session keeps the one it has.
///
/// The common append (`any`, with messages, on a session that has a generation) makes six
/// calls, seven for an owned session: `HMGET` of the generation and owner, `TIME`, the
/// `ZADD`s of the new `updated_at`, `RPUSH` (whose reply is the length, so no `LLEN`),
/// `HSET updated_at`, `PTTL`. A session without a generation (a new one, or one stored
/// before generations) takes the path that counts its list first.
pub(super) const WRITE: &str = r#"
local mode, id, prefix, fields = ARGV[1], ARGV[7], ARGV[8], tonumber(ARGV[9])
if mode ~= 'replace' and mode ~= 'append' then return bad_arg('mode', mode) end
if not fields or fields < 0 or fields % 1 ~= 0 then return bad_arg('metadata count', ARGV[9]) end
local first = 10 + 2 * fields
local count = #ARGV - first + 1
if count < 0 then return bad_arg('metadata count', ARGV[9]) end
if mode == 'replace' and count < 1 then return bad_arg('message count', count) end
local new_owner = false
for i = 10, first - 1, 2 do
  local field = ARGV[i]
  if field == 'owner' then
    new_owner = ARGV[i + 1]
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
local gen, owner, before, now, stored
if mode == 'append' and expect == 'any' and count > 0 then
  -- Nothing to compare. HMGET fails on a meta key of another type.
  stored = redis.call('HMGET', KEYS[2], 'gen', 'owner')
  gen, owner = stored[1], stored[2]
end
if gen then
  -- A session with a generation: score it, then push (RPUSH fails on a list key of
  -- another type before writing), whose reply tells the length before.
  now = now_ms()
  index(prefix, id, owner, now, false)
  before = push() - count
  if before == 0 then
    -- Its list had vanished on its own, under a meta hash that outlived it: a new
    -- session after all, without that hash's owner, to be listed by id (after the push,
    -- the one index write that follows a session write).
    owner = false
    if indexed then redis.call('ZADD', KEYS[3], 0, id) end
  end
else
  local conflict
  conflict, gen, before, owner = check(stored)
  if conflict then return conflict end
  if count == 0 then return {1, gen, before} end
  if before == 0 then owner = new_owner end
  now = now_ms()
  index(prefix, id, owner, now, before == 0 or mode == 'replace')
  if mode == 'replace' and before > 0 then
    redis.call('DEL', KEYS[1])
  end
  push()
end
if before == 0 then
  -- A new session has only the metadata it is created with, whatever a meta hash left
  -- behind by a vanished list held.
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'created_at', now, 'gen', fresh, 'updated_at', now,
    unpack(ARGV, 10, first - 1))
  gen = fresh
elseif mode == 'replace' then
  redis.call('HSET', KEYS[2], 'gen', fresh, 'updated_at', now)
  gen = fresh
else
  redis.call('HSET', KEYS[2], 'updated_at', now)
end
touch()
local len = before + count
if mode == 'replace' then len = count end
-- On one server the indexes are done: the caller needs no more.
if indexed then return {1, gen, len} end
return {1, gen, len, now, owner}
"#;

/// Keeps the first messages of a session, if it meets the expectation.
///
/// KEYS: as [`WRITE`]. ARGV: the length to keep (`0` deletes both keys and unindexes the
/// session), TTL in ms (0 = none), the condition, the session id, the key prefix. Returns
/// what [`WRITE`] does (`{1, '0', 0, nil, owner}` once deleted, on one server too), and
/// `{1, generation, length}` when it had nothing to remove (then it changes nothing, not
/// even the TTL). A truncate that removes messages gives the session the fresh generation.
pub(super) const TRUNCATE: &str = r#"
if not whole(ARGV[1]) then return bad_arg('length', ARGV[1]) end
local keep, id, prefix = tonumber(ARGV[1]), ARGV[7], ARGV[8]
local conflict, gen, len, owner = check()
if conflict then return conflict end
if len <= keep then return {1, gen, len} end
if keep == 0 then
  unindex(prefix, id, owner)
  redis.call('DEL', KEYS[1], KEYS[2])
  return {1, '0', 0, false, owner}
end
local now = now_ms()
index(prefix, id, owner, now, false)
redis.call('LTRIM', KEYS[1], 0, keep - 1)
redis.call('HSET', KEYS[2], 'gen', fresh, 'updated_at', now)
touch()
if indexed then return {1, fresh, keep} end
return {1, fresh, keep, now, owner}
"#;

/// Deletes a session and, on one server, unindexes it.
///
/// KEYS: as [`WRITE`]. ARGV: the session id, the key prefix. Returns `{keys deleted,
/// owner}`. Whatever holds the session's keys is deleted, foreign values included (as
/// `DEL` always did); a meta key of another type just has no owner to unindex.
pub(super) const DELETE: &str = r#"
local id, prefix = ARGV[1], ARGV[2]
local owner = redis.pcall('HGET', KEYS[2], 'owner')
if type(owner) ~= 'string' then owner = false end
unindex(prefix, id, owner)
return {redis.call('DEL', KEYS[1], KEYS[2]), owner}
"#;

/// Replaces a session's metadata fields if they still hold what the caller read: the
/// compare-and-set half of `update_session`, which applies and validates the change in
/// Rust (so the rules live in one place, `fusion_core::SessionMeta::validate`).
///
/// KEYS: as [`WRITE`]. ARGV: the session id, TTL in ms, the key prefix, then `owner`,
/// `title`, `tags` and `data` as read, then the same four to store, each `-` for absent
/// or `+` followed by the value. Returns `{0}` if the session does not exist, `{-1}` if a
/// field changed since it was read (nothing written), else what [`INFO`] returns after
/// the write, which moved `updated_at`, the indexes and the TTL like any write.
///
/// [`INFO`]: super::reads::INFO
pub(super) const UPDATE: &str = r#"
local id, prefix = ARGV[1], ARGV[3]
for i = 4, 11 do
  local value = ARGV[i]
  if value ~= '-' and string.sub(value, 1, 1) ~= '+' then return bad_arg('metadata', value) end
end
local len = redis.call('LLEN', KEYS[1])
if len == 0 then return {0} end
local fields = {'owner', 'title', 'tags', 'data'}
local found = redis.call('HMGET', KEYS[2], 'owner', 'title', 'tags', 'data')
for i = 1, 4 do
  local had = '-'
  if found[i] then had = '+' .. found[i] end
  if had ~= ARGV[3 + i] then return {-1} end
end
local old, new = found[1], false
if ARGV[8] ~= '-' then new = string.sub(ARGV[8], 2) end
local now = now_ms()
if old ~= new then
  unindex_owner(prefix, id, old)
  index(prefix, id, new, now, true)
else
  index(prefix, id, new, now, false)
end
local set, gone = {'updated_at', now}, {}
for i = 1, 4 do
  local value = ARGV[7 + i]
  if value == '-' then
    gone[#gone + 1] = fields[i]
  else
    set[#set + 1] = fields[i]
    set[#set + 1] = string.sub(value, 2)
  end
end
redis.call('HSET', KEYS[2], unpack(set))
if #gone > 0 then redis.call('HDEL', KEYS[2], unpack(gone)) end
touch()
local f = redis.call('HMGET', KEYS[2], 'created_at', 'updated_at', 'gen', 'owner', 'title', 'tags', 'data')
return {len, f[1], f[2], f[3], f[4], f[5], f[6], f[7]}
"#;
