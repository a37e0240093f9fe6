//! Deleting several sessions: `GET /bulk-delete?id=..&id=..` (the sessions page's
//! "Delete selected" form) lists them and asks; `POST /bulk-delete` with the same `id`
//! fields deletes each and reports, session by session, what was deleted and what failed.
//!
//! Not under `/sessions/`, where any name is a session id. Each deletion is the same as
//! the single delete's ([`delete_shown`]): the confirmation carries each session's
//! revision, last write and metadata as it listed them, and a session written since (another
//! writer appended, or it was deleted and made again, or one listed as not stored was
//! made meanwhile, or it was renamed or retagged) is left as it is and listed as failed,
//! saying so. That also makes a resubmitted form (a reload of the report) delete nothing
//! new. One failing does not stop the rest.
//!
//! Every selected id needs its own `revision` field, as the confirmation writes one for
//! each (`damaged <id>` for a session whose revision it could not read, deleted whatever
//! it holds). A selected id without one is left as it is and listed as failed: a post
//! naming a revision only for another id (hand-made, or a form cut short) deleted it
//! unconditionally.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::HashMap;

use fusion::SessionId;
use fusion::storage::Revision;

use super::busy::held_by;
use super::delete::{Shown, delete_shown, what_changed};
use super::form::FormFields;
use super::request::valid_id;
use crate::claims::Work;
use crate::html::bulk::{BulkDone, ConfirmBulk, Failure, Listed};
use crate::html::{PageError, render};
use crate::state::AppState;

/// How the confirmation's `revision` field of a damaged session starts, before its id.
const DAMAGED: &str = "damaged ";

/// The most sessions one request may delete: a page of the listing holds at most
/// this many, and it bounds the work one click starts.
const MAX_SELECTED: usize = 500;

/// `GET /bulk-delete`: the confirmation page (400 when nothing or too much is selected,
/// or an id is invalid).
pub(crate) async fn confirm(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let fields = FormFields::parse(&Bytes::from(raw.unwrap_or_default()));
    let ids = selected(&fields)?;
    let mut listed = Vec::with_capacity(ids.len());
    for id in ids {
        valid_id(&id)?;
        let info = state.storage.session_info(&id).await;
        listed.push(Listed::read(id, info).map_err(|err| PageError::storage(&err))?);
    }
    Ok(render(StatusCode::OK, &ConfirmBulk::new(listed)))
}

/// `POST /bulk-delete`: deletes each selected session; 200 with the list when all went,
/// else the list with what failed and why, answered as the worst failure would be alone:
/// 500 when the storage failed, else 409 when a session was held by a turn or another
/// request or changed since it was listed, else 400 (an invalid id). A session already
/// gone counts as deleted.
pub(crate) async fn delete(
    State(state): State<AppState>,
    form: FormFields,
) -> Result<Response, PageError> {
    let ids = selected(&form)?;
    let shown = revisions(&form)?;
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    // The answer's status: the worst of the failures' (500 > 409 > 400), as each alone is.
    let mut status = StatusCode::OK;
    for id in ids {
        // As a single delete is: a session a turn of this app is running on, or another
        // request is working on, is left to it; the claim, held through the delete, keeps
        // a turn from starting on the session meanwhile.
        let _claim = match state.claims.claim(&id, Work::Deleting) {
            Ok(claim) => claim,
            Err(holder) => {
                let reason = held_by(&id, holder, Work::Deleting);
                failed.push(Failure { id, reason });
                status = status.max(StatusCode::CONFLICT);
                continue;
            }
        };
        if state
            .chat
            .as_ref()
            .and_then(|chats| chats.running(&id))
            .is_some()
        {
            failed.push(Failure {
                id,
                reason: "a chat turn is running on it: stop the turn first (the Stop button on \
                         the session's page), or wait for it to end"
                    .to_string(),
            });
            status = status.max(StatusCode::CONFLICT);
            continue;
        }
        let result = match (SessionId::validate(&id), shown.get(&id)) {
            (Err(err), _) => Err(err),
            (Ok(()), None) => {
                failed.push(Failure {
                    id,
                    reason: "the form carries no revision for it, so it was left as it is: \
                             delete it with the confirmation page's button"
                        .to_string(),
                });
                status = status.max(StatusCode::BAD_REQUEST);
                continue;
            }
            (Ok(()), Some(&expected)) => delete_shown(state.storage.as_ref(), &id, expected).await,
        };
        match result {
            Ok(None) => deleted.push(id),
            Ok(Some(now)) => {
                let changed = what_changed(shown.get(&id).copied().flatten(), now);
                failed.push(Failure {
                    id,
                    reason: format!(
                        "it changed since the confirmation page listed it ({changed}), so it \
                         was left as it is"
                    ),
                });
                status = status.max(StatusCode::CONFLICT);
            }
            Err(err) => {
                // Made once: making it logs the whole error.
                let shown = PageError::storage(&err);
                status = status.max(shown.status());
                failed.push(Failure {
                    id,
                    reason: shown.message().to_string(),
                });
            }
        }
    }
    Ok(render(status, &BulkDone::new(deleted, failed)))
}

