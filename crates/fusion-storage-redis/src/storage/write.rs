//! How a write reaches the server: the scripts' arguments, the index (inside the write
//! script on one server, a request of its own after it on a cluster), the `NOSCRIPT`
//! retry, and the replicas' `WAIT` when [`RedisOptions::replica_acks`] asks for it.
//!
//! [`RedisOptions::replica_acks`]: crate::RedisOptions::replica_acks

use fusion_core::{ChatMessage, Expect, Result, Revision, new_generation};
use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, RedisWrite, Script, ServerErrorKind};

use super::{RedisStorage, Request};
use crate::error::{BACKEND, Op, parse_redis_error};
use crate::scripts;

impl RedisStorage {
    /// The condition arguments of the scripts (see `scripts.rs`): `fresh`, the
    /// generation for a session the script creates or rewrites, then what is expected of
    /// the session.
    fn condition(fresh: u64, expected: Option<Expect>) -> [String; 4] {
        let (kind, generation, len) = match expected {
            None => ("any", 0, 0),
            Some(Expect::Generation(generation)) => ("gen", generation, 0),
            Some(Expect::Exactly(Revision { generation, len })) => ("exact", generation, len),
        };
        [
            fresh.to_string(),
            kind.to_string(),
            generation.to_string(),
            len.to_string(),
        ]
    }

    /// Replaces (`mode = "replace"`) or extends (`"append"`) a session if it meets
    /// `expected` (always, for `None`), and indexes it if the write gave it the fresh
    /// generation: it created or replaced it.
    ///
    /// On one server the script itself adds the id to the index, so the write is one
    /// round trip and the session is listed from the moment it exists. On a cluster the
    /// index is in another slot, so the `SADD` follows as a request of its own; if that
    /// request fails, the session is stored but unlisted until a write replaces it.
    pub(super) async fn write(
        &self,
        name: &'static str,
        id: &str,
        mode: &str,
        expected: Option<Expect>,
        messages: &[ChatMessage],
    ) -> Result<scripts::Outcome> {
        let (list, meta, index) = (self.keys.list(id), self.keys.meta(id), self.keys.index());
        let cluster = self.conn.is_cluster();
        let all_keys = [list.as_str(), meta.as_str(), index];
        let keys = if cluster {
            &all_keys[..2]
        } else {
            &all_keys[..]
        };
        let fresh = new_generation();
        let mut script = evalsha(&scripts::WRITE, keys);
        script
            .arg(mode)
            .arg(self.ttl_ms())
            .arg(&Self::condition(fresh, expected))
            .arg(id);
        for message in messages {
            serde_json::to_writer(script.writer_for_next_arg(), message)?;
        }
        let op = self.op(name, Some(id));
        let outcome = self
            .run_script(&scripts::WRITE, &script)
            .await
            .map_err(|err| parse_redis_error(err, op.on_keys(&[&list, &meta, index])))?;
        let outcome = self.acknowledged(outcome, op)?;
        if cluster && outcome.applied && outcome.generation == fresh.to_string() {
            let mut sadd = redis::cmd("SADD");
            sadd.arg(index).arg(id);
            let added = self.send_acked::<i64>(Request::Cmd(&sadd)).await;
            let added = added.map_err(|err| parse_redis_error(err, op.on_key(index)))?;
            self.acknowledged(added, op)?;
        }
        Ok(outcome)
    }

    /// Keeps the first `len` messages of a session (`0` deletes its keys, but leaves the
    /// index to the caller) if it meets `expected` (always, for `None`). One script, one
    /// round trip.
    pub(super) async fn trim(
        &self,
        name: &'static str,
        id: &str,
        len: usize,
        expected: Option<Expect>,
    ) -> Result<scripts::Outcome> {
        let (list, meta) = (self.keys.list(id), self.keys.meta(id));
        let mut script = evalsha(&scripts::TRUNCATE, &[&list, &meta]);
        script
            .arg(len)
            .arg(self.ttl_ms())
            .arg(&Self::condition(new_generation(), expected));
        let op = self.op(name, Some(id));
        let outcome = self
            .run_script(&scripts::TRUNCATE, &script)
            .await
            .map_err(|err| parse_redis_error(err, op.on_keys(&[&list, &meta])))?;
        self.acknowledged(outcome, op)
    }

    /// Sends `call`, the `EVALSHA` of `script`, in one round trip (with the replicas'
    /// `WAIT` behind it when the storage waits for them).
    ///
    /// On `NOSCRIPT` (a new or flushed server, where the script's sha is unknown and the
    /// script did not run) the call is sent again behind a `SCRIPT LOAD`: in one pipeline
    /// on one server; on a cluster after it, as a request of its own. On a cluster the
    /// keyless `WAIT` goes to the node of the script's keys.
    async fn run_script(
        &self,
        script: &Script,
        call: &Cmd,
    ) -> RedisResult<Acked<scripts::Outcome>> {
        match self.send_acked(Request::Cmd(call)).await {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                if !self.conn.is_cluster() {
                    let mut pipe = redis::pipe();
                    pipe.load_script(script).ignore().add_command(call.clone());
                    return self.send_acked(Request::Pipe(&pipe)).await;
                }
                // On a cluster, a pipeline redirected by `ASK` (its slot is migrating) gets
                // an `ASKING` that covers only its first command, which must then be the
                // script. So load the script on its own, which the cluster client sends to
                // every primary, and send the call again as it was.
                script.load_async(&mut self.conn.clone()).await?;
                self.send_acked(Request::Cmd(call)).await
            }
            sent => sent,
        }
    }

    /// Sends `request`, a command or a pipeline whose one reply that is not ignored is a
    /// `T`, followed in one pipeline by a `WAIT` for the replicas when
    /// [`RedisOptions::replica_acks`] asks for one.
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
        match (acked.replicas, self.replica_acks) {
            (Some(got), Some(want)) if got < want.replicas => Err(fusion_core::Error::Backend {
                backend: BACKEND,
                message: format!(
                    "{op}: stored on the primary, but only {got} of {} replicas acknowledged \
                     it within {:?}; a failover before they catch up would lose it (not \
                     retryable: a retry would apply the write twice)",
                    want.replicas, want.timeout
                ),
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

/// The `EVALSHA` of `script` on `keys`, for its arguments to follow. Built as one command
/// rather than through a `ScriptInvocation`, which copies every argument, then copies them
/// again into the command it makes: each message is serialised straight into the request.
fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}
