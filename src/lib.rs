//! The server side of SMTP as a sans-IO state machine.
//!
//! A [`Session`] is one SMTP connection, seen from the server. It never touches a socket, a
//! thread, a clock or an async runtime: the caller feeds it bytes and events, and it answers
//! with [`Output`] actions: bytes to [`Write`](Output::Write), a [`Close`](Output::Close), a
//! [`HookCall`](Output::HookCall) for a policy decision, or a
//! [`StartTls`](Output::StartTls) handshake. The same session runs under blocking threads,
//! tokio, or a fuzzer.
//!
//! # The run loop
//!
//! Inputs in, outputs polled out. Every `handle_*` method and [`Session::decide`] only change
//! state and queue outputs; after each of them, **drain [`Session::poll_output`] until it
//! returns `None`** and carry out each action in order. Then wait for whichever comes first:
//! bytes from the client, the deadline of [`Session::poll_timeout`], or a hook's decision.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use smtp_session::{Config, ConnectionInfo, Decision, Hook, Output, Session};
//!
//! // A client that pipelines one whole transaction, as bytes "read from a socket".
//! let mut client: &[u8] = b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n\
//!     RCPT TO:<b@example.net>\r\nDATA\r\nSubject: hi\r\n\r\nHello\r\n.\r\nQUIT\r\n";
//! let mut now = Instant::now();
//! let mut session = Session::new(Config::default(), ConnectionInfo::default(), now);
//! let mut to_client = Vec::new();
//! let mut stored = Vec::new();
//!
//! for _ in 0..100 {
//!     // 1. Drain the outputs.
//!     while let Some(output) = session.poll_output() {
//!         match output {
//!             Output::Write(bytes) => to_client.extend_from_slice(&bytes),
//!             Output::Close => { /* flush writes, then close the socket */ }
//!             Output::HookCall(call) => match call.hook {
//!                 Hook::Message(message) => {
//!                     stored.push(message.body); // store durably *before* accepting
//!                     session.decide(call.id, Decision::Accept, now).unwrap();
//!                 }
//!                 Hook::Disconnect(context) => {
//!                     assert_eq!(context.arguments.reply.unwrap().code, 221);
//!                 }
//!                 _ => session.decide(call.id, Decision::Accept, now).unwrap(),
//!             },
//!             Output::StartTls => unreachable!("STARTTLS is not offered by default"),
//!             _ => {}
//!         }
//!     }
//!     if session.is_closed() {
//!         break;
//!     }
//!     // 2. Wait for input (here: the next 16 bytes) or the deadline.
//!     now += Duration::from_millis(1);
//!     if client.is_empty() {
//!         session.handle_eof(now).unwrap();
//!     } else {
//!         let n = client.len().min(16);
//!         let taken = session.handle_input(&client[..n], now).unwrap();
//!         client = &client[taken..]; // untaken bytes are offered again later
//!     }
//! }
//! assert_eq!(stored, [b"Subject: hi\r\n\r\nHello\r\n".to_vec()]);
//! assert!(String::from_utf8(to_client).unwrap().ends_with("250 2.0.0 Message accepted\r\n221 2.0.0 Bye\r\n"));
//! ```
//!
//! Replies produced while handling one input are coalesced into one `Write`; a hook call
//! flushes the replies before it into a `Write` of its own. A runtime that has sent a
//! `Write` may give its buffer back with [`Session::recycle_write`], so that the next replies
//! reuse it instead of allocating; likewise a runtime done with a [`HookCall`] may hand it
//! back with [`Session::recycle_hook`], and the session's next paths, hook copies and
//! message body are made in its buffers. Time comes only
//! from the caller: pass `now` in, and call [`Session::handle_timeout`] when the instant from
//! [`Session::poll_timeout`] passes (calling it early does nothing).
//!
//! One drain yields at most about [`Config::max_pending_output`] bytes, however the runtime
//! sends them: `poll_output` only hands out what is queued and never reads on. When the
//! session stopped reading held input because its outputs were full, `poll_timeout` returns
//! an instant that has already passed, so a run loop that sends what it drained and then
//! waits for the deadline goes on with it at once.
//!
//! # Streamed bodies
//!
//! By default the message hook carries the whole body, so every message in flight is in
//! memory. With [`Config::body_delivery`] set to [`BodyDelivery::Streamed`], the unstuffed
//! body leaves the session as it arrives, in [`Output::BodyPiece`]s (DATA and BDAT alike);
//! the message hook then carries the envelope, the size and what was learnt about the body
//! ([`Message::eight_bit`], [`Message::bare_line_endings`],
//! [`Message::leading_whitespace`]) but no body: write the pieces to
//! the spool, make them durable, then decide. A message that will not be accepted (too big,
//! bare line endings refused, content beginning with a space or tab refused, RSET or a new EHLO between BDAT chunks, a handshake, the
//! connection ending) is announced with [`Output::BodyAborted`] so the spool can go. A
//! session then holds no more than its input and output limits, whatever the message size.
//! A runtime that has written a piece may give its buffer back with
//! [`Session::recycle_piece`], so that the next piece reuses it instead of allocating.
//!
//! # The hook obligation
//!
//! Hooks are subscribed in [`Config::hooks`]; an unsubscribed hook is accepted at once with no
//! round trip. A subscribed hook arrives as [`Output::HookCall`] with a [`HookId`]. Until the
//! caller answers it with [`Session::decide`]`(id, decision, now)`, the session is paused:
//! it processes no command, and buffers incoming bytes up to [`Config::max_pending_input`]
//! ([`Session::handle_input`] then returns how many it took, and the runtime keeps the rest).
//! The decision may come from another task much later; the session does not care.
//!
//! | [`Decision`] | Effect |
//! |---|---|
//! | `Accept` / `AcceptWith(reply)` | the default success reply, or the hook's |
//! | `Reject(reply)` | the reply is sent and the session stays; a 421 closes |
//! | `Disconnect { reply, mode }` | KumoMTA's `kumo.disconnect`, below |
//! | `HookFailed` | the hook broke: [`HookFailurePolicy`] |
//! | `Challenge(bytes)` | AUTH only: a 334 challenge for a mechanism the caller runs |
//!
//! Replies given by hooks are sent as given: [`Reply::new`] validates the code (200..=599),
//! recognises an enhanced code at the start of the text (and checks its class) but never adds
//! one, and splits text at CR/LF into lines of the same reply, so hook text can never inject
//! a reply of its own. Decisions that do not fit the hook are refused with a typed [`Error`]
//! and change nothing.
//!
//! The disconnect hook ([`Hook::Disconnect`]) is the exception: it owes no decision. It is
//! emitted exactly once per session, right after [`Output::Close`], and nothing follows it.
//!
//! # Disconnect modes
//!
//! [`Decision::Disconnect`] behaves like KumoMTA's `kumo.disconnect(CODE, MESSAGE, MODE)`;
//! the mode defaults to [`DisconnectMode::ForceDisconnect`].
//!
//! | Mode | code 421 | any other code |
//! |---|---|---|
//! | `ForceDisconnect` | send reply, close | send reply, close |
//! | `FollowWith421` | send reply, close | send reply, then `421 <hostname> disconnecting due to previous error`, close |
//! | `If421` | send reply, close | like a reject: send reply, stay open |
//!
//! With `FollowWith421`, the last reply recorded in the disconnect context is the
//! synthesized 421, since it is the last reply the client saw.
//!
//! Replies to earlier commands of the same pipelined batch are sent first; commands after
//! the disconnecting one get no reply; an open transaction ends and a message being received
//! is not accepted. The three examples of KumoMTA's documentation, decided at MAIL FROM, send:
//!
//! ```text
//! kumo.disconnect(421, 'mta.example.com go away!')  → 421 mta.example.com go away!        (close)
//! kumo.disconnect(451, 'no thank you')              → 451 no thank you                     (close)
//! kumo.disconnect(451, 'no thank you', 'FollowWith421')
//!                                                   → 451 no thank you
//!                                                     421 HOSTNAME disconnecting due to previous error (close)
//! ```
//!
//! ```
//! # use std::time::Instant;
//! # use smtp_session::*;
//! // `..Hooks::default()` keeps the message hook: `..Hooks::NONE` would accept and drop mail.
//! let hooks = Hooks { mail_from: true, ..Hooks::default() };
//! let config = Config { hostname: "mx.example".into(), hooks, ..Config::default() };
//! let now = Instant::now();
//! let mut session = Session::new(config, ConnectionInfo::default(), now);
//! session.handle_input(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n", now).unwrap();
//! let mut id = None;
//! while let Some(out) = session.poll_output() {
//!     if let Output::HookCall(call) = out { id = Some(call.id) }
//! }
//! let decision = Decision::disconnect(451, "no thank you", DisconnectMode::FollowWith421).unwrap();
//! session.decide(id.unwrap(), decision, now).unwrap();
//! let Some(Output::Write(bytes)) = session.poll_output() else { panic!() };
//! assert_eq!(bytes, b"451 no thank you\r\n421 mx.example disconnecting due to previous error\r\n");
//! assert!(matches!(session.poll_output(), Some(Output::Close)));
//! ```
//!
//! # What the runtime owes the session
//!
//! The session does nothing by itself; whatever drives it must, for every connection:
//!
//! - **Write** each [`Output::Write`] in order, and never hold more than
//!   [`Config::max_pending_output`] unwritten: send what one drain gave before asking for
//!   more. Bound every write with a timeout; a client that never reads must not hold a
//!   connection (report the failure with [`Session::handle_io_error`]).
//! - **Read** into [`Session::handle_input`], and keep the bytes it did not take: offer them
//!   again, first, after the next decision or timeout; stop reading while you hold some.
//! - **Time**: wait for [`Session::poll_timeout`] and call [`Session::handle_timeout`] when it
//!   passes, also when it has passed already (held input waits for that call).
//! - **Hooks**: answer every [`HookCall`] that [`needs_decision`](HookCall::needs_decision)
//!   with [`Session::decide`], or [`Decision::HookFailed`] once your own hook timeout passes
//!   (while a hook is pending the session has no deadline). Decisions for a session that
//!   closed meanwhile are refused with [`Error::Closed`]: ignore those, never return before the
//!   close and the disconnect hook came out.
//! - **TLS**: on [`Output::StartTls`], flush the writes, run the handshake as the server
//!   with a timeout, drop any plaintext read before it, and report it with
//!   [`Session::handle_tls_established`] or [`Session::handle_tls_failed`].
//! - **Close**: on [`Output::Close`], flush the writes, half-close the socket, and drain
//!   unread input for a short, bounded time, so the last reply is not destroyed by a reset;
//!   then release the connection. The disconnect hook follows at once.
//! - **Limits the session cannot see**: connections in total and per client address
//!   (answer the one over the limit `421 4.7.0` rather than leaving it unanswered), accept
//!   errors such as "too many open files" (back off, never spin), and a graceful shutdown
//!   ([`Session::handle_shutdown`] gives `421 4.3.2` at the next command boundary; give up
//!   after a bounded grace).
//!
//! The `smtp-session-tokio` crate does all of this once, for tokio; `examples/blocking.rs`
//! shows the core of it on threads.
//!
//! # The disconnect context
//!
//! [`DisconnectContext`] carries the fields of Halon's disconnect script, built once:
//!
//! - `arguments`: `close` ([`CloseSide::Local`] when the session decided: QUIT, a disconnect,
//!   a 421, a timeout, the error limit, a shutdown; [`CloseSide::Remote`] after end of stream
//!   or an I/O error), `reply` (the last reply sent: code, enhanced code, lines, and the
//!   [`ReplyState`] that triggered it), `error` (the runtime's [`IoError`]).
//! - `connection`: id, remote and local addresses, reverse DNS, UNIX uid, server id, and what
//!   the session learnt: HELO, TLS ([`TlsInfo`]), AUTH ([`AuthInfo`]).
//! - `transaction`: empty at disconnect.
//! - `context`: the value given to [`Session::set_user_context`].
//!
//! With the `serde` feature the context serialises to JSON with Halon's key names
//! (`remoteip`, `remoteport`, `helo.verb`, `tls.cipher`, ...).
//!
//! # What the session speaks
//!
//! RFC 5321 with HELO, EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, VRFY, EXPN, HELP; and the
//! extensions in [`Extensions`]: PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8,
//! CHUNKING (BDAT), BINARYMIME, DSN, and when configured STARTTLS and AUTH (PLAIN and LOGIN
//! decoded here, any other mechanism through the auth hook). It accepts the PROXY protocol
//! (v1 and v2) when [`Config::proxy_protocol`] is on, and Postfix's XCLIENT from
//! [`Config::xclient_trusted`] peers. Opt-in: REQUIRETLS (offered over TLS only),
//! MT-PRIORITY, DELIVERBY and RRVS, whose values reach the hooks in [`MailParams`] and
//! [`RcptParams`]. With [`Config::lmtp`] it speaks LMTP (RFC 2033): LHLO, and after a message
//! one reply per accepted recipient ([`Decision::PerRecipient`]).
//!
//! Choices where the RFCs leave room:
//!
//! - HELP lists only the commands that would be accepted now: STARTTLS while TLS is not
//!   active, AUTH while it is offered and not done, BDAT with CHUNKING, EXPN when enabled.
//! - AUTH needs a preceding EHLO (or LHLO) in the current TLS state: right after the
//!   handshake the client knows nothing of AUTH yet (RFC 3207 section 4.2), so `AUTH` then
//!   gets `503 5.5.1 Send EHLO first`, as in Postfix.
//! - A parameter repeated with the same value is accepted (Python's smtplib sends
//!   `SMTPUTF8 SMTPUTF8`); with another value it is `501 5.5.4 Duplicate parameter`.
//! - VRFY and EXPN answer `252 2.5.0` unless the VRFY hook ([`Hooks::vrfy`]) says otherwise;
//!   [`Config::vrfy`] and [`Config::expn`] switch them off (`502 5.5.1`).
//! - A decision that does not fit its hook is refused with an error and counts as a failed
//!   hook, so no session waits forever on a mistake.
//! - The [`trace`] module builds the `Received:` and `Return-Path:` fields RFC 5321 section
//!   4.4 requires ([`Session::received`]). The session changes message content in one case
//!   only, and only when told to: content that begins with a space or a tab would continue
//!   the last field prepended above it (RFC 5322 section 2.2.3), so it is refused with
//!   `550 5.6.0` by default ([`LeadingWhitespace::Reject`]), or stored after an empty line
//!   as Postfix does ([`LeadingWhitespace::InsertEmptyLine`], reported by
//!   [`Message::leading_whitespace`]). A streamed message is decided by its first piece and
//!   announced aborted ([`AbortReason::LeadingWhitespace`]) before any piece leaves.
//!
//! Defences: the end of DATA is `CRLF.CRLF` only, and bare CR or LF is rejected by default
//! ([`BareLineEndings`]) in DATA, in BDAT content not declared `BODY=BINARYMIME`, and at the
//! end of command lines, so SMTP smuggling sequences never end a message nor reach the next
//! hop; message content can never continue the fields a receiver prepends
//! ([`LeadingWhitespace`]); BDAT chunks are counted, never parsed; bytes pipelined after STARTTLS are never
//! executed; a command line must be complete within its deadline and message data may have a
//! minimum rate, so a client trickling bytes cannot hold a connection; every buffer is
//! bounded by [`Config`] (line length, message size, pending input and output), and overlong
//! lines are skipped without being stored.
//!
//! # Configuration
//!
//! [`Config`] holds everything, with the defaults of SPEC-conformant receivers:
//!
//! | Area | Fields (defaults) |
//! |---|---|
//! | identity | `hostname` (`localhost`), `banner` (`ESMTP`) |
//! | extensions | [`Extensions`]: `pipelining`, `size`, `eight_bit_mime`, `enhanced_status_codes`, `smtputf8`, `chunking`, `binary_mime`, `dsn` (all on), `starttls`, `auth` (off: they need the runtime's TLS and a verifier); an EHLO hook may change them per session with [`Session::set_extensions`] |
//! | STARTTLS | `starttls_injection` (discard), `require_tls` (off), `implicit_tls` (off, RFC 8314 listeners) |
//! | AUTH | `auth_mechanisms` (PLAIN, LOGIN), `auth_without_tls` (off), `require_auth` (off), `max_auth_line_length` (12288) |
//! | hooks | `hooks` ([`Hooks`], only `message` by default), `hook_failure` ([`HookFailurePolicy`]), `report_aborted_transactions` (off: [`Output::TransactionAborted`] for a transaction that ends without a message hook, such as at RSET) |
//! | commands | `require_helo` (on), `vrfy` (252), `expn` (502) |
//! | proxies | `proxy_protocol` (off), `xclient_trusted` (nobody) |
//! | limits | `max_line_length` (512 plus allowances), `max_message_size` (25 MiB), `max_recipients` (100), `recipient_overshoot_limit` (1000), `hard_error_limit` (20), `max_pending_input` (64 KiB), `max_pending_output` (64 KiB) |
//! | time | `command_timeout` (5 min idle), `command_deadline` (5 min for a whole command line), `data_timeout` (3 min between reads), `min_data_rate` (off; [`MinDataRate`]), `greeting_delay` (none) |
//! | bodies | `body_delivery` ([`BodyDelivery::Buffered`], or streamed in pieces) |
//! | defences | `bare_line_endings` ([`BareLineEndings::Reject`]), `leading_whitespace` ([`LeadingWhitespace::Reject`]), `reject_early_talkers`, `reject_unauth_pipelining` (off) |
//!
//! # Features
//!
//! - `serde`: the disconnect context and the envelope serialise
//!   (the context with Halon's key names).
//! - `arbitrary`: [`arbitrary::Arbitrary`](https://docs.rs/arbitrary) for the session's
//!   inputs, to fuzz a session or the runtime and policy code around it: [`Config`] and its
//!   parts, [`ConnectionInfo`], [`TlsInfo`], [`IoError`], [`Decision`], [`Reply`],
//!   [`EnhancedCode`], [`DisconnectMode`]. Every value is one the API accepts: a reply has a
//!   code in 200..=599 and an enhanced code of its class, and a config out of range is
//!   brought into range by [`Session::new`]. The repository's `session_ops` fuzz target
//!   builds its decisions, TLS details and I/O errors with them.
//!
//! # Errors
//!
//! Bad client bytes become SMTP replies, never an `Err` and never a panic. [`Error`] is only
//! for caller misuse: a decision for a hook that is not pending, input after close.

