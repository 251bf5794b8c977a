//! lettre, a Rust SMTP client, against a running mailsink: plain, STARTTLS with a verified
//! certificate and AUTH, implicit TLS.

mod common;

use std::time::Duration;

use common::{Cert, Options, Server};
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};

fn message(subject: &str, body: &str) -> Message {
    Message::builder()
        .from("Lettre <lettre@example.org>".parse().unwrap())
        .to("Someone <someone@example.net>".parse().unwrap())
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_string())
        .unwrap()
}

fn transport(
    addr: std::net::SocketAddr,
    tls: Tls,
) -> lettre::transport::smtp::SmtpTransportBuilder {
    SmtpTransport::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .hello_name(ClientId::Domain("lettre.example".into()))
        .timeout(Some(Duration::from_secs(15)))
        .tls(tls)
}

fn stored_text(server: &Server, marker: &str) -> String {
    server
        .stored()
        .into_iter()
        .map(|(_, b)| String::from_utf8(b).unwrap())
        .find(|t| t.contains(marker))
        .unwrap_or_else(|| panic!("no stored message with {marker}"))
}

#[test]
fn lettre_plain() {
    let server = Server::start(&[]);
    let mailer = transport(server.addr, Tls::None).build();
    let response = mailer
        .send(&message("lettre plain", ".dot first\r\nsecond line"))
        .unwrap();
    assert_eq!(response.code().to_string(), "250");
    let text = stored_text(&server, "Subject: lettre plain");
    // lettre dot-stuffs and ends the body with CRLF before the final dot; the store holds
    // the original lines.
    assert!(
        text.ends_with("\r\n\r\n.dot first\r\nsecond line\r\n"),
        "{text:?}"
    );
    let line = &server.wait_events("message", 1)[0];
    assert_eq!(line["envelope"]["mail_from"], "lettre@example.org");
    assert_eq!(
        line["envelope"]["recipients"][0]["path"],
        "someone@example.net"
    );
    assert_eq!(line["connection"]["helo"]["host"], "lettre.example");
}

#[test]
fn lettre_starttls_verified_and_auth() {
    let cert = Cert::self_signed(&["localhost"]);
    let server = Server::start(&[&cert.args()[..], &["--user", "dave:pa55:word"]].concat());
    let params = TlsParameters::builder("localhost".into())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(Certificate::from_pem(cert.pem_text.as_bytes()).unwrap())
        .build_rustls()
        .unwrap();
    for (mechanism, subject) in [
        (Mechanism::Plain, "lettre plain auth"),
        (Mechanism::Login, "lettre login auth"),
    ] {
        let mailer = transport(server.addr, Tls::Required(params.clone()))
            .credentials(Credentials::new("dave".into(), "pa55:word".into()))
            .authentication(vec![mechanism])
            .build();
        mailer.send(&message(subject, "over TLS")).unwrap();
        assert!(stored_text(&server, subject).ends_with("\r\n\r\nover TLS\r\n"));
    }
    let lines = server.wait_events("message", 2);
    for line in &lines {
        assert_eq!(line["connection"]["auth"]["username"], "dave");
        assert_eq!(line["connection"]["tls"]["sni"], "localhost");
    }
    let wrong = transport(server.addr, Tls::Required(params))
        .credentials(Credentials::new("dave".into(), "nope".into()))
        .build();
    let err = wrong.send(&message("never", "x")).unwrap_err();
    assert!(err.to_string().contains("535"), "{err}");
    assert_eq!(server.stored().len(), 2);
}

#[test]
fn lettre_implicit_tls() {
    let server = Server::start_with(Options {
        args: vec![],
        env: vec![],
        implicit_tls: true,
    });
    let params = TlsParameters::builder("localhost".into())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap();
    let mailer = transport(server.tls_addr.unwrap(), Tls::Wrapper(params)).build();
    mailer.send(&message("lettre smtps", "wrapped")).unwrap();
    assert!(stored_text(&server, "lettre smtps").ends_with("\r\n\r\nwrapped\r\n"));
    let line = &server.wait_events("message", 1)[0];
    assert_eq!(line["connection"]["serverid"], "smtps");
    assert!(line["connection"]["tls"]["protocol"]
        .as_str()
        .unwrap()
        .starts_with("TLSv1."));
}
