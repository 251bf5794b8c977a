//! The server: listeners, accept loops with connection limits and accept-error backoff,
//! graceful shutdown, and [`Server::serve_connection`] for callers with their own loop.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use smtp_session::{
    Config, ConnectionInfo, Decision, DisconnectContext, Hook, HookCall, Hooks, Output, Reply,
    Session,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::Client;
use crate::driver::drive;
use crate::env::{bounded, Env};
use crate::handler::Handler;
use crate::limits::{Counts, Limits, OverLimit, Slot};
use crate::listener::{Accepted, AcceptedStream, Detached, Listener, Transport};
use crate::observer::{Observer, Refusal};
#[cfg(feature = "tls")]
use crate::tls::Tls;

type Factory<H> = dyn Fn(&ConnectionInfo) -> H + Send + Sync;

/// What a session config is made for: the handler's hooks, the transport, LMTP or not, and
/// a connection refused at accept or not.
type ConfigKey = (Hooks, Transport, bool, bool);

/// A complete SMTP receiver: listeners, a [`Handler`] per connection, the session
/// [`Config`], the runtime [`Limits`], TLS, and a shutdown token.
///
/// Build it with the methods below, then [`serve`](Server::serve) it. See the
/// [crate documentation](crate) for the whole picture.
pub struct Server<H> {
    make: Arc<Factory<H>>,
    config: Config,
    limits: Limits,
    #[cfg(feature = "tls")]
    tls: Option<Tls>,
    listeners: Vec<Listener>,
    shutdown: CancellationToken,
    force: CancellationToken,
    counts: Arc<Counts>,
    refusing: Arc<AtomicUsize>,
    configs: Mutex<Vec<(ConfigKey, Arc<Config>)>>,
    ids: ConnectionIds,
    observer: Option<Arc<dyn Observer>>,
    threads: usize,
}

impl<H> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("hostname", &self.config.hostname)
            .field("limits", &self.limits)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

/// Refusals being answered at once (a 421, then a short drain); past this, a plaintext
/// client still gets its 421 but no drain, and an implicit-TLS client is closed unanswered.
const MAX_REFUSING: usize = 256;

impl<H: Handler> Server<H> {
    /// A server that clones `handler` for every connection.
    pub fn new(handler: H) -> Self
    where
        H: Clone + Sync,
    {
        Server::with_factory(move |_| handler.clone())
    }

    /// A server that makes each connection's handler with `make`, given what is known of
    /// the connection when it is accepted.
    pub fn with_factory(make: impl Fn(&ConnectionInfo) -> H + Send + Sync + 'static) -> Self {
        Server {
            make: Arc::new(make),
            config: Config::default(),
            limits: Limits::default(),
            #[cfg(feature = "tls")]
            tls: None,
            listeners: Vec::new(),
            shutdown: CancellationToken::new(),
            force: CancellationToken::new(),
            counts: Arc::new(Counts::default()),
            refusing: Arc::new(AtomicUsize::new(0)),
            configs: Mutex::new(Vec::new()),
            ids: ConnectionIds::new(),
            observer: None,
            threads: 1,
        }
    }

