//! The state machine: every state transition of a connection lives in this file.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use memchr::memchr;

use crate::address::{ForwardPath, ReversePath};
use crate::command::{parse_command, Command, CommandError, Verb};
use crate::config::{Config, Extensions, HookFailurePolicy, StartTlsInjection};
use crate::context::{
    AuthInfo, CloseSide, ConnectionDetails, ConnectionInfo, DisconnectArguments, DisconnectContext,
    EmptyTransaction, HeloInfo, HeloVerb, IoError, IoErrorKind, LastReply, ReplyState, TlsInfo,
};
use crate::data::{BareLineEndings, DataReceiver, DataStatus};
use crate::error::Error;
use crate::hooks::{
    AuthRequest, Decision, DisconnectMode, Envelope, Hook, HookCall, HookId, Message, Recipient,
};
use crate::params::{
    parse_mail_params, parse_rcpt_params, Body, MailParams, ParamError, ParamSupport, RcptParams,
};
use crate::proxy::{parse_proxy_header, ProxyHeader, ProxyParse};
use crate::reply::{EnhancedCode, Reply};
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
}

const fn e(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
    Some(EnhancedCode::new(class, subject, detail))
}

// The default replies, in one place. Enhanced codes are stripped when ENHANCEDSTATUSCODES
// is switched off.
const OK: Reply = Reply::fixed(250, e(2, 0, 0), "OK");
const MAIL_OK: Reply = Reply::fixed(250, e(2, 1, 0), "Sender OK");
const RCPT_OK: Reply = Reply::fixed(250, e(2, 1, 5), "Recipient OK");
const MESSAGE_OK: Reply = Reply::fixed(250, e(2, 0, 0), "Message accepted");
const CHUNK_OK: Reply = Reply::fixed(250, e(2, 0, 0), "Chunk accepted");
const START_DATA: Reply = Reply::fixed(354, None, "End data with <CR><LF>.<CR><LF>");
const BYE: Reply = Reply::fixed(221, e(2, 0, 0), "Bye");
const VRFY_OK: Reply = Reply::fixed(
    252,
    e(2, 5, 0),
    "Cannot verify the user, but will accept mail for delivery",
);
const NOT_IMPLEMENTED: Reply = Reply::fixed(502, e(5, 5, 1), "Command not implemented");
const HELP: Reply = Reply::fixed(
    214,
    e(2, 0, 0),
    "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
);
const TLS_GO: Reply = Reply::fixed(220, e(2, 0, 0), "Ready to start TLS");
const TLS_UNAVAILABLE: Reply = Reply::fixed(454, e(4, 7, 0), "TLS not available");
const TLS_ACTIVE: Reply = Reply::fixed(503, e(5, 5, 1), "TLS already active");
const TLS_REQUIRED: Reply = Reply::fixed(530, e(5, 7, 0), "Must issue a STARTTLS command first");
const AUTH_REQUIRED: Reply = Reply::fixed(530, e(5, 7, 0), "Authentication required");
const AUTH_OK: Reply = Reply::fixed(235, e(2, 7, 0), "Authentication successful");
const AUTH_FAILED: Reply = Reply::fixed(535, e(5, 7, 8), "Authentication credentials invalid");
const AUTH_NEEDS_TLS: Reply = Reply::fixed(
    538,
    e(5, 7, 11),
    "Encryption required for requested authentication mechanism",
);
const AUTH_ALREADY: Reply = Reply::fixed(503, e(5, 5, 1), "Already authenticated");
const AUTH_IN_TRANSACTION: Reply = Reply::fixed(
    503,
    e(5, 5, 1),
    "AUTH not allowed during a mail transaction",
);
const AUTH_UNKNOWN_MECHANISM: Reply =
    Reply::fixed(504, e(5, 5, 4), "Unrecognized authentication type");
const AUTH_CANCELLED: Reply = Reply::fixed(501, e(5, 7, 0), "Authentication cancelled");
const AUTH_BAD_BASE64: Reply = Reply::fixed(501, e(5, 5, 2), "Invalid base64 data");
const AUTH_MALFORMED: Reply = Reply::fixed(501, e(5, 5, 2), "Malformed authentication response");
const AUTH_LINE_TOO_LONG: Reply =
    Reply::fixed(500, e(5, 5, 6), "Authentication exchange line is too long");
const AUTH_TEMPORARY: Reply = Reply::fixed(454, e(4, 7, 0), "Temporary authentication failure");
const HOOK_TEMPORARY: Reply =
    Reply::fixed(451, e(4, 3, 0), "Temporary failure, please try again later");
const NEED_HELO: Reply = Reply::fixed(503, e(5, 5, 1), "Send HELO or EHLO first");
const NESTED_MAIL: Reply = Reply::fixed(503, e(5, 5, 1), "Sender already specified");
const NEED_MAIL: Reply = Reply::fixed(503, e(5, 5, 1), "Need MAIL command first");
const NEED_RCPT: Reply = Reply::fixed(503, e(5, 5, 1), "Need RCPT command first");
const DATA_AFTER_BDAT: Reply = Reply::fixed(503, e(5, 5, 1), "DATA cannot follow BDAT");
const BINARY_NEEDS_BDAT: Reply = Reply::fixed(503, e(5, 5, 1), "BODY=BINARYMIME requires BDAT");
const TOO_MANY_RCPTS: Reply = Reply::fixed(452, e(4, 5, 3), "Too many recipients");
const TOO_BIG: Reply = Reply::fixed(
    552,
    e(5, 3, 4),
    "Message size exceeds fixed maximum message size",
);
const BARE_LINE_ENDING: Reply = Reply::fixed(
    550,
    e(5, 6, 0),
    "Message contains bare CR or LF; line endings must be CRLF",
);
const UTF8_NEEDS_SMTPUTF8: Reply = Reply::fixed(
    553,
    e(5, 6, 7),
    "Non-ASCII address requires the SMTPUTF8 parameter",
);
const BAD_SENDER: Reply = Reply::fixed(501, e(5, 1, 7), "Bad sender address syntax");
const BAD_RECIPIENT: Reply = Reply::fixed(501, e(5, 1, 3), "Bad recipient address syntax");
const BAD_PARAM: Reply = Reply::fixed(501, e(5, 5, 4), "Invalid command parameter");
const UNKNOWN_PARAM: Reply = Reply::fixed(555, e(5, 5, 4), "Unsupported command parameter");
const SYNTAX: Reply = Reply::fixed(501, e(5, 5, 4), "Syntax error in arguments");
const BAD_HELO: Reply = Reply::fixed(501, e(5, 5, 4), "Invalid domain name");
const UNKNOWN_COMMAND: Reply = Reply::fixed(500, e(5, 5, 1), "Command unrecognized");
const NOT_UTF8: Reply = Reply::fixed(500, e(5, 5, 2), "Invalid UTF-8 in command");
const LINE_TOO_LONG: Reply = Reply::fixed(500, e(5, 5, 2), "Line too long");
const XCLIENT_DENIED: Reply = Reply::fixed(550, e(5, 7, 0), "XCLIENT denied");
const XCLIENT_SYNTAX: Reply = Reply::fixed(501, e(5, 5, 4), "Bad XCLIENT attribute");

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
            Stage::Helo(info) => match info.verb {
                HeloVerb::Helo => ReplyState::Helo,
                HeloVerb::Ehlo => ReplyState::Ehlo,
            },
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

