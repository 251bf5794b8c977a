//! A relayed body read from its spool file in pieces, so that relaying a message costs a
//! piece of memory, not the message.
//!
//! The text is the body as received without the ranges the checks removed, with bare CR
//! and LF made CRLF when the session let them in (see [`super::body`]), and without its
//! final line end, which the DATA terminator supplies. The pieces are read from the file
//! (written moments before, so from the page cache) as the next hop takes them.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// How much of the file one piece holds.
const PIECE: u64 = 64 * 1024;

/// A body in a file, ready to be read in pieces.
#[derive(Debug)]
pub struct SpooledText {
    /// Text before the file's: a header section kept in front of a filter's new body.
    head: Vec<u8>,
    file: File,
    /// The parts of the file that are the text, in order.
    segments: Vec<Range<u64>>,
    /// Bare CR and LF become CRLF.
    bare_line_endings: bool,
    /// The text's length, after that.
    len: u64,
    /// The body was empty.
    empty: bool,
    /// [`SpooledText::replaced`] only: the text has a byte over 127.
    eight_bit: bool,
    /// A piece could not be read: the text given out is short.
    failed: AtomicBool,
}

impl SpooledText {
    /// The body at `offset` of the file at `path`, `len` bytes long, without `cuts`
    /// (offsets from the body's start, in order, apart). Blocking: reads the last bytes,
    /// and the whole body when bare line endings must be counted.
    pub fn open(
        path: &Path,
        offset: u64,
        len: u64,
        cuts: &[Range<u64>],
        bare_line_endings: bool,
    ) -> io::Result<SpooledText> {
        let file = File::open(path)?;
        let mut segments = kept(offset, len, cuts);
        let empty = segments.iter().all(|s| s.is_empty());
        let tail = tail(&file, &segments)?;
        let line_end = match tail[..] {
            [b'\r', b'\n'] => 2,
            [_, b'\r' | b'\n'] | [b'\r' | b'\n'] if bare_line_endings => 1,
            _ => 0,
        };
        trim_end(&mut segments, line_end);
        let mut text = SpooledText {
            head: Vec::new(),
            file,
            segments,
            bare_line_endings,
            len: 0,
            empty,
            eight_bit: false,
            failed: AtomicBool::new(false),
        };
        text.len = if bare_line_endings {
            text.pieces().map(|piece| piece.len() as u64).sum()
        } else {
            text.segments.iter().map(|s| s.end - s.start).sum()
        };
        text.failed.store(false, Ordering::Relaxed);
        Ok(text)
    }

    /// The header section `head` (as received, the checks' cuts made) and then a filter's
    /// new body, the whole `len` bytes of the file at `path`. A filter may write bare CR or
    /// LF whatever the session allowed: they always become CRLF. Blocking: reads the new
    /// body once, for its length and whether it has 8-bit bytes.
    pub fn replaced(head: Vec<u8>, path: &Path, len: u64) -> io::Result<SpooledText> {
        let file = File::open(path)?;
        let mut head = head;
        let mut segments: Vec<Range<u64>> = (len > 0).then_some(0..len).into_iter().collect();
        let end = tail(&file, &segments)?;
        let line_end = match end[..] {
            [b'\r', b'\n'] => 2,
            [_, b'\r' | b'\n'] | [b'\r' | b'\n'] => 1,
            _ => 0,
        };
        trim_end(&mut segments, line_end);
        if len == 0 {
            // An empty new body: the header section's last line end is the text's.
            let cut = if head.ends_with(b"\r\n") { 2 } else { 1 };
            head.truncate(head.len().saturating_sub(cut));
        }
        let mut text = SpooledText {
            head,
            file,
            segments,
            bare_line_endings: true,
            len: 0,
            empty: false,
            eight_bit: false,
            failed: AtomicBool::new(false),
        };
        let (mut n, mut eight_bit) = (0, false);
        for piece in text.pieces() {
            n += piece.len() as u64;
            eight_bit |= piece.iter().any(|b| *b > 127);
        }
        (text.len, text.eight_bit) = (n, eight_bit);
        if text.failed.swap(false, Ordering::Relaxed) {
            return Err(io::Error::other("the new body could not be read"));
        }
        Ok(text)
    }

