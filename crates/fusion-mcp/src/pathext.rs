//! Finding a stdio server's command on Windows the way a shell does: a bare name without
//! an extension is tried with each extension of `PATHEXT` in each directory of `PATH`.
//!
//! Rust's `std::process::Command` (and tokio's, which is it) searches `PATH` on Windows
//! for a bare name with `.exe` appended and nothing else, so `npx`, which npm installs as
//! `npx.cmd` (beside a `sh` script `npx` that Windows cannot run), is "not found", as is
//! every other npm launcher (`pnpm`), though desktop clients' configurations name them
//! so (`"command": "npx"`). Given the full path of a `.cmd` or `.bat` file, std runs it
//! through `cmd.exe`, quoting the arguments for it (and refusing arguments it cannot quote
//! safely), so the name is resolved here and std is handed the path.
//!
//! The search is a pure function of the `PATH` and `PATHEXT` values, so it is tested on
//! every platform; only Windows uses it.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::server_config::StdioServerConfig;

/// The extensions tried when `PATHEXT` is not set: Windows' own default, in its order.
pub const DEFAULT_PATHEXT: &str = ".COM;.EXE;.BAT;.CMD";

/// The file to start for `config`'s command when it is a bare name without an extension
/// found with one of `PATHEXT` in the `PATH` the child is given: each of these is
/// `config.env`'s if set there (in any case: Windows' `Path` is `PATH`), else this
/// program's, as `parent_var` reads it. `None` leaves the command to std.
pub fn program(
    config: &StdioServerConfig,
    parent_var: impl Fn(&str) -> Option<OsString>,
) -> Option<PathBuf> {
    let var = |name: &str| {
        let mut configured = config.env.iter();
        configured
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| OsString::from(value))
            .or_else(|| parent_var(name))
    };
    let pathext = var("PATHEXT").and_then(|value| value.into_string().ok());
    let pathext = pathext.as_deref().unwrap_or(DEFAULT_PATHEXT);
    find_with_pathext(
        &config.command,
        &var("PATH")?,
        pathext,
        config.cwd.as_deref(),
    )
}

/// The file `command` names, if it is a bare name without an extension (`npx`) and one of
/// the directories of `path` holds it with an extension of `pathext` (`npx.cmd`); `None`
/// for anything else, which is left to std's own search.
///
/// Directories are tried in `path`'s order, and in each the extensions in `pathext`'s
/// order, as `cmd.exe` does; a relative directory is taken from `cwd`, where the child
/// runs. `path` is split as the platform splits `PATH`; `pathext` at `;`.
pub fn find_with_pathext(
    command: &str,
    path: &OsStr,
    pathext: &str,
    cwd: Option<&Path>,
) -> Option<PathBuf> {
    let name = Path::new(command);
    let bare = name.components().count() == 1 && !command.contains(['/', '\\', ':']);
    if !bare || name.extension().is_some() {
        return None;
    }
    let extensions: Vec<&str> = pathext
        .split(';')
        .map(str::trim)
        .filter(|ext| ext.starts_with('.') && ext.len() > 1)
        .collect();
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| match cwd {
            Some(cwd) if dir.is_relative() => cwd.join(dir),
            _ => dir,
        })
        .find_map(|dir| {
            extensions
                .iter()
                .map(|ext| dir.join(format!("{command}{ext}")))
                .find(|candidate| candidate.is_file())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `PATH` of `dirs`, joined as the platform joins it.
    fn path_of(dirs: &[&Path]) -> std::ffi::OsString {
        std::env::join_paths(dirs).unwrap()
    }

    /// A file `name` in `dir`. Windows' file names are not case-sensitive, so `npx.cmd`
    /// is found as `npx.CMD`; the tests run on file systems that are, and name files as
    /// the `PATHEXT` they search with spells their extensions.
    fn touch(dir: &Path, name: &str) -> PathBuf {
        let file = dir.join(name);
        std::fs::write(&file, "").unwrap();
        file
    }

    #[test]
    fn a_bare_name_is_found_with_an_extension_of_pathext() {
        let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // npm's install: a `sh` script without extension beside the `.cmd` Windows runs.
        touch(second.path(), "npx");
        let npx = touch(second.path(), "npx.CMD");
        touch(second.path(), "npx.ps1");
        let path = path_of(&[first.path(), second.path()]);
        assert_eq!(
            find_with_pathext("npx", &path, DEFAULT_PATHEXT, None),
            Some(npx)
        );
    }

    #[test]
    fn pathext_order_wins_within_a_directory_and_path_order_across_them() {
        let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        touch(first.path(), "tool.CMD");
        let exe = touch(first.path(), "tool.EXE");
        touch(second.path(), "tool.COM");
        let path = path_of(&[first.path(), second.path()]);
        assert_eq!(
            find_with_pathext("tool", &path, ".COM;.EXE;.BAT;.CMD", None),
            Some(exe)
        );
        // PATHEXT's own order, its spaces and empty parts left out.
        let cmd = first.path().join("tool.CMD");
        assert_eq!(
            find_with_pathext("tool", &path, " .CMD ;;.EXE", None),
            Some(cmd)
        );
    }

    #[test]
    fn a_relative_directory_of_path_is_taken_from_the_working_directory() {
        let cwd = tempfile::tempdir().unwrap();
        std::fs::create_dir(cwd.path().join("bin")).unwrap();
        let server = touch(&cwd.path().join("bin"), "server.BAT");
        let path = path_of(&[Path::new("bin")]);
        assert_eq!(
            find_with_pathext("server", &path, DEFAULT_PATHEXT, Some(cwd.path())),
            Some(server)
        );
    }

    #[test]
    fn the_childs_path_and_pathext_are_its_configured_ones_else_this_programs() {
        let (ours, its) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let in_ours = touch(ours.path(), "server.CMD");
        let in_its = touch(its.path(), "server.BAT");
        let parent = |name: &str| match name {
            "PATH" => Some(path_of(&[ours.path()])),
            _ => None,
        };
        let config = StdioServerConfig::new("server");
        assert_eq!(program(&config, parent), Some(in_ours));
        // Set in its `env`, in Windows' spelling, it is the child's: the one it runs with.
        let configured = config
            .clone()
            .env("Path", path_of(&[its.path()]).into_string().unwrap());
        assert_eq!(program(&configured, parent), Some(in_its.clone()));
        let only_cmd = configured.clone().env("PATHEXT", ".CMD");
        assert_eq!(program(&only_cmd, parent), None);
        assert_eq!(program(&configured, |_| None), Some(in_its));
    }

    #[test]
    fn names_with_an_extension_or_a_directory_and_missing_ones_are_left_to_std() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "npx.CMD");
        touch(dir.path(), "npx.cmd.CMD");
        let path = path_of(&[dir.path()]);
        for command in ["npx.cmd", "./npx", "bin/npx", "C:npx", "missing", ""] {
            assert_eq!(
                find_with_pathext(command, &path, DEFAULT_PATHEXT, None),
                None,
                "{command}"
            );
        }
    }
}
