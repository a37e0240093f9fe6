//! Exactly-once appends (issue #18): the window of a session's last message ids, kept in
//! its meta hash, with which the write script skips a message it already stored.
//!
//! The window is one field of the meta hash, `recent`: one entry of 4 characters per
//! message, oldest first, for the last `DEDUP_WINDOW` (64) messages that have an id: the
//! id's fingerprint ([`fingerprint`], 3 characters) and the message's position in the
//! list modulo 64 (1 character), each character one of the 64 from `0` to `o` (ASCII 48
//! to 111, 6 bits each). 256 bytes at most, where the ids themselves would take 2.4 KB
//! (UUIDv7s): Redis's Lua pays for every byte a script reads, searches or makes (it
//! hashes each string it creates), and every append that carries ids reads the window
//! and writes the next one. Measured with callgrind, a window of the ids themselves
//! doubled what such an append costs the server (see the README for what this one
//! costs).
//!
//! A fingerprint only says "maybe": the script checks each id of a batch with one plain
//! `string.find` over the window (an entry starts every 4 characters; a match elsewhere
//! does not count), and in the common case finds none, so it stores the batch. For a
//! message whose fingerprint it finds (a retry, or about one message in four thousand:
//! 18 bits against 64 entries), the entry's position names the one place among the
//! list's last 64 where that message would be, and the script reads it (`LINDEX`): the
//! message is stored already if the element there starts with the same `{"id":"..."`
//! (ids are serialised first). So the answer is exact, and a window left by another
//! history (a rewrite by an earlier release, which keeps no window; a list gone under
//! its meta hash) can make it read an element for nothing, never skip a message the
//! session does not hold. An entry of a message further back than the list's last 64
//! names the wrong place, and the message is stored again, as the contract allows.
//!
//! Keeping the window costs the common append no call of its own: the `HMGET` that reads
//! the generation reads it too, and the `HSET` of `updated_at` writes it back. The hash
//! shares the session's slot, TTL, expiry and lifetime, so every path that removes a
//! session (`DEL`, an expiry, a purge) removes its window with it.
//!
//! It holds at least the ids among the session's last `DEDUP_WINDOW` messages, which is
//! what the contract asks (`fusion_core::DEDUP_WINDOW`): an append whose batch carries
//! no id does no window work at all (it neither reads nor rolls it), which only keeps
//! older ids for longer; an append that carries ids rolls in those of the messages it
//! stored. A write that creates or replaces the session starts the window from its own
//! messages (the caller passes the fingerprints of the last `DEDUP_WINDOW`, and keeps a
//! window, empty if need be, whenever any message has an id), and a truncate rebuilds it
//! from the ids of the last `DEDUP_WINDOW` messages it keeps, read from their JSON, so
//! the ids it cut are forgotten.

/// The fingerprint of a message id in the window: the id's bytes as a polynomial in 31
/// modulo the prime 262139 (below 2^18), in three characters of 6 bits (`0` + each,
/// most significant first). The scripts compute the same (see [`FINGERPRINT`]) when a
/// truncate rebuilds a window from the list; a Lua number is a double, exact for every
/// intermediate value here (below 2^24).
pub(crate) fn fingerprint(id: &str) -> [u8; 3] {
    let hash = id
        .bytes()
        .fold(0u32, |hash, byte| (hash * 31 + u32::from(byte)) % 262_139);
    [12, 6, 0].map(|shift| b'0' + ((hash >> shift) & 63) as u8)
}

/// The Lua twin of [`fingerprint`], for the truncate only (every other write is given
/// its fingerprints by the caller).
pub(super) const FINGERPRINT: &str = r#"
local function fingerprint(id)
  local hash = 0
  for i = 1, #id do hash = (hash * 31 + string.byte(id, i)) % 262139 end
  return string.char(48 + math.floor(hash / 4096), 48 + math.floor(hash / 64) % 64, 48 + hash % 64)
end
"#;

/// `held(recent, fp, at)`, which finds an entry, and `roll(...)`, which makes the next
/// window: statements that make the two functions, pasted where `@WINDOW@` stands, after
/// `local held, roll`, in a branch that only the writes that use a window take (a
/// function costs every run that makes it; see `parts.rs`). Both take everything they
/// use as arguments, so their closures refer to no local of the script.
pub(super) const WINDOW: &str = r#"
  -- The position in `recent` of the first entry at or after `at` whose fingerprint is
  -- `fp`, or nil.
  held = function(recent, fp, at)
    at = string.find(recent, fp, at, true)
    while at and at % 4 ~= 1 do at = string.find(recent, fp, at + 1, true) end
    return at
  end
  -- The window after messages whose fingerprints are list[from..to] ('' for a message
  -- without an id) were stored at positions pos, pos + 1, ... behind those whose entries
  -- `recent` holds (false: none): the last @DEDUP_WINDOW@ entries. Built by
  -- concatenation rather than in a table, which costs more for the few entries of a turn.
  roll = function(recent, list, from, to, pos)
    local new, added = '', 0
    for i = to, from, -1 do
      if list[i] ~= '' then
        new = list[i] .. string.char(48 + (pos + i - from) % 64) .. new
        added = added + 1
        if added == @DEDUP_WINDOW@ then break end
      end
    end
    if not recent then return new end
    -- The characters of the oldest entries that no longer fit.
    local drop = #recent - 4 * (@DEDUP_WINDOW@ - added)
    if drop <= 0 then return recent .. new end
    return string.sub(recent, drop + 1) .. new
  end
"#;
