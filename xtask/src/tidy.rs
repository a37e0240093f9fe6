//! `cargo xtask tidy`: structural rules a reviewer should not have to check by hand.
//!
//! In the spirit of rust-analyzer's tidy tests, it reads the files git knows about (tracked,
//! or new and not ignored) as text and fails when:
//!
//! - a `.rs` file does not start with a `//!` doc saying what it is for;
//! - a source file under a `src/` folder has more than [`MAX_SOURCE_LINES`] lines, not
//!   counting a trailing `#[cfg(test)] mod tests` block (tests may grow, code should split);
//! - two modules of one crate import each other through `use crate::..` or `use super::..`,
//!   directly or around a longer circle (modules should form layers: move the shared piece down);
//! - a file points outside the repository: a relative path that climbs above the repository
//!   root, or a name of the workspace around it (the repo must build, test and document
//!   itself from a clone).
//!
//! Each problem is printed as `path:line: what`; any problem makes the task fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::workspace_root;

/// The most lines a source file may have before it should be split.
const MAX_SOURCE_LINES: usize = 500;

/// Names of things that live beside the repository, not in it. Spelled in pieces so that
/// this file, and a plain `grep` for them over the repository, do not find them here.
const OUTSIDE_NAMES: &[&str] = &[
    concat!("BENCH", "MARKS.md"),
    concat!("shared", "/DESIGN.md"),
    concat!("shared", "/STYLE.md"),
    concat!("shared", "/spec"),
];

/// One finding: where, and what is wrong.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Problem {
    path: String,
    line: usize,
    what: String,
}

pub fn run() -> Result<()> {
    let root = workspace_root();
    let files = repo_files(&root)?;
    let mut problems = Vec::new();
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    for path in &files {
        let Ok(text) = std::fs::read_to_string(root.join(path)) else {
            continue; // binary or unreadable: nothing of ours to check
        };
        if path.ends_with(".rs") {
            problems.extend(check_file_doc(path, &text));
            problems.extend(check_length(path, &text));
        }
        if [".rs", ".md", ".toml", ".sh"]
            .iter()
            .any(|ext| path.ends_with(ext))
            || path.starts_with(".ci/")
        {
            problems.extend(check_outside_references(path, &text));
        }
        if path.ends_with(".rs") {
            sources.insert(path.clone(), text);
        }
    }
    problems.extend(check_import_cycles(&sources));
    problems.sort();

    for p in &problems {
        println!("{}:{}: {}", p.path, p.line, p.what);
    }
    let rs_count = sources.len();
    if problems.is_empty() {
        println!(
            "tidy: {} files ({rs_count} Rust) checked, no problems",
            files.len()
        );
        Ok(())
    } else {
        bail!(
            "tidy: {} problem(s) in {} files checked",
            problems.len(),
            files.len()
        )
    }
}

/// Files git tracks, plus new ones it does not ignore, relative to the root, `/`-separated.
fn repo_files(root: &Path) -> Result<Vec<String>> {
    let output = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "-z",
        ])
        .current_dir(root)
        .output()
        .context("running git ls-files (tidy reads the files git knows about)")?;
    if !output.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut files: Vec<String> = output
        .stdout
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .filter(|name| root.join(name).is_file()) // deleted but not yet committed
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

fn check_file_doc(path: &str, text: &str) -> Option<Problem> {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    (!first.starts_with("//!")).then(|| Problem {
        path: path.to_string(),
        line: 1,
        what: "does not start with a `//!` doc saying what the file is for".into(),
    })
}

fn check_length(path: &str, text: &str) -> Option<Problem> {
    if !path.split('/').any(|part| part == "src") {
        return None; // integration tests, benches and examples are not library code
    }
    let lines = code_lines(text);
    (lines > MAX_SOURCE_LINES).then(|| Problem {
        path: path.to_string(),
        line: MAX_SOURCE_LINES + 1,
        what: format!(
            "{lines} lines (not counting a trailing test module), more than {MAX_SOURCE_LINES}: split it by concern"
        ),
    })
}

