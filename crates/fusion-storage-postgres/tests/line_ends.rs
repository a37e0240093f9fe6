//! A schema that a build from a CRLF checkout (Windows, `core.autocrlf`) created, before
//! this crate turned CRLF back into LF, recorded the checksums of the CRLF text of its
//! migrations: it opens all the same, at this build's version and at the one before
//! (then upgraded), its records kept as that build wrote them.

mod support;

use fusion_core::testkit::StorageHarness;
use fusion_core::{ChatMessage, ConversationStorage};
use sqlx::PgConnection;
use sqlx::migrate::{Migration, Migrator};
use support::{Harness, harness};

/// The first `version` migrations of this crate as a build from a CRLF checkout embedded
/// them: every line ending in CRLF, and so every checksum that of the CRLF text.
fn crlf_migrator(version: usize) -> Migrator {
    let migrations: Vec<Migration> = sqlx::migrate!("./migrations")
        .iter()
        .take(version)
        .map(|m| {
            let sql = m.sql.replace('\n', "\r\n");
            let kind = m.migration_type;
            Migration::new(m.version, m.description.clone(), kind, sql.into(), m.no_tx)
        })
        .collect();
    fusion_core::sql::migrations::migrator(migrations)
}

/// The checksums the harness's schema records, in version order.
async fn recorded(raw: &mut PgConnection) -> Vec<Vec<u8>> {
    sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations ORDER BY version")
        .fetch_all(raw)
        .await
        .unwrap()
}

/// The harness's schema at `version` as the CRLF build left it, holding session `s` with
/// one message written the way every version stores one.
async fn crlf_schema(harness: &Harness, version: usize) -> PgConnection {
    let mut raw = harness.raw().await;
    sqlx::query(&format!("CREATE SCHEMA {}", harness.schema))
        .execute(&mut raw)
        .await
        .unwrap();
    crlf_migrator(version).run(&mut raw).await.unwrap();
    let body = serde_json::to_string(&ChatMessage::user("from the CRLF build")).unwrap();
    sqlx::raw_sql(&format!(
        "INSERT INTO sessions (id, created_at, updated_at, message_count, generation) \
         VALUES ('s', now(), now(), 1, 7); \
         INSERT INTO messages (session_id, seq, body) VALUES ('s', 0, '{body}')"
    ))
    .execute(&mut raw)
    .await
    .unwrap();
    raw
}

#[tokio::test]
async fn a_schema_a_crlf_build_made_opens_and_upgrades() {
    let latest = sqlx::migrate!("./migrations").iter().count();
    for version in [latest, latest - 1] {
        let Some(harness) = harness().await else {
            return;
        };
        let mut raw = crlf_schema(&harness, version).await;
        let crlf = recorded(&mut raw).await;
        let lf: Vec<Vec<u8>> = sqlx::migrate!("./migrations")
            .iter()
            .map(|m| m.checksum.to_vec())
            .collect();
        assert!(crlf.iter().zip(&lf).all(|(c, l)| c != l), "CRLF checksums");

        let storage = harness.open().await.unwrap();
        let before = ChatMessage::user("from the CRLF build");
        assert_eq!(
            storage.load("s").await.unwrap(),
            [before],
            "version {version}"
        );
        storage
            .append("s", &[ChatMessage::user("after")])
            .await
            .unwrap();
        assert_eq!(storage.load("s").await.unwrap().len(), 2);
        let now = recorded(&mut raw).await;
        assert_eq!(now.len(), latest, "version {version}: upgraded");
        assert_eq!(now[..version], crlf[..], "version {version}: records kept");
        assert_eq!(
            now[version..],
            lf[version..],
            "version {version}: new ones LF"
        );
        storage.close().await;
    }
}
