//! What a write that one server refused as `READONLY` does to the shared connection.
//!
//! After a failover behind a name that follows the primary (DNS, a proxy, a managed
//! endpoint), the open connection still reaches the demoted server, now a replica, and
//! the connection manager opens a new one only when the old one drops. So the storage
//! closes it (`QUIT`, then a `PING` by which the manager notices), and the retry of the
//! refused write goes out on a new connection, which reaches the new primary.
//!
//! Once: every write in flight on the old connection may be refused with `READONLY`, and
//! a `QUIT` sent for a late one would close the new, healthy connection, cutting off the
//! requests on it (a write's cut reply reads as "may have been applied"). So each write
//! notes the connection's epoch before it is sent, and only a refusal of the epoch still
//! current closes the connection, one at a time.

use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::ConnectionManager;

/// The epochs of the shared connection: one more each time a refusal closed it.
#[derive(Debug, Default)]
pub(crate) struct Reopen {
    epoch: AtomicU64,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reopen {
    /// The epoch of the connection now: taken before a write is sent on it.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Closes the connections of `conns` so that their managers open new ones, after a
    /// write sent in epoch `sent` was refused as `READONLY`; nothing if a refusal since
    /// has done so. Nothing in flight on a closed connection was applied: it reaches a
    /// replica.
    pub(crate) async fn after_read_only(
        &self,
        conns: impl IntoIterator<Item = &ConnectionManager>,
        sent: u64,
        url: &str,
    ) {
        let _one = self.one_at_a_time.lock().await;
        if self.epoch() != sent {
            return;
        }
        for conn in conns {
            let mut conn = conn.clone();
            let quit = redis::cmd("QUIT").query_async::<()>(&mut conn).await;
            if let Err(err) = quit {
                tracing::warn!(
                    url,
                    error = %err,
                    "a replica refused a write and a connection to it could not be closed: \
                     calls keep going to it until the connection drops"
                );
                continue;
            }
            // The server closed it after its reply. The manager notices when a request
            // finds it closed: this `PING` does, so the next call waits for the new
            // connection rather than failing on the old one.
            let _ = redis::cmd("PING").query_async::<()>(&mut conn).await;
        }
        // Counted even if a `QUIT` failed: the writes refused meanwhile try no more.
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id the server gives the manager's connection now.
    async fn client_id(conn: &ConnectionManager) -> i64 {
        redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn.clone())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_late_refusal_leaves_the_new_connection_alone() {
        let Some(url) = std::env::var("REDIS_URL").ok() else {
            fusion_core::testkit::unavailable::<()>("redis", "set REDIS_URL to run");
            return;
        };
        let client = redis::Client::open(url).unwrap();
        let conn = ConnectionManager::new(client).await.unwrap();
        let reopen = Reopen::default();
        let sent = reopen.epoch();
        let old = client_id(&conn).await;
        reopen.after_read_only([&conn], sent, "redis://test").await;
        let new = client_id(&conn).await;
        assert_ne!(
            old, new,
            "the refused connection was closed and another opened"
        );
        // A write sent on the old connection, refused after the first closed it.
        reopen.after_read_only([&conn], sent, "redis://test").await;
        assert_eq!(client_id(&conn).await, new, "the new connection stays open");
    }
}
