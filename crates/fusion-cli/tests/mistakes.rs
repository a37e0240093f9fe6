//! A command given by mistake fails clearly and loses nothing: an export aimed at a file
//! that exists, an import of something endless, the way out of a damaged session, and
//! variables set but left empty.

mod common;

use std::process::Stdio;

use common::{conversation, fails, load, ok, on, run, seed, text};
use fusion::storage::StorageType;

/// A file-system store in `dir/sessions`, as a URL and as a storage.
fn fs_storage(dir: &std::path::Path) -> (String, StorageType) {
    let url = dir.join("sessions").display().to_string();
    let storage = url.parse().unwrap();
    (url, storage)
}

#[test]
fn an_export_never_overwrites_a_file_unless_forced_and_then_replaces_it_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = fs_storage(tmp.path());
    seed(&storage, "s1", &conversation(2));
    // The session's own file, named by mistake.
    let own = tmp.path().join("sessions").join("s1.jsonl");
    let stored = std::fs::read(&own).unwrap();
    let own_path = own.to_str().unwrap();

    let err = fails(
        tmp.path(),
        on(
            &url,
            &[
                "sessions", "export", "s1", "--format", "markdown", "-o", own_path,
            ],
        ),
    );
    assert!(
        err.contains(own_path) && err.contains("the file exists; pass --force to replace it"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&own).unwrap(),
        stored,
        "the session file is untouched"
    );
    assert_eq!(load(&storage, "s1"), conversation(2));

    // A new file is written; a second export to it needs --force, which replaces it whole
    // and leaves no temporary file behind.
    let out = tmp.path().join("s1.json");
    let out_path = out.to_str().unwrap();
    ok(
        tmp.path(),
        on(&url, &["sessions", "export", "s1", "-o", out_path]),
    );
    let json = std::fs::read_to_string(&out).unwrap();
    std::fs::write(&out, "old").unwrap();
    fails(
        tmp.path(),
        on(&url, &["sessions", "export", "s1", "-o", out_path]),
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "old");
    let forced = run(
        tmp.path(),
        on(
            &url,
            &["sessions", "export", "s1", "-o", out_path, "--force"],
        ),
    );
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    let said = text(&forced.stderr);
    assert!(said.starts_with("exported session s1"), "{said}");
    assert!(forced.stdout.is_empty(), "the note is on stderr");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), json);
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn an_endless_import_is_refused_before_it_takes_the_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = fs_storage(tmp.path());
    let err = fails(
        tmp.path(),
        on(&url, &["sessions", "import", "/dev/zero", "--id", "z"]),
    );
    assert!(
        err.contains("cannot read import file /dev/zero") && err.contains("goes on past 256 MiB"),
        "{err}"
    );
    assert!(load_absent(&storage, "z"));
}

