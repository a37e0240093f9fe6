//! The transaction of `update_session`: lock the session's row and read its facts
//! ([`LOCK_INFO`]), apply the update to the metadata read there and validate the result,
//! then write it ([`UPDATE_META`]), or roll back.

use fusion_core::{MetaUpdate, Result, SessionInfo, SessionMeta};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Transaction};

use crate::expiry;
use crate::meta::decode_info;
use crate::sql::{LOCK_INFO, UPDATE_META};
use crate::write::stored_tags;

/// Applies `update` to the metadata of `session_id` in the transaction `tx` (just begun);
/// `None`, writing nothing, when the session is absent or expired. A failed statement's
/// error is returned as it is (`Err`), once the transaction has ended, for the caller to
/// map (`PostgresStorage::call_error`, which may read more on a connection of the pool:
/// not one to wait for while this one is held).
pub(crate) async fn locked(
    mut tx: Transaction<'static, Postgres>,
    session_id: &str,
    update: &MetaUpdate,
) -> sqlx::Result<Result<Option<SessionInfo>>> {
    let outcome: sqlx::Result<Result<Option<SessionInfo>>> = async {
        let Some(row) = lock_info(&mut tx, session_id).await? else {
            return Ok(Ok(None));
        };
        let mut meta = match decode_info(&row) {
            Ok(info) => info.meta,
            Err(refused) => return Ok(Err(refused)),
        };
        if let Err(refused) = update.apply_to_stored(session_id, &mut meta) {
            return Ok(Err(refused));
        }
        let row = store_meta(&mut tx, session_id, &meta).await?;
        Ok(decode_info(&row).map(Some))
    }
    .await;
    if let Ok(Ok(Some(info))) = outcome {
        return tx.commit().await.map(|()| Ok(Some(info)));
    }
    // Rolled back here, not left to the drop of `tx`: that queues the ROLLBACK until the
    // pool next touches the connection, and the row stays locked until then. A failed
    // rollback means a broken connection, whose transaction the server ends; what the
    // caller needs is the outcome.
    let _ = tx.rollback().await;
    outcome
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
