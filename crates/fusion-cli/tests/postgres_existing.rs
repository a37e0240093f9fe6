//! A PostgreSQL schema that does not exist, given to the `fusion` commands that read
//! sessions or change existing ones, to a `migrate --dry-run` target and to a `migrate`
//! source, run as a process: each says there is nothing (or refuses), and the schema is
//! never created.

mod common;

use std::path::Path;

use common::{block_on, conversation, fails, ok, on, seed};
use fusion::storage::StorageType;
use fusion_storage_postgres::testing as postgres_testing;

/// A schema no other run or test uses on the PostgreSQL server, not created; dropped
/// (if anything made it) when the harness is dropped. `None` after printing
/// `skipped: postgres: ...` when no server answers (a panic under
/// `FUSION_REQUIRE_BACKENDS`).
fn schema() -> Option<postgres_testing::Harness> {
    block_on(postgres_testing::harness())
}

/// Whether the harness's schema exists on the server.
fn exists(schema: &postgres_testing::Harness) -> bool {
    block_on(schema.exists())
}

/// A file-system store in `dir/sessions` holding session `s1`, as a URL.
fn fs_source(dir: &Path) -> String {
    let url = dir.join("sessions").display().to_string();
    let storage: StorageType = url.parse().unwrap();
    seed(&storage, "s1", &conversation(1));
    url
}

#[test]
fn reading_a_postgres_schema_that_does_not_exist_creates_nothing() {
    let Some(schema) = schema() else {
        return;
    };
    let url = schema.storage_url();
    let tmp = tempfile::tempdir().unwrap();
    common::assert_reads_find_nothing(tmp.path(), &url);
    assert!(!exists(&schema), "a read created schema {}", schema.schema);
}

#[test]
fn a_dry_run_into_a_postgres_schema_that_does_not_exist_says_what_it_would_copy_and_creates_nothing()
 {
    let Some(schema) = schema() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let from = fs_source(tmp.path());
    let to = schema.storage_url();
    let stdout = ok(
        tmp.path(),
        ["migrate", "--from", &from, "--to", &to, "--dry-run"],
    );
    assert!(stdout.contains("1 to copy, 0 to extend"), "{stdout}");
    assert!(
        !exists(&schema),
        "a dry run created schema {}",
        schema.schema
    );
    // The real run creates it and copies.
    let stdout = ok(tmp.path(), ["migrate", "--from", &from, "--to", &to]);
    assert!(stdout.contains("1 copied"), "{stdout}");
    assert!(exists(&schema));
    let listed = ok(tmp.path(), on(&to, &["sessions", "list"]));
    assert!(listed.contains("s1"), "{listed}");
}

#[test]
fn a_migrate_from_a_postgres_schema_that_does_not_exist_is_refused_and_creates_nothing() {
    let Some(schema) = schema() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let from = schema.storage_url();
    let to = tmp.path().join("target").display().to_string();
    for dry_run in [false, true] {
        let mut args = vec!["migrate", "--from", &from, "--to", &to];
        if dry_run {
            args.push("--dry-run");
        }
        let err = fails(tmp.path(), &args);
        assert!(
            err.contains("--from postgres://")
                && err.contains(&format!("schema={}: no such storage", schema.schema)),
            "{err}"
        );
    }
    assert!(!exists(&schema), "a refused source was created");
    assert!(!tmp.path().join("target").exists(), "the target was made");
}
