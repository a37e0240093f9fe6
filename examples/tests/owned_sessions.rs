//! Runs the `owned_sessions` example as a user would and checks what it prints: one
//! owner's sessions newest first, a page at a time, the tag filter, and owner isolation.

use std::process::Command;

#[test]
fn owned_sessions_pages_one_owner_newest_first_and_keeps_owners_apart() {
    // `target/<profile>/examples/owned_sessions`: cargo builds examples before tests.
    let deps = std::env::current_exe().unwrap();
    let binary = deps
        .parent()
        .and_then(|dir| dir.parent())
        .unwrap()
        .join("examples")
        .join("owned_sessions");
    let output = Command::new(binary).output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pages: Vec<&str> = stdout.lines().filter(|l| l.starts_with("page ")).collect();
    assert_eq!(
        pages,
        [
            "page 1: alice-chat-2 \"Plan the release\" (1 message)",
            "page 1: alice-chat-1 \"Why is the build slow?\" (1 message)",
            "page 2: alice-chat-0 \"Rotate the logs\" (1 message)",
        ],
        "{stdout}"
    );
    assert!(stdout.contains("urgent: bob-chat-1 of bob\n"), "{stdout}");
    assert!(
        stdout.contains("bob sees alice-chat-0: 0 messages"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "bob writing to alice-chat-0: session \"alice-chat-0\" does not belong to owner \"bob\""
        ),
        "{stdout}"
    );
}
