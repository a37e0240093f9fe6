//! `fusion migrate` between the file-system, SQLite and Redis backends, run as a process:
//! every per-session outcome, refusals, and a writer of the target running alongside.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{
    block_on, clean_up, conversation, fails, ids, load, ok, redis_cluster_url, redis_url, seed,
};
use fusion::ChatMessage;
use fusion::storage::StorageType;
use fusion_storage_postgres::testing as postgres_testing;

/// Appends `messages` to session `id` in `storage`, as an application would.
fn append(storage: &StorageType, id: &str, messages: &[ChatMessage]) {
    block_on(async {
        let store = storage.open().await.expect("storage opens");
        store.append(id, messages).await.expect("appends");
    });
}

#[test]
fn migrates_100_sessions_from_fs_to_sqlite_and_back_with_identical_histories() {
    let tmp = tempfile::tempdir().unwrap();
    let fs_url = format!("file://{}", tmp.path().join("sessions").display());
    let sqlite_url = format!("sqlite://{}", tmp.path().join("sessions.db").display());
    let back_url = tmp.path().join("back").display().to_string();
    let (fs, sqlite, back): (StorageType, StorageType, StorageType) = (
        fs_url.parse().unwrap(),
        sqlite_url.parse().unwrap(),
        back_url.parse().unwrap(),
    );
    let session_ids: Vec<String> = (0..100).map(|n| format!("user-{n:03}")).collect();
    for (n, id) in session_ids.iter().enumerate() {
        // Varying lengths, so a count mix-up between sessions cannot go unnoticed.
        seed(&fs, id, &conversation(n)[..1 + n % 7]);
    }

    let out = ok(
        tmp.path(),
        ["migrate", "--from", &fs_url, "--to", &sqlite_url],
    );
    assert!(
        out.contains("100 sessions")
            && out
                .contains("100 copied, 0 extended, 0 up to date, 0 diverged, 0 replaced, 0 failed"),
        "{out}"
    );
    let out = ok(
        tmp.path(),
        ["migrate", "--from", &sqlite_url, "--to", &back_url],
    );
    assert!(
        out.contains("100 copied, 0 extended, 0 up to date"),
        "{out}"
    );

    assert_eq!(ids(&sqlite), session_ids);
    assert_eq!(ids(&back), session_ids);
    for id in &session_ids {
        let original = load(&fs, id);
        assert_eq!(load(&sqlite, id), original, "{id} in sqlite");
        assert_eq!(load(&back, id), original, "{id} back in fs");
    }

    // Re-running changes nothing and says so.
    for (from, to) in [(&fs_url, &sqlite_url), (&sqlite_url, &back_url)] {
        let out = ok(tmp.path(), ["migrate", "--from", from, "--to", to]);
        assert!(
            out.contains("0 copied, 0 extended, 100 up to date, 0 diverged, 0 replaced, 0 failed"),
            "{out}"
        );
    }
    assert_eq!(ids(&sqlite), session_ids);
    assert_eq!(
        load(&sqlite, "user-006").len(),
        7,
        "re-running must not append duplicates"
    );
}

