//! mailsink --metrics: a known workload, then a scrape of /metrics over HTTP with the exact
//! counts it must show.

mod common;
#[path = "common/dns.rs"]
mod dns;
#[path = "common/scrape.rs"]
mod scrape;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;

use common::{Cert, Client, Server, HOSTNAME};
use dns::{DnsServer, Zone};
use scrape::{free_port, scrape, scrape_until};

#[track_caller]
fn assert_samples(metrics: &BTreeMap<String, f64>, expected: &[(&str, f64)]) {
    for (name, value) in expected {
        assert_eq!(metrics.get(*name), Some(value), "{name}, in:\n{metrics:#?}");
    }
}

const REFUSING_POLICY: &str = r#"
kumo.on('smtp_server_rcpt_to', function(recipient, conn_meta)
  if recipient.user == 'nobody' then
    kumo.reject(550, '5.1.1 no such user')
  end
end)
"#;

/// One client, one connection: five messages, two of them with a recipient the policy
/// refuses besides the one it takes; meanwhile a second connection from the same address
/// is over --max-connections-per-ip 1; a sixth MAIL is over --max-messages-per-connection 5.
#[test]
fn a_known_workload_gives_exact_counts() {
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("policy.lua");
    std::fs::write(&policy, REFUSING_POLICY).unwrap();
    let server = Server::start(&[
        "--metrics",
        &metrics_addr,
        "--max-connections-per-ip",
        "1",
        "--limit-exceptions",
        "none",
        "--max-messages-per-connection",
        "5",
        "--policy",
        policy.to_str().unwrap(),
    ]);

    // Before any client: the known series are there, at zero.
    assert_samples(
        &scrape(port),
        &[
            ("mailsink_messages_accepted_total", 0.0),
            ("mailsink_replies_total{class=\"2xx\"}", 0.0),
            (
                "mailsink_refusals_total{limit=\"max_connections_per_ip\"}",
                0.0,
            ),
            ("mailsink_dns_ptr_lookups_total{outcome=\"timeout\"}", 0.0),
        ],
    );

    // 220, 250 (EHLO).
    let mut client = Client::hello(server.addr);
    let mut sizes = 0;
    for i in 0..5 {
        let body = format!("Subject: message {i}\r\n\r\nhello .\r\n.dot line\r\n");
        sizes += body.len();
        // 250 (MAIL), 250 (RCPT), maybe 550 (RCPT), 354, 250 (the data).
        let to: &[&str] = if i < 2 {
            &["user@example.net", "nobody@example.net"]
        } else {
            &["user@example.net"]
        };
        let reply = client.send_message("sender@example.org", to, body.as_bytes());
        assert_eq!(reply, "250 2.0.0 Message accepted\r\n");
    }

    // The same address again, while the first connection is open: no greeting, a 421.
    let mut over = Client::connect(server.addr);
    let refused = String::from_utf8(over.read_to_close()).unwrap();
    assert_eq!(
        refused,
        "421 4.7.0 mx.test Error: too many connections from 127.0.0.1\r\n"
    );
    assert_samples(
        &scrape(port),
        &[("mailsink_connections_open{listener=\"smtp\"}", 1.0)],
    );

    // 421, and the connection closes.
    assert_eq!(
        client.cmd("MAIL FROM:<sender@example.org>"),
        "421 4.7.0 mx.test Error: too many messages in one connection\r\n"
    );
    assert!(client.read_to_close().is_empty());
    assert_eq!(server.stored().len(), 5);

    let metrics = scrape_until(port, "mailsink_connections_open{listener=\"smtp\"}", 0.0);
    assert_samples(
        &metrics,
        &[
            ("mailsink_connections_open{listener=\"smtp\"}", 0.0),
            ("mailsink_connections_total{listener=\"smtp\"}", 1.0),
            (
                "mailsink_refusals_total{limit=\"max_connections_per_ip\"}",
                1.0,
            ),
            ("mailsink_refusals_total{limit=\"max_connections\"}", 0.0),
            (
                "mailsink_refusals_total{limit=\"max_messages_per_connection\"}",
                1.0,
            ),
            ("mailsink_refusals_total{limit=\"auth_failure_limit\"}", 0.0),
            ("mailsink_messages_accepted_total", 5.0),
            ("mailsink_message_bytes_accepted_total", sizes as f64),
            // 220, EHLO, 5 x (MAIL, RCPT, the data).
            ("mailsink_replies_total{class=\"2xx\"}", 17.0),
            ("mailsink_replies_total{class=\"3xx\"}", 5.0),
            // The sixth MAIL's; the refusal at accept time is counted above, not as a reply.
            ("mailsink_replies_total{class=\"4xx\"}", 1.0),
            ("mailsink_replies_total{class=\"5xx\"}", 2.0),
            // --no-dns: no lookup.
            ("mailsink_dns_ptr_lookups_total{outcome=\"confirmed\"}", 0.0),
            // Seven recipients went through the script's one handler.
            (
                "mailsink_policy_duration_seconds_count{event=\"smtp_server_rcpt_to\"}",
                7.0,
            ),
        ],
    );
    // A histogram with buckets, not a summary: its +Inf bucket holds every observation.
    assert_eq!(
        metrics.get(
            "mailsink_policy_duration_seconds_bucket{event=\"smtp_server_rcpt_to\",le=\"+Inf\"}"
        ),
        Some(&7.0),
    );
    assert!(
        !metrics.keys().any(|k| k.contains("smtp_server_disconnect")),
        "no handler, no time recorded for the disconnect event"
    );
}

