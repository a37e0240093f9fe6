//! The page that asks before a session is deleted; its form posts the deletion.

use askama::Template;
use fusion::storage::SessionInfo;

use crate::assets::{AssetUrls, URLS};

/// "Delete session X?" with the form that does it.
#[derive(Template, Debug)]
#[template(path = "delete.html")]
pub(crate) struct ConfirmDelete {
    title: String,
    assets: &'static AssetUrls,
    id: String,
    label: String,
    count: usize,
}

impl ConfirmDelete {
    /// The question for the session `info` describes.
    pub(crate) fn new(info: &SessionInfo) -> Self {
        Self {
            title: format!("Delete {}?", info.id),
            assets: &URLS,
            id: info.id.clone(),
            label: info.meta.title.clone().unwrap_or_else(|| info.id.clone()),
            count: info.message_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confirmation_posts_to_the_delete_route() {
        let html = ConfirmDelete::new(&SessionInfo::new("s:1", 4))
            .render()
            .unwrap();
        assert!(
            html.contains(r#"<form method="post" action="/sessions/s:1/delete""#),
            "{html}"
        );
        assert!(html.contains("its 4 messages"), "{html}");
    }
}
