//! How requests reach a Redis Cluster: a write is never sent again once it may have
//! reached a node.
//!
//! The redis crate's cluster client retries a request on a budget shared by every kind of
//! failure, including a connection that dropped after the node received the request (and
//! maybe applied it) and a reply that timed out: a non-idempotent write script sent again
//! so is applied twice, or a conditional write meets the state its own first copy made
//! and reports a conflict. So the client is built without retries (it still rebuilds its
//! slot map on `MOVED` and reconnects a dropped node), and [`Cluster`] sends a request
//! again itself, at most `reconnect_retries` times: a write only after an error proving it
//! was not applied (`MOVED`; `ASK`, sent on to the node it names behind an `ASKING`;
//! `READONLY`, `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`; no connection to the
//! slot's node, nor to the node an `ASK` named; a connection refused), a read also after a dropped connection, as the
//! client's own retries did. A write whose connection dropped or timed out ends with that
//! (retryable) error, as on one server, and so does any request that timed out: the
//! response timeout bounds the call, not each of its tries.
//!
//! Writes and reads have a client each (`connect.rs`: reads are not held behind a write
//! `CLIENT PAUSE WRITE` holds), and each learns the slot map on its own: a redirection
//! one meets updates its map, not the other's. A transaction (a read's `MULTI`) learns
//! nothing from its own `MOVED`: the server aborts it with `EXECABORT`, which the client
//! does not act on, so [`Cluster`] shows the client that `MOVED` with a command of its
//! own, then sends the transaction again (`Cluster::show_moved`). An `ASK` inside the
//! abort (its slot migrating, the keys moved on) sends the transaction to the node it
//! names behind an `ASKING`, which holds until its `EXEC`.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, RetryMethod,
    Value,
};

use crate::config::{RETRY_MAX_DELAY, RETRY_MIN_DELAY};

/// The cluster client and how requests sent through it are sent again. As a
/// [`ConnectionLike`] it sends reads (see the module documentation);
/// [`for_writes`](Self::for_writes) gives the one for writes.
#[derive(Clone)]
pub(crate) struct Cluster {
    conn: ClusterConnection,
    /// How to reach a node the client holds no connection to (see [`Direct`]); shared,
    /// as every clone of the storage's connection is.
    direct: Arc<Direct>,
    /// How many times a request is sent again at most (`reconnect_retries`).
    retries: usize,
    /// Whether a request may be sent again after it may have reached a node: it only
    /// reads, or does no harm twice.
    repeatable: bool,
}

/// What to do after a request failed.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Send again now. After `MOVED` the client takes the request only once its slot map
    /// is rebuilt, so it goes to the slot's new node.
    Now,
    /// The slot is migrating and the key is on this node: send again to it, `ASKING`.
    Ask { host: String, port: u16 },
    /// The cluster or the connection needs a moment: wait, then send again.
    Later,
    /// Report the error: final, or a write that may have been applied.
    Stop,
}

impl Cluster {
    /// `conn`, a client built without retries, sending each read again up to `retries`
    /// times; `direct` reaches the nodes it has no connection to.
    pub(crate) fn new(conn: ClusterConnection, direct: Arc<Direct>, retries: usize) -> Self {
        Self {
            conn,
            direct,
            retries,
            repeatable: true,
        }
    }

    /// The same client, for requests that write: sent again only when refused.
    pub(crate) fn for_writes(&self) -> Self {
        Self {
            repeatable: false,
            ..self.clone()
        }
    }

