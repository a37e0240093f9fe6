//! How a script reaches the server: by its sha (`EVALSHA`, which sends only the sha),
//! and by its text where the server does not know the sha (`NOSCRIPT`: a new, restarted
//! or flushed server, or a script Redis 7.4+ evicted).
//!
//! After a `NOSCRIPT` the call goes again as the `EVAL` of the script's text, which runs
//! it whatever the server knows, and beside it a `SCRIPT LOAD` of the text pins the
//! script ([`RedisStorage::pin`]): from Redis 7.4 the scripts `EVAL` caches are evicted
//! once some 500 accumulate, those of `SCRIPT LOAD` never, so on a server shared with an
//! application that makes many `EVAL` scripts every write would otherwise pay a
//! `NOSCRIPT` and an `EVAL`. Only a load that comes first pins: a script `EVAL` cached
//! stays evictable when `SCRIPT LOAD` sends it again. The pin is best effort: a user
//! without `SCRIPT` still writes (through the `EVAL`), and its failure fails no call;
//! once the server's ACL refused it, the storage stops asking but where the call needs the
//! load (a user without `EVAL`, below). On one server it goes on the same connection right ahead of the `EVAL`, so it pins the
//! script and costs the call no round trip; on a cluster, where `SCRIPT LOAD` goes to
//! every primary, it is spawned, so a slow primary does not hold the call, one at a time
//! for each script however many calls met the `NOSCRIPT`: it pins the script on the
//! primaries the `EVAL` did not reach first (where it ran, it stays evictable).
//!
//! A user allowed `EVALSHA` and `SCRIPT` but not `EVAL` (least privilege) gets `NOPERM`
//! for the `EVAL`: then the script is loaded (`SCRIPT LOAD`) and the call goes again by
//! its sha. Not the first choice: a `SCRIPT FLUSH` from another client between the two
//! fails the call with a second `NOSCRIPT`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{join, try_join_all};
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, ServerErrorKind, Value};

use super::read_only::Attempt;
use super::write::Acked;
use super::{RedisStorage, Request};
use crate::connection::Connection;
use crate::scripts::Lua;

impl RedisStorage {
    /// Sends `call`, the `EVALSHA` of `script`, in one round trip (with the replicas'
    /// `WAIT` behind it when the storage waits for them); after a `NOSCRIPT`, as the
    /// module documentation says. On a cluster the keyless `WAIT` goes to the node of the
    /// script's keys.
    pub(super) async fn run_script<T: FromRedisValue>(
        &self,
        script: &Lua,
        call: &Cmd,
    ) -> RedisResult<Acked<T>> {
        match self.send_acked(Request::Cmd(call)).await {
            Err(err) if is_noscript(&err) => {
                let text = as_eval(script, call);
                let as_text = self.send_acked(Request::Cmd(&text));
                let by_sha = || self.send_acked(Request::Cmd(call));
                self.after_noscript(&self.conn, script, as_text, by_sha)
                    .await
            }
            sent => sent,
        }
    }

    /// Sends `call`, the `EVALSHA` of a script that only reads (or repairs an index and
    /// may run twice: on the writes' connection, see [`script_connection`]), as the `EVAL`
    /// of its text if the server does not know it; a script that only reads as
    /// `EVALSHA_RO` where the server has it (see [`read_only`]).
    ///
    /// [`script_connection`]: Self::script_connection
    /// [`read_only`]: Self::read_only
    pub(super) async fn eval<T: FromRedisValue>(&self, script: &Lua, call: &Cmd) -> RedisResult<T> {
        if let Some(attempt) = self.read_only(script) {
            let call = renamed(call, "EVALSHA_RO");
            match self.eval_once(script, &call).await {
                Err(err) if is_read_only_refused(&err) => attempt.refused(&err, &self.url),
                done => return self.read_only_sent(done, attempt),
            }
        }
        self.eval_once(script, call).await
    }

    /// [`eval`](Self::eval) of `call` as it is.
    async fn eval_once<T: FromRedisValue>(&self, script: &Lua, call: &Cmd) -> RedisResult<T> {
        match self.send_script(script, Request::Cmd(call)).await {
            Err(err) if is_noscript(&err) => {
                let text = as_eval(script, call);
                let as_text = self.send_script(script, Request::Cmd(&text));
                let by_sha = || self.send_script(script, Request::Cmd(call));
                let conn = self.script_connection(script);
                self.after_noscript(conn, script, as_text, by_sha).await
            }
            done => done,
        }
    }