    /// True when the text has a byte over 127 (known for a new body only: the session
    /// says it of the body as received).
    pub fn eight_bit(&self) -> bool {
        self.eight_bit
    }

    /// The text's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the body was empty.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// True when a piece could not be read: what went out was short.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// The text in pieces of at most 64 KiB of the file (a little more once bare line
    /// endings are made CRLF). A read error ends the pieces early and marks the text
    /// [`failed`](SpooledText::failed).
    pub fn pieces(&self) -> impl Iterator<Item = Vec<u8>> + Send + '_ {
        let mut at = self.segments.first().map_or(0, |s| s.start);
        let mut segment = 0;
        let mut crlf = CrlfOnly::default();
        let mut head = Some(&self.head[..]).filter(|h| !h.is_empty());
        std::iter::from_fn(move || loop {
            if let Some(head) = head.take() {
                if !self.bare_line_endings {
                    return Some(head.to_vec());
                }
                let out = crlf.push(head);
                if !out.is_empty() {
                    return Some(out);
                }
                continue;
            }
            let Some(range) = self.segments.get(segment) else {
                return crlf.finish();
            };
            if at >= range.end {
                segment += 1;
                at = self.segments.get(segment).map_or(0, |s| s.start);
                continue;
            }
            let end = range.end.min(at + PIECE);
            let mut piece = vec![0; (end - at) as usize];
            if let Err(err) = self.file.read_exact_at(&mut piece, at) {
                eprintln!("mailsink: relay: cannot read the spooled message: {err}");
                self.failed.store(true, Ordering::Relaxed);
                return None;
            }
            at = end;
            if !self.bare_line_endings {
                return Some(piece);
            }
            let out = crlf.push(&piece);
            if !out.is_empty() {
                return Some(out);
            }
        })
    }
}

/// The ranges of the file that are the body at `offset`, `len` long, without `cuts`.
fn kept(offset: u64, len: u64, cuts: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut segments = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for cut in cuts {
        let start = cut.start.min(len);
        if start > from {
            segments.push(offset + from..offset + start);
        }
        from = from.max(cut.end.min(len));
    }
    if len > from {
        segments.push(offset + from..offset + len);
    }
    segments
}

/// The last two bytes (or fewer) of the text in `segments`.
fn tail(file: &File, segments: &[Range<u64>]) -> io::Result<Vec<u8>> {
    let mut tail = Vec::new();
    for range in segments.iter().rev() {
        let take = (2 - tail.len() as u64).min(range.end - range.start);
        let mut bytes = vec![0; take as usize];
        file.read_exact_at(&mut bytes, range.end - take)?;
        bytes.extend_from_slice(&tail);
        tail = bytes;
        if tail.len() == 2 {
            break;
        }
    }
    Ok(tail)
}

/// Takes `n` bytes off the end of `segments`.
fn trim_end(segments: &mut Vec<Range<u64>>, mut n: u64) {
    while n > 0 {
        let Some(last) = segments.last_mut() else {
            return;
        };
        let take = n.min(last.end - last.start);
        last.end -= take;
        n -= take;
        if last.is_empty() {
            segments.pop();
        }
    }
}

/// Every CR or LF that is not part of a CRLF becomes CRLF, across pieces.
#[derive(Default)]
struct CrlfOnly {
    /// The last piece ended with a CR whose LF may start the next.
    pending_cr: bool,
    done: bool,
}

impl CrlfOnly {
    fn push(&mut self, piece: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(piece.len() + piece.len() / 32 + 2);
        for &byte in piece {
            if std::mem::take(&mut self.pending_cr) {
                out.extend_from_slice(b"\r\n");
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\r' => self.pending_cr = true,
                b'\n' => out.extend_from_slice(b"\r\n"),
                byte => out.push(byte),
            }
        }
        out
    }

