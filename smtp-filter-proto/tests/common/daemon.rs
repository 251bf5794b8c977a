//! Real filter daemons for the tests: started in the foreground on a loopback port of their
//! own, waited for, and stopped when dropped; and blocking drivers of the sans-IO clients
//! over a TCP connection to them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smtp_filter_proto::milter::{Milter, MilterConfig, Output};
use smtp_filter_proto::policy::{PolicyClient, PolicyOutput, PolicyRequest, PolicyResponse};

/// How long a daemon may take to listen, and a filter to answer.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A daemon started by a test, killed when dropped.
pub struct Daemon {
    child: Child,
    name: String,
}

impl Daemon {
    /// Starts `command` and waits until `port` on 127.0.0.1 accepts connections. Panics
    /// (fails the test) if it exits first or does not listen within [`WAIT`].
    pub fn start(mut command: Command, port: u16) -> Daemon {
        let name = format!("{command:?}");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut daemon = Daemon { child, name };
        let deadline = Instant::now() + WAIT;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return daemon;
            }
            if let Some(status) = daemon.child.try_wait().expect("daemon status") {
                let mut err = String::new();
                let _ = daemon
                    .child
                    .stderr
                    .take()
                    .map(|mut e| e.read_to_string(&mut err));
                let mut out = String::new();
                let _ = daemon
                    .child
                    .stdout
                    .take()
                    .map(|mut o| o.read_to_string(&mut out));
                panic!(
                    "{} exited ({status}) before listening:\n{err}\n{out}",
                    daemon.name
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {port} within {WAIT:?}",
                daemon.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    /// SIGTERM first, so a daemon with worker processes (rspamd) stops them; SIGKILL after
    /// five seconds.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A milter session over a TCP connection, driven step by step.
pub struct MilterConn {
    pub milter: Milter,
    stream: TcpStream,
}

impl MilterConn {
    /// Connects and negotiates; returns the connection and the negotiation's outputs.
    pub fn open(port: u16, config: MilterConfig) -> (MilterConn, Vec<Output>) {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the filter");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut conn = MilterConn {
            milter: Milter::new(config),
            stream,
        };
        let outputs = conn.run();
        (conn, outputs)
    }

    /// Sends what is queued and reads until no reply is owed; returns the outputs other
    /// than writes. A filter that stays silent past [`WAIT`] fails the test.
    pub fn run(&mut self) -> Vec<Output> {
        let mut outputs = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            while let Some(output) = self.milter.poll_output() {
                match output {
                    Output::Write(bytes) => {
                        self.stream.write_all(&bytes).expect("write to the filter")
                    }
                    other => outputs.push(other),
                }
            }
            if self.milter.awaiting_reply().is_none() {
                return outputs;
            }
            let n = self.stream.read(&mut buf).expect("read from the filter");
            assert!(
                n > 0,
                "the filter closed the connection while a reply was owed"
            );
            self.milter.handle_input(&buf[..n]);
        }
    }

    /// One step, then [`MilterConn::run`].
    pub fn step(
        &mut self,
        step: impl FnOnce(&mut Milter) -> Result<(), smtp_filter_proto::milter::Error>,
    ) -> Vec<Output> {
        step(&mut self.milter).expect("the step fits");
        self.run()
    }
}

/// A policy delegation connection.
pub struct PolicyConn {
    client: PolicyClient,
    stream: TcpStream,
}

impl PolicyConn {
    pub fn open(port: u16) -> PolicyConn {
        let stream =
            TcpStream::connect(("127.0.0.1", port)).expect("connect to the policy service");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        PolicyConn {
            client: PolicyClient::new(4096),
            stream,
        }
    }

    /// One request and its response.
    pub fn ask(&mut self, request: &PolicyRequest) -> PolicyResponse {
        self.client.request(request).expect("a request fits");
        let mut buf = [0u8; 4096];
        loop {
            while let Some(output) = self.client.poll_output() {
                match output {
                    PolicyOutput::Write(bytes) => self.stream.write_all(&bytes).expect("write"),
                    PolicyOutput::Response(response) => return response,
                    PolicyOutput::Failed(e) => panic!("the policy service broke the protocol: {e}"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            let n = self
                .stream
                .read(&mut buf)
                .expect("read from the policy service");
            assert!(n > 0, "the policy service closed the connection");
            self.client.handle_input(&buf[..n]);
        }
    }
}

/// The path of a Debian daemon binary (PATH often lacks /usr/sbin).
pub fn sbin(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = format!("{dir}/{name}");
        if std::path::Path::new(&path).is_file() {
            return path;
        }
    }
    panic!("{name} is not installed (Debian packages opendkim opendkim-tools postgrey rspamd; .ci/run installs them)");
}

/// Whether the tests run as root (daemons then need to be told to stay root).
pub fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}
