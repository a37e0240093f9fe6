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
use fusion::storage::{Change, Expect, SessionInfo, session_id_from_file_name};

use crate::store::{Store, Views};
use crate::{ExportFormat, copies, files, meta, render};

/// `sessions show ID`: the metadata and the readable transcript.
pub async fn show(store: &Store, id: &str) -> Result<()> {
    let (info, messages) = load_existing(store, id, true).await?;
    let mut out = render::stdout();
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

/// `sessions export ID`: json, jsonl or markdown to stdout (also `-o -`) or a file.
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
    // `-o -` is stdout, as `import -` reads stdin: a file named `-` in the working
    // directory is never what was meant (`-o ./-` still writes one).
    match output.filter(|path| *path != Path::new("-")) {
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
            let mut out = render::stdout();
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
    // What the errors call the import: `-` names no file.
    let source = match from_stdin {
        true => "from stdin".to_string(),
        false => file.display().to_string(),
    };
    // `read` refuses a file it would read only in part (a message field this release does
    // not know, a file-system session file ending inside a batch), naming what and where.
    let imported = export::read(&text)
        .map_err(|err| match err {
            // The library's words fit any text; stdin's say what an empty pipe usually means.
            export::ImportError::Empty if from_stdin => anyhow::anyhow!(
                "stdin held nothing (it ended before any message, or held only blanks); pipe \
                 a json or jsonl export into it, or name the file to import"
            ),
            err => err.into(),
        })
        .with_context(|| format!("cannot import {source}"))?;
    if let Some(expired) = expired(&imported) {
        // Stored as it is, the session would be gone for every reader at once.
        bail!(
            "cannot import {source}: {expired}; remove \"expiry\" from its \"meta\" to import it",
        );
    }

    // A jsonl file carries no id, so the file name (`user-1.jsonl`) is the natural default;
    // a file copied out of an fs sessions directory is named by the encoded id
    // (`%41lice.jsonl`, `+base32...jsonl` for long ids), which names the id it holds.
    let file_id = (!from_stdin).then(|| id_from_file_name(file)).flatten();
    // An invalid id is blamed on where it came from: only one not typed as --id is fixed
    // by passing --id.
    let (id, blame): (&str, fn(&str) -> String) =
        match (id, imported.id.as_deref(), file_id.as_deref()) {
            (Some(id), _, _) => (id, |_| "bad --id".into()),
            (None, Some(id), _) => (id, |id| {
                format!("the export's session id {id:?} is not valid; pass --id with a valid one")
            }),
            (None, None, Some(id)) => (id, |id| {
                format!(
                    "the file name gives the session id {id:?}, which is not valid; pass --id \
                     with a valid one"
                )
            }),
            (None, None, None) => bail!("the import has no session id; pass --id ID"),
        };
    SessionId::validate(id).with_context(|| blame(id))?;
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
                "cannot import {source}: it holds messages sealed by an encrypted store (a session \
                 file copied out of one), which open only with that store's key and as the \
                 session they were written in (named by the file, {written_in:?}, or the \
                 --id given)"
            )
        })?;

    if store.ephemeral() {
        bail!("{store} keeps nothing after this command; import into a storage that persists");
    }
    let views = store.open_views(false).await?;
    let said = write_import(
        store,
        &views,
        &source,
        id,
        &imported,
        &imported_messages,
        replace,
    )
    .await
    .map_err(|err| refused_message(err, &text, &source, from_stdin))?;
    render::say(said)?;
    Ok(())
}

/// `err`, the error of an import's write, but for a message the storage refused (a
/// message id written twice, metadata nested too deep), which the storage names by its
/// position in the write ("message 2 (index 1)"), not by its place in the file (its line
/// of a `jsonl` file counts blank lines too): named as the import of `source`, whose
/// text `text` (a file's, or stdin's when `from_stdin`) names its messages (`line 2`,
/// `message 2`).
fn refused_message(
    err: anyhow::Error,
    text: &str,
    source: &str,
    from_stdin: bool,
) -> anyhow::Error {
    let Some(fusion::Error::InvalidMessage {
        backend,
        index,
        detail,
        ..
    }) = err.downcast_ref::<fusion::Error>()
    else {
        return err;
    };
    let Some(place) = export::message_place(text, *index) else {
        return err;
    };
    // Stdin is no file to correct: its place is of what was piped in.
    let fix = match from_stdin {
        true => format!("correct {place} of the input to import it"),
        false => format!("correct {place} to import the file"),
    };
    anyhow::anyhow!(
        "cannot import {source}: {backend} refused to store {place} (nothing was stored): \
         {detail}; {fix}"
    )
}

