//! The JSON shapes of the `json` export: the document, its `meta` and an expiry, with the
//! conversions to and from [`SessionMeta`] and [`Expiry`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::error::{ExportError, ImportError};
use super::fields::{self, Written};
use crate::ChatMessage;
use crate::api::time;
use crate::storage::{Expiry, SessionMeta, SessionTimes};

/// The `json` export as written.
#[derive(Serialize)]
pub(super) struct ExportDoc<'a> {
    pub(super) version: u64,
    pub(super) id: &'a str,
    /// RFC 3339 with the fraction of a second it holds, when the storage keeps times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) meta: Option<MetaDoc>,
    pub(super) messages: &'a [ChatMessage],
}

/// The version a `json` export declares, read before the rest so that a file from a newer
/// release is refused as such rather than with whatever its new shape breaks first.
#[derive(Deserialize)]
pub(super) struct VersionDoc {
    #[serde(default)]
    pub(super) version: Option<u64>,
}

/// The `json` export as read; `id` and `meta` are optional so a hand-written file needs
/// only messages, which are read as written, to be checked for what reading them as
/// messages would drop.
#[derive(Deserialize)]
pub(super) struct ImportDoc {
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) created_at: Option<String>,
    #[serde(default)]
    pub(super) updated_at: Option<String>,
    #[serde(default)]
    pub(super) meta: Option<MetaDoc>,
    pub(super) messages: Vec<Written>,
}

/// The `json` export as written, every field it reads kept as a [`Written`] value: one
/// scan of the text, after which the version is checked before the rest is read
/// ([`LooseDoc::into_doc`]), as [`VersionDoc`] checks it in a scan of its own.
#[derive(Deserialize)]
pub(super) struct LooseDoc {
    #[serde(default)]
    version: Option<Written>,
    #[serde(default)]
    id: Option<Written>,
    #[serde(default)]
    created_at: Option<Written>,
    #[serde(default)]
    updated_at: Option<Written>,
    #[serde(default)]
    meta: Option<Written>,
    #[serde(default)]
    messages: Option<Written>,
}

impl LooseDoc {
    /// The document read as [`ImportDoc`], if it is one of a version this release reads;
    /// `None` when anything of it is not what [`ImportDoc`] reads (a version of another
    /// release, a field of another type, no messages), which the text read as an
    /// [`ImportDoc`] says, with its place.
    pub(super) fn into_doc(self) -> Option<ImportDoc> {
        if let Some(Written(version)) = &self.version {
            let version = version.as_u64()?;
            if !(1..=super::JSON_VERSION).contains(&version) {
                return None;
            }
        }
        let text = |field: Option<Written>| match field {
            None => Some(None),
            Some(Written(Value::String(text))) => Some(Some(text)),
            Some(_) => None,
        };
        let meta = match self.meta {
            None => None,
            Some(Written(meta)) => Some(MetaDoc::deserialize(meta).ok()?),
        };
        let Written(Value::Array(messages)) = self.messages? else {
            return None;
        };
        Some(ImportDoc {
            id: text(self.id)?,
            created_at: text(self.created_at)?,
            updated_at: text(self.updated_at)?,
            meta,
            messages: messages.into_iter().map(Written).collect(),
        })
    }
}

/// The messages of a `json` export read as messages at once: what says where the first
/// that is not one is (serde's line and column in the file), when one read as written is
/// not.
#[derive(Deserialize)]
pub(super) struct MessagesDoc {
    #[allow(dead_code)] // Read for the error alone.
    pub(super) messages: Vec<ChatMessage>,
}

/// The times a document records as written, `None` for a storage that keeps none.
pub(super) fn times_doc(times: Option<SessionTimes>) -> (Option<String>, Option<String>) {
    match times {
        Some(times) => (
            Some(time::rfc3339_exact(times.created_at)),
            Some(time::rfc3339_exact(times.updated_at)),
        ),
        None => (None, None),
    }
}

