//! TLS on the relay's leg, with another mailsink as the downstream: opportunistic STARTTLS
//! (the default, certificate not checked), required STARTTLS and smtps:// (certificate
//! checked against --relay-tls-ca), and what the client hears when TLS cannot be had.

mod common;
mod relay_servers;

use common::{Cert, Client, Options, Server};
use relay_servers::{eventually_contains, SmtpSink};

const TLS_FAILED: &str = "451 4.7.5 No secure connection to the next hop, try again later\r\n";

fn localhost_cert() -> Cert {
    Cert::self_signed(&["localhost"])
}

/// A downstream mailsink presenting `cert`, with an implicit TLS listener too.
fn downstream_with(cert: &Cert) -> Server {
    Server::start_with(Options {
        args: ["--tls-cert", cert.pem.to_str().unwrap()]
            .into_iter()
            .chain(["--tls-key", cert.key.to_str().unwrap()])
            .map(String::from)
            .collect(),
        env: vec![],
        implicit_tls: true,
    })
}

fn send_one(server: &Server) -> String {
    let mut c = Client::hello(server.addr);
    let reply = c.send_message(
        "a@x.example",
        &["b@y.example"],
        b"Subject: tls\r\n\r\nx\r\n",
    );
    assert_eq!(c.cmd("RSET"), "250 2.0.0 OK\r\n");
    reply
}

/// The TLS facts of the connection that brought the downstream its one message.
fn tls_of_the_relay(downstream: &Server) -> serde_json::Value {
    downstream.wait_events("message", 1)[0]["connection"]["tls"].clone()
}

#[test]
fn by_default_starttls_is_used_whatever_the_certificate() {
    // The downstream's certificate is self-signed, made at its start-up.
    let downstream = Server::start(&[]);
    let relay = Server::start(&["--relay", &format!("smtp://{}", downstream.addr)]);
    assert_eq!(send_one(&relay), "250 2.0.0 Message accepted\r\n");
    let tls = tls_of_the_relay(&downstream);
    assert!(
        tls["protocol"].as_str().unwrap().starts_with("TLSv1."),
        "{tls}"
    );
}

#[test]
fn required_starttls_checks_the_certificate_against_the_given_ca() {
    let cert = localhost_cert();
    let downstream = downstream_with(&cert);
    let url = format!(
        "smtp://localhost:{}?starttls=required",
        downstream.addr.port()
    );
    let relay = Server::start(&[
        "--relay",
        &url,
        "--relay-tls-ca",
        cert.pem.to_str().unwrap(),
    ]);
    assert_eq!(send_one(&relay), "250 2.0.0 Message accepted\r\n");
    let tls = tls_of_the_relay(&downstream);
    assert_eq!(tls["sni"], "localhost", "{tls}");

    // Without the CA, the web PKI roots do not know the certificate: nothing is sent.
    let untrusting = Server::start(&["--relay", &url]);
    assert_eq!(send_one(&untrusting), TLS_FAILED);
    eventually_contains("STARTTLS failed", || untrusting.stderr_lines().join("\n"));
    assert_eq!(downstream.stored().len(), 1);
}

#[test]
fn required_starttls_to_a_server_without_it_is_a_451() {
    // smtp-sink offers no STARTTLS.
    let sink = SmtpSink::start(&[]);
    let url = format!("smtp://{}?starttls=required", sink.addr);
    let relay = Server::start(&["--relay", &url]);
    assert_eq!(send_one(&relay), TLS_FAILED);
    assert!(sink.dumps().is_empty());
}

#[test]
fn smtps_speaks_tls_from_the_first_byte() {
    let cert = localhost_cert();
    let downstream = downstream_with(&cert);
    let url = format!("smtps://localhost:{}", downstream.tls_addr.unwrap().port());
    let relay = Server::start(&[
        "--relay",
        &url,
        "--relay-tls-ca",
        cert.pem.to_str().unwrap(),
    ]);
    assert_eq!(send_one(&relay), "250 2.0.0 Message accepted\r\n");
    let line = &downstream.wait_events("message", 1)[0];
    assert_eq!(line["connection"]["serverid"], "smtps");
    assert_eq!(line["connection"]["tls"]["sni"], "localhost");

    // smtps to the STARTTLS port: the handshake fails, the client hears 451 4.7.5.
    let wrong = format!("smtps://localhost:{}", downstream.addr.port());
    let relay = Server::start(&[
        "--relay",
        &wrong,
        "--relay-tls-ca",
        cert.pem.to_str().unwrap(),
    ]);
    assert_eq!(send_one(&relay), TLS_FAILED);
}

#[test]
fn a_ca_file_without_certificates_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let (status, stderr) = common::run_to_exit(&[
        "--relay",
        "smtp://127.0.0.1:25?starttls=required",
        "--relay-tls-ca",
        empty.to_str().unwrap(),
    ]);
    assert!(!status.success());
    assert!(stderr.contains("no certificate"), "{stderr}");
}
