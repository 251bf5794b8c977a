//! Invariants over generated client scripts (proptest): the transcript does not depend on how
//! the input is split; arbitrary bytes never panic and only produce well-formed replies; one
//! reply per command, in order; exactly one Close and one disconnect hook call at the very
//! end; disconnect decisions of every mode at any hook.

mod common;
use common::*;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use smtp_session::{
    BareLineEndings, CloseSide, Config, Decision, DisconnectMode, Extensions, Hook, Hooks, IoError,
    IoErrorKind, Message, Output, Reply, Session, TlsInfo,
};
use smtp_session_testkit::drive::{self, Runtime, Then};

// ---------------------------------------------------------------------------------------
// Script material

/// The lines of a normal conversation, drawn more often so scripts get deep into
/// transactions.
const CORE_LINES: &[&[u8]] = &[
    b"EHLO client.example\r\n",
    b"MAIL FROM:<a@example.org>\r\n",
    b"RCPT TO:<b@example.net>\r\n",
    b"RCPT TO:<c@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@example.net\r\n",
    b"DATA\r\nSubject: x\r\n\r\nbody\r\n..dot\r\n.\r\n",
    b"BDAT 5\r\nhello",
    b"BDAT 7 LAST\r\nworld\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nHi\r\n.\r\n",
    b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT 2 LAST\r\nHi",
];

/// Everything else a client may send: every command and extension, the hook decisions of
/// `scripted_policy`, and the usual mistakes.
const OTHER_LINES: &[&[u8]] = &[
    b"HELO client.example\r\n",
    b"EHLO reject.example\r\n",
    b"HELO\r\n",
    b"MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME\r\n",
    b"MAIL FROM:<> RET=HDRS ENVID=x+2By\r\n",
    b"MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n",
    b"MAIL FROM:<\xc3\xa9@example.org> SMTPUTF8\r\n",
    b"MAIL FROM:<a@example.org> SIZE=999999999999\r\n",
    b"MAIL FROM:<a@example.org> FOO=BAR\r\n",
    b"MAIL FROM:<bad\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"RCPT TO:<reject@example.net>\r\n",
    b"RCPT TO:<tempfail@example.net>\r\n",
    b"RCPT TO:<force@example.net>\r\n",
    b"RCPT TO:<follow@example.net>\r\n",
    b"RCPT TO:<if421@example.net>\r\n",
    b"RCPT TO:<bye421@example.net>\r\n",
    b"RCPT TO:<failed@example.net>\r\n",
    b"RCPT TO:<>\r\n",
    b"DATA\r\nplease reject this\r\n.\r\n",
    b"DATA\r\nline\nbare LF\r\n.\r\n",
    b"DATA\r\nx\n.\nMAIL FROM:<evil@example.com>\r\n.\r\n",
    b"DATA\r\n",
    b".\r\n",
    b"DATA extra\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 3 MORE\r\n",
    b"RSET now\r\n",
    b"NOOP hello\r\n",
    b"VRFY user\r\n",
    b"EXPN list\r\n",
    b"HELP\r\n",
    b"BOGUS command\r\n",
    b"\r\n",
    b"NOOP\n",
    b"NO\rOP\r\n",
    b"NO\0OP\r\n",
    b"NOOP \xff\xfe\r\n",
    b"HELO \xc3\x28\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n",
    b"AUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\n",
    b"AUTH PLAIN\r\n*\r\n",
    b"AUTH CRAM-MD5\r\n",
    b"XCLIENT ADDR=192.0.2.1\r\n",
    b"QUIT\r\n",
];

/// Lines too long for the limit: a command and a MAIL with a huge parameter.
fn overlong_lines() -> Vec<Vec<u8>> {
    let mut long = vec![b'x'; 2000];
    long.extend_from_slice(b"\r\n");
    let mut long_mail = b"MAIL FROM:<a@example.org> ".to_vec();
    long_mail.extend(std::iter::repeat(b'K').take(1500));
    long_mail.extend_from_slice(b"=1\r\n");
    vec![long, long_mail]
}

/// Every line of the tables.
fn useful_lines() -> Vec<Vec<u8>> {
    CORE_LINES
        .iter()
        .chain(OTHER_LINES)
        .map(|l| l.to_vec())
        .chain(overlong_lines())
        .collect()
}

