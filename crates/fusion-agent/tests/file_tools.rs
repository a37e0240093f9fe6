//! The built-in file tools: they work inside the workspace, and every one of them refuses
//! `..`, absolute and symbolic-link escapes, with messages the model can act on.

mod common;

use std::path::Path;

use common::Harness;
use fusion_agent::tools::files::ReadFile;
use fusion_agent::{Tool, ToolRegistry, Workspace};
use fusion_core::Error;
use serde_json::{Value, json};

const TOOLS: [&str; 4] = ["read_file", "write_file", "list_directory", "delete_file"];

async fn call(registry: &ToolRegistry, tool: &str, args: Value) -> fusion_core::Result<String> {
    registry.get(tool).unwrap().call(args).await
}

fn args(tool: &str, path: &str) -> Value {
    match tool {
        "write_file" => json!({"path": path, "content": "pwned"}),
        _ => json!({"path": path}),
    }
}

/// A workspace holding `inside.txt`, next to an outside directory holding `secret.txt`.
struct Fixture {
    workspace: tempfile::TempDir,
    outside: tempfile::TempDir,
    registry: ToolRegistry,
}

fn fixture() -> Fixture {
    let workspace = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(workspace.path().join("inside.txt"), "inside").unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    let registry = ToolRegistry::with_file_tools([workspace.path()]).unwrap();
    Fixture {
        workspace,
        outside,
        registry,
    }
}

fn assert_refused(result: fusion_core::Result<String>, tool: &str, path: &str, why: &str) {
    match result {
        Err(Error::Tool { tool: t, message }) => {
            assert_eq!(t, tool);
            assert!(message.contains(why), "{tool} {path}: {message}");
        }
        other => panic!("{tool} {path} should be refused, got {other:?}"),
    }
}

fn assert_outside_untouched(outside: &Path) {
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "secret"
    );
    assert!(!outside.join("new.txt").exists());
}

#[tokio::test]
async fn dotdot_and_absolute_escapes_are_refused_by_every_tool() {
    let f = fixture();
    let outside_dir = f.outside.path().to_str().unwrap().to_owned();
    let secret = f.outside.path().join("secret.txt");
    let outside_name = f.outside.path().file_name().unwrap().to_str().unwrap();
    let dotdot = format!("../{outside_name}/secret.txt");
    for tool in TOOLS {
        let target = if tool == "list_directory" {
            outside_dir.clone()
        } else {
            secret.to_str().unwrap().to_owned()
        };
        for path in [
            target.as_str(),
            dotdot.as_str(),
            "sub/../../x",
            "/etc/passwd",
        ] {
            let result = call(&f.registry, tool, args(tool, path)).await;
            assert_refused(result, tool, path, "outside the workspace");
        }
    }
    assert_outside_untouched(f.outside.path());
}

#[cfg(unix)]
#[tokio::test]
async fn symbolic_link_escapes_are_refused_by_every_tool() {
    let f = fixture();
    let link_dir = f.workspace.path().join("link");
    std::os::unix::fs::symlink(f.outside.path(), &link_dir).unwrap();
    let link_file = f.workspace.path().join("secret-link");
    std::os::unix::fs::symlink(f.outside.path().join("secret.txt"), &link_file).unwrap();

    for tool in TOOLS {
        let through_dir = if tool == "list_directory" {
            "link"
        } else {
            "link/secret.txt"
        };
        let result = call(&f.registry, tool, args(tool, through_dir)).await;
        assert_refused(result, tool, through_dir, "through a symbolic link");
    }
    let result = call(
        &f.registry,
        "write_file",
        args("write_file", "link/new.txt"),
    )
    .await;
    assert_refused(
        result,
        "write_file",
        "link/new.txt",
        "through a symbolic link",
    );
    // A link as the last component is never followed by writes or deletes...
    for tool in ["write_file", "delete_file"] {
        let result = call(&f.registry, tool, args(tool, "secret-link")).await;
        assert_refused(result, tool, "secret-link", "is a symbolic link");
    }
    // ...and reading through it is refused because it leads outside.
    let result = call(&f.registry, "read_file", args("read_file", "secret-link")).await;
    assert_refused(
        result,
        "read_file",
        "secret-link",
        "through a symbolic link",
    );
    assert_outside_untouched(f.outside.path());
    assert!(
        link_file.symlink_metadata().is_ok(),
        "the link itself is kept"
    );
}