    /// The session configuration: hostname, extensions, limits of the protocol. Its
    /// `hooks` are replaced by the handler's [`hooks`](Handler::hooks), `implicit_tls` by the
    /// listener's kind, and STARTTLS is offered exactly when the server has TLS.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self.configs = Mutex::new(Vec::new());
        self
    }

    /// The runtime's limits and timeouts.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// TLS for STARTTLS and implicit-TLS listeners: a [`Tls`] (with client certificates if
    /// wanted), or a rustls configuration of your own. See [`tls_config`](crate::tls_config)
    /// for one with the ring provider.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: impl Into<Tls>) -> Self {
        self.tls = Some(tls.into());
        self.configs = Mutex::new(Vec::new());
        self
    }

    /// Adds a listener: a [`Listener`], or a [`TcpListener`](tokio::net::TcpListener) or
    /// [`UnixListener`](tokio::net::UnixListener) for plaintext SMTP.
    pub fn listener(mut self, listener: impl Into<Listener>) -> Self {
        self.listeners.push(listener.into());
        self
    }

    /// Accepts and serves connections on `threads` threads (at least one): the one that
    /// calls [`serve`](Server::serve), and `threads - 1` more, each with a current-thread
    /// runtime of its own and a copy of every listener. A connection stays on the thread that
    /// accepted it from start to end; the limits, the shutdown and the observer are the
    /// server's, across all of them. Use it from a current-thread runtime to put every core
    /// to work without tasks moving between threads; on a system other than UNIX the calling
    /// thread serves alone. The default is 1.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Reports connections opened, ended and refused, and every reply's code, to
    /// `observer` (for metrics; see [`Observer`]).
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Shuts down when `token` is cancelled: the listeners stop accepting, every session
    /// gets `421 4.3.2` at its next command boundary, and sessions still open after
    /// [`Limits::shutdown_grace`] are closed. Without it, use
    /// [`shutdown_token`](Server::shutdown_token).
    pub fn shutdown_on(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// The token that shuts the server down (see [`shutdown_on`](Server::shutdown_on)).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The addresses of the listeners, in the order they were added.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Accepts and serves connections on every listener until the shutdown token is
    /// cancelled, then returns once every connection has ended (after at most
    /// [`Limits::shutdown_grace`], plus the disconnect hooks of the sessions closed then).
    /// Dropped before it returns, it stops accepting, and the other
    /// [`threads`](Server::threads) end at once with their connections (those of the
    /// calling runtime run on as its tasks).
    pub async fn serve(mut self) {
        let listeners = std::mem::take(&mut self.listeners);
        let copies = detached_copies(&listeners, self.threads - 1);
        let server = Arc::new(self);
        let abandoned = CancellationToken::new();
        let _abandon_when_dropped = abandoned.clone().drop_guard();
        let mut others = Vec::new();
        for copies in copies {
            let (server, abandoned) = (server.clone(), abandoned.clone());
            let (done, finished) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name("smtp-server".into())
                .spawn(move || serve_on_new_runtime(server, copies, abandoned, done));
            if thread.is_ok() {
                others.push(finished);
            }
        }
        server.serve_listeners(listeners, &abandoned).await;
        for finished in others {
            // Sent when the thread is done, or dropped if it ended otherwise.
            let _ = finished.await;
        }
    }

    /// The accept loops of `listeners` on the current runtime, until shutdown, then their
    /// connections to their end.
    async fn serve_listeners(
        self: &Arc<Self>,
        listeners: Vec<Listener>,
        abandoned: &CancellationToken,
    ) {
        let tracker = TaskTracker::new();
        for listener in listeners {
            let accepting = accept_loop(self.clone(), listener, tracker.clone());
            // Accepting stops when `serve` is dropped too.
            let abandoned = abandoned.clone();
            tracker.spawn(async move { abandoned.run_until_cancelled(accepting).await });
        }
        self.shutdown.cancelled().await;
        tracker.close();
        let grace = self.limits.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            self.force.cancel();
            tracker.wait().await;
        }
    }

    /// Serves one connection that the caller accepted, over any byte stream (a TCP stream,
    /// a UNIX socket, an in-memory pipe), to its end, the disconnect hook included. The
    /// server's connection limits are the caller's business here; everything else (timeouts,
    /// TLS, the shutdown token) applies.
    pub async fn serve_connection<IO>(&self, io: IO, info: ConnectionInfo, transport: Transport)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.serve_one(io, info, transport, self.config.lmtp).await;
    }

    /// Serves one connection, in LMTP when `lmtp`.
    async fn serve_one<IO>(&self, io: IO, info: ConnectionInfo, transport: Transport, lmtp: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let handler = (self.make)(&info);
        let handler_hooks = handler.hooks();
        let proxy_limit = self.config.proxy_protocol && self.limits.max_connections_per_ip != 0;
        let hooks = Hooks {
            connect: handler_hooks.connect || proxy_limit,
            ..handler_hooks
        };
        let config = self.session_config((hooks, transport, lmtp, false));
        let observer = self.observer.as_deref();
        let _watched = observer.map(|observer| Watched::open(observer, &info));
        let session = Session::new(config, info, Instant::now());
        let env = Env {
            limits: &self.limits,
            #[cfg(feature = "tls")]
            tls: self.tls.as_ref(),
            shutdown: &self.shutdown,
            force: &self.force,
            proxy_ip_limit: proxy_limit.then_some(&self.counts),
            handler_connect: handler_hooks.connect,
            observer,
            refusal: None,
        };
        drive(io, session, handler, env).await;
    }

    /// Serves a connection refused at accept with `reply`: the session answers its connect
    /// stage with it (after the handshake, under implicit TLS) and closes, under shorter
    /// bounds than a served connection's, and the handler hears its disconnect context.
    /// The observer heard the refusal; the connection is neither opened nor closed for it.
    async fn serve_refused<IO>(
        &self,
        io: IO,
        info: ConnectionInfo,
        transport: Transport,
        reply: Reply,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let handler = (self.make)(&info);
        let config = self.session_config(refusal_key(transport));
        let session = Session::new(config, info, Instant::now());
        let limits = Limits {
            write_timeout: self.limits.write_timeout.min(Duration::from_secs(5)),
            drain_time: self.limits.drain_time.min(Duration::from_secs(1)),
            drain_bytes: self.limits.drain_bytes.min(4096),
            ..self.limits.clone()
        };
        let env = Env {
            limits: &limits,
            #[cfg(feature = "tls")]
            tls: self.tls.as_ref(),
            shutdown: &self.shutdown,
            force: &self.force,
            proxy_ip_limit: None,
            handler_connect: false,
            observer: None,
            refusal: Some(&reply),
        };
        drive(io, session, handler, env).await;
    }

    /// The session config for a handler's hooks on a kind of listener, made once.
    fn session_config(&self, key: ConfigKey) -> Arc<Config> {
        let mut made = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, config)) = made.iter().find(|(k, _)| *k == key) {
            return config.clone();
        }
        let (hooks, transport, lmtp, refusing) = key;
        let mut config = self.config.clone();
        config.hooks = hooks;
        config.lmtp = lmtp;
        config.implicit_tls = transport == Transport::ImplicitTls;
        config.extensions.starttls = self.has_tls() && transport == Transport::Plain;
        if refusing {
            // Refused before anything is read: no PROXY header awaited, no greeting delay.
            config.proxy_protocol = false;
            config.greeting_delay = Duration::ZERO;
        }
        let config = Arc::new(config);
        if made.len() < 16 {
            made.push((key, config.clone()));
        }
        config
    }

    fn has_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        return false;
    }

    /// A new connection from a listener: admitted under the limits and served, or
    /// answered with a 421.
    fn admit(self: &Arc<Self>, accepted: Accepted, listener: &Listener, tracker: &TaskTracker) {
        match accepted {
            Accepted::Tcp(stream, info) => {
                // Behind a PROXY header the TCP peer is the proxy: the client's address is
                // counted when the header arrived.
                let ip = info.remote_ip.filter(|_| !self.config.proxy_protocol);
                let client = ip.map(|ip| self.limits.clients.client(ip));
                self.start(stream, client, info, listener, tracker);
            }
            // A local peer: counted against the global limit only.
            #[cfg(unix)]
            Accepted::Unix(stream, info) => self.start(stream, None, info, listener, tracker),
        }
    }

    fn start<S: AcceptedStream>(
        self: &Arc<Self>,
        stream: S,
        client: Option<Client>,
        info: ConnectionInfo,
        listener: &Listener,
        tracker: &TaskTracker,
    ) {
        let admitted = self.counts.admit(client, &self.limits);
        let info = ConnectionInfo {
            id: self.ids.next(),
            server_id: Some(listener.server_id.clone()),
            ..info
        };
        let slot = match admitted {
            Ok(slot) => slot,
            Err(over) => return self.refuse(stream, over, info, listener.transport, tracker),
        };
        let server = self.clone();
        // LMTP when the listener or the whole server's config asks for it.
        let (transport, lmtp) = (listener.transport, listener.lmtp || self.config.lmtp);
        tracker.spawn(async move {
            server.serve_one(stream, info, transport, lmtp).await;
            drop::<Slot>(slot);
        });
    }

    /// Answers a client over a limit with `421 4.7.0`, without holding up the accept loop,
    /// and gives the handler the connection's disconnect context with that reply.
    fn refuse<S: AcceptedStream>(
        self: &Arc<Self>,
        stream: S,
        over: OverLimit,
        info: ConnectionInfo,
        transport: Transport,
        tracker: &TaskTracker,
    ) {
        if let Some(observer) = &self.observer {
            observer.connection_refused(match over {
                OverLimit::Total => Refusal::MaxConnections,
                OverLimit::PerIp(_) => Refusal::MaxConnectionsPerIp,
            });
        }
        let line = over.reply(&self.config.hostname);
        let text = line.trim_end().trim_start_matches("421 ");
        let reply = Reply::new(421, text).expect("the refusal is a valid 421 reply");
        let server = self.clone();
        let Some(guard) = Refusing::enter(&self.refusing) else {
            if transport == Transport::Plain {
                // A new socket's send buffer is empty: this write does not wait.
                let _ = stream.try_write(line.as_bytes());
            }
            drop(stream);
            // No socket is held for the context; the handler still hears of it.
            tracker.spawn(async move { server.refused_unserved(info, reply).await });
            return;
        };
        tracker.spawn(async move {
            let _guard = guard;
            server.serve_refused(stream, info, transport, reply).await;
        });
    }

    /// A refused connection closed at once, past [`MAX_REFUSING`]: its session runs to its
    /// end without I/O, for the handler's disconnect context.
    async fn refused_unserved(&self, info: ConnectionInfo, reply: Reply) {
        let mut handler = (self.make)(&info);
        let config = self.session_config(refusal_key(Transport::Plain));
        let mut session = Session::new(config, info, Instant::now());
        let context = refused_context(&mut session, reply);
        let _ = bounded(handler.disconnect(context), self.limits.hook_timeout).await;
    }
}

