//! `remoteptr`: the client's forward-confirmed reverse DNS name, looked up at the connect
//! stage against a DNS server the test runs on 127.0.0.1 (hickory-server, in-memory zone).
//!
//! The client addresses come from a PROXY header: the lookup is of the client the proxy
//! names, and no test address is on loopback (whose reverse name the resolver answers
//! itself, RFC 6761) or needs the internet.

mod common;
#[path = "common/dns.rs"]
mod dns;

use std::time::{Duration, Instant};

use common::{Client, Server, HOSTNAME};
use dns::{DnsServer, Zone};

fn mailsink(dns: &DnsServer, extra: &[&str]) -> Server {
    let mut args = vec!["--proxy-protocol", "--dns-server"];
    let addr = dns.arg();
    args.push(&addr);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Connects as `client` (a PROXY v1 source), greets, and quits; returns the greeting.
fn visit(server: &Server, proxy_line: &str) -> String {
    let mut c = Client::connect(server.addr);
    c.send(format!("{proxy_line}\r\n"));
    let greeting = c.reply();
    let ehlo = c.cmd("EHLO client.example");
    assert!(ehlo.starts_with(&format!("250-{HOSTNAME} ")), "{ehlo}");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    greeting
}

fn disconnect_lines(server: &Server, n: usize) -> Vec<serde_json::Value> {
    server.wait_events("disconnect", n)
}

#[test]
fn a_forward_confirmed_name_reaches_the_context_and_the_message_log_and_is_cached() {
    let dns = DnsServer::start(
        Zone::new()
            .ptr("192.0.2.10".parse().unwrap(), "Mail.Example.ORG")
            .a("mail.example.org", "192.0.2.10".parse().unwrap())
            .ptr("2001:db8::25".parse().unwrap(), "mx6.example.net")
            .aaaa("mx6.example.net", "2001:db8::25".parse().unwrap()),
    );
    let server = mailsink(&dns, &[]);

    let mut c = Client::connect(server.addr);
    c.send("PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n");
    assert_eq!(c.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
    c.cmd("EHLO client.example");
    let reply = c.send_message(
        "a@example.org",
        &["b@example.net"],
        b"Subject: hi\r\n\r\nhi\r\n",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    c.cmd("QUIT");

    let message = &server.wait_events("message", 1)[0];
    assert_eq!(message["connection"]["remoteptr"], "mail.example.org");
    let line = &disconnect_lines(&server, 1)[0];
    assert_eq!(line["connection"]["remoteip"], "192.0.2.10");
    assert_eq!(line["connection"]["remoteptr"], "mail.example.org");
    assert_eq!(
        dns.queries(),
        [
            "10.2.0.192.in-addr.arpa. PTR",
            "Mail.Example.ORG. A", // the name as the PTR record gave it
        ]
    );

    // The same client again: both answers come from the cache, the server is not asked.
    visit(&server, "PROXY TCP4 192.0.2.10 198.51.100.1 40001 25");
    assert_eq!(
        disconnect_lines(&server, 2)[1]["connection"]["remoteptr"],
        "mail.example.org"
    );
    assert_eq!(dns.queries().len(), 2, "{:?}", dns.queries());

    // IPv6: the forward confirmation is by AAAA.
    visit(&server, "PROXY TCP6 2001:db8::25 2001:db8::1 40002 25");
    let line = &disconnect_lines(&server, 3)[2];
    assert_eq!(line["connection"]["remoteip"], "2001:db8::25");
    assert_eq!(line["connection"]["remoteptr"], "mx6.example.net");
    assert_eq!(dns.queries()[3], "mx6.example.net. AAAA");
}

#[test]
fn a_name_that_does_not_resolve_back_is_not_the_clients() {
    let dns = DnsServer::start(
        Zone::new()
            // Claims a name whose address is another one.
            .ptr("192.0.2.11".parse().unwrap(), "bank.example.org")
            .a("bank.example.org", "198.51.100.80".parse().unwrap())
            // Claims a name that does not exist.
            .ptr("192.0.2.12".parse().unwrap(), "ghost.example.org"),
    );
    let server = mailsink(&dns, &[]);

    visit(&server, "PROXY TCP4 192.0.2.11 198.51.100.1 40000 25");
    visit(&server, "PROXY TCP4 192.0.2.12 198.51.100.1 40000 25");

    let lines = disconnect_lines(&server, 2);
    for line in &lines {
        assert_eq!(
            line["connection"]["remoteptr"],
            serde_json::Value::Null,
            "{line}"
        );
    }
    assert_eq!(lines[0]["connection"]["remoteip"], "192.0.2.11");
    // The names were looked up: null is the confirmation failing, not a lookup skipped.
    assert_eq!(
        dns.queries(),
        [
            "11.2.0.192.in-addr.arpa. PTR",
            "bank.example.org. A",
            "12.2.0.192.in-addr.arpa. PTR",
            "ghost.example.org. A",
        ]
    );
}

#[test]
fn a_client_without_a_ptr_record_has_no_name() {
    let dns = DnsServer::start(Zone::new().a("mail.example.org", "192.0.2.13".parse().unwrap()));
    let server = mailsink(&dns, &[]);

    visit(&server, "PROXY TCP4 192.0.2.13 198.51.100.1 40000 25");

    let line = &disconnect_lines(&server, 1)[0];
    assert_eq!(line["connection"]["remoteip"], "192.0.2.13");
    assert_eq!(line["connection"]["remoteptr"], serde_json::Value::Null);
    assert_eq!(dns.queries(), ["13.2.0.192.in-addr.arpa. PTR"]);
}

#[test]
fn a_dns_server_that_never_answers_delays_the_greeting_by_the_timeout_only() {
    let dns = DnsServer::silent();
    let server = mailsink(&dns, &["--dns-timeout", "1"]);

    let started = Instant::now();
    let greeting = visit(&server, "PROXY TCP4 192.0.2.14 198.51.100.1 40000 25");
    let waited = started.elapsed();
    assert_eq!(greeting, format!("220 {HOSTNAME} ESMTP\r\n"));
    eprintln!("greeted after {waited:?} with a silent DNS server and --dns-timeout 1");
    assert!(
        waited >= Duration::from_millis(900),
        "the lookup was not waited for: {waited:?}"
    );

    let line = &disconnect_lines(&server, 1)[0];
    assert_eq!(line["connection"]["remoteptr"], serde_json::Value::Null);
    assert_eq!(line["arguments"]["reply"]["state"], "QUIT");
    assert!(
        !dns.queries().is_empty(),
        "the silent server was never asked"
    );
}

#[test]
fn a_loopback_client_is_localhost_without_asking_the_server() {
    let dns = DnsServer::start(Zone::new());
    let addr = dns.arg();
    let server = Server::start(&["--dns-server", &addr]);
    let mut c = Client::hello(server.addr);
    c.cmd("QUIT");
    let line = &disconnect_lines(&server, 1)[0];
    assert_eq!(line["connection"]["remoteip"], "127.0.0.1");
    // RFC 6761: the resolver answers for 127.0.0.0/8 and `localhost` itself.
    assert_eq!(line["connection"]["remoteptr"], "localhost");
    assert!(dns.queries().is_empty(), "{:?}", dns.queries());
}

#[test]
fn no_dns_leaves_every_client_nameless() {
    // Even a loopback client, which the resolver names without asking anyone.
    let server = Server::start(&["--no-dns"]);
    let mut c = Client::hello(server.addr);
    c.cmd("QUIT");
    let line = &disconnect_lines(&server, 1)[0];
    assert_eq!(line["connection"]["remoteip"], "127.0.0.1");
    assert_eq!(line["connection"]["remoteptr"], serde_json::Value::Null);
}
