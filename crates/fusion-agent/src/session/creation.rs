//! What a session starts with when one of its writes creates it: the metadata the builder
//! was given (owner, title, tags, data) and the title its [`TitlePolicy`] derives, stored
//! in that same write ([`ConversationStorage::create_session`]), so nobody ever sees the
//! session without them. A session that already exists keeps its own metadata: resuming
//! never rewrites it.
//!
//! With an owner, the session's storage is an [`OwnerScope`]: every read and write sees
//! only that owner's sessions, and a session the scope creates gets the owner in the same
//! step as its first messages. Without one, a creation with metadata goes to
//! `create_session` and one without to the plain conditional write, so a user-written
//! backend that stores no metadata keeps working as long as nothing asks it to.

use std::sync::Arc;

use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, OwnerScope, Result, Role, SessionMeta,
};
use tracing::debug;

/// The longest title [`TitlePolicy::FirstUserMessage`] derives, in characters.
pub const AUTO_TITLE_CHARS: usize = 60;

/// Where the title of a session the agent creates comes from.
///
/// Applied only when the agent's first write creates the session, and never over a title
/// that is set (by [`SessionBuilder::title`](crate::SessionBuilder::title), or already
/// stored on a session that is resumed). On a backend that stores no metadata (a
/// user-written one with only the four methods of the product description), a session
/// with nothing but a derived title is created untitled rather than refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TitlePolicy {
    /// Only what [`SessionBuilder::title`](crate::SessionBuilder::title) sets (no title
    /// without it).
    #[default]
    AsGiven,
    /// The first user message of the session: its first non-blank line, white space
    /// collapsed, cut to [`AUTO_TITLE_CHARS`] characters (ending in `…` when cut).
    FirstUserMessage,
}

/// The title [`TitlePolicy::FirstUserMessage`] derives from a message's text, or `None`
/// when the text has nothing but white space.
///
/// ```
/// use fusion_agent::title_from_message;
///
/// assert_eq!(title_from_message("  Clean up\tthe logs \nin /var").as_deref(), Some("Clean up the logs"));
/// assert_eq!(title_from_message(&"ab ".repeat(40)).unwrap().chars().count(), 60);
/// assert_eq!(title_from_message(" \n "), None);
/// ```
pub fn title_from_message(text: &str) -> Option<String> {
    let line = text.lines().find(|line| !line.trim().is_empty())?;
    // Control characters (a tab) are not allowed in titles; any white space run becomes one
    // space, so a title reads the same in a one-line table.
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect();
    let title = words.join(" ");
    if title.chars().count() <= AUTO_TITLE_CHARS {
        return Some(title);
    }
    // Cut on a char boundary, one character short of the limit to make room for the mark.
    let cut: String = title.chars().take(AUTO_TITLE_CHARS - 1).collect();
    Some(format!("{}…", cut.trim_end()))
}

/// What a session created by the agent starts with; fixed by the builder, shared by forks.
#[derive(Clone)]
pub(super) struct Creation {
    /// Title, tags and data for a new session (the owner is the scope's).
    meta: SessionMeta,
    title: TitlePolicy,
    /// The owner's view of the storage, when the session has an owner.
    scope: Option<OwnerScope>,
}

impl Creation {
    /// Checks `meta` (and the owner) and, with an owner, wraps `storage` in its scope.
    /// Returns the storage every read and write of the session goes through.
    pub(super) fn new(
        storage: Arc<dyn ConversationStorage>,
        owner: Option<String>,
        meta: SessionMeta,
        title: TitlePolicy,
    ) -> Result<(Self, Arc<dyn ConversationStorage>)> {
        meta.validate()?;
        let scope = owner
            .map(|owner| OwnerScope::new(storage.clone(), owner)?.on_create(meta.clone()))
            .transpose()?;
        let storage = match &scope {
            Some(scope) => Arc::new(scope.clone()) as Arc<dyn ConversationStorage>,
            None => storage,
        };
        Ok((Self { meta, title, scope }, storage))
    }

    /// The owner the session is scoped to, if any.
    pub(super) fn owner(&self) -> Option<&str> {
        self.scope.as_ref().map(OwnerScope::owner)
    }