    /// The connection a call of `script` (through [`eval`](Self::eval) or
    /// [`eval_all`](Self::eval_all)) goes on: the reads' for a script that only reads; the
    /// writes' for one that repairs an index (`REINDEX`), as the index commands go
    /// (`index.rs`): `CLIENT PAUSE WRITE` holds it, and the server reads nothing more
    /// from its connection meanwhile, so on the reads' it would hold every read behind it.
    fn script_connection(&self, script: &Lua) -> &Connection {
        if script.read_only() {
            &self.reads
        } else {
            &self.conn
        }
    }

    /// Sends `request`, calls of `script`, on [its connection](Self::script_connection):
    /// as a read, or as an index command (sent again after a dropped connection too, a
    /// repair doing no harm twice).
    async fn send_script<T: FromRedisValue>(
        &self,
        script: &Lua,
        request: Request<'_>,
    ) -> RedisResult<T> {
        if script.read_only() {
            self.read(request).await
        } else {
            self.send_index_request(request).await
        }
    }

    /// Whether `script` goes as `EVALSHA_RO` (`Some`): it only reads, and the server has
    /// not refused it lately (`read_only.rs`). `CLIENT PAUSE WRITE`, which a failover sets
    /// (`FAILOVER`, `CLUSTER FAILOVER`), holds every `EVALSHA` until the pause ends, and
    /// `EVALSHA_RO` not.
    fn read_only(&self, script: &Lua) -> Option<Attempt<'_>> {
        script
            .read_only()
            .then(|| self.read_only_scripts.wanted())
            .flatten()
    }

    /// `done`, what a call sent as `EVALSHA_RO` (`attempt`) gave other than a refusal of
    /// it: a reply says the server takes it; an error says nothing about it (the attempt
    /// dropped unsettled, as when the call's future is dropped before an answer).
    fn read_only_sent<T>(&self, done: RedisResult<T>, attempt: Attempt<'_>) -> RedisResult<T> {
        if done.is_ok() {
            attempt.accepted(&self.url);
        }
        done
    }

    /// Sends `calls`, `EVALSHA`s of `script` as [`eval`](Self::eval) takes them, and
    /// returns their replies in order: one pipeline on one server; on a cluster, where
    /// each may be for another slot, side by side.
    pub(super) async fn eval_all(&self, script: &Lua, calls: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        if self.conn.is_cluster() {
            return try_join_all(calls.iter().map(|call| self.eval(script, call))).await;
        }
        if let Some(attempt) = self.read_only(script) {
            let calls = calls
                .iter()
                .map(|call| renamed(call, "EVALSHA_RO"))
                .collect();
            match self.eval_pipeline(script, calls).await {
                Err(err) if is_read_only_refused(&err) => attempt.refused(&err, &self.url),
                done => return self.read_only_sent(done, attempt),
            }
        }
        self.eval_pipeline(script, calls).await
    }

    /// [`eval_all`](Self::eval_all) of `calls` as they are, in one pipeline.
    async fn eval_pipeline(&self, script: &Lua, calls: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        let mut pipe = redis::pipe();
        for call in calls {
            pipe.add_command(call);
        }
        match self.send_script(script, Request::Pipe(&pipe)).await {
            Err(err) if is_noscript(&err) => {
                // Each as text: a flush may come between two commands of a pipeline.
                let mut texts = redis::pipe();
                for call in pipe.cmd_iter() {
                    texts.add_command(as_eval(script, call));
                }
                let as_text = self.send_script(script, Request::Pipe(&texts));
                let by_sha = || self.send_script(script, Request::Pipe(&pipe));
                let conn = self.script_connection(script);
                self.after_noscript(conn, script, as_text, by_sha).await
            }
            done => done,
        }
    }

    /// What follows a `NOSCRIPT` for `script`: `as_text`, the request again with the
    /// script's text on `conn`, and the pin; if the user may not `EVAL`, `by_sha()`, the
    /// request again as it was, once the pin loaded the script.
    async fn after_noscript<T, F>(
        &self,
        conn: &Connection,
        script: &Lua,
        as_text: impl Future<Output = RedisResult<T>>,
        by_sha: impl FnOnce() -> F,
    ) -> RedisResult<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let (sent, pinned) = match conn {
            // Queued on the multiplexed connection right ahead of the text (`join`
            // polls its first future first), so the server loads the script before the
            // `EVAL` caches it: Redis 7.4+ keeps a script `EVAL` cached evictable even
            // once `SCRIPT LOAD` sends it again. The call's reply follows at once.
            Connection::Single(_) => {
                let (pinned, sent) = join(self.pin(conn, script), as_text).await;
                (sent, Some(pinned))
            }
            Connection::Cluster(_) => (as_text.await, None),
        };
        match sent {
            Err(err) if is_eval_denied(&err) => {
                // The load is the call's only way now: asked even once `SCRIPT LOAD` was
                // refused, since an ACL that granted `SCRIPT` again must not leave every
                // later `NOSCRIPT` failing its call for the life of the process.
                let pinned = match pinned {
                    Some(Some(pinned)) => pinned,
                    _ => self.load(conn, script).await,
                };
                if pinned { by_sha().await } else { Err(err) }
            }
            sent => {
                if pinned.is_none() {
                    self.pin_in_background(script);
                }
                sent
            }
        }
    }

    /// Loads `script` with `SCRIPT LOAD` on `conn` (on a cluster, on every primary), so that the
    /// server keeps it; whether it did. A failure (a user without `SCRIPT`, a dropped
    /// connection) is only logged: the call that needed the script went as its text. Once
    /// the server's ACL refused it, no clone of the storage asks again (but for a call
    /// that needs the load, [`load`](Self::load)): each `NOSCRIPT`
    /// would send the script's text a second time, to be refused (and counted in the
    /// server's error stats and ACL log): `None` then, nothing asked.
    async fn pin(&self, conn: &Connection, script: &Lua) -> Option<bool> {
        if self.pinning.0.refused.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.load(conn, script).await)
    }

    /// [`pin`](Self::pin) whether or not `SCRIPT LOAD` was refused before: a load that
    /// works clears the mark, the ACL having granted `SCRIPT` since.
    async fn load(&self, conn: &Connection, script: &Lua) -> bool {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(script.source());
        match load.query_async::<Value>(&mut conn.clone()).await {
            Ok(_) => {
                self.pinning.0.refused.store(false, Ordering::Relaxed);
                true
            }
            Err(err) if every_server_error(&err, |code, _| code == "NOPERM") => {
                if !self.pinning.0.refused.swap(true, Ordering::Relaxed) {
                    tracing::debug!(url = %self.url, error = %err, "scripts are not pinned: the user may not SCRIPT LOAD");
                }
                false
            }
            Err(err) => {
                tracing::debug!(url = %self.url, error = %err, "could not pin a script with SCRIPT LOAD");
                false
            }
        }
    }

    /// [`pin`](Self::pin) in a task of its own, which no call waits for; at most one at a
    /// time for each script, whichever clone of the storage met the `NOSCRIPT`: the calls
    /// that meet it together (a burst of writes after a flush, a listing's reads of a page
    /// of sessions side by side) would otherwise each send the script's text to every
    /// primary and leave a task behind for it.
    fn pin_in_background(&self, script: &Lua) {
        if self.pinning.0.refused.load(Ordering::Relaxed) {
            return;
        }
        let Some(loading) = self.pinning.start(script.get_hash()) else {
            return;
        };
        let storage = self.clone();
        let script = script.clone();
        tokio::spawn(async move {
            storage.pin(&storage.conn, &script).await;
            drop(loading);
        });
    }
}

