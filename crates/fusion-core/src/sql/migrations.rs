//! A SQL backend's embedded migrations and their checksums, whatever the line ends of the
//! checkout that built the backend and of the one whose build recorded a database's
//! migrations (feature `sql-migrations`).
//!
//! sqlx records a checksum of each migration's SQL in `_sqlx_migrations`, and compares it
//! with its own before it applies the migrations still missing. A Windows checkout with
//! `core.autocrlf` makes the files CRLF, and so their checksums others. The root
//! `.gitattributes` keeps the files LF in a git checkout, and [`Migrations::new`] turns
//! CRLF back into LF; but databases that an earlier build from a CRLF checkout created
//! recorded the checksums of the CRLF text. Such a record is the migration all the same: a
//! recorded checksum equal to that of the CRLF form of a migration of this build counts as
//! that migration ([`Migrations::is_ours`], [`Migrations::check`],
//! [`Migrations::matching`]). Nothing is rewritten: the records stay as that build wrote
//! them.

use std::borrow::Cow;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, Migrator};

use super::{Schema, check_migrations};

/// What `_sqlx_migrations` records of a migration: its version, checksum and whether it
/// succeeded.
pub type Applied = (i64, Vec<u8>, bool);

/// A backend's migrations, as the LF files they are in the repository, and the checksum
/// a build from a CRLF checkout recorded for each.
#[derive(Debug)]
pub struct Migrations {
    migrator: Migrator,
    crlf: Vec<(i64, Vec<u8>)>,
}

impl Migrations {
    /// The migrations `embedded` (the backend's `sqlx::migrate!`) with every one's SQL,
    /// and so its checksum, as the LF file it is in the repository: a build from a CRLF
    /// checkout (or from an archive unpacked by a tool that converts, or a file an editor
    /// saved) gets the checksums an LF build records, so each opens the databases the
    /// other made.
    pub fn new(embedded: Migrator) -> Self {
        let lf: Vec<Migration> = embedded
            .iter()
            .map(|m| match m.sql.contains("\r\n") {
                true => with_sql(m, m.sql.replace("\r\n", "\n")),
                false => m.clone(),
            })
            .collect();
        let crlf = lf
            .iter()
            .map(|m| {
                let crlf = with_sql(m, m.sql.replace('\n', "\r\n"));
                (m.version, crlf.checksum.into_owned())
            })
            .collect();
        Self {
            migrator: migrator(lf),
            crlf,
        }
    }

    /// The migrator of the LF migrations, for their versions and checksums.
    pub fn migrator(&self) -> &Migrator {
        &self.migrator
    }

    /// Whether `checksum`, recorded for `m`'s version, records `m`, in either form.
    pub fn is_ours(&self, m: &Migration, checksum: &[u8]) -> bool {
        *m.checksum == *checksum || self.is_crlf_form(m.version, checksum)
    }

    /// Whether the migrations `applied` records leave the schema current or newer than
    /// these ([`check_migrations`]), a checksum a CRLF build recorded read as the LF
    /// migration's.
    pub fn check(&self, applied: &[Applied]) -> Option<Schema> {
        let as_lf: Vec<Applied> = applied
            .iter()
            .map(|(version, checksum, ok)| {
                let lf = (self.migrator.iter())
                    .find(|m| m.version == *version && self.is_crlf_form(*version, checksum));
                match lf {
                    Some(m) => (*version, m.checksum.to_vec(), *ok),
                    None => (*version, checksum.clone(), *ok),
                }
            })
            .collect();
        let known = self.migrator.iter().map(|m| (m.version, &*m.checksum));
        check_migrations(&as_lf, known)
    }

    /// The migrator to run on a database whose records are `applied`: these migrations,
    /// each one that a CRLF build recorded carrying the checksum recorded, so that sqlx,
    /// which refuses a recorded checksum that differs from its own before applying the
    /// migrations still missing, takes the records for the migrations they are.
    pub fn matching(&self, applied: &[Applied]) -> Migrator {
        let migrations = (self.migrator.iter())
            .map(|m| {
                let recorded = applied
                    .iter()
                    .find(|(v, sum, _)| *v == m.version && self.is_crlf_form(*v, sum));
                let mut m = m.clone();
                if let Some((_, crlf, _)) = recorded {
                    m.checksum = Cow::Owned(crlf.clone());
                }
                m
            })
            .collect();
        migrator(migrations)
    }

