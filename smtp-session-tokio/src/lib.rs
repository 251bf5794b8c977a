//! An SMTP receiver on tokio: write a [`Handler`], give it to a [`Server`], and every duty
//! a runtime owes the [`smtp_session`] engine is carried out for you.
//!
//! A complete receiver that applies KumoMTA's three `kumo.disconnect` examples at MAIL FROM
//! and prints Halon's disconnect context as JSON (with the `serde` feature):
//!
//! ```no_run
//! use smtp_session_tokio::DisconnectMode::{FollowWith421, ForceDisconnect};
//! use smtp_session_tokio::{Connection, Decision, DisconnectContext, Handler, HookResult};
//! use smtp_session_tokio::{MailParams, Message, ReversePath, Server};
//!
//! #[derive(Clone)]
//! struct Receiver; // one per connection: per-connection state goes in its fields
//! impl Handler for Receiver {
//!     async fn mail_from(&mut self, _: &mut Connection<'_>, from: ReversePath, _: MailParams) -> HookResult {
//!         Ok(match from.to_string().as_str() {
//!             "a@example.org" => Decision::disconnect(421, "mta.example.com go away!", ForceDisconnect)?,
//!             "b@example.org" => Decision::disconnect(451, "no thank you", ForceDisconnect)?,
//!             "c@example.org" => Decision::disconnect(451, "no thank you", FollowWith421)?,
//!             _ => Decision::Accept,
//!         })
//!     }
//!     async fn message(&mut self, _: &mut Connection<'_>, message: Message) -> HookResult {
//!         println!("{} bytes from <{}>", message.body.len(), message.envelope.mail_from);
//!         Ok(Decision::Accept) // a real receiver stores the message durably first
//!     }
//!     async fn disconnect(&mut self, context: DisconnectContext) {
//!         println!("{}", serde_json::to_string(&context).unwrap());
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
//!     Server::new(Receiver).listener(listener).serve().await;
//!     Ok(())
//! }
//! ```
//!
//! # The handler
//!
//! A [`Handler`] has one async method per hook of the engine: [`connect`](Handler::connect),
//! [`helo`](Handler::helo), [`auth`](Handler::auth), [`mail_from`](Handler::mail_from),
//! [`rcpt_to`](Handler::rcpt_to), [`data`](Handler::data), [`message`](Handler::message),
//! [`vrfy`](Handler::vrfy), [`expn`](Handler::expn), and
//! [`disconnect`](Handler::disconnect) with the disconnect context. Each returns a
//! [`Decision`] (every one defaults to accepting, except `auth`), or an error that counts as
//! [`Decision::HookFailed`]. KumoMTA's `kumo.reject` and `kumo.disconnect` are
//! [`Decision::reject`] and [`Decision::disconnect`]:
//!
//! | KumoMTA | in a handler | the client reads |
//! |---|---|---|
//! | `kumo.disconnect(421, 'mta.example.com go away!')` | `Decision::disconnect(421, "mta.example.com go away!", ForceDisconnect)?` | `421 mta.example.com go away!`, close |
//! | `kumo.disconnect(451, 'no thank you')` | `Decision::disconnect(451, "no thank you", ForceDisconnect)?` | `451 no thank you`, close |
//! | `kumo.disconnect(451, 'no thank you', 'FollowWith421')` | `Decision::disconnect(451, "no thank you", FollowWith421)?` | `451 no thank you` then `421 <hostname> disconnecting due to previous error`, close |
//! | `kumo.reject(550, '5.7.1 no')` | `Decision::reject(550, "5.7.1 no")?` | `550 5.7.1 no`, the session goes on |
//!
//! **One handler per connection.** The server makes a handler for each connection, by
//! cloning the one given to [`Server::new`] or with the closure given to
//! [`Server::with_factory`]; its methods take `&mut self`. This is go-smtp's shape (a
//! `Backend` makes a `Session` per connection) and aiosmtpd's (one handler object, plus a
//! per-connection session the methods are handed), put into one type: per-connection state
//! (what MAIL FROM said, an open spool file) lives in the handler's fields with no locking,
//! and what connections share (a store, a policy engine) lives behind an `Arc` in it.
//! [`Connection`] is what a method knows of its connection: addresses, HELO, TLS, AUTH, the
//! envelope so far; it can change the EHLO extensions and keep a value for the disconnect
//! context.
//!
//! **Only the hooks you want.** [`Handler::hooks`] says which hooks to subscribe; the
//! default is all of them, so no method you write is skipped. Every hook left out costs
//! nothing: the engine accepts that stage at once, and without the message hook it does not
//! even keep the body. A hook that answers at once (as the defaults do) costs no write and
//! no timer either: the replies before and after it go out in one write.
//!
//! # Message bodies: whole, or streamed to where you store them
//!
//! By default ([`BodyDelivery::Buffered`]) [`Handler::message`] gets the whole body in
//! [`Message::body`]. With [`BodyDelivery::Streamed`] in the server's [`Config`], no body
//! is ever gathered in memory: each piece goes to [`Handler::body_piece`] as it arrives (write
//! it to a spool file the handler keeps open in its fields), `message` then gets the envelope
//! and [`Message::size`] (make the spool durable, then accept), and
//! [`Handler::body_aborted`] says when a message will not be accepted (discard the spool).
//! While a piece is being written the session reads nothing more, so a slow disk slows the
//! client rather than filling memory; an error writing a piece fails the message with the
//! hook-failure reply.
//!
//! A handler that keeps state per transaction outside the session (a mail filter that must
//! be told to forget a message, as Postfix tells its milters at RSET) sets
//! [`Config::report_aborted_transactions`]: [`Handler::transaction_aborted`] then says when
//! a transaction ends without reaching [`Handler::message`].
//!
//! # Trace fields
//!
//! A final delivery prepends `Return-Path:` ([`trace::return_path`](smtp_session::trace::return_path))
//! and `Received:` ([`Connection::received`]) to what it stores, and a checker may prepend
//! `Authentication-Results:`. No client byte can continue those fields: content that begins
//! with a space or a tab is refused with `550 5.6.0` by default, or stored after an empty
//! line with [`LeadingWhitespace::InsertEmptyLine`](smtp_session::LeadingWhitespace) in
//! [`Config::leading_whitespace`](smtp_session::Config::leading_whitespace)
//! ([`Message::leading_whitespace`] says so). `examples/trace_fields.rs` is such a receiver.
//!
//! # What the server does for you
//!
//! Each duty of the engine's adapter contract (SPEC 15), and where it is configured:
//!
//! | duty | how | setting |
//! |---|---|---|
//! | writes | each `Write` in order; the replies of one input in one write; sent before a hook that must wait, and before `Close` and `StartTls` | |
//! | a client that stops reading | every write is bounded; the connection closes with `the client stopped reading` in the context | [`Limits::write_timeout`] |
//! | hooks | awaited where they arrive; the session reads no command meanwhile and the client's bytes wait in the kernel (backpressure); an error or a hook past its time is [`Decision::HookFailed`] | [`Limits::hook_timeout`], [`Config::hook_failure`](smtp_session::Config::hook_failure) |
//! | input | read only when the session can take it; what it does not take is kept and offered again before the next read, so memory is the session's limits plus one read | [`Config::max_pending_input`](smtp_session::Config::max_pending_input) |
//! | deadlines | [`Session::poll_timeout`](smtp_session::Session::poll_timeout) is a timer; an instant already passed is handled at once | [`Config::command_timeout`](smtp_session::Config::command_timeout), `data_timeout` |
//! | TLS | STARTTLS and implicit TLS with tokio-rustls and the ring provider, each handshake bounded; plaintext pipelined after STARTTLS is dropped; the cipher suite by its IANA name, the SNI name, a client certificate with its verification result | [`Server::tls`], [`Tls`], [`ClientCertificates`], [`Limits::handshake_timeout`] |
//! | PROXY protocol | parsed by the engine; the client's address goes into the context and the per-address limit | [`Config::proxy_protocol`](smtp_session::Config::proxy_protocol) |
//! | close | send every reply, half-close, then drain unread input briefly so the last reply is not destroyed by a reset | [`Limits::drain_time`], [`Limits::drain_bytes`] |
//! | connection limits | the client over a limit reads `421 4.7.0 <hostname> Error: too many connections [from <client>]`, and has its disconnect context like any connection; the accept loop never waits on it | [`Limits::max_connections`], [`Limits::max_connections_per_ip`] |
//! | one definition of the client | every per-client limit counts an IPv6 client by its /64 and an IPv4-mapped address as IPv4, and exempts trusted networks (loopback by default); handlers key their own limits by [`Connection::client`] | [`Limits::clients`], [`ClientRules`] |
//! | a client that keeps making errors | past a soft limit, each error reply is held back on a timer, longer for each further error (Postfix's `smtpd_soft_error_limit`, `smtpd_error_sleep_time`); nothing is read from that client meanwhile | [`Limits::error_delay`] |
//! | accept errors | out of file descriptors and the like pause the accept loop with a backoff, and a connection that ends resumes it at once | [`Limits::accept_backoff`] |
//! | shutdown | cancel the token: listeners stop, sessions get `421 4.3.2` at their next command boundary, and those still open after the grace period are closed | [`Server::shutdown_on`], [`Limits::shutdown_grace`] |
//! | every core | one event loop per thread, each accepting from a copy of every listener; a connection stays on the thread that took it, and the limits and the shutdown span them all | [`Server::threads`] |
//!
//! # Shutting down
//!
//! ```no_run
//! # use smtp_session_tokio::{Handler, Server};
//! # #[derive(Clone)] struct Receiver;
//! # impl Handler for Receiver {}
//! # async fn run() -> std::io::Result<()> {
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let server = Server::new(Receiver)
//!     .listener(tokio::net::TcpListener::bind("127.0.0.1:2525").await?)
//!     .shutdown_on(shutdown.clone());
//! let serving = tokio::spawn(server.serve());
//! tokio::signal::ctrl_c().await?;
//! shutdown.cancel();
//! serving.await?; // every connection has ended
//! # Ok(()) }
//! ```
//!
//! # Listeners
//!
//! A [`Listener`] is a bound socket, TCP or a UNIX stream socket ([`ListenSocket`],
//! [`Listener::unix`]), and how its connections start ([`Transport`]: plaintext with
//! STARTTLS, or implicit TLS). A UNIX socket's connections carry the peer's user id, from
//! its credentials, as [`ConnectionInfo::remote_uid`] (Halon's `remoteuid`), count against
//! the global connection limit only, and have no addresses.
//!
//! # Metrics
//!
//! [`Server::observer`] takes an [`Observer`]: it hears of every connection opened, ended
//! or refused over a limit ([`Refusal`]), and the code of every reply sent, so that
//! connection gauges and reply counters need no parsing of logs. Its methods run on the
//! connection's task and must return at once.
//!
//! # Your own accept loop or stream type
//!
//! [`Server::serve_connection`] serves one connection over anything that is
//! `AsyncRead + AsyncWrite` (a stream from another acceptor, an in-memory pipe), with
//! everything above except the connection limits, which are then the caller's.
//!
//! # Features
//!
//! `tls` (default): STARTTLS and implicit TLS with tokio-rustls and the ring provider
//! ([`Server::tls`], [`Tls`], [`tls_config`]); the configurations they make resume
//! sessions from stateless tickets. `serde`: the engine's `serde` feature, to serialise
//! the disconnect context and the envelope. `tracing`: a `tracing` span per connection
//! (`smtp_connection`, with `id`, `client`, `listener` and, once up, `tls`) and per
//! transaction (`smtp_transaction`, with `mail_from`), and a `DEBUG` event per line of the
//! dialogue under the target `DIALOGUE` (`smtp_session_tokio::dialogue`), each with the
//! connection's `id` and `client`: `< EHLO client.example`, `> 250 2.1.0 Sender OK`.
//! Credentials are redacted (`< AUTH PLAIN [1 words redacted]`), message data is one event
//! per read with its size, and lines are cut at 512 bytes. With no subscriber interested,
//! a connection pays one cached check per read and per write.
//!
//! # Runtime flavour
//!
//! A connection is one task that never blocks, so a current-thread runtime serves many
//! thousands of connections with the fewest context switches; a multi-threaded runtime
//! spreads them over cores. An idle connection holds its session (under 1 KiB), its task and
//! socket registration, and no read or write buffer.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod driver;
mod env;
mod handler;
mod hooks;
mod limits;
mod listener;
mod observer;
mod server;
mod socket;
mod stream;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tracing")]
mod trace;

pub use client::{Client, ClientKey, ClientRules, IpNet};
pub use handler::{Connection, Handler, HookError, HookResult};
pub use limits::{ErrorDelay, Limits};
pub use listener::{ListenSocket, Listener, Transport};
pub use observer::{Observer, Refusal};
pub use server::Server;

pub use smtp_session;
pub use smtp_session::{
    AbortReason, AuthRequest, BodyDelivery, Config, ConnectionInfo, Decision, DisconnectContext,
    DisconnectMode, Envelope, Extensions, ForwardPath, HeloVerb, Hooks, MailParams, Message,
    RcptParams, Reply, ReversePath,
};
pub use tokio_util::sync::CancellationToken;

#[cfg(feature = "tls")]
pub use tls::{tls_config, tls_info, ClientAuth, ClientCertificates, Tls};
#[cfg(feature = "tls")]
pub use tokio_rustls::rustls;
#[cfg(feature = "tracing")]
pub use trace::DIALOGUE;
