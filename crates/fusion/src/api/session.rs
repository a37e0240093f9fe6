//! Sessions: persistent multi-turn agent conversations, and the functions that manage them.
//!
//! [`create_session`] is the one-liner from the product description: it opens the named
//! storage, loads the session's history if it has one, and connects to the LLM configured
//! in the environment (`OPENAI_BASE_URL`, `OPENAI_API_KEY`, `FUSION_MODEL`). Use
//! [`SessionBuilder`] to choose the client, tools, system prompt or workspace roots in
//! code (including the session's owner, title and tags). The other functions list (a page
//! at a time: [`list_sessions_page`]), inspect, update and delete stored sessions on any
//! [`StorageType`], without an LLM.
//!
//! ```no_run
//! use fusion::api::session::{self, StorageType};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let mut session = session::create_session("user-123", StorageType::Memory).await?;
//! let result = session.send_message("What files are in /tmp?").await?;
//! let result = session.send_message("Delete the .txt files you just found").await?;
//! println!("{} ({} steps)", result.result, result.steps.len());
//! # Ok(()) }
//! ```

use fusion_core::{MetaUpdate, Result, SessionId, SessionPage, SessionQuery};

use crate::storage::SessionInfo;
// The product description imports `StorageType` from here; its home is `crate::storage`.
#[doc(no_inline)]
pub use crate::storage::StorageType;
// The design's public paths name the session types here too; their home is `crate::agent`.
#[doc(no_inline)]
pub use crate::agent::{AgentSession, SessionBuilder};

/// The environment variables that name an LLM for [`create_session`].
const LLM_ENV_VARS: [&str; 2] = ["OPENAI_API_KEY", "OPENAI_BASE_URL"];

/// Opens (or resumes) session `session_id` on `storage`, with the LLM from the environment.
///
/// The session's stored history is loaded, so a conversation continues across restarts.
/// Fails with [`Error::Config`](crate::Error::Config) when no LLM is configured (see
/// [`llm_configured`]).
pub async fn create_session(session_id: &str, storage: StorageType) -> Result<AgentSession> {
    SessionBuilder::new(session_id)
        .storage(storage)
        .build()
        .await
}

/// Whether the environment names an LLM for [`create_session`]: `OPENAI_API_KEY` or
/// `OPENAI_BASE_URL` is set to something other than blanks.
///
/// Without either, the client falls back to OpenAI's endpoint without a key, which can
/// only fail. An application can check this first and show its own setup help before it
/// opens any storage; other mistakes (a malformed URL, say) still surface from
/// [`create_session`] with their own message.
pub fn llm_configured() -> bool {
    names_llm(|var| std::env::var(var).ok())
}

/// [`llm_configured`] over any variable lookup, so tests need not touch the process
/// environment (mutating it is `unsafe` and races other threads).
fn names_llm(lookup: impl Fn(&str) -> Option<String>) -> bool {
    LLM_ENV_VARS
        .iter()
        .any(|var| lookup(var).is_some_and(|value| !value.trim().is_empty()))
}

/// The ids of every session stored in `storage`, sorted.
pub async fn list_all_sessions(storage: &StorageType) -> Result<Vec<String>> {
    let mut ids = storage.open().await?.list_sessions().await?;
    ids.sort();
    Ok(ids)
}

/// One page of the sessions in `storage` that `query` selects (an owner, a tag), newest
/// first unless the query orders by id; see
/// [`storage::list_sessions_page`](crate::storage::list_sessions_page), which does the
/// same on a storage that is already open.
///
/// ```no_run
/// use fusion::api::session::{self, StorageType};
/// use fusion::storage::SessionQuery;
///
/// # async fn demo() -> fusion::Result<()> {
/// let storage = StorageType::Sqlite("sqlite://sessions.db".into());
/// let page = session::list_sessions_page(&storage, &SessionQuery::new().owner("user-42").limit(20)).await?;
/// for info in &page.sessions {
///     println!("{}  {}", info.id, info.meta.title.as_deref().unwrap_or("(untitled)"));
/// }
/// if let Some(next) = page.next {
///     println!("more: pass the cursor {next}");
/// }
/// # Ok(()) }
/// ```
pub async fn list_sessions_page(
    storage: &StorageType,
    query: &SessionQuery,
) -> Result<SessionPage> {
    storage.open().await?.list_page(query).await
}

/// Changes the metadata of `session_id` in `storage` (title, tags, owner, data) in one
/// atomic step and returns the session's facts after it, or `None` if it does not exist.
pub async fn update_session(
    session_id: &str,
    update: &MetaUpdate,
    storage: &StorageType,
) -> Result<Option<SessionInfo>> {
    // Checked before opening: opening may create the database an invalid id never needs.
    SessionId::validate(session_id)?;
    storage
        .open()
        .await?
        .update_session(session_id, update)
        .await
}

/// Deletes session `session_id` from `storage`. Deleting an unknown session is not an error.
pub async fn delete_session(session_id: &str, storage: &StorageType) -> Result<()> {
    SessionId::validate(session_id)?;
    storage.open().await?.delete(session_id).await
}

/// Message count, timestamps and metadata of `session_id`, or `None` if it holds no
/// messages.
pub async fn session_info(session_id: &str, storage: &StorageType) -> Result<Option<SessionInfo>> {
    SessionId::validate(session_id)?;
    storage.open().await?.session_info(session_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An invalid id is refused before the storage is opened, so it leaves behind no
    /// database file that opening would have created.
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn an_invalid_id_is_refused_without_creating_the_storage() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sessions.db");
        let storage = StorageType::Sqlite(format!("sqlite://{}", file.display()));
        let invalid =
            |result: Result<_>| matches!(result, Err(crate::Error::InvalidSessionId { .. }));
        assert!(invalid(session_info("../x", &storage).await.map(drop)));
        let retitle = MetaUpdate::new().title(Some("t"));
        assert!(invalid(
            update_session("../x", &retitle, &storage).await.map(drop)
        ));
        assert!(invalid(delete_session("../x", &storage).await));
        assert!(!file.exists(), "opened for an id it then refused");
    }

    #[test]
    fn an_llm_is_named_by_a_key_or_a_base_url_that_is_not_blank() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(var, _)| *var == name)
                    .map(|(_, value)| value.to_string())
            }
        };
        assert!(!names_llm(env(&[])));
        assert!(!names_llm(env(&[
            ("OPENAI_API_KEY", "  "),
            ("OPENAI_BASE_URL", "")
        ])));
        assert!(!names_llm(env(&[("FUSION_MODEL", "llama3.1")])));
        assert!(names_llm(env(&[("OPENAI_API_KEY", "sk-test")])));
        assert!(names_llm(env(&[(
            "OPENAI_BASE_URL",
            "http://localhost:11434/v1"
        )])));
    }
}
