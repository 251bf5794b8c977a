//! One connection: the crate's canonical run loop, with every duty of a runtime (SPEC 15),
//! as a [`Driver`] whose loop is a list of named steps (the shape of quinn's
//! `ConnectionDriver::poll` and str0m's run loop):
//!
//! 1. [`drain_outputs`](Driver::drain_outputs): drain [`Session::poll_output`]. Writes are
//!    gathered (one write for all the replies of one input), hooks are run where they
//!    arrive ([`crate::hooks`]), `Close` flushes and half-closes, `StartTls` runs the
//!    handshake. The disconnect hook call ends the loop ([`finish`](Driver::finish)).
//! 2. [`handle_due`](Driver::handle_due): what is due without waiting: a shutdown or the end
//!    of its grace period, the gathered replies to send (bounded by the write timeout),
//!    bytes the session could not take earlier.
//! 3. [`deadline`](Driver::deadline): the session's deadline, handled at once when passed,
//!    else put on the timer.
//! 4. [`wait`](Driver::wait): whichever comes first of bytes from the client (taken by the
//!    session straight from a stack buffer, so an idle connection holds no read buffer), the
//!    deadline, and the server's shutdown.
//!
//! Backpressure: bytes the session does not take (it stops at `max_pending_input` while
//! paused) are kept, and the socket is not read again until the session took them all, so a
//! client can make a connection hold at most the session's limits plus one read.

use std::future::Future;
use std::pin::{pin, Pin};
use std::time::{Duration, Instant};

use smtp_session::{DisconnectContext, Hook, HookCall, Output, Session};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::env::{bounded, Env};
use crate::handler::Handler;
use crate::hooks::{decided_here, forced_close, run_hook, settle_hook, transaction_aborted, Body};
use crate::limits::Slot;
use crate::observer::observe_replies;
use crate::socket::Conn;

/// Runs one session over `io` to its end, the disconnect hook included.
///
/// Not an `async fn`: the driver is built before the future, so that the future holds it
/// once rather than beside the arguments it was built from (every connection's task holds
/// this future).
pub(crate) fn drive<'e, IO, H>(
    io: IO,
    session: Session,
    handler: H,
    env: Env<'e>,
) -> impl Future<Output = ()> + Send + 'e
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'e,
    H: Handler,
{
    let conn = Conn::new(io, env.force.clone(), &session);
    let mut driver = Driver {
        session,
        handler,
        conn,
        env,
        proxied_slot: None,
        body: Body::default(),
        shutdown_seen: false,
        spins: 0,
    };
    #[cfg(feature = "tracing")]
    let span = driver.conn.trace.span().clone();
    // Used in place: an `async fn` taking it by value would hold it twice.
    let run = async move { driver.run().await };
    #[cfg(feature = "tracing")]
    let run = tracing::Instrument::instrument(run, span);
    run
}

/// One connection between its steps: the session, the handler, the socket, and what the
/// steps remember.
struct Driver<'e, IO, H> {
    session: Session,
    handler: H,
    conn: Conn<IO>,
    env: Env<'e>,
    /// Held until the end: the PROXY client's place under the per-client limit.
    proxied_slot: Option<Slot>,
    /// Streamed bodies: the pieces' plumbing, and why the message can no longer be stored.
    body: Body,
    /// The session was told of the shutdown.
    shutdown_seen: bool,
    /// Passed deadlines handled in a row with no output in between.
    spins: u32,
}

/// What the driver waits on besides the socket.
struct Waits<'a> {
    timer: Timer<'a>,
    stopping: Pin<&'a mut WaitForCancellationFutureOwned>,
    forced: Pin<&'a mut WaitForCancellationFutureOwned>,
}

/// The session's deadline on a timer. The timer is armed at a deadline and left alone when
/// the deadline moves later, as it does on every read: it then fires early, the session
/// ignores the early call, and it is armed again. One timer update per timeout period
/// instead of one per command. It is armed no later than the shortest of the session's
/// timeouts from now, so that entering DATA (whose timeout is shorter) does not move it
/// earlier: a timer moved ahead of every other one wakes the runtime's driver, a system call
/// and a spurious wake-up.
struct Timer<'a> {
    sleep: Pin<&'a mut Sleep>,
    armed: Option<Instant>,
    shortest: Duration,
}

impl Timer<'_> {
    /// Makes the timer fire no later than `at`.
    fn arm(&mut self, at: Instant, now: Instant) {
        if self.armed.map_or(true, |armed| armed > at) {
            let arm_at = now
                .checked_add(self.shortest)
                .map_or(at, |soon| at.min(soon));
            self.sleep.as_mut().reset(arm_at.into());
            self.armed = Some(arm_at);
        }
    }
}

/// The session's deadline, as [`Driver::deadline`] found it.
enum Deadline {
    /// It had passed, and the session was told.
    Passed,
    /// The timer fires no later than this; `None`: no deadline.
    Ahead(Option<Instant>),
}

impl<IO, H> Driver<'_, IO, H>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler,
{
    async fn run(&mut self) {
        // Pinned here, in the connection's own future, so that waiting on them allocates
        // nothing and registers nothing anew at each wait.
        let config = self.session.config();
        let shortest = config.command_timeout.min(config.data_timeout);
        let mut waits = Waits {
            timer: Timer {
                sleep: pin!(tokio::time::sleep(Duration::ZERO)),
                armed: None,
                shortest,
            },
            stopping: pin!(self.env.shutdown.clone().cancelled_owned()),
            forced: pin!(self.env.force.clone().cancelled_owned()),
        };
        loop {
            if let Some(context) = self.drain_outputs().await {
                return self.finish(context).await;
            }
            // Close is always followed by the disconnect hook in the same drain, which ends
            // the loop above: a closed session here is a broken engine, and waiting on would
            // hang.
            assert!(
                !self.session.is_closed(),
                "invariant broken: the session closed without its disconnect hook call (SPEC 2.5)"
            );
            if self.handle_due().await {
                continue;
            }
            if let Deadline::Ahead(deadline) = self.deadline(&mut waits.timer) {
                self.wait(&mut waits, deadline).await;
            }
        }
    }