/// Every outcome in one target: copied, extended, up to date, diverged (two ways), and
/// then replaced with `--force`; a dry run first, which writes nothing.
fn every_outcome(tmp: &Path, from_url: &str, to_url: &str) {
    let (from, to): (StorageType, StorageType) =
        (from_url.parse().unwrap(), to_url.parse().unwrap());
    for n in 0..5 {
        seed(&from, &format!("s{n}"), &conversation(n));
    }
    seed(&to, "s1", &conversation(1)[..3]); // a prefix: extended
    seed(&to, "s2", &conversation(2)); // equal: up to date
    let mut ahead = conversation(3);
    ahead.push(ChatMessage::user("stored in the target only"));
    seed(&to, "s3", &ahead); // source + more: diverged
    let other = [ChatMessage::user("a different start")];
    seed(&to, "s4", &other); // different: diverged
    seed(&to, "only-in-target", &conversation(9));

    let dry = common::run(
        tmp,
        ["migrate", "--from", from_url, "--to", to_url, "--dry-run"],
    );
    let out = common::text(&dry.stdout);
    assert!(
        !dry.status.success(),
        "diverged sessions make even a dry run fail: {out}"
    );
    assert!(
        out.contains("1 to copy, 1 to extend, 1 up to date, 2 diverged, 0 to replace, 0 failed"),
        "{out}"
    );
    assert!(load(&to, "s0").is_empty(), "a dry run wrote to the target");
    assert_eq!(load(&to, "s1"), conversation(1)[..3]);

    let run = common::run(tmp, ["migrate", "--from", from_url, "--to", to_url]);
    let out = common::text(&run.stdout);
    assert!(!run.status.success(), "{out}");
    assert!(
        out.contains("1 copied, 1 extended, 1 up to date, 2 diverged, 0 replaced, 0 failed"),
        "{out}"
    );
    assert!(
        out.contains("diverged s3: the target has 1 message the source lacks; left as it is"),
        "{out}"
    );
    assert!(
        out.contains(
            "diverged s4: the histories differ from message 1 (source 7 messages, target 1 message)"
        ),
        "{out}"
    );
    assert!(out.contains("1 session only in"), "{out}");
    let stderr = common::text(&run.stderr);
    assert!(
        stderr.starts_with("fusion: error: 2 of 5 sessions diverged in the target")
            && stderr.contains("--force"),
        "{stderr}"
    );
    for n in 0..3 {
        assert_eq!(load(&to, &format!("s{n}")), conversation(n), "s{n}");
    }
    assert_eq!(
        load(&to, "s3"),
        ahead,
        "a diverged session must keep its messages"
    );
    assert_eq!(load(&to, "s4"), other);
    assert_eq!(load(&to, "only-in-target"), conversation(9));

    // Re-running finds the copies up to date and still leaves the diverged ones alone.
    let again = common::run(tmp, ["migrate", "--from", from_url, "--to", to_url]);
    let out = common::text(&again.stdout);
    assert!(
        out.contains("0 copied, 0 extended, 3 up to date, 2 diverged, 0 replaced, 0 failed"),
        "{out}"
    );
    assert_eq!(load(&to, "s3"), ahead);

    let out = ok(
        tmp,
        ["migrate", "--from", from_url, "--to", to_url, "--force"],
    );
    assert!(
        out.contains("0 copied, 0 extended, 3 up to date, 0 diverged, 2 replaced, 0 failed"),
        "{out}"
    );
    assert!(
        out.contains("replaced s3: the target held a different history (8 messages)"),
        "{out}"
    );
    for n in 0..5 {
        assert_eq!(
            load(&to, &format!("s{n}")),
            conversation(n),
            "s{n} after --force"
        );
    }
    assert_eq!(
        load(&to, "only-in-target"),
        conversation(9),
        "--force touches only source sessions"
    );
    let out = ok(tmp, ["migrate", "--from", from_url, "--to", to_url]);
    assert!(out.contains("5 up to date, 0 diverged"), "{out}");
}

#[test]
fn every_outcome_into_a_file_system_target() {
    let tmp = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", tmp.path().join("from.db").display());
    let to = tmp.path().join("to").display().to_string();
    every_outcome(tmp.path(), &from, &to);
}

#[test]
fn every_outcome_into_a_sqlite_target() {
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("from").display().to_string();
    let to = format!("sqlite://{}", tmp.path().join("to.db").display());
    every_outcome(tmp.path(), &from, &to);
}

#[test]
fn every_outcome_into_a_redis_target() {
    let Some(to) = redis_url("migrate-outcomes") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("from").display().to_string();
    every_outcome(tmp.path(), &from, &to);
    clean_up(&to.parse().unwrap());
}

