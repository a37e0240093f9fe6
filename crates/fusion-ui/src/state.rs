//! What every page handler shares: the storage it reads and deletes from.

use std::sync::Arc;

use fusion::storage::ConversationStorage;

/// The state of the page routes.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The storage the UI shows, opened by the caller.
    pub storage: Arc<dyn ConversationStorage>,
}
