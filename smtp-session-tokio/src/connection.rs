//! One connection: the crate's canonical run loop, with every duty of a runtime (SPEC 15).
//!
//! 1. Drain [`Session::poll_output`]: writes are gathered and sent in order (one write for
//!    all the replies of one input), hooks are awaited where they arrive, `Close` flushes
//!    and half-closes, `StartTls` runs the handshake.
//! 2. Send what is gathered, bounded by the write timeout.
//! 3. Wait for whichever comes first: bytes from the client (taken by the session straight
//!    from a stack buffer, so an idle connection holds no read buffer), the session's
//!    deadline, or the server's shutdown.
//!
//! Backpressure: bytes the session does not take (it stops at `max_pending_input` while
//! paused) are kept, and the socket is not read again until the session took them all, so a
//! client can make a connection hold at most the session's limits plus one read.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use smtp_session::{Decision, Hook, HookCall, IoError, IoErrorKind, Output, Reply, Session};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::handler::{Connection, Handler, HookError, HookResult};
use crate::limits::{Counts, ErrorDelay, Limits, Slot};
use crate::observer::{observe_replies, Observer, Refusal};
use crate::stream::{io_error, tls_error, Stream};

/// How much one read takes from the socket. It lives on the stack only while a read is
/// polled, never in an idle connection.
const READ_SIZE: usize = 16 * 1024;

/// What a connection needs from its server.
pub(crate) struct Env<'a> {
    pub(crate) limits: &'a Limits,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<&'a crate::tls::Tls>,
    pub(crate) shutdown: &'a CancellationToken,
    pub(crate) force: &'a CancellationToken,
    /// With a PROXY header, the per-address limit is applied at the connect stage.
    pub(crate) proxy_ip_limit: Option<&'a Arc<Counts>>,
    /// Whether the handler itself wants the connect hook (it may be subscribed only for
    /// the limit above).
    pub(crate) handler_connect: bool,
    /// Told of every reply, and of a refusal under the per-address limit.
    pub(crate) observer: Option<&'a dyn Observer>,
    /// A connection over a limit at accept: its connect stage is refused with this reply,
    /// so that it ends as every connection does, with its disconnect context.
    pub(crate) refusal: Option<&'a Reply>,
}

