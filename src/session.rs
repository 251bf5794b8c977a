//! The state machine: every state transition of a connection lives in this module (the
//! command transitions in `commands`, the message ones in `message`). Reading
//! bytes is the readers' work (`line`, `data`, `bdat`, `proxy`), writing the outbox's, time
//! the clock's.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use crate::bdat::BdatReceiver;
use crate::clock::{Clock, Expiry};
use crate::config::StartTlsInjection;
use crate::config::{Config, ConfigError, Extensions, HookFailurePolicy};
use crate::context::{
    AuthInfo, CloseSide, ConnectionDetails, ConnectionInfo, DisconnectArguments, DisconnectContext,
    EmptyTransaction, HeloInfo, IoError, IoErrorKind, LastReply, ReplyState, TlsInfo,
};
use crate::data::DataReceiver;
use crate::error::Error;
use crate::held::HeldInput;
use crate::hooks::{AbortReason, Decision, DisconnectMode, Envelope, Hook, HookCall, HookId};
use crate::line::{LineLimits, LineReader, Read};
use crate::outbox::{closing, replies::*, Outbox, Output};
use crate::pending::{Pending, Stage};
use crate::proxy::{ProxyHeader, ProxyRead, ProxyReader};
use crate::reply::Reply;
use crate::sasl::{self, Exchange};
use crate::trace::{Protocol, Received};

mod commands;
mod message;