    /// The CR held back at the very end, once.
    fn finish(&mut self) -> Option<Vec<u8>> {
        if std::mem::replace(&mut self.done, true) || !std::mem::take(&mut self.pending_cr) {
            return None;
        }
        Some(b"\r\n".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(file_bytes: &[u8], offset: u64, cuts: &[Range<u64>], bare: bool) -> (Vec<u8>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        std::fs::write(&path, file_bytes).unwrap();
        let len = file_bytes.len() as u64 - offset;
        let spooled = SpooledText::open(&path, offset, len, cuts, bare).unwrap();
        let out: Vec<u8> = spooled.pieces().flatten().collect();
        assert!(!spooled.failed());
        (out, spooled.len())
    }

    #[test]
    fn the_text_is_the_body_without_cuts_and_without_its_final_line_end() {
        let file = b"TRACE\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\nbody\r\n";
        let (out, len) = text(file, 7, std::slice::from_ref(&(6..12)), false);
        assert_eq!(out, b"A: 1\r\nC: 3\r\n\r\nbody");
        assert_eq!(len, out.len() as u64);
        assert_eq!(text(b"no line end", 0, &[], false).0, b"no line end");
        assert_eq!(text(b"", 0, &[], false).0, b"");
        assert_eq!(
            text(b"x\r\n", 0, std::slice::from_ref(&(0..1)), false).0,
            b""
        );
    }

    #[test]
    fn bare_line_endings_become_crlf_across_pieces() {
        let mut body = vec![b'x'; PIECE as usize - 1];
        body.extend_from_slice(b"\r\nbare\nlf and bare\rcr\r\r\n");
        let (out, len) = text(&body, 0, &[], true);
        let mut want = vec![b'x'; PIECE as usize - 1];
        want.extend_from_slice(b"\r\nbare\r\nlf and bare\r\ncr\r\n");
        assert_eq!(out, want);
        assert_eq!(len, want.len() as u64);
        assert_eq!(text(b"a\r", 0, &[], true).0, b"a");
        assert_eq!(text(b"a\rb", 0, &[], true).0, b"a\r\nb");
    }

    #[test]
    fn a_new_body_follows_the_header_section_with_crlf_line_ends_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("body");
        let head = b"A: 1\r\nB: 2\r\n\r\n".to_vec();
        let read = |body: &[u8]| {
            std::fs::write(&path, body).unwrap();
            let len = body.len() as u64;
            let text = SpooledText::replaced(head.clone(), &path, len).unwrap();
            let out: Vec<u8> = text.pieces().flatten().collect();
            assert_eq!(text.len(), out.len() as u64);
            (String::from_utf8_lossy(&out).into_owned(), text.eight_bit())
        };
        let new = read(b"New\nbody.\r\n");
        assert_eq!(new, ("A: 1\r\nB: 2\r\n\r\nNew\r\nbody.".into(), false));
        assert_eq!(read(b"").0, "A: 1\r\nB: 2\r\n");
        assert_eq!(read(b"\r\n").0, "A: 1\r\nB: 2\r\n\r\n");
        assert!(read("caf\u{e9}".as_bytes()).1);
    }

    #[test]
    fn a_large_body_comes_in_pieces_of_at_most_64_kib() {
        let body: Vec<u8> = (0..3 * PIECE + 5).map(|i| b'a' + (i % 26) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        std::fs::write(&path, &body).unwrap();
        let spooled = SpooledText::open(&path, 0, body.len() as u64, &[], false).unwrap();
        let pieces: Vec<Vec<u8>> = spooled.pieces().collect();
        assert_eq!(pieces.len(), 4);
        assert!(pieces.iter().all(|p| p.len() as u64 <= PIECE));
        assert_eq!(pieces.concat(), body);
    }
}
