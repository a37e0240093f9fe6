//! [`FileSystemStorage`]: the [`ConversationStorage`] implementation over a directory.
//!
//! Compared with its neighbours: unlike the in-memory backend it survives restarts; unlike
//! SQLite or Redis it needs no server or driver and its data is plain text a person can
//! read, grep and back up with ordinary tools. It suits single machines, CLIs and agents
//! with up to tens of thousands of sessions; several processes may share one directory.
//!
//! ```no_run
//! # async fn demo() -> fusion_core::Result<()> {
//! use fusion_core::{ChatMessage, ConversationStorage};
//! use fusion_storage_fs::FileSystemStorage;
//!
//! let storage = FileSystemStorage::new("./sessions"); // created on first write
//! storage.append("user-123", &[ChatMessage::user("hello")]).await?;
//! assert_eq!(storage.load("user-123").await?.len(), 1);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::{ChatMessage, ConversationStorage, Result, SessionId, SessionInfo};

use crate::error::{BACKEND, IoContext, from_join};
use crate::file_name;
use crate::jsonl::{self, Tail};
use crate::options::FileSystemOptions;
use crate::session_files::SessionFiles;

/// Conversation storage in a directory: one JSON Lines file per session.
///
/// Construction is free and touches nothing; the directory is created by the first write.
/// Clones share their configuration; any number of instances, in any number of processes,
/// may use the same directory at once (see the crate docs for the locking protocol).
///
/// All file work runs on Tokio's blocking thread pool, so a Tokio runtime must be running.
/// If a call's future is dropped midway, the file operation still runs to completion (or
/// failure) under its lock; it is never left half-done.
#[derive(Debug, Clone)]
pub struct FileSystemStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: FileSystemOptions,
}

impl FileSystemStorage {
    /// Storage in `dir` with the default options ([`SyncPolicy::OnReplace`]).
    ///
    /// [`SyncPolicy::OnReplace`]: crate::SyncPolicy::OnReplace
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_options(dir, FileSystemOptions::default())
    }

    /// Storage in `dir` with `options`.
    pub fn with_options(dir: impl Into<PathBuf>, options: FileSystemOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir: dir.into(),
                options,
            }),
        }
    }

    /// The directory holding the session files.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options this storage was built with.
    pub fn options(&self) -> &FileSystemOptions {
        &self.inner.options
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

    /// Validates `session_id`, then runs `op` on its files on the blocking pool.
    async fn on_session<T: Send + 'static>(
        &self,
        session_id: &str,
        op: impl FnOnce(&SessionFiles) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        SessionId::validate(session_id)?;
        let files = SessionFiles::new(&self.inner.dir, session_id);
        tokio::task::spawn_blocking(move || op(&files))
            .await
            .map_err(from_join)?
    }

    /// Reads and parses a session, warning about a torn tail.
    async fn read(
        &self,
        session_id: &str,
    ) -> Result<Option<(Vec<ChatMessage>, std::fs::Metadata)>> {
        self.on_session(session_id, |files| {
            let Some((bytes, metadata)) = files.read()? else {
                return Ok(None);
            };
            // Parsed after `read` released the lock: a long history never holds up writers.
            let decoded = jsonl::decode(files.id(), &bytes)?;
            if let Tail::Torn { len } = decoded.tail {
                tracing::warn!(
                    backend = BACKEND,
                    session_id = files.id(),
                    path = %files.data().display(),
                    bytes = len,
                    "skipping a torn final line left by an interrupted append; \
                     the next append to this session removes it"
                );
            }
            Ok(Some((decoded.messages, metadata)))
        })
        .await
    }
}

