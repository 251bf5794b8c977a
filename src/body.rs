//! What the DATA and BDAT receivers share: appending message bytes within the size limit,
//! and the facts about a body that a message hook is told.

/// What to do with message content whose first byte is a space or a tab.
///
/// Such content starts with a continuation line where a header section must begin
/// (RFC 5322 section 2.2.3). Stored as it came, right below the fields a receiver prepends
/// (`Return-Path:`, `Received:`, `Authentication-Results:`), it would fold into the last of
/// them: `\t; dkim=pass header.d=bank.example` sent as the first line of a message would
/// read as part of this host's own field. Whatever the policy,
/// [`DataReceiver::saw_leading_whitespace`](crate::data::DataReceiver::saw_leading_whitespace)
/// reports that the content began so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum LeadingWhitespace {
    /// Store the content unchanged; the caller is expected to refuse the message (the
    /// session answers `550 5.6.0` once the data ends, and stores nothing of it).
    #[default]
    Reject,
    /// Store an empty line (CRLF) before the content, as Postfix's smtpd does: the header
    /// section then ends with the receiver's own fields and the whole content is the body,
    /// so no client byte can join a field written above it. The two bytes count toward
    /// the message's size.
    InsertEmptyLine,
}

/// Appends message bytes to the caller's buffer while the message stays within its size
/// limit, and counts every byte, stored or not.
#[derive(Clone, Debug)]
pub(crate) struct Bounded {
    /// How many more bytes may still be appended.
    room: u64,
    size: u64,
    exceeded: bool,
    /// False for a receiver that checks and counts but stores nothing.
    keep: bool,
    /// A byte over 127 was stored (only looked for while storing).
    eight_bit: bool,
    /// The content's first byte was a space or a tab.
    leading_whitespace: bool,
    /// An empty line goes before content that begins with a space or a tab.
    insert_empty_line: bool,
}

impl Bounded {
    pub(crate) fn new(max_size: u64, keep: bool) -> Bounded {
        Bounded {
            room: max_size,
            size: 0,
            exceeded: false,
            keep,
            eight_bit: false,
            leading_whitespace: false,
            insert_empty_line: false,
        }
    }

    /// Sets what happens to content that begins with a space or a tab.
    pub(crate) fn set_leading_whitespace(&mut self, policy: LeadingWhitespace) {
        self.insert_empty_line = policy == LeadingWhitespace::InsertEmptyLine;
    }

    /// True when the content's first byte was a space or a tab.
    pub(crate) fn leading_whitespace(&self) -> bool {
        self.leading_whitespace
    }

    /// Message size so far, counting bytes not stored because of the limit.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// True once the message went past the limit.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// True once a stored byte had its high bit set.
    pub(crate) fn eight_bit(&self) -> bool {
        self.eight_bit
    }

    /// Looks for 8-bit bytes in what one feed stored, `body[from..]`: one pass over a whole
    /// read costs less than one per stored run.
    pub(crate) fn note_stored(&mut self, body: &[u8], from: usize) {
        if self.keep && !self.eight_bit {
            self.eight_bit = !body.get(from..).unwrap_or_default().is_ascii();
        }
    }

    /// Records what a scan of bytes about to be stored found: no second pass needed.
    pub(crate) fn note_scanned(&mut self, eight_bit: bool) {
        if self.keep {
            self.eight_bit |= eight_bit;
        }
    }

    /// Stops storing (the message will be refused anyway); counting goes on.
    pub(crate) fn stop_storing(&mut self) {
        self.keep = false;
    }

    /// Appends `bytes` to `body`, within the size limit. Past the limit exactly the first
    /// `max_size` bytes of the message are stored, whatever the splits of the input.
    ///
    /// The first byte of the content is looked at here, where every receiver's bytes pass,
    /// so no path through a receiver can miss it.
    pub(crate) fn store(&mut self, bytes: &[u8], body: &mut Vec<u8>) {
        if self.size == 0 && matches!(bytes.first(), Some(b' ' | b'\t')) {
            self.leading_whitespace = true;
            if self.insert_empty_line {
                self.append(b"\r\n", body);
            }
        }
        self.append(bytes, body);
    }

    fn append(&mut self, bytes: &[u8], body: &mut Vec<u8>) {
        // `usize` is at most 64 bits on every supported target.
        let len = bytes.len() as u64;
        self.size = self.size.saturating_add(len);
        let stored = if len <= self.room {
            self.room -= len;
            bytes
        } else {
            self.exceeded = true;
            let take = self.room as usize; // < bytes.len(), so it fits
            self.room = 0;
            &bytes[..take]
        };
        if self.keep && !stored.is_empty() {
            reserve_within(body, stored.len(), self.room + stored.len() as u64);
            body.extend_from_slice(stored);
        }
    }
}