/// What [`pin`](RedisStorage::pin) shares among the clones of a storage: the shas of the
/// scripts a background pin is loading, and whether the server refused `SCRIPT LOAD`.
#[derive(Clone, Default)]
pub(super) struct Pinning(Arc<PinningState>);

#[derive(Default)]
struct PinningState {
    loading: Mutex<HashSet<String>>,
    refused: AtomicBool,
}

impl Pinning {
    /// Marks `sha` as being loaded, unless it already is: `None` then. The mark goes
    /// when what is returned is dropped (the load done, or its task dropped with the
    /// runtime).
    fn start(&self, sha: &str) -> Option<Loading> {
        let mut loading = self
            .0
            .loading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loading.insert(sha.to_string()).then(|| Loading {
            pinning: self.clone(),
            sha: sha.to_string(),
        })
    }
}

/// A script marked as being loaded in [`Pinning`], until dropped.
struct Loading {
    pinning: Pinning,
    sha: String,
}

impl Drop for Loading {
    fn drop(&mut self) {
        let mut loading = self
            .pinning
            .0
            .loading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loading.remove(&self.sha);
    }
}

/// `call`, the `EVALSHA` of `script`, as the `EVAL` of its text, with the same keys and
/// arguments: what is sent when the server does not know the sha. Not the driver's way,
/// `SCRIPT LOAD` then the `EVALSHA` again, which fails when a `SCRIPT FLUSH` from another
/// client comes between the two (the second `NOSCRIPT` surfaced as a non-retryable
/// error during a burst of writes), and needs the `SCRIPT` command, which an ACL may
/// deny where it allows `EVAL`. Copies the arguments: only on this rare path.
fn as_eval(script: &Lua, call: &Cmd) -> Cmd {
    let sha_name = call.args_iter().next();
    let read_only = matches!(sha_name, Some(redis::Arg::Simple(name)) if name == b"EVALSHA_RO");
    let mut eval = redis::cmd(if read_only { "EVAL_RO" } else { "EVAL" });
    eval.arg(script.source());
    // The scripts' commands are built of plain arguments only (no cursor).
    for arg in call.args_iter().skip(2) {
        if let redis::Arg::Simple(bytes) = arg {
            eval.arg(bytes);
        }
    }
    eval
}

