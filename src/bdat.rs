//! Receiving the chunks of a `BDAT` message (RFC 3030).
//!
//! A chunk is exactly the number of octets its `BDAT` command announced: they are counted,
//! never scanned for dots or commands, so no chunk can end early or smuggle a command.
//! What they are checked for is line endings: content not declared `BODY=BINARYMIME` is text
//! whose lines end in CRLF (RFC 3030 section 3), so a bare CR or LF gets the same
//! [`BareLineEndings`] policy as in DATA. Without that, `LF . LF` sent by BDAT would reach a
//! relay's next hop that DATA refuses.
//!
//! One [`BdatReceiver`] receives a whole message, chunk after chunk: a CR at the end of one
//! chunk and an LF at the start of the next are one CRLF.

use memchr::memchr2;

use crate::body::LeadingWhitespace;
use crate::body::{scan_text, Bounded};
use crate::data::BareLineEndings;

/// Progress of a [`BdatReceiver`] after [`BdatReceiver::feed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChunkStatus {
    /// The chunk has more octets to come; all input was consumed.
    NeedMore,
    /// The chunk is complete; bytes after it were not consumed.
    Done,
}

/// Incremental receiver for the chunks of one `BDAT` message.
///
/// Call [`start_chunk`](Self::start_chunk) for each `BDAT` command, then
/// [`feed`](Self::feed) its octets until it returns [`ChunkStatus::Done`]. The size limit
/// works as for [`DataReceiver`](crate::data::DataReceiver): past it, exactly the first
/// `max_size` octets are stored and [`exceeded`](Self::exceeded) is set, while every octet is
/// still consumed and counted.
#[derive(Clone, Debug)]
pub struct BdatReceiver {
    /// Octets of the current chunk still to come.
    remaining: u64,
    last: bool,
    /// `None` for binary content (`BODY=BINARYMIME`), whose octets are not looked at.
    policy: Option<BareLineEndings>,
    /// The last octet was a CR whose meaning depends on the next one, possibly in the next
    /// chunk; it is not stored yet.
    cr_pending: bool,
    saw_bare: bool,
    body: Bounded,
}

impl BdatReceiver {
    /// A receiver for a text message (line endings checked under `policy`) or, with `None`,
    /// a binary one; it stores at most `max_size` octets.
    pub fn new(policy: Option<BareLineEndings>, max_size: u64) -> Self {
        BdatReceiver {
            remaining: 0,
            last: false,
            policy,
            cr_pending: false,
            saw_bare: false,
            body: Bounded::new(max_size, true),
        }
    }

    /// A receiver that reads exactly like [`new`](Self::new) but stores nothing.
    pub fn discarding(policy: Option<BareLineEndings>, max_size: u64) -> Self {
        BdatReceiver {
            body: Bounded::new(max_size, false),
            ..BdatReceiver::new(policy, max_size)
        }
    }

    /// Sets what the receiver does with content whose first octet is a space or a tab
    /// ([`LeadingWhitespace::Reject`] by default: store it unchanged and report it). Binary
    /// content too begins with a header section (RFC 3030 section 3), so this applies to it.
    #[must_use]
    pub fn with_leading_whitespace(mut self, policy: LeadingWhitespace) -> Self {
        self.body.set_leading_whitespace(policy);
        self
    }

    /// Begins the chunk of a `BDAT size [LAST]` command.
    pub fn start_chunk(&mut self, size: u64, last: bool) {
        self.remaining = size;
        self.last = last;
    }

    /// Consumes the current chunk's octets from `input`, appending the content to `body`
    /// within the size limit. Returns how many were consumed and whether the chunk is
    /// complete; a chunk of size 0 is complete at once.
    pub fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> (usize, ChunkStatus) {
        let n = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(input.len());
        let octets = &input[..n];
        self.remaining -= n as u64;
        let from = body.len();
        let scanned = match self.policy {
            None => {
                self.body.store(octets, body);
                false
            }
            Some(policy) => self.text(octets, policy, body),
        };
        if self.remaining > 0 {
            if !scanned {
                self.body.note_stored(body, from);
            }
            return (n, ChunkStatus::NeedMore);
        }
        if self.last && self.cr_pending {
            // Nothing can follow the last chunk: the CR was bare.
            self.cr_pending = false;
            self.bare(b'\r', body);
        }
        if !scanned {
            self.body.note_stored(body, from);
        }
        (n, ChunkStatus::Done)
    }

    /// Octets of the current chunk still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// True when the current chunk is the last one.
    pub fn is_last(&self) -> bool {
        self.last
    }

    /// Size of the content so far (with normalized line endings), stored or not.
    pub fn size(&self) -> u64 {
        self.body.size()
    }