#[test]
fn every_outcome_into_a_redis_cluster_target_and_back() {
    let Some(cluster) = redis_cluster_url("migrate-cluster") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("from").display().to_string();
    every_outcome(tmp.path(), &from, &cluster);
    let back = format!("sqlite://{}", tmp.path().join("back.db").display());
    let out = ok(tmp.path(), ["migrate", "--from", &cluster, "--to", &back]);
    assert!(out.contains("0 failed"), "{out}");
    let (cluster_type, back_type): (StorageType, StorageType) =
        (cluster.parse().unwrap(), back.parse().unwrap());
    assert_eq!(ids(&cluster_type), ids(&back_type));
    for id in ids(&cluster_type) {
        assert_eq!(load(&cluster_type, &id), load(&back_type, &id), "{id}");
    }

    // Another seed list of the same cluster is the same storage.
    let (seeds, query) = cluster.split_once('?').unwrap();
    let nodes: Vec<&str> = seeds
        .trim_start_matches("redis+cluster://")
        .split(',')
        .collect();
    let reordered = format!(
        "redis+cluster://{}?{query}",
        nodes.iter().rev().cloned().collect::<Vec<_>>().join(",")
    );
    let run = common::run(
        tmp.path(),
        ["migrate", "--from", &cluster, "--to", &reordered],
    );
    let err = common::text(&run.stderr);
    assert!(
        !run.status.success() && err.contains("the same storage"),
        "{err}"
    );
    clean_up(&cluster_type);
}

/// The application switched to the target after a first migrate and went on writing:
/// migrating again must report that and keep what it wrote.
fn a_target_that_went_on(tmp: &Path, from_url: &str, to_url: &str) {
    let (from, to): (StorageType, StorageType) =
        (from_url.parse().unwrap(), to_url.parse().unwrap());
    seed(&from, "chat", &conversation(0));
    seed(&from, "idle", &conversation(1));
    let out = ok(tmp, ["migrate", "--from", from_url, "--to", to_url]);
    assert!(out.contains("2 copied"), "{out}");
    let later = [
        ChatMessage::user("written after the switch"),
        ChatMessage::assistant("kept"),
    ];
    append(&to, "chat", &later);
    let mut expected = conversation(0);
    expected.extend(later);

    let run = common::run(tmp, ["migrate", "--from", from_url, "--to", to_url]);
    let out = common::text(&run.stdout);
    assert!(!run.status.success(), "{out}");
    assert!(
        out.contains("diverged chat: the target has 2 messages the source lacks")
            && out.contains("0 copied, 0 extended, 1 up to date, 1 diverged, 0 replaced, 0 failed"),
        "{out}"
    );
    assert_eq!(load(&to, "chat"), expected);
    assert_eq!(load(&to, "idle"), conversation(1));
}

#[test]
fn a_target_that_gained_messages_after_a_migrate_is_reported_diverged_and_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = tmp.path().join("fs").display().to_string();
    let sqlite = format!("sqlite://{}", tmp.path().join("s.db").display());
    a_target_that_went_on(tmp.path(), &fs, &sqlite);
    let back = tmp.path().join("back").display().to_string();
    a_target_that_went_on(tmp.path(), &sqlite, &back);
    if let Some(redis) = redis_url("migrate-went-on") {
        a_target_that_went_on(tmp.path(), &fs, &redis);
        clean_up(&redis.parse().unwrap());
    }
}

/// A file-system source (`from/`, whose sessions are `{id}.jsonl` files in `dir`) and
/// target (`to/`) under one directory.
struct FsPair {
    dir: std::path::PathBuf,
    from_url: String,
    to_url: String,
    from: StorageType,
    to: StorageType,
}

fn fs_pair(tmp: &Path) -> FsPair {
    let dir = tmp.join("from");
    let from_url = dir.display().to_string();
    let to_url = tmp.join("to").display().to_string();
    FsPair {
        from: from_url.parse().unwrap(),
        to: to_url.parse().unwrap(),
        dir,
        from_url,
        to_url,
    }
}

/// The sessions newest first, as `list_page` lists them.
fn newest_first(storage: &StorageType) -> Vec<String> {
    block_on(async {
        let store = storage.open().await.expect("storage opens");
        let query = fusion::storage::SessionQuery::new();
        let page = store.list_page(&query).await.expect("lists");
        page.sessions.into_iter().map(|info| info.id).collect()
    })
}