#[test]
fn a_session_whose_metadata_is_damaged_keeps_its_messages_readable_and_is_deleted_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = fs_storage(tmp.path());
    seed(&storage, "m1", &conversation(1));
    seed(&storage, "kept", &conversation(1));
    let meta = tmp.path().join("sessions").join(".m1.meta");
    std::fs::write(&meta, "{garbage").unwrap();

    // Its messages are still shown, with a warning saying what is missing; an export,
    // which would lose the owner, title and tags, fails saying how to keep the messages.
    let output = common::run(tmp.path(), on(&url, &["sessions", "show", "m1"]));
    let (stdout, stderr) = (common::text(&output.stdout), common::text(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("notes.txt and todo.txt (1)"), "{stdout}");
    assert!(
        stderr.starts_with("warning: ") && stderr.contains(".m1.meta is not valid JSON"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the messages are intact: move the file aside"),
        "{stderr}"
    );
    let err = fails(
        tmp.path(),
        on(&url, &["sessions", "export", "m1", "--format", "jsonl"]),
    );
    assert!(
        err.contains("the messages are intact: move the file aside"),
        "{err}"
    );
    // As the warning says, the file moved aside leaves a session without metadata.
    let aside = tmp.path().join("m1.meta.damaged");
    std::fs::rename(&meta, &aside).unwrap();
    let output = common::run(tmp.path(), on(&url, &["sessions", "show", "m1"]));
    assert!(output.status.success() && output.stderr.is_empty());
    let jsonl = ok(
        tmp.path(),
        on(&url, &["sessions", "export", "m1", "--format", "jsonl"]),
    );
    assert_eq!(jsonl.lines().count(), conversation(1).len(), "{jsonl}");
    std::fs::rename(&aside, &meta).unwrap();

    // Without --force the error says what would get past it.
    let err = fails(tmp.path(), on(&url, &["sessions", "delete", "m1"]));
    assert!(
        err.contains("cannot read session \"m1\"") && err.contains("pass --force to delete it"),
        "{err}"
    );
    assert_eq!(load(&storage, "m1"), conversation(1), "nothing deleted");

    let stdout = ok(
        tmp.path(),
        on(&url, &["sessions", "delete", "m1", "--force"]),
    );
    assert!(
        stdout.starts_with("deleted session m1 (its facts could not be read:"),
        "{stdout}"
    );
    assert!(load_absent(&storage, "m1"));
    assert!(!meta.exists(), "the damaged file went with the session");
    assert_eq!(load(&storage, "kept"), conversation(1));
}

/// Whether session `id` is absent from `storage`.
fn load_absent(storage: &StorageType, id: &str) -> bool {
    common::block_on(async {
        let store = storage.open().await.expect("storage opens");
        store.session_info(id).await.expect("reads").is_none()
    })
}

#[test]
fn a_migrate_from_a_storage_that_does_not_exist_or_into_memory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = fs_storage(tmp.path());
    seed(&storage, "s1", &conversation(1));
    let typo = tmp.path().join("sesions").display().to_string();
    let typo_db = format!("sqlite://{}", tmp.path().join("typo.db").display());
    for from in [&typo, &typo_db] {
        let err = fails(tmp.path(), ["migrate", "--from", from, "--to", &url]);
        assert!(
            err.contains("--from") && err.contains("no such storage"),
            "{err}"
        );
    }
    assert!(
        !tmp.path().join("sesions").exists() && !tmp.path().join("typo.db").exists(),
        "a refused source was created"
    );
    let err = fails(tmp.path(), ["migrate", "--from", &url, "--to", "memory://"]);
    assert!(
        err.contains("--to memory:// holds nothing before this command and keeps nothing after it"),
        "{err}"
    );
    let err = fails(
        tmp.path(),
        ["migrate", "--from", &url, "--to", "sqlite::memory:"],
    );
    assert!(err.contains("--to sqlite::memory: holds nothing"), "{err}");
    // A dry run into a SQLite file that does not exist says what it would copy and
    // creates nothing.
    let new_db = format!("sqlite://{}", tmp.path().join("new.db").display());
    let stdout = ok(
        tmp.path(),
        ["migrate", "--from", &url, "--to", &new_db, "--dry-run"],
    );
    assert!(stdout.contains("1 to copy"), "{stdout}");
    assert!(
        !tmp.path().join("new.db").exists(),
        "a dry run created the target"
    );
    let file = tmp.path().join("s1.jsonl");
    std::fs::write(&file, "{\"role\":\"user\",\"content\":\"hi\"}\n").unwrap();
    let file = file.to_str().unwrap();
    for ephemeral in ["memory://", "sqlite::memory:"] {
        let err = fails(tmp.path(), on(ephemeral, &["sessions", "import", file]));
        assert!(
            err.contains(&format!("{ephemeral} keeps nothing after this command")),
            "{err}"
        );
    }
    assert_eq!(load(&storage, "s1"), conversation(1));
}

#[test]
fn reading_a_sqlite_file_that_does_not_exist_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        tmp.path().join("no").join("such.db").display()
    );
    common::assert_reads_find_nothing(tmp.path(), &url);
    assert!(
        !tmp.path().join("no").exists(),
        "a read created the database"
    );
}

/// `~` and `~/DIR` are taken from the home directory (`common::fusion` sets HOME to the
/// test's directory, and runs no shell), however the URL spells them: the `~` is looked for
/// in the directory the URL names, not in its text, so a space before it, an upper-case
/// scheme or a percent escape (`~/my%20dir`) change nothing. A `~` that cannot be expanded
/// (another user's `~name`, or no HOME) is refused. Each of these made a directory named
/// after the `~` in the working directory.
#[test]
fn a_storage_path_of_a_tilde_is_home_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let file = tmp.path().join("s1.jsonl");
    std::fs::write(&file, "{\"role\":\"user\",\"content\":\"hi\"}\n").unwrap();
    let import = |url: &str, id: &str| {
        let mut command = common::fusion(tmp.path());
        command.current_dir(&work);
        command.args(["sessions", "import", file.to_str().unwrap(), "--id", id]);
        command.args(["--storage", url]);
        command
    };
    for (url, id, dir) in [
        ("~", "t1", ""),
        ("file://~", "t2", ""),
        ("~/mine", "s1", "mine"),
        ("file://~/mine", "s2", "mine"),
        (" ~/mine", "s3", "mine"),
        ("FILE://~/mine", "s4", "mine"),
        ("file://~/my%20dir", "s5", "my dir"),
    ] {
        let output = import(url, id).output().unwrap();
        assert!(output.status.success(), "{}", common::text(&output.stderr));
        let home: StorageType = tmp.path().join(dir).display().to_string().parse().unwrap();
        assert_eq!(load(&home, id).len(), 1, "{url}");
    }
    for (url, home) in [
        ("~other/x", true),
        ("file://~other/x", true),
        ("~/x", false),
    ] {
        let mut command = import(url, "t3");
        if !home {
            command.env_remove("HOME");
        }
        let output = command.output().unwrap();
        assert!(!output.status.success(), "{url}");
        let stderr = common::text(&output.stderr);
        assert!(stderr.contains("write the full path"), "{url}: {stderr}");
    }
    let made: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(made.is_empty(), "{made:?}");
}

