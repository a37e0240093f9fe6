//! The transaction of `update_session`: lock the session's row and read its facts
//! ([`LOCK_INFO`]), apply the update to the metadata read there and validate the result,
//! then write it ([`UPDATE_META`]), or roll back.

use fusion_core::{MetaUpdate, Result, SessionInfo, SessionMeta};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Transaction};

use crate::error::{Op, parse_postgres_error};
use crate::expiry;
use crate::meta::decode_info;
use crate::sql::{LOCK_INFO, UPDATE_META};
use crate::write::stored_tags;

/// Applies `update` to the metadata of `session_id` in the transaction `tx` (just begun),
/// `op` naming it in errors; `None`, writing nothing, when the session is absent or
/// expired.
pub(crate) async fn locked(
    mut tx: Transaction<'static, Postgres>,
    op: Op<'_>,
    session_id: &str,
    update: &MetaUpdate,
) -> Result<Option<SessionInfo>> {
    let err = |e| parse_postgres_error(e, op);
    let outcome = async {
        let Some(row) = lock_info(&mut tx, session_id).await.map_err(err)? else {
            return Ok(None);
        };
        let mut meta = decode_info(&row)?.meta;
        update.apply_to_stored(session_id, &mut meta)?;
        let row = store_meta(&mut tx, session_id, &meta).await.map_err(err)?;
        decode_info(&row).map(Some)
    }
    .await;
    match outcome {
        Ok(Some(info)) => {
            tx.commit().await.map_err(err)?;
            Ok(Some(info))
        }
        // Rolled back here, not left to the drop of `tx`: that queues the ROLLBACK
        // until the pool next touches the connection, and the row stays locked until
        // then. A failed rollback means a broken connection, whose transaction the
        // server ends; what the caller needs is the outcome.
        other => {
            let _ = tx.rollback().await;
            other
        }
    }
}

/// The facts of `session_id` ([`LOCK_INFO`]), its row locked until `tx` ends; `None` when
/// it does not exist.
pub(crate) async fn lock_info(
    tx: &mut PgConnection,
    session_id: &str,
) -> sqlx::Result<Option<PgRow>> {
    sqlx::query(LOCK_INFO)
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await
}

/// Replaces the metadata and expiry of `session_id`, whose row `tx` has locked
/// ([`lock_info`]), with `meta` (validated), moving `updated_at` (and an idle expiry with
/// it); returns the facts after it ([`UPDATE_META`]).
pub(crate) async fn store_meta(
    tx: &mut PgConnection,
    session_id: &str,
    meta: &SessionMeta,
) -> sqlx::Result<PgRow> {
    let (expires_at, idle) = expiry::bound(meta.expiry.as_ref());
    sqlx::query(UPDATE_META)
        .bind(session_id)
        .bind(meta.owner.as_deref())
        .bind(meta.title.as_deref())
        .bind(stored_tags(meta))
        .bind(meta.data_json())
        .bind(expires_at)
        .bind(idle)
        .fetch_one(&mut *tx)
        .await
}