/// Runs one session over `io` to its end, the disconnect hook included.
pub(crate) async fn drive<IO, H>(io: IO, mut session: Session, mut handler: H, env: Env<'_>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    let mut conn = Conn {
        stream: Stream::Plain(io),
        wbuf: Vec::new(),
        kept: Vec::new(),
        read_eof: false,
        broken: false,
        pacing: Pacing {
            errors: 0,
            owed: Duration::ZERO,
            force: env.force.clone(),
        },
    };
    // Held until the end: the PROXY client's place under the per-address limit.
    let mut proxied_slot: Option<Slot> = None;
    let mut stopping = pin!(env.shutdown.clone().cancelled_owned());
    let mut forced = pin!(env.force.clone().cancelled_owned());
    let mut shutdown_seen = false;
    // The timer is armed at a deadline and left alone when the deadline moves later, as it
    // does on every read: it then fires early, the session ignores the early call, and it is
    // armed again. One timer update per timeout period instead of one per command. It is
    // armed no later than the shortest of the session's timeouts from now, so that entering
    // DATA (whose timeout is shorter) does not move it earlier: a timer moved ahead of every
    // other one wakes the runtime's driver, a system call and a spurious wake-up.
    let mut timer = pin!(tokio::time::sleep(Duration::ZERO));
    let mut armed: Option<Instant> = None;
    let shortest = {
        let config = session.config();
        config.command_timeout.min(config.data_timeout)
    };
    let mut spins = 0u32;
    // Streamed bodies: why the message being received can no longer be stored.
    let mut body_failed: Option<HookError> = None;

    loop {
        while let Some(output) = session.poll_output() {
            spins = 0;
            match output {
                Output::Write(bytes) => {
                    if let Some(observer) = env.observer {
                        observe_replies(observer, &bytes);
                    }
                    conn.queue(bytes, &session, env.limits);
                    if conn.wbuf.len() >= session.config().max_pending_output {
                        // Draining lets the session go on with commands it held back for a
                        // full output buffer: send as we go rather than gather without bound.
                        conn.flush_or_report(&mut session, env.limits).await;
                    }
                }
                Output::Close => conn.close(env.limits).await,
                Output::HookCall(HookCall {
                    hook: Hook::Disconnect(context),
                    ..
                }) => {
                    let disconnect = Box::pin(handler.disconnect(*context));
                    let _ = bounded(disconnect, env.limits.hook_timeout).await;
                    conn.drain(env.limits, env.force).await;
                    return;
                }
                Output::BodyPiece(piece) if body_failed.is_none() => {
                    let mut view = Connection::new(&mut session, &env.limits.clients);
                    // Boxed like hooks; a handler that drops pieces boxes nothing.
                    let write = Box::pin(handler.body_piece(&mut view, piece));
                    body_failed = match bounded(write, env.limits.hook_timeout).await {
                        Some(Ok(())) => None,
                        Some(Err(err)) => Some(err),
                        None => Some("writing a body piece took too long".into()),
                    };
                }
                // The message already failed: the rest of its body goes nowhere.
                Output::BodyPiece(_) => {}
                Output::BodyAborted(reason) => {
                    body_failed = None;
                    let mut view = Connection::new(&mut session, &env.limits.clients);
                    let aborted = Box::pin(handler.body_aborted(&mut view, reason));
                    let _ = bounded(aborted, env.limits.hook_timeout).await;
                }
                Output::HookCall(call) => {
                    let here = decided_here(
                        &call.hook,
                        &session,
                        &env,
                        &mut body_failed,
                        &mut proxied_slot,
                    );
                    let end = match here {
                        Some(end) => end,
                        None => {
                            run_hook(&mut handler, &mut session, &mut conn, call.hook, &env).await
                        }
                    };
                    settle_hook(&mut handler, &mut session, &mut conn, call.id, end);
                }
                Output::StartTls => conn.start_tls(&mut session, &env).await,
                _ => {}
            }
        }
        // Close is always followed by the disconnect hook in the same drain, which returns
        // above: a closed session here is a broken engine, and waiting on would hang.
        assert!(
            !session.is_closed(),
            "invariant broken: the session closed without its disconnect hook call (SPEC 2.5)"
        );
        if !shutdown_seen && env.shutdown.is_cancelled() {
            shutdown_seen = true;
            let _ = session.handle_shutdown(Instant::now());
            continue;
        }
        if env.force.is_cancelled() {
            let _ = session.handle_io_error(forced_close(), Instant::now());
            continue;
        }
        if !conn.wbuf.is_empty() {
            conn.flush_or_report(&mut session, env.limits).await;
            continue;
        }
        if !conn.kept.is_empty() {
            // Bytes the session could not take while it was paused: offered again first.
            let taken = session
                .handle_input(&conn.kept, Instant::now())
                .unwrap_or(conn.kept.len());
            conn.kept.drain(..taken);
            if conn.kept.is_empty() {
                conn.kept = Vec::new();
            }
            if taken > 0 {
                continue;
            }
        }
        let deadline = session.poll_timeout();
        if let Some(at) = deadline {
            let now = Instant::now();
            if at <= now {
                // Due already (the session may also ask for this to resume held commands).
                let _ = session.handle_timeout(now);
                spins += 1;
                assert!(
                    spins < 10_000,
                    "handle_timeout at a passed poll_timeout did nothing, 10,000 times: \
                     the session must act or move its deadline"
                );
                continue;
            }
            if armed.map_or(true, |armed| armed > at) {
                let arm_at = now.checked_add(shortest).map_or(at, |soon| at.min(soon));
                timer.as_mut().reset(arm_at.into());
                armed = Some(arm_at);
            }
        }
        let can_read = conn.kept.is_empty() && !conn.read_eof && !conn.broken;
        tokio::select! {
            biased;
            _ = &mut forced, if shutdown_seen => {
                let _ = session.handle_io_error(forced_close(), Instant::now());
            }
            _ = &mut stopping, if !shutdown_seen => {
                shutdown_seen = true;
                let _ = session.handle_shutdown(Instant::now());
            }
            read = conn.read_into(&mut session), if can_read => match read {
                Ok(0) => {
                    conn.read_eof = true;
                    let _ = session.handle_eof(Instant::now());
                }
                Ok(_) => {}
                Err(err) => {
                    conn.broken = true;
                    let _ = session.handle_io_error(io_error(&err), Instant::now());
                }
            },
            _ = &mut timer, if deadline.is_some() => {
                armed = None;
                let _ = session.handle_timeout(Instant::now());
            }
        }
    }
}