/// Writes `imported`, whose messages opened are `messages`, to `views` (of `store`) as
/// session `id`, and says what it did. The import of `source` (a file's name, or "from
/// stdin") fails if its expiry ran out by the time it was written.
async fn write_import(
    store: &Store,
    views: &Views,
    source: &str,
    id: &str,
    imported: &export::Imported,
    messages: &[fusion::ChatMessage],
    replace: bool,
) -> Result<String> {
    let storage = views.storage.as_ref();
    let count = render::plural(messages.len(), "message");
    let verb = if replace {
        // An explicit overwrite: whatever the session holds now is what the user asked
        // to replace, so there is nothing to compare against.
        let existed = replace_session(store, views, source, id, imported, messages).await?;
        if existed { "replaced" } else { "imported" }
    } else {
        // Create-only in one atomic step: a check followed by a save would overwrite a
        // session another writer created in between.
        match copies::create_once(views, id, &imported.meta, imported.times, messages).await {
            Ok(_) => "imported",
            Err(fusion::Error::Conflict { .. }) => {
                let held = match storage.session_info(id).await {
                    Ok(Some(info)) => {
                        format!(" ({})", render::plural(info.message_count, "message"))
                    }
                    // It went away again, or cannot be read: the refusal still stands.
                    _ => String::new(),
                };
                bail!(
                    "session \"{id}\" already exists in {store}{held}; pass --replace to \
                     overwrite it"
                )
            }
            Err(err) => return Err(err).with_context(|| format!("cannot save session \"{id}\"")),
        }
    };
    // `expired` let it through, but the expiry ran out before the write, by the storage's
    // clock (ahead of this machine's, or the write was slow): the session is stored gone
    // for every reader. Said as the refusal says it, rather than "imported". A session
    // replaced (checked before, on the storage's clock as far as it could be read) went
    // with it, and the import is its last write, from which an idle expiry counts.
    if let Some(expiry) = imported.meta.expiry {
        let info = storage
            .session_info(id)
            .await
            .with_context(|| format!("cannot read session \"{id}\" back"))?;
        if info.is_none() {
            let (what, times) = match verb {
                "replaced" => (format!("session \"{id}\", replaced by it,"), None),
                _ => ("it".to_string(), imported.times),
            };
            bail!(
                "cannot import {source}: {what} was gone for every reader as soon as it was \
                 written, {}, by the clock of {store}; remove \"expiry\" from its \"meta\" to \
                 import it",
                copies::ran_out(expiry, times),
            );
        }
    }
    Ok(format!("{verb} session {id} ({count})"))
}

/// Why `imported` would be gone for every reader as soon as it is stored, if it would:
/// an expiry instant that has passed, or an idle expiry that ran out after the last write
/// the export records (the session keeps that time when it is imported).
fn expired(imported: &export::Imported) -> Option<String> {
    copies::run_out_by(imported.meta.expiry?, imported.times, SystemTime::now())
}

