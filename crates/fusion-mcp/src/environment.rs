//! What a stdio server is given of this program's environment: [`InheritEnv`], by default
//! only [`DEFAULT_INHERITED_ENV`] (as the official MCP SDKs' stdio clients do), then the
//! server's configured `env` on top.
//!
//! An agent's environment holds its secrets: the LLM provider's key, the storage's
//! encryption key (`FUSION_ENCRYPTION_KEY`), a database URL with its password, cloud
//! credentials. A server needs none of them unless its configuration says so, and a
//! server passing its environment on (to a subprocess, a crash report, a log line) would
//! pass all of them. Unlike `env`, which sets values, [`InheritEnv`] names variables whose
//! values come from the environment Fusion runs in, so a token can stay out of the file.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

/// The variables of this program's environment every stdio server is given (each when
/// set): the set the official MCP TypeScript and Python SDKs give a server by default,
/// enough to find programs (`PATH`), a home directory for caches (`npx`, `uvx`) and the
/// user's name, and nothing that is usually secret.
#[cfg(not(windows))]
pub const DEFAULT_INHERITED_ENV: &[&str] = &["HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"];

/// The variables of this program's environment every stdio server is given (each when
/// set): the set the official MCP TypeScript SDK gives a server by default on Windows.
#[cfg(windows)]
pub const DEFAULT_INHERITED_ENV: &[&str] = &[
    "APPDATA",
    "HOMEDRIVE",
    "HOMEPATH",
    "LOCALAPPDATA",
    "PATH",
    "PROCESSOR_ARCHITECTURE",
    "PROGRAMFILES",
    "SYSTEMDRIVE",
    "SYSTEMROOT",
    "TEMP",
    "USERNAME",
    "USERPROFILE",
];

/// Which variables of this program's environment a stdio server is given, before its
/// configured `env` (which wins over an inherited value).
///
/// In the JSON configuration: `"inheritEnv": ["GITHUB_TOKEN", "AWS_PROFILE"]` is
/// [`Named`](Self::Named), `"inheritEnv": true` is [`All`](Self::All); without it (or with
/// `false`), `Named` with no names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InheritEnv {
    /// [`DEFAULT_INHERITED_ENV`] and the variables named here, each when set. The default,
    /// with no names.
    Named(Vec<String>),
    /// The whole environment, secrets included: for a server trusted with everything
    /// this program can read.
    All,
}

impl Default for InheritEnv {
    fn default() -> Self {
        InheritEnv::Named(Vec::new())
    }
}

impl InheritEnv {
    /// The variables of `parent` (this program's environment) a server is given; `None`
    /// for [`All`](Self::All), which leaves the environment as it is.
    ///
    /// A default variable whose value starts with `()` is left out, as the SDKs do: that
    /// is how old shells export functions, and a server's shell would run it.
    pub(crate) fn select(
        &self,
        parent: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Option<Vec<(OsString, OsString)>> {
        let InheritEnv::Named(names) = self else {
            return None;
        };
        let selected = parent.into_iter().filter(|(name, value)| {
            let named = names.iter().any(|n| same_name(name, n));
            let default = DEFAULT_INHERITED_ENV.iter().any(|n| same_name(name, n))
                && !value.as_encoded_bytes().starts_with(b"()");
            named || default
        });
        Some(selected.collect())
    }
}

/// Whether `name` can name a variable: not empty, and holding no `=`, which ends a name
/// (`A=B` set to `v` reaches the server as `A`, set to `B=v`), nor a NUL byte, which ends
/// the text the system is given.
pub(crate) fn is_variable_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

/// Refuses a server's `env` that sets a variable under a name that is none: it would be
/// set under another name, with the rest of the entry put before its value, or (a NUL
/// byte) fail the start with the system's "nul byte found in provided data", which names
/// no entry. The reason shows the name only up to its `=` or NUL byte: what follows may
/// be a value put there by mistake, a key.
pub(crate) fn check_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    let Some(name) = env.keys().find(|name| !is_variable_name(name)) else {
        return Ok(());
    };
    let shown = name.split(['=', '\0']).next().unwrap_or_default();
    Err(if name.is_empty() {
        "its `env` sets a variable with an empty name".to_owned()
    } else {
        format!(
            "its `env` sets `{}…`, which is no variable name: a name holds no `=` nor NUL \
             byte (the value goes on the right of the entry)",
            shown.escape_debug()
        )
    })
}

/// Whether `name` is the variable `wanted`: on Windows, whose variable names ignore case
/// (`Path` is `PATH`), in any case.
fn same_name(name: &OsStr, wanted: &str) -> bool {
    if cfg!(windows) {
        name.to_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
    } else {
        name == wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent() -> Vec<(OsString, OsString)> {
        [
            ("PATH", "/usr/bin"),
            ("HOME", "/home/a"),
            ("TERM", "() { :; }; echo pwned"),
            ("OPENAI_API_KEY", "sk-secret"),
            ("GITHUB_TOKEN", "ghp-secret"),
        ]
        .into_iter()
        .map(|(n, v)| (n.into(), v.into()))
        .collect()
    }

    fn names(selected: Option<Vec<(OsString, OsString)>>) -> Vec<String> {
        let selected = selected.expect("a chosen environment");
        let names = selected.into_iter().map(|(n, _)| n.into_string().unwrap());
        names.collect()
    }

    #[cfg(not(windows))]
    #[test]
    fn only_the_defaults_and_the_named_variables_are_given() {
        let default = InheritEnv::default().select(parent());
        assert_eq!(names(default), ["PATH", "HOME"]);
        let named = InheritEnv::Named(vec!["GITHUB_TOKEN".into(), "MISSING".into()]);
        assert_eq!(
            names(named.select(parent())),
            ["PATH", "HOME", "GITHUB_TOKEN"]
        );
        assert_eq!(InheritEnv::All.select(parent()), None);
    }
}
