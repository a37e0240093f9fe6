//! Files opened only as regular files, and replaced whole: for the file-system backend's
//! session files, the agent's file tools and the command line's exports. A FIFO (named
//! pipe), directory, socket or device standing where a regular file belongs is refused at
//! once, never waited on, read or written.
//!
//! Opening a FIFO waits for the other end: `mkfifo sessions/abc.jsonl`, by mistake or
//! malice, would hang every call on `abc` for ever (and a tool call reading it, a thread of
//! the blocking pool with it), and a symlink to `/dev/null` would swallow appends. So
//! [`open`] opens on Unix with `O_NONBLOCK`, which makes the open of a FIFO return at once
//! (or fail with `ENXIO`, for writing with no reader), then checks the handle with `fstat`,
//! so the path cannot change in between, and refuses it with [`NotRegular`] unless it is a
//! regular file. Symlinks are followed; one to anything but a regular file is refused like
//! its target.
//!
//! `O_NONBLOCK` stays set on the regular files that pass, as clearing it would cost an
//! `fcntl` per open. POSIX gives it a meaning for FIFOs, sockets and some devices only;
//! Linux and the BSDs never apply it to the reads, writes, `ftruncate` and `fsync` of a
//! regular file, and `flock` blocks or not by its own `LOCK_NB`. The one difference: an
//! open that would wait for a file lease (or an NFS delegation) to be given back fails
//! with `EWOULDBLOCK` instead, a retryable error rather than a wait. The `fstat` is the one the callers need anyway (a length, an identity),
//! handed back with the file, so the check adds no system call to an append or a load.
//!
//! A file its user writes in place or truncates (a lock or state file, a temporary file)
//! is opened with [`open_not_following`] instead: followed through a link, such a write
//! lands on whatever file the link names, maybe outside the directory, so a symbolic link
//! there is refused as what it is, with `O_NOFOLLOW` in the open itself (no extra system
//! call, nothing truncated first). Symbolic links are rare where `O_NOFOLLOW` is missing
//! (they need privileges on Windows), and followed there.

use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a file was refused: what stands where a regular file belongs. Carried inside an
/// [`io::Error`] ([`NotRegular::of`] finds it), for the caller to report in its own terms.
#[derive(Debug)]
pub struct NotRegular {
    /// What the file is, with its article: "a FIFO (named pipe)", "a directory", ...
    kind: &'static str,
}

