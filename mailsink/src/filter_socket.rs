//! Where a filter listens (`inet:HOST:PORT` or `unix:PATH`, as Postfix writes it) and a
//! connection to it, for the milter and policy service checks.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A filter's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterAddr {
    /// `inet:HOST:PORT` (a name, an IPv4 address, or an IPv6 address in brackets).
    Inet(String),
    /// `unix:PATH`.
    Unix(std::path::PathBuf),
}

impl FromStr for FilterAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<FilterAddr, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(FilterAddr::Unix(path.into()));
        }
        let rest = s
            .strip_prefix("inet:")
            .ok_or("expected inet:HOST:PORT or unix:PATH")?;
        let (host, port) = rest.rsplit_once(':').ok_or("expected inet:HOST:PORT")?;
        port.parse::<u16>()
            .map_err(|_| format!("bad port {port:?}"))?;
        if host.is_empty() {
            return Err("inet: needs a host".into());
        }
        Ok(FilterAddr::Inet(rest.to_string()))
    }
}

impl fmt::Display for FilterAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterAddr::Inet(hostport) => write!(f, "inet:{hostport}"),
            FilterAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A byte stream to a filter.
pub trait FilterIo: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> FilterIo for T {}

/// Connects within `limit`.
pub async fn connect(addr: &FilterAddr, limit: Duration) -> std::io::Result<Box<dyn FilterIo>> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
    match addr {
        FilterAddr::Inet(hostport) => {
            let stream =
                tokio::time::timeout(limit, tokio::net::TcpStream::connect(hostport.as_str()))
                    .await
                    .map_err(|_| timed_out())??;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
        FilterAddr::Unix(path) => {
            let stream = tokio::time::timeout(limit, tokio::net::UnixStream::connect(path))
                .await
                .map_err(|_| timed_out())??;
            Ok(Box::new(stream))
        }
    }
}
