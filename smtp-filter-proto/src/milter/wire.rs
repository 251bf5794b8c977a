//! The milter wire format: command and reply codes, the negotiated flag sets, and the packet
//! framing (a 32-bit big-endian length, then a one-byte code and its data).
//!
//! The codes and bits are libmilter's (`mfapi.h`, `mfdef.h`), which Sendmail and Postfix
//! speak; there is no other specification.

use std::fmt;

use crate::milter::ProtocolError;

/// Commands the MTA sends (`SMFIC_*`).
pub(crate) mod cmd {
    pub const ABORT: u8 = b'A';
    pub const BODY: u8 = b'B';
    pub const CONNECT: u8 = b'C';
    pub const MACRO: u8 = b'D';
    pub const BODYEOB: u8 = b'E';
    pub const HELO: u8 = b'H';
    pub const HEADER: u8 = b'L';
    pub const MAIL: u8 = b'M';
    pub const EOH: u8 = b'N';
    pub const OPTNEG: u8 = b'O';
    pub const QUIT: u8 = b'Q';
    pub const RCPT: u8 = b'R';
    pub const DATA: u8 = b'T';
    pub const UNKNOWN: u8 = b'U';
}

/// Replies the filter sends (`SMFIR_*`).
pub(crate) mod reply {
    pub const ADDRCPT: u8 = b'+';
    pub const DELRCPT: u8 = b'-';
    pub const ADDRCPT_PAR: u8 = b'2';
    pub const SHUTDOWN: u8 = b'4';
    pub const ACCEPT: u8 = b'a';
    pub const REPLBODY: u8 = b'b';
    pub const CONTINUE: u8 = b'c';
    pub const DISCARD: u8 = b'd';
    pub const CHGFROM: u8 = b'e';
    pub const CONN_FAIL: u8 = b'f';
    pub const ADDHEADER: u8 = b'h';
    pub const INSHEADER: u8 = b'i';
    pub const SETSYMLIST: u8 = b'l';
    pub const CHGHEADER: u8 = b'm';
    pub const PROGRESS: u8 = b'p';
    pub const QUARANTINE: u8 = b'q';
    pub const REJECT: u8 = b'r';
    pub const SKIP: u8 = b's';
    pub const TEMPFAIL: u8 = b't';
    pub const REPLYCODE: u8 = b'y';
    pub const OPTNEG: u8 = b'O';
}

/// Address families in the connect command (`SMFIA_*`).
pub(crate) mod family {
    pub const UNKNOWN: u8 = b'U';
    pub const UNIX: u8 = b'L';
    pub const INET: u8 = b'4';
    pub const INET6: u8 = b'6';
}

/// The protocol version this client speaks and offers.
pub const PROTOCOL_VERSION: u32 = 6;

/// The largest body chunk libmilter accepts without the `SMFIP_MDS_*` extensions.
pub const MAX_BODY_CHUNK: usize = 65535;

macro_rules! flag_set {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $flag:ident = $bit:expr,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(u32);

        impl $name {
            $($(#[$fdoc])* pub const $flag: $name = $name($bit);)*
            /// No flag.
            pub const NONE: $name = $name(0);
            /// Every flag this crate knows.
            pub const ALL: $name = $name(0 $(| $bit)*);

            /// The flags from their wire value, unknown bits kept.
            pub const fn from_bits(bits: u32) -> $name {
                $name(bits)
            }

            /// The wire value.
            pub const fn bits(self) -> u32 {
                self.0
            }

            /// Whether every flag of `other` is set.
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether any flag of `other` is set.
            pub const fn intersects(self, other: $name) -> bool {
                self.0 & other.0 != 0
            }

            /// Both sets together.
            pub const fn union(self, other: $name) -> $name {
                $name(self.0 | other.0)
            }

            /// The flags of `self` not in `other`.
            pub const fn difference(self, other: $name) -> $name {
                $name(self.0 & !other.0)
            }

            /// Whether no flag is set.
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, other: $name) -> $name {
                self.union(other)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut names = Vec::new();
                $(if self.0 & $bit != 0 { names.push(stringify!($flag).to_string()); })*
                let unknown = self.0 & !$name::ALL.0;
                if unknown != 0 {
                    names.push(format!("{unknown:#x}"));
                }
                write!(f, "{}({})", stringify!($name), names.join(" | "))
            }
        }
    };
}

flag_set! {
    /// What a filter may change in a message (`SMFIF_*`): the client offers a set, the filter
    /// picks from it, and a modification outside the picked set is a [`ProtocolError`].
    Actions {
        /// `SMFIF_ADDHDRS`: add and insert header fields.
        ADD_HEADERS = 0x01,
        /// `SMFIF_CHGBODY`: replace the body.
        CHANGE_BODY = 0x02,
        /// `SMFIF_ADDRCPT`: add recipients.
        ADD_RECIPIENT = 0x04,
        /// `SMFIF_DELRCPT`: remove recipients.
        DELETE_RECIPIENT = 0x08,
        /// `SMFIF_CHGHDRS`: change and delete header fields.
        CHANGE_HEADERS = 0x10,
        /// `SMFIF_QUARANTINE`: quarantine the message.
        QUARANTINE = 0x20,
        /// `SMFIF_CHGFROM`: change the envelope sender.
        CHANGE_FROM = 0x40,
        /// `SMFIF_ADDRCPT_PAR`: add recipients with ESMTP arguments.
        ADD_RECIPIENT_WITH_ARGS = 0x80,
        /// `SMFIF_SETSYMLIST`: choose the macros sent at each stage.
        SET_MACRO_LISTS = 0x100,
    }
}

