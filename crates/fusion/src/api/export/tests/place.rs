//! [`message_place`] names a message as [`read`]'s own errors do.

use super::super::*;

/// With a byte-order mark, CRLF line ends, blank lines and lines of blanks alone, the
/// place `message_place` gives each message is the one `read` names it by when it holds
/// a field this release does not know; past the last message there is none. A `json`
/// export's messages are counted in its `messages`, wherever its lines break.
#[test]
fn message_place_names_a_message_as_read_does() {
    let plain = r#"{"role":"user","content":"a"}"#;
    let odd = r#"{"role":"user","content":"b","later":"x"}"#;
    // Messages at lines 2, 3, 5 and 8 of the file.
    let lines = ["", plain, plain, " \t", plain, "", "\u{a0}", plain];
    for (index, line) in [(0, 2), (1, 3), (2, 5), (3, 8)] {
        let mut written = lines.map(str::to_string);
        written[line - 1] = odd.to_string();
        for (end, bom) in [("\n", ""), ("\r\n", "\u{feff}")] {
            let text = format!("{bom}{}{end}", written.join(end));
            let place = message_place(&text, index);
            assert_eq!(place, Some(MessagePlace::Line(line)), "{text:?}");
            let err = read(&text).unwrap_err();
            assert!(
                matches!(err, ImportError::UnknownField { place: at, .. } if Some(at) == place),
                "{text:?}: {err:?}"
            );
            assert_eq!(message_place(&text, 4), None, "{text:?}");
        }
    }
    let json = format!("\u{feff}{{\r\n\"messages\": [\r\n{plain},\r\n\r\n{odd}\r\n]\r\n}}\r\n");
    assert_eq!(message_place(&json, 1), Some(MessagePlace::Message(2)));
    let err = read(&json).unwrap_err();
    assert!(
        matches!(
            err,
            ImportError::UnknownField {
                place: MessagePlace::Message(2),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(message_place(&json, 2), None);
    assert_eq!(message_place("", 0), None);
    assert_eq!(message_place("\u{feff} \r\n", 0), None);
}