/// What one pass over message text found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TextScan {
    /// Inside the bytes, every LF has a CR right before it and every CR an LF right after
    /// it. The first byte's predecessor and the last byte's successor are the caller's to
    /// judge.
    pub clean: bool,
    /// A byte has its high bit set.
    pub eight_bit: bool,
}

/// Looks at message text in one pass written without an early exit, so that it compiles to
/// vector compares: clean text, the common case, costs a fraction of a copy, and the 8-bit
/// check comes with it.
pub(crate) fn scan_text(bytes: &[u8]) -> TextScan {
    let Some((&first, next)) = bytes.split_first() else {
        return TextScan {
            clean: true,
            eight_bit: false,
        };
    };
    let pairs = next.len();
    let mismatch = |a: u8, b: u8| u8::from(a == b'\r') ^ u8::from(b == b'\n');
    // Blocks of 64 pairs into 32 lanes: the shape the compiler turns into vector code.
    let (mut bad, mut high) = ([0u8; 32], [0u8; 32]);
    let blocks = pairs / 64 * 64;
    for k in (0..blocks).step_by(64) {
        let (Ok(a), Ok(b)) = (
            <&[u8; 64]>::try_from(&bytes[k..k + 64]),
            <&[u8; 64]>::try_from(&next[k..k + 64]),
        ) else {
            unreachable!("blocks of 64 end within the pairs");
        };
        for j in 0..32 {
            bad[j] |= mismatch(a[j], b[j]) | mismatch(a[j + 32], b[j + 32]);
            high[j] |= b[j] | b[j + 32];
        }
    }
    let (tail_bad, tail_high) = bytes[blocks..pairs]
        .iter()
        .zip(&next[blocks..])
        .fold((0, first), |(bad, high), (&a, &b)| {
            (bad | mismatch(a, b), high | b)
        });
    let bad = bad.iter().fold(tail_bad, |acc, &lane| acc | lane);
    let high = high.iter().fold(tail_high, |acc, &lane| acc | lane);
    TextScan {
        clean: bad == 0,
        eight_bit: high & 0x80 != 0,
    }
}

/// Makes room for `additional` bytes in `body` without letting its capacity overshoot what
/// the remaining budget `room` can ever need.
///
/// `Vec` doubles its capacity when it grows, which near the limit could allocate almost twice
/// `max_size`; a client could force that with any large message. Reserving exactly up to the
/// limit in that case keeps memory bounded by the limit itself.
pub(crate) fn reserve_within(body: &mut Vec<u8>, additional: usize, room: u64) {
    let spare = body.capacity() - body.len();
    if additional <= spare {
        return;
    }
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    let ceiling = body.len().saturating_add(room);
    if body.capacity().saturating_mul(2) >= ceiling {
        // `ceiling - len` is at least `additional` (the budget covers it) and less than
        // twice the current capacity, so this cannot overflow.
        body.reserve_exact(ceiling - body.len());
    }
}

/// Where the body of the message being received goes.
#[derive(Debug)]
pub(crate) enum BodySink {
    /// Nowhere: the body has not started, nobody is told about it, or the message failed.
    Discard,
    /// Into one buffer handed over with the message hook.
    Buffer(Vec<u8>),
    /// Out in pieces of at most `max_piece` bytes as it arrives; `spare` is a piece's
    /// buffer the runtime gave back, reused for the next piece.
    Stream { max_piece: usize, spare: Vec<u8> },
}

impl BodySink {
    /// Runs a receiver over `input`, storing where this sink says. In streamed mode the
    /// receiver gets at most a piece's worth (half of it when bare line endings may be
    /// doubled into CRLF), and what it stored comes back as the piece.
    pub(crate) fn feed<R>(
        &mut self,
        input: &[u8],
        normalizing: bool,
        receive: impl FnOnce(&[u8], &mut Vec<u8>) -> (usize, R),
    ) -> (usize, R, Option<Vec<u8>>) {
        match self {
            BodySink::Discard => {
                let (used, status) = receive(input, &mut Vec::new());
                (used, status, None)
            }
            BodySink::Buffer(body) => {
                let (used, status) = receive(input, body);
                (used, status, None)
            }
            BodySink::Stream { max_piece, spare } => {
                // A receiver may also store what it held back from the previous read (a CR,
                // made CRLF when normalizing): two bytes are kept for it.
                let room = max_piece.saturating_sub(2);
                let room = if normalizing { room / 2 } else { room };
                let input = &input[..input.len().min(room)];
                let mut piece = std::mem::take(spare);
                piece.clear();
                piece.reserve(input.len());
                let (used, status) = receive(input, &mut piece);
                (used, status, (!piece.is_empty()).then_some(piece))
            }
        }
    }

