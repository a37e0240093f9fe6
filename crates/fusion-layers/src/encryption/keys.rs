//! Master keys of the encryption layer: several keys, each named by a short id, the first
//! one current; from bytes in code, from `FUSION_ENCRYPTION_KEY` or from a key file.
//!
//! Key material lives only in [`Zeroizing`] buffers, which wipe it when dropped, and never
//! reaches a `Debug` line or an error message: errors name a key by its id or its position,
//! never by its value (not even the one bad character of a base64 text).

use std::path::Path;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use fusion_core::{Error, Result};
use zeroize::Zeroizing;

/// The environment variable [`EncryptionKeys::from_env`] reads.
pub const KEY_ENV: &str = "FUSION_ENCRYPTION_KEY";

/// The id of a key given without one (a bare base64 key).
pub const DEFAULT_KEY_ID: &str = "default";

/// The length of a master key in bytes (256 bits).
pub const KEY_LEN: usize = 32;

/// The longest key id, in bytes. Ids are stored in every encrypted message.
pub const MAX_KEY_ID_LEN: usize = 32;

/// The most [`EncryptionKeys::from_file`] reads: room for a thousand keys with comments.
/// More is not a key file (`/dev/zero`, an endless pipe, a log named by mistake), which
/// read whole would take the memory.
const MAX_KEY_FILE_LEN: u64 = 64 << 10;

/// The master keys the encryption layer writes and reads with.
///
/// The current key encrypts every new message; every key (current or not) decrypts the
/// messages stored under its id. Rotation is adding a new current key and keeping the old
/// one until [`rekey`](crate::encryption::EncryptionLayer::rekey_store) has re-encrypted
/// the store.
///
/// Text syntax, shared by [`parse`](Self::parse), [`from_env`](Self::from_env) and
/// [`from_file`](Self::from_file): entries `id:base64` (or a bare `base64`, whose id is
/// [`DEFAULT_KEY_ID`]), each the base64 (standard or URL-safe, padding optional) of
/// [`KEY_LEN`] random bytes, separated by commas or new lines; the first entry is current.
/// In a key file, blank lines and lines starting with `#` are ignored. An id is 1 to
/// [`MAX_KEY_ID_LEN`] ASCII letters, digits, `-`, `_` or `.`.
///
/// ```
/// use fusion_layers::encryption::EncryptionKeys;
///
/// let keys = EncryptionKeys::parse(
///     "2025-06:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,\
///      2024-01:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
/// )?;
/// assert_eq!(keys.current_id(), "2025-06");
/// assert_eq!(keys.ids().collect::<Vec<_>>(), ["2025-06", "2024-01"]);
/// // Debug names the ids only.
/// assert!(!format!("{keys:?}").contains("AAEC"));
/// # Ok::<(), fusion_core::Error>(())
/// ```
#[derive(Clone)]
pub struct EncryptionKeys {
    /// The current key first; ids are unique.
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    id: String,
    /// In a block of its own, wiped where it lies when dropped: the list of entries grows by copying
    /// itself to a larger buffer and freeing the old one as it is, which would leave a
    /// copy of every key held inline there in freed memory.
    key: Box<Zeroizing<[u8; KEY_LEN]>>,
}

impl EncryptionKeys {
    /// One current key, `key` under `id`. The caller's copy of `key` stays theirs to wipe.
    pub fn new(id: &str, key: &[u8; KEY_LEN]) -> Result<Self> {
        check_key_id(id)?;
        Ok(Self {
            entries: vec![Entry {
                id: id.to_string(),
                key: Box::new(Zeroizing::new(*key)),
            }],
        })
    }

    /// These keys plus `key` under `id`, which decrypts the messages stored under that id
    /// but encrypts nothing: an older key kept for reading after a rotation.
    ///
    /// An id already loaded, or a key already loaded under another id, is an
    /// [`Error::Config`] naming both ids (never the key): the same key under two ids would
    /// make a rotation to it no rotation at all, and leave which id a message was written
    /// under meaningless.
    pub fn with_previous(mut self, id: &str, key: &[u8; KEY_LEN]) -> Result<Self> {
        check_key_id(id)?;
        if self.key(id).is_some() {
            return Err(Error::Config(format!(
                "encryption key id \"{id}\" is given twice; each key needs an id of its own"
            )));
        }
        if let Some(same) = self.entries.iter().find(|e| same_key(&e.key, key)) {
            return Err(Error::Config(format!(
                "encryption keys \"{}\" and \"{id}\" are the same key; each id needs a key of \
                 its own (a key copied under a new id is no rotation): make a new one with \
                 `openssl rand -base64 {KEY_LEN}`",
                same.id
            )));
        }
        self.entries.push(Entry {
            id: id.to_string(),
            key: Box::new(Zeroizing::new(*key)),
        });
        Ok(self)
    }

