//! The memory measurement of `store_memory` and `relay_memory`: ten clients each send half
//! of a 20 MiB message, and the server's resident set then may be at most 2 MiB over idle.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{Client, Server, WAIT};

pub const CLIENTS: usize = 10;
pub const MESSAGE: usize = 20 << 20;
pub const HALF: usize = MESSAGE / 2;
/// What the server may hold for ten messages in flight, over idle.
pub const BUDGET: u64 = 2 << 20;

/// The server's resident set, from /proc.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// 64 KiB of message text: 1024 lines of 64 octets.
pub fn block(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * 1024);
    for line in 0..1024 {
        let text = format!("block {n:05} line {line:04} ");
        out.extend_from_slice(text.as_bytes());
        out.resize(out.len() + 62 - text.len(), b'x');
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Sizes of the files in `dir`'s `tmp/` (a Maildir or the relay's spool).
pub fn tmp_sizes(dir: &Path) -> Vec<u64> {
    std::fs::read_dir(dir.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect()
}

/// A client at the point where the message text goes.
pub fn in_data(server: &Server, n: usize) -> Client {
    let mut c = Client::hello(server.addr);
    assert!(c
        .cmd(&format!("MAIL FROM:<s{n}@x.example> SIZE={MESSAGE}"))
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<r@y.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c
}

/// Ten clients send the first half of their message, which lands in files in `dir`'s
/// `tmp/`; the server's resident set is then at most [`BUDGET`] over `idle`, printed as
/// `what`'s. Returns the clients, half-way through.
pub fn half_way_within_budget(server: &Server, dir: &Path, idle: u64, what: &str) -> Vec<Client> {
    let clients: Vec<Client> = (0..CLIENTS).map(|n| in_data(server, n)).collect();
    let senders: Vec<_> = clients
        .iter()
        .map(|c| {
            let mut stream = c.stream.try_clone().unwrap();
            thread::spawn(move || {
                use std::io::Write;
                for n in 0..HALF / (64 * 1024) {
                    stream.write_all(&block(n)).unwrap();
                }
            })
        })
        .collect();
    senders.into_iter().for_each(|t| t.join().unwrap());
    // Every byte sent so far is in a file in tmp/ (but for the few the end-of-data scan
    // holds back).
    let start = Instant::now();
    while tmp_sizes(dir).iter().filter(|&&s| s >= HALF as u64).count() < CLIENTS {
        assert!(start.elapsed() < WAIT, "tmp/: {:?}", tmp_sizes(dir));
        thread::sleep(Duration::from_millis(20));
    }
    let busy = rss(server.pid());
    eprintln!(
        "{what} resident memory: idle {:.1} MiB, ten clients half-way through 20 MiB \
         messages {:.1} MiB (+{} KiB)",
        idle as f64 / (1 << 20) as f64,
        busy as f64 / (1 << 20) as f64,
        busy.saturating_sub(idle) / 1024
    );
    assert!(
        busy <= idle + BUDGET,
        "idle {idle} bytes, with ten messages in flight {busy} bytes"
    );
    clients
}
