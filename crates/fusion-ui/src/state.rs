//! What every page handler shares: the storage it reads and deletes from, the sessions
//! requests are changing, the chat's turns when the app has an agent, and the lock renames
//! take.

use std::sync::Arc;

use fusion::storage::ConversationStorage;

use crate::chat::Chats;
use crate::claims::Claims;

/// The state of the page routes.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The storage the UI shows, opened by the caller.
    pub storage: Arc<dyn ConversationStorage>,
    /// The sessions a request is starting a turn on, deleting or undoing.
    pub claims: Arc<Claims>,
    /// The chat, when the app was given an agent.
    pub chat: Option<Arc<Chats>>,
}
