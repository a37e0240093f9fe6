//! The database file as the file system names it, and as messages show it: the hints of
//! error messages look at the file and the files SQLite keeps beside it (`-wal`, `-shm`)
//! by their real names, and messages show a path with its control characters escaped
//! ([`shown`]). Looking at the shown name would look at another file.

use std::io::Read;
use std::path::{Path, PathBuf};

/// `text` (a path) with its control characters escaped as Rust writes them (`\n`,
/// `\u{1b}`): a path may hold any byte but NUL, and printed raw in a message or a log line
/// a newline would forge a line of its own, an escape sequence reach the terminal.
pub(crate) fn shown(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// Whether `path` is a WAL-mode database (its header's read and write versions are 2)
/// with no shared-memory file beside it: what SQLite must create before it reads such a
/// database, and cannot where the directory is read-only.
pub(crate) fn wal_without_shared_memory(path: &Path) -> bool {
    let mut header = [0u8; 20];
    let wal_mode = std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut header))
        .is_ok_and(|()| header.starts_with(b"SQLite format 3\0") && header[18..20] == [2, 2]);
    wal_mode && !beside(path, "-shm").exists()
}

/// Whether `path` (followed, as SQLite follows it) is neither a regular file nor a
/// directory: a FIFO, socket or device, on which SQLite fails with a bare "disk I/O
/// error".
pub(crate) fn special_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|metadata| !metadata.is_file() && !metadata.is_dir())
}

/// The log (`-wal`) or shared-memory file (`-shm`) of the database at `path` when it is a
/// symbolic link: SQLite opens both with `O_NOFOLLOW`, so a link planted there (by mistake
/// or to make SQLite write elsewhere) fails the open.
pub(crate) fn symlink_beside(path: &Path) -> Option<String> {
    ["-wal", "-shm"].into_iter().find_map(|suffix| {
        let side = beside(path, suffix);
        let is_link = std::fs::symlink_metadata(&side).is_ok_and(|m| m.file_type().is_symlink());
        is_link.then(|| shown(&side.display().to_string()))
    })
}

/// Whether the log beside the database at `path` (`-wal`) holds anything: writes an
/// `immutable` open, which reads the file alone, would not see.
pub(crate) fn log_holds_writes(path: &Path) -> bool {
    std::fs::metadata(beside(path, "-wal")).is_ok_and(|metadata| metadata.len() > 0)
}

/// The file SQLite keeps beside the database at `path`: its name with `suffix` added
/// (`-wal`, `-shm`), whatever extension the database's own name has.
pub(crate) fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
