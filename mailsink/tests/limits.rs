//! What mailsink withstands as an edge receiver, over real sockets: a client address over its
//! connection limit is refused while others are served, even with 1,100 idle connections
//! from one address under a 1,024 open-file limit; a connection past its message limit is
//! closed at the next MAIL; 200 wrong passwords take measurable time and the address is
//! refused AUTH while another address logs in; early talkers, unauthorised pipeliners and
//! trickling clients are cut. Loopback is exempt from the per-client limits unless
//! `--limit-exceptions none`; every connection, refused ones included, has its disconnect
//! line.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Cert, Client, Options, Server, HOSTNAME};

fn greeting() -> String {
    format!("220 {HOSTNAME} ESMTP\r\n")
}

fn too_many_from(ip: &str) -> String {
    format!("421 4.7.0 {HOSTNAME} Error: too many connections from {ip}\r\n")
}

#[test]
fn a_client_address_over_its_limit_reads_421_while_another_address_is_served() {
    let server = Server::start(&[
        "--max-connections-per-ip",
        "3",
        "--limit-exceptions",
        "none",
    ]);
    let mut held: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = Client::connect_from("127.0.0.1", server.addr);
            assert_eq!(c.reply(), greeting());
            c
        })
        .collect();
    let mut fourth = Client::connect_from("127.0.0.1", server.addr);
    assert_eq!(
        String::from_utf8(fourth.read_to_close()).unwrap(),
        too_many_from("127.0.0.1")
    );
    let mut other = Client::connect_from("127.0.0.2", server.addr);
    assert_eq!(other.reply(), greeting());
    assert!(other.cmd("EHLO other.example").starts_with("250-"));
    let reply = other.send_message(
        "a@x.example",
        &["b@y.example"],
        b"Subject: served\r\n\r\nhi\r\n",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    assert_eq!(server.stored().len(), 1);
    // The three held connections are still served.
    for c in &mut held {
        assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK\r\n");
    }
}

/// The lockout: one address holding 1,100 idle connections under the usual open-file
/// limit of 1,024 used to exhaust mailsink's descriptors, and every new client waited
/// unanswered. Now the address gets 50 connections (Postfix's default), the other 1,050 are
/// answered 421 and closed, the global limit is sized below the file limit, and a client
/// from another address is greeted and delivers at once.
#[test]
fn eleven_hundred_idle_connections_from_one_address_lock_no_one_out() {
    const IDLE: usize = 1100;
    // The test itself holds 1,100 sockets.
    let ours = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        ours >= IDLE as u64 + 100,
        "this test needs {} open files, the hard limit allows {ours}",
        IDLE + 100
    );
    let server = Server::start_wrapped(
        &["prlimit", "--nofile=1024:1024", "--"],
        Options {
            args: vec!["--limit-exceptions".into(), "none".into()],
            env: vec![],
            implicit_tls: false,
        },
    );
    let start = Instant::now();
    // The limits are described at start-up, after the listeners.
    let limits_line = server.wait_stderr_containing("connections:");
    assert!(
        limits_line.contains("connections: 352 at once, 50 per address; open files: 1024"),
        "{limits_line}"
    );
    // One at a time, each read its first reply, so that the burst does not overflow the
    // listen queue (a dropped SYN costs the client a second).
    let mut greeted = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..IDLE {
        let mut c = Client::connect(server.addr);
        let first = c.reply();
        if first == greeting() {
            greeted.push(c);
        } else {
            assert_eq!(first, too_many_from("127.0.0.1"));
            // Held open like the others: the client does not let go.
            refused.push(c);
        }
    }
    let refused = refused.len();
    assert_eq!((greeted.len(), refused), (50, IDLE - 50));
    let mut newcomer = Client::connect_from("127.0.0.2", server.addr);
    assert_eq!(newcomer.reply(), greeting());
    assert!(newcomer.cmd("EHLO new.example").starts_with("250-"));
    let reply = newcomer.send_message(
        "a@x.example",
        &["b@y.example"],
        b"Subject: in\r\n\r\nhi\r\n",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    eprintln!(
        "{IDLE} connections from one address, then a delivery from another: {:?}",
        start.elapsed()
    );
    assert_eq!(greeted[0].cmd("NOOP"), "250 2.0.0 OK\r\n");
}

