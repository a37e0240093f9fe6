//! The embedded migrations and their checksums, whatever the line ends of the checkout
//! that built this crate and of the one whose build recorded a database's migrations.
//!
//! sqlx records a checksum of each migration's SQL in `_sqlx_migrations`, and compares it
//! with its own before it applies the migrations still missing. A Windows checkout with
//! `core.autocrlf` makes the files CRLF, and so their checksums others. The root
//! `.gitattributes` keeps the files LF in a git checkout, and this build turns CRLF back
//! into LF ([`MIGRATOR`]); but databases that an earlier build from a CRLF checkout
//! created recorded the checksums of the CRLF text. Such a record is the migration all the
//! same: a recorded checksum equal to that of the CRLF form of a migration of this build
//! counts as that migration ([`as_lf`], [`is_ours`], [`matching`]). Nothing is rewritten:
//! the records stay as that build wrote them.

use std::borrow::Cow;
use std::sync::LazyLock;

use sqlx::migrate::{Migration, Migrator};

/// The schema, embedded at build time (opening never needs the migration files on disk),
/// with CRLF line ends turned back into LF (see [`with_lf_line_ends`]).
pub(crate) static MIGRATOR: LazyLock<Migrator> =
    LazyLock::new(|| with_lf_line_ends(sqlx::migrate!("./migrations")));

/// The checksum of each migration of [`MIGRATOR`] as a build from a CRLF checkout
/// recorded it, by version.
static CRLF_CHECKSUMS: LazyLock<Vec<(i64, Vec<u8>)>> = LazyLock::new(|| {
    MIGRATOR
        .iter()
        .map(|m| {
            (
                m.version,
                with_sql(m, m.sql.replace('\n', "\r\n")).checksum.to_vec(),
            )
        })
        .collect()
});

/// What `_sqlx_migrations` records of a migration: its version, checksum and whether it
/// succeeded.
pub(crate) type Applied = (i64, Vec<u8>, bool);

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

/// `embedded` with every migration's SQL, and so its checksum, as the LF file it is in
/// the repository: a build from a CRLF checkout (or from an archive unpacked by a tool
/// that converts, or a file an editor saved) gets the checksums an LF build records, so
/// each opens the databases the other made.
pub(crate) fn with_lf_line_ends(embedded: Migrator) -> Migrator {
    let migrations: Vec<Migration> = embedded
        .iter()
        .map(|m| match m.sql.contains("\r\n") {
            true => with_sql(m, m.sql.replace("\r\n", "\n")),
            false => m.clone(),
        })
        .collect();
    // The other fields (sqlx's own settings for `migrate!`) as the macro made them.
    Migrator {
        migrations: Cow::Owned(migrations),
        ..embedded
    }
}

/// Whether `checksum` is what a build from a CRLF checkout recorded for migration
/// `version` of this build.
fn is_crlf_form(version: i64, checksum: &[u8]) -> bool {
    CRLF_CHECKSUMS
        .iter()
        .any(|(v, crlf)| *v == version && crlf.as_slice() == checksum)
}

/// Whether `version` and `checksum` record `m`, in either form.
pub(crate) fn is_ours(m: &Migration, version: i64, checksum: &[u8]) -> bool {
    version == m.version && (*m.checksum == *checksum || is_crlf_form(version, checksum))
}

/// `applied` with each checksum a CRLF build recorded replaced by the one of [`MIGRATOR`]:
/// what `fusion_core::sql::check_migrations` compares with this build's.
pub(crate) fn as_lf(applied: Vec<Applied>) -> Vec<Applied> {
    applied
        .into_iter()
        .map(|(version, checksum, ok)| {
            let lf = MIGRATOR
                .iter()
                .find(|m| m.version == version && is_crlf_form(version, &checksum));
            match lf {
                Some(m) => (version, m.checksum.to_vec(), ok),
                None => (version, checksum, ok),
            }
        })
        .collect()
}

/// The migrator to run on a database whose records are `applied`: [`MIGRATOR`], each
/// migration that a CRLF build recorded carrying the checksum recorded, so that sqlx,
/// which refuses a recorded checksum that differs from its own before applying the
/// migrations still missing, takes the records for the migrations they are.
pub(crate) fn matching(applied: &[Applied]) -> Migrator {
    let migrations: Vec<Migration> = MIGRATOR
        .iter()
        .map(|m| {
            let recorded = applied
                .iter()
                .find(|(v, sum, _)| *v == m.version && is_crlf_form(*v, sum));
            let mut m = m.clone();
            if let Some((_, crlf, _)) = recorded {
                m.checksum = Cow::Owned(crlf.clone());
            }
            m
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..sqlx::migrate!("./migrations")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The migrations of this crate with CRLF line ends, as a Windows checkout has them.
    fn crlf_migrator() -> Migrator {
        let crlf: Vec<Migration> = sqlx::migrate!("./migrations")
            .iter()
            .map(|m| with_sql(m, m.sql.replace('\n', "\r\n")))
            .collect();
        Migrator {
            migrations: Cow::Owned(crlf),
            ..sqlx::migrate!("./migrations")
        }
    }

    fn checksums(m: &Migrator) -> Vec<Vec<u8>> {
        m.iter().map(|m| m.checksum.to_vec()).collect()
    }

    /// A build from a CRLF checkout gets the same checksums as the LF files in the
    /// repository, so it opens the databases an LF build made (and the other way round).
    #[test]
    fn migrations_from_a_crlf_checkout_get_the_checksums_of_the_lf_files() {
        let lf = sqlx::migrate!("./migrations");
        assert!(
            lf.iter().all(|m| !m.sql.contains('\r')),
            "a migration file is CRLF"
        );
        let crlf = crlf_migrator();
        assert!(
            crlf.iter()
                .zip(lf.iter())
                .all(|(c, l)| c.checksum != l.checksum)
        );
        assert_eq!(checksums(&with_lf_line_ends(crlf)), checksums(&lf));
        assert_eq!(checksums(&MIGRATOR), checksums(&lf));
    }

    /// The checksums a CRLF build recorded read as this build's, and a migrator made for
    /// them carries them; any other checksum stays as recorded.
    #[test]
    fn checksums_a_crlf_build_recorded_count_as_the_migrations() {
        let crlf = crlf_migrator();
        let applied: Vec<Applied> = crlf
            .iter()
            .map(|m| (m.version, m.checksum.to_vec(), true))
            .chain([(99, vec![1, 2, 3], true)])
            .collect();
        let read: Vec<Vec<u8>> = as_lf(applied.clone()).into_iter().map(|a| a.1).collect();
        let lf = checksums(&MIGRATOR);
        assert_eq!(read[..lf.len()], lf[..]);
        assert_eq!(read[lf.len()], [1, 2, 3]);
        assert_eq!(checksums(&matching(&applied)), checksums(&crlf));
        assert_eq!(checksums(&matching(&[])), lf);
        let first = MIGRATOR.iter().next().unwrap();
        assert!(is_ours(first, first.version, &first.checksum));
        assert!(is_ours(first, first.version, &applied[0].1));
        assert!(!is_ours(first, first.version, &[1, 2, 3]));
    }
}
