//! The transcript harness: client bytes and events go into a `Session` driven by a fake
//! clock; everything it writes, closes and calls is recorded as one readable transcript.
//!
//! Transcript lines:
//! - `C: text`   a line the client sent (or `C~ text` for a fragment without line end)
//! - `S: text`   a line the server wrote
//! - `H: ...`    a hook call, `D: ...` the decision the test gave it
//! - `-- close`, `-- starttls`, `-- disconnect ...` the other outputs
//!
//! The harness is a [`Runtime`] of the crate's one driver ([`crate::drive`]): it feeds,
//! drains and keeps the backlog as every other runtime here does, and only records.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use smtp_session::{
    AbortReason, Config, ConnectionInfo, Decision, DisconnectContext, Error, Extensions, Hook,
    HookCall, HookId, Hooks, IoError, Message, Output, PeerCertificate, Session, TlsInfo,
};

use crate::drive::{self, Runtime, Then};

/// How the harness answers hook calls.
pub enum Policy {
    /// The test answers each call with `decide`.
    Manual,
    /// Each call is answered at once by this function.
    Auto(Box<dyn FnMut(&Hook) -> Decision>),
}

/// A session driven by a test: what goes in and what comes out, as one transcript.
pub struct Harness {
    /// The session under test.
    pub session: Session,
    /// The fake clock; only `advance` moves it.
    pub now: Instant,
    /// Everything so far, one line per event (see the module docs).
    pub transcript: String,
    /// How hook calls are answered.
    pub policy: Policy,
    /// Hook calls waiting for `decide` (manual policy), oldest first.
    pub pending: VecDeque<HookId>,
    /// The messages handed to the message hook (and accepted, under an automatic policy).
    pub messages: Vec<Message>,
    /// The disconnect hook's context, once it was called.
    pub context: Option<Box<DisconnectContext>>,
    /// `Output::Close`s seen.
    pub closes: usize,
    /// Disconnect hook calls seen.
    pub disconnects: usize,
    /// `Output::StartTls`s seen.
    pub starttls: usize,
    /// Input the session did not take yet (backpressure), offered again on the next send.
    pub backlog: Vec<u8>,
    /// When set, every `Output::StartTls` is answered at once with a successful handshake
    /// reporting these details (recorded as `-- tls established`).
    pub auto_tls: Option<TlsInfo>,
    /// Streamed mode: the pieces of the message being received, as a spool would hold them.
    pub spool: Vec<u8>,
    /// Streamed mode: the largest piece seen.
    pub largest_piece: usize,
    /// Streamed mode: the spools of the messages that reached the message hook, in order.
    pub spooled: Vec<Vec<u8>>,
    /// Streamed mode: every abort announced, in order.
    pub aborted: Vec<AbortReason>,
    /// Under an automatic policy, every hook call the harness does not keep (all but the
    /// accepted messages) is handed back with `Session::recycle_hook` before its decision.
    pub recycle_hooks: bool,
}

/// The harness clock's starting point.
pub fn start() -> Instant {
    // A fixed origin keeps transcripts independent of the real clock's value.
    Instant::now()
}

impl Harness {
    /// A session with every hook the config subscribes answered `Accept` at once.
    pub fn new(config: Config) -> Self {
        Self::with_policy(config, Policy::Auto(Box::new(|_| Decision::Accept)))
    }

    /// A session whose hook calls wait for the test's `decide`.
    pub fn manual(config: Config) -> Self {
        Self::with_policy(config, Policy::Manual)
    }

    /// A session with hooks answered by `policy`, for the connection of [`info`].
    pub fn with_policy(config: Config, policy: Policy) -> Self {
        Self::with_info(config, info(), policy)
    }

    /// A session for the connection `info`, with hooks answered by `policy`.
    pub fn with_info(config: Config, info: ConnectionInfo, policy: Policy) -> Self {
        Self::build(config, info, policy, None)
    }

    /// Like `with_info`, but every STARTTLS handshake (and an implicit-TLS one) completes
    /// at once with `tls`.
    pub fn with_auto_tls(
        config: Config,
        info: ConnectionInfo,
        policy: Policy,
        tls: TlsInfo,
    ) -> Self {
        Self::build(config, info, policy, Some(tls))
    }