/// Hooks the server answers without the handler: the per-address limit of a PROXY
/// client (its place is kept in `slot`), a connect hook subscribed only for that limit, and
/// a streamed message whose pieces could not be stored. `None`: the handler decides.
fn decided_here(
    hook: &Hook,
    session: &Session,
    env: &Env<'_>,
    body_failed: &mut Option<HookError>,
    slot: &mut Option<Slot>,
) -> Option<HookEnd> {
    match hook {
        Hook::Message(_) => body_failed.take().map(HookEnd::Failed),
        Hook::Connect => {
            if let Some(reply) = env.refusal {
                return Some(HookEnd::Decided(Decision::Reject(reply.clone())));
            }
            if let Some(counts) = env.proxy_ip_limit {
                match admit_proxied(session, counts, env.limits) {
                    Ok(admitted) => *slot = admitted,
                    Err(refusal) => {
                        if let Some(observer) = env.observer {
                            observer.connection_refused(Refusal::MaxConnectionsPerIp);
                        }
                        return Some(HookEnd::Decided(refusal));
                    }
                }
            }
            (!env.handler_connect).then_some(HookEnd::Decided(Decision::Accept))
        }
        _ => None,
    }
}

/// How a hook ended.
enum HookEnd {
    Decided(Decision),
    Failed(HookError),
    Forced,
    WriteFailed(io::Error),
}

type BoxedHook<'a> = Pin<Box<dyn Future<Output = HookResult> + Send + 'a>>;

/// Calls the handler's method for `hook`. Boxed: hook futures can be large, and inline they
/// would make every connection's task as large as the largest of them, even when idle.
fn call_handler<'a, 's: 'a, H: Handler>(
    handler: &'a mut H,
    conn: &'a mut Connection<'s>,
    hook: Hook,
) -> BoxedHook<'a> {
    match hook {
        Hook::Connect => Box::pin(handler.connect(conn)),
        Hook::Helo { verb, host } => Box::pin(handler.helo(conn, verb, host)),
        Hook::Auth(request) => Box::pin(handler.auth(conn, request)),
        Hook::MailFrom { path, params } => Box::pin(handler.mail_from(conn, path, params)),
        Hook::RcptTo { path, params } => Box::pin(handler.rcpt_to(conn, path, params)),
        Hook::Data => Box::pin(handler.data(conn)),
        Hook::Vrfy(string) => Box::pin(handler.vrfy(conn, string)),
        Hook::Expn(string) => Box::pin(handler.expn(conn, string)),
        Hook::Message(message) => Box::pin(handler.message(conn, *message)),
        // A hook this version does not know: its stage goes on, as for an unsubscribed one.
        _ => Box::pin(async { Ok(Decision::Accept) }),
    }
}

