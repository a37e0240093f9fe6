//! `GET /sessions/{id}/tokens`: one session's token total, the cell each row of the
//! sessions page fetches once it is in view ([`TokensCell`]).
//!
//! Sessions do not store token counts, so a count loads the history, which the sessions
//! page must never do while rendering (it stays one `list_page` however many sessions
//! are stored). Each row asks for its own count instead, and [`TokenCache`] remembers the
//! counts of the sessions shown lately, so paging back, re-sorting or re-filtering reads
//! `session_info` alone for a session unchanged since it was counted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use fusion::ChatMessage;
use fusion::agent::TokenCounter;
use fusion::agent::context::{Encoding, TiktokenCounter};
use fusion::storage::SessionInfo;

use super::request::valid_id;
use crate::html::sessions::TokensCell;
use crate::html::{PageError, render};
use crate::state::AppState;

/// How many sessions' counts the cache keeps: ten of the largest pages
/// (`SessionQuery::MAX_LIMIT`, 1,000 rows), two hundred of the default 50, more than one
/// person pages back and forth through. An entry is the session id (at most 128 bytes)
/// twice and about 60 bytes of version and count, so a full cache holds at most about
/// 3 MB.
pub(crate) const CACHED_SESSIONS: usize = 10_000;

/// The route, with a cache of its own: one per router, so two apps in one process (the
/// tests run many) never share counts.
pub(crate) fn route() -> MethodRouter<AppState> {
    let cache = Arc::new(TokenCache::new(CACHED_SESSIONS));
    get(
        move |State(state): State<AppState>, Path(id): Path<String>| async move {
            // A failure is a cell too, saying why, for htmx to put in place of "counting…"
            // (an HTML answer, so routes/refusal.rs leaves it there): one per row, not a
            // refusal over the page for each of them.
            count(&state, &cache, &id)
                .await
                .unwrap_or_else(|err| render(err.status(), &TokensCell::failed(err.message())))
        },
    )
}

/// The cell of session `id`: its count from the cache when the session is unchanged since
/// it was counted, else counted now. A session no longer stored is a dash (its row was
/// listed before it was deleted), an invalid id a 400, a storage failure a 500 (each a
/// cell saying why, [`route`]).
async fn count(state: &AppState, cache: &TokenCache, id: &str) -> Result<Response, PageError> {
    valid_id(id)?;
    let storage = &state.storage;
    let Some(info) = storage
        .session_info(id)
        .await
        .map_err(|err| PageError::storage(&err))?
    else {
        return Ok(render(StatusCode::OK, &TokensCell::gone()));
    };
    let version = Version::of(&info);
    if let Some(tokens) = cache.get(id, version) {
        return Ok(render(
            StatusCode::OK,
            &TokensCell::counted(tokens, info.message_count),
        ));
    }
    let (history, revision) = storage
        .load_revision(id)
        .await
        .map_err(|err| PageError::storage(&err))?;
    if !revision.exists() {
        return Ok(render(StatusCode::OK, &TokensCell::gone()));
    }
    // Counting a long history is CPU work (a BPE pass over every message): off the
    // threads that serve requests.
    let tokens = tokio::task::spawn_blocking(move || total_tokens(&history))
        .await
        .map_err(|err| {
            PageError::storage(&fusion::Error::Backend {
                backend: "fusion-ui",
                message: format!("counting tokens failed: {err}"),
                retryable: false,
                source: None,
            })
        })?;
    // Only a history that is the one `info` described is cached under its version: a write
    // between the two reads changed the count or the generation.
    if revision.generation == info.generation && revision.len == info.message_count {
        cache.put(id, version, tokens);
    }
    Ok(render(
        StatusCode::OK,
        &TokensCell::counted(tokens, revision.len),
    ))
}

/// What `history` costs, message by message with its framing, in the o200k_base encoding:
/// the count the transcript page shows for each turn, summed over the whole session.
fn total_tokens(history: &[ChatMessage]) -> usize {
    let counter = TiktokenCounter::new(Encoding::O200kBase);
    history
        .iter()
        .map(|message| counter.count_message(message))
        .sum()
}

/// Which stored history a count is of. The generation changes on every rewrite and the
/// count on every append, so together they name one history; `updated_at` moves with
/// every write too, metadata included (an edit of the title costs one recount), and keeps
/// a session deleted and created again from matching the old one's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    updated_at: Option<SystemTime>,
    message_count: usize,
    generation: u64,
}

impl Version {
    fn of(info: &SessionInfo) -> Self {
        Self {
            updated_at: info.updated_at,
            message_count: info.message_count,
            generation: info.generation,
        }
    }
}

/// The token counts of the sessions counted lately, one entry per session id (a session
/// counted again replaces its entry), at most `capacity` of them: the oldest entry goes
/// when a new session would pass the bound, by the insert that would pass it.
#[derive(Debug)]
pub(crate) struct TokenCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    counts: HashMap<String, (Version, usize)>,
    /// The ids of `counts`, oldest insert first.
    order: VecDeque<String>,
}

impl TokenCache {
    /// An empty cache of at most `capacity` sessions (at least one).
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::default(),
        }
    }

    /// The count of session `id` at `version`, if it is the one cached.
    fn get(&self, id: &str, version: Version) -> Option<usize> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .counts
            .get(id)
            .filter(|(cached, _)| *cached == version)
            .map(|(_, tokens)| *tokens)
    }

    /// Remembers that session `id` at `version` holds `tokens`.
    fn put(&self, id: &str, version: Version, tokens: usize) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.counts.get_mut(id) {
            *entry = (version, tokens);
            return;
        }
        if entries.counts.len() >= self.capacity
            && let Some(oldest) = entries.order.pop_front()
        {
            entries.counts.remove(&oldest);
        }
        entries.counts.insert(id.to_string(), (version, tokens));
        entries.order.push_back(id.to_string());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(count: usize) -> Version {
        Version {
            updated_at: Some(SystemTime::UNIX_EPOCH),
            message_count: count,
            generation: 1,
        }
    }

    #[test]
    fn a_count_is_found_only_at_its_version() {
        let cache = TokenCache::new(10);
        cache.put("a", version(2), 40);
        assert_eq!(cache.get("a", version(2)), Some(40));
        assert_eq!(cache.get("a", version(3)), None, "appended since");
        let rewritten = Version {
            generation: 2,
            ..version(2)
        };
        assert_eq!(cache.get("a", rewritten), None, "rewritten since");
        assert_eq!(cache.get("b", version(2)), None);
        cache.put("a", version(3), 60);
        assert_eq!(cache.get("a", version(3)), Some(60));
        assert_eq!(cache.len(), 1, "a recount replaces the session's entry");
    }

    #[test]
    fn the_oldest_session_goes_when_the_bound_is_reached() {
        let cache = TokenCache::new(3);
        for id in ["a", "b", "c", "d"] {
            cache.put(id, version(1), 10);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("a", version(1)), None);
        for id in ["b", "c", "d"] {
            assert_eq!(cache.get(id, version(1)), Some(10), "{id}");
        }
    }
}