/// The times a document records, checked as a storage checks them: both or neither.
pub(super) fn times_of(
    created_at: Option<String>,
    updated_at: Option<String>,
) -> Result<Option<SessionTimes>, ImportError> {
    let instant = |name: &str, text: String| {
        time::parse_rfc3339(&text).map_err(|err| ImportError::Times(format!("\"{name}\": {err}")))
    };
    let times = match (created_at, updated_at) {
        (None, None) => return Ok(None),
        (Some(created), Some(updated)) => SessionTimes::new(
            instant("created_at", created)?,
            instant("updated_at", updated)?,
        ),
        (Some(_), None) | (None, Some(_)) => {
            return Err(ImportError::Times(
                "it holds one of \"created_at\" and \"updated_at\" without the other".into(),
            ));
        }
    };
    times.validate().map_err(|err| {
        ImportError::Times(match err {
            crate::Error::InvalidMeta(why) => why,
            other => other.to_string(),
        })
    })?;
    Ok(Some(times))
}

/// A session's metadata in an export: [`SessionMeta`] in JSON, unset fields left out, in
/// this order (a struct, not a map, which would sort the keys).
#[derive(Serialize, Deserialize, Default)]
pub(super) struct MetaDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    /// Read as written: a key written twice is refused, as in a message.
    #[serde(
        default,
        skip_serializing_if = "Map::is_empty",
        deserialize_with = "fields::written_object"
    )]
    data: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expiry: Option<ExpiryDoc>,
}

/// An [`Expiry`] in an export: one key saying which kind, its value saying when.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ExpiryDoc {
    /// A fixed instant, RFC 3339 in UTC with the fraction of a second it holds.
    At(String),
    /// A span after the last write, in seconds: a whole number, or a fraction when the
    /// span is not whole seconds.
    IdleSeconds(Number),
}

impl ExpiryDoc {
    fn of(expiry: &Expiry) -> Result<Self, ExportError> {
        Ok(match expiry {
            Expiry::At(at) => ExpiryDoc::At(time::rfc3339_exact(*at)),
            Expiry::Idle(span) if span.subsec_nanos() == 0 => {
                ExpiryDoc::IdleSeconds(span.as_secs().into())
            }
            Expiry::Idle(span) => ExpiryDoc::IdleSeconds(
                Number::from_f64(span.as_micros() as f64 / 1e6).ok_or_else(|| {
                    ExportError::Unsupported(format!("the idle span {span:?} has no JSON number"))
                })?,
            ),
            other => {
                return Err(ExportError::Unsupported(format!(
                    "this version cannot export the expiry {other:?}"
                )));
            }
        })
    }

    fn into_expiry(self) -> Result<Expiry, ImportError> {
        match self {
            ExpiryDoc::At(text) => time::parse_rfc3339(&text)
                .map(Expiry::At)
                .map_err(|err| ImportError::UnreadableExpiry(err.to_string())),
            ExpiryDoc::IdleSeconds(number) => {
                let span = match (number.as_u64(), number.as_f64()) {
                    (Some(secs), _) => Some(Duration::from_secs(secs)),
                    // Backends keep spans to the microsecond: round there, not below.
                    (None, Some(secs)) if secs.is_finite() && secs >= 0.0 => {
                        Some(Duration::from_micros((secs * 1e6).round() as u64))
                    }
                    _ => None,
                };
                span.map(Expiry::Idle).ok_or_else(|| {
                    ImportError::UnreadableExpiry(format!(
                        "idle_seconds is {number}, not a number of seconds"
                    ))
                })
            }
        }
    }
}

impl MetaDoc {
    /// `meta` as an export writes it, `None` when it is empty.
    pub(super) fn of(meta: &SessionMeta) -> Result<Option<Self>, ExportError> {
        if meta.is_empty() {
            return Ok(None);
        }
        Ok(Some(MetaDoc {
            owner: meta.owner.clone(),
            title: meta.title.clone(),
            tags: meta.tags.clone(),
            data: meta.data.clone(),
            expiry: meta.expiry.as_ref().map(ExpiryDoc::of).transpose()?,
        }))
    }

    /// The metadata the document holds, not yet validated.
    pub(super) fn into_meta(self) -> Result<SessionMeta, ImportError> {
        // Through the setters: `SessionMeta` is non-exhaustive, and `tags` sorts and
        // deduplicates what a hand-edited file may hold.
        let mut meta = SessionMeta::new().tags(self.tags);
        meta.owner = self.owner;
        meta.title = self.title;
        meta.data = self.data;
        meta.expiry = self.expiry.map(ExpiryDoc::into_expiry).transpose()?;
        Ok(meta)
    }
}
