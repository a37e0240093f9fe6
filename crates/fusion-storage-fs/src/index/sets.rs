//! Who belongs to an owner or carries a tag: one empty marker file per session in a
//! directory per owner and per tag.
//!
//! ```text
//! .fusion-index/owner/user-42/chat-1         session `chat-1` is owned by `user-42`
//! .fusion-index/tag/6f7073/chat-1            session `chat-1` is tagged `ops` (hex of its bytes)
//! ```
//!
//! Owner directories are named like session files ([`file_name::stem`]), which the owner
//! rule (that of session ids) makes safe. A tag may hold any printable character but a
//! comma, so its directory is the hex of its UTF-8 bytes (at most 128 characters): no tag
//! can name a path. Markers change only when a session is created or deleted or its
//! owner or tags change, never on an append.
//!
//! The markers are a superset of the truth: a marker is added before the session gets
//! the owner or tag and removed after it lost it, so a crash can leave a marker too many,
//! never one too few. Listings check every session they show against its own metadata.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use fusion_core::Result;

use crate::error::IoContext;
use crate::file_name;
use crate::regular_file;

use super::own_dirs::{self, Found};

/// A set of sessions: those of one owner or those carrying one tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetKey<'a> {
    /// The sessions owned by this (valid) owner.
    Owner(&'a str),
    /// The sessions carrying this (valid) tag.
    Tag(&'a str),
}

impl SetKey<'_> {
    /// The set's directory under the index root.
    fn dir(self, root: &Path) -> PathBuf {
        match self {
            SetKey::Owner(owner) => root.join("owner").join(file_name::stem(owner)),
            SetKey::Tag(tag) => root.join("tag").join(hex(tag)),
        }
    }
}

fn hex(tag: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(tag.len() * 2);
    for b in tag.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Adds session `id` to the set, creating its directory if needed; with `sync`, the
/// marker's entry and those of the directories made for it are durable on return. A
/// build passes `checked`, so that each directory on the way is checked once per build,
/// a link on the way leaves the marker out ([`own_dirs::may_make`]), and a link (or
/// another file) at its path is left as it is ([`own_dirs::left_by_build`]).
pub(crate) fn add(
    root: &Path,
    key: SetKey<'_>,
    id: &str,
    sync: bool,
    checked: Option<&mut own_dirs::CheckedDirs>,
) -> Result<()> {
    let dir = key.dir(root);
    let marker = dir.join(file_name::stem(id));
    let building = checked.is_some();
    // Nor through a linked directory on the way, which would make it wherever that points.
    if !own_dirs::may_make(root, &dir, id, checked)? {
        return Ok(());
    }
    loop {
        // Not through a symbolic link: with `O_CREAT`, one naming no file would create it
        // wherever it points.
        match regular_file::open_not_following(
            OpenOptions::new().write(true).create(true).truncate(false),
            &marker,
        ) {
            Ok(_) if sync => return crate::dirs::sync_dir(&dir),
            Ok(_) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                // A concurrent `remove` may take the empty directory away again between
                // these two steps; then the loop creates it once more.
                crate::dirs::create_missing(&dir, sync)?;
            }
            Err(err) if own_dirs::left_by_build(building, &marker, &err) => return Ok(()),
            Err(err) => return Err(err).at_marker(&marker, id),
        }
    }
}

/// Removes session `id` from the set, and the set's directory once it is empty.
pub(crate) fn remove(root: &Path, key: SetKey<'_>, id: &str) -> Result<()> {
    let dir = key.dir(root);
    let marker = dir.join(file_name::stem(id));
    // Not through a linked directory on the way, which would remove a file of that name
    // wherever it points: the marker is left, one too many as a crash may leave.
    if !matches!(own_dirs::check(root, &dir)?, Found::Dirs) {
        return Ok(());
    }
    match fs::remove_file(&marker) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other.at(&marker)?,
    }
    // Fails (and is ignored) while other markers remain.
    let _ = fs::remove_dir(&dir);
    Ok(())
}

/// Whether session `id` has a marker in the set (a session without one is not a member).
///
/// Its directory is not checked here (a listing asks for every session it passes, and a
/// check is a few `lstat`s each): ask only of a set [`members_up_to`] found its own
/// directory for ([`Members::Many`]) in the same listing page. A link put in its place
/// since is followed by this read alone, which may then leave a member out of the page.
pub(crate) fn contains(root: &Path, key: SetKey<'_>, id: &str) -> Result<bool> {
    let marker = key.dir(root).join(file_name::stem(id));
    match fs::symlink_metadata(&marker) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err).at(&marker),
    }
}

/// What a set's directory tells of its members.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Members {
    /// At most the limit asked for: these.
    Few(Vec<String>),
    /// More: each session's marker tells ([`contains`]).
    Many,
    /// Nothing: the directory is a symbolic link (or not a directory), whose entries,
    /// elsewhere, are no markers; each session's own metadata decides.
    Unknown,
}

/// The members of the set if it has at most `limit` of them, else whether its markers
/// tell the rest. Reads at most `limit + 1` directory entries.
pub(crate) fn members_up_to(root: &Path, key: SetKey<'_>, limit: usize) -> Result<Members> {
    let dir = key.dir(root);
    if let Found::NotDir(_) = own_dirs::check(root, &dir)? {
        return Ok(Members::Unknown);
    }
    let entries = match fs::read_dir(&dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Members::Few(Vec::new())),
        other => other.at(&dir)?,
    };
    let mut members = Vec::new();
    for entry in entries {
        let entry = entry.at(&dir)?;
        let Some(id) = entry.file_name().to_str().and_then(file_name::id_from_stem) else {
            continue;
        };
        if members.len() == limit {
            return Ok(Members::Many);
        }
        members.push(id);
    }
    Ok(Members::Few(members))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_added_found_listed_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let tag = SetKey::Tag("../../etc/passwd, or ü");
        for id in ["a", "B:c"] {
            add(root, SetKey::Owner("Owner:1"), id, true, None).unwrap();
            add(root, tag, id, false, None).unwrap();
        }
        add(root, tag, "a", true, None).unwrap();
        assert!(contains(root, tag, "B:c").unwrap());
        assert!(!contains(root, SetKey::Owner("other"), "a").unwrap());
        let Members::Few(mut members) = members_up_to(root, tag, 2).unwrap() else {
            panic!("two members")
        };
        members.sort();
        assert_eq!(members, ["B:c", "a"]);
        assert_eq!(members_up_to(root, tag, 1).unwrap(), Members::Many);
        // Every set directory is a single path component inside the root.
        for kind in ["owner", "tag"] {
            for entry in fs::read_dir(root.join(kind)).unwrap() {
                assert!(entry.unwrap().file_type().unwrap().is_dir());
            }
        }
        remove(root, tag, "a").unwrap();
        remove(root, tag, "B:c").unwrap();
        remove(root, tag, "B:c").unwrap();
        assert_eq!(members_up_to(root, tag, 5).unwrap(), Members::Few(vec![]));
        assert_eq!(fs::read_dir(root.join("tag")).unwrap().count(), 0);
    }
}
