//! Starts mailsink as a child process on 127.0.0.1 with a free port, collects its stdout
//! (JSON lines) and stderr, and kills it on drop. The blocking SMTP client is the test
//! kit's.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const HOSTNAME: &str = "mx.test";
/// The blocking client of these tests, and the bound of every wait in them.
// Not every test uses each of them.
#[allow(unused_imports)]
pub use smtp_session_testkit::client::{dot_stuff, Client, WAIT};

pub fn policy_example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policies")
        .join(name)
}

/// A running mailsink.
pub struct Server {
    child: Child,
    /// The STARTTLS listener.
    pub addr: SocketAddr,
    /// The implicit TLS listener, when `--tls-listen` was given.
    pub tls_addr: Option<SocketAddr>,
    /// Holds the Maildir (and anything a test puts there).
    pub dir: tempfile::TempDir,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

pub struct Options {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub implicit_tls: bool,
}

impl Server {
    /// mailsink with `--hostname mx.test`, a Maildir in a temporary directory, a free port,
    /// and `args`.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with(Options {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            implicit_tls: false,
        })
    }

    pub fn start_with(options: Options) -> Server {
        Server::start_wrapped(&[], options)
    }

    /// [`Server::start_with`], with mailsink run by `wrapper`, a command that takes a program
    /// and its arguments (`prlimit --nofile=1024:1024 --`).
    pub fn start_wrapped(wrapper: &[&str], options: Options) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_mailsink"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_mailsink")),
        };
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--hostname",
                HOSTNAME,
                "--maildir",
            ])
            .arg(dir.path().join("maildir"));
        if options.implicit_tls {
            command.args(["--tls-listen", "127.0.0.1:0"]);
        }
        // Tests never ask the system's DNS servers: only one a test started (--dns-server).
        if !options
            .args
            .iter()
            .any(|a| a == "--dns-server" || a == "--no-dns")
        {
            command.arg("--no-dns");
        }
        command
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start mailsink");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        let mut server = Server {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            tls_addr: None,
            dir,
            stdout,
            stderr,
        };
        let line = server
            .wait_stderr(|l| l.contains("listening on"))
            .unwrap_or_else(|| panic!("mailsink did not start: {:?}", server.stderr_lines()));
        let listeners = parse_listeners(&line);
        server.addr = listeners
            .iter()
            .find(|(_, label)| label == "smtp+starttls")
            .expect("an SMTP listener")
            .0;
        server.tls_addr = listeners
            .iter()
            .find(|(_, label)| label == "smtps")
            .map(|(a, _)| *a);
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// The files in `new/`, sorted by name, with the message each holds after the trace
    /// fields mailsink prepends (which must be there: see [`after_trace`]).
    pub fn stored(&self) -> Vec<(PathBuf, Vec<u8>)> {
        self.stored_files()
            .into_iter()
            .map(|(path, bytes)| {
                let message = after_trace(&bytes).to_vec();
                (path, message)
            })
            .collect()
    }

    /// The files in `new/`, sorted by name, with their bytes.
    pub fn stored_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(self.maildir().join("new"))
            .map(|dir| {
                dir.map(|e| {
                    let path = e.unwrap().path();
                    let bytes = std::fs::read(&path).unwrap();
                    (path, bytes)
                })
                .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Every stdout line, parsed: each must be JSON.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.stdout_lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    pub fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.log()
            .into_iter()
            .filter(|v| v["event"] == event)
            .collect()
    }

    /// Waits until at least `n` lines of `event` are logged, and returns them.
    pub fn wait_events(&self, event: &str, n: usize) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let found = self.events(event);
            if found.len() >= n {
                return found;
            }
            assert!(
                start.elapsed() < WAIT,
                "waited for {n} {event} lines, have {}: {:#?}\nstderr: {:?}",
                found.len(),
                self.log(),
                self.stderr_lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for a stderr line containing `needle`; panics with all of stderr
    /// if none comes. The reader thread may not have collected a line yet when a client's
    /// reply is in.
    pub fn wait_stderr_containing(&self, needle: &str) -> String {
        self.wait_stderr(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no stderr line with {needle:?}: {:?}", self.stderr_lines()))
    }

    fn wait_stderr(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if let Some(l) = self.stderr_lines().into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(line) => sink.lock().unwrap().push(line),
                Err(_) => break,
            }
        }
    });
    lines
}

/// `... listening on 127.0.0.1:1 (smtp+starttls), 127.0.0.1:2 (smtps); ...`; UNIX sockets
/// (`unix:PATH`) are left out.
fn parse_listeners(line: &str) -> Vec<(SocketAddr, String)> {
    let rest = line.split("listening on ").nth(1).expect("listening on");
    let rest = rest.split(';').next().unwrap();
    rest.split(", ")
        .filter_map(|item| {
            let (addr, label) = item.split_once(" (").expect("ADDR (label)");
            let addr = addr.parse().ok()?;
            Some((addr, label.trim_end_matches(')').to_string()))
        })
        .collect()
}

/// Runs mailsink to completion (for start-up failures) and returns status and stderr.
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailsink"))
        .args(["--listen", "127.0.0.1:0", "--maildir"])
        .arg(dir.path().join("maildir"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status, err);
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mailsink kept running with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when `tool` is on PATH. Otherwise: fail under CI (env CI set), else skip loudly.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is not installed, and CI is set: install it (apt-get install {tool})");
        }
        eprintln!("SKIPPED: {tool} is not on PATH (install it to run this test)");
    }
    found
}

/// Runs a client tool to completion, killing it if it takes longer than `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client tool");
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} took longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The message in a stored file: what follows the `Return-Path:` and `Received:` fields
/// mailsink prepends (checked to be there, in that order).
pub fn after_trace(stored: &[u8]) -> &[u8] {
    assert!(
        stored.starts_with(b"Return-Path: <"),
        "no Return-Path: {:?}",
        String::from_utf8_lossy(&stored[..stored.len().min(200)])
    );
    let return_path_end = stored.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let rest = &stored[return_path_end..];
    assert!(rest.starts_with(b"Received: "), "no Received: field");
    // The Received: field ends at the first line that does not start with white space.
    let mut at = 0;
    loop {
        let end = at + rest[at..].windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        at = end;
        if !matches!(rest.get(at), Some(b' ' | b'\t')) {
            return &rest[at..];
        }
    }
}

/// A self-signed certificate and its key in PEM files, for `--tls-cert` and `--tls-key`;
/// the files go with it.
pub struct Cert {
    pub pem: PathBuf,
    pub key: PathBuf,
    /// The certificate in PEM, for a client to trust it.
    pub pem_text: String,
    /// The certificate in DER.
    pub der: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Cert {
    /// A certificate for `names` (DNS names or IP addresses), made by rcgen.
    pub fn self_signed(names: &[&str]) -> Cert {
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let made = rcgen::generate_simple_self_signed(names).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (pem, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&pem, made.cert.pem()).unwrap();
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        Cert {
            pem,
            key,
            pem_text: made.cert.pem(),
            der: made.cert.der().to_vec(),
            _dir: dir,
        }
    }

    /// `--tls-cert PEM --tls-key KEY`.
    pub fn args(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.pem.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }
}
