//! PostgreSQL conversation storage for Fusion, on sqlx: two tables in one schema, one row
//! per message, shared by any number of processes.
//!
//! ```no_run
//! # async fn demo() -> fusion_core::Result<()> {
//! use std::time::Duration;
//! use fusion_core::{ChatMessage, ConversationStorage};
//! use fusion_storage_postgres::{PostgresOptions, PostgresStorage};
//!
//! let options = PostgresOptions::new("postgres://app:secret@db.internal/app?sslmode=require")
//!     .schema("chat")
//!     .statement_timeout(Some(Duration::from_secs(10)));
//! let storage = PostgresStorage::connect_with(options).await?;
//! storage.append("user-123", &[ChatMessage::user("hello")]).await?;
//! assert_eq!(storage.load("user-123").await?.len(), 1);
//! # Ok(()) }
//! ```
//!
//! # URLs and options
//!
//! `postgres://` or `postgresql://` URLs in libpq's form; query parameters sqlx knows
//! (`sslmode`, `sslrootcert`, `application_name`, ...) pass through unchanged, so
//! `?sslmode=require` or `verify-full` gives TLS (rustls). A `schema` parameter is
//! Fusion's: it picks the schema and is taken out before sqlx sees the URL.
//! [`PostgresOptions`] sets the rest: the schema (default `fusion`), pool size (8), connect timeout (5 s), statement
//! timeout (30 s) and [`Durability`]. Queries are checked at run time only
//! (`sqlx::query`), so building never needs a database.
//!
//! # Schema
//!
//! Every table lives in the schema of [`PostgresOptions::schema`] (any lowercase name,
//! keywords such as `user` included, but not PostgreSQL's own `pg_...`), created when missing,
//! with sqlx's `_sqlx_migrations` beside them, so several applications can share a
//! database ([`PostgresStorage::connect_existing`] creates nothing: it opens a schema only
//! if it holds a storage). The connections' `search_path` is that schema alone. The migrations
//! (`migrations/`) are embedded and run at connect under an advisory lock on the schema's
//! name (not sqlx's own, on the whole database), so processes
//! starting at once create the schema once (one that waits for that lock past the
//! statement timeout, or a `lock_timeout` the URL sets, fails retryably, saying another
//! process is creating or upgrading the schema):
//!
//! - `sessions (id text COLLATE "C" PRIMARY KEY, created_at timestamptz, updated_at
//!   timestamptz, message_count bigint, generation bigint, owner text, title text, tags
//!   text[], data text, expires_at bigint, expiry_idle bigint)`: one row per session that
//!   has messages; `generation` is the session's [`Revision`](fusion_core::Revision)
//!   generation, fresh on every save, shortening truncate and creation, kept by appends;
//!   owner, title, tags and data are its [`SessionMeta`](fusion_core::SessionMeta)
//!   (`tags` NULL when there are none, `data` the JSON object `serde_json` wrote);
//!   `expires_at` and `expiry_idle` its [`Expiry`](fusion_core::Expiry) in microseconds
//!   ([`StoredExpiry`](fusion_core::StoredExpiry); NULL: never, or not idle);
//!   `recent_ids int4[]` the 32-bit fingerprints of the ids of its last stored messages
//!   that have one (at most [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW); `{}`: none,
//!   NULL: not known since a truncate), for exactly-once appends (below).
//!   Indexed for the listing by `(updated_at DESC, id DESC)`, by `(owner, updated_at DESC,
//!   id DESC)` where an owner is set and by tag (GIN) where tags are set; for the purge by
//!   `expires_at` where one is set (`sessions_expiry`).
//! - `messages (session_id text REFERENCES sessions ON DELETE CASCADE, seq bigint, body
//!   text, PRIMARY KEY (session_id, seq))`: seqs are exactly `0..message_count`.
//!
//! `body` is `text`, not `jsonb`: the JSON `serde_json` wrote is stored and returned
//! byte for byte, with no parse on insert and no re-serialization on load. Measured once
//! (`tests/body_type.rs`, release build, PostgreSQL 15 on localhost, 2 cores, 2,000
//! messages of 1 KiB text plus a tool call and metadata, 3 runs): one-message appends
//! cost the same (0.35-0.37 ms `text`, 0.34-0.43 ms `jsonb`: the round trip dominates);
//! loading the 2,000-message history, parse included, took 11.0-12.3 ms with `text` and
//! 19.3-21.4 ms with `jsonb` (the server re-serializes `jsonb`); on disk 2.7 MiB vs
//! 3.2 MiB. `jsonb` would only pay off for queries into message fields, which this crate
//! never runs (`psql` can still cast: `body::jsonb ->> 'role'`).
//!
//! Version 2 (`migrations/0002_...`) added the metadata columns and the listing's indexes
//! and made ids compare byte by byte (collation `"C"`, the listing's order whatever the
//! database's collation); version 3 (`migrations/0003_...`) the two expiry columns and
//! `sessions_expiry`; version 4 (`migrations/0004_...`) `recent_ids`. An older schema upgrades in place when a storage opens it, keeping
//! every row as it was, no session expiring, no id known (none was stored before
//! version 4) (`tests/upgrade.rs`).
//!
//! # Operations
//!
//! - `append` is one statement, one round trip whatever the history length: it bumps the
//!   session row's `message_count` under the row's lock and inserts the messages
//!   numbered from it. Appenders in any number of processes queue on that lock, so none
//!   loses a message and each keeps its order.
//! - **Exactly once**: in that same statement, under that lock, the append compares the
//!   32-bit fingerprints of the batch's ids with the session row's `recent_ids` (those
//!   of its last [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW) ids, whatever number of
//!   id-less messages sits between them) and stores the batch only when the row's are
//!   known and none matches, adding them. A match says maybe (a retry, or another id
//!   sharing a fingerprint), and a truncate leaves them unknown (NULL): the statement then
//!   stores nothing and returns no row, nor any id. A transaction then locks the row
//!   (`SELECT ... FOR UPDATE`), reads the ids of the session's last 64 messages in a
//!   statement of its own (its snapshot, taken after the lock, holds every message a
//!   writer committed before) and stores the messages whose ids are not among them, with
//!   the window rebuilt, in a statement guarded by the generation and count read under
//!   the lock (so the guard holds; it stays, so that a call out of that order stores
//!   nothing). When every message was stored already, that statement stores none and
//!   leaves `updated_at` and an idle expiry as they were. A retry racing its first
//!   attempt, from any process, finds its fingerprints and then its ids; a save sets the
//!   window from the saved history and a truncate makes it unknown, under the same lock.
//!   `write_if`'s append runs the same statement, then (its transaction holding the
//!   row's lock already) the same read and guarded write; a creation (`create_session`,
//!   or `write_if` creating the session) runs its twin, which writes only if the row does
//!   not exist and also takes the times a copied session keeps. Why the window lives on
//!   the row and not in a unique index: `crate::sql`. A batch without ids runs the
//!   append statement of version 3 (less the switch a creation's twin took over), which
//!   reads and writes nothing of the window.
//!
//!   What the window costs, measured once (PostgreSQL 15 on localhost, 2 cores shared
//!   with other builds, release builds, before and after alternating in one sitting):
//!   the row carries 280 bytes of fingerprints (a full window of whole UUIDs took
//!   2.4 KB), and an append of two messages with ids writes 1.58 KB of WAL against
//!   1.20 KB without (4.36 KB with whole ids on the row), a retry that finds its ids
//!   0.40 KB; on the server the check is one overlap of two integer arrays (`EXPLAIN
//!   ANALYZE`: 0.09 ms for the statement either way). `fusion-bench` W1 with
//!   `--postgres-relaxed`, 13 runs each, ids over no ids in the same round (median):
//!   1.14 for the mean turn over all 4,546 turns (1.35 with whole ids), 1.10 for the
//!   median turn at 10,000 messages (1.54); with the default durability 1.08 (1.25),
//!   inside that setting's noise. Same O(1) at any history length.
//! - `load` and `load_revision` are one query each (one snapshot).
//! - `create_session` is the append's statement as a creation runs it, writing the row
//!   with its metadata and the messages only if the row does not exist;
//!   `create_session_with_times` that same statement, the row created and last written
//!   at the times given, each at most the server's clock (`least(given, now())`, to the
//!   microsecond), an idle expiry counting from the second; `update_session` a
//!   transaction that locks the row (`SELECT ... FOR UPDATE`), applies the change,
//!   validates it and writes it; `session_info` one key lookup.
//! - `list_page` is one keyset query: it walks the index of the query's order from the
//!   cursor's `(updated_at, id)` (or id) on and stops after `limit + 1` rows, so a page
//!   costs the same at any depth and with any number of sessions. Every write moves
//!   `updated_at` with `greatest(updated_at, now())`, never backwards, so a written
//!   session moves ahead of every cursor handed out and is never listed twice.
//! - `save`, `truncate` and `delete` are transactions that lock the session row first.
//! - `write_if` locks the row with `SELECT ... FOR UPDATE`, checks the generation (and
//!   count, and for [`Expect::UnwrittenSince`](fusion_core::Expect::UnwrittenSince) the
//!   `updated_at` the same statement reads, to the microsecond) and writes or rolls back
//!   with [`Error::Conflict`](fusion_core::Error::Conflict); a metadata update waits on
//!   that lock, so none lands between the check and the write. A write that would create
//!   the session is refused if another writer created it since.
//!
//! # Retention
//!
//! A session whose [`Expiry`](fusion_core::Expiry) has passed, on the server's clock
//! (`now()`, the clock of `updated_at`), is absent: every read skips it in its SQL, and
//! every write treats it as absent. An idle expiry is `updated_at` plus its span after
//! every write, computed in the write's own statement.
//!
//! - `append` stays one statement: its upsert's `ON CONFLICT DO UPDATE ... WHERE` refuses
//!   an expired row, and only then (no row back) a transaction deletes the session, if it
//!   still has expired, and runs the append again, which creates it afresh (new
//!   generation, no metadata). For a session with no expiry the statement does what it
//!   did before, plus a `NULL` test; one with an expiry also rewrites its
//!   `sessions_expiry` entry, which every append of any session already does for
//!   `sessions_updated` (appends are not HOT updates).
//! - `save` does the same inside its transaction; `create_session` after its statement
//!   finds the row; `write_if` reads the expiry with the row it locks, counts an expired
//!   session as absent and deletes it before writing; `truncate` and `update_session` find
//!   no session and write nothing.
//! - `purge_expired(batch)` is one statement: it locks the first `batch` expired sessions
//!   of `sessions_expiry` (`FOR UPDATE SKIP LOCKED`: each still expired when deleted, and
//!   sessions other transactions hold left for later) and deletes them with their
//!   messages. O(batch) however many sessions are stored.
//!
//! # Durability
//!
//! [`Durability::Server`] (default) leaves the server's `synchronous_commit` alone: with
//! PostgreSQL's default `on`, an acknowledged message survives a server crash.
//! [`Durability::Relaxed`] sets `synchronous_commit = off` on this storage's connections
//! only: commits stop waiting for a WAL flush (faster appends on slow disks), and a
//! server crash may lose the last fraction of a second of acknowledged messages, never
//! leave a half-written one.
//!
//! # Failure modes
//!
//! Errors are [`fusion_core::Error::Backend`] naming the operation, the session and the
//! URL with its password hidden.
//!
//! - Server unreachable at connect: a retryable error within the connect timeout. Later,
//!   after a server restart, the pool drops dead connections and opens new ones: calls
//!   while the server is down fail retryably after the connect timeout, and each
//!   pooled connection that was in use in the last 30 s fails one call retryably before
//!   it is replaced (connections are not pinged before every call, which would double
//!   the round trips of `append`).
//! - A statement that runs or waits for a lock past the statement timeout: cancelled by
//!   the server, a retryable error saying so (and to raise the timeout when the work
//!   itself, a very long history, needs longer).
//! - A transaction the server ends between two of a call's statements
//!   (`idle_in_transaction_session_timeout` shorter than a busy client's pause, or
//!   `transaction_timeout`): rolled back whole, a retryable error saying which setting.
//! - A server that stops answering (frozen, or behind a network that drops its packets),
//!   which no server-side timeout can end: a call gives up after twice the connect and
//!   statement timeouts (70 s by default; no limit when the statement timeout is left to
//!   the server or the URL), with a retryable error saying so (`connect` too: its look
//!   at the schema within one call limit, its creation or upgrade within one for each
//!   migration and one for the lock); whether it took effect is
//!   unknown, as when a connection drops. Its connection goes back to the pool once the
//!   server answers. A write of hundreds of MB over a slow link, whose upload the
//!   statement timeout does not count, needs timeouts that leave room for it.
//! - No pooled connection within the connect timeout: sqlx retries a new connection the
//!   server refuses as too many, as starting or outright (down) until then, and reports
//!   the timeout alone; so the call tries one new connection itself (within the connect
//!   timeout: up to twice it in all), and its error says what that met: the server's
//!   refusal, no answer, or a connection opened at once (every one of the pool's was in
//!   use if it had all it may; with room for more, the server had refused or not
//!   answered the pool's tries until then). Retryable unless that cause is not and the
//!   pool had room for more (a full pool's connections were in use, and work). One
//!   storage tries one at a time; calls timing out meanwhile share its finding
//!   (`timed_out`). An open whose pool gets no first connection says why the same way.
//! - A schema whose `_sqlx_migrations` records a version this build does not know (a
//!   newer release upgraded it): connect fails, not retryable, and writes nothing. A
//!   storage already open when a newer release upgrades its schema is not checked again
//!   on each call (a round trip each): its calls work as long as its statements fit the
//!   new schema, and one that no longer does (a column gone or renamed, a new constraint)
//!   fails, not retryable, saying a newer release upgraded the schema to that version and
//!   to restart the process on it (the records are read only then, on such an error).
//!   A column that changed to a type this build still reads (`text` to `varchar`) makes
//!   PostgreSQL refuse the statements a connection prepared before ("cached plan must not
//!   change result type"): such a call fails retryably, and the pool then closes the
//!   connections opened before it as they are next handed out (`storage::plans`).
//! - Wrong password, missing database, missing privileges, a TLS failure (a server
//!   certificate that is not trusted or does not name the URL's host included): not
//!   retryable, saying which.
//! - A read-only database (a standby, or `default_transaction_read_only = on`): reads
//!   work; writes fail, not retryable, saying to point the URL at the primary.
//! - A write whose messages are more than 1 GiB of JSON together, the most one statement
//!   carries (PostgreSQL reads at most 1 GiB in one protocol message, and a write binds all
//!   its messages in one): [`Error::InvalidMessage`](fusion_core::Error::InvalidMessage)
//!   naming the message past it, before anything is sent. (The server would drop the
//!   connection, which reads as "cannot reach the server".) One message may come close.
//! - Timeouts past PostgreSQL's longest (2^31 - 1 ms, about 24.8 days; `Duration::MAX`
//!   included) are taken as it; a zero connect or statement timeout is
//!   [`Error::Config`](fusion_core::Error::Config) when connecting.
//! - A stored row that is not a message, or a gap in the seqs:
//!   [`Error::Corrupt`](fusion_core::Error::Corrupt) naming the seq; tags or data edited
//!   into something that does not read back (a NULL tag, data that is not a JSON object):
//!   `Error::Corrupt` naming the session and the column.
//! - Invalid session ids and messages that could not be read back are refused before any
//!   SQL runs, as by every backend.
//! - A URL query parameter that neither Fusion (`schema`) nor sqlx reads (a misspelt
//!   `schma=`), or `schema` given twice: [`Error::Config`](fusion_core::Error::Config)
//!   naming it and listing the accepted ones, before connecting (sqlx alone would only
//!   log a warning and use the default schema).
//!
//! # Layers
//!
//! 1. `config` (options and URL parsing, with `url_query`: the query parameters a URL may
//!    carry), `error` (every driver error mapped to a
//!    [`fusion_core::Error`]; with `timed_out`, why a wait for a pooled connection ran
//!    out), `expiry` (the server's clock in SQL, which expired
//!    sessions every statement skips, and the expiry a write binds) and `batch` (messages
//!    as a write binds them: bodies, ids, window);
//! 2. `sql`: the SQL of every operation and turning rows back into messages, and `meta`:
//!    a session row as [`SessionInfo`](fusion_core::SessionInfo) and a page's query;
//! 3. `write`: the statements of each write and the conditional write's check,
//!    `update`: the transaction of a metadata update, and `migrate`: the schema;
//! 4. `storage`: [`PostgresStorage`], its constructors and its `ConversationStorage` impl.
//!
//! `races` (tests only) forces the interleavings an exactly-once append must survive.

mod batch;
mod config;
mod error;
mod expiry;
mod meta;
mod migrate;
#[cfg(test)]
mod races;
mod sql;
mod storage;
#[cfg(feature = "testing")]
pub mod testing;
mod timed_out;
mod update;
mod url_query;
mod write;

pub use config::{Durability, PostgresOptions};
pub use storage::PostgresStorage;

/// The sqlx pool type returned by [`PostgresStorage::pool`], re-exported so callers need
/// not name the matching sqlx version themselves.
pub use sqlx::PgPool;
