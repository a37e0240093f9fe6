//! [`FileSystemStorage`]: the [`ConversationStorage`] implementation over a directory.
//!
//! Compared with its neighbours: unlike the in-memory backend it survives restarts; unlike
//! SQLite or Redis it needs no server or driver and its data is plain text a person can
//! read, grep and back up with ordinary tools. It suits single machines, CLIs and agents;
//! several processes may share one directory, and its listing index pages through a
//! million sessions without reading their files (each session costs a few small files,
//! though: SQLite stores many sessions more compactly).
//!
//! ```no_run
//! # async fn demo() -> fusion_core::Result<()> {
//! use fusion_core::{ChatMessage, ConversationStorage};
//! use fusion_storage_fs::FileSystemStorage;
//!
//! let storage = FileSystemStorage::connect("./sessions").await?; // created if missing
//! storage.append("user-123", &[ChatMessage::user("hello")]).await?;
//! assert_eq!(storage.load("user-123").await?.len(), 1);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Expect, MetaUpdate, Result, Revision, SessionId,
    SessionInfo, SessionMeta, SessionPage, SessionQuery, SessionTimes, check_creation,
    check_purge_batch, check_storable,
};

use crate::batch::Batch;
use crate::error::BACKEND;
use crate::file_name;
use crate::index::Index;
use crate::jsonl;
use crate::listing::{self, Lister};
use crate::location;
use crate::options::{FileSystemOptions, SyncPolicy};
use crate::recent_cache::RecentCache;
use crate::retention::Retention;
use crate::session_files::{Creation, Directory, FileChange, SessionFiles, Times};

mod calls;

use calls::blocking;

/// Conversation storage in a directory: one JSON Lines file per session.
///
/// [`connect`](Self::connect) and [`connect_with`](Self::connect_with) create the
/// directory at once, so a path that cannot hold sessions fails there; [`new`](Self::new)
/// touches nothing and leaves the directory to the first write. Clones share their
/// configuration; any number of instances, in any number of processes, may use the same
/// directory at once (see the crate docs for the locking protocol).
///
/// File work runs on Tokio's blocking thread pool, so a Tokio runtime must be running;
/// only the common append (by `append` or `write_if`) and the read of a short session run
/// on the calling task's thread, never waiting there for a session's lock (see
/// [`FileSystemOptions::inline_calls`]), and loads are parsed there, a part at a time
/// with yields between. If a call's future is dropped
/// midway, the file operation still runs to completion (or failure) under its lock; it
/// is never left half-done.
#[derive(Debug, Clone)]
pub struct FileSystemStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: FileSystemOptions,
    index: Arc<Index>,
    /// The last ids of the sessions this instance appended to (see [`RecentCache`]).
    recent: Arc<RecentCache>,
}

impl FileSystemStorage {
    /// Storage at `location` with the default options ([`SyncPolicy::OnReplace`]).
    ///
    /// `location` is a directory path or a `file://` URL, everything after `file://` being
    /// the path (`file://sessions`, `file:///var/lib/app/sessions`), read as
    /// `fusion::StorageType` reads it ([`fusion_core::file_url`]). The directory and its
    /// parents are created unless they exist. Fails with [`Error::Config`] for a file URL
    /// that names no directory (`file://`, `file:rel`) or has a query or fragment, and with
    /// [`Error::Io`] naming the path when the directory cannot be created (no permission,
    /// or a file standing where a directory must be). An existing read-only directory is
    /// accepted: its sessions can be read, and writes fail when they are made.
    ///
    /// ```no_run
    /// # async fn demo() -> fusion_core::Result<()> {
    /// use fusion_storage_fs::FileSystemStorage;
    ///
    /// let storage = FileSystemStorage::connect("file://./sessions").await?;
    /// assert_eq!(storage.dir(), std::path::Path::new("./sessions"));
    /// # Ok(()) }
    /// ```
    ///
    /// [`SyncPolicy::OnReplace`]: crate::SyncPolicy::OnReplace
    /// [`Error::Config`]: fusion_core::Error::Config
    /// [`Error::Io`]: fusion_core::Error::Io
    pub async fn connect(location: impl AsRef<Path>) -> Result<Self> {
        Self::connect_with(location, FileSystemOptions::default()).await
    }

