//! The `session_ops` input: a config and a script of operations, and the byte format a fuzz
//! input decodes to.
//!
//! # The format
//!
//! ```text
//! input    = knobs op*
//! knobs    = bare_line_endings:u8 unsubscribe:u8 flags:u16    (absent bytes read as 0)
//! op       = tag:u8, then by tag % 14:
//!              0 Bytes           len:u16 byte{len}
//!              1 Line            index:u8
//!              2 Eof
//!              3 IoError
//!              4 Advance         seconds:u16
//!              5 TlsEstablished
//!              6 TlsFailed
//!              7 Decide          decision
//!              8 DecideWrongId   n:u8
//!              9 Shutdown
//!             10 SetExtensions   bits:u16
//!             11 DecideAny       len:u16 byte{len}   (a Decision by `Arbitrary`)
//!             12 TlsEstablishedAny len:u16 byte{len} (a TlsInfo by `Arbitrary`)
//!             13 IoErrorAny      len:u16 byte{len}   (an IoError by `Arbitrary`)
//! decision = tag:u8, then by tag % 7:
//!              0 Accept
//!              1 AcceptWith
//!              2 Reject          code
//!              3 Disconnect      mode:u8 code      (mode % 3: ForceDisconnect,
//!                                                   FollowWith421, If421)
//!              4 HookFailed
//!              5 Challenge       len:u16 byte{len}
//!              6 RejectInjection
//! code     = u8 % 5: 421, 451, 550, 554, 250
//! ```
//!
//! A `u16` is little-endian. `flags` holds the booleans of [`Knobs`] in declaration order,
//! bit 0 first. Every byte string decodes to a script: values wrap into their range, a
//! payload is cut short by the end of the input, and an operation whose fixed fields are cut
//! short is dropped. [`encode`] writes the canonical bytes of a script, so
//! `decode(&encode(&knobs, &ops)) == (knobs, ops)`; the seed corpus is written with it.
//! Payloads stay contiguous, so dictionary words and seed text survive the fuzzer's mutations.
//!
//! The `...Any` operations hand their payload to the `Arbitrary` implementations that
//! smtp-session's `arbitrary` feature gives its public input types: any [`Decision`]
//! (replies of any code and text, any disconnect mode, challenges, per-recipient replies),
//! any [`TlsInfo`] and any [`IoError`] a runtime could report.
//!
//! [`Decision`]: smtp_session::Decision
//! [`TlsInfo`]: smtp_session::TlsInfo
//! [`IoError`]: smtp_session::IoError

use smtp_session::DisconnectMode;

use crate::fuzz::config::Knobs;