// docs.rs builds with `--cfg docsrs` on nightly: label items that need a feature.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod address;
pub mod bdat;
mod body;
mod clock;
pub mod command;
mod config;
mod context;
pub mod data;
mod error;
mod held;
mod hooks;
mod line;
mod offer;
mod outbox;
pub mod params;
mod pending;
pub mod proxy;
mod reply;
pub mod sasl;
mod session;
mod spare;
mod strings;
#[cfg(feature = "testing")]
#[doc(hidden)]
mod testing;
pub mod trace;
mod transaction;
mod xclient;

pub use address::{AddressLiteral, Domain, ForwardPath, Mailbox, ReversePath};
pub use config::{
    BareLineEndings, BodyDelivery, Config, ConfigError, Extensions, HookFailurePolicy, Hooks,
    LeadingWhitespace, MinDataRate, StartTlsInjection,
};
pub use context::{
    AuthInfo, CloseSide, ConnectionDetails, ConnectionInfo, DisconnectArguments, DisconnectContext,
    EmptyTransaction, HeloInfo, HeloVerb, IoError, IoErrorKind, LastReply, PeerCertificate,
    ReplyState, TlsInfo,
};
pub use error::Error;
pub use hooks::{
    AbortReason, AuthRequest, Decision, DisconnectMode, Envelope, Hook, HookCall, HookId, Message,
    Recipient,
};
pub use outbox::Output;
pub use params::{
    Body, DeliverBy, DeliverByMode, MailParams, Notify, Orcpt, RcptParams, Ret, Rrvs, RrvsAction,
};
pub use proxy::ProxyHeader;
pub use reply::{EnhancedCode, Reply, ReplyError};
pub use session::Session;
