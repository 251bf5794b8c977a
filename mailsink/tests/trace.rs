//! `mailsink --trace-socket` and `mailsink trace`: from a second process, watch the live
//! dialogue of the connections from one client address, while the server keeps running.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Server, HOSTNAME, WAIT};

/// `mailsink trace` running, its stdout collected line by line; killed on drop.
struct Watcher {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    fn start(socket: &std::path::Path, filter: &str) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailsink"))
            .args(["trace", "--socket"])
            .arg(socket)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mailsink trace");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Watcher { child, lines }
    }

    /// Waits until a line contains `needle`; all lines so far.
    fn wait_for(&self, needle: &str) -> Vec<String> {
        let start = Instant::now();
        loop {
            let lines = self.lines.lock().unwrap().clone();
            if lines.iter().any(|l| l.contains(needle)) {
                return lines;
            }
            assert!(start.elapsed() < WAIT, "no {needle:?} in {lines:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each line of a reply as the trace shows it.
fn replied(reply: &str) -> Vec<String> {
    reply.lines().map(|l| format!("> {l}")).collect()
}

#[test]
fn a_second_process_watches_one_clients_dialogue_live() {
    let server = Server::start(&["--trace-socket", "trace.sock"]);
    let socket = server.dir.path().join("trace.sock");
    // Open before the watcher comes: its later lines are traced all the same.
    let mut early = Client::connect_from("127.0.0.2", server.addr);
    assert_eq!(early.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
    let mut expected = Vec::new();

    let watcher = Watcher::start(&socket, "127.0.0.2");
    watcher.wait_for("tracing the SMTP dialogue of 127.0.0.2/32");

    let mut other = Client::connect_from("127.0.0.3", server.addr);
    other.reply();
    assert!(other.cmd("EHLO other.example").starts_with("250"));
    for (command, shown) in [
        ("EHLO watched.example", "EHLO watched.example"),
        ("MAIL FROM:<a@x.example>", "MAIL FROM:<a@x.example>"),
        ("RCPT TO:<b@y.example>", "RCPT TO:<b@y.example>"),
        ("DATA", "DATA"),
    ] {
        expected.push(format!("< {shown}"));
        expected.extend(replied(&early.cmd(command)));
    }
    let body = "Subject: watched\r\n\r\nnot in the trace\r\n";
    early.send(format!("{body}.\r\n"));
    expected.push(format!("< [message data, {} bytes]", body.len()));
    expected.push("< .".into());
    expected.extend(replied(&early.reply()));
    expected.push("< QUIT".into());
    expected.extend(replied(&early.cmd("QUIT")));
    assert_eq!(other.cmd("QUIT"), "221 2.0.0 Bye\r\n");

    let lines = watcher.wait_for("221 2.0.0 Bye");
    let traced: Vec<&String> = lines.iter().skip(1).collect();
    let id = traced[0].split(' ').next().unwrap().to_string();
    let mut shown = Vec::new();
    for line in &traced {
        let rest = line
            .strip_prefix(&format!("{id} 127.0.0.2 "))
            .unwrap_or_else(|| panic!("not the watched connection: {line}"));
        shown.push(rest.to_string());
    }
    assert_eq!(shown, expected);
    assert!(!lines.iter().any(|l| l.contains("other.example")));
    assert!(!lines.iter().any(|l| l.contains("not in the trace")));

    // The server goes on without its watcher.
    drop(watcher);
    let mut after = Client::connect(server.addr);
    assert_eq!(after.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
}

#[test]
fn a_bad_filter_is_refused_and_a_missing_socket_is_an_error() {
    let server = Server::start(&["--trace-socket", "trace.sock"]);
    let socket = server.dir.path().join("trace.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_mailsink"))
        .args(["trace", "--socket"])
        .arg(&socket)
        .arg("mx.example")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let missing = Command::new(env!("CARGO_BIN_EXE_mailsink"))
        .args(["trace", "--socket"])
        .arg(server.dir.path().join("nothing.sock"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nothing.sock"));
}
