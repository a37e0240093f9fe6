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
/// A `rewrite` is a replace that leaves an existing session's `updated_at`, expiry, index
/// entries and keys' expiry as they are (`Change::Rewrite`); on an absent session it is a
/// replace.
///
/// KEYS: list, meta, and on one server the indexes of every session by id and by update
/// time and the expiry index. ARGV: `replace`, `rewrite` or `append`, TTL in ms (0 = none), the
/// condition (see `CONDITION`), the session id, the key prefix, the number of metadata
/// fields `k`, then `k` field/value pairs (`owner`, `title`, `tags`, `data`, the expiry
/// as `expires_at` or `idle`, in µs, and the times of a copy, below: stored only when
/// this write creates the session, which is how `create_session` gives a session its
/// metadata in the same step as its first messages), then a number `n` and the
/// fingerprints of the last `n` messages' ids (`''` for a message without one; `n` is `0`
/// when no message has an id, else every message's for an append and the last
/// `DEDUP_WINDOW`'s for a replace), then the messages as JSON, id first: at least one to
/// replace, any number to append (none only checks).
///
/// Exactly once (`window.rs`): an append with ids to an existing session skips each
/// message it finds stored already (its fingerprint in the window, then its id at the
/// place the entry names), stores the rest in order and rolls the window; when it skips
/// all of them it writes nothing at all (as an append of none) and reports the session
/// as it is. A write that creates or replaces the session starts the window from its
/// fingerprints. Without ids (`n` = 0) none of this runs: not even the window's
/// functions are made.
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
/// A copy (`create_session_with_times`) gives the session it creates its `created_at`
/// and `updated_at` as pairs too, in ms: each is stored as given unless it is later than
/// the script's clock, which it is stored as then (and `created_at` never later than
/// `updated_at`). The session is then written at its `updated_at`: scored there in the
/// by-update indexes, its idle expiry counting from there (a copy idle longer than its
/// span is created expired, as a creation with an `expires_at` already past is: its keys
/// go at once and readers find nothing), while the storage's TTL counts from the clock,
/// when the keys are written. Only the creation reads them: an append passes no pairs.
///
/// The common append (`any`, with messages, on a session that has a generation) makes six
/// calls, seven for an owned session: `HMGET` of the generation and owner (and the
/// window, when the batch has ids), `PTTL` (which says whether it has an expiry to read;
/// see `TTL`), `TIME`, the `ZADD`s of the new `updated_at`, `RPUSH` (whose reply is the
/// length, so no `LLEN`), `HSET updated_at` (and the rolled window). One with an expiry
/// makes three more: the `HMGET` of it and a `PEXPIREAT` per key, and with an idle one a
/// fourth, the `ZADD` that moves its entry in the expiry index (a fixed expiry's entry
/// stays where the session's creation put it). A batch with a message whose fingerprint
/// the window holds (a retry) makes an `LLEN` (a list gone under its meta hash is a new
/// session, which stores all) and an `LINDEX` per such entry. A session without a
/// generation (a new one, or one stored before generations) takes the path that counts
/// its list first.
pub(super) const WRITE: &str = r#"
local mode, id, prefix, fields = ARGV[1], ARGV[7], ARGV[8], tonumber(ARGV[9])
-- `rewrite` is a replace that keeps an existing session's times (`keep`, once known).
local keep = mode == 'rewrite'
if keep then mode = 'replace' end
if mode ~= 'replace' and mode ~= 'append' then return bad_arg('mode', mode) end
if not fields or fields < 0 or fields % 1 ~= 0 or #ARGV < 10 + 2 * fields then
  return bad_arg('metadata count', ARGV[9])
end
-- The metadata pairs end at `pairs_end`; then come the number of fingerprints, the
-- fingerprints from `ids`, and the messages from `first`.
local pairs_end = 9 + 2 * fields
local n = ARGV[pairs_end + 1]
if n == '0' then
  n = 0
elseif whole(n) then
  n = tonumber(n)
else
  return bad_arg('fingerprint count', n)
