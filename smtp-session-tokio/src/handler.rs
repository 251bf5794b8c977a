//! What the application writes: a [`Handler`] with one async method per hook, and the
//! [`Connection`] each method sees.

use std::any::Any;
use std::future::Future;

use crate::client::{Client, ClientRules};
use smtp_session::{
    AbortReason, AuthInfo, AuthRequest, Config, ConnectionInfo, Decision, DisconnectContext,
    Envelope, Extensions, ForwardPath, HeloInfo, HeloVerb, Hooks, MailParams, Message, ProxyHeader,
    RcptParams, ReversePath, Session, TlsInfo,
};

/// Why a hook could not decide: any error. The connection answers as for
/// [`Decision::HookFailed`] (by default `451 4.3.0`, see
/// [`HookFailurePolicy`](smtp_session::HookFailurePolicy)).
pub type HookError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a hook method returns: a decision, or an error that counts as
/// [`Decision::HookFailed`]. With `?`, a reply that does not validate
/// (`Decision::disconnect(700, ..)?`) or a failed write to the spool fails the hook.
pub type HookResult = Result<Decision, HookError>;

/// The application's side of one SMTP connection: one async method per hook.
///
/// A server makes one handler per connection (by cloning the one given to
/// [`Server::new`](crate::Server::new), or with the factory of
/// [`Server::with_factory`](crate::Server::with_factory)), so methods take `&mut self`
/// and a handler keeps per-connection state in its own fields, the way go-smtp's `Session`
/// does; what all connections share (a store, a policy) sits behind an `Arc` in it, the way
/// go-smtp's `Backend` or an aiosmtpd handler object does. Cloning a handler of a few `Arc`s
/// costs a few atomic increments per connection.
///
/// Every hook method defaults to accepting (except [`auth`](Handler::auth), which refuses:
/// accepting any password by default would be a hole). A method runs for as long as it needs,
/// up to [`Limits::hook_timeout`](crate::Limits::hook_timeout); the session reads no further
/// command meanwhile. Returning `Err` (or timing out) answers as [`Decision::HookFailed`].
///
/// An implementation may write its methods as `async fn`; the futures must be `Send`, since
/// the server may run connections on several threads. Each call's future is boxed (so that
/// an idle connection does not carry the largest of them), which moves the whole future,
/// however much of it the call uses: an `async fn` is as large as everything it may await
/// at once, buffers held across an `.await` included. Keep a large buffer in the handler's
/// fields, and a large, seldom taken branch behind `Box::pin(..).await`, and every call
/// stays cheap.
///
/// Only the hooks in [`hooks`](Handler::hooks) are called. A hook left out costs nothing: the
/// session accepts that stage at once, with no round trip, and without the message hook it
/// does not even keep the body.
pub trait Handler: Send + 'static {
    /// The hooks this handler wants to decide; every other stage is accepted at once.
    /// The default is [`Hooks::ALL`], so every method written is called: overriding this is
    /// only an optimisation. Name only the ones you implement to save a round trip per
    /// command (and, without [`message`](Handler::message), the body kept for it).
    ///
    /// It is asked once per connection, of the handler made for it, so it may depend on
    /// configuration as well as on the methods written: a receiver that runs a script
    /// subscribes the stages the script handles. (Rust cannot tell which default methods an
    /// implementation overrides, so the subscription cannot be derived from them without
    /// calling each hook once; this method says it at no cost.)
    fn hooks(&self) -> Hooks {
        Hooks::ALL
    }

    /// A client connected (after the PROXY header, if any), before the greeting. Any
    /// refusal sends its reply and closes the connection.
    fn connect(&mut self, conn: &mut Connection<'_>) -> impl Future<Output = HookResult> + Send {
        let _ = conn;
        async { Ok(Decision::Accept) }
    }

    /// HELO or EHLO. [`Connection::set_extensions`] changes what the EHLO reply offers.
    fn helo(
        &mut self,
        conn: &mut Connection<'_>,
        verb: HeloVerb,
        host: String,
    ) -> impl Future<Output = HookResult> + Send {
        let _ = (conn, verb, host);
        async { Ok(Decision::Accept) }
    }

    /// An AUTH step: PLAIN and LOGIN credentials decoded by the session, or one step of
    /// another mechanism ([`Decision::Challenge`] continues it). The default refuses with
    /// `535 5.7.8`, as the session does when no auth hook is subscribed.
    fn auth(
        &mut self,
        conn: &mut Connection<'_>,
        request: AuthRequest,
    ) -> impl Future<Output = HookResult> + Send {
        let _ = (conn, request);
        async {
            Ok(Decision::reject(
                535,
                "5.7.8 Authentication credentials invalid",
            )?)
        }
    }

    /// MAIL FROM.
    fn mail_from(
        &mut self,
        conn: &mut Connection<'_>,
        path: ReversePath,
        params: MailParams,
    ) -> impl Future<Output = HookResult> + Send {
        let _ = (conn, path, params);
        async { Ok(Decision::Accept) }
    }

    /// RCPT TO.
    fn rcpt_to(
        &mut self,
        conn: &mut Connection<'_>,
        path: ForwardPath,
        params: RcptParams,
    ) -> impl Future<Output = HookResult> + Send {
        let _ = (conn, path, params);
        async { Ok(Decision::Accept) }
    }

    /// DATA, or the first BDAT of a transaction, before any message byte is read.
    fn data(&mut self, conn: &mut Connection<'_>) -> impl Future<Output = HookResult> + Send {
        let _ = conn;
        async { Ok(Decision::Accept) }
    }

    /// VRFY (RFC 5321 section 3.5), when [`Config::vrfy`] lets it be answered. Accepting
    /// gives `252 2.5.0` (cannot verify, will accept mail); accept with a 250 or 251 reply
    /// naming the mailbox, or reject with 550 (no such user) or 553 (ambiguous).
    fn vrfy(
        &mut self,
        conn: &mut Connection<'_>,
        string: String,
    ) -> impl Future<Output = HookResult> + Send {
        let _ = (conn, string);
        async { Ok(Decision::Accept) }
    }

    /// EXPN, when [`Config::expn`] lets it be answered: accept with a multi-line 250 reply
    /// listing the members, or reject.
    fn expn(
        &mut self,
        conn: &mut Connection<'_>,
        string: String,
    ) -> impl Future<Output = HookResult> + Send {
        let _ = (conn, string);
        async { Ok(Decision::Accept) }
    }

    /// The whole message: envelope and body (or, with streamed bodies, the envelope and the
    /// size once every piece went to [`body_piece`](Handler::body_piece)). Accepting tells
    /// the client the message is taken, so store it durably first. Without this hook
    /// messages are accepted and dropped, which only suits sinks and benchmarks. Under LMTP
    /// ([`Config::lmtp`]), [`Decision::PerRecipient`] answers each recipient.
    fn message(
        &mut self,
        conn: &mut Connection<'_>,
        message: Message,
    ) -> impl Future<Output = HookResult> + Send {
        let _ = (conn, message);
        async { Ok(Decision::Accept) }
    }

    /// Streamed bodies only ([`BodyDelivery::Streamed`](smtp_session::BodyDelivery::Streamed)
    /// in the server's [`Config`]): the next piece of the body of the message being
    /// received, unstuffed, in order. Append it to the spool of the message; the first piece
    /// after a [`message`](Handler::message) or [`body_aborted`](Handler::body_aborted) call
    /// (or the first of the connection) starts a new message. The message then ends with
    /// `message` (its body empty, [`Message::size`] set: make the spool durable, then
    /// accept) or with `body_aborted` (discard the spool). A message with an empty body
    /// has no piece at all.
    ///
    /// The session reads nothing more while a piece is being written (backpressure). An
    /// error, or a write past [`Limits::hook_timeout`](crate::Limits::hook_timeout), fails
    /// the message: its `message` call is skipped and the client gets the hook-failure
    /// reply (by default `451 4.3.0`).
    fn body_piece(
        &mut self,
        conn: &mut Connection<'_>,
        piece: Vec<u8>,
    ) -> impl Future<Output = Result<(), HookError>> + Send {
        let _ = (conn, piece);
        async { Ok(()) }
    }

    /// Streamed bodies only: the message being received will not be accepted (too big,
    /// bare line endings refused, RSET, the connection ended...); discard what was stored of
    /// it.
    fn body_aborted(
        &mut self,
        conn: &mut Connection<'_>,
        reason: AbortReason,
    ) -> impl Future<Output = ()> + Send {
        let _ = (conn, reason);
        async {}
    }

    /// With [`Config::report_aborted_transactions`](smtp_session::Config::report_aborted_transactions)
    /// only: the transaction open since MAIL ended without a message (RSET, HELO or EHLO, a
    /// handshake, a message refused for its data, the connection ending); forget what was
    /// kept for it (tell a mail filter to abort it). It owes nothing, and is bounded by
    /// [`Limits::hook_timeout`](crate::Limits::hook_timeout).
    fn transaction_aborted(
        &mut self,
        conn: &mut Connection<'_>,
        reason: AbortReason,
    ) -> impl Future<Output = ()> + Send {
        let _ = (conn, reason);
        async {}
    }

    /// The connection ended: Halon's disconnect context, exactly once per connection, after
    /// the socket was closed. It owes nothing, and is bounded by
    /// [`Limits::hook_timeout`](crate::Limits::hook_timeout) like every hook.
    fn disconnect(&mut self, context: DisconnectContext) -> impl Future<Output = ()> + Send {
        let _ = context;
        async {}
    }

    /// A hook returned `Err`, ran past its timeout, or gave a decision that does not fit
    /// its stage; the session was told [`Decision::HookFailed`]. The default does nothing:
    /// log here.
    fn hook_failed(&mut self, error: &HookError) {
        let _ = error;
    }
}