/// Useful client input for [`Op::Line`], indexed modulo its length: commands (with CRLF),
/// message lines, and raw end-of-data and smuggling sequences (without).
pub const LINES: &[&[u8]] = &[
    b"EHLO client.example\r\n",
    b"HELO client.example\r\n",
    b"MAIL FROM:<a@b.c>\r\n",
    b"MAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n",
    b"MAIL FROM:<a@b.c> BODY=BINARYMIME\r\n",
    "MAIL FROM:<jos\u{e9}@b.c> SMTPUTF8\r\n".as_bytes(),
    b"MAIL FROM:<a@b.c> SIZE=999999999\r\n",
    b"RCPT TO:<d@e.f>\r\n",
    b"RCPT TO:<postmaster> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;d+2B@e.f\r\n",
    b"RCPT TO:<@relay.example:g@h.i>\r\n",
    b"DATA\r\n",
    b".\r\n",
    b"..\r\n",
    b"Subject: fuzz\r\n\r\nbody line\r\n",
    b"\r\n.\r\n",
    b"hello",
    b"BDAT 5\r\n",
    b"BDAT 5 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 18446744073709551615\r\n",
    b"BDAT x\r\n",
    b"STARTTLS\r\n",
    b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n",
    b"AUTH PLAIN AGFsaWNlAHB3\r\n",
    b"AUTH PLAIN\r\n",
    b"AGFsaWNlAHB3\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH LOGIN YWxpY2U=\r\n",
    b"YWxpY2U=\r\n",
    b"cHc=\r\n",
    b"AUTH CRAM-MD5\r\n",
    b"AUTH XOAUTH2 dGVzdA==\r\n",
    b"AUTH PLAIN =\r\n",
    b"*\r\n",
    b"!!notbase64\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"VRFY alice\r\n",
    b"EXPN staff\r\n",
    b"HELP\r\n",
    b"XCLIENT ADDR=192.0.2.1 NAME=spike.example HELO=x.example\r\n",
    b"FOO bar\r\n",
    b"\x00\xff\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.1 5678 25\r\n",
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x01\x16\x2e\x00\x19",
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r.\n",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r\n.\r \r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\r\n.\r\r\n",
    b"\r\nMAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"LHLO client.example\r\n",
    b"NOOP\n",
    b"RCPT TO:<d@e.f>\n",
    b"BDAT 5 LAST\n",
    b"hello\n.\nMAIL FROM:<spoof@evil.example>\r\n",
    b"MAIL FROM:<a@b.c> REQUIRETLS MT-PRIORITY=3 BY=60;R\r\n",
    b"RCPT TO:<d@e.f> RRVS=2014-04-03T23:01:00Z\r\n",
    b"\t; dkim=pass header.d=bank.example\r\n",
    b" x\r\n",
];

/// A proxy-protocol v2 header (LOCAL command) for the seed corpus.
pub(crate) const PROXY_V2: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00";

/// The code of a reply a decision gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyCode {
    /// 421: closes the session.
    C421,
    /// 451: a temporary refusal.
    C451,
    /// 550: a permanent refusal.
    C550,
    /// 554: a permanent refusal.
    C554,
    /// 250: not an error; a rejection with it is invalid.
    C250,
}

impl ReplyCode {
    pub(crate) fn code(self) -> u16 {
        match self {
            ReplyCode::C421 => 421,
            ReplyCode::C451 => 451,
            ReplyCode::C550 => 550,
            ReplyCode::C554 => 554,
            ReplyCode::C250 => 250,
        }
    }
}

/// A decision for the pending hook, turned into a [`Decision`](smtp_session::Decision) that
/// fits the hook where it can: `AcceptWith` gives 354 to the data hook, 220 to the connect
/// hook, and so on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecisionKind {
    /// [`Decision::Accept`](smtp_session::Decision::Accept).
    Accept,
    /// [`Decision::AcceptWith`](smtp_session::Decision::AcceptWith) a custom reply of the
    /// right kind.
    AcceptWith,
    /// [`Decision::Reject`](smtp_session::Decision::Reject).
    Reject(ReplyCode),
    /// [`Decision::Disconnect`](smtp_session::Decision::Disconnect).
    Disconnect(DisconnectMode, ReplyCode),
    /// [`Decision::HookFailed`](smtp_session::Decision::HookFailed).
    HookFailed,
    /// [`Decision::Challenge`](smtp_session::Decision::Challenge): valid only for auth steps
    /// the session does not decode.
    Challenge(Vec<u8>),
    /// A 550 rejection whose text tries to inject a 250 reply and a 354.
    RejectInjection,
}

