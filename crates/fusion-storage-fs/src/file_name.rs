//! Session id <-> file name: an injective encoding that is safe on every common file system.
//!
//! Ids are already restricted by [`SessionId`] to ASCII letters, digits and `- _ . @ : +`,
//! not starting with `.`, so no id can name a path outside the directory. What is left to
//! solve is portability:
//! - case-insensitive file systems (macOS, Windows) would merge `Alice` and `alice`, and
//!   Windows forbids `:` in names, so uppercase letters, `:` and `+` are percent-encoded
//!   with uppercase hex (`Alice` -> `%41lice`, `tenant:42` -> `tenant%3A42`). Only
//!   `[a-z0-9-_.@]` appear literally and `%` always starts an escape, so even a file
//!   system that folds case keeps every name distinct;
//! - Windows reserves device names (`con`, `nul`, `com1`, ...) even with an extension, so
//!   a stem whose first dot-separated part is one of them gets its first letter escaped
//!   (`con` -> `%63on`);
//! - most file systems limit a name to 255 bytes, and an id of 128 uppercase letters
//!   would encode to 384. A stem longer than [`MAX_READABLE`] is instead written as `+`
//!   followed by the id in lowercase base32 (at most 206 bytes). `+` is escaped in the
//!   readable form, so the two forms never collide.
//!
//! Decoding accepts only the canonical name of a valid id (it re-encodes and compares), so
//! stray files such as `notes.jsonl` or a hand-made `%61.jsonl` are never mistaken for a
//! session, and each session has exactly one file name.

use std::path::Path;

use fusion_core::SessionId;

/// The extension of session files.
pub(crate) const SESSION_SUFFIX: &str = ".jsonl";

/// The listing index's directory inside the session directory (see [`crate::index`]).
/// Hidden, and never a session file name (session files end in `.jsonl`).
pub(crate) const INDEX_DIR: &str = ".fusion-index";

/// The longest readable stem; longer ones use the base32 form. Chosen so that the longest
/// derived name (`.{stem}.lock`) stays well under the common 255-byte limit.
const MAX_READABLE: usize = 200;

/// Marks a base32 stem. Never the first byte of a readable stem, where `+` is escaped.
const BASE32_MARK: char = '+';

