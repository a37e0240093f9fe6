//! The session file as a writer finds it under the exclusive lock: open, with where its
//! data ends (before a torn tail left by an interrupted append).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};

use fusion_core::Result;

use super::SessionFiles;
use crate::counters::LockContents;
use crate::error::IoContext;
use crate::jsonl;
use crate::own_file;
use crate::recent_cache::FileIdentity;
use crate::regular_file;

/// How much of the end of the file an append reads first to check it ends on a complete
/// batch: enough for any batch marker, so a clean file needs this one read.
pub(super) const TAIL_PEEK: u64 = 128;
/// How far back to read at a time when looking for the start of a torn tail.
pub(super) const TAIL_CHUNK: u64 = 64 * 1024;

/// The session file as the holder of the exclusive lock finds it.
#[derive(Debug)]
pub(super) struct Current {
    /// Open for reading and appending, if it exists.
    pub(super) file: Option<File>,
    /// Its length.
    pub(super) len: u64,
    /// Its modification time in Unix microseconds (0 without a file), from the `fstat`
    /// that found its length: the last write counters of another length missed (see
    /// `derive_counters`).
    pub(super) modified_us: i64,
    /// The length of its data (all but a torn tail).
    pub(super) data_end: u64,
    /// Whether the data ends with a complete message missing its `\n`.
    pub(super) needs_newline: bool,
    /// Which file it is.
    pub(super) identity: FileIdentity,
    /// Whether it has other names too (hard links): see [`SessionFiles::unshare`].
    pub(super) shared: bool,
    /// The lock file's contents, once read under this lock and until a write stores new
    /// ones: the expiry check reads them, and what follows it uses them again.
    pub(super) contents: Option<LockContents>,
    /// Whether this lock's holder has just removed the session (an expired one), its
    /// delete recorded whole: the counters its lock file still holds are not those a
    /// delete that stopped left (see `SessionFiles::creation_floor`).
    pub(super) removed_here: bool,
}

impl Current {
    pub(super) fn exists(&self) -> bool {
        self.data_end > 0
    }

    /// No session file.
    pub(super) fn absent() -> Self {
        Current {
            file: None,
            len: 0,
            modified_us: 0,
            data_end: 0,
            needs_newline: false,
            identity: FileIdentity::default(),
            shared: false,
            contents: None,
            removed_here: false,
        }
    }
}

impl SessionFiles {
    /// Opens the session file, if any, and finds where its data ends.
    pub(super) fn inspect(&self) -> Result<Current> {
        self.inspect_with(|file, len| self.find_data_end(file, len).map(Some))
            .map(|current| current.expect("found the data end"))
    }

    /// [`inspect`](Self::inspect), if the data end is found in the first read of the
    /// file's end, which it is unless an interrupted append left a long torn tail: `None`
    /// if more must be read.
    pub(super) fn inspect_peeking(&self) -> Result<Option<Current>> {
        self.inspect_with(|file, len| self.peek_data_end(file, len))
    }

