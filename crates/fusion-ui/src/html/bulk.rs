//! The pages of bulk delete: the list of selected sessions with the form that deletes
//! them, and the report of what was deleted and what failed.

use askama::Template;
use fusion::storage::SessionInfo;

use crate::assets::{AssetUrls, URLS};

/// One selected session as the confirmation lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub id: String,
    /// The title, when it has one.
    pub title: Option<String>,
    /// Its message count; `None` when nothing is stored under the id (already gone).
    pub count: Option<usize>,
}

impl Listed {
    /// Session `id`, described by `info` when it exists.
    pub(crate) fn new(id: String, info: Option<&SessionInfo>) -> Self {
        Self {
            id,
            title: info.and_then(|info| info.meta.title.clone()),
            count: info.map(|info| info.message_count),
        }
    }
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
