//! Listeners: a bound socket (TCP, or a UNIX stream socket), how its connections start, and
//! what the server learns of each connection when it accepts it.

use std::io;
use std::net::SocketAddr;
#[cfg(unix)]
use std::path::Path;

use smtp_session::ConnectionInfo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
#[cfg(unix)]
use tokio::net::{UnixListener, UnixStream};

/// How a connection starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// Plaintext SMTP; STARTTLS is offered when the server has TLS.
    Plain,
    /// TLS from the first byte (RFC 8314 "submissions", port 465).
    ImplicitTls,
}

/// A bound socket a [`Listener`] accepts connections on.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListenSocket {
    /// TCP: connections carry the client's and the server's addresses.
    Tcp(TcpListener),
    /// A UNIX stream socket: connections carry the peer's user id, from its credentials
    /// (`SO_PEERCRED`), as [`ConnectionInfo::remote_uid`] (Halon's `remoteuid`), and no
    /// addresses.
    #[cfg(unix)]
    Unix(UnixListener),
}

impl From<TcpListener> for ListenSocket {
    fn from(tcp: TcpListener) -> Self {
        ListenSocket::Tcp(tcp)
    }
}

impl ListenSocket {
    /// A UNIX stream socket bound at `path`. A socket file left behind by a server that is
    /// gone is replaced; one that a live server accepts on is refused (`AddrInUse`), as is a
    /// path that is not a socket. Call it within a tokio runtime.
    #[cfg(unix)]
    pub fn unix(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        remove_stale_socket(path)?;
        Ok(ListenSocket::Unix(UnixListener::bind(path)?))
    }
}

#[cfg(unix)]
impl From<UnixListener> for ListenSocket {
    fn from(unix: UnixListener) -> Self {
        ListenSocket::Unix(unix)
    }
}

/// A bound socket and how its connections start.
#[derive(Debug)]
pub struct Listener {
    socket: ListenSocket,
    /// The bound address when it names one interface (not 0.0.0.0 or ::): then it is every
    /// connection's local address, with no system call per connection to learn it.
    pub(crate) local: Option<SocketAddr>,
    pub(crate) transport: Transport,
    /// LMTP (RFC 2033) instead of SMTP.
    pub(crate) lmtp: bool,
    pub(crate) server_id: String,
}

impl Listener {
    /// Connections on `socket` (a [`TcpListener`], a [`UnixListener`]) start with
    /// `transport`. The server id (Halon's `serverid`) is `smtp` for plaintext, `smtps` for
    /// implicit TLS.
    pub fn new(socket: impl Into<ListenSocket>, transport: Transport) -> Self {
        let socket = socket.into();
        let server_id = match transport {
            Transport::Plain => "smtp",
            Transport::ImplicitTls => "smtps",
        };
        Listener {
            local: specific_addr(&socket),
            socket,
            transport,
            lmtp: false,
            server_id: server_id.into(),
        }
    }

    /// Plaintext SMTP, with STARTTLS when the server has TLS. Its server id is `smtp`.
    pub fn plain(socket: impl Into<ListenSocket>) -> Self {
        Listener::new(socket, Transport::Plain)
    }

    /// Implicit TLS (RFC 8314). Its server id is `smtps`.
    pub fn implicit_tls(socket: impl Into<ListenSocket>) -> Self {
        Listener::new(socket, Transport::ImplicitTls)
    }

    /// Plaintext SMTP on a UNIX stream socket bound at `path` (see [`ListenSocket::unix`]):
    /// each connection's [`ConnectionInfo::remote_uid`] is the peer's user id.
    #[cfg(unix)]
    pub fn unix(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Listener::plain(ListenSocket::unix(path)?))
    }

    /// Serves LMTP (RFC 2033) rather than SMTP: its sessions have
    /// [`Config::lmtp`](smtp_session::Config::lmtp) set, whatever the server's config says,
    /// and its server id becomes `lmtp` (or `lmtps` for implicit TLS).
    pub fn lmtp(mut self) -> Self {
        self.lmtp = true;
        self.server_id = match self.transport {
            Transport::Plain => "lmtp".into(),
            Transport::ImplicitTls => "lmtps".into(),
        };
        self
    }

    /// Names the listener in the connection info and the disconnect context.
    pub fn server_id(mut self, id: impl Into<String>) -> Self {
        self.server_id = id.into();
        self
    }

    /// The socket it accepts on.
    pub fn socket(&self) -> &ListenSocket {
        &self.socket
    }

    /// The TCP address it listens on; an `Unsupported` error for a UNIX socket (see
    /// [`socket`](Listener::socket)).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.socket {
            ListenSocket::Tcp(tcp) => tcp.local_addr(),
            #[cfg(unix)]
            ListenSocket::Unix(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a UNIX socket has no IP address",
            )),
        }
    }

    /// The next connection, with what is known of it at once.
    pub(crate) async fn accept(&self) -> io::Result<Accepted> {
        match &self.socket {
            ListenSocket::Tcp(tcp) => {
                let (stream, remote) = tcp.accept().await?;
                let _ = stream.set_nodelay(true);
                let local = self.local.or_else(|| stream.local_addr().ok());
                let info = ConnectionInfo {
                    remote_ip: Some(remote.ip()),
                    remote_port: Some(remote.port()),
                    local_ip: local.map(|a| a.ip()),
                    local_port: local.map(|a| a.port()),
                    ..ConnectionInfo::default()
                };
                Ok(Accepted::Tcp(stream, info))
            }
            #[cfg(unix)]
            ListenSocket::Unix(unix) => {
                let (stream, _) = unix.accept().await?;
                let info = ConnectionInfo {
                    remote_uid: stream.peer_cred().ok().map(|cred| cred.uid()),
                    ..ConnectionInfo::default()
                };
                Ok(Accepted::Unix(stream, info))
            }
        }
    }
}

