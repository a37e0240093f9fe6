//! The Lua of `purge_expired`: the expiry index (`PREFIX:expiry`, see `keys.rs`) names
//! the sessions that have an expiry, scored by the millisecond they expire; a purge takes
//! those whose score has passed and removes each session that is still expired.
//!
//! On one server [`PURGE`] does a batch in one atomic step, reaching each session's keys
//! and its owner's indexes by name (a server without slots allows that). On a cluster
//! the expiry index and each session live in different slots, so the client claims the
//! due entries with [`CLAIM`], removes each session with [`PURGE_ONE`] on its own slot,
//! then updates the indexes itself (`storage/retention.rs`).

/// `sweep(list, meta)`: removes what is left of the session with these keys if it is
/// expired (its list is gone, or its `expires_at` has passed) and returns `true` and the
/// owner its meta hash named; for a live session returns `false`, its owner and its
/// `expires_at`, and changes nothing. A key of another type where a session's key goes
/// is no session, and is left alone.
pub(super) const SWEEP: &str = r#"
local function sweep(list, meta)
  local len = redis.pcall('LLEN', list)
  if type(len) ~= 'number' then len = 0 end
  local found = redis.pcall('HMGET', meta, 'expires_at', 'owner')
  local foreign = found.err ~= nil
  if foreign then found = {false, false} end
  if len > 0 and not (found[1] and expiry(found[1], false, true, clock)) then
    return false, found[2], found[1]
  end
  if len > 0 then redis.call('DEL', list) end
  if not foreign then redis.call('DEL', meta) end
  return true, found[2], false
end
"#;

/// Purges up to a batch of expired sessions on one server, in one atomic step.
///
/// KEYS: the indexes of every session by id and by update time, the expiry index. ARGV:
/// the key prefix, how many entries of the expiry index to look at. Takes that many
/// entries due by the server's clock; for each, a session still expired is removed with
/// every index entry it has (of every session, of the owner its entry names and of the
/// owner its meta hash names), and counted once; a live one (written again since it
/// expired) is kept, its entry replaced by the one its meta hash calls for, if any, at a
/// score after now. Returns `{sessions purged, entries looked at}`: fewer entries than
/// asked means none is due any more.
pub(super) const PURGE: &str = r#"
local prefix, limit = ARGV[1], tonumber(ARGV[2])
if not (whole(ARGV[2]) and limit > 0) then return bad_arg('batch', ARGV[2]) end
local due = redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
local purged, seen = 0, {}
local function unlist(id, owner)
  local key = prefix .. ':owner:{' .. owner .. '}:'
  redis.call('ZREM', key .. 'ids', id)
  redis.call('ZREM', key .. 'updated', id)
end
for _, entry in ipairs(due) do
  local id, owner = entry, false
  local slash = string.find(entry, '/', 1, true)
  if slash then id, owner = string.sub(entry, 1, slash - 1), string.sub(entry, slash + 1) end
  redis.call('ZREM', KEYS[3], entry)
  local gone, now_owner, at = sweep(prefix .. ':s:{' .. id .. '}', prefix .. ':m:{' .. id .. '}')
  if gone then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    if owner then unlist(id, owner) end
    if now_owner and now_owner ~= owner then unlist(id, now_owner) end
    if not seen[id] then
      seen[id] = true
      purged = purged + 1
      --publish notify(prefix, 'expired', 0, 0, id)
    end
  elseif at then
    local _, _, score = expiry(at, false, false, clock)
    if now_owner then id = id .. '/' .. now_owner end
    if score then redis.call('ZADD', KEYS[3], score, id) end
  end