    /// Keys from `text` in the syntax described on [`EncryptionKeys`] (commas or new lines
    /// between entries, `#` comments).
    pub fn parse(text: &str) -> Result<Self> {
        parse_entries(text, "encryption keys")
    }

    /// Keys from the environment variable [`KEY_ENV`], or `None` if it is unset.
    ///
    /// Set but blank (empty or whitespace only) is an [`Error::Config`], not `None`: a
    /// deployment that injects a missing secret as an empty string would otherwise run
    /// without a key and write every message in clear text. Unset the variable to run
    /// without encryption.
    pub fn from_env() -> Result<Option<Self>> {
        from_var(std::env::var_os(KEY_ENV))
    }

    /// Keys from the file at `path`, one entry per line, in the syntax described on
    /// [`EncryptionKeys`].
    ///
    /// On Unix a file that others than its owner may read is used, with a warning in the
    /// log once its keys are read: it should be mode 0600 (or 0400). A file refused gets the
    /// error alone. A byte-order mark at its start (some editors
    /// write one) is skipped; a file longer than 64 KiB is refused, unread.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let source = format!("key file {}", path.display());
        let text = read_key_file(path, &source)?;
        let keys = parse_entries(text.strip_prefix('\u{feff}').unwrap_or(&text), &source)?;
        // Once the file is accepted: a warning about a file then refused would come before
        // the error about the same file, as if the mode were what is wrong with it.
        warn_if_readable_by_others(path);
        Ok(keys)
    }

    /// The id of the current key, the one new messages are encrypted with.
    pub fn current_id(&self) -> &str {
        &self.entries[0].id
    }

    /// Every key id, the current one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.id.as_str())
    }

    /// The current key.
    pub(crate) fn current(&self) -> (&str, &[u8; KEY_LEN]) {
        (&self.entries[0].id, &**self.entries[0].key)
    }

    /// The key named `id`, if loaded.
    pub(crate) fn key(&self, id: &str) -> Option<&[u8; KEY_LEN]> {
        self.entries.iter().find(|e| e.id == id).map(|e| &**e.key)
    }

    /// The loaded ids, quoted and comma-separated, for error messages.
    pub(crate) fn describe_ids(&self) -> String {
        let ids: Vec<String> = self.ids().map(|id| format!("\"{id}\"")).collect();
        ids.join(", ")
    }
}

/// Ids only: the keys themselves never reach a log line.
impl std::fmt::Debug for EncryptionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKeys")
            .field("current", &self.current_id())
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Whether `a` and `b` are the same key, compared in time independent of where they differ.
fn same_key(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

/// [`EncryptionKeys::from_env`] of `value`, the variable's value if it is set.
fn from_var(value: Option<std::ffi::OsString>) -> Result<Option<EncryptionKeys>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = match value.into_string() {
        Ok(value) => Zeroizing::new(value),
        Err(raw) => {
            // Wiped before the error: it may be a key with one bad byte.
            drop(Zeroizing::new(raw.into_encoded_bytes()));
            return Err(Error::Config(format!("{KEY_ENV} is not valid UTF-8 text")));
        }
    };
    if value.trim().is_empty() {
        return Err(Error::Config(format!(
            "{KEY_ENV} is set but empty, so it gives no key: set it to the keys, or unset it \
             to run without encryption (messages are then written in clear text)"
        )));
    }
    parse_entries(&value, KEY_ENV).map(Some)
}

/// Refuses an id that could not be stored in the `fusion:enc:v1:<id>:` prefix unambiguously.
pub(crate) fn check_key_id(id: &str) -> Result<()> {
    if is_key_id(id) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid encryption key id {:?}: an id is 1 to {MAX_KEY_ID_LEN} ASCII letters, \
             digits, '-', '_' or '.'",
            id.chars().take(MAX_KEY_ID_LEN + 8).collect::<String>()
        )))
    }
}