const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Windows device names, reserved whatever the extension (`nul.jsonl` is the device).
const WINDOWS_RESERVED: &[&str] = &[
    "con", "prn", "aux", "nul", "com0", "com1", "com2", "com3", "com4", "com5", "com6", "com7",
    "com8", "com9", "lpt0", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// The file-name stem of a valid session id; every file of the session derives from it.
pub(crate) fn stem(id: &str) -> String {
    debug_assert!(SessionId::validate(id).is_ok(), "unvalidated id {id:?}");
    let mut out = String::with_capacity(id.len() + 8);
    for b in id.bytes() {
        if is_literal(b) {
            out.push(char::from(b));
        } else {
            push_escape(&mut out, b);
        }
    }
    let first_part = out.split('.').next().unwrap_or_default();
    if WINDOWS_RESERVED.contains(&first_part) {
        // Escaping the first byte breaks the device name and stays injective: a literal
        // `%` never occurs, so `%63on` can only come from `con`.
        let first = out.as_bytes()[0];
        let mut escaped = String::with_capacity(out.len() + 2);
        push_escape(&mut escaped, first);
        escaped.push_str(&out[1..]);
        out = escaped;
    }
    if out.len() > MAX_READABLE {
        return base32_stem(id);
    }
    out
}

/// The session file name: `{stem}.jsonl`.
pub(crate) fn session_file_name(id: &str) -> String {
    format!("{}{SESSION_SUFFIX}", stem(id))
}

/// The session's lock file: hidden, so a person listing the directory sees only sessions.
/// Ids never start with `.`, so no session file can start with one either.
pub(crate) fn lock_file_name(id: &str) -> String {
    hidden_name(id, LOCK_SUFFIX)
}

/// The temporary file a `save` writes before renaming it over the session file. Only the
/// holder of the session lock writes it, so one fixed name per session is enough, and a
/// leftover from a crash is simply overwritten by the next `save`.
pub(crate) fn temp_file_name(id: &str) -> String {
    hidden_name(id, TEMP_SUFFIX)
}

/// The session's metadata file (see [`crate::meta_file`]), hidden like the lock file.
pub(crate) fn meta_file_name(id: &str) -> String {
    hidden_name(id, META_SUFFIX)
}

/// The temporary file a metadata write renames over the metadata file.
///
/// Its suffix is one no other file of any session ends with: `.x.meta.tmp`, the name of
/// earlier releases, is also the save's temporary file of session `x.meta`, and the two
/// are written under different locks, so a metadata write on `x` and a save of `x.meta`
/// at once could rename one's content over the other's file.
pub(crate) fn meta_temp_file_name(id: &str) -> String {
    hidden_name(id, META_TEMP_SUFFIX)
}

/// The copy of a hard-linked lock file, before it is renamed over it (see [`crate::lock`]):
/// what a crash in between leaves, which a `delete` removes.
pub(crate) fn lock_temp_file_name(id: &str) -> String {
    hidden_name(id, LOCK_TEMP_SUFFIX)
}

/// The suffixes of a session's hidden files, named `.{stem}{suffix}`: written by the
/// functions above and read back by [`id_from_path`] from this one list (longest first
/// where one ends another: `.x.lock-tmp` is of `x`, not of `x.lock-`).
const LOCK_SUFFIX: &str = ".lock";
/// The new lock file that replaces a hard-linked one, `.{stem}.lock-tmp` (the lock file's
/// name and `-tmp`: see [`crate::lock`]); like `.meta-tmp`, a suffix nothing else ends with.
const LOCK_TEMP_SUFFIX: &str = ".lock-tmp";
const TEMP_SUFFIX: &str = ".tmp";
const META_SUFFIX: &str = ".meta";
const META_TEMP_SUFFIX: &str = ".meta-tmp";
const HIDDEN_SUFFIXES: [&str; 5] = [
    META_TEMP_SUFFIX,
    LOCK_TEMP_SUFFIX,
    LOCK_SUFFIX,
    META_SUFFIX,
    TEMP_SUFFIX,
];

/// `.{stem}{suffix}`: a hidden file of session `id`.
fn hidden_name(id: &str, suffix: &str) -> String {
    format!(".{}{suffix}", stem(id))
}

/// The id whose [`stem`] is `stem`, or `None` if `stem` is not the canonical stem of a
/// valid id (the names of the index's marker files, see [`crate::index`]).
pub(crate) fn id_from_stem(stem: &str) -> Option<String> {
    let id = match stem.strip_prefix(BASE32_MARK) {
        Some(encoded) => base32_decode(encoded)?,
        None => percent_decode(stem)?,
    };
    let id = String::from_utf8(id).ok()?;
    (SessionId::validate(&id).is_ok() && self::stem(&id) == stem).then_some(id)
}

/// The session id a directory entry stores, or `None` for any other file (lock and temp
/// files, non-canonical names, files of other programs).
///
/// Public so tools that handle session files by name (say, importing `%41lice.jsonl`
/// copied out of a sessions directory) recover the id rather than the encoded name.
///
/// ```
/// use fusion_storage_fs::session_id_from_file_name;
///
/// assert_eq!(session_id_from_file_name("%41lice.jsonl").as_deref(), Some("Alice"));
/// assert_eq!(session_id_from_file_name("notes.txt"), None);
/// ```
pub fn id_from_file_name(name: &str) -> Option<String> {
    id_from_stem(name.strip_suffix(SESSION_SUFFIX)?)
}

/// The session one of whose files `path` names (its data, lock, metadata or temporary
/// file), or `None` for any other file, such as those of the index: what an error about
/// the file is reported against.
pub(crate) fn id_from_path(path: &Path) -> Option<String> {
    if path.components().any(|part| part.as_os_str() == INDEX_DIR) {
        // Marker files there are named by a session's stem, and `x.jsonl` is one.
        return None;
    }
    let name = path.file_name()?.to_str()?;
    if let Some(id) = id_from_file_name(name) {
        return Some(id);
    }
    let hidden = name.strip_prefix('.')?;
    HIDDEN_SUFFIXES
        .iter()
        .find_map(|suffix| id_from_stem(hidden.strip_suffix(suffix)?))
}

/// Bytes written as themselves: lowercase so no two names differ only in case, and
/// nothing that Windows, shells or URLs treat specially.
fn is_literal(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b'@')
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

fn percent_decode(stem: &str) -> Option<Vec<u8>> {
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn base32_stem(id: &str) -> String {
    let mut out = String::with_capacity(1 + id.len().div_ceil(5) * 8);
    out.push(BASE32_MARK);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in id.as_bytes() {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                BASE32_ALPHABET[((buffer >> bits) & 31) as usize],
            ));
        }
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize],
        ));
    }
    out
}

