//! Deleting a session: `GET /sessions/{id}/delete` asks, `POST` to the same address
//! deletes and returns to the sessions page; `DELETE /sessions/{id}` is the same for
//! programs. The CSRF check has run before either change. While a chat turn of this app
//! runs on the session, all three are refused (409): stop the turn first. A delete holds
//! the session's claim (`crate::claims`) from that check to its end, so a Send arriving
//! meanwhile is refused rather than start a turn on a session about to vanish.
//!
//! The confirmation carries the session's [`Revision`] and last write (`updated_at`) as
//! the page read it, and the post deletes with one conditional write (`write_if`,
//! `Expect::UnwrittenSince`, `Truncate(0)`; `Expect::Exactly` where the backend records no
//! time): messages another writer stored after the page was shown (a running agent,
//! `fusion chat`, a session deleted and made again under the same id), and a rename or
//! retag in another tab, which moves `updated_at` but not the revision, were deleted
//! unseen; now nothing is deleted and the answer is a 409 saying what changed. A write in
//! the same instant as the one the page read (a millisecond on SQLite and Redis) is not
//! told apart from it. A post without a revision (a damaged session's page, whose
//! revision cannot be read; a program) deletes whatever is stored, as `DELETE` does.
//!
//! Not every rename moves the last write: every backend keeps the later of its stored
//! last write and the clock's time, so after the clock was set back (a last write stored
//! in the future) a rename leaves both it and the revision as they were, and a release
//! before counters renamed a file-system session without moving the last write it
//! reports. The confirmation carries a digest of the session's title, owner, tags, data
//! and expiry too ([`meta_digest`]), and before the write the session must report all
//! the page read, exactly. A rename or retag by this app holds the session's claim, as a
//! delete does, so none lands between that read and the write; one by another process
//! there still goes unseen: the storage's condition cannot compare metadata.
//!
//! A backend may compare a later last write than it reports: the file-system backend,
//! for a session whose counters were lost (or written by a release before them), reports
//! its file's modification time and compares that plus the 2 s a file time may lag the
//! write. Its refusal there said nothing changed that anyone could see, on every reload;
//! so a refusal of a session that still reports the revision, last write and metadata
//! the page read is retried once, as not written since that check ([`delete_shown`]).

use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use fusion::Error;
use fusion::storage::{Change, ConversationStorage, Expect, Revision};
use fusion_core::{from_unix_micros, unix_micros};

use super::busy::{claim_idle, no_turn_running};
use super::form::FormFields;
use super::request::{not_stored, valid_id};
use crate::claims::Work;
use crate::html::bulk::{Listed, meta_digest};
use crate::html::delete::ConfirmDelete;
use crate::html::{PageError, render};
use crate::state::AppState;

/// `GET /sessions/{id}/delete`: the confirmation page (404 for an unknown session, 409
/// while a chat turn runs on it). A damaged session (its metadata unreadable) is asked
/// about too, with its damage: that is when deleting it is most wanted.
pub(crate) async fn confirm(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    valid_id(&id)?;
    let info = state.storage.session_info(&id).await;
    let session = Listed::read(id, info).map_err(|err| PageError::storage(&err))?;
    if session.count.is_none() && session.damage.is_none() {
        return Err(not_stored(&session.id));
    }
    no_turn_running(&state, &session.id, Work::Deleting)?;
    Ok(render(StatusCode::OK, &ConfirmDelete::new(session)))
}

/// `POST /sessions/{id}/delete`, with the fields `generation` and `len` of the revision
/// the confirmation page showed and `updated`, its last write (Unix microseconds), where
/// the backend records one: deletes, then 303 to the sessions page; 409 when the session
/// changed since, its metadata included (nothing is deleted), or a chat turn runs on it;
/// 400 for a form with some of `generation`, `len` and `updated` but not both of the
/// first two. Deleting a session that is already gone is not an error (a second click,
/// another tab).
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: FormFields,
) -> Result<Redirect, PageError> {
    // Any field of the condition asks for it whole: a last write alone is no condition
    // to drop silently, deleting whatever is stored.
    let shown = if ["generation", "len", "updated", "meta"]
        .iter()
        .any(|f| form.has(f))
    {
        let revision = Revision {
            generation: form.number("generation")?,
            len: form.number("len")?,
        };
        Some(Shown {
            revision,
            updated: form
                .has("updated")
                .then(|| form.number("updated"))
                .transpose()?,
            meta: form.has("meta").then(|| form.number("meta")).transpose()?,
        })
    } else {
        None
    };
    remove(&state, &id, shown).await?;
    Ok(Redirect::to("/sessions"))
}

/// A session as a confirmation page showed it: what its delete requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shown {
    /// The revision the page read.
    pub revision: Revision,
    /// Its last write as the page read it (Unix microseconds as the backend recorded
    /// it), where the backend records one.
    pub updated: Option<i64>,
    /// Its title, owner, tags, data and expiry as the page read them ([`meta_digest`]),
    /// where the page was made by a release that sends them.
    pub meta: Option<u64>,
}

