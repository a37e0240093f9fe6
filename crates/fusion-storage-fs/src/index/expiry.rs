//! Which sessions expire when: one empty marker file per session that has an expiry,
//! named by an instant at or before it, in directories by instant, so that a purge reads
//! the markers that are due and no others.
//!
//! ```text
//! .fusion-index/expiry/00060a/3f/c2/1733000000123456.user-123
//!                      ^ bits 40.. of the instant (about 12.7 days)
//!                             ^ bits 32..40 (about 72 minutes)
//!                                ^ bits 24..32 (about 17 seconds)
//!                                   ^ the instant (µs) and the session's file-name stem
//! ```
//!
//! Each directory level holds at most 256 entries (the top one, 29 a year), so finding
//! the earliest markers reads a few small directories however many sessions expire
//! later. A marker is a lower bound: it is placed when a session gets its expiry (before
//! the session has it), and an idle expiry that every write pushes later leaves it where
//! it is; a purge that meets a session which has not expired yet moves its marker to the
//! session's current instant. The session's counters record where its marker is, so
//! `delete` removes it; markers of sessions that are gone (a crash, a lost lock file) are
//! removed by the purge that meets them.

use std::fs::{self, OpenOptions};
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use fusion_core::Result;

use crate::error::IoContext;
use crate::file_name;
use crate::regular_file;

use super::own_dirs::{self, Found};

/// The directory of the markers, under the index root.
const EXPIRY_DIR: &str = "expiry";

/// The bits of an instant each directory level stands for, and its name's width in hex.
const LEVELS: [(u32, usize); 3] = [(40, 6), (32, 2), (24, 2)];

/// The instant a marker for a session expiring at `expires_at` is named by: the same, but
/// never before the epoch (a marker at the epoch is due as soon, and names stay digits).
pub(crate) fn marker_instant(expires_at: i64) -> i64 {
    expires_at.max(0)
}

/// The directory of the markers at `at` (a [`marker_instant`]).
fn leaf_dir(root: &Path, at: i64) -> PathBuf {
    let mut dir = root.join(EXPIRY_DIR);
    for (shift, width) in LEVELS {
        let bits = if shift == LEVELS[0].0 {
            at >> shift
        } else {
            (at >> shift) & 0xff
        };
        dir.push(format!("{bits:0width$x}"));
    }
    dir
}

fn marker(root: &Path, at: i64, id: &str) -> PathBuf {
    leaf_dir(root, at).join(format!("{at}.{}", file_name::stem(id)))
}

/// Adds the marker of session `id` at `at` (a [`marker_instant`]), creating its
/// directories if needed; with `sync`, the marker's entry and those of the directories
/// made for it are durable on return. A build passes `checked`, so that each directory on
/// the way is checked once per build, a link on the way leaves the marker out
/// ([`own_dirs::may_make`]), and a link (or another file) at its path is left as it is
/// ([`own_dirs::left_by_build`]).
pub(crate) fn add(
    root: &Path,
    at: i64,
    id: &str,
    sync: bool,
    checked: Option<&mut own_dirs::CheckedDirs>,
) -> Result<()> {
    let path = marker(root, at, id);
    let dir = leaf_dir(root, at);
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
            &path,
        ) {
            Ok(_) if sync => return crate::dirs::sync_dir(&dir),
            Ok(_) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                // A concurrent `remove` may take the empty directories away again between
                // these two steps; then the loop creates them once more.
                crate::dirs::create_missing(&dir, sync)?;
            }
            Err(err) if own_dirs::left_by_build(building, &path, &err) => return Ok(()),
            Err(err) => return Err(err).at_marker(&path, id),
        }
    }
}

/// Removes the marker of session `id` at `at`, if any, and the directories it leaves
/// empty.
pub(crate) fn remove(root: &Path, at: i64, id: &str) -> Result<()> {
    let path = marker(root, at, id);
    // Not through a linked directory on the way, which would remove a file of that name
    // wherever it points: the marker is left, one too many as a crash may leave.
    if !matches!(own_dirs::check(root, &leaf_dir(root, at))?, Found::Dirs) {
        return Ok(());
    }
    match fs::remove_file(&path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other.at(&path)?,
    }
    // Each fails (and is ignored) while the directory holds other entries.
    let mut dir = leaf_dir(root, at);
    for _ in LEVELS {
        if fs::remove_dir(&dir).is_err() {
            break;
        }
        dir.pop();
    }
    Ok(())
}

