//! A session's metadata file, `.{stem}.meta`: its owner, title, tags, data and expiry as
//! one JSON object, replaced whole (temporary file, then rename) so that a crash leaves
//! the old metadata or the new, never half of it.
//!
//! ```json
//! {"created_us":1733000000123456,"owner":"user-42","title":"Clean up","tags":["ops"],"data":{"ticket":7}}
//! {"created_us":1733000000123456,"owner":null,"title":null,"tags":[],"data":{},"expiry":{"idle_us":3600000000}}
//! ```
//!
//! `expiry` is there only for a session that expires: `{"at_us":N}` (a fixed instant, Unix
//! microseconds) or `{"idle_us":N}` (a span after each write, microseconds). Where the
//! session expires *now* is in its lock file's counters ([`crate::counters`]), which every
//! write moves and every reader checks; this is what the expiry was set to, read only
//! when those counters are lost (a lock file rewritten by an earlier version, or not
//! copied with the session) so that the session still expires.
//!
//! Only the holder of the session's exclusive lock writes it, and readers read it under
//! the shared lock. `created_us` is the creation time of the session it belongs to: a
//! metadata file whose `created_us` differs from the session's counters belongs to an
//! earlier session of the same id (a crash in the middle of a `delete`) and is ignored.
//! A session without metadata has no file, but for a copy (created with the times it had
//! elsewhere): its file also keeps `copied_us`, when the index recorded its creation
//! ([`crate::counters`]' `copied`), so that counters rebuilt after a loss still place it
//! above the lines of an earlier session of its id.
//!
//! ```json
//! {"created_us":1600000000000000,"owner":null,"title":null,"tags":[],"data":{},"copied_us":1733000000123456}
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use fusion_core::{Error, Expiry, Result, SessionMeta, StoredExpiry};
use serde_json::{Map, Value, json};

use crate::error::{BACKEND, IoContext};
use crate::own_file;
use crate::regular_file;

/// The metadata of one session as its file stores it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredMeta {
    /// The creation time of the session it belongs to, in Unix microseconds.
    pub(crate) created_us: i64,
    /// Owner, title, tags, data and expiry.
    pub(crate) meta: SessionMeta,
    /// For a copy, when the index recorded its creation (see the module docs).
    pub(crate) copied_us: Option<i64>,
}

/// Reads the metadata file at `path` of session `id`: `None` if there is none, and
/// [`Error::Corrupt`] naming the file if it is not what [`write()`] writes.
/// A metadata file that cannot be read (an I/O error) is an [`Error::Io`] that
/// [`is_unreadable`] tells from every other failure on the same path (its removal, its
/// replacement).
pub(crate) fn read(path: &Path, id: &str) -> Result<Option<StoredMeta>> {
    let bytes = match regular_file::read(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other.at(path).map_err(mark_unreadable)?,
    };
    decode(&bytes).map(Some).map_err(|why| {
        Error::corrupt(
            BACKEND,
            id,
            format!(
                "the metadata file {} {why}; the messages are intact: move the file aside \
                 to keep them without the session's title, owner and tags, or `delete` the \
                 session",
                path.display()
            ),
        )
    })
}

/// The I/O error of a metadata file's read, as its [`Error::Io`] carries it: displayed as
/// the error it wraps, it marks the failure as a read, so that a purge or a listing can
/// leave the session out with a warning while a failed removal or write of the same file
/// (a directory that cannot be written: no session's own damage) fails the call.
#[derive(Debug)]
struct Unreadable(io::Error);

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Unreadable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Marks an [`Error::Io`] from a read as [`Unreadable`]; any other error (a file refused
/// as not regular: [`Error::Corrupt`]) is left as it is.
fn mark_unreadable(err: Error) -> Error {
    match err {
        Error::Io { path, source } => {
            let kind = source.kind();
            Error::Io {
                path,
                source: io::Error::new(kind, Unreadable(source)),
            }
        }
        other => other,
    }
}

/// The error `source` marks as a failed read ([`Unreadable`]), or `source` itself: what
/// the OS said (its error code included), for telling an error that passes from one that
/// lasts.
pub(crate) fn cause(source: &io::Error) -> &io::Error {
    source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Unreadable>())
        .map_or(source, |unreadable| &unreadable.0)
}

/// [`Error::Io`] for a failed read of the metadata file at `path`, as [`read()`] gives it.
#[cfg(test)]
pub(crate) fn unreadable(path: &Path, source: io::Error) -> Error {
    mark_unreadable(Error::io(path, source))
}

/// Whether `err` is the failed read of the metadata file at `path` (see [`read()`]).
pub(crate) fn is_unreadable(err: &Error, path: &Path) -> bool {
    matches!(err, Error::Io { path: at, source }
        if at == path && source.get_ref().is_some_and(|inner| inner.is::<Unreadable>()))
}