/// Lines of `text` before its trailing `#[cfg(test)] mod tests` block, or all of them.
fn code_lines(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .enumerate()
        .rev()
        .find(|(i, l)| {
            l.trim() == "#[cfg(test)]"
                && lines.get(i + 1).is_some_and(|next| {
                    let next = next.trim_start();
                    next.starts_with("mod tests") || next.starts_with("pub(crate) mod tests")
                })
        })
        .map_or(lines.len(), |(i, _)| i)
}

fn check_outside_references(path: &str, text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let depth = path.matches('/').count(); // folders between the root and this file
    for (n, line) in text.lines().enumerate() {
        if let Some(name) = OUTSIDE_NAMES.iter().find(|name| line.contains(*name)) {
            problems.push(Problem {
                path: path.to_string(),
                line: n + 1,
                what: format!("names `{name}`, which is outside the repository"),
            });
            continue;
        }
        for climbs in relative_climbs(line) {
            if climbs > depth {
                problems.push(Problem {
                    path: path.to_string(),
                    line: n + 1,
                    what: format!(
                        "a relative path climbs {climbs} folder(s) from a file {depth} deep: it leaves the repository"
                    ),
                });
            }
        }
    }
    problems
}

/// For each run of `../` in `line`, how many folders it climbs.
fn relative_climbs(line: &str) -> Vec<usize> {
    let mut climbs = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("../") {
        let run = &rest[start..];
        let count = Path::new(
            run.split(|c: char| c.is_whitespace() || "\"')>`]".contains(c))
                .next()
                .unwrap_or(""),
        )
        .components()
        .take_while(|c| matches!(c, Component::ParentDir))
        .count();
        climbs.push(count);
        rest = &run[3 * count.max(1)..];
    }
    climbs
}

/// Import circles between the modules of each crate.
fn check_import_cycles(sources: &BTreeMap<String, String>) -> Vec<Problem> {
    // Group the files under each `src/` folder: one crate's module tree.
    let mut crates: BTreeMap<String, Vec<(&String, &String)>> = BTreeMap::new();
    for (path, text) in sources {
        if let Some(at) = path
            .find("src/")
            .filter(|&at| at == 0 || path[..at].ends_with('/'))
        {
            crates
                .entry(path[..at + 4].to_string())
                .or_default()
                .push((path, text));
        }
    }
    let mut problems = Vec::new();
    for (src, files) in crates {
        let modules: BTreeMap<Vec<String>, &String> = files
            .iter()
            .map(|(path, _)| (module_of(&path[src.len()..]), *path))
            .collect();
        let mut edges: BTreeMap<Vec<String>, BTreeSet<(Vec<String>, usize)>> = BTreeMap::new();
        for (path, text) in &files {
            let from = module_of(&path[src.len()..]);
            for (line, import) in imports(text) {
                let Some(target) = resolve(&from, &import) else {
                    continue;
                };
                let Some(to) = longest_known(&modules, &target) else {
                    continue;
                };
                if to != from {
                    edges.entry(from.clone()).or_default().insert((to, line));
                }
            }
        }
        for cycle in circles(&edges) {
            let (first, second) = (&cycle[0], &cycle[1]);
            let line = edges[first]
                .iter()
                .find(|(to, _)| to == second)
                .map_or(1, |(_, l)| *l);
            let names: Vec<String> = cycle
                .iter()
                .chain(std::iter::once(first))
                .map(|m| {
                    format!(
                        "{} ({})",
                        modules[m].rsplit('/').next().unwrap_or(""),
                        display(m)
                    )
                })
                .collect();
            problems.push(Problem {
                path: modules[first].clone(),
                line,
                what: format!("import circle: {}", names.join(" → ")),
            });
        }
    }
    problems
}

fn display(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        format!("crate::{}", module.join("::"))
    }
}