/// The target gives the sessions it creates the migration's times, but in the order of
/// the source's: its newest-first listing is the source's (ids and times disagree here).
#[test]
fn the_target_lists_the_sessions_newest_first_in_the_sources_order() {
    let tmp = tempfile::tempdir().unwrap();
    let FsPair {
        from_url,
        to_url,
        from,
        to,
        ..
    } = fs_pair(tmp.path());
    for id in ["m", "z", "a", "q"] {
        seed(&from, id, &conversation(1));
    }
    append(&from, "z", &conversation(1));
    let source_order = newest_first(&from);
    assert_eq!(source_order, ["z", "q", "a", "m"]);

    ok(
        tmp.path(),
        ["migrate", "--from", &from_url, "--to", &to_url],
    );
    assert_eq!(newest_first(&to), source_order);
}

#[test]
fn one_unreadable_session_fails_alone_and_the_exit_code_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let FsPair {
        dir,
        from_url,
        to_url,
        from,
        to,
    } = fs_pair(tmp.path());
    for id in ["a", "broken", "c"] {
        seed(&from, id, &conversation(1));
    }
    let file = dir.join("broken.jsonl");
    let stored = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, stored.replacen("{", "{{{", 1)).unwrap();

    let output = common::run(
        tmp.path(),
        ["migrate", "--from", &from_url, "--to", &to_url],
    );
    assert!(!output.status.success());
    let stdout = common::text(&output.stdout);
    assert!(
        stdout.contains("failed broken:") && stdout.contains("corrupt"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 copied, 0 extended, 0 up to date, 0 diverged, 0 replaced, 1 failed"),
        "{stdout}"
    );
    // The error is the last word (the listing that orders the copies warns of the damage
    // before it).
    let stderr = common::text(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("fusion: error: 1 of 3 sessions failed to migrate"),
        "{stderr}"
    );
    assert_eq!(ids(&to), ["a", "c"]);
}

/// Found by an audit: a session whose only batch was torn (its file cut short) reads as
/// empty, and migrate counted it "up to date" and said nothing.
#[test]
fn a_listed_session_that_reads_empty_is_reported_skipped_not_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    let FsPair {
        dir,
        from_url,
        to_url,
        from,
        to,
    } = fs_pair(tmp.path());
    for id in ["a", "torn", "c"] {
        // One append: one batch, which the file system backend stores whole or not at all.
        append(&from, id, &conversation(3));
    }
    let file = dir.join("torn.jsonl");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let out = ok(
        tmp.path(),
        ["migrate", "--from", &from_url, "--to", &to_url],
    );
    assert!(
        out.contains("skipped torn: the source held no message for it when read"),
        "{out}"
    );
    assert!(
        out.contains("2 copied, 0 extended, 0 up to date, 0 diverged, 0 replaced, 0 failed")
            && out.contains("1 session listed in"),
        "{out}"
    );
    assert_eq!(ids(&to), ["a", "c"]);
}

#[test]
fn migrating_a_storage_onto_itself_is_refused_however_it_is_spelled() {
    let tmp = tempfile::tempdir().unwrap();
    let abs = tmp.path().canonicalize().unwrap();
    let db = abs.join("x.db").display().to_string();
    seed(
        &format!("sqlite://{db}").parse().unwrap(),
        "kept",
        &conversation(0),
    );
    let spellings = [
        ("s".to_string(), format!("{}/s", abs.display())),
        ("./s".to_string(), format!("file://{}/s/", abs.display())),
        ("sub/../s".to_string(), format!("{}/./s", abs.display())),
        ("sqlite://x.db".to_string(), format!("sqlite://{db}")),
        (format!("sqlite:{db}"), format!("sqlite://{db}")),
        ("sqlite:x.db".to_string(), format!("sqlite:{db}?mode=rwc")),
        (
            "redis://127.0.0.1/0".to_string(),
            "redis://:pw@127.0.0.1:6379".to_string(),
        ),
        (
            "redis://h?key_prefix=app".to_string(),
            "redis://h:6379/0?key_prefix=app".to_string(),
        ),
    ];
    for (from, to) in &spellings {
        // Relative spellings resolve against the command's working directory.
        let output = common::fusion(tmp.path())
            .current_dir(&abs)
            .args(["migrate", "--from", from, "--to", to])
            .output()
            .unwrap();
        let stderr = common::text(&output.stderr);
        assert!(!output.status.success(), "{from} -> {to} ran");
        assert!(stderr.contains("same storage"), "{from} -> {to}: {stderr}");
        assert!(!stderr.contains("pw@"), "password leaked: {stderr}");
    }
    assert!(
        !abs.join("s").exists(),
        "a refused migrate created the target"
    );
    assert_eq!(
        load(&format!("sqlite://{db}").parse().unwrap(), "kept"),
        conversation(0)
    );
    // Two files side by side, or two prefixes on one server, are different storages.
    let out = ok(
        tmp.path(),
        [
            "migrate",
            "--from",
            &format!("sqlite://{db}"),
            "--to",
            &format!("sqlite://{db}2"),
        ],
    );
    assert!(out.contains("1 copied"), "{out}");
    let err = fails(
        tmp.path(),
        ["migrate", "--from", "memory://", "--to", "memory"],
    );
    assert!(
        err.contains("same storage (the process's in-memory store)"),
        "{err}"
    );
}

