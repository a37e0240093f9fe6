//! What [`read`] says is wrong, said of the export (text from anywhere), and of the
//! format it is in.

use super::super::*;
use super::{chain, meta, sample};

/// `read` takes text from anywhere (stdin, memory, a request): what it says of a format,
/// a version or a JSON array names the export, not a file ("or jsonl file", "files
/// without a version", "the file is a JSON array" were said of stdin too).
#[test]
fn what_is_wrong_is_said_of_the_export_not_of_a_file() {
    let messages = r#""messages":[{"role":"user","content":"hi"}]"#;
    let texts = [
        "not json\n".to_string(),
        "[{\"role\":\"user\",\"content\":\"hi\"}]".to_string(),
        format!(r#"{{"version":0,{messages}}}"#),
        format!(r#"{{"version":2,{messages}}}"#),
        "  \n".to_string(),
        r#"{"id":"x","messages":[]}"#.to_string(),
    ];
    for text in texts {
        let err = chain(&read(&text).unwrap_err());
        assert!(!err.contains("file"), "{text}: {err}");
    }
    let newer = read(&format!(r#"{{"version":2,{messages}}}"#)).unwrap_err();
    assert!(
        newer.to_string().ends_with(
            "(and exports without a version); an export written by a newer release needs \
             that release to import it"
        ),
        "{newer}"
    );
    let neither = read("not json\n").unwrap_err().to_string();
    assert!(
        neither.ends_with("or jsonl export (one message per line)"),
        "{neither}"
    );
}

/// A `markdown` export is refused as one: serde's "expected value at line 1 column 1"
/// said nothing of why a transcript fusion wrote cannot be imported.
#[test]
fn a_markdown_export_is_refused_as_one() {
    let text = write(ExportFormat::Markdown, "s", &meta(), &sample()).unwrap();
    let err = chain(&read(&text).unwrap_err());
    assert!(
        err.contains(
            "the export is a markdown transcript, which is for reading and is not read back"
        ) && !err.contains("expected value"),
        "{err}"
    );
    let other = chain(&read("# Notes\n").unwrap_err());
    assert!(!other.contains("markdown"), "{other}");
}

/// UTF-16 without a byte order mark, read as UTF-8 (a NUL beside each character), is
/// refused as such whichever its byte order: serde said "expected value at line 1 column
/// 2" of it. Text merely holding a NUL further on is left to serde, as before.
#[test]
fn utf_16_read_as_utf_8_is_refused_as_such() {
    let text = write(ExportFormat::Jsonl, "s", &meta(), &sample()).unwrap();
    let le: String = text.chars().flat_map(|c| [c, '\0']).collect();
    let be: String = text.chars().flat_map(|c| ['\0', c]).collect();
    for read_as_utf8 in [le, be, "{\0".to_string()] {
        let err = read(&read_as_utf8).unwrap_err();
        assert!(matches!(err, ImportError::Utf16WithoutMark), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("the export is UTF-16 without a byte order mark"),
            "{err}"
        );
    }
    let later = read("{\"a\":\"\0\0\0\0\0\0\0\0\0\0\0\0\"}").unwrap_err();
    assert!(!matches!(later, ImportError::Utf16WithoutMark), "{later:?}");
    assert_eq!(read(&text).unwrap().messages.len(), sample().len());
}