/// What a hook knows about its connection, and the few things it may change.
///
/// It lends the connection's [`Session`] for the duration of the hook, without the methods
/// that drive it (those belong to the server).
///
/// Pass it on as `&mut Connection` (as the hook methods get it): a shared `&Connection`
/// held across an `.await` makes the future not `Send`, since the session is not `Sync`.
/// Values read from it (`conn.info().clone()`, the HELO name) can be held freely.
pub struct Connection<'a> {
    session: &'a mut Session,
    clients: &'a ClientRules,
}

impl<'a> Connection<'a> {
    pub(crate) fn new(session: &'a mut Session, clients: &'a ClientRules) -> Self {
        Connection { session, clients }
    }

    /// Ids and addresses, with a PROXY header or XCLIENT applied.
    pub fn info(&self) -> &ConnectionInfo {
        self.session.info()
    }

    /// The client as every per-client limit counts it: the address of
    /// [`info`](Connection::info) (the PROXY header's or XCLIENT's, when trusted),
    /// aggregated and exempted by the server's [`Limits::clients`](crate::Limits::clients).
    /// Key an application's own per-client limits (AUTH failures, rates) by
    /// [`Client::key`], and skip them when [`Client::exempt`]. `None` without an address
    /// (a UNIX socket).
    pub fn client(&self) -> Option<Client> {
        self.session
            .info()
            .remote_ip
            .map(|ip| self.clients.client(ip))
    }

