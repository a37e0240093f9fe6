//! How a write reaches the server: the scripts' arguments, the indexes (inside the write
//! script on one server, requests of their own after it on a cluster: `index.rs`, and
//! their repair on a cluster when a write may have applied unheard: `run_write`) and the
//! replicas' `WAIT` when [`RedisOptions::replica_acks`] asks for it. Scripts the server
//! does not know: `scripting.rs`.
//!
//! [`RedisOptions::replica_acks`]: crate::RedisOptions::replica_acks

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use fusion_core::{ChatMessage, DEDUP_WINDOW, Expect, Result, Revision, new_generation};
use redis::{Cmd, FromRedisValue, RedisResult, RedisWrite, Script, ToRedisArgs};

use super::followed::{Did, did_trim, did_write, short_of_acks};
use super::upkeep::within;
use super::{RedisStorage, Request};
use crate::cluster::may_have_applied;
use crate::error::{BACKEND, Op, is_value_too_long, parse_redis_error};
use crate::scripts::{self, Lua};

impl RedisStorage {
    /// The four condition arguments of the scripts (see `scripts/mod.rs`): `fresh`, the
    /// generation for a session the script creates or rewrites, then what is expected of
    /// the session (a word, a generation, a length). Numbers go as they are; the command
    /// writes them in decimal. Only [`Expect::UnwrittenSince`] makes its word (`before:`
    /// and the instant), so the other writes allocate nothing more.
    fn condition(fresh: u64, expected: Option<Expect>) -> (u64, Cow<'static, str>, u64, usize) {
        let (kind, generation, len) = match expected {
            None => (Cow::Borrowed("any"), 0, 0),
            Some(Expect::Generation(generation)) => (Cow::Borrowed("gen"), generation, 0),
            Some(Expect::Exactly(Revision { generation, len })) => {
                (Cow::Borrowed("exact"), generation, len)
            }
            Some(Expect::UnwrittenSince {
                revision: Revision { generation, len },
                since,
            }) => (Cow::Owned(unwritten_before(since)), generation, len),
        };
        (fresh, kind, generation, len)
    }

