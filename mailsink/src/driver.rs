//! The tokio adapter: one connection is one task driving one [`Session`].
//!
//! This module knows nothing about Maildirs or Lua: hooks go to a [`Policy`] trait object,
//! which answers each with a future. The loop is the crate's canonical run loop:
//!
//! 1. drain [`Session::poll_output`], carrying out each action in order (writes are gathered
//!    into one buffer and sent with one `write_all`, so replies coalesce);
//! 2. wait for whichever comes first: bytes from the client, the pending hook's decision, the
//!    session's deadline ([`Session::poll_timeout`]), or a server shutdown.
//!
//! Backpressure: while a hook is pending the session buffers input up to its limit; once it
//! stops taking bytes the rest is kept here and the socket is not read again until the
//! session has taken them, so a client can never make the server hold more than the
//! session's limit plus one read.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use smtp_session::{
    AuthInfo, Config, ConnectionInfo, Decision, DisconnectContext, HeloInfo, Hook, HookId, IoError,
    IoErrorKind, Output, Session, TlsInfo,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// A boxed future that can move between threads.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a policy knows about the connection when a hook runs, besides the hook's arguments.
#[derive(Clone, Debug)]
pub struct ConnFacts {
    /// Addresses and ids (after PROXY/XCLIENT).
    pub info: ConnectionInfo,
    /// The accepted HELO/EHLO.
    pub helo: Option<HeloInfo>,
    /// The TLS layer, once active.
    pub tls: Option<TlsInfo>,
    /// The successful AUTH.
    pub auth: Option<AuthInfo>,
}

impl ConnFacts {
    fn of(session: &Session) -> Self {
        ConnFacts {
            info: session.info().clone(),
            helo: session.helo().cloned(),
            tls: session.tls().cloned(),
            auth: session.auth().cloned(),
        }
    }
}

/// Decides the hooks of every connection.
pub trait Policy: Send + Sync + 'static {
    /// Decides one hook call (every hook but the disconnect hook). The future may take as
    /// long as it needs, up to [`Settings::hook_timeout`], after which the hook counts as
    /// failed.
    fn decide(&self, facts: ConnFacts, hook: Hook) -> BoxFuture<Decision>;

    /// The connection ended: the disconnect context, delivered exactly once. Owes nothing.
    fn disconnected(&self, context: Box<DisconnectContext>) -> BoxFuture<()>;
}

/// Everything a connection task needs, shared by all connections of one listener.
#[derive(Clone)]
pub struct Settings {
    /// The session configuration.
    pub config: Arc<Config>,
    /// The TLS acceptor for STARTTLS and implicit TLS; `None` refuses the handshake.
    pub tls: Option<TlsAcceptor>,
    /// Decides the hooks.
    pub policy: Arc<dyn Policy>,
    /// The longest a hook may take before it counts as failed.
    pub hook_timeout: Duration,
    /// The longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Becomes true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// After closing, how long unread client bytes are drained so that the kernel sends FIN,
/// not RST (which could destroy the last reply before the client reads it).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// Runs one connection to its end. `io` is the accepted socket (or anything like it).
pub async fn serve<IO>(io: IO, info: ConnectionInfo, settings: Settings)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut session = Session::new(settings.config.clone(), info, Instant::now());
    let mut conn = Conn {
        stream: Stream::Plain(io),
        wbuf: Vec::new(),
        kept: Vec::new(),
        read_eof: false,
        // A client that never reads its replies must not hold the task forever.
        write_timeout: settings.config.command_timeout,
    };
    let mut shutdown = settings.shutdown.clone();
    let mut shutdown_seen = false;
    if *shutdown.borrow_and_update() {
        shutdown_seen = true;
        let _ = session.handle_shutdown(Instant::now());
    }
    let mut hook: Option<(HookId, BoxFuture<Decision>)> = None;
    let mut chunk = vec![0u8; READ_CHUNK];