    /// Whether `checksum` is what a build from a CRLF checkout recorded for migration
    /// `version`.
    fn is_crlf_form(&self, version: i64, checksum: &[u8]) -> bool {
        (self.crlf.iter()).any(|(v, crlf)| *v == version && crlf.as_slice() == checksum)
    }
}

/// `m` with `sql` (and so the checksum of `sql`) in place of its own.
fn with_sql(m: &Migration, sql: String) -> Migration {
    Migration::new(
        m.version,
        m.description.clone(),
        m.migration_type,
        Cow::Owned(sql),
        m.no_tx,
    )
}

/// A migrator that runs `migrations`, in the order given, with sqlx's default settings,
/// which are those `sqlx::migrate!` gives its migrator too: [`Migrator::run`] locks the
/// database while it migrates (where the driver has a lock: PostgreSQL's advisory lock),
/// checks every migration the database recorded against the one of its version here
/// (refused with `MigrateError::VersionMismatch` if the checksums differ), refuses a
/// database that recorded a version missing here (`MigrateError::VersionMissing`), and
/// applies the others in order, each in its own transaction unless its SQL starts with
/// `-- no-transaction`.
///
/// Built with sqlx's public constructor, [`Migrator::new`], from a [`MigrationSource`]
/// that hands `migrations` back as they are: sqlx exempts the fields of [`Migrator`]
/// from semantic versioning (`sqlx::migrate!` fills them, and any release may change
/// them), so nothing here reads or sets them.
pub fn migrator(migrations: Vec<Migration>) -> Migrator {
    match ready_now(Migrator::new(Given(migrations))) {
        Ok(migrator) => migrator,
        Err(err) => unreachable!("a list of migrations resolves to itself: {err}"),
    }
}

/// What [`MigrationSource::resolve`] returns (sqlx's `BoxFuture`).
type Resolved = Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send>>;

/// Migrations already in memory, as a [`MigrationSource`].
#[derive(Debug)]
struct Given(Vec<Migration>);

impl MigrationSource<'static> for Given {
    fn resolve(self) -> Resolved {
        Box::pin(std::future::ready(Ok(self.0)))
    }
}

/// The output of `future`, polled once: [`Migrator::new`] over [`Given`] awaits nothing
/// but the list, so it is ready then. Never waited for: this runs where a backend first
/// needs its migrations, inside async code on a runtime's thread, which a wait would
/// block (on a single-threaded runtime, for good); should a release of sqlx make the
/// constructor wait for something, this fails at once instead.
fn ready_now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("sqlx's Migrator::new waited for something, not a list alone"),
    }
}

#[cfg(test)]
mod tests {
    use sqlx::migrate::MigrationType;

    use super::*;

    const FIRST: &str = "CREATE TABLE sessions (id TEXT);\nCREATE INDEX by_id ON sessions (id);\n";
    const SECOND: &str = "ALTER TABLE sessions ADD COLUMN title TEXT;\n";

    /// Two migrations whose files have the line ends `eol`.
    fn embedded(eol: &str) -> Migrator {
        let migration = |version, sql: &str| {
            let sql = Cow::Owned(sql.replace('\n', eol));
            Migration::new(version, "m".into(), MigrationType::Simple, sql, false)
        };
        let migrations = vec![migration(1, FIRST), migration(2, SECOND)];
        migrator(migrations)
    }

    fn checksums(m: &Migrator) -> Vec<Vec<u8>> {
        m.iter().map(|m| m.checksum.to_vec()).collect()
    }

    fn records(m: &Migrator) -> Vec<Applied> {
        m.iter()
            .map(|m| (m.version, m.checksum.to_vec(), true))
            .collect()
    }

    /// What [`migrator`] says it does, on an SQLite database in memory: the migrations
    /// applied in the order given and recorded, none twice; a recorded checksum that
    /// differs, or a recorded version missing from the list, refused.
    #[tokio::test]
    async fn a_migrator_applies_its_migrations_in_order_and_refuses_a_history_it_does_not_know() {
        use sqlx::migrate::MigrateError;
        use sqlx::{Connection, SqliteConnection};

        let mut db = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let first = migrator(embedded("\n").iter().take(1).cloned().collect());
        first.run(&mut db).await.unwrap();
        let both = migrator(embedded("\n").iter().cloned().collect());
        assert_eq!(checksums(&both), checksums(&embedded("\n")));
        both.run(&mut db).await.unwrap();
        // Again: nothing left to apply (the second would fail, its column being there).
        both.run(&mut db).await.unwrap();
        let recorded: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&mut db)
                .await
                .unwrap();
        let expected: Vec<(i64, Vec<u8>)> = both
            .iter()
            .map(|m| (m.version, m.checksum.to_vec()))
            .collect();
        assert_eq!(recorded, expected);
        sqlx::query("INSERT INTO sessions (id, title) VALUES ('s', 't')")
            .execute(&mut db)
            .await
            .unwrap();