/// A pipelined client script: usually a greeting first, then core lines more often than
/// the rest.
fn script() -> impl Strategy<Value = Vec<u8>> {
    let core = CORE_LINES.iter().map(|l| l.to_vec()).collect::<Vec<_>>();
    let line = prop_oneof![
        3 => prop::sample::select(core),
        2 => prop::sample::select(useful_lines()),
    ];
    (
        prop::bool::weighted(0.85),
        prop::collection::vec(line, 0..40),
    )
        .prop_map(|(ehlo, lines)| {
            let mut out = if ehlo {
                CORE_LINES[0].to_vec()
            } else {
                Vec::new()
            };
            out.extend(lines.concat());
            out
        })
}

/// Every extension on, AUTH allowed in plain text, every hook subscribed.
fn full_config() -> Config {
    Config {
        extensions: Extensions {
            starttls: true,
            auth: true,
            ..Extensions::default()
        },
        auth_without_tls: true,
        auth_mechanisms: vec!["PLAIN".into(), "LOGIN".into(), "CRAM-MD5".into()],
        hooks: Hooks::ALL,
        xclient_trusted: vec!["192.0.2.10".parse().unwrap()],
        ..config()
    }
}

/// Decides by the hook's content only, so the same script always gets the same decisions.
fn scripted_policy(hook: &Hook) -> Decision {
    let reject = |code, text| Decision::reject(code, text).unwrap();
    let disconnect = |code, text, mode| Decision::disconnect(code, text, mode).unwrap();
    match hook {
        Hook::Helo { host, .. } if host.starts_with("reject") => reject(550, "5.7.1 go away"),
        Hook::MailFrom { path, .. } if path.to_string().is_empty() => {
            Decision::AcceptWith(Reply::new(250, "2.1.0 bounce ok").unwrap())
        }
        Hook::RcptTo { path, .. } => {
            let path = path.to_string();
            let local = path.split('@').next().unwrap_or_default();
            match local {
                "reject" => reject(550, "5.1.1 no such user"),
                "tempfail" => reject(451, "4.3.0 try later"),
                "force" => disconnect(451, "no thank you", DisconnectMode::ForceDisconnect),
                "follow" => disconnect(550, "5.7.1 bad", DisconnectMode::FollowWith421),
                "if421" => disconnect(550, "5.7.1 not you", DisconnectMode::If421),
                "bye421" => disconnect(421, "4.7.0 bye", DisconnectMode::If421),
                "failed" => Decision::HookFailed,
                _ => Decision::Accept,
            }
        }
        Hook::Message(m) if m.body.windows(6).any(|w| w == b"reject") => {
            reject(554, "5.7.1 content refused")
        }
        _ => Decision::Accept,
    }
}

/// `common::run_split` with a policy other than accept-everything.
fn run_split_policy(
    config: Config,
    policy: fn(&Hook) -> Decision,
    input: &[u8],
    chunks: &[usize],
) -> String {
    run_split_recycling(config, policy, input, chunks, false).0
}

/// [`run_split_policy`], with every hook call not kept handed back when `recycle` is set;
/// also returns the accepted messages.
fn run_split_recycling(
    config: Config,
    policy: fn(&Hook) -> Decision,
    input: &[u8],
    chunks: &[usize],
    recycle: bool,
) -> (String, Vec<Message>) {
    let mut h = Harness::with_policy(config, Policy::Auto(Box::new(policy)));
    h.recycle_hooks = recycle;
    let mut pos = 0;
    let mut i = 0;
    while pos < input.len() && !h.session.is_closed() {
        let size = chunks[i % chunks.len()].max(1);
        let end = (pos + size).min(input.len());
        h.feed(&input[pos..end]);
        pos = end;
        i += 1;
    }
    if !h.session.is_closed() {
        h.eof();
    }
    (h.transcript, h.messages)
}

// ---------------------------------------------------------------------------------------
// A raw driver that records every output, for the properties the harness would hide.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Write(Vec<u8>),
    Close,
    Hook,
    Disconnect,
    StartTls,
}

struct Driver {
    session: Session,
    now: Instant,
    backlog: Vec<u8>,
    events: Vec<Event>,
    policy: fn(&Hook) -> Decision,
    /// Who closed, from the disconnect context.
    close_side: Option<CloseSide>,
    /// Some input was offered and not all of it taken.
    refused: bool,
}