/// `call` (an `EVALSHA`) as the command `name` with the same arguments. Copies them:
/// the calls of the read scripts are a few short arguments.
fn renamed(call: &Cmd, name: &str) -> Cmd {
    let mut renamed = redis::cmd(name);
    for arg in call.args_iter().skip(1) {
        if let redis::Arg::Simple(bytes) = arg {
            renamed.arg(bytes);
        }
    }
    renamed
}

/// Whether the server refused `EVALSHA_RO` or `EVAL_RO` as such, before running
/// anything: a server older than Redis 7 does not know it, an ACL may not allow it. In a
/// pipeline, every command that failed was refused so.
fn is_read_only_refused(err: &RedisError) -> bool {
    every_server_error(err, |code, detail| {
        let named = ["evalsha_ro", "eval_ro"].iter().any(|name| {
            detail.contains(&format!("'{name}'")) || detail.contains(&format!("`{name}`"))
        });
        named && (code == "NOPERM" || detail.starts_with("unknown command"))
    })
}

/// Whether the server did not know a script's sha (and so did not run it).
fn is_noscript(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// Whether the user may not run `EVAL` (an ACL): `NOPERM` naming the command, which
/// Redis refuses before running anything. Not a `NOPERM` for keys or a channel. In a
/// pipeline (the replicas' `WAIT` behind a write, a listing's reads), every command that
/// failed was refused so.
fn is_eval_denied(err: &RedisError) -> bool {
    every_server_error(err, |code, detail| {
        code == "NOPERM" && (detail.contains("'eval'") || detail.contains("'eval_ro'"))
    })
}

/// Whether `err` holds the server's errors and `refused(code, detail)`, the detail in
/// lower case, holds for each: the error of one command, or those of the commands of a
/// pipeline that failed, whose error the redis crate gives no detail of its own (its
/// `detail()` is `None`), so that each must be looked at.
fn every_server_error(err: &RedisError, refused: impl Fn(&str, &str) -> bool) -> bool {
    let Some(errors) = err.clone().into_server_errors() else {
        return false;
    };
    !errors.is_empty()
        && errors.iter().all(|(_, error)| {
            let detail = error.details().unwrap_or_default().to_ascii_lowercase();
            refused(error.code(), &detail)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::error::server_reply_error as server;

    #[test]
    fn a_refused_read_only_call_is_told_from_other_errors() {
        for reply in [
            "ERR unknown command `EVALSHA_RO`, with args beginning with: `abc`, `1`, ",
            "ERR unknown command 'evalsha_ro', with args beginning with: 'abc' '1' ",
            "NOPERM this user has no permissions to run the 'evalsha_ro' command",
            "NOPERM User app has no permissions to run the 'eval_ro' command",
        ] {
            assert!(is_read_only_refused(&server(reply)), "{reply}");
        }
        for reply in [
            "NOPERM this user has no permissions to run the 'evalsha' command",
            "NOPERM this user has no permissions to access one of the keys used as arguments",
            "NOSCRIPT No matching script. Please use EVAL.",
            "ERR Error running script: Write commands are not allowed from read-only scripts",
        ] {
            assert!(!is_read_only_refused(&server(reply)), "{reply}");
        }
    }

    #[test]
    fn calls_keep_their_arguments_under_another_name() {
        let mut call = redis::cmd("EVALSHA");
        call.arg("sha").arg(1).arg("key").arg("x");
        let renamed = renamed(&call, "EVALSHA_RO");
        let args: Vec<_> = renamed.args_iter().collect();
        let want: [&[u8]; 5] = [b"EVALSHA_RO", b"sha", b"1", b"key", b"x"];
        assert_eq!(args.len(), want.len());
        for (arg, want) in args.into_iter().zip(want) {
            assert!(matches!(arg, redis::Arg::Simple(bytes) if bytes == want));
        }
    }

    #[test]
    fn only_a_refused_eval_command_counts_as_eval_denied() {
        for reply in [
            "NOPERM this user has no permissions to run the 'eval' command",
            "NOPERM this user has no permissions to run the 'eval' command or its subcommand",
            "NOPERM User app has no permissions to run the 'eval' command",
            "NOPERM this user has no permissions to run the 'eval_ro' command",
        ] {
            assert!(is_eval_denied(&server(reply)), "{reply}");
        }
        for reply in [
            "NOPERM this user has no permissions to access one of the keys used as arguments",
            "NOPERM this user has no permissions to run the 'evalsha' command",
            "NOSCRIPT No matching script",
            "ERR unknown command 'eval'",
        ] {
            assert!(!is_eval_denied(&server(reply)), "{reply}");
        }
    }
}