/// `fusion migrate` runs while this test appends to the target's sessions: every append
/// acknowledged must survive, in order, after every message of the source, and every
/// session migrate did not report as diverged must start with the source's history.
fn a_concurrent_writer_loses_nothing(tmp: &Path, from_url: &str, to_url: &str) {
    const SESSIONS: usize = 200;
    let (from, to): (StorageType, StorageType) =
        (from_url.parse().unwrap(), to_url.parse().unwrap());
    let session_ids: Vec<String> = (0..SESSIONS).map(|n| format!("s{n:03}")).collect();
    block_on(async {
        let (source, target) = (from.open().await.unwrap(), to.open().await.unwrap());
        for (n, id) in session_ids.iter().enumerate() {
            source.save(id, &conversation(n)).await.unwrap();
            // Half of them are prefixes in the target already, so both copy and extend race.
            if n % 2 == 0 {
                target.save(id, &conversation(n)[..3]).await.unwrap();
            }
        }
    });

    let stdout_path = tmp.join("migrate.out");
    let mut child = common::fusion(tmp)
        .args(["migrate", "--from", from_url, "--to", to_url])
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let acknowledged: Vec<Vec<String>> = block_on(async {
        let target = to.open().await.unwrap();
        // Migrate goes through the sessions in id order; once it has done the first, the
        // writer starts from the last and goes the other way, so the two meet mid-way with
        // migrate reading, appending and verifying sessions the writer is appending to.
        let first_done = conversation(0).len();
        while child.try_wait().unwrap().is_none()
            && target.load(&session_ids[0]).await.unwrap().len() < first_done
        {}
        let mut acknowledged = vec![Vec::new(); SESSIONS];
        for k in 0.. {
            let text = format!("writer {k}");
            let n = SESSIONS - 1 - k % SESSIONS;
            target
                .append(&session_ids[n], &[ChatMessage::user(text.clone())])
                .await
                .unwrap();
            acknowledged[n].push(text);
            if child.try_wait().unwrap().is_some() {
                break;
            }
        }
        acknowledged
    });
    let status = child.wait().unwrap();
    let out = std::fs::read_to_string(&stdout_path).unwrap();
    let written: usize = acknowledged.iter().map(Vec::len).sum();
    assert!(written > 0);

    let diverged: Vec<&str> = out
        .lines()
        .filter_map(|line| line.strip_prefix("diverged ")?.split(':').next())
        .collect();
    assert_eq!(status.success(), diverged.is_empty(), "{out}");
    assert!(
        out.contains(&format!("{SESSIONS} sessions")) && out.contains(" 0 failed"),
        "{out}"
    );
    for (n, id) in session_ids.iter().enumerate() {
        let stored = load(&to, id);
        let (writer, others): (Vec<_>, Vec<_>) = stored
            .iter()
            .partition(|message| message.content.starts_with("writer "));
        // Migrate writes only onto the target exactly as it read it, so nothing of the
        // source can land after a message the writer appended meanwhile.
        let first_written = stored
            .iter()
            .position(|message| message.content.starts_with("writer "))
            .unwrap_or(stored.len());
        assert_eq!(
            others.len(),
            first_written,
            "{id}: a message of the source landed after one the writer appended"
        );
        let writer: Vec<&str> = writer.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            writer, acknowledged[n],
            "{id}: the writer's messages, in its order"
        );
        let source = conversation(n);
        let others: Vec<ChatMessage> = others.into_iter().cloned().collect();
        assert!(
            source.starts_with(&others),
            "{id}: the target holds a message from nowhere, or lost one of the source's"
        );
        if !diverged.contains(&id.as_str()) {
            assert_eq!(
                stored[..source.len()],
                source,
                "{id}: reported migrated but is not"
            );
        }
    }
}

