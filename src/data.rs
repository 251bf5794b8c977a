//! Receiving the body of a `DATA` command (RFC 5321 section 4.5.2).
//!
//! After the server answers `DATA` with 354, everything the client sends up to
//! and including `CRLF . CRLF` is message content. [`DataReceiver`] turns that
//! byte stream back into the message: it removes dot-stuffing, finds the end of
//! data, bounds memory by a size limit, and treats bare CR and bare LF so that
//! they can never be used to smuggle a second message or command past this
//! server (SMTP smuggling).
//!
//! The receiver is sans-IO: the caller feeds whatever bytes it has, in chunks of
//! any size, split anywhere, and the result is identical to feeding the whole
//! stream at once.
//!
//! Rules, in short:
//!
//! * The receiver starts at the beginning of a line, because the caller has just
//!   consumed the CRLF of the `DATA` command line. So `.CRLF` as the very first
//!   bytes is an empty message.
//! * Only a real `CRLF` (CR immediately followed by LF) ends a line. A bare CR or
//!   bare LF never starts a line, whatever the policy, so `LF . LF`,
//!   `LF . CRLF`, `CR . CR` and friends neither end the data nor trigger
//!   dot-unstuffing.
//! * The end of data is `CRLF . CRLF`; its first CRLF is the last line ending of
//!   the message and is stored, `. CRLF` is not.
//! * A line whose first byte is `.` and which is not exactly `.CRLF` loses that
//!   first `.`.
//!
//! Because [`BareLineEndings::Normalize`] turns a bare LF into CRLF without
//! treating it as a line start, a normalized body can contain `CRLF . CRLF`.
//! Anything relaying the body must dot-stuff it again, as RFC 5321 requires
//! anyway.

use memchr::memchr2;

use std::sync::OnceLock;

use memchr::memmem::Finder;

pub use crate::body::LeadingWhitespace;
use crate::body::{scan_text, Bounded, TextScan};

/// Finds the start of a line beginning with a dot: `CRLF .`.
fn dot_line_finder() -> &'static Finder<'static> {
    static FINDER: OnceLock<Finder<'static>> = OnceLock::new();
    FINDER.get_or_init(|| Finder::new(b"\r\n."))
}

/// What to do with a CR or LF that is not part of a CRLF pair inside message data.
///
/// Whatever the policy, a bare CR or LF never ends a line for the purpose of
/// dot-unstuffing or end-of-data detection, and
/// [`DataReceiver::saw_bare_line_ending`] reports that one was seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum BareLineEndings {
    /// Store the byte unchanged; the caller is expected to reject the message
    /// once the data is complete (RFC 5321 section 2.3.8 forbids bare CR and LF).
    #[default]
    Reject,
    /// Store CRLF in place of the bare CR or bare LF.
    Normalize,
    /// Store the byte unchanged and accept the message.
    Allow,
}

/// What one `feed` knows of the input ahead of the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ahead {
    /// Not looked at yet.
    Unknown,
    /// Every line ending in `input[from..until]` is CRLF.
    Clean {
        from: usize,
        until: usize,
        /// Some byte there has its high bit set.
        eight_bit: bool,
    },
    /// Some line ending ahead is bare: each span is checked on its own.
    Unchecked,
}

impl Ahead {
    /// The least checked ahead at first: a small message is not checked much past its end
    /// (the rest of the read may be the next commands); each later window doubles what was
    /// checked, so a long message costs one pass and a few calls per read.
    const WINDOW: usize = 512;

    /// Makes sure `input[start..end]` was checked, looking further ahead when it was not,
    /// and says what the span needs: `None` when it holds a bare line ending ahead,
    /// else whether it may hold 8-bit bytes.
    fn check(&mut self, input: &[u8], start: usize, end: usize) -> Option<bool> {
        let (from, until, eight_bit) = match *self {
            Ahead::Unchecked => return None,
            Ahead::Clean {
                until, eight_bit, ..
            } if end <= until => return Some(eight_bit),
            Ahead::Clean {
                from,
                until,
                eight_bit,
            } => (from, until, eight_bit),
            Ahead::Unknown => (start, start, false),
        };
        let grown = (until - from).max(Ahead::WINDOW);
        let next = end.max(until + grown).min(input.len());
        // From the byte before `until`, so that the pair across the windows' border counts.
        let scan = scan_text(&input[until.saturating_sub(1).max(from)..next]);
        *self = if scan.clean {
            Ahead::Clean {
                from,
                until: next,
                eight_bit: eight_bit || scan.eight_bit,
            }
        } else {
            Ahead::Unchecked
        };
        self.check(input, start, end)
    }
}