    fn build(
        config: Config,
        info: ConnectionInfo,
        policy: Policy,
        auto_tls: Option<TlsInfo>,
    ) -> Self {
        let now = start();
        let session = Session::new(config, info, now);
        let mut h = Harness {
            session,
            now,
            transcript: String::new(),
            policy,
            pending: VecDeque::new(),
            messages: Vec::new(),
            context: None,
            closes: 0,
            disconnects: 0,
            starttls: 0,
            backlog: Vec::new(),
            auto_tls,
            spool: Vec::new(),
            largest_piece: 0,
            spooled: Vec::new(),
            aborted: Vec::new(),
            recycle_hooks: false,
        };
        h.drain();
        h
    }

    /// Sends client text in one read and records its lines.
    pub fn send(&mut self, text: &str) -> &mut Self {
        self.record_client(text.as_bytes());
        self.feed(text.as_bytes());
        self
    }

    /// Sends bytes in one read, recording them escaped.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.record_client(bytes);
        self.feed(bytes);
        self
    }

    /// Sends bytes in one read, recorded on one line as `C= escaped` (for BDAT chunks,
    /// whose bytes are data, not lines).
    pub fn send_data(&mut self, bytes: &[u8]) -> &mut Self {
        self.transcript.push_str(&format!("C= {}\n", escape(bytes)));
        self.feed(bytes);
        self
    }

    /// Reports a successful TLS handshake, recorded as `-- tls established`.
    pub fn tls_established(&mut self, tls: TlsInfo) -> &mut Self {
        self.transcript.push_str("-- tls established\n");
        drive::event(self, "a handshake was requested", |s, now| {
            s.handle_tls_established(tls, now)
        });
        self.offer();
        self
    }

    /// Reports a failed TLS handshake, recorded as `-- tls failed`.
    pub fn tls_failed(&mut self, error: IoError) -> &mut Self {
        self.transcript.push_str("-- tls failed\n");
        drive::event(self, "a handshake was requested", |s, now| {
            s.handle_tls_failed(error, now)
        });
        self
    }

    /// Feeds bytes without recording them (for bulk data); what the session does not take
    /// waits in `backlog`.
    pub fn feed(&mut self, bytes: &[u8]) {
        drive::feed(self, bytes);
    }

    /// Offers the backlog until the session takes no more.
    pub fn offer(&mut self) {
        drive::offer(self);
    }

    fn record_client(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            match rest.windows(2).position(|w| w == b"\r\n") {
                Some(i) => {
                    self.transcript
                        .push_str(format!("C: {}", escape(&rest[..i])).trim_end());
                    self.transcript.push('\n');
                    rest = &rest[i + 2..];
                }
                None => {
                    self.transcript.push_str(&format!("C~ {}\n", escape(rest)));
                    rest = &[];
                }
            }
        }
    }

    /// The client closed its side, recorded as `-- eof`.
    pub fn eof(&mut self) -> &mut Self {
        self.transcript.push_str("-- eof\n");
        drive::event(self, "eof", Session::handle_eof);
        self
    }

    /// Time passes; `-- timeout` is recorded when a deadline is reached.
    pub fn advance(&mut self, by: Duration) -> &mut Self {
        self.now += by;
        if let Some(deadline) = self.session.poll_timeout() {
            if self.now >= deadline {
                self.transcript.push_str("-- timeout\n");
            }
        }
        drive::event(self, "timeout", Session::handle_timeout);
        self
    }

    /// The server shuts down, recorded as `-- shutdown`.
    pub fn shutdown(&mut self) -> &mut Self {
        self.transcript.push_str("-- shutdown\n");
        drive::event(self, "shutdown", Session::handle_shutdown);
        self
    }

    /// Answers the oldest pending hook call.
    pub fn decide(&mut self, decision: Decision) -> &mut Self {
        let id = self.pending.pop_front().expect("a hook call is pending");
        self.transcript
            .push_str(&format!("D: {}\n", describe_decision(&decision)));
        drive::event(self, "decision accepted", |s, now| {
            s.decide(id, decision, now)
        });
        self.offer();
        self
    }

    /// Answers the oldest pending hook with a decision that does not fit it: the session
    /// refuses it with the returned error, recorded as `D: ... (refused)`, and the hook
    /// counts as failed.
    pub fn decide_unfit(&mut self, decision: Decision) -> Error {
        let id = self.pending.pop_front().expect("a hook call is pending");
        self.transcript
            .push_str(&format!("D: {} (refused)\n", describe_decision(&decision)));
        let now = self.now;
        let error = match self.session.decide(id, decision, now) {
            Err(error @ Error::InvalidDecision(_)) => error,
            other => panic!("an unfit decision gave {other:?}"),
        };
        self.drain();
        self.offer();
        error
    }

    /// Drains every output into the transcript, answering hooks by the policy, and goes on
    /// with held input as a runtime does when `poll_timeout` says it is due already.
    pub fn drain(&mut self) {
        drive::drain(self);
    }

    /// Asserts the whole transcript so far, ignoring indentation of the expected text.
    #[track_caller]
    pub fn expect(&mut self, expected: &str) -> &mut Self {
        self.compare(expected, str::trim)
    }

    /// Like `expect`, but only leading indentation is ignored: trailing spaces count (a
    /// `334 ` challenge line ends with one).
    #[track_caller]
    pub fn expect_exact(&mut self, expected: &str) -> &mut Self {
        self.compare(expected, str::trim_start)
    }

    #[track_caller]
    fn compare(&mut self, expected: &str, trim: fn(&str) -> &str) -> &mut Self {
        let expected: String = expected
            .lines()
            .map(trim)
            .filter(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            self.transcript, expected,
            "\n--- transcript ---\n{}",
            self.transcript
        );
        self
    }

    /// The server's output only.
    pub fn server_lines(&self) -> Vec<&str> {
        self.transcript
            .lines()
            .filter_map(|l| l.strip_prefix("S: "))
            .collect()
    }

    /// The disconnect hook's context; panics if it was not called.
    pub fn context(&self) -> &DisconnectContext {
        self.context
            .as_deref()
            .expect("the disconnect hook was called")
    }

    /// Greeted and `EHLO client.example` answered, with the transcript cleared: where most
    /// scenarios begin.
    pub fn after_ehlo(mut self) -> Self {
        self.send("EHLO client.example\r\n");
        self.transcript.clear();
        self
    }
}