#[test]
fn a_writer_appending_to_a_file_system_target_during_migrate_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", tmp.path().join("from.db").display());
    let to = tmp.path().join("to").display().to_string();
    a_concurrent_writer_loses_nothing(tmp.path(), &from, &to);
}

#[test]
fn a_writer_appending_to_a_sqlite_target_during_migrate_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("from").display().to_string();
    let to = format!("sqlite://{}", tmp.path().join("to.db").display());
    a_concurrent_writer_loses_nothing(tmp.path(), &from, &to);
}

#[test]
fn a_writer_appending_to_a_redis_target_during_migrate_loses_nothing() {
    let Some(to) = redis_url("migrate-writer") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("from").display().to_string();
    a_concurrent_writer_loses_nothing(tmp.path(), &from, &to);
    clean_up(&to.parse().unwrap());
}

/// A schema of one test's own on the PostgreSQL server (`fusion_storage_postgres::testing`:
/// `FUSION_POSTGRES_URL`, else a PostgreSQL `DATABASE_URL`, else the local default),
/// dropped when this is dropped, also when the test panics.
struct PostgresSchema {
    harness: postgres_testing::Harness,
}

impl PostgresSchema {
    /// A schema no other run or test uses, or `None` after printing `skipped: postgres: ...`
    /// when no server answers (a panic under `FUSION_REQUIRE_BACKENDS`).
    fn new() -> Option<Self> {
        let harness = block_on(postgres_testing::harness())?;
        Some(Self { harness })
    }

    /// `url` (the server's, or another spelling of it) with this schema as Fusion's
    /// `schema` parameter.
    fn on(&self, url: &str) -> String {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}schema={}", self.harness.schema)
    }

    /// The server's URL with this schema.
    fn url(&self) -> String {
        self.harness.storage_url()
    }

    /// The server's URL.
    fn server(&self) -> &str {
        &self.harness.url
    }

    /// Whether the schema exists on the server.
    fn exists(&self) -> bool {
        block_on(self.harness.exists())
    }
}

#[test]
fn migrates_sessions_from_sqlite_into_postgres_and_back_out_with_identical_histories() {
    let Some(schema) = PostgresSchema::new() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", tmp.path().join("sessions.db").display());
    let postgres_url = schema.url();
    let back_url = tmp.path().join("back").display().to_string();
    let (sqlite, postgres, back): (StorageType, StorageType, StorageType) = (
        sqlite_url.parse().unwrap(),
        postgres_url.parse().unwrap(),
        back_url.parse().unwrap(),
    );
    let session_ids: Vec<String> = (0..30).map(|n| format!("user-{n:02}")).collect();
    for (n, id) in session_ids.iter().enumerate() {
        seed(&sqlite, id, &conversation(n)[..1 + n % 7]);
    }

    let out = ok(
        tmp.path(),
        ["migrate", "--from", &sqlite_url, "--to", &postgres_url],
    );
    assert!(
        out.contains("30 sessions")
            && out
                .contains("30 copied, 0 extended, 0 up to date, 0 diverged, 0 replaced, 0 failed"),
        "{out}"
    );
    let out = ok(
        tmp.path(),
        ["migrate", "--from", &postgres_url, "--to", &back_url],
    );
    assert!(out.contains("30 copied, 0 extended, 0 up to date"), "{out}");

    assert_eq!(ids(&postgres), session_ids);
    assert_eq!(ids(&back), session_ids);
    for id in &session_ids {
        let original = load(&sqlite, id);
        assert!(!original.is_empty(), "{id}");
        assert_eq!(load(&postgres, id), original, "{id} in postgres");
        assert_eq!(load(&back, id), original, "{id} back out in fs");
    }

    // Re-running changes nothing and says so.
    for (from, to) in [(&sqlite_url, &postgres_url), (&postgres_url, &back_url)] {
        let out = ok(tmp.path(), ["migrate", "--from", from, "--to", to]);
        assert!(
            out.contains("0 copied, 0 extended, 30 up to date, 0 diverged, 0 replaced, 0 failed"),
            "{out}"
        );
    }
    assert_eq!(
        load(&postgres, "user-06").len(),
        7,
        "re-running must not append duplicates"
    );
}

