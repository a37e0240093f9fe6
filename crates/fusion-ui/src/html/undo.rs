//! The page that asks before the last turn of a session is undone; its form posts the
//! undo with the revision the page was made from.

use askama::Template;
use fusion::storage::{Revision, SessionInfo};

use crate::assets::{AssetUrls, URLS};

/// "Undo the last turn of X?" with the form that does it.
#[derive(Template, Debug)]
#[template(path = "undo.html")]
pub(crate) struct ConfirmUndo {
    title: String,
    assets: &'static AssetUrls,
    id: String,
    label: String,
    revision: Revision,
    removed: usize,
    /// Messages after the turn that stay (another writer's, stored while it ran).
    kept: usize,
}

impl ConfirmUndo {
    /// The question for the session `info` describes, read at `revision`, whose last
    /// turn holds `removed` messages, followed by `kept` that stay.
    pub(crate) fn new(info: &SessionInfo, revision: Revision, removed: usize, kept: usize) -> Self {
        Self {
            title: format!("Undo the last turn of {}?", info.id),
            assets: &URLS,
            id: info.id.clone(),
            label: info.meta.title.clone().unwrap_or_else(|| info.id.clone()),
            revision,
            removed,
            kept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confirmation_carries_the_revision_it_was_made_from() {
        let revision = Revision {
            generation: 42,
            len: 5,
        };
        let html = ConfirmUndo::new(&SessionInfo::new("s:1", 5), revision, 3, 0)
            .render()
            .unwrap();
        assert!(html.contains(r#"action="/sessions/s:1/undo""#), "{html}");
        assert!(html.contains(r#"name="generation" value="42""#), "{html}");
        assert!(html.contains(r#"name="len" value="5""#), "{html}");
        assert!(html.contains("the last 3 messages"), "{html}");
    }
}