/// Runs a hook. A hook that answers at once costs no write and no timer: the replies before
/// it stay gathered with the ones after it. Only when it must wait are they sent, and the
/// hook's timeout started.
async fn run_hook<IO, H>(
    handler: &mut H,
    session: &mut Session,
    conn: &mut Conn<IO>,
    hook: Hook,
    env: &Env<'_>,
) -> HookEnd
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    let mut view = Connection::new(session, &env.limits.clients);
    let mut hook = call_handler(handler, &mut view, hook);
    if let Poll::Ready(result) = poll_fn(|cx| Poll::Ready(hook.as_mut().poll(cx))).await {
        return result.map_or_else(HookEnd::Failed, HookEnd::Decided);
    }
    if let Err(err) = conn.flush(env.limits.write_timeout).await {
        return HookEnd::WriteFailed(err);
    }
    let limit = env.limits.hook_timeout;
    tokio::select! {
        biased;
        _ = env.force.cancelled() => HookEnd::Forced,
        result = tokio::time::timeout(limit, hook) => match result {
            Ok(Ok(decision)) => HookEnd::Decided(decision),
            Ok(Err(err)) => HookEnd::Failed(err),
            Err(_) => HookEnd::Failed(format!("the hook took longer than {limit:?}").into()),
        },
    }
}

/// Hands a hook's outcome to the session. A decision the session refuses (a 2xx rejection,
/// a challenge outside AUTH) is a failed hook.
fn settle_hook<IO, H: Handler>(
    handler: &mut H,
    session: &mut Session,
    conn: &mut Conn<IO>,
    id: smtp_session::HookId,
    end: HookEnd,
) {
    let now = Instant::now();
    let decision = match end {
        HookEnd::Decided(decision) => decision,
        HookEnd::Failed(err) => {
            handler.hook_failed(&err);
            Decision::HookFailed
        }
        HookEnd::Forced => {
            let _ = session.handle_io_error(forced_close(), now);
            return;
        }
        HookEnd::WriteFailed(err) => {
            conn.broken = true;
            let _ = session.handle_io_error(io_error(&err), now);
            return;
        }
    };
    // A decision that does not fit its hook is refused, and the session counts the hook as
    // failed by itself; the handler hears why.
    if let Err(err) = session.decide(id, decision, now) {
        handler.hook_failed(&HookError::from(err));
    }
}

/// The per-address limit for the address a PROXY header gave: refused with a 421 at the
/// connect stage, which closes.
fn admit_proxied(
    session: &Session,
    counts: &Arc<Counts>,
    limits: &Limits,
) -> Result<Option<Slot>, Decision> {
    let Some(ip) = session.info().remote_ip else {
        return Ok(None);
    };
    let client = limits.clients.client(ip);
    match counts.admit_client(client, limits.max_connections_per_ip) {
        Ok(slot) => Ok(Some(slot)),
        Err(over) => {
            let line = over.reply(&session.config().hostname);
            let text = line.trim_end().trim_start_matches("421 ");
            Err(Reply::new(421, text).map_or(Decision::HookFailed, Decision::Reject))
        }
    }
}

/// What a connection closed by the end of the shutdown grace period says in its context.
fn forced_close() -> IoError {
    IoError::new(
        IoErrorKind::Socket,
        "closed at the end of the shutdown grace period",
        None,
    )
}

/// Runs `fut` to its end, or for `limit` at most once it had to wait: a future that is ready
/// at once (a write into an empty socket buffer) costs no timer.
pub(crate) async fn bounded<F: Future>(fut: F, limit: Duration) -> Option<F::Output> {
    let mut fut = pin!(fut);
    if let Poll::Ready(output) = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Some(output);
    }
    tokio::time::timeout(limit, fut).await.ok()
}

/// The socket side of a connection.
struct Conn<IO> {
    stream: Stream<IO>,
    /// Replies gathered while draining outputs, sent in one write.
    wbuf: Vec<u8>,
    /// Bytes read but not yet taken by the session.
    kept: Vec<u8>,
    read_eof: bool,
    /// A read or write failed: nothing more is written or drained.
    broken: bool,
    pacing: Pacing,
}

