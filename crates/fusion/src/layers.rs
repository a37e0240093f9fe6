//! Layers for any storage: the `fusion-layers` crate, whose public items all have their
//! one path here. [`EncryptionLayer`](crate::layers::encryption) (feature `encryption`)
//! encrypts every stored message; [`RetryLayer`](crate::layers::retry) (feature `retry`)
//! tries a failed call again, exactly once for appends;
//! [`ObservabilityLayer`](crate::layers::observability) (feature `observability`) traces
//! and measures every call. Each wraps any
//! [`ConversationStorage`](crate::storage::ConversationStorage), a user-written one too,
//! with [`StorageExt::layer`](crate::storage::StorageExt::layer); writing a layer of your
//! own is [`Intercept`](crate::storage::Intercept).

#[doc(inline)]
pub use fusion_layers::*;
