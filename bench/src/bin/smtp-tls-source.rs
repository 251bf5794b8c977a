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

/// No reply may take longer than this.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

struct Options {
    sessions: usize,
    connections: usize,
    length: usize,
    recipient: String,
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
        recipient,
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

/// Reads one reply (all its lines); an error unless its code starts with `class`.
async fn expect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufStream<S>,
    class: char,
    after: &str,
) -> Result<(), String> {
    let mut line = String::new();
    loop {
        line.clear();
        let read = tokio::time::timeout(REPLY_TIMEOUT, stream.read_line(&mut line)).await;
        match read {
            Err(_) => return Err(format!("no reply to {after} in {REPLY_TIMEOUT:?}")),
            Ok(Err(e)) => return Err(format!("after {after}: {e}")),
            Ok(Ok(0)) => return Err(format!("connection closed after {after}")),
            Ok(Ok(_)) if line.as_bytes().get(3) == Some(&b'-') => continue,
            Ok(Ok(_)) if line.starts_with(class) => return Ok(()),
            Ok(Ok(_)) => return Err(format!("{after}: {}", line.trim_end())),
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufStream<S>,
    line: &str,
    class: char,
) -> Result<(), String> {
    stream
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .and(stream.flush().await)
        .map_err(|e| format!("{line}: {e}"))?;
    expect(stream, class, line).await
}

/// MAIL, RCPT, then the message or the refusal, then QUIT.
async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufStream<S>,
    options: &Options,
    body: &[u8],
) -> Result<(), String> {
    command(stream, "MAIL FROM:<sender@client.example>", '2').await?;
    let rcpt = format!("RCPT TO:<{}>", options.recipient);
    if options.reject {
        command(stream, &rcpt, '5').await?;
    } else {
        command(stream, &rcpt, '2').await?;
        command(stream, "DATA", '3').await?;
        stream.write_all(body).await.map_err(|e| e.to_string())?;
        command(stream, ".", '2').await?;
    }
    command(stream, "QUIT", '2').await
}

async fn one_connection(options: &Options, body: &[u8]) -> Result<(), String> {
    let tcp = TcpStream::connect(options.server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut plain = BufStream::new(tcp);
    expect(&mut plain, '2', "connect").await?;
    command(&mut plain, "EHLO client.example", '2').await?;
    let Some((connector, name)) = &options.tls else {
        return transaction(&mut plain, options, body).await;
    };
    command(&mut plain, "STARTTLS", '2').await?;
    let tcp = plain.into_inner();
    let tls = connector
        .connect(name.clone(), tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let mut secure = BufStream::new(tls);
    command(&mut secure, "EHLO client.example", '2').await?;
    transaction(&mut secure, options, body).await
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