    /// True when the content went past `max_size`.
    pub fn exceeded(&self) -> bool {
        self.body.exceeded()
    }

    /// True when a bare CR or LF was seen in text content, under every policy.
    pub fn saw_bare_line_ending(&self) -> bool {
        self.saw_bare
    }

    /// True when the content began with a space or a tab (see [`LeadingWhitespace`]), under
    /// every policy and also for a discarding receiver.
    pub fn saw_leading_whitespace(&self) -> bool {
        self.body.leading_whitespace()
    }

    /// True once a stored octet had its high bit set. A discarding receiver does not look.
    pub fn saw_eight_bit(&self) -> bool {
        self.body.eight_bit()
    }

    /// Stops storing; octets are still consumed, checked and counted.
    pub fn stop_storing(&mut self) {
        self.body.stop_storing();
    }

    /// Text content: stores runs between line endings that need no change, so clean text
    /// costs one `memchr2` per line and one copy per run. Returns true when the 8-bit check
    /// of what it stored is done.
    fn text(&mut self, octets: &[u8], policy: BareLineEndings, body: &mut Vec<u8>) -> bool {
        // Clean CRLF text, the common case: checked in one vector pass, stored in one copy.
        if self.clean_text(octets, body) {
            return true;
        }
        let mut i = 0;
        if self.cr_pending && !octets.is_empty() {
            self.cr_pending = false;
            if octets[0] == b'\n' {
                // A CRLF split between reads or chunks: the LF starts the run.
                self.body.store(b"\r", body);
                i = 1;
            } else {
                self.bare(b'\r', body);
            }
        }
        let normalize = policy == BareLineEndings::Normalize;
        let mut run = 0;
        while let Some(offset) = memchr2(b'\r', b'\n', &octets[i..]) {
            let p = i + offset;
            if octets[p] == b'\n' {
                self.saw_bare = true;
                if normalize {
                    self.body.store(&octets[run..p], body);
                    self.body.store(b"\r\n", body);
                    run = p + 1;
                }
                i = p + 1;
                continue;
            }
            match octets.get(p + 1) {
                Some(b'\n') => i = p + 2,
                Some(_) => {
                    self.saw_bare = true;
                    if normalize {
                        self.body.store(&octets[run..p], body);
                        self.body.store(b"\r\n", body);
                        run = p + 1;
                    }
                    i = p + 1;
                }
                None => {
                    // Whether this CR is bare depends on the next octet.
                    self.body.store(&octets[run..p], body);
                    self.cr_pending = true;
                    return false;
                }
            }
        }
        self.body.store(&octets[run..], body);
        false
    }

    /// Clean CRLF text, the common case: checked in one vector pass, stored in one copy.
    /// Returns false, having done nothing, when the octets need the line-by-line scan.
    fn clean_text(&mut self, octets: &[u8], body: &mut Vec<u8>) -> bool {
        let Some(&first) = octets.first() else {
            return true;
        };
        let scan = scan_text(octets);
        // A pending CR needs an LF first; otherwise an LF first is bare.
        if self.cr_pending != (first == b'\n') || !scan.clean {
            return false;
        }
        if self.cr_pending {
            self.body.store(b"\r", body);
        }
        self.cr_pending = octets.last() == Some(&b'\r');
        let end = octets.len() - usize::from(self.cr_pending);
        self.body.store(&octets[..end], body);
        self.body.note_scanned(scan.eight_bit);
        true
    }

    /// A bare CR or LF: recorded, and stored as the policy says.
    fn bare(&mut self, octet: u8, body: &mut Vec<u8>) {
        self.saw_bare = true;
        match self.policy {
            Some(BareLineEndings::Normalize) => self.body.store(b"\r\n", body),
            _ => self.body.store(&[octet], body),
        }
    }
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

    /// The content of `chunks`, fed in reads of `read` octets: (stored, size, bare seen).
    fn receive(
        chunks: &[&[u8]],
        policy: Option<BareLineEndings>,
        max: u64,
        read: usize,
    ) -> (Vec<u8>, u64, bool, bool) {
        let mut rx = BdatReceiver::new(policy, max);
        let mut body = Vec::new();
        for (k, chunk) in chunks.iter().enumerate() {
            rx.start_chunk(chunk.len() as u64, k + 1 == chunks.len());
            let mut rest: &[u8] = chunk;
            loop {
                let piece = &rest[..rest.len().min(read.max(1))];
                let (n, status) = rx.feed(piece, &mut body);
                assert_eq!(n, piece.len(), "a chunk's octets are all consumed");
                rest = &rest[n..];
                if status == ChunkStatus::Done {
                    assert!(rest.is_empty());
                    break;
                }
            }
        }
        (body, rx.size(), rx.saw_bare_line_ending(), rx.exceeded())
    }