/// A client the PROXY header names (loopback's reverse name the resolver would answer
/// itself, RFC 6761), greeted and gone: its PTR lookup is counted.
fn proxied_visit(server: &Server, client_ip: &str) {
    let mut client = Client::connect(server.addr);
    client.send(format!("PROXY TCP4 {client_ip} 127.0.0.1 40000 25\r\n"));
    assert!(client.reply().starts_with("220 "));
    assert!(client.cmd("QUIT").starts_with("221 "));
}

/// The relay's latency by outcome, and PTR lookups confirmed and failed against a DNS
/// server on loopback.
#[test]
fn relay_latency_and_dns_outcomes_are_counted() {
    let zone = Zone::new()
        .ptr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), "client.example.")
        .a("client.example.", Ipv4Addr::new(192, 0, 2, 7));
    let dns = DnsServer::start(zone);
    let downstream = Server::start(&[]);
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let url = format!("smtp://{}?starttls=no", downstream.addr);
    let server = Server::start(&[
        "--metrics",
        &metrics_addr,
        "--relay",
        &url,
        "--proxy-protocol",
        "--dns-server",
        &dns.arg(),
    ]);
    let mut client = Client::connect(server.addr);
    client.send("PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n");
    assert!(client.reply().starts_with("220 "));
    assert!(client.cmd("EHLO client.example").starts_with("250"));
    for i in 0..2 {
        let body = format!("Subject: relayed {i}\r\n\r\nx\r\n");
        let reply = client.send_message("a@x.example", &["b@y.example"], body.as_bytes());
        assert_eq!(reply, "250 2.0.0 Message accepted\r\n");
    }
    assert!(client.cmd("QUIT").starts_with("221 "));
    assert_eq!(downstream.wait_events("message", 2).len(), 2);
    // No PTR record for this one.
    proxied_visit(&server, "192.0.2.8");

    let metrics = scrape_until(port, "mailsink_connections_open{listener=\"smtp\"}", 0.0);
    assert_samples(
        &metrics,
        &[
            (
                "mailsink_relay_duration_seconds_count{outcome=\"delivered\"}",
                2.0,
            ),
            ("mailsink_messages_accepted_total", 2.0),
            ("mailsink_dns_ptr_lookups_total{outcome=\"confirmed\"}", 1.0),
            ("mailsink_dns_ptr_lookups_total{outcome=\"failed\"}", 1.0),
            ("mailsink_dns_ptr_lookups_total{outcome=\"timeout\"}", 0.0),
            ("mailsink_connections_total{listener=\"smtp\"}", 2.0),
        ],
    );
    assert!(!metrics
        .keys()
        .any(|k| k.starts_with("mailsink_relay_duration_seconds_count{outcome=\"not_delivered\"")));
}

