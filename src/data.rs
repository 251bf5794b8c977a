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

use crate::body::{crlf_clean, Bounded};

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
        let from = body.len();
        let fed = self.unstuff(input, body);
        self.body.note_stored(body, from);
        fed
    }

    fn unstuff(&mut self, input: &[u8], body: &mut Vec<u8>) -> (usize, DataStatus) {
        let mut i = 0;
        loop {
            match self.state {
                State::Done => return (i, DataStatus::Done),
                State::Mid => {
                    i = match self.scan_clean_text(input, i, body) {
                        Some(next) => next,
                        None => self.scan_line_content(input, i, body),
                    };
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

    /// The fast path for clean text: from `i` inside a line to the next line that starts
    /// with a dot (or the end of the input), when every line ending on the way is CRLF. The
    /// span is found with one substring search and checked in one vector pass, and stored
    /// in one copy. Returns `None`, having done nothing, when the span holds a bare CR or
    /// LF: the line-by-line scan handles it.
    fn scan_clean_text(&mut self, input: &[u8], i: usize, body: &mut Vec<u8>) -> Option<usize> {
        let rest = input.get(i..).unwrap_or_default();
        let (span, dot_line) = match dot_line_finder().find(rest) {
            Some(at) => (&rest[..at + 2], true),
            None => (rest, false),
        };
        // Inside a line, an LF right away has no CR before it.
        if span.first() == Some(&b'\n') || !crlf_clean(span) {
            return None;
        }
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

/// Byte-at-a-time model of [`DataReceiver`] over a complete input, for tests and
/// fuzzing only.
///
/// Returns the unstuffed body, the number of bytes up to and including the
/// terminating `.CRLF`, and whether a bare CR or LF was seen; `None` when the
/// input holds no end-of-data sequence. Ignores size limits.
#[doc(hidden)]
pub fn reference_unstuff(input: &[u8], policy: BareLineEndings) -> Option<(Vec<u8>, usize, bool)> {
    let mut body = Vec::new();
    let mut saw_bare = false;
    let mut line_start = true;
    let mut i = 0;
    while let Some(&byte) = input.get(i) {
        if line_start && byte == b'.' {
            if input.get(i + 1..i + 3) == Some(b"\r\n") {
                return Some((body, i + 3, saw_bare));
            }
            // Stuffing dot: drop it; what follows is no longer a line start.
            line_start = false;
            i += 1;
            continue;
        }
        line_start = false;
        if byte == b'\r' && input.get(i + 1) == Some(&b'\n') {
            body.extend_from_slice(b"\r\n");
            line_start = true;
            i += 2;
        } else if byte == b'\r' || byte == b'\n' {
            saw_bare = true;
            if policy == BareLineEndings::Normalize {
                body.extend_from_slice(b"\r\n");
            } else {
                body.push(byte);
            }
            i += 1;
        } else {
            body.push(byte);
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICIES: [BareLineEndings; 3] = [
        BareLineEndings::Reject,
        BareLineEndings::Normalize,
        BareLineEndings::Allow,
    ];

    /// Everything observable after feeding some input.
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        body: Vec<u8>,
        consumed: usize,
        done: bool,
        saw_bare: bool,
        size: u64,
        exceeded: bool,
    }

    /// Feeds `input` in chunks of the given lengths (the rest in one last chunk),
    /// checking the per-call contract on the way.
    fn feed_chunks(
        input: &[u8],
        chunk_lens: &[usize],
        policy: BareLineEndings,
        max_size: u64,
    ) -> Outcome {
        let mut rx = DataReceiver::new(policy, max_size);
        let mut body = Vec::new();
        let mut pos = 0;
        let mut done = false;
        let mut lens = chunk_lens.iter().copied();
        while pos < input.len() {
            let len = lens
                .next()
                .unwrap_or(input.len() - pos)
                .min(input.len() - pos);
            let chunk = &input[pos..pos + len];
            let (n, status) = rx.feed(chunk, &mut body);
            assert!(n <= chunk.len());
            pos += n;
            if status == DataStatus::Done {
                done = true;
                break;
            }
            assert_eq!(n, chunk.len(), "NeedMore must consume the whole chunk");
        }
        assert_eq!(done, rx.is_done());
        if done {
            assert_eq!(rx.feed(b".\r\n", &mut body), (0, DataStatus::Done));
        }
        Outcome {
            body,
            consumed: pos,
            done,
            saw_bare: rx.saw_bare_line_ending(),
            size: rx.size(),
            exceeded: rx.exceeded(),
        }
    }

    fn whole(input: &[u8], policy: BareLineEndings) -> Outcome {
        feed_chunks(input, &[], policy, u64::MAX)
    }

    fn byte_by_byte(input: &[u8], policy: BareLineEndings, max_size: u64) -> Outcome {
        feed_chunks(input, &vec![1; input.len()], policy, max_size)
    }

    /// What the receiver must report, derived from the reference model.
    fn expected(input: &[u8], policy: BareLineEndings, max_size: u64) -> Outcome {
        let (body, consumed, saw_bare) = reference_unstuff(input, policy).expect("terminated");
        let size = body.len() as u64;
        let stored = body
            .len()
            .min(usize::try_from(max_size).unwrap_or(usize::MAX));
        Outcome {
            body: body[..stored].to_vec(),
            consumed,
            done: true,
            saw_bare,
            size,
            exceeded: size > max_size,
        }
    }

    /// Checks one input under every policy, whole and byte by byte.
    fn check(input: &[u8], policy: BareLineEndings, body: &[u8], saw_bare: bool) {
        for out in [whole(input, policy), byte_by_byte(input, policy, u64::MAX)] {
            assert_eq!(
                out.body.escape_ascii().to_string(),
                body.escape_ascii().to_string(),
                "input {:?} policy {policy:?}",
                input.escape_ascii().to_string()
            );
            assert!(out.done);
            assert_eq!(out.consumed, input.len());
            assert_eq!(out.saw_bare, saw_bare);
            assert_eq!(out.size, body.len() as u64);
            assert!(!out.exceeded);
        }
        assert_eq!(
            reference_unstuff(input, policy),
            Some((body.to_vec(), input.len(), saw_bare))
        );
    }

    fn check_all_policies(input: &[u8], body: &[u8], saw_bare: bool) {
        for policy in POLICIES {
            check(input, policy, body, saw_bare);
        }
    }

    #[test]
    fn default_policy_is_reject() {
        assert_eq!(BareLineEndings::default(), BareLineEndings::Reject);
    }

    #[test]
    fn dot_first_ends_empty_message() {
        check_all_policies(b".\r\n", b"", false);
    }

    #[test]
    fn terminator_first_crlf_is_stored() {
        check_all_policies(b"Hello\r\n.\r\n", b"Hello\r\n", false);
        check_all_policies(b"a\r\nb\r\n\r\n.\r\n", b"a\r\nb\r\n\r\n", false);
    }

    #[test]
    fn bytes_after_terminator_are_not_consumed() {
        let input = b"Hello\r\n.\r\nMAIL FROM:<a@b>\r\n";
        for policy in POLICIES {
            for out in [whole(input, policy), byte_by_byte(input, policy, u64::MAX)] {
                assert!(out.done);
                assert_eq!(out.consumed, b"Hello\r\n.\r\n".len());
                assert_eq!(out.body, b"Hello\r\n");
            }
        }
        let mut rx = DataReceiver::new(BareLineEndings::Reject, 100);
        let mut body = Vec::new();
        assert_eq!(rx.feed(b".\r\nQUIT\r\n", &mut body), (3, DataStatus::Done));
        assert_eq!(rx.feed(b"QUIT\r\n", &mut body), (0, DataStatus::Done));
        assert!(body.is_empty());
    }

    #[test]
    fn no_terminator_needs_more() {
        for input in [
            &b""[..],
            b"abc",
            b"abc\r\n",
            b"abc\r\n.",
            b"abc\r\n.\r",
            b"\n.\n",
        ] {
            let mut rx = DataReceiver::new(BareLineEndings::Reject, 100);
            let mut body = Vec::new();
            assert_eq!(
                rx.feed(input, &mut body),
                (input.len(), DataStatus::NeedMore)
            );
            assert!(!rx.is_done());
            assert_eq!(reference_unstuff(input, BareLineEndings::Reject), None);
        }
    }

    /// Sequence, body under Reject/Allow, body under Normalize, bare seen.
    type SmugglingCase = (&'static [u8], &'static [u8], &'static [u8], bool);

    /// Sequences that look like an end of data to some lenient receiver and
    /// must not end it here, with the body expected after `"Hi"` under
    /// Reject/Allow, then under Normalize, and whether a bare CR or LF is in it.
    const SMUGGLING: &[SmugglingCase] = &[
        (b"\n.\n", b"Hi\n.\n", b"Hi\r\n.\r\n", true),
        (b"\n.\r\n", b"Hi\n.\r\n", b"Hi\r\n.\r\n", true),
        (b"\r.\r", b"Hi\r.\r", b"Hi\r\n.\r\n", true),
        (b"\r.\n", b"Hi\r.\n", b"Hi\r\n.\r\n", true),
        (b"\r.\r\n", b"Hi\r.\r\n", b"Hi\r\n.\r\n", true),
        (b"\r\n.\n", b"Hi\r\n\n", b"Hi\r\n\r\n", true),
        (b"\r\n.\r", b"Hi\r\n\r", b"Hi\r\n\r\n", true),
        (b"\r\n.\r\r\n", b"Hi\r\n\r\r\n", b"Hi\r\n\r\n\r\n", true),
        (b"\r\n\0.\r\n", b"Hi\r\n\0.\r\n", b"Hi\r\n\0.\r\n", false),
        (b"\r\n.\0\r\n", b"Hi\r\n\0\r\n", b"Hi\r\n\0\r\n", false),
        (
            b"\r\r\n.\r\r\n",
            b"Hi\r\r\n\r\r\n",
            b"Hi\r\n\r\n\r\n\r\n",
            true,
        ),
    ];

    #[test]
    fn smuggling_sequences_do_not_end_data() {
        for &(seq, kept, normalized, bare) in SMUGGLING {
            let mut input = b"Hi".to_vec();
            input.extend_from_slice(seq);
            input.extend_from_slice(b"more\r\n.\r\n");
            for policy in POLICIES {
                let mut body = if policy == BareLineEndings::Normalize {
                    normalized.to_vec()
                } else {
                    kept.to_vec()
                };
                body.extend_from_slice(b"more\r\n");
                check(&input, policy, &body, bare);

                // With a pipelined command behind it, the count still stops at
                // the real terminator only.
                let mut piped = input.clone();
                piped.extend_from_slice(b"RSET\r\n");
                let out = feed_chunks(&piped, &[], policy, u64::MAX);
                assert_eq!(out.consumed, input.len());
                assert_eq!(out.body, body);
            }
        }
    }

    #[test]
    fn smuggling_sequences_at_message_start() {
        // The DATA command's CRLF counts as the first CRLF of a terminator.
        check(b".\n.\r\n.\r\n", BareLineEndings::Reject, b"\n.\r\n", true);
        check(
            b".\n.\r\n.\r\n",
            BareLineEndings::Normalize,
            b"\r\n.\r\n",
            true,
        );
        check_all_policies(b".\0\r\n.\r\n", b"\0\r\n", false);
        check(b"\n.\r\n.\r\n", BareLineEndings::Reject, b"\n.\r\n", true);
        check(b"\r.\r\n.\r\n", BareLineEndings::Allow, b"\r.\r\n", true);
    }

    #[test]
    fn dot_stuffing_is_removed_at_line_start() {
        check_all_policies(b"..\r\n.\r\n", b".\r\n", false);
        check_all_policies(b".foo\r\n.\r\n", b"foo\r\n", false);
        check_all_policies(b"a\r\n..b\r\n...\r\n.\r\n", b"a\r\n.b\r\n..\r\n", false);
        check_all_policies(b"a.b\r\n.\r\n", b"a.b\r\n", false);
    }

    #[test]
    fn dot_after_bare_line_ending_is_kept() {
        check(
            b"a\n.b\r\n.\r\n",
            BareLineEndings::Reject,
            b"a\n.b\r\n",
            true,
        );
        check(
            b"a\r.b\r\n.\r\n",
            BareLineEndings::Allow,
            b"a\r.b\r\n",
            true,
        );
        check(
            b"a\n.b\r\n.\r\n",
            BareLineEndings::Normalize,
            b"a\r\n.b\r\n",
            true,
        );
        check(
            b"a\r.b\r\n.\r\n",
            BareLineEndings::Normalize,
            b"a\r\n.b\r\n",
            true,
        );
    }

    #[test]
    fn bare_line_endings_per_policy() {
        let input = b"a\rb\nc\r\r\nd\n\r\n.\r\n";
        check(
            input,
            BareLineEndings::Reject,
            b"a\rb\nc\r\r\nd\n\r\n",
            true,
        );
        check(input, BareLineEndings::Allow, b"a\rb\nc\r\r\nd\n\r\n", true);
        check(
            input,
            BareLineEndings::Normalize,
            b"a\r\nb\r\nc\r\n\r\nd\r\n\r\n",
            true,
        );
    }

    #[test]
    fn clean_message_reports_no_bare_line_ending() {
        check_all_policies(b"a\r\n\r\nb\0c\r\n.\r\n", b"a\r\n\r\nb\0c\r\n", false);
    }

    #[test]
    fn cr_at_chunk_end_is_resolved_later() {
        for policy in POLICIES {
            // CR then LF in the next chunk: a real line end, so the dot after it
            // is at a line start and the data ends.
            let out = feed_chunks(b"a\r\n.\r\n", &[2, 1, 3], policy, u64::MAX);
            assert_eq!(out.body, b"a\r\n");
            assert!(out.done && !out.saw_bare);
            // CR then something else: bare, and no line start.
            let out = feed_chunks(b"a\r.\r\n.\r\n", &[2, 1, 3, 3], policy, u64::MAX);
            let body: &[u8] = if policy == BareLineEndings::Normalize {
                b"a\r\n.\r\n"
            } else {
                b"a\r.\r\n"
            };
            assert_eq!(out.body, body);
            assert!(out.done && out.saw_bare);
            // `.` and `.CR` held back at a chunk end.
            let out = feed_chunks(b"a\r\n.\r\n", &[4, 1, 1], policy, u64::MAX);
            assert_eq!(out.body, b"a\r\n");
            assert!(out.done && !out.saw_bare);
            let out = feed_chunks(b"a\r\n.\rb\r\n.\r\n", &[5, 1, 5], policy, u64::MAX);
            assert!(out.done && out.saw_bare);
            assert_eq!(out.consumed, 11);
        }
    }

    #[test]
    fn size_limit_exact_fit_is_not_exceeded() {
        let input = b"Hello\r\n.\r\n";
        let out = feed_chunks(input, &[], BareLineEndings::Reject, 7);
        assert_eq!(out.body, b"Hello\r\n");
        assert_eq!(out.size, 7);
        assert!(!out.exceeded && out.done);
    }

    #[test]
    fn size_limit_keeps_scanning_and_counting() {
        let input = b"Hello\r\nworld\r\n..x\r\n.\r\nNOOP\r\n";
        for max in [0, 1, 6, 7, 8, 13] {
            for out in [
                feed_chunks(input, &[], BareLineEndings::Reject, max),
                byte_by_byte(input, BareLineEndings::Reject, max),
            ] {
                assert_eq!(out.body, &b"Hello\r\nworld\r\n.x\r\n"[..max as usize]);
                assert_eq!(out.size, 18);
                assert!(out.exceeded);
                assert!(out.done);
                assert_eq!(out.consumed, input.len() - 6);
            }
        }
    }

    #[test]
    fn size_counts_normalized_crlf() {
        let out = feed_chunks(b"a\nb\r\n.\r\n", &[], BareLineEndings::Normalize, 5);
        assert_eq!(out.size, 6);
        assert!(out.exceeded);
        assert_eq!(out.body, b"a\r\nb\r");
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

    /// Input bytes weighted toward the ones that matter to the state machine.
    ///
    /// Mapping plain bytes through a table keeps generation cheap; `a` comes
    /// first so that shrinking turns irrelevant bytes into plain text.
    fn data_bytes() -> impl Strategy<Value = Vec<u8>> {
        const ALPHABET: &[u8] = b"aaa\r\r\r\r\n\n\n\n...\0";
        let bytes = proptest::collection::vec(any::<u8>(), 0..300);
        (bytes, any::<bool>()).prop_map(|(raw, piped)| {
            let mut v: Vec<u8> = raw
                .into_iter()
                .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()])
                .collect();
            v.extend_from_slice(b"\r\n.\r\n");
            if piped {
                v.extend_from_slice(b"QUIT\r\n.\r\n");
            }
            v
        })
    }

    fn policy() -> impl Strategy<Value = BareLineEndings> {
        prop_oneof![
            Just(BareLineEndings::Reject),
            Just(BareLineEndings::Normalize),
            Just(BareLineEndings::Allow),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn matches_reference_whole_and_bytewise(input in data_bytes(), policy in policy()) {
            let want = expected(&input, policy, u64::MAX);
            prop_assert_eq!(whole(&input, policy), expected(&input, policy, u64::MAX));
            prop_assert_eq!(byte_by_byte(&input, policy, u64::MAX), want);
        }

        #[test]
        fn matches_reference_random_splits(
            input in data_bytes(),
            policy in policy(),
            splits in proptest::collection::vec(0usize..8, 0..200),
        ) {
            prop_assert_eq!(
                feed_chunks(&input, &splits, policy, u64::MAX),
                expected(&input, policy, u64::MAX)
            );
        }

        #[test]
        fn matches_reference_with_small_limit(
            input in data_bytes(),
            policy in policy(),
            splits in proptest::collection::vec(0usize..8, 0..200),
            max_size in 0u64..64,
        ) {
            let want = expected(&input, policy, max_size);
            prop_assert_eq!(feed_chunks(&input, &splits, policy, max_size), want);
            prop_assert_eq!(
                byte_by_byte(&input, policy, max_size),
                expected(&input, policy, max_size)
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            input in proptest::collection::vec(any::<u8>(), 0..400),
            policy in policy(),
            splits in proptest::collection::vec(0usize..16, 0..100),
            max_size in 0u64..128,
        ) {
            let mut rx = DataReceiver::new(policy, max_size);
            let mut body = Vec::new();
            let mut pos = 0;
            let mut lens = splits.iter().copied();
            while pos < input.len() {
                let len = lens.next().unwrap_or(input.len()).min(input.len() - pos);
                let (n, status) = rx.feed(&input[pos..pos + len], &mut body);
                pos += n;
                if status == DataStatus::Done {
                    break;
                }
            }
            prop_assert!(body.len() as u64 <= max_size);
            match reference_unstuff(&input, policy) {
                Some((_, consumed, _)) => prop_assert_eq!((pos, rx.is_done()), (consumed, true)),
                None => prop_assert!(!rx.is_done()),
            }
        }
    }
}
