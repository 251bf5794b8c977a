//! The state machine: every state transition of a connection lives in this file. Reading
//! bytes is the readers' work (`line`, `data`, `bdat`, `proxy`), writing the outbox's, time
//! the clock's.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use crate::address::{ForwardPath, ReversePath};
use crate::bdat::{BdatReceiver, ChunkStatus};
use crate::body::BodySink;
use crate::clock::{Clock, Expiry};
use crate::command::{parse_command, Command, CommandError, Verb};
use crate::config::StartTlsInjection;
use crate::config::{BodyDelivery, Config, ConfigError, Extensions, HookFailurePolicy};
use crate::context::{
    AuthInfo, CloseSide, ConnectionDetails, ConnectionInfo, DisconnectArguments, DisconnectContext,
    EmptyTransaction, HeloInfo, HeloVerb, IoError, IoErrorKind, LastReply, ReplyState, TlsInfo,
};
use crate::data::{BareLineEndings, DataReceiver, DataStatus};
use crate::error::Error;
use crate::hooks::{
    AbortReason, AuthRequest, Decision, DisconnectMode, Envelope, Hook, HookCall, HookId, Message,
    Recipient,
};
use crate::line::{LineEnding, LineKind, LineLimits, LineReader, Read};
use crate::outbox::{closing, replies::*, Outbox};
use crate::params::{
    parse_mail_params, parse_rcpt_params, Body, MailParams, ParamError, ParamSupport, RcptParams,
};
use crate::proxy::{ProxyHeader, ProxyRead, ProxyReader};
use crate::reply::Reply;
use crate::sasl::{base64_decode, base64_encode, decode_login_field, decode_plain, SaslError};
use crate::xclient;

/// An action the runtime must carry out, in the order [`Session::poll_output`] returns them.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Send these bytes to the client, after every earlier `Write`.
    Write(Vec<u8>),
    /// Send every earlier `Write`, then close the connection. Emitted exactly once, also when
    /// the client is already gone, so a runtime has one place to release the connection.
    /// It is always followed by the disconnect [`HookCall`], and nothing comes after that.
    Close,
    /// Run a policy hook. Unless it is the disconnect hook
    /// ([`HookCall::needs_decision`] is false), the runtime MUST later answer with
    /// [`Session::decide`] and the call's id; until then the session processes no command.
    HookCall(HookCall),
    /// Send every earlier `Write`, then run a TLS handshake as the server on this connection
    /// and report it with [`Session::handle_tls_established`] or
    /// [`Session::handle_tls_failed`]. Any bytes read from the socket before the handshake
    /// and not yet given to the session MUST be dropped, never fed after it. One exception:
    /// with implicit TLS behind a PROXY header, the bytes that followed the header are the
    /// client's first handshake bytes; [`Session::take_handshake_bytes`] hands them back.
    StartTls,
    /// [`BodyDelivery::Streamed`] only: the next piece of the body of the message being
    /// received, unstuffed, in order. The runtime appends it to its spool for the message
    /// (the first piece of a message starts a new one). The message ends with the message
    /// hook call, whose [`Message::body`] is empty, or with [`Output::BodyAborted`].
    BodyPiece(Vec<u8>),
    /// [`BodyDelivery::Streamed`] only: the message being received will not be accepted.
    /// The runtime discards what it stored of it. Announced once for every message whose
    /// body had started (after the 354, or with its first BDAT chunk) and that ends without
    /// a message hook call, even when no piece went out.
    BodyAborted(AbortReason),
}

/// What a pending hook was about, so its decision can be carried out.
enum Stage {
    Connect,
    Helo(HeloInfo),
    Auth {
        mechanism: String,
        username: Option<String>,
        step: u32,
    },
    Mail(ReversePath, MailParams),
    Rcpt(ForwardPath, RcptParams),
    Data,
    /// The data hook for the first BDAT of a transaction, before its chunk is read.
    Bdat {
        size: u64,
        last: bool,
    },
    Message {
        chunked: bool,
    },
}

impl Stage {
    fn reply_state(&self) -> ReplyState {
        match self {
            Stage::Connect => ReplyState::Connect,
            Stage::Helo(info) => helo_state(info.verb),
            Stage::Auth { .. } => ReplyState::Auth,
            Stage::Mail(..) => ReplyState::Mail,
            Stage::Rcpt(..) => ReplyState::Rcpt,
            Stage::Data => ReplyState::Data,
            Stage::Bdat { .. } | Stage::Message { chunked: true } => ReplyState::Bdat,
            Stage::Message { chunked: false } => ReplyState::Eod,
        }
    }
}

struct Pending {
    id: HookId,
    stage: Stage,
}

/// The rest of an AUTH exchange, while the session waits for the client's next line.
enum AuthExchange {
    Plain,
    LoginUsername,
    LoginPassword {
        username: String,
    },
    Step {
        mechanism: String,
        step: u32,
        /// Named by the runtime with `set_auth_username` at an earlier step.
        username: Option<String>,
    },
}

/// Where the connection is, with the reader each phase reads its bytes with.
enum Phase {
    /// Waiting for the PROXY protocol header.
    Proxy(ProxyReader),
    /// Holding the greeting back until `until`, to catch clients that talk first.
    GreetingDelay {
        until: Instant,
    },
    /// Waiting for the connect hook.
    Connecting,
    /// Waiting for the runtime's TLS handshake; `implicit` for RFC 8314 listeners, with
    /// the bytes that followed a PROXY header (the client's first handshake bytes).
    TlsHandshake {
        implicit: bool,
        handshake_bytes: Vec<u8>,
    },
    /// Reading command lines.
    Command(LineReader),
    /// Reading the client's lines of an AUTH exchange.
    Auth(AuthExchange, LineReader),
    /// Reading message data after 354.
    Data(DataReceiver),
    /// Reading a BDAT chunk; a refused chunk is read by a discarding receiver and answered
    /// with `refusal` once its bytes are consumed.
    Bdat {
        rx: BdatReceiver,
        refusal: Option<Reply>,
    },
    Closed,
}

struct Transaction {
    envelope: Envelope,
    /// Where the body goes; `Discard` until it starts.
    sink: BodySink,
    /// Between BDAT chunks: the receiver of the chunked message.
    chunks: Option<BdatReceiver>,
}

/// What a reader did with the input it was given.
enum Step {
    /// Took this many bytes and may go on with the rest.
    Next(usize),
    /// Took this many bytes and needs more input.
    NeedMore(usize),
}

