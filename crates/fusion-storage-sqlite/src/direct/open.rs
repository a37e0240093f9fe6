//! Opening the direct path's connections the way sqlx opens the pool's.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::config::{DirectOptions, Durability};
use crate::sql::register;

/// Opens a connection the way sqlx opens the pool's (same flags, same per-connection
/// settings). The writer also leaves checkpoints to `crate::checkpoint` (no
/// `wal_autocheckpoint`), starts with a zero busy timeout (see `Direct::write_inline`) and
/// has the SQL functions of the writes' `deciding` statements (`crate::sql::register`).
pub(crate) fn open(options: &DirectOptions, writer: bool) -> rusqlite::Result<Connection> {
    let access = if options.read_only || options.immutable {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else if options.create {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let flags = access
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_PRIVATE_CACHE;
    let name = if options.immutable {
        immutable_uri(&options.path)
    } else {
        options.path.display().to_string()
    };
    let conn = match &options.vfs {
        Some(vfs) => Connection::open_with_flags_and_vfs(name, flags, vfs)?,
        None => Connection::open_with_flags(name, flags)?,
    };
    // Before the `PRAGMA`s: `synchronous` reads the schema, which waits for a lock like
    // any read, and it should wait as long as the options say, not rusqlite's default.
    conn.busy_timeout(options.busy_timeout)?;
    let synchronous = match options.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    if writer {
        if !options.read_only && !options.immutable {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        conn.busy_timeout(Duration::ZERO)?;
        register(&conn)?;
    }
    Ok(conn)
}

/// `file:PATH?immutable=1`, the only way to pass `immutable` to SQLite, with every byte
/// of the path but letters and digits percent-encoded as sqlx does.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for byte in path.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() {
            uri.push(char::from(*byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}
