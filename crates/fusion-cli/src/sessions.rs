//! `fusion sessions ...`: show, delete, export and import stored sessions (`list` is in
//! `listing`, `tag`, `retitle` and `set-owner` in `meta`).
//!
//! Every command validates a session id before touching storage, so `../x` is refused
//! with the same message whatever the backend. Data (tables, transcripts, exports) goes to
//! stdout; a missing session is an error, not an empty result, so a typo in a script fails
//! loudly instead of exporting nothing.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use fusion::SessionId;
use fusion::api::export;
use fusion::storage::{
    Change, ConversationStorage, Expect, Expiry, Revision, SessionInfo, SessionMeta, SessionTimes,
    session_id_from_file_name,
};

use crate::store::{Store, Views};
use crate::{ExportFormat, files, meta, render};

/// `sessions show ID`: the metadata and the readable transcript.
pub async fn show(store: &Store, id: &str) -> Result<()> {
    let (info, messages) = load_existing(store, id, true).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(render::transcript(id, info.as_ref(), &messages).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `sessions delete ID`.
///
/// On the storage itself, without the encryption layer: neither call reads a message, so a
/// session is deleted alike with or without its key. A storage that does not exist (a
/// SQLite file, a PostgreSQL schema) holds no session, and is not created to find that out.
///
/// With `force`, a session whose facts cannot be read (a damaged metadata file, say) is
/// deleted all the same: that is when deleting it is most wanted, and the delete itself
/// reads none of them.
pub async fn delete(store: &Store, id: &str, force: bool) -> Result<()> {
    SessionId::validate(id)?;
    let storage = store.open_raw_if_exists().await?;
    let found = match &storage {
        Some(storage) => storage.session_info(id).await,
        None => Ok(None),
    };
    let said = match found {
        Ok(Some(info)) => format!(
            "deleted session {id} ({})",
            render::plural(info.message_count, "message")
        ),
        Ok(None) if force => format!("session {id} did not exist"),
        Ok(None) => bail!("session \"{id}\" not found in {store}"),
        Err(err) if force => format!(
            "deleted session {id} (its facts could not be read: {})",
            crate::one_line(&err.into())
        ),
        Err(err) => {
            return Err(anyhow::Error::from(err).context(format!(
                "cannot read session \"{id}\" in {store} (pass --force to delete it anyway)"
            )));
        }
    };
    if let Some(storage) = storage {
        storage
            .delete(id)
            .await
            .with_context(|| format!("cannot delete session \"{id}\" in {store}"))?;
    }
    render::say(said)?;
    Ok(())
}

/// `sessions export ID`: json, jsonl or markdown to stdout or a file.
///
/// A file is written whole or not at all: a new one (an existing file is refused, so a
/// mistyped name never overwrites a session file or anything else), or with `force` a
/// temporary file beside it renamed over it.
pub async fn export(
    store: &Store,
    id: &str,
    format: ExportFormat,
    output: Option<&Path>,
    force: bool,
) -> Result<()> {
    let (info, messages) = load_existing(store, id, false).await?;
    // A storage that keeps no facts (a user-written one) exports the id and messages.
    let info = info.unwrap_or_else(|| SessionInfo::new(id, messages.len()));
    let format = match format {
        ExportFormat::Json => export::ExportFormat::Json,
        ExportFormat::Jsonl => export::ExportFormat::Jsonl,
        ExportFormat::Markdown => export::ExportFormat::Markdown,
    };
    let text = export::write_session(format, &info, &messages)
        .with_context(|| format!("cannot export session \"{id}\""))?;
    match output {
        Some(path) => {
            files::write(path, text.as_bytes(), force)
                .with_context(|| format!("cannot write {}", path.display()))?;
            // On stderr: the file may be stdout itself (`-o /dev/stdout`), whose reader
            // takes the export and nothing else.
            render::note(format_args!(
                "exported session {id} ({}) to {}",
                render::plural(messages.len(), "message"),
                path.display()
            ));
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

/// `sessions import FILE`: creates (or with `replace`, overwrites) a session from an export.
pub async fn import(store: &Store, file: &Path, id: Option<&str>, replace: bool) -> Result<()> {
    let from_stdin = file == Path::new("-");
    let text = if from_stdin {
        files::read_import(std::io::stdin().lock()).context("cannot read the import from stdin")?
    } else {
        files::read_import_file(file)
            .with_context(|| format!("cannot read import file {}", file.display()))?
    };
    let imported =
        export::read(&text).with_context(|| format!("cannot import {}", file.display()))?;
    if let Some(expired) = expired(&imported) {
        // Stored as it is, the session would be gone for every reader at once.
        bail!(
            "cannot import {}: {expired}; remove \"expiry\" from its \"meta\" to import it",
            file.display(),
        );
    }

    // A jsonl file carries no id, so the file name (`user-1.jsonl`) is the natural default;
    // a file copied out of an fs sessions directory is named by the encoded id
    // (`%41lice.jsonl`, `+base32...jsonl` for long ids), which names the id it holds.
    let file_id = (!from_stdin).then(|| id_from_file_name(file)).flatten();
    let Some(id) = id.or(imported.id.as_deref()).or(file_id.as_deref()) else {
        bail!("the import has no session id; pass --id ID");
    };
    SessionId::validate(id).context("pass --id with a valid session id")?;
    // A session file copied out of an encrypted store holds its messages sealed. They are
    // opened as a load would open them (with the key, as the session they were written
    // in), so the store seals their text afresh: written as they are, the ciphertext
    // itself would be sealed, and load back in place of the text. The session they were
    // written in is the one the file names (`alice.jsonl` imported `--id alice-copy`),
    // else the one they are imported as.
    let written_in = imported.id.as_deref().or(file_id.as_deref()).unwrap_or(id);
    let encryption = store.encryption();
    let imported_messages = encryption
        .open_stored("import", written_in, imported.messages.clone())
        .or_else(|err| match written_in == id {
            true => Err(err),
            false => encryption.open_stored("import", id, imported.messages.clone()),
        })
        .with_context(|| {
            format!(
                "cannot import {}: it holds messages sealed by an encrypted store (a session \
                 file copied out of one), which open only with that store's key and as the \
                 session they were written in (named by the file, {written_in:?}, or the \
                 --id given)",
                file.display()
            )
        })?;

    if store.ephemeral() {
        bail!("{store} keeps nothing after this command; import into a storage that persists");
    }
    let views = store.open_views(false).await?;
    let storage = views.storage.as_ref();
    let messages = &imported_messages;
    let count = render::plural(messages.len(), "message");
    if replace {
        // An explicit overwrite: whatever the session holds now is what the user asked
        // to replace, so there is nothing to compare against.
        let existed = replace_session(&views, id, &imported, messages).await?;
        let verb = if existed { "replaced" } else { "imported" };
        render::say(format_args!("{verb} session {id} ({count})"))?;
        return Ok(());
    }
    // Create-only in one atomic step: a check followed by a save would overwrite a session
    // another writer created in between.
    match create_exactly(&views, id, &imported.meta, imported.times, messages).await {
        Ok(_) => {
            render::say(format_args!("imported session {id} ({count})"))?;
            Ok(())
        }
        Err(fusion::Error::Conflict { .. }) => {
            let held = match storage.session_info(id).await {
                Ok(Some(info)) => format!(" ({})", render::plural(info.message_count, "message")),
                // It went away again, or cannot be read: the refusal still stands.
                _ => String::new(),
            };
            bail!(
                "session \"{id}\" already exists in {store}{held}; pass --replace to overwrite it"
            )
        }
        Err(err) => Err(err).with_context(|| format!("cannot save session \"{id}\"")),
    }
}

/// Why `imported` would be gone for every reader as soon as it is stored, if it would:
/// an expiry instant that has passed, or an idle expiry that ran out after the last write
/// the export records (the session keeps that time when it is imported).
fn expired(imported: &export::Imported) -> Option<String> {
    let now = SystemTime::now();
    match (imported.meta.expiry?, imported.times) {
        (Expiry::At(at), _) if at <= now => Some(format!(
            "its expiry ({}) has passed",
            crate::time::rfc3339(at)
        )),
        (Expiry::Idle(span), Some(times)) if times.updated_at + span <= now => Some(format!(
            "its idle expiry ran out at {}, {} after its last write",
            crate::time::rfc3339(times.updated_at + span),
            crate::time::format_span(span)
        )),
        _ => None,
    }
}

/// Creates session `id` holding `messages` with `meta` and, when known, the times it had
/// where it came from, in one step that fails with [`fusion::Error::Conflict`] if it
/// exists. Without metadata or times it is the conditional write every backend has, so an
/// export without them imports anywhere.
pub async fn create(
    storage: &dyn ConversationStorage,
    id: &str,
    meta: &SessionMeta,
    times: Option<SessionTimes>,
    messages: &[fusion::ChatMessage],
) -> fusion::Result<u64> {
    match times {
        Some(times) => {
            storage
                .create_session_with_times(id, meta, messages, times)
                .await
        }
        None if meta.is_empty() => {
            storage
                .write_if(
                    id,
                    Expect::Exactly(Revision::ABSENT),
                    Change::Replace(messages),
                )
                .await
        }
        None => storage.create_session(id, meta, messages).await,
    }
}

/// How many times `import` creates a session whose write's reply was lost and that a
/// read after it finds absent.
const CREATE_ATTEMPTS: usize = 3;

/// [`create`] storing `messages` exactly as given: on the view without the retry layer,
/// which gives each message without an id one (`create_session` and its twin with times
/// go through it as an append does), else an export of such a session would import as
/// another history. A write whose reply was lost is settled as `migrate` settles one
/// (unless retries are off): the session read back holds these messages if it applied,
/// and is created again if it is absent; another writer's session there is a conflict.
async fn create_exactly(
    views: &Views,
    id: &str,
    meta: &SessionMeta,
    times: Option<SessionTimes>,
    messages: &[fusion::ChatMessage],
) -> fusion::Result<u64> {
    let mut attempt = 1;
    loop {
        let lost = match create(views.unretried.as_ref(), id, meta, times, messages).await {
            Err(err @ fusion::Error::Conflict { .. }) => return Err(err),
            Err(err) if views.retries() && err.is_retryable() => err,
            done => return done,
        };
        let Ok((held, revision)) = views.storage.load_revision(id).await else {
            return Err(lost);
        };
        if revision != Revision::ABSENT && held.starts_with(messages) {
            return Ok(revision.generation);
        }
        if revision != Revision::ABSENT {
            // Another writer's session: what a creation that met it says.
            let absent = Expect::Exactly(Revision::ABSENT);
            let backend = views.storage.backend_name();
            return Err(absent.conflict(backend, id, revision.generation, Some(revision.len)));
        }
        if attempt == CREATE_ATTEMPTS {
            return Err(lost);
        }
        attempt += 1;
    }
}

/// `import --replace`: session `id` ends up holding `messages`, and the export's metadata
/// too when it has any (an export without metadata leaves the session's own). A session
/// that did not exist gets the export's times; one replaced keeps its own creation, and
/// the replacement is its last write. Returns whether the session existed.
async fn replace_session(
    views: &Views,
    id: &str,
    imported: &export::Imported,
    messages: &[fusion::ChatMessage],
) -> Result<bool> {
    let storage = views.storage.as_ref();
    let context = || format!("cannot save session \"{id}\"");
    let meta = &imported.meta;
    // A new session gets its metadata and times with its messages, in one step.
    if !meta.is_empty() || imported.times.is_some() {
        match create_exactly(views, id, meta, imported.times, messages).await {
            Ok(_) => return Ok(false),
            Err(fusion::Error::Conflict { .. }) => {}
            Err(err) => return Err(err).with_context(context),
        }
    }
    let current = storage
        .session_info(id)
        .await
        .with_context(|| format!("cannot read session \"{id}\""))?;
    storage.save(id, messages).await.with_context(context)?;
    if !meta.is_empty() {
        let current = current.as_ref().map(|info| info.meta.clone());
        let update = meta::overwrite(&current.unwrap_or_default(), meta);
        storage
            .update_session(id, &update)
            .await
            .with_context(|| format!("cannot set the metadata of session \"{id}\""))?;
    }
    Ok(current.is_some())
}

/// The session id a file's name gives: the id an fs-backend session file is named after
/// (decoded), else the plain stem (`user-1` for `user-1.jsonl`, `export` for `export.json`).
fn id_from_file_name(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    session_id_from_file_name(name).or_else(|| Some(file.file_stem()?.to_str()?.to_string()))
}

/// Loads session `id` and what storage knows of it, failing when it has no messages (a
/// session that does not exist). With `without_damaged_facts`, facts that cannot be read
/// (a file-system session's damaged metadata file, say) are left out with a warning
/// rather than keep its messages from being shown; an export, which would silently lose
/// the owner, title and tags, fails instead, with the error saying how to keep them.
async fn load_existing(
    store: &Store,
    id: &str,
    without_damaged_facts: bool,
) -> Result<(Option<SessionInfo>, Vec<fusion::ChatMessage>)> {
    SessionId::validate(id)?;
    let storage = store.open_existing().await?;
    let (info, damaged) = match storage.session_info(id).await {
        Ok(info) => (info, None),
        Err(err @ fusion::Error::Corrupt { .. }) if without_damaged_facts => (None, Some(err)),
        Err(err) => return Err(err).with_context(|| format!("cannot read session \"{id}\"")),
    };
    let messages = storage
        .load(id)
        .await
        .with_context(|| format!("cannot load session \"{id}\""))?;
    // Said only once the messages loaded: damage the load met too is its error alone.
    if let Some(err) = damaged {
        eprintln!("warning: {err}; going on without the session's metadata");
    }
    if messages.is_empty() {
        bail!("session \"{id}\" not found in {store}");
    }
    Ok((info, messages))
}
