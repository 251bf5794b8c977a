//! A fleet behind HAProxy: real HAProxy in TCP mode with `send-proxy-v2` in front of two
//! mailsink instances (`--proxy-protocol`), with SMTP health checks that carry a PROXY v2
//! LOCAL header (`check-send-proxy`).
//!
//! Three loopback addresses keep the parties apart: the client connects from 127.0.0.2,
//! HAProxy listens on 127.0.0.1 and connects to the backends from 127.0.0.3 (`source`).
//! A client connection's log must name 127.0.0.2 (the PROXY header's address); a health
//! check's names 127.0.0.3, HAProxy itself, since a LOCAL header carries no client.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Server, WAIT};
use serde_json::Value;

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const HAPROXY_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The name HAProxy's `option smtpchk` gives in its EHLO.
const CHECK_HELO: &str = "haproxy-check.test";
const CONNECTIONS: usize = 20;
const MESSAGES_PER_CONNECTION: usize = 10;
const CLIENT_THREADS: usize = 4;

/// The haproxy binary: on PATH, or in /usr/sbin, where Debian puts it (PATH often lacks it).
fn haproxy_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("haproxy"));
    on_path
        .chain(["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"].map(PathBuf::from))
        .find(|path| path.is_file())
        .expect("haproxy is not installed (Debian: apt-get install haproxy); .ci/run installs it")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The configuration deploy.md shows, with the test's addresses and a short check interval.
fn haproxy_config(frontend: SocketAddr, backends: &[SocketAddr], stats: &Path) -> String {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            format!(
                "    server mailsink{i} {addr} send-proxy-v2 check check-send-proxy \
                 inter 200ms fall 2 rise 1\n"
            )
        })
        .collect();
    format!(
        "global
    log stderr format raw local0 info
    stats socket {stats} mode 600 level admin
    maxconn 4096

defaults
    mode tcp
    log global
    option tcplog
    option log-health-checks
    timeout connect 5s
    timeout client 5m
    timeout server 5m

frontend smtp
    bind {frontend}
    default_backend mailsinks

backend mailsinks
    balance roundrobin
    option smtpchk EHLO {CHECK_HELO}
    source {HAPROXY_SOURCE}
{servers}",
        stats = stats.display(),
    )
}

