//! Connection limits: the client over the global limit or over its address's limit reads
//! `421 4.7.0` and is closed, while the others are served; a freed place is taken again. With
//! the PROXY protocol the address counted is the one in the header. An IPv6 client is its
//! /64, an IPv4-mapped address its IPv4 one; loopback is exempt from the per-client limits.
//! A client that keeps making errors gets its error replies later and later. Every
//! connection, refused ones included, ends with its disconnect context.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{config, serve, Client, Log, HOSTNAME};
use smtp_session_tokio::{
    ClientRules, Config, ConnectionInfo, DisconnectContext, ErrorDelay, Handler, Hooks, Limits,
    Server, Transport,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Clone)]
struct Sink;

impl Handler for Sink {
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
}

fn greeting() -> String {
    format!("220 {HOSTNAME} ESMTP\r\n")
}

#[test]
fn the_client_over_the_global_limit_reads_421_and_a_freed_place_is_taken_again() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let running = serve(move |l| {
        Server::new(Sink)
            .config(config())
            .limits(limits)
            .listener(l)
    });
    let mut first = Client::connect(running.addr);
    assert_eq!(first.reply(), greeting());
    let mut second = Client::connect(running.addr);
    assert_eq!(second.reply(), greeting());
    let mut third = Client::connect(running.addr);
    assert_eq!(
        third.read_to_close_text(),
        format!("421 4.7.0 {HOSTNAME} Error: too many connections\r\n")
    );
    assert_eq!(first.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert_eq!(first.read_to_close_text(), "");
    // The place is free once the first connection's task ended.
    let mut fourth = None;
    for _ in 0..100 {
        let mut c = Client::connect(running.addr);
        let reply = c.reply();
        if reply == greeting() {
            fourth = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut fourth = fourth.expect("a freed place is taken again");
    assert_eq!(fourth.cmd("NOOP"), "250 2.0.0 OK\r\n");
    assert_eq!(second.cmd("NOOP"), "250 2.0.0 OK\r\n");
}

/// Limits with no network exempt, so that loopback clients are counted as strangers.
fn no_exceptions(limits: Limits) -> Limits {
    Limits {
        clients: ClientRules {
            limit_exceptions: vec![],
            ..ClientRules::default()
        },
        ..limits
    }
}

#[test]
fn the_client_over_its_addresss_limit_reads_421_and_other_addresses_are_served() {
    let limits = no_exceptions(Limits {
        max_connections_per_ip: 1,
        ..Limits::default()
    });
    let running = serve(move |l| {
        Server::new(Sink)
            .config(config())
            .limits(limits)
            .listener(l)
    });
    let mut first = Client::connect_from("127.0.0.1", running.addr);
    assert_eq!(first.reply(), greeting());
    let mut again = Client::connect_from("127.0.0.1", running.addr);
    assert_eq!(
        again.read_to_close_text(),
        format!("421 4.7.0 {HOSTNAME} Error: too many connections from 127.0.0.1\r\n")
    );
    let mut other = Client::connect_from("127.0.0.2", running.addr);
    assert_eq!(other.reply(), greeting());
    assert_eq!(other.cmd("NOOP"), "250 2.0.0 OK\r\n");
    assert_eq!(first.cmd("NOOP"), "250 2.0.0 OK\r\n");
}

#[test]
fn behind_a_proxy_the_address_in_the_header_is_counted() {
    let limits = Limits {
        max_connections_per_ip: 1,
        ..Limits::default()
    };
    let mut config = config();
    config.proxy_protocol = true;
    let running = serve(move |l| Server::new(Sink).config(config).limits(limits).listener(l));
    // Every connection comes from the proxy (127.0.0.1); the clients are in the headers.
    let mut a = Client::connect(running.addr);
    a.send("PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n");
    assert_eq!(a.reply(), greeting());
    let mut b = Client::connect(running.addr);
    b.send("PROXY TCP4 192.0.2.11 198.51.100.1 40001 25\r\n");
    assert_eq!(b.reply(), greeting());
    let mut a_again = Client::connect(running.addr);
    a_again.send("PROXY TCP4 192.0.2.10 198.51.100.1 40002 25\r\n");
    assert_eq!(
        a_again.read_to_close_text(),
        format!("421 4.7.0 {HOSTNAME} Error: too many connections from 192.0.2.10\r\n")
    );
    assert_eq!(a.cmd("NOOP"), "250 2.0.0 OK\r\n");
    assert_eq!(b.cmd("NOOP"), "250 2.0.0 OK\r\n");
}

/// Connections opened from 127.0.0.1 and kept, all at once; each has read its first reply.
fn open_from_loopback(addr: SocketAddr, n: usize) -> Vec<(Client, String)> {
    (0..n)
        .map(|_| {
            let mut c = Client::connect(addr);
            let first = c.reply();
            (c, first)
        })
        .collect()
}

/// A local test suite, a content filter re-injecting: 200 connections at once from
/// 127.0.0.1 are all greeted under a per-client limit of 50, since loopback is exempt by
/// default. With no exemption the 51st reads 421.
#[test]
fn loopback_is_exempt_from_the_per_client_limit_unless_the_exceptions_are_emptied() {
    let limits = Limits {
        max_connections_per_ip: 50,
        ..Limits::default()
    };
    let exempt = serve(move |l| {
        Server::new(Sink)
            .config(config())
            .limits(limits)
            .listener(l)
    });
    let open = open_from_loopback(exempt.addr, 200);
    assert!(open.iter().all(|(_, first)| *first == greeting()));
    drop(open);

    let limits = no_exceptions(Limits {
        max_connections_per_ip: 50,
        ..Limits::default()
    });
    let counted = serve(move |l| {
        Server::new(Sink)
            .config(config())
            .limits(limits)
            .listener(l)
    });
    let mut open = open_from_loopback(counted.addr, 50);
    assert!(open.iter().all(|(_, first)| *first == greeting()));
    let mut fifty_first = Client::connect(counted.addr);
    assert_eq!(
        fifty_first.read_to_close_text(),
        format!("421 4.7.0 {HOSTNAME} Error: too many connections from 127.0.0.1\r\n")
    );
    assert_eq!(open[0].0.cmd("NOOP"), "250 2.0.0 OK\r\n");
}

/// Behind a proxy, clients from many addresses of one IPv6 /64 are one client, so one
/// network cannot fill the server; another /64 is served. `::ffff:192.0.2.10` is
/// `192.0.2.10`.
#[test]
fn an_ipv6_network_is_one_client_and_a_mapped_ipv4_address_is_its_ipv4_one() {
    let limits = Limits {
        max_connections_per_ip: 1,
        ..Limits::default()
    };
    let mut config = config();
    config.proxy_protocol = true;
    let running = serve(move |l| Server::new(Sink).config(config).limits(limits).listener(l));
    let visit = |header: &str| {
        let mut c = Client::connect(running.addr);
        c.send(format!("{header}\r\n"));
        let first = c.reply();
        (c, first)
    };
    let (mut a, first) = visit("PROXY TCP6 2001:db8:1:2::a 2001:db8::25 40000 25");
    assert_eq!(first, greeting());
    let (_, first) = visit("PROXY TCP6 2001:db8:1:2:ffff:ffff:ffff:b 2001:db8::25 40001 25");
    assert_eq!(
        first,
        format!("421 4.7.0 {HOSTNAME} Error: too many connections from 2001:db8:1:2::/64\r\n")
    );
    let (_other, first) = visit("PROXY TCP6 2001:db8:1:3::a 2001:db8::25 40002 25");
    assert_eq!(first, greeting());
    let (_v4, first) = visit("PROXY TCP4 192.0.2.10 198.51.100.1 40003 25");
    assert_eq!(first, greeting());
    let (_, first) = visit("PROXY TCP6 ::ffff:192.0.2.10 2001:db8::25 40004 25");
    assert_eq!(
        first,
        format!("421 4.7.0 {HOSTNAME} Error: too many connections from 192.0.2.10\r\n")
    );
    assert_eq!(a.cmd("NOOP"), "250 2.0.0 OK\r\n");
}

/// Records every disconnect context.
#[derive(Clone)]
struct Recording(Log);

impl Handler for Recording {
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    async fn disconnect(&mut self, context: DisconnectContext) {
        self.0.push(&context);
    }
}

/// A connection refused at a limit ends like any other: the handler gets its disconnect
/// context, with the 421 as its last reply. Two connections are served under a global limit
/// of 2; 300 more are refused while they stay open, more than the server answers at once
/// (the rest are closed at once): 302 connections, 302 contexts, 300 of them refusals.
#[test]
fn every_refused_connection_has_its_disconnect_context() {
    let log = Log::default();
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let handler = Recording(log.clone());
    let running = serve(move |l| {
        Server::new(handler)
            .config(config())
            .limits(limits)
            .listener(l)
    });
    let mut served = [Client::greeted(running.addr), Client::greeted(running.addr)];
    let refused: Vec<_> = (0..300).map(|_| Client::connect(running.addr)).collect();
    let contexts = log.wait(300);
    assert_eq!(contexts.len(), 300);
    for context in &contexts {
        let reply = &context["arguments"]["reply"];
        assert_eq!(reply["code"], 421, "{context}");
        assert_eq!(reply["enhanced"], serde_json::json!([4, 7, 0]));
        assert_eq!(
            reply["reason"],
            serde_json::json!([format!("{HOSTNAME} Error: too many connections")])
        );
        assert_eq!(reply["state"], "CONNECT");
        assert_eq!(context["connection"]["remoteip"], "127.0.0.1");
    }
    drop(refused);
    for c in &mut served {
        assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    }
    let contexts = log.wait(302);
    assert_eq!(contexts.len(), 302);
    let ids: std::collections::HashSet<_> = contexts
        .iter()
        .map(|c| c["connection"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 302, "each connection has its own id");
}

/// Past the soft limit every error reply waits one step longer than the one before, up to
/// the maximum; a reply that is no error goes out at once; the hard error limit still closes
/// the connection. On tokio's paused clock the delays are exact.
#[tokio::test(start_paused = true)]
async fn error_replies_past_the_soft_limit_wait_longer_each_time() {
    let limits = Limits {
        error_delay: ErrorDelay {
            soft_limit: 2,
            step: Duration::from_secs(1),
            max: Duration::from_secs(3),
        },
        ..Limits::default()
    };
    let config = Config {
        hard_error_limit: 6,
        ..config()
    };
    let server = Server::new(Sink).config(config).limits(limits);
    let (io, client) = tokio::io::duplex(4096);
    let serving = tokio::spawn(async move {
        server
            .serve_connection(io, ConnectionInfo::default(), Transport::Plain)
            .await
    });
    let (read, mut write) = tokio::io::split(client);
    let mut lines = BufReader::new(read).lines();
    let mut transcript = Vec::new();
    let mut sent_at = tokio::time::Instant::now();
    for command in ["", "FOO", "FOO", "FOO", "NOOP", "FOO", "FOO", "FOO"] {
        if !command.is_empty() {
            write
                .write_all(format!("{command}\r\n").as_bytes())
                .await
                .unwrap();
            sent_at = tokio::time::Instant::now();
        }
        let reply = lines.next_line().await.unwrap().expect("a reply");
        transcript.push((command, reply, sent_at.elapsed().as_secs_f64()));
    }
    // The sixth error reached the hard limit: its 421 came in the same write, then the end.
    let closing = lines.next_line().await.unwrap().expect("the 421");
    assert_eq!(lines.next_line().await.unwrap(), None);
    serving.await.unwrap();
    let unknown = "500 5.5.1 Command unrecognized";
    let expected = [
        ("", format!("220 {HOSTNAME} ESMTP"), 0.0),
        ("FOO", unknown.into(), 0.0),
        ("FOO", unknown.into(), 0.0),
        ("FOO", unknown.into(), 1.0),
        ("NOOP", "250 2.0.0 OK".into(), 0.0),
        ("FOO", unknown.into(), 2.0),
        ("FOO", unknown.into(), 3.0),
        ("FOO", unknown.into(), 3.0),
    ];
    assert_eq!(transcript, expected);
    assert_eq!(
        closing,
        format!("421 4.7.0 {HOSTNAME} Error: too many errors")
    );
}

/// How long each of four `FOO` lines waited for its `500` under an error delay of one
/// second per error from the first, for a client at `ip` (on tokio's paused clock).
async fn error_delays_for(ip: &str) -> Vec<f64> {
    let limits = Limits {
        error_delay: ErrorDelay {
            soft_limit: 0,
            step: Duration::from_secs(1),
            max: Duration::from_secs(10),
        },
        ..Limits::default()
    };
    let server = Server::new(Sink).config(config()).limits(limits);
    let (io, client) = tokio::io::duplex(4096);
    let info = ConnectionInfo {
        remote_ip: Some(ip.parse().unwrap()),
        ..ConnectionInfo::default()
    };
    let serving =
        tokio::spawn(async move { server.serve_connection(io, info, Transport::Plain).await });
    let (read, mut write) = tokio::io::split(client);
    let mut lines = BufReader::new(read).lines();
    assert_eq!(
        lines.next_line().await.unwrap().unwrap(),
        greeting().trim_end()
    );
    let mut waited = Vec::new();
    for _ in 0..4 {
        write.write_all(b"FOO\r\n").await.unwrap();
        let sent_at = tokio::time::Instant::now();
        let reply = lines.next_line().await.unwrap().expect("a reply");
        assert_eq!(reply, "500 5.5.1 Command unrecognized");
        waited.push(sent_at.elapsed().as_secs_f64());
    }
    write.write_all(b"QUIT\r\n").await.unwrap();
    serving.await.unwrap();
    waited
}

/// The error delay is a per-client limit: a loopback client is exempt from it.
#[tokio::test(start_paused = true)]
async fn a_loopback_client_gets_its_error_replies_at_once() {
    assert_eq!(error_delays_for("192.0.2.1").await, [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(error_delays_for("127.0.0.1").await, [0.0, 0.0, 0.0, 0.0]);
    assert_eq!(error_delays_for("::1").await, [0.0, 0.0, 0.0, 0.0]);
}