#[async_trait]
impl ConversationStorage for FileSystemStorage {
    /// Replaces the session file atomically: a temporary file is written and fsynced, then
    /// renamed over it, and the directory is fsynced. O(len of `history`).
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if history.is_empty() {
            return self.delete(session_id).await;
        }
        let contents = jsonl::encode(history)?;
        self.on_session(session_id, move |files| files.replace(&contents))
            .await
    }

    /// Reads the session file under a shared lock. A torn final line is skipped with a
    /// warning; any other unparseable line is [`fusion_core::Error::Corrupt`].
    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        Ok(self
            .read(session_id)
            .await?
            .map(|(messages, _)| messages)
            .unwrap_or_default())
    }

    /// Removes the session file (its hidden lock file stays; see the crate docs).
    async fn delete(&self, session_id: &str) -> Result<()> {
        self.on_session(session_id, SessionFiles::remove).await
    }

    /// Lists the directory, decoding file names; nothing is opened. O(files in the
    /// directory). A missing directory has no sessions.
    async fn list_sessions(&self) -> Result<Vec<String>> {
        let dir = self.inner.dir.clone();
        tokio::task::spawn_blocking(move || list_dir(&dir))
            .await
            .map_err(from_join)?
    }

    /// Serialises `messages` into one buffer and writes it with a single `write()` in
    /// append mode, under the session's exclusive lock. O(`messages`), independent of the
    /// history length; see [`SyncPolicy`](crate::SyncPolicy) for durability.
    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if messages.is_empty() {
            return Ok(());
        }
        // Serialised before locking, so the lock is held only for the write itself.
        let lines = jsonl::encode(messages)?;
        let sync = self.inner.options.sync;
        self.on_session(session_id, move |files| files.append(&lines, sync))
            .await
    }

    /// Rewrites the first `len` lines atomically, like `save`; `len == 0` deletes. Lines
    /// are counted, not parsed, so truncating just before a damaged line recovers a
    /// corrupt session. O(size of the file).
    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        self.on_session(session_id, move |files| files.truncate(len))
            .await
    }

    /// Counts the messages by parsing the file (so a corrupt session is an error here as
    /// in `load`); `updated_at` is the file's modification time. `created_at` is `None`:
    /// `save` replaces the file, so no file-system timestamp records the first write.
    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        let Some((messages, metadata)) = self.read(session_id).await? else {
            return Ok(None);
        };
        Ok((!messages.is_empty()).then(|| SessionInfo {
            id: session_id.to_string(),
            message_count: messages.len(),
            created_at: None,
            updated_at: metadata.modified().ok(),
        }))
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

/// The sessions stored in `dir`: every canonical `{stem}.jsonl` with some content.
fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.at(dir)?,
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.at(dir)?;
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(file_name::id_from_file_name)
        else {
            continue;
        };
        // An empty file is what a process killed between creating the file and writing
        // its first line leaves behind; it holds no messages, so it is no session. The
        // stat is one per session, in line with this method's cost.
        // Followed through symlinks, as `load` would.
        match std::fs::metadata(entry.path()) {
            Ok(metadata) if metadata.is_file() && metadata.len() > 0 => ids.push(id),
            Ok(_) => {}
            // Deleted since the directory was read.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).at(&entry.path()),
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SyncPolicy;

    struct Harness {
        dir: tempfile::TempDir,
        options: FileSystemOptions,
    }

    #[async_trait]
    impl fusion_core::testkit::StorageHarness for Harness {
        type Storage = FileSystemStorage;
        async fn open(&self) -> Result<FileSystemStorage> {
            Ok(FileSystemStorage::with_options(
                self.dir.path().join("sessions"),
                self.options.clone(),
            ))
        }
    }

    async fn harness() -> Option<Harness> {
        Some(Harness {
            dir: tempfile::tempdir().unwrap(),
            options: FileSystemOptions::new(),
        })
    }

    async fn harness_sync_every_write() -> Option<Harness> {
        Some(Harness {
            dir: tempfile::tempdir().unwrap(),
            options: FileSystemOptions::new().sync_policy(SyncPolicy::EveryWrite),
        })
    }

    fusion_core::conformance_suite!(conformance_fs, harness);
    fusion_core::conformance_suite!(conformance_fs_sync_every_write, harness_sync_every_write);
}
