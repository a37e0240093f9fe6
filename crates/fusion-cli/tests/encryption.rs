//! Encryption in the `fusion` command, run as a process: `chat` and `import` write
//! encrypted with `--encryption-key-file` (or `FUSION_ENCRYPTION_KEY`), `sessions show`
//! decrypts with the key and refuses clearly without it or with a wrong one, `sessions
//! rekey` moves a store to the current key (or encrypts a clear one), and `migrate
//! --encrypt` writes an encrypted copy. The stored bytes are searched for the words typed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{fails, fusion, ok, seed, text};
use fusion::ChatMessage;
use fusion::storage::StorageType;
use fusion_agent::testing::MockLlmServer;

/// Key material of the tests (the bytes 0..32, 32..64 and 64..96, base64).
const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const KEY_C: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";

/// Writes a key file named `name` in `dir` holding `lines` (`ID:BASE64`, current first),
/// readable by its owner only (else the command warns about it on stderr).
fn key_file(dir: &Path, name: &str, lines: &[String]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path.display().to_string()
}

/// The files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                found.push(path);
            }
        }
    }
    found
}

/// The SQLite database and its journal files (`sessions.db`, `-wal`, `-shm`) in `dir`.
fn sqlite_files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files_containing(dir, needle)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sessions.db")
        })
        .collect()
}

/// Asserts no key material reached the output of a run.
fn no_key_in(output: &Output) {
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    for key in [KEY_A, KEY_B, KEY_C] {
        assert!(!all.contains(&key[..12]), "key material printed: {all}");
    }
}