/// One step of a fuzzed session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Client bytes (kept by the runtime while the session refuses them).
    Bytes(Vec<u8>),
    /// Client bytes from [`LINES`], by index modulo its length.
    Line(u8),
    /// The client closed its side (delivered once the runtime's backlog is taken).
    Eof,
    /// Reading or writing failed.
    IoError,
    /// Time passes, in seconds, then the timeout is checked.
    Advance(u16),
    /// The TLS handshake succeeded.
    TlsEstablished,
    /// The TLS handshake failed.
    TlsFailed,
    /// A decision for the pending hook (or, when none is pending, for a stale id).
    Decide(DecisionKind),
    /// A decision for an id that is not pending.
    DecideWrongId(u8),
    /// The server shuts down.
    Shutdown,
    /// [`Session::set_extensions`](smtp_session::Session::set_extensions) with one bit per
    /// field, in declaration order.
    SetExtensions(u16),
    /// A decision for the pending hook built from these bytes by `Decision`'s `Arbitrary`.
    DecideAny(Vec<u8>),
    /// The TLS handshake succeeded, with details built by `TlsInfo`'s `Arbitrary`.
    TlsEstablishedAny(Vec<u8>),
    /// Reading or writing failed, with an error built by `IoError`'s `Arbitrary`.
    IoErrorAny(Vec<u8>),
}

// ---------------------------------------------------------------------------------------
// The byte format

const OPS: u8 = 14;
const DECISIONS: u8 = 7;
const CODES: [ReplyCode; 5] = [
    ReplyCode::C421,
    ReplyCode::C451,
    ReplyCode::C550,
    ReplyCode::C554,
    ReplyCode::C250,
];
const MODES: [DisconnectMode; 3] = [
    DisconnectMode::ForceDisconnect,
    DisconnectMode::FollowWith421,
    DisconnectMode::If421,
];

/// The booleans of [`Knobs`] in the order of their bits in `flags`.
fn flags(knobs: &mut Knobs) -> [&mut bool; 13] {
    [
        &mut knobs.hook_failure_disconnect,
        &mut knobs.starttls_injection_close,
        &mut knobs.require_tls,
        &mut knobs.require_auth,
        &mut knobs.implicit_tls,
        &mut knobs.proxy_protocol,
        &mut knobs.greeting_delay,
        &mut knobs.reject_early_talkers,
        &mut knobs.reject_unauth_pipelining,
        &mut knobs.streamed,
        &mut knobs.lmtp,
        &mut knobs.min_data_rate,
        &mut knobs.insert_empty_line,
    ]
}

/// Decodes a fuzz input into the config knobs and the script (see the module docs).
pub fn decode(input: &[u8]) -> (Knobs, Vec<Op>) {
    let mut r = Reader(input);
    let mut knobs = Knobs {
        bare_line_endings: r.u8().unwrap_or(0),
        unsubscribe: r.u8().unwrap_or(0),
        ..Knobs::default()
    };
    let bits = u16::from_le_bytes([r.u8().unwrap_or(0), r.u8().unwrap_or(0)]);
    for (i, flag) in flags(&mut knobs).into_iter().enumerate() {
        *flag = bits & (1 << i) != 0;
    }
    let mut ops = Vec::new();
    while let Some(op) = r.op() {
        ops.push(op);
    }
    (knobs, ops)
}

/// The bytes [`decode`] turns into `knobs` and `ops`.
///
/// # Panics
///
/// If a payload is longer than `u16::MAX` bytes.
pub fn encode(knobs: &Knobs, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![knobs.bare_line_endings, knobs.unsubscribe];
    let mut knobs = knobs.clone();
    let bits = flags(&mut knobs)
        .into_iter()
        .enumerate()
        .fold(0u16, |bits, (i, flag)| bits | u16::from(*flag) << i);
    out.extend_from_slice(&bits.to_le_bytes());
    for op in ops {
        encode_op(op, &mut out);
    }
    out
}

