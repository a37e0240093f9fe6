//! The pages of bulk delete: the list of selected sessions with the form that deletes
//! them, and the report of what was deleted and what failed.

use std::hash::{DefaultHasher, Hash, Hasher};

use askama::Template;
use fusion::storage::{Revision, SessionInfo, SessionMeta};

use crate::assets::{AssetUrls, URLS};

/// One selected session as the confirmation lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub id: String,
    /// The title, when it has one.
    pub title: Option<String>,
    /// Its message count; `None` when nothing is stored under the id (already gone) or
    /// its facts cannot be read.
    pub count: Option<usize>,
    /// Why its facts cannot be read (a damaged metadata file): a session that is most
    /// wanted gone, and which the delete itself, reading none of them, can remove.
    pub damage: Option<String>,
    /// The revision it was read at ([`Revision::ABSENT`] when nothing is stored; `None`
    /// when damaged): its delete goes ahead only while it is still exactly that.
    pub revision: Option<Revision>,
    /// When it was last written (messages or metadata), in Unix microseconds as the
    /// backend records it, where it records one: its delete goes ahead only while it has
    /// not been written since, so a rename in another tab is not deleted unseen either.
    pub updated: Option<i64>,
    /// Its metadata as read ([`meta_digest`]; `None` when not stored or damaged): its
    /// delete goes ahead only while that is unchanged too.
    pub meta: Option<u64>,
}

impl Listed {
    /// Session `id`, described by what reading its facts gave: `Ok(None)` when nothing is
    /// stored under it. An error is `Err` unless it is damage to the session itself
    /// ([`Error::Corrupt`](fusion::Error::Corrupt)), which the page shows instead.
    pub(crate) fn read(
        id: String,
        info: fusion::Result<Option<SessionInfo>>,
    ) -> Result<Self, fusion::Error> {
        let info = match info {
            Ok(info) => info,
            Err(err @ fusion::Error::Corrupt { .. }) => {
                return Ok(Self {
                    id,
                    title: None,
                    count: None,
                    damage: Some(err.to_string()),
                    revision: None,
                    updated: None,
                    meta: None,
                });
            }
            Err(err) => return Err(err),
        };
        Ok(Self {
            id,
            title: info.as_ref().and_then(|info| info.meta.title.clone()),
            count: info.as_ref().map(|info| info.message_count),
            damage: None,
            revision: Some(info.as_ref().map_or(Revision::ABSENT, |info| Revision {
                generation: info.generation,
                len: info.message_count,
            })),
            updated: info
                .as_ref()
                .and_then(|info| info.updated_at)
                .map(fusion_core::unix_micros),
            meta: info.as_ref().map(|info| meta_digest(&info.meta)),
        })
    }
}

/// A digest of a session's title, owner, tags, data and expiry, for a delete to require
/// them as its page read them. The last write and the revision do not always tell: every
/// backend keeps the later of its stored last write and the clock's time, so after the
/// clock was set back a rename leaves both as they were; and a release before counters
/// renamed a file-system session without moving the last write it reports. The same
/// within one build of the app; a page from another build is refused, never deleted.
pub(crate) fn meta_digest(meta: &SessionMeta) -> u64 {
    let mut hasher = DefaultHasher::new();
    format!("{meta:?}").hash(&mut hasher);
    hasher.finish()
}

/// "Delete these N sessions?" with the form that does it.
#[derive(Template, Debug)]
#[template(path = "bulk_confirm.html")]
pub(crate) struct ConfirmBulk {
    title: String,
    assets: &'static AssetUrls,
    sessions: Vec<Listed>,
}

impl ConfirmBulk {
    /// The question for `sessions`.
    pub(crate) fn new(sessions: Vec<Listed>) -> Self {
        Self {
            title: format!("Delete {} sessions?", sessions.len()),
            assets: &URLS,
            sessions,
        }
    }
}

/// A session bulk delete could not delete, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub id: String,
    pub reason: String,
}

/// What a bulk delete did.
#[derive(Template, Debug)]
#[template(path = "bulk_done.html")]
pub(crate) struct BulkDone {
    title: String,
    assets: &'static AssetUrls,
    deleted: Vec<String>,
    failed: Vec<Failure>,
}

impl BulkDone {
    /// The report of `deleted` and `failed`.
    pub(crate) fn new(deleted: Vec<String>, failed: Vec<Failure>) -> Self {
        let title = if failed.is_empty() {
            format!("Deleted {} sessions", deleted.len())
        } else {
            format!("{} of the sessions could not be deleted", failed.len())
        };
        Self {
            title,
            assets: &URLS,
            deleted,
            failed,
        }
    }
}
