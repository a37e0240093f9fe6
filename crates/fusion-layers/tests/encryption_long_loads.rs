//! Long encrypted histories, which the layer decrypts on several threads: a load returns
//! every message in order, and a message that does not decrypt fails the load naming the
//! earliest such message, wherever the runs of messages each thread takes begin.

#![cfg(feature = "encryption")]

use std::sync::Arc;

use fusion_core::{ChatMessage, ConversationStorage, Error, StorageExt};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_memory::InMemoryStorage;

const KEY: [u8; 32] = [0x3B; 32];

/// Enough messages for one run per core on any machine with up to 4 cores.
const LONG: usize = 4 * 1024 + 7;

fn stores() -> (Arc<InMemoryStorage>, Arc<dyn ConversationStorage>) {
    let raw = Arc::new(InMemoryStorage::new());
    let layer = EncryptionLayer::new(EncryptionKeys::new("k1", &KEY).unwrap());
    let encrypted = raw.clone().layer(layer);
    (raw, encrypted)
}

fn history(len: usize) -> Vec<ChatMessage> {
    (0..len)
        .map(|i| {
            if i % 2 == 0 {
                ChatMessage::user(format!("question {i}")).with_new_id()
            } else {
                ChatMessage::assistant(format!("answer {i}"))
            }
        })
        .collect()
}

#[tokio::test]
async fn a_long_history_loads_whole_and_in_order() {
    let (_, encrypted) = stores();
    let history = history(LONG);
    encrypted.save("long", &history).await.unwrap();
    assert_eq!(encrypted.load("long").await.unwrap(), history);
    let (loaded, revision) = encrypted.load_revision("long").await.unwrap();
    assert_eq!(loaded, history);
    assert_eq!(revision.len, LONG);
}

#[tokio::test]
async fn the_earliest_message_that_does_not_decrypt_is_the_one_reported() {
    let (raw, encrypted) = stores();
    encrypted.save("long", &history(LONG)).await.unwrap();
    let elsewhere: Vec<_> = (0..3)
        .map(|i| ChatMessage::user(format!("from elsewhere {i}")))
        .collect();
    encrypted.append("other", &elsewhere).await.unwrap();
    // Distinct messages, so their envelopes' ids differ: a write refuses two equal ids.
    let mut foreign = raw.load("other").await.unwrap().into_iter();

    // One bad message late in the history, then another earlier, in a different run of
    // messages when the load is split: each time the earliest is named.
    let mut stored = raw.load("long").await.unwrap();
    for bad in [LONG - 3, LONG / 2 + 1, 5] {
        stored[bad] = foreign.next().unwrap();
        raw.save("long", &stored).await.unwrap();
        let err = encrypted.load("long").await.unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { session_id, .. } if session_id == "long"),
            "{err:?}"
        );
        let text = err.to_string();
        // Counted from 1 with the index beside it, as a write's refused message is.
        let named = format!("message {} (index {bad}, key", bad + 1);
        assert!(text.contains(&named), "{text}");
    }
}