/// The session config of a refused connection: the connect stage only.
fn refusal_key(transport: Transport) -> ConfigKey {
    let hooks = Hooks {
        connect: true,
        ..Hooks::NONE
    };
    (hooks, transport, false, true)
}

/// Runs a refused connection's session, its connect stage refused with `reply`, to its
/// disconnect context.
fn refused_context(session: &mut Session, reply: Reply) -> DisconnectContext {
    let mut reply = Some(reply);
    // Connect hook, its reply, the close, the disconnect hook: a handful of outputs.
    for _ in 0..64 {
        match session.poll_output() {
            Some(Output::HookCall(HookCall {
                hook: Hook::Disconnect(context),
                ..
            })) => return *context,
            Some(Output::HookCall(call)) => {
                let decision = reply.take().map_or(Decision::HookFailed, Decision::Reject);
                let _ = session.decide(call.id, decision, Instant::now());
            }
            Some(_) => {}
            None => break,
        }
    }
    panic!("a session refused at its connect stage must close with its disconnect hook call")
}

/// A connection the observer was told of: told again when it ends, however its task ends.
struct Watched<'a> {
    observer: &'a dyn Observer,
    info: ConnectionInfo,
}

impl<'a> Watched<'a> {
    fn open(observer: &'a dyn Observer, info: &ConnectionInfo) -> Self {
        observer.connection_opened(info);
        Watched {
            observer,
            info: info.clone(),
        }
    }
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.observer.connection_closed(&self.info);
    }
}

