//! `examples/blocking.rs` on a real socket, with Python's `smtplib` as the client.
//!
//! Cargo gives integration tests no path to example binaries (`CARGO_BIN_EXE_*` is for
//! `[[bin]]` targets only), and `cargo test --test blocking_example` does not build examples.
//! So the test builds the example itself with the cargo that runs it (`env!("CARGO")`) and
//! takes the binary's path from cargo's JSON `compiler-artifact` message. That follows
//! `CARGO_TARGET_DIR`, `build.target-dir`, target triples and platform suffixes without
//! guessing paths, and costs nothing when the example is already up to date. Running the
//! binary directly, rather than `cargo run`, means the process killed on failure is the
//! server itself.
//!
//! Every wait is bounded, every child is killed on drop, and only 127.0.0.1 is used.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

const SENDER: &str = "sender@example.org";
const RECIPIENTS: [&str; 2] = ["one@example.net", "two@example.com"];
/// Bare LF line ends (smtplib makes them CRLF), lines smtplib must dot-stuff (one is a lone
/// dot, which would end DATA if it were not), and no line end at the end (smtplib adds one).
const BODY: &str = "Subject: dot-stuffing\n\n.leading dot\n..two dots\n.\nlast line";

/// The client: EHLO, one message to two recipients, and QUIT (on leaving the `with` block,
/// which raises unless the reply is 221). Any failure exits non-zero with a traceback.
const CLIENT: &str = r#"
import smtplib, sys
port, sender, body, recipients = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
    code, _ = smtp.ehlo("client.example")
    if code != 250:
        sys.exit(f"EHLO answered {code}")
    refused = smtp.sendmail(sender, recipients, body)
    if refused:
        sys.exit(f"recipients refused: {refused}")
print("delivered")
"#;

/// The body the server should store for `body` as smtplib sends it: line ends made CRLF
/// (smtplib's `_fix_eols`) and a final CRLF added if missing. The dot-stuffing smtplib adds is
/// removed by the session, and the terminating `.CRLF` is not part of the body.
fn stored_body(body: &str) -> String {
    let mut crlf = body
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\n', "\r\n");
    if !crlf.ends_with("\r\n") {
        crlf.push_str("\r\n");
    }
    crlf
}

/// Kills and reaps the child when the test ends, passed or failed.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} still running after {limit:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a pipe to its end on another thread, so a full pipe never blocks the child and a
/// stuck child never blocks the test: the result is awaited with a timeout.
fn read_to_end_in_background(mut pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

fn lines_in_background(pipe: ChildStderr) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn build_example() -> PathBuf {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let child = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", "blocking"])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
            manifest,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run cargo");
    let mut cargo = KillOnDrop(child);
    let stdout = read_to_end_in_background(cargo.0.stdout.take().unwrap());
    let status = wait_bounded(&mut cargo.0, Duration::from_secs(600), "cargo build");
    assert!(status.success(), "cargo build --example blocking: {status}");
    let messages = stdout
        .recv_timeout(Duration::from_secs(10))
        .expect("cargo's stdout");
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "blocking")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no executable for the blocking example")
}

#[test]
fn smtplib_delivers_a_dot_stuffed_message_to_two_recipients() {
    let binary = build_example();
    let child = Command::new(&binary)
        .args(["127.0.0.1:0", "--once"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    let mut server = KillOnDrop(child);
    let stdout = read_to_end_in_background(server.0.stdout.take().unwrap());
    let stderr = lines_in_background(server.0.stderr.take().unwrap());

    let first = stderr
        .recv_timeout(Duration::from_secs(30))
        .expect("the example printed nothing on stderr");
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first stderr line: {first:?}"));
    let port = addr.rsplit(':').next().unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "listening on {addr}");

    let client = Command::new("python3")
        .args(["-c", CLIENT, port, SENDER, BODY])
        .args(RECIPIENTS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut client = KillOnDrop(client);
    let client_out = read_to_end_in_background(client.0.stdout.take().unwrap());
    let client_err = read_to_end_in_background(client.0.stderr.take().unwrap());
    let status = wait_bounded(&mut client.0, Duration::from_secs(60), "smtplib client");
    let client_out = client_out.recv_timeout(Duration::from_secs(10)).unwrap();
    let client_err = client_err.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        status.success() && client_out.trim() == "delivered",
        "smtplib failed ({status}):\n{client_out}{client_err}"
    );

    // `--once`: the server exits after the connection, which closes its stdout.
    let status = wait_bounded(&mut server.0, Duration::from_secs(30), "blocking example");
    let out = stdout.recv_timeout(Duration::from_secs(10)).unwrap();
    let err: Vec<String> = stderr.try_iter().collect();
    assert!(status.success(), "example exited with {status}: {err:?}");

    let size = stored_body(BODY).len();
    let expected = format!("message from=<{SENDER}> size={size}");
    let messages: Vec<&str> = out.lines().filter(|l| l.starts_with("message ")).collect();
    assert_eq!(messages, [expected.as_str()], "example stdout:\n{out}");
    let disconnects: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("disconnect "))
        .collect();
    assert_eq!(disconnects.len(), 1, "example stdout:\n{out}");
    assert!(
        disconnects[0].starts_with("disconnect close=Local last=Some(LastReply { code: 221,")
            && disconnects[0].contains("state: Quit"),
        "example stdout:\n{out}"
    );
}
