//! `POST /sessions/{id}/title` (rename; an empty title removes it) and
//! `POST /sessions/{id}/tags` (add and remove tags), each one atomic
//! [`update_session`](fusion::storage::ConversationStorage::update_session), then 303
//! back to the transcript.
//!
//! A rename names the title its page showed (`shown`, empty for none) and changes nothing
//! if the title is another now (a 409 saying what it is): two tabs renaming one session,
//! or this app and another program, the second no longer overwrites the first unseen. The
//! check is the storage's own ([`MetaUpdate::if_title`]), made in the step that writes.
//! A post without `shown` (a program) renames whatever the title is.
//!
//! The rules are those of `fusion sessions retitle` and `fusion sessions tag`
//! (`fusion-cli/src/meta.rs`), which live in the CLI, so they are restated here against
//! the trait: an empty title removes it; a tag change needs at least one tag to add or
//! remove; the storage validates the result (`SessionMeta::validate`) and refuses it
//! whole. One difference of form only: the "add" box takes several tags separated by
//! commas, which no tag may contain, so nothing is ambiguous.

use axum::extract::{Path, State};
use axum::response::Redirect;
use fusion::storage::MetaUpdate;

use super::busy::claim;
use super::form::FormFields;
use super::request::{not_stored, valid_id};
use crate::claims::Work;
use crate::html::PageError;
use crate::state::AppState;

/// `POST /sessions/{id}/title` with field `title`.
pub(crate) async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: FormFields,
) -> Result<Redirect, PageError> {
    let title = form.required("title")?.trim();
    let mut update = MetaUpdate::new().title((!title.is_empty()).then_some(title));
    if form.has("shown") {
        let shown = form.required("shown")?;
        update = update.if_title((!shown.is_empty()).then_some(shown));
    }
    apply(&state, &id, &update).await
}

/// `POST /sessions/{id}/tags` with fields `add` (tags, comma-separated) and `remove` (one
/// tag each), any number of either.
pub(crate) async fn tags(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: FormFields,
) -> Result<Redirect, PageError> {
    let mut update = MetaUpdate::new();
    update.add_tags = form
        .all("add")?
        .iter()
        .flat_map(|field| field.split(','))
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .map(str::to_string)
        .collect();
    update.remove_tags = form.all("remove")?;
    if update.add_tags.is_empty() && update.remove_tags.is_empty() {
        return Err(PageError::bad_request(
            "Nothing to change: name a tag to add or to remove.",
        ));
    }
    apply(&state, &id, &update).await
}

/// Applies `update` to session `id` and returns to its page: 404 when it does not exist,
/// 400 when the result breaks a metadata rule, 409 when its title condition fails
/// (nothing is changed then).
///
/// Under the session's claim: a delete of this app checks the metadata its page showed,
/// then deletes with a write that cannot compare metadata; a rename between the two, from
/// another tab, was deleted unseen where the rename leaves the last write as it was.
async fn apply(state: &AppState, id: &str, update: &MetaUpdate) -> Result<Redirect, PageError> {
    valid_id(id)?;
    let _claim = claim(state, id, Work::Renaming)?;
    match state.storage.update_session(id, update).await {
        Ok(Some(_)) => Ok(Redirect::to(&format!("/sessions/{id}"))),
        Ok(None) => Err(not_stored(id)),
        Err(err) => Err(PageError::storage(&err)),
    }
}