/// A DNS server that never answers: the lookup is a timeout, after --dns-timeout.
#[test]
fn a_dns_server_that_never_answers_counts_a_timeout() {
    let silent = DnsServer::silent();
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let server = Server::start(&[
        "--metrics",
        &metrics_addr,
        "--proxy-protocol",
        "--dns-server",
        &silent.arg(),
        "--dns-timeout",
        "1",
    ]);
    proxied_visit(&server, "192.0.2.9");
    let metrics = scrape_until(port, "mailsink_connections_open{listener=\"smtp\"}", 0.0);
    assert_samples(
        &metrics,
        &[
            ("mailsink_dns_ptr_lookups_total{outcome=\"timeout\"}", 1.0),
            ("mailsink_dns_ptr_lookups_total{outcome=\"failed\"}", 0.0),
            ("mailsink_dns_ptr_lookups_total{outcome=\"confirmed\"}", 0.0),
        ],
    );
    assert!(!silent.queries().is_empty(), "the server was asked");
}

/// SMTP over STARTTLS, for AUTH, trusting `cert`.
struct TlsClient(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl TlsClient {
    fn start(mut plain: Client, cert: &Cert) -> TlsClient {
        assert!(plain.cmd("STARTTLS").starts_with("220 "));
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from(cert.der.clone()))
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(HOSTNAME).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut client = TlsClient(rustls::StreamOwned::new(conn, plain.stream));
        assert!(client.cmd("EHLO client.example").contains("AUTH PLAIN"));
        client
    }

    /// Sends a command and returns its whole reply.
    fn cmd(&mut self, line: &str) -> String {
        self.0.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            self.0.read_exact(&mut byte).expect("a reply");
            reply.push(byte[0]);
            let last_line = reply.rsplit(|&b| b == b'\n').nth(1).unwrap_or_default();
            if byte[0] == b'\n' && last_line.get(3) != Some(&b'-') {
                return String::from_utf8(reply).unwrap();
            }
        }
    }
}

/// `AUTH PLAIN` with a wrong password, three times under --auth-failure-limit 2/hour: two
/// 535s, then the limit's 454.
#[test]
fn an_auth_refused_by_the_failure_limit_is_counted() {
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let cert = Cert::self_signed(&[HOSTNAME]);
    let limits = [
        "--metrics",
        &metrics_addr,
        "--user",
        "user:right",
        "--auth-failure-limit",
        "2/hour",
        "--error-sleep-time",
        "0",
        "--limit-exceptions",
        "none",
    ];
    let server = Server::start(&[&cert.args()[..], &limits].concat());
    let mut client = TlsClient::start(Client::hello(server.addr), &cert);
    // "\0user\0wrong"
    let wrong = "AUTH PLAIN AHVzZXIAd3Jvbmc=";
    let replies: Vec<String> = (0..3).map(|_| client.cmd(wrong)).collect();
    assert_eq!(
        replies,
        [
            "535 5.7.8 Authentication credentials invalid\r\n",
            "535 5.7.8 Authentication credentials invalid\r\n",
            "454 4.7.0 Too many authentication failures from 127.0.0.1, try again later\r\n",
        ]
    );
    assert!(client.cmd("QUIT").starts_with("221 "));
    let metrics = scrape_until(port, "mailsink_connections_open{listener=\"smtp\"}", 0.0);
    assert_samples(
        &metrics,
        &[
            ("mailsink_refusals_total{limit=\"auth_failure_limit\"}", 1.0),
            // 220, EHLO, STARTTLS, EHLO, QUIT.
            ("mailsink_replies_total{class=\"2xx\"}", 5.0),
            ("mailsink_replies_total{class=\"4xx\"}", 1.0),
            ("mailsink_replies_total{class=\"5xx\"}", 2.0),
        ],
    );
}

#[test]
fn a_metrics_address_in_use_stops_the_start() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr) = common::run_to_exit(&["--metrics", &addr, "--no-dns"]);
    assert!(!status.success());
    assert!(stderr.contains(&format!("--metrics {addr}")), "{stderr}");
}