#[tokio::test]
async fn the_tools_work_inside_the_workspace() {
    let f = fixture();
    let r = &f.registry;
    let written = call(
        r,
        "write_file",
        json!({"path": "dir/sub/a.txt", "content": "héllo"}),
    )
    .await
    .unwrap();
    assert_eq!(written, "Wrote 6 bytes to `dir/sub/a.txt` (created).");
    assert_eq!(
        call(r, "read_file", args("read_file", "./dir/sub/../sub/a.txt"))
            .await
            .unwrap(),
        "héllo"
    );
    let listing = call(r, "list_directory", json!({})).await.unwrap();
    assert_eq!(listing, "dir/\ninside.txt (6 bytes)");
    assert_eq!(
        call(r, "list_directory", args("list_directory", "dir/sub"))
            .await
            .unwrap(),
        "a.txt (6 bytes)"
    );
    call(r, "delete_file", args("delete_file", "dir/sub/a.txt"))
        .await
        .unwrap();
    assert!(!f.workspace.path().join("dir/sub/a.txt").exists());

    let missing = call(r, "read_file", args("read_file", "nope.txt")).await;
    assert_refused(missing, "read_file", "nope.txt", "does not exist");
    let dir = call(r, "delete_file", args("delete_file", "dir")).await;
    assert_refused(dir, "delete_file", "dir", "is a directory");
    let dir = call(r, "read_file", args("read_file", "dir")).await;
    assert_refused(dir, "read_file", "dir", "use list_directory");
}

#[tokio::test]
async fn a_large_directory_lists_its_first_entries_by_name_and_says_how_many_there_are() {
    let f = fixture();
    let big = f.workspace.path().join("big");
    std::fs::create_dir(&big).unwrap();
    // Created in an order unrelated to their names, a directory and a link among them.
    for n in (0..1500).rev() {
        std::fs::write(big.join(format!("f{n:04}")), "x".repeat(n % 7)).unwrap();
    }
    std::fs::create_dir(big.join("e-dir")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("f0001", big.join("e-link")).unwrap();
    let listing = call(&f.registry, "list_directory", args("list_directory", "big"))
        .await
        .unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    let total = if cfg!(unix) { 1502 } else { 1501 };
    assert_eq!(
        lines.last().copied(),
        Some(
            format!("[list_directory: showing the first 1000 of {total} entries by name]").as_str()
        )
    );
    let entries = &lines[..lines.len() - 1];
    assert_eq!(entries.len(), 1000);
    assert_eq!(entries[0], "e-dir/");
    #[cfg(unix)]
    assert_eq!(entries[1], "e-link@");
    let first_file = entries
        .iter()
        .position(|line| line.starts_with('f'))
        .unwrap();
    assert_eq!(entries[first_file], "f0000 (0 bytes)");
    assert_eq!(entries[first_file + 6], "f0006 (6 bytes)");
    let names: Vec<&str> = entries
        .iter()
        .map(|line| line.split([' ', '/', '@']).next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(
        *names.last().unwrap(),
        format!("f{:04}", 1000 - first_file - 1)
    );
}

#[tokio::test]
async fn large_files_are_cut_at_the_cap_and_the_output_says_so() {
    let f = fixture();
    std::fs::write(f.workspace.path().join("big.txt"), "é".repeat(10)).unwrap();
    let workspace = std::sync::Arc::new(Workspace::new([f.workspace.path()]).unwrap());
    let reader = ReadFile::new(workspace).max_bytes(5);
    let out = reader.call(json!({"path": "big.txt"})).await.unwrap();
    // 5 bytes end inside the third "é", which is dropped rather than mangled.
    assert!(
        out.starts_with("éé\n\n[read_file: output truncated to the first 5 bytes"),
        "{out}"
    );
    assert!(out.contains("(20 bytes in all)"), "{out}");
}

#[tokio::test]
async fn an_escape_attempt_through_the_agent_becomes_an_observation() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server
        .push_tool_call(
            "write_file",
            r#"{"path": "../escaped.txt", "content": "x"}"#,
        )
        .push_text("I am not allowed to write there.");
    let result = session.send_message("Write ../escaped.txt").await.unwrap();
    assert!(result.success);
    assert!(!result.steps[0].success);
    assert!(
        result.steps[0]
            .observation
            .contains("outside the workspace")
    );
    assert!(
        !h.workspace
            .path()
            .parent()
            .unwrap()
            .join("escaped.txt")
            .exists()
    );
}

/// A FIFO would make an open wait for its other end for ever, holding a thread of the
/// blocking pool (and, at exit, the process): it is refused at once, and left as it is.
#[cfg(unix)]
#[tokio::test]
async fn a_fifo_in_the_workspace_is_refused_without_waiting() {
    use std::os::unix::fs::FileTypeExt;
    let f = fixture();
    let fifo = f.workspace.path().join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success(), "mkfifo (coreutils) is needed");
    for tool in ["read_file", "write_file"] {
        // A hang detector, not a timing: a regression fails here instead of hanging CI.
        let refused = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            call(&f.registry, tool, args(tool, "pipe")),
        )
        .await
        .unwrap_or_else(|_| panic!("{tool} waited on a FIFO"));
        assert_refused(
            refused,
            tool,
            "pipe",
            "is a FIFO (named pipe), not a regular file",
        );
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }
}

