//! The message as it leaves: our `Received:` field, then the body as the session gave it,
//! made safe for DATA on the next hop.
//!
//! SPEC 8: a relay must never pass `LF . LF` on. The session refuses bare CR and LF by
//! default; when it was told to allow them, each becomes CRLF here, so every line start is
//! known and the stuffing below (or lettre's, which only knows CRLF lines) doubles every
//! dot that starts a line. DATA ends with `CRLF . CRLF`, whose first CRLF belongs to the
//! text: [`Outgoing::text`] is the text without its final CRLF, and both clients then send
//! `CRLF . CRLF` after it. A body that did not end with CRLF (possible with BDAT) gains one,
//! since DATA cannot carry it otherwise.

use std::borrow::Cow;

use crate::relay::spooled::SpooledText;

/// How much of the body one piece of [`Outgoing::text`] holds: lettre copies each piece
/// once while stuffing it, so this bounds that copy, not the message.
const PIECE: usize = 64 * 1024;

/// The bytes of one message for the next hop.
pub struct Outgoing<'a> {
    trace: Vec<u8>,
    body: Body<'a>,
}

/// Where the body is.
enum Body<'a> {
    /// In memory, whole (a small message, or one the tests give).
    Memory(Cow<'a, [u8]>),
    /// In its spool file, read in pieces as it goes out.
    Spooled(SpooledText),
}

impl<'a> Outgoing<'a> {
    /// `trace` is the `Received:` field, ended by CRLF; `bare_line_endings` is the
    /// session's [`Message::bare_line_endings`](smtp_session::Message::bare_line_endings).
    pub fn new(trace: Vec<u8>, body: &'a [u8], bare_line_endings: bool) -> Outgoing<'a> {
        debug_assert!(trace.ends_with(b"\r\n"), "a header field ends with CRLF");
        let body = if bare_line_endings {
            Cow::Owned(crlf_only(body))
        } else {
            Cow::Borrowed(body)
        };
        Outgoing {
            trace,
            body: Body::Memory(body),
        }
    }

    /// `trace` (header fields ended by CRLF) before the body of `text`, read from its
    /// spool file as it goes out.
    pub fn spooled(trace: Vec<u8>, text: SpooledText) -> Outgoing<'static> {
        debug_assert!(trace.ends_with(b"\r\n"), "a header field ends with CRLF");
        Outgoing {
            trace,
            body: Body::Spooled(text),
        }
    }

    /// The octets the next hop stores: the text plus its final CRLF (the SIZE= we declare).
    pub fn size(&self) -> u64 {
        match &self.body {
            Body::Memory(body) => {
                let added = if self.ends_with_crlf() { 0 } else { 2 };
                (self.trace.len() + body.len() + added) as u64
            }
            Body::Spooled(text) if text.is_empty() => self.trace.len() as u64,
            Body::Spooled(text) => self.trace.len() as u64 + text.len() + 2,
        }
    }

    fn ends_with_crlf(&self) -> bool {
        match &self.body {
            Body::Memory(body) => body.is_empty() || body.ends_with(b"\r\n"),
            Body::Spooled(_) => true,
        }
    }

    /// True when the text given out by [`Outgoing::text`] was cut short: a piece of the
    /// spool file could not be read.
    pub fn failed(&self) -> bool {
        matches!(&self.body, Body::Spooled(text) if text.failed())
    }

    /// The message without its final CRLF, unstuffed, in pieces of at most about 64 KiB.
    pub fn text(&self) -> Box<dyn Iterator<Item = Cow<'_, [u8]>> + Send + '_> {
        let body = match &self.body {
            Body::Memory(body) => body,
            Body::Spooled(text) if text.is_empty() => {
                let trace = &self.trace[..self.trace.len() - 2];
                return Box::new(std::iter::once(Cow::Borrowed(trace)));
            }
            Body::Spooled(text) => {
                let trace = std::iter::once(Cow::Borrowed(&self.trace[..]));
                return Box::new(trace.chain(text.pieces().map(Cow::Owned)));
            }
        };
        let (trace, body): (&[u8], &[u8]) = if body.is_empty() {
            (&self.trace[..self.trace.len() - 2], &[])
        } else if body.ends_with(b"\r\n") {
            (&self.trace, &body[..body.len() - 2])
        } else {
            (&self.trace, body)
        };
        let pieces = std::iter::once(trace).chain(body.chunks(PIECE));
        Box::new(pieces.map(Cow::Borrowed))
    }
}