/// Progress of a [`DataReceiver`] after a call to [`DataReceiver::feed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataStatus {
    /// The end-of-data sequence has not been seen yet; all input was consumed.
    NeedMore,
    /// The end-of-data sequence was seen; bytes after it were not consumed.
    Done,
}

/// Where the receiver is in the byte stream between two calls to `feed`.
///
/// Every state that holds back bytes (a `.` or a CR whose meaning depends on
/// the next byte) records them here, because the next byte may only arrive in
/// the next chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the beginning of a line: right after a real CRLF, or at the start.
    LineStart,
    /// A `.` at the beginning of a line was consumed but not stored.
    Dot,
    /// `.` and CR at the beginning of a line were consumed but not stored.
    DotCr,
    /// Inside a line.
    Mid,
    /// A CR inside a line was consumed but not stored.
    MidCr,
    /// The end-of-data sequence was consumed.
    Done,
}

/// Incremental receiver for the content of an SMTP `DATA` command.
///
/// Create one after sending the 354 reply, call [`feed`](Self::feed) with each
/// chunk of input until it returns [`DataStatus::Done`], then look at
/// [`exceeded`](Self::exceeded) and
/// [`saw_bare_line_ending`](Self::saw_bare_line_ending) to decide on the reply.
///
/// # Size limit
///
/// At most `max_size` bytes of unstuffed message are appended to the caller's
/// buffer. When the message is longer, the buffer holds exactly its first
/// `max_size` bytes, [`exceeded`](Self::exceeded) becomes true, and the
/// receiver keeps scanning (without storing) until the end of data so that the
/// reply can be sent at the right point of the stream. Nothing already stored
/// is removed; the caller should discard the truncated message.
/// [`size`](Self::size) keeps counting the full length.
///
/// When the buffer has to grow, the receiver makes sure its capacity never goes
/// beyond what `max_size` can require, so an oversized message costs no more
/// memory than a message of exactly `max_size` bytes.
#[derive(Clone, Debug)]
pub struct DataReceiver {
    state: State,
    policy: BareLineEndings,
    body: Bounded,
    saw_bare: bool,
}

impl DataReceiver {
    /// Creates a receiver positioned at the start of the first line of the
    /// message, storing at most `max_size` bytes of unstuffed message.
    pub fn new(policy: BareLineEndings, max_size: u64) -> Self {
        Self {
            state: State::LineStart,
            policy,
            body: Bounded::new(max_size, true),
            saw_bare: false,
        }
    }

    /// A receiver that reads the message exactly like [`new`](Self::new) (end of data, size,
    /// limit, bare line endings) but appends nothing to the caller's buffer: for a session
    /// whose caller is not told about messages, so that dropping one costs no copy and no
    /// allocation, whatever its size.
    pub fn discarding(policy: BareLineEndings, max_size: u64) -> Self {
        Self {
            body: Bounded::new(max_size, false),
            ..Self::new(policy, max_size)
        }
    }

    /// Sets what the receiver does with content whose first byte is a space or a tab
    /// ([`LeadingWhitespace::Reject`] by default: store it unchanged and report it).
    #[must_use]
    pub fn with_leading_whitespace(mut self, policy: LeadingWhitespace) -> Self {
        self.body.set_leading_whitespace(policy);
        self
    }

