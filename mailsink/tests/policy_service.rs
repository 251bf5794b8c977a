//! `--policy-service`: a real postgrey greylisting at RCPT (450 first, 250 after its delay,
//! on connections mailsink keeps), and services that hang or answer garbage, which take
//! `--policy-service-default-action` while mailsink keeps serving.

mod common;
#[path = "common/scrape.rs"]
mod scrape;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{Client, Server};
use smtp_session_testkit::daemons;

const MESSAGE: &[u8] = b"From: alice@example.org\r\nSubject: greylisted\r\n\r\nHello.\r\n";
const DELAY: u64 = 2;

#[test]
fn postgrey_defers_the_first_attempt_and_lets_the_retry_through() {
    let dir = tempfile::tempdir().unwrap();
    let postgrey = daemons::postgrey(dir.path(), DELAY);
    let addr = postgrey.inet();
    let server = Server::start(&["--policy-service", &addr]);
    let mut client = Client::hello(server.addr);
    assert!(client
        .cmd("MAIL FROM:<alice@example.org>")
        .starts_with("250"));
    let first = client.cmd("RCPT TO:<bob@example.com>");
    assert!(first.starts_with("450 4.2.0 Greylisted"), "{first}");
    assert!(client.cmd("RSET").starts_with("250"));

    std::thread::sleep(Duration::from_secs(DELAY + 1));
    let reply = client.send_message("alice@example.org", &["bob@example.com"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    let stored = server.stored();
    assert_eq!(stored.len(), 1);
    // postgrey's PREPEND, right below mailsink's trace fields.
    let message = String::from_utf8_lossy(&stored[0].1).into_owned();
    assert!(message.starts_with("X-Greylist: delayed "), "{message}");
    assert!(
        message.ends_with("\r\nFrom: alice@example.org\r\nSubject: greylisted\r\n\r\nHello.\r\n"),
        "{message}"
    );
}

/// A service answering every request with `action`, on one connection after another.
fn answering(action: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    request.extend_from_slice(&buf[..n]);
                    if request.ends_with(b"\n\n") {
                        request.clear();
                        let _ = stream.write_all(format!("action={action}\n\n").as_bytes());
                    }
                }
            });
        }
    });
    format!("inet:127.0.0.1:{port}")
}

#[test]
fn discard_hold_and_reject_act_on_the_message_or_the_recipient() {
    let server = Server::start(&["--policy-service", &answering("DISCARD spam trap")]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.org", &["bob@example.com"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(server.stored_files().is_empty());

    let server = Server::start(&["--policy-service", &answering("HOLD look at this")]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.org", &["bob@example.com"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(server.stored_files().is_empty());
    let held = std::fs::read_dir(server.maildir().join(".Quarantine/new"))
        .unwrap()
        .count();
    assert_eq!(held, 1);

    let server = Server::start(&[
        "--policy-service",
        &answering("REJECT 5.7.1 no such user here"),
    ]);
    let mut client = Client::hello(server.addr);
    assert!(client
        .cmd("MAIL FROM:<alice@example.org>")
        .starts_with("250"));
    assert_eq!(
        client.cmd("RCPT TO:<bob@example.com>"),
        "554 5.7.1 no such user here\r\n"
    );

    let server = Server::start(&["--policy-service", &answering("REDIRECT carol@example.com")]);
    let mut client = Client::hello(server.addr);
    assert!(client
        .cmd("MAIL FROM:<alice@example.org>")
        .starts_with("250"));
    assert_eq!(
        client.cmd("RCPT TO:<bob@example.com>"),
        "451 4.3.5 Server configuration problem\r\n"
    );
}

/// A fake service: each connection is handled by `serve` in a thread.
fn broken_service(serve: fn(TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    format!("inet:127.0.0.1:{port}")
}

fn hangs(_stream: TcpStream) {
    std::thread::sleep(Duration::from_secs(30));
}

fn garbage(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf);
    let _ = stream.write_all(b"this is not an attribute\n\n");
}

#[test]
fn a_broken_service_gets_the_default_action_and_mailsink_keeps_serving() {
    for (name, serve) in [("hangs", hangs as fn(TcpStream)), ("garbage", garbage)] {
        let addr = broken_service(serve);
        let server = Server::start(&["--policy-service", &addr, "--policy-service-timeout", "1"]);
        let mut client = Client::hello(server.addr);
        assert!(client
            .cmd("MAIL FROM:<alice@example.org>")
            .starts_with("250"));
        for _ in 0..2 {
            let reply = client.cmd("RCPT TO:<bob@example.com>");
            assert!(reply.starts_with("451 4.3.5 "), "{name}: {reply}");
        }
        assert!(client.cmd("NOOP").starts_with("250"), "{name}");

        let server = Server::start(&[
            "--policy-service",
            &addr,
            "--policy-service-timeout",
            "1",
            "--policy-service-default-action",
            "dunno",
        ]);
        let mut client = Client::hello(server.addr);
        let reply = client.send_message("alice@example.org", &["bob@example.com"], MESSAGE);
        assert!(reply.starts_with("250 "), "{name}: {reply}");
        assert_eq!(server.stored().len(), 1, "{name}");
    }
}
