//! The files `sessions export -o` writes and `sessions import` reads, handled so that a
//! mistake loses nothing: an export never overwrites a file unless told to, and then
//! replaces it whole; an import of something endless fails instead of taking the memory.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::Path;

use anyhow::{Result, bail};
use fusion::api::export;
use fusion_core::regular_file;

/// The most an import reads from something that is not a regular file (stdin, a pipe, a
/// device): about a million agent messages of 250 bytes. More is a mistake (`/dev/zero`,
/// an endless pipe) that would otherwise take all the memory. A regular file is read
/// whatever its size: its length is known, and it is what the user asked for.
const MAX_STREAMED_IMPORT: u64 = 256 << 20;

/// Reads the import file at `path` whole (see [`MAX_STREAMED_IMPORT`]), as [`text_of`]
/// reads it.
pub fn read_import_file(path: &Path) -> Result<String> {
    let file = File::open(path)?;
    if file.metadata()?.is_file() {
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes)?;
        return text_of(bytes);
    }
    read_import(file)
}

/// Reads a streamed import whole, refusing one longer than [`MAX_STREAMED_IMPORT`].
pub fn read_import(input: impl Read) -> Result<String> {
    let mut bytes = Vec::new();
    input
        .take(MAX_STREAMED_IMPORT + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STREAMED_IMPORT {
        bail!(
            "it goes on past {} MiB, the most read from a stream; save it to a file and import that",
            MAX_STREAMED_IMPORT >> 20
        );
    }
    text_of(bytes)
}

/// The text of an import: UTF-8, or UTF-16 with its byte order mark, which PowerShell's
/// `>` writes (`fusion sessions export s > s.json`); read as UTF-8, that export failed
/// with "stream did not contain valid UTF-8", which said nothing of what to do. UTF-16
/// without the mark (an editor's "UTF-16 LE" without BOM) is read too when its start is
/// plainly UTF-16 ([`export::utf16_without_mark`]): read as UTF-8, an all-ASCII one was
/// text with a NUL beside each character, which the import then refused as JSON it could
/// not parse. Anything else is refused naming the first byte that is not UTF-8, and its
/// line.
fn text_of(bytes: Vec<u8>) -> Result<String> {
    // 0xFF is never UTF-8, so the marks are never the start of UTF-8 text.
    let marked: Option<fn([u8; 2]) -> u16> = match bytes.get(..2) {
        Some([0xFF, 0xFE]) => Some(u16::from_le_bytes),
        Some([0xFE, 0xFF]) => Some(u16::from_be_bytes),
        _ => None,
    };
    if let Some(unit) = marked {
        return utf16(
            &bytes[2..],
            unit,
            "it starts as UTF-16 text (its byte order mark)",
        );
    }
    let unmarked = export::utf16_without_mark(&bytes).map(|order| match order {
        export::Utf16Order::Little => u16::from_le_bytes as fn([u8; 2]) -> u16,
        export::Utf16Order::Big => u16::from_be_bytes,
    });
    if let Some(unit) = unmarked {
        return utf16(
            &bytes,
            unit,
            "it starts as UTF-16 without a byte order mark (a zero byte beside each of its \
             first characters)",
        );
    }
    let bytes = match String::from_utf8(bytes) {
        Ok(text) => return Ok(text),
        Err(err) => err.into_bytes(),
    };
    let valid = match std::str::from_utf8(&bytes) {
        Err(err) => err.valid_up_to(),
        Ok(_) => unreachable!("the text was not UTF-8"),
    };
    let line = 1 + bytes[..valid].iter().filter(|&&b| b == b'\n').count();
    bail!(
        "it is not UTF-8 text: byte {} (on line {line}) is not UTF-8; save the export as \
         UTF-8, or export it again with `-o FILE`",
        valid + 1
    )
}

/// `bytes` read as UTF-16 units made by `unit`, or an error starting with `how` when they
/// are not UTF-16 (an odd byte at the end, a lone surrogate).
fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16, how: &str) -> Result<String> {
    let units = bytes.chunks(2).map(|pair| match pair {
        [a, b] => unit([*a, *b]),
        // An odd byte at the end: no UTF-16 unit, so an error below.
        _ => 0xD800,
    });
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| {
            anyhow::anyhow!(
                "{how} and is not: save the export as UTF-8, or export it again with `-o FILE`"
            )
        })
}

