//! The rekey reading on this thread, if any, so that a storage *through* an encryption
//! layer can tell that a rekey was handed it in place of the storage under the layer, and
//! refuse the read.
//!
//! Such a rekey meets every message decrypted and takes it for clear text: a dry run
//! counted each one as a message to encrypt, and a real run's write is refused only
//! because the layer it writes through opens what the rekey sealed (its current key), which
//! a layer holding only the rekey's older keys does not: that one sealed every message a
//! second time. The storage under the layer cannot be told from the one through it by what
//! it returns, and the storage trait says nothing of the layers a storage is made of, so
//! the rekey marks its reads instead: each poll of a rekey's read runs with the rekey's
//! keys in a thread-local, and an encrypting storage whose `load` or `load_revision` is
//! polled inside it and holds one of those keys refuses. The mark lasts one poll, so a
//! future polled beside the rekey's read in the same task (a `join!`, a `select!`) is not
//! taken for it.
//!
//! What this does not see: a read that a user-written layer between the rekey and the
//! encrypting storage runs on another task or thread (it spawns it), and a read such a layer
//! shares between callers (one future, polled by whichever caller comes first, so the mark
//! or its absence is the first caller's). There a dry run counts every message as clear
//! text, and a real run's write is refused only by a layer holding the rekey's current
//! key (the own-stored-form check): one holding only older keys seals every message again.
//! And what it sees beyond the rekey's read: a read through such a layer that the storage
//! given to the rekey itself polls inside its read (for another purpose) is refused too.
//!
//! Nothing sounder is at hand. What a read returns cannot tell the two storages apart
//! (messages read decrypted are what the storage under the layer returns for a session
//! written in clear text before encryption was turned on); a tokio task-local is lost across a spawn as a thread-local is, and binds the
//! layer to one runtime; and the write cannot be checked instead, since the write a rekey
//! makes through a layer holding only older keys is, to that layer, an ordinary write of
//! text that happens to look encrypted (a layer with keys stores such text, sealed).

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use fusion_core::{Error, Result, SessionId};

use super::envelope::Codec;
use super::keys::KEY_LEN;

thread_local! {
    /// The codec of the rekey whose read is being polled on this thread.
    static REKEY_READING: Cell<Option<Arc<Codec>>> = const { Cell::new(None) };
}

/// Awaits `read`, a rekey's read of the storage it was given, each poll with `codec`
/// marked as the rekey reading on this thread.
pub(crate) async fn as_rekey<T>(codec: &Arc<Codec>, read: impl Future<Output = T>) -> T {
    let mut read = std::pin::pin!(read);
    std::future::poll_fn(|cx| {
        let _marked = Marked::set(codec);
        read.as_mut().poll(cx)
    })
    .await
}

/// The mark of a rekey's read on this thread, for one poll; the mark it replaced (a rekey
/// run inside another's read, improbable) comes back when it drops, a panic included.
struct Marked(Option<Arc<Codec>>);

impl Marked {
    fn set(codec: &Arc<Codec>) -> Self {
        Self(REKEY_READING.with(|cell| cell.replace(Some(Arc::clone(codec)))))
    }
}

impl Drop for Marked {
    fn drop(&mut self) {
        let before = self.0.take();
        REKEY_READING.with(|cell| cell.set(before));
    }
}

/// Refuses a read of `session_id` through the encrypting storage whose codec is `codec`
/// (on `backend`) while a rekey holding one of its keys reads on this thread: that rekey
/// was handed the storage through the layer rather than the one under it.
pub(crate) fn refuse_rekey_through(
    codec: &Codec,
    backend: &'static str,
    session_id: &str,
) -> Result<()> {
    let shared = REKEY_READING.with(|cell| {
        let rekey = cell.take();
        let shared = rekey.as_deref().and_then(|rekey| shared_key(rekey, codec));
        cell.set(rekey);
        shared
    });
    let Some(key_id) = shared else {
        return Ok(());
    };
    // The id is not checked yet (the backend under the layer checks it, and is not
    // reached): an invalid one is refused as such, never written into this message as given.
    SessionId::validate(session_id)?;
    Err(Error::Config(format!(
        "{backend}: session \"{session_id}\": a rekey was given the storage through an \
         encryption layer that holds its key \"{key_id}\", so it would read every message \
         decrypted and take it for clear text (a dry run counting it as such, a rekey sealing \
         it again); nothing was read or written: give the rekey the storage under the \
         encryption layer"
    )))
}

/// The id of a key both codecs hold, the same bytes under the same id.
fn shared_key(rekey: &Codec, layer: &Codec) -> Option<String> {
    let (rekey, layer) = (rekey.keys.as_ref()?, layer.keys.as_ref()?);
    let held =
        |id: &str| matches!((rekey.key(id), layer.key(id)), (Some(a), Some(b)) if same(a, b));
    rekey.ids().find(|id| held(id)).map(str::to_owned)
}

/// Whether two keys are equal, looking at every byte whatever the first difference.
fn same(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    a.iter().zip(b).fold(0, |differ, (x, y)| differ | (x ^ y)) == 0
}