impl NotRegular {
    /// The refusal `err` carries, if it is one.
    pub fn of(err: &io::Error) -> Option<&NotRegular> {
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
/// error unless it is a regular file (see the module docs). Sets `O_NONBLOCK` as
/// `options`' custom flags on Unix, replacing any set there.
pub fn open(options: &mut OpenOptions, path: &Path) -> io::Result<(File, Metadata)> {
    open_as(options, path, Links::Follow)
}

/// [`open`], refusing a symbolic link at `path` whatever it names, with a [`NotRegular`]
/// error too: for a file written in place or truncated (see the module docs).
pub fn open_not_following(options: &mut OpenOptions, path: &Path) -> io::Result<(File, Metadata)> {
    open_as(options, path, Links::Refuse)
}

/// [`open_not_following`] for reading and writing, the file created if missing and never
/// truncated: a lock or state file, which every user opens alike and writes in place.
pub fn open_or_create(path: &Path) -> io::Result<(File, Metadata)> {
    open_not_following(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
        path,
    )
}

/// What an open does with a symbolic link at the path itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Links {
    Follow,
    Refuse,
}

fn open_as(options: &mut OpenOptions, path: &Path, links: Links) -> io::Result<(File, Metadata)> {
    #[cfg(unix)]
    {
        let no_follow = match links {
            Links::Follow => 0,
            Links::Refuse => libc::O_NOFOLLOW,
        };
        std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NONBLOCK | no_follow);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(err),
        Err(err) => {
            // A directory opened for writing (`EISDIR`), a FIFO with no reader or a socket
            // (`ENXIO`), a link refused (`ELOOP`): say what the path is rather than what
            // the open ran into.
            let found = match links {
                Links::Follow => fs::metadata(path),
                Links::Refuse => fs::symlink_metadata(path),
            };
            return Err(match found {
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
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let (mut file, metadata) = open(OpenOptions::new().read(true), path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A [`NotRegular`] error unless `metadata` (of an open file, or followed from a path)
/// describes a regular file.
pub fn check(metadata: &Metadata) -> io::Result<()> {
    if metadata.is_file() {
        return Ok(());
    }
    Err(io::Error::other(NotRegular {
        kind: kind_of(&metadata.file_type()),
    }))
}

/// Replaces the file `target` with one holding `bytes`, whole or not at all: writes a new
/// temporary file beside it (with `permissions`, if given), flushes it to disk and renames
/// it over `target`. A failure at any step removes the temporary file and leaves `target`
/// as it was; a crash leaves at worst a stray temporary file, named
/// `.{name}.{pid}.{nanos}.{n}.tmp`, which no later call trips over.
///
/// `target` itself is replaced, never written through: a hard link to it elsewhere keeps
/// the old content, and a symbolic link at `target` is replaced by the file (callers that
/// mean the file a link names pass that path). Works whether `target` exists or not.
pub fn replace(target: &Path, bytes: &[u8], permissions: Option<Permissions>) -> io::Result<()> {
    let (temp_path, mut temp) = temp_beside(target)?;
    // The permissions first: a private file's new content is never readable by others,
    // not even in the temporary file.
    let written = match permissions {
        Some(permissions) => temp.set_permissions(permissions),
        None => Ok(()),
    }
    .and_then(|()| temp.write_all(bytes))
    .and_then(|()| temp.sync_all())
    .and_then(|()| fs::rename(&temp_path, target));
    if written.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    written
}

/// Creates the file `target` holding `bytes`, whole or not at all, and only if nothing is
/// there ([`io::ErrorKind::AlreadyExists`] otherwise, `target` untouched): writes a new
/// temporary file beside it, flushes it to disk and links it in under `target` (a hard
/// link, which fails rather than replace anything), then removes the temporary name. So
/// nobody ever finds `target` half written, even if the process is killed mid-write: a
/// crash leaves at worst a stray temporary file, as [`replace`] does.
///
/// On a file system without hard links (FAT, some network and FUSE file systems) the
/// temporary file is renamed over `target` if nothing is there when looked at: the one
/// window left is another process creating `target` in that instant.
pub fn create(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let (temp_path, mut temp) = temp_beside(target)?;
    let written = temp
        .write_all(bytes)
        .and_then(|()| temp.sync_all())
        .and_then(|()| match fs::hard_link(&temp_path, target) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Err(err),
            Err(err) if links_unsupported(&err) => {
                if fs::symlink_metadata(target).is_ok() {
                    Err(io::Error::from(io::ErrorKind::AlreadyExists))
                } else {
                    fs::rename(&temp_path, target)
                }
            }
            Err(err) => Err(err),
        });
    // Linked in, or failed: either way the temporary name goes (after a rename, it is
    // gone already).
    let _ = fs::remove_file(&temp_path);
    written
}

/// Whether a failed `link` says the file system has no hard links (`EPERM`, as Linux's
/// FAT reports it, or `EOPNOTSUPP`), rather than that this link cannot be made.
fn links_unsupported(err: &io::Error) -> bool {
    #[cfg(unix)]
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return true;
    }
    matches!(
        err.kind(),
        io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
    )
}

/// The most of `target`'s name a temporary file beside it repeats, in bytes: its dot and
/// suffix (`.{pid}.{nanos}.{n}.tmp`, at most 30 bytes) must fit with it in the 255 bytes
/// a file name may have, whatever the name's length.
const TEMP_NAME_BYTES: usize = 200;

/// A new temporary file in `target`'s directory, named after it (its first
/// [`TEMP_NAME_BYTES`]), the process and the clock, so that one left by a killed run never
/// stands in the way of the next.
fn temp_beside(target: &Path) -> io::Result<(PathBuf, File)> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let mut end = name.len().min(TEMP_NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let name = &name[..end];
    for attempt in 0u32..16 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let temp = target.with_file_name(format!(
            ".{name}.{}.{nanos}.{attempt}.tmp",
            std::process::id()
        ));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free temporary file name beside {}", target.display()),
    ))
}

#[cfg(unix)]
fn kind_of(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_dir() {
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
    if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_dir() {
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

    #[test]
    fn a_file_written_in_place_is_never_opened_through_a_symbolic_link() {
        let dir = tempfile::tempdir().unwrap();
        let (document, link) = (dir.path().join("document"), dir.path().join("lock"));
        fs::write(&document, "a person's words").unwrap();
        std::os::unix::fs::symlink(&document, &link).unwrap();
        let (_, followed) = open(OpenOptions::new().read(true), &link).unwrap();
        assert!(followed.is_file(), "open follows it");
        let refusals = [
            open_or_create(&link),
            open_not_following(OpenOptions::new().read(true), &link),
            open_not_following(OpenOptions::new().write(true).truncate(true), &link),
        ];
        for refused in refusals {
            assert_eq!(refusal(refused), "is a symbolic link, not a regular file");
        }
        assert_eq!(fs::read(&document).unwrap(), b"a person's words");
        // A link to nothing is refused too, and nothing is created where it points.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(refusal(open_or_create(&dangling)).contains("symbolic link"));
        assert!(!dir.path().join("nowhere").exists());
        // A regular file, or none, opens as with `open`.
        let (_, created) = open_or_create(&dir.path().join("new")).unwrap();
        assert!(created.is_file());
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(refusal(open_or_create(&fifo)).contains("FIFO"));
    }

    #[test]
    fn a_created_file_is_whole_and_never_replaces_one_that_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("export.json");
        create(&target, b"first").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"first");
        let err = create(&target, b"second").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&target).unwrap(), b"first", "left as it was");
        // A dangling link is something there too, and is not followed.
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        let err = create(&link, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!dir.path().join("nowhere").exists());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    fn a_replaced_file_is_new_and_a_hard_link_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let (file, outside) = (dir.path().join("file"), dir.path().join("outside"));
        fs::write(&outside, "old").unwrap();
        fs::hard_link(&outside, &file).unwrap();
        replace(&file, b"new", None).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"new");
        assert_eq!(fs::read(&outside).unwrap(), b"old");
        replace(&dir.path().join("created"), b"x", None).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temporary file left: {names:?}");
        let missing_dir = dir.path().join("no/such/dir/file");
        assert_eq!(
            replace(&missing_dir, b"x", None).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
