//! A rekey of a whole store that stops midway (a connection dropped) says where it
//! stopped, which a backend's error does not.

#![cfg(feature = "encryption")]

mod common;

use std::sync::Arc;

use common::{Flaky, dropped};
use fusion_core::{ChatMessage, ConversationStorage, Error, Intercepted};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};

/// Found by a review: `rekey_store` stopped at the first session that failed and
/// returned its error as it was, so a backend's (`connection reset`) named neither the
/// session it stopped at nor how far it had gone, where a rerun is what goes on.
#[tokio::test]
async fn a_store_rekey_stopped_by_a_backend_error_names_the_session_it_stopped_at() {
    let flaky = Flaky::new(1, dropped);
    for session in ["a", "b"] {
        let message = ChatMessage::user(format!("clear text of {session}"));
        flaky.inner.append(session, &[message]).await.unwrap();
    }
    let store: Arc<dyn ConversationStorage> = Arc::new(Intercepted(flaky));
    let layer = EncryptionLayer::new(EncryptionKeys::new("k1", &[7; 32]).unwrap());
    let err = layer.rekey_store(store.as_ref()).await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(err.is_retryable(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("connection reset"), "{text}");
    // The first session listed, whose write failed.
    let first = &store.list_sessions().await.unwrap()[0];
    let stopped = format!("the rekey stopped at session \"{first}\", after 0 other sessions");
    assert!(text.contains(&stopped), "{text}");
    // Run again, it goes on and finishes.
    let done = layer.rekey_store(store.as_ref()).await.unwrap();
    assert_eq!((done.sessions, done.encrypted), (2, 2));
}
