//! Durability (a 250 means the message survives a crash from that instant): mailsink is
//! killed with SIGKILL while twenty clients send to it at once, at three different points;
//! every message it answered 250 is in `new/`, whole, and nothing in `new/` is partial.
//! Messages that finish together share one sync of `new/` (group commit), counted by
//! `--metrics`.

mod common;
#[path = "common/scrape.rs"]
mod scrape;

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::{after_trace, dot_stuff, Client, Server, WAIT};
use scrape::{free_port, scrape_until};

const CLIENTS: usize = 20;

/// Message `n` of client `client`: every third one 100 kB, so that it is written to `tmp/`
/// as it arrives; the others small enough to be written at the end in one go.
fn message(client: usize, n: usize) -> Vec<u8> {
    let mut body = format!("Subject: durable {client}-{n}\r\n\r\n").into_bytes();
    let len = if n % 3 == 0 { 100_000 } else { 300 };
    while body.len() < len {
        body.extend_from_slice(b"the quick brown fox jumps over the lazy dog .\r\n");
    }
    body
}

/// A client that tolerates the server vanishing: every call is an `io::Result`.
struct Sender {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Sender {
    fn hello(addr: SocketAddr) -> io::Result<Sender> {
        let stream = TcpStream::connect_timeout(&addr, WAIT)?;
        stream.set_read_timeout(Some(WAIT))?;
        let mut sender = Sender {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        };
        sender.expect("", "220")?;
        sender.expect("EHLO client.example\r\n", "250")?;
        Ok(sender)
    }

    /// Sends `bytes`, reads one reply (all its lines), and checks its code.
    fn expect(&mut self, bytes: &str, code: &str) -> io::Result<()> {
        self.writer.write_all(bytes.as_bytes())?;
        self.expect_reply(code)
    }

    fn expect_reply(&mut self, code: &str) -> io::Result<()> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            return match line.starts_with(code) {
                true => Ok(()),
                false => Err(io::Error::other(format!("expected {code}, got {line:?}"))),
            };
        }
    }

    /// One whole transaction; Ok once the message is answered 250.
    fn send(&mut self, body: &[u8]) -> io::Result<()> {
        self.expect("MAIL FROM:<a@x.example>\r\n", "250")?;
        self.expect("RCPT TO:<b@y.example>\r\n", "250")?;
        self.expect("DATA\r\n", "354")?;
        self.writer.write_all(&dot_stuff(body))?;
        self.expect(".\r\n", "250")
    }
}

/// Sends client `client`'s messages one after another until the server goes away (or
/// the bound); returns the subjects of those answered 250.
fn send_until_gone(addr: SocketAddr, client: usize, acked: &AtomicUsize) -> Vec<String> {
    let mut answered = Vec::new();
    let Ok(mut sender) = Sender::hello(addr) else {
        return answered;
    };
    for n in 0..10_000 {
        if sender.send(&message(client, n)).is_err() {
            break;
        }
        answered.push(format!("durable {client}-{n}"));
        acked.fetch_add(1, Ordering::Relaxed);
    }
    answered
}

/// `Subject: durable C-N` of a stored message, and the message it must be exactly.
fn sent_as(stored: &[u8]) -> (String, Vec<u8>) {
    let first = after_trace(stored).split(|&b| b == b'\r').next().unwrap();
    let subject = String::from_utf8_lossy(first)
        .strip_prefix("Subject: ")
        .unwrap_or_else(|| panic!("not a test message: {:?}", String::from_utf8_lossy(first)))
        .to_string();
    let (client, n) = subject["durable ".len()..].split_once('-').unwrap();
    (
        subject.clone(),
        message(client.parse().unwrap(), n.parse().unwrap()),
    )
}

/// Twenty clients send until `kill_after` messages have been answered 250 in all; then
/// SIGKILL. Returns what was answered and the server (dead, its Maildir still there).
fn kill_under_load(kill_after: usize) -> (Vec<String>, Server) {
    let server = Server::start(&["--max-connections-per-ip", "0"]);
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (addr, acked) = (server.addr, acked.clone());
            std::thread::spawn(move || send_until_gone(addr, client, &acked))
        })
        .collect();
    let start = Instant::now();
    while acked.load(Ordering::Relaxed) < kill_after {
        assert!(
            start.elapsed() < WAIT,
            "only {acked:?} messages in {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let killed = Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let answered = clients
        .into_iter()
        .flat_map(|client| client.join().unwrap())
        .collect();
    (answered, server)
}

#[test]
fn every_message_answered_250_is_whole_in_new_after_sigkill_under_load() {
    for kill_after in [25, 150, 400] {
        let (answered, server) = kill_under_load(kill_after);
        assert!(answered.len() >= kill_after);
        let mut in_new = HashSet::new();
        for (path, stored) in server.stored_files() {
            let (subject, expected) = sent_as(&stored);
            assert!(
                after_trace(&stored) == expected.as_slice(),
                "{} is not whole ({} bytes)",
                path.display(),
                stored.len()
            );
            in_new.insert(subject);
        }
        let lost: Vec<_> = answered.iter().filter(|s| !in_new.contains(*s)).collect();
        assert!(
            lost.is_empty(),
            "killed after {kill_after}: {} of {} messages answered 250 are not in new/: {lost:?}",
            lost.len(),
            answered.len()
        );
    }
}

/// Forty clients finish their messages at once, with a window of 50 ms: all are stored,
/// with fewer syncs of `new/` than messages.
#[test]
fn messages_that_finish_together_share_syncs_of_new() {
    const MESSAGES: usize = 40;
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let server = Server::start(&[
        "--metrics",
        &metrics,
        "--max-connections-per-ip",
        "0",
        "--group-commit-window",
        "50000",
    ]);
    let ready = Arc::new(Barrier::new(MESSAGES));
    let replies = Arc::new(Mutex::new(BTreeMap::new()));
    let clients: Vec<_> = (0..MESSAGES)
        .map(|client| {
            let (addr, ready, replies) = (server.addr, ready.clone(), replies.clone());
            std::thread::spawn(move || {
                let mut c = Client::hello(addr);
                assert!(c.cmd("MAIL FROM:<a@x.example>").starts_with("250"));
                assert!(c.cmd("RCPT TO:<b@y.example>").starts_with("250"));
                assert!(c.cmd("DATA").starts_with("354"));
                c.send(dot_stuff(&message(client, 1)));
                ready.wait();
                c.send(".\r\n");
                let reply = c.reply();
                replies.lock().unwrap().insert(client, reply);
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let replies = replies.lock().unwrap();
    assert_eq!(replies.len(), MESSAGES);
    for (client, reply) in replies.iter() {
        assert!(reply.starts_with("250 2.0.0"), "client {client}: {reply}");
    }
    assert_eq!(server.stored_files().len(), MESSAGES);
    let samples = scrape_until(port, "mailsink_messages_accepted_total", MESSAGES as f64);
    let syncs = samples["mailsink_maildir_syncs_total"];
    assert!(
        (1.0..MESSAGES as f64).contains(&syncs),
        "{MESSAGES} messages stored with {syncs} syncs of new/"
    );
}
