//! `fusion sessions ...`: list, show, delete, export and import stored sessions.
//!
//! Every command validates a session id before touching storage, so `../x` is refused
//! with the same message whatever the backend. Data (tables, transcripts, exports) goes to
//! stdout; a missing session is an error, not an empty result, so a typo in a script fails
//! loudly instead of exporting nothing.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fusion::SessionId;
use fusion::api::session;
use fusion::storage::{
    Change, ConversationStorage, Expect, Revision, SessionInfo, StorageType,
    list_sessions_with_info, session_id_from_file_name,
};
use serde::Serialize;

use crate::ExportFormat;
use crate::{export, render};

/// Opens `storage_type`, naming it in the error.
pub async fn open(storage_type: &StorageType) -> Result<Arc<dyn ConversationStorage>> {
    storage_type
        .open()
        .await
        .with_context(|| format!("cannot open storage {storage_type}"))
}

/// One element of `sessions list --json`; a struct so the keys keep this order.
#[derive(Serialize)]
struct ListEntry<'a> {
    id: &'a str,
    message_count: Option<usize>,
    created_at: Option<String>,
    updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `sessions list`: id, message count and last update of every session.
pub async fn list(storage_type: &StorageType, json: bool) -> Result<()> {
    let storage = open(storage_type).await?;
    if !json {
        return print_table(storage.as_ref(), storage_type, None).await;
    }
    let sessions = list_with_info(storage.as_ref(), storage_type).await?;
    let entries: Vec<_> = sessions
        .iter()
        .map(|(id, info)| match info {
            Ok(info) => ListEntry {
                id,
                message_count: Some(info.message_count),
                created_at: info.created_at.map(render::rfc3339),
                updated_at: info.updated_at.map(render::rfc3339),
                error: None,
            },
            Err(err) => ListEntry {
                id,
                message_count: None,
                created_at: None,
                updated_at: None,
                error: Some(err.to_string()),
            },
        })
        .collect();
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &entries)?;
    writeln!(out)?;
    out.flush()?;
    warn_unreadable(&sessions);
    Ok(())
}