struct Chunk {
    remaining: u64,
    last: bool,
    /// The error reply owed once the chunk's bytes are consumed; None when it is stored.
    error: Option<Reply>,
}

enum Phase {
    /// Waiting for the PROXY protocol header.
    Proxy,
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
    Command,
    /// Reading the client's lines of an AUTH exchange.
    Auth(AuthExchange),
    /// Reading message data after 354.
    Data {
        rx: DataReceiver,
        body: Vec<u8>,
    },
    /// Reading a BDAT chunk.
    Bdat(Chunk),
    Closed,
}

struct Transaction {
    envelope: Envelope,
    /// BDAT chunks received so far (only when a message hook will be given them).
    body: Vec<u8>,
    /// BDAT bytes received so far, stored or not.
    size: u64,
    /// True once a BDAT chunk was accepted.
    chunked: bool,
    /// True once BDAT chunks went past the size limit.
    exceeded: bool,
}

/// The server side of one SMTP connection, as a pure state machine.
///
/// See the [crate documentation](crate) for the run loop and the obligations it implies.
pub struct Session {
    config: Arc<Config>,
    ext: Extensions,
    info: ConnectionInfo,
    phase: Phase,

    // Input: bytes not yet processed live in `inbuf[in_start..]`; the first `in_scanned` of
    // them are known to hold no LF, so a slow sender is not rescanned.
    inbuf: Vec<u8>,
    in_start: usize,
    in_scanned: usize,
    /// Set while the rest of an overlong line is skipped; true for an AUTH line.
    skipping_long_line: Option<bool>,
    eof: bool,
    shutdown_requested: bool,

    // Output: replies are coalesced in `wbuf`, queued as one Write when an action follows
    // them, else handed out as one by `poll_output`.
    out: VecDeque<Output>,
    wbuf: Vec<u8>,

    early_talker: bool,
    /// Recipients refused for being past the limit, this session.
    overshoot: usize,
    /// More input followed the command being handled, in the same read.
    input_follows: bool,
    /// The buffer being processed is followed by more of the same read, not yet buffered.
    read_continues: bool,
    helo: Option<HeloInfo>,
    tls: Option<Box<TlsInfo>>,
    auth: Option<AuthInfo>,
    proxy: Option<Box<ProxyHeader>>,
    tx: Option<Box<Transaction>>,
    pending: Option<Pending>,
    next_hook: u64,
    errors: u32,
    last_reply: Option<(Reply, ReplyState)>,
    io_error: Option<Box<IoError>>,
    last_activity: Instant,
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
    /// A config with values outside their ranges is clamped (see [`Config::validate`]).
    pub fn new(config: impl Into<Arc<Config>>, info: ConnectionInfo, now: Instant) -> Session {
        let mut config: Arc<Config> = config.into();
        if config.validate().is_err() {
            config = Arc::new(config.clamped());
        }
        let ext = config.extensions;
        let mut session = Session {
            ext,
            info,
            phase: Phase::Connecting,
            inbuf: Vec::new(),
            in_start: 0,
            in_scanned: 0,
            skipping_long_line: None,
            eof: false,
            shutdown_requested: false,
            out: VecDeque::new(),
            wbuf: Vec::new(),
            early_talker: false,
            overshoot: 0,
            input_follows: false,
            read_continues: false,
            helo: None,
            tls: None,
            auth: None,
            proxy: None,
            tx: None,
            pending: None,
            next_hook: 0,
            errors: 0,
            last_reply: None,
            io_error: None,
            last_activity: now,
            user_context: None,
            config,
        };
        if session.config.proxy_protocol {
            session.phase = Phase::Proxy;
        } else {
            session.after_proxy();
        }
        session.flush();
        session
    }

    // ----------------------------------------------------------------------------------
    // Inputs

    /// Feeds bytes received from the client and returns how many were taken.
    ///
    /// All of them are taken unless processing is paused (a hook is pending, or the replies
    /// not yet polled reach [`Config::max_pending_output`]) and the buffer of unprocessed
    /// input ([`Config::max_pending_input`]) is full. The runtime then keeps the rest, stops
    /// reading, and offers them again after it drained [`poll_output`](Session::poll_output)
    /// or made its next [`decide`](Session::decide).
    pub fn handle_input(&mut self, data: &[u8], now: Instant) -> Result<usize, Error> {
        self.check_open()?;
        self.last_activity = now;
        if matches!(self.phase, Phase::TlsHandshake { .. }) {
            // Plaintext read before the handshake: never executed (CVE-2011-0411).
            if !data.is_empty() && self.config.starttls_injection == StartTlsInjection::Close {
                self.close(CloseSide::Local);
            }
            return Ok(data.len());
        }
        if matches!(self.phase, Phase::Connecting | Phase::GreetingDelay { .. }) && !data.is_empty()
        {
            self.early_talker = true;
        }
        let mut taken = self.take_input(data);
        if taken < data.len() && matches!(self.phase, Phase::GreetingDelay { .. }) {
            // The buffer filled before the greeting: the client is an early talker already,
            // and waiting on would refuse input with no hook to wait for. Greet (or refuse) now.
            self.connect();
            self.process_inbuf();
            taken += self.take_input(&data[taken..]);
        }
        self.settle();
        Ok(taken)
    }

    /// The client closed its side. Commands already received are still answered; the
    /// session then closes with [`CloseSide::Remote`].
    pub fn handle_eof(&mut self, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        self.last_activity = now;
        self.eof = true;
        self.settle();
        Ok(())
    }