    /// The keys a session script is given: the session's `list` and `meta` hash, and on
    /// one server the indexes of every session (a cluster keeps those in other slots, so
    /// there the caller updates them after the script). The scripts name an owner's
    /// indexes and the expiry index themselves, on one server, when they need them.
    pub(super) fn script_keys<'a>(&'a self, list: &'a str, meta: &'a str) -> ScriptKeys<'a> {
        let all = [list, meta, self.keys.ids(), self.keys.updated()];
        let len = if self.conn.is_cluster() { 2 } else { 4 };
        ScriptKeys { all, len }
    }

    /// Replaces (`mode = "replace"`, or `"rewrite"` keeping its times) or extends
    /// (`"append"`) a session if it meets `expected` (always, for `None`), giving it
    /// `created_with` if the write creates it (the fields `stored::fields` makes of its
    /// metadata, expiry included, and a copy's `stored::times_fields`), and indexes it.
    /// A session whose expiry has passed is absent to it.
    ///
    /// Messages with ids are stored once (issue #18): the script skips those whose id is
    /// among the session's last ones, in the same atomic step as the push.
    ///
    /// On one server the script itself updates the indexes, so the write is one round
    /// trip and the session is listed from the moment it exists. On a cluster the
    /// indexes are in other slots, so their `ZADD`s follow as requests of their own (see
    /// `index.rs`); if they fail, the write is reported as failed although stored. What
    /// such a write, or one whose reply was lost, left unindexed is indexed again by the
    /// retry: it meets what its first copy did (a conflict, or an append whose messages
    /// are all stored already), and on a cluster that sends the session's index entries
    /// as it is stored ([`reindex`](Self::reindex)).
    pub(super) async fn write(
        &self,
        name: &'static str,
        id: &str,
        mode: &str,
        expected: Option<Expect>,
        messages: &[ChatMessage],
        created_with: &[(&str, String)],
    ) -> Result<scripts::Outcome> {
        let (list, meta) = (self.keys.list(id), self.keys.meta(id));
        let keys = self.script_keys(&list, &meta);
        let fresh = new_generation();
        let checked = with_fingerprints(mode, messages);
        // Mostly the messages' JSON, and per message its fingerprint and RESP framing; the
        // other arguments are short.
        let bytes = ChatMessage::json_len_hint(messages) + 32 * messages.len() + 256;
        let args = 11 + created_with.len() * 2 + checked.len() + messages.len();
        let mut script = evalsha_with_room(self.writing(&scripts::WRITE), &keys, args, bytes);
        script
            .arg(mode)
            .arg(self.ttl_ms())
            .arg(Self::condition(fresh, expected))
            .arg(id)
            .arg(self.keys.prefix())
            .arg(created_with.len());
        for (field, value) in created_with {
            script.arg(*field).arg(value);
        }
        script.arg(checked.len());
        for message in checked {
            match &message.id {
                Some(id) => script.arg(&scripts::fingerprint(id.as_str())[..]),
                None => script.arg(""),
            };
        }
        for message in messages {
            serde_json::to_writer(script.writer_for_next_arg(), message)?;
        }
        (self.max_value)
            .before_a_write(&self.conn, self.response_timeout)
            .await;
        self.check_value_sizes(id, &script, messages.len())?;
        let op = self.op(name, Some(id));
        let did = |outcome: &scripts::Outcome| did_write(mode, expected, messages, outcome);
        let outcome: scripts::Outcome = self
            .run_write_as(self.writing(&scripts::WRITE), &script, op, &keys, did)
            .await?;
        match &outcome.wrote {
            Some(written) => {
                let listed = outcome.generation.parse() == Ok(fresh);
                self.follow(op, id, written, listed).await?;
            }
            // What a retry meets when its first copy applied and lost its reply: a
            // conflict (a creation or a conditional write), or an append all of whose
            // messages are stored already. Rare either way, so a read and the index
            // requests more cost nothing the common append pays.
            None if !outcome.applied || (mode == "append" && !messages.is_empty()) => {
                self.reindex(name, id, true).await?;
            }
            // A rewrite of an existing session leaves its index entries as they are; a
            // conditional append of nothing only checked.
            None => {}
        }
        Ok(outcome)
    }

    /// Refuses a write whose `count` messages, the last arguments of `call`, hold one
    /// larger than the server (any primary of a cluster) takes as one value: sent, it
    /// would be refused with the connection closed mid-request, which may reach us as a
    /// reset (see `connect::probe`).
    fn check_value_sizes(&self, id: &str, call: &Cmd, count: usize) -> Result<()> {
        let Some(limit) = self.max_value.get() else {
            return Ok(());
        };
        let args = call.args_iter();
        let first = args.len().saturating_sub(count);
        let too_long = args
            .skip(first)
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.len(),
                _ => 0,
            })
            .enumerate()
            .find(|&(_, size)| size > limit);
        match too_long {
            None => Ok(()),
            Some((index, size)) => Err(fusion_core::Error::InvalidMessage {
                backend: BACKEND,
                session_id: id.to_string(),
                index,
                detail: if self.conn.is_cluster() {
                    format!(
                        "its JSON is {size} bytes, more than a primary of the Redis Cluster at \
                         {} takes as one value (the smallest `proto-max-bulk-len` of its \
                         primaries, {limit} bytes; a session's slot may move to any of them)",
                        self.url
                    )
                } else {
                    format!(
                        "its JSON is {size} bytes, more than the Redis server at {} takes as \
                         one value (its `proto-max-bulk-len`, {limit} bytes)",
                        self.url
                    )
                },
            }),
        }
    }

    /// Keeps the first `len` messages of a session (`0` deletes its keys and unindexes
    /// it) if it meets `expected` (always, for `None`). One script, one round trip on one
    /// server; on a cluster the indexes follow, and a truncate that changed nothing (a
    /// conflict, or a session no longer than `len`: what the retry of a truncate whose
    /// reply was lost meets) sends the session's index entries as it is stored.
    pub(super) async fn trim(
        &self,
        name: &'static str,
        id: &str,
        len: usize,
        expected: Option<Expect>,
    ) -> Result<scripts::Outcome> {
        let (list, meta) = (self.keys.list(id), self.keys.meta(id));
        let keys = self.script_keys(&list, &meta);
        let mut script = evalsha(self.writing(&scripts::TRUNCATE), &keys);
        let fresh = new_generation();
        script
            .arg(len)
            .arg(self.ttl_ms())
            .arg(Self::condition(fresh, expected))
            .arg(id)
            .arg(self.keys.prefix());
        let op = self.op(name, Some(id));
        let did = |outcome: &scripts::Outcome| did_trim(len, fresh, outcome);
        let outcome: scripts::Outcome = self
            .run_write_as(self.writing(&scripts::TRUNCATE), &script, op, &keys, did)
            .await?;
        match &outcome.wrote {
            Some(written) => self.follow(op, id, written, false).await?,
            None => self.reindex(name, id, true).await?,
        }
        Ok(outcome)
    }

    /// Deletes a session's keys, whatever they hold, and unindexes it: in the script on
    /// one server, after it on a cluster (where a session created again meanwhile is put
    /// back). Returns how many keys went.
    pub(super) async fn remove(&self, id: &str) -> Result<i64> {
        let (list, meta) = (self.keys.list(id), self.keys.meta(id));
        let keys = self.script_keys(&list, &meta);
        let mut script = evalsha(self.writing(&scripts::DELETE), &keys);
        script.arg(id).arg(self.keys.prefix());
        let op = self.op("delete", Some(id));
        let did = |(removed, _, _): &(i64, Option<String>, Option<String>)| match removed {
            1.. => Did::Delete,
            _ => Did::DeleteOfNothing,
        };
        let run = self.run_write_as(self.writing(&scripts::DELETE), &script, op, &keys, did);
        let gone = |(removed, owner, due): &(i64, Option<String>, Option<String>)| {
            (owner.clone(), due.is_some(), *removed > 0)
        };
        Ok(self.deleted(op.name, id, run, gone).await?.0)
    }

    /// Sends `call`, the `EVALSHA` of `script`, a write script on the session of `op`
    /// (whose `keys` name errors), and returns its reply once the replicas acknowledged
    /// it (when the storage waits for them); `did` says what it did, for the error of one
    /// short of them.
    ///
    /// On a cluster a write that failed but may have applied (its reply lost with its
    /// connection or timed out, see [`may_have_applied`], or too few replicas
    /// acknowledged it) also left its index requests unsent. They are sent at once,
    /// computed from the session as it is stored ([`reindex`](Self::reindex)), so the
    /// session is listed without waiting for a retry that may never come; then the
    /// write's own error is returned. That repair is best effort and takes at most the
    /// response timeout: when it fails too (the node still out of reach), the retry of the
    /// write repairs the indexes instead (see [`write`](Self::write)). One server needs
    /// none of this: there the script keeps the indexes in the same atomic step.
    pub(super) async fn run_write<T: FromRedisValue>(
        &self,
        script: &Lua,
        call: &Cmd,
        op: Op<'_>,
        keys: &[&str],
        did: Did,
    ) -> Result<T> {
        self.run_write_as(script, call, op, keys, |_| did).await
    }

    /// [`run_write`](Self::run_write), `did` saying from the script's reply what the
    /// write did, for the error of one short of replica acknowledgements.
    async fn run_write_as<T: FromRedisValue>(
        &self,
        script: &Lua,
        call: &Cmd,
        op: Op<'_>,
        keys: &[&str],
        did: impl FnOnce(&T) -> Did,
    ) -> Result<T> {
        let (unheard, over_limit, applied) = match self.run_script(script, call).await {
            Ok(acked) => match self.acknowledged_as(acked, op, did) {
                Ok(value) => return Ok(value),
                Err(short) => (short, false, true),
            },
            Err(err) => {
                // A value over a node's limit: the node refuses it and closes the
                // connection, and the client meets either.
                let dropped = may_have_applied(&err) && !err.is_timeout();
                let over_limit = dropped || is_value_too_long(&err);
                let applied = may_have_applied(&err);
                (
                    parse_redis_error(err, op.on_keys(keys)),
                    over_limit,
                    applied,
                )
            }
        };
        // Where the value may have been over a node's limit (a primary that joined the
        // cluster since connect, or a limit lowered since), the limit is read again
        // before the next write, so that this write's retry is refused before it is
        // sent. Not here: the read waits for the connection made again, which would
        // hold back this error (for the reconnect's backoff at least).
        if over_limit {
            self.max_value.read_again_later();
        }
        if applied {
            self.repair_after_unheard(op).await;
        }
        Err(unheard)
    }

    /// The repair of [`run_write`](Self::run_write) on a cluster: the indexes of the
    /// session of `op`, whose write may have applied unheard, sent as it is stored.
    async fn repair_after_unheard(&self, op: Op<'_>) {
        if let (true, Some(id)) = (self.conn.is_cluster(), op.session_id) {
            // Not waiting for the replicas (the write's error is returned whatever they
            // say), nor longer than a reply may take: a node that does not answer the
            // repair by then would only delay the error, and the retry repairs it then.
            // Not the connect timeout either: after a lost reply the repair's requests
            // wait for a connection made again after the backoff (100 ms at least), so a
            // connect timeout set short cut every repair, and the session stayed
            // unlisted until a retry that may never come.
            // Logged at warn when no retry mends the failure (a refusal, such as an index
            // of another type), at debug when it passes (the node still out of reach).
            let repair = self.reindex(op.name, id, false);
            if let Err(left) = within(self.response_timeout, repair).await {
                left.log_of_session(
                    "the indexes of a session whose write may have applied are left to its retry",
                    id,
                );
            }
        }
    }

    /// Sends `request`, a command or a pipeline whose one reply that is not ignored is a
    /// `T`, followed in one pipeline by a `WAIT` for the replicas when
    /// [`RedisOptions::replica_acks`] asks for one.
    ///
    /// [`RedisOptions::replica_acks`]: crate::RedisOptions::replica_acks
    pub(super) async fn send_acked<T: FromRedisValue>(
        &self,
        request: Request<'_>,
    ) -> RedisResult<Acked<T>> {
        let Some(acks) = self.replica_acks else {
            let value = match request {
                Request::Cmd(_) => self.run(request).await?,
                Request::Pipe(_) => self.run::<(T,)>(request).await?.0,
            };
            return Ok(Acked {
                value,
                replicas: None,
            });
        };
        let mut pipe = match request {
            Request::Cmd(cmd) => {
                let mut pipe = redis::pipe();
                pipe.add_command(cmd.clone());
                pipe
            }
            Request::Pipe(pipe) => pipe.clone(),
        };
        let timeout = u64::try_from(acks.timeout.as_millis()).unwrap_or(u64::MAX);
        pipe.cmd("WAIT").arg(acks.replicas).arg(timeout);
        let (value, replicas): (T, usize) = self.run(Request::Pipe(&pipe)).await?;
        Ok(Acked {
            value,
            replicas: Some(replicas),
        })
    }

    /// The value of a write, once enough replicas acknowledged it; otherwise an error
    /// saying the write is on the primary only.
    pub(super) fn acknowledged<T>(&self, acked: Acked<T>, op: Op<'_>) -> Result<T> {
        self.acknowledged_as(acked, op, |_| Did::Store)
    }

    /// [`acknowledged`](Self::acknowledged), the error saying what the write did
    /// (`did`, from its value): a delete is not "stored", and one that found nothing
    /// removed nothing.
    pub(super) fn acknowledged_as<T>(
        &self,
        acked: Acked<T>,
        op: Op<'_>,
        did: impl FnOnce(&T) -> Did,
    ) -> Result<T> {
        match (acked.replicas, self.replica_acks) {
            (Some(got), Some(want)) if got < want.replicas => Err(fusion_core::Error::Backend {
                backend: BACKEND,
                message: short_of_acks(op, did(&acked.value), got, want),
                retryable: false,
                source: None,
            }),
            _ => Ok(acked.value),
        }
    }
}

