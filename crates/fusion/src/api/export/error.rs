//! Why an export could not be written or read: what [`write`](super::write) and
//! [`read`](super::read) return, and what parsing an [`ExportFormat`](super::ExportFormat)
//! name returns.

/// Why a session could not be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The format asked for is not one of `json`, `jsonl`, `markdown`.
    #[error("unknown export format {0:?}: use json, jsonl or markdown")]
    UnknownFormat(String),
    /// The session holds something this version cannot write (an expiry of a kind it
    /// does not know, a span with no JSON number).
    #[error("{0}")]
    Unsupported(String),
    /// Serializing the messages failed.
    #[error("cannot write the session as JSON")]
    Json(#[from] serde_json::Error),
}

/// Why text (a file's, stdin's, a request's) could not be read as an export. Each error
/// says what is wrong and where (the line of a `jsonl` export; serde's line and column, in
/// the source, for `json`), and speaks of the export, never of a file: the text may come
/// from anywhere.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The export holds nothing but blanks. (Said of the export, not of a file: the text
    /// may come from stdin or from memory.)
    #[error("the export is empty: it holds nothing but blanks")]
    Empty,
    /// A line of a `jsonl` file is not a message.
    #[error("line {line} is not a valid message")]
    Line {
        /// The line, counted from 1.
        line: usize,
        /// What serde found wrong with it.
        #[source]
        source: serde_json::Error,
    },
    /// The text is neither a `json` export nor `jsonl` (its first line is not a message).
    #[error(
        "not a valid json export ({{\"version\": 1, \"id\": ..., \"meta\": {{...}}, \"messages\": [...]}}) or jsonl export (one message per line)"
    )]
    Document(#[source] serde_json::Error),
    /// The `json` export declares a `version` this release does not read: one from a
    /// newer release (which may hold what this one would drop), or 0, which no release
    /// writes (a file without a version reads as version 1).
    #[error(
        "the json export is of version {found}, and this release of Fusion reads version {} (and exports without a version){}",
        super::JSON_VERSION,
        if *.found > super::JSON_VERSION { "; an export written by a newer release needs that release to import it" } else { "" }
    )]
    UnknownVersion {
        /// The version the file declares.
        found: u64,
    },
    /// The `meta` of a `json` export holds an expiry that is neither an instant nor a span.
    #[error("the export's \"meta\" cannot be read: \"expiry\": {0}")]
    UnreadableExpiry(String),
    /// The `meta` of a `json` export reads, but no storage would accept it (a tag with a
    /// comma, an expiry out of range).
    #[error("the export's \"meta\" cannot be stored")]
    InvalidMeta(#[source] crate::Error),
    /// The `created_at` and `updated_at` of a `json` export cannot be read, or no storage
    /// would accept them (one without the other, a creation after the last write).
    #[error("the export's times cannot be imported: {0}")]
    Times(String),
    /// The text is UTF-16 without a byte order mark read as UTF-8: a NUL beside each of
    /// its first characters (`{\0"\0r\0...`), which no export holds, JSON allowing no raw
    /// NUL. Serde's "expected value" said nothing of what to do.
    #[error(
        "the export is UTF-16 without a byte order mark, read as UTF-8 (a NUL beside each of its first characters): read it as UTF-16, or save it as UTF-8"
    )]
    Utf16WithoutMark,
    /// The export holds no message, and a stored session has at least one. (Said of the
    /// export, not of a file: the text may come from stdin.)
    #[error("the export holds no messages, and a stored session holds at least one")]
    NoMessages,
    /// A message holds a field this release does not know (one a newer release added),
    /// which reading it would drop: the import is refused rather than made without it. A
    /// field that holds nothing (`null`, `[]`, `{}`) loses nothing and is let through.
    #[error(
        "{place} holds {field:?}, which this release of fusion does not know and would drop (a newer release probably wrote it): import it with that release, or remove {field:?} to import the rest"
    )]
    UnknownField {
        /// The message holding it.
        place: MessagePlace,
        /// Its path in the message: `reasoning`, `tool_calls[0].function.strict`.
        field: String,
    },
    /// A content part of a message holds more than its text (an image's `image_url`,
    /// Anthropic's `cache_control`): a message's content is read as the text of its parts,
    /// so no release keeps it.
    #[error(
        "{place} holds {field:?}, which fusion would drop: it keeps the text of a message's content parts and nothing else; remove {field:?} to import the text"
    )]
    ContentPart {
        /// The message holding it.
        place: MessagePlace,
        /// Its path in the message: `content[1].image_url`.
        field: String,
    },
    /// A `jsonl` file (a file-system session file) ends inside a batch: its last lines
    /// carry the file-system backend's batch marker (`fusion_batch_more`, more lines
    /// follow) and the batch's last line is missing. The backend stopped while appending
    /// it, and its own load leaves those lines out; imported, they would be messages the
    /// store never held.
    #[error(
        "{} a batch of messages whose end is missing (\"fusion_batch_more\" says more lines follow): the file-system backend stopped while appending it, and its own load leaves it out; remove those lines to import the rest",
        if first_line == last_line { format!("line {first_line} begins") } else { format!("line {first_line} to line {last_line} begin") }
    )]
    UnfinishedBatch {
        /// The first line of the unfinished batch, counted from 1.
        first_line: usize,
        /// The last line of the file, counted from 1.
        last_line: usize,
    },
}

/// Where a message is in an import: what [`ImportError`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessagePlace {
    /// A line of a `jsonl` file, counted from 1 (blank lines too): shown as `line 3`.
    Line(usize),
    /// A message of a `json` export's `messages`, counted from 1: shown as `message 3`.
    Message(usize),
}

impl std::fmt::Display for MessagePlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessagePlace::Line(line) => write!(f, "line {line}"),
            MessagePlace::Message(n) => write!(f, "message {n}"),
        }
    }
}