impl Shown {
    /// What the delete's write requires: that revision, and no write since, be it only of
    /// its title, owner, tags, data or expiry.
    pub(crate) fn expect(self) -> Expect {
        match self.updated {
            // Written last at `updated` or before: earlier than the microsecond after it.
            Some(updated) => Expect::UnwrittenSince {
                revision: self.revision,
                since: from_unix_micros(updated.saturating_add(1)),
            },
            None => Expect::Exactly(self.revision),
        }
    }
}

/// `DELETE /sessions/{id}`: deletes, then 204 (409 while a chat turn runs on it).
pub(crate) async fn delete_now(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, PageError> {
    remove(&state, &id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes session `id`: whatever is stored, or only while it still meets `shown`.
async fn remove(state: &AppState, id: &str, shown: Option<Shown>) -> Result<(), PageError> {
    valid_id(id)?;
    let _claim = claim_idle(state, id, Work::Deleting)?;
    match delete_shown(state.storage.as_ref(), id, shown).await {
        Ok(None) => Ok(()),
        Ok(Some(now)) => Err(PageError::conflict(format!(
            "Nothing was deleted: session {id:?} changed since its page was shown ({}).",
            what_changed(shown, now)
        ))),
        Err(err) => Err(PageError::storage(&err)),
    }
}

/// What changed in a session shown as `shown` that is now at `now`: its messages, or,
/// where they are as shown, what else a write changes.
pub(crate) fn what_changed(shown: Option<Shown>, now: Revision) -> String {
    if shown.map(|shown| shown.revision) == Some(now) {
        "its title, owner, tags, data or expiry were changed".to_string()
    } else {
        format!("it now holds {} messages", now.len)
    }
}

/// Deletes session `id` (a valid id) as a confirmation page showed it: whatever is
/// stored when `shown` is `None`, else with one conditional write, only while the session
/// still reports the revision, last write and metadata `shown` read and then meets `shown`
/// ([`Shown::expect`]). `Ok(None)` when it is gone (deleted now, or
/// already), and `Ok(Some(now))` when it changed since and nothing was deleted.
///
/// A refusal of a session still at the revision shown, which still reports the last write
/// and metadata the page read, is retried once as not written since just before that
/// read: the backend compared a later time than it reports (see the module docs), and a
/// write after that read is still refused.
pub(crate) async fn delete_shown(
    storage: &dyn ConversationStorage,
    id: &str,
    shown: Option<Shown>,
) -> fusion::Result<Option<Revision>> {
    let Some(shown) = shown else {
        return storage.delete(id).await.map(|()| None);
    };
    // The write's own condition sees no rename that leaves the last write as it was (a
    // clock set back, an earlier release on the file system): what the page read is
    // required exactly first, metadata included; the write then covers what lands between.
    if (shown.updated.is_some() || shown.meta.is_some())
        && !reports_as_shown(storage, id, shown).await?
    {
        let (_, now) = storage.load_revision(id).await?;
        return Ok(now.exists().then_some(now));
    }
    let now = match delete_if(storage, id, shown.expect()).await? {
        None => return Ok(None),
        Some(now) => now,
    };
    if shown.updated.is_some() && now == shown.revision {
        // Taken before the read. The file-system backend stamps a write under the
        // session's exclusive lock, which the read's shared lock orders: a write the read
        // does not show is stamped after this instant on this host's clock. A writer on
        // another host sharing the directory stamps with its own, and one running behind
        // by more than the span from here to the retry's write could have a rename
        // landing in that span deleted. Only a backend that compares a later time than it
        // reports gets here (the file system's, for a session without counters): memory,
        // SQLite, Redis and PostgreSQL compare the time they report, so their refusal at
        // the shown revision reports a later write, and no retry follows.
        let checked = SystemTime::now();
        if reports_as_shown(storage, id, shown).await? {
            let unwritten = Expect::UnwrittenSince {
                revision: shown.revision,
                since: checked,
            };
            return delete_if(storage, id, unwritten).await;
        }
    }
    Ok(Some(now))
}

/// Whether session `id` reports the revision, last write (to the microsecond as the
/// backend recorded it) and metadata `shown` read.
async fn reports_as_shown(
    storage: &dyn ConversationStorage,
    id: &str,
    shown: Shown,
) -> fusion::Result<bool> {
    let Some(info) = storage.session_info(id).await? else {
        return Ok(false);
    };
    let revision = Revision {
        generation: info.generation,
        len: info.message_count,
    };
    Ok(revision == shown.revision
        && info.updated_at.map(unix_micros) == shown.updated
        && shown
            .meta
            .is_none_or(|meta| meta == meta_digest(&info.meta)))
}

/// Deletes session `id` only while it meets `expected`: `Ok(None)` when it is gone
/// (deleted now, or already), `Ok(Some(now))` when it was refused at revision `now`.
async fn delete_if(
    storage: &dyn ConversationStorage,
    id: &str,
    expected: Expect,
) -> fusion::Result<Option<Revision>> {
    match storage.write_if(id, expected, Change::Truncate(0)).await {
        Ok(_) => Ok(None),
        Err(Error::Conflict { .. }) => {
            let (_, now) = storage.load_revision(id).await?;
            // Deleted already (a second click, another tab): what was asked is done.
            Ok(now.exists().then_some(now))
        }
        Err(err) => Err(err),
    }
}