    // Every pass carries out outputs or waits for one event. The loop ends because the
    // session closes on EOF, I/O errors and its own deadlines, writes and hooks are bounded
    // by timeouts, and the session's Close is always followed by the disconnect hook.
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                Output::Write(bytes) => {
                    conn.wbuf.extend_from_slice(&bytes);
                    // Draining lets the session go on with commands it held back for a full
                    // output buffer: send as we go rather than gather without bound.
                    if conn.wbuf.len() >= settings.config.max_pending_output {
                        if let Err(err) = conn.flush().await {
                            let _ = session.handle_io_error(io_error(&err), Instant::now());
                        }
                    }
                }
                Output::Close => conn.close().await,
                Output::HookCall(call) => match call.hook {
                    Hook::Disconnect(context) => {
                        let done = settings.policy.disconnected(context);
                        let _ = tokio::time::timeout(settings.hook_timeout, done).await;
                        conn.linger(&mut shutdown).await;
                        return;
                    }
                    other => {
                        let future = settings.policy.decide(ConnFacts::of(&session), other);
                        let limit = settings.hook_timeout;
                        let bounded = Box::pin(async move {
                            tokio::time::timeout(limit, future)
                                .await
                                .unwrap_or(Decision::HookFailed)
                        });
                        hook = Some((call.id, bounded));
                    }
                },
                Output::StartTls => conn.start_tls(&mut session, &settings).await,
                _ => {}
            }
        }
        if session.is_closed() {
            // Close and the disconnect hook always come together; this is only reached if
            // the library ever stops emitting the hook.
            return;
        }
        if let Err(err) = conn.flush().await {
            let _ = session.handle_io_error(io_error(&err), Instant::now());
            continue;
        }
        // Bytes the session could not take (its input buffer was full while it was paused
        // for a hook or for unpolled replies) are offered again once it can go on.
        if !conn.kept.is_empty() && session.pending_hook().is_none() {
            let kept = std::mem::take(&mut conn.kept);
            let taken = session
                .handle_input(&kept, Instant::now())
                .unwrap_or(kept.len());
            conn.kept = kept[taken..].to_vec();
            if taken > 0 {
                continue;
            }
            // Taking nothing with nothing pending should not happen; rather than spin or
            // drop bytes, wait (without reading) for the session's deadline.
        }

        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        let can_read = conn.kept.is_empty() && !conn.read_eof;
        tokio::select! {
            decision = async { hook.as_mut().expect("guarded").1.as_mut().await }, if hook.is_some() => {
                let (id, _) = hook.take().expect("guarded");
                let now = Instant::now();
                if let Err(err) = session.decide(id, decision, now) {
                    eprintln!("mailsink: policy gave an unusable decision ({err}); treating the hook as failed");
                    let _ = session.decide(id, Decision::HookFailed, now);
                }
            }
            read = conn.stream.read(&mut chunk), if can_read => {
                let now = Instant::now();
                match read {
                    Ok(0) => {
                        conn.read_eof = true;
                        let _ = session.handle_eof(now);
                    }
                    Ok(n) => {
                        let taken = session.handle_input(&chunk[..n], now).unwrap_or(n);
                        conn.kept.extend_from_slice(&chunk[taken..n]);
                    }
                    Err(err) => {
                        let _ = session.handle_io_error(io_error(&err), now);
                    }
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                let _ = session.handle_timeout(Instant::now());
            }
            changed = shutdown.changed(), if !shutdown_seen => {
                shutdown_seen = true;
                if changed.is_ok() && *shutdown.borrow() {
                    let _ = session.handle_shutdown(Instant::now());
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Classifies an I/O error: errors from rustls are TLS errors, the rest socket errors.
fn io_error(err: &io::Error) -> IoError {
    let tls = err
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    let mut e = IoError::socket(err);
    if tls {
        e.kind = IoErrorKind::Tls;
    }
    e
}

struct Conn<IO> {
    stream: Stream<IO>,
    /// Replies gathered while draining outputs, sent in one write.
    wbuf: Vec<u8>,
    /// Bytes read but not yet taken by the session (it was paused on a full buffer).
    kept: Vec<u8>,
    read_eof: bool,
    write_timeout: Duration,
}

impl<IO> Conn<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        };
        let result = match tokio::time::timeout(self.write_timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
        };
        self.wbuf.clear();
        result
    }

    /// Sends what is owed, then ends our side of the stream (with close_notify under TLS).
    async fn close(&mut self) {
        if self.flush().await.is_ok() {
            let _ = tokio::time::timeout(LINGER, self.stream.shutdown()).await;
        }
        self.kept.clear();
    }

    /// Reads and drops what the client still sends, briefly, until it closes too.
    async fn linger(&mut self, shutdown: &mut watch::Receiver<bool>) {
        if self.read_eof || matches!(self.stream, Stream::Gone) {
            return;
        }
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        let _ = tokio::time::timeout(LINGER, async {
            while drained < LINGER_BYTES && !*shutdown.borrow() {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }

    /// Carries out `Output::StartTls`: send what is owed, drop plaintext read but not taken
    /// (never executed after the handshake), run the handshake, report it.
    async fn start_tls(&mut self, session: &mut Session, settings: &Settings) {
        let flushed = self.flush().await;
        self.kept.clear();
        let now = Instant::now;
        if let Err(err) = flushed {
            let _ = session.handle_io_error(io_error(&err), now());
            return;
        }
        let (Some(acceptor), Stream::Plain(_)) = (&settings.tls, &self.stream) else {
            let _ = session.handle_tls_failed(tls_error("TLS is not available"), now());
            return;
        };
        let Stream::Plain(io) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            unreachable!("checked above");
        };
        // Behind a PROXY header, implicit TLS: the client's first handshake bytes came with
        // the header, and the session hands them back. Empty otherwise.
        let io = Prefixed {
            prefix: session.take_handshake_bytes(),
            pos: 0,
            io,
        };
        let accept = acceptor.accept(io);
        match tokio::time::timeout(settings.handshake_timeout, accept).await {
            Ok(Ok(tls)) => {
                let info = tls_info(tls.get_ref().1);
                self.stream = Stream::Tls(Box::new(tls));
                let _ = session.handle_tls_established(info, now());
            }
            Ok(Err(err)) => {
                let mut e = io_error(&err);
                e.kind = IoErrorKind::Tls;
                let _ = session.handle_tls_failed(e, now());
            }
            Err(_) => {
                let _ = session.handle_tls_failed(tls_error("TLS handshake timed out"), now());
            }
        }
    }
}

fn tls_error(reason: &str) -> IoError {
    IoError::tls(reason, None)
}

/// The handshake's details, named like Halon's `tls` array.
pub fn tls_info(conn: &rustls::ServerConnection) -> TlsInfo {
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| {
            let suite = s.suite();
            suite
                .as_str()
                .map_or_else(|| format!("{suite:?}"), str::to_string)
        })
        .unwrap_or_default();
    TlsInfo {
        key_size: key_size(&cipher),
        protocol,
        cipher,
        sni: conn.server_name().map(str::to_string),
        peer_certificate: conn.peer_certificates().and_then(|certs| {
            certs.first().map(|c| smtp_session::PeerCertificate {
                der: c.as_ref().to_vec(),
                verify_error: None,
            })
        }),
    }
}

/// The symmetric key size in bits, read from the cipher suite's name.
fn key_size(cipher: &str) -> Option<u32> {
    if cipher.contains("AES_256") || cipher.contains("CHACHA20") {
        Some(256)
    } else if cipher.contains("AES_128") {
        Some(128)
    } else {
        None
    }
}

/// The connection's byte stream: plaintext, or TLS after a handshake.
enum Stream<IO> {
    Plain(IO),
    Tls(Box<tokio_rustls::server::TlsStream<Prefixed<IO>>>),
    /// The plaintext stream went into a handshake that failed.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection already closed")
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// A stream whose first reads return `prefix`: bytes already read from `io` that belong
/// to what comes next (the TLS handshake).
struct Prefixed<IO> {
    prefix: Vec<u8>,
    pos: usize,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sizes_come_from_suite_names() {
        assert_eq!(key_size("TLS13_AES_256_GCM_SHA384"), Some(256));
        assert_eq!(key_size("TLS13_AES_128_GCM_SHA256"), Some(128));
        assert_eq!(key_size("TLS13_CHACHA20_POLY1305_SHA256"), Some(256));
        assert_eq!(key_size("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"), Some(128));
        assert_eq!(key_size("UNKNOWN"), None);
    }

    #[tokio::test]
    async fn prefixed_reads_the_prefix_first() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = Prefixed {
            prefix: b"abc".to_vec(),
            pos: 0,
            io: server,
        };
        client.write_all(b"def").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"abcdef");
    }
}
