//! A session as a file and back: the `json`, `jsonl` and `markdown` formats of
//! `fusion sessions export` (and the web UI's downloads), and the reader of
//! `fusion sessions import`.
//!
//! Where [`session`](super::session) opens and manages sessions in storage, this turns
//! one session's metadata and messages, already loaded, into text another tool reads, and
//! such text back into what [`create_session`](crate::storage::ConversationStorage::create_session)
//! stores; it touches no storage itself.
//!
//! - `json` is one object, `{"version": 1, "id": "...", "created_at": "...", "updated_at":
//!   "...", "meta": {...}, "messages": [...]}`.
//!   `version` is [`JSON_VERSION`]; [`read`] refuses a file of a newer version (a newer
//!   release wrote it, and what it added would be dropped) or of version 0, checked
//!   before the rest of the file is read, and reads one without it as
//!   version 1 (exports from before it had one, or written by hand). `meta`
//!   (owner, title, tags, data, expiry) is left out when the session has none, and its
//!   unset fields too; an expiry is `"expiry": {"at": "<RFC 3339>"}` (a fixed instant, to
//!   the microsecond) or `"expiry": {"idle_seconds": N}` (a span after the last write; a
//!   fraction when it is not whole seconds). `created_at` and `updated_at` (RFC 3339 with
//!   the fraction of a second the storage keeps) are there when the session's storage
//!   keeps times ([`write_session`]); an import gives them back to the session it creates
//!   ([`create_session_with_times`](crate::storage::ConversationStorage::create_session_with_times)),
//!   so a session restored from a backup keeps its age and its place in listings. They were
//!   added within version 1: a file without them imports at the time of the import, and a
//!   release before them reads a file with them, ignoring them.
//! - `jsonl` is one message per line, the same shape the file-system backend stores, so a
//!   session file copied out of a sessions directory imports as is; it has nowhere to keep
//!   metadata.
//! - `markdown` is a transcript for people, tool calls and output in code fences; it is not
//!   read back.
//!
//! Messages use the OpenAI chat-completions shape of [`ChatMessage`], so exports are
//! readable by other tools. [`read`] accepts `json` and `jsonl` and tells them apart by
//! content, not by file extension; `meta` is optional, so exports written before sessions
//! had metadata still import. It refuses a file it would read only in part (a message
//! field this release does not know, a file-system session file ending inside a batch),
//! naming what and where, rather than drop anything without a word.
//!
//! ```
//! use fusion::ChatMessage;
//! use fusion::api::export::{self, ExportFormat};
//! use fusion::storage::SessionMeta;
//!
//! let meta = SessionMeta::new().title("Logs");
//! let messages = [ChatMessage::user("hi"), ChatMessage::assistant("hello")];
//! let format: ExportFormat = "json".parse()?;
//! let text = export::write(format, "s-1", &meta, &messages)?;
//! let back = export::read(&text)?;
//! assert_eq!(back.id.as_deref(), Some("s-1"));
//! assert_eq!((back.meta, back.messages.as_slice()), (meta, &messages[..]));
//!
//! let line = export::write(ExportFormat::Jsonl, "s-1", &SessionMeta::new(), &messages[..1])?;
//! assert_eq!(line, "{\"role\":\"user\",\"content\":\"hi\"}\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod document;
mod error;
mod fields;
mod markdown;
mod messages;

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Deserialize;

pub use error::{ExportError, ImportError, MessagePlace};
pub use markdown::message_headings;

use self::document::{
    ExportDoc, ImportDoc, LooseDoc, MessagesDoc, MetaDoc, VersionDoc, times_doc, times_of,
};
use self::fields::Written;
use self::messages::Messages;
use crate::ChatMessage;
use crate::storage::{SessionInfo, SessionMeta, SessionTimes};

/// The version of the `json` export this release writes, and the newest it reads.
pub const JSON_VERSION: u64 = 1;

