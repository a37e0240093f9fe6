//! What every page handler shares: the storage it reads and deletes from, and the chat's
//! turns when the app has an agent.

use std::sync::Arc;

use fusion::storage::ConversationStorage;

use crate::chat::Chats;

/// The state of the page routes.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The storage the UI shows, opened by the caller.
    pub storage: Arc<dyn ConversationStorage>,
    /// The chat, when the app was given an agent.
    pub chat: Option<Arc<Chats>>,
}
