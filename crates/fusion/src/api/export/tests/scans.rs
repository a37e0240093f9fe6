//! How many times a `json` import reads the whole text.

use super::super::*;
use super::{meta, sample};

fn scans_of(text: &str) -> (Result<Imported, ImportError>, usize) {
    let before = WHOLE_SCANS.with(|scans| scans.get());
    let read = read(text);
    (read, WHOLE_SCANS.with(|scans| scans.get()) - before)
}

/// A `json` export of a version this release reads is scanned once: its version was read
/// in a scan of its own before, every message tokenized twice. One that is not (a newer
/// version, a field of another type) is read again for the error that says so, and its
/// place, as before.
#[test]
fn a_json_export_is_scanned_once() {
    let text = write(ExportFormat::Json, "s-1", &meta(), &sample()).unwrap();
    let (back, scans) = scans_of(&text);
    assert_eq!(back.unwrap().messages, sample());
    assert_eq!(scans, 1);
    let newer = text.replacen("\"version\": 1", "\"version\": 2", 1);
    let (err, _) = scans_of(&newer);
    assert!(
        matches!(err, Err(ImportError::UnknownVersion { found: 2 })),
        "{err:?}"
    );
    let (err, _) = scans_of(&text.replacen("\"id\": \"s-1\"", "\"id\": 7", 1));
    let err = err.unwrap_err();
    assert!(
        matches!(err, ImportError::Document(_))
            && format!("{err:?}").contains("expected a string\", line: 3"),
        "{err:?}"
    );
}