/// The server side of one SMTP connection, as a pure state machine.
///
/// See the [crate documentation](crate) for the run loop and the obligations it implies.
pub struct Session {
    config: Arc<Config>,
    ext: Extensions,
    info: ConnectionInfo,
    phase: Phase,
    line_limits: LineLimits,
    /// Input taken while it could not be acted on (a hook pending, the greeting held back,
    /// replies not yet polled); processed first when the session goes on.
    held: Vec<u8>,
    out: Outbox,
    clock: Clock,
    eof: bool,
    shutdown_requested: bool,
    early_talker: bool,
    /// Recipients refused for being past the limit, this session.
    overshoot: usize,
    helo: Option<HeloInfo>,
    tls: Option<Box<TlsInfo>>,
    auth: Option<AuthInfo>,
    proxy: Option<Box<ProxyHeader>>,
    tx: Option<Box<Transaction>>,
    pending: Option<Pending>,
    next_hook: u64,
    io_error: Option<Box<IoError>>,
    user_context: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.info.id)
            .field("closed", &self.is_closed())
            .field("pending_hook", &self.pending_hook())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a new connection. It queues its first outputs at once: the connect
    /// hook call or the greeting (or nothing while it waits for a PROXY header, or
    /// [`Output::StartTls`] for an implicit-TLS listener).
    ///
    /// A config with values outside their ranges is clamped (see [`Config::validate`]); use
    /// [`Session::try_new`] to refuse it instead.
    pub fn new(config: impl Into<Arc<Config>>, info: ConnectionInfo, now: Instant) -> Session {
        let config: Arc<Config> = config.into();
        match config.validate() {
            Ok(()) => Session::start(config, info, now),
            Err(_) => Session::start(Arc::new(config.clamped()), info, now),
        }
    }

    /// Like [`Session::new`], but a config with a value outside its range is refused with
    /// the first [`ConfigError`] instead of being clamped.
    ///
    /// ```
    /// # use std::time::Instant;
    /// use smtp_session::{Config, ConnectionInfo, Session};
    /// let config = Config { max_recipients: 10, ..Config::default() };
    /// let refused = Session::try_new(config, ConnectionInfo::default(), Instant::now());
    /// assert_eq!(refused.unwrap_err().field, "max_recipients");
    /// ```
    pub fn try_new(
        config: impl Into<Arc<Config>>,
        info: ConnectionInfo,
        now: Instant,
    ) -> Result<Session, ConfigError> {
        let config: Arc<Config> = config.into();
        config.validate()?;
        Ok(Session::start(config, info, now))
    }

    fn start(config: Arc<Config>, info: ConnectionInfo, now: Instant) -> Session {
        let ext = config.extensions;
        let line_limits = LineLimits {
            command: config.line_limit(),
            auth: ext.auth.then_some(config.max_auth_line_length),
        };
        let mut session = Session {
            ext,
            info,
            phase: Phase::Connecting,
            line_limits,
            held: Vec::new(),
            out: Outbox::new(ext.enhanced_status_codes),
            clock: Clock::new(now),
            eof: false,
            shutdown_requested: false,
            early_talker: false,
            overshoot: 0,
            helo: None,
            tls: None,
            auth: None,
            proxy: None,
            tx: None,
            pending: None,
            next_hook: 0,
            io_error: None,
            user_context: None,
            config,
        };
        if session.config.proxy_protocol {
            session.phase = Phase::Proxy(ProxyReader::default());
        } else {
            session.after_proxy();
        }
        session
    }

    // ----------------------------------------------------------------------------------
    // Inputs

    /// Feeds bytes received from the client and returns how many were taken.
    ///
    /// Bytes the session cannot act on yet (a hook is pending, or the outputs not yet polled
    /// reach [`Config::max_pending_output`]) are kept, up to [`Config::max_pending_input`].
    /// All are taken unless that buffer is full; the runtime then keeps the rest, stops
    /// reading, and offers them again after its next [`decide`](Session::decide) or
    /// [`handle_timeout`](Session::handle_timeout).
    pub fn handle_input(&mut self, data: &[u8], now: Instant) -> Result<usize, Error> {
        self.check_open()?;
        self.clock.event(now);
        let taken = match self.phase {
            Phase::TlsHandshake { .. } => {
                // Plaintext read before the handshake: never executed (CVE-2011-0411).
                if !data.is_empty() && self.config.starttls_injection == StartTlsInjection::Close {
                    self.close(CloseSide::Local);
                }
                data.len()
            }
            _ => self.take(data),
        };
        self.settle();
        Ok(taken)
    }

    /// The client closed its side. Commands already received are still answered; the
    /// session then closes with [`CloseSide::Remote`].
    pub fn handle_eof(&mut self, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        self.clock.event(now);
        self.eof = true;
        self.settle();
        Ok(())
    }

    /// Reading or writing failed: the session closes at once, without further writes, and
    /// the error goes into the disconnect context.
    pub fn handle_io_error(&mut self, error: IoError, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        self.clock.event(now);
        self.io_error = Some(Box::new(error));
        self.close(CloseSide::Remote);
        Ok(())
    }

    /// Time passed. When the instant of [`poll_timeout`](Session::poll_timeout) is reached,
    /// the session acts: it greets a client held by the greeting delay, goes on with input
    /// it held, or, for a timeout, sends `421 4.4.2` and closes. Called early, it does
    /// nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        let Some((deadline, due)) = self.next_deadline() else {
            return Ok(());
        };
        if now < deadline {
            return Ok(());
        }
        match due {
            Due::Greeting => {
                self.clock.event(now);
                self.connect();
                self.resume();
            }
            Due::Resume => self.resume(),
            Due::Timeout(_)
                if matches!(self.phase, Phase::Proxy(_) | Phase::TlsHandshake { .. }) =>
            {
                self.close(CloseSide::Local)
            }
            Due::Timeout(expiry) => {
                let host = &self.config.hostname;
                let reply = match expiry {
                    Expiry::DataRate => closing::too_slow(host),
                    Expiry::Idle | Expiry::CommandDeadline => closing::timeout(host),
                };
                self.reply(reply, ReplyState::Timeout);
                self.close(CloseSide::Local);
            }
        }
        self.settle();
        Ok(())
    }

    /// The server is shutting down: the session sends `421 4.3.2` and closes as soon as no
    /// reply is owed (at once when it waits for a command).
    pub fn handle_shutdown(&mut self, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        self.clock.event(now);
        self.shutdown_requested = true;
        self.settle();
        Ok(())
    }

    /// The TLS handshake asked for by [`Output::StartTls`] succeeded. The session forgets
    /// HELO, AUTH and any transaction (RFC 3207) and records the details for the context.
    pub fn handle_tls_established(&mut self, tls: TlsInfo, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        let Phase::TlsHandshake { implicit, .. } = self.phase else {
            return Err(Error::NoTlsRequested);
        };
        self.clock.event(now);
        self.tls = Some(Box::new(tls));
        self.helo = None;
        self.auth = None;
        self.end_transaction(AbortReason::Reset);
        if implicit {
            self.start_connect();
        } else {
            self.phase = Phase::Command(LineReader::commands(self.line_limits));
        }
        self.settle();
        Ok(())
    }

    /// The TLS handshake failed; the session closes without writing anything more.
    pub fn handle_tls_failed(&mut self, error: IoError, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        if !matches!(self.phase, Phase::TlsHandshake { .. }) {
            return Err(Error::NoTlsRequested);
        }
        let error = IoError {
            kind: IoErrorKind::Tls,
            ..error
        };
        self.handle_io_error(error, now)
    }

    /// Answers the pending hook call `id`. On success the session goes on with any input it
    /// buffered meanwhile. A decision that does not fit (wrong id, a 2xx rejection, a
    /// challenge outside AUTH) is refused with an error and changes nothing.
    pub fn decide(&mut self, id: HookId, decision: Decision, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        match &self.pending {
            Some(p) if p.id == id => check_decision(&p.stage, &decision)?,
            _ => return Err(Error::UnknownHook(id)),
        }
        let Some(pending) = self.pending.take() else {
            unreachable!("the pending hook was just found");
        };
        self.clock.event(now);
        self.apply(pending.stage, decision);
        self.resume();
        self.settle();
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Outputs and queries

    /// The next action for the runtime, or `None` when there is nothing to do until the
    /// next event. Call it until it returns `None` after every input method.
    ///
    /// It never makes the session read on: one drain yields at most about
    /// [`Config::max_pending_output`] bytes of writes and body pieces, however the runtime
    /// sends them. When the session holds input it could not act on yet,
    /// [`poll_timeout`](Session::poll_timeout) returns an instant already passed.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop()
    }

    /// With implicit TLS behind a PROXY header: the bytes that followed the header, which are
    /// the start of the client's TLS handshake. The runtime feeds them to its TLS layer
    /// before reading more from the socket. Empty in every other case.
    #[must_use]
    pub fn take_handshake_bytes(&mut self) -> Vec<u8> {
        match &mut self.phase {
            Phase::TlsHandshake {
                handshake_bytes, ..
            } => std::mem::take(handshake_bytes),
            _ => Vec::new(),
        }
    }

    /// When [`handle_timeout`](Session::handle_timeout) should be called next; `None` while a
    /// hook is pending (the runtime bounds its own hooks) or after close.
    ///
    /// The instant may already have passed: the session holds input it stopped reading
    /// because its outputs were full, and goes on with it when `handle_timeout` is called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline().map(|(at, _)| at)
    }

    /// The hook call waiting for a decision, if any.
    #[must_use]
    pub fn pending_hook(&self) -> Option<HookId> {
        self.pending.as_ref().map(|p| p.id)
    }

    /// True once [`Output::Close`] was queued.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The connection info, with addresses from a PROXY header or XCLIENT applied.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// True when the client sent bytes before the greeting.
    pub fn early_talker(&self) -> bool {
        self.early_talker
    }

    /// The accepted HELO/EHLO.
    pub fn helo(&self) -> Option<&HeloInfo> {
        self.helo.as_ref()
    }

    /// The TLS details, once TLS is active.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_deref()
    }

    /// The successful AUTH.
    pub fn auth(&self) -> Option<&AuthInfo> {
        self.auth.as_ref()
    }

    /// The PROXY protocol header, with its TLVs, when one was received.
    pub fn proxy_header(&self) -> Option<&ProxyHeader> {
        self.proxy.as_deref()
    }

    /// The open transaction's envelope.
    pub fn envelope(&self) -> Option<&Envelope> {
        self.tx.as_ref().map(|tx| &tx.envelope)
    }

    /// The extensions this session advertises and accepts.
    pub fn extensions(&self) -> Extensions {
        self.ext
    }

    /// Changes the extensions advertised and accepted from now on; typically called by an
    /// EHLO hook before it decides.
    pub fn set_extensions(&mut self, extensions: Extensions) {
        self.ext = extensions;
        self.out
            .set_enhanced_codes(extensions.enhanced_status_codes);
    }

    /// Names the user a pending auth hook is authenticating, for mechanisms the session does
    /// not decode (XOAUTH2, SCRAM...): on acceptance it goes into [`Session::auth`] and the
    /// disconnect context. Refused with [`Error::InvalidDecision`] when no auth hook is
    /// pending.
    pub fn set_auth_username(&mut self, username: impl Into<String>) -> Result<(), Error> {
        match self.pending.as_mut() {
            Some(Pending {
                stage: Stage::Auth { username: slot, .. },
                ..
            }) => {
                *slot = Some(username.into());
                Ok(())
            }
            _ => Err(Error::InvalidDecision("no auth hook is pending")),
        }
    }

    /// Stores a value for the whole connection; it is handed back in the disconnect context
    /// (Halon's `$context`).
    pub fn set_user_context(&mut self, value: Box<dyn Any + Send>) {
        self.user_context = Some(value);
    }

    /// The value stored with [`set_user_context`](Session::set_user_context).
    pub fn user_context_mut(&mut self) -> Option<&mut (dyn Any + Send)> {
        self.user_context.as_deref_mut()
    }

    /// The configuration in force (after clamping).
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----------------------------------------------------------------------------------
    // Input: what is taken, what is held, and which reader reads it

    fn check_open(&self) -> Result<(), Error> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// True while input must wait in `held`: a hook is pending or the greeting is not out.
    fn paused(&self) -> bool {
        self.pending.is_some()
            || matches!(self.phase, Phase::Connecting | Phase::GreetingDelay { .. })
    }

    /// True when the outputs not yet polled reach [`Config::max_pending_output`]: the
    /// session reads no more until the runtime takes them, so a flood of small commands
    /// cannot make it hold replies without bound.
    fn output_full(&self) -> bool {
        self.out.held() >= self.config.max_pending_output
    }

    fn take(&mut self, data: &[u8]) -> usize {
        if !data.is_empty() && matches!(self.phase, Phase::Connecting | Phase::GreetingDelay { .. })
        {
            self.early_talker = true;
        }
        self.resume();
        if self.paused() || !self.held.is_empty() || self.output_full() {
            return self.hold(data);
        }
        let used = self.process(data);
        if used < data.len() && !self.is_closed() {
            // A hook was called, or the outputs filled up: the rest waits.
            return used + self.hold(&data[used..]);
        }
        used
    }

    /// Keeps input that cannot be acted on now, up to the pending-input limit, and returns
    /// how much it kept. Before the greeting, a full buffer ends the delay: the client is an
    /// early talker already, and waiting on would refuse input with no hook to wait for.
    fn hold(&mut self, data: &[u8]) -> usize {
        let room = self
            .config
            .max_pending_input
            .saturating_sub(self.held.len());
        let n = room.min(data.len());
        if self.held.capacity() < self.held.len() + n {
            // Never reserve past the limit: doubling could reserve almost twice it.
            let target = (self.held.capacity() * 2)
                .clamp(self.held.len() + n, self.config.max_pending_input);
            self.held.reserve_exact(target - self.held.len());
        }
        self.held.extend_from_slice(&data[..n]);
        if n < data.len() && matches!(self.phase, Phase::GreetingDelay { .. }) {
            self.connect();
            self.resume();
            return n + self.take(&data[n..]);
        }
        n
    }

    /// Goes on with the held input, as far as the session can.
    fn resume(&mut self) {
        if self.held.is_empty() || self.paused() || self.output_full() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let used = self.process(&held);
        self.held = held;
        if self.is_closed() || matches!(self.phase, Phase::TlsHandshake { .. }) {
            self.held = Vec::new();
        } else if used == self.held.len() {
            // Release what a pause buffered, so an idle session does not hold it.
            self.held = Vec::new();
        } else {
            self.held.drain(..used);
        }
    }

    /// Reads `input` with the reader of each phase in turn, until it is used up or the
    /// session must stop (a hook, full outputs, the close, a TLS handshake). Returns the
    /// bytes used.
    fn process(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            if self.pending.is_some() || self.output_full() {
                return pos;
            }
            let rest = &input[pos..];
            let step = match &self.phase {
                Phase::Closed | Phase::TlsHandshake { .. } => return input.len(),
                Phase::Connecting | Phase::GreetingDelay { .. } => return pos,
                Phase::Proxy(_) => self.read_proxy(rest),
                Phase::Command(_) | Phase::Auth(..) => self.read_line(rest),
                Phase::Data(_) => self.read_data(rest),
                Phase::Bdat { .. } => self.read_chunk(rest),
            };
            match step {
                Step::Next(n) => pos += n,
                Step::NeedMore(n) => return pos + n,
            }
        }
    }

    fn read_proxy(&mut self, input: &[u8]) -> Step {
        let Phase::Proxy(reader) = &mut self.phase else {
            unreachable!("read_proxy runs in the PROXY phase");
        };
        let (used, read) = reader.read(input, self.config.max_pending_input);
        match read {
            ProxyRead::NeedMore => return Step::NeedMore(used),
            // Not a header, or one the input buffer could never hold.
            ProxyRead::Refused => self.close(CloseSide::Local),
            ProxyRead::Header(header) => {
                self.apply_proxy_header(header);
                self.after_proxy();
                if let Phase::TlsHandshake {
                    implicit: true,
                    handshake_bytes,
                } = &mut self.phase
                {
                    // The TLS client speaks first: the rest belongs to the handshake.
                    handshake_bytes.extend_from_slice(&input[used..]);
                    return Step::NeedMore(input.len());
                }
            }
        }
        Step::Next(used)
    }

    fn read_line(&mut self, input: &[u8]) -> Step {
        if self.shutdown_requested {
            self.shutdown_now();
            return Step::NeedMore(input.len());
        }
        let (Phase::Command(reader) | Phase::Auth(_, reader)) = &mut self.phase else {
            unreachable!("read_line runs in the line phases");
        };
        let (used, read) = reader.read(input);
        if reader.has_partial_line() {
            self.clock.line_started();
        } else {
            self.clock.line_ended();
        }
        match read {
            Read::NeedMore => return Step::NeedMore(used),
            Read::TooLong(kind) => self.line_too_long(kind),
            Read::Line(line, ending) => self.line(&line, ending, used < input.len()),
        }
        Step::Next(used)
    }

    fn read_data(&mut self, input: &[u8]) -> Step {
        let (Phase::Data(rx), Some(tx)) = (&mut self.phase, self.tx.as_deref_mut()) else {
            unreachable!("message data is read inside a transaction");
        };
        let normalizing = self.config.bare_line_endings == BareLineEndings::Normalize;
        let (used, status, piece) = tx.sink.feed(input, normalizing, |i, b| rx.feed(i, b));
        let failure = body_failure(rx.exceeded(), rx.saw_bare_line_ending(), &self.config);
        if failure.is_some() {
            rx.stop_storing();
        }
        self.clock.transferred(used);
        self.body_progress(piece, failure);
        match status {
            DataStatus::NeedMore => Step::NeedMore(used),
            DataStatus::Done => {
                self.end_of_data();
                Step::Next(used)
            }
        }
    }

    fn read_chunk(&mut self, input: &[u8]) -> Step {
        let Phase::Bdat { rx, refusal } = &mut self.phase else {
            unreachable!("read_chunk runs in the BDAT phase");
        };
        let (used, status) = match (refusal, self.tx.as_deref_mut()) {
            (None, Some(tx)) => {
                let normalizing = self.config.bare_line_endings == BareLineEndings::Normalize;
                let (used, status, piece) = tx.sink.feed(input, normalizing, |i, b| rx.feed(i, b));
                let failure = body_failure(rx.exceeded(), rx.saw_bare_line_ending(), &self.config);
                if failure.is_some() {
                    rx.stop_storing();
                }
                self.body_progress(piece, failure);
                (used, status)
            }
            _ => rx.feed(input, &mut Vec::new()),
        };
        self.clock.transferred(used);
        match status {
            ChunkStatus::NeedMore => Step::NeedMore(used),
            ChunkStatus::Done => {
                self.end_of_chunk();
                Step::Next(used)
            }
        }
    }

    /// Hands out a piece of the body, or, once the message is known to fail, announces
    /// that and stores nothing more of it.
    fn body_progress(&mut self, piece: Option<Vec<u8>>, failure: Option<AbortReason>) {
        let Some(tx) = self.tx.as_deref_mut() else {
            unreachable!("a body belongs to a transaction");
        };
        match (failure, piece) {
            (Some(reason), _) => {
                let sink = std::mem::replace(&mut tx.sink, BodySink::Discard);
                if sink.is_streaming() {
                    self.out.push(Output::BodyAborted(reason));
                }
            }
            (None, Some(piece)) => self.out.push(Output::BodyPiece(piece)),
            (None, None) => {}
        }
    }

    /// Queues what is due once input was processed: a shutdown or end-of-stream close
    /// once nothing is owed.
    fn settle(&mut self) {
        if self.pending.is_some() {
            return;
        }
        // Held input the session will go on with is still owed its replies.
        let idle = self.held.is_empty() || self.paused();
        match self.phase {
            Phase::Closed => {}
            Phase::Proxy(_) | Phase::Connecting | Phase::GreetingDelay { .. }
                if self.shutdown_requested =>
            {
                self.close(CloseSide::Local)
            }
            Phase::Command(_) | Phase::Auth(..) if self.shutdown_requested && idle => {
                self.shutdown_now()
            }
            _ if self.eof && idle && !self.output_full() => self.close(CloseSide::Remote),
            _ => {}
        }
    }

    fn next_deadline(&self) -> Option<(Instant, Due)> {
        if self.pending.is_some() {
            return None;
        }
        let timeout = |d: Option<(Instant, Expiry)>| d.map(|(at, why)| (at, Due::Timeout(why)));
        match self.phase {
            Phase::Closed => None,
            Phase::GreetingDelay { until } => Some((until, Due::Greeting)),
            _ if !self.held.is_empty() => Some((self.clock.now(), Due::Resume)),
            Phase::Data(_) | Phase::Bdat { .. } => timeout(self.clock.data_deadline(&self.config)),
            _ => timeout(self.clock.command_deadline(&self.config)),
        }
    }

    fn shutdown_now(&mut self) {
        let reply = closing::shutdown(&self.config.hostname);
        self.reply(reply, ReplyState::Shutdown);
        self.close(CloseSide::Local);
    }

    // ----------------------------------------------------------------------------------
    // Connection start

    fn apply_proxy_header(&mut self, header: ProxyHeader) {
        if let Some(src) = header.source {
            self.info.remote_ip = Some(src.ip());
            self.info.remote_port = Some(src.port());
        }
        if let Some(dst) = header.destination {
            self.info.local_ip = Some(dst.ip());
            self.info.local_port = Some(dst.port());
        }
        self.proxy = Some(Box::new(header));
    }

    fn after_proxy(&mut self) {
        if self.config.implicit_tls {
            self.phase = Phase::TlsHandshake {
                implicit: true,
                handshake_bytes: Vec::new(),
            };
            self.out.push(Output::StartTls);
        } else {
            self.start_connect();
        }
    }

    fn start_connect(&mut self) {
        let delay = self.config.greeting_delay;
        match self.clock.now().checked_add(delay) {
            Some(until) if !delay.is_zero() => self.phase = Phase::GreetingDelay { until },
            _ => self.connect(),
        }
    }

    fn connect(&mut self) {
        self.phase = Phase::Connecting;
        if self.config.hooks.connect {
            self.call_hook(Stage::Connect, Hook::Connect);
        } else {
            self.greet(None);
        }
    }

    fn greet(&mut self, custom: Option<Reply>) {
        if self.early_talker && self.config.reject_early_talkers {
            self.reply(
                closing::early_talker(&self.config.hostname),
                ReplyState::Connect,
            );
            return self.close(CloseSide::Local);
        }
        let reply = custom.unwrap_or_else(|| self.greeting());
        self.reply(reply, ReplyState::Connect);
        if !self.is_closed() {
            self.phase = Phase::Command(LineReader::commands(self.line_limits));
        }
    }

    fn greeting(&self) -> Reply {
        let text = format!("{} {}", self.config.hostname, self.config.banner);
        Reply::built(220, None, text.trim_end().to_owned())
    }

    // ----------------------------------------------------------------------------------
    // Commands

    /// One line from the client: a command, or a response in an AUTH exchange.
    fn line(&mut self, line: &[u8], ending: LineEnding, pipelined: bool) {
        if ending == LineEnding::BareLf && self.config.bare_line_endings == BareLineEndings::Reject
        {
            return self.bare_lf_line(line);
        }
        if let Phase::Auth(..) = self.phase {
            let commands = Phase::Command(LineReader::commands(self.line_limits));
            let Phase::Auth(exchange, _) = std::mem::replace(&mut self.phase, commands) else {
                unreachable!("the phase was just matched");
            };
            return self.auth_line(exchange, line);
        }
        match parse_command(line) {
            Ok(command) => self.command(command, pipelined),
            Err(error) => self.command_error(error),
        }
    }

    /// A line ended by a bare LF under [`BareLineEndings::Reject`]: refused, not executed.
    /// A BDAT chunk still follows its command, so its bytes are skipped, never read as
    /// commands.
    fn bare_lf_line(&mut self, line: &[u8]) {
        if let Phase::Auth(..) = self.phase {
            self.phase = Phase::Command(LineReader::commands(self.line_limits));
            return self.reply(BARE_LF_COMMAND, ReplyState::Auth);
        }
        match parse_command(line) {
            Ok(Command::Bdat { size, last }) => self.skip_chunk(size, last, BARE_LF_COMMAND),
            Ok(command) => self.reply(BARE_LF_COMMAND, verb_state(command.verb())),
            Err(_) => self.reply(BARE_LF_COMMAND, ReplyState::Unknown),
        }
    }

    fn line_too_long(&mut self, kind: LineKind) {
        match kind {
            LineKind::Auth => {
                self.phase = Phase::Command(LineReader::commands(self.line_limits));
                self.reply(AUTH_LINE_TOO_LONG, ReplyState::Auth);
            }
            LineKind::Command => self.reply(LINE_TOO_LONG, ReplyState::Unknown),
        }
    }

    fn command_error(&mut self, error: CommandError) {
        match error {
            CommandError::Unknown => self.reply(UNKNOWN_COMMAND, ReplyState::Unknown),
            CommandError::NotUtf8(verb) => self.reply(NOT_UTF8, verb_state(verb)),
            CommandError::Syntax(Verb::Bdat) => {
                // The chunk's size is unknown, so its bytes cannot be skipped; reading them as
                // commands would let a client smuggle them. The stream is lost: close.
                self.reply(SYNTAX, ReplyState::Bdat);
                self.reply(closing::bdat_lost(&self.config.hostname), ReplyState::Bdat);
                self.close(CloseSide::Local);
            }
            CommandError::Syntax(verb @ (Verb::Helo | Verb::Ehlo)) => {
                self.reply(BAD_HELO, verb_state(verb))
            }
            CommandError::Syntax(verb) => self.reply(SYNTAX, verb_state(verb)),
            CommandError::Address(Verb::Mail, _) => self.reply(BAD_SENDER, ReplyState::Mail),
            CommandError::Address(verb, _) => self.reply(BAD_RECIPIENT, verb_state(verb)),
        }
    }

    /// Runs a parsed command; `pipelined` tells whether more input followed it.
    fn command(&mut self, command: Command<'_>, pipelined: bool) {
        let verb = command.verb();
        if pipelined && self.config.reject_unauth_pipelining && self.pipelining_forbidden(verb) {
            let reply = closing::unauth_pipelining(&self.config.hostname);
            self.reply(reply, verb_state(verb));
            return self.close(CloseSide::Local);
        }
        if self.config.require_tls && self.tls.is_none() && !allowed_before_tls(verb) {
            if let Command::Bdat { size, last } = command {
                return self.skip_chunk(size, last, TLS_REQUIRED);
            }
            return self.reply(TLS_REQUIRED, verb_state(verb));
        }
        match command {
            Command::Helo(host) => self.cmd_helo(HeloVerb::Helo, host),
            Command::Ehlo(host) => self.cmd_helo(HeloVerb::Ehlo, host),
            Command::Mail { path, params } => self.cmd_mail(path, params),
            Command::Rcpt { path, params } => self.cmd_rcpt(path, params),
            Command::Data => self.cmd_data(),
            Command::Bdat { size, last } => self.cmd_bdat(size, last),
            Command::Rset => {
                self.end_transaction(AbortReason::Reset);
                self.reply(OK, ReplyState::Rset)
            }
            Command::Noop => self.reply(OK, ReplyState::Noop),
            Command::Quit => {
                self.reply(BYE, ReplyState::Quit);
                self.close(CloseSide::Local);
            }
            Command::Vrfy(_) if self.config.vrfy => self.reply(VRFY_OK, ReplyState::Vrfy),
            Command::Vrfy(_) => self.reply(NOT_IMPLEMENTED, ReplyState::Vrfy),
            Command::Expn(_) if self.config.expn => self.reply(VRFY_OK, ReplyState::Expn),
            Command::Expn(_) => self.reply(NOT_IMPLEMENTED, ReplyState::Expn),
            Command::Help(_) => self.reply(HELP, ReplyState::Help),
            Command::StartTls => self.cmd_starttls(pipelined),
            Command::Auth { mechanism, initial } => self.cmd_auth(mechanism, initial),
            Command::Xclient(args) => self.cmd_xclient(args),
        }
    }

    /// RFC 2920: EHLO, HELO and DATA must end a group of pipelined commands, and a client
    /// not told about PIPELINING must not pipeline at all.
    fn pipelining_forbidden(&self, verb: Verb) -> bool {
        let advertised =
            self.ext.pipelining && self.helo.as_ref().is_some_and(|h| h.verb == HeloVerb::Ehlo);
        !advertised || matches!(verb, Verb::Helo | Verb::Ehlo | Verb::Data)
    }

    fn cmd_helo(&mut self, verb: HeloVerb, host: &str) {
        // HELO/EHLO reset any transaction, as RSET does (RFC 5321 4.1.4).
        self.end_transaction(AbortReason::Reset);
        let info = HeloInfo {
            verb,
            host: host.to_owned(),
        };
        if self.config.hooks.helo {
            let hook = Hook::Helo {
                verb,
                host: info.host.clone(),
            };
            self.call_hook(Stage::Helo(info), hook);
        } else {
            self.helo_accepted(info, None);
        }
    }

    fn helo_accepted(&mut self, info: HeloInfo, custom: Option<Reply>) {
        let reply = custom.unwrap_or_else(|| match info.verb {
            HeloVerb::Helo => Reply::built(250, None, self.config.hostname.clone()),
            HeloVerb::Ehlo => self.ehlo_reply(&info.host),
        });
        let state = helo_state(info.verb);
        self.helo = Some(info);
        self.reply(reply, state);
    }

    fn ehlo_reply(&self, host: &str) -> Reply {
        let ext = &self.ext;
        let mut text = format!("{} greets {}", self.config.hostname, host);
        let size = format!("SIZE {}", self.config.max_message_size);
        let keywords = [
            (ext.pipelining, "PIPELINING"),
            (ext.size, size.as_str()),
            (ext.eight_bit_mime, "8BITMIME"),
            (ext.enhanced_status_codes, "ENHANCEDSTATUSCODES"),
            (ext.smtputf8, "SMTPUTF8"),
            (ext.chunking, "CHUNKING"),
            (ext.chunking && ext.binary_mime, "BINARYMIME"),
            (ext.dsn, "DSN"),
            (ext.starttls && self.tls.is_none(), "STARTTLS"),
        ];
        for (on, keyword) in keywords {
            if on {
                text.push('\n');
                text.push_str(keyword);
            }
        }
        if self.auth_offered() && self.auth.is_none() {
            text.push_str("\nAUTH");
            for mechanism in &self.config.auth_mechanisms {
                text.push(' ');
                text.push_str(mechanism);
            }
        }
        if self.xclient_allowed() {
            text.push_str("\nXCLIENT ADDR PORT NAME HELO LOGIN PROTO DESTADDR DESTPORT");
        }
        Reply::built(250, None, text)
    }

    fn param_support(&self) -> ParamSupport {
        let ext = &self.ext;
        ParamSupport {
            size: ext.size,
            eight_bit_mime: ext.eight_bit_mime,
            binary_mime: ext.chunking && ext.binary_mime,
            smtputf8: ext.smtputf8,
            dsn: ext.dsn,
            auth: self.auth_offered(),
        }
    }

    fn param_error(&mut self, error: ParamError, state: ReplyState) {
        let reply = match error {
            ParamError::Unknown => UNKNOWN_PARAM,
            ParamError::SizeExceeded => TOO_BIG,
            ParamError::Syntax | ParamError::Duplicate => BAD_PARAM,
        };
        self.reply(reply, state)
    }

    fn cmd_mail(&mut self, path: ReversePath, raw_params: &str) {
        let state = ReplyState::Mail;
        if self.config.require_helo && self.helo.is_none() {
            return self.reply(NEED_HELO, state);
        }
        if self.tx.is_some() {
            return self.reply(NESTED_MAIL, state);
        }
        if self.config.require_auth && self.auth.is_none() {
            return self.reply(AUTH_REQUIRED, state);
        }
        let support = self.param_support();
        let params = match parse_mail_params(raw_params, support, self.config.max_message_size) {
            Ok(params) => params,
            Err(error) => return self.param_error(error, state),
        };
        if !path.is_ascii() && !params.smtputf8 {
            return self.reply(UTF8_NEEDS_SMTPUTF8, state);
        }
        if self.config.hooks.mail_from {
            let hook = Hook::MailFrom {
                path: path.clone(),
                params: params.clone(),
            };
            self.call_hook(Stage::Mail(path, params), hook);
        } else {
            self.mail_accepted(path, params, None);
        }
    }

    fn mail_accepted(&mut self, path: ReversePath, params: MailParams, custom: Option<Reply>) {
        self.tx = Some(Box::new(Transaction {
            envelope: Envelope {
                mail_from: path,
                mail_params: params,
                recipients: Vec::new(),
            },
            sink: BodySink::Discard,
            chunks: None,
        }));
        self.reply(custom.unwrap_or(MAIL_OK), ReplyState::Mail);
    }

    fn cmd_rcpt(&mut self, path: ForwardPath, raw_params: &str) {
        let state = ReplyState::Rcpt;
        let Some(tx) = &self.tx else {
            return self.reply(NEED_MAIL, state);
        };
        if tx.envelope.recipients.len() >= self.config.max_recipients {
            // Clients that pipeline past the limit are common and harmless up to a point
            // (Postfix's smtpd_recipient_overshoot_limit); a flood beyond it counts as errors.
            self.overshoot = self.overshoot.saturating_add(1);
            if self.overshoot <= self.config.recipient_overshoot_limit {
                return self.out.reply_uncounted(TOO_MANY_RCPTS, state);
            }
            return self.reply(TOO_MANY_RCPTS, state);
        }
        let utf8_allowed = tx.envelope.mail_params.smtputf8;
        let params = match parse_rcpt_params(raw_params, self.param_support()) {
            Ok(params) => params,
            Err(error) => return self.param_error(error, state),
        };
        if !path.is_ascii() && !utf8_allowed {
            return self.reply(UTF8_NEEDS_SMTPUTF8, state);
        }
        if self.config.hooks.rcpt_to {
            let hook = Hook::RcptTo {
                path: path.clone(),
                params: params.clone(),
            };
            self.call_hook(Stage::Rcpt(path, params), hook);
        } else {
            self.rcpt_accepted(path, params, None);
        }
    }

    fn rcpt_accepted(&mut self, path: ForwardPath, params: RcptParams, custom: Option<Reply>) {
        let Some(tx) = &mut self.tx else {
            unreachable!("nothing ends a transaction while its RCPT hook is pending");
        };
        tx.envelope.recipients.push(Recipient { path, params });
        self.reply(custom.unwrap_or(RCPT_OK), ReplyState::Rcpt);
    }

    /// Why the transaction cannot take message data now, if it cannot.
    fn data_refusal(&self, chunked: bool) -> Option<Reply> {
        let Some(tx) = &self.tx else {
            return Some(NEED_MAIL);
        };
        if tx.envelope.recipients.is_empty() {
            return Some(NEED_RCPT);
        }
        if !chunked && tx.chunks.is_some() {
            return Some(DATA_AFTER_BDAT);
        }
        if !chunked && tx.envelope.mail_params.body == Some(Body::BinaryMime) {
            return Some(BINARY_NEEDS_BDAT);
        }
        None
    }

    fn cmd_data(&mut self) {
        if let Some(reply) = self.data_refusal(false) {
            return self.reply(reply, ReplyState::Data);
        }
        if self.config.hooks.data {
            self.call_hook(Stage::Data, Hook::Data);
        } else {
            self.start_data(None);
        }
    }

    fn start_data(&mut self, custom: Option<Reply>) {
        self.reply(custom.unwrap_or(START_DATA), ReplyState::Data);
        let (policy, max) = (self.config.bare_line_endings, self.config.max_message_size);
        let rx = if self.config.hooks.message {
            DataReceiver::new(policy, max)
        } else {
            // Nobody is told about the message: read it without storing it.
            DataReceiver::discarding(policy, max)
        };
        self.start_body();
        self.clock.transfer_started();
        self.phase = Phase::Data(rx);
    }

    /// The body of the open transaction starts: it gets the sink the config asks for.
    fn start_body(&mut self) {
        let sink = match (self.config.hooks.message, self.config.body_delivery) {
            (false, _) => BodySink::Discard,
            (true, BodyDelivery::Streamed { max_piece }) => BodySink::Stream { max_piece },
            (true, _) => {
                // One allocation for a message of the size the client declared; capped, so a
                // client that lies cannot make a session reserve much it never sends.
                let declared = self.envelope().and_then(|e| e.mail_params.size);
                let presize = declared.unwrap_or(0).min(self.config.max_message_size);
                BodySink::Buffer(Vec::with_capacity(presize.min(PRESIZE_LIMIT) as usize))
            }
        };
        let Some(tx) = self.tx.as_deref_mut() else {
            unreachable!("a body starts inside a transaction");
        };
        tx.sink = sink;
    }

    fn end_of_data(&mut self) {
        let commands = Phase::Command(LineReader::commands(self.line_limits));
        let Phase::Data(rx) = std::mem::replace(&mut self.phase, commands) else {
            unreachable!("the end of data comes in the DATA phase");
        };
        self.clock.transfer_ended();
        let Some(tx) = self.tx.take() else {
            unreachable!("message data is read inside a transaction");
        };
        if rx.exceeded() {
            return self.reply(TOO_BIG, ReplyState::Eod);
        }
        if rx.saw_bare_line_ending() && self.config.bare_line_endings == BareLineEndings::Reject {
            return self.reply(BARE_LINE_ENDING, ReplyState::Eod);
        }
        let facts = BodyFacts {
            size: rx.size(),
            eight_bit: rx.saw_eight_bit(),
            bare_line_endings: rx.saw_bare_line_ending(),
            chunked: false,
        };
        self.deliver(*tx, facts);
    }

    fn deliver(&mut self, tx: Transaction, facts: BodyFacts) {
        let state = if facts.chunked {
            ReplyState::Bdat
        } else {
            ReplyState::Eod
        };
        if !self.config.hooks.message {
            return self.reply(MESSAGE_OK, state);
        }
        let (body, streamed) = match tx.sink {
            BodySink::Buffer(body) => (body, false),
            BodySink::Stream { .. } => (Vec::new(), true),
            BodySink::Discard => unreachable!("a failed message is never delivered"),
        };
        let message = Box::new(Message {
            envelope: tx.envelope,
            body,
            streamed,
            size: facts.size,
            chunked: facts.chunked,
            eight_bit: facts.eight_bit,
            bare_line_endings: facts.bare_line_endings,
        });
        let stage = Stage::Message {
            chunked: facts.chunked,
        };
        self.call_hook(stage, Hook::Message(message));
    }

    fn cmd_bdat(&mut self, size: u64, last: bool) {
        if !self.ext.chunking {
            return self.skip_chunk(size, last, NOT_IMPLEMENTED);
        }
        if let Some(reply) = self.data_refusal(true) {
            return self.skip_chunk(size, last, reply);
        }
        let first = self.tx.as_ref().is_some_and(|tx| tx.chunks.is_none());
        if first && self.config.hooks.data {
            self.call_hook(Stage::Bdat { size, last }, Hook::Data);
        } else {
            self.start_chunk(size, last);
        }
    }

    /// Consumes a chunk's bytes without storing them, then sends `reply`.
    fn skip_chunk(&mut self, size: u64, last: bool, reply: Reply) {
        let mut rx = BdatReceiver::discarding(None, u64::MAX);
        rx.start_chunk(size, last);
        self.clock.transfer_started();
        self.phase = Phase::Bdat {
            rx,
            refusal: Some(reply),
        };
    }

    fn start_chunk(&mut self, size: u64, last: bool) {
        let Some(tx) = self.tx.as_deref_mut() else {
            unreachable!("a chunk is accepted inside a transaction");
        };
        let mut rx = match tx.chunks.take() {
            Some(rx) => rx,
            None => {
                let binary = tx.envelope.mail_params.body == Some(Body::BinaryMime);
                let policy = (!binary).then_some(self.config.bare_line_endings);
                let max = self.config.max_message_size;
                let rx = if self.config.hooks.message {
                    BdatReceiver::new(policy, max)
                } else {
                    BdatReceiver::discarding(policy, max)
                };
                self.start_body();
                rx
            }
        };
        rx.start_chunk(size, last);
        self.clock.transfer_started();
        self.phase = Phase::Bdat { rx, refusal: None };
    }

    fn end_of_chunk(&mut self) {
        let commands = Phase::Command(LineReader::commands(self.line_limits));
        let Phase::Bdat { rx, refusal } = std::mem::replace(&mut self.phase, commands) else {
            unreachable!("a chunk ends in the BDAT phase");
        };
        self.clock.transfer_ended();
        if let Some(reply) = refusal {
            return self.reply(reply, ReplyState::Bdat);
        }
        let Some(mut tx) = self.tx.take() else {
            unreachable!("a chunk is read inside a transaction");
        };
        // A failed message ends its transaction: later chunks of it get 503 (RFC 3030
        // leaves the choice).
        if rx.exceeded() {
            return self.reply(TOO_BIG, ReplyState::Bdat);
        }
        if rx.saw_bare_line_ending() && self.config.bare_line_endings == BareLineEndings::Reject {
            return self.reply(BARE_LINE_ENDING, ReplyState::Bdat);
        }
        if !rx.is_last() {
            tx.chunks = Some(rx);
            self.tx = Some(tx);
            return self.reply(CHUNK_OK, ReplyState::Bdat);
        }
        let facts = BodyFacts {
            size: rx.size(),
            eight_bit: rx.saw_eight_bit(),
            bare_line_endings: rx.saw_bare_line_ending(),
            chunked: true,
        };
        self.deliver(*tx, facts);
    }

    fn cmd_starttls(&mut self, pipelined: bool) {
        let state = ReplyState::StartTls;
        if self.tls.is_some() {
            return self.reply(TLS_ACTIVE, state);
        }
        if !self.ext.starttls {
            return self.reply(TLS_UNAVAILABLE, state);
        }
        self.reply(TLS_GO, state);
        if self.is_closed() {
            return;
        }
        self.phase = Phase::TlsHandshake {
            implicit: false,
            handshake_bytes: Vec::new(),
        };
        // Bytes after STARTTLS in the same read are never executed (CVE-2011-0411); by
        // default they are dropped, on request the connection closes.
        if pipelined && self.config.starttls_injection == StartTlsInjection::Close {
            return self.close(CloseSide::Local);
        }
        self.out.push(Output::StartTls);
    }

    fn auth_offered(&self) -> bool {
        self.ext.auth && (self.tls.is_some() || self.config.auth_without_tls)
    }

    fn cmd_auth(&mut self, mechanism: &str, initial: Option<&str>) {
        let state = ReplyState::Auth;
        if !self.ext.auth {
            return self.reply(NOT_IMPLEMENTED, state);
        }
        if !self.auth_offered() {
            return self.reply(AUTH_NEEDS_TLS, state);
        }
        if self.auth.is_some() {
            return self.reply(AUTH_ALREADY, state);
        }
        if self.tx.is_some() {
            return self.reply(AUTH_IN_TRANSACTION, state);
        }
        let mechanism = mechanism.to_ascii_uppercase();
        if !self.config.auth_mechanisms.contains(&mechanism) {
            return self.reply(AUTH_UNKNOWN_MECHANISM, state);
        }
        // RFC 4954: "=" is an empty initial response.
        let initial = initial.map(|s| if s == "=" { "" } else { s });
        match (mechanism.as_str(), initial) {
            ("PLAIN", None) => self.auth_prompt(AuthExchange::Plain, ""),
            ("PLAIN", Some(response)) => self.auth_plain(response.as_bytes()),
            ("LOGIN", None) => self.auth_prompt(AuthExchange::LoginUsername, "VXNlcm5hbWU6"),
            ("LOGIN", Some(response)) => self.auth_login_username(response.as_bytes()),
            (_, response) => {
                let response = match response.map(|r| base64_decode(r.as_bytes())) {
                    None => Vec::new(),
                    Some(Some(bytes)) => bytes,
                    Some(None) => return self.reply(AUTH_BAD_BASE64, state),
                };
                self.auth_step(mechanism, response, 0, None);
            }
        }
    }

    fn auth_prompt(&mut self, next: AuthExchange, challenge: &str) {
        let reply = Reply::built(334, None, challenge.to_owned());
        self.reply(reply, ReplyState::Auth);
        self.phase = Phase::Auth(next, LineReader::auth_exchange(self.line_limits));
    }

    fn auth_line(&mut self, exchange: AuthExchange, line: &[u8]) {
        if line == b"*" {
            return self.reply(AUTH_CANCELLED, ReplyState::Auth);
        }
        match exchange {
            AuthExchange::Plain => self.auth_plain(line),
            AuthExchange::LoginUsername => self.auth_login_username(line),
            AuthExchange::LoginPassword { username } => match decode_login_field(line) {
                Ok(password) => {
                    let stage = Stage::Auth {
                        mechanism: "LOGIN".into(),
                        username: Some(username.clone()),
                        step: 0,
                    };
                    self.auth_hook(stage, AuthRequest::Login { username, password });
                }
                Err(error) => self.sasl_error(error),
            },
            AuthExchange::Step {
                mechanism,
                step,
                username,
            } => match base64_decode(line) {
                Some(response) => self.auth_step(mechanism, response, step, username),
                None => self.reply(AUTH_BAD_BASE64, ReplyState::Auth),
            },
        }
    }

    fn sasl_error(&mut self, error: SaslError) {
        let reply = match error {
            SaslError::BadBase64 => AUTH_BAD_BASE64,
            SaslError::Malformed => AUTH_MALFORMED,
        };
        self.reply(reply, ReplyState::Auth)
    }

    fn auth_plain(&mut self, response: &[u8]) {
        match decode_plain(response) {
            Ok(creds) => {
                let stage = Stage::Auth {
                    mechanism: "PLAIN".into(),
                    username: Some(creds.authcid.clone()),
                    step: 0,
                };
                let request = AuthRequest::Plain {
                    authzid: creds.authzid,
                    authcid: creds.authcid,
                    password: creds.password,
                };
                self.auth_hook(stage, request);
            }
            Err(error) => self.sasl_error(error),
        }
    }

    fn auth_login_username(&mut self, response: &[u8]) {
        match decode_login_field(response) {
            Ok(username) => {
                self.auth_prompt(AuthExchange::LoginPassword { username }, "UGFzc3dvcmQ6")
            }
            Err(error) => self.sasl_error(error),
        }
    }

    fn auth_step(
        &mut self,
        mechanism: String,
        response: Vec<u8>,
        step: u32,
        username: Option<String>,
    ) {
        let stage = Stage::Auth {
            mechanism: mechanism.clone(),
            username,
            step,
        };
        let request = AuthRequest::Step {
            mechanism,
            response,
            step,
        };
        self.auth_hook(stage, request);
    }

    fn auth_hook(&mut self, stage: Stage, request: AuthRequest) {
        if self.config.hooks.auth {
            self.call_hook(stage, Hook::Auth(request));
        } else {
            // Nobody can verify credentials: fail closed.
            self.reply(AUTH_FAILED, ReplyState::Auth);
        }
    }

    fn xclient_allowed(&self) -> bool {
        self.info
            .remote_ip
            .is_some_and(|ip| self.config.xclient_trusted.contains(&ip))
    }

    fn cmd_xclient(&mut self, args: &str) {
        let state = ReplyState::Xclient;
        if !self.xclient_allowed() {
            return self.reply(XCLIENT_DENIED, state);
        }
        if self.tx.is_some() {
            return self.reply(NESTED_MAIL, state);
        }
        let Some(attrs) = xclient::parse(args) else {
            return self.reply(XCLIENT_SYNTAX, state);
        };
        attrs.apply(&mut self.info, &mut self.helo, &mut self.auth);
        // Postfix answers XCLIENT with a fresh greeting: the client starts over with EHLO.
        let greeting = self.greeting();
        self.reply(greeting, state);
    }

    // ----------------------------------------------------------------------------------
    // Hooks and decisions

    fn call_hook(&mut self, stage: Stage, hook: Hook) {
        let id = HookId(self.next_hook);
        self.next_hook += 1;
        self.out.hook_call(HookCall { id, hook });
        self.pending = Some(Pending { id, stage });
    }

    fn apply(&mut self, stage: Stage, decision: Decision) {
        match decision {
            Decision::Accept => self.accepted(stage, None),
            Decision::AcceptWith(reply) => self.accepted(stage, Some(reply)),
            Decision::Challenge(challenge) => {
                let Stage::Auth {
                    mechanism,
                    step,
                    username,
                } = stage
                else {
                    unreachable!("check_decision admits challenges for auth steps only");
                };
                let next = AuthExchange::Step {
                    mechanism,
                    step: step + 1,
                    username,
                };
                self.auth_prompt(next, &base64_encode(&challenge));
            }
            Decision::Reject(reply) => self.refused(stage, reply),
            Decision::Disconnect { reply, mode } => self.disconnect(stage, reply, mode),
            Decision::HookFailed => {
                let disconnect = self.config.hook_failure == HookFailurePolicy::Disconnect;
                if disconnect || matches!(stage, Stage::Connect) {
                    let reply = closing::technical_difficulties(&self.config.hostname);
                    self.reply(reply, stage.reply_state());
                    self.close(CloseSide::Local);
                } else if matches!(stage, Stage::Auth { .. }) {
                    self.refused(stage, AUTH_TEMPORARY);
                } else {
                    self.refused(stage, HOOK_TEMPORARY);
                }
            }
        }
    }

    /// KumoMTA's `kumo.disconnect` modes (SPEC 5).
    fn disconnect(&mut self, stage: Stage, reply: Reply, mode: DisconnectMode) {
        let code = reply.code();
        let state = stage.reply_state();
        match mode {
            DisconnectMode::If421 if code != 421 => self.refused(stage, reply),
            DisconnectMode::FollowWith421 if code != 421 => {
                self.reply(reply, state);
                self.reply(closing::after_previous_error(&self.config.hostname), state);
                self.close(CloseSide::Local);
            }
            _ => {
                self.reply(reply, state);
                self.close(CloseSide::Local);
            }
        }
    }

    fn accepted(&mut self, stage: Stage, custom: Option<Reply>) {
        match stage {
            Stage::Connect => self.greet(custom),
            Stage::Helo(info) => self.helo_accepted(info, custom),
            Stage::Auth {
                mechanism,
                username,
                ..
            } => {
                self.auth = Some(AuthInfo {
                    mechanism,
                    username,
                });
                self.reply(custom.unwrap_or(AUTH_OK), ReplyState::Auth);
            }
            Stage::Mail(path, params) => self.mail_accepted(path, params, custom),
            Stage::Rcpt(path, params) => self.rcpt_accepted(path, params, custom),
            Stage::Data => self.start_data(custom),
            Stage::Bdat { size, last } => self.start_chunk(size, last),
            Stage::Message { .. } => {
                let state = stage.reply_state();
                self.reply(custom.unwrap_or(MESSAGE_OK), state);
            }
        }
    }

    /// A refusal: the reply is sent and the stage has no effect. A 421 closes, and so does
    /// any refusal of the connection itself.
    fn refused(&mut self, stage: Stage, reply: Reply) {
        let closes = reply.code() == 421 || matches!(stage, Stage::Connect);
        if let (Stage::Bdat { size, last }, false) = (&stage, closes) {
            // The client sends the chunk regardless; the reply is owed after it.
            return self.skip_chunk(*size, *last, reply);
        }
        self.reply(reply, stage.reply_state());
        if closes {
            self.close(CloseSide::Local);
        }
    }

    // ----------------------------------------------------------------------------------
    // Replies and closing

    /// Writes a reply; the outbox counts it toward the hard error limit, and reaching the
    /// limit ends the session with `421 4.7.0`.
    fn reply(&mut self, reply: Reply, state: ReplyState) {
        let errors = self.out.reply(reply, state);
        if errors >= self.config.hard_error_limit && !self.out.is_closed() {
            let reply = closing::too_many_errors(&self.config.hostname);
            self.out.reply_uncounted(reply, state);
            self.close(CloseSide::Local);
        }
    }

    /// Ends the open transaction, if any; a streamed body that had started is announced as
    /// aborted.
    fn end_transaction(&mut self, reason: AbortReason) {
        if let Some(tx) = self.tx.take() {
            if tx.sink.is_streaming() {
                self.out.push(Output::BodyAborted(reason));
            }
        }
    }

    /// Ends the session: pending writes (unless the connection broke), `Close`, then the
    /// disconnect hook call. Idempotent.
    fn close(&mut self, side: CloseSide) {
        if self.is_closed() {
            return;
        }
        self.end_transaction(AbortReason::Closed);
        self.out.close(self.io_error.is_some());
        self.phase = Phase::Closed;
        self.pending = None;
        self.held = Vec::new();
        let context = DisconnectContext {
            arguments: DisconnectArguments {
                close: side,
                reply: self.out.last_reply().map(|(r, s)| LastReply::new(r, *s)),
                error: self.io_error.as_deref().cloned(),
            },
            connection: ConnectionDetails {
                info: self.info.clone(),
                helo: self.helo.clone(),
                tls: self.tls.as_deref().cloned(),
                auth: self.auth.clone(),
                early_talker: self.early_talker,
            },
            transaction: EmptyTransaction {},
            context: self.user_context.take(),
        };
        let id = HookId(self.next_hook);
        self.next_hook += 1;
        let hook = Hook::Disconnect(Box::new(context));
        self.out.hook_call(HookCall { id, hook });
    }
}