end
local ids = pairs_end + 2
local first = ids + n
local count = #ARGV - first + 1
if count < n or (mode == 'append' and n > 0 and n < count) then
  return bad_arg('fingerprint count', n)
end
if mode == 'replace' and count < 1 then return bad_arg('message count', count) end
local held, roll
if n > 0 then
@WINDOW@
end
local new_owner, new_at, new_idle = false, false, false
-- A copy's creation and last write as given (ms), kept where it creates the session.
local new_created, new_updated
for i = 10, pairs_end, 2 do
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
  elseif field == 'created_at' or field == 'updated_at' then
    if not (whole(value) and at_most(value, '@LATEST_MILLIS@')) then return bad_arg(field, value) end
    if field == 'created_at' then new_created = value else new_updated = value end
  elseif field ~= 'title' and field ~= 'tags' and field ~= 'data' then
    return bad_arg('metadata field', field)
  end
end
-- Pushes list[from..to]. Lua's unpack() is limited to a few thousand values, so in
-- chunks; the script is atomic either way. Returns the length after.
local function push(list, from, to)
  local len
  for i = from, to, 1000 do
    len = redis.call('RPUSH', KEYS[1], unpack(list, i, math.min(i + 999, to)))
  end
  return len
end
local dedup = mode == 'append' and n > 0
-- `created` and `written` (ms) are a copy's times as the session keeps them; nil for a
-- write at `now`, as every other is.
local gen, owner, at, idle, due, before, stored, pttl, created, written = false, false, false, false, false
if mode == 'append' and expect == 'any' and count > 0 then
  -- Nothing to compare.
  stored, pttl = read_meta(ttl_arg, dedup)
  gen, owner, at, idle = stored[1], stored[2], stored[3] or false, stored[4] or false
  if at then
    local gone
    gone, at, due = expiry(at, idle, true, clock)
    idle = at and idle
    -- An expired session: check() below removes it and this write creates it anew.
    if gone then gen, stored = false, nil end
  end
end
-- `quick`: a session with a generation, whose length the push tells (`before` is nil
-- until then).
local quick = gen
if not quick then
  local conflict
  if not stored then stored, pttl = read_meta(ttl_arg, dedup) end
  conflict, gen, before, owner, at, due, idle = check(stored)
  if conflict then return conflict end
  if count == 0 then return {1, gen, before} end
  if before == 0 then
    keep = false
    owner, at, idle, due = new_owner, new_at, new_idle, false
    -- A copy is written at its last write, unless that is later than `now`; an idle
    -- expiry counts from there, so expiry() gets the clock reading TIME gave then.
    local written_clock = clock
    if new_updated and at_most(new_updated, now) then
      written = new_updated
      written_clock = {string.sub(written, 1, -4), string.sub(written, -3) .. '000'}
    end
    if new_created and at_most(new_created, written or now) then created = new_created end
    if at or idle then
      local _
      _, at, due = expiry(at, idle, false, written_clock)
      idle = at and idle
    end
  elseif keep then
    -- The instant as stored, not moved: the expiry index and the keys' expiry stay.
    local _
    _, at, due = expiry(stored[3], false, false, clock)
    idle = false
  end
