//! Escaping what a screen would hide or reorder, for showing a model's tool calls to a
//! person who must judge them.
//!
//! [`ApprovalRequest::display`](crate::ApprovalRequest::display) makes a call one line;
//! [`escape_hidden`] makes sure that what a person reads is what the call holds.
//! Whatever shows a call to a person (`fusion chat`'s prompt, a web page's approval card,
//! any [`Approver`](crate::Approver)) should pass the line, and the arguments it shows
//! whole, through it.
//!
//! ```
//! use fusion_agent::escape_hidden;
//!
//! // U+202E turns the rest of the line around: `"exe.txt"` would read `"txt.exe"`.
//! let shown = escape_hidden("{\"path\":\"\u{202e}txt.exe\"}");
//! assert_eq!(shown, r#"{"path":"\u202etxt.exe"}"#);
//! ```

/// `json` with every character a display would not show as itself written as a JSON
/// `\uXXXX` escape, so the text still reads, and parses, as the same JSON.
///
/// Escaped: control characters other than `\n` (the C0 block, which JSON escapes
/// already inside strings but a name shown outside one may hold, DEL and the C1 block,
/// which JSON leaves as they are, among them the terminal's CSI `\u009b`), and the
/// invisible characters that join, hide or reorder what is shown: bidirectional
/// overrides and isolates, zero-width spaces and joiners, line and paragraph separators,
/// the byte order mark, soft hyphens, Hangul fillers, variation selectors and tag
/// characters (those past U+FFFF as their two UTF-16 surrogates, as JSON writes them).
/// A model could otherwise make `"txt.exe"` read as `"exe.txt"`, or send a terminal
/// escape sequence that rewrites the screen, in a call a person is asked to approve.
///
/// `\n` stays so that pretty-printed JSON keeps its lines; inside JSON strings it is
/// escaped already. Text with nothing to escape comes back unchanged, and escaping is
/// idempotent: its output has only ASCII where it changed anything. Such characters only
/// occur inside JSON strings, where `\u` escapes are valid; text that is not JSON (a
/// tool's name) is shown with the same escapes.
///
/// Cost: one pass over `json`, a second (to copy) only when something is escaped.
pub fn escape_hidden(json: &str) -> String {
    if !json.contains(hidden) {
        return json.to_string();
    }
    let mut out = String::with_capacity(json.len() + 12);
    for c in json.chars() {
        if hidden(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `c` is one that [`escape_hidden`] escapes.
fn hidden(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(
            c,
            '\u{ad}'
                | '\u{34f}'
                | '\u{61c}'
                | '\u{115f}'..='\u{1160}'
                | '\u{17b4}'..='\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fffb}'
                | '\u{13430}'..='\u{1343f}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e0fff}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bidi_override_cannot_turn_a_name_around() {
        assert_eq!(
            escape_hidden("\"report\u{202e}txt.exe\""),
            r#""report\u202etxt.exe""#
        );
        // The isolates (U+2066..U+2069) and the Arabic letter mark reorder too.
        assert_eq!(
            escape_hidden("a\u{2067}b\u{2069}\u{61c}"),
            r"a\u2067b\u2069\u061c"
        );
    }

    #[test]
    fn zero_width_characters_are_shown() {
        assert_eq!(
            escape_hidden("rm\u{200b}-rf \u{feff}/\u{2060}\u{ad}"),
            r"rm\u200b-rf \ufeff/\u2060\u00ad"
        );
    }

    #[test]
    fn escape_and_c1_controls_cannot_reach_a_terminal() {
        // ESC [ 2 J clears the screen; U+009B is the one-character CSI.
        let shown = escape_hidden("\u{1b}[2Jok\u{9b}31m\u{7f}\r\t");
        assert_eq!(shown, r"\u001b[2Jok\u009b31m\u007f\u000d\u0009");
        assert!(!shown.contains(char::is_control), "{shown:?}");
    }

    #[test]
    fn astral_tag_characters_are_written_as_surrogate_pairs() {
        // U+E0041 TAG LATIN CAPITAL LETTER A, invisible, can smuggle text to a model.
        assert_eq!(escape_hidden("a\u{e0041}b"), r"a\udb40\udc41b");
        assert_eq!(escape_hidden("\u{e007f}"), r"\udb40\udc7f");
    }

    #[test]
    fn format_controls_past_the_basic_plane_are_shown() {
        // Egyptian hieroglyph, shorthand and musical format controls: invisible too.
        assert_eq!(
            escape_hidden("a\u{13430}b\u{1bca0}c\u{1d173}"),
            r"a\ud80d\udc30b\ud82f\udca0c\ud834\udd73"
        );
    }

    #[test]
    fn plain_text_and_line_breaks_stay_as_they_are() {
        let plain = "{\n  \"path\": \"é ü 日本 😀 notes.txt\"\n}";
        assert_eq!(escape_hidden(plain), plain);
    }

    #[test]
    fn escaped_json_reads_back_as_the_same_value_and_escaping_twice_changes_nothing() {
        let arguments = serde_json::json!({
            "path": "\u{202e}txt.a\u{7f}\u{85}",
            "tag\u{e0041}": "\u{feff}x\u{2028}",
            "plain": "é ü 日本\tok",
        });
        let json = serde_json::to_string_pretty(&arguments).unwrap();
        let shown = escape_hidden(&json);
        assert_eq!(shown.lines().count(), json.lines().count());
        let read: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(read, arguments);
        assert_eq!(escape_hidden(&shown), shown);
    }
}