/// A refusal in progress, counted against [`MAX_REFUSING`].
struct Refusing(Arc<AtomicUsize>);

impl Refusing {
    fn enter(count: &Arc<AtomicUsize>) -> Option<Refusing> {
        let before = count.fetch_add(1, Ordering::AcqRel);
        if before >= MAX_REFUSING {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Refusing(count.clone()))
    }
}

impl Drop for Refusing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// For each of `extra` more threads, a copy of every listener; none when a copy cannot be
/// made (on a system other than UNIX).
fn detached_copies(listeners: &[Listener], extra: usize) -> Vec<Vec<Detached>> {
    if listeners.is_empty() {
        return Vec::new();
    }
    (0..extra)
        .map_while(|_| {
            (listeners.iter())
                .map(Listener::detached_copy)
                .collect::<Result<_, _>>()
                .ok()
        })
        .collect()
}

/// One more serving thread: a current-thread runtime accepting on `copies` until the
/// server shuts down and its connections end, or until `serve` is `abandoned`.
fn serve_on_new_runtime<H: Handler>(
    server: Arc<Server<H>>,
    copies: Vec<Detached>,
    abandoned: CancellationToken,
    done: tokio::sync::oneshot::Sender<()>,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let listeners = copies.into_iter().filter_map(|c| c.attach().ok()).collect();
        tokio::select! {
            () = server.serve_listeners(listeners, &abandoned) => {}
            () = abandoned.cancelled() => {}
        }
    });
    // Dropping the runtime ends what is left of its connections.
    drop(runtime);
    let _ = done.send(());
}

