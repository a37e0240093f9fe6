//! Context records: the summaries and pruning decisions a session appends to its stored
//! history, how they are written, read back, and applied to a message.
//!
//! A record is a system message marked in its `metadata` (which is stored but never sent
//! to the model): `{"fusion_summary": {"covers": 42}}` for a summary, `{"fusion_prune":
//! {"tool_outputs": [3, 7], "chatter": [2]}}` for a pruning. Every other module of
//! [`crate::context`] reads records through this one, so the stored format lives in one
//! place.

use std::borrow::Cow;
use std::collections::HashMap;

use fusion_core::{ChatMessage, Role};
use serde_json::{Value, json};

use crate::react_text::OBSERVATION_PREFIX;

/// Metadata key of a summary record: `{"covers": N}`.
pub const SUMMARY_KEY: &str = "fusion_summary";

/// The first line of a summary record's text, telling the model what follows.
pub const SUMMARY_HEADER: &str = "Summary of the earlier conversation:";

/// Metadata key of a prune record: `{"tool_outputs": [indices], "chatter": [indices]}`.
pub const PRUNE_KEY: &str = "fusion_prune";

/// Whether `message` is a context record (a stored summary or pruning decision), which
/// shapes the view and is never sent as itself.
pub fn is_context_record(message: &ChatMessage) -> bool {
    message.role == Role::System
        && !message.metadata.is_empty()
        && (message.metadata.contains_key(SUMMARY_KEY) || message.metadata.contains_key(PRUNE_KEY))
}

/// A summary record covering history indices `0..covers` (except a leading system prompt).
pub fn summary_record(summary: &str, covers: usize) -> ChatMessage {
    ChatMessage::system(format!("{SUMMARY_HEADER}\n{}", summary.trim()))
        .with_metadata(SUMMARY_KEY, json!({ "covers": covers }))
}

/// What a summary record covers, if `message` is a well-formed one.
pub(crate) fn covers(message: &ChatMessage) -> Option<usize> {
    let covers = message.metadata.get(SUMMARY_KEY)?.get("covers")?.as_u64()?;
    usize::try_from(covers).ok()
}

/// The text of a summary record without its header.
pub(crate) fn summary_text(record: &ChatMessage) -> &str {
    let text = record.content.strip_prefix(SUMMARY_HEADER);
    text.unwrap_or(&record.content).trim()
}

/// How a pruned message is shortened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// A tool result (or text-mode observation) replaced by [`pruned_tool_output`].
    ToolOutput,
    /// An assistant tool-call message without its text; the calls stay.
    Chatter,
}

/// The marker that stands in for `bytes` bytes of pruned tool output.
pub fn pruned_tool_output(bytes: usize) -> String {
    format!("[pruned: {bytes} bytes of tool output]")
}

/// The context record listing newly pruned history indices.
pub(crate) fn prune_record(tool_outputs: &[usize], chatter: &[usize]) -> ChatMessage {
    ChatMessage::system(format!(
        "[Fusion context record, not shown to the model: {} tool outputs and {} assistant \
         notes above are shortened in the model's view; the originals are kept here.]",
        tool_outputs.len(),
        chatter.len()
    ))
    .with_metadata(
        PRUNE_KEY,
        json!({ "tool_outputs": tool_outputs, "chatter": chatter }),
    )
}

/// Adds the marks of `record` (stored at index `at`) to `marks`. Indices at or after the
/// record cannot have been decided by it and are ignored, as is anything malformed.
pub(crate) fn read_marks(record: &ChatMessage, at: usize, marks: &mut HashMap<usize, Mark>) {
    let Some(value) = record.metadata.get(PRUNE_KEY) else {
        return;
    };
    for (field, mark) in [
        ("tool_outputs", Mark::ToolOutput),
        ("chatter", Mark::Chatter),
    ] {
        let indices = value.get(field).and_then(Value::as_array);
        for index in indices.into_iter().flatten().filter_map(Value::as_u64) {
            if let Ok(index) = usize::try_from(index)
                && index < at
            {
                marks.insert(index, mark);
            }
        }
    }
}

/// `message` as the model sees it under `mark`. A mark that does not fit the message
/// (storage edited by hand) is ignored.
pub(crate) fn apply(message: &ChatMessage, mark: Mark) -> Cow<'_, ChatMessage> {
    let content = match mark {
        Mark::ToolOutput if message.role == Role::Tool => pruned_tool_output(output_bytes(message)),
        Mark::ToolOutput if message.role == Role::User => format!(
            "{OBSERVATION_PREFIX}{}",
            pruned_tool_output(output_bytes(message))
        ),
        Mark::Chatter if message.role == Role::Assistant && message.has_tool_calls() => {
            String::new()
        }
        _ => return Cow::Borrowed(message),
    };
    // Built field by field so the pruned text is never copied. The id and metadata stay:
    // the view still reads them (which reply an observation answers, whether a result is
    // an "interrupted" one), and they are never sent.
    let mut pruned = ChatMessage::new(message.role, content);
    pruned.id = message.id.clone();
    pruned.tool_calls = message.tool_calls.clone();
    pruned.tool_call_id = message.tool_call_id.clone();
    pruned.name = message.name.clone();
    pruned.metadata = message.metadata.clone();
    Cow::Owned(pruned)
}

/// Bytes of tool output a result or observation carries.
pub(crate) fn output_bytes(message: &ChatMessage) -> usize {
    let content = &message.content;
    match message.role {
        Role::User => content
            .strip_prefix(OBSERVATION_PREFIX)
            .unwrap_or(content)
            .len(),
        _ => content.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_metadata() {
        let record = summary_record("  The user likes blue.\n", 7);
        assert_eq!(covers(&record), Some(7));
        assert_eq!(
            record.content,
            format!("{SUMMARY_HEADER}\nThe user likes blue.")
        );
        assert!(is_context_record(&record));
        assert_eq!(covers(&ChatMessage::system("plain")), None);
    }
}
