//! Reading command lines (and the lines of an AUTH exchange) out of the client's bytes.
//!
//! A [`LineReader`] hands out whole lines. A line that ends inside the caller's input is
//! borrowed from it, so the common case copies nothing; only the start of a line whose end
//! has not arrived yet is kept, and every byte is scanned for its LF once. A line that
//! reaches its limit is not buffered at all: its bytes are skipped up to its LF, where it is
//! reported as too long, so a client cannot make the reader hold more than one line.

use std::borrow::Cow;

use memchr::memchr;

/// How long a line may be, in octets, its CRLF included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LineLimits {
    /// Any command line.
    pub command: usize,
    /// AUTH command lines and the lines of an AUTH exchange, when AUTH is on (RFC 4954
    /// allows initial responses of 12288 octets); never below `command`.
    pub auth: Option<usize>,
}

/// Which limit a line was held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineKind {
    Command,
    /// An AUTH command or a line of an AUTH exchange.
    Auth,
}

/// How a line ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineEnding {
    CrLf,
    /// An LF without a CR before it.
    BareLf,
}

/// What [`LineReader::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read<'i> {
    /// A whole line, without its line ending.
    Line(Cow<'i, [u8]>, LineEnding),
    /// A line over its limit ended; its bytes were dropped.
    TooLong(LineKind),
    /// Every byte offered was taken and no line ended.
    NeedMore,
}

/// Splits the client's bytes into lines for the command phases.
#[derive(Debug)]
pub(crate) struct LineReader {
    /// The start of a line whose LF has not arrived; it never holds an LF, so it is never
    /// scanned again.
    partial: Vec<u8>,
    /// Set while the rest of an overlong line is skipped.
    skipping: Option<LineKind>,
    limits: LineLimits,
    /// Reading the client's responses in an AUTH exchange: every line is an AUTH line.
    auth_exchange: bool,
}

impl LineReader {
    /// A reader for command lines.
    pub(crate) fn commands(limits: LineLimits) -> LineReader {
        LineReader {
            partial: Vec::new(),
            skipping: None,
            limits,
            auth_exchange: false,
        }
    }

    /// A reader for the client's lines in an AUTH exchange.
    pub(crate) fn auth_exchange(limits: LineLimits) -> LineReader {
        LineReader {
            auth_exchange: true,
            ..LineReader::commands(limits)
        }
    }

    /// True while the start of a line is held, waiting for its end.
    pub(crate) fn has_partial_line(&self) -> bool {
        !self.partial.is_empty() || self.skipping.is_some()
    }

    /// Bytes held for a partial line.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.partial.len()
    }

    /// Takes bytes from `input` up to the end of the next line and returns how many it took
    /// and what it found. Call again with the rest of the input after a line.
    pub(crate) fn read<'i>(&mut self, input: &'i [u8]) -> (usize, Read<'i>) {
        let lf = memchr(b'\n', input);
        if let Some(kind) = self.skipping {
            return match lf {
                Some(i) => {
                    self.skipping = None;
                    (i + 1, Read::TooLong(kind))
                }
                None => (input.len(), Read::NeedMore),
            };
        }
        let Some(i) = lf else {
            let length = self.partial.len() + input.len();
            match self.over_limit(length, input) {
                Some(kind) => {
                    self.skipping = Some(kind);
                    self.partial = Vec::new();
                }
                None => self.partial.extend_from_slice(input),
            }
            return (input.len(), Read::NeedMore);
        };
        let length = self.partial.len() + i;
        if let Some(kind) = self.over_limit(length, input) {
            self.partial = Vec::new();
            return (i + 1, Read::TooLong(kind));
        }
        let line = if self.partial.is_empty() {
            Cow::Borrowed(&input[..i])
        } else {
            self.partial.extend_from_slice(&input[..i]);
            Cow::Owned(std::mem::take(&mut self.partial))
        };
        (i + 1, split_ending(line))
    }

    /// The kind of a line of `length` bytes (its LF excluded) when that reaches its limit;
    /// `more` is what follows the held part of the line.
    fn over_limit(&self, length: usize, more: &[u8]) -> Option<LineKind> {
        if length < self.limits.command {
            return None;
        }
        let kind = self.kind(more);
        let limit = match (kind, self.limits.auth) {
            (LineKind::Auth, Some(auth)) => auth.max(self.limits.command),
            _ => self.limits.command,
        };
        (length >= limit).then_some(kind)
    }

    /// An AUTH line is one of an AUTH exchange, or one starting with the AUTH verb.
    fn kind(&self, more: &[u8]) -> LineKind {
        if self.limits.auth.is_none() {
            return LineKind::Command;
        }
        if self.auth_exchange {
            return LineKind::Auth;
        }
        let mut head = [0u8; 5];
        let held = self.partial.len().min(5);
        head[..held].copy_from_slice(&self.partial[..held]);
        let rest = (5 - held).min(more.len());
        head[held..held + rest].copy_from_slice(&more[..rest]);
        if head.eq_ignore_ascii_case(b"AUTH ") {
            LineKind::Auth
        } else {
            LineKind::Command
        }
    }
}