/// The file formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExportFormat {
    /// One JSON object with the id, metadata and messages.
    Json,
    /// One JSON message per line.
    Jsonl,
    /// A Markdown transcript for people.
    Markdown,
}

impl ExportFormat {
    /// The file name extension: `json`, `jsonl` or `md`.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Json => "json",
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Markdown => "md",
        }
    }

    /// The media type to serve the file with.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Json => "application/json",
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Markdown => "text/markdown; charset=utf-8",
        }
    }
}

impl FromStr for ExportFormat {
    type Err = ExportError;

    /// `json`, `jsonl` or `markdown` (also `md`), as `fusion sessions export --format`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "json" => Ok(ExportFormat::Json),
            "jsonl" => Ok(ExportFormat::Jsonl),
            "markdown" | "md" => Ok(ExportFormat::Markdown),
            other => Err(ExportError::UnknownFormat(other.to_string())),
        }
    }
}

/// A file [`read`] back: what to store as a session.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Imported {
    /// The id recorded in the file (`json` exports only).
    pub id: Option<String>,
    /// The metadata recorded in the file (`json` exports only; empty when none), valid.
    pub meta: SessionMeta,
    /// When the session was created and last written, if the file records it (`json`
    /// exports of a storage that keeps times), valid.
    pub times: Option<SessionTimes>,
    /// The messages, in order; never empty.
    pub messages: Vec<ChatMessage>,
}

/// Session `id`, with its metadata `meta` and `messages`, as a file in `format`, ending
/// with a newline. Cost: linear in the messages' size, all in memory.
///
/// It records no times; [`write_session`] writes what a storage knows of the session,
/// times included.
pub fn write(
    format: ExportFormat,
    id: &str,
    meta: &SessionMeta,
    messages: &[ChatMessage],
) -> Result<String, ExportError> {
    write_with_times(format, id, meta, None, messages)
}

/// The session `info` describes (its id, metadata and, where the storage keeps them, its
/// times), holding `messages`, as a file in `format`: what `fusion sessions export`
/// writes.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use fusion::ChatMessage;
/// use fusion::api::export::{self, ExportFormat};
/// use fusion::storage::{SessionInfo, SessionTimes};
///
/// let mut info = SessionInfo::new("s-1", 1);
/// info.created_at = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// info.updated_at = Some(UNIX_EPOCH + Duration::from_millis(1_700_000_060_250));
/// let text = export::write_session(ExportFormat::Json, &info, &[ChatMessage::user("hi")])?;
/// assert!(text.contains(r#""updated_at": "2023-11-14T22:14:20.25Z""#), "{text}");
/// assert_eq!(export::read(&text)?.times, SessionTimes::of(&info));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_session(
    format: ExportFormat,
    info: &SessionInfo,
    messages: &[ChatMessage],
) -> Result<String, ExportError> {
    let times = SessionTimes::of(info);
    write_with_times(format, &info.id, &info.meta, times, messages)
}

fn write_with_times(
    format: ExportFormat,
    id: &str,
    meta: &SessionMeta,
    times: Option<SessionTimes>,
    messages: &[ChatMessage],
) -> Result<String, ExportError> {
    Ok(match format {
        ExportFormat::Json => {
            let (created_at, updated_at) = times_doc(times);
            let doc = ExportDoc {
                version: JSON_VERSION,
                id,
                created_at,
                updated_at,
                meta: MetaDoc::of(meta)?,
                messages,
            };
            let mut text = serde_json::to_string_pretty(&doc)?;
            text.push('\n');
            text
        }
        ExportFormat::Jsonl => {
            let mut text = String::new();
            for message in messages {
                // serde_json escapes newlines inside strings, so each message is one line.
                text.push_str(&serde_json::to_string(message)?);
                text.push('\n');
            }
            text
        }
        ExportFormat::Markdown => markdown::markdown(id, meta, times, messages),
    })
}