/// Calls `f` with the instant and session id of every marker at or before `now`, earliest
/// first, until it breaks. Reads only the directories whose instants have begun by `now`.
/// Returns whether it read each of those it met: `false` when it skipped one that is a
/// symbolic link (or not a directory), so that the markers it gave may leave out sessions
/// that have expired.
pub(crate) fn for_each_due(
    root: &Path,
    now: i64,
    mut f: impl FnMut(i64, String) -> Result<ControlFlow<()>>,
) -> Result<bool> {
    let dir = root.join(EXPIRY_DIR);
    if !own_dirs::check(root, &dir)?.refuse_links(None)? {
        return Ok(true);
    }
    let mut skipped = false;
    walk(&dir, 0, 0, now, &mut f, &mut skipped).map(drop)?;
    Ok(!skipped)
}

/// Walks the directory `dir` of level `level` whose instants start at `start`.
fn walk(
    dir: &Path,
    level: usize,
    start: i64,
    now: i64,
    f: &mut impl FnMut(i64, String) -> Result<ControlFlow<()>>,
    skipped: &mut bool,
) -> Result<ControlFlow<()>> {
    let entries = match fs::read_dir(dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(ControlFlow::Continue(())),
        other => other.at(dir)?,
    };
    let Some(&(shift, width)) = LEVELS.get(level) else {
        let mut due = Vec::new();
        for entry in entries {
            let name = entry.at(dir)?.file_name();
            if let Some((at, id)) = name.to_str().and_then(parse_marker)
                && at <= now
            {
                due.push((at, id));
            }
        }
        due.sort_unstable();
        for (at, id) in due {
            if f(at, id)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        return Ok(ControlFlow::Continue(()));
    };
    let mut buckets = Vec::new();
    for entry in entries {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let due = name
            .to_str()
            .filter(|name| name.len() == width)
            .and_then(|name| i64::from_str_radix(name, 16).ok())
            .map(|bits| start | (bits << shift))
            .filter(|&begins| begins <= now);
        // A bucket linked to elsewhere is skipped (its markers are not the index's), as
        // is anything else but a directory; the file type is the entry's own, unfollowed.
        if !entry.file_type().at(dir)?.is_dir() {
            tracing::warn!(
                backend = crate::error::BACKEND,
                path = %entry.path().display(),
                "skipping what is not a directory among the expiry markers' buckets; move \
                 it aside, then rebuild the index"
            );
            *skipped |= due.is_some();
            continue;
        }
        if let Some(begins) = due {
            buckets.push((begins, name));
        }
    }
    buckets.sort_unstable();
    for (begins, name) in buckets {
        if walk(&dir.join(name), level + 1, begins, now, f, skipped)?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// `{instant}.{stem}` as the instant and the session id; `None` for any other name.
fn parse_marker(name: &str) -> Option<(i64, String)> {
    let (at, stem) = name.split_once('.')?;
    let at = at.parse().ok().filter(|at| *at >= 0)?;
    Some((at, file_name::id_from_stem(stem)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(root: &Path, now: i64) -> Vec<(i64, String)> {
        let mut found = Vec::new();
        for_each_due(root, now, |at, id| {
            found.push((at, id));
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        found
    }

    #[test]
    fn markers_are_found_earliest_first_once_due_and_removed_with_their_directories() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let now = 1_733_000_000_000_000;
        // Same leaf, other leaves and levels, the future, and the epoch.
        let markers = [
            (now + 1, "Later:1"),
            (now, "now"),
            (now - 5, "a"),
            (now - (1 << 30), "b"),
            (now - (1 << 45), "c"),
            (now + (1 << 41), "far"),
            (0, "epoch"),
        ];
        for (at, id) in markers {
            add(root, at, id, id.len() % 2 == 0, None).unwrap();
        }
        add(root, now, "now", true, None).unwrap();
        let expected: Vec<(i64, String)> = [
            (0, "epoch"),
            (now - (1 << 45), "c"),
            (now - (1 << 30), "b"),
            (now - 5, "a"),
            (now, "now"),
        ]
        .map(|(at, id)| (at, id.to_string()))
        .into();
        assert_eq!(due(root, now), expected);
        // A walk stops where its callback breaks.
        let mut seen = 0;
        for_each_due(root, now, |_, _| {
            seen += 1;
            Ok(if seen == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .unwrap();
        assert_eq!(seen, 2);
        assert_eq!(due(root, now + (1 << 42)).len(), markers.len());
        for (at, id) in markers {
            remove(root, at, id).unwrap();
        }
        remove(root, now, "now").unwrap();
        assert_eq!(fs::read_dir(root.join(EXPIRY_DIR)).unwrap().count(), 0);
        assert_eq!(due(root, i64::MAX), Vec::new());
        assert_eq!(marker_instant(-3), 0);
    }
}