flag_set! {
    /// Protocol steps a filter asks to skip or not to answer, and protocol options
    /// (`SMFIP_*`): the client offers a set, the filter picks from it.
    ProtocolFlags {
        /// `SMFIP_NOCONNECT`: do not send the connect step.
        NO_CONNECT = 0x01,
        /// `SMFIP_NOHELO`: do not send HELO.
        NO_HELO = 0x02,
        /// `SMFIP_NOMAIL`: do not send MAIL.
        NO_MAIL = 0x04,
        /// `SMFIP_NORCPT`: do not send RCPT.
        NO_RCPT = 0x08,
        /// `SMFIP_NOBODY`: do not send the body.
        NO_BODY = 0x10,
        /// `SMFIP_NOHDRS`: do not send the header fields.
        NO_HEADERS = 0x20,
        /// `SMFIP_NOEOH`: do not send end of headers.
        NO_END_OF_HEADERS = 0x40,
        /// `SMFIP_NR_HDR` (also `SMFIP_NOHREPL`): the filter does not answer header fields.
        NO_REPLY_HEADER = 0x80,
        /// `SMFIP_NOUNKNOWN`: do not send unknown commands.
        NO_UNKNOWN = 0x100,
        /// `SMFIP_NODATA`: do not send DATA.
        NO_DATA = 0x200,
        /// `SMFIP_SKIP`: the filter may answer a body chunk with skip.
        SKIP = 0x400,
        /// `SMFIP_RCPT_REJ`: send recipients the MTA rejected too.
        REJECTED_RECIPIENTS = 0x800,
        /// `SMFIP_NR_CONN`: no reply to connect.
        NO_REPLY_CONNECT = 0x1000,
        /// `SMFIP_NR_HELO`: no reply to HELO.
        NO_REPLY_HELO = 0x2000,
        /// `SMFIP_NR_MAIL`: no reply to MAIL.
        NO_REPLY_MAIL = 0x4000,
        /// `SMFIP_NR_RCPT`: no reply to RCPT.
        NO_REPLY_RCPT = 0x8000,
        /// `SMFIP_NR_DATA`: no reply to DATA.
        NO_REPLY_DATA = 0x10000,
        /// `SMFIP_NR_UNKN`: no reply to unknown commands.
        NO_REPLY_UNKNOWN = 0x20000,
        /// `SMFIP_NR_EOH`: no reply to end of headers.
        NO_REPLY_END_OF_HEADERS = 0x40000,
        /// `SMFIP_NR_BODY`: no reply to body chunks.
        NO_REPLY_BODY = 0x80000,
        /// `SMFIP_HDR_LEADSPC`: header values keep their leading space, both ways.
        HEADER_LEADING_SPACE = 0x100000,
    }
}

/// Appends one packet: length, code, data.
pub(crate) fn put_packet(out: &mut Vec<u8>, code: u8, parts: &[&[u8]]) {
    let len: usize = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    // Every part is bounded by the callers (strings checked, body chunks at most
    // MAX_BODY_CHUNK), so the length fits the 32-bit field.
    let len = u32::try_from(len).expect("milter packet length fits in 32 bits");
    out.extend_from_slice(&len.to_be_bytes());
    out.push(code);
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// Reads packets out of the filter's byte stream, holding at most one partial packet of at
/// most `max` bytes (code and data) plus its 4-byte length.
#[derive(Debug)]
pub(crate) struct PacketReader {
    buf: Vec<u8>,
    max: usize,
}

impl PacketReader {
    pub(crate) fn new(max: usize) -> PacketReader {
        PacketReader {
            buf: Vec::new(),
            max,
        }
    }

    /// Takes bytes from the front of `input` until a whole packet is buffered and returns
    /// `true` then; `false` when `input` ran out first. The packet is read with
    /// [`PacketReader::packet`] and released with [`PacketReader::clear`].
    pub(crate) fn fill(&mut self, input: &mut &[u8]) -> Result<bool, ProtocolError> {
        if self.buf.len() < 4 {
            let want = (4 - self.buf.len()).min(input.len());
            self.buf.extend_from_slice(&input[..want]);
            *input = &input[want..];
            if self.buf.len() < 4 {
                return Ok(false);
            }
            let len = self.declared();
            if len == 0 {
                return Err(ProtocolError::EmptyPacket);
            }
            if len > self.max {
                return Err(ProtocolError::PacketTooLarge {
                    size: len,
                    max: self.max,
                });
            }
            self.buf.reserve_exact(len);
        }
        let missing = 4 + self.declared() - self.buf.len();
        let take = missing.min(input.len());
        self.buf.extend_from_slice(&input[..take]);
        *input = &input[take..];
        Ok(take == missing)
    }

    fn declared(&self) -> usize {
        u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize
    }

    /// The buffered whole packet's code and data.
    pub(crate) fn packet(&self) -> (u8, &[u8]) {
        (self.buf[4], &self.buf[5..])
    }

    /// Releases the packet, keeping the allocation for the next one.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }

    /// The bytes held for a partial packet (its allocation).
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Splits `data` into exactly `N` NUL-terminated strings, or `None`.
pub(crate) fn strings<const N: usize>(data: &[u8]) -> Option<[&[u8]; N]> {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for slot in &mut out {
        let end = memchr::memchr(0, rest)?;
        *slot = &rest[..end];
        rest = &rest[end + 1..];
    }
    rest.is_empty().then_some(out)
}

/// Splits `data` into one or two NUL-terminated strings, or `None`.
pub(crate) fn one_or_two_strings(data: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    if let Some([a]) = strings::<1>(data) {
        return Some((a, None));
    }
    strings::<2>(data).map(|[a, b]| (a, Some(b)))
}

/// Reads a big-endian u32 at the front of `data`.
pub(crate) fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