/// A reply, and how many replicas `WAIT` counted when the storage waits for them.
pub(super) struct Acked<T> {
    value: T,
    replicas: Option<usize>,
}

impl<T> Acked<T> {
    /// `value`, which `replicas` acknowledged (`None`: nobody asked them).
    pub(super) fn new(value: T, replicas: Option<usize>) -> Self {
        Self { value, replicas }
    }

    /// The reply, whatever the replicas said: what the write did on the primary.
    pub(super) fn value(&self) -> &T {
        &self.value
    }
}

/// The `EVALSHA` of `script` on `keys`, for its arguments to follow. Built as one command
/// rather than through a `ScriptInvocation`, which copies every argument, then copies them
/// again into the command it makes: each message is serialised straight into the request.
pub(super) fn evalsha<K: ToRedisArgs>(script: &Script, keys: &[K]) -> Cmd {
    evalsha_with_room(script, keys, 0, 0)
}

/// [`evalsha`] with room for `args` more arguments of `bytes` in all, so a command whose
/// size is known roughly beforehand does not grow its buffers step by step.
fn evalsha_with_room<K: ToRedisArgs>(
    script: &Script,
    keys: &[K],
    args: usize,
    bytes: usize,
) -> Cmd {
    let mut cmd = Cmd::with_capacity(3 + keys.len() + args, 128 + bytes);
    cmd.arg("EVALSHA")
        .arg(script.get_hash())
        .arg(keys.len())
        .arg(keys);
    cmd
}