#[test]
fn past_its_message_limit_a_connection_is_closed_at_the_next_mail() {
    let server = Server::start(&["--max-messages-per-connection", "2"]);
    let mut c = Client::hello(server.addr);
    for n in 0..2 {
        let body = format!("Subject: {n}\r\n\r\nhi\r\n");
        let reply = c.send_message("a@x.example", &["b@y.example"], body.as_bytes());
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    c.send("MAIL FROM:<a@x.example>\r\n");
    assert_eq!(
        String::from_utf8(c.read_to_close()).unwrap(),
        format!("421 4.7.0 {HOSTNAME} Error: too many messages in one connection\r\n")
    );
    // A new connection starts a new count.
    let mut again = Client::hello(server.addr);
    let reply = again.send_message("a@x.example", &["b@y.example"], b"Subject: 2\r\n\r\nhi\r\n");
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    assert_eq!(server.stored().len(), 3);
}

/// An SMTP client that upgrades to TLS with STARTTLS, trusting one certificate.
struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    fn start(mut plain: Client, tls: &Arc<rustls::ClientConfig>) -> TlsClient {
        assert_eq!(plain.reply(), greeting());
        assert!(plain.cmd("EHLO tls.example").starts_with("250-"));
        assert!(plain.cmd("STARTTLS").starts_with("220 "));
        let name = rustls_pki_types::ServerName::try_from(HOSTNAME).unwrap();
        let conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
        let mut c = TlsClient {
            stream: rustls::StreamOwned::new(conn, plain.stream),
            buf: Vec::new(),
        };
        assert!(c.cmd("EHLO tls.example").contains("AUTH PLAIN"));
        c
    }

    /// A command's reply, or `None` when the server closed.
    fn cmd(&mut self, line: &str) -> String {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply().expect("a reply")
    }

    fn reply(&mut self) -> Option<String> {
        loop {
            let mut start = 0;
            while let Some(pos) = self.buf[start..].windows(2).position(|w| w == b"\r\n") {
                let line = &self.buf[start..start + pos];
                start += pos + 2;
                if line.len() < 4 || line[3] != b'-' {
                    let reply: Vec<u8> = self.buf.drain(..start).collect();
                    return Some(String::from_utf8(reply).unwrap());
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn auth_plain(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    format!("AUTH PLAIN {token}")
}

/// The brute force: 200 wrong passwords over 10 connections at once took 0.2 s with
/// no delay. Now each connection's error replies past the soft limit of 10 wait longer each
/// time, the address is refused AUTH (454 4.7.0, after a delay) once it failed 40 times,
/// even with the right password, and another address logs in meanwhile.
#[test]
fn two_hundred_wrong_passwords_take_measurably_long_and_lock_only_their_address() {
    const CONNECTIONS: usize = 10;
    const TRIES: usize = 20; // the hard error limit closes each connection at its 20th
    const ALLOWED: usize = 40; // --auth-failure-limit
    let sleep = Duration::from_millis(20); // --error-sleep-time
    let max_sleep = Duration::from_millis(100); // --max-error-sleep-time
    let cert = Cert::self_signed(&[HOSTNAME]);
    let [tls_cert, cert_path, tls_key, key_path] = cert.args();
    let server = Server::start(&[
        tls_cert,
        cert_path,
        tls_key,
        key_path,
        "--user",
        "user:right",
        "--auth-failure-limit",
        "40/hour",
        "--error-sleep-time",
        "0.02",
        "--max-error-sleep-time",
        "0.1",
        "--limit-exceptions",
        "none",
    ]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone().into()).unwrap();
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );

    let start = Instant::now();
    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|n| {
            let (tls, addr) = (tls.clone(), server.addr);
            std::thread::spawn(move || {
                let mut c = TlsClient::start(Client::connect_from("127.0.0.1", addr), &tls);
                let replies: Vec<String> = (0..TRIES)
                    .map(|t| c.cmd(&auth_plain("user", &format!("guess-{n}-{t}"))))
                    .collect();
                let closing = c.reply();
                (replies, closing)
            })
        })
        .collect();
    let mut replies = Vec::new();
    for attacker in attackers {
        let (theirs, closing) = attacker.join().unwrap();
        assert_eq!(
            closing.as_deref(),
            Some(format!("421 4.7.0 {HOSTNAME} Error: too many errors\r\n").as_str())
        );
        replies.extend(theirs);
    }
    let elapsed = start.elapsed();

    let wrong = "535 5.7.8 Authentication credentials invalid\r\n";
    let refused = "454 4.7.0 Too many authentication failures from 127.0.0.1, try again later\r\n";
    let count = |r: &str| replies.iter().filter(|x| *x == r).count();
    assert_eq!(
        count(wrong),
        ALLOWED,
        "the limiter lets 40 failures through"
    );
    assert_eq!(
        count(refused),
        CONNECTIONS * TRIES - ALLOWED,
        "and refuses the rest"
    );

    // Each connection's errors 11..=20 waited step × 1..=10 (at most the maximum), one after
    // the other; each refusal waited one step in its handler. The connections ran at once, so
    // the slowest took at least the average.
    let per_connection: Duration = (1..=10u32).map(|k| (sleep * k).min(max_sleep)).sum();
    let refusals = sleep * (CONNECTIONS * TRIES - ALLOWED) as u32;
    let bound = (per_connection * CONNECTIONS as u32 + refusals) / CONNECTIONS as u32;
    eprintln!("200 wrong passwords over 10 connections: {elapsed:?} (lower bound {bound:?})");
    assert!(
        elapsed >= bound.mul_f64(0.8),
        "{elapsed:?} is less than the delays configured ({bound:?})"
    );

    // The address is refused even with the right password; another address logs in.
    let mut locked = TlsClient::start(Client::connect_from("127.0.0.1", server.addr), &tls);
    assert_eq!(locked.cmd(&auth_plain("user", "right")), refused);
    let mut other = TlsClient::start(Client::connect_from("127.0.0.2", server.addr), &tls);
    assert_eq!(
        other.cmd(&auth_plain("user", "right")),
        "235 2.7.0 Authentication successful\r\n"
    );
}

#[test]
fn an_early_talker_is_refused_with_554_and_a_patient_client_is_greeted() {
    let server = Server::start(&["--greeting-delay", "0.5", "--reject-early-talkers"]);
    let mut talker = Client::connect(server.addr);
    talker.send("EHLO hasty.example\r\n");
    assert_eq!(
        String::from_utf8(talker.read_to_close()).unwrap(),
        format!("554 5.5.1 {HOSTNAME} Error: talking before the greeting\r\n")
    );
    let start = Instant::now();
    let mut patient = Client::connect(server.addr);
    assert_eq!(patient.reply(), greeting());
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(patient.cmd("EHLO patient.example").starts_with("250-"));
    let ends = server.wait_events("disconnect", 1);
    assert_eq!(ends[0]["connection"]["earlytalker"], true, "{ends:?}");
}

#[test]
fn an_unauthorised_pipeliner_is_refused_with_554() {
    let server = Server::start(&["--reject-unauth-pipelining"]);
    let mut c = Client::connect(server.addr);
    assert_eq!(c.reply(), greeting());
    // HELO offers no PIPELINING: a command in the same packet is unauthorised.
    c.send("HELO rushed.example\r\nMAIL FROM:<a@x.example>\r\n");
    assert_eq!(
        String::from_utf8(c.read_to_close()).unwrap(),
        format!("554 5.5.0 {HOSTNAME} Error: improper use of SMTP command pipelining\r\n")
    );
    // Lawful pipelining after EHLO still passes.
    let mut c = Client::hello(server.addr);
    c.send("MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n");
    assert!(c.reply().starts_with("250 "));
    assert!(c.reply().starts_with("250 "));
    assert!(c.reply().starts_with("354"));
    c.send("Subject: lawful\r\n\r\nhi\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0"));
}

/// Sends `bytes` one at a time, `every` apart, until the server answers; returns the answer
/// and how long it took. Bounded by `bytes`.
fn trickle(c: &mut Client, bytes: &[u8], every: Duration) -> (String, Duration) {
    c.stream.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    for b in bytes {
        // A write may fail once the server closed; the answer is read below.
        let _ = c.stream.write_all(&[*b]);
        std::thread::sleep(every);
        let mut chunk = [0u8; 512];
        match c.stream.read(&mut chunk) {
            Ok(n) if n > 0 => {
                got.extend_from_slice(&chunk[..n]);
                break;
            }
            _ => {}
        }
    }
    c.stream.set_nonblocking(false).unwrap();
    let elapsed = start.elapsed();
    got.extend(c.read_to_close());
    (String::from_utf8(got).unwrap(), elapsed)
}

#[test]
fn a_client_trickling_message_data_is_cut_at_the_minimum_data_rate() {
    let server = Server::start(&["--min-data-rate", "500", "--min-data-rate-grace", "1"]);
    let mut c = Client::hello(server.addr);
    assert!(c.cmd("MAIL FROM:<a@x.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@y.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    // 10 bytes a second, for 10 seconds at most; each read restarts the idle timeout.
    let (answer, took) = trickle(&mut c, &[b'x'; 100], Duration::from_millis(100));
    assert_eq!(
        answer,
        format!("421 4.4.2 {HOSTNAME} Error: minimum data rate not met\r\n")
    );
    assert!(
        took >= Duration::from_secs(1),
        "cut within the grace: {took:?}"
    );
    assert!(server.stored().is_empty());
}

#[test]
fn a_client_trickling_a_command_is_cut_at_the_command_deadline() {
    let server = Server::start(&["--command-deadline", "1"]);
    let mut c = Client::hello(server.addr);
    let (answer, took) = trickle(&mut c, &[b'N'; 50], Duration::from_millis(100));
    assert_eq!(
        answer,
        format!("421 4.4.2 {HOSTNAME} Error: timeout exceeded\r\n")
    );
    assert!(
        took >= Duration::from_secs(1),
        "cut before the deadline: {took:?}"
    );
}

/// A local test suite or content filter opens 200 connections at once from 127.0.0.1:
/// loopback is exempt by default, so all are greeted under --max-connections-per-ip 50;
/// with `--limit-exceptions none` the 51st reads 421.
#[test]
fn loopback_is_exempt_from_the_per_client_limit_by_default() {
    let open = |server: &Server, n: usize| -> Vec<(Client, String)> {
        (0..n)
            .map(|_| {
                let mut c = Client::connect(server.addr);
                let first = c.reply();
                (c, first)
            })
            .collect()
    };
    let exempt = Server::start(&["--max-connections-per-ip", "50"]);
    let held = open(&exempt, 200);
    assert!(held.iter().all(|(_, first)| *first == greeting()));
    drop(held);

    let counted = Server::start(&[
        "--max-connections-per-ip",
        "50",
        "--limit-exceptions",
        "none",
    ]);
    let held = open(&counted, 51);
    assert!(held[..50].iter().all(|(_, first)| *first == greeting()));
    assert_eq!(held[50].1, too_many_from("127.0.0.1"));
}

/// Exactly one disconnect line per connection, whatever ended it: refused at the global
/// limit, at the per-client limit, as an early talker, or served to its QUIT. Each refusal's
/// line carries the reply that says which limit.
#[test]
fn every_connection_has_one_disconnect_line_refused_ones_included() {
    let server = Server::start(&[
        "--max-connections",
        "4",
        "--max-connections-per-ip",
        "2",
        "--limit-exceptions",
        "none",
        "--greeting-delay",
        "0.2",
        "--reject-early-talkers",
    ]);
    let mut hasty = Client::connect_from("127.0.0.4", server.addr);
    hasty.send("EHLO hasty.example\r\n");
    let early = format!("554 5.5.1 {HOSTNAME} Error: talking before the greeting\r\n");
    assert_eq!(String::from_utf8(hasty.read_to_close()).unwrap(), early);
    drop(hasty);
    server.wait_events("disconnect", 1);
    // Its place is given back as its task ends, just after its line.
    std::thread::sleep(Duration::from_millis(100));
    let greeted = |source: &str| {
        let mut c = Client::connect_from(source, server.addr);
        assert_eq!(c.reply(), greeting());
        c
    };
    let mut held = vec![
        greeted("127.0.0.1"),
        greeted("127.0.0.1"),
        greeted("127.0.0.2"),
    ];
    let mut third_from_one = Client::connect_from("127.0.0.1", server.addr);
    assert_eq!(
        String::from_utf8(third_from_one.read_to_close()).unwrap(),
        too_many_from("127.0.0.1")
    );
    held.push(greeted("127.0.0.5"));
    let mut fifth = Client::connect_from("127.0.0.3", server.addr);
    assert_eq!(
        String::from_utf8(fifth.read_to_close()).unwrap(),
        format!("421 4.7.0 {HOSTNAME} Error: too many connections\r\n")
    );
    for c in &mut held {
        assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    }
    let connections = 7;
    let lines = server.wait_events("disconnect", connections);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.events("disconnect").len(), connections, "{lines:#?}");
    let reply_of = |ip: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["connection"]["remoteip"] == ip)
            .map(|l| {
                let reply = &l["arguments"]["reply"];
                format!("{} {}", reply["code"], reply["reason"][0].as_str().unwrap())
            })
            .collect()
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        reply_of("127.0.0.4"),
        [format!("554 {HOSTNAME} Error: talking before the greeting")]
    );
    assert_eq!(
        sorted(reply_of("127.0.0.1")),
        [
            "221 Bye".to_string(),
            "221 Bye".to_string(),
            format!("421 {HOSTNAME} Error: too many connections from 127.0.0.1"),
        ]
    );
    assert_eq!(reply_of("127.0.0.2"), ["221 Bye"]);
    assert_eq!(reply_of("127.0.0.5"), ["221 Bye"]);
    assert_eq!(
        reply_of("127.0.0.3"),
        [format!("421 {HOSTNAME} Error: too many connections")]
    );
}