    /// Keeps a piece's buffer, handed back by the runtime, for the next piece.
    pub(crate) fn recycle(&mut self, piece: Vec<u8>) {
        if let BodySink::Stream { max_piece, spare } = self {
            if piece.capacity() <= *max_piece && piece.capacity() > spare.capacity() {
                *spare = piece;
            }
        }
    }

    /// True while pieces of the body may have gone out: a failure must be announced.
    pub(crate) fn is_streaming(&self) -> bool {
        matches!(self, BodySink::Stream { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_a_prefix_of_exactly_the_limit_and_counts_the_rest() {
        let mut b = Bounded::new(5, true);
        let mut body = Vec::new();
        b.store(b"abc", &mut body);
        b.store(b"defg", &mut body);
        b.store(b"h", &mut body);
        assert_eq!(body, b"abcde");
        assert_eq!((b.size(), b.exceeded()), (8, true));
        assert!(body.capacity() <= 8, "capacity {}", body.capacity());
    }

    #[test]
    fn a_discarding_store_counts_without_storing() {
        let mut b = Bounded::new(5, false);
        let mut body = Vec::new();
        b.store(b"\xffabcdef", &mut body);
        b.note_stored(b"\xff", 0);
        assert!(body.is_empty() && body.capacity() == 0);
        assert_eq!((b.size(), b.exceeded(), b.eight_bit()), (7, true, false));
    }

    fn crlf_clean(bytes: &[u8]) -> bool {
        scan_text(bytes).clean
    }

    #[test]
    fn clean_text_has_only_crlf_pairs_inside() {
        assert!(crlf_clean(b""));
        assert!(crlf_clean(b"\n"), "a first LF is the caller's to judge");
        assert!(crlf_clean(b"\r"), "so is a last CR");
        assert!(crlf_clean(b"ab\r\ncd\r\n\r\nx\r"));
        for dirty in [&b"a\nb"[..], b"a\rb", b"a\r\r\n", b"\r\n\n", b"x\n\r"] {
            assert!(!crlf_clean(dirty), "{:?}", dirty.escape_ascii().to_string());
        }
        let mut long = b"0123456789\r\n".repeat(1000);
        assert!(crlf_clean(&long));
        long[7777] = b'\n';
        assert!(!crlf_clean(&long));
    }

    #[test]
    fn the_scan_finds_8_bit_bytes_anywhere() {
        let plain = b"0123456789\r\n".repeat(100);
        assert!(!scan_text(&plain).eight_bit);
        for at in [0, 1, 63, 64, 65, 640, plain.len() - 1] {
            let mut text = plain.clone();
            text[at] = 0xE9;
            assert!(scan_text(&text).eight_bit, "at {at}");
        }
        assert!(scan_text(&[0x80]).eight_bit);
    }

    #[test]
    fn a_streaming_sink_hands_out_pieces_of_at_most_its_size() {
        let mut sink = BodySink::Stream {
            max_piece: 4,
            spare: Vec::new(),
        };
        // Two bytes of each piece stay free for what the receiver held back.
        let copy = |input: &[u8], body: &mut Vec<u8>| {
            body.extend_from_slice(input);
            (input.len(), ())
        };
        assert_eq!(
            sink.feed(b"abcdef", false, copy),
            (2, (), Some(b"ab".to_vec()))
        );
        assert_eq!(
            sink.feed(b"abcdef", true, copy),
            (1, (), Some(b"a".to_vec()))
        );
        assert_eq!(sink.feed(b"", false, copy), (0, (), None));
        let mut buffer = BodySink::Buffer(Vec::new());
        assert_eq!(buffer.feed(b"abcdef", false, copy), (6, (), None));
        assert!(matches!(buffer, BodySink::Buffer(b) if b == b"abcdef"));
    }

    #[test]
    fn eight_bit_is_seen_in_stored_bytes() {
        let mut b = Bounded::new(100, true);
        let mut body = Vec::new();
        b.store(b"plain", &mut body);
        b.note_stored(&body, 0);
        assert!(!b.eight_bit());
        let from = body.len();
        b.store("café".as_bytes(), &mut body);
        b.note_stored(&body, from);
        assert!(b.eight_bit());
    }
}