/// Every CR or LF that is not part of a CRLF becomes CRLF.
fn crlf_only(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32);
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            byte => out.push(byte),
        }
        i += 1;
    }
    out
}

/// DATA transparency (RFC 5321 section 4.5.2) for text whose lines all end in CRLF: a
/// dot that starts a line gets another. Keeps its place across pieces.
pub struct Stuffer {
    at_line_start: bool,
}

impl Stuffer {
    pub fn new() -> Stuffer {
        Stuffer {
            at_line_start: true,
        }
    }

    /// Appends `text`, stuffed, to `out`.
    pub fn push(&mut self, text: impl AsRef<[u8]>, out: &mut Vec<u8>) {
        let mut rest = text.as_ref();
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            // Up to and including the next LF, or all that is left.
            let end = memchr_lf(rest).map_or(rest.len(), |i| i + 1);
            out.extend_from_slice(&rest[..end]);
            self.at_line_start = rest[end - 1] == b'\n';
            rest = &rest[end..];
        }
    }
}

fn memchr_lf(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &[u8] = b"Received: by mx.test; Sat, 28 Nov 2026 10:00:00 +0000\r\n";

    /// What the next hop reads after DATA: the text stuffed by [`Stuffer`] (as the LMTP
    /// client sends it), then `CRLF . CRLF`.
    fn on_the_wire(out: &Outgoing<'_>) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut stuffer = Stuffer::new();
        for piece in out.text() {
            stuffer.push(piece, &mut wire);
        }
        wire.extend_from_slice(b"\r\n.\r\n");
        wire
    }

    /// What a server makes of DATA: lines up to the first `CRLF . CRLF`, unstuffed.
    fn received(wire: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for line in wire.split_inclusive(|&b| b == b'\n') {
            if line == b".\r\n" {
                return body;
            }
            body.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        panic!("no end of data in {:?}", String::from_utf8_lossy(wire));
    }

    fn with_trace(body: &[u8]) -> Vec<u8> {
        [TRACE, body].concat()
    }

    #[test]
    fn dot_lines_are_stuffed_and_the_body_arrives_whole() {
        let body = b"Subject: dots\r\n\r\n.\r\n..two\r\n.one\r\nend\r\n";
        let out = Outgoing::new(TRACE.to_vec(), body, false);
        let wire = on_the_wire(&out);
        assert!(wire.ends_with(b"\r\n..\r\n...two\r\n..one\r\nend\r\n.\r\n"));
        assert_eq!(received(&wire), with_trace(body));
        assert_eq!(out.size(), with_trace(body).len() as u64);
    }

    #[test]
    fn bare_line_endings_never_leave_as_such() {
        // Allowed in by the session: LF.LF, CR.CR and a bare LF before a dot line.
        let body = b"a\n.\nb\r.\rc\n.\r\nd\r\n";
        let out = Outgoing::new(TRACE.to_vec(), body, true);
        let wire = on_the_wire(&out);
        assert!(!wire.windows(3).any(|w| w == b"\n.\n"), "{wire:?}");
        let want = with_trace(b"a\r\n.\r\nb\r\n.\r\nc\r\n.\r\nd\r\n");
        assert_eq!(received(&wire), want);
        // Every LF of the wire is part of a CRLF.
        for (i, &b) in wire.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(wire[i - 1], b'\r', "bare LF at {i}");
            }
        }
    }

    #[test]
    fn an_empty_body_and_one_without_its_last_crlf() {
        let out = Outgoing::new(TRACE.to_vec(), b"", false);
        assert_eq!(received(&on_the_wire(&out)), TRACE);
        assert_eq!(out.size(), TRACE.len() as u64);
        let out = Outgoing::new(TRACE.to_vec(), b"no final newline", false);
        assert_eq!(
            received(&on_the_wire(&out)),
            with_trace(b"no final newline\r\n")
        );
        assert_eq!(out.size(), with_trace(b"no final newline\r\n").len() as u64);
    }

    #[test]
    fn stuffing_keeps_its_place_across_pieces() {
        let mut body = vec![b'x'; PIECE - 2];
        body.extend_from_slice(b"\r\n.dot at a piece boundary\r\n");
        let out = Outgoing::new(TRACE.to_vec(), &body, false);
        assert!(out.text().count() >= 3);
        assert_eq!(received(&on_the_wire(&out)), with_trace(&body));
    }
}