/// The table of `sessions list` for `storage` (opened from `storage_type`), also shown by
/// `/sessions` in chat, which marks its own session as `current`.
pub async fn print_table(
    storage: &dyn ConversationStorage,
    storage_type: &StorageType,
    current: Option<&str>,
) -> Result<()> {
    let sessions = list_with_info(storage, storage_type).await?;
    if sessions.is_empty() {
        eprintln!("no sessions in {storage_type}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(render::session_table(&sessions, current).as_bytes())?;
    out.flush()?;
    warn_unreadable(&sessions);
    Ok(())
}

/// Every session with its info or its error, naming the storage when the listing fails.
async fn list_with_info(
    storage: &dyn ConversationStorage,
    storage_type: &StorageType,
) -> Result<Vec<(String, fusion::Result<SessionInfo>)>> {
    list_sessions_with_info(storage)
        .await
        .with_context(|| format!("cannot list sessions in {storage_type}"))
}

/// One unreadable session is listed with its error; this says on stderr that some were.
fn warn_unreadable(sessions: &[(String, fusion::Result<SessionInfo>)]) {
    let failed = sessions.iter().filter(|(_, info)| info.is_err()).count();
    if failed > 0 {
        eprintln!(
            "fusion: warning: {} could not be read",
            render::plural(failed, "session")
        );
    }
}

/// `sessions show ID`: the readable transcript.
pub async fn show(storage_type: &StorageType, id: &str) -> Result<()> {
    let messages = load_existing(storage_type, id).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(render::transcript(id, &messages).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `sessions delete ID`.
pub async fn delete(storage_type: &StorageType, id: &str, force: bool) -> Result<()> {
    SessionId::validate(id)?;
    let info = session::session_info(id, storage_type)
        .await
        .with_context(|| format!("cannot read session \"{id}\" in {storage_type}"))?;
    if info.is_none() && !force {
        bail!("session \"{id}\" not found in {storage_type}");
    }
    session::delete_session(id, storage_type)
        .await
        .with_context(|| format!("cannot delete session \"{id}\" in {storage_type}"))?;
    match info {
        Some(info) => println!(
            "deleted session {id} ({})",
            render::plural(info.message_count, "message")
        ),
        None => println!("session {id} did not exist"),
    }
    Ok(())
}

/// `sessions export ID`: json, jsonl or markdown to stdout or a file.
pub async fn export(
    storage_type: &StorageType,
    id: &str,
    format: ExportFormat,
    output: Option<&Path>,
) -> Result<()> {
    let messages = load_existing(storage_type, id).await?;
    let text = export::write(format, id, &messages)?;
    match output {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!(
                "exported session {id} ({}) to {}",
                render::plural(messages.len(), "message"),
                path.display()
            );
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
pub async fn import(
    storage_type: &StorageType,
    file: &Path,
    id: Option<&str>,
    replace: bool,
) -> Result<()> {
    let from_stdin = file == Path::new("-");
    let text = if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the import from stdin")?;
        text
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read import file {}", file.display()))?
    };
    let imported =
        export::read(&text).with_context(|| format!("cannot import {}", file.display()))?;

    // A jsonl file carries no id, so the file name (`user-1.jsonl`) is the natural default;
    // a file copied out of an fs sessions directory is named by the encoded id
    // (`%41lice.jsonl`, `+base32...jsonl` for long ids), which names the id it holds.
    let file_id = (!from_stdin).then(|| id_from_file_name(file)).flatten();
    let Some(id) = id.or(imported.id.as_deref()).or(file_id.as_deref()) else {
        bail!("the import has no session id; pass --id ID");
    };
    SessionId::validate(id).context("pass --id with a valid session id")?;

    let storage = open(storage_type).await?;
    let messages = &imported.messages;
    let count = render::plural(messages.len(), "message");
    if replace {
        // An explicit overwrite: whatever the session holds now is what the user asked
        // to replace, so there is nothing to compare against.
        let existed = storage
            .session_info(id)
            .await
            .with_context(|| format!("cannot read session \"{id}\""))?
            .is_some();
        storage
            .save(id, messages)
            .await
            .with_context(|| format!("cannot save session \"{id}\""))?;
        let verb = if existed { "replaced" } else { "imported" };
        println!("{verb} session {id} ({count})");
        return Ok(());
    }
    // Create-only in one atomic step: a check followed by a save would overwrite a session
    // another writer created in between.
    let created = storage
        .write_if(
            id,
            Expect::Exactly(Revision::ABSENT),
            Change::Replace(messages),
        )
        .await;
    match created {
        Ok(_) => {
            println!("imported session {id} ({count})");
            Ok(())
        }
        Err(fusion::Error::Conflict { .. }) => {
            let held = match storage.session_info(id).await {
                Ok(Some(info)) => format!(" ({})", render::plural(info.message_count, "message")),
                // It went away again, or cannot be read: the refusal still stands.
                _ => String::new(),
            };
            bail!(
                "session \"{id}\" already exists in {storage_type}{held}; pass --replace to overwrite it"
            )
        }
        Err(err) => Err(err).with_context(|| format!("cannot save session \"{id}\"")),
    }
}

/// The session id a file's name gives: the id an fs-backend session file is named after
/// (decoded), else the plain stem (`user-1` for `user-1.jsonl`, `export` for `export.json`).
fn id_from_file_name(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    session_id_from_file_name(name).or_else(|| Some(file.file_stem()?.to_str()?.to_string()))
}

/// Loads session `id`, failing when it has no messages (a session that does not exist).
async fn load_existing(storage_type: &StorageType, id: &str) -> Result<Vec<fusion::ChatMessage>> {
    SessionId::validate(id)?;
    let storage = open(storage_type).await?;
    let messages = storage
        .load(id)
        .await
        .with_context(|| format!("cannot load session \"{id}\""))?;
    if messages.is_empty() {
        bail!("session \"{id}\" not found in {storage_type}");
    }
    Ok(messages)
}