    /// Byte-at-a-time model over the whole content.
    fn model(content: &[u8], policy: BareLineEndings) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut bare = false;
        let mut i = 0;
        while i < content.len() {
            match (content[i], content.get(i + 1)) {
                (b'\r', Some(b'\n')) => {
                    out.extend_from_slice(b"\r\n");
                    i += 2;
                    continue;
                }
                (b @ (b'\r' | b'\n'), _) => {
                    bare = true;
                    if policy == BareLineEndings::Normalize {
                        out.extend_from_slice(b"\r\n");
                    } else {
                        out.push(b);
                    }
                }
                (b, _) => out.push(b),
            }
            i += 1;
        }
        (out, bare)
    }

    #[test]
    fn a_chunk_is_counted_exactly_and_what_follows_is_left() {
        let mut rx = BdatReceiver::new(Some(BareLineEndings::Reject), 100);
        let mut body = Vec::new();
        rx.start_chunk(5, true);
        assert_eq!(rx.feed(b"hel", &mut body), (3, ChunkStatus::NeedMore));
        assert_eq!(
            rx.feed(b"lo\r\nQUIT\r\n", &mut body),
            (2, ChunkStatus::Done)
        );
        assert_eq!(body, b"hello");
        rx.start_chunk(0, true);
        assert_eq!(rx.feed(b"QUIT", &mut body), (0, ChunkStatus::Done));
    }

    #[test]
    fn smuggling_in_text_chunks_is_seen_and_binary_is_not_looked_at() {
        let smuggle: &[u8] = b"hello\n.\nMAIL FROM:<spoof@example.com>\r\n";
        let (body, _, bare, _) = receive(&[smuggle], Some(BareLineEndings::Reject), 1000, 1000);
        assert!(bare);
        assert_eq!(
            body, smuggle,
            "Reject stores as is; the session refuses the message"
        );
        let (body, _, bare, _) = receive(&[smuggle], Some(BareLineEndings::Normalize), 1000, 7);
        assert!(bare);
        assert_eq!(body, b"hello\r\n.\r\nMAIL FROM:<spoof@example.com>\r\n");
        let (body, _, bare, _) = receive(&[smuggle], None, 1000, 3);
        assert!(!bare);
        assert_eq!(body, smuggle);
    }

    #[test]
    fn a_crlf_split_between_chunks_is_one_line_ending() {
        for policy in POLICIES {
            let (body, size, bare, _) =
                receive(&[b"line\r", b"\nnext\r\n"], Some(policy), 100, 100);
            assert_eq!(body, b"line\r\nnext\r\n");
            assert_eq!((size, bare), (12, false));
        }
        // A CR ending the last chunk has nothing after it: bare.
        let (body, _, bare, _) = receive(
            &[b"a\r\n", b"b\r"],
            Some(BareLineEndings::Normalize),
            100,
            100,
        );
        assert!(bare);
        assert_eq!(body, b"a\r\nb\r\n");
    }

    #[test]
    fn over_the_limit_the_first_max_octets_are_kept_and_all_are_counted() {
        let (body, size, _, exceeded) =
            receive(&[b"abcdef", b"ghij"], Some(BareLineEndings::Reject), 7, 3);
        assert_eq!(body, b"abcdefg");
        assert_eq!((size, exceeded), (10, true));
    }

    fn content() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'\r'),
                Just(b'\n'),
                Just(b'.'),
                Just(b'a'),
                Just(0xC3u8)
            ],
            0..120,
        )
    }

    proptest! {
        #[test]
        fn any_chunking_and_reads_match_the_model(
            content in content(),
            cuts in proptest::collection::vec(0usize..120, 0..4),
            read in 1usize..16,
            policy in prop_oneof![
                Just(BareLineEndings::Reject),
                Just(BareLineEndings::Normalize),
                Just(BareLineEndings::Allow)
            ],
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(content.len())).collect();
            cuts.sort();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for cut in cuts {
                chunks.push(&content[start..cut]);
                start = cut;
            }
            chunks.push(&content[start..]);
            let (expected, bare) = model(&content, policy);
            let (body, size, saw, exceeded) = receive(&chunks, Some(policy), u64::MAX, read);
            prop_assert_eq!(&body, &expected);
            prop_assert_eq!((size, saw, exceeded), (expected.len() as u64, bare, false));
            let (binary, _, saw, _) = receive(&chunks, None, u64::MAX, read);
            prop_assert_eq!(binary, content.clone());
            prop_assert!(!saw);
        }
    }
}