    /// Reading or writing failed: the session closes at once, without further writes, and
    /// the error goes into the disconnect context.
    pub fn handle_io_error(&mut self, error: IoError, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        self.last_activity = now;
        self.io_error = Some(Box::new(error));
        self.close(CloseSide::Remote);
        Ok(())
    }

    /// Time passed. If the deadline from [`poll_timeout`](Session::poll_timeout) is reached,
    /// the session sends `421 4.4.2` and closes; called early, it does nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        match self.poll_timeout() {
            Some(deadline)
                if now >= deadline && matches!(self.phase, Phase::GreetingDelay { .. }) =>
            {
                self.last_activity = now;
                self.connect();
                self.process_inbuf();
                self.settle();
            }
            Some(deadline) if now >= deadline => {
                if !matches!(self.phase, Phase::Proxy | Phase::TlsHandshake { .. }) {
                    let text = format!("{} Error: timeout exceeded", self.config.hostname);
                    self.send(Reply::built(421, e(4, 4, 2), text), ReplyState::Timeout);
                }
                self.close(CloseSide::Local);
            }
            _ => {}
        }
        self.flush();
        Ok(())
    }

    /// The server is shutting down: the session sends `421 4.3.2` and closes as soon as no
    /// reply is owed (at once when it waits for a command).
    pub fn handle_shutdown(&mut self, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        let _ = now;
        self.shutdown_requested = true;
        self.settle();
        Ok(())
    }

    /// The TLS handshake asked for by [`Output::StartTls`] succeeded. The session forgets
    /// HELO and any transaction (RFC 3207) and records the details for the context.
    pub fn handle_tls_established(&mut self, tls: TlsInfo, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        let Phase::TlsHandshake { implicit, .. } = self.phase else {
            return Err(Error::NoTlsRequested);
        };
        self.last_activity = now;
        self.tls = Some(Box::new(tls));
        self.helo = None;
        self.tx = None;
        self.auth = None;
        if implicit {
            self.start_connect();
        } else {
            self.phase = Phase::Command;
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
        self.handle_io_error(
            IoError {
                kind: IoErrorKind::Tls,
                ..error
            },
            now,
        )
    }

    /// Answers the pending hook call `id`. On success the session goes on with any input it
    /// buffered meanwhile. A decision that does not fit (wrong id, a 2xx rejection, a
    /// challenge outside AUTH) is refused with an error and changes nothing.
    pub fn decide(&mut self, id: HookId, decision: Decision, now: Instant) -> Result<(), Error> {
        self.check_open()?;
        let stage = match &self.pending {
            Some(p) if p.id == id => &p.stage,
            _ => return Err(Error::UnknownHook(id)),
        };
        check_decision(stage, &decision)?;
        let Some(pending) = self.pending.take() else {
            return Err(Error::UnknownHook(id));
        };
        self.last_activity = now;
        self.apply(pending.stage, decision);
        self.process_inbuf();
        self.settle();
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Outputs and queries

    /// The next action for the runtime, or `None` when there is nothing to do until the
    /// next input. Call it until it returns `None` after every input method.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(output) = self.out.pop_front() {
            return Some(output);
        }
        // Replies written since the last queued action come after it; `settle` leaves them
        // in `wbuf` rather than queueing them, which most inputs then never need.
        if !self.wbuf.is_empty() {
            return Some(Output::Write(std::mem::take(&mut self.wbuf)));
        }
        if self.buffered() > 0 && !self.halted() {
            // The replies were taken: commands held back by a full output buffer go on.
            self.process_inbuf();
            self.settle();
            if !self.out.is_empty() || !self.wbuf.is_empty() {
                return self.poll_output();
            }
        }
        if self.out.capacity() > 0 {
            // Drained: an idle session keeps no queue (its smallest is four 150-byte slots).
            self.out = VecDeque::new();
        }
        None
    }

    /// With implicit TLS behind a PROXY header: the bytes that followed the header, which are
    /// the start of the client's TLS handshake. The runtime feeds them to its TLS layer
    /// before reading more from the socket. Empty in every other case.
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
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending.is_some() {
            return None;
        }
        let limit = match self.phase {
            Phase::Closed => return None,
            Phase::GreetingDelay { until } => return Some(until),
            Phase::Data { .. } | Phase::Bdat(_) => self.config.data_timeout,
            _ => self.config.command_timeout,
        };
        self.last_activity.checked_add(limit)
    }

    /// The hook call waiting for a decision, if any.
    pub fn pending_hook(&self) -> Option<HookId> {
        self.pending.as_ref().map(|p| p.id)
    }

    /// True once [`Output::Close`] was queued.
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
    // Input processing

    fn check_open(&self) -> Result<(), Error> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn buffered(&self) -> usize {
        self.inbuf.len() - self.in_start
    }

    /// True while input must wait: a hook is pending, or the session is closed or handing
    /// over to TLS (bytes then are dropped by the caller of this).
    fn halted(&self) -> bool {
        self.pending.is_some()
            || self.output_full()
            || matches!(self.phase, Phase::Closed | Phase::TlsHandshake { .. })
    }

    /// True when the replies not yet polled reach [`Config::max_pending_output`]: the
    /// session reads no more commands until the runtime takes them, so a flood of small
    /// commands cannot make it hold replies without bound.
    fn output_full(&self) -> bool {
        self.wbuf.len() >= self.config.max_pending_output
    }

    /// True in the phases where unprocessed input is an incomplete line, already scanned
    /// for its LF.
    fn reading_lines(&self) -> bool {
        matches!(self.phase, Phase::Command | Phase::Auth(_))
    }

    fn take_input(&mut self, data: &[u8]) -> usize {
        let mut taken = 0;
        while taken < data.len() && !self.halted() {
            if self.buffered() == 0 {
                // The common case: work straight from the caller's slice, no copy.
                let rest = &data[taken..];
                let used = self.process(rest, 0);
                taken += used;
                if !self.halted() && used < rest.len() {
                    // An incomplete line, shorter than the line limit, or input held before
                    // the greeting: keep it, never more than the pending-input limit.
                    let keep = (rest.len() - used).min(self.config.max_pending_input);
                    self.inbuf.clear();
                    self.in_start = 0;
                    self.inbuf.extend_from_slice(&rest[used..used + keep]);
                    self.in_scanned = if self.reading_lines() { keep } else { 0 };
                    taken += keep;
                }
            } else {
                // When the buffer holds just a partial line, complete it up to its LF and
                // go back to working from the caller's slice: a read is not copied whole.
                let rest = &data[taken..];
                let partial_line = self.reading_lines() && self.in_scanned == self.buffered();
                let upto = match memchr(b'\n', rest) {
                    Some(i) if partial_line => i + 1,
                    _ => rest.len(),
                };
                let n = self.append(&rest[..upto]);
                taken += n;
                self.read_continues = n < rest.len();
                self.process_inbuf();
                self.read_continues = false;
                if n == 0 {
                    break;
                }
            }
        }
        match &mut self.phase {
            Phase::TlsHandshake {
                implicit: true,
                handshake_bytes,
            } => {
                handshake_bytes.extend_from_slice(&data[taken..]);
                data.len()
            }
            // Bytes after STARTTLS, or after the session closed, are dropped.
            Phase::Closed | Phase::TlsHandshake { .. } => data.len(),
            _ => taken + self.append(&data[taken..]),
        }
    }

    /// Buffers as much of `data` as the pending-input limit allows.
    fn append(&mut self, data: &[u8]) -> usize {
        if self.in_start > 0 {
            self.inbuf.drain(..self.in_start);
            self.in_start = 0;
        }
        let room = self
            .config
            .max_pending_input
            .saturating_sub(self.inbuf.len());
        let n = room.min(data.len());
        if n > self.inbuf.capacity() - self.inbuf.len() {
            // Never reserve past the limit: doubling could reserve almost twice
            // `max_pending_input` while a hook is pending.
            let needed = self.inbuf.len() + n;
            let target = (self.inbuf.capacity().saturating_mul(2))
                .clamp(needed, self.config.max_pending_input.max(needed));
            self.inbuf.reserve_exact(target - self.inbuf.len());
        }
        self.inbuf.extend_from_slice(&data[..n]);
        n
    }

    fn process_inbuf(&mut self) {
        if self.halted() {
            return;
        }
        let buf = std::mem::take(&mut self.inbuf);
        let used = self.process(&buf[self.in_start..], self.in_scanned);
        self.inbuf = buf;
        match self.phase {
            Phase::Closed | Phase::TlsHandshake { .. } => {
                self.inbuf = Vec::new();
                self.in_start = 0;
                self.in_scanned = 0;
            }
            _ => {
                self.in_start += used;
                if self.in_start == self.inbuf.len() {
                    // Keep a line's worth for the next partial line; release what a pause
                    // buffered, so an idle session does not hold it.
                    if self.inbuf.capacity() > INBUF_KEEP {
                        self.inbuf = Vec::new();
                    }
                    self.inbuf.clear();
                    self.in_start = 0;
                }
                // After a pause the rest is unscanned; otherwise it is a partial line.
                self.in_scanned = if !self.halted() && self.reading_lines() {
                    self.buffered()
                } else {
                    0
                };
            }
        }
    }

    /// Processes `buf` until it is used up, a hook is pending, or the session closes or
    /// hands over to TLS. Returns the bytes used; the rest is an incomplete line (or input
    /// to keep for after the hook). The first `scanned` bytes are known to hold no LF.
    fn process(&mut self, buf: &[u8], mut scanned: usize) -> usize {
        let mut pos = 0;
        loop {
            if self.pending.is_some() {
                return pos;
            }
            match &mut self.phase {
                Phase::Closed | Phase::TlsHandshake { .. } => return buf.len(),
                Phase::Connecting | Phase::GreetingDelay { .. } => return pos,
                Phase::Proxy
                    if proxy_v2_length(&buf[pos..])
                        .is_some_and(|len| len > self.config.max_pending_input) =>
                {
                    // A header the input buffer can never hold would be waited for forever.
                    self.close(CloseSide::Local);
                    return buf.len();
                }
                Phase::Proxy if proxy_v2_incomplete(&buf[pos..]) => return pos,
                Phase::Proxy => match parse_proxy_header(&buf[pos..]) {
                    Ok(ProxyParse::Incomplete) => return pos,
                    Ok(ProxyParse::Done { header, consumed }) => {
                        pos += consumed;
                        self.apply_proxy_header(header);
                        self.after_proxy();
                        if let Phase::TlsHandshake {
                            implicit: true,
                            handshake_bytes,
                        } = &mut self.phase
                        {
                            // The TLS client speaks first: these bytes belong to the handshake.
                            handshake_bytes.extend_from_slice(&buf[pos..]);
                            return buf.len();
                        }
                    }
                    Err(_) => {
                        self.close(CloseSide::Local);
                        return buf.len();
                    }
                },
                Phase::Data { rx, body } => {
                    let (used, status) = rx.feed(&buf[pos..], body);
                    pos += used;
                    match status {
                        DataStatus::Done => self.end_of_data(),
                        DataStatus::NeedMore => return pos,
                    }
                }
                Phase::Bdat(chunk) => {
                    let n = chunk.remaining.min((buf.len() - pos) as u64) as usize;
                    chunk.remaining -= n as u64;
                    let done = chunk.remaining == 0;
                    if chunk.error.is_none() {
                        store_chunk(
                            self.tx.as_deref_mut(),
                            &buf[pos..pos + n],
                            self.config.max_message_size,
                            self.config.hooks.message,
                        );
                    }
                    pos += n;
                    if !done {
                        return pos;
                    }
                    self.end_of_chunk();
                }
                Phase::Command | Phase::Auth(_) => {
                    if self.shutdown_requested {
                        self.shutdown_now();
                        return buf.len();
                    }
                    if pos == buf.len() || self.output_full() {
                        return pos;
                    }
                    let in_auth = matches!(self.phase, Phase::Auth(_));
                    if let Some(auth_line) = self.skipping_long_line {
                        let Some(i) = memchr(b'\n', &buf[pos..]) else {
                            return buf.len();
                        };
                        pos += i + 1;
                        self.skipping_long_line = None;
                        self.line_too_long(auth_line);
                        continue;
                    }
                    let auth_line = in_auth || self.is_auth_command(&buf[pos..]);
                    let limit = if auth_line {
                        self.config
                            .line_limit()
                            .max(self.config.max_auth_line_length)
                    } else {
                        self.config.line_limit()
                    };
                    let from = (pos + scanned).min(buf.len());
                    scanned = 0;
                    let Some(i) = memchr(b'\n', &buf[from..]) else {
                        if buf.len() - pos >= limit {
                            // No line end within the limit: drop what came, skip to the LF.
                            self.skipping_long_line = Some(auth_line);
                            return buf.len();
                        }
                        return pos;
                    };
                    let end = from + i;
                    let line = &buf[pos..end];
                    pos = end + 1;
                    if line.len() >= limit {
                        self.line_too_long(auth_line);
                        continue;
                    }
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    self.input_follows = pos < buf.len() || self.read_continues;
                    self.handle_line(line);
                    if matches!(self.phase, Phase::TlsHandshake { .. }) {
                        self.begin_tls(self.input_follows);
                        return buf.len();
                    }
                }
            }
        }
    }

    /// True when a line starts an AUTH command: it gets the AUTH line limit, since initial
    /// responses may be long (RFC 4954: 12288), and its own error when over it.
    fn is_auth_command(&self, line_start: &[u8]) -> bool {
        self.ext.auth && line_start.len() >= 5 && line_start[..5].eq_ignore_ascii_case(b"AUTH ")
    }

    fn line_too_long(&mut self, auth_line: bool) {
        if auth_line {
            self.phase = Phase::Command;
            self.say(AUTH_LINE_TOO_LONG, ReplyState::Auth);
        } else {
            self.say(LINE_TOO_LONG, ReplyState::Unknown);
        }
    }

    /// Queues what is due now that input was processed: a shutdown or end-of-stream close
    /// once nothing is owed, and the coalesced writes.
    fn settle(&mut self) {
        if self.pending.is_none() {
            match self.phase {
                Phase::Command | Phase::Auth(_) if self.shutdown_requested => self.shutdown_now(),
                Phase::Proxy | Phase::Connecting | Phase::GreetingDelay { .. }
                    if self.shutdown_requested =>
                {
                    self.close(CloseSide::Local)
                }
                Phase::Closed => {}
                // Commands held back by a full output buffer are still owed their replies.
                _ if self.eof && !self.output_full() => self.close(CloseSide::Remote),
                _ => {}
            }
        }
        // The coalesced replies stay in `wbuf`: `poll_output` hands them out last, as one
        // Write. Anything queued after them flushes them first.
    }

    fn shutdown_now(&mut self) {
        let text = format!("{} Service shutting down", self.config.hostname);
        self.send(Reply::built(421, e(4, 3, 2), text), ReplyState::Shutdown);
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
            self.flush();
            self.out.push_back(Output::StartTls);
        } else {
            self.start_connect();
        }
    }

    fn start_connect(&mut self) {
        let delay = self.config.greeting_delay;
        match self.last_activity.checked_add(delay) {
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
            let text = format!(
                "{} Error: talking before the greeting",
                self.config.hostname
            );
            self.send(
                self.standard(Reply::built(554, e(5, 5, 1), text)),
                ReplyState::Connect,
            );
            return self.close(CloseSide::Local);
        }
        let reply = custom.unwrap_or_else(|| {
            let text = format!("{} {}", self.config.hostname, self.config.banner);
            Reply::built(220, None, text.trim_end().to_owned())
        });
        self.send(reply, ReplyState::Connect);
        if !self.is_closed() {
            self.phase = Phase::Command;
        }
    }

    // ----------------------------------------------------------------------------------
    // Commands

    fn handle_line(&mut self, line: &[u8]) {
        if let Phase::Auth(_) = self.phase {
            let Phase::Auth(exchange) = std::mem::replace(&mut self.phase, Phase::Command) else {
                return;
            };
            return self.auth_line(exchange, line);
        }
        match parse_command(line) {
            Ok(command) => self.command(command),
            Err(error) => self.command_error(error),
        }
    }

    fn command_error(&mut self, error: CommandError) {
        match error {
            CommandError::Unknown => self.say(UNKNOWN_COMMAND, ReplyState::Unknown),
            CommandError::NotUtf8(None) => self.say(NOT_UTF8, ReplyState::Unknown),
            CommandError::NotUtf8(Some(verb)) => {
                let reply = Reply::fixed(501, e(5, 5, 2), "Invalid UTF-8 in command");
                self.say(reply, verb_state(verb))
            }
            CommandError::Syntax(Verb::Bdat) => {
                // The chunk's size is unknown, so its bytes cannot be skipped; reading them as
                // commands would let a client smuggle them. The stream is lost: close.
                self.say(SYNTAX, ReplyState::Bdat);
                let text = format!(
                    "{} Cannot resynchronise after a bad BDAT",
                    self.config.hostname
                );
                self.send(Reply::built(421, e(4, 5, 0), text), ReplyState::Bdat);
                self.close(CloseSide::Local);
            }
            CommandError::Syntax(verb @ (Verb::Helo | Verb::Ehlo)) => {
                self.say(BAD_HELO, verb_state(verb))
            }
            CommandError::Syntax(verb) => self.say(SYNTAX, verb_state(verb)),
            CommandError::Address(Verb::Mail, _) => self.say(BAD_SENDER, ReplyState::Mail),
            CommandError::Address(verb, _) => self.say(BAD_RECIPIENT, verb_state(verb)),
        }
    }

    fn command(&mut self, command: Command<'_>) {
        let verb = command.verb();
        if self.input_follows
            && self.config.reject_unauth_pipelining
            && self.pipelining_forbidden(verb)
        {
            let text = format!(
                "{} Error: improper use of SMTP command pipelining",
                self.config.hostname
            );
            self.send(
                self.standard(Reply::built(554, e(5, 5, 0), text)),
                verb_state(verb),
            );
            return self.close(CloseSide::Local);
        }
        if self.config.require_tls
            && self.tls.is_none()
            && !matches!(
                verb,
                Verb::Noop | Verb::Helo | Verb::Ehlo | Verb::StartTls | Verb::Quit
            )
        {
            if let Command::Bdat { size, last } = command {
                return self.skip_chunk(size, last, TLS_REQUIRED);
            }
            return self.say(TLS_REQUIRED, verb_state(verb));
        }
        match command {
            Command::Helo(host) => self.cmd_helo(HeloVerb::Helo, host),
            Command::Ehlo(host) => self.cmd_helo(HeloVerb::Ehlo, host),
            Command::Mail { path, params } => self.cmd_mail(path, params),
            Command::Rcpt { path, params } => self.cmd_rcpt(path, params),
            Command::Data => self.cmd_data(),
            Command::Bdat { size, last } => self.cmd_bdat(size, last),
            Command::Rset => {
                self.tx = None;
                self.say(OK, ReplyState::Rset)
            }
            Command::Noop => self.say(OK, ReplyState::Noop),
            Command::Quit => {
                self.say(BYE, ReplyState::Quit);
                self.close(CloseSide::Local);
            }
            Command::Vrfy(_) if self.config.vrfy => self.say(VRFY_OK, ReplyState::Vrfy),
            Command::Vrfy(_) => self.say(NOT_IMPLEMENTED, ReplyState::Vrfy),
            Command::Expn(_) if self.config.expn => self.say(VRFY_OK, ReplyState::Expn),
            Command::Expn(_) => self.say(NOT_IMPLEMENTED, ReplyState::Expn),
            Command::Help(_) => self.say(HELP, ReplyState::Help),
            Command::StartTls => self.cmd_starttls(),
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
        self.tx = None;
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
        let state = match info.verb {
            HeloVerb::Helo => ReplyState::Helo,
            HeloVerb::Ehlo => ReplyState::Ehlo,
        };
        let reply = custom.unwrap_or_else(|| match info.verb {
            HeloVerb::Helo => Reply::built(250, None, self.config.hostname.clone()),
            HeloVerb::Ehlo => self.ehlo_reply(&info.host),
        });
        self.helo = Some(info);
        self.send(reply, state);
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
        self.say(reply, state)
    }

    fn cmd_mail(&mut self, path: ReversePath, raw_params: &str) {
        let state = ReplyState::Mail;
        if self.config.require_helo && self.helo.is_none() {
            return self.say(NEED_HELO, state);
        }
        if self.tx.is_some() {
            return self.say(NESTED_MAIL, state);
        }
        if self.config.require_auth && self.auth.is_none() {
            return self.say(AUTH_REQUIRED, state);
        }
        let params = match parse_mail_params(
            raw_params,
            self.param_support(),
            self.config.max_message_size,
        ) {
            Ok(params) => params,
            Err(error) => return self.param_error(error, state),
        };
        if !path.is_ascii() && !params.smtputf8 {
            return self.say(UTF8_NEEDS_SMTPUTF8, state);
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
            body: Vec::new(),
            size: 0,
            chunked: false,
            exceeded: false,
        }));
        self.send_or(custom, MAIL_OK, ReplyState::Mail);
    }

    fn cmd_rcpt(&mut self, path: ForwardPath, raw_params: &str) {
        let state = ReplyState::Rcpt;
        let Some(tx) = &self.tx else {
            return self.say(NEED_MAIL, state);
        };
        if tx.envelope.recipients.len() >= self.config.max_recipients {
            // Clients that pipeline past the limit are common and harmless up to a point
            // (Postfix's smtpd_recipient_overshoot_limit); a flood beyond it counts as errors.
            self.overshoot = self.overshoot.saturating_add(1);
            if self.overshoot <= self.config.recipient_overshoot_limit {
                return self.say_uncounted(TOO_MANY_RCPTS, state);
            }
            return self.say(TOO_MANY_RCPTS, state);
        }
        let utf8_allowed = tx.envelope.mail_params.smtputf8;
        let params = match parse_rcpt_params(raw_params, self.param_support()) {
            Ok(params) => params,
            Err(error) => return self.param_error(error, state),
        };
        if !path.is_ascii() && !utf8_allowed {
            return self.say(UTF8_NEEDS_SMTPUTF8, state);
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
        match &mut self.tx {
            Some(tx) => {
                tx.envelope.recipients.push(Recipient { path, params });
                self.send_or(custom, RCPT_OK, ReplyState::Rcpt);
            }
            // Nothing can end the transaction while the hook is pending; stay safe anyway.
            None => self.say(NEED_MAIL, ReplyState::Rcpt),
        }
    }

    /// Why the transaction cannot take message data now, if it cannot.
    fn data_refusal(&self, chunked: bool) -> Option<Reply> {
        let Some(tx) = &self.tx else {
            return Some(NEED_MAIL);
        };
        if tx.envelope.recipients.is_empty() {
            return Some(NEED_RCPT);
        }
        if !chunked && tx.chunked {
            return Some(DATA_AFTER_BDAT);
        }
        if !chunked && tx.envelope.mail_params.body == Some(Body::BinaryMime) {
            return Some(BINARY_NEEDS_BDAT);
        }
        None
    }

    fn cmd_data(&mut self) {
        if let Some(reply) = self.data_refusal(false) {
            return self.say(reply, ReplyState::Data);
        }
        if self.config.hooks.data {
            self.call_hook(Stage::Data, Hook::Data);
        } else {
            self.start_data(None);
        }
    }

    fn start_data(&mut self, custom: Option<Reply>) {
        if self.tx.is_none() {
            return self.say(NEED_MAIL, ReplyState::Data);
        }
        self.send(custom.unwrap_or(START_DATA), ReplyState::Data);
        let (policy, max) = (self.config.bare_line_endings, self.config.max_message_size);
        let (rx, body) = if self.config.hooks.message {
            // One allocation for a message of the size the client declared; capped, so a
            // client that lies cannot make a session reserve much it never sends.
            let declared = self.tx.as_ref().and_then(|tx| tx.envelope.mail_params.size);
            let presize = declared.unwrap_or(0).min(max).min(PRESIZE_LIMIT);
            (
                DataReceiver::new(policy, max),
                Vec::with_capacity(presize as usize),
            )
        } else {
            // Nobody is told about the message: read it without storing it.
            (DataReceiver::discarding(policy, max), Vec::new())
        };
        self.phase = Phase::Data { rx, body };
    }

    fn end_of_data(&mut self) {
        let Phase::Data { rx, body } = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        let Some(tx) = self.tx.take() else {
            return self.say(NEED_MAIL, ReplyState::Eod);
        };
        if rx.exceeded() {
            return self.say(TOO_BIG, ReplyState::Eod);
        }
        if rx.saw_bare_line_ending() && self.config.bare_line_endings == BareLineEndings::Reject {
            return self.say(BARE_LINE_ENDING, ReplyState::Eod);
        }
        self.deliver(tx.envelope, body, false);
    }

    fn deliver(&mut self, envelope: Envelope, body: Vec<u8>, chunked: bool) {
        let state = if chunked {
            ReplyState::Bdat
        } else {
            ReplyState::Eod
        };
        if self.config.hooks.message {
            let message = Box::new(Message {
                envelope,
                body,
                chunked,
            });
            self.call_hook(Stage::Message { chunked }, Hook::Message(message));
        } else {
            self.say(MESSAGE_OK, state);
        }
    }

    fn cmd_bdat(&mut self, size: u64, last: bool) {
        if !self.ext.chunking {
            return self.skip_chunk(size, last, NOT_IMPLEMENTED);
        }
        if let Some(reply) = self.data_refusal(true) {
            return self.skip_chunk(size, last, reply);
        }
        let first = self.tx.as_ref().is_some_and(|tx| !tx.chunked);
        if first && self.config.hooks.data {
            self.call_hook(Stage::Bdat { size, last }, Hook::Data);
        } else {
            self.start_chunk(size, last);
        }
    }

    /// Consumes a chunk's bytes without storing them, then sends `reply`.
    fn skip_chunk(&mut self, size: u64, last: bool, reply: Reply) {
        self.phase = Phase::Bdat(Chunk {
            remaining: size,
            last,
            error: Some(reply),
        });
    }

    fn start_chunk(&mut self, size: u64, last: bool) {
        match &mut self.tx {
            Some(tx) => {
                tx.chunked = true;
                self.phase = Phase::Bdat(Chunk {
                    remaining: size,
                    last,
                    error: None,
                });
            }
            None => self.skip_chunk(size, last, NEED_MAIL),
        }
    }

    fn end_of_chunk(&mut self) {
        let Phase::Bdat(chunk) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        if let Some(reply) = chunk.error {
            return self.say(reply, ReplyState::Bdat);
        }
        let Some(tx) = self.tx.take() else {
            return self.say(NEED_MAIL, ReplyState::Bdat);
        };
        if tx.exceeded {
            // The transaction is over: later chunks of it get 503 (RFC 3030 leaves the choice).
            return self.say(TOO_BIG, ReplyState::Bdat);
        }
        if chunk.last {
            let tx = *tx;
            self.deliver(tx.envelope, tx.body, true);
        } else {
            self.tx = Some(tx);
            self.say(CHUNK_OK, ReplyState::Bdat);
        }
    }

    fn cmd_starttls(&mut self) {
        let state = ReplyState::StartTls;
        if self.tls.is_some() {
            return self.say(TLS_ACTIVE, state);
        }
        if !self.ext.starttls {
            return self.say(TLS_UNAVAILABLE, state);
        }
        self.say(TLS_GO, state);
        if !self.is_closed() {
            self.phase = Phase::TlsHandshake {
                implicit: false,
                handshake_bytes: Vec::new(),
            };
        }
    }

    /// After the 220 to STARTTLS: `injected` tells whether bytes followed the command.
    fn begin_tls(&mut self, injected: bool) {
        self.skipping_long_line = None;
        if injected && self.config.starttls_injection == StartTlsInjection::Close {
            return self.close(CloseSide::Local);
        }
        self.flush();
        self.out.push_back(Output::StartTls);
    }

    fn auth_offered(&self) -> bool {
        self.ext.auth && (self.tls.is_some() || self.config.auth_without_tls)
    }

    fn cmd_auth(&mut self, mechanism: &str, initial: Option<&str>) {
        let state = ReplyState::Auth;
        if !self.ext.auth {
            return self.say(NOT_IMPLEMENTED, state);
        }
        if !self.auth_offered() {
            return self.say(AUTH_NEEDS_TLS, state);
        }
        if self.auth.is_some() {
            return self.say(AUTH_ALREADY, state);
        }
        if self.tx.is_some() {
            return self.say(AUTH_IN_TRANSACTION, state);
        }
        let mechanism = mechanism.to_ascii_uppercase();
        if !self.config.auth_mechanisms.contains(&mechanism) {
            return self.say(AUTH_UNKNOWN_MECHANISM, state);
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
                    Some(None) => return self.say(AUTH_BAD_BASE64, state),
                };
                self.auth_step(mechanism, response, 0, None);
            }
        }
    }

    fn auth_prompt(&mut self, next: AuthExchange, challenge: &str) {
        self.send(
            Reply::built(334, None, challenge.to_owned()),
            ReplyState::Auth,
        );
        self.phase = Phase::Auth(next);
    }

    fn auth_line(&mut self, exchange: AuthExchange, line: &[u8]) {
        if line == b"*" {
            return self.say(AUTH_CANCELLED, ReplyState::Auth);
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
                None => self.say(AUTH_BAD_BASE64, ReplyState::Auth),
            },
        }
    }

    fn sasl_error(&mut self, error: SaslError) {
        let reply = match error {
            SaslError::BadBase64 => AUTH_BAD_BASE64,
            SaslError::Malformed => AUTH_MALFORMED,
        };
        self.say(reply, ReplyState::Auth)
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
            self.say(AUTH_FAILED, ReplyState::Auth);
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
            return self.say(XCLIENT_DENIED, state);
        }
        if self.tx.is_some() {
            return self.say(NESTED_MAIL, state);
        }
        let Some(attrs) = xclient::parse(args) else {
            return self.say(XCLIENT_SYNTAX, state);
        };
        attrs.apply(&mut self.info, &mut self.helo, &mut self.auth);
        // Postfix answers XCLIENT with a fresh greeting: the client starts over with EHLO.
        let text = format!("{} {}", self.config.hostname, self.config.banner);
        self.send(Reply::built(220, None, text.trim_end().to_owned()), state);
    }

    // ----------------------------------------------------------------------------------
    // Hooks and decisions

    fn call_hook(&mut self, stage: Stage, hook: Hook) {
        let id = HookId(self.next_hook);
        self.next_hook += 1;
        self.flush();
        self.out.push_back(Output::HookCall(HookCall { id, hook }));
        self.pending = Some(Pending { id, stage });
    }

    fn apply(&mut self, stage: Stage, decision: Decision) {
        let state = stage.reply_state();
        match decision {
            Decision::Accept => self.accepted(stage, None),
            Decision::AcceptWith(reply) => self.accepted(stage, Some(reply)),
            Decision::Challenge(challenge) => {
                if let Stage::Auth {
                    mechanism,
                    step,
                    username,
                } = stage
                {
                    let next = AuthExchange::Step {
                        mechanism,
                        step: step + 1,
                        username,
                    };
                    self.auth_prompt(next, &base64_encode(&challenge));
                }
            }
            Decision::Reject(reply) => self.refused(stage, reply),
            Decision::Disconnect { reply, mode } => {
                let code = reply.code();
                match mode {
                    DisconnectMode::If421 if code != 421 => self.refused(stage, reply),
                    DisconnectMode::FollowWith421 if code != 421 => {
                        self.send(reply, state);
                        let text = format!(
                            "{} disconnecting due to previous error",
                            self.config.hostname
                        );
                        self.send(Reply::built(421, None, text), state);
                        self.close(CloseSide::Local);
                    }
                    _ => {
                        self.send(reply, state);
                        self.close(CloseSide::Local);
                    }
                }
            }
            Decision::HookFailed => {
                let disconnect = self.config.hook_failure == HookFailurePolicy::Disconnect;
                if disconnect || matches!(stage, Stage::Connect) {
                    let text = format!("{} technical difficulties", self.config.hostname);
                    self.send(Reply::built(421, e(4, 3, 0), text), state);
                    self.close(CloseSide::Local);
                } else if matches!(stage, Stage::Auth { .. }) {
                    self.refused(stage, self.standard(AUTH_TEMPORARY));
                } else {
                    self.refused(stage, self.standard(HOOK_TEMPORARY));
                }
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
                self.send_or(custom, AUTH_OK, ReplyState::Auth);
            }
            Stage::Mail(path, params) => self.mail_accepted(path, params, custom),
            Stage::Rcpt(path, params) => self.rcpt_accepted(path, params, custom),
            Stage::Data => self.start_data(custom),
            Stage::Bdat { size, last } => self.start_chunk(size, last),
            Stage::Message { chunked } => {
                let state = if chunked {
                    ReplyState::Bdat
                } else {
                    ReplyState::Eod
                };
                self.send_or(custom, MESSAGE_OK, state);
            }
        }
    }

    /// A refusal: the reply is sent and the stage has no effect. A 421 closes, and so does
    /// any refusal of the connection itself.
    fn refused(&mut self, stage: Stage, reply: Reply) {
        let state = stage.reply_state();
        let closes = reply.code() == 421 || matches!(stage, Stage::Connect);
        if let (Stage::Bdat { size, last }, false) = (&stage, closes) {
            // The client sends the chunk regardless; the reply is owed after it.
            return self.skip_chunk(*size, *last, reply);
        }
        self.send(reply, state);
        if closes {
            self.close(CloseSide::Local);
        }
    }

    // ----------------------------------------------------------------------------------
    // Replies and closing

    /// A crate default, without its enhanced code when ENHANCEDSTATUSCODES is off.
    fn standard(&self, reply: Reply) -> Reply {
        if self.ext.enhanced_status_codes {
            reply
        } else {
            reply.without_enhanced()
        }
    }

    fn say(&mut self, reply: Reply, state: ReplyState) {
        let reply = self.standard(reply);
        self.send(reply, state);
    }

    fn send_or(&mut self, custom: Option<Reply>, default: Reply, state: ReplyState) {
        match custom {
            Some(reply) => self.send(reply, state),
            None => self.say(default, state),
        }
    }

    /// Like [`say`](Session::say), without counting toward the hard error limit.
    fn say_uncounted(&mut self, reply: Reply, state: ReplyState) {
        let reply = self.standard(reply);
        self.write_reply(reply, state);
    }

    /// Writes a reply and remembers it for the context.
    fn write_reply(&mut self, reply: Reply, state: ReplyState) {
        if self.is_closed() {
            return;
        }
        if self.wbuf.capacity() == 0 {
            self.wbuf.reserve(256);
        }
        reply.write_to(&mut self.wbuf);
        self.last_reply = Some((reply, state));
    }

    /// Writes a reply and remembers it for the context; error replies to commands count
    /// toward the hard error limit.
    fn send(&mut self, reply: Reply, state: ReplyState) {
        let counts = reply.is_error()
            && reply.code() != 421
            && !matches!(
                state,
                ReplyState::Connect | ReplyState::Timeout | ReplyState::Shutdown
            );
        self.write_reply(reply, state);
        if counts && !self.is_closed() {
            self.errors += 1;
            if self.errors >= self.config.hard_error_limit {
                let text = format!("{} Error: too many errors", self.config.hostname);
                let reply = self.standard(Reply::built(421, e(4, 7, 0), text));
                self.write_reply(reply, state);
                self.close(CloseSide::Local);
            }
        }
    }

    fn flush(&mut self) {
        if !self.wbuf.is_empty() {
            self.out
                .push_back(Output::Write(std::mem::take(&mut self.wbuf)));
        }
    }

    /// Ends the session: pending writes (unless the connection broke), `Close`, then the
    /// disconnect hook call. Idempotent.
    fn close(&mut self, side: CloseSide) {
        if self.is_closed() {
            return;
        }
        if self.io_error.is_some() {
            self.wbuf.clear();
        } else {
            self.flush();
        }
        self.phase = Phase::Closed;
        self.pending = None;
        self.tx = None;
        self.inbuf = Vec::new();
        self.in_start = 0;
        self.in_scanned = 0;
        self.out.push_back(Output::Close);
        let context = DisconnectContext {
            arguments: DisconnectArguments {
                close: side,
                reply: self.last_reply.as_ref().map(|(r, s)| LastReply::new(r, *s)),
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
        self.out.push_back(Output::HookCall(HookCall {
            id,
            hook: Hook::Disconnect(Box::new(context)),
        }));
    }
}

/// True for the start of a PROXY v2 header whose announced length has not fully arrived:
/// parsing it again on every read would cost O(n^2) for a slow sender.
fn proxy_v2_incomplete(buf: &[u8]) -> bool {
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    match buf.get(..16) {
        Some(head) if head.starts_with(SIGNATURE) => {
            let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
            buf.len() < 16 + len
        }
        _ => false,
    }
}

/// The whole length a PROXY v2 header announces, once its first 16 bytes are in.
fn proxy_v2_length(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..16)?;
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    head.starts_with(b"\r\n\r\n\0\r\nQUIT\n")
        .then_some(16 + len)
}

/// The most body the session reserves up front for a declared SIZE.
const PRESIZE_LIMIT: u64 = 1 << 20;

/// The input buffer capacity kept once the buffer is empty.
const INBUF_KEEP: usize = 4096;

/// Counts a chunk's bytes and, when `keep`, appends them to the transaction's body, while
/// within the size limit.
fn store_chunk(tx: Option<&mut Transaction>, bytes: &[u8], max_size: u64, keep: bool) {
    let Some(tx) = tx else { return };
    if tx.exceeded {
        return;
    }
    tx.size += bytes.len() as u64;
    let needed = tx.body.len() + bytes.len();
    if tx.size > max_size {
        tx.exceeded = true;
        tx.body = Vec::new();
    } else if keep {
        if needed > tx.body.capacity() {
            // Grow by doubling, but never past the limit: plain doubling could reserve
            // almost twice `max_size` for a body within it.
            let ceiling = usize::try_from(max_size).unwrap_or(usize::MAX);
            let target = tx.body.capacity().saturating_mul(2).clamp(needed, ceiling);
            tx.body.reserve_exact(target - tx.body.len());
        }
        tx.body.extend_from_slice(bytes);
    }
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