/// Writes a json export holding `messages` to `dir/name` and returns its path.
fn export_file(dir: &Path, name: &str, messages: &[ChatMessage]) -> String {
    let path = dir.join(name);
    let doc = serde_json::json!({ "messages": messages });
    std::fs::write(&path, doc.to_string()).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_with_a_key_stores_no_plaintext_and_only_the_key_shows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sessions = dir.join("sessions");
    let url = sessions.display().to_string();
    let k1 = key_file(dir, "k1.key", &[format!("k1:{KEY_A}")]);
    let server = MockLlmServer::start().await;
    server.push_text("Noted, tangerine-falcon is safe with me.");

    let args = [
        "--session",
        "vault",
        "--storage",
        &url,
        "--encryption-key-file",
        &k1,
    ];
    let output =
        common::chat_with_input(dir, &server, &args, "my passphrase is tangerine-falcon\n").await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    no_key_in(&output);
    assert_eq!(server.request_count(), 1);
    // Neither the user's words nor the reply, in the messages or the metadata (no title
    // is derived from the first message on an encrypting store).
    assert_eq!(
        files_containing(&sessions, "tangerine"),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(&sessions, "safe with me"),
        Vec::<PathBuf>::new()
    );
    assert!(!files_containing(&sessions, "fusion:enc:v1:k1:").is_empty());

    let show = ["sessions", "show", "vault", "--storage", &url];
    let shown = ok(dir, show.iter().chain(&["--encryption-key-file", &k1]));
    assert!(
        shown.contains("my passphrase is tangerine-falcon"),
        "{shown}"
    );
    assert!(
        shown.contains("Noted, tangerine-falcon is safe with me."),
        "{shown}"
    );
    // The same key from the environment; a key file given too wins over it.
    let by_env = fusion(dir)
        .args(show)
        .env("FUSION_ENCRYPTION_KEY", format!("k1:{KEY_A}"))
        .output()
        .unwrap();
    assert!(
        text(&by_env.stdout).contains("tangerine-falcon"),
        "{}",
        text(&by_env.stderr)
    );
    let wrong_env = fusion(dir)
        .args(show.iter().chain(&["--encryption-key-file", &k1]))
        .env("FUSION_ENCRYPTION_KEY", format!("k1:{KEY_B}"))
        .output()
        .unwrap();
    assert!(wrong_env.status.success(), "{}", text(&wrong_env.stderr));

    // Without a key: refused, naming the session, the key id and how to give it.
    let err = fails(dir, show);
    assert!(err.contains("session \"vault\" is encrypted"), "{err}");
    assert!(err.contains("key \"k1\""), "{err}");
    assert!(err.contains("--encryption-key-file FILE"), "{err}");
    assert!(err.contains("FUSION_ENCRYPTION_KEY"), "{err}");
    assert!(!err.contains("fusion:enc:"), "no ciphertext shown: {err}");
    // The variable set but blank (a secret injected as an empty string) is refused, not
    // taken for no key; a key file given too wins over it, unread.
    let blank = fusion(dir)
        .args(show)
        .env("FUSION_ENCRYPTION_KEY", " ")
        .output()
        .unwrap();
    assert!(!blank.status.success());
    let err = text(&blank.stderr);
    assert!(
        err.contains("FUSION_ENCRYPTION_KEY is set but empty"),
        "{err}"
    );
    assert!(err.contains("unset it"), "{err}");
    let blank_with_file = fusion(dir)
        .args(show.iter().chain(&["--encryption-key-file", &k1]))
        .env("FUSION_ENCRYPTION_KEY", "")
        .output()
        .unwrap();
    assert!(
        blank_with_file.status.success(),
        "{}",
        text(&blank_with_file.stderr)
    );
    // Export goes the same way; chat refuses before anything reaches the model.
    let err = fails(dir, ["sessions", "export", "vault", "--storage", &url]);
    assert!(err.contains("key \"k1\""), "{err}");
    let output = common::chat_with_input(dir, &server, &args[..4], "and now?\n").await;
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("is encrypted"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(server.request_count(), 1, "nothing sent to the model");

    // A wrong key under the right id fails to decrypt; another id is not the one needed.
    let wrong = key_file(dir, "wrong.key", &[format!("k1:{KEY_B}")]);
    let err = fails(dir, show.iter().chain(&["--encryption-key-file", &wrong]));
    assert!(err.contains("does not decrypt"), "{err}");
    assert!(!err.contains("tangerine"), "{err}");
    let other = key_file(dir, "other.key", &[format!("k9:{KEY_A}")]);
    let err = fails(dir, show.iter().chain(&["--encryption-key-file", &other]));
    assert!(err.contains("key \"k1\", which is not among"), "{err}");
    assert!(!err.contains(&KEY_A[..12]), "{err}");
}

#[test]
fn rekey_moves_every_message_to_the_new_key_and_encrypts_a_clear_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sessions = dir.join("sessions");
    let url = sessions.display().to_string();
    let k1 = key_file(dir, "k1.key", &[format!("k1:{KEY_A}")]);
    let rotated = key_file(
        dir,
        "k2.key",
        &[format!("k2:{KEY_C}"), format!("k1:{KEY_A}")],
    );
    let k2_only = key_file(dir, "k2-only.key", &[format!("k2:{KEY_C}")]);
    let file = export_file(dir, "a.json", &[ChatMessage::user("orchid ledger")]);
    for id in ["a", "b"] {
        ok(
            dir,
            [
                "sessions",
                "import",
                &file,
                "--id",
                id,
                "--storage",
                &url,
                "--encryption-key-file",
                &k1,
            ],
        );
    }
    assert_eq!(files_containing(&sessions, "orchid"), Vec::<PathBuf>::new());

    // A dry run counts and writes nothing.
    let before = files_containing(&sessions, "fusion:enc:v1:k1:");
    let out = ok(
        dir,
        [
            "sessions",
            "rekey",
            "--dry-run",
            "--storage",
            &url,
            "--encryption-key-file",
            &rotated,
        ],
    );
    assert!(
        out.contains(
            "dry run, nothing written: 2 sessions read, 2 to rewrite: 2 messages to re-encrypt"
        ),
        "{out}"
    );
    assert_eq!(files_containing(&sessions, "fusion:enc:v1:k1:"), before);

    let output = fusion(dir)
        .args([
            "sessions",
            "rekey",
            "--storage",
            &url,
            "--encryption-key-file",
            &rotated,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    no_key_in(&output);
    let out = text(&output.stdout);
    assert!(out.contains("rekeyed: 2 sessions read, 2 rewritten: 2 messages re-encrypted from an older key, 0 clear-text encrypted, all under key \"k2\""), "{out}");
    assert_eq!(
        files_containing(&sessions, "fusion:enc:v1:k1:"),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(&sessions, "fusion:enc:v1:k2:").len(),
        before.len()
    );
    // The old key is no longer needed to read.
    let shown = ok(
        dir,
        [
            "sessions",
            "show",
            "a",
            "--storage",
            &url,
            "--encryption-key-file",
            &k2_only,
        ],
    );
    assert!(shown.contains("orchid ledger"), "{shown}");
    // A rerun finds nothing to do.
    let out = ok(
        dir,
        [
            "sessions",
            "rekey",
            "--storage",
            &url,
            "--encryption-key-file",
            &rotated,
        ],
    );
    assert!(out.contains("2 sessions read, 0 rewritten"), "{out}");

    // A clear store becomes encrypted, and says so.
    let plain = dir.join("plain");
    let plain_url = plain.display().to_string();
    ok(
        dir,
        [
            "sessions",
            "import",
            &file,
            "--id",
            "c",
            "--storage",
            &plain_url,
        ],
    );
    assert!(
        !files_containing(&plain, "orchid").is_empty(),
        "written in clear without a key"
    );
    let err = fails(dir, ["sessions", "rekey", "--storage", &plain_url]);
    assert!(
        err.contains("sessions rekey needs an encryption key: pass --encryption-key-file FILE"),
        "{err}"
    );
    let out = ok(
        dir,
        [
            "sessions",
            "rekey",
            "--storage",
            &plain_url,
            "--encryption-key-file",
            &k2_only,
        ],
    );
    assert!(out.contains("1 clear-text encrypted"), "{out}");
    assert!(
        out.contains("the store held clear-text messages: they are now encrypted"),
        "{out}"
    );
    assert_eq!(files_containing(&plain, "orchid"), Vec::<PathBuf>::new());
    let err = fails(dir, ["sessions", "show", "c", "--storage", &plain_url]);
    assert!(err.contains("key \"k2\""), "{err}");
}

#[test]
fn migrate_encrypt_copies_a_clear_fs_store_into_an_encrypted_sqlite_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fs_url = dir.join("sessions").display().to_string();
    let db = dir.join("sqlite");
    std::fs::create_dir(&db).unwrap();
    let sqlite_url = format!("sqlite://{}", db.join("sessions.db").display());
    seed_marmalade(&fs_url);
    let k1 = key_file(dir, "k1.key", &[format!("k1:{KEY_A}")]);
    let migrate = [
        "migrate",
        "--from",
        &fs_url,
        "--to",
        &sqlite_url,
        "--encrypt",
    ];

    let err = fails(dir, migrate);
    assert!(
        err.contains("migrate --encrypt needs an encryption key"),
        "{err}"
    );
    assert!(
        !db.join("sessions.db").exists(),
        "refused before opening the target"
    );

    let output = fusion(dir)
        .args(migrate.iter().chain(&["--encryption-key-file", &k1]))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    no_key_in(&output);
    assert!(
        text(&output.stdout).contains("3 copied"),
        "{}",
        text(&output.stdout)
    );
    assert!(db.join("sessions.db").exists());
    assert_eq!(
        sqlite_files_containing(&db, "marmalade"),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        sqlite_files_containing(&db, "keep secrets"),
        Vec::<PathBuf>::new()
    );

    let show = ["sessions", "show", "user-1", "--storage", &sqlite_url];
    let shown = ok(dir, show.iter().chain(&["--encryption-key-file", &k1]));
    assert!(shown.contains("the vault code is marmalade-1"), "{shown}");
    assert!(shown.contains("Stored marmalade-1."), "{shown}");
    let err = fails(dir, show);
    assert!(
        err.contains("key \"k1\"") && err.contains("--encryption-key-file"),
        "{err}"
    );
    // Re-run: the encrypted target compares equal to the clear source, message by message.
    let out = ok(dir, migrate.iter().chain(&["--encryption-key-file", &k1]));
    assert!(out.contains("0 copied, 0 extended, 3 up to date"), "{out}");
    assert!(!out.contains("already held"), "{out}");
}

#[test]
fn migrate_encrypt_also_encrypts_what_an_earlier_plain_copy_left_in_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fs_url = dir.join("sessions").display().to_string();
    let target = dir.join("target");
    let target_url = target.display().to_string();
    seed_marmalade(&fs_url);
    let k1 = key_file(dir, "k1.key", &[format!("k1:{KEY_A}")]);

    ok(dir, ["migrate", "--from", &fs_url, "--to", &target_url]);
    assert!(
        !files_containing(&target, "marmalade").is_empty(),
        "no key: a clear copy"
    );
    let args = [
        "migrate",
        "--from",
        &fs_url,
        "--to",
        &target_url,
        "--encrypt",
        "--encryption-key-file",
        &k1,
    ];
    let out = ok(dir, args);
    assert!(out.contains("3 up to date"), "{out}");
    assert!(
        out.contains("encrypted 9 messages the target already held in clear text"),
        "{out}"
    );
    assert_eq!(
        files_containing(&target, "marmalade"),
        Vec::<PathBuf>::new()
    );
    let shown = ok(
        dir,
        [
            "sessions",
            "show",
            "user-2",
            "--storage",
            &target_url,
            "--encryption-key-file",
            &k1,
        ],
    );
    assert!(shown.contains("marmalade-2"), "{shown}");
}