/// Accepts until shutdown. An accept error that concerns one connection (it was reset
/// before we took it) is skipped; any other (EMFILE: out of file descriptors; ENFILE,
/// ENOBUFS, ENOMEM) pauses the loop, 5 ms at first and doubling up to
/// [`Limits::accept_backoff`], and a connection that ends wakes it at once: never a busy
/// loop, and the next client is taken as soon as a descriptor is free.
async fn accept_loop<H: Handler>(server: Arc<Server<H>>, listener: Listener, tracker: TaskTracker) {
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = server.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                server.admit(accepted, &listener, &tracker);
            }
            Err(err) if concerns_one_connection(&err) => {}
            Err(_) => {
                backoff = (backoff * 2).clamp(
                    Duration::from_millis(5),
                    server.limits.accept_backoff.max(Duration::from_millis(5)),
                );
                let freed = server.counts.freed.notified();
                tokio::select! {
                    biased;
                    _ = server.shutdown.cancelled() => return,
                    _ = freed => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}

fn concerns_one_connection(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

/// Connection ids unique across restarts: the start time and the process id, then a count.
struct ConnectionIds {
    prefix: String,
    counter: AtomicU64,
}

impl ConnectionIds {
    fn new() -> Self {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        ConnectionIds {
            prefix: format!("{start:x}-{:x}", std::process::id()),
            counter: AtomicU64::new(0),
        }
    }

    /// `PREFIX-N`, in one buffer of the right size (`format!` cost more than the rest of
    /// accepting a connection's bookkeeping).
    fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let mut id = String::with_capacity(self.prefix.len() + 21);
        id.push_str(&self.prefix);
        id.push('-');
        let _ = write!(id, "{n}");
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Accepting;

    impl Handler for Accepting {}

    #[test]
    fn connection_ids_are_the_prefix_then_a_count_from_one() {
        let ids = ConnectionIds::new();
        assert_eq!(ids.next(), format!("{}-1", ids.prefix));
        assert_eq!(ids.next(), format!("{}-2", ids.prefix));
        ids.counter.store(9_999_999_999, Ordering::Relaxed);
        assert_eq!(ids.next(), format!("{}-10000000000", ids.prefix));
    }

    /// Every connection's task holds this future: it must stay small, so that an idle
    /// connection costs a few KiB (hook futures and handshakes are boxed for this).
    #[test]
    fn a_connections_future_is_small() {
        let server = Server::new(Accepting);
        let (io, _client) = tokio::io::duplex(64);
        let future = server.serve_connection(io, ConnectionInfo::default(), Transport::Plain);
        let size = std::mem::size_of_val(&future);
        eprintln!("the connection future is {size} bytes");
        assert!(size <= 4096, "the connection future is {size} bytes");
    }
}