    /// Sends what `attempt` sends (to the slot's node, or to the node an `ASK` named,
    /// `ASKING`) until it succeeds, the error calls for no other try, or the tries run out.
    async fn send<'a, V>(
        &self,
        transaction: bool,
        attempt: impl Fn(Option<Asking>) -> BoxFuture<'a, RedisResult<V>>,
    ) -> RedisResult<V> {
        let mut ask = None;
        let mut tries = 0;
        loop {
            let err = match attempt(ask.take()).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let next = next_after(&err, self.repeatable, transaction);
            if next == Next::Stop || tries >= self.retries {
                return Err(err);
            }
            tries += 1;
            tracing::debug!(error = %err, tries, "sending a Redis Cluster request again");
            match next {
                Next::Ask { host, port } => {
                    ask = Some(Asking {
                        conn: self.conn.clone(),
                        direct: Arc::clone(&self.direct),
                        host,
                        port,
                    });
                }
                Next::Later => tokio::time::sleep(backoff(tries)).await,
                Next::Now | Next::Stop => {}
            }
        }
    }

    /// The reply of every primary the client knows of to `cmd`, a read without keys,
    /// by the node's address; a node's refusal is its reply (a [`Value::ServerError`]).
    /// Sent again as this client sends a read (the storage's writes go through
    /// [`for_writes`](Self::for_writes), not this one): a node whose connection dropped
    /// fails the whole request, and the client reconnects it meanwhile.
    pub(crate) async fn on_every_primary(&self, cmd: &Cmd) -> RedisResult<Vec<(String, Value)>> {
        // No response policy: the client answers with each node's reply, by address.
        let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let attempt = |_: Option<Asking>| {
            let (mut conn, cmd, routing) = (self.conn.clone(), cmd.clone(), routing.clone());
            async move { conn.route_command(cmd, routing).await }.boxed()
        };
        let replies = self.send(false, attempt).await?;
        Ok(redis::from_redis_value(replies)?)
    }

    /// Makes the client rebuild its slot map after `pipeline`, a transaction, met `MOVED`:
    /// the server aborts the transaction (`EXECABORT`, the `MOVED`s inside), which the
    /// client does not act on, so a transaction on a moved slot would fail until another
    /// request of this client met a `MOVED` of its own. An `EXISTS` of the transaction's
    /// first key (the first argument of its first command that has one: a read, which no
    /// pause holds) meets the same `MOVED` as a command of its own, which the client acts
    /// on before it takes the next request. Its reply does not matter.
    async fn show_moved(&self, pipeline: &Pipeline) {
        let key = pipeline
            .cmd_iter()
            .find_map(|cmd| match cmd.args_iter().nth(1) {
                Some(redis::Arg::Simple(key)) => Some(key),
                _ => None,
            });
        let Some(key) = key else {
            return;
        };
        let mut exists = redis::cmd("EXISTS");
        exists.arg(key);
        let _ = exists.query_async::<Value>(&mut self.conn.clone()).await;
    }
}

