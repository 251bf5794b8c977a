//! The SMTP downstream, on lettre's connection API (`AsyncSmtpConnection`, tokio, rustls
//! with ring).
//!
//! lettre's transports (`AsyncSmtpTransport::send_raw`) take an envelope of its own address
//! type and stop at the first recipient refused, so they cannot say which recipients were
//! refused; its connection can: each command is sent with `command` and answered on its
//! own, and the body goes through `message_iter`, which does the dot-stuffing. What lettre
//! keeps of the EHLO reply is four extensions, so the capabilities come from a second
//! EHLO of our own (one round trip per new connection; connections are reused).

use std::fmt;
use std::time::Duration;

use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::Ehlo;
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use tokio::net::TcpStream;

use crate::relay::body::Outgoing;
use crate::relay::envelope::Capabilities;
use crate::relay::reply::Answer;
use crate::relay::target::Tls;
use crate::relay::Broken;

/// How to reach the SMTP downstream.
#[derive(Clone)]
pub struct Route {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub hello: ClientId,
    /// For `smtps://` and `starttls=required`: the certificate checked against the web PKI
    /// roots and `--relay-tls-ca`.
    pub verified: TlsParameters,
    /// For opportunistic STARTTLS: any certificate (RFC 7435).
    pub unverified: TlsParameters,
}

/// One SMTP connection, past EHLO (and STARTTLS when used).
pub struct Smtp {
    conn: AsyncSmtpConnection,
    caps: Capabilities,
}

/// Why a connection could not be opened.
pub enum ConnectError {
    /// Connecting failed, or the connection broke before it was ready.
    Unreachable(String),
    /// The greeting or EHLO was refused.
    Refused(Answer),
    /// TLS was required and is not offered, or its handshake failed.
    Tls(String),
}

impl Smtp {
    pub async fn connect(route: &Route, connect_timeout: Duration) -> Result<Smtp, ConnectError> {
        let mut conn = match route.tls {
            Tls::Implicit => {
                let params = Some(route.verified.clone());
                AsyncSmtpConnection::connect_tokio1(
                    (route.host.as_str(), route.port),
                    Some(connect_timeout),
                    &route.hello,
                    params,
                    None,
                )
                .await
                .map_err(|err| opening(err, true))?
            }
            Tls::Required => {
                let mut conn = plain(route).await?;
                if !conn.can_starttls() {
                    conn.abort().await;
                    return Err(ConnectError::Tls("STARTTLS is not offered".into()));
                }
                if let Err(err) = conn.starttls(route.verified.clone(), &route.hello).await {
                    return Err(ConnectError::Tls(format!("STARTTLS failed: {err}")));
                }
                conn
            }
            Tls::Opportunistic => {
                let mut conn = plain(route).await?;
                if conn.can_starttls() {
                    let upgraded = conn.starttls(route.unverified.clone(), &route.hello).await;
                    if let Err(err) = upgraded {
                        // RFC 7435: without a secure channel, plaintext, as before.
                        eprintln!("mailsink: relay: STARTTLS failed, going on in plaintext: {err}");
                        conn = plain(route).await?;
                    }
                }
                conn
            }
            Tls::No => plain(route).await?,
        };
        let ehlo = answer(conn.command(Ehlo::new(route.hello.clone())).await)
            .map_err(|broken| ConnectError::Unreachable(broken.to_string()))?;
        if !ehlo.is_positive() {
            conn.abort().await;
            return Err(ConnectError::Refused(ehlo));
        }
        let caps = Capabilities::from_hello(ehlo.lines.iter().map(String::as_str));
        Ok(Smtp { conn, caps })
    }

    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    pub fn is_encrypted(&self) -> bool {
        self.conn.is_encrypted()
    }

    /// Sends one command line (CRLF included) and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Answer, Broken> {
        answer(self.conn.command(Line(line)).await)
    }

    /// After a 354: the message, stuffed by lettre, and `CRLF . CRLF`; then its reply.
    pub async fn data(&mut self, message: &Outgoing<'_>) -> Result<Answer, Broken> {
        let answer = answer(self.conn.message_iter(message.text()).await);
        if message.failed() {
            // lettre has ended the data: whatever the answer, the message went out short.
            return Err(Broken::new("the spooled message could not be read"));
        }
        answer
    }

    pub async fn quit(&mut self) {
        let _ = self.conn.quit().await;
    }
}

/// A plaintext connection with Nagle's algorithm off (commands are small and go one at a
/// time, and the end of the data must not wait for an acknowledgement).
async fn plain(route: &Route) -> Result<AsyncSmtpConnection, ConnectError> {
    let tcp = TcpStream::connect((route.host.as_str(), route.port))
        .await
        .map_err(|err| ConnectError::Unreachable(err.to_string()))?;
    let _ = tcp.set_nodelay(true);
    AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &route.hello)
        .await
        .map_err(|err| opening(err, false))
}

/// lettre's error while opening: a refusal of the greeting or EHLO, a failed TLS
/// handshake (`smtps://`), or no connection.
fn opening(err: lettre::transport::smtp::Error, tls: bool) -> ConnectError {
    let handshake = tls && is_tls_failure(&err);
    match answer(Err(err)) {
        Ok(refusal) => ConnectError::Refused(refusal),
        Err(broken) if handshake => ConnectError::Tls(broken.to_string()),
        Err(broken) => ConnectError::Unreachable(broken.to_string()),
    }
}

/// lettre reports a failed handshake as a connection error; what failed is the I/O error
/// tokio-rustls made of the rustls error.
fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::InvalidData;
        }
        source = err.source();
    }
    false
}

/// lettre answers 4xx and 5xx replies with an error that keeps the code and the text (its
/// lines joined): both are the downstream's answer. Any other error means the connection
/// is broken.
fn answer(result: Result<Response, lettre::transport::smtp::Error>) -> Result<Answer, Broken> {
    match result {
        Ok(response) => Ok(Answer {
            code: response.code().into(),
            lines: response.message().map(str::to_string).collect(),
        }),
        Err(err) => match err.status() {
            Some(code) => Ok(Answer {
                code: code.into(),
                lines: vec![std::error::Error::source(&err)
                    .map(|text| text.to_string())
                    .unwrap_or_default()],
            }),
            None => Err(Broken::new(err.to_string())),
        },
    }
}

/// A command line as it is written.
struct Line<'a>(&'a str);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