/// `import --replace`: session `id` ends up holding `messages`, and the export's metadata
/// too when it has any (an export without metadata leaves the session's own). A session
/// that did not exist gets the export's times; one replaced keeps its own creation, and
/// the replacement is its last write. Returns whether the session existed.
///
/// The messages are written first, conditional on the revision read ([`copies::write_once`]
/// of a [`Change::Replace`] under [`Expect::Exactly`]), so another writer's change since
/// the read is refused, not written over; then the metadata, as a change from what was
/// read. A history that already holds `messages` is not written again, so a replace
/// interrupted between its two writes (the new history under the old metadata) is
/// finished by the same import run again, with the one write missing. What remains: the
/// metadata is no part of a session's revision, so a change another writer makes to it
/// between the read and the metadata's write is kept where the import does not set that
/// field, and overwritten where it does; and until that write, readers see the new
/// history under the old metadata (its old owner, title and tags).
///
/// An export whose expiry has run out by the clock of `store` ([`copies::run_out_by`] on
/// [`copies::clock_reading`] of the session's last write there) is refused before a
/// session that exists is touched: written over it, the expiry would take the session
/// with it, and nothing usable would replace it. (One that does not exist is created
/// with the expiry and read back, as without `--replace`: then nothing is lost.)
async fn replace_session(
    store: &Store,
    views: &Views,
    source: &str,
    id: &str,
    imported: &export::Imported,
    messages: &[fusion::ChatMessage],
) -> Result<bool> {
    let storage = views.storage.as_ref();
    let context = || format!("cannot save session \"{id}\"");
    let meta = &imported.meta;
    // A new session gets its metadata and times with its messages, in one step.
    if !meta.is_empty() || imported.times.is_some() {
        match copies::create_once(views, id, meta, imported.times, messages).await {
            Ok(_) => return Ok(false),
            Err(fusion::Error::Conflict { .. }) => {}
            Err(err) => return Err(err).with_context(context),
        }
    }
    let read = || format!("cannot read session \"{id}\"");
    // The history first: what the replace is conditional on. The metadata, read after,
    // is the fresher for the change the import makes to it.
    // A history this store cannot open (sealed under a key it lacks, a damaged message)
    // is what `--replace` is for: its stored form gives the revision, and it is written
    // over whatever it holds.
    let (held, at, opened) = match storage.load_revision(id).await {
        Ok((held, at)) => (held, at, true),
        Err(err) if !err.is_retryable() => match views.raw.load_revision(id).await {
            Ok((held, at)) => (held, at, false),
            Err(_) => return Err(err).with_context(read),
        },
        Err(err) => return Err(err).with_context(read),
    };
    let current = storage.session_info(id).await.with_context(read)?;
    if let (Some(info), Some(expiry)) = (&current, meta.expiry)
        && let Some(why) = copies::run_out_by(expiry, None, copies::clock_reading(info.updated_at))
    {
        bail!(
            "cannot import {source} over session \"{id}\" ({}): {why} by the clock of {store}, \
             so the session would be gone for every reader as soon as it was replaced; it is \
             left as it was; remove \"expiry\" from the import's \"meta\" to import it",
            render::plural(info.message_count, "message"),
        );
    }
    if !at.exists() || !opened || held != messages {
        let unretried = views.unretried.as_ref();
        let write = move || unretried.write_if(id, Expect::Exactly(at), Change::Replace(messages));
        let kind = copies::WriteKind::Replace;
        match copies::write_once(views, id, at, &held, messages, kind, write).await {
            Ok(_) => {}
            Err(err @ fusion::Error::Conflict { .. }) => {
                return Err(anyhow::Error::from(err).context(format!(
                    "session \"{id}\" changed while it was being replaced (another writer); \
                     nothing was written; run the import again"
                )));
            }
            Err(err) => return Err(err).with_context(context),
        }
    }
    if !meta.is_empty() {
        let current = current.as_ref().map(|info| info.meta.clone());
        let update = meta::overwrite(&current.unwrap_or_default(), meta);
        let updated = storage.update_session(id, &update).await.with_context(|| {
            format!(
                "session \"{id}\" holds the import's messages, but its metadata could not be \
                 set; run the import again to set it"
            )
        })?;
        if updated.is_none() {
            bail!(
                "session \"{id}\" was deleted by another writer right after its messages were \
                 replaced, before its metadata was set"
            );
        }
    }
    Ok(at.exists())
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
        render::note(format_args!(
            "warning: {err}; going on without the session's metadata"
        ));
    }
    if messages.is_empty() {
        bail!("session \"{id}\" not found in {store}");
    }
    Ok((info, messages))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use fusion::api::export::ExportFormat;
    use fusion::layers::encryption::EncryptionLayer;
    use fusion::storage::{
        ConversationStorage, Expiry, InMemoryStorage, Intercept, Intercepted, SessionMeta,
    };

    use super::*;
    use crate::store::Layers;
    use crate::testing::{
        AppliesLate, ClockAhead, MeddlesAfterFirstRead, Meddling, MetadataFailsOnce,
        ReadsFailAfter, conversation, views,
    };
    use fusion::ChatMessage;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    /// A json export of session `s` with `meta`, last written `idle_for` ago, read back.
    fn exported(meta: SessionMeta, idle_for: Duration) -> export::Imported {
        let messages = conversation();
        let mut info = SessionInfo::new("s", messages.len());
        let now = SystemTime::now();
        info.meta = meta;
        info.created_at = Some(now - 2 * HOUR);
        info.updated_at = Some(now - idle_for);
        let text = export::write_session(ExportFormat::Json, &info, &messages).unwrap();
        export::read(&text).unwrap()
    }

    /// The check before the write lets it through (ten minutes left by this machine's
    /// clock), but the storage's clock is 20 minutes ahead: the session is stored gone.
    /// The import says so as the check would have, with or without `--replace`, rather
    /// than "imported".
    #[tokio::test]
    async fn an_import_whose_idle_expiry_runs_out_as_it_is_written_is_refused() {
        let imported = exported(SessionMeta::new().expiry(Expiry::Idle(HOUR)), 50 * MINUTE);
        assert_eq!(expired(&imported), None);
        let target = Arc::new(Intercepted(ClockAhead::new(
            InMemoryStorage::new(),
            20 * MINUTE,
        )));
        let layers = Layers::new(EncryptionLayer::without_keys(), true);
        let store = Store::new("memory://".parse().unwrap(), layers);
        let (views, file) = (views(target.clone()), "s.json");
        let messages = &imported.messages;
        for replace in [false, true] {
            let err = write_import(&store, &views, file, "s", &imported, messages, replace)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(
                    "cannot import s.json: it was gone for every reader as soon as it was \
                     written, its idle expiry ran out at "
                ) && err.contains("1h after its last write, by the clock of memory://"),
                "{err}"
            );
            assert!(target.session_info("s").await.unwrap().is_none());
        }

        // What the refusal says to do imports it: nothing expired is in the way.
        let mut without_expiry = imported.clone();
        without_expiry.meta = SessionMeta::new();
        let said = write_import(&store, &views, file, "s", &without_expiry, messages, false)
            .await
            .unwrap();
        assert_eq!(said, "imported session s (2 messages)");
        assert_eq!(target.load("s").await.unwrap(), conversation());
    }

    /// `--replace` of a session that exists, with an export whose expiry instant, ten
    /// minutes off by this machine's clock, has passed by the target's, 20 minutes ahead
    /// (as its last write of the session shows): refused before the session is touched,
    /// and the session left as it was. An idle expiry counts from the replace, the
    /// session's last write, and lands live.
    #[tokio::test]
    async fn an_import_replacing_a_session_with_an_expiry_past_on_the_targets_clock_is_refused() {
        let target = Arc::new(Intercepted(ClockAhead::new(
            InMemoryStorage::new(),
            20 * MINUTE,
        )));
        let (held, mine) = (&conversation()[..1], SessionMeta::new().title("Mine"));
        let inner = target.0.inner();
        inner.create_session("s", &mine, held).await.unwrap();
        let layers = Layers::new(EncryptionLayer::without_keys(), true);
        let store = Store::new("memory://".parse().unwrap(), layers);
        let (views, file) = (views(target.clone()), "s.json");
        let at = SystemTime::now() + 10 * MINUTE;
        let imported = exported(SessionMeta::new().expiry(Expiry::At(at)), MINUTE);
        assert_eq!(expired(&imported), None);
        let messages = &imported.messages;
        let err = write_import(&store, &views, file, "s", &imported, messages, true)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot import s.json over session \"s\" (1 message): its expiry (")
                && err.ends_with(
                    "has passed by the clock of memory://, so the session would be gone for \
                     every reader as soon as it was replaced; it is left as it was; remove \
                     \"expiry\" from the import's \"meta\" to import it"
                ),
            "{err}"
        );
        let info = inner
            .session_info("s")
            .await
            .unwrap()
            .expect("left as it was");
        assert_eq!(
            (info.meta, inner.load("s").await.unwrap()),
            (mine, held.to_vec())
        );

        let idle = exported(SessionMeta::new().expiry(Expiry::Idle(HOUR)), 50 * MINUTE);
        let said = write_import(&store, &views, file, "s", &idle, &idle.messages, true).await;
        assert_eq!(said.unwrap(), "replaced session s (2 messages)");
        assert_eq!(target.load("s").await.unwrap(), conversation());
    }

    /// The creation of an import lost its reply and applied only after the read back
    /// found nothing; the creation made again meets that session, and reading it back to
    /// tell whose it is fails: whether the import was written is unknown, and the import
    /// says so, not that the session already exists ("pass --replace"): it may be its own.
    #[tokio::test]
    async fn an_import_that_cannot_be_read_back_after_a_refusal_is_not_said_to_exist() {
        let imported = exported(SessionMeta::new().title("Late"), MINUTE);
        let late = Intercepted(AppliesLate::new(InMemoryStorage::new()));
        let target = Arc::new(Intercepted(ReadsFailAfter::new(late, 1)));
        let layers = Layers::new(EncryptionLayer::without_keys(), true);
        let store = Store::new("memory://".parse().unwrap(), layers);
        let (views, file) = (views(target.clone()), "s.json");
        let err = write_import(
            &store,
            &views,
            file,
            "s",
            &imported,
            &imported.messages,
            false,
        )
        .await
        .unwrap_err();
        let said = crate::one_line(&err);
        assert!(
            said.starts_with(
                "cannot save session \"s\": memory: the reply to a write was lost, and reading \
                 the session back to tell whether it applied failed too: whether it applied is \
                 unknown"
            ),
            "{said}"
        );
        let stored = target.0.inner().load("s").await.unwrap();
        assert_eq!(stored, conversation(), "it was");
    }

    /// What `--replace` of session `s` of `views` by `imported` says as it fails.
    async fn refused_replace(store: &Store, views: &Views, imported: &export::Imported) -> String {
        let (file, messages) = ("s.json", &imported.messages);
        let refused = write_import(store, views, file, "s", imported, messages, true).await;
        crate::one_line(&refused.unwrap_err())
    }

    /// `--replace` over a session whose messages this store cannot open (sealed, and no
    /// key): the import replaces them, as it did before it read the history.
    #[tokio::test]
    async fn a_replace_writes_over_a_history_the_store_cannot_open() {
        let target = Arc::new(InMemoryStorage::new());
        let sealed = ChatMessage::user("fusion:enc:v1:k1:c2VhbGVk");
        target.append("s", &[sealed]).await.unwrap();
        let layers = Layers::new(EncryptionLayer::without_keys(), true);
        let store = Store::new("memory://".parse().unwrap(), layers);
        let (views, file) = (views(target.clone()), "s.json");
        let imported = exported(SessionMeta::new(), MINUTE);
        let messages = &imported.messages;
        let said = write_import(&store, &views, file, "s", &imported, messages, true).await;
        assert_eq!(said.unwrap(), "replaced session s (2 messages)");
        assert_eq!(target.load("s").await.unwrap(), conversation());
    }

    /// `--replace` reads the session, and another writer appends to it before the
    /// replace is written: the replace is conditional on what was read, so it is refused
    /// as a conflict and the other writer's message kept, not written over.
    #[tokio::test]
    async fn a_replace_refuses_a_session_another_writer_changed_since_it_was_read() {
        let theirs = ChatMessage::user("Someone else's");
        let meddles =
            MeddlesAfterFirstRead::new(InMemoryStorage::new(), Meddling::Append(theirs.clone()));
        let target = Arc::new(Intercepted(meddles));
        let held = &conversation()[..1];
        target.0.inner().append("s", held).await.unwrap();
        let layers = Layers::new(EncryptionLayer::without_keys(), true);
        let store = Store::new("memory://".parse().unwrap(), layers);
        let imported = exported(SessionMeta::new().title("New"), MINUTE);
        let said = refused_replace(&store, &views(target.clone()), &imported).await;
        assert!(
            said.starts_with(
                "session \"s\" changed while it was being replaced (another writer); nothing \
                 was written; run the import again:"
            ),
            "{said}"
        );
        let info = target.session_info("s").await.unwrap().unwrap();
        assert_eq!(info.meta, SessionMeta::new(), "its metadata untouched");
        assert_eq!(target.load("s").await.unwrap(), [held, &[theirs]].concat());
    }

    /// A replace interrupted between its two writes (the metadata's failed) leaves the
    /// new history under the old metadata; the same import run again finds the history
    /// in place and makes the one write missing, the metadata's.
    #[tokio::test]
    async fn a_replace_interrupted_before_its_metadata_is_finished_by_the_next_import() {
        let target = Arc::new(Intercepted(MetadataFailsOnce::new(InMemoryStorage::new())));
        let mine = SessionMeta::new().title("Mine").tags(["old"]);
        let inner = target.0.inner();
        inner
            .create_session("s", &mine, &conversation()[..1])
            .await
            .unwrap();
        let layers = Layers::new(EncryptionLayer::without_keys(), false);
        let store = Store::new("memory://".parse().unwrap(), layers.clone());
        let (views, file) = (layers.views(target.clone()), "s.json");
        let wanted = SessionMeta::new().title("New");
        let imported = exported(wanted.clone(), MINUTE);
        let messages = &imported.messages;
        let said = refused_replace(&store, &views, &imported).await;
        assert!(
            said.starts_with(
                "session \"s\" holds the import's messages, but its metadata could not be set; \
                 run the import again to set it:"
            ),
            "{said}"
        );
        let (_, replaced) = inner.load_revision("s").await.unwrap();
        let said = write_import(&store, &views, file, "s", &imported, messages, true).await;
        assert_eq!(said.unwrap(), "replaced session s (2 messages)");
        let (history, revision) = inner.load_revision("s").await.unwrap();
        assert_eq!(
            (history, revision),
            (conversation(), replaced),
            "not written again"
        );
        assert_eq!(inner.session_info("s").await.unwrap().unwrap().meta, wanted);
    }
}
