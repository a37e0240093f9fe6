//! `RedisStorage`: the `ConversationStorage` implementation on a Redis server.
//!
//! Each write is a Lua script on the session's own keys (atomic, Cluster-slot-local).
//! On one server the script also keeps the indexes that list sessions (by id and by
//! update time, of every session and of the session's owner) and the expiry index (see
//! `keys.rs`), so every write is one round trip. A Redis Cluster refuses a script whose
//! keys live in different slots, and each index has a slot of its own, so there the
//! indexes follow the script as requests of their own (`index.rs`): every write is two
//! round trips. Either way an index may hold more than the stored sessions but never
//! less, and readers check each entry against its session (`listing.rs`). On a cluster a
//! write that failed after its script may have run (its reply lost) never sent its index
//! requests: the session's entries are then sent from the session as stored, at once and
//! again by the retry that meets what the write did (`reindex` in `index.rs`).
//!
//! The same scripts make the conditional writes of issue #13 (`conditional.rs`); session
//! metadata is in `meta.rs`; retention (a session past its expiry is absent to every
//! reader and writer; `purge_expired`) in the scripts and `retention.rs`; how writes
//! reach the server in `write.rs`, which connection a request goes on and when it is
//! sent again in `sending.rs`, scripts the server does not know in `scripting.rs`.

mod conditional;
mod followed;
mod forget;
mod index;
mod listing;
mod meta;
mod read_only;
mod replica;
mod retention;
mod scripting;
mod sending;
mod upkeep;
mod write;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Expect, MetaUpdate, Result, Revision, SessionId,
    SessionInfo, SessionMeta, SessionPage, SessionQuery, SessionTimes, check_storable,
};

use crate::changes::SessionChanges;
use crate::config::{RedisOptions, ReplicaAcks};
use crate::connect;
use crate::connection::{Connection, Request};
use crate::error::{BACKEND, Op, corrupt_element, no_connection, parse_redis_error};
use crate::keys::Keys;
use crate::scripts;
use crate::settings::ValueLimit;
use crate::stored::is_past;