/// The expectation word of [`Expect::UnwrittenSince`]: `before:` and `since` in ms since
/// the epoch, rounded up. The scripts keep `updated_at` in whole ms, and a whole ms is earlier
/// than `since` exactly when it is earlier than that one, so the script compares two
/// whole numbers. An instant before 1970 is `0`, which no `updated_at` is below; one
/// past 2^53 ms (which no `updated_at` reaches, the scripts keeping them to the year
/// 9999) is 2^53, the most the script takes, below which its Lua numbers are exact.
fn unwritten_before(since: SystemTime) -> String {
    const MAX_MS: u128 = 1 << 53;
    let ms = since
        .duration_since(UNIX_EPOCH)
        .map_or(0, |after| after.as_nanos().div_ceil(1_000_000).min(MAX_MS));
    format!("before:{ms}")
}

/// The messages whose id fingerprints the write script is given (see
/// `scripts/window.rs`): none when no message has an id, which spares the script all
/// window work; else every message of an append, which it checks, and the last
/// [`DEDUP_WINDOW`] of a replace, which start the window. A history with ids only further
/// back still passes its last ones (without ids), so the script keeps a window that a
/// truncate then rebuilds.
fn with_fingerprints<'a>(mode: &str, messages: &'a [ChatMessage]) -> &'a [ChatMessage] {
    if !messages.iter().any(|message| message.id.is_some()) {
        return &[];
    }
    match mode {
        "replace" | "rewrite" => &messages[messages.len().saturating_sub(DEDUP_WINDOW)..],
        _ => messages,
    }
}

/// The keys of a session script ([`RedisStorage::script_keys`]), without allocating.
pub(super) struct ScriptKeys<'a> {
    all: [&'a str; 4],
    len: usize,
}

impl<'a> std::ops::Deref for ScriptKeys<'a> {
    type Target = [&'a str];

    fn deref(&self) -> &[&'a str] {
        &self.all[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_instant_of_unwritten_since_goes_as_its_ms_rounded_up() {
        let ms = |ms| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(
            unwritten_before(ms(1_700_000_000_123)),
            "before:1700000000123"
        );
        let nano_past = ms(1_700_000_000_123) + Duration::from_nanos(1);
        assert_eq!(unwritten_before(nano_past), "before:1700000000124");
        let before_1970 = UNIX_EPOCH - Duration::from_millis(5);
        assert_eq!(unwritten_before(before_1970), "before:0");
        let far = ms(1 << 60);
        assert_eq!(unwritten_before(far), "before:9007199254740992");
    }
}
