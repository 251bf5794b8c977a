//! TLS through the server: STARTTLS (with plaintext pipelined after it never executed) and
//! implicit TLS with a rustls client, the TLS details in the disconnect context, and a client
//! that never starts its handshake, closed after the handshake timeout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, serve, Log, HOSTNAME, WAIT};
use smtp_session_tokio::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use smtp_session_tokio::rustls::{self, ClientConfig, RootCertStore};
use smtp_session_tokio::{DisconnectContext, Handler, Hooks, Limits, Listener, Server};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Clone, Default)]
struct Recorder {
    log: Log,
}

impl Handler for Recorder {
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    async fn disconnect(&mut self, context: DisconnectContext) {
        self.log.push(&context);
    }
}

/// A server certificate for `localhost`, and a client that trusts only it.
fn certificates() -> (Arc<rustls::ServerConfig>, tokio_rustls::TlsConnector) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = made.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(made.key_pair.serialize_der());
    let server = smtp_session_tokio::tls_config(vec![cert.clone()], key.into()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(cert.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, tokio_rustls::TlsConnector::from(Arc::new(client)))
}

/// One whole reply.
async fn reply<S: AsyncRead + Unpin>(stream: &mut BufReader<S>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, stream.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {all:?}");
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    line: &str,
) -> String {
    stream
        .get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .unwrap();
    reply(stream).await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn starttls_drops_what_was_pipelined_after_it_and_the_context_has_the_tls_details() {
    let (server_tls, connector) = certificates();
    let handler = Recorder::default();
    let log = handler.log.clone();
    let running = serve(move |l| {
        Server::new(handler)
            .config(config())
            .tls(server_tls)
            .listener(l)
    });
    runtime().block_on(async {
        let mut plain = BufReader::new(TcpStream::connect(running.addr).await.unwrap());
        assert_eq!(reply(&mut plain).await, format!("220 {HOSTNAME} ESMTP\r\n"));
        assert!(command(&mut plain, "EHLO client.example")
            .await
            .contains("STARTTLS\r\n"));
        // Injected after STARTTLS in the same packet: must never run (CVE-2011-0411).
        let injected = "STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n";
        plain
            .get_mut()
            .write_all(injected.as_bytes())
            .await
            .unwrap();
        assert_eq!(reply(&mut plain).await, "220 2.0.0 Ready to start TLS\r\n");
        let tcp = plain.into_inner();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let mut tls = BufReader::new(tls);
        // The first reply over TLS answers RCPT: the injected MAIL got none, before or after.
        assert_eq!(
            command(&mut tls, "RCPT TO:<b@example.net>").await,
            "503 5.5.1 Need MAIL command first\r\n"
        );
        assert!(command(&mut tls, "EHLO client.example")
            .await
            .starts_with("250-"));
        assert_eq!(command(&mut tls, "QUIT").await, "221 2.0.0 Bye\r\n");
    });
    let context = &log.wait(1)[0];
    let tls = &context["connection"]["tls"];
    assert_eq!(tls["protocol"], "TLSv1.3");
    // IANA names, not rustls' `TLS13_` ones.
    assert!(
        [
            "TLS_AES_256_GCM_SHA384",
            "TLS_AES_128_GCM_SHA256",
            "TLS_CHACHA20_POLY1305_SHA256"
        ]
        .contains(&tls["cipher"].as_str().unwrap()),
        "{tls}"
    );
    assert_eq!(tls["sni"], "localhost");
    assert_eq!(context["arguments"]["reply"]["state"], "QUIT");
}

#[test]
fn implicit_tls_greets_after_the_handshake() {
    let (server_tls, connector) = certificates();
    let handler = Recorder::default();
    let log = handler.log.clone();
    let running = serve(move |l| {
        Server::new(handler)
            .config(config())
            .tls(server_tls)
            .listener(Listener::implicit_tls(l))
    });
    runtime().block_on(async {
        let tcp = TcpStream::connect(running.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = BufReader::new(connector.connect(name, tcp).await.unwrap());
        assert_eq!(reply(&mut tls).await, format!("220 {HOSTNAME} ESMTP\r\n"));
        let ehlo = command(&mut tls, "EHLO client.example").await;
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        assert_eq!(command(&mut tls, "QUIT").await, "221 2.0.0 Bye\r\n");
    });
    let context = &log.wait(1)[0];
    assert_eq!(context["connection"]["serverid"], "smtps");
    assert_eq!(context["connection"]["tls"]["protocol"], "TLSv1.3");
}

/// A client that comes back resumes its session from the ticket the first connection left
/// it (no certificate, no signature), and the tickets are stateless: the server keeps no
/// session to find them by.
#[test]
fn a_client_that_comes_back_resumes_with_a_stateless_ticket() {
    let (server_tls, connector) = certificates();
    assert!(server_tls.ticketer.enabled(), "tickets are on by default");
    let running = serve(move |l| {
        Server::new(Recorder::default())
            .config(config())
            .tls(server_tls)
            .listener(Listener::implicit_tls(l))
    });
    runtime().block_on(async {
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let tcp = TcpStream::connect(running.addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = BufReader::new(connector.connect(name, tcp).await.unwrap());
            // The tickets come after the handshake: the greeting is read past them.
            assert_eq!(reply(&mut tls).await, format!("220 {HOSTNAME} ESMTP\r\n"));
            assert_eq!(command(&mut tls, "QUIT").await, "221 2.0.0 Bye\r\n");
            kinds.push(tls.get_ref().get_ref().1.handshake_kind());
        }
        assert_eq!(
            kinds,
            [
                Some(rustls::HandshakeKind::Full),
                Some(rustls::HandshakeKind::Resumed)
            ]
        );
    });
}

#[test]
fn a_client_that_never_starts_its_handshake_is_closed_after_the_timeout() {
    let (server_tls, _) = certificates();
    let handler = Recorder::default();
    let log = handler.log.clone();
    let limits = Limits {
        handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let running = serve(move |l| {
        let listener = Listener::implicit_tls(l);
        Server::new(handler)
            .config(config())
            .tls(server_tls)
            .limits(limits)
            .listener(listener)
    });
    let mut silent = common::Client::connect(running.addr);
    assert_eq!(silent.read_to_close_text(), "");
    let context = &log.wait(1)[0];
    assert_eq!(context["arguments"]["error"]["type"], "tls");
    assert_eq!(
        context["arguments"]["error"]["reason"],
        "TLS handshake timed out"
    );
    assert_eq!(context["arguments"]["reply"], serde_json::Value::Null);
}