/// The harness records every output; hooks are answered by its policy.
impl Runtime for Harness {
    fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn backlog(&mut self) -> &mut Vec<u8> {
        &mut self.backlog
    }

    fn output(&mut self, output: Output) -> Then {
        match output {
            Output::Write(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                assert!(text.ends_with("\r\n"), "writes end with CRLF: {text:?}");
                for line in text.split_terminator("\r\n") {
                    self.transcript.push_str(&format!("S: {line}\n"));
                }
            }
            Output::Close => {
                self.closes += 1;
                self.transcript.push_str("-- close\n");
            }
            Output::StartTls => {
                self.starttls += 1;
                self.transcript.push_str("-- starttls\n");
                if let Some(tls) = self.auto_tls.clone() {
                    self.transcript.push_str("-- tls established\n");
                    return Then::Handshake(tls);
                }
            }
            Output::BodyPiece(piece) => {
                self.transcript
                    .push_str(&format!("B= {}\n", escape(&piece)));
                self.largest_piece = self.largest_piece.max(piece.len());
                self.spool.extend_from_slice(&piece);
            }
            Output::BodyAborted(reason) => {
                self.transcript
                    .push_str(&format!("-- body aborted: {reason:?}\n"));
                self.aborted.push(reason);
                self.spool.clear();
            }
            Output::TransactionAborted(reason) => {
                self.transcript
                    .push_str(&format!("-- transaction aborted: {reason:?}\n"));
            }
            Output::HookCall(call) => {
                if let Hook::Message(m) = &call.hook {
                    if m.streamed {
                        self.spooled.push(std::mem::take(&mut self.spool));
                    }
                }
                self.transcript
                    .push_str(&format!("H: {}\n", describe_hook(&call.hook)));
                match call.hook {
                    Hook::Disconnect(context) => {
                        self.disconnects += 1;
                        self.context = Some(context);
                    }
                    hook => match &mut self.policy {
                        Policy::Manual => {
                            if let Hook::Message(m) = hook {
                                self.messages.push(*m);
                            }
                            self.pending.push_back(call.id);
                        }
                        Policy::Auto(f) => {
                            let decision = f(&hook);
                            match (hook, &decision) {
                                (Hook::Message(m), Decision::Accept | Decision::AcceptWith(_)) => {
                                    self.messages.push(*m)
                                }
                                (hook, _) if self.recycle_hooks => {
                                    let id = call.id;
                                    self.session.recycle_hook(HookCall { id, hook });
                                }
                                _ => {}
                            }
                            self.transcript
                                .push_str(&format!("D: {}\n", describe_decision(&decision)));
                            return Then::Decide(call.id, decision);
                        }
                    },
                }
            }
            other => panic!("unexpected output {other:?}"),
        }
        Then::Next
    }
}