/// Conversation storage on Redis: one LIST and one HASH per session, sorted sets indexing
/// the sessions by id and by update time (of every session and per owner).
///
/// Clones share its connections: one for writes and one for reads, opened side by side by
/// `connect` (`connect.rs`), so that a write `CLIENT PAUSE WRITE` holds (a failover) holds
/// no read behind it. To one server they are two `redis` `ConnectionManager`s, so each
/// storage counts twice against the server's `maxclients` (and once more per
/// [`subscribe_changes`](Self::subscribe_changes) stream). When one drops, the next call
/// on it reconnects (with bounded retries), so a server restart costs the calls made
/// while it is down, which fail with a retryable error, and nothing more.
/// To a Redis Cluster (`redis+cluster://` URLs) they are two of the redis crate's cluster
/// clients, each holding a connection to every node (replicas included), so each storage
/// counts twice against every node's `maxclients`. Each routes a request to the node
/// serving the session's slot, follows redirections and refreshes its slot map when the
/// topology changes; while a failed primary is being replaced, calls on its slots fail
/// with a retryable error.
///
/// Costs: `append` is one round trip (the write script, which on one server also
/// scores the session in the by-update indexes; on a cluster those `ZADD`s are a second
/// request), O(new messages) whatever the history's length, and a session with an
/// expiry costs it three or four calls more inside the script, one without none;
/// messages with ids are stored once, checked against a window of the session's last
/// ones read and rewritten by the same script (no call more: `scripts/window.rs`); `load`
/// is one `MULTI` (`LRANGE`, the session's `expires_at` and the server's `TIME`);
/// `list_sessions` is O(sessions) and never scans the keyspace; `list_page` is
/// O(page) (see `listing.rs` for the tag filter); `session_info` is one read of the
/// session's two keys; `truncate` is an in-place `LTRIM`. `load_revision` is one `MULTI`
/// (`LRANGE`, `HMGET` of the generation and expiry, `TIME`); `write_if` is the same script as the
/// unconditional write, which checks the generation (and for [`Expect::Exactly`] the
/// `LLEN`) before writing, so a conditional append costs what `append` costs.
/// `purge_expired` reads only the due entries of the expiry index: O(batch).
/// Listing needs Redis 6.2 or newer (`ZADD ... GT`, `ZRANGE ... REV`).
#[derive(Clone)]
pub struct RedisStorage {
    conn: Connection,
    reads: Connection, // Not held behind a paused write (`connect.rs`).
    keys: Keys,
    ttl: Option<Duration>,
    replica_acks: Option<ReplicaAcks>,
    connect_timeout: Duration,
    /// How long the driver waits for one reply (`RedisOptions::response_timeout`): also
    /// the bound of a prune's look-again call, upkeep that waits for a busy node as any
    /// request does, but not for the retries of one that does not answer (`forget.rs`).
    response_timeout: Duration,
    /// The longest value the server (every primary of a cluster) takes, if known: a
    /// longer message is refused before it is sent (`write.rs`). Shared by the clones, and
    /// read again after a write's connection dropped (`settings.rs`).
    max_value: Arc<ValueLimit>,
    /// Whether the write scripts publish each change (`RedisOptions::publish_changes`).
    publish_changes: bool,
    /// Where [`subscribe_changes`](Self::subscribe_changes) connects: the server, or each
    /// seed node of a cluster in turn.
    subscribe_to: Arc<[redis::Client]>,
    url: Arc<str>,
    /// Closes the connection to a server that turned out a replica (`replica.rs`).
    reopen: Arc<replica::Reopen>,
    /// Whether the scripts that only read go as `EVALSHA_RO` (`scripting.rs`): shared by
    /// the clones, off for a minute once the server refused it (`read_only.rs`).
    read_only_scripts: Arc<read_only::ReadOnlyScripts>,
    /// The scripts a background `SCRIPT LOAD` is loading on a cluster (`scripting.rs`).
    pinning: scripting::Pinning,
    /// A cluster's purge rounds whose claims may stand unknown to them (`retention.rs`):
    /// a next round claims as one, and so finds its entries.
    unsettled_claim: Arc<Mutex<Vec<retention::Unsettled>>>,
}

impl fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStorage")
            .field("url", &self.url)
            .field("key_prefix", &self.keys.prefix())
            .field("ttl", &self.ttl)
            .field("cluster", &self.conn.is_cluster())
            .finish_non_exhaustive()
    }
}

impl RedisStorage {
    /// Connects to `url` with the default options (prefix `fusion`, no TTL).
    ///
    /// `redis://[user[:password]@]host[:port][/db]` for one server,
    /// `redis+cluster://[user[:password]@]host:port,host:port,...` for a Redis Cluster
    /// (any reachable seed nodes; the client finds the rest), or `rediss://...` and
    /// `rediss+cluster://...` with the `tls` feature. See
    /// [`connect_with`](Self::connect_with) for the query parameters and the errors.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// Connects to `url` with `options` (key prefix, TTL, timeouts).
    ///
    /// The URL's query may hold Fusion's `key_prefix=PREFIX` and `publish_changes=true`,
    /// which set those options (a value contradicting one the options set otherwise than
    /// the default is refused), and the driver's `protocol=resp3`. Any other parameter,
    /// or `key_prefix` / `publish_changes` given twice, is refused before connecting: the
    /// redis crate would ignore it silently.
    ///
    /// Fails with [`Error::Config`] for a bad URL (naming the parameter and listing the
    /// accepted ones for a bad query), prefix or TTL, with
    /// [`Error::FeatureDisabled`] for `rediss://` without the `tls` feature, and with a
    /// retryable [`Error::Backend`] when the server cannot be reached within roughly
    /// `(reconnect_retries + 1) × connect_timeout` plus the backoff. No message or
    /// `Debug` output shows the URL's password.
    ///
    /// ```no_run
    /// # async fn demo() -> fusion_core::Result<()> {
    /// use std::time::Duration;
    /// use fusion_storage_redis::{RedisOptions, RedisStorage};
    ///
    /// let options = RedisOptions::new().key_prefix("chatbot").ttl(Duration::from_secs(3600));
    /// let storage = RedisStorage::connect_with("redis://127.0.0.1:6379/0", options).await?;
    /// assert_eq!(storage.ttl(), Some(Duration::from_secs(3600)));
    /// # Ok(()) }
    /// ```
    ///
    /// [`Error::Config`]: fusion_core::Error::Config
    /// [`Error::FeatureDisabled`]: fusion_core::Error::FeatureDisabled
    /// [`Error::Backend`]: fusion_core::Error::Backend
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Self> {
        let opened = connect::open(url, options).await?;
        let options = opened.options;
        Ok(Self {
            conn: opened.conn,
            reads: opened.reads,
            keys: Keys::new(&options.key_prefix),
            ttl: options.ttl,
            replica_acks: options.replica_acks,
            connect_timeout: options.connect_timeout,
            response_timeout: options.response_timeout,
            publish_changes: options.publish_changes,
            subscribe_to: opened.subscribe_to.into(),
            reopen: Arc::default(),
            max_value: Arc::new(ValueLimit::new(opened.max_value)),
            read_only_scripts: Arc::new(read_only::ReadOnlyScripts::new(
                read_only::Clock::system(),
                opened.read_only_scripts,
            )),
            pinning: scripting::Pinning::default(),
            unsettled_claim: Arc::default(),
            url: opened.redacted_url.into(),
        })
    }