#[test]
fn every_outcome_into_a_postgres_target() {
    let Some(schema) = PostgresSchema::new() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("from").display().to_string();
    every_outcome(tmp.path(), &from, &schema.url());
}

#[test]
fn a_writer_appending_to_a_postgres_target_during_migrate_loses_nothing() {
    let Some(schema) = PostgresSchema::new() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", tmp.path().join("from.db").display());
    a_concurrent_writer_loses_nothing(tmp.path(), &from, &schema.url());
}

/// Other spellings of the server URL `url` that name the same server and database: the
/// other scheme, the default port written out or left out, the host in capitals.
fn postgres_spellings(url: &str) -> Vec<String> {
    let (scheme, rest) = url.split_once("://").expect("a postgres URL");
    let other_scheme = if scheme == "postgres" {
        "postgresql"
    } else {
        "postgres"
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (format!("{userinfo}@"), host_port),
        None => (String::new(), authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (host_port, None),
    };
    let port_spellings = match port {
        None => vec![String::new(), ":5432".to_string()],
        Some("5432") => vec![":5432".to_string(), String::new()],
        Some(port) => vec![format!(":{port}")],
    };
    let mut spellings = vec![format!("{other_scheme}://{rest}")];
    for port in &port_spellings[1..] {
        spellings.push(format!("{scheme}://{userinfo}{host}{port}{path}"));
    }
    spellings.push(format!(
        "{other_scheme}://{userinfo}{}{}{path}",
        host.to_uppercase(),
        port_spellings[port_spellings.len() - 1]
    ));
    spellings
}

#[test]
fn migrating_a_postgres_storage_onto_itself_is_refused_however_it_is_spelled() {
    let Some(schema) = PostgresSchema::new() else {
        return;
    };
    let Some(untouched) = PostgresSchema::new() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    seed(&schema.url().parse().unwrap(), "kept", &conversation(0));
    let mut pairs = vec![
        (
            "postgres://postgres@127.0.0.1/test".to_string(),
            "postgresql://postgres:pw@127.0.0.1:5432/test".to_string(),
        ),
        (
            "postgres://app@DB.example/app?sslmode=require".to_string(),
            "postgresql://app:pw@db.example:5432/app".to_string(),
        ),
    ];
    for spelling in postgres_spellings(schema.server()) {
        pairs.push((schema.server().to_string(), spelling));
    }
    for (a, b) in pairs {
        for target in [&schema, &untouched] {
            let (from, to) = (target.on(&a), target.on(&b));
            for (from, to) in [(&from, &to), (&to, &from)] {
                let stderr = fails(tmp.path(), ["migrate", "--from", from, "--to", to]);
                assert!(
                    stderr.contains("same storage (PostgreSQL ")
                        && stderr.contains(&format!("schema {}", target.harness.schema)),
                    "{from} -> {to}: {stderr}"
                );
                assert!(!stderr.contains("pw@"), "password leaked: {stderr}");
            }
        }
    }
    assert!(
        !untouched.exists(),
        "a refused migrate created its target's schema"
    );
    assert_eq!(
        load(&schema.url().parse().unwrap(), "kept"),
        conversation(0)
    );

    // Two schemas in one database are different storages.
    let out = ok(
        tmp.path(),
        ["migrate", "--from", &schema.url(), "--to", &untouched.url()],
    );
    assert!(out.contains("1 copied"), "{out}");
    assert_eq!(
        load(&untouched.url().parse().unwrap(), "kept"),
        conversation(0)
    );
}
