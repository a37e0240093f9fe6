//! `POST /sessions/{id}/fork` with fields `at`, `generation` and `request`: a new session
//! holding the history before message `at` (a turn's first message), then 303 to it; 409
//! when the session was rewritten (undone, replaced) since the page showing `at` was read,
//! 404 when it was deleted.
//!
//! The fork records where it came from in its data map ([`FORKED_FROM`]: the session, the
//! position and the page's `request` token). A post repeated with the same token and
//! position (a double click on the button, a reload of the answer) finds that fork, made
//! in one step with its record, and goes to it, so one click makes one fork; a post
//! without a token (a program) forks every time.
//!
//! The fork is created with one
//! [`create_session`](fusion::storage::ConversationStorage::create_session), which
//! refuses an id that exists: it never overwrites. Its id is `<id>-fork-<n>` with the
//! first `n` not taken, so forking twice gives two sessions; when that would pass the
//! 128-byte limit on ids, the source's id is cut at its end to make room ([`fork_id`]),
//! so every session can be forked. It carries the source's owner and tags and the title
//! `Fork of <title or id> at turn N`; not its data map or expiry, which belong to the
//! source.

use axum::extract::{Path, State};
use axum::response::Redirect;
use fusion::storage::MAX_TITLE_CHARS;
use fusion::storage::{SessionInfo, SessionMeta};
use fusion::{Error, SessionId};

use super::form::FormFields;
use super::request::existing;
use crate::html::PageError;
use crate::state::AppState;
use crate::turns::{cut_keeps_tool_pairs, turn_starts};

/// How many `-fork-<n>` ids are tried before giving up: more forks of one session than
/// anyone reads means something else is wrong.
const MAX_FORK_NUMBER: usize = 1_000;

/// The key of a fork's data map that says where it came from:
/// `{"session": id, "before": at, "request": token}` (`request` when the post had one).
pub(crate) const FORKED_FROM: &str = "forked_from";

/// The longest `request` token taken (the pages send 32 hex digits).
const MAX_REQUEST_CHARS: usize = 64;

/// `POST /sessions/{id}/fork`.
pub(crate) async fn fork(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: FormFields,
) -> Result<Redirect, PageError> {
    let at: usize = form.number("at")?;
    let shown: u64 = form.number("generation")?;
    let request = if form.has("request") {
        Some(request_token(form.required("request")?)?)
    } else {
        None
    };
    let info = existing(state.storage.as_ref(), &id).await?;
    let (history, now) = state
        .storage
        .load_revision(&id)
        .await
        .map_err(|err| PageError::storage(&err))?;
    // Deleted since the facts were read: no rewrite to speak of, and nothing to fork.
    if !now.exists() {
        return Err(PageError::not_found(format!(
            "No fork was made: session {id:?} was deleted since its page was shown."
        )));
    }
    // Appends keep the generation and leave every position as it was; anything else
    // (an undo, a rewrite) may have put another message at `at`.
    if now.generation != shown {
        return Err(PageError::conflict(format!(
            "No fork was made: session {id:?} was rewritten since its page was shown, so \
             message #{at} may not be the one you chose."
        )));
    }
    let Some(turn) = turn_starts(&history).iter().position(|&start| start == at) else {
        return Err(PageError::bad_request(format!(
            "Message #{at} of session {id:?} does not start a turn: fork at a message the \
             user wrote."
        )));
    };
    if at == 0 {
        return Err(PageError::bad_request(
            "Nothing comes before the first message: a fork there would be empty.",
        ));
    }
    if !cut_keeps_tool_pairs(&history, at) {
        return Err(PageError::bad_request(format!(
            "Forking before message #{at} would separate a tool call from its result."
        )));
    }
    let mut origin = serde_json::json!({ "session": id, "before": at });
    if let Some(request) = request {
        origin["request"] = request.into();
    }
    let meta = fork_meta(&info, turn + 1).data(FORKED_FROM, origin.clone());
    let kept = &history[..at];
    for n in 1..=MAX_FORK_NUMBER {
        let fork_id = fork_id(&id, n);
        match state.storage.create_session(&fork_id, &meta, kept).await {
            Ok(_) => return Ok(Redirect::to(&format!("/sessions/{fork_id}"))),
            // Taken: by this very click's first post, or by another fork (try the next).
            Err(Error::Conflict { .. }) => {
                if origin.get("request").is_some() && made_by(&state, &fork_id, &origin).await {
                    return Ok(Redirect::to(&format!("/sessions/{fork_id}")));
                }
            }
            Err(err) => return Err(PageError::storage(&err)),
        }
    }
    Err(PageError::conflict(format!(
        "Session {id:?} already has forks numbered 1 to {MAX_FORK_NUMBER}; nothing was created."
    )))
}