    /// Opens the session file, if any, and finds where its data ends with `data_end`
    /// (`None` if it gave up).
    fn inspect_with(
        &self,
        data_end: impl FnOnce(&File, u64) -> Result<Option<(u64, bool)>>,
    ) -> Result<Option<Current>> {
        let opened = regular_file::open(OpenOptions::new().read(true).append(true), &self.data);
        let (file, metadata) = match opened {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(Some(Current::absent()));
            }
            other => other.at(&self.data)?,
        };
        let len = metadata.len();
        let Some((data_end, needs_newline)) = data_end(&file, len)? else {
            return Ok(None);
        };
        Ok(Some(Current {
            file: Some(file),
            len,
            modified_us: super::modified_us(&metadata),
            data_end,
            needs_newline,
            identity: FileIdentity::of(&metadata),
            shared: own_file::is_shared(&metadata),
            contents: None,
            removed_here: false,
        }))
    }

    /// `current`, made the session file's only name before an append writes it in place.
    ///
    /// A session file with other names (hard links, say into a snapshot made with
    /// `cp -al`, rsnapshot or `rsync --link-dest`) would take the append under each of
    /// them, the snapshot's included. So it is copied to the `save` temporary file (no
    /// `save` runs: this holds the session's exclusive lock), fsynced and renamed over the
    /// session file, the directory fsynced, as a `save` does: a crash leaves one file or
    /// the other, whole, and the other names keep the old one. Every writer and reader
    /// opens the session file only under the lock, so none still holds the old one. A
    /// symbolic link at the session's path names a file a person keeps elsewhere, on
    /// purpose: written through as always.
    pub(super) fn unshare(&self, current: Current) -> Result<Current> {
        let Some(file) = current.file.as_ref().filter(|_| current.shared) else {
            return Ok(current);
        };
        if std::fs::symlink_metadata(&self.data).is_ok_and(|found| found.is_symlink()) {
            return Ok(current);
        }
        let temp = self.temp();
        own_file::replace_by_copy(&temp, &self.data, |copy| {
            if let Ok(metadata) = file.metadata() {
                let _ = copy.set_permissions(metadata.permissions());
            }
            let mut from = file;
            from.seek(SeekFrom::Start(0)).at(&self.data)?;
            io::copy(&mut from, copy).map(drop).at(&temp)
        })?;
        let (file, metadata) =
            regular_file::open(OpenOptions::new().read(true).append(true), &self.data)
                .at(&self.data)?;
        Ok(Current {
            file: Some(file),
            identity: FileIdentity::of(&metadata),
            shared: false,
            ..current
        })
    }

    /// The whole session file, read through the handle `inspect` opened.
    pub(super) fn read_locked(&self, current: &Current) -> Result<Vec<u8>> {
        let Some(mut file) = current.file.as_ref() else {
            return Ok(Vec::new());
        };
        let mut bytes = Vec::with_capacity(usize::try_from(current.len).unwrap_or(0));
        file.seek(SeekFrom::Start(0)).at(&self.data)?;
        file.read_to_end(&mut bytes).at(&self.data)?;
        Ok(bytes)
    }

    /// Where the data of a file of `len` bytes ends (before its torn tail), and whether it
    /// ends with a complete message missing its `\n`.
    ///
    /// Reads [`TAIL_PEEK`] bytes when the file ends with a complete batch, which is always
    /// the case unless an earlier append was interrupted; otherwise reads back as far as
    /// the torn tail reaches.
    fn find_data_end(&self, file: &File, len: u64) -> Result<(u64, bool)> {
        let mut size = TAIL_PEEK;
        loop {
            if let Some(found) = self.data_end_within(file, len, size)? {
                return Ok(found);
            }
            size = size.max(TAIL_CHUNK / 2) * 2;
        }
    }

    /// [`find_data_end`](Self::find_data_end) from its first read alone: `None` if the
    /// data end is not within the last [`TAIL_PEEK`] bytes.
    fn peek_data_end(&self, file: &File, len: u64) -> Result<Option<(u64, bool)>> {
        self.data_end_within(file, len, TAIL_PEEK)
    }

    /// Where the data ends, if that is within the last `size` bytes of the file.
    fn data_end_within(&self, file: &File, len: u64, size: u64) -> Result<Option<(u64, bool)>> {
        let start = len.saturating_sub(size);
        let mut chunk = vec![0; usize::try_from(len - start).unwrap_or(0)];
        read_exact_at(file, &mut chunk, start).at(&self.data)?;
        Ok(jsonl::data_end(&chunk, start == 0).map(|end| {
            let needs_newline = end > 0 && chunk[end - 1] != b'\n';
            (start + end as u64, needs_newline)
        }))
    }
}

/// Fills `buf` from `offset` of `file`: one `pread` on Unix (every append peeks at the
/// tail, so the seek a plain read needs is a system call saved per append), a seek and a
/// read elsewhere.
#[cfg(unix)]
pub(super) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
pub(super) fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::tests::{batch, session};
    use super::*;
    use crate::options::SyncPolicy;

    #[test]
    fn a_peek_gives_up_on_a_torn_tail_longer_than_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = session(dir.path(), "s", SyncPolicy::OnReplace);
        files.append(&batch("a")).unwrap();
        let clean = files.inspect().unwrap();
        let peeked = files.inspect_peeking().unwrap().unwrap();
        assert_eq!((peeked.len, peeked.data_end), (clean.len, clean.len));
        let mut file = OpenOptions::new().append(true).open(files.data()).unwrap();
        file.write_all(&[b'x'; TAIL_PEEK as usize / 2]).unwrap();
        let short = files.inspect_peeking().unwrap().unwrap();
        assert_eq!(
            short.data_end, clean.len,
            "a short torn tail is found at once"
        );
        file.write_all(&[b'x'; TAIL_PEEK as usize]).unwrap();
        assert!(files.inspect_peeking().unwrap().is_none());
        assert_eq!(files.inspect().unwrap().data_end, clean.len);
    }
}
