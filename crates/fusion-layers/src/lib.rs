//! Layers for any Fusion storage ([`fusion_core::Layer`]): encryption at rest (feature
//! `encryption`), retries (feature `retry`) and observability (feature `observability`).

#[cfg(feature = "observability")]
#[cfg_attr(docsrs, doc(cfg(feature = "observability")))]
pub mod observability;
#[cfg(feature = "observability")]
#[cfg_attr(docsrs, doc(cfg(feature = "observability")))]
#[doc(inline)]
pub use observability::ObservabilityLayer;

#[cfg(feature = "encryption")]
#[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
pub mod encryption;
#[cfg(feature = "encryption")]
#[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
#[doc(inline)]
pub use encryption::{EncryptionKeys, EncryptionLayer};

#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub mod retry;
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
#[doc(inline)]
pub use retry::RetryLayer;