    /// Storage at `location` with `options`; see [`connect`](Self::connect) for the
    /// location and the errors.
    ///
    /// ```no_run
    /// # async fn demo() -> fusion_core::Result<()> {
    /// use fusion_storage_fs::{FileSystemOptions, FileSystemStorage, SyncPolicy};
    ///
    /// let options = FileSystemOptions::new().sync_policy(SyncPolicy::EveryWrite);
    /// let storage = FileSystemStorage::connect_with("./audited", options).await?;
    /// assert_eq!(storage.sync_policy(), SyncPolicy::EveryWrite);
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(
        location: impl AsRef<Path>,
        options: FileSystemOptions,
    ) -> Result<Self> {
        let dir = location::directory(location.as_ref())?;
        let dir = blocking(move || location::create(&dir).map(|()| dir)).await?;
        Ok(Self::from_parts(dir, options))
    }

    /// Storage in `dir` with the default options, without touching the disk.
    ///
    /// The plain, infallible constructor: nothing is checked or created here, the
    /// directory (and its parents) are created by the first write, and a directory that
    /// cannot be created makes that write fail with [`Error::Io`]. `dir` is a path, not a
    /// URL; use [`connect`](Self::connect) for a `file://` URL or to find a bad path at
    /// start-up.
    ///
    /// [`Error::Io`]: fusion_core::Error::Io
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::from_parts(dir.into(), FileSystemOptions::default())
    }

    fn from_parts(dir: PathBuf, options: FileSystemOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                index: Arc::new(Index::new(&dir)),
                recent: Arc::default(),
                dir,
                options,
            }),
        }
    }

    /// The directory holding the session files.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Which writes are fsynced, as set by [`FileSystemOptions::sync_policy`].
    pub fn sync_policy(&self) -> SyncPolicy {
        self.inner.options.sync
    }

    /// The file that holds (or would hold) `session_id`, for people and tools that want
    /// to read it directly (`cat`, `jq`, backups). Nothing is touched on disk.
    ///
    /// ```
    /// use fusion_storage_fs::FileSystemStorage;
    ///
    /// let storage = FileSystemStorage::new("sessions");
    /// let path = storage.session_path("tenant:42:Chat")?;
    /// assert_eq!(path, std::path::Path::new("sessions/tenant%3A42%3A%43hat.jsonl"));
    /// # Ok::<(), fusion_core::Error>(())
    /// ```
    pub fn session_path(&self, session_id: &str) -> Result<PathBuf> {
        SessionId::validate(session_id)?;
        Ok(self
            .inner
            .dir
            .join(file_name::session_file_name(session_id)))
    }

    /// Rebuilds the listing index from the session files, for a directory whose index
    /// was lost or damaged beyond what listings repair on their own (see the crate docs):
    /// the journal, the ids, and the owner, tag and expiry markers of every session
    /// (expired ones included, for [`purge_expired`](ConversationStorage::purge_expired)
    /// to find). O(sessions), like the build the first listing of a directory from an
    /// earlier version runs. Other processes may go on reading and writing meanwhile. A
    /// session whose file cannot be read is left out with a warning, and noted: the first
    /// listing to find that its file reads again builds the index again.
    pub async fn rebuild_index(&self) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || {
            inner.index.invalidate()?;
            let lister = Lister {
                at: inner.directory(),
            };
            lister.page(&SessionQuery::new().limit(1)).map(drop)
        })
        .await
    }
}

