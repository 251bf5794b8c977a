//! Out of file descriptors. The test binary runs itself again as a server whose
//! RLIMIT_NOFILE is a few dozen, fills it with idle clients, and checks that the accept loop
//! then waits without spinning (the server's CPU time stays near zero), and that the client
//! waiting in the listen queue is greeted as soon as one connection ends.
//!
//! `harness = false`: the parent and the child are this one `main`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use smtp_session_tokio::{Config, Handler, Hooks, Limits, Server};

const CHILD: &str = "SMTP_SESSION_TOKIO_FD_CHILD";
const NOFILE: u64 = 32;

#[derive(Clone)]
struct Sink;

impl Handler for Sink {
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    println!("running 1 test");
    out_of_file_descriptors();
    println!("test out_of_file_descriptors ... ok");
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}

/// The server, with few descriptors and no connection limit of its own.
fn child() {
    rlimit::setrlimit(rlimit::Resource::NOFILE, NOFILE, NOFILE).expect("lower RLIMIT_NOFILE");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("port {}", listener.local_addr().unwrap().port());
        let limits = Limits {
            max_connections: 0,
            max_connections_per_ip: 0,
            ..Limits::default()
        };
        let config = Config {
            hostname: "fd.test".into(),
            ..Config::default()
        };
        Server::new(Sink)
            .config(config)
            .limits(limits)
            .listener(listener)
            .serve()
            .await;
    });
}

/// CPU time (user + system) of `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn greeting_within(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn out_of_file_descriptors() {
    let mut child = Kill(
        Command::new(std::env::current_exe().unwrap())
            .env(CHILD, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("port ")
        .expect("port N")
        .parse()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // Fill the server's descriptor table with greeted, idle clients.
    let mut greeted = Vec::new();
    let mut waiting = None;
    for _ in 0..NOFILE * 2 {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        match greeting_within(&mut c, Duration::from_secs(1)) {
            Some(g) => {
                assert_eq!(g, "220 fd.test ESMTP\r\n");
                greeted.push(c);
            }
            None => {
                waiting = Some(c);
                break;
            }
        }
    }
    let mut waiting = waiting.expect("the server ran out of descriptors");
    assert!(
        greeted.len() > 10 && greeted.len() < NOFILE as usize,
        "{}",
        greeted.len()
    );

    // Out of descriptors, the accept loop must wait, not spin.
    let before = cpu_time(child.0.id());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_time(child.0.id()) - before;
    assert!(
        spent < Duration::from_millis(200),
        "the server burnt {spent:?} of CPU in 1 s"
    );

    // One client leaves: the waiting one is greeted at once.
    let mut leaving = greeted.pop().unwrap();
    leaving
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    leaving.write_all(b"QUIT\r\n").unwrap();
    let mut bye = String::new();
    let _ = leaving.read_to_string(&mut bye);
    assert_eq!(bye, "221 2.0.0 Bye\r\n");
    // Closing our side ends the server's drain, and with it the connection.
    drop(leaving);
    let started = Instant::now();
    let greeting = greeting_within(&mut waiting, Duration::from_secs(5));
    assert_eq!(greeting.as_deref(), Some("220 fd.test ESMTP\r\n"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    waiting.write_all(b"NOOP\r\n").unwrap();
    assert_eq!(
        greeting_within(&mut waiting, Duration::from_secs(5)).as_deref(),
        Some("250 2.0.0 OK\r\n")
    );
}