impl Driver {
    fn new(config: Config) -> Driver {
        Driver::with_policy(config, |_| Decision::Accept)
    }

    fn with_policy(config: Config, policy: fn(&Hook) -> Decision) -> Driver {
        let now = start();
        let mut d = Driver {
            session: Session::new(config, info(), now),
            now,
            backlog: Vec::new(),
            events: Vec::new(),
            policy,
            close_side: None,
            refused: false,
        };
        d.drain();
        d
    }

    /// Drains the outputs; hooks are answered by the policy and every handshake succeeds.
    /// Held input is resumed when `poll_timeout` says it is due already, as a runtime does.
    fn drain(&mut self) {
        drive::drain(self);
    }

    /// Feeds `bytes` in the given chunk sizes (cycled) until taken or the session closes.
    fn feed(&mut self, bytes: &[u8], chunks: &[usize]) {
        let mut pos = 0;
        for i in 0..bytes.len() + 1 {
            if pos >= bytes.len() || self.session.is_closed() {
                return;
            }
            let size = chunks.get(i % chunks.len().max(1)).copied().unwrap_or(1);
            let end = (pos + size.max(1)).min(bytes.len());
            drive::feed(self, &bytes[pos..end]);
            assert!(
                !self.refused || self.session.is_closed(),
                "with every hook answered at once all input is taken ({} of {} left)",
                self.backlog.len(),
                end - pos
            );
            pos = end;
        }
    }

    fn written(&self) -> Vec<u8> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Write(b) => Some(b.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }
}

impl Runtime for Driver {
    fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn backlog(&mut self) -> &mut Vec<u8> {
        &mut self.backlog
    }

    fn took(&mut self, offered: usize, taken: usize) {
        self.refused |= taken < offered;
    }

    fn output(&mut self, output: Output) -> Then {
        match output {
            Output::Write(bytes) => self.events.push(Event::Write(bytes)),
            Output::Close => self.events.push(Event::Close),
            Output::StartTls => {
                self.events.push(Event::StartTls);
                return Then::Handshake(TlsInfo {
                    protocol: "TLSv1.3".into(),
                    cipher: "TLS13_AES_128_GCM_SHA256".into(),
                    key_size: Some(128),
                    sni: None,
                    peer_certificate: None,
                });
            }
            Output::HookCall(call) => match (call.needs_decision(), call.hook) {
                (needs_decision, Hook::Disconnect(context)) => {
                    assert!(!needs_decision);
                    self.close_side = Some(context.arguments.close);
                    self.events.push(Event::Disconnect);
                }
                (_, hook) => {
                    self.events.push(Event::Hook);
                    return Then::Decide(call.id, (self.policy)(&hook));
                }
            },
            other => panic!("unexpected output {other:?}"),
        }
        Then::Next
    }
}

/// Checks that `bytes` is a sequence of complete, well-formed replies and returns their codes.
fn check_replies(bytes: &[u8]) -> Result<Vec<u16>, String> {
    let mut codes = Vec::new();
    let mut open: Option<u16> = None;
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Err(format!("reply without CRLF: {:?}", escape(rest)));
        };
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(format!("bare CR or LF in a reply line: {:?}", escape(line)));
        }
        if line.len() < 4 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(format!("malformed reply line: {:?}", escape(line)));
        }
        let code: u16 = std::str::from_utf8(&line[..3]).unwrap().parse().unwrap();
        if !(200..=599).contains(&code) {
            return Err(format!("reply code out of range: {:?}", escape(line)));
        }
        if let Some(first) = open {
            if first != code {
                return Err(format!("code changed inside a reply: {:?}", escape(line)));
            }
        }
        match line[3] {
            b'-' => open = Some(code),
            b' ' => {
                open = None;
                codes.push(code);
            }
            _ => return Err(format!("no separator after the code: {:?}", escape(line))),
        }
    }
    if open.is_some() {
        return Err("a multi-line reply was not finished within its write".into());
    }
    Ok(codes)
}

/// The codes of the final lines of every reply in a harness transcript.
fn final_codes(transcript: &str) -> Vec<u16> {
    transcript
        .lines()
        .filter_map(|l| l.strip_prefix("S: "))
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| l[..3].parse().unwrap())
        .collect()
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..80, 1..8)
}

