//! The tokio driver's duties seen from outside: backpressure while a hook is pending, and
//! TLS failures reported into the disconnect context.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Client, Options, Server};

fn with_policy(source: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, source).unwrap();
    let server = Server::start_with(Options {
        args: vec!["--policy".into(), path.to_str().unwrap().into()],
        env: vec![],
        implicit_tls: false,
    });
    (server, dir)
}

#[test]
fn a_pending_hook_stops_reading_from_the_client() {
    // The MAIL FROM handler takes three seconds.
    let (server, _dir) = with_policy(
        "kumo.on('smtp_server_mail_from', function(sender)\n  local t = os.clock() + 3\n  while os.clock() < t do end\nend)\n",
    );
    let mut c = Client::hello(server.addr);
    c.send("MAIL FROM:<slow@x.example>\r\n");
    c.stream
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let flood = "NOOP\r\n".repeat(64 * 1024 / 6);
    let start = Instant::now();
    let mut pushed = 0usize;
    while pushed < 128 << 20 && start.elapsed() < Duration::from_millis(2500) {
        match c.stream.write(flood.as_bytes()) {
            Ok(n) => pushed += n,
            Err(_) => break, // the write blocked: the server stopped reading
        }
    }
    // The session holds 64 KiB, the driver one read; the rest waits in kernel buffers.
    assert!(
        pushed < 48 << 20,
        "the client pushed {} MiB while the hook was pending",
        pushed >> 20
    );
}

#[test]
fn a_failed_starttls_handshake_is_a_tls_error_in_the_log() {
    let server = Server::start(&[]);
    let mut c = Client::hello(server.addr);
    assert!(c.cmd("STARTTLS").starts_with("220 2.0.0"));
    c.send("this is not a TLS ClientHello\r\n\r\n");
    let _ = c.read_to_close();
    let line = &server.wait_events("disconnect", 1)[0];
    assert_eq!(line["arguments"]["close"], "remote");
    assert_eq!(line["arguments"]["error"]["type"], "tls");
    assert_eq!(line["arguments"]["reply"]["state"], "STARTTLS");
    assert_eq!(line["connection"]["tls"], serde_json::Value::Null);
}

#[test]
fn plaintext_on_the_implicit_tls_port_is_a_tls_error() {
    let server = Server::start_with(Options {
        args: vec![],
        env: vec![],
        implicit_tls: true,
    });
    let mut c = Client::connect(server.tls_addr.unwrap());
    c.send("EHLO plaintext.example\r\n");
    // No greeting in plaintext: the TLS layer refuses (an alert at most), then closes.
    let bytes = c.read_to_close();
    assert!(!bytes.starts_with(b"220"), "{bytes:?}");
    let line = &server.wait_events("disconnect", 1)[0];
    assert_eq!(line["arguments"]["error"]["type"], "tls");
    assert_eq!(line["arguments"]["reply"], serde_json::Value::Null);
    assert_eq!(line["connection"]["serverid"], "smtps");
}

#[test]
fn a_client_that_never_reads_its_replies_is_dropped_after_the_timeout() {
    let server = Server::start(&["--timeout", "1"]);
    let mut c = Client::hello(server.addr);
    c.stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let flood = "NOOP\r\n".repeat(64 * 1024 / 6);
    let start = Instant::now();
    // Push commands and never read: replies pile up until the server cannot write.
    while start.elapsed() < Duration::from_secs(8) {
        match c.stream.write(flood.as_bytes()) {
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if !server.events("disconnect").is_empty() {
                    break;
                }
            }
            Err(_) => break, // reset by the server
        }
    }
    let line = &server.wait_events("disconnect", 1)[0];
    assert_eq!(line["arguments"]["close"], "remote");
    assert_eq!(line["arguments"]["error"]["type"], "socket");
    assert_eq!(
        line["arguments"]["error"]["reason"],
        "the client stopped reading"
    );
}

#[test]
fn a_flood_of_pipelined_commands_gets_every_reply() {
    // Far more replies than the session holds unpolled (64 KiB): it pauses, the driver
    // keeps what it could not take, and nothing is lost.
    const N: usize = 100_000;
    let server = Server::start(&[]);
    let mut c = Client::hello(server.addr);
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let batch = "NOOP\r\n".repeat(1000);
        for _ in 0..N / 1000 {
            writer.write_all(batch.as_bytes()).unwrap();
        }
        writer.write_all(b"QUIT\r\n").unwrap();
    });
    let replies = c.read_to_close();
    sender.join().unwrap();
    let text = String::from_utf8(replies).unwrap();
    assert_eq!(text.matches("250 2.0.0 OK\r\n").count(), N);
    assert!(
        text.ends_with("221 2.0.0 Bye\r\n"),
        "{}",
        &text[text.len() - 40..]
    );
}