/// Seeds three clear sessions `user-N` in the storage at `url`, each naming `marmalade-N`.
fn seed_marmalade(url: &str) {
    let storage: StorageType = url.parse().unwrap();
    for n in 0..3 {
        let history = [
            ChatMessage::system("You keep secrets."),
            ChatMessage::user(format!("the vault code is marmalade-{n}")),
            ChatMessage::assistant(format!("Stored marmalade-{n}.")),
        ];
        seed(&storage, &format!("user-{n}"), &history);
    }
}

#[test]
fn a_session_file_copied_out_of_an_encrypted_store_imports_as_its_text_or_not_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let vault = dir.join("vault").display().to_string();
    let other = dir.join("other");
    let other_url = other.display().to_string();
    let k1 = key_file(dir, "k1.key", &[format!("k1:{KEY_A}")]);
    let k2 = key_file(
        dir,
        "k2.key",
        &[format!("k2:{KEY_B}"), format!("k1:{KEY_A}")],
    );
    let said = [ChatMessage::user("the vault code is 4711")];
    let export = export_file(dir, "said.json", &said);
    let key = ["--encryption-key-file", k1.as_str()];
    ok(
        dir,
        [
            &[
                "sessions",
                "import",
                &export,
                "--id",
                "s1",
                "--storage",
                &vault,
            ][..],
            &key,
        ]
        .concat(),
    );
    // The fs backend's own file, ciphertext, copied out as a backup would be.
    let copy = dir.join("s1.jsonl");
    std::fs::copy(dir.join("vault").join("s1.jsonl"), &copy).unwrap();
    let copy = copy.display().to_string();
    let import = |extra: &[&str]| -> Vec<String> {
        ["sessions", "import", &copy, "--storage", &other_url]
            .iter()
            .chain(extra)
            .map(|arg| arg.to_string())
            .collect()
    };

    // Without the key, with a wrong one, or as another session: refused, nothing written.
    let err = fails(dir, import(&[]));
    assert!(
        err.contains("s1.jsonl") && err.contains("no encryption key is loaded"),
        "{err}"
    );
    let wrong = key_file(dir, "wrong.key", &[format!("k1:{KEY_C}")]);
    let err = fails(dir, import(&["--encryption-key-file", &wrong]));
    assert!(
        err.contains("session \"s1\"") && err.contains("key \"k1\") does not decrypt"),
        "{err}"
    );
    // Renamed, and imported under its new name, it no longer names the session its
    // messages were sealed in.
    let renamed = dir.join("s3.jsonl");
    std::fs::copy(&copy, &renamed).unwrap();
    let err = fails(
        dir,
        [
            "sessions",
            "import",
            &renamed.display().to_string(),
            "--storage",
            &other_url,
            "--encryption-key-file",
            &k1,
        ],
    );
    assert!(err.contains("session \"s3\""), "{err}");
    assert!(!other.exists(), "nothing written");

    // Imported as another session, it is opened as the one its file names.
    ok(dir, import(&["--id", "s2", "--encryption-key-file", &k1]));
    let shown = ok(
        dir,
        [
            "sessions",
            "show",
            "s2",
            "--storage",
            &other_url,
            "--encryption-key-file",
            &k1,
        ],
    );
    assert!(shown.contains("the vault code is 4711"), "{shown}");

    // With the key, the session holds its text, sealed afresh under the current key.
    ok(dir, import(&["--encryption-key-file", &k2]));
    let shown = ok(
        dir,
        [
            "sessions",
            "show",
            "s1",
            "--storage",
            &other_url,
            "--encryption-key-file",
            &k2,
        ],
    );
    assert!(shown.contains("the vault code is 4711"), "{shown}");
    assert!(!shown.contains("fusion:enc:"), "{shown}");
    // The phrase, not the number alone: a lock file's timestamps are digits and may hold
    // "4711" by chance.
    assert_eq!(
        files_containing(&other, "vault code is"),
        Vec::<PathBuf>::new()
    );
    assert!(!files_containing(&other, "fusion:enc:v1:k2:").is_empty());
}