fn base32_decode(encoded: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in encoded.bytes() {
        let value = BASE32_ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    // Leftover padding bits are not checked here: the caller's re-encoding comparison
    // rejects every non-canonical spelling.
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const ID_CHARS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@:+";

    /// Every valid id of one or two characters: all the escape and boundary cases.
    fn short_ids() -> Vec<String> {
        let chars: Vec<char> = ID_CHARS.chars().collect();
        let mut ids: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        for &a in &chars {
            for &b in &chars {
                ids.push(format!("{a}{b}"));
            }
        }
        ids.retain(|id| SessionId::validate(id).is_ok());
        ids
    }

    fn edge_ids() -> Vec<String> {
        vec![
            "user-123".into(),
            "alice@example.com".into(),
            "tenant:42:chat-7".into(),
            "B_c+d.e".into(),
            "con".into(),
            "CON".into(),
            "nul.txt".into(),
            "com1".into(),
            "lpt9:x".into(),
            "console".into(),
            "x".repeat(128),
            "X".repeat(128),
            ":".repeat(128),
            format!("{}{}", "a".repeat(60), "Z".repeat(47)),
            "a".repeat(200),
        ]
        .into_iter()
        .filter(|id: &String| SessionId::validate(id).is_ok())
        .collect()
    }

    #[test]
    fn every_valid_id_round_trips() {
        for id in short_ids().into_iter().chain(edge_ids()) {
            let name = session_file_name(&id);
            assert_eq!(
                id_from_file_name(&name).as_deref(),
                Some(id.as_str()),
                "{name}"
            );
        }
    }

    #[test]
    fn names_are_distinct_even_when_case_is_folded() {
        let ids: Vec<String> = short_ids().into_iter().chain(edge_ids()).collect();
        let folded: HashSet<String> = ids
            .iter()
            .map(|id| session_file_name(id).to_ascii_lowercase())
            .collect();
        assert_eq!(folded.len(), ids.len());
    }

    #[test]
    fn names_are_portable_and_short() {
        for id in short_ids().into_iter().chain(edge_ids()) {
            for name in [
                session_file_name(&id),
                lock_file_name(&id),
                temp_file_name(&id),
            ] {
                assert!(name.len() <= 255, "{name} is {} bytes", name.len());
                assert!(
                    name.bytes()
                        .all(|b| is_literal(b) || b == b'%' || b == b'+' || b.is_ascii_uppercase()),
                    "{name}"
                );
                let device = name.trim_start_matches('.').split('.').next().unwrap();
                assert!(!WINDOWS_RESERVED.contains(&device), "{name}");
            }
        }
        assert_eq!(
            session_file_name("tenant:42:Chat"),
            "tenant%3A42%3A%43hat.jsonl"
        );
        assert_eq!(session_file_name("con"), "%63on.jsonl");
        assert!(session_file_name(&"X".repeat(128)).starts_with('+'));
    }

    #[test]
    fn every_file_of_a_session_names_it() {
        for id in ["user-1", "Tenant:42", &"X".repeat(128)] {
            for name in [
                session_file_name(id),
                lock_file_name(id),
                meta_file_name(id),
                temp_file_name(id),
                meta_temp_file_name(id),
            ] {
                let path = Path::new("sessions").join(&name);
                assert_eq!(id_from_path(&path).as_deref(), Some(id), "{name}");
            }
        }
        for path in [
            "sessions/.fusion-index/lock",
            "sessions/.fusion-index/owner/u/x.jsonl",
            "sessions/.fusion-index/journal.tmp",
            "sessions/notes.txt",
            "sessions/.user",
        ] {
            assert_eq!(id_from_path(Path::new(path)), None, "{path}");
        }
    }

    /// Ids may hold dots, so one id's file must never be named like another's: a suffix
    /// one kind of file ends with must not end another kind's name plus some stem.
    #[test]
    fn no_two_files_of_any_two_sessions_share_a_name() {
        let names = |id: &str| {
            [
                session_file_name(id),
                lock_file_name(id),
                meta_file_name(id),
                temp_file_name(id),
                meta_temp_file_name(id),
            ]
        };
        let mut ids = vec!["x".to_string()];
        for suffix in ["jsonl", "lock", "meta", "tmp", "meta-tmp", "meta.tmp"] {
            ids.push(format!("x.{suffix}"));
            ids.push(format!("x-{suffix}"));
        }
        let mut seen = std::collections::HashMap::new();
        for id in &ids {
            for name in names(id) {
                if let Some(other) = seen.insert(name.clone(), id.clone()) {
                    assert_eq!(&other, id, "{name} is a file of both {other:?} and {id:?}");
                }
            }
        }
    }

    #[test]
    fn other_files_are_not_sessions() {
        for name in [
            "notes.txt",
            "user.json",
            ".user.lock",
            ".user.tmp",
            ".jsonl",
            "%61.jsonl",
            "%4a.jsonl",
            "A.jsonl",
            "a:b.jsonl",
            "con.jsonl",
            "%2.jsonl",
            "%zz.jsonl",
            "+.jsonl",
            "+mfrgg.jsonl",
            "+MFRGG.jsonl",
            "a%2Fb.jsonl",
            "%2E.jsonl",
        ] {
            assert_eq!(id_from_file_name(name), None, "{name}");
        }
    }
}
