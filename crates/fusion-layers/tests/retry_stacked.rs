//! Two retry layers, one over the other, say how many calls were made once.

mod common;

use std::sync::Arc;

use common::{Flaky, dropped};
use fusion_core::{ChatMessage, ConversationStorage, Intercepted, StorageExt};
use fusion_layers::RetryLayer;

/// Found by a review: each retry layer added its own "(after N attempts)", so a stack of
/// two said "(after 2 attempts) (after 3 attempts)", counting neither the calls made.
#[tokio::test]
async fn stacked_retry_layers_say_the_calls_made_once() {
    let flaky: Arc<dyn ConversationStorage> = Arc::new(Intercepted(Flaky::new(100, dropped)));
    let stacked = flaky
        .layer(RetryLayer::new().max_attempts(2))
        .layer(RetryLayer::new().max_attempts(3));
    let message = ChatMessage::user("hello");
    let err = stacked.append("s", &[message]).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.ends_with("connection reset (after 6 attempts)"),
        "{text}"
    );
    assert!(err.is_retryable(), "{err:?}");
}