    /// Follows the changes made to this storage's sessions (its key prefix) by every
    /// storage that publishes them ([`RedisOptions::publish_changes`]), in any process,
    /// from now on, each session's in the order they were made.
    ///
    /// Opens a connection of its own for the subscription: to the server, or to the
    /// first seed node of a cluster that answers (a cluster forwards every published
    /// message to every node). Fails with a retryable [`Error::Backend`] when none can
    /// be reached within the connect timeout. See [`SessionChanges`] for what a
    /// subscriber may miss.
    ///
    /// ```no_run
    /// # async fn demo() -> fusion_core::Result<()> {
    /// use futures::StreamExt;
    /// use fusion_storage_redis::{RedisOptions, RedisStorage};
    ///
    /// let options = RedisOptions::new().publish_changes(true);
    /// let storage = RedisStorage::connect_with("redis://127.0.0.1:6379", options).await?;
    /// let mut changes = storage.subscribe_changes().await?;
    /// while let Some(change) = changes.next().await {
    ///     let change = change?;
    ///     println!("{} {}: {} messages", change.session_id, change.kind, change.len);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// [`Error::Backend`]: fusion_core::Error::Backend
    /// [`SessionChanges`]: crate::SessionChanges
    pub async fn subscribe_changes(&self) -> Result<SessionChanges> {
        let channel = self.keys.changes();
        let op = self.op("subscribe_changes", None);
        let mut failure = None;
        for client in self.subscribe_to.iter() {
            let subscribing = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok(pubsub.into_on_message())
            };
            failure = Some(
                match tokio::time::timeout(self.connect_timeout, subscribing).await {
                    Ok(Ok(messages)) => {
                        return Ok(SessionChanges::new(messages, channel, self.url.clone()));
                    }
                    Ok(Err(err)) => parse_redis_error(err, op),
                    Err(_elapsed) => no_connection(op, self.connect_timeout),
                },
            );
        }
        Err(failure.expect("a storage has a server or a seed node to subscribe on"))
    }

    /// The prefix of every key this storage uses.
    pub fn key_prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// The TTL applied on every write, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Whether this storage talks to a Redis Cluster (a `redis+cluster://` URL).
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// The form of a script that changes sessions this storage runs: publishing each
    /// change or not.
    fn writing<'a>(&self, script: &'a scripts::Writing) -> &'a scripts::Lua {
        script.publishing(self.publish_changes)
    }

    fn op<'a>(&'a self, name: &'static str, session_id: Option<&'a str>) -> Op<'a> {
        Op::new(name, &self.url, session_id)
    }

    /// The TTL argument of the scripts, `0` for none. Never saturates: `connect_with`
    /// refused any TTL over [`MAX_TTL`](crate::MAX_TTL).
    fn ttl_ms(&self) -> u64 {
        self.ttl
            .map_or(0, |ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }
}