/// What is due when [`Session::poll_timeout`]'s instant passes.
#[derive(Clone, Copy, Debug)]
enum Due {
    /// The greeting delay is over.
    Greeting,
    /// Held input waits for the session to go on with it.
    Resume,
    /// A deadline passed: `421 4.4.2` and close.
    Timeout(Expiry),
}

/// What the session learnt about a body while reading it, for the message hook.
struct BodyFacts {
    size: u64,
    eight_bit: bool,
    bare_line_endings: bool,
    chunked: bool,
}

/// Why a message being received will not be accepted, once that is known.
fn body_failure(exceeded: bool, saw_bare: bool, config: &Config) -> Option<AbortReason> {
    if exceeded {
        Some(AbortReason::TooBig)
    } else if saw_bare && config.bare_line_endings == BareLineEndings::Reject {
        Some(AbortReason::BareLineEnding)
    } else {
        None
    }
}

/// The most body the session reserves up front for a declared SIZE.
const PRESIZE_LIMIT: u64 = 1 << 20;

/// The commands allowed before TLS when [`Config::require_tls`] is set.
fn allowed_before_tls(verb: Verb) -> bool {
    matches!(
        verb,
        Verb::Noop | Verb::Helo | Verb::Ehlo | Verb::StartTls | Verb::Quit
    )
}