end
return {purged, #due}
"#;

/// Removes one session if it is still expired, on its own slot (a cluster's purge).
///
/// KEYS: list, meta. ARGV: the key prefix, the session id, `1` when a sweep of this
/// purge (a round that failed after it) published the session's `expired` already, and
/// `0` otherwise. Returns `{1, owner}` once removed (or found gone), `{0, owner}` for a
/// live session, untouched; the owner is the one its meta hash named.
pub(super) const PURGE_ONE: &str = r#"
local gone, owner = sweep(KEYS[1], KEYS[2])
if gone then
  --publish if ARGV[3] ~= '1' then notify(ARGV[1], 'expired', 0, 0, ARGV[2]) end
  return {1, owner or false}
end
return {0, owner or false}
"#;

/// The entries of the expiry index due by this server's clock, claimed (a cluster's
/// purge): each is scored `lease` ms from now, so a purge running beside this one does
/// not get it while this one sweeps its session, and each session is swept, counted and
/// its expiry published by one purge. Claimed, not taken out: a claim whose purge never
/// finishes (its process killed, the release failing) leaves the entries to come due
/// again when the lease ends; a purge that fails where it sees it releases them
/// ([`CLAIMED`]). The caller removes the entries of the sessions it purged and scores
/// again those of live ones (`forget`).
///
/// The claimer's record (a LIST in the expiry index's slot, for the lease) names what it
/// claimed, and a claim by the same claimer returns those of them it still holds (at
/// its token: not scored since by a writer, released, nor claimed by another; how many
/// it asks for at most), leases every one it holds and the record anew, and claims
/// nothing more, or claims afresh when it holds none: a
/// `CLAIM` sent again after its reply was lost (or by the round after one whose claim
/// stood unknown to it) finds the entries its first copy leased, which no longer are
/// due, where it found none of them and left them leased to nobody for the whole lease.
/// The caller deletes the record once its round is done.
///
/// The lease ends a fraction of a millisecond past a whole one, the claimer's token
/// ([`TOKEN`]): writers score whole ms, so an entry still at that fraction is one no
/// writer scored since this claim, nor another claimer since ([`CLAIMED`]).
///
/// KEYS: the expiry index, the claimer's record. ARGV: how many at most, the lease in ms,
/// the claimer's id (see [`TOKEN`]). Returns `{now in ms, {members}, {held}}`: `held`
/// those of the members that were at its token already (all of those it still holds; of
/// a fresh claim, those of an earlier claim of it whose lease ended, which no writer
/// scored since). A key of another type where the record goes is no record, and is left
/// alone.
pub(super) const CLAIM: &str = r#"
local id = tonumber(ARGV[3])
local function mine(score)
  local fraction = score % 1
  return fraction ~= 0 and fraction == token(score - fraction, id)
end
local held = redis.pcall('LRANGE', KEYS[2], 0, -1)
local recorded = held.err == nil
if not recorded then held = {} end
local leased = now + tonumber(ARGV[2])
leased = leased + token(leased, id)
local kept = {}
for _, member in ipairs(held) do
  local score = redis.call('ZSCORE', KEYS[1], member)
  if score and mine(tonumber(score)) then kept[#kept + 1] = member end
end
if #kept > 0 then
  -- Leased anew, every one: taken up late in its lease, the round would otherwise lose
  -- them to another purge part way, which would sweep, count and publish them again.
  for _, member in ipairs(kept) do redis.call('ZADD', KEYS[1], 'XX', leased, member) end
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  -- At most as many as asked (a claim taken up may be a larger purge's): the rest stay
  -- held, for the claimer's next claim.
  for i = #kept, tonumber(ARGV[1]) + 1, -1 do kept[i] = nil end
  return {now, kept, kept}
end
local found = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]), 'WITHSCORES')
local due, still = {}, {}
for i = 1, #found, 2 do
  due[#due + 1] = found[i]
  if mine(tonumber(found[i + 1])) then still[#still + 1] = found[i] end
end
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', leased, member) end
if recorded then
  redis.call('DEL', KEYS[2])
  if #due > 0 then
    redis.call('RPUSH', KEYS[2], unpack(due))
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
end
return {now, due, still}
"#;

/// What a cluster's `forget` (after a purge or a delete) and a failed purge do to
/// entries of the expiry index that may name a live session, so that a failure at any
/// step loses none: an entry is claimed first (`claim`: scored its whole score plus the
/// claimer's token, a fraction of a ms ([`TOKEN`]), unless it is at a fraction already,
/// as [`CLAIM`] leaves it), the sessions are read again, and only then does an entry still
/// claimed by this claimer go (`drop`) or, when the purge failed, come due again (a whole
/// score in ms: released to it). A writer's `ZADD` (a whole ms) in between unclaims the
/// entry, which then stays as the writer left it; one at another fraction is another
/// claimer's (a purge's lease, another delete's `forget`), left to it: taking it would
/// drop or release an entry whose claimer may yet find its session live. Sent twice,
/// each action does what it did once, whoever claimed or wrote between the two (but for
/// what `+ms` returns, below).
///
/// A delete (or a prune) also adds its look-again entries (`keys::look_again_member`)
/// with `+ms`: each absent one scored that many ms after the server's now, claimed (a
/// whole lease, so that a purge takes it only once that delete should have dropped it,
/// and finishes its second look for it if it did not); one there already (this action
/// sent again) is left as it is. It also takes up due look-again entries (at most
/// [`TAKE_UP`], among at most [`TAKE_UP_SCAN`] due entries: every due one when there are
/// no more, else a window of them at a rank picked by the claimer's id), left by deletes
/// and prunes that stopped: leased to this claimer like its own, and returned, for the
/// caller's second look to finish and drop, so that a store whose purge never runs (one
/// without expiring sessions, whose index holds nothing else) does not keep them. Due
/// entries of another kind (of expired sessions no purge removed yet, which only a purge
/// may remove: it counts and publishes them) are skipped, not a wall: those at the head
/// no longer stop every take-up until a purge runs. Sent again (its first entry there
/// already), `+ms` takes up nothing, so a call however often sent, its replies lost,
/// leases at most [`TAKE_UP`]: those its first copy took up stay leased to this claimer,
/// due again a lease later.
///
/// KEYS: the expiry index. ARGV: `claim`, `drop`, `+ms` or the score to release to, the
/// claimer's id (see [`TOKEN`]), then the members. An absent member is left absent, but
/// for `+ms`. Returns the entries `+ms` took up, nothing otherwise.
pub(super) const CLAIMED: &str = r#"
local action, id = ARGV[1], tonumber(ARGV[2])
local after = string.match(action, '^%+(%d+)$')
if after then
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  local at = now + tonumber(after)
  at = at + token(at, id)
  local taken = {}
  -- A copy sent again (its first entry is there: its first copy added them) takes up
  -- nothing: each copy whose reply is lost would lease more.
  local again = ARGV[3] and redis.call('ZSCORE', KEYS[1], ARGV[3])
  -- The due entries are the index's first ranks: all of them looked at when few, else a
  -- window of them at a rank the claimer's id picks; entries of another kind skipped.
  local due = redis.call('ZCOUNT', KEYS[1], '-inf', now)
  if due > 0 and not again then
    local first = 0
    if due > @TAKE_UP_SCAN@ then first = id % (due - @TAKE_UP_SCAN@ + 1) end
    local last = math.min(first + @TAKE_UP_SCAN@, due) - 1
    for _, member in ipairs(redis.call('ZRANGE', KEYS[1], first, last)) do
      if #taken == @TAKE_UP@ then break end
      if string.sub(member, 1, 1) == '!' then
        redis.call('ZADD', KEYS[1], 'XX', at, member)
        taken[#taken + 1] = member
      end
    end
  end
  for i = 3, #ARGV do redis.call('ZADD', KEYS[1], 'NX', at, ARGV[i]) end
  return taken
end
for i = 3, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score then
    score = tonumber(score)
    local fraction = score % 1
    local mine = fraction ~= 0 and fraction == token(score - fraction, id)
    if action == 'claim' then
      if fraction == 0 then redis.call('ZADD', KEYS[1], score + token(score, id), ARGV[i]) end
    elseif mine and action == 'drop' then
      redis.call('ZREM', KEYS[1], ARGV[i])
    elseif mine then
      redis.call('ZADD', KEYS[1], action, ARGV[i])
    end
  end
end
"#;

/// How many due look-again entries one `+ms` of [`CLAIMED`] takes up at most: each
/// costs its caller's second look one session read more, side by side with the others.
pub(super) const TAKE_UP: usize = 8;

/// How many due entries of the expiry index one `+ms` of [`CLAIMED`] looks at for those
/// to take up: a bound on the script's time, however many expired sessions wait for a
/// purge.
pub(super) const TAKE_UP_SCAN: usize = 64;

/// `token(whole, id)`: the fraction of a ms past `whole` (a score of the expiry index, in
/// ms) that the claimer `id` claims it at ([`CLAIM`], [`CLAIMED`]): `k / 2^bits` with `k`
/// from 1 to `2^bits - 1` picked by the id, `bits` as many as a double holds past
/// `whole` exactly, at most 16 (and at least 4, exact below 2^49 ms). Twelve for the
/// scores of today (2^40 to 2^41 ms: the years 2004 to 2039; eleven to 2109), so two
/// claimers of random ids share a token about once in 4,000 times; five for those of the
/// year 9999 (below 2^48 ms), once in 31. Exact arithmetic: `whole` and
/// `whole + k / 2^bits` are doubles, and a score read back (`ZSCORE`, printed to
/// round-trip) is the double stored, its whole part the `whole` it was claimed at.
pub(super) const TOKEN: &str = r#"
local function token(whole, id)
  local _, exponent = math.frexp(whole)
  local bits = math.min(math.max(53 - exponent, 4), 16)
  local span = 2 ^ bits
  return (id % (span - 1) + 1) / span
end
"#;

#[cfg(test)]
mod tests {
    use redis::Script;

    use super::{TAKE_UP, TAKE_UP_SCAN};
    use crate::scripts::CLAIMED;
    use crate::scripts::tests::{prefix, server};

    /// The expiry index at `key` made anew with `due` due entries, rank `r` scored
    /// `r` s after a time long past: look-again entries (`!`) at rank 5 and at ranks 70
    /// to 79, entries of expired sessions elsewhere. Returns the members by rank.
    fn fill(conn: &mut redis::Connection, key: &str, due: usize) -> Vec<String> {
        let _: () = redis::cmd("DEL").arg(key).query(conn).unwrap();
        let members: Vec<String> = (0..due)
            .map(|r| match r {
                5 => "!head/1".to_string(),
                70..80 => format!("!s{r}/1"),
                _ => format!("e{r}"),
            })
            .collect();
        for (r, member) in members.iter().enumerate() {
            let score = 1_000_000_000_000_u64 + 1000 * r as u64;
            let _: () = redis::cmd("ZADD")
                .arg(key)
                .arg(score)
                .arg(member)
                .query(conn)
                .unwrap();
        }
        members
    }

    /// What a `+ms` of `CLAIMED` by claimer `id` takes up of `key`.
    fn take_up(conn: &mut redis::Connection, key: &str, id: u64) -> Vec<String> {
        Script::new(CLAIMED.source())
            .key(key)
            .arg("+60000")
            .arg(id)
            .arg(format!("!mine/{id}"))
            .invoke(conn)
            .unwrap()
    }

    /// Found by a review: beyond [`TAKE_UP_SCAN`] due entries, which ones a take-up
    /// looked at was untested. It is the window of `TAKE_UP_SCAN` ranks starting at the
    /// claimer's id modulo the ranks a window can start at: rank 0 for one, the last
    /// window for another, at most [`TAKE_UP`] look-again entries taken from it, in rank
    /// order, and none outside it.
    #[test]
    fn beyond_the_scan_a_take_up_looks_at_the_window_its_claimer_picks() {
        let Some(mut conn) = server() else { return };
        let key = format!("{}:expiry", prefix("take-up-window"));
        let due = 100;
        let starts = (due - TAKE_UP_SCAN + 1) as u64;
        fill(&mut conn, &key, due);
        // Starting at rank 0: the head's look-again entry only.
        assert_eq!(take_up(&mut conn, &key, 0), ["!head/1"]);
        assert_eq!(
            take_up(&mut conn, &key, 0),
            Vec::<String>::new(),
            "sent again"
        );
        let members = fill(&mut conn, &key, due);
        // Starting at the last rank a window can start at: ranks 36 to 99, whose first
        // `TAKE_UP` look-again entries are ranks 70 to 77.
        let taken = take_up(&mut conn, &key, starts - 1);
        assert_eq!(taken, members[70..70 + TAKE_UP]);
        for member in &taken {
            let score: f64 = redis::cmd("ZSCORE")
                .arg(&key)
                .arg(member)
                .query(&mut conn)
                .unwrap();
            assert!(score > 1_700_000_000_000.0, "{member} leased: {score}");
        }
        let head: u64 = redis::cmd("ZSCORE")
            .arg(&key)
            .arg("!head/1")
            .query(&mut conn)
            .unwrap();
        assert_eq!(
            head, 1_000_000_005_000,
            "outside the window, left as it was"
        );
        // Within the scan (no more due entries than it looks at), every due one is seen.
        fill(&mut conn, &key, TAKE_UP_SCAN);
        assert_eq!(take_up(&mut conn, &key, starts - 1), ["!head/1"]);
        let _: () = redis::cmd("DEL").arg(&key).query(&mut conn).unwrap();
    }
}
