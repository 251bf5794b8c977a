//! The real daemons the tests run against: Redis, rspamd, OpenDKIM and postgrey, each
//! started in the foreground on a free port of 127.0.0.1 with a configuration of the test's
//! own in a directory the test gives, waited for (bounded), and stopped when dropped. A
//! daemon that cannot start fails the test with what it wrote on stderr; none is skipped.
//!
//! The Debian packages are `redis-server`, `rspamd`, `opendkim`, `opendkim-tools` and
//! `postgrey`.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to listen, unless its starter says otherwise.
pub const WAIT: Duration = Duration::from_secs(60);

/// How long rspamd may take to listen: loading its rules takes a while on a busy machine.
pub const RSPAMD_WAIT: Duration = Duration::from_secs(120);

/// A free TCP port on 127.0.0.1 (for daemons that cannot be asked for port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The path of a Debian daemon binary (PATH often lacks /usr/sbin). Panics when it is not
/// installed.
pub fn sbin(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = format!("{dir}/{name}");
        if Path::new(&path).is_file() {
            return path;
        }
    }
    panic!("{name} is not installed (Debian packages redis-server rspamd opendkim opendkim-tools postgrey)");
}

/// Whether the tests run as root (daemons then need to be told to stay root).
pub fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Waits until `port` on 127.0.0.1 accepts connections; panics with the child's stderr if
/// it exits first, or when `limit` passes.
fn wait_listening(child: &mut Child, name: &str, port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().expect("daemon status") {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            panic!("{name} exited ({status}) before listening on {port}:\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on {port} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns `command` with stdin and stdout closed and stderr kept for the failure message.
fn spawn(command: &mut Command, name: &str) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// A daemon started by a test, listening on [`port`](Daemon::port); stopped when dropped
/// (SIGTERM, so one with worker processes such as rspamd stops them; SIGKILL after five
/// seconds).
pub struct Daemon {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl Daemon {
    /// Starts `command` and waits up to [`WAIT`] until `port` accepts connections.
    pub fn start(command: Command, port: u16) -> Daemon {
        Daemon::start_within(command, port, WAIT)
    }

    /// [`Daemon::start`], waiting up to `limit`.
    pub fn start_within(mut command: Command, port: u16, limit: Duration) -> Daemon {
        let name = format!("{command:?}");
        let child = spawn(&mut command, &name);
        // A panic in the wait drops the Daemon, which stops the child.
        let mut daemon = Daemon { child, port };
        wait_listening(&mut daemon.child, &name, port, limit);
        daemon
    }

    /// `inet:127.0.0.1:PORT`, as mailsink's `--milter` and `--policy-service` take it.
    pub fn inet(&self) -> String {
        format!("inet:127.0.0.1:{}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
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

/// A redis-server of the test's own on a free port, without persistence, in the
/// foreground; killed when dropped. It can be stopped and started again on the same port.
pub struct Redis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    tls: Option<RedisTls>,
}

/// The PEM files of a Redis that speaks only TLS.
#[derive(Clone, Debug)]
pub struct RedisTls {
    /// Its certificate.
    pub cert: std::path::PathBuf,
    /// Its private key.
    pub key: std::path::PathBuf,
    /// The CA certificate its clients' certificates would be verified against (Redis
    /// needs one; clients are not asked for a certificate).
    pub ca: std::path::PathBuf,
}

impl Redis {
    /// Starts one and waits until it listens; fails the test when it cannot.
    pub fn start() -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            tls: None,
        };
        redis.restart();
        redis
    }

    /// Starts one that speaks only TLS (`--tls-port`, no plain port) with `tls`, clients
    /// unauthenticated; fails the test when it cannot (a redis-server built without TLS).
    pub fn start_tls(tls: RedisTls) -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            tls: Some(tls),
        };
        redis.restart();
        redis
    }

    /// Starts it again, on the same port and empty, after [`stop`](Redis::stop).
    pub fn restart(&mut self) {
        let mut command = Command::new(sbin("redis-server"));
        let port = self.port.to_string();
        command.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            None => command.args(["--port", &port]),
            Some(tls) => command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca),
        };
        command.args(["--save", "", "--appendonly", "no", "--daemonize", "no"]);
        let port = self.port;
        // Stored first, so that a failed wait still kills it when the Redis is dropped.
        let child = self.child.insert(spawn(&mut command, "redis-server"));
        wait_listening(child, "redis-server", port, Duration::from_secs(5));
    }

    /// Kills it (SIGKILL: no goodbye to its clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis://127.0.0.1:PORT/`, or `rediss://` for one started with
    /// [`start_tls`](Redis::start_tls).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// rspamd's proxy worker as a milter (`milter = yes`, scanning itself), over the
/// distribution's configuration (`/etc/rspamd`) with overrides of the test's own in `dir`:
/// every worker on a free port, its log in `dir/log/rspamd.log`, and `overrides`, further
/// files of `override.d` as (name, text). The returned daemon's port is the milter's.
pub fn rspamd(dir: &Path, overrides: &[(&str, &str)]) -> Daemon {
    let (normal, controller, proxy) = (free_port(), free_port(), free_port());
    let over = dir.join("override.d");
    for sub in ["override.d", "local.d", "db", "run", "log"] {
        std::fs::create_dir_all(dir.join(sub)).expect("rspamd's directories");
    }
    let write = |name: &str, text: &str| {
        std::fs::write(over.join(name), text).expect("rspamd's configuration")
    };
    write(
        "worker-normal.inc",
        &format!("bind_socket = \"127.0.0.1:{normal}\";\n"),
    );
    write(
        "worker-controller.inc",
        &format!("bind_socket = \"127.0.0.1:{controller}\";\n"),
    );
    write(
        "worker-proxy.inc",
        &format!(
            "bind_socket = \"127.0.0.1:{proxy}\";\nmilter = yes;\ntimeout = 120s;\n\
             upstream \"local\" {{ default = yes; self_scan = yes; }}\n"
        ),
    );
    write(
        "logging.inc",
        &format!(
            "type = \"file\";\nfilename = \"{}\";\nlevel = \"warning\";\n",
            dir.join("log/rspamd.log").display()
        ),
    );
    for &(name, text) in overrides {
        write(name, text);
    }
    let var = |name: &str, path: &Path| format!("--var={name}={}", path.display());
    let mut command = Command::new(sbin("rspamd"));
    command
        .args(["-f", "-u", "root", "-g", "root"])
        .args(["-c", "/etc/rspamd/rspamd.conf"])
        .arg(var("LOCAL_CONFDIR", dir))
        .arg(var("DBDIR", &dir.join("db")))
        .arg(var("RUNDIR", &dir.join("run")))
        .arg(var("LOGDIR", &dir.join("log")));
    Daemon::start_within(command, proxy, RSPAMD_WAIT)
}

/// OpenDKIM as a milter (`Mode sv`) signing for `example.com` with selector `test` and a key
/// made by opendkim-genkey in `dir`, clients from 127.0.0.1 internal (signed), others
/// verified with the public key given by `TestPublicKeys` (no DNS in the tests), its
/// Authentication-Results as `mx.example.com`.
pub fn opendkim(dir: &Path) -> Daemon {
    let status = Command::new(sbin("opendkim-genkey"))
        .arg("-D")
        .arg(dir)
        .args(["-d", "example.com", "-s", "test"])
        .status()
        .expect("run opendkim-genkey");
    assert!(status.success(), "opendkim-genkey failed");
    // The public key as its TXT record would hold it: the quoted strings of the zone-file
    // line opendkim-genkey wrote.
    let zone = std::fs::read_to_string(dir.join("test.txt")).expect("opendkim-genkey's record");
    let record: String = zone.split('"').skip(1).step_by(2).collect();
    std::fs::write(
        dir.join("keys"),
        format!("test._domainkey.example.com {record}\n"),
    )
    .expect("OpenDKIM's key table");
    let port = free_port();
    let user = if is_root() { "UserID root\n" } else { "" };
    let conf = format!(
        "Syslog no\nBackground no\nMode sv\nDomain example.com\nSelector test\n\
         KeyFile {dir}/test.private\nSocket inet:{port}@127.0.0.1\nPidFile {dir}/opendkim.pid\n\
         RequireSafeKeys false\nInternalHosts 127.0.0.1\nTestPublicKeys {dir}/keys\n\
         AuthservID mx.example.com\n{user}",
        dir = dir.display()
    );
    std::fs::write(dir.join("opendkim.conf"), conf).expect("OpenDKIM's configuration");
    let mut command = Command::new(sbin("opendkim"));
    command.args(["-f", "-x"]).arg(dir.join("opendkim.conf"));
    Daemon::start(command, port)
}

/// postgrey as a policy service, greylisting for `delay` seconds, its database in `dir`.
pub fn postgrey(dir: &Path, delay: u64) -> Daemon {
    let port = free_port();
    let mut command = Command::new(sbin("postgrey"));
    command
        .arg(format!("--inet=127.0.0.1:{port}"))
        .arg(format!("--dbdir={}", dir.display()))
        .arg(format!("--delay={delay}"))
        .arg(format!("--pidfile={}/postgrey.pid", dir.display()));
    if is_root() {
        command.args(["--user=root", "--group=root"]);
    }
    Daemon::start(command, port)
}