    /// Consumes bytes from `input`, appending the unstuffed message to `body` as
    /// long as the stored size stays within `max_size`.
    ///
    /// Returns the number of bytes consumed and whether the end-of-data
    /// sequence was seen. While the status is [`DataStatus::NeedMore`] the whole
    /// input is consumed (a trailing `.` or CR is remembered internally). Once
    /// the status is [`DataStatus::Done`], the count stops right after the LF of
    /// the terminating `.CRLF`: the remaining bytes are the next pipelined
    /// commands and belong to the caller. Feeding a finished receiver consumes
    /// nothing and returns [`DataStatus::Done`] again.
    ///
    /// Bytes are only ever appended to `body`; what it held before is kept.
    pub fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> (usize, DataStatus) {
        let mut i = 0;
        let mut ahead = Ahead::Unknown;
        loop {
            match self.state {
                State::Done => return (i, DataStatus::Done),
                State::Mid => {
                    i = self.line_content(input, i, body, &mut ahead);
                    if self.state == State::Mid {
                        // Only returns in `Mid` after consuming everything.
                        return (i, DataStatus::NeedMore);
                    }
                }
                State::LineStart => match input.get(i) {
                    None => return (i, DataStatus::NeedMore),
                    Some(b'.') => {
                        i += 1;
                        self.state = State::Dot;
                    }
                    // Apart from a leading dot, a line start behaves like the
                    // inside of a line, including for CR and LF.
                    Some(_) => self.state = State::Mid,
                },
                State::Dot => match input.get(i) {
                    None => return (i, DataStatus::NeedMore),
                    Some(b'\r') => {
                        i += 1;
                        self.state = State::DotCr;
                    }
                    // Not `.CRLF`: the dot was stuffing and stays dropped; the
                    // byte is looked at again as ordinary line content, so a
                    // bare LF here is caught as one.
                    Some(_) => self.state = State::Mid,
                },
                State::DotCr => match input.get(i) {
                    None => return (i, DataStatus::NeedMore),
                    Some(b'\n') => {
                        self.state = State::Done;
                        return (i + 1, DataStatus::Done);
                    }
                    Some(_) => {
                        // `.CR` then something else: the dot was stuffing and the
                        // CR is bare. The byte is not consumed, since it may be a
                        // CR that starts a real CRLF.
                        self.bare_line_ending(b'\r', body);
                        self.state = State::Mid;
                    }
                },
                State::MidCr => match input.get(i) {
                    None => return (i, DataStatus::NeedMore),
                    Some(b'\n') => {
                        self.store(b"\r\n", body);
                        i += 1;
                        self.state = State::LineStart;
                    }
                    Some(_) => {
                        self.bare_line_ending(b'\r', body);
                        self.state = State::Mid;
                    }
                },
            }
        }
    }

    /// Size of the message after unstuffing, counting bytes not stored because
    /// of the limit (and, under [`BareLineEndings::Normalize`], the CRLFs that
    /// replaced bare line endings).
    pub fn size(&self) -> u64 {
        self.body.size()
    }

    /// True when the message was larger than `max_size`; the buffer then holds
    /// only the first `max_size` bytes of the message.
    pub fn exceeded(&self) -> bool {
        self.body.exceeded()
    }

    /// True when a bare CR or bare LF was seen, under every policy.
    pub fn saw_bare_line_ending(&self) -> bool {
        self.saw_bare
    }

    /// True when the unstuffed content began with a space or a tab (see
    /// [`LeadingWhitespace`]), under every policy and also for a discarding receiver.
    pub fn saw_leading_whitespace(&self) -> bool {
        self.body.leading_whitespace()
    }

    /// True once a stored byte had its high bit set (8-bit content). A discarding receiver
    /// does not look.
    pub fn saw_eight_bit(&self) -> bool {
        self.body.eight_bit()
    }

    /// Stops storing: the rest of the message is read, checked and counted as by a
    /// [`discarding`](Self::discarding) receiver. For a message that will be refused anyway.
    pub fn stop_storing(&mut self) {
        self.body.stop_storing();
    }

    /// True once the end-of-data sequence has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Line content from `i`: the fast path for clean text, else line by line. Only line
    /// content can hold 8-bit bytes: the fast path checks its span as it scans, the
    /// line-by-line scan what it stored.
    fn line_content(
        &mut self,
        input: &[u8],
        i: usize,
        body: &mut Vec<u8>,
        ahead: &mut Ahead,
    ) -> usize {
        if let Some(next) = self.scan_clean_text(input, i, body, ahead) {
            return next;
        }
        let from = body.len();
        let next = self.scan_line_content(input, i, body);
        self.body.note_stored(body, from);
        next
    }

