//! Options of [`FileSystemStorage`](crate::FileSystemStorage): how hard each write works to
//! survive a crash.

/// When the backend asks the operating system to flush data to the disk (`fsync`).
///
/// Every write is first handed to the OS in one `write()` call, which is enough to survive
/// the *process* crashing or being killed: the kernel owns the bytes from then on. Surviving
/// a *power loss or kernel crash* needs `fsync`, which waits for the disk: little on fast
/// flash storage, far more than the write itself on spinning disks and network file
/// systems. The policy decides which writes pay that price.
///
/// Whatever the policy, a write never leaves a half-written history behind: `save` and
/// `truncate` replace the file atomically, and a torn final line from an interrupted
/// `append` is detected and skipped (see the crate docs). And whatever the policy, a
/// directory the backend creates (the session directory and its missing parents, the
/// index's) has its entry synced into its parent, so that what is fsynced into it is not
/// lost with it; the index's marker directories only with `EveryWrite` (see the crate
/// README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// `save`, `truncate` and `delete` are durable; `append` is not fsynced. The default.
    ///
    /// `save` and `truncate` write a temporary file, fsync it, rename it over the session
    /// file and fsync the directory, so after they return the new history survives a power
    /// loss. `append` returns once its single `write()` is done: the messages survive the
    /// process being killed, but a power loss within the OS's write-back delay (seconds)
    /// can drop the most recent appends. On file systems that write data before the file
    /// size (ext4 with its default `data=ordered`, XFS) what remains is a prefix of the
    /// history, at worst with a torn or zero-filled last line, which `load` skips. This is
    /// the right choice for agents, where `append` runs on every turn.
    #[default]
    OnReplace,
    /// Like [`OnReplace`](Self::OnReplace), and every `append` also fsyncs the session file
    /// (and the directory when the append created the file) before returning; a creation
    /// or metadata update also syncs the index's owner, tag and expiry markers it adds
    /// (and the directories made for them).
    ///
    /// An acknowledged append then survives a power loss, at the cost of one disk flush
    /// per append. Choose it when a lost turn is expensive (audit trails, billing).
    EveryWrite,
}

/// Options for [`FileSystemStorage::connect_with`](crate::FileSystemStorage::connect_with).
///
/// ```no_run
/// # async fn demo() -> fusion_core::Result<()> {
/// use fusion_storage_fs::{FileSystemOptions, FileSystemStorage, SyncPolicy};
///
/// let options = FileSystemOptions::new().sync_policy(SyncPolicy::EveryWrite);
/// let storage = FileSystemStorage::connect_with("./sessions", options).await?;
/// assert_eq!(storage.sync_policy(), SyncPolicy::EveryWrite);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileSystemOptions {
    /// Which writes are fsynced; see [`SyncPolicy`].
    pub sync: SyncPolicy,
    /// Whether the common append and short loads may run on the calling task's thread;
    /// see [`inline_calls`](Self::inline_calls).
    pub inline_calls: bool,
}

impl Default for FileSystemOptions {
    fn default() -> Self {
        Self {
            sync: SyncPolicy::default(),
            inline_calls: true,
        }
    }
}

impl FileSystemOptions {
    /// The defaults: [`SyncPolicy::OnReplace`], inline calls.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets which writes are fsynced.
    pub fn sync_policy(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// Whether the common append and the load of a short session may run on the calling
    /// task's thread instead of Tokio's blocking pool (on by default).
    ///
    /// Handing a call to a blocking thread and back costs two thread wake-ups, several
    /// times what the common append's dozen small system calls cost, and on a busy
    /// machine a blocking thread also waits for a CPU behind the runtime's (figures in
    /// docs/performance.md). So these run right where they are called:
    /// - an append (by `append`, or by `write_if` with `Change::Append`, as an agent's
    ///   session sends it) of at most 16 KiB of JSON to an existing session, not fsynced,
    ///   whose lock nobody holds at that moment (tried without waiting), whose file ends
    ///   where its counters say, and whose messages' ids, if they have any, this storage's
    ///   memory of the session's last ids rules out (it does for every append after the
    ///   first of this process, unless another process wrote in between);
    /// - the read of a load of a session file of at most 256 KiB (about 800 messages of
    ///   an agent's turns, copied from the page cache in well under 0.1 ms) whose lock no
    ///   writer holds at that moment.
    ///
    /// Any other call, and one that meets anything else (a lock held by another process
    /// or task, a torn tail, an expired session), makes its file system calls on a
    /// blocking thread, as every call does with this off. (A load's parse runs on the
    /// task either way, 256 KiB of lines at a time with a yield between parts; a single
    /// message of many megabytes is parsed in one piece there, as on SQLite.) Turn it off
    /// where each file system call is a network round trip (NFS, SMB), so that no call
    /// holds a runtime thread for one.
    pub fn inline_calls(mut self, inline: bool) -> Self {
        self.inline_calls = inline;
        self
    }
}