/// Writes `bytes` to `path`, whole or not at all:
/// - nothing there: a new file (a failed write removes it);
/// - a regular file (or a link to one): refused unless `replace`, and then a temporary
///   file beside it, with its permissions, renamed over it;
/// - anything else that can be written (`/dev/stdout`, a pipe): written to directly, as a
///   shell redirection would.
pub fn write(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    let existing = match fs::metadata(path) {
        Ok(metadata) => metadata,
        // A link to nothing: the new file is created without following it, which fails as
        // a file that exists, and `--force` would fail alike.
        Err(err) if err.kind() == ErrorKind::NotFound && is_link(path) => {
            let target = fs::read_link(path)?;
            bail!(
                "it is a link to {}, which does not exist; name that file itself",
                target.display()
            );
        }
        Err(err) if err.kind() == ErrorKind::NotFound => return write_new(path, bytes),
        Err(err) => return Err(err.into()),
    };
    if existing.is_dir() {
        bail!("it is a directory");
    }
    if !existing.is_file() {
        let mut file = OpenOptions::new().write(true).open(path)?;
        file.write_all(bytes)?;
        return Ok(file.flush()?);
    }
    if !replace {
        bail!("the file exists; pass --force to replace it");
    }
    // Through a link, the file it names is replaced, not the link.
    let target = fs::canonicalize(path)?;
    Ok(regular_file::replace(
        &target,
        bytes,
        Some(existing.permissions()),
    )?)
}

/// Whether `path` is a symbolic link (to anything, or to nothing).
fn is_link(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_symlink())
}

