//! A load generator in the manner of Postfix's `smtp-source`, with STARTTLS (which
//! `smtp-source` lacks) and a reject mode: `-s` sessions at once, `-m` connections in all,
//! one transaction per connection.
//!
//! ```text
//! smtp-tls-source [--starttls --ca CA.pem --name NAME [--no-resume]] [--reject]
//!                 [-s SESSIONS] [-m CONNECTIONS] [-l LENGTH] [-t RCPT] HOST:PORT
//! ```
//!
//! Each connection: greeting, EHLO, (STARTTLS, the TLS handshake verifying the server's
//! certificate against `--ca` for `--name`, EHLO again), MAIL, RCPT, then either DATA with a
//! message of `LENGTH` octets answered 250, or with `--reject` a RCPT answered 5xx; QUIT. TLS
//! sessions are resumed (rustls' in-memory ticket cache) unless `--no-resume`. Prints the
//! connections completed per second; any unexpected reply or error stops it with a
//! message and exit status 1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

/// No connection may take longer than this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

struct Options {
    sessions: usize,
    connections: usize,
    length: usize,
    /// `RCPT TO:<...>`.
    rcpt: String,
    reject: bool,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    server: SocketAddr,
}

fn usage(problem: &str) -> ! {
    eprintln!("smtp-tls-source: {problem}");
    eprintln!(
        "usage: smtp-tls-source [--starttls --ca CA.pem --name NAME [--no-resume]] [--reject] \
         [-s SESSIONS] [-m CONNECTIONS] [-l LENGTH] [-t RCPT] HOST:PORT"
    );
    std::process::exit(2)
}

fn parse_args() -> Options {
    let mut args = std::env::args().skip(1);
    let (mut sessions, mut connections, mut length) = (20, 1000, 4096);
    let mut recipient = "user@bench.example".to_string();
    let (mut starttls, mut resume, mut reject) = (false, true, false);
    let (mut ca, mut name, mut server) = (None::<PathBuf>, None::<String>, None);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        let number = |v: String| {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("not a number: {v}")))
        };
        match arg.as_str() {
            "-s" => sessions = number(value()),
            "-m" => connections = number(value()),
            "-l" => length = number(value()),
            "-t" => recipient = value(),
            "--starttls" => starttls = true,
            "--no-resume" => resume = false,
            "--reject" => reject = true,
            "--ca" => ca = Some(value().into()),
            "--name" => name = Some(value()),
            _ if server.is_none() => {
                server = Some(arg.parse().unwrap_or_else(|_| usage("expected HOST:PORT")))
            }
            _ => usage(&format!("unexpected {arg}")),
        }
    }
    let tls = starttls.then(|| {
        let ca = ca.unwrap_or_else(|| usage("--starttls needs --ca"));
        let name = name.unwrap_or_else(|| usage("--starttls needs --name"));
        connector(&ca, name, resume)
    });
    Options {
        sessions: sessions.max(1),
        connections,
        length,
        rcpt: format!("RCPT TO:<{recipient}>"),
        reject,
        tls,
        server: server.unwrap_or_else(|| usage("no HOST:PORT")),
    }
}

/// TLS 1.3 only, ring, the server's certificate verified against `ca`.
fn connector(ca: &PathBuf, name: String, resume: bool) -> (TlsConnector, ServerName<'static>) {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| usage(&format!("--ca: {e}"))) {
        let cert = cert.unwrap_or_else(|e| usage(&format!("--ca: {e}")));
        roots
            .add(cert)
            .unwrap_or_else(|e| usage(&format!("--ca: {e}")));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring offers TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = Resumption::disabled();
    }
    let name = ServerName::try_from(name).unwrap_or_else(|e| usage(&format!("--name: {e}")));
    (TlsConnector::from(Arc::new(config)), name)
}

/// A connection's stream, buffered, and the line buffer its replies are read into.
struct Conn<S> {
    stream: BufStream<S>,
    line: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Small buffers: a reply is a few hundred octets, and a body larger than the write
    /// buffer goes to the socket directly.
    fn new(stream: S) -> Self {
        Conn {
            stream: BufStream::with_capacity(2048, 2048, stream),
            line: String::new(),
        }
    }

