//! The index's own directories (`.fusion-index/` itself, `live/`, the owner, tag and
//! expiry sets' directories) are never entered through a symbolic link.
//!
//! Its files are opened without following one ([`crate::own_file`]), but a path is
//! followed through every directory in it: a directory of the index replaced by a link to
//! elsewhere would have listings read journals and markers there, a purge or a delete
//! remove the files there named like markers, and the journals' upkeep fold and delete
//! the files there it took for finished journals (a `live/` linked to a home directory:
//! every file in it). So each call that reads, writes or removes in one of them first
//! checks, from the index root down, that each directory on the way is a directory, with
//! one `lstat` each: a few per call that changes a marker or lists the journals, none on
//! an append, and once per directory for a whole build ([`check_once`]). Where a call
//! would make or read something there, a link is refused and left as it is, as a marker
//! file that is one is: journals and new markers (a build leaves such a marker out
//! instead, and indexes the session: [`may_make`]; a marker file that is a link it leaves
//! as it is: [`left_by_build`]). Where it would remove, the marker is
//! left, one too many as a crash may leave (the markers are a superset of the truth). A
//! set whose directory is a link says nothing of its members, so a listing filtered by it
//! decides by each session's own metadata (its directory is checked once per page, not
//! once per session the page passes: see `sets::contains`); a walk of the expiry markers
//! skips a bucket that is one, with a warning. The files at the top of the index (`lock`,
//! `journal`, `ids`, `ids-log`, `compact.lock`) are opened once the root was found no
//! link ([`check_root`]), as the index lock and the compaction lock are taken.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use fusion_core::regular_file::NotRegular;
use fusion_core::{Error, Result};

use crate::error::{BACKEND, IoContext};

/// What stands on the way from the index root to one of its directories.
#[derive(Debug)]
pub(super) enum Found {
    /// Each is a directory.
    Dirs,
    /// One is missing (and so is everything below it).
    Missing,
    /// This one is a symbolic link, or anything but a directory.
    NotDir(PathBuf),
}

impl Found {
    /// `Ok(true)` for [`Found::Dirs`], `Ok(false)` for [`Found::Missing`], and for
    /// [`Found::NotDir`] its refusal: an [`Error::Corrupt`] for session `id` when given (a
    /// marker's directory, so that a purge leaves that session out with a warning, as for
    /// a marker refused), else a non-retryable [`Error::Backend`]; either names the path
    /// and says how to get past it.
    pub(super) fn refuse_links(self, id: Option<&str>) -> Result<bool> {
        match self {
            Found::Dirs => Ok(true),
            Found::Missing => Ok(false),
            Found::NotDir(path) => Err(refused(&path, id)),
        }
    }
}

/// What stands on the way from the index root `root` to `dir` (the root or a directory
/// under it), both included: one `lstat` each, from the root down, stopping at the first
/// missing or not a directory.
pub(super) fn check(root: &Path, dir: &Path) -> Result<Found> {
    check_with(root, dir, None)
}

/// The directories one build found the index's own ([`check_once`]), and the links it
/// found on the way (each warned about once).
#[derive(Debug, Default)]
pub(crate) struct CheckedDirs {
    dirs: HashSet<PathBuf>,
    links: HashSet<PathBuf>,
}

/// Whether a marker may be made in `dir` for session `id`: without `checked` (a write),
/// `true`, or the refusal of a link on the way ([`Found::refuse_links`]); with it (a
/// build), `false` for a link on the way, warned about once per build: the marker is left
/// out and the session is still indexed, since a listing filtered by a set whose
/// directory is a link decides by each session's metadata, and a walk of the expiry
/// markers skips a linked bucket anyway. Refused, the build would leave every session
/// whose marker goes there out of every listing.
pub(super) fn may_make(
    root: &Path,
    dir: &Path,
    id: &str,
    checked: Option<&mut CheckedDirs>,
) -> Result<bool> {
    let Some(checked) = checked else {
        check(root, dir)?.refuse_links(Some(id))?;
        return Ok(true);
    };
    match check_once(root, dir, checked)? {
        Found::NotDir(path) => {
            if checked.links.insert(path.clone()) {
                tracing::warn!(
                    backend = BACKEND,
                    path = %path.display(),
                    "the index build leaves out the markers it would make through a symbolic \
                     link (or another file) where the index keeps a directory of its own; \
                     move it aside, then rebuild the index"
                );
            }
            Ok(false)
        }
        Found::Dirs | Found::Missing => Ok(true),
    }
}

