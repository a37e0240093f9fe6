//! The page that asks before a session is deleted; its form posts the deletion.

use askama::Template;
use fusion::storage::Revision;

use super::bulk::Listed;
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
    /// Why the session's facts cannot be read, if they cannot.
    damage: Option<String>,
    /// The revision the page shows (none for a damaged session): the delete goes ahead
    /// only if the session is still exactly that.
    revision: Option<Revision>,
    /// When the session was last written, as the page read it (Unix microseconds): the
    /// delete goes ahead only if it was not written since, metadata included.
    updated: Option<i64>,
    /// Its title, owner, tags, data and expiry as the page read them
    /// ([`meta_digest`](super::bulk::meta_digest)): the delete goes ahead only if they are
    /// unchanged.
    meta: Option<u64>,
}

impl ConfirmDelete {
    /// The question for the session `session` describes, one that exists or is damaged.
    pub(crate) fn new(session: Listed) -> Self {
        Self {
            title: format!("Delete {}?", session.id),
            assets: &URLS,
            label: session.title.unwrap_or_else(|| session.id.clone()),
            id: session.id,
            count: session.count.unwrap_or_default(),
            damage: session.damage,
            revision: session.revision,
            updated: session.updated,
            meta: session.meta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusion::storage::SessionInfo;

    #[test]
    fn the_confirmation_posts_to_the_delete_route() {
        let mut info = SessionInfo::new("s:1", 4);
        info.generation = 42;
        info.updated_at = Some(fusion_core::from_unix_micros(1_700_000_000_123_456));
        let listed = Listed::read("s:1".into(), Ok(Some(info))).unwrap();
        let html = ConfirmDelete::new(listed).render().unwrap();
        assert!(
            html.contains(r#"<form method="post" action="/sessions/s:1/delete""#),
            "{html}"
        );
        assert!(html.contains("its 4 messages"), "{html}");
        assert!(html.contains(r#"name="generation" value="42""#), "{html}");
        assert!(html.contains(r#"name="len" value="4""#), "{html}");
        assert!(
            html.contains(r#"name="updated" value="1700000000123456""#),
            "{html}"
        );
        let meta = super::super::bulk::meta_digest(&fusion::storage::SessionMeta::new());
        assert!(
            html.contains(&format!(r#"name="meta" value="{meta}""#)),
            "{html}"
        );
    }

    #[test]
    fn a_damaged_session_is_asked_about_with_its_damage() {
        let damage = fusion::Error::corrupt("fs", "s:1", "its metadata file is not JSON");
        let listed = Listed::read("s:1".into(), Err(damage)).unwrap();
        let html = ConfirmDelete::new(listed).render().unwrap();
        assert!(html.contains("its metadata file is not JSON"), "{html}");
        assert!(!html.contains(r#"name="generation""#), "{html}");
        assert!(
            html.contains(r#"<form method="post" action="/sessions/s:1/delete""#),
            "{html}"
        );
        let unreachable = fusion::Error::Config("no server".into());
        assert!(Listed::read("s:1".into(), Err(unreachable)).is_err());
    }

    #[test]
    fn a_damaged_session_is_asked_about_without_the_secrets_its_damage_quotes() {
        // A storage of the caller's own may quote its URL in the damage it reports; the
        // storage failure's page hides it (16dc045), and so does this page.
        let damage = fusion::Error::corrupt(
            "custom",
            "s:1",
            "its row in redis://app:s3cret-1@db:6379/0 is not JSON (password=s3cret-2)",
        );
        let listed = Listed::read("s:1".into(), Err(damage)).unwrap();
        let html = ConfirmDelete::new(listed).render().unwrap();
        assert!(!html.contains("s3cret"), "{html}");
        assert!(html.contains("redis://app:***@db:6379/0"), "{html}");
    }
}