#[async_trait]
impl ConversationStorage for FileSystemStorage {
    /// Replaces the session file atomically: a fresh generation is stored (and fsynced) in
    /// the lock file, then a temporary file is written and fsynced, renamed over the
    /// session file, and the directory is fsynced. Metadata is kept. O(len of `history`).
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if history.is_empty() {
            return self.delete(session_id).await;
        }
        check_storable(BACKEND, session_id, history)?;
        let contents = jsonl::encode(history)?;
        let count = history.len() as u64;
        self.on_session("save", session_id, move |files| {
            files.replace(&contents, count)
        })
        .await
    }

    /// Reads the session file under a shared lock. A torn final line is skipped with a
    /// warning; any other unparseable line is [`fusion_core::Error::Corrupt`]. A session
    /// that has expired loads as empty (its expiry is in the lock file read anyway).
    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        Ok(self
            .read("load", session_id)
            .await?
            .map(|(messages, _)| messages)
            .unwrap_or_default())
    }

    /// Removes the session file, its metadata and its index markers (owner, tags,
    /// expiry), then its hidden lock file (see the crate docs).
    async fn delete(&self, session_id: &str) -> Result<()> {
        self.on_session("delete", session_id, SessionFiles::remove)
            .await
    }

    /// Lists the directory, decoding file names, and leaves out the sessions that have
    /// expired: those whose markers in the expiry index are due are checked (one lock
    /// file each), no other session file is opened. O(files in the directory). A missing
    /// directory has no sessions. In a directory no listing has indexed yet (written by
    /// an earlier version), every session's lock file is read instead.
    async fn list_sessions(&self) -> Result<Vec<String>> {
        let inner = self.inner.clone();
        blocking(move || {
            let ids = listing::list_dir(&inner.dir)?;
            if ids.is_empty() {
                return Ok(ids);
            }
            inner.retention().without_expired(ids)
        })
        .await
    }

    /// Serialises `messages` into one buffer (with batch markers, so that a crash stores
    /// all of them or none) and writes it with a single `write()` in append mode, under the
    /// session's exclusive lock. O(`messages`), independent of the history length: besides
    /// the write, a few bytes of the file's end are read to check it ends on a complete
    /// batch. The index adds one short line to this instance's own journal and the lock
    /// file's counters are read and rewritten in place: three small system calls, under
    /// no lock but the session's. The expiry is checked in the counters read anyway, and
    /// an idle one moves in the counters written anyway: no call more, with an expiry or
    /// without. A session that has expired is removed first (as `delete` does), and the
    /// append starts a new one.
    ///
    /// When a message has an id, the ids of the session's last
    /// [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW) lines are read first, under the same
    /// lock, from the file's end backwards (their first bytes, where this backend writes
    /// the id): the bytes of those lines at most, in reads of 8, 16, 32 and 64 KiB, fewer
    /// when every id is found sooner (a retry). Messages found there are not written
    /// again, nor counted; if all are, nothing is written. A batch without ids skips this.
    /// So does an append whose ids are all new to a session whose last ids this instance
    /// (or a clone) remembers from its own previous append, the file unchanged since
    /// (same generation, data end and inode): a few integer comparisons instead of the
    /// read. See [`SyncPolicy`] for durability.
    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if messages.is_empty() {
            return Ok(());
        }
        check_storable(BACKEND, session_id, messages)?;
        // Serialised before locking, so the lock is held only for the write itself.
        let batch = Batch::encode(messages)?;
        let files = self.inner.directory().files(session_id);
        if let Some(appended) = self.append_now("append", &files, None, &batch).await {
            return appended.map(drop);
        }
        blocking(move || {
            files
                .append(&batch)
                .map_err(|err| err.during("append", files.id()))
        })
        .await
    }

    /// Rewrites the first `len` lines atomically with a fresh generation, like `save`
    /// (unless that keeps every message); `len == 0` deletes. A cut inside an appended
    /// batch drops the cut batch's marker from the last kept line. Lines
    /// are counted, not parsed, so truncating just before a damaged line recovers a
    /// corrupt session. O(size of the file).
    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        self.on_session("truncate", session_id, move |files| files.truncate(len))
            .await
    }

    /// Reads the counters in the lock file and the metadata file under the session's
    /// shared lock: O(1), unless the counters do not describe the session file (a crash
    /// between a write and its counters, a hand edit, a session written by an earlier
    /// version), when the file's lines are counted (O(size of the file)) and the
    /// timestamps of such an earlier session come from the file system: `updated_at` is
    /// the session file's modification time, `created_at` the earliest of the creation
    /// times the file system keeps for its files and that modification time. A damaged
    /// metadata file is [`fusion_core::Error::Corrupt`]. An expired session is `None`.
    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        self.on_session("session_info", session_id, SessionFiles::info)
            .await
    }

    /// Writes the metadata file and the owner's, tags' and expiry's markers, then the
    /// counters and the lines, all under the session's exclusive lock taken once: no
    /// reader sees the session without its metadata. An expired session of that id is
    /// removed first, so the creation succeeds. O(`messages`).
    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        self.create("create_session", session_id, meta, messages, None)
            .await
    }

    /// As `create_session`, with the given times (none later than the clock) in the
    /// counters (and its `created_at` and when the copy was recorded in the metadata
    /// file, which a copy has even without metadata, in case the counters are lost), and
    /// the session's line in the index at its given
    /// `updated_at`, in this instance's journal of such lines (see the crate README), so
    /// listings place it there, after a rebuild of the index too. An idle expiry counts
    /// from that `updated_at`.
    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        times.validate()?;
        let call = "create_session_with_times";
        self.create(call, session_id, meta, messages, Some(times))
            .await
    }

    /// Reads, changes, validates and replaces the metadata file under the session's
    /// exclusive lock, moving the owner's and tags' markers, and the expiry marker if the
    /// new expiry comes before it; O(metadata). An expired session is removed and `None`
    /// returned.
    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        if update.is_empty() {
            // Nothing to change, so nothing is written and `updated_at` stays.
            return self.session_info(session_id).await;
        }
        let update = update.clone();
        self.on_session("update_session", session_id, move |files| {
            files.update(&update)
        })
        .await
    }

    /// Reads the listing index (see the crate docs), never every session file: a page
    /// reads the facts of its rows, plus the stale index entries between them, found
    /// by a binary search for the cursor. An owner or tag with few sessions (up to 2,000)
    /// reads the facts of all of them. The first listing of a directory that has no
    /// index yet (written by an earlier version) builds it: O(sessions), once. An expired
    /// session is left out like a stale entry (its facts read, then skipped) until
    /// [`purge_expired`](ConversationStorage::purge_expired) removes it.
    async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
        query.validate()?;
        let inner = self.inner.clone();
        let query = query.clone();
        blocking(move || {
            Lister {
                at: inner.directory(),
            }
            .page(&query)
        })
        .await
    }

    /// Reads the session file and the generation stored in its lock file under one shared
    /// lock. O(len of history), like `load`.
    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        Ok(self
            .read("load_revision", session_id)
            .await?
            .unwrap_or((Vec::new(), Revision::ABSENT)))
    }

    /// Checks and writes under the session's exclusive lock. The check reads the stored
    /// generation (one small read of the lock file) and, for [`Expect::Exactly`] of an
    /// existing session, counts the lines of the session file (O(size of the file));
    /// [`Expect::UnwrittenSince`] counts them too and, for the revision it names, compares
    /// the `updated_at` of the counters read with the generation (no further read; where
    /// they were lost or are stale, the session file's modification time plus the 2 s by
    /// which file times may fall before a write's own, 2 s after what `session_info`
    /// reports), all under the lock `update_session` takes too, so no metadata write lands
    /// between the check and the change. The write then costs what `append`, `truncate` or `save` costs. An append of
    /// messages the session holds already (by id, as `append` checks) writes nothing and
    /// returns the generation unchanged. An append that `append` would make on the calling
    /// task's thread is checked and made there (with [`Expect::Exactly`] and
    /// [`Expect::UnwrittenSince`], against the message count and `updated_at` of the
    /// counters, which then describe the file): an agent's session appends this way.
    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        SessionId::validate(session_id)?;
        check_storable(BACKEND, session_id, change.messages())?;
        // Serialised before locking, so the lock is held only for the file work.
        let change = match change {
            Change::Append(messages) => {
                let batch = Batch::encode(messages)?;
                let files = self.inner.directory().files(session_id);
                if let Some(appended) = self
                    .append_now("write_if", &files, Some(expected), &batch)
                    .await
                {
                    return appended;
                }
                FileChange::Append(batch)
            }
            Change::Truncate(len) => FileChange::Truncate(len),
            Change::Replace(history) => FileChange::Replace(jsonl::encode(history)?, Times::Write),
            Change::Rewrite(history) => FileChange::Replace(jsonl::encode(history)?, Times::Keep),
        };
        self.on_session("write_if", session_id, move |files| {
            files.write_if(expected, change)
        })
        .await
    }

    /// Walks the expiry index from its earliest markers (see the crate docs) and deletes
    /// each session that is still expired under its exclusive lock, as `delete` does.
    /// O(batch), whatever the number of sessions, plus one move of the marker of each
    /// idle session written since its marker was placed (at most one per such session
    /// per idle span). While a bucket of markers due is a symbolic link (never
    /// followed), every session's lock file is read too, as `list_sessions` reads them,
    /// so that the sessions whose markers it holds are purged all the same.
    async fn purge_expired(&self, batch: usize) -> Result<usize> {
        check_purge_batch(batch)?;
        let inner = self.inner.clone();
        blocking(move || inner.retention().purge(batch)).await
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

impl FileSystemStorage {
    /// Creates `session_id` for `create_session` (`times` `None`: now) and
    /// `create_session_with_times` (`call`).
    async fn create(
        &self,
        call: &'static str,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: Option<SessionTimes>,
    ) -> Result<u64> {
        check_creation(BACKEND, session_id, meta, messages)?;
        let batch = Batch::encode(messages)?;
        let meta = meta.clone();
        self.on_session(call, session_id, move |files| {
            files.create(Creation { meta: &meta, times }, &batch)
        })
        .await
    }
}

impl Inner {
    fn retention(&self) -> Retention<'_> {
        Retention {
            at: self.directory(),
        }
    }

    fn directory(&self) -> Directory<'_> {
        Directory {
            dir: &self.dir,
            index: &self.index,
            sync: self.options.sync,
            recent: &self.recent,
        }
    }
}