        // The first migration changed since it was applied.
        let mut changed: Vec<Migration> = both.iter().cloned().collect();
        changed[0] = Migration::new(
            1,
            "m".into(),
            MigrationType::Simple,
            "SELECT 1;".into(),
            false,
        );
        let err = migrator(changed).run(&mut db).await.unwrap_err();
        assert!(matches!(err, MigrateError::VersionMismatch(1)), "{err:?}");
        // The database recorded the second, which this list lacks.
        let err = first.run(&mut db).await.unwrap_err();
        assert!(matches!(err, MigrateError::VersionMissing(2)), "{err:?}");
    }

    /// Found by a review: the migrator was built by a `block_on` of this module's own,
    /// which parked the thread while the constructor was pending: a runtime's thread
    /// (where a backend first reads its migrations), for good on a single-threaded one.
    #[test]
    #[should_panic(expected = "waited for something")]
    fn a_constructor_that_waits_fails_at_once_rather_than_park_the_thread() {
        ready_now(std::future::pending::<()>());
    }

    /// A build from a CRLF checkout gets the same checksums as the LF files in the
    /// repository, so it opens the databases an LF build made (and the other way round).
    #[test]
    fn migrations_from_a_crlf_checkout_get_the_checksums_of_the_lf_files() {
        let (lf, crlf) = (embedded("\n"), embedded("\r\n"));
        assert!(
            crlf.iter()
                .zip(lf.iter())
                .all(|(c, l)| c.checksum != l.checksum)
        );
        let from_crlf = Migrations::new(embedded("\r\n"));
        assert_eq!(checksums(from_crlf.migrator()), checksums(&lf));
        assert_eq!(
            checksums(Migrations::new(lf).migrator()),
            checksums(&embedded("\n"))
        );
    }

    /// The checksums a CRLF build recorded count as the migrations, in the check and in a
    /// migrator made for them, which carries them; any other checksum stays as recorded.
    #[test]
    fn checksums_a_crlf_build_recorded_count_as_the_migrations() {
        let ours = Migrations::new(embedded("\n"));
        let crlf = embedded("\r\n");
        assert_eq!(ours.check(&records(&crlf)), Some(Schema::Current));
        assert_eq!(ours.check(&records(ours.migrator())), Some(Schema::Current));
        assert_eq!(checksums(&ours.matching(&records(&crlf))), checksums(&crlf));
        assert_eq!(checksums(&ours.matching(&[])), checksums(ours.migrator()));

        // Only the first recorded, in its CRLF form: the schema is behind, and the
        // migrator takes that record for the first migration.
        let first_only = &records(&crlf)[..1];
        assert_eq!(ours.check(first_only), None);
        let matching = checksums(&ours.matching(first_only));
        assert_eq!(matching[0], checksums(&crlf)[0]);
        assert_eq!(matching[1], checksums(ours.migrator())[1]);

        // A checksum of neither form is a changed migration; an unknown version, newer.
        let changed = vec![(1, vec![1, 2, 3], true), records(&crlf)[1].clone()];
        assert_eq!(ours.check(&changed), None);
        assert_eq!(
            checksums(&ours.matching(&changed))[0],
            checksums(ours.migrator())[0]
        );
        let newer = [records(&crlf), vec![(3, vec![9], true)]].concat();
        assert_eq!(ours.check(&newer), Some(Schema::Newer(vec![3])));

        let first = ours.migrator().iter().next().unwrap();
        assert!(ours.is_ours(first, &first.checksum));
        assert!(ours.is_ours(first, &records(&crlf)[0].1));
        assert!(!ours.is_ours(first, &[1, 2, 3]));
        assert!(!ours.is_ours(first, &records(&crlf)[1].1));
    }
}
