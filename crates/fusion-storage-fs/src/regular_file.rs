//! Opening the backend's files only as regular files: a FIFO (named pipe), directory,
//! socket or device standing where a session file belongs is refused at once, never waited
//! on, read or written.
//!
//! Opening a FIFO waits for the other end: `mkfifo sessions/abc.jsonl`, by mistake or
//! malice, would hang every call on `abc` for ever, and a symlink to `/dev/null` would
//! swallow its appends. So every file is opened here: on Unix with `O_NONBLOCK`, which
//! makes the open of a FIFO return at once (or fail with `ENXIO`, for writing with no
//! reader), then checked with `fstat` on the handle, so the path cannot change in between,
//! and refused with [`NotRegular`] unless it is a regular file. Symlinks are followed as
//! before; one to anything but a regular file is refused like its target.
//!
//! `O_NONBLOCK` stays set on the regular files that pass, as clearing it would cost an
//! `fcntl` per open: it changes nothing for them. POSIX gives it a meaning for FIFOs,
//! sockets and some devices only; Linux and the BSDs never apply it to the reads, writes,
//! `ftruncate` and `fsync` of a regular file, and `flock` blocks or not by its own
//! `LOCK_NB`. The `fstat` is the one the callers need anyway (a length, an identity),
//! handed back with the file, so the check adds no system call to an append or a load.

use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// Why a file was refused: what stands where a regular file belongs. Carried inside an
/// [`io::Error`]; `crate::error` turns it into the error of the session it belongs to.
#[derive(Debug)]
pub(crate) struct NotRegular {
    /// What the file is, with its article: "a FIFO (named pipe)", "a directory", ...
    kind: &'static str,
}

impl NotRegular {
    /// The refusal `err` carries, if it is one.
    pub(crate) fn of(err: &io::Error) -> Option<&NotRegular> {
        err.get_ref()?.downcast_ref()
    }
}

impl fmt::Display for NotRegular {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "is {}, not a regular file", self.kind)
    }
}

impl std::error::Error for NotRegular {}

/// Opens `path` with `options`, returning the file and its metadata, or a [`NotRegular`]
/// error unless it is a regular file (see the module docs).
pub(crate) fn open(options: &mut OpenOptions, path: &Path) -> io::Result<(File, Metadata)> {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NONBLOCK);
    let file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(err),
        Err(err) => {
            // A directory opened for writing (`EISDIR`), a FIFO with no reader or a socket
            // (`ENXIO`): say what the path is rather than what the open ran into.
            return Err(match fs::metadata(path) {
                Ok(metadata) => check(&metadata).err().unwrap_or(err),
                Err(_) => err,
            });
        }
    };
    let metadata = file.metadata()?;
    check(&metadata)?;
    Ok((file, metadata))
}

/// The whole of the regular file at `path`: [`fs::read`], refusing the rest.
pub(crate) fn read(path: &Path) -> io::Result<Vec<u8>> {
    let (mut file, metadata) = open(OpenOptions::new().read(true), path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A [`NotRegular`] error unless `metadata` (of an open file, or followed from a path)
/// describes a regular file.
pub(crate) fn check(metadata: &Metadata) -> io::Result<()> {
    if metadata.is_file() {
        return Ok(());
    }
    Err(io::Error::other(NotRegular {
        kind: kind_of(&metadata.file_type()),
    }))
}

#[cfg(unix)]
fn kind_of(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "a device"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn kind_of(file_type: &fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn refusal(result: io::Result<(File, Metadata)>) -> String {
        let err = result.expect_err("refused");
        NotRegular::of(&err).expect("a NotRegular").to_string()
    }

    #[test]
    fn only_regular_files_open_and_nothing_waits_for_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        // Reading waits for a writer, writing for a reader, without O_NONBLOCK.
        for options in [
            OpenOptions::new().read(true),
            OpenOptions::new().write(true),
            OpenOptions::new().append(true).create(true),
            OpenOptions::new().read(true).write(true),
        ] {
            assert_eq!(
                refusal(open(options, &fifo)),
                "is a FIFO (named pipe), not a regular file"
            );
        }
        let write = OpenOptions::new().write(true).create(true).clone();
        assert_eq!(
            refusal(open(&mut write.clone(), dir.path())),
            "is a directory, not a regular file",
            "EISDIR named as the directory it is"
        );
        assert!(refusal(open(OpenOptions::new().read(true), dir.path())).contains("directory"));
        let null = Path::new("/dev/null");
        assert!(refusal(open(&mut write.clone(), null)).contains("a device"));

        let file = dir.path().join("file");
        let (_, metadata) = open(&mut write.clone(), &file).unwrap();
        assert!(metadata.is_file());
        assert_eq!(read(&file).unwrap(), b"");
        let missing = open(OpenOptions::new().read(true), &dir.path().join("missing"));
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
