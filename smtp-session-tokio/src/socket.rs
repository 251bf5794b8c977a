//! The socket side of a connection: replies gathered and sent in one write (held back by
//! the error delay), reads straight into the session with what it does not take kept, the
//! close with its drain, and the STARTTLS handshake.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
use smtp_session::IoErrorKind;
use smtp_session::Session;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::env::{bounded, Env};
use crate::limits::{ErrorDelay, Limits};
use crate::stream::{io_error, tls_error, Stream};

/// How much one read takes from the socket. It lives on the stack only while a read is
/// polled, never in an idle connection.
const READ_SIZE: usize = 16 * 1024;

/// The socket side of a connection.
pub(crate) struct Conn<IO> {
    stream: Stream<IO>,
    /// Replies gathered while draining outputs, sent in one write.
    wbuf: Vec<u8>,
    /// Bytes read but not yet taken by the session.
    kept: Vec<u8>,
    read_eof: bool,
    /// A read or write failed: nothing more is written or drained.
    broken: bool,
    pacing: Pacing,
    /// The dialogue, for a `tracing` subscriber.
    #[cfg(feature = "tracing")]
    pub(crate) trace: crate::trace::Trace,
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
    /// A plaintext connection over `io`; `force` cuts its waits short at the end of the
    /// shutdown grace period.
    pub(crate) fn new(io: IO, force: CancellationToken, session: &Session) -> Self {
        #[cfg(not(feature = "tracing"))]
        let _ = session;
        Conn {
            #[cfg(feature = "tracing")]
            trace: crate::trace::Trace::new(session),
            stream: Stream::Plain(io),
            wbuf: Vec::new(),
            kept: Vec::new(),
            read_eof: false,
            broken: false,
            pacing: Pacing {
                errors: 0,
                owed: Duration::ZERO,
                force,
            },
        }
    }

    /// Replies are gathered and not sent yet.
    pub(crate) fn has_unsent(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// At least `limit` bytes of replies are gathered.
    pub(crate) fn unsent_reaches(&self, limit: usize) -> bool {
        self.wbuf.len() >= limit
    }

    /// A write failed on the hook's behalf: nothing more is written or drained.
    pub(crate) fn set_broken(&mut self) {
        self.broken = true;
    }

    /// Offers the session the bytes it could not take while it was paused; true when it
    /// took some.
    pub(crate) fn offer_kept(&mut self, session: &mut Session) -> bool {
        if self.kept.is_empty() {
            return false;
        }
        let taken = session
            .handle_input(&self.kept, Instant::now())
            .unwrap_or(self.kept.len());
        self.kept.drain(..taken);
        if self.kept.is_empty() {
            self.kept = Vec::new();
        }
        taken > 0
    }

    /// The socket may be read: the session took every byte read so far, and the stream
    /// neither ended nor failed.
    pub(crate) fn can_read(&self) -> bool {
        self.kept.is_empty() && !self.read_eof && !self.broken
    }

    /// Reads once into the session, and tells it when the stream ended or failed.
    pub(crate) async fn read(&mut self, session: &mut Session) {
        match self.read_into(session).await {
            Ok(0) => {
                self.read_eof = true;
                let _ = session.handle_eof(Instant::now());
            }
            Ok(_) => {}
            Err(err) => {
                self.broken = true;
                let _ = session.handle_io_error(io_error(&err), Instant::now());
            }
        }
    }

    /// Gathers replies to send, and owes the error delay of the session's errors so far
    /// (none for a client exempt from per-client limits).
    pub(crate) fn queue(&mut self, bytes: Vec<u8>, session: &mut Session, limits: &Limits) {
        if self.broken {
            return;
        }
        #[cfg(feature = "tracing")]
        self.trace.output(session, &bytes);
        let exempt = || {
            let ip = session.info().remote_ip;
            ip.is_some_and(|ip| limits.clients.client(ip).exempt)
        };
        self.pacing
            .count(session.error_count(), &limits.error_delay, exempt);
        if self.wbuf.is_empty() {
            // Usually one write per input: taken as it is, not copied; the emptied buffer
            // it replaces goes back to the session for its next replies.
            let spare = std::mem::replace(&mut self.wbuf, bytes);
            session.recycle_write(spare);
        } else {
            self.wbuf.extend_from_slice(&bytes);
            session.recycle_write(bytes);
        }
    }

    /// Sends the gathered replies; a client that does not read them within `limit` gets
    /// `the client stopped reading`.
    pub(crate) async fn flush(&mut self, limit: Duration) -> io::Result<()> {
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

    pub(crate) async fn flush_or_report(&mut self, session: &mut Session, limits: &Limits) {
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
            #[cfg(feature = "tracing")]
            self.trace.input(session, data);
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
    pub(crate) async fn close(&mut self, limits: &Limits) {
        if self.flush(limits.write_timeout).await.is_ok() && !self.broken {
            let _ = bounded(self.stream.shutdown(), limits.write_timeout).await;
        }
        self.kept = Vec::new();
    }

    /// After the close: reads and drops what the client still sends, briefly, until it
    /// closes too, so that the kernel sends our FIN rather than a reset that could destroy
    /// the last reply before the client read it.
    pub(crate) async fn drain(&mut self, limits: &Limits, force: &CancellationToken) {
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
    pub(crate) async fn start_tls(&mut self, session: &mut Session, env: &Env<'_>) {
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
                    #[cfg(feature = "tracing")]
                    self.trace.tls(&info);
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