/// Whether `id` is a valid key id: 1 to [`MAX_KEY_ID_LEN`] of `[A-Za-z0-9._-]`.
pub(crate) fn is_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The text of the key file at `path`, at most [`MAX_KEY_FILE_LEN`] bytes, in a buffer
/// wiped when dropped (so is every buffer the read grew out of: it starts that large).
fn read_key_file(path: &Path, source: &str) -> Result<Zeroizing<String>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 1));
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(Error::Config(format!(
            "{source} is longer than {} KiB, so it is not a key file",
            MAX_KEY_FILE_LEN >> 10
        )));
    }
    // Checked before the buffer moves: a failed conversion would hand it back in an error,
    // dropped unwiped.
    if std::str::from_utf8(&bytes).is_err() {
        return Err(Error::Config(format!("{source} is not UTF-8 text")));
    }
    let text = String::from_utf8(std::mem::take(&mut *bytes)).expect("checked: UTF-8");
    Ok(Zeroizing::new(text))
}

/// Parses entries separated by commas or new lines; `source` names where they came from
/// in errors, which cite an entry by its position and id, never by its text.
fn parse_entries(text: &str, source: &str) -> Result<EncryptionKeys> {
    let mut keys: Option<EncryptionKeys> = None;
    let entries = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty());
    for (n, entry) in entries.enumerate() {
        let (id, encoded) = entry.split_once(':').unwrap_or((DEFAULT_KEY_ID, entry));
        let id = id.trim();
        // Not echoed: text before a misplaced ':' may be key material.
        if !is_key_id(id) {
            return Err(Error::Config(format!(
                "{source}, entry {}: the text before ':' is not a key id (1 to {MAX_KEY_ID_LEN} \
                 ASCII letters, digits, '-', '_' or '.'){}",
                n + 1,
                mistake_in(entry),
            )));
        }
        let key = decode_key(encoded.trim()).ok_or_else(|| {
            Error::Config(format!(
                "{source}, entry {} (key \"{id}\"): not the base64 of {KEY_LEN} bytes; make a key \
                 with `openssl rand -base64 {KEY_LEN}`{}",
                n + 1,
                mistake_in(entry),
            ))
        })?;
        keys = Some(match keys {
            None => EncryptionKeys::new(id, &key)?,
            // The inner message alone: its own "configuration error: " would be said twice.
            Some(keys) => keys.with_previous(id, &key).map_err(|e| match e {
                Error::Config(message) => Error::Config(format!("{source}: {message}")),
                other => other,
            })?,
        });
    }
    keys.ok_or_else(|| Error::Config(format!("{source} holds no key")))
}

/// The usual mistake that makes `entry` no key, said without any of its text (it may be
/// key material): quotes kept from a shell or an env file, a comment after the key, a
/// space inside it. Empty when none of those is there.
fn mistake_in(entry: &str) -> &'static str {
    if entry.contains(['"', '\'']) {
        "; it holds a quote: give the entry without quotes around it or its key"
    } else if entry.contains('#') {
        "; it holds a '#': a comment goes on a line of its own"
    } else if entry.contains(char::is_whitespace) {
        "; it holds a space: give each key unbroken, on one line"
    } else {
        ""
    }
}

