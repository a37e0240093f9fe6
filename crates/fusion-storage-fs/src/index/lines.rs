//! Reading the index's sorted line files: a binary search for where a key belongs, and
//! lines read forwards or backwards from there, in chunks.
//!
//! Only the valid prefix of a file is read (its length comes from the index state), and
//! a line that does not parse is junk that a crash may have left: searches treat it as
//! lower than any key and readers skip it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

/// Reads `[from, to)` of `file`, the whole range or what there is.
pub(crate) fn read_range(file: &File, from: u64, to: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(usize::try_from(to.saturating_sub(from)).unwrap_or(0));
    let mut handle = file;
    handle.seek(SeekFrom::Start(from))?;
    handle.take(to.saturating_sub(from)).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Whether `[0, len)` of `file` ends at the end of a line (or is empty), as every valid
/// length does: zeros there, what a power loss can leave of lines written in place
/// without an fsync, end none, and hold no line a reader would meet to fail to parse.
pub(crate) fn ends_a_line(file: &File, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    Ok(read_range(file, len - 1, len)? == b"\n")
}

/// The first line starting at or after `at` and before `to`: its start, its end (after
/// the `\n`) and its bytes; `None` if none is found within two line lengths.
fn line_from(
    file: &File,
    at: u64,
    to: u64,
    max_line: usize,
) -> io::Result<Option<(u64, u64, Vec<u8>)>> {
    // Back up one byte: if it is a `\n`, a line starts exactly at `at`.
    let from = at.saturating_sub(1);
    let end = to.min(from + 2 * max_line as u64 + 2);
    let buf = read_range(file, from, end)?;
    let skip = if at == 0 {
        0
    } else {
        match buf.iter().position(|&b| b == b'\n') {
            Some(newline) => newline + 1,
            None => return Ok(None),
        }
    };
    let rest = &buf[skip..];
    let Some(len) = rest.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let start = from + skip as u64;
    Ok(Some((start, start + len as u64 + 1, rest[..len].to_vec())))
}

/// The offset of the first line of `[0, len)` for which `below` is false, in a file whose
/// lines are sorted so that `below` is true for a prefix of them. O(log len) reads of at
/// most two line lengths each.
pub(crate) fn lower_bound(
    file: &File,
    len: u64,
    max_line: usize,
    below: impl Fn(&[u8]) -> bool,
) -> io::Result<u64> {
    let (mut lo, mut hi) = (0u64, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let line = match line_from(file, mid, hi, max_line)? {
            Some(line) if line.0 < hi => Some(line),
            // No line starts in [mid, hi): the one at `lo` decides, so `lo` always moves.
            _ => line_from(file, lo, hi, max_line)?,
        };
        let Some((start, end, bytes)) = line else {
            return Ok(hi);
        };
        if below(&bytes) {
            lo = end;
        } else {
            hi = start;
        }
    }
    Ok(lo)
}

/// The lines of `[0, end)` from the last to the first, read in chunks.
pub(crate) struct Backward<'f> {
    file: &'f File,
    /// Where the unread part ends.
    pos: u64,
    /// Lines read but not yet returned, last line last.
    pending: Vec<Vec<u8>>,
}

impl<'f> Backward<'f> {
    /// Reading backwards from `end` (a line start, or the valid length of the file).
    pub(crate) fn new(file: &'f File, end: u64) -> Self {
        Self {
            file,
            pos: end,
            pending: Vec::new(),
        }
    }

    /// The next line (the one before the last returned); `None` at the start.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        const CHUNK: u64 = 32 * 1024;
        while self.pending.is_empty() {
            if self.pos == 0 {
                return Ok(None);
            }
            let from = self.pos.saturating_sub(CHUNK);
            let buf = read_range(self.file, from, self.pos)?;
            // Unless the chunk reaches the start, its first line may begin before it: start
            // after the first `\n` that is not the chunk's last byte (which ends a line).
            let start = if from == 0 {
                0
            } else {
                let search = &buf[..buf.len().saturating_sub(1)];
                match search.iter().position(|&b| b == b'\n') {
                    Some(newline) => newline + 1,
                    None => {
                        // A line longer than a chunk is junk (no entry is that long): skip
                        // this part of it; what remains of it fails to parse.
                        self.pos = from;
                        continue;
                    }
                }
            };
            self.pos = from + start as u64;
            let body = &buf[start..];
            let body = body.strip_suffix(b"\n").unwrap_or(body);
            if !body.is_empty() {
                self.pending = body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            }
        }
        Ok(self.pending.pop())
    }
}

/// The lines of `[from, end)`, first to last.
pub(crate) struct Forward<'f> {
    reader: BufReader<io::Take<&'f File>>,
    line: Vec<u8>,
    /// How many bytes were read, the final piece included.
    read: u64,
}

impl<'f> Forward<'f> {
    /// Reading forwards from `from` (a line start) to `end`.
    pub(crate) fn new(file: &'f File, from: u64, end: u64) -> io::Result<Self> {
        let mut handle = file;
        handle.seek(SeekFrom::Start(from))?;
        Ok(Self {
            reader: BufReader::with_capacity(64 * 1024, handle.take(end.saturating_sub(from))),
            line: Vec::new(),
            read: 0,
        })
    }

    /// The next line, without its `\n`; `None` at the end. A final piece without `\n` is
    /// junk and is not returned.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        self.line.clear();
        self.read += self.reader.read_until(b'\n', &mut self.line)? as u64;
        Ok(self.line.strip_suffix(b"\n"))
    }

    /// Once [`next_line`](Self::next_line) returned `None`: whether the range read was
    /// all there and ended at the end of a line, as [`ends_a_line`] tells of it.
    fn ended_a_line(&self, len: u64) -> bool {
        self.read == len && self.line.is_empty()
    }
}

/// Calls `f` with the index and bytes of every line of `[from, end)`; returns whether
/// the range ends at the end of a line (or is empty), which [`ends_a_line`] would read
/// again.
pub(crate) fn for_each_line(
    file: &File,
    from: u64,
    end: u64,
    mut f: impl FnMut(u64, &[u8]),
) -> io::Result<bool> {
    let mut lines = Forward::new(file, from, end)?;
    let mut index = 0;
    while let Some(line) = lines.next_line()? {
        f(index, line);
        index += 1;
    }
    Ok(lines.ended_a_line(end.saturating_sub(from)))
}