/// A new file at `path` holding `bytes`, whole or not at all (a command killed mid-write
/// leaves no half-written export to import as a shorter history); an existing one is
/// refused.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    match regular_file::create(path, bytes) {
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            // Created between the look and the link.
            bail!("the file exists; pass --force to replace it")
        }
        created => Ok(created?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_keeps_its_permissions_and_a_link_keeps_pointing_at_it() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("export.json");
        fs::write(&file, "old").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&file, &link).unwrap();

        let err = write(&link, b"new", false).unwrap_err().to_string();
        assert!(err.contains("pass --force"), "{err}");
        write(&link, b"new", true).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "new");
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    fn a_link_to_nothing_is_refused_as_such_with_or_without_replace() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("export.json");
        let missing = dir.path().join("gone.json");
        std::os::unix::fs::symlink(&missing, &link).unwrap();
        for replace in [false, true] {
            let err = write(&link, b"x", replace).unwrap_err().to_string();
            assert!(
                err.contains("is a link to")
                    && err.contains("gone.json")
                    && !err.contains("--force"),
                "{err}"
            );
        }
        assert!(!missing.exists());
    }

    #[test]
    fn a_directory_is_refused_and_a_device_is_written_to() {
        use std::os::unix::fs::FileTypeExt;

        let dir = tempfile::tempdir().unwrap();
        let err = write(dir.path(), b"x", true).unwrap_err().to_string();
        assert_eq!(err, "it is a directory");
        write(Path::new("/dev/null"), b"x", false).unwrap();
        write(Path::new("/dev/null"), b"x", true).unwrap();
        assert!(
            fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }

    #[test]
    fn a_stream_past_the_limit_is_refused_whatever_byte_it_ends_on() {
        let long = std::io::repeat(0xC3).take(MAX_STREAMED_IMPORT + 10);
        let err = read_import(long).unwrap_err().to_string();
        assert!(err.contains("256 MiB"), "{err}");
        assert_eq!(read_import(&b"{}"[..]).unwrap(), "{}");
    }

    /// UTF-16 without its mark is read when its start is plainly UTF-16, and an error says
    /// so when the rest is not: read as UTF-8 before, an all-ASCII one became text with a
    /// NUL between each character (refused as JSON that does not parse), and one with other
    /// characters was refused naming a byte that is not UTF-8.
    #[test]
    fn utf_16_without_its_mark_is_read_when_its_start_is_plainly_utf_16() {
        let texts = [
            "{\"role\":\"user\",\"content\":\"héllo 🦀\"}\n",
            "{\"role\":\"user\",\"content\":\"hello\"}\n",
            "{\n  \"id\": \"s\",\n  \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]\n}\n",
        ];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.json");
        for text in texts {
            let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
            let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
            for bytes in [&le, &be] {
                assert_eq!(read_import(&bytes[..]).unwrap(), text);
                fs::write(&file, bytes).unwrap();
                let read = read_import_file(&file).unwrap();
                assert_eq!(read, text);
                assert_eq!(fusion::api::export::read(&read).unwrap().messages.len(), 1);
                let err = read_import(&bytes[..bytes.len() - 1]).unwrap_err();
                let err = err.to_string();
                assert!(
                    err.starts_with("it starts as UTF-16 without a byte order mark"),
                    "{err}"
                );
            }
        }
        // UTF-8 text is read as before, a one-byte file too.
        for text in ["{", "{}", "{\"a\":\"\u{3b1}\"}", "\n\n{}"] {
            assert_eq!(read_import(text.as_bytes()).unwrap(), text);
        }
        // A start that is not plainly UTF-16 (a zero byte beside a byte that is no ASCII
        // character, or on the other side further on) is read as UTF-8, as before.
        assert_eq!(read_import(&b"{\0\x01\0\0a"[..]).unwrap(), "{\0\u{1}\0\0a");
        let err = read_import(&b"{\0\xE9\0"[..]).unwrap_err().to_string();
        assert!(err.starts_with("it is not UTF-8 text: byte 3"), "{err}");
    }

    #[test]
    fn utf_16_with_its_mark_is_read_and_other_bytes_are_refused_by_place() {
        let text = "{\"role\":\"user\",\"content\":\"héllo 🦀\"}\n";
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        for bytes in [&le, &be] {
            assert_eq!(read_import(&bytes[..]).unwrap(), text);
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("s.json");
            fs::write(&file, bytes).unwrap();
            assert_eq!(read_import_file(&file).unwrap(), text);
        }
        let err = read_import(&le[..le.len() - 1]).unwrap_err().to_string();
        assert!(err.starts_with("it starts as UTF-16 text"), "{err}");
        // A lone surrogate, high or low.
        for unit in [0xD800_u16, 0xDC00] {
            let lone: Vec<u8> = [0xFF, 0xFE]
                .into_iter()
                .chain(
                    [u16::from(b'{'), unit, u16::from(b'}')]
                        .into_iter()
                        .flat_map(u16::to_le_bytes),
                )
                .collect();
            let err = read_import(&lone[..]).unwrap_err().to_string();
            assert!(err.starts_with("it starts as UTF-16 text"), "{err}");
        }
        // UTF-8 with its mark (Windows Notepad) is UTF-8: kept here, and export::read
        // reads past the mark.
        let marked = "\u{feff}{\"role\":\"user\",\"content\":\"hi\"}\n";
        let text = read_import(marked.as_bytes()).unwrap();
        assert_eq!(text, marked);
        assert_eq!(fusion::api::export::read(&text).unwrap().messages.len(), 1);
        let latin1 = b"{}\n{\"content\":\"h\xE9llo\"}\n";
        let err = read_import(&latin1[..]).unwrap_err().to_string();
        assert!(
            err.starts_with("it is not UTF-8 text: byte 17 (on line 2) is not UTF-8"),
            "{err}"
        );
        assert_eq!(read_import("héllo".as_bytes()).unwrap(), "héllo");
    }
}
