//! Tool names the model calls MCP tools by: `{server}__{tool}`, kept within OpenAI's limit
//! of 64 characters from `[a-zA-Z0-9_-]` and free of collisions.
//!
//! The rules, in order:
//! 1. A server's *prefix* is its configured name with every other character replaced by
//!    `_`, runs of `_` collapsed to one and `_` trimmed from both ends (`my.server` →
//!    `my_server`; empty → `mcp`). A prefix longer than [`MAX_PREFIX_CHARS`] is cut and
//!    given a hash suffix: `-` and 8 hex digits of the full name.
//! 2. A tool's name is `{prefix}__{tool}` with the tool's name sanitized the same way
//!    (without collapsing). Because a prefix never contains `__` nor ends in `_`, the text
//!    before the first `__` is always the prefix: servers with different prefixes can never
//!    produce the same name.
//! 3. Tools whose name needed no change are named first, then the others in byte order of
//!    their original names; a name that is too long or already taken is cut and ends in `_`
//!    and 8 hex digits of the tool's original name. The result depends only on the set of
//!    names, not on the order a server lists them, so it is stable across restarts.
//! 4. While a server runs, a name once given to one of its tools stays with that tool (by
//!    its name on the server), and no other tool is given it, even after that tool leaves
//!    the list ([`ToolNames`]). When `a.b` is named `p__a_b` and `a_b` is listed later,
//!    `a_b` gets the hashed name: a call of `p__a_b` (or an "always" approval, which
//!    approvals key by this name) never reaches another tool than the one it was given to.
//!
//! The hash is 64-bit FNV-1a ([`fusion_core::fnv1a`], written out there), so names never
//! change with a library upgrade.

use std::collections::{HashMap, HashSet};

/// The longest a tool name may be (OpenAI's limit).
pub const MAX_TOOL_NAME_CHARS: usize = 64;

/// The longest a server prefix may be before it is cut and hashed, leaving at least 29
/// characters of every tool's own name.
pub const MAX_PREFIX_CHARS: usize = 24;

/// Length of the hash suffix with its separator (`_` or `-` and 8 hex digits).
const HASH_SUFFIX_CHARS: usize = 9;

/// The prefix for the tools of the server configured as `name` (rule 1).
pub fn server_prefix(name: &str) -> String {
    let mut prefix = String::with_capacity(name.len());
    for c in sanitize(name).chars() {
        if !(c == '_' && prefix.ends_with('_')) {
            prefix.push(c);
        }
    }
    let prefix = prefix.trim_matches('_');
    if prefix.is_empty() {
        return "mcp".to_owned();
    }
    if prefix.len() <= MAX_PREFIX_CHARS {
        return prefix.to_owned();
    }
    hashed(prefix, MAX_PREFIX_CHARS, '-', name)
}

/// A prefix like `prefix` that is not in `taken`: `prefix` itself, else its cut form with
/// a hash of `name` (for two servers whose names sanitize alike, such as `a.b` and `a_b`).
pub fn unique_prefix(prefix: String, name: &str, taken: &HashSet<String>) -> String {
    if !taken.contains(&prefix) {
        return prefix;
    }
    hashed(&prefix, MAX_PREFIX_CHARS, '-', name)
}

/// The names for one server's tools (rules 2 and 3), in the order of `tools`; `None` for
/// a tool that cannot be named (listed twice, or a hash collision). The names of a first
/// listing: later ones go through [`ToolNames::assign`], which keeps them.
pub fn tool_names(prefix: &str, tools: &[&str]) -> Vec<Option<String>> {
    ToolNames::default().assign(prefix, tools)
}

/// The most names of tools no longer listed that [`ToolNames`] keeps from other tools;
/// past it they are forgotten, so a server that renames its tools for ever cannot grow
/// the memory without bound.
pub const MAX_KEPT_UNLISTED_NAMES: usize = 4096;

/// The names given so far to one server's tools (rule 4): each listing's names are made
/// with [`assign`](Self::assign), which keeps every name given before with its tool.
#[derive(Debug, Clone, Default)]
pub struct ToolNames {
    /// Name on the server → name given.
    given: HashMap<String, String>,
}

impl ToolNames {
    /// The names for a listing of `tools` (rules 2 to 4), in their order; `None` for a
    /// tool that cannot be named (listed twice, or a hash collision). A tool named before
    /// keeps its name; a new one is named by rules 2 and 3 among the names not given yet.
    pub fn assign(&mut self, prefix: &str, tools: &[&str]) -> Vec<Option<String>> {
        let mut names: Vec<Option<String>> = vec![None; tools.len()];
        let mut taken: HashSet<String> = self.given.values().cloned().collect();
        let mut seen = HashSet::new();
        let mut order: Vec<usize> = (0..tools.len()).collect();
        // Names needing no change first, so `a_b` keeps its name even when `a.b` sorts
        // first.
        order.sort_by_key(|&i| (sanitize(tools[i]) != tools[i], tools[i]));
        for i in order {
            let tool = tools[i];
            if !seen.insert(tool) {
                continue;
            }
            if let Some(name) = self.given.get(tool) {
                names[i] = Some(name.clone());
                continue;
            }
            let plain = format!("{prefix}__{}", sanitize(tool));
            let name = if plain.len() <= MAX_TOOL_NAME_CHARS && !taken.contains(&plain) {
                plain
            } else {
                hashed(&plain, MAX_TOOL_NAME_CHARS, '_', tool)
            };
            if taken.insert(name.clone()) {
                self.given.insert(tool.to_owned(), name.clone());
                names[i] = Some(name);
            }
        }
        if self.given.len() > seen.len() + MAX_KEPT_UNLISTED_NAMES {
            self.given.retain(|tool, _| seen.contains(tool.as_str()));
        }
        names
    }
}