/// `session/turn.rs` → `["session", "turn"]`; `lib.rs` → `[]`; `a/mod.rs` → `["a"]`.
fn module_of(relative: &str) -> Vec<String> {
    let without_ext = relative.strip_suffix(".rs").unwrap_or(relative);
    let mut parts: Vec<String> = without_ext.split('/').map(str::to_string).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    if parts.first().is_some_and(|p| p == "bin") {
        parts.clear(); // each `src/bin/x.rs` is a crate root of its own
    }
    parts
}

/// Every `use crate::..` / `use super::..` path in the code above the file's test module,
/// braces expanded, with its line number.
fn imports(text: &str) -> Vec<(usize, Vec<String>)> {
    let code: Vec<&str> = text.lines().take(code_lines(text)).collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let trimmed = code[i].trim_start();
        let statement_start = trimmed
            .strip_prefix("pub(crate) use ")
            .or_else(|| trimmed.strip_prefix("pub(super) use "))
            .or_else(|| trimmed.strip_prefix("pub use "))
            .or_else(|| trimmed.strip_prefix("use "));
        let Some(first) = statement_start else {
            i += 1;
            continue;
        };
        let line = i + 1;
        let mut statement = first.to_string();
        while !statement.contains(';') && i + 1 < code.len() {
            i += 1;
            statement.push_str(code[i].trim());
        }
        i += 1;
        let statement = statement
            .split(';')
            .next()
            .unwrap_or("")
            .replace(" as ", "@") // keep renames apart before dropping the spaces
            .replace(char::is_whitespace, "");
        if statement.starts_with("crate::") || statement.starts_with("super::") {
            found.extend(expand(&statement).into_iter().map(|p| (line, p)));
        }
    }
    found
}

/// `a::{b, c::{d, e}}` → `[a::b, a::c::d, a::c::e]`, each split into segments.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let Some(open) = tree.find('{') else {
        let path = tree.split('@').next().unwrap_or(tree); // `X as Y` was written `X@Y`
        return vec![
            path.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ];
    };
    let prefix = &tree[..open];
    let inner = tree[open + 1..]
        .strip_suffix('}')
        .unwrap_or(&tree[open + 1..]);
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (at, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.is_empty())
        .flat_map(|item| {
            let joined = if item == "self" {
                prefix.trim_end_matches("::").to_string()
            } else {
                format!("{prefix}{item}")
            };
            expand(&joined)
        })
        .collect()
}

/// The absolute module path an import names, from the module `from` that holds it.
fn resolve(from: &[String], import: &[String]) -> Option<Vec<String>> {
    let mut segments = import.iter().peekable();
    let mut base: Vec<String> = match segments.next()?.as_str() {
        "crate" => Vec::new(),
        "super" => {
            // `super` in `a/b.rs` and in `a/b/mod.rs` (both module a::b) is `a`.
            let mut m = from.to_vec();
            m.pop()?;
            m
        }
        _ => return None,
    };
    while segments.peek().is_some_and(|s| *s == "super") {
        segments.next();
        base.pop()?;
    }
    base.extend(segments.cloned());
    Some(base)
}

/// The longest prefix of `path` that is a module with a file of its own.
fn longest_known(modules: &BTreeMap<Vec<String>, &String>, path: &[String]) -> Option<Vec<String>> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains_key(prefix))
}

