//! `Workspace`: the directories the file tools may touch, and the path checks that keep
//! them there.
//!
//! A model-supplied path is resolved in three steps: made absolute against the first root,
//! normalised lexically (`.` dropped, `..` applied to the text, never to the disk), then
//! checked on disk: the deepest part of it that exists is canonicalised, which resolves
//! every symbolic link in it, and the result must lie under a canonical root. Paths that
//! name an entry to create, replace or delete ([`Workspace::resolve_entry`]) check their
//! parent that way and refuse a symbolic link as the last component, so `write_file` and
//! `delete_file` never act through a link. Checks and the operation that follows are not
//! atomic: a process that swaps a directory for a symlink in between can still win that
//! race; the checks stop the model, not a hostile local user.

use std::io;
use std::path::{Component, Path, PathBuf};

use fusion_core::{Error, Result};

/// A set of root directories, canonicalised once when the workspace is built.
#[derive(Debug, Clone)]
pub struct Workspace {
    roots: Vec<PathBuf>,
}

impl Workspace {
    /// A workspace of `roots`. Relative paths given to tools resolve against the first.
    ///
    /// Fails with [`Error::Config`] when `roots` is empty or a root is not an existing
    /// directory.
    pub fn new<P: Into<PathBuf>>(roots: impl IntoIterator<Item = P>) -> Result<Self> {
        let mut canonical = Vec::new();
        for root in roots {
            let root = root.into();
            let real = std::fs::canonicalize(&root).map_err(|e| {
                Error::Config(format!(
                    "workspace root {} cannot be used: {e}",
                    root.display()
                ))
            })?;
            if !real.is_dir() {
                return Err(Error::Config(format!(
                    "workspace root {} is not a directory",
                    root.display()
                )));
            }
            canonical.push(real);
        }
        if canonical.is_empty() {
            return Err(Error::Config(
                "a workspace needs at least one root directory".into(),
            ));
        }
        Ok(Self { roots: canonical })
    }

    /// A workspace whose only root is the process's current directory.
    pub fn current_dir() -> Result<Self> {
        let dir = std::env::current_dir()
            .map_err(|e| Error::Config(format!("the current directory cannot be used: {e}")))?;
        Self::new([dir])
    }

    /// The canonical roots, first one first.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The real path of the existing file or directory `path` names, following symbolic
    /// links, provided it lies inside the workspace.
    ///
    /// The error is a message for the model.
    pub fn resolve_existing(&self, path: &str) -> Result<PathBuf, String> {
        let target = self.lexical(path)?;
        let (real, missing) = self.confine(path, &target)?;
        if missing {
            return Err(format!("`{path}` does not exist"));
        }
        Ok(real)
    }