/// Whether a build leaves as it is what stands at a marker's path `marker` where the
/// marker's open failed with `err`: a symbolic link, a FIFO or another file that is not a
/// regular one (a refusal, [`NotRegular`]), warned about. A write refuses it
/// ([`Error::Corrupt`] for its session); a build that did would leave the session out of
/// every listing, though what stands there is found as a marker by the listings (a set's
/// entry) and by a purge (an expiry marker's name), and the session's own calls work.
pub(super) fn left_by_build(building: bool, marker: &Path, err: &io::Error) -> bool {
    let Some(refusal) = NotRegular::of(err).filter(|_| building) else {
        return false;
    };
    tracing::warn!(
        backend = BACKEND,
        path = %marker.display(),
        "the index build leaves as it is a marker that {refusal}; move it aside, then \
         rebuild the index"
    );
    true
}

/// [`check`], without an `lstat` of a directory `checked` holds, adding those it finds.
/// For a build, which makes a marker or three per session in a few directories: one
/// `lstat` each per build rather than one per marker, at the price of following a link
/// put in place of one during the build, to make the rest of its markers there (empty
/// files, never through a link of their own name; nothing is read or removed there).
pub(super) fn check_once(root: &Path, dir: &Path, checked: &mut CheckedDirs) -> Result<Found> {
    check_with(root, dir, Some(checked))
}

fn check_with(root: &Path, dir: &Path, mut checked: Option<&mut CheckedDirs>) -> Result<Found> {
    let below = dir.strip_prefix(root).unwrap_or(Path::new(""));
    let mut path = root.to_path_buf();
    let mut rest = below.components();
    loop {
        let known = checked
            .as_ref()
            .is_some_and(|checked| checked.dirs.contains(&path));
        if !known {
            #[cfg(test)]
            LSTATS.with(|lstats| lstats.set(lstats.get() + 1));
            match fs::symlink_metadata(&path) {
                Ok(metadata) if metadata.is_dir() => {}
                Ok(_) => return Ok(Found::NotDir(path)),
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
                Err(err) => return Err(err).at(&path),
            }
            if let Some(checked) = checked.as_mut() {
                checked.dirs.insert(path.clone());
            }
        }
        match rest.next() {
            Some(part) => path.push(part),
            None => return Ok(Found::Dirs),
        }
    }
}

/// Refuses an index root `root` that is a symbolic link before a file at its top
/// (`lock`, `journal`, `ids`, `ids-log`, `compact.lock`, their temporary files) is
/// opened, made or renamed over: one `lstat`, per taking of the index lock or the
/// compaction lock. A missing root is no error (it is made then), nor is another file in
/// its place, which the call then fails on with the I/O error naming it and the call.
pub(super) fn check_root(root: &Path) -> Result<()> {
    match fs::symlink_metadata(root) {
        Ok(metadata) if metadata.is_symlink() => Err(refused(root, None)),
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err).at(root),
        _ => Ok(()),
    }
}

#[cfg(test)]
thread_local! {
    /// How many `lstat`s this thread made checking the way to a directory of an index.
    static LSTATS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many `lstat`s this thread made checking the way to a directory of an index
/// ([`check`], [`check_once`]).
#[cfg(test)]
pub(crate) fn lstats() -> usize {
    LSTATS.with(std::cell::Cell::get)
}

fn refused(path: &Path, id: Option<&str>) -> Error {
    let detail = format!(
        "{} is a symbolic link (or another file) where the index keeps a directory of its \
         own, and was left as it is: move it aside, then rebuild the index",
        path.display()
    );
    match id {
        Some(id) => Error::corrupt(BACKEND, id.to_string(), detail),
        None => Error::Backend {
            backend: BACKEND,
            message: detail,
            retryable: false,
            source: None,
        },
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_link_anywhere_on_the_way_is_found_and_refused_and_a_missing_directory_is_no_error() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("index");
        let dir = root.join("owner").join("u");
        assert!(matches!(check(&root, &dir).unwrap(), Found::Missing));
        fs::create_dir_all(&dir).unwrap();
        assert!(matches!(check(&root, &dir).unwrap(), Found::Dirs));
        assert!(matches!(check(&root, &root).unwrap(), Found::Dirs));

        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir_all(elsewhere.join("u")).unwrap();
        fs::remove_dir_all(root.join("owner")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("owner")).unwrap();
        let found = check(&root, &dir).unwrap();
        assert!(
            matches!(&found, Found::NotDir(path) if *path == root.join("owner")),
            "{found:?}"
        );
        let err = found.refuse_links(Some("s")).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { session_id, .. } if session_id == "s"),
            "{err:?}"
        );
        let err = check(&root, &dir).unwrap().refuse_links(None).unwrap_err();
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("symbolic link"), "{text}");
        assert!(
            text.contains(&root.join("owner").display().to_string()),
            "{text}"
        );
    }
}