/// The connection the harness's sessions serve: 192.0.2.10:41666 to 198.51.100.1:25.
pub fn info() -> ConnectionInfo {
    ConnectionInfo {
        id: "conn-1".into(),
        remote_ip: Some("192.0.2.10".parse().unwrap()),
        remote_port: Some(41666),
        local_ip: Some("198.51.100.1".parse().unwrap()),
        local_port: Some(25),
        server_id: Some("inbound".into()),
        ..ConnectionInfo::default()
    }
}

/// The TLS details the tests' fake handshakes report.
pub fn tls_info() -> TlsInfo {
    TlsInfo {
        protocol: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        key_size: Some(256),
        sni: Some("mx.example".into()),
        peer_certificate: Some(PeerCertificate {
            der: vec![0x30, 0x82, 0x01, 0x0a],
            verify_error: Some(18),
        }),
    }
}

/// A TLS handshake failure as a runtime would report it.
pub fn tls_error() -> IoError {
    IoError::tls("handshake failure", Some(0x14094410))
}

/// The default config with a fixed hostname.
pub fn config() -> Config {
    Config {
        hostname: "mx.example".into(),
        ..Config::default()
    }
}

/// [`config`] with AUTH offered without TLS and only the auth hook subscribed.
pub fn auth_config() -> Config {
    Config {
        extensions: Extensions {
            auth: true,
            ..Extensions::default()
        },
        auth_without_tls: true,
        hooks: Hooks {
            auth: true,
            ..Hooks::NONE
        },
        ..config()
    }
}

/// [`config`] with STARTTLS offered.
pub fn starttls_config() -> Config {
    Config {
        extensions: Extensions {
            starttls: true,
            ..Extensions::default()
        },
        ..config()
    }
}

/// [`auth_config`] with STARTTLS offered and AUTH over TLS only: AUTH is offered after the
/// handshake.
pub fn tls_and_auth_config() -> Config {
    Config {
        extensions: Extensions {
            starttls: true,
            auth: true,
            ..Extensions::default()
        },
        auth_without_tls: false,
        ..auth_config()
    }
}