    /// The path of the entry `path` names, for creating, replacing or deleting it: its
    /// parent resolved and confined (it need not exist yet), its last component kept as
    /// written. Refuses the workspace roots themselves and symbolic links.
    pub fn resolve_entry(&self, path: &str) -> Result<PathBuf, String> {
        let target = self.lexical(path)?;
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(format!("`{path}` is not a file path"));
        };
        if self.roots.contains(&target) {
            return Err(format!("`{path}` is a workspace root, not a file"));
        }
        let (parent, _) = self.confine(path, parent)?;
        let entry = parent.join(name);
        if entry
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return Err(format!(
                "`{path}` is a symbolic link; the file tools do not write through or delete \
                 symbolic links"
            ));
        }
        Ok(entry)
    }

    /// `path` made absolute against the first root and normalised lexically. Whether it is
    /// inside is left to [`confine`](Self::confine): an absolute path through a linked
    /// alias of a root (`/tmp` for `/private/tmp`) is inside once resolved.
    fn lexical(&self, path: &str) -> Result<PathBuf, String> {
        if path.trim().is_empty() {
            return Err("the path is empty".into());
        }
        if path.contains('\0') {
            return Err("the path contains a NUL character".into());
        }
        let given = Path::new(path);
        let joined = if given.is_absolute() {
            given.to_path_buf()
        } else {
            self.roots[0].join(given)
        };
        let mut normal = PathBuf::new();
        for component in joined.components() {
            match component {
                Component::CurDir => {}
                // Applied to the text: "link/.." means the directory holding `link`, which
                // is then checked like any other path, so `..` cannot smuggle anything out.
                Component::ParentDir => {
                    normal.pop();
                }
                other => normal.push(other),
            }
        }
        Ok(normal)
    }

    /// Resolves the deepest existing ancestor of `target` (following links) and appends
    /// the rest, checking the result stays inside. Returns whether part of it is missing.
    fn confine(&self, path: &str, target: &Path) -> Result<(PathBuf, bool), String> {
        // `symlink_metadata` finds the deepest entry that exists at all, a dangling link
        // included, so a link pointing nowhere cannot pass as "not created yet".
        let existing = target
            .ancestors()
            .find(|a| a.symlink_metadata().is_ok())
            .unwrap_or(target);
        let real = std::fs::canonicalize(existing).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                format!("`{path}` goes through a symbolic link that points nowhere")
            }
            _ => format!("`{path}` cannot be resolved: {}", describe_io(&e)),
        })?;
        let rest = target.strip_prefix(existing).unwrap_or(Path::new(""));
        let resolved = if rest.as_os_str().is_empty() {
            real
        } else {
            real.join(rest)
        };
        if !self.inside(&resolved) {
            // The text alone decides which message fits: a path that only leaves through a
            // link gets told so, since the model cannot see links in its listing otherwise.
            return Err(if self.inside(target) {
                format!(
                    "`{path}` leads outside the workspace ({}) through a symbolic link",
                    self.roots_shown()
                )
            } else {
                format!(
                    "`{path}` is outside the workspace ({}); use a path inside it",
                    self.roots_shown()
                )
            });
        }
        Ok((resolved, !rest.as_os_str().is_empty()))
    }

    fn inside(&self, path: &Path) -> bool {
        // `starts_with` compares whole components, so `/work2` is not inside `/work`.
        self.roots.iter().any(|root| path.starts_with(root))
    }

    fn roots_shown(&self) -> String {
        let shown: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        shown.join(", ")
    }
}

/// A short description of an I/O error for the model.
pub(crate) fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "it does not exist".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => match fusion_core::regular_file::NotRegular::of(e) {
            Some(refusal) => format!("it {refusal}; the file tools use regular files only"),
            None => e.to_string(),
        },
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Workspace) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::fs::write(root.path().join("sub/a.txt"), "a").unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", root.path().join("dangling")).unwrap();
        let ws = Workspace::new([root.path()]).unwrap();
        (root, outside, ws)
    }

    #[test]
    fn paths_inside_resolve_and_dotdot_inside_is_fine() {
        let (root, _outside, ws) = setup();
        let real = root.path().canonicalize().unwrap();
        assert_eq!(
            ws.resolve_existing("sub/../sub/a.txt").unwrap(),
            real.join("sub/a.txt")
        );
        assert_eq!(
            ws.resolve_entry("new/dir/b.txt").unwrap(),
            real.join("new/dir/b.txt")
        );
        let abs = real.join("sub/a.txt");
        assert_eq!(ws.resolve_existing(abs.to_str().unwrap()).unwrap(), abs);
    }

    #[test]
    fn escapes_are_refused() {
        let (_root, outside, ws) = setup();
        let secret = outside.path().join("secret");
        for path in [
            "../x",
            "sub/../../x",
            "/etc/passwd",
            secret.to_str().unwrap(),
        ] {
            let err = ws.resolve_entry(path).unwrap_err();
            assert!(err.contains("outside the workspace"), "{path}: {err}");
        }
        let err = ws.resolve_existing("out/secret").unwrap_err();
        assert!(err.contains("through a symbolic link"), "{err}");
        let err = ws.resolve_entry("out/new.txt").unwrap_err();
        assert!(err.contains("through a symbolic link"), "{err}");
        let err = ws.resolve_entry("out").unwrap_err();
        assert!(err.contains("is a symbolic link"), "{err}");
        let err = ws.resolve_entry("dangling/x").unwrap_err();
        assert!(err.contains("points nowhere"), "{err}");
        assert!(
            ws.resolve_entry(".")
                .unwrap_err()
                .contains("workspace root")
        );
        assert!(ws.resolve_existing("").is_err());
    }
}