/// The 32 bytes `encoded` is the base64 of, in either alphabet, padded or not.
fn decode_key(encoded: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let engines = [
        GeneralPurpose::new(&base64::alphabet::STANDARD, config),
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, config),
    ];
    engines.iter().find_map(|engine| {
        // Decoded into a wiped buffer of our own, where `Engine::decode` would drop the Vec
        // it decoded into unwiped when the text turns out not to be of its alphabet (the
        // standard one meeting a URL-safe key). Room for a few bytes more than a key, so
        // that a longer text fails as too long rather than being cut.
        let mut bytes = Zeroizing::new([0u8; KEY_LEN + 3]);
        let len = engine.decode_slice(encoded, bytes.as_mut_slice()).ok()?;
        if len != KEY_LEN {
            return None;
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&bytes[..KEY_LEN]);
        Some(key)
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the encryption key file may be read by other users; make it mode 0600"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    const C: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";

    #[test]
    fn a_bare_key_is_the_default_id_and_padding_and_alphabet_do_not_matter() {
        let keys = EncryptionKeys::parse(A).unwrap();
        assert_eq!(keys.current_id(), DEFAULT_KEY_ID);
        let unpadded = EncryptionKeys::parse(A.trim_end_matches('=')).unwrap();
        assert_eq!(keys.current().1, unpadded.current().1);
        let url_safe = "_-8AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(
            EncryptionKeys::parse(url_safe).unwrap().current().1[..2],
            [0xff, 0xef]
        );
    }

    /// Decoded into a buffer a few bytes longer than a key: a text of a byte more, or of
    /// more than the buffer holds, is refused as a key of the wrong length, as is one short.
    #[test]
    fn only_the_base64_of_exactly_32_bytes_is_a_key() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        for len in [0, 31, 33, 35, 36, 64] {
            for text in [
                STANDARD.encode(vec![7; len]),
                URL_SAFE_NO_PAD.encode(vec![0xfb; len]),
            ] {
                assert!(decode_key(&text).is_none(), "{len} bytes: {text}");
            }
        }
        let key = decode_key(&URL_SAFE_NO_PAD.encode([0xfb; KEY_LEN])).unwrap();
        assert_eq!(*key, [0xfb; KEY_LEN]);
    }

    /// A key stays where it was first stored while keys are added after it: were the
    /// list to hold keys in its own buffer, each growth would copy them to a larger one
    /// and free the old one unwiped, a copy of every key so far left in freed memory.
    #[test]
    fn adding_keys_moves_none_already_held() {
        let mut keys = EncryptionKeys::new("k0", &[0xff; KEY_LEN]).unwrap();
        let first: *const [u8; KEY_LEN] = keys.key("k0").unwrap();
        let mut held = vec![first];
        for n in 1..64u8 {
            keys = keys.with_previous(&format!("k{n}"), &[n; KEY_LEN]).unwrap();
            held.push(keys.key(&format!("k{n}")).unwrap());
        }
        for (n, place) in held.into_iter().enumerate() {
            let now: *const [u8; KEY_LEN] = keys.key(&format!("k{n}")).unwrap();
            assert_eq!(now, place, "key k{n} was moved");
        }
    }

    /// A variable set but blank is a secret that did not arrive (a deployment injecting an
    /// empty string for a missing one), not a choice to run without encryption: taken for
    /// unset, every message would be written in clear text. Unset is still no key.
    #[test]
    fn a_variable_set_but_blank_is_refused_not_taken_for_unset() {
        for blank in ["", " ", "\n\t \r\n"] {
            let err = from_var(Some(blank.into())).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::Config(_)), "{blank:?}: {text}");
            assert!(
                text.contains("FUSION_ENCRYPTION_KEY is set but empty")
                    && text.contains("unset it"),
                "{blank:?}: {text}"
            );
        }
        assert!(from_var(None).unwrap().is_none());
        let keys = from_var(Some(format!(" k1:{A}\n").into()))
            .unwrap()
            .unwrap();
        assert_eq!(keys.current_id(), "k1");
    }

    #[test]
    fn entries_split_on_commas_and_lines_and_skip_comments() {
        let text = format!("# rotated in June\nnew:{A}\n\n  # old one\nold:{B}, older:{C}\n");
        let keys = EncryptionKeys::parse(&text).unwrap();
        assert_eq!(keys.ids().collect::<Vec<_>>(), ["new", "old", "older"]);
    }

    #[test]
    fn a_key_file_may_start_with_a_byte_order_mark_but_not_go_on_past_64_kib() {
        let dir = tempfile::tempdir().unwrap();
        let marked = dir.path().join("marked.key");
        std::fs::write(&marked, format!("\u{feff}k1:{A}\r\n")).unwrap();
        assert_eq!(
            EncryptionKeys::from_file(&marked).unwrap().current_id(),
            "k1"
        );

        // A key, then more than a key file holds: refused, not read to its end.
        let long = dir.path().join("long.key");
        let padding = "# padding\n".repeat(7_000);
        std::fs::write(&long, format!("k1:{A}\n{padding}")).unwrap();
        let err = EncryptionKeys::from_file(&long).unwrap_err().to_string();
        assert!(err.contains("longer than 64 KiB"), "{err}");
        #[cfg(unix)]
        {
            let err = EncryptionKeys::from_file("/dev/zero")
                .unwrap_err()
                .to_string();
            assert!(err.contains("longer than 64 KiB"), "{err}");
        }
    }

    /// The warning about a key file others may read is for a file whose keys are used: one
    /// refused gets its error alone, not a warning about its mode before it.
    #[cfg(unix)]
    #[test]
    fn only_a_key_file_that_is_used_is_warned_about() {
        use fusion_core::testkit::logs::Logs;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let readable = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            path
        };
        let refused = readable("refused.key", "k1:AAECAwQ=\n");
        let used = readable("used.key", &format!("k1:{A}\n"));
        let logs = Logs::new();
        tracing::subscriber::with_default(logs.subscriber(tracing::Level::WARN), || {
            EncryptionKeys::from_file(&refused).unwrap_err();
            assert_eq!(logs.text(), "", "no warning for a refused file");
            EncryptionKeys::from_file(&used).unwrap();
        });
        let text = logs.text();
        assert!(
            text.contains("mode 0600") && text.contains("used.key"),
            "{text}"
        );
        assert!(!text.contains("refused.key"), "{text}");
    }

    #[test]
    fn bad_entries_are_refused_by_position_without_their_text() {
        let short = "k1:AAECAwQ=";
        let err = EncryptionKeys::parse(&format!("k0:{A},{short}")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("entry 2 (key \"k1\")"), "{text}");
        assert!(!text.contains("AAECAwQ"), "{text}");
        let err = EncryptionKeys::parse(&format!("a:{A},a:{A}")).unwrap_err();
        assert!(err.to_string().contains("given twice"), "{err}");
        assert_eq!(
            err.to_string().matches("configuration error").count(),
            1,
            "{err}"
        );
        let err = EncryptionKeys::parse(&format!("{A}:{A}")).unwrap_err();
        assert!(err.to_string().contains("not a key id"), "{err}");
        assert!(!err.to_string().contains("AAEC"), "{err}");
        assert!(EncryptionKeys::parse(" # nothing\n").is_err());
    }

    /// Found by a review: the same key bytes under two ids were taken silently, so a
    /// "rotation" to a copy of the old key under a new id changed nothing, and which id
    /// wrote a message said nothing. Refused on every path keys are loaded by (in code,
    /// text, the variable, a file), naming both ids and never the key.
    #[test]
    fn the_same_key_under_two_ids_is_refused_naming_both_ids() {
        let check = |err: Error| {
            let text = err.to_string();
            assert!(matches!(err, Error::Config(_)), "{text}");
            assert!(
                text.contains("\"old\" and \"new\" are the same key"),
                "{text}"
            );
            assert!(!text.contains("AAEC") && !text.contains("AQID"), "{text}");
        };
        let key = decode_key(A).unwrap();
        check(
            EncryptionKeys::new("old", &key)
                .unwrap()
                .with_previous("new", &key)
                .unwrap_err(),
        );
        check(
            EncryptionKeys::parse(&format!("old:{A}\nnew:{}", A.trim_end_matches('=')))
                .unwrap_err(),
        );
        check(from_var(Some(format!("old:{A},new:{A}").into())).unwrap_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("same.key");
        std::fs::write(&file, format!("old:{A}\nnew:{A}\n")).unwrap();
        let err = EncryptionKeys::from_file(&file).unwrap_err();
        assert!(err.to_string().contains("same.key"), "{err}");
        check(err);
        // Keys that differ in one byte are two keys.
        let mut other = *key;
        other[KEY_LEN - 1] ^= 1;
        let keys = EncryptionKeys::new("old", &key)
            .unwrap()
            .with_previous("new", &other)
            .unwrap();
        assert_eq!(keys.ids().collect::<Vec<_>>(), ["old", "new"]);
    }

    /// Quotes kept from an env file, a comment after the key and a key broken over two
    /// lines are named as such, still without the entry's text.
    #[test]
    fn the_usual_mistakes_around_a_key_are_named_without_its_text() {
        let cases = [
            (format!("\"k1:{A}\""), "not a key id", "quote"),
            (format!("k1:'{A}'"), "not the base64", "quote"),
            (format!("k1:{A} # June"), "not the base64", "comment"),
            (
                format!("k1:{} {}", &A[..20], &A[20..]),
                "not the base64",
                "space",
            ),
        ];
        for (text, refused, mistake) in cases {
            let err = EncryptionKeys::parse(&text).unwrap_err().to_string();
            assert!(
                err.contains(refused) && err.contains(mistake),
                "{text}: {err}"
            );
            assert!(!err.contains("AAEC") && !err.contains("June"), "{err}");
        }
        let plain = EncryptionKeys::parse("k1:AAECAwQ=")
            .unwrap_err()
            .to_string();
        assert!(plain.ends_with("base64 32`"), "no mistake to name: {plain}");
    }
}