/// One shortest circle through each group of modules that reach each other (each strongly
/// connected component), starting from its smallest module: one report per tangle, however
/// many circles run through it.
fn circles(edges: &BTreeMap<Vec<String>, BTreeSet<(Vec<String>, usize)>>) -> Vec<Vec<Vec<String>>> {
    let next = |m: &Vec<String>| -> Vec<Vec<String>> {
        edges
            .get(m)
            .into_iter()
            .flatten()
            .map(|(to, _)| to.clone())
            .collect()
    };
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut found = Vec::new();
    for start in edges.keys() {
        if reported.contains(start) {
            continue;
        }
        // Breadth-first from `start`: the first path that comes back is a shortest circle.
        let mut came_from: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        let mut closing = None;
        while let Some(node) = queue.pop_front() {
            for to in next(&node) {
                if &to == start {
                    closing = Some(node.clone());
                    break;
                }
                if !came_from.contains_key(&to) {
                    came_from.insert(to.clone(), node.clone());
                    queue.push_back(to);
                }
            }
            if closing.is_some() {
                break;
            }
        }
        let Some(mut node) = closing else { continue };
        let mut circle = vec![node.clone()];
        while &node != start {
            node = came_from[&node].clone();
            circle.push(node.clone());
        }
        circle.reverse();
        // Every module that both reaches and is reached from `start` is in this tangle.
        let reach = |from: &Vec<String>, forward: bool| -> BTreeSet<Vec<String>> {
            let mut seen = BTreeSet::from([from.clone()]);
            let mut stack = vec![from.clone()];
            while let Some(m) = stack.pop() {
                let neighbours: Vec<Vec<String>> = if forward {
                    next(&m)
                } else {
                    edges
                        .iter()
                        .filter(|(_, tos)| tos.iter().any(|(to, _)| *to == m))
                        .map(|(k, _)| k.clone())
                        .collect()
                };
                for n in neighbours {
                    if seen.insert(n.clone()) {
                        stack.push(n);
                    }
                }
            }
            seen
        };
        let forward = reach(start, true);
        reported.extend(
            reach(start, false)
                .into_iter()
                .filter(|m| forward.contains(m)),
        );
        found.push(circle);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo package` leaves out every file outside a crate's folder, so a crate that
    /// compiles one in (`#[path]`, `include!`) fails `cargo xtask ci`'s packaging, as
    /// xtask did once it compiled fusion-core's `redact.rs` in.
    #[test]
    fn no_packaged_crate_compiles_a_file_from_outside_its_folder() {
        let root = workspace_root();
        let mut outside = Vec::new();
        for path in repo_files(&root).unwrap() {
            let parts: Vec<&str> = path.split('/').collect();
            let folder_depth = if parts[0] == "crates" { 2 } else { 1 };
            let folder = parts.iter().take(folder_depth).copied().collect::<Vec<_>>();
            let packaged = root.join(folder.join("/")).join("Cargo.toml").is_file()
                && !crate::NOT_PACKAGED.contains(folder.last().unwrap());
            if !packaged || !path.ends_with(".rs") || parts.len() <= folder_depth {
                continue;
            }
            // Folders between the crate's folder and the file, which `../` may climb.
            let depth = parts.len() - folder_depth - 1;
            let text = std::fs::read_to_string(root.join(&path)).unwrap();
            for (n, line) in text.lines().enumerate() {
                let compiles_in = ["#[path", "include!(", "include_str!(", "include_bytes!("]
                    .iter()
                    .any(|form| line.contains(form));
                if compiles_in && relative_climbs(line).iter().any(|&c| c > depth) {
                    outside.push(format!("{path}:{}", n + 1));
                }
            }
        }
        assert!(outside.is_empty(), "{outside:?}");
    }

    /// `.ci/run` packages the workspace with a `cargo package` of its own (it runs the
    /// steps itself rather than `cargo xtask ci`), so it must leave out what
    /// `NOT_PACKAGED` does: it once packaged xtask, whose package cannot build.
    #[test]
    fn the_ci_script_packages_what_xtask_ci_packages() {
        let script = std::fs::read_to_string(workspace_root().join(".ci/run")).unwrap();
        let package = script
            .lines()
            .find(|line| line.trim_start().starts_with("cargo package"))
            .expect(".ci/run runs cargo package");
        let excluded: Vec<&str> = package
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|pair| pair[0] == "--exclude")
            .map(|pair| pair[1])
            .collect();
        let mut expected = crate::NOT_PACKAGED.to_vec();
        expected.sort_unstable();
        let mut excluded = excluded;
        excluded.sort_unstable();
        assert_eq!(excluded, expected, "{package}");
    }

    fn segs(path: &str) -> Vec<String> {
        path.split("::").map(str::to_string).collect()
    }

    #[test]
    fn braces_expand_into_one_path_each() {
        assert_eq!(
            expand("crate::a::{B,c::{D,E},self}"),
            vec![
                segs("crate::a::B"),
                segs("crate::a::c::D"),
                segs("crate::a::c::E"),
                segs("crate::a")
            ]
        );
        assert_eq!(expand("super::x::Yasz"), vec![segs("super::x::Yasz")]);
        assert_eq!(
            expand("crate::x::{Y@Z,W}"),
            vec![segs("crate::x::Y"), segs("crate::x::W")]
        );
    }

    #[test]
    fn super_resolves_from_the_module_not_the_file() {
        let from = segs("session::turn");
        assert_eq!(
            resolve(&from, &segs("super::AgentSession")),
            Some(segs("session::AgentSession"))
        );
        assert_eq!(
            resolve(&segs("session"), &segs("super::events::Step")),
            Some(segs("events::Step"))
        );
        assert_eq!(resolve(&from, &segs("crate::llm::X")), Some(segs("llm::X")));
    }

    #[test]
    fn a_two_module_circle_is_reported_once() {
        let files: BTreeMap<String, String> = [
            ("c/src/lib.rs", "//! x\nmod a;\nmod b;\nmod c;\n"),
            ("c/src/a.rs", "//! a\nuse crate::b::{B, Other};\n"),
            ("c/src/b.rs", "//! b\nuse super::a::A;\nuse crate::c::C;\n"),
            (
                "c/src/c.rs",
                "//! c, imports nothing back\n#[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n",
            ),
        ]
        .into_iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
        let problems = check_import_cycles(&files);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "c/src/a.rs");
        assert!(
            problems[0]
                .what
                .contains("a.rs (crate::a) → b.rs (crate::b) → a.rs"),
            "{}",
            problems[0].what
        );
    }

    #[test]
    fn a_child_using_its_parent_is_not_a_circle() {
        let files: BTreeMap<String, String> = [
            (
                "c/src/lib.rs",
                "//! x\npub use session::Session;\nmod session;\n",
            ),
            (
                "c/src/session/mod.rs",
                "//! s\nmod turn;\npub struct Session;\n",
            ),
            (
                "c/src/session/turn.rs",
                "//! t\nuse super::Session;\nuse crate::Session as S;\n",
            ),
        ]
        .into_iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
        assert_eq!(check_import_cycles(&files), vec![]);
    }

    #[test]
    fn length_leaves_out_the_trailing_test_module() {
        let mut text = "//! x\n".to_string() + &"fn f() {}\n".repeat(499);
        assert!(check_length("a/src/x.rs", &text).is_none());
        text.push_str("#[cfg(test)]\nmod tests {\n");
        text.push_str(&"    #[test] fn t() {}\n".repeat(100));
        text.push_str("}\n");
        assert!(check_length("a/src/x.rs", &text).is_none());
        text.insert_str(0, "//! one more\n");
        assert!(check_length("a/src/x.rs", &text).is_some());
        assert!(
            check_length("a/tests/x.rs", &text).is_none(),
            "integration tests are not counted"
        );
    }

    #[test]
    fn paths_that_leave_the_repository_are_found() {
        let climbing_out = format!("see [x]({}elsewhere/X.md)", "../".repeat(2));
        assert!(check_outside_references("docs/a.md", &climbing_out).len() == 1);
        assert!(check_outside_references("docs/a.md", "see [x](../README.md)").is_empty());
        assert!(check_outside_references("crates/a/src/b.rs", "//! ../../Cargo.toml").is_empty());
        assert!(check_outside_references("README.md", "cp ../x .").len() == 1);
        let outside_name = format!("// from {}", OUTSIDE_NAMES[0]);
        assert!(check_outside_references("x.rs", &outside_name).len() == 1);
    }

    #[test]
    fn every_file_needs_a_module_doc() {
        assert!(check_file_doc("a.rs", "\n//! fine\n").is_none());
        assert!(check_file_doc("a.rs", "// plain comment\n").is_some());
    }
}