/// Parses a `json` or `jsonl` export (a leading byte-order mark is skipped), and checks
/// that its metadata could be stored and that nothing of its messages is lost. Cost:
/// linear in the text's size; each message is parsed once.
///
/// Nothing is dropped without a word: a file is refused, naming the message (`line N` of a
/// `jsonl` file, `message N` of a `json` export), the field and how to go on, when a
/// message holds
///
/// - a field this release does not know, one a newer release added
///   ([`ImportError::UnknownField`]; a field that holds nothing, `null`, `[]` or `{}`, is
///   let through);
/// - a content part holding more than its text, an image's `image_url` say
///   ([`ImportError::ContentPart`]): a message's content is read as the text of its parts;
/// - a key written twice ([`ImportError::Line`], [`ImportError::Document`]): the first
///   value would be lost.
///
/// A key written twice in the `data` of a `json` export's `meta` is refused alike
/// ([`ImportError::Document`]).
///
/// The file-system backend's batch marker (`"fusion_batch_more"`) on a `jsonl` line is no
/// field of the message: a session file copied out of a store imports as is, unless it
/// ends inside a batch whose last line was never written ([`ImportError::UnfinishedBatch`]),
/// which the backend's own load leaves out.
///
/// A tool result is taken whatever call it names, or none (a result whose call is not
/// before it, one without `tool_call_id`), as a storage keeps it: the agent leaves such a
/// result out of each request it sends, and answers a call without its result as
/// interrupted, so every session a storage holds exports and imports back whole.
///
/// ```
/// use fusion::api::export::{self, ImportError, MessagePlace};
///
/// let text = "{\"role\":\"user\",\"content\":\"hi\"}\n\
///             {\"role\":\"assistant\",\"content\":\"yo\",\"reasoning\":\"short\"}\n";
/// let err = export::read(text).unwrap_err();
/// assert!(matches!(
///     &err,
///     ImportError::UnknownField { place: MessagePlace::Line(2), field } if field == "reasoning"
/// ));
/// assert!(err.to_string().starts_with("line 2 holds \"reasoning\", which this release"));
/// ```
pub fn read(text: &str) -> Result<Imported, ImportError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if utf16_without_mark(text.as_bytes()).is_some() {
        return Err(ImportError::Utf16WithoutMark);
    }
    let (imported, refused) = match format_of(text).ok_or(ImportError::Empty)? {
        ExportFormat::Jsonl => read_jsonl(text)?,
        _ => read_json(text)?,
    };
    if imported.messages.is_empty() {
        return Err(ImportError::NoMessages);
    }
    imported.meta.validate().map_err(ImportError::InvalidMeta)?;
    match refused {
        Some(refused) => Err(refused),
        None => Ok(imported),
    }
}

/// The byte order of UTF-16 text: what [`utf16_without_mark`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Utf16Order {
    /// Little-endian (UTF-16LE): the low byte of each unit first.
    Little,
    /// Big-endian (UTF-16BE): the high byte of each unit first.
    Big,
}

/// The byte order of `bytes` when they start plainly as UTF-16 without a byte order mark
/// (what `[IO.File]::WriteAllBytes` of `Encoding.Unicode.GetBytes(...)`, or an editor's
/// "UTF-16 LE" without BOM, writes): each of their first units, up to eight, at least
/// one, an ASCII character other than NUL with its zero byte on the same side. Every
/// export starts with such characters (`{`, blanks, `"role"`, `"id"`). No export read as
/// UTF-8 starts so, JSON allowing no raw NUL, so reading such bytes as UTF-16 misreads no
/// export; [`read`] refuses text that starts so ([`ImportError::Utf16WithoutMark`]): UTF-16
/// read as UTF-8.
///
/// ```
/// use fusion::api::export::{Utf16Order, utf16_without_mark};
///
/// let le: Vec<u8> = "{}".encode_utf16().flat_map(u16::to_le_bytes).collect();
/// assert_eq!(utf16_without_mark(&le), Some(Utf16Order::Little));
/// assert_eq!(utf16_without_mark(b"{}"), None);
/// ```
pub fn utf16_without_mark(bytes: &[u8]) -> Option<Utf16Order> {
    let start = &bytes[..bytes.len().min(16) / 2 * 2];
    let ascii = |b: u8| (1..0x80).contains(&b);
    let nul_beside = |low: usize| {
        !start.is_empty()
            && start
                .chunks_exact(2)
                .all(|pair| ascii(pair[low]) && pair[1 - low] == 0)
    };
    match (nul_beside(0), nul_beside(1)) {
        (true, _) => Some(Utf16Order::Little),
        (_, true) => Some(Utf16Order::Big),
        _ => None,
    }
}