/// Replaces the metadata file at `path` through `temp` (or writes it in place when `temp`
/// is `None`: for a session that has no data yet, whose half-written metadata nobody
/// would read). With `sync`, the new file and the directory entry are flushed to disk
/// before this returns.
pub(crate) fn write(
    path: &Path,
    temp: Option<&Path>,
    dir: &Path,
    stored: &StoredMeta,
    sync: bool,
) -> Result<()> {
    let bytes = encode(stored);
    let temp = temp.unwrap_or(path);
    // A file this call could not open is not its own to remove.
    let (mut file, _) = own_file::create_anew(temp).at(temp)?;
    let result = (|| {
        file.write_all(&bytes).at(temp)?;
        if sync {
            file.sync_all().at(temp)?;
        }
        drop(file);
        if temp != path {
            fs::rename(temp, path).at(path)?;
        }
        if sync {
            crate::session_files::sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(temp);
    }
    result
}

/// Removes the metadata file at `path`, if any; returns whether there was one (whose
/// removal a caller that makes it durable must sync into its directory).
pub(crate) fn remove(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        other => other.at(path).map(|()| true),
    }
}

fn encode(stored: &StoredMeta) -> Vec<u8> {
    let meta = &stored.meta;
    let mut object = json!({
        "created_us": stored.created_us,
        "owner": meta.owner,
        "title": meta.title,
        "tags": meta.tags,
        "data": meta.data,
    });
    if let Some(expiry) = &meta.expiry {
        // Through the stored numbers, which name each kind of expiry.
        let numbers = StoredExpiry::of(Some(expiry), 0);
        object["expiry"] = match (numbers.idle, numbers.expires_at) {
            (Some(idle), _) => json!({ "idle_us": idle }),
            (None, at) => json!({ "at_us": at }),
        };
    }
    if let Some(copied) = stored.copied_us {
        object["copied_us"] = json!(copied);
    }
    let mut bytes = serde_json::to_vec(&object).expect("JSON values serialize");
    bytes.push(b'\n');
    bytes
}

fn decode(bytes: &[u8]) -> std::result::Result<StoredMeta, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|err| format!("is not valid JSON ({err})"))?;
    let Value::Object(mut object) = value else {
        return Err("is not a JSON object".into());
    };
    let created_us = object
        .get("created_us")
        .and_then(Value::as_i64)
        .ok_or("has no created_us")?;
    let text = |object: &mut Map<String, Value>, key: &str| match object.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("has a {key} that is not a string")),
    };
    let owner = text(&mut object, "owner")?;
    let title = text(&mut object, "title")?;
    let tags: Vec<String> = match object.remove("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(tags) => serde_json::from_value(tags).map_err(|_| "has tags that are not strings")?,
    };
    let data = match object.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data,
        Some(_) => return Err("has data that is not an object".into()),
    };
    let expiry = match object.remove("expiry") {
        None | Some(Value::Null) => None,
        Some(expiry) => Some(decode_expiry(&expiry).ok_or("has an expiry it cannot read")?),
    };
    let copied_us = match object.remove("copied_us") {
        None | Some(Value::Null) => None,
        Some(copied) => Some(
            copied
                .as_i64()
                .ok_or("has a copied_us that is not a number")?,
        ),
    };
    let mut meta = SessionMeta::new().tags(tags);
    meta.owner = owner;
    meta.title = title;
    meta.data = data;
    meta.expiry = expiry;
    meta.validate()
        .map_err(|err| format!("breaks a metadata rule ({err})"))?;
    Ok(StoredMeta {
        created_us,
        meta,
        copied_us,
    })
}

/// `{"at_us":N}` or `{"idle_us":N}`, and nothing else.
fn decode_expiry(value: &Value) -> Option<Expiry> {
    let object = value.as_object().filter(|o| o.len() == 1)?;
    let numbers = match (object.get("at_us"), object.get("idle_us")) {
        (Some(at), None) => StoredExpiry {
            expires_at: Some(at.as_i64()?),
            idle: None,
        },
        (None, Some(idle)) => StoredExpiry {
            expires_at: None,
            idle: Some(idle.as_i64()?),
        },
        _ => return None,
    };
    numbers.expiry()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_damage_is_named() {
        let stored = StoredMeta {
            created_us: 17,
            meta: SessionMeta::new()
                .owner("u")
                .title("t \"q\"")
                .tags(["b", "a"])
                .data("k", json!([1])),
            copied_us: None,
        };
        assert_eq!(decode(&encode(&stored)).unwrap(), stored);
        let bare = StoredMeta {
            created_us: -1,
            meta: SessionMeta::new(),
            copied_us: None,
        };
        assert_eq!(decode(&encode(&bare)).unwrap(), bare);
        let copy = StoredMeta {
            copied_us: Some(1_733_000_000_123_456),
            ..bare.clone()
        };
        assert_eq!(decode(&encode(&copy)).unwrap(), copy);
        assert_eq!(decode(&encode(&bare)).unwrap(), bare);
        for expiry in [
            Expiry::Idle(std::time::Duration::from_secs(60)),
            Expiry::At(fusion_core::from_unix_micros(1_733_000_000_123_456)),
        ] {
            let expiring = StoredMeta {
                created_us: 1,
                meta: SessionMeta::new().expiry(expiry),
                copied_us: None,
            };
            assert_eq!(decode(&encode(&expiring)).unwrap(), expiring);
        }
        let whole = encode(&stored);
        for bad in [
            &whole[..whole.len() / 2],
            b"[]".as_slice(),
            br#"{"owner":"u"}"#,
            br#"{"created_us":1,"owner":"../x"}"#,
            br#"{"created_us":1,"tags":[1]}"#,
            br#"{"created_us":1,"expiry":{"idle_us":0}}"#,
            br#"{"created_us":1,"expiry":{"at_us":1,"idle_us":2}}"#,
            br#"{"created_us":1,"expiry":"soon"}"#,
            br#"{"created_us":1,"copied_us":"then"}"#,
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
