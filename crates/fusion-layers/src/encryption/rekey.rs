//! Re-encryption in place: every message of a session (or of a store) not yet under the
//! current key — under an older key, or in clear text — is rewritten under it.
//!
//! A rewrite is conditional: the session is read with its revision and replaced only if
//! it still has that generation *and* length, so neither a rewrite nor an append that
//! happens in between is lost (an append keeps the generation, so the generation alone
//! would not see it). On a conflict the session is read again, a few times.

use std::sync::Arc;

use fusion_core::{Change, ChatMessage, ConversationStorage, Error, Expect, Result};

use super::envelope::{Codec, SessionCrypt, Stored};
use super::reading::as_rekey;

/// How often a session that keeps changing is read again before the conflict is returned.
const ATTEMPTS: usize = 5;

/// What a rekey did. Counts add up over sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rekeyed {
    /// Sessions read.
    pub sessions: usize,
    /// Sessions rewritten: those holding at least one message not under the current key.
    pub rewritten: usize,
    /// Messages re-encrypted from an older key to the current one.
    pub reencrypted: usize,
    /// Messages that were clear text and are now encrypted.
    pub encrypted: usize,
}

impl Rekeyed {
    fn add(&mut self, other: Rekeyed) {
        self.sessions += other.sessions;
        self.rewritten += other.rewritten;
        self.reencrypted += other.reencrypted;
        self.encrypted += other.encrypted;
    }
}

/// Whether a rekey writes what it re-encrypts, or only counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Rewrite each session that needs it.
    Write,
    /// Read and decrypt as a rewrite would, write nothing.
    DryRun,
}

/// Rekeys `session_id` of the raw (not encrypting) `storage`.
pub(crate) async fn rekey_session(
    codec: &Arc<Codec>,
    storage: &dyn ConversationStorage,
    session_id: &str,
    mode: Mode,
) -> Result<Rekeyed> {
    let current = current_key_id(codec)?;
    let mut attempt = 1;
    loop {
        match rekey_once(codec, current, storage, session_id, mode).await {
            Err(Error::Conflict { .. }) if attempt < ATTEMPTS => attempt += 1,
            outcome => return outcome,
        }
    }
}

/// Rekeys every session of the raw `storage`, one after the other; stops at the first
/// session that fails (a rerun skips what is already done).
pub(crate) async fn rekey_store(
    codec: &Arc<Codec>,
    storage: &dyn ConversationStorage,
    mode: Mode,
) -> Result<Rekeyed> {
    // Checked before listing, so a store with no sessions still says a key is needed.
    current_key_id(codec)?;
    let mut total = Rekeyed::default();
    for session_id in storage.list_sessions().await? {
        let done = rekey_session(codec, storage, &session_id, mode).await;
        total.add(done.map_err(|err| stopped_at(err, &session_id, total.sessions))?);
    }
    Ok(total)
}

/// The error `err` of `session_id`, where a store's rekey stopped after `before` sessions,
/// saying so when it does not already: a backend's error (a connection dropped midway)
/// names no session, and the counts of what was done are lost with the `Ok`. The note goes
/// into its message ([`Error::push_note`]), as the retry layer's count of attempts does.
/// The other errors a rekey meets name their session.
fn stopped_at(mut err: Error, session_id: &str, before: usize) -> Error {
    if matches!(err, Error::Backend { .. }) {
        let sessions = if before == 1 { "session" } else { "sessions" };
        err.push_note(&format!(
            " (the rekey stopped at session \"{session_id}\", after {before} other \
             {sessions}; run it again to go on: it skips what is done)"
        ));
    }
    err
}

/// The id of the key a rekey writes with; a layer without keys has none to write with.
fn current_key_id(codec: &Codec) -> Result<&str> {
    match &codec.keys {
        Some(keys) => Ok(keys.current_id()),
        None => Err(Error::Config(
            "a rekey encrypts with the current key, and this encryption layer has no keys; \
             load one (FUSION_ENCRYPTION_KEY or a key file)"
                .into(),
        )),
    }
}

async fn rekey_once(
    codec: &Arc<Codec>,
    current: &str,
    storage: &dyn ConversationStorage,
    session_id: &str,
    mode: Mode,
) -> Result<Rekeyed> {
    // Marked as a rekey's read: a storage through a layer holding one of the rekey's keys
    // refuses it (see `reading`), where it would hand every message over decrypted.
    let (stored, revision) = as_rekey(codec, storage.load_revision(session_id)).await?;
    if !revision.exists() {
        return Ok(Rekeyed::default());
    }
    let mut crypt = SessionCrypt::new(codec, storage.backend_name(), session_id);
    let mut done = Rekeyed {
        sessions: 1,
        ..Rekeyed::default()
    };
    let mut rewritten = Vec::with_capacity(stored.len());
    // The last message already under the current key, which the key must open before
    // anything else is re-encrypted with it (see `check_current_key`).
    let mut under_current = None;
    for (index, message) in stored.into_iter().enumerate() {
        match Stored::of(&message) {
            Stored::V1 { key_id, .. } if key_id == current => {
                under_current = Some(index);
                rewritten.push(message);
            }
            Stored::Clear => {
                done.encrypted += 1;
                rewritten.push(crypt.seal(index, &message)?);
            }
            Stored::V1 { .. } | Stored::Unreadable(_) => {
                done.reencrypted += 1;
                let stored_id = message.id.clone();
                let plain = crypt.open(index, message)?;
                rewritten.push(crypt.reseal(index, &plain, stored_id)?);
            }
        }
    }
    // Checked also where nothing is to be rewritten (one decryption): a rerun after an
    // interrupted rekey meets the sessions it finished first, as the store lists them, so
    // a key file that gives the current id other bytes is refused there, before it seals
    // a session the first run did not reach.
    if let Some(index) = under_current {
        let place = (storage.backend_name(), session_id);
        check_current_key(&mut crypt, place, current, index, &rewritten[index])?;
    }
    if done.encrypted + done.reencrypted == 0 {
        return Ok(done);
    }
    if mode == Mode::DryRun {
        done.rewritten = 1;
        return Ok(done);
    }
    storage
        .write_if(
            session_id,
            Expect::Exactly(revision),
            Change::Rewrite(&rewritten),
        )
        .await?;
    done.rewritten = 1;
    Ok(done)
}

/// Fails unless the current key opens `stored`, message `index` of the session, which is
/// already under the current key's id.
///
/// A key id names one key for good, but nothing stops a key file from giving an id other
/// bytes (a typo, the wrong file). Re-encrypting the session's other messages with those
/// bytes would leave it under two different keys both named `current`, which no set of
/// loaded keys could read whole. One message is enough to tell: every session key derives
/// from the same master key.
fn check_current_key(
    crypt: &mut SessionCrypt<'_>,
    (backend, session_id): (&str, &str),
    current: &str,
    index: usize,
    stored: &ChatMessage,
) -> Result<()> {
    match crypt.open(index, stored.clone()) {
        Ok(_) => Ok(()),
        // Counted from 1 with the index beside it, as every error naming a stored
        // message: a bare index reads as a count to a person.
        Err(Error::Corrupt { .. }) => Err(Error::Config(format!(
            "{backend}: session \"{session_id}\": the key loaded as \"{current}\" does not open message \
             {} (index {index}), which is stored under \"{current}\" too, so it is not the key \
             that wrote it (or that message was altered). Nothing was re-encrypted: doing so \
             would leave the session under two different keys named \"{current}\". Check the \
             key given as \"{current}\"",
            index + 1
        ))),
        Err(other) => Err(other),
    }
}
