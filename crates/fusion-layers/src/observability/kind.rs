//! The error kind of a failed storage call: a short, stable snake_case name of its
//! [`Error`] variant, the `kind` label of `fusion_storage_errors_total` and the
//! `error_kind` field of the span.

use fusion_core::Error;

/// The kind of `err`, stable across releases, so dashboards and alerts can key on it.
///
/// One name per [`Error`] variant: `invalid_session_id`, `corrupt`, `invalid_message`,
/// `backend`, `conflict`, `invalid_message_id`, `invalid_meta`, `invalid_query`, `not_owner`, `title_changed`, `unsupported`, `io`,
/// `serialization`, `config`, `feature_disabled`, `llm`, `tool`, and `other` for a variant
/// added to [`Error`] after this layer was written.
pub fn error_kind(err: &Error) -> &'static str {
    match err {
        Error::InvalidSessionId { .. } => "invalid_session_id",
        Error::Corrupt { .. } => "corrupt",
        Error::InvalidMessage { .. } => "invalid_message",
        Error::Backend { .. } => "backend",
        Error::Conflict { .. } => "conflict",
        Error::InvalidMessageId { .. } => "invalid_message_id",
        Error::InvalidMeta(_) => "invalid_meta",
        Error::InvalidQuery(_) => "invalid_query",
        Error::NotOwner { .. } => "not_owner",
        Error::TitleChanged { .. } => "title_changed",
        Error::Unsupported { .. } => "unsupported",
        Error::Io { .. } => "io",
        Error::Serialization(_) => "serialization",
        Error::Config(_) => "config",
        Error::FeatureDisabled { .. } => "feature_disabled",
        Error::Llm { .. } => "llm",
        Error::Tool { .. } => "tool",
        // `Error` is `#[non_exhaustive]`: a variant added later still gets a kind.
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_snake_case_names_of_the_variant() {
        let cases = [
            (Error::corrupt("fs", "s", "line 3"), "corrupt"),
            (Error::Config("bad url".into()), "config"),
            (
                Error::Conflict {
                    backend: "memory",
                    session_id: "s".into(),
                    detail: "moved".into(),
                },
                "conflict",
            ),
            (
                Error::Unsupported {
                    backend: "custom",
                    operation: "session metadata",
                },
                "unsupported",
            ),
            (
                Error::TitleChanged {
                    session_id: "s".into(),
                    expected: None,
                    found: Some("t".into()),
                },
                "title_changed",
            ),
            (Error::io("/tmp/x", std::io::Error::other("disk")), "io"),
            (
                fusion_core::MessageId::parse("a b").unwrap_err(),
                "invalid_message_id",
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(error_kind(&err), kind, "{err}");
        }
    }
}