impl ConnectionLike for Cluster {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let conn = self.conn.clone();
        let attempt = move |ask: Option<Asking>| -> BoxFuture<'a, RedisResult<Value>> {
            let mut conn = conn.clone();
            async move {
                match ask {
                    Some(mut asking) => asking.command(cmd).await,
                    None => conn.req_packed_command(cmd).await,
                }
            }
            .boxed()
        };
        async move { self.send(false, attempt).await }.boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let conn = self.conn.clone();
        let attempt = move |ask: Option<Asking>| -> BoxFuture<'a, RedisResult<Vec<Value>>> {
            let mut conn = conn.clone();
            async move {
                match ask {
                    Some(mut asking) => asking.commands(pipeline).await,
                    None => conn.req_packed_commands(pipeline, offset, count).await,
                }
            }
            .boxed()
        };
        let transaction = pipeline.is_transaction();
        async move {
            match self.send(transaction, &attempt).await {
                // Aborted whole: nothing was applied, so even a write goes again.
                Err(err) if transaction && is_moved_in_transaction(&err) => {
                    self.show_moved(pipeline).await;
                    self.send(transaction, &attempt).await
                }
                sent => sent,
            }
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// What a request that failed with `err` calls for; see [`Next`]. `repeatable`: it may
/// be sent again after it may have reached a node.
fn next_after(err: &RedisError, repeatable: bool, transaction: bool) -> Next {
    // A refused connection is an I/O error the client counts as a dropped one, but
    // nothing was sent on it.
    if err.is_connection_refusal() {
        return Next::Later;
    }
    // No reply within `response_timeout`, the bound of a call (on one server nothing
    // sends it again): sent again, a read would wait as long again, and a call on a
    // node that does not answer would last `reconnect_retries` + 1 timeouts.
    if err.is_timeout() {
        return Next::Stop;
    }
    if transaction && let Some((host, port)) = asked_in_transaction(err) {
        return Next::Ask { host, port };
    }
    match err.retry_method() {
        RetryMethod::MovedRedirect | RetryMethod::RefreshSlotsAndRetry => Next::Now,
        // A transaction's `ASK` comes inside its abort (above).
        RetryMethod::AskRedirect if !transaction => err
            .redirect_node()
            .and_then(|(node, _slot)| split_node(node))
            .map_or(Next::Stop, |(host, port)| Next::Ask { host, port }),
        // `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`; and no connection to the
        // slot's node (`ClusterConnectionNotFound`), found before anything was sent.
        RetryMethod::WaitAndRetry | RetryMethod::ReconnectFromInitialConnections => Next::Later,
        // A dropped connection or a garbled reply (the client reconnects meanwhile): the
        // node may have applied it.
        RetryMethod::Reconnect if repeatable => Next::Later,
        RetryMethod::RetryImmediately if repeatable => Next::Now,
        // Including any method a newer client adds: the conservative answer.
        _ => Next::Stop,
    }
}

/// Whether `err`, a transaction's, is the server's abort of it (`EXECABORT`) for a
/// `MOVED`: a slot of its keys moved to another node since the client's slot map.
fn is_moved_in_transaction(err: &RedisError) -> bool {
    let Some(errors) = err.clone().into_server_errors() else {
        return false;
    };
    errors.iter().any(|(_, error)| error.code() == "MOVED")
}

/// The node an `ASK` inside `err`, a transaction's abort (`EXECABORT`), names: the node
/// of its slot found a key missing (moved on, the slot migrating), so the whole
/// transaction goes there behind an `ASKING` ([`Asking::commands`]). Nothing was
/// applied.
fn asked_in_transaction(err: &RedisError) -> Option<(String, u16)> {
    let errors = err.clone().into_server_errors()?;
    let (_, ask) = errors.iter().find(|(_, error)| error.code() == "ASK")?;
    // `ASK <slot> <host>:<port>`.
    let node = ask.details()?.split_whitespace().nth(1)?;
    split_node(node)
}

/// Whether a write that failed with `err` may have been applied all the same: its
/// connection dropped or its reply was garbled or timed out after the node received it.
/// The errors [`next_after`] sends a write again for prove it was not applied; so do a
/// server's error replies (the scripts check everything before their first write).
pub(crate) fn may_have_applied(err: &RedisError) -> bool {
    !err.is_connection_refusal()
        && matches!(
            err.retry_method(),
            RetryMethod::Reconnect | RetryMethod::RetryImmediately
        )
}

/// The wait before the `tries`-th try: as between connection attempts, doubling from
/// [`RETRY_MIN_DELAY`] up to [`RETRY_MAX_DELAY`].
fn backoff(tries: usize) -> Duration {
    let doublings = u32::try_from(tries.saturating_sub(1)).unwrap_or(u32::MAX);
    RETRY_MIN_DELAY
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(RETRY_MAX_DELAY)
}

/// `host:port` (the host maybe an IPv6 address, with or without brackets) as its parts.
fn split_node(node: &str) -> Option<(String, u16)> {
    let (host, port) = node.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

/// How to reach a cluster node the client holds no connection to: the seed node's
/// connection settings (credentials, TLS, database) with the node's address, and the
/// storage's timeouts.
///
/// The client connects only to the nodes that serve slots, and routing by address uses
/// only those connections. A node that joined to take slots over (the usual way a cluster
/// grows) serves none until the first has moved, so the `ASK`s of that first migration
/// name a node the client cannot reach; such a request goes on a connection of its own.
pub(crate) struct Direct {
    seed: redis::ConnectionInfo,
    config: redis::AsyncConnectionConfig,
}

impl Direct {
    /// Settings from `seed`, a client of one seed node, and these timeouts.
    pub(crate) fn new(seed: &redis::Client, connect: Duration, response: Duration) -> Self {
        Self {
            seed: seed.get_connection_info().clone(),
            config: redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect))
                .set_response_timeout(Some(response)),
        }
    }

    /// A new connection to the node at `host:port`. A write sent on it is an `EVALSHA`,
    /// and the node, serving no slots until now, may know none of the scripts: its
    /// `NOSCRIPT` ends the request, which the storage sends again as the script's `EVAL`
    /// (see `storage/scripting.rs`). Nothing is loaded ahead: that took a `SCRIPT LOAD` of
    /// every script (some 100 KB) for each request sent this way, and failed every such
    /// request for a user without `SCRIPT`.
    async fn connect(&self, host: &str, port: u16) -> RedisResult<MultiplexedConnection> {
        let addr = match self.seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        let client = redis::Client::open(self.seed.clone().set_addr(addr))?;
        client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }
}

/// The cluster client sending to one node, an `ASKING` before each command: how a
/// request follows an `ASK`. Replies are those of the request's own commands.
struct Asking {
    conn: ClusterConnection,
    direct: Arc<Direct>,
    host: String,
    port: u16,
}

impl Asking {
    fn route(&self) -> SingleNodeRoutingInfo {
        SingleNodeRoutingInfo::ByAddress {
            host: self.host.clone(),
            port: self.port,
        }
    }

