//! `--milter`: a real OpenDKIM signing what mailsink stores, a real rspamd refusing the
//! GTUBE test message with its reply and adding its headers to a clean one, and filters
//! that hang, close mid-message or answer garbage, which take `--milter-default-action`
//! while mailsink keeps serving.

mod common;
#[path = "common/scrape.rs"]
mod scrape;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{after_trace, Client, Server, WAIT};

const MESSAGE: &[u8] = b"From: Alice <alice@example.com>\r\nTo: Bob <bob@example.net>\r\n\
Subject: through a milter\r\nDate: Mon, 07 Dec 2026 16:00:00 +0000\r\n\
Message-ID: <1@example.com>\r\n\r\nHello Bob.\r\n";

/// A daemon started by a test, stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `command` and waits until it listens on `port`; fails the test if it cannot.
fn start(command: Command, port: u16) -> Daemon {
    start_within(command, port, WAIT)
}

/// [`start`], waiting up to `limit` for the port.
fn start_within(mut command: Command, port: u16, limit: Duration) -> Daemon {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut daemon = Daemon(child.unwrap_or_else(|e| panic!("cannot start {command:?}: {e}")));
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            let mut err = String::new();
            let _ = daemon.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("{command:?} exited ({status}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "{command:?} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon
}

fn opendkim(dir: &std::path::Path) -> (Daemon, u16) {
    let genkey = Command::new("/usr/sbin/opendkim-genkey")
        .args([
            "-D",
            dir.to_str().unwrap(),
            "-d",
            "example.com",
            "-s",
            "test",
        ])
        .status()
        .expect("opendkim-genkey (Debian package opendkim-tools; .ci/run installs it)");
    assert!(genkey.success());
    let port = free_port();
    let conf = format!(
        "Syslog no\nBackground no\nMode sv\nDomain example.com\nSelector test\n\
         KeyFile {dir}/test.private\nSocket inet:{port}@127.0.0.1\nPidFile {dir}/pid\n\
         RequireSafeKeys false\nInternalHosts 127.0.0.1\nUserID root\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("opendkim.conf"), conf).unwrap();
    let mut command = Command::new("/usr/sbin/opendkim");
    command.args(["-f", "-x"]).arg(dir.join("opendkim.conf"));
    (start(command, port), port)
}

#[test]
fn opendkim_signs_what_mailsink_stores_below_its_trace_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (_opendkim, port) = opendkim(dir.path());
    let milter = format!("inet:127.0.0.1:{port}");
    let server = Server::start(&["--milter", &milter]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    // The file starts with mailsink's Return-Path and Received (checked by after_trace);
    // the signature comes right below them.
    let stored = server.stored_files();
    assert_eq!(stored.len(), 1);
    let message = String::from_utf8_lossy(after_trace(&stored[0].1)).into_owned();
    assert!(message.starts_with("DKIM-Signature: v=1;"), "{message}");
    assert!(
        message.contains(" d=example.com;") && message.contains(" s=test;"),
        "{message}"
    );
    assert!(
        !message.contains("\n\t") || message.contains("\r\n\t"),
        "folds end in CRLF"
    );
    assert!(message.ends_with("\r\nFrom: Alice <alice@example.com>\r\nTo: Bob <bob@example.net>\r\nSubject: through a milter\r\nDate: Mon, 07 Dec 2026 16:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello Bob.\r\n"), "{message}");
}

/// A fake filter on a free port: each connection is handled by `serve` in a thread.
fn broken_filter(serve: fn(TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

/// Reads one packet; `None` at the end.
fn packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut data).ok()?;
    Some((data[0], data[1..].to_vec()))
}

/// Negotiates like a filter that wants every step and no change.
fn negotiate(stream: &mut TcpStream) {
    let _ = packet(stream);
    let _ = stream.write_all(&[0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]);
}

fn hangs(mut stream: TcpStream) {
    negotiate(&mut stream);
    std::thread::sleep(Duration::from_secs(30));
}

/// Answers "continue" until the body, then closes.
fn closes_mid_message(mut stream: TcpStream) {
    negotiate(&mut stream);
    while let Some((code, _)) = packet(&mut stream) {
        match code {
            b'B' => return,
            b'D' => {}
            _ => {
                let _ = stream.write_all(&[0, 0, 0, 1, b'c']);
            }
        }
    }
}

fn garbage(mut stream: TcpStream) {
    negotiate(&mut stream);
    let _ = packet(&mut stream);
    let _ = stream.write_all(b"\0\0\0\x05Zjunk and more junk");
}

#[test]
fn a_broken_filter_gets_the_default_action_and_mailsink_keeps_serving() {
    for (name, serve) in [
        ("hangs", hangs as fn(TcpStream)),
        ("closes", closes_mid_message),
        ("garbage", garbage),
    ] {
        let milter = format!("inet:127.0.0.1:{}", broken_filter(serve));
        let metrics = scrape::free_port();
        let listen = format!("127.0.0.1:{metrics}");
        let server = Server::start(&[
            "--milter",
            &milter,
            "--milter-timeout",
            "1",
            "--metrics",
            &listen,
        ]);
        let mut client = Client::hello(server.addr);
        for _ in 0..2 {
            let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
            assert!(reply.starts_with("451 4.7.1 "), "{name}: {reply}");
        }
        let failed = scrape::scrape(metrics)
            ["mailsink_filter_verdicts_total{filter=\"milter\",verdict=\"failed\"}"];
        assert_eq!(failed, 2.0, "{name}");
        assert!(server.stored().is_empty(), "{name}");
        assert!(client.cmd("NOOP").starts_with("250"), "{name}");
        let stderr = server.wait_stderr_containing("milter inet:127.0.0.1");
        assert!(stderr.contains("error"), "{name}: {stderr}");

        let server = Server::start(&[
            "--milter",
            &milter,
            "--milter-timeout",
            "1",
            "--milter-default-action",
            "accept",
        ]);
        let mut client = Client::hello(server.addr);
        let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
        assert!(reply.starts_with("250 "), "{name}: {reply}");
        assert_eq!(server.stored().len(), 1, "{name}: stored once");

        let server = Server::start(&[
            "--milter",
            &milter,
            "--milter-timeout",
            "1",
            "--milter-default-action",
            "reject",
        ]);
        let mut client = Client::hello(server.addr);
        let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
        assert!(reply.starts_with("550 5.7.1 "), "{name}: {reply}");
    }
}

/// rspamd's proxy worker as a milter (`milter = yes`, scanning itself), over the
/// distribution's configuration with overrides of the test's own; ports all free ones.
fn rspamd(dir: &std::path::Path) -> (Daemon, u16) {
    let (normal, controller, proxy) = (free_port(), free_port(), free_port());
    let over = dir.join("override.d");
    for sub in ["override.d", "db", "run", "log"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let write = |name: &str, text: String| std::fs::write(over.join(name), text).unwrap();
    write(
        "worker-normal.inc",
        format!("bind_socket = \"127.0.0.1:{normal}\";\n"),
    );
    write(
        "worker-controller.inc",
        format!("bind_socket = \"127.0.0.1:{controller}\";\n"),
    );
    write(
        "worker-proxy.inc",
        format!(
            "bind_socket = \"127.0.0.1:{proxy}\";\nmilter = yes;\ntimeout = 120s;\n\
             upstream \"local\" {{ default = yes; self_scan = yes; }}\n"
        ),
    );
    // Its verdict in headers also for a client on loopback (skipped by default as local).
    write(
        "milter_headers.conf",
        "use = [\"x-spamd-result\", \"x-spam-status\"];\nskip_local = false;\nskip_authenticated = false;\n".to_string(),
    );
    let log = dir.join("log/rspamd.log");
    write(
        "logging.inc",
        format!(
            "type = \"file\";\nfilename = \"{}\";\nlevel = \"warning\";\n",
            log.display()
        ),
    );
    let var = |name: &str, path: &std::path::Path| format!("--var={name}={}", path.display());
    let mut command = Command::new("/usr/bin/rspamd");
    command
        .args([
            "-f",
            "-u",
            "root",
            "-g",
            "root",
            "-c",
            "/etc/rspamd/rspamd.conf",
        ])
        .arg(var("LOCAL_CONFDIR", dir))
        .arg(var("DBDIR", &dir.join("db")))
        .arg(var("RUNDIR", &dir.join("run")))
        .arg(var("LOGDIR", &dir.join("log")));
    // Loading its rules takes rspamd a while on a busy machine.
    (
        start_within(command, proxy, Duration::from_secs(120)),
        proxy,
    )
}

#[test]
fn rspamd_refuses_gtube_with_its_reply_and_passes_a_clean_message() {
    let dir = tempfile::tempdir().unwrap();
    let (_rspamd, port) = rspamd(dir.path());
    let milter = format!("inet:127.0.0.1:{port}");
    let server = Server::start(&["--milter", &milter, "--milter-timeout", "30"]);
    let mut client = Client::hello(server.addr);
    let gtube = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: test\r\n\
Message-ID: <gtube@example.org>\r\n\r\n\
XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n";
    let reply = client.send_message("alice@example.org", &["bob@example.com"], gtube);
    assert_eq!(reply, "554 5.7.1 Gtube pattern\r\n");
    assert!(server.stored().is_empty());

    let clean = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: lunch\r\n\
Message-ID: <clean@example.org>\r\nDate: Mon, 07 Dec 2026 16:00:00 +0000\r\n\r\n\
Shall we have lunch on Tuesday?\r\n";
    let reply = client.send_message("alice@example.org", &["bob@example.com"], clean);
    assert!(reply.starts_with("250 "), "{reply}");
    let stored = server.stored();
    assert_eq!(stored.len(), 1);
    let message = String::from_utf8_lossy(&stored[0].1).into_owned();
    assert!(
        message.ends_with("\r\n\r\nShall we have lunch on Tuesday?\r\n"),
        "{message}"
    );
    // rspamd's headers, below mailsink's trace fields (stored() starts after them).
    // (rspamd sends them in no fixed order.)
    let lines: Vec<&str> = message.split("\r\n").collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("X-Spam-Status: No, score=")),
        "{message}"
    );
    assert!(
        message.contains("X-Spamd-Result: default: False ["),
        "{message}"
    );
}