end
-- What to push: the messages list[from..to], whose fingerprints are in fps from
-- fps_from; all of ARGV's unless some of them are stored already.
local list, from, to, fps, fps_from = ARGV, first, #ARGV, ARGV, ids
local recent = dedup and before ~= 0 and stored[5]
if recent then
  local suspect = false
  for i = ids, first - 1 do
    if ARGV[i] ~= '' and held(recent, ARGV[i], 1) then
      suspect = true
      break
    end
  end
  -- Only a retry (or a message in thousands) gets here: check each message whose
  -- fingerprint the window holds at the position its entry names (the largest below
  -- the length with that remainder modulo 64), where it would be. A list gone under its
  -- meta hash is a new session, which stores everything.
  if suspect and not before then before = redis.call('LLEN', KEYS[1]) end
  if suspect and before > 0 then
    local kept, kept_fps = {}, {}
    for i = 0, count - 1 do
      local fp, message, found = ARGV[ids + i], ARGV[first + i], false
      if fp ~= '' then
        local prefix = string.match(message, '^{"id":"[^"]*"')
        local entry = held(recent, fp, 1)
        while entry and not found do
          local place = before - 1 - (before - 1 - (string.byte(recent, entry + 3) - 48)) % 64
          local there = place >= 0 and redis.call('LINDEX', KEYS[1], place)
          found = there and string.sub(there, 1, #prefix) == prefix
          entry = held(recent, fp, entry + 4)
        end
      end
      if not found then
        kept[#kept + 1] = message
        kept_fps[#kept_fps + 1] = fp
      end
    end
    -- All stored already: nothing changes, not even the session's time.
    if #kept == 0 then return {1, gen, before} end
    list, from, to, fps, fps_from = kept, 1, #kept, kept_fps, 1
  end
end
local pushed = to - from + 1
-- A rewrite's list expiry (the instant, or the ms left), read before the list is
-- written anew; -1 for none.
local expire_kept, pttl_kept = -1, -1
if quick then
  -- Score the session (its expiry entry moves with an idle expiry only), then push
  -- (RPUSH fails on a list key of another type before writing), whose reply tells the
  -- length before.
  index(prefix, id, owner, now, false, idle and due)
  before = push(list, from, to) - pushed
  if before == 0 then
    -- Its list had vanished on its own, under a meta hash that outlived it: a new
    -- session after all, without that hash's owner or expiry, to be listed by id (after
    -- the push, the one index write that follows a session write).
    owner, at, idle, due = false, false, false, false
    if indexed then redis.call('ZADD', KEYS[3], 0, id) end
  end
else
  if keep then
    -- Already listed and scored where it stays; its keys' expiry is all to carry over:
    -- the instant itself where the server tells it (7.0), else what is left of it (a
    -- millisecond may slip between reading and setting it).
    local at_ms = redis.pcall('PEXPIRETIME', KEYS[1])
    if type(at_ms) == 'number' then
      expire_kept = at_ms
    else
      pttl_kept = redis.call('PTTL', KEYS[1])
    end
  else
    index(prefix, id, owner, written or now, before == 0 or mode == 'replace',
      (before == 0 or idle) and due)
  end
  if mode == 'replace' and before > 0 then
    redis.call('DEL', KEYS[1])
  end
  push(list, from, to)
end
-- The window of the history after this write.
local w = false
if n > 0 and (before == 0 or mode == 'replace') then
  w = roll(false, ARGV, ids, first - 1, count - n)
elseif n > 0 then
  w = roll(recent, fps, fps_from, fps_from + pushed - 1, before)
end
if keep then
  if w then
    redis.call('HSET', KEYS[2], 'gen', fresh, 'recent', w)
  else
    redis.call('HSET', KEYS[2], 'gen', fresh)
  end
  -- Both keys go when the list would have: the list is new, and a meta hash the HSET
  -- made (a session from before generations) has no expiry of its own. A key in its
  -- last millisecond (PTTL 0: time stands still in a script) goes now.
  if expire_kept >= 0 then
    redis.call('PEXPIREAT', KEYS[1], expire_kept)
    redis.call('PEXPIREAT', KEYS[2], expire_kept)
  elseif pttl_kept >= 0 then
    redis.call('PEXPIRE', KEYS[1], pttl_kept)
    redis.call('PEXPIRE', KEYS[2], pttl_kept)
  end
  gen = fresh
elseif before == 0 or mode == 'replace' then
  local set = {'gen', fresh, 'updated_at', written or now}
  if before == 0 then
    -- A new session has only the metadata it is created with, whatever a meta hash
    -- left behind by a vanished list held; a copy's times are set as kept, not given.
    redis.call('DEL', KEYS[2])
    set[5], set[6] = 'created_at', created or written or now
    for i = 10, pairs_end, 2 do
      if ARGV[i] ~= 'created_at' and ARGV[i] ~= 'updated_at' then
        set[#set + 1] = ARGV[i]
        set[#set + 1] = ARGV[i + 1]
      end
    end
  end
  if idle then
    set[#set + 1] = 'expires_at'
    set[#set + 1] = at
  end
  if w then
    set[#set + 1] = 'recent'
    set[#set + 1] = w
  end
  redis.call('HSET', KEYS[2], unpack(set))
  gen = fresh
elseif idle and w then
  redis.call('HSET', KEYS[2], 'updated_at', now, 'expires_at', at, 'recent', w)
elseif idle then
  redis.call('HSET', KEYS[2], 'updated_at', now, 'expires_at', at)
elseif w then
  redis.call('HSET', KEYS[2], 'updated_at', now, 'recent', w)
else
  redis.call('HSET', KEYS[2], 'updated_at', now)
end
if not keep then touch(due, pttl, now) end
local len = before + pushed
if mode == 'replace' then len = count end
--publish notify(prefix, before == 0 and 'created' or mode == 'replace' and 'replaced' or 'appended', gen, len, id)
--publish if due and tonumber(due) <= tonumber(now) then notify(prefix, 'expired', 0, 0, id) end
-- On one server the indexes are done, and a rewrite leaves them as they are: the caller
-- needs no more.
if indexed or keep then return {1, gen, len} end
return {1, gen, len, written or now, owner, (before == 0 or idle) and due}
"#;

/// Keeps the first messages of a session, if it meets the expectation.
///
/// KEYS: as [`WRITE`]. ARGV: the length to keep (`0` deletes both keys and unindexes the
/// session), TTL in ms (0 = none), the condition, the session id, the key prefix. Returns
/// what [`WRITE`] does (`{1, '0', 0, nil, owner, expires_at}` once deleted, on one server
/// too: `expires_at` says it had an entry in the expiry index), and `{1, generation,
/// length}` when it had nothing to remove (then it changes nothing, not even the TTL). A
/// truncate that removes messages gives the session the fresh generation and moves an
/// idle expiry, and rebuilds the window of exactly-once appends (`window.rs`)
/// from the ids of the last `DEDUP_WINDOW` messages it keeps, if the session has one.
pub(super) const TRUNCATE: &str = r#"
if not whole(ARGV[1]) then return bad_arg('length', ARGV[1]) end
local keep, id, prefix = tonumber(ARGV[1]), ARGV[7], ARGV[8]
local stored, pttl = read_meta(ttl_arg, true)
local conflict, gen, len, owner, at, due, idle = check(stored)
if conflict then return conflict end
if len <= keep then return {1, gen, len} end
if keep == 0 then
  unindex(prefix, id, owner, at)
  redis.call('DEL', KEYS[1], KEYS[2])
  --publish notify(prefix, 'deleted', 0, 0, id)
  return {1, '0', 0, false, owner, at}
end
local set = {'gen', fresh, 'updated_at', now}
if idle then
  set[#set + 1] = 'expires_at'
  set[#set + 1] = at
end
if stored[5] then
  -- The session holds ids: the window of what it keeps, from the ids at the start of
  -- its last messages' JSON.
  local from = math.max(keep - @DEDUP_WINDOW@, 0)
  local last = redis.call('LRANGE', KEYS[1], from, keep - 1)
  for i = 1, #last do
    local message_id = string.match(last[i], '^{"id":"([^"]+)"')
    last[i] = message_id and fingerprint(message_id) or ''
  end
  local held, roll
@WINDOW@
  set[#set + 1] = 'recent'
  set[#set + 1] = roll(false, last, 1, #last, from)
end
index(prefix, id, owner, now, false, idle and due)
redis.call('LTRIM', KEYS[1], 0, keep - 1)
redis.call('HSET', KEYS[2], unpack(set))
touch(due, pttl, now)
--publish notify(prefix, 'truncated', fresh, keep, id)
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
local deleted = redis.call('DEL', KEYS[1], KEYS[2])
--publish if deleted > 0 then notify(prefix, 'deleted', 0, 0, id) end
return {deleted, owner, at}
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
--publish notify(prefix, 'updated', f[3] or '@LEGACY_GENERATION@', len, id)
--publish if due and tonumber(due) <= tonumber(now) then notify(prefix, 'expired', 0, 0, id) end
return {len, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]}
"#;