    /// The fast path for clean text: from `i` inside a line to the next line that starts
    /// with a dot (or the end of the input), when every line ending on the way is CRLF. The
    /// span is found with one substring search and stored in one copy. The line endings are
    /// checked once for the rest of the input, the first time the fast path runs in a
    /// `feed`, in one vector pass: every span after it lies inside what was checked
    /// ([`Ahead`]). Returns `None`, having done nothing, when the span holds a bare CR or
    /// LF: the line-by-line scan handles it.
    fn scan_clean_text(
        &mut self,
        input: &[u8],
        i: usize,
        body: &mut Vec<u8>,
        ahead: &mut Ahead,
    ) -> Option<usize> {
        let rest = input.get(i..).unwrap_or_default();
        let (span, dot_line) = match dot_line_finder().find(rest) {
            Some(at) => (&rest[..at + 2], true),
            None => (rest, false),
        };
        // Inside a line, an LF right away has no CR before it.
        if span.first() == Some(&b'\n') {
            return None;
        }
        let scan = match ahead.check(input, i, i + span.len()) {
            Some(false) => TextScan {
                clean: true,
                eight_bit: false,
            },
            // 8-bit bytes ahead may lie past the span (in the next command): look again; and
            // with a bare line ending ahead, each span is checked on its own.
            Some(true) | None => scan_text(span),
        };
        if !scan.clean {
            return None;
        }
        self.body.note_scanned(scan.eight_bit);
        let end = i + span.len();
        if dot_line {
            self.store(span, body);
            self.state = State::LineStart;
            return Some(end);
        }
        match span {
            [.., b'\r', b'\n'] => {
                self.store(span, body);
                self.state = State::LineStart;
            }
            [head @ .., b'\r'] => {
                // Whether this CR is bare depends on the next chunk.
                self.store(head, body);
                self.state = State::MidCr;
            }
            _ => self.store(span, body),
        }
        Some(end)
    }

    /// The hot loop: scans line content from `i`, storing whole runs of bytes.
    ///
    /// A run keeps growing across lines until a byte has to be dropped or
    /// replaced (stuffing dot, normalized bare line ending) or the chunk ends,
    /// so ordinary text costs one `memchr2` per line and one copy per run.
    /// Returns the new position; `self.state` says where it stopped. It stays
    /// `Mid` only when the whole input was consumed.
    fn scan_line_content(&mut self, input: &[u8], mut i: usize, body: &mut Vec<u8>) -> usize {
        let mut run = i;
        loop {
            let Some(offset) = memchr2(b'\r', b'\n', input.get(i..).unwrap_or_default()) else {
                self.store(input.get(run..).unwrap_or_default(), body);
                return input.len();
            };
            let p = i + offset;
            if input.get(p) == Some(&b'\r') {
                match input.get(p + 1) {
                    Some(b'\n') => {
                        i = p + 2;
                        // A line start only matters if it begins with a dot (or
                        // we cannot see it yet); anything else is just more
                        // content for the same run.
                        if matches!(input.get(i), None | Some(b'.')) {
                            self.store(input.get(run..i).unwrap_or_default(), body);
                            self.state = State::LineStart;
                            return i;
                        }
                    }
                    Some(_) => {
                        self.saw_bare = true;
                        if self.policy == BareLineEndings::Normalize {
                            self.store(input.get(run..p).unwrap_or_default(), body);
                            self.store(b"\r\n", body);
                            run = p + 1;
                        }
                        i = p + 1;
                    }
                    None => {
                        // Whether this CR is bare depends on the next chunk.
                        self.store(input.get(run..p).unwrap_or_default(), body);
                        self.state = State::MidCr;
                        return input.len();
                    }
                }
            } else {
                // Every CRLF pair is consumed as a unit above, so any LF found
                // here is not preceded by CR in the stream: it is bare.
                self.saw_bare = true;
                if self.policy == BareLineEndings::Normalize {
                    self.store(input.get(run..p).unwrap_or_default(), body);
                    self.store(b"\r\n", body);
                    run = p + 1;
                }
                i = p + 1;
            }
        }
    }

    /// Records a bare CR or LF and stores whatever the policy says replaces it.
    fn bare_line_ending(&mut self, byte: u8, body: &mut Vec<u8>) {
        self.saw_bare = true;
        match self.policy {
            BareLineEndings::Normalize => self.store(b"\r\n", body),
            BareLineEndings::Reject | BareLineEndings::Allow => self.store(&[byte], body),
        }
    }

