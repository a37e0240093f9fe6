//! Conversation storage: the [`ConversationStorage`] trait and the backends compiled in.
//!
//! Pick a backend by value with [`StorageType`] (or a URL), or construct one directly when
//! you need its options. Implement [`ConversationStorage`] to bring your own.

#[doc(inline)]
pub use crate::storage_type::StorageType;
#[doc(inline)]
pub use fusion_core::{ConversationStorage, SessionInfo};

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
#[doc(inline)]
pub use fusion_storage_memory::InMemoryStorage;

#[cfg(feature = "fs")]
#[cfg_attr(docsrs, doc(cfg(feature = "fs")))]
#[doc(inline)]
pub use fusion_storage_fs::FileSystemStorage;

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
#[doc(inline)]
pub use fusion_storage_sqlite::SqliteStorage;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use fusion_storage_redis::RedisStorage;

/// Opens the storage `storage_type` names; see [`StorageType::open`].
pub async fn open(
    storage_type: &StorageType,
) -> fusion_core::Result<std::sync::Arc<dyn ConversationStorage>> {
    storage_type.open().await
}