/// [`ErrorDelay`]: the connection's errors so far, and the delay owed before the gathered
/// replies go out.
struct Pacing {
    errors: u32,
    owed: Duration,
    /// Cut short by the end of the shutdown grace period.
    force: CancellationToken,
}

impl Pacing {
    /// Owes the delay of each error the session counted since the last call (`errors` is
    /// [`Session::error_count`]), unless the client is `exempt` (asked only then).
    fn count(&mut self, errors: u32, delay: &ErrorDelay, exempt: impl FnOnce() -> bool) {
        if self.errors >= errors || delay.delay(errors).is_zero() {
            self.errors = self.errors.max(errors);
            return;
        }
        if exempt() {
            self.errors = errors;
            return;
        }
        while self.errors < errors {
            self.errors += 1;
            self.owed = self.owed.saturating_add(delay.delay(self.errors));
        }
    }

    /// Waits what is owed, on a timer.
    async fn wait(&mut self) {
        let owed = std::mem::take(&mut self.owed);
        tokio::select! {
            biased;
            _ = self.force.cancelled() => {}
            _ = tokio::time::sleep(owed) => {}
        }
    }
}

impl<IO> Conn<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Gathers replies to send, and owes the error delay of the session's errors so far
    /// (none for a client exempt from per-client limits).
    fn queue(&mut self, bytes: Vec<u8>, session: &Session, limits: &Limits) {
        if self.broken {
            return;
        }
        let exempt = || {
            let ip = session.info().remote_ip;
            ip.is_some_and(|ip| limits.clients.client(ip).exempt)
        };
        self.pacing
            .count(session.error_count(), &limits.error_delay, exempt);
        if self.wbuf.is_empty() {
            // Usually one write per input: taken as it is, not copied.
            self.wbuf = bytes;
        } else {
            self.wbuf.extend_from_slice(&bytes);
        }
    }

    /// Sends the gathered replies; a client that does not read them within `limit` gets
    /// `the client stopped reading`.
    async fn flush(&mut self, limit: Duration) -> io::Result<()> {
        if self.wbuf.is_empty() || self.broken {
            return Ok(());
        }
        if !self.pacing.owed.is_zero() {
            // A client past the soft error limit waits before it reads its error replies.
            // Boxed: inline, the timer would enlarge every connection's task, and few
            // connections ever wait.
            Box::pin(self.pacing.wait()).await;
        }
        let buf = std::mem::take(&mut self.wbuf);
        let stream = &mut self.stream;
        let write = async {
            stream.write_all(&buf).await?;
            stream.flush().await
        };
        let result = bounded(write, limit).await.unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))
        });
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    async fn flush_or_report(&mut self, session: &mut Session, limits: &Limits) {
        if let Err(err) = self.flush(limits.write_timeout).await {
            if !session.is_closed() {
                let _ = session.handle_io_error(io_error(&err), Instant::now());
            }
        }
    }

    /// Reads once, straight into the session; what it does not take is kept.
    fn read_into<'a>(
        &'a mut self,
        session: &'a mut Session,
    ) -> impl Future<Output = io::Result<usize>> + 'a {
        poll_fn(move |cx| {
            let mut buf = [MaybeUninit::<u8>::uninit(); READ_SIZE];
            let mut buf = ReadBuf::uninit(&mut buf);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(())) => {}
            }
            let data = buf.filled();
            if !data.is_empty() {
                let taken = session
                    .handle_input(data, Instant::now())
                    .unwrap_or(data.len());
                self.kept.extend_from_slice(&data[taken..]);
            }
            Poll::Ready(Ok(data.len()))
        })
    }

    /// `Output::Close`: send what is owed, then end our side of the stream (with
    /// close_notify under TLS).
    async fn close(&mut self, limits: &Limits) {
        if self.flush(limits.write_timeout).await.is_ok() && !self.broken {
            let _ = bounded(self.stream.shutdown(), limits.write_timeout).await;
        }
        self.kept = Vec::new();
    }

    /// After the close: reads and drops what the client still sends, briefly, until it
    /// closes too, so that the kernel sends our FIN rather than a reset that could destroy
    /// the last reply before the client read it.
    async fn drain(&mut self, limits: &Limits, force: &CancellationToken) {
        if self.read_eof || self.broken {
            return;
        }
        let mut left = limits.drain_bytes;
        let stream = &mut self.stream;
        let drain = poll_fn(|cx| loop {
            let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
            let mut buf = ReadBuf::uninit(&mut buf);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    left = left.saturating_sub(buf.filled().len());
                    if left == 0 {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(_) => return Poll::Ready(()),
            }
        });
        tokio::select! {
            biased;
            _ = force.cancelled() => {}
            _ = bounded(drain, limits.drain_time) => {}
        }
    }

    /// `Output::StartTls`: send what is owed, drop plaintext read but not taken (never
    /// executed after the handshake), run the handshake, report it.
    async fn start_tls(&mut self, session: &mut Session, env: &Env<'_>) {
        let flushed = self.flush(env.limits.write_timeout).await;
        self.kept = Vec::new();
        let now = Instant::now;
        if let Err(err) = flushed {
            let _ = session.handle_io_error(io_error(&err), now());
            return;
        }
        #[cfg(feature = "tls")]
        if let (Some(tls), Stream::Plain(_)) = (env.tls, &self.stream) {
            let Stream::Plain(io) = std::mem::replace(&mut self.stream, Stream::Gone) else {
                unreachable!("matched as plaintext just above");
            };
            // Behind a PROXY header, implicit TLS: the client's first handshake bytes came
            // with the header, and the session hands them back. Empty otherwise.
            let io = crate::stream::Prefixed {
                prefix: session.take_handshake_bytes(),
                pos: 0,
                io,
            };
            // Boxed: a handshake in progress is large, and only lives this long.
            let accept = Box::pin(tls.acceptor().accept(io));
            match bounded(accept, env.limits.handshake_timeout).await {
                Some(Ok(stream)) => {
                    let info = tls.info(stream.get_ref().1);
                    self.stream = Stream::Tls(Box::new(stream));
                    let _ = session.handle_tls_established(info, now());
                }
                Some(Err(err)) => {
                    self.broken = true;
                    let mut e = io_error(&err);
                    e.kind = IoErrorKind::Tls;
                    let _ = session.handle_tls_failed(e, now());
                }
                None => {
                    self.broken = true;
                    let _ = session.handle_tls_failed(tls_error("TLS handshake timed out"), now());
                }
            }
            return;
        }
        let _ = session.handle_tls_failed(tls_error("TLS is not available"), now());
    }
}

#[cfg(test)]
mod tests {
    use smtp_session::{Config, ConnectionInfo};

    use super::*;

    struct Nothing;

    impl Handler for Nothing {}

    /// The engine promises the disconnect hook call right after `Close`; a session found
    /// closed without it is a bug that must be loud, not a connection that ends quietly
    /// without its context.
    #[tokio::test]
    #[should_panic(
        expected = "invariant broken: the session closed without its disconnect hook call"
    )]
    async fn a_session_closed_without_its_disconnect_call_panics_naming_the_invariant() {
        let now = Instant::now();
        let mut session = Session::new(Arc::new(Config::default()), ConnectionInfo::default(), now);
        let _ = session.handle_eof(now);
        // Every output taken away, the disconnect hook call among them.
        while session.poll_output().is_some() {}
        assert!(session.is_closed());
        let limits = Limits::default();
        let token = CancellationToken::new();
        let env = Env {
            limits: &limits,
            #[cfg(feature = "tls")]
            tls: None,
            shutdown: &token,
            force: &token,
            proxy_ip_limit: None,
            handler_connect: false,
            observer: None,
            refusal: None,
        };
        let (io, _client) = tokio::io::duplex(64);
        drive(io, session, Nothing, env).await;
    }
}