fn encode_op(op: &Op, out: &mut Vec<u8>) {
    match op {
        Op::Bytes(bytes) => {
            out.push(0);
            payload(bytes, out);
        }
        Op::Line(i) => out.extend_from_slice(&[1, *i]),
        Op::Eof => out.push(2),
        Op::IoError => out.push(3),
        Op::Advance(seconds) => {
            out.push(4);
            out.extend_from_slice(&seconds.to_le_bytes());
        }
        Op::TlsEstablished => out.push(5),
        Op::TlsFailed => out.push(6),
        Op::Decide(kind) => {
            out.push(7);
            encode_decision(kind, out);
        }
        Op::DecideWrongId(n) => out.extend_from_slice(&[8, *n]),
        Op::Shutdown => out.push(9),
        Op::SetExtensions(bits) => {
            out.push(10);
            out.extend_from_slice(&bits.to_le_bytes());
        }
        Op::DecideAny(bytes) => {
            out.push(11);
            payload(bytes, out);
        }
        Op::TlsEstablishedAny(bytes) => {
            out.push(12);
            payload(bytes, out);
        }
        Op::IoErrorAny(bytes) => {
            out.push(13);
            payload(bytes, out);
        }
    }
}

fn encode_decision(kind: &DecisionKind, out: &mut Vec<u8>) {
    let code = |code: &ReplyCode| CODES.iter().position(|c| c == code).unwrap() as u8;
    match kind {
        DecisionKind::Accept => out.push(0),
        DecisionKind::AcceptWith => out.push(1),
        DecisionKind::Reject(c) => out.extend_from_slice(&[2, code(c)]),
        DecisionKind::Disconnect(mode, c) => {
            let mode = MODES.iter().position(|m| m == mode).unwrap() as u8;
            out.extend_from_slice(&[3, mode, code(c)]);
        }
        DecisionKind::HookFailed => out.push(4),
        DecisionKind::Challenge(bytes) => {
            out.push(5);
            payload(bytes, out);
        }
        DecisionKind::RejectInjection => out.push(6),
    }
}