    /// Step 1: every output the session has, in order. The disconnect context, once the
    /// session ended.
    async fn drain_outputs(&mut self) -> Option<DisconnectContext> {
        while let Some(output) = self.session.poll_output() {
            self.spins = 0;
            let (session, env) = (&mut self.session, &self.env);
            match output {
                Output::Write(bytes) => self.write(bytes).await,
                Output::Close => self.conn.close(env.limits).await,
                Output::HookCall(HookCall {
                    hook: Hook::Disconnect(context),
                    ..
                }) => return Some(*context),
                Output::HookCall(call) => self.hook(call).await,
                Output::BodyPiece(piece) => {
                    self.body
                        .piece(&mut self.handler, session, env, piece)
                        .await;
                }
                Output::BodyAborted(reason) => {
                    self.body
                        .aborted(&mut self.handler, session, env, reason)
                        .await;
                }
                Output::TransactionAborted(reason) => {
                    transaction_aborted(&mut self.handler, session, env, reason).await;
                }
                Output::StartTls => self.conn.start_tls(session, env).await,
                _ => {}
            }
        }
        None
    }

    /// Replies to send: gathered, and sent as they go once they fill the output limit
    /// (draining lets the session go on with commands it held back for a full output
    /// buffer, so gathering must not be without bound).
    async fn write(&mut self, bytes: Vec<u8>) {
        if let Some(observer) = self.env.observer {
            observe_replies(observer, &bytes);
        }
        self.conn.queue(bytes, &mut self.session, self.env.limits);
        if self
            .conn
            .unsent_reaches(self.session.config().max_pending_output)
        {
            self.conn
                .flush_or_report(&mut self.session, self.env.limits)
                .await;
        }
    }

    /// A hook call: decided by the server itself, or run by the handler; then settled.
    async fn hook(&mut self, call: HookCall) {
        let (session, env) = (&mut self.session, &self.env);
        let here = decided_here(
            &call.hook,
            session,
            env,
            &mut self.body,
            &mut self.proxied_slot,
        );
        let end = match here {
            Some(end) => end,
            None => run_hook(&mut self.handler, session, &mut self.conn, call.hook, env).await,
        };
        settle_hook(&mut self.handler, session, &mut self.conn, call.id, end);
    }

    /// The end: the disconnect hook, then the drain of what the client still sends. Not an
    /// `async fn`, which would keep the context in its future beside the hook's.
    fn finish(&mut self, context: DisconnectContext) -> impl Future<Output = ()> + '_ {
        let disconnect = Box::pin(self.handler.disconnect(context));
        let (conn, env) = (&mut self.conn, &self.env);
        async move {
            let _ = bounded(disconnect, env.limits.hook_timeout).await;
            conn.drain(env.limits, env.force).await;
        }
    }

    /// Step 2: what is due without waiting. True when something was done, and the session
    /// may have output.
    async fn handle_due(&mut self) -> bool {
        let now = Instant::now;
        if !self.shutdown_seen && self.env.shutdown.is_cancelled() {
            self.shutdown_seen = true;
            let _ = self.session.handle_shutdown(now());
        } else if self.env.force.is_cancelled() {
            let _ = self.session.handle_io_error(forced_close(), now());
        } else if self.conn.has_unsent() {
            self.conn
                .flush_or_report(&mut self.session, self.env.limits)
                .await;
        } else {
            // Bytes the session could not take while it was paused: offered again first.
            return self.conn.offer_kept(&mut self.session);
        }
        true
    }

    /// Step 3: the session's deadline, handled at once when it passed already (the session
    /// may also ask for this to resume held commands), else on the timer.
    fn deadline(&mut self, timer: &mut Timer<'_>) -> Deadline {
        let Some(at) = self.session.poll_timeout() else {
            return Deadline::Ahead(None);
        };
        let now = Instant::now();
        if at <= now {
            let _ = self.session.handle_timeout(now);
            self.spins += 1;
            assert!(
                self.spins < 10_000,
                "handle_timeout at a passed poll_timeout did nothing, 10,000 times: \
                 the session must act or move its deadline"
            );
            return Deadline::Passed;
        }
        timer.arm(at, now);
        Deadline::Ahead(Some(at))
    }

    /// Step 4: the first of the end of the shutdown grace period, the shutdown, bytes from
    /// the client (when the session can take them) and the timer.
    async fn wait(&mut self, waits: &mut Waits<'_>, deadline: Option<Instant>) {
        let can_read = self.conn.can_read();
        let (session, conn) = (&mut self.session, &mut self.conn);
        tokio::select! {
            biased;
            _ = waits.forced.as_mut(), if self.shutdown_seen => {
                let _ = session.handle_io_error(forced_close(), Instant::now());
            }
            _ = waits.stopping.as_mut(), if !self.shutdown_seen => {
                self.shutdown_seen = true;
                let _ = session.handle_shutdown(Instant::now());
            }
            _ = conn.read(session), if can_read => {}
            _ = waits.timer.sleep.as_mut(), if deadline.is_some() => {
                waits.timer.armed = None;
                let _ = session.handle_timeout(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use smtp_session::{Config, ConnectionInfo};

    use super::*;
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use crate::limits::Limits;

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