/// A copy of a [`Listener`]'s socket (the same bound socket, a second descriptor), not yet
/// registered with a runtime: what another thread's runtime accepts on.
#[derive(Debug)]
pub(crate) struct Detached {
    socket: DetachedSocket,
    local: Option<SocketAddr>,
    transport: Transport,
    lmtp: bool,
    server_id: String,
}

#[derive(Debug)]
enum DetachedSocket {
    #[cfg_attr(not(unix), allow(dead_code))]
    Tcp(std::net::TcpListener),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixListener),
}

impl Listener {
    /// A second descriptor of the same socket, for a runtime on another thread. Both accept
    /// from the one queue of the kernel; whichever is free takes the next connection.
    #[cfg(unix)]
    pub(crate) fn detached_copy(&self) -> io::Result<Detached> {
        use std::os::fd::AsFd;
        let fd = match &self.socket {
            ListenSocket::Tcp(tcp) => tcp.as_fd().try_clone_to_owned()?,
            #[cfg(unix)]
            ListenSocket::Unix(unix) => unix.as_fd().try_clone_to_owned()?,
        };
        let socket = match &self.socket {
            ListenSocket::Tcp(_) => DetachedSocket::Tcp(fd.into()),
            #[cfg(unix)]
            ListenSocket::Unix(_) => DetachedSocket::Unix(fd.into()),
        };
        Ok(Detached {
            socket,
            local: self.local,
            transport: self.transport,
            lmtp: self.lmtp,
            server_id: self.server_id.clone(),
        })
    }

    /// Elsewhere a listener is served by one thread.
    #[cfg(not(unix))]
    pub(crate) fn detached_copy(&self) -> io::Result<Detached> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a listener is served by one thread on this system",
        ))
    }
}

impl Detached {
    /// The listener again, registered with the current runtime.
    pub(crate) fn attach(self) -> io::Result<Listener> {
        // The descriptor shares the original's non-blocking mode, which tokio set.
        let socket = match self.socket {
            DetachedSocket::Tcp(tcp) => ListenSocket::Tcp(TcpListener::from_std(tcp)?),
            #[cfg(unix)]
            DetachedSocket::Unix(unix) => ListenSocket::Unix(UnixListener::from_std(unix)?),
        };
        Ok(Listener {
            socket,
            local: self.local,
            transport: self.transport,
            lmtp: self.lmtp,
            server_id: self.server_id,
        })
    }
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Listener::plain(tcp)
    }
}

#[cfg(unix)]
impl From<UnixListener> for Listener {
    fn from(unix: UnixListener) -> Self {
        Listener::plain(unix)
    }
}

fn specific_addr(socket: &ListenSocket) -> Option<SocketAddr> {
    match socket {
        ListenSocket::Tcp(tcp) => tcp
            .local_addr()
            .ok()
            .filter(|addr| !addr.ip().is_unspecified()),
        #[cfg(unix)]
        ListenSocket::Unix(_) => None,
    }
}

/// Removes the socket file at `path` when no server accepts on it any more.
#[cfg(unix)]
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Ok(_) => {}
    }
    // Connecting to a UNIX socket never waits: accepted into the backlog, or refused.
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running server", path.display()),
        )),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(err) => Err(err),
    }
}

/// A connection just accepted, with its addresses or its peer's credentials.
pub(crate) enum Accepted {
    Tcp(TcpStream, ConnectionInfo),
    #[cfg(unix)]
    Unix(UnixStream, ConnectionInfo),
}

/// What the accept loop needs of an accepted socket besides reading and writing.
pub(crate) trait AcceptedStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Writes without waiting (a new socket's send buffer is empty).
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

impl AcceptedStream for TcpStream {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
}

#[cfg(unix)]
impl AcceptedStream for UnixStream {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        UnixStream::try_write(self, buf)
    }
}