    /// The `count` replies from `offset` of `pipe` sent to the node, through the client's
    /// connection to it, or a connection of its own when the client holds none. The
    /// client finds none before sending anything, so the request goes once either way.
    /// A connection of its own that cannot be made (refused, timed out, its handshake
    /// failed) sent nothing either: that fails as the client's own "no connection to the
    /// slot's node" does ([`not_reached`]).
    async fn send(
        &mut self,
        pipe: Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let route = self.route();
        match self
            .conn
            .route_pipeline(pipe.clone(), offset, count, route)
            .await
        {
            Err(err) if err.kind() == ErrorKind::ClusterConnectionNotFound => {
                let mut conn = (self.direct.connect(&self.host, self.port).await)
                    .map_err(|err| not_reached(&self.host, self.port, &err))?;
                conn.req_packed_commands(&pipe, offset, count).await
            }
            sent => sent,
        }
    }

    async fn command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let mut pipe = redis::pipe();
        pipe.cmd("ASKING").add_command(cmd.clone());
        let mut replies = self.send(pipe, 1, 1).await?;
        replies.pop().ok_or_else(no_reply)
    }

    /// The replies of `pipeline`, each command behind an `ASKING`; a transaction behind
    /// one `ASKING`, which holds for every command up to its `EXEC`.
    async fn commands(&mut self, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
        if pipeline.is_transaction() {
            return self.transaction(pipeline).await;
        }
        let mut pipe = redis::pipe();
        for cmd in pipeline.cmd_iter() {
            pipe.cmd("ASKING").add_command(cmd.clone());
        }
        let count = 2 * pipeline.len();
        let replies = self.send(pipe, 0, count).await?;
        // Each command's reply follows its `ASKING`'s.
        Ok(replies.into_iter().skip(1).step_by(2).collect())
    }

    /// `pipeline`, a transaction, as `ASKING`, `MULTI`, its commands, `EXEC`; the reply of
    /// the `EXEC`, as the transaction sent itself gives it. Not `pipeline` as it is: its
    /// `MULTI` would come ahead of the `ASKING`, which is then queued, too late for the
    /// node to take the commands. A command the node refuses as it queues it
    /// (`TRYAGAIN`: the session's keys are on both nodes for a moment; `MOVED`: the move
    /// ended) aborts the transaction, and that refusal is the error.
    async fn transaction(&mut self, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
        let mut pipe = redis::pipe();
        pipe.cmd("ASKING").cmd("MULTI");
        for cmd in pipeline.cmd_iter() {
            pipe.add_command(cmd.clone());
        }
        pipe.cmd("EXEC");
        let mut replies = self.send(pipe, 0, pipeline.len() + 3).await?;
        let exec = replies.pop().ok_or_else(no_reply)?;
        let refused = replies.into_iter().find_map(|reply| match reply {
            Value::ServerError(err) => Some(err),
            _ => None,
        });
        match (refused, exec) {
            (Some(err), _) | (None, Value::ServerError(err)) => Err(err.into()),
            (None, exec) => Ok(vec![exec]),
        }
    }
}

/// The error of a connection to the node at `host:port`, which an `ASK` named, that
/// could not be made (`err`). Nothing was sent, so it is the client's own "no connection
/// to the slot's node" (`ClusterConnectionNotFound`): sent again after a wait, a write
/// too ([`next_after`]), never taken for a write that may have applied, and retryable
/// once the tries run out, naming the node. As it was, a connect timeout counted as a
/// reply that timed out (no other try; a write that may have applied) and another
/// failure as a dropped connection (a write that may have applied).
fn not_reached(host: &str, port: u16, err: &RedisError) -> RedisError {
    RedisError::from((
        ErrorKind::ClusterConnectionNotFound,
        "could not connect to the node a migrating slot's ASK named",
        format!("{host}:{port}: {err}"),
    ))
}

fn no_reply() -> RedisError {
    RedisError::from((
        redis::ErrorKind::Client,
        "no reply to a command sent ASKING",
    ))
}

#[cfg(test)]
mod tests {
    use std::io;

    use redis::ErrorKind;

    use super::*;

    use crate::error::server_reply_error as server;

    fn io(kind: io::ErrorKind) -> RedisError {
        RedisError::from(io::Error::new(kind, "test"))
    }