    /// The accepted HELO or EHLO.
    pub fn helo(&self) -> Option<&HeloInfo> {
        self.session.helo()
    }

    /// The TLS layer, once active.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.session.tls()
    }

    /// The successful AUTH.
    pub fn auth(&self) -> Option<&AuthInfo> {
        self.session.auth()
    }

    /// The open transaction's envelope, so far.
    pub fn envelope(&self) -> Option<&Envelope> {
        self.session.envelope()
    }

    /// The `Received:` trace field for a message of this connection with `envelope` (see
    /// [`Session::received`]): `id` names the message in the store, `date` is an RFC 5322
    /// date-time. With [`trace::return_path`](smtp_session::trace::return_path), what a
    /// final delivery prepends to the message; the message's content never continues them
    /// ([`Config::leading_whitespace`]).
    pub fn received<'b>(
        &'b self,
        envelope: &'b Envelope,
        id: &'b str,
        date: &'b str,
    ) -> smtp_session::trace::Received<'b> {
        self.session.received(envelope, id, date)
    }

    /// The PROXY protocol header, with its TLVs, when one was received.
    pub fn proxy_header(&self) -> Option<&ProxyHeader> {
        self.session.proxy_header()
    }

    /// True when the client talked before the greeting.
    pub fn early_talker(&self) -> bool {
        self.session.early_talker()
    }

    /// The session's configuration.
    pub fn config(&self) -> &Config {
        self.session.config()
    }

    /// The extensions offered now.
    pub fn extensions(&self) -> Extensions {
        self.session.extensions()
    }

    /// Changes the extensions offered from now on; from the helo hook, this is what the
    /// EHLO reply lists.
    pub fn set_extensions(&mut self, extensions: Extensions) {
        self.session.set_extensions(extensions);
    }

    /// From the auth hook, for mechanisms the session does not decode: the user being
    /// authenticated, kept in the disconnect context once accepted.
    pub fn set_auth_username(&mut self, username: impl Into<String>) -> Result<(), HookError> {
        Ok(self.session.set_auth_username(username)?)
    }

    /// Records the client's reverse DNS name (Halon's `remoteptr`), typically from the
    /// connect hook, which runs before the greeting and after a PROXY header: it goes into
    /// [`info`](Connection::info), the disconnect context and
    /// [`Session::received`](smtp_session::Session::received)'s `Received:` field.
    pub fn set_remote_ptr(&mut self, name: Option<String>) {
        self.session.set_remote_ptr(name);
    }

    /// Stores a value for the whole connection; it comes back in
    /// [`DisconnectContext::context`] (Halon's `$context`).
    pub fn set_user_context(&mut self, value: Box<dyn Any + Send>) {
        self.session.set_user_context(value);
    }

    /// The value stored with [`set_user_context`](Connection::set_user_context).
    pub fn user_context_mut(&mut self) -> Option<&mut (dyn Any + Send)> {
        self.session.user_context_mut()
    }
}

impl std::fmt::Debug for Connection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("info", self.info())
            .field("helo", &self.helo())
            .finish_non_exhaustive()
    }
}