    /// The metadata of a session created holding `messages`: the builder's, titled by the
    /// policy when no title was given.
    pub(super) fn meta_for(&self, messages: &[ChatMessage]) -> SessionMeta {
        let mut meta = self.meta.clone();
        if meta.title.is_none() && self.title == TitlePolicy::FirstUserMessage {
            meta.title = messages
                .iter()
                .find(|message| message.role == Role::User)
                .and_then(|message| title_from_message(&message.content));
        }
        meta
    }

    /// Writes `change` to session `id` of `storage` (the storage [`new`](Self::new)
    /// returned) if it meets `expected`. A write that expects no session creates it, in
    /// the same step, with `inherited` metadata (a fork's) or else with
    /// [`meta_for`](Self::meta_for) its messages; any other is a plain
    /// [`ConversationStorage::write_if`], and costs nothing more.
    pub(super) async fn write(
        &self,
        storage: &dyn ConversationStorage,
        id: &str,
        expected: Expect,
        change: Change<'_>,
        inherited: Option<&SessionMeta>,
    ) -> Result<u64> {
        let creates = expected.generation() == 0;
        let messages = change.messages();
        if !creates || messages.is_empty() {
            return storage.write_if(id, expected, change).await;
        }
        let meta = inherited
            .cloned()
            .unwrap_or_else(|| self.meta_for(messages));
        if let Some(scope) = &self.scope {
            // The scope's conditional write keeps its verdicts (another owner's session is
            // `NotOwner`, not a conflict to retry) and creates with its owner and `meta`.
            return scope
                .clone()
                .on_create(meta)?
                .write_if(id, expected, change)
                .await;
        }
        if meta.is_empty() {
            return storage.write_if(id, expected, change).await;
        }
        // `create_session` refuses an existing session with a conflict, as the conditional
        // write it stands in for would.
        match storage.create_session(id, &meta, messages).await {
            // A title the policy derived is a nicety: on a backend that stores no metadata
            // the session is created without it. Metadata the application gave is not
            // dropped silently: that error stands.
            Err(Error::Unsupported { backend, .. })
                if inherited.is_none() && self.meta.is_empty() =>
            {
                debug!(
                    session_id = id,
                    backend, "the backend stores no titles; creating the session untitled"
                );
                storage.write_if(id, expected, change).await
            }
            result => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_title_is_one_line_cut_on_a_char_boundary() {
        assert_eq!(title_from_message("hi").as_deref(), Some("hi"));
        assert_eq!(
            title_from_message("\n\n  second\u{7}line  \nthird").as_deref(),
            Some("second line")
        );
        let long = "ü".repeat(100);
        let title = title_from_message(&long).unwrap();
        assert_eq!(title.chars().count(), AUTO_TITLE_CHARS);
        assert!(title.ends_with('…'));
        SessionMeta::new().title(title).validate().unwrap();
        let exact = "x".repeat(AUTO_TITLE_CHARS);
        assert_eq!(title_from_message(&exact), Some(exact));
        assert_eq!(title_from_message(""), None);
    }

    #[test]
    fn the_policy_titles_from_the_first_user_message_unless_a_title_is_given() {
        let storage: Arc<dyn ConversationStorage> =
            Arc::new(fusion_storage_memory::InMemoryStorage::new());
        let opening = [
            ChatMessage::system("be brief"),
            ChatMessage::user("What is in /tmp?"),
        ];
        let (auto, _) = Creation::new(
            storage.clone(),
            None,
            SessionMeta::new().tags(["t"]),
            TitlePolicy::FirstUserMessage,
        )
        .unwrap();
        let meta = auto.meta_for(&opening);
        assert_eq!(meta.title.as_deref(), Some("What is in /tmp?"));
        assert_eq!(meta.tags, ["t"]);
        assert_eq!(auto.meta_for(&opening[..1]).title, None);

        let (given, _) = Creation::new(
            storage.clone(),
            None,
            SessionMeta::new().title("Mine"),
            TitlePolicy::FirstUserMessage,
        )
        .unwrap();
        assert_eq!(given.meta_for(&opening).title.as_deref(), Some("Mine"));
        let (plain, _) =
            Creation::new(storage, None, SessionMeta::new(), TitlePolicy::AsGiven).unwrap();
        assert!(plain.meta_for(&opening).is_empty());
    }
}
