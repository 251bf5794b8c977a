//! Entry points for the fuzz targets in `fuzz/` (feature `arbitrary`).
//!
//! Each function runs one input through a part of the crate and panics when one of the
//! crate's promises breaks, so a panic is a finding. The fuzz targets are one line each over
//! these functions; the same functions run over deterministic pseudo-random inputs in this
//! module's unit tests, so `cargo test --all-features` exercises them without a fuzzer.
//!
//! - [`command_parser`]: [`parse_command`] never panics, finds the verb case-insensitively,
//!   and ignores the verb's case and the line's end.
//! - [`data_receiver`]: [`DataReceiver`] fed in chunks split anywhere equals the byte-at-a-time
//!   [`reference_unstuff`] under every [`BareLineEndings`] policy, with bounded memory.
//! - [`session_bytes`]: a whole [`Session`] over client bytes, hooks answered by choices
//!   derived from the input.
//! - [`session_ops`] / [`session_ops_with`]: a whole session over a sequence of [`Op`]s:
//!   bytes, SMTP lines, time, decisions (good and bad), TLS events, EOF, I/O errors, shutdown.
//!
//! The session invariants checked after every step:
//!
//! - every [`Output::Write`] is whole, well-formed reply lines (`DDD-text` / `DDD text`,
//!   CRLF, code 200..=599, one code per reply, no reply split across writes, no control
//!   characters), and a 421 reply is always the last one before [`Output::Close`];
//! - exactly one `Close`, followed at once by exactly one disconnect hook call, and nothing
//!   after it; after the close every `handle_*` and `decide` return [`Error::Closed`];
//! - at most one hook is pending, it is the one [`Session::pending_hook`] reports, and the
//!   deadline is `None` exactly while it is pending;
//! - a decision for a wrong or stale id returns [`Error::UnknownHook`], a decision that does
//!   not fit returns [`Error::InvalidDecision`], and both queue nothing and change nothing;
//! - decisions have the effect the crate documents (reject, the disconnect modes, a failed
//!   hook), input is refused only while a hook is pending and then only beyond
//!   [`Config::max_pending_input`], and no message body exceeds [`Config::max_message_size`];
//! - the disconnect context agrees with what was written (last reply) and with who closed.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

use crate::command::{parse_command, Command, CommandError};
use crate::data::{reference_unstuff, BareLineEndings, DataReceiver, DataStatus};
use crate::{
    AuthRequest, CloseSide, Config, ConnectionInfo, Decision, DisconnectContext, DisconnectMode,
    Error, Extensions, Hook, HookFailurePolicy, HookId, Hooks, IoError, IoErrorKind, Output, Reply,
    Session, StartTlsInjection, TlsInfo,
};

// ---------------------------------------------------------------------------------------
// A tiny deterministic generator for choices derived from the input.

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

// ---------------------------------------------------------------------------------------
// The command parser

const VERBS: [&str; 15] = [
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
    "STARTTLS", "AUTH", "XCLIENT",
];

/// The line as [`parse_command`] sees it: one trailing CR, then trailing blanks, removed.
fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let keep = line
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &line[..keep]
}

