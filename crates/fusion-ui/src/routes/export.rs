//! `GET /sessions/{id}/export?format=json|jsonl|markdown`: the whole session as a file
//! download in the formats of `fusion sessions export` (the library's
//! [`fusion::api::export`]), named after the session.

use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use fusion::ChatMessage;
use fusion::api::export::{self, ExportError, ExportFormat};
use fusion::storage::{Revision, SessionInfo};
use serde::Deserialize;

use super::request::{Params, existing, not_stored};
use crate::html::PageError;
use crate::state::AppState;

/// The query of the route.
#[derive(Debug, Deserialize)]
pub(crate) struct ExportParams {
    #[serde(default)]
    format: String,
}

/// `GET /sessions/{id}/export`: 200 with the file as an attachment; 400 for an unknown
/// format, 404 for an unknown session, 409 for one that kept changing while read.
pub(crate) async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(params): Params<ExportParams>,
) -> Result<Response, PageError> {
    let format: ExportFormat = params
        .format
        .parse()
        .map_err(|err: ExportError| PageError::bad_request(err.to_string()))?;
    let (info, messages) = snapshot(&state, &id).await?;
    let text = export::write_session(format, &info, &messages)
        .map_err(|err| PageError::bad_request(err.to_string()))?;
    let disposition = format!(
        "attachment; filename=\"{}.{}\"",
        file_stem(&id),
        format.extension()
    );
    Ok((
        [
            (CONTENT_TYPE, format.content_type().to_string()),
            (CONTENT_DISPOSITION, disposition),
        ],
        text,
    )
        .into_response())
}

/// How many times a session written between the reads of its facts and its messages is
/// read again before the export is refused.
const READS: usize = 3;

/// Session `id`'s facts and messages as of one revision: the facts (times, count) are
/// read first, then the messages, and a write between the two (an append by a running
/// agent) made a file whose `updated_at` was older than its last message, or, after a
/// delete and a create between, the metadata of one session with the messages of
/// another. Read again when the messages are not those the facts describe; a 409 when
/// the session keeps changing, a 404 when it was deleted meanwhile.
async fn snapshot(
    state: &AppState,
    id: &str,
) -> Result<(SessionInfo, Vec<ChatMessage>), PageError> {
    for _ in 0..READS {
        let info = existing(state.storage.as_ref(), id).await?;
        let (messages, now) = state
            .storage
            .load_revision(id)
            .await
            .map_err(|err| PageError::storage(&err))?;
        if !now.exists() {
            return Err(not_stored(id));
        }
        let described = Revision {
            generation: info.generation,
            len: info.message_count,
        };
        if now == described {
            return Ok((info, messages));
        }
    }
    Err(PageError::conflict(format!(
        "Session {id:?} kept changing while it was read for export; nothing was exported: \
         try again when it is idle."
    )))
}

/// `id` as a file name any system accepts and no header can be broken by: letters,
/// digits, `-`, `_` and `.` kept, anything else (`:`, `/`, quotes, non-ASCII) made `_`,
/// and no leading dot (a hidden file).
fn file_stem(id: &str) -> String {
    let stem: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match stem.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None => stem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_stem("chat-1.v2"), "chat-1.v2");
        assert_eq!(file_stem("team:a/\"b\"é"), "team_a__b__");
        assert_eq!(file_stem(".hidden"), "_hidden");
    }
}