/// The format of `text`, an export without its byte-order mark: `None` when it holds
/// nothing but blanks.
///
/// A jsonl file's first line is a complete message on its own; a pretty-printed json
/// export's first line is just `{`. Deciding on that, rather than trying one format and
/// then the other, means a broken file gets the error of the format it was meant to be.
fn format_of(text: &str) -> Option<ExportFormat> {
    let first_line = text.lines().find(|line| !line.trim().is_empty())?;
    // Its keys alone: a one-line `json` export is not built as a value to be dropped.
    let keys = serde_json::from_str::<BTreeMap<String, serde::de::IgnoredAny>>(first_line);
    let first_is_message = keys.is_ok_and(|keys| keys.contains_key("role"));
    Some(match first_is_message {
        true => ExportFormat::Jsonl,
        false => ExportFormat::Json,
    })
}

/// Where the message at `index` of `text` is, counted from 0 as in what [`read`] read of
/// it ([`Imported::messages`]): its line in a `jsonl` file (blank lines counted), its
/// place in a `json` export's messages; `None` when `text` holds no message there.
///
/// For naming a message as the file counts them when a storage refuses it by its position
/// in the write ([`Error::InvalidMessage`](crate::Error::InvalidMessage)'s `index`, counted
/// from 0). Cost: linear in the text's size.
///
/// ```
/// use fusion::api::export::{self, MessagePlace};
///
/// let text = "{\"role\":\"user\",\"content\":\"a\"}\n\n{\"role\":\"user\",\"content\":\"b\"}\n";
/// assert_eq!(export::message_place(text, 1), Some(MessagePlace::Line(3)));
/// assert_eq!(export::message_place(text, 2), None);
/// let json = r#"{"id": "s", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}"#;
/// assert_eq!(export::message_place(json, 1), Some(MessagePlace::Message(2)));
/// assert_eq!(export::message_place(json, 2), None);
/// ```
pub fn message_place(text: &str, index: usize) -> Option<MessagePlace> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format_of(text)? {
        ExportFormat::Jsonl => {
            let lines = text.lines().enumerate();
            let (line, _) = lines
                .filter(|(_, line)| !line.trim().is_empty())
                .nth(index)?;
            Some(MessagePlace::Line(line + 1))
        }
        _ => {
            #[derive(Deserialize)]
            struct Count {
                messages: Vec<serde::de::IgnoredAny>,
            }
            let count = serde_json::from_str::<Count>(text).ok()?.messages.len();
            (index < count).then_some(MessagePlace::Message(index + 1))
        }
    }
}

/// Why `text`, not read as a `json` export, is none: serde's `err`, but for a JSON array
/// (of messages, as some tools write them), whose first element serde took for the
/// version ("invalid type: map, expected u64"), which says nothing of what the file
/// should be. Text that only starts with `[` (a log's `[INFO]`, a broken array) keeps
/// serde's error and its place.
fn not_a_document(text: &str, err: serde_json::Error) -> ImportError {
    let array = text.trim_start().starts_with('[')
        && serde_json::from_str::<Vec<serde::de::IgnoredAny>>(text).is_ok();
    // A `markdown` export (its heading as `markdown::write` makes it) is for people, and
    // serde's "expected value at line 1 column 1" said nothing of that.
    let markdown = text.trim_start().starts_with("# Session `");
    ImportError::Document(match (array, markdown) {
        (true, _) => serde::de::Error::custom(
            "the export is a JSON array; put the messages in a json export's \"messages\", \
             or write one message per line (jsonl)",
        ),
        (_, true) => serde::de::Error::custom(
            "the export is a markdown transcript, which is for reading and is not read back; \
             import a json or jsonl export of the session",
        ),
        _ => err,
    })
}