/// `name` with every character outside `[a-zA-Z0-9_-]` replaced by `_`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `text` (ASCII) cut so that it and a hash suffix of `of` fit in `max` characters.
fn hashed(text: &str, max: usize, separator: char, of: &str) -> String {
    let keep = text.len().min(max - HASH_SUFFIX_CHARS);
    let hash = fusion_core::fnv1a(of.as_bytes()) as u32;
    format!("{}{separator}{hash:08x}", &text[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        name.len() <= MAX_TOOL_NAME_CHARS
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn plain_names_are_prefixed_with_the_server() {
        assert_eq!(server_prefix("everything"), "everything");
        assert_eq!(
            tool_names("everything", &["echo", "get-sum"]),
            [
                Some("everything__echo".to_owned()),
                Some("everything__get-sum".to_owned())
            ]
        );
    }

    #[test]
    fn odd_characters_become_underscores_and_prefixes_never_hold_a_double_underscore() {
        assert_eq!(server_prefix("My Server.v2"), "My_Server_v2");
        assert_eq!(server_prefix("__a__b__"), "a_b");
        assert_eq!(server_prefix("..."), "mcp");
        assert_eq!(server_prefix("файлы"), "mcp");
        let names = tool_names("fs", &["read file", "ünïcode/tool"]);
        assert_eq!(names[0].as_deref(), Some("fs__read_file"));
        assert_eq!(names[1].as_deref(), Some("fs___n_code_tool"));
    }

    #[test]
    fn long_names_are_cut_with_a_stable_hash() {
        let long = "a".repeat(100);
        let names = tool_names("server", &[&long]);
        let name = names[0].clone().unwrap();
        assert_eq!(name.len(), MAX_TOOL_NAME_CHARS);
        assert!(valid(&name));
        assert!(name.starts_with("server__aaaa"), "{name}");
        assert_eq!(tool_names("server", &[&long])[0].as_ref(), Some(&name));
        let other = tool_names("server", &[&format!("{long}b")])[0]
            .clone()
            .unwrap();
        assert_ne!(name, other, "names differing after the cut still differ");

        let prefix = server_prefix(&"s".repeat(40));
        assert_eq!(prefix.len(), MAX_PREFIX_CHARS);
        assert!(!prefix.contains("__") && valid(&prefix));
    }

    #[test]
    fn collisions_keep_the_exact_name_and_hash_the_other() {
        // "a.b" sorts before "a_b", yet "a_b" needed no change and keeps the plain name.
        let names = tool_names("p", &["a.b", "a_b"]);
        assert_eq!(names[1].as_deref(), Some("p__a_b"));
        let hashed = names[0].clone().unwrap();
        assert!(hashed.starts_with("p__a_b_") && valid(&hashed), "{hashed}");
        // Order of listing does not matter.
        let swapped = tool_names("p", &["a_b", "a.b"]);
        assert_eq!(swapped[0], names[1]);
        assert_eq!(swapped[1], names[0]);
        // A tool listed twice gets one name.
        assert_eq!(
            tool_names("p", &["x", "x"]),
            [Some("p__x".to_owned()), None]
        );
    }

    #[test]
    fn a_name_stays_with_its_tool_when_the_list_changes() {
        let mut names = ToolNames::default();
        assert_eq!(
            names.assign("py", &["safe.op"]),
            [Some("py__safe_op".into())]
        );
        // Alone, `safe_op` would take the plain name (rule 3); it is `safe.op`'s now.
        let changed = names.assign("py", &["safe_op", "safe.op"]);
        assert_eq!(changed[1].as_deref(), Some("py__safe_op"));
        let hashed = changed[0].clone().unwrap();
        assert!(
            hashed.starts_with("py__safe_op_") && valid(&hashed),
            "{hashed}"
        );
        assert_eq!(
            tool_names("py", &["safe_op", "safe.op"])[0].as_deref(),
            Some("py__safe_op")
        );
        // Nor does it take the name once `safe.op` leaves the list; `safe.op` coming back
        // gets its own name again.
        assert_eq!(names.assign("py", &["safe_op"]), [Some(hashed.clone())]);
        assert_eq!(
            names.assign("py", &["safe.op", "safe_op"]),
            [Some("py__safe_op".into()), Some(hashed)]
        );
    }

    #[test]
    fn names_of_tools_no_longer_listed_are_kept_up_to_a_bound() {
        let mut names = ToolNames::default();
        for round in 0..10 {
            let tools: Vec<String> = (0..1000).map(|i| format!("t{round}_{i}")).collect();
            let tools: Vec<&str> = tools.iter().map(String::as_str).collect();
            assert!(names.assign("p", &tools).iter().all(Option::is_some));
            assert!(names.given.len() <= 1000 + MAX_KEPT_UNLISTED_NAMES);
        }
    }

    #[test]
    fn server_prefixes_that_sanitize_alike_are_told_apart() {
        let mut taken = HashSet::new();
        let first = unique_prefix(server_prefix("a.b"), "a.b", &taken);
        taken.insert(first.clone());
        let second = unique_prefix(server_prefix("a_b"), "a_b", &taken);
        assert_eq!(first, "a_b");
        assert_ne!(first, second);
        assert!(
            second.starts_with("a_b-") && !second.contains("__"),
            "{second}"
        );
    }
}