    /// Reads one reply (all its lines); an error unless its code starts with `class`.
    async fn expect(&mut self, class: char, after: &str) -> Result<(), String> {
        loop {
            self.line.clear();
            match self.stream.read_line(&mut self.line).await {
                Err(e) => return Err(format!("after {after}: {e}")),
                Ok(0) => return Err(format!("connection closed after {after}")),
                Ok(_) if self.line.as_bytes().get(3) == Some(&b'-') => continue,
                Ok(_) if self.line.starts_with(class) => return Ok(()),
                Ok(_) => return Err(format!("{after}: {}", self.line.trim_end())),
            }
        }
    }

    async fn command(&mut self, line: &str, class: char) -> Result<(), String> {
        let stream = &mut self.stream;
        let sent = async {
            stream.write_all(line.as_bytes()).await?;
            stream.write_all(b"\r\n").await?;
            stream.flush().await
        };
        sent.await.map_err(|e| format!("{line}: {e}"))?;
        self.expect(class, line).await
    }

    /// MAIL, RCPT, then the message or the refusal, then QUIT.
    async fn transaction(&mut self, options: &Options, body: &[u8]) -> Result<(), String> {
        self.command("MAIL FROM:<sender@client.example>", '2')
            .await?;
        if options.reject {
            self.command(&options.rcpt, '5').await?;
        } else {
            self.command(&options.rcpt, '2').await?;
            self.command("DATA", '3').await?;
            self.stream
                .write_all(body)
                .await
                .map_err(|e| e.to_string())?;
            self.command(".", '2').await?;
        }
        self.command("QUIT", '2').await
    }
}

/// One connection, bounded as a whole by [`CONNECTION_TIMEOUT`].
async fn one_connection(options: &Options, body: &[u8]) -> Result<(), String> {
    tokio::time::timeout(CONNECTION_TIMEOUT, connection(options, body))
        .await
        .unwrap_or_else(|_| Err(format!("a connection took over {CONNECTION_TIMEOUT:?}")))
}

async fn connection(options: &Options, body: &[u8]) -> Result<(), String> {
    let tcp = TcpStream::connect(options.server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut plain = Conn::new(tcp);
    plain.expect('2', "connect").await?;
    plain.command("EHLO client.example", '2').await?;
    let Some((connector, name)) = &options.tls else {
        return plain.transaction(options, body).await;
    };
    plain.command("STARTTLS", '2').await?;
    let tcp = plain.stream.into_inner();
    let tls = connector
        .connect(name.clone(), tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let mut secure = Conn::new(tls);
    secure.command("EHLO client.example", '2').await?;
    secure.transaction(options, body).await
}

/// A message of `length` octets or a little more, in whole CRLF lines that need no
/// dot-stuffing.
fn message(length: usize) -> Vec<u8> {
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567\r\n";
    let mut body = b"From: <sender@client.example>\r\nSubject: load\r\n\r\n".to_vec();
    while body.len() + line.len() <= length {
        body.extend_from_slice(line);
    }
    body.resize(length.saturating_sub(2).max(body.len()), b'x');
    body.extend_from_slice(b"\r\n");
    body
}

fn main() {
    let options = Arc::new(parse_args());
    let body: Arc<[u8]> = message(options.length).into();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let result = runtime.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let sessions: Vec<_> = (0..options.sessions)
            .map(|_| {
                let (options, body, next) = (options.clone(), body.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < options.connections {
                        one_connection(&options, &body).await?;
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        for session in sessions {
            session.await.map_err(|e| e.to_string())??;
        }
        Ok::<(), String>(())
    });
    if let Err(problem) = result {
        eprintln!("smtp-tls-source: {problem}");
        std::process::exit(1);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{} connections in {elapsed:.3} s: {:.0}/s",
        options.connections,
        options.connections as f64 / elapsed
    );
}