/// The `request` field: a token of letters and digits, else a 400.
fn request_token(token: &str) -> Result<String, PageError> {
    let valid = !token.is_empty()
        && token.len() <= MAX_REQUEST_CHARS
        && token.bytes().all(|byte| byte.is_ascii_alphanumeric());
    if !valid {
        return Err(PageError::bad_request(format!(
            "The field \"request\" is {token:?}, not a token of at most {MAX_REQUEST_CHARS} \
             letters and digits."
        )));
    }
    Ok(token.to_string())
}

/// Whether session `fork_id` is the fork that a post with `origin` (its request token
/// included) made. One whose facts cannot be read (damaged) is taken to be another's:
/// the post goes on to the next number, as it did before forks carried a token, rather
/// than every fork of the session failing on it.
async fn made_by(state: &AppState, fork_id: &str, origin: &serde_json::Value) -> bool {
    match state.storage.session_info(fork_id).await {
        Ok(info) => info.is_some_and(|info| info.meta.data.get(FORKED_FROM) == Some(origin)),
        Err(_) => false,
    }
}

/// Fork `n` of session `id` (a valid id): `<id>-fork-<n>`, with `id` cut at its end as
/// far as the whole must be to stay within [`SessionId::MAX_LEN`]. What is left of `id`
/// is one byte at least (the suffix is at most 10), starts as `id` does and holds only
/// its characters, so the result is a valid id too. Two long ids that start alike can
/// thus share a name's stem; `create_session`, refusing a taken id, keeps their forks
/// apart.
fn fork_id(id: &str, n: usize) -> String {
    let suffix = format!("-fork-{n}");
    // Ids are ASCII, so any byte is a character boundary.
    let kept = id.len().min(SessionId::MAX_LEN - suffix.len());
    format!("{}{suffix}", &id[..kept])
}

/// The fork's metadata: the source's owner and tags, and a title saying where it came
/// from, cut to the longest title storage accepts.
fn fork_meta(info: &SessionInfo, turn: usize) -> SessionMeta {
    let label = info.meta.title.as_deref().unwrap_or(&info.id);
    let title: String = format!("Fork of {label} at turn {turn}")
        .chars()
        .take(MAX_TITLE_CHARS)
        .collect();
    let meta = SessionMeta::new().title(title).tags(info.meta.tags.clone());
    match &info.meta.owner {
        Some(owner) => meta.owner(owner.clone()),
        None => meta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fork_id_is_valid_for_every_length_of_id_and_fork_number() {
        for len in 1..=SessionId::MAX_LEN {
            let id = "a".repeat(len - 1) + "Z";
            for n in [1, 9, 10, 99, 100, MAX_FORK_NUMBER] {
                let fork = fork_id(&id, n);
                assert!(SessionId::validate(&fork).is_ok(), "{fork}");
                assert!(fork.ends_with(&format!("-fork-{n}")), "{fork}");
                let stem = &fork[..fork.len() - format!("-fork-{n}").len()];
                assert!(id.starts_with(stem), "{fork} from {id}");
                if len + format!("-fork-{n}").len() <= SessionId::MAX_LEN {
                    assert_eq!(stem, id, "an id with room is kept whole");
                }
            }
        }
    }
}
