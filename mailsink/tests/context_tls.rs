//! The `tls` part of the context over real STARTTLS sessions with a rustls client:
//! `peercert` (the client certificate's DER bytes and its verification error, in OpenSSL's
//! numbering) with `--tls-client-ca` and `--tls-client-auth`, the cipher suite by its IANA
//! name for TLS 1.3 and TLS 1.2, and `sni` only when the client sent one. Every certificate
//! is made here with rcgen.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Server, HOSTNAME, WAIT};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedCipherSuite};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A certificate and its key.
struct Made {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Made {
    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der()).into()
    }
}

fn params(common_name: &str, names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
}

fn ca(common_name: &str) -> Made {
    let mut params = params(common_name, &[]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    Made {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

fn signed(common_name: &str, names: &[&str], purpose: ExtendedKeyUsagePurpose, by: &Made) -> Made {
    let mut params = params(common_name, names);
    params.extended_key_usages = vec![purpose];
    let key = KeyPair::generate().unwrap();
    Made {
        cert: params.signed_by(&key, &by.cert, &by.key).unwrap(),
        key,
    }
}

fn self_signed_client(common_name: &str) -> Made {
    let mut params = params(common_name, &[]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    Made {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

/// The test's PKI: a CA that signs the server's certificate (for `localhost` and
/// 127.0.0.1) and the good client's; PEM files of the server's and the CA's in a
/// directory of their own.
struct Pki {
    ca: Made,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let ca = ca("Test Client CA");
        let server = signed(
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server.cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server.key.serialize_pem()).unwrap();
        Pki { ca, dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// mailsink with this PKI's server certificate, asking for client certificates
    /// signed by its CA.
    fn mailsink(&self, auth: &str) -> Server {
        let path = |p: &Path| p.to_str().unwrap().to_string();
        Server::start(&[
            "--tls-cert",
            &path(&self.file("server.pem")),
            "--tls-key",
            &path(&self.file("server.key")),
            "--tls-client-ca",
            &path(&self.file("ca.pem")),
            "--tls-client-auth",
            auth,
        ])
    }

    fn client_signed_by_the_ca(&self) -> Made {
        signed(
            "client.example",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            &self.ca,
        )
    }

    /// A rustls client trusting the CA, with `suites` only (all when empty), presenting
    /// `cert` if any.
    fn client(
        &self,
        cert: Option<&Made>,
        suites: &[SupportedCipherSuite],
    ) -> tokio_rustls::TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der()).unwrap();
        let mut provider = rustls::crypto::ring::default_provider();
        if !suites.is_empty() {
            provider.cipher_suites = suites.to_vec();
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match cert {
            Some(made) => builder
                .with_client_auth_cert(vec![made.der()], made.key_der())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// One whole reply.
async fn reply<S: AsyncRead + Unpin>(stream: &mut BufReader<S>) -> std::io::Result<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, stream.read_line(&mut line))
            .await
            .expect("a reply in time")?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(all);
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    line: &str,
) -> std::io::Result<String> {
    stream
        .get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await?;
    reply(stream).await
}

/// Greeting, EHLO, STARTTLS, the handshake for `name`, EHLO again and QUIT. `Err` when the
/// server broke the session off after STARTTLS.
fn starttls_session(
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    name: &str,
) -> std::io::Result<()> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut plain = BufReader::new(TcpStream::connect(addr).await?);
        assert_eq!(
            reply(&mut plain).await?,
            format!("220 {HOSTNAME} ESMTP\r\n")
        );
        assert!(command(&mut plain, "EHLO client.example")
            .await?
            .contains("STARTTLS"));
        assert_eq!(
            command(&mut plain, "STARTTLS").await?,
            "220 2.0.0 Ready to start TLS\r\n"
        );
        let tls = tokio::time::timeout(WAIT, connector.connect(name, plain.into_inner()))
            .await
            .expect("the handshake ends in time")?;
        let mut tls = BufReader::new(tls);
        assert!(command(&mut tls, "EHLO client.example")
            .await?
            .starts_with("250-"));
        assert_eq!(command(&mut tls, "QUIT").await?, "221 2.0.0 Bye\r\n");
        Ok(())
    })
}

fn der_in_log(peercert: &serde_json::Value) -> Vec<u8> {
    peercert["x509"]
        .as_array()
        .unwrap_or_else(|| panic!("x509 is DER bytes: {peercert}"))
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect()
}

#[test]
fn client_certificates_and_their_verdicts_are_in_the_context() {
    let pki = Pki::new();
    let server = pki.mailsink("optional");

    let good = pki.client_signed_by_the_ca();
    starttls_session(server.addr, pki.client(Some(&good), &[]), "localhost").unwrap();

    let own = self_signed_client("self.example");
    starttls_session(server.addr, pki.client(Some(&own), &[]), "localhost").unwrap();

    let stranger_ca = ca("Some Other CA");
    let stranger = signed(
        "stranger.example",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        &stranger_ca,
    );
    starttls_session(server.addr, pki.client(Some(&stranger), &[]), "localhost").unwrap();

    starttls_session(server.addr, pki.client(None, &[]), "localhost").unwrap();

    let lines = server.wait_events("disconnect", 4);
    let peercert = |i: usize| lines[i]["connection"]["tls"]["peercert"].clone();
    // Signed by the CA: verified.
    assert_eq!(der_in_log(&peercert(0)), good.cert.der().to_vec());
    assert_eq!(peercert(0)["error"], serde_json::Value::Null);
    // Self-signed: X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, Halon's example.
    assert_eq!(der_in_log(&peercert(1)), own.cert.der().to_vec());
    assert_eq!(peercert(1)["error"], 18);
    // Signed by a CA we do not know: X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY.
    assert_eq!(der_in_log(&peercert(2)), stranger.cert.der().to_vec());
    assert_eq!(peercert(2)["error"], 20);
    // None presented.
    assert_eq!(peercert(3), serde_json::Value::Null);
    for line in &lines {
        assert_eq!(line["arguments"]["reply"]["state"], "QUIT", "{line}");
    }
}

#[test]
fn a_required_certificate_must_verify() {
    let pki = Pki::new();
    let server = pki.mailsink("required");

    let good = pki.client_signed_by_the_ca();
    starttls_session(server.addr, pki.client(Some(&good), &[]), "localhost").unwrap();
    let refused = [
        starttls_session(server.addr, pki.client(None, &[]), "localhost"),
        starttls_session(
            server.addr,
            pki.client(Some(&self_signed_client("self.example")), &[]),
            "localhost",
        ),
    ];
    for session in &refused {
        assert!(session.is_err(), "the session went on: {session:?}");
    }

    let lines = server.wait_events("disconnect", 3);
    assert_eq!(
        der_in_log(&lines[0]["connection"]["tls"]["peercert"]),
        good.cert.der().to_vec()
    );
    assert_eq!(
        lines[0]["connection"]["tls"]["peercert"]["error"],
        serde_json::Value::Null
    );
    for line in &lines[1..] {
        assert_eq!(line["arguments"]["error"]["type"], "tls", "{line}");
        assert_eq!(line["connection"]["tls"], serde_json::Value::Null, "{line}");
        // The last reply is STARTTLS's 220: nothing ran after the failed handshake.
        assert_eq!(line["arguments"]["reply"]["state"], "STARTTLS", "{line}");
    }
}

#[test]
fn cipher_suites_have_their_iana_names_and_sni_is_there_when_sent() {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    };
    let pki = Pki::new();
    let server = pki.mailsink("optional");

    // TLS 1.3, asking for localhost by name: SNI sent.
    starttls_session(
        server.addr,
        pki.client(None, &[TLS13_AES_256_GCM_SHA384]),
        "localhost",
    )
    .unwrap();
    // TLS 1.2 only (its suites alone), to 127.0.0.1: no SNI for an address (RFC 6066).
    let tls12 = pki.client(None, &[TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]);
    starttls_session(server.addr, tls12, "127.0.0.1").unwrap();

    let lines = server.wait_events("disconnect", 2);
    let tls13 = &lines[0]["connection"]["tls"];
    assert_eq!(tls13["protocol"], "TLSv1.3");
    assert_eq!(tls13["cipher"], "TLS_AES_256_GCM_SHA384");
    assert_eq!(tls13["keysize"], 256);
    assert_eq!(tls13["sni"], "localhost");
    let tls12 = &lines[1]["connection"]["tls"];
    assert_eq!(tls12["protocol"], "TLSv1.2");
    assert_eq!(tls12["cipher"], "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
    assert_eq!(tls12["keysize"], 128);
    assert_eq!(tls12["sni"], serde_json::Value::Null);
}

#[test]
fn client_certificate_settings_that_cannot_work_stop_the_start() {
    let (status, err) = common::run_to_exit(&["--tls-client-ca", "/nonexistent/ca.pem"]);
    assert!(!status.success());
    assert!(err.contains("--tls-client-ca /nonexistent/ca.pem"), "{err}");

    let (status, err) = common::run_to_exit(&["--tls-client-auth", "required"]);
    assert!(!status.success());
    assert!(
        err.contains("--tls-client-ca"),
        "required without a CA: {err}"
    );
}
