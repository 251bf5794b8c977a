//! Where mailsink listens: `ADDR:PORT` for TCP, `unix:PATH` for a UNIX stream socket (whose
//! connections carry the peer's user id, Halon's `remoteuid`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

#[cfg(unix)]
use smtp_session_tokio::ListenSocket;
use smtp_session_tokio::{Listener, Transport};
use tokio::net::TcpSocket;

/// A `--listen` or `--tls-listen` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `ADDR:PORT`.
    Tcp(SocketAddr),
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("unix:") {
            Some("") => Err("expected unix:PATH".into()),
            Some(path) => Ok(ListenAddr::Unix(path.into())),
            None => s
                .parse()
                .map(ListenAddr::Tcp)
                .map_err(|_| "expected ADDR:PORT or unix:PATH".into()),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ListenAddr {
    /// Binds it, and says where it listens (a TCP port 0 becomes the port chosen). A TCP
    /// socket queues up to `backlog` connections not yet accepted (the kernel caps it at
    /// `net.core.somaxconn`); the standard library's 128 is too few for a burst of clients,
    /// whose connections beyond it wait a second or more to be tried again.
    pub async fn bind(
        &self,
        transport: Transport,
        backlog: u32,
    ) -> Result<(Listener, String), String> {
        let failed = |e: std::io::Error| format!("cannot listen on {self}: {e}");
        match self {
            ListenAddr::Tcp(addr) => {
                let socket = match addr {
                    SocketAddr::V4(_) => TcpSocket::new_v4(),
                    SocketAddr::V6(_) => TcpSocket::new_v6(),
                }
                .map_err(failed)?;
                // As the standard library's bind does: a restarted server can bind at once.
                socket.set_reuseaddr(true).map_err(failed)?;
                socket.bind(*addr).map_err(failed)?;
                let tcp = socket.listen(backlog).map_err(failed)?;
                let local = tcp.local_addr().map_err(failed)?;
                Ok((Listener::new(tcp, transport), local.to_string()))
            }
            #[cfg(unix)]
            ListenAddr::Unix(path) => {
                let unix = ListenSocket::unix(path).map_err(failed)?;
                Ok((Listener::new(unix, transport), self.to_string()))
            }
            #[cfg(not(unix))]
            ListenAddr::Unix(_) => Err(format!("{self}: UNIX sockets need a UNIX system")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            "127.0.0.1:25".parse(),
            Ok(ListenAddr::Tcp("127.0.0.1:25".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/mailsink.sock".parse(),
            Ok(ListenAddr::Unix("/run/mailsink.sock".into()))
        );
        assert!("unix:".parse::<ListenAddr>().is_err());
        assert!("localhost".parse::<ListenAddr>().is_err());
    }
}