#[async_trait]
impl ConversationStorage for RedisStorage {
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if history.is_empty() {
            return self.delete(session_id).await;
        }
        check_storable(BACKEND, session_id, history)?;
        self.write("save", session_id, "replace", None, history, &[])
            .await
            .map(drop)
    }

    /// One `MULTI`: `LRANGE 0 -1`, `HMGET expires_at` and the server's `TIME`, so a
    /// session whose expiry has passed loads empty even in the millisecond before Redis
    /// drops its keys; on a server out of memory, which refuses a `MULTI`, the same reads
    /// in a script.
    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        SessionId::validate(session_id)?;
        let (list, meta) = (self.keys.list(session_id), self.keys.meta(session_id));
        let (raw, (expires_at,), time): (_, (Option<String>,), _) = self
            .snapshot(&list, &meta, &["expires_at"])
            .await
            .map_err(|err| {
                let op = self.op("load", Some(session_id));
                parse_redis_error(err, op.on_keys(&[&list, &meta]))
            })?;
        if is_past(expires_at.as_deref(), time) {
            return Ok(Vec::new());
        }
        decode(session_id, &list, &raw)
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        SessionId::validate(session_id)?;
        self.remove(session_id).await.map(drop)
    }

    async fn list_sessions(&self) -> Result<Vec<String>> {
        self.all_ids().await
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if messages.is_empty() {
            return Ok(());
        }
        check_storable(BACKEND, session_id, messages)?;
        self.write("append", session_id, "append", None, messages, &[])
            .await
            .map(drop)
    }

    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        SessionId::validate(session_id)?;
        if len == 0 {
            return self.delete(session_id).await;
        }
        self.trim("truncate", session_id, len, None).await.map(drop)
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        SessionId::validate(session_id)?;
        self.read_revision(session_id).await
    }

    /// The check and the write are one Lua script (see `scripts.rs`).
    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        SessionId::validate(session_id)?;
        check_storable(BACKEND, session_id, change.messages())?;
        self.write_conditionally(session_id, expected, change).await
    }

    /// One atomic read of the session's list length and meta hash (a script), one round
    /// trip.
    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        self.info(session_id).await
    }

    /// The write script of a conditional append expecting no session, storing `meta`
    /// beside the first messages: one round trip on one server, two on a cluster.
    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        self.create(session_id, meta, messages, None).await
    }

    /// `create_session`'s script, given the times as two fields more: it keeps them, none
    /// later than its `TIME`, and writes the session at the given `updated_at` (its score
    /// in the by-update indexes; an idle expiry counts from there).
    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        times.validate()?;
        self.create(session_id, meta, messages, Some(times)).await
    }

    /// A read, then a compare-and-set script of the metadata fields (retried when another
    /// writer changed them in between); moves `updated_at`, the indexes and the TTL.
    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        self.update(session_id, update).await
    }

    /// O(limit) reads of the index of the query's order and owner, then of those
    /// sessions; see `listing.rs`.
    async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
        self.page(query).await
    }

    /// Reads the entries of the expiry index that are due, O(batch): one script on one
    /// server; on a cluster a script on the expiry index, one per session, then the
    /// index updates. See `retention.rs`.
    async fn purge_expired(&self, batch: usize) -> Result<usize> {
        self.purge(batch).await
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

/// The messages of `list` as `LRANGE` returned them; an element that is not a message
/// makes the session corrupt.
fn decode(session_id: &str, list: &str, raw: &[Vec<u8>]) -> Result<Vec<ChatMessage>> {
    raw.iter()
        .enumerate()
        .map(|(i, bytes)| {
            serde_json::from_slice(bytes).map_err(|err| corrupt_element(session_id, list, i, &err))
        })
        .collect()
}
