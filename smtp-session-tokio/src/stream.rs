//! The connection's byte stream: plaintext, or TLS once a handshake succeeded.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use smtp_session::{IoError, IoErrorKind};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Plaintext, TLS, or nothing (the plaintext stream went into a handshake that failed).
pub(crate) enum Stream<IO> {
    Plain(IO),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<Prefixed<IO>>>),
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
            #[cfg(feature = "tls")]
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
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_flush(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// A stream whose first reads return `prefix`: bytes already read from `io` that belong
/// to what comes next (with implicit TLS behind a PROXY header, the client's first
/// handshake bytes arrived with the header).
pub(crate) struct Prefixed<IO> {
    pub(crate) prefix: Vec<u8>,
    pub(crate) pos: usize,
    pub(crate) io: IO,
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

/// Errors from the TLS layer are TLS errors in the disconnect context, the rest socket
/// errors.
pub(crate) fn io_error(err: &io::Error) -> IoError {
    let mut e = IoError::socket(err);
    #[cfg(feature = "tls")]
    if err.get_ref().is_some_and(|inner| {
        inner
            .downcast_ref::<tokio_rustls::rustls::Error>()
            .is_some()
    }) {
        e.kind = IoErrorKind::Tls;
    }
    e
}

/// An error of the TLS layer that has no `io::Error` behind it.
pub(crate) fn tls_error(reason: &str) -> IoError {
    IoError::tls(reason, None)
}

/// The handshake's details, named like Halon's `tls` array.
#[cfg(feature = "tls")]
pub fn tls_info(conn: &tokio_rustls::rustls::ServerConnection) -> smtp_session::TlsInfo {
    use tokio_rustls::rustls::ProtocolVersion;
    let protocol = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
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
    smtp_session::TlsInfo {
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
#[cfg(feature = "tls")]
fn key_size(cipher: &str) -> Option<u32> {
    if cipher.contains("AES_256") || cipher.contains("CHACHA20") {
        Some(256)
    } else if cipher.contains("AES_128") {
        Some(128)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[cfg(feature = "tls")]
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
