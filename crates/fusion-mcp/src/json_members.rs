//! Reading the members of a JSON object from its first or last bytes alone, without the
//! rest: what a stdio server's line too long to be held whole is seen by
//! ([`checked`](crate::checked) reads a response's `jsonrpc`, `id` and `method` so).

use serde_json::Value;

/// A member of a JSON object, as `(key, value)` with their quotes.
pub type Member<'a> = (&'a [u8], &'a [u8]);

/// The members of a JSON object whose first bytes are `text`, as `(key, value)` with
/// their quotes, read until one goes past `text`; and the key of the member whose value
/// goes past it, if one does.
pub fn leading_members(text: &[u8]) -> (Vec<Member<'_>>, Option<&[u8]>) {
    let mut members = Vec::new();
    let mut at = skip_space(text, 0);
    if text.get(at) != Some(&b'{') {
        return (members, None);
    }
    loop {
        at = skip_space(text, at + 1);
        let Some(key_end) = string_end(text, at) else {
            break;
        };
        let key = &text[at..key_end];
        at = skip_space(text, key_end);
        if text.get(at) != Some(&b':') {
            break;
        }
        at = skip_space(text, at + 1);
        let Some(value_end) = value_end(text, at) else {
            return (members, (at < text.len()).then_some(key));
        };
        members.push((key, &text[at..value_end]));
        at = skip_space(text, value_end);
        if text.get(at) != Some(&b',') {
            break;
        }
    }
    (members, None)
}

/// The last members of a JSON object whose last bytes are `text`
/// (`…,"jsonrpc":"2.0","id":7}`), as `(key, value)` with their quotes, last first, as far
/// as their values are strings or numbers.
pub fn trailing_members(text: &[u8]) -> Vec<Member<'_>> {
    let mut members = Vec::new();
    let Some(mut text) = trim_end(text).strip_suffix(b"}") else {
        return members;
    };
    loop {
        text = trim_end(text);
        let Some(value) = scalar_start(text) else {
            break;
        };
        let Some(rest) = trim_end(&text[..value]).strip_suffix(b":") else {
            break;
        };
        let rest = trim_end(rest);
        let Some(key) = rest.ends_with(b"\"").then(|| string_start(rest)).flatten() else {
            break;
        };
        // A member only when what comes before it shows it is one of the object's own.
        let before = trim_end(&rest[..key]);
        let member = (&rest[key..], &text[value..]);
        match before.last() {
            Some(b',') => {
                members.push(member);
                text = &before[..before.len() - 1];
            }
            Some(b'{') => {
                members.push(member);
                break;
            }
            _ => break,
        }
    }
    members
}

/// Where the string or number `text` ends with starts.
fn scalar_start(text: &[u8]) -> Option<usize> {
    if text.ends_with(b"\"") {
        return string_start(text);
    }
    let number = |b: &u8| b.is_ascii_digit() || b"+-.eE".contains(b);
    let start = text.iter().rposition(|b| !number(b)).map_or(0, |at| at + 1);
    (start < text.len()).then_some(start)
}

/// Where the JSON string `text` ends with starts: the last quote before its closing one
/// that no backslash escapes.
fn string_start(text: &[u8]) -> Option<usize> {
    (0..text.len().checked_sub(1)?).rev().find(|&at| {
        text[at] == b'"' && text[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    })
}

/// `text` as an `id`: a JSON number or string.
pub fn scalar_id(text: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(text)
        .ok()
        .filter(|id| id.is_number() || id.is_string())
}

/// Where the JSON value starting at `at` ends; `None` when it goes past `text`.
fn value_end(text: &[u8], at: usize) -> Option<usize> {
    match text.get(at)? {
        b'"' => string_end(text, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < text.len() {
                match text[i] {
                    b'"' => {
                        i = string_end(text, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let end = text[at..].iter().position(|b| b",}] \t\r\n".contains(b))?;
            Some(at + end)
        }
    }
}

/// Where the JSON string starting at `at` ends (past its closing quote).
fn string_end(text: &[u8], at: usize) -> Option<usize> {
    if text.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    while i < text.len() {
        match text[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// `at` moved past the whitespace there.
pub fn skip_space(text: &[u8], at: usize) -> usize {
    at + text.get(at..).map_or(0, |rest| {
        rest.iter().take_while(|b| b.is_ascii_whitespace()).count()
    })
}

/// `text` without its trailing whitespace.
pub fn trim_end(text: &[u8]) -> &[u8] {
    let kept = text.len()
        - text
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    &text[..kept]
}
