//! Opening a [`SqliteStorage`]: from a URL ([`SqliteStorage::connect`],
//! [`SqliteStorage::connect_with`]), which creates, checks and migrates the database and
//! opens the direct connections of a file, or from a caller's pool
//! ([`SqliteStorage::from_pool`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use fusion_core::Result;
use sqlx::sqlite::SqlitePool;

use super::SqliteStorage;
use crate::busy::wait_while_busy_until;
use crate::config::{DirectOptions, Location, SqliteOptions, parse_url};
use crate::direct::Direct;
use crate::error::{Op, PLACE, parse_direct_error, parse_sqlite_error};
use crate::files::shown;
use crate::migrate;

impl SqliteStorage {
    /// Opens (creating when missing) the database at `url` with default [`SqliteOptions`].
    ///
    /// `url` is `sqlite://PATH`, `sqlite:PATH` or `sqlite::memory:`; see
    /// [`connect_with`](Self::connect_with).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, SqliteOptions::default()).await
    }

    /// Opens the database at `url` with `options`, upgrading its schema if needed.
    ///
    /// - `sqlite://PATH` or `sqlite:PATH`: a file, created (with its directory) when
    ///   missing. sqlx query parameters are honoured; `?mode=ro` opens read-only and
    ///   `?mode=rw` refuses to create the file.
    /// - `sqlite::memory:`: a private in-memory database. The pool then has exactly one
    ///   connection that is never recycled, because the database lives only as long as a
    ///   connection to it; clones of the storage share it.
    ///
    /// Many processes may open one file at once, new or not: each step of opening that
    /// finds the database busy (another process creating it, switching it to WAL or
    /// migrating its schema) is repeated until it succeeds or the busy timeout of
    /// `options` has passed, then fails with a retryable "locked" error.
    ///
    /// Fails with a clear error naming the path, before anything is written, when the
    /// path is not a regular file (a FIFO, socket or device, or a symbolic link to nothing,
    /// through which SQLite would create the file where it points), when the file is not a
    /// SQLite database, when it holds another application's tables (tables, but not
    /// Fusion's first migration: Fusion adds its tables to no one else's database), or
    /// when it was written by a newer release with a schema this build does not know.
    pub async fn connect_with(url: &str, options: SqliteOptions) -> Result<Self> {
        let target = parse_url(url, &options)?;
        let (db, file): (Arc<str>, Option<Arc<Path>>) = (target.label().into(), target.file());
        let opening = Op::open(PLACE, &db).at(file.as_deref());
        let pool_options = target.pool_options(&options)?;
        // The steps of opening (the look at the file, the pool's first connection, the
        // migration, the direct connections) wait for a busy file once, not once each.
        let deadline = Instant::now() + options.busy_timeout;
        if let Some(direct) = &target.direct {
            migrate::refuse_foreign_file(direct, deadline, opening).await?;
        }
        // The pool opens its first connection now, creating the file and switching it to
        // WAL, which another process opening it at the same moment can make fail busy
        // without waiting: repeated, like every step of opening (see `crate::busy`). A
        // failed try drops its pool, closing whatever it had opened.
        let pool = wait_while_busy_until(deadline, || {
            pool_options.clone().connect_with(target.connect.clone())
        })
        .await
        .map_err(|e| parse_sqlite_error(e, opening))?;
        let mut storage = Self {
            pool,
            db: Arc::clone(&db),
            file: file.clone(),
            direct: None,
            corrupt: Arc::default(),
        };
        let opening = Op::open(PLACE, &db).at(file.as_deref());
        let migrated = migrate::run(&storage.pool, opening, deadline, false);
        let opened = match migrated.await {
            Ok(()) => {
                // The file exists now. A connection opened later must find it, not create
                // an empty database in its place if it was moved away meanwhile.
                if let Location::File { .. } = target.location {
                    storage
                        .pool
                        .set_connect_options(target.connect.clone().create_if_missing(false));
                }
                match target.direct {
                    Some(options) => Direct::open(
                        Arc::clone(&db),
                        DirectOptions {
                            create: false,
                            ..options
                        },
                        Arc::clone(&storage.corrupt),
                        deadline,
                    )
                    .await
                    .map(|direct| storage.direct = Some(Arc::new(direct)))
                    .map_err(|e| parse_direct_error(e, opening)),
                    None => Ok(()),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = opened {
            // Release the file now rather than whenever the caller drops the error.
            storage.close().await;
            return Err(e);
        }
        tracing::debug!(db = %storage.db, "opened SQLite conversation storage");
        Ok(storage)
    }

    /// Uses an existing pool, upgrading the database's schema if needed.
    ///
    /// The pool's own settings are kept: configure WAL, the busy timeout and foreign keys
    /// on its `SqliteConnectOptions` as [`connect_with`](Self::connect_with) does. The
    /// database must be dedicated to Fusion, because sqlx records the migrations of every
    /// user of a database in one `_sqlx_migrations` table: one holding another
    /// application's tables, without Fusion's first migration, is refused before anything
    /// is written (one where Fusion's tables already are is taken as it is). A migration that finds
    /// the database busy is repeated for up to the default busy timeout of
    /// [`SqliteOptions`].
    pub async fn from_pool(pool: SqlitePool) -> Result<Self> {
        let file: Arc<Path> = pool.connect_options().get_filename().into();
        let db = shown(&file.display().to_string());
        // On failure the pool is left open: it is the caller's. Its busy timeout cannot be
        // read back from sqlx, so a busy migration is repeated for the default one.
        let deadline = Instant::now() + SqliteOptions::default().busy_timeout;
        let opening = Op::open(PLACE, &db).at(Some(&file));
        migrate::run(&pool, opening, deadline, true).await?;
        // The pool's checkpoint settings are its owner's; SQLite's own apply by default.
        Ok(Self {
            pool,
            db: db.into(),
            file: Some(file),
            direct: None,
            corrupt: Arc::default(),
        })
    }
}