// ---------------------------------------------------------------------------------------
// (a) Split invariance

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_transcript_does_not_depend_on_how_input_is_split(
        input in script(),
        chunks in chunk_sizes(),
    ) {
        let whole = run_split(full_config(), &input, &[input.len().max(1)]);
        let bytewise = run_split(full_config(), &input, &[1]);
        prop_assert_eq!(&whole, &bytewise, "byte by byte, input {:?}", escape(&input));
        let chunked = run_split(full_config(), &input, &chunks);
        prop_assert_eq!(&whole, &chunked, "chunks {:?}, input {:?}", chunks, escape(&input));
    }

    #[test]
    fn decisions_of_every_kind_do_not_change_split_invariance(
        input in script(),
        chunks in chunk_sizes(),
    ) {
        let whole = run_split_policy(full_config(), scripted_policy, &input, &[input.len().max(1)]);
        let bytewise = run_split_policy(full_config(), scripted_policy, &input, &[1]);
        prop_assert_eq!(&whole, &bytewise, "byte by byte, input {:?}", escape(&input));
        let chunked = run_split_policy(full_config(), scripted_policy, &input, &chunks);
        prop_assert_eq!(&whole, &chunked, "chunks {:?}, input {:?}", chunks, escape(&input));
    }

    #[test]
    fn hook_calls_handed_back_change_no_transcript_and_no_message(
        input in script(),
        chunks in chunk_sizes(),
    ) {
        let plain = run_split_recycling(full_config(), scripted_policy, &input, &chunks, false);
        let recycled = run_split_recycling(full_config(), scripted_policy, &input, &chunks, true);
        prop_assert_eq!(&plain.0, &recycled.0, "chunks {:?}, input {:?}", chunks, escape(&input));
        prop_assert_eq!(&plain.1, &recycled.1, "chunks {:?}, input {:?}", chunks, escape(&input));
    }

    #[test]
    fn split_invariance_holds_without_hooks_and_with_every_bare_line_policy(
        input in script(),
        chunks in chunk_sizes(),
        policy in 0usize..3,
    ) {
        let bare = [BareLineEndings::Reject, BareLineEndings::Normalize, BareLineEndings::Allow];
        let config = || Config {
            hooks: Hooks::NONE,
            bare_line_endings: bare[policy],
            ..full_config()
        };
        let whole = run_split(config(), &input, &[input.len().max(1)]);
        prop_assert_eq!(&whole, &run_split(config(), &input, &[1]));
        prop_assert_eq!(&whole, &run_split(config(), &input, &chunks));
    }
}

// ---------------------------------------------------------------------------------------
// (b) Arbitrary bytes