/// Bytes as transcript text: CR and LF as `\r` and `\n`, other non-printables as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// A hook call as the transcript shows it after `H: `.
pub fn describe_hook(hook: &Hook) -> String {
    match hook {
        Hook::Connect => "connect".into(),
        Hook::Helo { verb, host } => format!("helo {verb:?} {host}"),
        Hook::Auth(request) => format!("auth {request:?}"),
        Hook::MailFrom { path, params } => {
            if *params == Default::default() {
                format!("mail_from <{path}>")
            } else {
                format!("mail_from <{path}> {params:?}")
            }
        }
        Hook::RcptTo { path, params } => {
            if *params == Default::default() {
                format!("rcpt_to <{path}>")
            } else {
                format!("rcpt_to <{path}> {params:?}")
            }
        }
        Hook::Data => "data".into(),
        Hook::Message(m) => {
            let rcpts: Vec<String> = m
                .envelope
                .recipients
                .iter()
                .map(|r| format!("<{}>", r.path))
                .collect();
            if m.streamed {
                return format!(
                    "message from <{}> to {} streamed, {} bytes",
                    m.envelope.mail_from,
                    rcpts.join(","),
                    m.size
                );
            }
            format!(
                "message from <{}> to {} body {:?}",
                m.envelope.mail_from,
                rcpts.join(","),
                String::from_utf8_lossy(&m.body)
            )
        }
        Hook::Disconnect(c) => {
            let a = &c.arguments;
            let reply = match &a.reply {
                Some(r) => format!(
                    " reply={}{} {}",
                    r.code,
                    r.enhanced.map(|e| format!(" {e}")).unwrap_or_default(),
                    r.state
                ),
                None => String::new(),
            };
            let error = match &a.error {
                Some(e) => format!(" error={:?}:{}", e.kind, e.reason),
                None => String::new(),
            };
            format!("disconnect close={:?}{reply}{error}", a.close).to_lowercase()
        }
        other => format!("{other:?}"),
    }
}

/// A decision as the transcript shows it after `D: `.
pub fn describe_decision(d: &Decision) -> String {
    match d {
        Decision::Accept => "accept".into(),
        Decision::AcceptWith(r) => {
            format!("accept {}", r.to_string().trim_end().replace("\r\n", " | "))
        }
        Decision::Reject(r) => {
            format!("reject {}", r.to_string().trim_end().replace("\r\n", " | "))
        }
        Decision::Disconnect { reply, mode } => {
            format!(
                "disconnect {mode:?} {}",
                reply.to_string().trim_end().replace("\r\n", " | ")
            )
        }
        Decision::HookFailed => "hook failed".into(),
        Decision::Challenge(c) => format!("challenge {:?}", String::from_utf8_lossy(c)),
        Decision::PerRecipient(replies) => {
            let replies: Vec<String> = replies
                .iter()
                .map(|r| r.to_string().trim_end().to_owned())
                .collect();
            format!("per recipient {}", replies.join(" | "))
        }
        other => format!("{other:?}"),
    }
}

/// Runs a whole client script through a session, fed in the given chunk sizes (cycled),
/// answering every hook with `Accept`; returns the server-side transcript (writes, closes,
/// hook calls, decisions), which must not depend on how the input was split.
pub fn run_split(config: Config, input: &[u8], chunks: &[usize]) -> String {
    let mut h = Harness::new(config);
    feed_chunked(&mut h, input, chunks, &mut 0);
    if !h.session.is_closed() {
        h.eof();
    }
    h.transcript
}

/// Feeds `input` in the chunk sizes of `chunks`, cycled from position `next` (updated).
fn feed_chunked(h: &mut Harness, input: &[u8], chunks: &[usize], next: &mut usize) {
    let mut pos = 0;
    while pos < input.len() && !h.session.is_closed() {
        let size = chunks
            .get(*next % chunks.len().max(1))
            .copied()
            .unwrap_or(input.len())
            .max(1);
        let end = (pos + size).min(input.len());
        h.feed(&input[pos..end]);
        pos = end;
        *next += 1;
    }
}

/// Runs a client that waits where RFC 3207 tells it to: each flight is fed in the given
/// chunk sizes (cycled, never crossing into the next flight), and the next flight starts
/// only when the previous one is all taken. A flight ending with STARTTLS is answered by
/// a fake handshake reporting `tls_info()`. Hooks are answered `Accept`. Returns the
/// server-side transcript, which must not depend on the chunk sizes.
pub fn run_split_flights(config: Config, flights: &[&[u8]], chunks: &[usize]) -> String {
    let mut h = Harness::with_auto_tls(
        config,
        info(),
        Policy::Auto(Box::new(|_| Decision::Accept)),
        tls_info(),
    );
    let mut next = 0;
    for flight in flights {
        feed_chunked(&mut h, flight, chunks, &mut next);
    }
    if !h.session.is_closed() {
        h.eof();
    }
    h.transcript
}
