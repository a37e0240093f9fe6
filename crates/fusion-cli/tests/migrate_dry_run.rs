//! `fusion migrate --dry-run --encrypt`, run as a process: one line per session saying
//! what it would copy and what it would encrypt, counts the real run then matches, and
//! nothing written.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{block_on, fusion, ok, seed, text};
use fusion::ChatMessage;
use fusion::layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion::storage::{ConversationStorage, StorageExt, StorageType};

/// The current key, `k1`: bytes 0, 1, ..., 31.
const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The older key, `k0`: 32 bytes of 7.
const K0: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

fn k1_bytes() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

/// A key file naming `k1` (current) then `k0` (older, for reading).
fn key_file(dir: &Path) -> String {
    let path = dir.join("keys");
    std::fs::write(&path, format!("k1:{K1}\nk0:{K0}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path.display().to_string()
}

fn history(n: usize) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You keep secrets."),
        ChatMessage::user(format!("the vault code is quince-{n}")),
        ChatMessage::assistant(format!("Stored quince-{n}.")),
    ]
}

/// Saves `messages` as session `id` of `storage`, encrypted under key `id_key`.
fn seed_encrypted(
    storage: &StorageType,
    id: &str,
    key_id: &str,
    key: [u8; 32],
    messages: &[ChatMessage],
) {
    block_on(async {
        let raw: Arc<dyn ConversationStorage> = storage.open().await.unwrap();
        let layer = EncryptionLayer::new(EncryptionKeys::new(key_id, &key).unwrap());
        raw.layer(layer).save(id, messages).await.unwrap();
    });
}

/// Every session of `storage` as stored, in id order.
fn stored(storage: &StorageType) -> Vec<(String, Vec<ChatMessage>)> {
    block_on(async {
        let raw = storage.open().await.unwrap();
        let mut ids = raw.list_sessions().await.unwrap();
        ids.sort();
        let mut all = Vec::new();
        for id in ids {
            let messages = raw.load(&id).await.unwrap();
            all.push((id, messages));
        }
        all
    })
}

#[test]
fn a_dry_run_with_encrypt_lists_per_session_what_it_would_copy_and_encrypt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (from_url, to_url) = (
        dir.join("from").display().to_string(),
        dir.join("to").display().to_string(),
    );
    let (from, to): (StorageType, StorageType) =
        (from_url.parse().unwrap(), to_url.parse().unwrap());
    let keys = key_file(dir);
    for n in 0..5 {
        seed(&from, &format!("s{n}"), &history(n));
    }
    // s0 is not in the target; s1 holds a prefix in clear text; s2 all of it in clear
    // text; s3 all of it under the current key; s4 all of it under the older key.
    seed(&to, "s1", &history(1)[..2]);
    seed(&to, "s2", &history(2));
    seed_encrypted(&to, "s3", "k1", k1_bytes(), &history(3));
    seed_encrypted(&to, "s4", "k0", [7; 32], &history(4));
    let before = stored(&to);
    let migrate = [
        "migrate",
        "--from",
        &from_url,
        "--to",
        &to_url,
        "--encrypt",
        "--encryption-key-file",
        &keys,
    ];

    let out = ok(dir, migrate.iter().chain(&["--dry-run"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "would copy s0: 3 messages to write encrypted with key \"k1\"",
            "would extend s1: 1 message to write encrypted with key \"k1\", 2 messages held in \
             clear text to encrypt",
            "up to date s2: 3 messages held in clear text to encrypt",
            "up to date s3: nothing to encrypt, all under key \"k1\"",
            "up to date s4: 3 messages under an older key to re-encrypt",
            &format!(
                "dry run, nothing written: 5 sessions from {from} to {to}: 1 to copy, \
                 1 to extend, 3 up to date, 0 diverged, 0 to replace, 0 failed"
            ),
            "would encrypt 8 messages the target already held in clear text or under an older key",
        ],
        "{out}"
    );
    assert_eq!(stored(&to), before, "a dry run writes nothing");

    let out = ok(dir, migrate);
    assert!(out.contains("1 copied, 1 extended, 3 up to date"), "{out}");
    assert!(
        out.contains(
            "encrypted 8 messages the target already held in clear text or under an older key"
        ),
        "{out}"
    );
    for (id, messages) in stored(&to) {
        assert!(
            messages
                .iter()
                .all(|m| m.content.starts_with("fusion:enc:v1:k1:")),
            "{id}: all under the current key"
        );
    }
    let out = ok(dir, migrate.iter().chain(&["--dry-run"]));
    assert!(out.contains("up to date s1: nothing to encrypt"), "{out}");
    assert!(!out.contains("would encrypt"), "{out}");
}

#[test]
fn a_dry_run_without_encrypt_stays_as_quiet_as_before() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (from_url, to_url) = (
        dir.join("from").display().to_string(),
        dir.join("to").display().to_string(),
    );
    let from: StorageType = from_url.parse().unwrap();
    seed(&from, "s0", &history(0));
    let output = fusion(dir)
        .args(["migrate", "--from", &from_url, "--to", &to_url, "--dry-run"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = text(&output.stdout);
    assert_eq!(out.lines().count(), 1, "only the summary: {out}");
    assert!(
        out.starts_with("dry run, nothing written: 1 session"),
        "{out}"
    );
}