#[test]
fn an_export_to_dev_stdout_holds_the_export_alone_and_imports_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = fs_storage(tmp.path());
    seed(&storage, "s1", &conversation(3));
    for format in ["json", "jsonl"] {
        let mut export = common::fusion(tmp.path())
            .args(on(
                &url,
                &[
                    "sessions",
                    "export",
                    "s1",
                    "-f",
                    format,
                    "-o",
                    "/dev/stdout",
                ],
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let copy = format!("copy-{format}");
        let import = common::fusion(tmp.path())
            .args(on(&url, &["sessions", "import", "-", "--id", &copy]))
            .stdin(export.stdout.take().unwrap())
            .output()
            .unwrap();
        let exported = export.wait_with_output().unwrap();
        assert!(exported.status.success(), "{format}");
        let note = text(&exported.stderr);
        assert!(note.starts_with("exported session s1"), "{note}");
        assert!(import.status.success(), "{}", text(&import.stderr));
        assert_eq!(load(&storage, &copy), load(&storage, "s1"), "{format}");
    }
}

#[test]
fn a_variable_set_but_empty_reads_as_unset_and_no_retry_takes_yes_or_no() {
    let tmp = tempfile::tempdir().unwrap();
    let with = |variable: &str, value: &str, args: &[&str]| {
        common::fusion(tmp.path())
            .env(variable, value)
            .args(args)
            .output()
            .unwrap()
    };
    // Empty or blank: the default store, no retry setting.
    for (variable, value) in [
        ("FUSION_STORAGE", ""),
        ("FUSION_STORAGE", "  "),
        ("FUSION_NO_RETRY", ""),
    ] {
        let listed = with(variable, value, &["sessions", "list"]);
        assert!(
            listed.status.success(),
            "{variable}: {}",
            text(&listed.stderr)
        );
        assert!(
            text(&listed.stderr).starts_with("no sessions in "),
            "{variable}"
        );
    }
    for value in ["1", "yes", "ON", "0", "false"] {
        let listed = with("FUSION_NO_RETRY", value, &["sessions", "list"]);
        assert!(listed.status.success(), "{value}: {}", text(&listed.stderr));
    }
    // No approval choice: chat goes on to its next check (no LLM), where an empty value
    // used to stop it as a missing one (exit 2).
    let chat = with("FUSION_APPROVE", "", &["chat"]);
    assert_eq!(chat.status.code(), Some(1), "{}", text(&chat.stderr));
    assert!(
        text(&chat.stderr).contains("no LLM"),
        "{}",
        text(&chat.stderr)
    );
    let refused = with("FUSION_NO_RETRY", "maybe", &["sessions", "list"]);
    assert_eq!(refused.status.code(), Some(2));
    let said = text(&refused.stderr);
    assert!(
        said.contains("FUSION_NO_RETRY") && said.contains("maybe"),
        "{said}"
    );
}

#[test]
fn an_export_to_dash_goes_to_stdout_and_writes_no_file_named_dash() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = fs_storage(tmp.path());
    seed(&storage, "s1", &conversation(2));
    for extra in [&[][..], &["--force"][..]] {
        let args = ["sessions", "export", "s1", "-f", "jsonl", "-o", "-"];
        let output = common::fusion(tmp.path())
            .current_dir(tmp.path())
            .args(on(&url, &[&args[..], extra].concat()))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        let exported = text(&output.stdout);
        let messages: Vec<fusion::ChatMessage> = exported
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(messages, conversation(2), "{extra:?}: {exported}");
        assert!(
            !tmp.path().join("-").exists(),
            "{extra:?}: no file named - was written"
        );
    }
}

#[test]
fn a_chat_refused_for_its_new_session_s_metadata_creates_no_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("chat.db");
    let url = format!("sqlite://{}", db.display());
    for flag in [
        "--tag=",
        "--owner=",
        "--title=two\nlines",
        "--expire-idle=99999999d",
    ] {
        let output = common::chat_command(tmp.path(), "http://127.0.0.1:1")
            .args([flag, "--storage", &url])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{flag:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.starts_with("fusion: error: "), "{flag:?}: {stderr}");
        assert!(!db.exists(), "{flag:?} created {}: {stderr}", db.display());
    }
}

#[test]
fn an_import_s_invalid_id_is_blamed_on_where_it_came_from() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = fs_storage(tmp.path());
    let named = tmp.path().join("my session.jsonl");
    std::fs::write(&named, "{\"role\":\"user\",\"content\":\"hi\"}\n").unwrap();
    let export = tmp.path().join("export.json");
    let doc = r#"{"id":"../x","messages":[{"role":"user","content":"hi"}]}"#;
    std::fs::write(&export, doc).unwrap();
    let (named, export) = (named.to_str().unwrap(), export.to_str().unwrap());

    for (args, says) in [
        (
            vec![named, "--id", "a/b"],
            "bad --id: invalid session id \"a/b\"",
        ),
        (
            vec![named],
            "the file name gives the session id \"my session\", which is not valid; pass --id",
        ),
        (
            vec![export],
            "the export's session id \"../x\" is not valid; pass --id",
        ),
    ] {
        let err = fails(
            tmp.path(),
            on(&url, &[&["sessions", "import"][..], &args].concat()),
        );
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(common::ids(&storage).is_empty());
}