use crate::transaction::Transaction;

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
    Auth(Exchange, LineReader),
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
    held: HeldInput,
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
            held: HeldInput::default(),
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
    ///
    /// ```
    /// # use std::time::Instant;
    /// use smtp_session::{Config, ConnectionInfo, Hooks, Output, Session};
    /// let hooks = Hooks { mail_from: true, ..Hooks::default() };
    /// let config = Config { hooks, ..Config::default() };
    /// let now = Instant::now();
    /// let mut session = Session::new(config, ConnectionInfo::default(), now);
    /// while session.poll_output().is_some() {} // the greeting
    /// // The MAIL FROM hook pauses the session: what follows is kept, up to the limit.
    /// let input = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n";
    /// assert_eq!(session.handle_input(input, now).unwrap(), input.len());
    /// let flood = vec![b'x'; 1 << 20];
    /// let taken = session.handle_input(&flood, now).unwrap();
    /// assert!(taken < flood.len(), "the runtime keeps the rest and stops reading");
    /// ```
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

    /// Answers the pending hook call `id`, and the session goes on with any input it buffered
    /// meanwhile.
    ///
    /// A decision for an id that is not pending is refused with [`Error::UnknownHook`] and
    /// changes nothing. A decision that does not fit the hook (a 2xx rejection, a challenge
    /// outside AUTH, a 354 acceptance of MAIL...) is refused with [`Error::InvalidDecision`]
    /// **and the hook counts as failed**, as with [`Decision::HookFailed`]: the session never
    /// stays paused on a caller's mistake, and the error says what the mistake was.
    ///
    /// ```
    /// # use std::time::Instant;
    /// use smtp_session::{Config, ConnectionInfo, Decision, Hook, Hooks, Output, Session};
    /// let config = Config { hooks: Hooks { rcpt_to: true, ..Hooks::default() }, ..Config::default() };
    /// let now = Instant::now();
    /// let mut session = Session::new(config, ConnectionInfo::default(), now);
    /// session.handle_input(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@d.example>\r\n", now)?;
    /// let mut call = None;
    /// while let Some(output) = session.poll_output() {
    ///     if let Output::HookCall(c) = output { call = Some(c) }
    /// }
    /// let call = call.unwrap();
    /// assert!(matches!(&call.hook, Hook::RcptTo { path, .. } if path.to_string() == "x@d.example"));
    /// // KumoMTA's kumo.reject(550, "5.1.1 unknown user"): the session stays open.
    /// session.decide(call.id, Decision::reject(550, "5.1.1 unknown user")?, now)?;
    /// let Some(Output::Write(reply)) = session.poll_output() else { panic!() };
    /// assert_eq!(reply, b"550 5.1.1 unknown user\r\n");
    /// // The call is answered: a second decision for it is refused.
    /// assert!(session.decide(call.id, Decision::Accept, now).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decide(&mut self, id: HookId, decision: Decision, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        let pending = match self.pending.take() {
            Some(pending) if pending.id == id => pending,
            other => {
                self.pending = other;
                return Err(Error::UnknownHook(id));
            }
        };
        self.clock.event(now);
        let unfit = pending.stage.admits(&decision).err();
        let decision = if unfit.is_some() {
            Decision::HookFailed
        } else {
            decision
        };
        self.apply(pending.stage, decision);
        self.resume();
        self.settle();
        unfit.map_or(Ok(()), Err)
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
    #[inline]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop()
    }

    /// Optional, with [`BodyDelivery::Streamed`](crate::BodyDelivery::Streamed): hands the
    /// buffer of an [`Output::BodyPiece`] back once the runtime has written the piece, so
    /// that the next piece of the same message reuses it instead of allocating one. A
    /// runtime that keeps its pieces need not call it. The session keeps at most one such
    /// buffer, of at most `max_piece` bytes, and only while a streamed message is open:
    /// outside one this does nothing.
    ///
    /// ```
    /// # use std::time::Instant;
    /// use smtp_session::{BodyDelivery, Config, ConnectionInfo, Output, Session};
    /// let config = Config { body_delivery: BodyDelivery::STREAMED, ..Config::default() };
    /// let now = Instant::now();
    /// let mut session = Session::new(config, ConnectionInfo::default(), now);
    /// session.handle_input(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n", now).unwrap();
    /// while session.poll_output().is_some() {}
    /// let mut spool = Vec::new();
    /// for read in [&b"Subject: one\r\n"[..], b"\r\nbody\r\n"] {
    ///     session.handle_input(read, now).unwrap();
    ///     while let Some(output) = session.poll_output() {
    ///         if let Output::BodyPiece(piece) = output {
    ///             spool.extend_from_slice(&piece); // write it to the spool
    ///             session.recycle_piece(piece);
    ///         }
    ///     }
    /// }
    /// assert_eq!(spool, b"Subject: one\r\n\r\nbody\r\n");
    /// ```
    pub fn recycle_piece(&mut self, piece: Vec<u8>) {
        if let Some(tx) = self.tx.as_deref_mut() {
            tx.sink.recycle(piece);
        }
    }

    /// Optional: hands the buffer of an [`Output::Write`] back once the runtime has sent (or
    /// copied) its bytes, so that the next replies are written into it instead of a new
    /// allocation. It pays with hooks: the replies before each hook call are flushed into a
    /// `Write` of their own (SPEC 7), so a pipelining client with every hook subscribed
    /// gets several writes per transaction. The bytes written are the same either way.
    ///
    /// The session keeps at most one such buffer, of at most 4 KiB (a larger one is
    /// dropped), and drops it the next time its outputs are drained ([`poll_output`]
    /// returns `None`) and when it closes: a runtime that hands its buffers back while it
    /// drains leaves an idle session holding none.
    ///
    /// [`poll_output`]: Session::poll_output
    ///
    /// ```
    /// # use std::time::Instant;
    /// use smtp_session::{Config, ConnectionInfo, Decision, Hooks, Output, Session};
    /// let config = Config { hooks: Hooks::ALL, ..Config::default() };
    /// let now = Instant::now();
    /// let mut session = Session::new(config, ConnectionInfo::default(), now);
    /// session.handle_input(b"EHLO c\r\nNOOP\r\nMAIL FROM:<a@b.example>\r\n", now)?;
    /// let mut socket = Vec::new();
    /// while let Some(output) = session.poll_output() {
    ///     match output {
    ///         Output::Write(bytes) => {
    ///             socket.extend_from_slice(&bytes); // send it
    ///             session.recycle_write(bytes);
    ///         }
    ///         Output::HookCall(call) if call.needs_decision() => {
    ///             session.decide(call.id, Decision::Accept, now)?;
    ///         }
    ///         _ => {}
    ///     }
    /// }
    /// assert!(socket.ends_with(b"250 2.0.0 OK\r\n250 2.1.0 Sender OK\r\n"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recycle_write(&mut self, bytes: Vec<u8>) {
        self.out.recycle_write(bytes);
    }

    /// Optional: hands a hook call back once the runtime is done with it (it has read the
    /// call, and copied or stored what it keeps), so that the session makes its next copies
    /// in the call's buffers instead of allocating: the strings of the next MAIL and RCPT
    /// paths, both the parser's (kept for the envelope) and the hook calls' copies, and the
    /// next message's body buffer, recipient list and box. It pays with hooks that are
    /// answered at once, where a pipelining client makes one call per command. What the
    /// client receives and the hooks are given is the same either way; the call may be
    /// handed back before or after its decision.
    ///
    /// The session keeps at most 16 strings of at most 256 bytes, one body buffer of at
    /// most 1 MiB (and of at most [`Config::max_message_size`]), one recipient list and one
    /// message box, never an auth hook's credentials, and drops them all the next time its
    /// outputs are drained ([`poll_output`] returns `None`) and when it closes, so an idle
    /// session holds none. A message hook call's buffers are kept only beside those of an
    /// earlier call of the same drain: alone, they would seldom meet a next message before
    /// the drain ends.
    ///
    /// [`poll_output`]: Session::poll_output
    ///
    /// ```
    /// # use std::time::Instant;
    /// use smtp_session::{Config, ConnectionInfo, Decision, Hook, Hooks, Output, Session};
    /// let config = Config { hooks: Hooks::ALL, ..Config::default() };
    /// let now = Instant::now();
    /// let mut session = Session::new(config, ConnectionInfo::default(), now);
    /// let input = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n";
    /// session.handle_input(input, now)?;
    /// let mut recipients = Vec::new();
    /// while let Some(output) = session.poll_output() {
    ///     if let Output::HookCall(call) = output {
    ///         if let Hook::RcptTo { path, .. } = &call.hook {
    ///             recipients.push(path.to_string()); // what the policy keeps
    ///         }
    ///         if call.needs_decision() {
    ///             let id = call.id;
    ///             session.recycle_hook(call);
    ///             session.decide(id, Decision::Accept, now)?;
    ///         }
    ///     }
    /// }
    /// assert_eq!(recipients, ["c@d.example"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn recycle_hook(&mut self, call: HookCall) {
        if self.is_closed()
            || matches!(
                call.hook,
                Hook::Connect | Hook::Data | Hook::Auth(_) | Hook::Disconnect(_)
            )
        {
            return;
        }
        let max_body = message::MAX_KEPT_BODY.min(self.config.max_message_size);
        let max_body = usize::try_from(max_body).unwrap_or(usize::MAX);
        // A message alone does not start the spares: the next transaction seldom comes in
        // the same drain (a client waits for the reply to its data), and they would cost an
        // allocation of their own for nothing.
        if self.out.spares.is_none() && matches!(call.hook, Hook::Message(_)) {
            return;
        }
        self.out
            .spares
            .get_or_insert_with(Box::default)
            .keep(call, max_body);
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

    /// The errors counted toward [`Config::hard_error_limit`] so far: 4xx and 5xx replies to
    /// the client's commands, except a 421, a reply made with
    /// [`Reply::server_fault`](crate::Reply::server_fault), and refusals a well-behaved
    /// client cannot avoid (recipients pipelined past the limit). A runtime can pace a
    /// client's error replies by it, as Postfix's `smtpd_error_sleep_time` does.
    #[must_use]
    pub fn error_count(&self) -> u32 {
        self.out.errors()
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

    /// The `Received:` trace field (RFC 5321 section 4.4) for a message of this session, from
    /// what the session knows: the HELO name, the client's address and reverse DNS name, the
    /// protocol keyword (ESMTPS, ESMTPSA, UTF8SMTP, LMTP...), the TLS details, and the
    /// recipient when there is one. `date` is an RFC 5322 date-time (the session reads no
    /// clock) and `id` the runtime's name for the message. Prepend
    /// [`trace::return_path`](crate::trace::return_path) too at final delivery.
    ///
    /// Prepending is safe because no client byte can continue these fields: content that
    /// begins with a space or a tab (a continuation line, which would fold into the last
    /// field written above it) is refused with `550 5.6.0` by default, or stored after an
    /// empty line under [`LeadingWhitespace::InsertEmptyLine`](crate::LeadingWhitespace),
    /// and [`Message::leading_whitespace`](crate::Message::leading_whitespace) tells. See
    /// [`Config::leading_whitespace`](crate::Config::leading_whitespace). The same holds for
    /// any field the receiver writes above the message (`Authentication-Results:`, a
    /// filter's).
    ///
    /// ```
    /// # use std::time::Instant;
    /// use smtp_session::{Config, ConnectionInfo, Hook, Output, Session};
    /// let info = ConnectionInfo { remote_ip: Some("192.0.2.7".parse().unwrap()), ..ConnectionInfo::default() };
    /// let config = Config { hostname: "mx.example".into(), ..Config::default() };
    /// let now = Instant::now();
    /// let mut session = Session::new(config, info, now);
    /// let input = b"EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<b@mx.example>\r\nDATA\r\nhi\r\n.\r\n";
    /// session.handle_input(input, now).unwrap();
    /// while let Some(output) = session.poll_output() {
    ///     if let Output::HookCall(call) = output {
    ///         if let Hook::Message(message) = &call.hook {
    ///             let received = session.received(&message.envelope, "1A2B", "Sat, 28 Nov 2026 10:00:00 +0000");
    ///             assert_eq!(
    ///                 received.to_string(),
    ///                 "Received: from c.example ([192.0.2.7]) by mx.example with ESMTP id 1A2B\r\n\
    ///                  \tfor <b@mx.example>; Sat, 28 Nov 2026 10:00:00 +0000\r\n"
    ///             );
    ///         }
    ///     }
    /// }
    /// ```
    pub fn received<'a>(
        &'a self,
        envelope: &'a Envelope,
        id: &'a str,
        date: &'a str,
    ) -> Received<'a> {
        let helo = self.helo.as_ref();
        let protocol = Protocol {
            lmtp: self.config.lmtp,
            ehlo: helo.is_some_and(|h| h.verb.is_extended()),
            tls: self.tls.is_some(),
            authenticated: self.auth.is_some(),
            smtputf8: envelope.mail_params.smtputf8,
        };
        let mut received = Received::new(&self.config.hostname, protocol, date)
            .id(id)
            .recipients(envelope.recipients.iter().map(|r| &r.path));
        if let Some(helo) = helo {
            received = received.helo(&helo.host);
        }
        if let Some(ptr) = &self.info.remote_ptr {
            received = received.reverse_dns(ptr);
        }
        if let Some(ip) = self.info.remote_ip {
            received = received.remote_ip(ip);
        }
        if let Some(tls) = self.tls.as_deref() {
            received = received.tls(tls);
        }
        received
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

    /// Records the client's reverse DNS name (Halon's `remoteptr`), for a runtime that looks
    /// it up once the session exists: from the connect hook, the address is the one a PROXY
    /// header gave. It goes into the `Received:` field and the disconnect context.
    pub fn set_remote_ptr(&mut self, name: Option<String>) {
        self.info.remote_ptr = name;
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
        let n = self.held.append(data, self.config.max_pending_input);
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
        let held = self.held.take();
        let used = self.process(held.unused());
        if self.is_closed() || matches!(self.phase, Phase::TlsHandshake { .. }) {
            // Nothing read before a handshake or after the close is ever acted on.
            return;
        }
        self.held.give_back(held, used);
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

    #[cold]
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

    #[cold]
    fn shutdown_now(&mut self) {
        let reply = closing::shutdown(&self.config.hostname);
        self.reply(reply, ReplyState::Shutdown);
        self.close(CloseSide::Local);
    }

    // ----------------------------------------------------------------------------------
    // Connection start

    #[cold]
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

    #[inline(never)]
    fn connect(&mut self) {
        self.phase = Phase::Connecting;
        if self.config.hooks.connect {
            self.call_hook(Stage::Connect, Hook::Connect);
        } else {
            self.greet(None);
        }
    }

    #[inline(never)]
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
        let (hostname, banner) = (&self.config.hostname, self.config.banner.trim_end());
        let mut text = String::with_capacity(hostname.len() + 1 + banner.len());
        text.push_str(hostname);
        if !banner.is_empty() {
            text.push(' ');
            text.push_str(banner);
        }
        Reply::built(220, None, text)
    }

    // ----------------------------------------------------------------------------------
    // Hooks and decisions

    #[inline]
    fn call_hook(&mut self, stage: Stage, hook: Hook) {
        let id = HookId(self.next_hook);
        self.next_hook += 1;
        self.out.hook_call(id, hook);
        self.pending = Some(Pending { id, stage });
    }

    fn apply(&mut self, stage: Stage, decision: Decision) {
        match decision {
            Decision::Accept => self.accepted(stage, None),
            Decision::AcceptWith(reply) => self.accepted(stage, Some(reply)),
            Decision::Challenge(challenge) => self.challenge(stage, &challenge),
            Decision::Reject(reply) => self.refused(stage, reply),
            Decision::PerRecipient(replies) => self.per_recipient(stage, replies),
            Decision::Disconnect { reply, mode } => self.disconnect(stage, reply, mode),
            Decision::HookFailed => self.hook_failed(stage),
        }
    }

    #[cold]
    fn challenge(&mut self, stage: Stage, challenge: &[u8]) {
        let Stage::Auth {
            mechanism,
            step,
            username,
        } = stage
        else {
            unreachable!("Stage::admits lets challenges answer auth steps only");
        };
        self.auth_step(sasl::challenge(mechanism, step, username, challenge));
    }

    #[cold]
    fn hook_failed(&mut self, stage: Stage) {
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

    /// LMTP: a reply for each recipient, in RCPT order; an error among them counts once
    /// toward the error limit (unless each is the server's fault).
    #[cold]
    fn per_recipient(&mut self, stage: Stage, replies: Vec<Reply>) {
        let state = stage.reply_state();
        let any_error = replies.iter().any(|r| r.is_error() && !r.is_server_fault());
        for reply in replies {
            self.out.reply_uncounted(reply, state);
        }
        if any_error {
            let errors = self.out.count_error();
            self.check_error_limit(errors, state);
        }
    }

    /// KumoMTA's `kumo.disconnect` modes (SPEC 5).
    #[cold]
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
            Stage::Mail(tx) => self.mail_accepted(tx, custom),
            Stage::Rcpt => self.rcpt_accepted(custom),
            Stage::Data => self.start_data(custom),
            Stage::Verify { .. } => {
                let state = stage.reply_state();
                self.reply(custom.unwrap_or(VRFY_OK), state)
            }
            Stage::Bdat { size, last } => self.start_chunk(size, last),
            Stage::Message {
                lmtp_recipients, ..
            } => {
                let state = stage.reply_state();
                let reply = custom.unwrap_or(MESSAGE_OK);
                self.message_replies(state, lmtp_recipients.unwrap_or(1), reply);
            }
        }
    }

    /// A refusal: the reply is sent and the stage has no effect. A 421 closes, and so does
    /// any refusal of the connection itself.
    #[inline(never)]
    fn refused(&mut self, stage: Stage, reply: Reply) {
        if let (Stage::Rcpt, Some(tx)) = (&stage, self.tx.as_deref_mut()) {
            tx.asked = None;
        }
        let closes = reply.code() == 421 || matches!(stage, Stage::Connect);
        if let (Stage::Bdat { size, last }, false) = (&stage, closes) {
            // The client sends the chunk regardless; the reply is owed after it.
            return self.skip_chunk(*size, *last, reply);
        }
        match stage {
            Stage::Message {
                lmtp_recipients: Some(recipients),
                ..
            } if !closes => self.message_replies(stage.reply_state(), recipients, reply),
            _ => self.reply(reply, stage.reply_state()),
        }
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
        self.check_error_limit(errors, state);
    }

    fn check_error_limit(&mut self, errors: u32, state: ReplyState) {
        if errors >= self.config.hard_error_limit && !self.out.is_closed() {
            self.too_many_errors(state);
        }
    }

    #[cold]
    fn too_many_errors(&mut self, state: ReplyState) {
        let reply = closing::too_many_errors(&self.config.hostname);
        self.out.reply_uncounted(reply, state);
        self.close(CloseSide::Local);
    }

    /// Ends the session: pending writes (unless the connection broke), `Close`, then the
    /// disconnect hook call. Idempotent.
    #[cold]
    fn close(&mut self, side: CloseSide) {
        if self.is_closed() {
            return;
        }
        self.end_transaction(AbortReason::Closed);
        self.out.close(self.io_error.is_some());
        self.phase = Phase::Closed;
        self.pending = None;
        self.held.clear();
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
        self.out.hook_call(id, Hook::Disconnect(Box::new(context)));
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