/// The messages and the rest of a `json` export, and why the first message refused is
/// (it loses something in the reading).
fn read_json(text: &str) -> Result<(Imported, Option<ImportError>), ImportError> {
    // One scan of the text, when it is an export of a version this release reads; else
    // two, the version first, for the error that says what it is and where.
    let doc = match whole::<LooseDoc>(text).ok().and_then(LooseDoc::into_doc) {
        Some(doc) => doc,
        None => typed_doc(text)?,
    };
    let mut messages = Messages::with_capacity(doc.messages.len());
    for (n, Written(written)) in (1..).zip(doc.messages) {
        messages
            .push(written, MessagePlace::Message(n))
            .map_err(|err| {
                // Where it is in the file, which the message read as written has lost.
                let positioned = serde_json::from_str::<MessagesDoc>(text).err();
                not_a_document(text, positioned.unwrap_or(err))
            })?;
    }
    let imported = Imported {
        id: doc.id,
        times: times_of(doc.created_at, doc.updated_at)?,
        meta: doc
            .meta
            .map(MetaDoc::into_meta)
            .transpose()?
            .unwrap_or_default(),
        messages: messages.read,
    };
    Ok((imported, messages.refused))
}

/// A `json` export read as its version first, then the rest: what says why one that
/// [`LooseDoc::into_doc`] does not read is none, and where.
fn typed_doc(text: &str) -> Result<ImportDoc, ImportError> {
    let VersionDoc { version } = whole(text).map_err(|err| not_a_document(text, err))?;
    if let Some(found) = version.filter(|found| !(1..=JSON_VERSION).contains(found)) {
        return Err(ImportError::UnknownVersion { found });
    }
    whole(text).map_err(|err| not_a_document(text, err))
}

#[cfg(test)]
thread_local! {
    /// How many times this thread's `json` imports scanned a whole document.
    static WHOLE_SCANS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// `text`, a whole `json` export, read as `T` (counted in tests).
fn whole<T: serde::de::DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    #[cfg(test)]
    WHOLE_SCANS.with(|scans| scans.set(scans.get() + 1));
    serde_json::from_str(text)
}

/// The messages of a `jsonl` file, and why the first refused is (it loses something in
/// the reading). A file ending inside a batch of the file-system backend is refused.
fn read_jsonl(text: &str) -> Result<(Imported, Option<ImportError>), ImportError> {
    let mut messages = Messages::with_capacity(0);
    // The lines, first and last, of the batch the lines read so far end inside.
    let mut unfinished = None;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        let not_a_message = |source| ImportError::Line {
            line: number,
            source,
        };
        let Written(mut written) = serde_json::from_str(line).map_err(not_a_message)?;
        unfinished = match fields::take_batch_marker(&mut written) {
            true => Some((unfinished.map_or(number, |(first, _)| first), number)),
            false => None,
        };
        messages
            .push(written, MessagePlace::Line(number))
            .map_err(|err| {
                // Where it is in the line, which the message read as written has lost.
                let positioned = serde_json::from_str::<ChatMessage>(line).err();
                not_a_message(positioned.unwrap_or(err))
            })?;
    }
    if let Some((first_line, last_line)) = unfinished {
        return Err(ImportError::UnfinishedBatch {
            first_line,
            last_line,
        });
    }
    let imported = Imported {
        id: None,
        meta: SessionMeta::new(),
        times: None,
        messages: messages.read,
    };
    Ok((imported, messages.refused))
}

#[cfg(test)]
mod tests;