/// A running HAProxy in the foreground (`-db`); killed when dropped.
struct Haproxy {
    child: Child,
    stats: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy and waits (bounded) until every backend passed a health check.
    /// Panics, never skips, when it cannot start.
    fn start(frontend: SocketAddr, backends: &[SocketAddr]) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let stats = dir.path().join("stats.sock");
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, haproxy_config(frontend, backends, &stats)).unwrap();
        let mut child = Command::new(haproxy_binary())
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start haproxy");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                match line {
                    Ok(line) => lines.lock().unwrap().push(line),
                    Err(_) => break,
                }
            }
        });
        let mut haproxy = Haproxy {
            child,
            stats,
            stderr,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            if let Some(status) = haproxy.child.try_wait().unwrap() {
                panic!("haproxy exited ({status}): {:#?}", haproxy.stderr_lines());
            }
            // Listeners are bound before the stats socket answers. No probe of the frontend:
            // it would reach a backend and be logged as a client.
            let servers = haproxy.servers();
            let up = servers.len() == backends.len()
                && servers
                    .iter()
                    .all(|s| s.status == "UP" && s.check_status == "L7OK");
            if up {
                return haproxy;
            }
            assert!(
                start.elapsed() < WAIT,
                "haproxy did not come up: {:#?}",
                haproxy.stderr_lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// `show stat` on the stats socket: the backend's servers.
    fn servers(&self) -> Vec<ServerStat> {
        let Ok(mut socket) = UnixStream::connect(&self.stats) else {
            return vec![];
        };
        socket.set_read_timeout(Some(WAIT)).unwrap();
        socket.write_all(b"show stat\n").unwrap();
        let mut csv = String::new();
        socket.read_to_string(&mut csv).unwrap();
        let mut lines = csv.lines();
        let Some(header) = lines.next() else {
            return vec![];
        };
        let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
        let column = |row: &[&str], name: &str| {
            let at = columns.iter().position(|c| *c == name).expect(name);
            row.get(at).copied().unwrap_or_default().to_string()
        };
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|row| row.len() > 1 && row[0] == "mailsinks" && row[1].starts_with("mailsink"))
            .map(|row| ServerStat {
                name: column(&row, "svname"),
                status: column(&row, "status"),
                // "* L7OK": a check is running now, and the last one passed.
                check_status: column(&row, "check_status")
                    .trim_start_matches("* ")
                    .to_string(),
                check_failures: column(&row, "chkfail").parse().unwrap_or(u64::MAX),
                sessions: column(&row, "stot").parse().unwrap_or(0),
            })
            .collect()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct ServerStat {
    name: String,
    status: String,
    check_status: String,
    check_failures: u64,
    sessions: u64,
}

/// A plain TCP connection from `source` (any port) to `to`.
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .expect("bind the client's address");
        let stream = tokio::time::timeout(WAIT, socket.connect(to))
            .await
            .expect("connect in time")
            .expect("connect");
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
}

/// One client connection through HAProxy: the greeting, EHLO, `messages` messages, QUIT.
/// Returns the client's own address.
fn client_session(frontend: SocketAddr, tag: usize, messages: usize) -> SocketAddr {
    let stream = connect_from(CLIENT_IP, frontend);
    let local = stream.local_addr().unwrap();
    let mut client = Client::from_stream(stream);
    let greeting = client.reply();
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(client.cmd("EHLO client.example").starts_with("250"));
    for i in 0..messages {
        let body = format!(
            "Subject: {tag}.{i}\r\nMessage-ID: <{tag}.{i}@client.example>\r\n\r\nhello\r\n"
        );
        let reply = client.send_message(
            "sender@client.example",
            &["rcpt@fleet.example"],
            body.as_bytes(),
        );
        assert_eq!(reply, "250 2.0.0 Message accepted\r\n");
    }
    assert!(client.cmd("QUIT").starts_with("221 "));
    assert!(client.read_to_close().is_empty());
    local
}

fn remote(line: &Value) -> (String, u64) {
    let connection = &line["connection"];
    (
        connection["remoteip"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        connection["remoteport"].as_u64().unwrap_or_default(),
    )
}

/// The disconnect lines of `server` whose client is `ip`.
fn disconnects_from(server: &Server, ip: Ipv4Addr) -> Vec<Value> {
    server
        .events("disconnect")
        .into_iter()
        .filter(|line| remote(line).0 == ip.to_string())
        .collect()
}

#[test]
fn two_hundred_messages_through_haproxy_reach_both_instances_with_the_clients_address() {
    let backends = [
        Server::start(&["--proxy-protocol"]),
        Server::start(&["--proxy-protocol"]),
    ];
    let frontend: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let haproxy = Haproxy::start(frontend, &[backends[0].addr, backends[1].addr]);

    // Twenty connections of ten messages, from four threads.
    let per_thread = CONNECTIONS / CLIENT_THREADS;
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|c| client_session(frontend, t * per_thread + c, MESSAGES_PER_CONNECTION))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let clients: BTreeSet<(String, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a client thread"))
        .map(|addr| (addr.ip().to_string(), u64::from(addr.port())))
        .collect();
    assert_eq!(clients.len(), CONNECTIONS);

    // Both instances stored mail, 200 messages in all.
    let stored: Vec<usize> = backends.iter().map(|b| b.stored().len()).collect();
    assert!(
        stored.iter().all(|&n| n > 0),
        "stored per instance: {stored:?}"
    );
    assert_eq!(
        stored.iter().sum::<usize>(),
        CONNECTIONS * MESSAGES_PER_CONNECTION
    );

    // Every client connection ended with a disconnect line naming the client's own address
    // and port, as the PROXY header gave them, never HAProxy's.
    let start = Instant::now();
    let logged: BTreeSet<(String, u64)> = loop {
        let lines: Vec<Value> = backends
            .iter()
            .flat_map(|b| disconnects_from(b, CLIENT_IP))
            .collect();
        if lines.len() >= CONNECTIONS || start.elapsed() > WAIT {
            for line in &lines {
                assert_eq!(line["arguments"]["reply"]["code"], 221, "{line}");
                assert_eq!(line["arguments"]["close"], "local", "{line}");
            }
            break lines.iter().map(remote).collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(logged, clients);
    for backend in &backends {
        for message in backend.events("message") {
            assert_eq!(message["connection"]["remoteip"], CLIENT_IP.to_string());
        }
        // Only two kinds of peer: the client, and HAProxy's own checks.
        for line in backend.events("disconnect") {
            let ip = remote(&line).0;
            assert!(
                ip == CLIENT_IP.to_string() || ip == HAPROXY_SOURCE.to_string(),
                "{line}"
            );
        }
    }

    // The health checks: PROXY v2 LOCAL, so they name HAProxy's address; each an ordinary
    // session that ends with QUIT and 221, no error, nothing on stderr.
    for backend in &backends {
        let checks = disconnects_from(backend, HAPROXY_SOURCE);
        assert!(
            !checks.is_empty(),
            "no health check reached {}",
            backend.addr
        );
        for check in &checks {
            assert_eq!(check["connection"]["helo"]["host"], CHECK_HELO, "{check}");
            assert_eq!(check["arguments"]["close"], "local", "{check}");
            assert_eq!(check["arguments"]["reply"]["code"], 221, "{check}");
            assert_eq!(check["arguments"]["reply"]["state"], "QUIT", "{check}");
            assert!(check["arguments"]["error"].is_null(), "{check}");
        }
        // Nothing on stderr besides the start-up lines (the listeners, the connection limits).
        let stderr = backend.stderr_lines();
        let start_up = |line: &String| {
            line.contains(": listening on ") || line.starts_with("mailsink: connections: ")
        };
        assert!(stderr.iter().all(start_up), "{stderr:#?}");
    }

    // HAProxy counts no failed check and had both servers up throughout.
    let servers = haproxy.servers();
    assert_eq!(servers.len(), 2, "{servers:#?}");
    for server in &servers {
        assert_eq!(server.status, "UP", "{server:#?}");
        assert_eq!(server.check_status, "L7OK", "{server:#?}");
        assert_eq!(server.check_failures, 0, "{server:#?}");
        assert!(server.sessions > 0, "{}: {server:#?}", server.name);
    }
    assert_eq!(
        servers.iter().map(|s| s.sessions).sum::<u64>(),
        CONNECTIONS as u64
    );
    let log = haproxy.stderr_lines();
    assert!(
        !log.iter()
            .any(|l| l.contains("failed") || l.contains("DOWN")),
        "{log:#?}"
    );
}

#[path = "common/redis.rs"]
mod redis;

/// The greeting a client at 127.0.0.2 reads through HAProxy (or its refusal).
fn greeting_through(frontend: SocketAddr) -> String {
    let mut client = Client::from_stream(connect_from(CLIENT_IP, frontend));
    client.reply()
}

#[test]
fn behind_haproxy_a_clients_connection_rate_holds_across_the_fleet_with_redis() {
    let redis = redis::Redis::start();
    let url = redis.url();
    // HAProxy's own address (its health checks) is trusted; the client is not.
    let args = [
        "--proxy-protocol",
        "--redis",
        &url,
        "--limit-exceptions",
        "127.0.0.3",
        "--rate",
        "connections=4/hour",
    ];
    let backends = [Server::start(&args), Server::start(&args)];
    let frontend: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _haproxy = Haproxy::start(frontend, &[backends[0].addr, backends[1].addr]);
    // Round robin: two connections to each instance, four in all, then the fifth.
    for _ in 0..4 {
        assert!(greeting_through(frontend).starts_with("220 "));
    }
    assert_eq!(
        greeting_through(frontend),
        "421 4.7.0 Error: too many connections from 127.0.0.2\r\n"
    );
    // Both instances served the client: the count was the fleet's, not one instance's.
    let start = Instant::now();
    while backends
        .iter()
        .any(|b| disconnects_from(b, CLIENT_IP).is_empty())
    {
        assert!(start.elapsed() < WAIT, "both instances served the client");
        std::thread::sleep(Duration::from_millis(50));
    }
}