/// The `revision` fields, by id, as what each delete requires ([`Shown`]): what
/// the confirmation listed, `generation len updated meta id` (`updated` the last write in
/// Unix microseconds, `-` where the backend records none; `meta` the digest of its
/// metadata, `-` for a session not stored; a form of an earlier release has
/// `generation len updated id` or `generation len id`), or `damaged id` (`None`: deleted whatever it holds) for a
/// session whose revision it could not read. No part holds a space: ids cannot.
fn revisions(fields: &FormFields) -> Result<HashMap<String, Option<Shown>>, PageError> {
    let mut shown = HashMap::new();
    for field in fields.all("revision")? {
        if let Some(id) = field.strip_prefix(DAMAGED) {
            shown.insert(id.to_string(), None);
            continue;
        }
        let parts: Vec<&str> = field.split(' ').collect();
        let (revision, updated, meta, id) = match parts[..] {
            [generation, len, id] => ((generation, len), None, None, id),
            [generation, len, updated, id] => ((generation, len), Some(updated), None, id),
            [generation, len, updated, meta, id] => {
                ((generation, len), Some(updated), Some(meta), id)
            }
            _ => (("", ""), None, None, ""),
        };
        let parse = || {
            let revision = Revision {
                generation: revision.0.parse().ok()?,
                len: revision.1.parse().ok()?,
            };
            Some(Shown {
                revision,
                updated: optional_number(updated)?,
                meta: optional_number(meta)?,
            })
        };
        let Some(expected) = parse() else {
            return Err(PageError::bad_request(format!(
                "The revision {field:?} is not \"generation length updated meta id\"."
            )));
        };
        shown.insert(id.to_string(), Some(expected));
    }
    Ok(shown)
}

/// A part of a `revision` field that may be absent or `-` (`Some(None)`), else a number;
/// `None` when it is neither.
fn optional_number<T: std::str::FromStr>(part: Option<&str>) -> Option<Option<T>> {
    match part {
        None | Some("-") => Some(None),
        Some(number) => number.parse().ok().map(Some),
    }
}

/// The `id` fields, each once: 400 for none or more than [`MAX_SELECTED`].
fn selected(fields: &FormFields) -> Result<Vec<String>, PageError> {
    let mut ids = fields.all("id")?;
    // Kept in the order given, duplicates (a resubmitted form) dropped.
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    if ids.is_empty() {
        return Err(PageError::bad_request(
            "No session selected: tick the sessions to delete on the sessions page.",
        ));
    }
    if ids.len() > MAX_SELECTED {
        return Err(PageError::bad_request(format!(
            "{} sessions selected; at most {MAX_SELECTED} can be deleted at once.",
            ids.len()
        )));
    }
    Ok(ids)
}
