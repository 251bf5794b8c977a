//! The command line: --help, the defaults (127.0.0.1:2525, ./maildir), graceful shutdown.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Server, HOSTNAME, WAIT};

#[test]
fn help_documents_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_mailsink"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen <ADDR>",
        "--tls-listen <ADDR>",
        "--hostname <NAME>",
        "--maildir <DIR>",
        "--discard",
        "--policy <FILE.lua>",
        "--tls-cert <PEM>",
        "--tls-key <PEM>",
        "--user <NAME:PASSWORD>",
        "--max-message-size <BYTES>",
        "--max-recipients <N>",
        "--timeout <SECONDS>",
        "--proxy-protocol",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    assert!(help.contains("[default: 127.0.0.1:2525]"), "{help}");
    assert!(help.contains("[default: ./maildir]"), "{help}");
}

#[test]
fn bad_arguments_are_refused() {
    let (status, stderr) = common::run_to_exit(&["--user", "no-colon"]);
    assert!(!status.success());
    assert!(stderr.contains("NAME:PASSWORD"), "{stderr}");
    let (status, stderr) = common::run_to_exit(&["--max-recipients", "5"]);
    assert!(!status.success());
    assert!(stderr.contains("max_recipients"), "{stderr}");
    let (status, _) = common::run_to_exit(&["--tls-cert", "/nonexistent.pem"]);
    assert!(!status.success(), "--tls-cert needs --tls-key");
}

/// Without flags: 127.0.0.1:2525, ./maildir, the machine's host name, STARTTLS.
#[test]
fn no_flags_listens_on_2525_and_stores_into_dot_maildir() {
    if std::net::TcpListener::bind("127.0.0.1:2525").is_err() {
        eprintln!("SKIPPED: 127.0.0.1:2525 is in use");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailsink"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(&mut child);
    let mut stderr = BufReader::new(guard.0.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(
        first.contains("listening on 127.0.0.1:2525 (smtp+starttls)"),
        "{first}"
    );
    assert!(first.contains("./maildir"), "{first}");

    let addr: SocketAddr = "127.0.0.1:2525".parse().unwrap();
    let mut c = Client::connect(addr);
    let greeting = c.reply();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    assert_eq!(greeting, format!("220 {host} ESMTP\r\n"));
    let ehlo = c.cmd("EHLO client.example");
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("SIZE 26214400"), "{ehlo}");
    let reply = c.send_message(
        "a@x.example",
        &["a@example.com"],
        b"Subject: default\r\n\r\nhi\r\n",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let new: Vec<_> = std::fs::read_dir(dir.path().join("maildir/new"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(new.len(), 1);
    assert_eq!(
        common::after_trace(&new[0]),
        b"Subject: default\r\n\r\nhi\r\n"
    );
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ctrl_c_sends_421_to_idle_sessions_and_exits() {
    let mut server = Server::start(&[]);
    let mut idle = Client::hello(server.addr);
    // A client in the middle of DATA is answered when its message ends.
    let mut busy = Client::hello(server.addr);
    busy.cmd("MAIL FROM:<a@x.example>");
    busy.cmd("RCPT TO:<b@y.example>");
    assert!(busy.cmd("DATA").starts_with("354"));
    busy.send("Subject: during shutdown\r\n\r\n");

    let status = Command::new("kill")
        .args(["-INT", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        String::from_utf8_lossy(&idle.read_to_close()),
        format!("421 4.3.2 {HOSTNAME} Service shutting down\r\n")
    );
    busy.send("last line\r\n.\r\n");
    let rest = String::from_utf8_lossy(&busy.read_to_close()).into_owned();
    assert!(rest.starts_with("250 2.0.0"), "{rest}");
    assert!(
        rest.ends_with(&format!("421 4.3.2 {HOSTNAME} Service shutting down\r\n")),
        "{rest}"
    );
    let started = Instant::now();
    let status = server
        .wait_exit(WAIT)
        .expect("mailsink exits after the shutdown");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(server.stored().len(), 1);
    let ends = server.wait_events("disconnect", 2);
    assert_eq!(ends.len(), 2);
    assert!(ends
        .iter()
        .all(|l| l["arguments"]["reply"]["state"] == "SHUTDOWN"));
}