fn check_decision(stage: &Stage, decision: &Decision) -> Result<(), Error> {
    match decision {
        Decision::AcceptWith(reply) => {
            let ok = match stage {
                Stage::Data => reply.code() == 354,
                // Hook::Data does not say whether DATA or BDAT asked, so the 354 the docs
                // prescribe must fit here too; BDAT sends no reply for it either way.
                Stage::Bdat { .. } => reply.code() == 354 || (200..300).contains(&reply.code()),
                _ => (200..300).contains(&reply.code()),
            };
            if !ok {
                return Err(Error::InvalidDecision(
                    "an acceptance needs a 2xx reply (354 for the data hook)",
                ));
            }
        }
        Decision::Reject(reply) if !reply.is_error() => {
            return Err(Error::InvalidDecision(
                "a rejection needs a 4xx or 5xx reply",
            ));
        }
        Decision::Challenge(_) => {
            match stage {
                Stage::Auth { mechanism, .. } if mechanism != "PLAIN" && mechanism != "LOGIN" => {}
                _ => return Err(Error::InvalidDecision(
                    "a challenge answers only auth steps of mechanisms the session does not decode",
                )),
            }
        }
        _ => {}
    }
    Ok(())
}

fn helo_state(verb: HeloVerb) -> ReplyState {
    match verb {
        HeloVerb::Helo => ReplyState::Helo,
        HeloVerb::Ehlo => ReplyState::Ehlo,
    }
}

fn verb_state(verb: Verb) -> ReplyState {
    match verb {
        Verb::Helo => ReplyState::Helo,
        Verb::Ehlo => ReplyState::Ehlo,
        Verb::Mail => ReplyState::Mail,
        Verb::Rcpt => ReplyState::Rcpt,
        Verb::Data => ReplyState::Data,
        Verb::Bdat => ReplyState::Bdat,
        Verb::Rset => ReplyState::Rset,
        Verb::Noop => ReplyState::Noop,
        Verb::Quit => ReplyState::Quit,
        Verb::Vrfy => ReplyState::Vrfy,
        Verb::Expn => ReplyState::Expn,
        Verb::Help => ReplyState::Help,
        Verb::StartTls => ReplyState::StartTls,
        Verb::Auth => ReplyState::Auth,
        Verb::Xclient => ReplyState::Xclient,
    }
}
