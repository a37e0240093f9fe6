//! The errors of a database whose schema this build cannot use: written by a newer
//! release, by another application, or by an incompatible build.

use fusion_core::Error;

use super::BACKEND;

/// A schema problem, which no retry mends.
pub(super) fn schema_error(message: String) -> Error {
    Error::Backend {
        backend: BACKEND,
        message,
        retryable: false,
        source: None,
    }
}

/// The database records schema versions this build does not know: a newer release wrote it.
pub(crate) fn newer_schema(db: &str, unknown_versions: &[i64]) -> Error {
    let versions = unknown_versions
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    schema_error(format!(
        "database {db} has schema version {versions}, which is newer than this build of \
         fusion-storage-sqlite knows; it was written by a newer Fusion release. Upgrade \
         Fusion to open it (nothing was changed)"
    ))
}

/// The database holds `tables` of another application and no Fusion schema; it came from
/// a URL, or from the caller's pool (`given_pool`), which the way out names.
pub(crate) fn foreign_database(db: &str, tables: &[String], given_pool: bool) -> Error {
    // A few names are enough to recognise the application; a schema can have hundreds.
    let mut named = tables
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if tables.len() > 5 {
        named.push_str(&format!(" and {} more", tables.len() - 5));
    }
    let way_out = match given_pool {
        true => "give `from_pool` a pool on a new file or on a database Fusion created",
        false => "point the URL at a new file or at a database Fusion created",
    };
    schema_error(format!(
        "database {db} is not a Fusion database: it holds tables of another application \
         ({named}) and no Fusion schema (or one from a build of Fusion that shares no \
         migrations with this one). Nothing was changed; {way_out}"
    ))
}
