//! Which connection a request goes on, and when it is sent again: writes on the writes'
//! connection (or cluster client), again only where the error proves they were not
//! applied; reads on a connection (or cluster client) of their own, so a write of this
//! process held by a `CLIENT PAUSE WRITE` holds no read behind it.

use redis::{FromRedisValue, RedisError, RedisResult, Value};

use super::{RedisStorage, write};
use crate::connection::{Connection, Request};
use crate::error::is_out_of_memory;
use crate::scripts;

impl RedisStorage {
    /// Sends `request`, which writes, on the shared connection, again only where the
    /// error proves it was not applied.
    ///
    /// On one server that is a refused connection: a refusal happens while
    /// (re)connecting, before the command is sent, so the second try cannot apply a write
    /// twice. It matters after a server restart: the manager keeps the refusal from its
    /// attempts during the outage and only starts a fresh reconnect when a call sees it,
    /// so the second try is the one that gets through. On a cluster it is also a
    /// redirection or a "not now" from the cluster (see `cluster.rs`). A dropped
    /// connection or a timeout is returned (retryable): the write may have been applied.
    ///
    /// A `READONLY` from one server closes the connection (see `replica.rs`), so that
    /// the write's retry reaches the new primary after a failover.
    pub(super) async fn run<T: FromRedisValue>(&self, request: Request<'_>) -> RedisResult<T> {
        let conn = match &self.conn {
            Connection::Cluster(cluster) => return request.send(&mut cluster.for_writes()).await,
            Connection::Single(conn) => conn,
        };
        let epoch = self.reopen.epoch();
        let sent = (self.conn.clone())
            .send_again_if(request, RedisError::is_connection_refusal)
            .await;
        if let Err(err) = &sent
            && err.code() == Some("READONLY")
        {
            // The reads' connection too: on the demoted server they would lag the writes.
            let reads = match &self.reads {
                Connection::Single(reads) => Some(reads),
                Connection::Cluster(_) => None,
            };
            let conns = [Some(conn), reads].into_iter().flatten();
            self.reopen.after_read_only(conns, epoch, &self.url).await;
        }
        sent
    }

    /// Sends `request`, which only reads (a listing's repair of what it read goes on the
    /// writes' connection, see `scripting.rs`), as [`run`](Self::run) does, and once more
    /// when the connection had dropped. That is what the first call meets after the
    /// server restarted while the storage was idle: the manager learns of the drop from it
    /// and reconnects for the second try. A write is not sent again so: a connection that
    /// drops may have carried it to the server first.
    ///
    /// On one server a `PING` goes beside the second try on the writes' connection (idle
    /// as long, so likely dropped too), which shows a drop to its manager, so the next
    /// write meets no drop. The read does not wait for it: that connection may be held
    /// (a write of this process that `CLIENT PAUSE WRITE` holds, behind which the server
    /// reads nothing more from it), and the read's own connection is all the read needs.
    /// A dropped connection fails the `PING` at once, before the read's second try is
    /// answered; one that is held leaves it unanswered, and it is dropped with the read.
    pub(super) async fn read<T: FromRedisValue>(&self, request: Request<'_>) -> RedisResult<T> {
        let mut reads = self.reads.clone();
        match request.send(&mut reads).await {
            Err(err) if err.is_connection_dropped() && !self.conn.is_cluster() => {
                let mut writes = self.conn.clone();
                let ping = async move {
                    let _ = redis::cmd("PING").query_async::<Value>(&mut writes).await;
                    // Never the first: the read's reply ends the `select`.
                    std::future::pending::<()>().await;
                };
                let again = request.send(&mut reads);
                // The `PING` first: polled first, it finds a dropped connection at once.
                let ping = std::pin::pin!(ping);
                let again = std::pin::pin!(again);
                match futures::future::select(ping, again).await {
                    futures::future::Either::Right((read, _ping)) => read,
                    futures::future::Either::Left(((), again)) => again.await,
                }
            }
            Err(err) if err.is_connection_refusal() || err.is_connection_dropped() => {
                request.send(&mut reads).await
            }
            done => done,
        }
    }

    /// The elements of `list`, the `fields` of the `meta` hash and the server's `TIME`,
    /// of one instant: a `MULTI`, one round trip.
    ///
    /// A server out of memory under `maxmemory-policy noeviction` refuses every command
    /// queued in a `MULTI`, reads included, while it still runs scripts that only read:
    /// there the same reads are sent again as one (`scripts::SNAPSHOT`), so loading works
    /// as long as the server answers at all. Not the first choice, since a script copies
    /// every element through Lua, which costs the server per byte.
    pub(super) async fn snapshot<F: FromRedisValue>(
        &self,
        list: &str,
        meta: &str,
        fields: &[&str],
    ) -> RedisResult<(Vec<Vec<u8>>, F, (i64, i64))> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LRANGE")
            .arg(list)
            .arg(0)
            .arg(-1)
            .cmd("HMGET")
            .arg(meta)
            .arg(fields)
            .cmd("TIME");
        match self.read(Request::Pipe(&pipe)).await {
            Err(err) if is_out_of_memory(&err) => {
                let mut call = write::evalsha(&scripts::SNAPSHOT, &[list, meta]);
                call.arg(fields);
                self.eval(&scripts::SNAPSHOT, &call).await
            }
            done => done,
        }
    }
}
