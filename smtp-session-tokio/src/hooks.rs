//! Hook plumbing: what the server decides itself (the per-client limit of a PROXY client, a
//! refusal at accept, a streamed message that could not be stored), running a handler's
//! method under its timeout, settling its outcome with the session, and the pieces of a
//! streamed body.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use smtp_session::{AbortReason, Decision, Hook, HookId, IoError, IoErrorKind, Reply, Session};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::env::{bounded, Env};
use crate::handler::{Connection, Handler, HookError, HookResult};
use crate::limits::{Counts, Limits, Slot};
use crate::observer::Refusal;
use crate::socket::Conn;
use crate::stream::io_error;

/// How a hook ended.
pub(crate) enum HookEnd {
    Decided(Decision),
    Failed(HookError),
    /// The shutdown grace period ended while it ran.
    Forced,
    /// The replies before it could not be sent.
    WriteFailed(io::Error),
}

/// Hooks the server answers without the handler: a connection refused at accept, the
/// per-client limit of a PROXY client (its place is kept in `slot`), a connect hook
/// subscribed only for that limit, and a streamed message whose pieces could not be stored.
/// `None`: the handler decides.
pub(crate) fn decided_here(
    hook: &Hook,
    session: &Session,
    env: &Env<'_>,
    body: &mut Body,
    slot: &mut Option<Slot>,
) -> Option<HookEnd> {
    match hook {
        Hook::Message(_) => body.failed.take().map(HookEnd::Failed),
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

/// The per-client limit for the address a PROXY header gave: refused with a 421 at the
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
pub(crate) async fn run_hook<IO, H>(
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
pub(crate) fn settle_hook<IO, H: Handler>(
    handler: &mut H,
    session: &mut Session,
    conn: &mut Conn<IO>,
    id: HookId,
    end: HookEnd,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
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
            conn.set_broken();
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

/// Streamed bodies: the pieces of the message being received go to the handler, and why
/// the message can no longer be stored once one could not be written. Everything about
/// body pieces is here.
#[derive(Default)]
pub(crate) struct Body {
    /// Set by a piece that failed; the message's hook then fails with it.
    failed: Option<HookError>,
}

impl Body {
    /// The next piece of the body: written by the handler, bounded by the hook timeout; once
    /// one failed, the rest of the message's pieces go nowhere.
    pub(crate) async fn piece<H: Handler>(
        &mut self,
        handler: &mut H,
        session: &mut Session,
        env: &Env<'_>,
        piece: Vec<u8>,
    ) {
        if self.failed.is_some() {
            return;
        }
        let mut view = Connection::new(session, &env.limits.clients);
        // Boxed like hooks; a handler that drops pieces boxes nothing.
        let write = Box::pin(handler.body_piece(&mut view, piece));
        self.failed = match bounded(write, env.limits.hook_timeout).await {
            Some(Ok(())) => None,
            Some(Err(err)) => Some(err),
            None => Some("writing a body piece took too long".into()),
        };
    }

    /// The message will not be accepted: the handler discards its spool, and the next
    /// message starts afresh.
    pub(crate) async fn aborted<H: Handler>(
        &mut self,
        handler: &mut H,
        session: &mut Session,
        env: &Env<'_>,
        reason: AbortReason,
    ) {
        self.failed = None;
        let mut view = Connection::new(session, &env.limits.clients);
        let aborted = Box::pin(handler.body_aborted(&mut view, reason));
        let _ = bounded(aborted, env.limits.hook_timeout).await;
    }
}

/// [`Config::report_aborted_transactions`](smtp_session::Config::report_aborted_transactions):
/// the transaction ended without a message; the handler forgets what it kept for it.
pub(crate) async fn transaction_aborted<H: Handler>(
    handler: &mut H,
    session: &mut Session,
    env: &Env<'_>,
    reason: AbortReason,
) {
    let mut view = Connection::new(session, &env.limits.clients);
    let aborted = Box::pin(handler.transaction_aborted(&mut view, reason));
    let _ = bounded(aborted, env.limits.hook_timeout).await;
}

/// What a connection closed by the end of the shutdown grace period says in its context.
pub(crate) fn forced_close() -> IoError {
    IoError::new(
        IoErrorKind::Socket,
        "closed at the end of the shutdown grace period",
        None,
    )
}