fn payload(bytes: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(bytes.len()).expect("a payload of at most 65535 bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// What is left of the input.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn u16(&mut self) -> Option<u16> {
        let bytes = self.0.get(..2)?;
        let value = u16::from_le_bytes([bytes[0], bytes[1]]);
        self.0 = &self.0[2..];
        Some(value)
    }

    /// A length, then that many bytes or as many as are left.
    fn payload(&mut self) -> Option<Vec<u8>> {
        let len = usize::from(self.u16()?).min(self.0.len());
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(bytes.to_vec())
    }

    fn code(&mut self) -> Option<ReplyCode> {
        Some(CODES[usize::from(self.u8()?) % CODES.len()])
    }

    fn op(&mut self) -> Option<Op> {
        Some(match self.u8()? % OPS {
            0 => Op::Bytes(self.payload()?),
            1 => Op::Line(self.u8()?),
            2 => Op::Eof,
            3 => Op::IoError,
            4 => Op::Advance(self.u16()?),
            5 => Op::TlsEstablished,
            6 => Op::TlsFailed,
            7 => Op::Decide(self.decision()?),
            8 => Op::DecideWrongId(self.u8()?),
            9 => Op::Shutdown,
            10 => Op::SetExtensions(self.u16()?),
            11 => Op::DecideAny(self.payload()?),
            12 => Op::TlsEstablishedAny(self.payload()?),
            _ => Op::IoErrorAny(self.payload()?),
        })
    }

    fn decision(&mut self) -> Option<DecisionKind> {
        Some(match self.u8()? % DECISIONS {
            0 => DecisionKind::Accept,
            1 => DecisionKind::AcceptWith,
            2 => DecisionKind::Reject(self.code()?),
            3 => {
                let mode = MODES[usize::from(self.u8()?) % MODES.len()];
                DecisionKind::Disconnect(mode, self.code()?)
            }
            4 => DecisionKind::HookFailed,
            5 => DecisionKind::Challenge(self.payload()?),
            _ => DecisionKind::RejectInjection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_format_is_as_documented() {
        let input = [
            2, 0x81, 0x41, 0x01, // knobs
            14, 5, 0, b'E', b'H', b'L', b'O', b'!', // Bytes (tag 14 % 14 = 0) of 5 bytes
        ];
        let (knobs, ops) = decode(&input);
        assert_eq!(
            knobs,
            Knobs {
                bare_line_endings: 2,
                unsubscribe: 0x81,
                hook_failure_disconnect: true,
                greeting_delay: true,
                reject_unauth_pipelining: true,
                ..Knobs::default()
            }
        );
        assert_eq!(ops, [Op::Bytes(b"EHLO!".to_vec())]);

        let input = [
            0, 0, 0, 0, // default knobs
            1, 7, // Line(7)
            4, 0x2c, 0x01, // Advance(300)
            7, 3, 1, 2, // Decide(Disconnect(FollowWith421, 550))
            21, 9, // Decide (21 % 14 = 7): Reject (9 % 7 = 2), code cut short: dropped
        ];
        assert_eq!(
            decode(&input),
            (
                Knobs::default(),
                vec![
                    Op::Line(7),
                    Op::Advance(300),
                    Op::Decide(DecisionKind::Disconnect(
                        DisconnectMode::FollowWith421,
                        ReplyCode::C550
                    )),
                ]
            )
        );
        // A payload cut short keeps what there is; the knobs of a short input are zero.
        assert_eq!(
            decode(&[0, 0, 0, 0, 7, 5, 0xff, 0xff, b'x']),
            (
                Knobs::default(),
                vec![Op::Decide(DecisionKind::Challenge(b"x".to_vec()))]
            )
        );
        assert_eq!(
            decode(&[1]),
            (
                Knobs {
                    bare_line_endings: 1,
                    ..Knobs::default()
                },
                vec![]
            )
        );
    }

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..40),
            1 => proptest::collection::vec(any::<u8>(), 0..3000),
        ]
    }

    fn decision() -> impl Strategy<Value = DecisionKind> {
        let code = proptest::sample::select(CODES.to_vec());
        prop_oneof![
            Just(DecisionKind::Accept),
            Just(DecisionKind::AcceptWith),
            code.clone().prop_map(DecisionKind::Reject),
            (proptest::sample::select(MODES.to_vec()), code)
                .prop_map(|(mode, code)| DecisionKind::Disconnect(mode, code)),
            Just(DecisionKind::HookFailed),
            payload().prop_map(DecisionKind::Challenge),
            Just(DecisionKind::RejectInjection),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            payload().prop_map(Op::Bytes),
            any::<u8>().prop_map(Op::Line),
            Just(Op::Eof),
            Just(Op::IoError),
            any::<u16>().prop_map(Op::Advance),
            Just(Op::TlsEstablished),
            Just(Op::TlsFailed),
            decision().prop_map(Op::Decide),
            any::<u8>().prop_map(Op::DecideWrongId),
            Just(Op::Shutdown),
            any::<u16>().prop_map(Op::SetExtensions),
            payload().prop_map(Op::DecideAny),
            payload().prop_map(Op::TlsEstablishedAny),
            payload().prop_map(Op::IoErrorAny),
        ]
    }

    fn knobs() -> impl Strategy<Value = Knobs> {
        (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(bare, unsubscribe, bits)| {
            let mut knobs = Knobs {
                bare_line_endings: bare,
                unsubscribe,
                ..Knobs::default()
            };
            for (i, flag) in flags(&mut knobs).into_iter().enumerate() {
                *flag = bits & (1 << i) != 0;
            }
            knobs
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn encoding_round_trips(
            knobs in knobs(),
            ops in proptest::collection::vec(op(), 0..20),
        ) {
            let bytes = encode(&knobs, &ops);
            prop_assert_eq!(decode(&bytes), (knobs, ops));
        }

        /// Any input decodes, and to the same script as its canonical encoding.
        #[test]
        fn every_input_decodes(input in proptest::collection::vec(any::<u8>(), 0..400)) {
            let (knobs, ops) = decode(&input);
            prop_assert_eq!(decode(&encode(&knobs, &ops)), (knobs, ops));
        }
    }
}