    #[test]
    fn only_refusals_send_a_write_again() {
        let next = |err: RedisError| next_after(&err, false, false);
        assert_eq!(next(server("MOVED 12 10.0.0.2:7001")), Next::Now);
        assert_eq!(next(server("READONLY no")), Next::Now);
        assert_eq!(
            next(server("ASK 12 10.0.0.2:7001")),
            Next::Ask {
                host: "10.0.0.2".into(),
                port: 7001
            }
        );
        assert_eq!(next(server("TRYAGAIN x")), Next::Later);
        assert_eq!(next(server("CLUSTERDOWN x")), Next::Later);
        let not_found = RedisError::from((ErrorKind::ClusterConnectionNotFound, "none"));
        assert_eq!(next(not_found), Next::Later);
        assert_eq!(next(io(io::ErrorKind::ConnectionRefused)), Next::Later);
        // It may have been applied.
        assert_eq!(next(io(io::ErrorKind::ConnectionReset)), Next::Stop);
        assert_eq!(next(io(io::ErrorKind::UnexpectedEof)), Next::Stop);
        assert_eq!(next(io(io::ErrorKind::TimedOut)), Next::Stop);
        assert_eq!(next(RedisError::from((ErrorKind::Io, "gone"))), Next::Stop);
        assert_eq!(next(server("NOSCRIPT x")), Next::Stop);
    }

    #[test]
    fn a_write_may_have_applied_only_when_its_reply_was_lost() {
        assert!(may_have_applied(&io(io::ErrorKind::ConnectionReset)));
        assert!(may_have_applied(&io(io::ErrorKind::UnexpectedEof)));
        assert!(may_have_applied(&io(io::ErrorKind::TimedOut)));
        assert!(may_have_applied(&RedisError::from((ErrorKind::Io, "gone"))));
        assert!(!may_have_applied(&io(io::ErrorKind::ConnectionRefused)));
        let not_found = RedisError::from((ErrorKind::ClusterConnectionNotFound, "none"));
        assert!(!may_have_applied(&not_found));
        for reply in [
            "MOVED 12 10.0.0.2:7001",
            "TRYAGAIN x",
            "NOSCRIPT x",
            "ERR fusion: no",
        ] {
            assert!(!may_have_applied(&server(reply)), "{reply}");
        }
    }

    /// Not after a timeout: `response_timeout` bounds the call, as on one server
    /// (`tests/cluster_growth.rs`).
    #[test]
    fn reads_are_also_sent_again_after_a_drop_but_not_after_a_timeout() {
        for transaction in [false, true] {
            let next = |err: RedisError| next_after(&err, true, transaction);
            assert_eq!(next(io(io::ErrorKind::ConnectionReset)), Next::Later);
            assert_eq!(next(RedisError::from((ErrorKind::Io, "gone"))), Next::Later);
            assert_eq!(next(io(io::ErrorKind::TimedOut)), Next::Stop);
            assert_eq!(next(server("MOVED 12 10.0.0.2:7001")), Next::Now);
            assert_eq!(next(server("NOSCRIPT x")), Next::Stop);
        }
    }

    /// A transaction too (behind one `ASKING`, `Asking::transaction`): an `ASK` for its
    /// `EXEC` (the keys moved on after it queued its commands) discarded it, as an `ASK`
    /// inside its abort does (`tests/cluster_growth.rs`).
    #[test]
    fn an_ask_is_followed_to_the_node_it_names() {
        let ask = server("ASK 12 [::1]:7001");
        for (repeatable, transaction) in [(false, false), (true, true), (false, true)] {
            assert_eq!(
                next_after(&ask, repeatable, transaction),
                Next::Ask {
                    host: "::1".into(),
                    port: 7001
                }
            );
        }
    }

    /// Found by a review: a connection to the node an `ASK` named that timed out ended a
    /// read as a reply that timed out would (no other try, "timed out waiting for the
    /// server"), and a write as one that may have applied; nothing was sent.
    #[test]
    fn a_node_an_ask_named_that_cannot_be_reached_is_tried_again() {
        for cause in [
            io(io::ErrorKind::TimedOut),
            io(io::ErrorKind::ConnectionRefused),
            io(io::ErrorKind::HostUnreachable),
            RedisError::from((ErrorKind::AuthenticationFailed, "no")),
        ] {
            let err = not_reached("10.0.0.2", 7001, &cause);
            for (repeatable, transaction) in [(false, false), (true, false), (true, true)] {
                assert_eq!(next_after(&err, repeatable, transaction), Next::Later);
            }
            assert!(!may_have_applied(&err), "{err}");
            assert!(err.to_string().contains("10.0.0.2:7001"), "{err}");
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), RETRY_MIN_DELAY);
        assert_eq!(backoff(2), RETRY_MIN_DELAY * 2);
        assert_eq!(backoff(60), RETRY_MAX_DELAY);
    }
}
