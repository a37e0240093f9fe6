//! Conversation storage: the [`ConversationStorage`] trait and the backends compiled in.
//!
//! Pick a backend by value with [`StorageType`] (or a URL) and open it with
//! [`StorageType::open`] ([`StorageType::open_existing`] to create nothing), or construct a
//! backend directly when you need its options.
//! [`StorageType::same_storage`] tells whether two values name the same data (by its
//! [`StorageLocation`], not by the URL's spelling).
//! Implement [`ConversationStorage`] to bring your own. [`list_sessions_with_info`] lists an
//! open storage's sessions with their message counts and timestamps;
//! [`list_sessions_page`] lists them a page at a time, newest first, filtered by owner or
//! tag ([`SessionQuery`]), and [`list_all_pages`] follows the cursors to the end.
//!
//! A session carries metadata besides its messages ([`SessionMeta`]: owner, title, tags,
//! a small data map), set when it is created
//! ([`create_session`](ConversationStorage::create_session)) and changed with
//! [`update_session`](ConversationStorage::update_session) ([`MetaUpdate`]).
//! [`OwnerScope`] is a storage seen by one owner, who never sees another owner's sessions.
//!
//! A session may expire ([`Expiry`]: at an instant, or after a span without writes); it
//! is then gone for every reader at once. [`purge_all_expired`] frees the space expired
//! sessions still take, and [`purge_not_written_since`] deletes sessions nobody has
//! written for a while.
//!
//! A [`Layer`] wraps any storage in another that adds something to every call
//! (`storage.layer(a).layer(b)`, [`StorageExt`]); [`Intercept`] is how one is written.
//! The bundled layers (encryption at rest, observability) are in `fusion::layers`.
//!
//! ```no_run
//! use fusion::storage::StorageType;
//!
//! # async fn demo() -> fusion::Result<()> {
//! let storage: StorageType = "sqlite://sessions.db".parse()?;
//! let store = storage.open().await?;
//! println!("{} sessions", store.list_sessions().await?.len());
//! # Ok(()) }
//! ```

mod location;
mod parse;
mod retention;
mod storage_type;

pub use self::location::StorageLocation;
pub use self::retention::{StalePurge, StalePurgeReport, purge_not_written_since};
pub use self::storage_type::StorageType;
use fusion_core::Result;
#[doc(inline)]
pub use fusion_core::{
    Change, ConversationStorage, Cursor, DEDUP_WINDOW, Expect, Expiry, Intercept, Intercepted,
    LEGACY_GENERATION, Layer, MAX_DATA_BYTES, MAX_DATA_DEPTH, MAX_IDLE, MAX_METADATA_DEPTH,
    MAX_PURGE_BATCH, MAX_TAG_LEN, MAX_TAGS, MAX_TITLE_CHARS, MIN_IDLE, MetaUpdate, OwnerScope,
    RecentIds, Revision, SessionInfo, SessionMeta, SessionOrder, SessionPage, SessionQuery,
    SessionTimes, StorageExt, StoredExpiry, check_creation, check_purge_batch, check_storable,
    is_expired, new_generation, purge_all_expired, unstored, validate_owner,
};

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
#[doc(inline)]
pub use fusion_storage_memory::InMemoryStorage;

#[cfg(feature = "fs")]
#[cfg_attr(docsrs, doc(cfg(feature = "fs")))]
#[doc(inline)]
pub use fusion_storage_fs::{
    FileSystemOptions, FileSystemStorage, SyncPolicy, session_id_from_file_name,
};

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
#[doc(inline)]
pub use fusion_storage_sqlite::{Durability, SqliteOptions, SqliteStorage};

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use fusion_storage_redis::{
    ChangeKind, RedisOptions, RedisStorage, SessionChange, SessionChanges,
};

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[doc(inline)]
pub use fusion_storage_postgres::{
    Durability as PostgresDurability, PostgresOptions, PostgresStorage,
};

/// Every session in `storage`, sorted by id, each with its [`SessionInfo`] or the error
/// that reading it gave.
///
/// One unreadable session does not hide the others: it is listed with its error. A
/// session deleted between the listing and the reading of its info is left out. Costs one
/// `list_sessions` and one `session_info` per session (a full load on backends without
/// their own `session_info`). It takes an open storage, so a program that already holds
/// the one its sessions run on (given to a [`SessionBuilder`](crate::agent::SessionBuilder),
/// say) lists exactly those sessions, without a second connection; a second
/// `sqlite::memory:` open would even be a different, empty database.
pub async fn list_sessions_with_info(
    storage: &dyn ConversationStorage,
) -> Result<Vec<(String, Result<SessionInfo>)>> {
    let mut ids = storage.list_sessions().await?;
    ids.sort();
    let mut sessions = Vec::with_capacity(ids.len());
    for id in ids {
        match storage.session_info(&id).await {
            Ok(Some(info)) => sessions.push((id, Ok(info))),
            Ok(None) => {}
            Err(err) => sessions.push((id, Err(err))),
        }
    }
    Ok(sessions)
}

