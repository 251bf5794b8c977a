//! Durability (a 250 means the message survives a crash from that instant): mailsink is
//! killed with SIGKILL while twenty clients send to it at once, at three different points;
//! every message it answered 250 is in `new/`, whole, and nothing in `new/` is partial.
//! Messages that finish together share one sync of `new/` (group commit), counted by
//! `--metrics`. With `--durability journal` a 250 means the message is synced in the
//! journal: after the kill, a restart delivers every such message into `new/`, whole and
//! once, before it serves; a record the kill cut short is never delivered.

mod common;
#[path = "common/scrape.rs"]
mod scrape;

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
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
    let len = if n.is_multiple_of(3) { 100_000 } else { 300 };
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
fn kill_under_load(kill_after: usize, args: &[&str]) -> (Vec<String>, Server) {
    let mut args = args.to_vec();
    args.extend(["--max-connections-per-ip", "0"]);
    let server = Server::start(&args);
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
    kill(&server);
    let answered = clients
        .into_iter()
        .flat_map(|client| client.join().unwrap())
        .collect();
    (answered, server)
}

fn kill(server: &Server) {
    let killed = Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// Starts mailsink with the journal on `maildir` and stops it (SIGKILL) once it listens:
/// it delivers what the journal holds before it listens.
fn restart(maildir: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailsink"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--hostname",
            "mx.test",
            "--no-dns",
        ])
        .args(["--durability", "journal", "--maildir"])
        .arg(maildir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let listening = line.contains("listening on");
        said.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        said.last().is_some_and(|l| l.contains("listening on")),
        "mailsink did not start again: {said:?}"
    );
}

/// Every file in `new/` is a whole message sent once; every message `answered` 250 is
/// there.
fn assert_all_there_once(answered: &[String], server: &Server, what: &str) {
    let mut in_new = HashSet::new();
    for (path, stored) in server.stored_files() {
        let (subject, expected) = sent_as(&stored);
        assert!(
            after_trace(&stored) == expected.as_slice(),
            "{} is not whole ({} bytes)",
            path.display(),
            stored.len()
        );
        assert!(in_new.insert(subject.clone()), "{subject} is in new/ twice");
    }
    let lost: Vec<_> = answered.iter().filter(|s| !in_new.contains(*s)).collect();
    assert!(
        lost.is_empty(),
        "{what}: {} of {} messages answered 250 are not in new/: {lost:?}",
        lost.len(),
        answered.len()
    );
}

#[test]
fn every_message_answered_250_is_whole_in_new_after_sigkill_under_load() {
    for kill_after in [25, 150, 400] {
        let (answered, server) = kill_under_load(kill_after, &[]);
        assert!(answered.len() >= kill_after);
        assert_all_there_once(&answered, &server, &format!("killed after {kill_after}"));
    }
}

/// The same with the journal: small messages go through it, the 100 kB ones the fsync
/// way; after the kill a restart delivers what the journal holds.
#[test]
fn with_the_journal_every_message_answered_250_is_in_new_once_after_sigkill_and_restart() {
    for kill_after in [25, 150, 400] {
        let (answered, server) = kill_under_load(kill_after, &["--durability", "journal"]);
        assert!(answered.len() >= kill_after);
        restart(&server.maildir());
        assert_all_there_once(&answered, &server, &format!("killed after {kill_after}"));
    }
}

/// Messages synced in the journal but not yet delivered (`new/` is a file, so the
/// deliverer cannot rename into it) when mailsink is killed; a torn record at the
/// journal's end, as a kill during a write leaves. The restart delivers each message
/// answered 250 exactly once, whole, and nothing of the torn record; a second restart
/// delivers nothing more.
#[test]
fn a_kill_between_the_journals_sync_and_delivery_loses_nothing_and_delivers_once() {
    let server = Server::start(&["--durability", "journal"]);
    let new = server.maildir().join("new");
    std::fs::remove_dir(&new).unwrap();
    std::fs::write(&new, "").unwrap();
    let mut client = Client::hello(server.addr);
    let mut answered = Vec::new();
    // Small messages only (n not a multiple of 3): the large ones are not journalled.
    for n in (1..30).filter(|n: &usize| !n.is_multiple_of(3)) {
        let reply = client.send_message("a@x.example", &["b@y.example"], &message(0, n));
        assert!(reply.starts_with("250 "), "{reply}");
        answered.push(format!("durable 0-{n}"));
    }
    kill(&server);
    let journal = server.maildir().join("journal");
    let mut segments: Vec<_> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a journal segment");
    assert!(std::fs::metadata(last).unwrap().len() > 0);
    // A record that says 500 bytes follow, of which 12 were written.
    let mut torn = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    torn.write_all(b"MSJ1\xf4\x01\x00\x00\x00\x00\x00\x00\x00\x04\x00torn.M1P1Q1")
        .unwrap();
    drop(torn);
    std::fs::remove_file(&new).unwrap();
    std::fs::create_dir(&new).unwrap();
    restart(&server.maildir());
    assert_eq!(server.stored_files().len(), answered.len());
    assert_all_there_once(&answered, &server, "restarted");
    restart(&server.maildir());
    assert_eq!(server.stored_files().len(), answered.len());
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
