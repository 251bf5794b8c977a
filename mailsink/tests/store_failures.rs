//! When the Maildir cannot take a message: MAIL FROM is refused with `452 4.3.1` below one
//! and a half times the largest message of free space (Postfix's rule), a store that fails
//! is `451 4.3.0`, neither counts toward the client's error limit, and a message that ends
//! without being stored leaves no file in `tmp/`. Files a crash left in `tmp/` go at start
//! once older than 36 hours.
//!
//! The full-disk test mounts a 2 MiB tmpfs over the Maildir: it needs root (CI runs as root)
//! and fails, rather than skips, without it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{Client, Server, WAIT};

const STORE_FAILED: &str = "451 4.3.0 Could not store the message, try again later\r\n";
const NO_SPACE: &str = "452 4.3.1 Insufficient system storage\r\n";

fn tmp_files(maildir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(maildir.join("tmp"))
        .map(|dir| dir.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// A message of about `len` octets, CRLF lines.
fn message(subject: &str, len: usize) -> Vec<u8> {
    let mut body = format!("Subject: {subject}\r\n\r\n").into_bytes();
    while body.len() < len {
        body.extend_from_slice(b"0123456789 the quick brown fox jumps over the lazy dog\r\n");
    }
    body
}

/// The client's own errors still count: the 20th bad command is answered, then cut.
fn cut_at_the_twentieth_error(c: &mut Client) {
    for _ in 0..20 {
        assert_eq!(c.cmd("BOGUS"), "500 5.5.1 Command unrecognized\r\n");
    }
    assert_eq!(c.reply(), "421 4.7.0 mx.test Error: too many errors\r\n");
    assert!(c.read_to_close().is_empty());
}

#[test]
fn a_failed_store_is_451_and_does_not_count_toward_the_error_limit() {
    let server = Server::start(&[]);
    let tmp = server.maildir().join("tmp");
    std::fs::remove_dir(&tmp).unwrap();
    std::fs::write(&tmp, b"tmp/ is a file now: nothing can be written").unwrap();
    let mut c = Client::hello(server.addr);
    // More failed stores than the error limit (20), small (kept in memory, then written at
    // the end) and large (written as they come).
    for i in 0..25 {
        let len = if i % 2 == 0 { 100 } else { 100_000 };
        let reply = c.send_message("a@x.example", &["b@y.example"], &message("lost", len));
        assert_eq!(reply, STORE_FAILED, "message {i}");
    }
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK\r\n");
    cut_at_the_twentieth_error(&mut c);
    assert!(server.stored_files().is_empty());
    assert!(server.events("message").is_empty());
}

#[test]
fn mail_from_is_refused_with_452_when_free_space_is_under_one_and_a_half_messages() {
    // No disk here has 1.5 PB free.
    let server = Server::start(&["--max-message-size", "1000000000000000"]);
    let mut c = Client::hello(server.addr);
    for _ in 0..25 {
        assert_eq!(c.cmd("MAIL FROM:<a@x.example>"), NO_SPACE);
    }
    assert_eq!(
        c.cmd("RCPT TO:<b@y.example>"),
        "503 5.5.1 Need MAIL command first\r\n"
    );
    // That 503 is the client's first error of its own.
    for _ in 0..18 {
        assert_eq!(c.cmd("BOGUS"), "500 5.5.1 Command unrecognized\r\n");
    }
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK\r\n");
    assert_eq!(c.cmd("BOGUS"), "500 5.5.1 Command unrecognized\r\n");
    assert_eq!(c.reply(), "421 4.7.0 mx.test Error: too many errors\r\n");
}

/// A tmpfs mounted for the length of a test; unmounted (lazily: the server may still hold
/// a file) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test fills a {size} tmpfs mounted over the Maildir: run it as root"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with `dir/filler`, then frees `keep` bytes of it.
fn fill(dir: &Path, keep: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![b'f'; 16 * 1024];
    let mut written = 0u64;
    while file.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = file.flush();
    file.set_len(written.saturating_sub(keep)).unwrap();
    path
}

#[test]
fn a_full_disk_refuses_the_message_with_451_then_mail_with_452_until_space_returns() {
    let server = Server::start(&["--max-message-size", "1048576"]);
    let maildir = server.maildir();
    let _tmpfs = Tmpfs::mount(&maildir, "2m");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir(maildir.join(sub)).unwrap();
    }
    // 2 MiB free: enough for a transaction (1.5 MiB for a 1 MiB message).
    let mut c = Client::hello(server.addr);
    assert_eq!(c.cmd("MAIL FROM:<a@x.example>"), "250 2.1.0 Sender OK\r\n");
    assert!(c.cmd("RCPT TO:<b@y.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    // Meanwhile something else fills the disk, leaving 100 KiB.
    let filler = fill(&maildir, 100 * 1024);
    let big = message("does not fit", 600 * 1024);
    c.send(common::dot_stuff(&big));
    c.send(".\r\n");
    assert_eq!(c.reply(), STORE_FAILED);
    assert!(tmp_files(&maildir).is_empty(), "{:?}", tmp_files(&maildir));
    assert!(server.stored_files().is_empty());
    // Now MAIL FROM says why, and the client is not cut for retrying.
    for _ in 0..25 {
        assert_eq!(c.cmd("MAIL FROM:<a@x.example>"), NO_SPACE);
    }
    std::fs::remove_file(filler).unwrap();
    let reply = c.send_message("a@x.example", &["b@y.example"], &big);
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let stored = server.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, big);
}

#[test]
fn a_message_that_ends_unstored_leaves_no_file_in_tmp() {
    let server = Server::start(&["--max-message-size", "200000"]);
    let maildir = server.maildir();
    let wait_tmp_empty = || {
        let start = Instant::now();
        while !tmp_files(&maildir).is_empty() {
            assert!(start.elapsed() < WAIT, "{:?}", tmp_files(&maildir));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut c = Client::hello(server.addr);
    // Too big: 552 at the end, and what was written goes.
    let reply = c.send_message("a@x.example", &["b@y.example"], &message("big", 300_000));
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    wait_tmp_empty();
    // BDAT chunks, then RSET.
    assert!(c.cmd("MAIL FROM:<a@x.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@y.example>").starts_with("250"));
    let chunk = message("chunked", 100_000);
    c.send(format!("BDAT {}\r\n", chunk.len()));
    c.send(&chunk);
    assert!(c.reply().starts_with("250"));
    assert_eq!(tmp_files(&maildir).len(), 1, "the chunk is on disk");
    assert_eq!(c.cmd("RSET"), "250 2.0.0 OK\r\n");
    wait_tmp_empty();
    // The client goes away mid-DATA.
    assert!(c.cmd("MAIL FROM:<a@x.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@y.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(message("cut", 100_000));
    let start = Instant::now();
    while tmp_files(&maildir).is_empty() {
        assert!(start.elapsed() < WAIT, "the message never reached tmp/");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(c);
    server.wait_events("disconnect", 1);
    wait_tmp_empty();
    assert!(server.stored_files().is_empty());
}

#[test]
fn files_in_tmp_older_than_36_hours_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    std::fs::create_dir_all(maildir.join("tmp")).unwrap();
    let now = SystemTime::now();
    for (name, hours) in [("crashed-long-ago", 40), ("still-being-written", 1)] {
        let file = std::fs::File::create(maildir.join("tmp").join(name)).unwrap();
        file.set_modified(now - Duration::from_secs(hours * 3600))
            .unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailsink"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--hostname",
            "mx.test",
            "--maildir",
        ])
        .arg(&maildir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let started = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("listening on") => break true,
            Some(Ok(line)) => seen.push(line),
            _ => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "{seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.contains("removed 1 file(s) older than 36 hours")),
        "{seen:?}"
    );
    let left: Vec<_> = tmp_files(&maildir)
        .into_iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["still-being-written"]);
}