/// Parses `data` as one command line and checks what the parser promises.
pub fn command_parser(data: &[u8]) {
    let result = parse_command(data);
    let trimmed = trim_line(data);
    let word = &trimmed[..memchr::memchr(b' ', trimmed).unwrap_or(trimmed.len())];
    let upper = word.to_ascii_uppercase();
    let known = VERBS.iter().any(|v| v.as_bytes() == upper.as_slice());
    match &result {
        Ok(command) => {
            assert_eq!(
                command.verb().as_str().as_bytes(),
                upper.as_slice(),
                "the verb is the line's first word: {data:?}"
            );
            assert!(std::str::from_utf8(trimmed).is_ok(), "Ok for non-UTF-8");
            match command {
                Command::Mail { params, .. } | Command::Rcpt { params, .. } => {
                    assert!(params.is_empty() || params.starts_with(' '), "{params:?}");
                }
                Command::Helo(host) | Command::Ehlo(host) => {
                    assert!(crate::address::is_valid_helo_host(host), "{host:?}");
                }
                Command::Auth { mechanism, initial } => {
                    assert!((1..=20).contains(&mechanism.len()), "{mechanism:?}");
                    assert!(initial.map_or(true, |i| !i.is_empty() && !i.contains(' ')));
                }
                Command::Vrfy(arg) | Command::Expn(arg) | Command::Xclient(arg) => {
                    assert!(!arg.is_empty() && !arg.starts_with(' '));
                }
                _ => {}
            }
        }
        Err(CommandError::Unknown) => assert!(!known, "known verb reported unknown: {data:?}"),
        Err(CommandError::NotUtf8(verb)) => {
            assert_eq!(verb.as_str().as_bytes(), upper.as_slice());
            assert!(std::str::from_utf8(trimmed).is_err());
        }
        Err(CommandError::Syntax(verb) | CommandError::Address(verb, _)) => {
            assert_eq!(verb.as_str().as_bytes(), upper.as_slice());
        }
    }
    if let Err(error) = &result {
        let _ = error.to_string();
    }

    // Verbs are case-insensitive: flipping the case of the first word changes nothing.
    let mut flipped = data.to_vec();
    for b in &mut flipped[..word.len()] {
        if b.is_ascii_alphabetic() {
            *b ^= 0x20;
        }
    }
    assert_eq!(
        parse_command(&flipped),
        result,
        "verb case matters: {data:?}"
    );

    // A CR or trailing blanks at the end of the line are not content.
    if !data.ends_with(b"\r") {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b" \t");
        assert_eq!(parse_command(&longer), result, "trailing blanks: {data:?}");
        longer.truncate(data.len());
        longer.push(b'\r');
        assert_eq!(parse_command(&longer), result, "trailing CR: {data:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The DATA receiver

const POLICIES: [BareLineEndings; 3] = [
    BareLineEndings::Reject,
    BareLineEndings::Normalize,
    BareLineEndings::Allow,
];

/// What a receiver did with some input.
struct Fed {
    rx: DataReceiver,
    body: Vec<u8>,
    consumed: usize,
    done: bool,
}

fn feed_in_chunks(rx: DataReceiver, mut body: Vec<u8>, input: &[u8], lens: &[usize]) -> Fed {
    let mut rx = rx;
    let mut pos = 0;
    let mut done = false;
    let mut lens = lens.iter().copied().cycle();
    while pos < input.len() {
        let len = lens
            .next()
            .unwrap_or(input.len())
            .clamp(1, input.len() - pos);
        let chunk = &input[pos..pos + len];
        let before = body.len();
        let (n, status) = rx.feed(chunk, &mut body);
        assert!(n <= chunk.len(), "consumed more than given");
        assert!(body.len() >= before, "stored bytes were removed");
        pos += n;
        if status == DataStatus::Done {
            done = true;
            assert!(rx.is_done());
            // A finished receiver takes nothing more.
            assert_eq!(rx.feed(&input[pos..], &mut body), (0, DataStatus::Done));
            break;
        }
        assert_eq!(n, chunk.len(), "NeedMore must consume the whole chunk");
        assert!(!rx.is_done());
    }
    Fed {
        rx,
        body,
        consumed: pos,
        done,
    }
}

/// Feeds the input (after a first control byte) to a [`DataReceiver`] in chunks split at
/// points derived from the data, under each policy, with and without a small size limit,
/// and compares the result with [`reference_unstuff`].
pub fn data_receiver(data: &[u8]) {
    let Some((&ctrl, input)) = data.split_first() else {
        return;
    };
    // `CRLF . CRLF` after anything ends the data, at the latest at its own dot.
    let mut full = input.to_vec();
    full.extend_from_slice(b"\r\n.\r\n");

    let mut rng = Rng::new((u64::from(ctrl) << 32) | input.len() as u64);
    let random: Vec<usize> = (0..64).map(|_| 1 + rng.below(16) as usize).collect();
    // Splits at every line-relevant byte: a chunk ends right after each CR, LF or dot.
    let mut at_specials = Vec::new();
    let mut last = 0;
    for (i, b) in input.iter().enumerate() {
        if matches!(b, b'\r' | b'\n' | b'.') {
            at_specials.push(i + 1 - last);
            last = i + 1;
        }
    }
    at_specials.push(usize::MAX);
    let splits: [&[usize]; 4] = [&[usize::MAX], &[1], &random, &at_specials];
    let small = u64::from(ctrl) % (input.len() as u64 + 2);

    for policy in POLICIES {
        let (full_body, full_consumed, full_bare) =
            reference_unstuff(&full, policy).expect("CRLF.CRLF always ends the data");
        let want = reference_unstuff(input, policy);
        if let Some(want) = &want {
            // The reference scans left to right: the first end wins.
            assert_eq!(want, &(full_body.clone(), full_consumed, full_bare));
        }
        for max in [u64::MAX, small] {
            for lens in splits {
                let rx = DataReceiver::new(policy, max);
                let fed = feed_in_chunks(rx, Vec::new(), input, lens);
                let bounded = |len: usize| len.min(usize::try_from(max).unwrap_or(usize::MAX));
                if max != u64::MAX {
                    assert!(
                        fed.body.capacity() as u64 <= max.max(8),
                        "body capacity {} over the limit {max}",
                        fed.body.capacity()
                    );
                }
                let fed = match &want {
                    Some((body, consumed, bare)) => {
                        assert!(fed.done, "{policy:?} {lens:?}: end of data missed");
                        assert_eq!(fed.consumed, *consumed, "{policy:?} {lens:?}");
                        assert_eq!(fed.rx.saw_bare_line_ending(), *bare, "{policy:?}");
                        assert_eq!(fed.rx.size(), body.len() as u64, "{policy:?}");
                        assert_eq!(fed.rx.exceeded(), body.len() as u64 > max);
                        assert_eq!(fed.body, body[..bounded(body.len())], "{policy:?} {lens:?}");
                        continue;
                    }
                    None => {
                        assert!(!fed.done, "{policy:?} {lens:?}: end of data invented");
                        assert_eq!(fed.consumed, input.len());
                        assert!(fed.body.len() <= bounded(full_body.len()));
                        assert_eq!(fed.body, full_body[..fed.body.len()], "{policy:?}");
                        fed
                    }
                };
                // The rest of the stream arrives: the result is the whole stream's.
                let rest = &full[input.len()..];
                let end = feed_in_chunks(fed.rx, fed.body, rest, lens);
                assert!(end.done, "{policy:?}: CRLF.CRLF did not end the data");
                assert_eq!(input.len() + end.consumed, full_consumed, "{policy:?}");
                assert_eq!(end.rx.saw_bare_line_ending(), full_bare, "{policy:?}");
                assert_eq!(end.rx.size(), full_body.len() as u64, "{policy:?}");
                assert_eq!(end.rx.exceeded(), full_body.len() as u64 > max);
                assert_eq!(
                    end.body,
                    full_body[..bounded(full_body.len())],
                    "{policy:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sessions: configuration

/// Configuration knobs a session fuzz input can turn; all zero is the default fuzz config:
/// every hook subscribed, STARTTLS and AUTH (also without TLS) on, small limits.
#[derive(Arbitrary, Clone, Debug, Default, PartialEq, Eq)]
pub struct Knobs {
    /// [`BareLineEndings`]: 0 Reject, 1 Normalize, 2 Allow (modulo 3).
    pub bare_line_endings: u8,
    /// Hooks left unsubscribed, one bit each: connect, helo, auth, mail, rcpt, data, message.
    pub unsubscribe: u8,
    /// [`HookFailurePolicy::Disconnect`] instead of a temporary failure.
    pub hook_failure_disconnect: bool,
    /// [`StartTlsInjection::Close`] instead of discarding.
    pub starttls_injection_close: bool,
    /// [`Config::require_tls`].
    pub require_tls: bool,
    /// [`Config::require_auth`].
    pub require_auth: bool,
    /// [`Config::implicit_tls`].
    pub implicit_tls: bool,
    /// [`Config::proxy_protocol`].
    pub proxy_protocol: bool,
    /// A [`Config::greeting_delay`] of [`GREETING_DELAY`].
    pub greeting_delay: bool,
    /// [`Config::reject_early_talkers`].
    pub reject_early_talkers: bool,
    /// [`Config::reject_unauth_pipelining`].
    pub reject_unauth_pipelining: bool,
}

/// The greeting delay of [`Knobs::greeting_delay`].
pub const GREETING_DELAY: Duration = Duration::from_secs(3);

/// The client's address; XCLIENT is trusted from it.
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

/// The config the session fuzzers use for `knobs`.
pub fn fuzz_config(knobs: &Knobs) -> Config {
    let off = |bit: u8| knobs.unsubscribe & (1 << bit) != 0;
    Config {
        hostname: "mx.fuzz.example".into(),
        banner: "ESMTP fuzz".into(),
        extensions: Extensions {
            starttls: true,
            auth: true,
            ..Extensions::default()
        },
        auth_mechanisms: ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"]
            .map(String::from)
            .to_vec(),
        auth_without_tls: true,
        require_auth: knobs.require_auth,
        require_tls: knobs.require_tls,
        implicit_tls: knobs.implicit_tls,
        starttls_injection: if knobs.starttls_injection_close {
            StartTlsInjection::Close
        } else {
            StartTlsInjection::Discard
        },
        hooks: Hooks {
            connect: !off(0),
            helo: !off(1),
            auth: !off(2),
            mail_from: !off(3),
            rcpt_to: !off(4),
            data: !off(5),
            message: !off(6),
            vrfy: false,
        },
        hook_failure: if knobs.hook_failure_disconnect {
            HookFailurePolicy::Disconnect
        } else {
            HookFailurePolicy::TemporaryFailure
        },
        proxy_protocol: knobs.proxy_protocol,
        xclient_trusted: vec![CLIENT_IP],
        max_auth_line_length: 1024,
        max_message_size: 4096,
        max_pending_input: 2048,
        hard_error_limit: 10,
        bare_line_endings: POLICIES[usize::from(knobs.bare_line_endings % 3)],
        greeting_delay: if knobs.greeting_delay {
            GREETING_DELAY
        } else {
            Duration::ZERO
        },
        reject_early_talkers: knobs.reject_early_talkers,
        reject_unauth_pipelining: knobs.reject_unauth_pipelining,
        ..Config::default()
    }
}

fn fuzz_info() -> ConnectionInfo {
    ConnectionInfo {
        id: "fuzz-1".into(),
        remote_ip: Some(CLIENT_IP),
        remote_port: Some(41666),
        local_ip: Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))),
        local_port: Some(25),
        server_id: Some("fuzz".into()),
        ..ConnectionInfo::default()
    }
}

fn extensions_from_bits(bits: u16) -> Extensions {
    let on = |bit: u16| bits & (1 << bit) != 0;
    Extensions {
        pipelining: on(0),
        size: on(1),
        eight_bit_mime: on(2),
        enhanced_status_codes: on(3),
        smtputf8: on(4),
        chunking: on(5),
        binary_mime: on(6),
        dsn: on(7),
        starttls: on(8),
        auth: on(9),
        require_tls: on(10),
        mt_priority: on(11),
        deliver_by: on(12),
        rrvs: on(13),
    }
}

// ---------------------------------------------------------------------------------------
// Sessions: operations

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
];

/// A proxy-protocol v2 header (LOCAL command) for the seed corpus.
const PROXY_V2: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00";

/// The code of a reply a decision gives.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
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
    fn code(self) -> u16 {
        match self {
            ReplyCode::C421 => 421,
            ReplyCode::C451 => 451,
            ReplyCode::C550 => 550,
            ReplyCode::C554 => 554,
            ReplyCode::C250 => 250,
        }
    }
}

/// A decision for the pending hook, turned into a [`Decision`] that fits the hook where it
/// can: `AcceptWith` gives 354 to the data hook, 220 to the connect hook, and so on.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum DecisionKind {
    /// [`Decision::Accept`].
    Accept,
    /// [`Decision::AcceptWith`] a custom reply of the right kind.
    AcceptWith,
    /// [`Decision::Reject`].
    Reject(ReplyCode),
    /// [`Decision::Disconnect`].
    Disconnect(DisconnectMode, ReplyCode),
    /// [`Decision::HookFailed`].
    HookFailed,
    /// [`Decision::Challenge`]: valid only for auth steps the session does not decode.
    Challenge(#[arbitrary(with = payload)] Vec<u8>),
    /// A 550 rejection whose text tries to inject a 250 reply and a 354.
    RejectInjection,
}

/// One step of a fuzzed session.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Client bytes (kept by the runtime while the session refuses them).
    Bytes(#[arbitrary(with = payload)] Vec<u8>),
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
    /// [`Session::set_extensions`] with one bit per field, in declaration order.
    SetExtensions(u16),
}

/// Bytes laid out contiguously in the fuzz input (length taken from its end), so that
/// dictionary words and seed text stay intact.
fn payload(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    let len = u.arbitrary_len::<u8>()?;
    Ok(u.bytes(len)?.to_vec())
}

// ---------------------------------------------------------------------------------------
// Sessions: the checking driver

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HookKind {
    Connect,
    Helo,
    AuthDecoded,
    AuthStep,
    MailFrom,
    RcptTo,
    Data,
    Message,
}

#[derive(Clone, Copy, Debug)]
struct Outstanding {
    id: HookId,
    kind: HookKind,
}

/// What one drain of the outputs produced.
#[derive(Default, Debug)]
struct Drained {
    /// The codes of the replies written, in order.
    codes: Vec<u16>,
    outputs: usize,
    closed: bool,
}

/// What a decision is expected to do.
struct Expect {
    valid: bool,
    closes: bool,
    /// The code of the first reply written after it, when it is written at once.
    first_code: Option<u16>,
    /// Exactly this reply, then the FollowWith421 line, then close.
    follow_with_421: bool,
}

struct Driver {
    session: Session,
    now: Instant,
    max_message_size: u64,
    max_pending_input: usize,
    knobs: Knobs,
    outstanding: Option<Outstanding>,
    /// The connect hook was called or a reply written: the greeting delay is over.
    greeted: bool,
    /// Input was offered before that.
    talked_early: bool,
    last_decided: Option<HookId>,
    tls_requested: bool,
    closes: u32,
    disconnects: u32,
    /// A 421 was written: the next output must be the close.
    close_due: bool,
    /// The last reply written: code and number of lines.
    last_reply: Option<(u16, usize)>,
    /// Bytes the session took while a hook was pending.
    paused_intake: usize,
    /// Bytes the session did not take yet; offered again after each decision.
    backlog: Vec<u8>,
    eof_wanted: bool,
    eof_sent: bool,
    io_error_sent: bool,
    /// Who must be named as closing if the close happens during the current call.
    expect_side: Option<CloseSide>,
}

impl Driver {
    fn new(knobs: &Knobs) -> Driver {
        let config = fuzz_config(knobs);
        assert_eq!(config.validate(), Ok(()), "the fuzz config is in range");
        let now = Instant::now();
        let session = Session::new(Arc::new(config), fuzz_info(), now);
        let mut driver = Driver {
            max_message_size: session.config().max_message_size,
            max_pending_input: session.config().max_pending_input,
            knobs: knobs.clone(),
            session,
            now,
            outstanding: None,
            greeted: false,
            talked_early: false,
            last_decided: None,
            tls_requested: false,
            closes: 0,
            disconnects: 0,
            close_due: false,
            last_reply: None,
            paused_intake: 0,
            backlog: Vec::new(),
            eof_wanted: false,
            eof_sent: false,
            io_error_sent: false,
            expect_side: None,
        };
        driver.drain();
        driver
    }

    fn closed(&self) -> bool {
        self.closes > 0
    }

    /// Pops every output, checking each, then goes on with held input as a runtime does
    /// when `poll_timeout` says it is due already.
    fn drain(&mut self) -> Drained {
        let mut drained = self.drain_outputs();
        while !self.closed() && self.session.poll_timeout().is_some_and(|d| d <= self.now) {
            self.session
                .handle_timeout(self.now)
                .expect("timeout while open");
            let more = self.drain_outputs();
            drained.outputs += more.outputs;
            drained.codes.extend(more.codes);
            drained.closed |= more.closed;
        }
        drained
    }

    /// Pops every output, checking each, and then the session's state.
    fn drain_outputs(&mut self) -> Drained {
        let mut drained = Drained::default();
        while let Some(output) = self.session.poll_output() {
            drained.outputs += 1;
            assert!(drained.outputs < 1_000_000, "outputs without end");
            assert_eq!(
                self.disconnects, 0,
                "output after the disconnect hook: {output:?}"
            );
            if self.closed() {
                assert!(
                    matches!(&output, Output::HookCall(call) if matches!(call.hook, Hook::Disconnect(_))),
                    "the close must be followed at once by the disconnect hook: {output:?}"
                );
            }
            if self.close_due {
                assert!(
                    matches!(output, Output::Close),
                    "a 421 reply must be followed by the close: {output:?}"
                );
                self.close_due = false;
            }
            match output {
                Output::Write(bytes) => {
                    self.greeted = true;
                    self.check_write(&bytes, &mut drained.codes);
                }
                Output::Close => {
                    self.closes += 1;
                    drained.closed = true;
                    self.outstanding = None;
                    self.tls_requested = false;
                    self.backlog.clear();
                }
                Output::StartTls => {
                    assert!(
                        !self.tls_requested,
                        "a second StartTls before the first ended"
                    );
                    assert!(
                        self.outstanding.is_none(),
                        "StartTls while a hook is pending"
                    );
                    self.tls_requested = true;
                    // The runtime drops what it read before the handshake.
                    self.backlog.clear();
                }
                Output::BodyPiece(_) | Output::BodyAborted(_) => {
                    panic!("a session with buffered bodies streamed one: {output:?}")
                }
                Output::HookCall(call) => {
                    let needs_decision = call.needs_decision();
                    let kind = match call.hook {
                        Hook::Disconnect(context) => {
                            assert!(!needs_decision);
                            assert!(self.closed(), "disconnect hook before the close");
                            self.disconnects += 1;
                            self.check_context(&context);
                            continue;
                        }
                        Hook::Connect => HookKind::Connect,
                        Hook::Helo { .. } => HookKind::Helo,
                        Hook::Auth(AuthRequest::Step { .. }) => HookKind::AuthStep,
                        Hook::Auth(_) => HookKind::AuthDecoded,
                        Hook::MailFrom { .. } => HookKind::MailFrom,
                        Hook::RcptTo { .. } => HookKind::RcptTo,
                        Hook::Data => HookKind::Data,
                        Hook::Vrfy(_) | Hook::Expn(_) => {
                            panic!("the fuzz config subscribes no VRFY hook")
                        }
                        Hook::Message(message) => {
                            assert!(
                                message.body.len() as u64 <= self.max_message_size,
                                "a message body of {} bytes passed the {} limit",
                                message.body.len(),
                                self.max_message_size
                            );
                            HookKind::Message
                        }
                    };
                    assert!(needs_decision);
                    self.greeted = true;
                    if let Some(old) = self.outstanding {
                        panic!("hook {kind:?} called while {old:?} is pending");
                    }
                    self.outstanding = Some(Outstanding { id: call.id, kind });
                    self.paused_intake = 0;
                }
            }
        }
        assert!(!self.close_due, "a 421 reply without a close");
        self.check_state();
        drained
    }

    fn check_state(&self) {
        assert_eq!(
            self.session.is_closed(),
            self.closed(),
            "is_closed vs Close"
        );
        if self.closed() {
            assert_eq!(
                self.disconnects, 1,
                "the disconnect hook fires exactly once"
            );
            assert_eq!(self.session.pending_hook(), None);
            assert_eq!(self.session.poll_timeout(), None);
        } else {
            assert_eq!(
                self.session.pending_hook(),
                self.outstanding.map(|o| o.id),
                "the pending hook is the last one called"
            );
            assert_eq!(
                self.session.poll_timeout().is_none(),
                self.outstanding.is_some(),
                "a deadline exactly while no hook is pending"
            );
        }
    }

    /// One write: whole, well-formed replies.
    fn check_write(&mut self, bytes: &[u8], codes: &mut Vec<u16>) {
        assert!(!self.closed(), "write after close");
        assert!(!bytes.is_empty(), "empty write");
        assert!(
            bytes.ends_with(b"\r\n"),
            "write does not end with CRLF: {bytes:?}"
        );
        let mut open: Option<(u16, usize)> = None;
        for raw in bytes[..bytes.len() - 1].split(|&b| b == b'\n') {
            let line = raw
                .strip_suffix(b"\r")
                .unwrap_or_else(|| panic!("bare LF in a reply: {bytes:?}"));
            let text = std::str::from_utf8(line).expect("replies are UTF-8");
            assert!(line.len() >= 4, "short reply line {text:?}");
            assert!(line[..3].iter().all(u8::is_ascii_digit), "{text:?}");
            let code = u16::from(line[0] - b'0') * 100
                + u16::from(line[1] - b'0') * 10
                + u16::from(line[2] - b'0');
            assert!(
                (200..=599).contains(&code),
                "reply code out of range: {text:?}"
            );
            assert!(
                !text[4..].chars().any(|c| c.is_control() && c != '\t'),
                "control character in reply: {text:?}"
            );
            assert!(!self.close_due, "a reply after a 421: {bytes:?}");
            let lines = match open {
                Some((open_code, n)) => {
                    assert_eq!(code, open_code, "continuation with another code: {bytes:?}");
                    n + 1
                }
                None => 1,
            };
            match line[3] {
                b'-' => open = Some((code, lines)),
                b' ' => {
                    open = None;
                    codes.push(code);
                    self.last_reply = Some((code, lines));
                    self.close_due = code == 421;
                }
                _ => panic!("no separator after the code: {text:?}"),
            }
        }
        assert!(open.is_none(), "a reply split across writes: {bytes:?}");
    }

    fn check_context(&self, context: &DisconnectContext) {
        let arguments = &context.arguments;
        let written = arguments.reply.as_ref().map(|r| (r.code, r.lines.len()));
        assert_eq!(
            written, self.last_reply,
            "the context's last reply was not the last sent"
        );
        if let Some(side) = self.expect_side {
            assert_eq!(arguments.close, side, "wrong close side");
        }
        if arguments.close == CloseSide::Remote {
            assert!(
                self.eof_sent || self.io_error_sent,
                "Remote close without EOF or error"
            );
        }
        assert_eq!(arguments.error.is_some(), self.io_error_sent);
        if context.connection.early_talker {
            assert!(self.talked_early, "an early talker that never talked early");
        }
    }

    /// After the close: every input is refused with `Closed` and queues nothing.
    fn check_closed_api(&mut self) {
        assert!(self.closed());
        let now = self.now + Duration::from_secs(86_400);
        let s = &mut self.session;
        assert_eq!(s.handle_input(b"QUIT\r\n", now), Err(Error::Closed));
        assert_eq!(s.handle_input(b"", now), Err(Error::Closed));
        assert_eq!(s.handle_eof(now), Err(Error::Closed));
        assert_eq!(s.handle_timeout(now), Err(Error::Closed));
        assert_eq!(s.handle_shutdown(now), Err(Error::Closed));
        assert_eq!(s.handle_io_error(io_error(), now), Err(Error::Closed));
        assert_eq!(
            s.handle_tls_established(TlsInfo::default(), now),
            Err(Error::Closed)
        );
        assert_eq!(s.handle_tls_failed(io_error(), now), Err(Error::Closed));
        for id in [0, 1, 2, u64::MAX] {
            assert_eq!(
                s.decide(HookId(id), Decision::Accept, now),
                Err(Error::Closed)
            );
        }
        assert!(s.poll_output().is_none(), "output after close");
        self.check_state();
    }

    fn assert_quiet(&mut self, what: &str) {
        if let Some(output) = self.session.poll_output() {
            panic!("{what} queued {output:?}");
        }
        self.check_state();
    }

    // --- inputs ---

    fn bytes(&mut self, bytes: &[u8]) {
        if self.closed() {
            assert_eq!(
                self.session.handle_input(bytes, self.now),
                Err(Error::Closed)
            );
            return self.assert_quiet("input after close");
        }
        // A runtime stops reading while it holds a backlog; bound it all the same.
        if self.backlog.len() < 1 << 20 {
            self.backlog.extend_from_slice(bytes);
        }
        self.offer();
    }

    /// Offers the backlog until the session takes no more, then delivers a wanted EOF.
    fn offer(&mut self) {
        for _ in 0..10_000 {
            if self.closed() || self.backlog.is_empty() {
                break;
            }
            let paused = self.outstanding.is_some();
            let len = self.backlog.len();
            let connecting = matches!(self.outstanding, Some(o) if o.kind == HookKind::Connect);
            if (!self.greeted || connecting) && !self.tls_requested {
                self.talked_early = true;
            }
            let taken = self
                .session
                .handle_input(&self.backlog, self.now)
                .expect("input while open");
            assert!(taken <= len);
            assert!(
                taken == len || self.session.pending_hook().is_some(),
                "input refused although no hook is pending"
            );
            if paused {
                self.paused_intake += taken;
                assert!(
                    self.paused_intake <= self.max_pending_input,
                    "took {} bytes while paused, limit {}",
                    self.paused_intake,
                    self.max_pending_input
                );
            }
            self.backlog.drain(..taken);
            self.drain();
            if taken == 0 {
                break;
            }
        }
        if self.eof_wanted && !self.eof_sent && self.backlog.is_empty() && !self.closed() {
            self.eof_sent = true;
            self.session.handle_eof(self.now).expect("eof while open");
            self.drain();
        }
    }

    fn eof(&mut self) {
        if self.closed() {
            assert_eq!(self.session.handle_eof(self.now), Err(Error::Closed));
            return self.assert_quiet("eof after close");
        }
        self.eof_wanted = true;
        self.offer();
    }

    fn io_error(&mut self) {
        if self.closed() {
            assert_eq!(
                self.session.handle_io_error(io_error(), self.now),
                Err(Error::Closed)
            );
            return self.assert_quiet("I/O error after close");
        }
        self.io_error_sent = true;
        self.expect_side = Some(CloseSide::Remote);
        self.session
            .handle_io_error(io_error(), self.now)
            .expect("io error while open");
        let drained = self.drain();
        self.expect_side = None;
        assert!(drained.closed, "an I/O error closes at once");
        assert!(
            drained.codes.is_empty(),
            "nothing is written after an I/O error"
        );
    }

    fn advance(&mut self, seconds: u16) {
        self.now += Duration::from_secs(u64::from(seconds));
        if self.closed() {
            assert_eq!(self.session.handle_timeout(self.now), Err(Error::Closed));
            return self.assert_quiet("timeout after close");
        }
        let deadline = self.session.poll_timeout();
        let due = deadline.is_some_and(|d| self.now >= d);
        // The end of a greeting delay greets (or refuses an early talker) instead.
        let greets = due && self.knobs.greeting_delay && !self.greeted;
        self.expect_side = (due && !greets).then_some(CloseSide::Local);
        self.session
            .handle_timeout(self.now)
            .expect("timeout while open");
        let drained = self.drain();
        self.expect_side = None;
        if greets {
            assert!(
                self.greeted || drained.closed,
                "the greeting delay ended without a greeting"
            );
        } else if due {
            assert!(drained.closed, "the deadline passed without a close");
            assert!(drained.codes.iter().all(|&c| c == 421), "{drained:?}");
        } else {
            assert_eq!(drained.outputs, 0, "an early timeout did something");
        }
    }

    /// Checks a TLS event the session must refuse (after close, or unrequested): true when
    /// it was one, after asserting the refusal changed nothing.
    fn tls_event_refused(&mut self, result: &Result<(), Error>, what: &str) -> bool {
        if self.closed() {
            assert_eq!(*result, Err(Error::Closed), "{what} after close");
        } else if !self.tls_requested {
            assert_eq!(*result, Err(Error::NoTlsRequested), "unrequested {what}");
        } else {
            return false;
        }
        self.assert_quiet(what);
        true
    }

    fn tls_established(&mut self) {
        let result = self.session.handle_tls_established(tls_info(), self.now);
        if self.tls_event_refused(&result, "TLS success") {
            return;
        }
        result.expect("the requested handshake");
        self.tls_requested = false;
        assert!(self.session.tls().is_some());
        assert!(self.session.helo().is_none() && self.session.envelope().is_none());
        self.drain();
        self.offer();
    }

    fn tls_failed(&mut self) {
        let result = self.session.handle_tls_failed(io_error(), self.now);
        if self.tls_event_refused(&result, "TLS failure") {
            return;
        }
        // The failure is reported like an I/O error; the check wants it recorded first.
        self.io_error_sent = true;
        self.expect_side = Some(CloseSide::Remote);
        result.expect("the requested handshake");
        let drained = self.drain();
        self.expect_side = None;
        assert!(drained.closed && drained.codes.is_empty(), "{drained:?}");
    }

    fn shutdown(&mut self) {
        if self.closed() {
            assert_eq!(self.session.handle_shutdown(self.now), Err(Error::Closed));
            return self.assert_quiet("shutdown after close");
        }
        self.expect_side = Some(CloseSide::Local);
        self.session
            .handle_shutdown(self.now)
            .expect("shutdown while open");
        self.drain();
        self.expect_side = None;
    }

    fn set_extensions(&mut self, bits: u16) {
        self.session.set_extensions(extensions_from_bits(bits));
        self.assert_quiet("set_extensions");
    }

    /// A decision for an id that is not pending: refused, and nothing changes.
    fn decide_wrong(&mut self, n: u8) {
        let id = match (n % 3, self.outstanding, self.last_decided) {
            (0, _, Some(stale)) => stale,
            (1, Some(o), _) => HookId(o.id.0 + 1 + u64::from(n)),
            _ => HookId(u64::MAX - u64::from(n)),
        };
        let result = self.session.decide(id, Decision::Accept, self.now);
        if self.closed() {
            assert_eq!(result, Err(Error::Closed));
        } else {
            assert_ne!(Some(id), self.outstanding.map(|o| o.id));
            assert_eq!(result, Err(Error::UnknownHook(id)));
        }
        self.assert_quiet("a refused decision");
    }

    fn decide(&mut self, kind: &DecisionKind) {
        let Some(pending) = self.outstanding else {
            return self.decide_wrong(0);
        };
        let refuse_early_talker = self.knobs.reject_early_talkers && self.session.early_talker();
        let (decision, expect) = build_decision(
            kind,
            pending.kind,
            self.knobs.hook_failure_disconnect,
            refuse_early_talker,
        );
        let described = format!("{decision:?} for {:?}", pending.kind);
        self.expect_side = expect.closes.then_some(CloseSide::Local);
        match self.session.decide(pending.id, decision, self.now) {
            Ok(()) => {
                assert!(expect.valid, "accepted an unfitting decision: {described}");
                self.outstanding = None;
                self.last_decided = Some(pending.id);
                let drained = self.drain();
                self.expect_side = None;
                if expect.closes {
                    assert!(drained.closed, "{described} did not close: {drained:?}");
                }
                if let Some(code) = expect.first_code {
                    assert_eq!(drained.codes.first(), Some(&code), "{described}");
                }
                if expect.follow_with_421 {
                    assert_eq!(drained.codes.len(), 2, "{described}: {drained:?}");
                    assert_eq!(drained.codes[1], 421, "{described}");
                } else if expect.closes && pending.kind != HookKind::Data {
                    // The reply, then at most the error limit's 421.
                    assert!(drained.codes.len() <= 2, "{described}: {drained:?}");
                }
            }
            Err(Error::InvalidDecision(why)) => {
                self.expect_side = None;
                assert!(
                    !expect.valid,
                    "refused a fitting decision ({why}): {described}"
                );
                self.assert_quiet("a refused decision");
            }
            Err(other) => panic!("{described}: unexpected {other:?}"),
        }
        self.offer();
    }

    /// Ends the session the way a runtime does: EOF, then answering whatever is owed.
    fn finish(&mut self, rng: &mut Rng) {
        for _ in 0..10_000 {
            if self.closed() {
                break;
            }
            if let Some(pending) = self.outstanding {
                let kind = auto_decision(rng, pending.kind);
                self.decide(&kind);
            } else if self.tls_requested {
                self.tls_established();
            } else if !self.backlog.is_empty() {
                self.offer();
            } else if !self.eof_sent {
                self.eof();
            } else {
                panic!("after EOF, with nothing owed, the session did not close");
            }
        }
        assert!(self.closed(), "the session never closed");
        self.check_closed_api();
    }
}

fn io_error() -> IoError {
    IoError {
        reason: "Connection reset by peer".into(),
        kind: IoErrorKind::Socket,
        code: Some(104),
    }
}

fn tls_info() -> TlsInfo {
    TlsInfo {
        protocol: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
        key_size: Some(256),
        sni: Some("mx.fuzz.example".into()),
        peer_certificate: None,
    }
}

fn reply(code: u16, text: &str) -> Reply {
    Reply::new(code, text).expect("a valid reply")
}

fn enhanced_text(code: u16, text: &str) -> String {
    format!("{}.7.1 {text}", code / 100)
}

/// The decision `kind` stands for at a hook of `hook`, and what it must do.
fn build_decision(
    kind: &DecisionKind,
    hook: HookKind,
    hook_failure_disconnect: bool,
    refuse_early_talker: bool,
) -> (Decision, Expect) {
    let at_connect = hook == HookKind::Connect;
    // The data hook of a BDAT answers after the chunk, so its reply cannot be checked.
    let immediate = |code: u16| (hook != HookKind::Data).then_some(code);
    let success = match hook {
        HookKind::Connect if refuse_early_talker => 554,
        HookKind::Connect => 220,
        HookKind::AuthDecoded | HookKind::AuthStep => 235,
        HookKind::Data => 354,
        _ => 250,
    };
    let mut expect = Expect {
        valid: true,
        closes: false,
        first_code: None,
        follow_with_421: false,
    };
    let decision = match kind {
        DecisionKind::Accept => {
            expect.first_code = immediate(success);
            expect.closes = success == 554;
            Decision::Accept
        }
        DecisionKind::AcceptWith => {
            expect.first_code = immediate(success);
            expect.closes = success == 554;
            let success = if success == 554 { 220 } else { success };
            let text = match hook {
                HookKind::Helo => "mx.fuzz.example custom\nPIPELINING\nCHUNKING".to_owned(),
                _ => format!("{}.0.0 custom success", success / 100),
            };
            let text = if success == 354 || success == 220 {
                "custom go ahead".to_owned()
            } else {
                text
            };
            Decision::AcceptWith(reply(success, &text))
        }
        DecisionKind::Reject(code) => {
            let code = code.code();
            expect.valid = code >= 400;
            expect.closes = code == 421 || at_connect;
            expect.first_code = immediate(code);
            Decision::Reject(reply(code, &enhanced_text(code, "rejected by policy")))
        }
        DecisionKind::RejectInjection => {
            expect.closes = at_connect;
            expect.first_code = immediate(550);
            Decision::Reject(reply(550, "5.7.1 no\r\n250 2.0.0 OK\r\n354 go\n\r.\r\n"))
        }
        DecisionKind::Disconnect(mode, code) => {
            let code = code.code();
            let stays = *mode == DisconnectMode::If421 && code != 421 && !at_connect;
            expect.closes = !stays;
            expect.first_code = if stays { immediate(code) } else { Some(code) };
            expect.follow_with_421 = *mode == DisconnectMode::FollowWith421 && code != 421;
            let text = if code == 250 {
                "bye now".to_owned()
            } else {
                enhanced_text(code, "go away")
            };
            Decision::Disconnect {
                reply: reply(code, &text),
                mode: *mode,
            }
        }
        DecisionKind::HookFailed => {
            expect.closes = hook_failure_disconnect || at_connect;
            let code = if expect.closes {
                421
            } else if matches!(hook, HookKind::AuthDecoded | HookKind::AuthStep) {
                454
            } else {
                451
            };
            expect.first_code = if expect.closes {
                Some(421)
            } else {
                immediate(code)
            };
            Decision::HookFailed
        }
        DecisionKind::Challenge(bytes) => {
            expect.valid = hook == HookKind::AuthStep;
            expect.first_code = Some(334);
            Decision::Challenge(bytes.clone())
        }
    };
    (decision, expect)
}

/// A decision for `session_bytes` and for finishing: mostly Accept, always a fitting one.
fn auto_decision(rng: &mut Rng, hook: HookKind) -> DecisionKind {
    let code = [
        ReplyCode::C421,
        ReplyCode::C451,
        ReplyCode::C550,
        ReplyCode::C554,
    ][rng.below(4) as usize];
    let mode = [
        DisconnectMode::ForceDisconnect,
        DisconnectMode::FollowWith421,
        DisconnectMode::If421,
    ][rng.below(3) as usize];
    match rng.below(24) {
        0 => DecisionKind::AcceptWith,
        1 | 2 => DecisionKind::Reject(ReplyCode::C550),
        3 => DecisionKind::Reject(code),
        4 => DecisionKind::Disconnect(mode, code),
        5 => DecisionKind::HookFailed,
        6 => DecisionKind::RejectInjection,
        7..=10 if hook == HookKind::AuthStep => DecisionKind::Challenge(b"challenge".to_vec()),
        _ => DecisionKind::Accept,
    }
}

fn seed_of(data: &[u8]) -> u64 {
    // Mutations in the middle of an input keep its splits and decisions.
    let first = data.first().copied().unwrap_or(0);
    let last = data.last().copied().unwrap_or(0);
    ((data.len() as u64) << 16) | (u64::from(first) << 8) | u64::from(last)
}

/// Runs a session over client bytes: fed in chunks of sizes derived from the input, every
/// hook answered by a choice derived from it (mostly Accept), TLS handshakes established,
/// then EOF; checks the session invariants throughout (see the module docs).
pub fn session_bytes(data: &[u8]) {
    let mut rng = Rng::new(seed_of(data));
    // Mostly the default fuzz config; now and then another policy.
    let knobs = if rng.one_in(2) {
        Knobs::default()
    } else {
        Knobs {
            bare_line_endings: rng.below(3) as u8,
            unsubscribe: if rng.one_in(4) {
                rng.below(128) as u8
            } else {
                0
            },
            hook_failure_disconnect: rng.one_in(3),
            starttls_injection_close: rng.one_in(3),
            require_tls: rng.one_in(8),
            require_auth: rng.one_in(8),
            implicit_tls: rng.one_in(8),
            proxy_protocol: data.starts_with(b"PROXY ") || data.starts_with(PROXY_V2),
            greeting_delay: rng.one_in(4),
            reject_early_talkers: rng.one_in(4),
            reject_unauth_pipelining: rng.one_in(6),
        }
    };
    let mut driver = Driver::new(&knobs);
    let mut pos = 0;
    while pos < data.len() && !driver.closed() {
        answer_owed(&mut driver, &mut rng);
        let len = match rng.below(4) {
            0 => data.len(),
            1 => 1 + rng.below(8) as usize,
            _ => 1 + rng.below(512) as usize,
        }
        .min(data.len() - pos);
        driver.now += Duration::from_millis(rng.below(2000));
        // A runtime calls the timeout handler when the deadline passes.
        if driver
            .session
            .poll_timeout()
            .is_some_and(|d| driver.now >= d)
        {
            driver.advance(0);
            answer_owed(&mut driver, &mut rng);
            if driver.closed() {
                break;
            }
        }
        driver.bytes(&data[pos..pos + len]);
        pos += len;
        answer_owed(&mut driver, &mut rng);
    }
    driver.finish(&mut rng);
}

/// Answers the pending hook and the requested handshake, as a runtime does.
fn answer_owed(driver: &mut Driver, rng: &mut Rng) {
    for _ in 0..10_000 {
        if let Some(pending) = driver.outstanding {
            let kind = auto_decision(rng, pending.kind);
            driver.decide(&kind);
        } else if driver.tls_requested {
            if rng.one_in(16) {
                driver.tls_failed();
            } else {
                driver.tls_established();
            }
        } else {
            return;
        }
    }
    panic!("hooks without end");
}

/// Runs [`session_ops_with`] with the default fuzz config.
pub fn session_ops(ops: Vec<Op>) {
    session_ops_with(Knobs::default(), ops)
}

/// Runs a session with the config of `knobs` through `ops`, checking the session
/// invariants after each (see the module docs); then, if it is still open, delivers EOF and
/// answers whatever is owed until it closes, and checks the close.
pub fn session_ops_with(knobs: Knobs, ops: Vec<Op>) {
    let mut driver = Driver::new(&knobs);
    for op in &ops {
        match op {
            Op::Bytes(bytes) => driver.bytes(bytes),
            Op::Line(i) => driver.bytes(LINES[usize::from(*i) % LINES.len()]),
            Op::Eof => driver.eof(),
            Op::IoError => driver.io_error(),
            Op::Advance(seconds) => driver.advance(*seconds),
            Op::TlsEstablished => driver.tls_established(),
            Op::TlsFailed => driver.tls_failed(),
            Op::Decide(kind) => {
                if driver.closed() {
                    driver.decide_wrong(0);
                } else {
                    driver.decide(kind);
                }
            }
            Op::DecideWrongId(n) => driver.decide_wrong(*n),
            Op::Shutdown => driver.shutdown(),
            Op::SetExtensions(bits) => driver.set_extensions(*bits),
        }
    }
    let mut rng = Rng::new(ops.len() as u64);
    driver.finish(&mut rng);
}

// ---------------------------------------------------------------------------------------
// Encoding operations as fuzz input, for seed corpora

/// Encodes `(knobs, ops)` as the bytes `arbitrary` (1.x) decodes back into the same values,
/// the input of the `session_ops` fuzz target; used to write its seed corpus.
///
/// # Panics
///
/// If the encoding would exceed 64 KiB.
pub fn encode_ops(knobs: &Knobs, ops: &[Op]) -> Vec<u8> {
    let mut e = Encoder::default();
    e.u8(knobs.bare_line_endings);
    e.u8(knobs.unsubscribe);
    for flag in [
        knobs.hook_failure_disconnect,
        knobs.starttls_injection_close,
        knobs.require_tls,
        knobs.require_auth,
        knobs.implicit_tls,
        knobs.proxy_protocol,
        knobs.greeting_delay,
        knobs.reject_early_talkers,
        knobs.reject_unauth_pipelining,
    ] {
        e.u8(u8::from(flag));
    }
    for op in ops {
        e.u8(1); // another element follows
        match op {
            Op::Bytes(bytes) => {
                e.variant(0, 11);
                e.payload(bytes);
            }
            Op::Line(i) => {
                e.variant(1, 11);
                e.u8(*i);
            }
            Op::Eof => e.variant(2, 11),
            Op::IoError => e.variant(3, 11),
            Op::Advance(seconds) => {
                e.variant(4, 11);
                e.front.extend_from_slice(&seconds.to_le_bytes());
            }
            Op::TlsEstablished => e.variant(5, 11),
            Op::TlsFailed => e.variant(6, 11),
            Op::Decide(kind) => {
                e.variant(7, 11);
                e.decision(kind);
            }
            Op::DecideWrongId(n) => {
                e.variant(8, 11);
                e.u8(*n);
            }
            Op::Shutdown => e.variant(9, 11),
            Op::SetExtensions(bits) => {
                e.variant(10, 11);
                e.front.extend_from_slice(&bits.to_le_bytes());
            }
        }
    }
    e.finish()
}

/// Bytes read from the front, plus the lengths of payloads that `arbitrary` reads from the
/// back of the input.
#[derive(Default)]
struct Encoder {
    front: Vec<u8>,
    /// For each payload: where in `front` it starts, and its length.
    payloads: Vec<(usize, usize)>,
}

impl Encoder {
    fn u8(&mut self, v: u8) {
        self.front.push(v);
    }

    /// The derive reads a `u32` and picks `(x * count) >> 32`.
    fn variant(&mut self, index: u32, count: u32) {
        let x = (u64::from(index) << 32).div_ceil(u64::from(count));
        let x = u32::try_from(x).expect("index < count");
        self.front.extend_from_slice(&x.to_le_bytes());
    }

    fn payload(&mut self, bytes: &[u8]) {
        self.payloads.push((self.front.len(), bytes.len()));
        self.front.extend_from_slice(bytes);
    }

    fn reply_code(&mut self, code: ReplyCode) {
        let index = match code {
            ReplyCode::C421 => 0,
            ReplyCode::C451 => 1,
            ReplyCode::C550 => 2,
            ReplyCode::C554 => 3,
            ReplyCode::C250 => 4,
        };
        self.variant(index, 5);
    }

    fn decision(&mut self, kind: &DecisionKind) {
        match kind {
            DecisionKind::Accept => self.variant(0, 7),
            DecisionKind::AcceptWith => self.variant(1, 7),
            DecisionKind::Reject(code) => {
                self.variant(2, 7);
                self.reply_code(*code);
            }
            DecisionKind::Disconnect(mode, code) => {
                self.variant(3, 7);
                let mode = match mode {
                    DisconnectMode::ForceDisconnect => 0,
                    DisconnectMode::FollowWith421 => 1,
                    DisconnectMode::If421 => 2,
                };
                self.variant(mode, 3);
                self.reply_code(*code);
            }
            DecisionKind::HookFailed => self.variant(4, 7),
            DecisionKind::Challenge(bytes) => {
                self.variant(5, 7);
                self.payload(bytes);
            }
            DecisionKind::RejectInjection => self.variant(6, 7),
        }
    }

    /// `Unstructured::arbitrary_len` takes a length from the end of what remains, in 1, 2 or
    /// 4 bytes depending on how much remains; the widths depend on the total length, so they
    /// are found by iterating to a fixed point.
    fn finish(self) -> Vec<u8> {
        let width = |remaining: usize| match remaining {
            0..=256 => 1,
            257..=65537 => 2,
            _ => panic!("seed too large to encode"),
        };
        let mut widths = vec![1; self.payloads.len()];
        let remainings = loop {
            let total = self.front.len() + widths.iter().sum::<usize>();
            let mut back = 0;
            let mut next = Vec::with_capacity(widths.len());
            let mut remainings = Vec::with_capacity(widths.len());
            for &(at, _) in &self.payloads {
                let remaining = total - at - back;
                let w = width(remaining);
                back += w;
                next.push(w);
                remainings.push(remaining);
            }
            if next == widths {
                break remainings;
            }
            widths = next;
        };
        let mut lengths: Vec<Vec<u8>> = Vec::with_capacity(widths.len());
        for ((&(_, len), &w), &remaining) in self.payloads.iter().zip(&widths).zip(&remainings) {
            let max = remaining - w;
            assert!(len <= max);
            lengths.push(match w {
                1 => vec![len as u8],
                _ if max >= 256 => vec![(len >> 8) as u8, len as u8],
                _ => vec![len as u8, 0],
            });
        }
        let mut out = self.front;
        // The first length read is the last bytes of the input.
        for bytes in lengths.iter().rev() {
            out.extend_from_slice(bytes);
        }
        out
    }
}

/// Named scenarios for the `session_ops` seed corpus.
pub fn seed_scenarios() -> Vec<(&'static str, Knobs, Vec<Op>)> {
    use DecisionKind as D;
    use Op::*;
    let line = |text: &[u8]| -> Op {
        let i = LINES
            .iter()
            .position(|l| *l == text)
            .unwrap_or_else(|| panic!("{:?} is in LINES", String::from_utf8_lossy(text)));
        Line(i as u8)
    };
    let accept = || Decide(D::Accept);
    let ehlo = || vec![accept(), line(b"EHLO client.example\r\n"), accept()];
    let envelope = || {
        vec![
            line(b"MAIL FROM:<a@b.c>\r\n"),
            accept(),
            line(b"RCPT TO:<d@e.f>\r\n"),
            accept(),
        ]
    };
    let cat = |parts: Vec<Vec<Op>>| parts.concat();
    let bytes = |b: &[u8]| Bytes(b.to_vec());
    let defaults = Knobs::default;
    vec![
        (
            "transaction",
            defaults(),
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"DATA\r\n"),
                    accept(),
                    bytes(b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n"),
                    accept(),
                    line(b"QUIT\r\n"),
                ],
            ]),
        ),
        (
            "pipelined_disconnect_follow_with_421",
            defaults(),
            vec![
                accept(),
                bytes(b"EHLO c.example\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"),
                accept(),
                Decide(D::Disconnect(
                    DisconnectMode::FollowWith421,
                    ReplyCode::C451,
                )),
                DecideWrongId(0),
            ],
        ),
        (
            "disconnect_if421",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    line(b"MAIL FROM:<a@b.c>\r\n"),
                    Decide(D::Disconnect(DisconnectMode::If421, ReplyCode::C550)),
                    line(b"MAIL FROM:<a@b.c>\r\n"),
                    Decide(D::Disconnect(DisconnectMode::If421, ReplyCode::C421)),
                ],
            ]),
        ),
        (
            "bdat_chunks",
            defaults(),
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    bytes(b"BDAT 5\r\nhelloBDAT 6 LAST\r\n world"),
                    Decide(D::AcceptWith),
                    accept(),
                    line(b"BDAT 0 LAST\r\n"),
                    line(b"BDAT x\r\n"),
                ],
            ]),
        ),
        (
            "bdat_data_hook_reject",
            defaults(),
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"BDAT 5 LAST\r\n"),
                    Decide(D::Reject(ReplyCode::C554)),
                    line(b"hello"),
                    line(b"DATA\r\n"),
                    line(b"QUIT\r\n"),
                ],
            ]),
        ),
        (
            "starttls_injection",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    line(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n"),
                    line(b"MAIL FROM:<a@b.c>\r\n"),
                    TlsEstablished,
                    line(b"EHLO client.example\r\n"),
                    accept(),
                    line(b"STARTTLS\r\n"),
                ],
            ]),
        ),
        (
            "starttls_injection_close",
            Knobs {
                starttls_injection_close: true,
                ..defaults()
            },
            cat(vec![
                ehlo(),
                vec![line(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")],
            ]),
        ),
        (
            "starttls_failed",
            defaults(),
            cat(vec![ehlo(), vec![line(b"STARTTLS\r\n"), TlsFailed]]),
        ),
        (
            "auth_plain_login",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    line(b"AUTH PLAIN AGFsaWNlAHB3\r\n"),
                    Decide(D::Reject(ReplyCode::C550)),
                    line(b"AUTH PLAIN\r\n"),
                    line(b"AGFsaWNlAHB3\r\n"),
                    Decide(D::HookFailed),
                    line(b"AUTH LOGIN\r\n"),
                    line(b"YWxpY2U=\r\n"),
                    line(b"cHc=\r\n"),
                    accept(),
                    line(b"AUTH PLAIN =\r\n"),
                ],
            ]),
        ),
        (
            "auth_challenge_steps",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    line(b"AUTH CRAM-MD5\r\n"),
                    Decide(D::Challenge(b"<1896.697170952@mx.fuzz.example>".to_vec())),
                    bytes(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n"),
                    Decide(D::Challenge(Vec::new())),
                    line(b"*\r\n"),
                    line(b"AUTH XOAUTH2 dGVzdA==\r\n"),
                    Decide(D::AcceptWith),
                ],
            ]),
        ),
        (
            "smuggling_sequences",
            Knobs {
                bare_line_endings: 1,
                ..defaults()
            },
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"DATA\r\n"),
                    accept(),
                    line(b"\n.\n"),
                    line(b"\r.\r\n"),
                    line(b"\r\n.\r \r\n"),
                    line(b"\r\nMAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"),
                    line(b"\r\n.\n"),
                    line(b"\r\n\x00.\r\n"),
                    line(b"\r\n.\r\n"),
                    accept(),
                ],
            ]),
        ),
        (
            "timeouts",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    Advance(299),
                    line(b"NOOP\r\n"),
                    line(b"MAIL FROM:<a@b.c>\r\n"),
                    Advance(1000),
                    accept(),
                    Advance(301),
                ],
            ]),
        ),
        (
            "shutdown_mid_data",
            defaults(),
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"DATA\r\n"),
                    accept(),
                    Shutdown,
                    line(b"Subject: fuzz\r\n\r\nbody line\r\n"),
                    line(b".\r\n"),
                    Decide(D::HookFailed),
                ],
            ]),
        ),
        (
            "wrong_ids_and_errors",
            Knobs {
                hook_failure_disconnect: true,
                ..defaults()
            },
            vec![
                DecideWrongId(1),
                TlsEstablished,
                accept(),
                DecideWrongId(0),
                line(b"HELO client.example\r\n"),
                Decide(D::Reject(ReplyCode::C250)),
                Decide(D::Challenge(b"x".to_vec())),
                DecideWrongId(2),
                Decide(D::HookFailed),
                Op::IoError,
                Bytes(b"QUIT\r\n".to_vec()),
                Eof,
            ],
        ),
        (
            "proxy_v1",
            Knobs {
                proxy_protocol: true,
                ..defaults()
            },
            vec![
                line(b"PROXY TCP4 192.0.2.1 198.51.100.1 5678 25\r\n"),
                Decide(D::AcceptWith),
                line(b"HELO client.example\r\n"),
                accept(),
                line(b"QUIT\r\n"),
            ],
        ),
        (
            "proxy_v2",
            Knobs {
                proxy_protocol: true,
                ..defaults()
            },
            vec![Bytes(PROXY_V2.to_vec()), accept(), line(b"QUIT\r\n")],
        ),
        (
            "proxy_v2_larger_than_the_buffer",
            Knobs {
                proxy_protocol: true,
                ..defaults()
            },
            vec![
                Bytes(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x10\x00".to_vec()),
                Bytes(vec![0; 3000]),
            ],
        ),
        (
            "implicit_tls_require_auth",
            Knobs {
                implicit_tls: true,
                require_auth: true,
                unsubscribe: 0b0111_0000,
                ..defaults()
            },
            vec![
                line(b"EHLO client.example\r\n"),
                TlsEstablished,
                accept(),
                line(b"EHLO client.example\r\n"),
                accept(),
                line(b"MAIL FROM:<a@b.c>\r\n"),
                line(b"AUTH PLAIN AGFsaWNlAHB3\r\n"),
                accept(),
                line(b"MAIL FROM:<a@b.c>\r\n"),
                accept(),
            ],
        ),
        (
            "backpressure",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    line(b"MAIL FROM:<a@b.c>\r\n"),
                    Bytes(b"NOOP\r\n".repeat(400)),
                    Eof,
                    accept(),
                ],
            ]),
        ),
        (
            "early_talker",
            Knobs {
                greeting_delay: true,
                reject_early_talkers: true,
                ..defaults()
            },
            vec![
                Advance(1),
                line(b"EHLO client.example\r\n"),
                Advance(2),
                accept(),
            ],
        ),
        (
            "greeting_delay_patient_client",
            Knobs {
                greeting_delay: true,
                reject_early_talkers: true,
                ..defaults()
            },
            vec![
                Advance(3),
                accept(),
                line(b"EHLO client.example\r\n"),
                accept(),
                line(b"QUIT\r\n"),
            ],
        ),
        (
            "unauth_pipelining",
            Knobs {
                reject_unauth_pipelining: true,
                ..defaults()
            },
            vec![
                accept(),
                bytes(b"EHLO client.example\r\nMAIL FROM:<a@b.c>\r\n"),
                accept(),
            ],
        ),
        (
            "extensions_changed",
            defaults(),
            vec![
                accept(),
                line(b"EHLO client.example\r\n"),
                SetExtensions(0),
                accept(),
                line(b"MAIL FROM:<a@b.c> BODY=BINARYMIME\r\n"),
                line(b"XCLIENT ADDR=192.0.2.1 NAME=spike.example HELO=x.example\r\n"),
                line(b"VRFY alice\r\n"),
                line(b"EXPN staff\r\n"),
                line(b"HELP\r\n"),
                line(b"FOO bar\r\n"),
                line(b"\x00\xff\r\n"),
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_bytes(rng: &mut Rng, alphabet: &[u8], max_len: u64) -> Vec<u8> {
        let len = rng.below(max_len + 1) as usize;
        (0..len)
            .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
            .collect()
    }

    fn any_bytes(rng: &mut Rng, max_len: u64) -> Vec<u8> {
        let len = rng.below(max_len + 1) as usize;
        (0..len).map(|_| rng.next() as u8).collect()
    }

    #[test]
    fn command_parser_over_generated_lines() {
        let mut rng = Rng::new(1);
        let tails: &[&str] = &[
            "",
            " ",
            " client.example",
            " FROM:<a@b.c>",
            " from: <> SIZE=10 BODY=8BITMIME",
            " TO:<\"q u\"@[IPv6:::1]> NOTIFY=NEVER",
            " TO:<@a,@b:c@d>",
            " 12 LAST",
            " 99999999999999999999999",
            " PLAIN AGFsaWNlAHB3",
            " PLAIN =",
            " ADDR=1.2.3.4",
            "\t",
            "\r",
        ];
        for i in 0..600 {
            let mut line = Vec::new();
            let verb = VERBS[rng.below(VERBS.len() as u64) as usize];
            line.extend(verb.bytes().map(|b| {
                if rng.one_in(2) {
                    b.to_ascii_lowercase()
                } else {
                    b
                }
            }));
            line.extend_from_slice(tails[rng.below(tails.len() as u64) as usize].as_bytes());
            if i % 3 == 0 {
                line.extend(random_bytes(
                    &mut rng,
                    b"a<>@:. =\r\n\t\x00\xc3\xa9\xff",
                    12,
                ));
            }
            command_parser(&line);
            command_parser(&any_bytes(&mut rng, 40));
        }
    }

    #[test]
    fn data_receiver_over_generated_streams() {
        let mut rng = Rng::new(2);
        for _ in 0..400 {
            let mut data = vec![rng.next() as u8];
            data.extend(random_bytes(&mut rng, b"aa\r\r\n\n..\0", 60));
            data_receiver(&data);
        }
        data_receiver(b"\x07Hello\r\n..x\r\n.\r\nQUIT\r\n");
        data_receiver(b"\x00.\r\n");
        data_receiver(b"");
    }

    fn generated_script(rng: &mut Rng) -> Vec<u8> {
        let mut script = Vec::new();
        for _ in 0..rng.below(30) {
            match rng.below(8) {
                0 => script.extend(any_bytes(rng, 20)),
                1 => script.extend(random_bytes(rng, b"a\r\n.", 20)),
                _ => script.extend_from_slice(LINES[rng.below(LINES.len() as u64) as usize]),
            }
        }
        script
    }

    #[test]
    fn session_bytes_over_generated_scripts() {
        let mut rng = Rng::new(3);
        for _ in 0..300 {
            session_bytes(&generated_script(&mut rng));
        }
        session_bytes(b"");
        session_bytes(
            b"EHLO a\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
        );
    }

    #[test]
    fn session_ops_over_generated_inputs() {
        let mut rng = Rng::new(4);
        for _ in 0..300 {
            let raw = any_bytes(&mut rng, 400);
            if let Ok((knobs, ops)) =
                <(Knobs, Vec<Op>)>::arbitrary_take_rest(Unstructured::new(&raw))
            {
                session_ops_with(knobs, ops);
            }
        }
        // Structured: mostly lines and decisions.
        for _ in 0..300 {
            let ops = (0..rng.below(40))
                .map(|_| match rng.below(12) {
                    0..=4 => Op::Line(rng.next() as u8),
                    5..=7 => Op::Decide(auto_decision(&mut rng, HookKind::AuthStep)),
                    8 => Op::Bytes(generated_script(&mut rng)),
                    9 => Op::Advance(rng.below(400) as u16),
                    10 => Op::TlsEstablished,
                    _ => Op::DecideWrongId(rng.next() as u8),
                })
                .collect();
            session_ops(ops);
        }
    }

    #[test]
    fn seed_scenarios_run_and_round_trip() {
        for (name, knobs, ops) in seed_scenarios() {
            let bytes = encode_ops(&knobs, &ops);
            let decoded = <(Knobs, Vec<Op>)>::arbitrary_take_rest(Unstructured::new(&bytes))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(decoded, (knobs.clone(), ops.clone()), "{name}");
            session_ops_with(knobs, ops);
        }
    }

    #[test]
    fn encoding_round_trips() {
        let mut rng = Rng::new(5);
        for _ in 0..500 {
            let ops: Vec<Op> = (0..rng.below(20))
                .map(|_| match rng.below(12) {
                    0 => {
                        let max = if rng.one_in(8) { 3000 } else { 40 };
                        Op::Bytes(any_bytes(&mut rng, max))
                    }
                    1 => Op::Line(rng.next() as u8),
                    2 => Op::Eof,
                    3 => Op::IoError,
                    4 => Op::Advance(rng.next() as u16),
                    5 => Op::TlsEstablished,
                    6 => Op::TlsFailed,
                    7 => Op::DecideWrongId(rng.next() as u8),
                    8 => Op::Shutdown,
                    9 => Op::SetExtensions(rng.next() as u16),
                    10 => Op::Decide(DecisionKind::Challenge(any_bytes(&mut rng, 300))),
                    _ => Op::Decide(match rng.below(6) {
                        0 => DecisionKind::Accept,
                        1 => DecisionKind::AcceptWith,
                        2 => DecisionKind::Reject(ReplyCode::C250),
                        3 => DecisionKind::Disconnect(DisconnectMode::If421, ReplyCode::C554),
                        4 => DecisionKind::HookFailed,
                        _ => DecisionKind::RejectInjection,
                    }),
                })
                .collect();
            let knobs = Knobs {
                bare_line_endings: rng.next() as u8,
                unsubscribe: rng.next() as u8,
                hook_failure_disconnect: rng.one_in(2),
                implicit_tls: rng.one_in(2),
                ..Knobs::default()
            };
            let bytes = encode_ops(&knobs, &ops);
            let decoded =
                <(Knobs, Vec<Op>)>::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
            assert_eq!(decoded, (knobs, ops));
        }
    }

    #[test]
    fn fuzz_config_is_in_range() {
        for unsubscribe in [0, 0x7f] {
            let knobs = Knobs {
                unsubscribe,
                ..Knobs::default()
            };
            assert_eq!(fuzz_config(&knobs).validate(), Ok(()));
        }
    }

    fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut files: Vec<_> = entries
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(path).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    /// Every committed seed (and any crash input saved into the corpus) passes.
    #[test]
    fn committed_corpora_pass() {
        for (_, data) in corpus("command_parser") {
            command_parser(&data);
        }
        for (_, data) in corpus("data_receiver") {
            data_receiver(&data);
        }
        for (_, data) in corpus("session_bytes") {
            session_bytes(&data);
        }
        for (_, data) in corpus("session_ops") {
            if let Ok((knobs, ops)) =
                <(Knobs, Vec<Op>)>::arbitrary_take_rest(Unstructured::new(&data))
            {
                session_ops_with(knobs, ops);
            }
        }
    }

    /// The committed `session_ops` seeds are what the scenarios encode to today.
    #[test]
    fn session_ops_seeds_are_current() {
        let files = corpus("session_ops");
        for (name, knobs, ops) in seed_scenarios() {
            if let Some((_, data)) = files.iter().find(|(n, _)| n == name) {
                assert!(
                    *data == encode_ops(&knobs, &ops),
                    "fuzz/corpus/session_ops/{name} is stale: rerun write_corpus"
                );
            }
        }
    }

    /// Writes the seed corpora: `SMTP_SESSION_WRITE_CORPUS=fuzz/corpus cargo test
    /// --features arbitrary write_corpus -- --ignored`.
    #[test]
    #[ignore]
    fn write_corpus() {
        let Some(dir) = std::env::var_os("SMTP_SESSION_WRITE_CORPUS") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir).join("session_ops");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, knobs, ops) in seed_scenarios() {
            std::fs::write(dir.join(name), encode_ops(&knobs, &ops)).unwrap();
        }
    }
}
