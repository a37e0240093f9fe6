//! Statements a pooled connection prepared before the schema changed under the storage.
//!
//! sqlx prepares each statement once per connection and keeps it. When a column a
//! statement returns changes type (a newer release's upgrade, or a hand edit: `text` to
//! `varchar`, which this build still reads), PostgreSQL refuses to run the prepared
//! statement again ("cached plan must not change result type", SQLSTATE 0A000), on that
//! connection for good: every pooled connection that had prepared it failed that call
//! until the process restarted. The first such error is noted here; connections opened
//! before it are then closed as they are next handed out, and new ones prepare afresh.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When a call last met a statement prepared before the schema changed; shared by the
/// storage's clones and its pool's `before_acquire` hook.
#[derive(Debug, Clone, Default)]
pub(super) struct StalePlans(Arc<Mutex<Option<Instant>>>);

impl StalePlans {
    /// Notes that a call met a prepared statement the schema no longer fits.
    pub(super) fn met(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Whether a connection opened `age` ago predates the last such error, so may hold
    /// statements prepared before the change.
    pub(super) fn predate(&self, age: Duration) -> bool {
        let met = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        met.is_some_and(|met| {
            Instant::now()
                .checked_sub(age)
                .is_none_or(|opened| opened <= met)
        })
    }
}

/// Whether `err` is PostgreSQL refusing a prepared statement whose result type the
/// schema changed since it was prepared.
pub(super) fn is_stale_plan(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    db.code().as_deref() == Some("0A000")
        && db.message() == "cached plan must not change result type"
}