/// One page of the sessions `query` selects, in its order: the first page without a
/// cursor, else the one after it; [`SessionPage::next`] is where the next one starts.
///
/// ```no_run
/// use fusion::storage::{SessionQuery, StorageType, list_sessions_page};
///
/// # async fn demo() -> fusion::Result<()> {
/// let storage = StorageType::Sqlite("sqlite://sessions.db".into()).open().await?;
/// let mut query = SessionQuery::new().owner("user-42").limit(20);
/// loop {
///     let page = list_sessions_page(storage.as_ref(), &query).await?;
///     for session in &page.sessions {
///         println!("{} {:?}", session.id, session.meta.title);
///     }
///     match page.next {
///         Some(next) => query = query.after(Some(next)),
///         None => break,
///     }
/// }
/// # Ok(()) }
/// ```
///
/// Costs what the backend's [`list_page`](ConversationStorage::list_page) costs: O(page)
/// on every bundled backend, however many sessions are stored.
pub async fn list_sessions_page(
    storage: &dyn ConversationStorage,
    query: &SessionQuery,
) -> Result<SessionPage> {
    storage.list_page(query).await
}

/// Every session `query` selects, in its order, read a page of `query.limit` at a time.
///
/// For a listing that must see everything (an export, a report); costs one
/// [`list_sessions_page`] per page. The query's cursor, if any, is where it starts.
pub async fn list_all_pages(
    storage: &dyn ConversationStorage,
    query: &SessionQuery,
) -> Result<Vec<SessionInfo>> {
    let mut query = query.clone();
    let mut sessions = Vec::new();
    loop {
        let page = storage.list_page(&query).await?;
        sessions.extend(page.sessions);
        match page.next {
            Some(next) => query = query.after(Some(next)),
            None => return Ok(sessions),
        }
    }
}

// The test needs a backend that can be damaged on disk.
#[cfg(all(test, feature = "fs"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listing_with_info_sorts_and_keeps_an_unreadable_session_with_its_error() {
        use fusion_core::ChatMessage;

        let dir = tempfile::tempdir().unwrap();
        let storage = StorageType::FileSystem(dir.path().to_path_buf());
        let store = storage.open().await.unwrap();
        let turn = [
            ChatMessage::user("one"),
            ChatMessage::assistant("two"),
            ChatMessage::user("three"),
        ];
        store.append("b", &turn[..2]).await.unwrap();
        store.append("a", &turn[..1]).await.unwrap();
        store.append("c", &turn).await.unwrap();
        // Damage a middle line: the file-system backend reports the session as corrupt.
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.file_name().unwrap().to_string_lossy().starts_with('c'))
            .unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[1] = "{broken";
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();

        let listed = list_sessions_with_info(store.as_ref()).await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(listed[0].1.as_ref().unwrap().message_count, 1);
        assert_eq!(listed[1].1.as_ref().unwrap().message_count, 2);
        assert!(listed[2].1.is_err(), "{:?}", listed[2].1);
    }
}

/// What the product description's `cargo test --lib storage::memory` runs: the
/// cross-backend conformance suite on the in-memory backend. Its crate runs the same suite
/// and the layered variants (`cargo test -p fusion-storage-memory`).
#[cfg(all(test, feature = "memory"))]
mod memory {
    use fusion_core::testkit::Clones;

    use super::InMemoryStorage;

    /// Every instance is a clone of one store, as clones share their sessions.
    async fn harness() -> Option<Clones<InMemoryStorage>> {
        Some(Clones(InMemoryStorage::new()))
    }

    fusion_core::conformance_suite!(conformance, harness);
}

/// What the product description's `cargo test --lib storage::filesystem` runs: the
/// conformance suite on the file-system backend, in a temporary directory. Its crate runs
/// it under every sync policy, with its own fault tests (`cargo test -p fusion-storage-fs`).
#[cfg(all(test, feature = "fs"))]
mod filesystem {
    use async_trait::async_trait;
    use fusion_core::testkit::StorageHarness;

    use super::{FileSystemStorage, Result};

    struct Harness(tempfile::TempDir);

    #[async_trait]
    impl StorageHarness for Harness {
        type Storage = FileSystemStorage;
        async fn open(&self) -> Result<FileSystemStorage> {
            Ok(FileSystemStorage::new(self.0.path().join("sessions")))
        }
    }

    async fn harness() -> Option<Harness> {
        Some(Harness(tempfile::tempdir().expect("a temporary directory")))
    }

    fusion_core::conformance_suite!(conformance, harness);
}