/// `write_file` replaces the file whole: a hard link to a file outside the workspace keeps
/// the outside file's content, and the permissions of a replaced file stay.
#[cfg(unix)]
#[tokio::test]
async fn a_write_replaces_the_file_and_never_writes_through_a_hard_link() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let linked = f.workspace.path().join("linked.txt");
    std::fs::hard_link(f.outside.path().join("secret.txt"), &linked).unwrap();
    std::fs::set_permissions(&linked, std::fs::Permissions::from_mode(0o640)).unwrap();
    let written = call(&f.registry, "write_file", args("write_file", "linked.txt")).await;
    assert_eq!(
        written.unwrap(),
        "Wrote 5 bytes to `linked.txt` (replaced)."
    );
    assert_eq!(std::fs::read_to_string(&linked).unwrap(), "pwned");
    assert_outside_untouched(f.outside.path());
    let mode = std::fs::metadata(&linked).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    let names: Vec<_> = std::fs::read_dir(f.workspace.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");

    // A file made read-only stays as it is, as with a write in place.
    std::fs::set_permissions(&linked, std::fs::Permissions::from_mode(0o444)).unwrap();
    let refused = call(&f.registry, "write_file", args("write_file", "linked.txt")).await;
    assert_refused(refused, "write_file", "linked.txt", "read-only");
    assert_eq!(std::fs::read_to_string(&linked).unwrap(), "pwned");
}

#[tokio::test]
async fn an_endless_cap_and_an_endless_path_are_handled() {
    let f = fixture();
    let workspace = std::sync::Arc::new(Workspace::new([f.workspace.path()]).unwrap());
    let reader = ReadFile::new(workspace).max_bytes(usize::MAX);
    let out = reader.call(json!({"path": "inside.txt"})).await.unwrap();
    assert_eq!(out, "inside");
    let long = "a/".repeat(1 << 20);
    for tool in TOOLS {
        let refused = call(&f.registry, tool, args(tool, &long)).await;
        assert_refused(
            refused,
            tool,
            "a/a/…",
            "bytes long; a path is at most 4096 bytes",
        );
        let Err(Error::Tool { message, .. }) = call(&f.registry, tool, args(tool, &long)).await
        else {
            unreachable!()
        };
        assert!(
            message.len() < 200,
            "the path is not echoed: {} bytes",
            message.len()
        );
    }
}

/// Found by an audit: a name of 244 bytes, which the file system takes, failed with "File
/// name too long" (the temporary file beside it repeated it whole), and `newdir/` made a
/// file named `newdir`.
#[tokio::test]
async fn a_long_file_name_is_written_and_a_path_ending_in_a_slash_names_no_file() {
    let f = fixture();
    // Two-byte characters after one of one: the temporary name's cut falls inside one.
    let long = format!("a{}.txt", "é".repeat(125));
    assert_eq!(long.len(), 255);
    for verb in ["created", "replaced"] {
        let written = call(&f.registry, "write_file", args("write_file", &long)).await;
        assert_eq!(
            written.unwrap(),
            format!("Wrote 5 bytes to `{long}` ({verb}).")
        );
    }
    assert_eq!(
        std::fs::read_to_string(f.workspace.path().join(&long)).unwrap(),
        "pwned"
    );

    for (tool, path) in [
        ("write_file", "newdir/"),
        ("write_file", "newdir/."),
        ("write_file", "."),
        ("delete_file", "inside.txt/"),
        ("delete_file", "inside.txt/."),
        ("delete_file", "inside.txt/x/.."),
    ] {
        let refused = call(&f.registry, tool, args(tool, path)).await;
        assert_refused(refused, tool, path, "names a directory");
    }
    assert!(!f.workspace.path().join("newdir").exists());
    assert!(f.workspace.path().join("inside.txt").exists());
}
