//! [`Connection`]: a single server or a Redis Cluster, behind the one interface the redis
//! crate's commands, pipelines and scripts are sent through.
//!
//! Both kinds are multiplexed and cheap to clone. What differs is what the server
//! accepts: a cluster refuses a pipeline or transaction whose keys live in different
//! slots, so the storage asks [`Connection::is_cluster`] where it would otherwise mix a
//! session's keys with the session index in one request. And how a request is sent
//! again: a cluster's [`ConnectionLike`] sends reads again after a dropped connection,
//! and a write goes through `Cluster::for_writes` (see `cluster.rs`).

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::cluster::Cluster;

/// A connection every clone of a `RedisStorage` shares: its writes' or its reads'.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server (`redis://`), reconnected by the manager when it drops.
    Single(ConnectionManager),
    /// A cluster (`redis+cluster://`): the client routes each request to the node that
    /// serves its slot, follows `MOVED`/`ASK` and refreshes the slot map on a topology
    /// change. A write is sent again only where it was refused (see `cluster.rs`).
    Cluster(Cluster),
}

impl Connection {
    /// Whether requests must keep to one slot each.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// Sends `request`, and once more if its error meets `again`.
    pub(crate) async fn send_again_if<T: FromRedisValue>(
        mut self,
        request: Request<'_>,
        again: impl Fn(&RedisError) -> bool,
    ) -> RedisResult<T> {
        match request.send(&mut self).await {
            Err(err) if again(&err) => request.send(&mut self).await,
            done => done,
        }
    }
}

/// What is sent through it may be sent again on a cluster after it may have reached a
/// node: reads (`RedisStorage::run` sends writes through `Cluster::for_writes`).
impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// One request to the server, kept whole so it can be sent again.
#[derive(Clone, Copy)]
pub(crate) enum Request<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
}

impl Request<'_> {
    pub(crate) async fn send<T: FromRedisValue>(
        self,
        conn: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self {
            Request::Cmd(cmd) => cmd.query_async(conn).await,
            Request::Pipe(pipe) => pipe.query_async(conn).await,
        }
    }
}