/// Bytes that look enough like SMTP to get past the greeting: table lines, random bytes,
/// and SMTP-significant fragments.
fn smtpish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let table = useful_lines();
    let piece = prop_oneof![
        4 => (0..table.len()).prop_map(move |i| table[i].clone()),
        2 => prop::collection::vec(any::<u8>(), 0..40),
        2 => prop::sample::select(vec![
            b"\r\n".to_vec(), b"\n".to_vec(), b"\r".to_vec(), b".".to_vec(), b"\r\n.\r\n".to_vec(),
            b"\0".to_vec(), b"<".to_vec(), b">".to_vec(), b":".to_vec(), b"=".to_vec(),
            b"BDAT ".to_vec(), b"MAIL FROM:".to_vec(), b"RCPT TO:".to_vec(), b"AUTH ".to_vec(),
            b"18446744073709551615".to_vec(), b"\xff".to_vec(), b"\xc3\xa9".to_vec(),
        ]),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

fn arbitrary_config(variant: u8) -> Config {
    let mut c = full_config();
    match variant % 5 {
        0 => {}
        1 => c.hooks = Hooks::NONE,
        2 => {
            c.extensions = Extensions {
                enhanced_status_codes: false,
                pipelining: false,
                ..c.extensions
            };
            c.bare_line_endings = BareLineEndings::Normalize;
        }
        3 => {
            c.proxy_protocol = true;
            c.max_line_length = 512;
            c.extensions.dsn = false;
        }
        _ => {
            c.require_auth = true;
            c.require_tls = true;
            c.hard_error_limit = 3;
            c.max_message_size = 10;
        }
    }
    c
}

fn check_arbitrary(input: &[u8], chunks: &[usize], variant: u8) -> Result<(), TestCaseError> {
    let mut d = Driver::new(arbitrary_config(variant));
    d.feed(input, chunks);
    if !d.session.is_closed() {
        d.session.handle_eof(d.now).unwrap();
        d.drain();
    }
    for event in &d.events {
        if let Event::Write(bytes) = event {
            prop_assert!(!bytes.is_empty(), "empty write");
            if let Err(problem) = check_replies(bytes) {
                return Err(TestCaseError::fail(format!(
                    "{problem}\ninput {:?}",
                    escape(input)
                )));
            }
        }
    }
    prop_assert_eq!(d.events.iter().filter(|e| **e == Event::Close).count(), 1);
    prop_assert_eq!(d.events.last(), Some(&Event::Disconnect));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic_and_only_produce_well_formed_replies(
        input in prop::collection::vec(any::<u8>(), 0..3000),
        chunks in chunk_sizes(),
        variant in any::<u8>(),
    ) {
        check_arbitrary(&input, &chunks, variant)?;
    }

    #[test]
    fn smtp_like_bytes_never_panic_and_only_produce_well_formed_replies(
        input in smtpish_bytes(),
        chunks in chunk_sizes(),
        variant in any::<u8>(),
    ) {
        check_arbitrary(&input, &chunks, variant)?;
    }
}

// ---------------------------------------------------------------------------------------
// (c) One reply per command, in order

/// Commands that each get exactly one reply, never a hook round trip that changes that.
#[derive(Clone, Copy, Debug)]
enum Simple {
    Noop,
    NoopArg,
    Rset,
    RsetArg,
    Helo,
    Ehlo,
    Mail,
    MailBad,
    MailUnknownParam,
    Rcpt,
    RcptBad,
    Vrfy,
    Expn,
    Help,
    Bogus,
    Empty,
    Long,
}

impl Simple {
    const ALL: [Simple; 17] = [
        Simple::Noop,
        Simple::NoopArg,
        Simple::Rset,
        Simple::RsetArg,
        Simple::Helo,
        Simple::Ehlo,
        Simple::Mail,
        Simple::MailBad,
        Simple::MailUnknownParam,
        Simple::Rcpt,
        Simple::RcptBad,
        Simple::Vrfy,
        Simple::Expn,
        Simple::Help,
        Simple::Bogus,
        Simple::Empty,
        Simple::Long,
    ];

    fn line(self) -> Vec<u8> {
        match self {
            Simple::Noop => b"NOOP\r\n".to_vec(),
            Simple::NoopArg => b"noop some text\r\n".to_vec(),
            Simple::Rset => b"RSET\r\n".to_vec(),
            Simple::RsetArg => b"RSET x\r\n".to_vec(),
            Simple::Helo => b"HELO client.example\r\n".to_vec(),
            Simple::Ehlo => b"EHLO client.example\r\n".to_vec(),
            Simple::Mail => b"MAIL FROM:<a@example.org>\r\n".to_vec(),
            Simple::MailBad => b"MAIL FROM:<a@>\r\n".to_vec(),
            Simple::MailUnknownParam => b"MAIL FROM:<a@example.org> FOO=BAR\r\n".to_vec(),
            Simple::Rcpt => b"RCPT TO:<b@example.net>\r\n".to_vec(),
            Simple::RcptBad => b"RCPT TO:<b@@example.net>\r\n".to_vec(),
            Simple::Vrfy => b"VRFY user\r\n".to_vec(),
            Simple::Expn => b"EXPN list\r\n".to_vec(),
            Simple::Help => b"HELP\r\n".to_vec(),
            Simple::Bogus => b"FROB nicate\r\n".to_vec(),
            Simple::Empty => b"\r\n".to_vec(),
            Simple::Long => {
                let mut l = vec![b'a'; 3000];
                l.extend_from_slice(b"\r\n");
                l
            }
        }
    }
}

/// The reply codes a session owes for `script`, with the error limit.
fn model(script: &[Simple], error_limit: u32, max_recipients: usize) -> Vec<u16> {
    let (mut helo, mut mail, mut rcpts, mut errors) = (false, false, 0usize, 0u32);
    // Refusals past the recipient limit count as errors only past the overshoot limit.
    let (mut overshoot, overshoot_limit) = (0usize, Config::default().recipient_overshoot_limit);
    let mut codes = vec![220];
    for command in script {
        let code = match command {
            Simple::Noop | Simple::NoopArg => 250,
            Simple::Rset => {
                mail = false;
                250
            }
            Simple::RsetArg => 501,
            Simple::Helo | Simple::Ehlo => {
                helo = true;
                mail = false;
                250
            }
            Simple::Mail | Simple::MailUnknownParam if !helo || mail => 503,
            Simple::Mail => {
                mail = true;
                rcpts = 0;
                250
            }
            Simple::MailUnknownParam => 555,
            Simple::MailBad | Simple::RcptBad => 501,
            Simple::Rcpt if !mail => 503,
            Simple::Rcpt if rcpts >= max_recipients => 452,
            Simple::Rcpt => {
                rcpts += 1;
                250
            }
            Simple::Vrfy => 252,
            Simple::Expn => 502,
            Simple::Help => 214,
            Simple::Bogus | Simple::Empty | Simple::Long => 500,
        };
        codes.push(code);
        if code == 452 {
            overshoot += 1;
        }
        if code >= 400 && !(code == 452 && overshoot <= overshoot_limit) {
            errors += 1;
            if errors >= error_limit {
                codes.push(421);
                break;
            }
        }
    }
    codes
}

fn simple_script() -> impl Strategy<Value = Vec<Simple>> {
    let any = prop::sample::select(Simple::ALL.to_vec());
    prop_oneof![
        prop::collection::vec(any.clone(), 0..60),
        // Mostly recipients, to go past the limit.
        prop::collection::vec(
            prop_oneof![
                1 => any,
                12 => Just(Simple::Rcpt),
            ],
            90..140
        )
        .prop_map(|mut s| {
            s.insert(0, Simple::Mail);
            s.insert(0, Simple::Ehlo);
            s
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_command_gets_one_reply_in_order(
        script in simple_script(),
        chunks in chunk_sizes(),
        error_limit in prop_oneof![1u32..40, Just(1000)],
        max_recipients in prop_oneof![Just(100usize), 100usize..115],
        all_hooks in any::<bool>(),
    ) {
        let config = Config {
            hard_error_limit: error_limit,
            max_recipients,
            hooks: if all_hooks { Hooks::ALL } else { Hooks::NONE },
            ..config()
        };
        let input: Vec<u8> = script.iter().flat_map(|c| c.line()).collect();
        let transcript = run_split(config, &input, &chunks);
        let codes = final_codes(&transcript);
        let expected = model(&script, error_limit, max_recipients);
        prop_assert_eq!(&codes, &expected, "script {:?}\n{}", script, transcript);
        if !expected.contains(&421) {
            prop_assert_eq!(codes.len(), script.len() + 1, "one reply per command plus the greeting");
        }
    }
}

// ---------------------------------------------------------------------------------------
// (d) Exactly one Close and one disconnect hook call, at the very end

#[derive(Clone, Copy, Debug)]
enum Ending {
    Eof,
    IoError,
    Timeout,
    Quit,
    Shutdown,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn exactly_one_close_then_one_disconnect_hook_and_nothing_after(
        input in script(),
        chunks in chunk_sizes(),
        ending in prop::sample::select(vec![
            Ending::Eof, Ending::IoError, Ending::Timeout, Ending::Quit, Ending::Shutdown,
        ]),
        idle_steps in prop::collection::vec(0u64..400, 0..3),
        error_limit in prop_oneof![Just(20u32), 1u32..5],
        scripted in any::<bool>(),
    ) {
        let config = Config { hard_error_limit: error_limit, ..full_config() };
        let mut d = if scripted {
            Driver::with_policy(config, scripted_policy)
        } else {
            Driver::new(config)
        };
        d.feed(&input, &chunks);
        // Time passing without reaching a deadline changes nothing.
        for step in idle_steps {
            if d.session.is_closed() {
                break;
            }
            let deadline = d.session.poll_timeout().expect("an open session has a deadline");
            let at = (d.now + Duration::from_secs(step)).min(deadline - Duration::from_millis(1));
            let before = d.events.len();
            d.session.handle_timeout(at).unwrap();
            d.drain();
            prop_assert_eq!(d.events.len(), before, "an early timeout did something");
        }
        let open_before_ending = !d.session.is_closed();
        if open_before_ending {
            match ending {
                Ending::Eof => d.session.handle_eof(d.now).unwrap(),
                Ending::IoError => {
                    let err = IoError::new(IoErrorKind::Socket, "reset", Some(104));
                    d.session.handle_io_error(err, d.now).unwrap();
                }
                Ending::Timeout => {
                    let deadline = d.session.poll_timeout().expect("a deadline");
                    d.now = deadline;
                    d.session.handle_timeout(deadline).unwrap();
                }
                Ending::Quit => {
                    // QUIT ends the session when it is read as a command; inside DATA or a
                    // BDAT chunk it is content, so finish those first.
                    d.feed(b"\r\n.\r\nQUIT\r\n", &[64]);
                    if !d.session.is_closed() {
                        d.session.handle_eof(d.now).unwrap();
                    }
                }
                Ending::Shutdown => {
                    d.session.handle_shutdown(d.now).unwrap();
                    if !d.session.is_closed() {
                        d.session.handle_eof(d.now).unwrap();
                    }
                }
            }
            d.drain();
        }
        prop_assert!(d.session.is_closed());
        let closes: Vec<usize> = d.events.iter().enumerate()
            .filter(|(_, e)| **e == Event::Close).map(|(i, _)| i).collect();
        let disconnects: Vec<usize> = d.events.iter().enumerate()
            .filter(|(_, e)| **e == Event::Disconnect).map(|(i, _)| i).collect();
        prop_assert_eq!(closes.len(), 1, "events {:?}", d.events);
        prop_assert_eq!(disconnects.len(), 1, "events {:?}", d.events);
        prop_assert_eq!(closes[0] + 1, disconnects[0], "Close comes right before the hook");
        prop_assert_eq!(disconnects[0], d.events.len() - 1, "nothing after the disconnect hook");
        // And nothing can be provoked afterwards.
        let now = d.now + Duration::from_secs(3600);
        prop_assert_eq!(d.session.handle_input(b"NOOP\r\n", now), Err(smtp_session::Error::Closed));
        prop_assert_eq!(d.session.handle_eof(now), Err(smtp_session::Error::Closed));
        prop_assert_eq!(d.session.handle_timeout(now), Err(smtp_session::Error::Closed));
        prop_assert_eq!(d.session.handle_shutdown(now), Err(smtp_session::Error::Closed));
        prop_assert!(d.session.poll_output().is_none());
        prop_assert_eq!(d.session.poll_timeout(), None);
        if matches!(ending, Ending::Quit) && open_before_ending && d.close_side == Some(CloseSide::Local) {
            // The session read the QUIT (not swallowed as BDAT content, which ends by EOF):
            // its last reply is the 221, or the 421 of the error limit just before it.
            let codes = check_replies(&d.written()).map_err(TestCaseError::fail)?;
            prop_assert!(codes.last().is_some_and(|c| *c == 221 || *c == 421),
                "a QUIT-ended session ends with 221 (or an earlier 421): {:?}", codes);
        }
    }
}

// ---------------------------------------------------------------------------------------
// (e) Disconnect decisions at a random hook

/// A transaction-heavy script: EHLO, then transactions whose every line reaches a hook with
/// every hook subscribed, mixed with other commands.
fn hook_script() -> impl Strategy<Value = Vec<u8>> {
    let body = prop::sample::select(vec![
        &b""[..],
        b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n",
        b"BDAT 6 LAST\r\nworld!",
        b"BDAT 5\r\nhelloBDAT 6 LAST\r\nworld!",
    ]);
    let other = prop::sample::select(vec![
        &b""[..],
        b"EHLO client.example\r\n",
        b"HELO client.example\r\n",
        b"NOOP\r\n",
        b"RSET\r\n",
        b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n",
        b"BOGUS\r\n",
    ]);
    let transaction = (1usize..4, body, other).prop_map(|(rcpts, body, other)| {
        let mut t = b"MAIL FROM:<a@example.org>\r\n".to_vec();
        for i in 0..rcpts {
            t.extend_from_slice(format!("RCPT TO:<r{i}@example.net>\r\n").as_bytes());
        }
        t.extend_from_slice(body);
        t.extend_from_slice(other);
        t
    });
    prop::collection::vec(transaction, 0..4).prop_map(|transactions| {
        let mut out = b"EHLO client.example\r\n".to_vec();
        out.extend(transactions.concat());
        out
    })
}

fn mode_config() -> Config {
    Config {
        hard_error_limit: 1000,
        ..full_config()
    }
}

/// Runs the script; the `k`-th decided hook call (0-based) gets `special`, the others Accept.
fn run_with_decision_at(input: &[u8], chunks: &[usize], k: usize, special: Decision) -> String {
    let mut n = 0;
    let policy = move |_: &Hook| {
        let d = if n == k {
            special.clone()
        } else {
            Decision::Accept
        };
        n += 1;
        d
    };
    let mut h = Harness::with_policy(mode_config(), Policy::Auto(Box::new(policy)));
    let mut pos = 0;
    let mut i = 0;
    while pos < input.len() && !h.session.is_closed() {
        let end = (pos + chunks[i % chunks.len()].max(1)).min(input.len());
        h.feed(&input[pos..end]);
        pos = end;
        i += 1;
    }
    if !h.session.is_closed() {
        h.eof();
    }
    h.transcript
}

/// The transcript up to and including the `k`-th hook call that needs a decision.
fn upto_hook(transcript: &str, k: usize) -> Option<String> {
    let mut out = String::new();
    let mut seen = 0;
    for line in transcript.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("H: ") && !line.starts_with("H: disconnect") {
            if seen == k {
                return Some(out);
            }
            seen += 1;
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_disconnect_at_any_hook_answers_what_came_before_and_nothing_after(
        input in hook_script(),
        chunks in chunk_sizes(),
        pick in any::<prop::sample::Index>(),
        mode in prop::sample::select(vec![
            DisconnectMode::ForceDisconnect, DisconnectMode::FollowWith421, DisconnectMode::If421,
        ]),
        code in prop::sample::select(vec![421u16, 451, 550, 554]),
    ) {
        let accepted = run_with_decision_at(&input, &chunks, usize::MAX, Decision::Accept);
        let hooks = accepted
            .lines()
            .filter(|l| l.starts_with("H: ") && !l.starts_with("H: disconnect"))
            .count();
        let k = pick.index(hooks);
        let decision = Decision::disconnect(code, "go away", mode).unwrap();
        let got = run_with_decision_at(&input, &chunks, k, decision.clone());

        // Everything up to the k-th hook call is what an all-accepting run did.
        let prefix = upto_hook(&accepted, k).expect("the k-th hook");
        prop_assert!(got.starts_with(&prefix), "prefix differs\n{}\n---\n{}", accepted, got);
        let rest = &got[prefix.len()..];
        let hook_line = prefix.lines().last().unwrap();
        let at_connect = hook_line == "H: connect";
        let stays_open = mode == DisconnectMode::If421 && code != 421 && !at_connect;
        if stays_open {
            // If421 with another code is a reject: compare with one.
            let reply = Reply::new(code, "go away").unwrap();
            let rejected = run_with_decision_at(&input, &chunks, k, Decision::Reject(reply));
            let rejected_rest = &rejected[prefix.len()..];
            let (_, after_d) = rest.split_once('\n').unwrap();
            let (_, rejected_after_d) = rejected_rest.split_once('\n').unwrap();
            prop_assert_eq!(after_d, rejected_after_d);
        } else {
            let mut expected = format!("D: {}\nS: {code} go away\n", describe_decision(&decision));
            if mode == DisconnectMode::FollowWith421 && code != 421 {
                expected.push_str("S: 421 mx.example disconnecting due to previous error\n");
            }
            expected.push_str("-- close\n");
            prop_assert!(rest.starts_with(&expected), "after the hook:\n{}\nexpected:\n{}", rest, expected);
            let tail = &rest[expected.len()..];
            prop_assert!(tail.starts_with("H: disconnect close=local"), "tail {:?}", tail);
            prop_assert_eq!(tail.lines().count(), 1, "nothing after the disconnect hook: {:?}", tail);
        }
        prop_assert_eq!(got.matches("-- close").count(), 1);
        prop_assert_eq!(got.matches("H: disconnect").count(), 1);
        prop_assert!(got.trim_end().lines().last().unwrap().starts_with("H: disconnect"));
    }
}