fn split_ending(line: Cow<'_, [u8]>) -> Read<'_> {
    if line.last() != Some(&b'\r') {
        return Read::Line(line, LineEnding::BareLf);
    }
    let line = match line {
        Cow::Borrowed(l) => Cow::Borrowed(&l[..l.len() - 1]),
        Cow::Owned(mut l) => {
            l.pop();
            Cow::Owned(l)
        }
    };
    Read::Line(line, LineEnding::CrLf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: LineLimits = LineLimits {
        command: 16,
        auth: Some(32),
    };

    /// Everything a reader makes of `input` fed in pieces of the given sizes.
    fn lines(reader: &mut LineReader, input: &[u8], piece: usize) -> Vec<String> {
        let mut found = Vec::new();
        for mut chunk in input.chunks(piece.max(1)) {
            loop {
                let (n, read) = reader.read(chunk);
                assert!(n <= chunk.len());
                chunk = &chunk[n..];
                match read {
                    Read::Line(line, ending) => {
                        found.push(format!("{} {ending:?}", line.escape_ascii()))
                    }
                    Read::TooLong(kind) => found.push(format!("too long {kind:?}")),
                    Read::NeedMore => {
                        assert!(chunk.is_empty(), "NeedMore takes everything");
                        break;
                    }
                }
            }
        }
        found
    }

    #[test]
    fn lines_end_at_lf_and_lose_their_crlf() {
        let mut r = LineReader::commands(LIMITS);
        assert_eq!(
            lines(&mut r, b"NOOP\r\nRSET\nQUIT\r\r\n", 100),
            ["NOOP CrLf", "RSET BareLf", "QUIT\\r CrLf"]
        );
        assert!(!r.has_partial_line());
    }

    #[test]
    fn a_line_in_one_read_is_borrowed_and_a_split_one_is_held() {
        let mut r = LineReader::commands(LIMITS);
        let (n, read) = r.read(b"NOOP\r\nRS");
        assert_eq!(n, 6);
        assert!(matches!(
            read,
            Read::Line(Cow::Borrowed(b"NOOP"), LineEnding::CrLf)
        ));
        assert_eq!(r.read(b"RS"), (2, Read::NeedMore));
        assert!(r.has_partial_line());
        assert_eq!(r.held(), 2);
        let (n, read) = r.read(b"ET\r\nQUIT");
        assert_eq!(n, 4);
        assert_eq!(
            read,
            Read::Line(Cow::Owned(b"RSET".to_vec()), LineEnding::CrLf)
        );
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn a_line_at_its_limit_is_skipped_to_its_end_without_being_held() {
        let mut r = LineReader::commands(LIMITS);
        // 15 bytes and CRLF would be 17 > 16; 14 and CRLF fit.
        assert_eq!(
            lines(
                &mut r,
                b"aaaaaaaaaaaaaa\r\nbbbbbbbbbbbbbbb\r\nNOOP\r\n",
                100
            ),
            ["aaaaaaaaaaaaaa CrLf", "too long Command", "NOOP CrLf"]
        );
        let mut r = LineReader::commands(LIMITS);
        assert_eq!(r.read(&[b'x'; 40]), (40, Read::NeedMore));
        assert_eq!(r.held(), 0, "an overlong line is never buffered");
        assert_eq!(r.read(&[b'x'; 4000]), (4000, Read::NeedMore));
        assert_eq!(
            r.read(b"x\r\nNOOP\r\n"),
            (3, Read::TooLong(LineKind::Command))
        );
    }

    #[test]
    fn auth_lines_get_the_auth_limit_even_when_the_verb_is_split() {
        let long_auth = format!("auth PLAIN {}\r\n", "A".repeat(18));
        for piece in 1..long_auth.len() {
            let mut r = LineReader::commands(LIMITS);
            let found = lines(&mut r, long_auth.as_bytes(), piece);
            assert_eq!(found.len(), 1);
            assert!(found[0].ends_with("CrLf"), "{piece}: {found:?}");
        }
        let too_long = format!("AUTH PLAIN {}\r\n", "A".repeat(40));
        let mut r = LineReader::commands(LIMITS);
        assert_eq!(lines(&mut r, too_long.as_bytes(), 7), ["too long Auth"]);
        // Without AUTH, the same line is a command line.
        let mut r = LineReader::commands(LineLimits {
            auth: None,
            ..LIMITS
        });
        assert_eq!(lines(&mut r, long_auth.as_bytes(), 7), ["too long Command"]);
        let mut r = LineReader::auth_exchange(LIMITS);
        assert_eq!(
            lines(&mut r, format!("{}\r\n", "B".repeat(40)).as_bytes(), 9),
            ["too long Auth"]
        );
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_lines(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'A'), Just(b' '), Just(b'u')], 0..200),
            piece in 1usize..40,
        ) {
            let whole = lines(&mut LineReader::commands(LIMITS), &input, input.len().max(1));
            let mut r = LineReader::commands(LIMITS);
            prop_assert_eq!(lines(&mut r, &input, piece), whole);
            prop_assert!(r.held() < LIMITS.auth.unwrap());
        }
    }
}