    /// Appends message bytes to `body`, within the size limit.
    fn store(&mut self, bytes: &[u8], body: &mut Vec<u8>) {
        self.body.store(bytes, body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: [BareLineEndings; 3] = [
        BareLineEndings::Reject,
        BareLineEndings::Normalize,
        BareLineEndings::Allow,
    ];

    #[test]
    fn default_policy_is_reject() {
        assert_eq!(BareLineEndings::default(), BareLineEndings::Reject);
    }

    #[test]
    fn memory_stays_within_limit() {
        let max = 10_000;
        let line = [b'x'; 78];
        let mut input = Vec::new();
        for _ in 0..20_000 {
            input.extend_from_slice(&line);
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(b".\r\n");
        let mut rx = DataReceiver::new(BareLineEndings::Reject, max);
        let mut body = Vec::new();
        for chunk in input.chunks(1000) {
            rx.feed(chunk, &mut body);
        }
        assert!(rx.is_done() && rx.exceeded());
        assert_eq!(body.len() as u64, max);
        assert!(body.capacity() as u64 <= max + 64, "{}", body.capacity());
        assert_eq!(rx.size(), input.len() as u64 - 3);
    }

    #[test]
    fn discarding_receiver_reads_alike_and_stores_nothing() {
        let (_, wire) = stuff(&sample_message(64 * 1024));
        // Bare line endings before the terminator, a command after it.
        let mut piped = wire[..wire.len() - 3].to_vec();
        piped.extend_from_slice(b"a\nb\rc\r\n.\r\nQUIT\r\n");
        for policy in POLICIES {
            for max in [0, 100, u64::MAX] {
                for chunk in [1, 79, 4096, piped.len()] {
                    let mut keep = DataReceiver::new(policy, max);
                    let mut drop = DataReceiver::discarding(policy, max);
                    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
                    for piece in piped.chunks(chunk) {
                        assert_eq!(keep.feed(piece, &mut kept), drop.feed(piece, &mut dropped));
                    }
                    assert!(dropped.is_empty() && dropped.capacity() == 0);
                    assert_eq!(
                        (keep.size(), keep.exceeded(), keep.saw_bare_line_ending()),
                        (drop.size(), drop.exceeded(), drop.saw_bare_line_ending())
                    );
                    assert!(drop.is_done());
                }
            }
        }
    }

    #[test]
    fn eight_bit_content_is_seen_on_every_path_and_any_split() {
        let cases: [(&[u8], bool); 5] = [
            (b"plain\r\n.dot\r\n.\r\n", false),
            ("caf\u{e9}\r\n.\r\n".as_bytes(), true),
            ("..caf\u{e9} after a stuffing dot\r\n.\r\n".as_bytes(), true),
            ("bare\nlf caf\u{e9}\r\n.\r\n".as_bytes(), true),
            (b"bare\nlf only\r\n.\r\n", false),
        ];
        for (input, eight_bit) in cases {
            for piece in [1, 2, 3, 7, input.len()] {
                let mut rx = DataReceiver::new(BareLineEndings::Allow, 1 << 20);
                let mut body = Vec::new();
                for chunk in input.chunks(piece) {
                    rx.feed(chunk, &mut body);
                }
                assert!(rx.is_done());
                assert_eq!(
                    rx.saw_eight_bit(),
                    eight_bit,
                    "{input:?} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn appends_to_existing_body() {
        let mut rx = DataReceiver::new(BareLineEndings::Reject, 3);
        let mut body = b"Received: x\r\n".to_vec();
        assert_eq!(rx.feed(b"abcd\r\n.\r\n", &mut body), (9, DataStatus::Done));
        assert_eq!(body, b"Received: x\r\nabc");
        assert!(rx.exceeded());
    }

    /// Builds a 1 MiB message of 78-byte lines, some starting with dots.
    fn sample_message(target: usize) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut total = 0;
        let mut seed: u32 = 0x1234_5678;
        while total < target {
            let mut line = Vec::with_capacity(78);
            for _ in 0..78 {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                line.push(b" .abcdefghijklmnopqrstuvwxyz0123456789"[(seed >> 24) as usize % 38]);
            }
            match lines.len() % 7 {
                0 => line[0] = b'.',
                3 => line[..3].copy_from_slice(b"..."),
                _ => {}
            }
            total += line.len() + 2;
            lines.push(line);
        }
        lines
    }

    fn stuff(lines: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
        let mut plain = Vec::new();
        let mut wire = Vec::new();
        for line in lines {
            plain.extend_from_slice(line);
            plain.extend_from_slice(b"\r\n");
            if line.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
        (plain, wire)
    }

    #[test]
    fn large_message_round_trips() {
        let (plain, wire) = stuff(&sample_message(1 << 20));
        for chunk in [wire.len(), 16 * 1024, 4093, 79, 80, 81] {
            let mut rx = DataReceiver::new(BareLineEndings::Reject, 2 << 20);
            let mut body = Vec::new();
            let mut consumed = 0;
            for piece in wire.chunks(chunk) {
                consumed += rx.feed(piece, &mut body).0;
            }
            assert!(rx.is_done());
            assert_eq!(consumed, wire.len());
            assert!(body == plain, "chunk size {chunk}");
            assert_eq!(rx.size(), plain.len() as u64);
            assert!(!rx.exceeded() && !rx.saw_bare_line_ending());
        }
    }
}
