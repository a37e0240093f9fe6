//! The order `migrate` copies sessions in: oldest first by the source's update time.
//!
//! A backend gives each session it creates its own times (the migration's), so the order
//! of the copies is the only thing that carries the source's over: copied oldest first,
//! the target lists them newest first as the source does, and `purge --older-than`
//! reaches them in the same order (if not at the same instants).

use std::cmp::Ordering;
use std::collections::HashMap;

use fusion::storage::{ConversationStorage, SessionQuery};

/// `ids` (every session of `source`) in the order to copy them: those its newest-first
/// listing holds from the oldest, then any it left out (created since), by id. One
/// listing call per 1,000 sessions.
pub(super) async fn oldest_first(
    source: &dyn ConversationStorage,
    mut ids: Vec<String>,
) -> fusion::Result<Vec<String>> {
    let mut newest_first = Vec::with_capacity(ids.len());
    let mut query = SessionQuery::new().limit(SessionQuery::MAX_LIMIT);
    loop {
        let page = source.list_page(&query).await?;
        newest_first.extend(page.sessions.into_iter().map(|info| info.id));
        match page.next {
            Some(next) => query = query.after(Some(next)),
            None => break,
        }
    }
    let age: HashMap<&str, usize> = newest_first
        .iter()
        .enumerate()
        .map(|(at, id)| (id.as_str(), at))
        .collect();
    ids.sort_by(|a, b| match (age.get(a.as_str()), age.get(b.as_str())) {
        // A later place in the newest-first listing is an older session.
        (Some(a_at), Some(b_at)) => b_at.cmp(a_at),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    });
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use fusion::ChatMessage;
    use fusion::storage::{InMemoryStorage, SessionMeta, SessionTimes};

    use super::*;

    #[tokio::test]
    async fn sessions_come_oldest_first_and_unlisted_ones_last() {
        let storage = InMemoryStorage::new();
        // "b" created first and written last: the newest. The times are given, a second
        // apart: written one after another, they could share a timestamp (ties go by id),
        // or go back with a clock set back between them.
        let at = |second: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000 + second);
        for (id, created, updated) in [("b", 0, 3), ("c", 1, 1), ("a", 2, 2)] {
            let times = SessionTimes::new(at(created), at(updated));
            storage
                .create_session_with_times(id, &SessionMeta::new(), &[ChatMessage::user(id)], times)
                .await
                .unwrap();
        }
        let ids = ["a", "b", "c", "z", "y"].map(String::from).to_vec();
        let ordered = oldest_first(&storage, ids).await.unwrap();
        assert_eq!(ordered, ["c", "a", "b", "y", "z"]);
    }
}
