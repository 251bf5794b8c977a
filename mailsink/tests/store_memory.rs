//! Memory stays flat while messages stream into the Maildir: ten clients each half-way
//! through a 20 MiB message cost the server at most 2 MiB of resident memory over idle.
//! The figures are printed (`cargo test -p mailsink --test store_memory -- --nocapture`).

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Server, WAIT};

const CLIENTS: usize = 10;
const MESSAGE: usize = 20 << 20;
const HALF: usize = MESSAGE / 2;
/// What the server may hold for ten messages in flight, over idle.
const BUDGET: u64 = 2 << 20;

/// The server's resident set, from /proc.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// 64 KiB of message text: 1024 lines of 64 octets.
fn block(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * 1024);
    for line in 0..1024 {
        let text = format!("block {n:05} line {line:04} ");
        out.extend_from_slice(text.as_bytes());
        out.resize(out.len() + 62 - text.len(), b'x');
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Sizes of the files in `tmp/`.
fn tmp_sizes(maildir: &Path) -> Vec<u64> {
    std::fs::read_dir(maildir.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect()
}

/// A client at the point where the message text goes.
fn in_data(server: &Server, n: usize) -> Client {
    let mut c = Client::hello(server.addr);
    assert!(c
        .cmd(&format!("MAIL FROM:<s{n}@x.example> SIZE={MESSAGE}"))
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<r@y.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c
}

#[test]
fn ten_clients_half_way_through_20_mib_messages_cost_at_most_2_mib_over_idle() {
    let server = Server::start(&[]);
    // Warm up: the blocking threads that write files exist, and every path of a message
    // (gathered in memory, then written as it comes) ran once on each connection.
    let warm: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let mut c = in_data(&server, n);
            thread::spawn(move || {
                for i in 0..4 {
                    c.send(block(i));
                }
                c.send(".\r\n");
                assert!(c.reply().starts_with("250"));
                c.cmd("QUIT");
            })
        })
        .collect();
    warm.into_iter().for_each(|t| t.join().unwrap());
    thread::sleep(Duration::from_millis(300));
    let idle = rss(server.pid());

    let mut clients: Vec<Client> = (0..CLIENTS).map(|n| in_data(&server, n)).collect();
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
    while tmp_sizes(&server.maildir())
        .iter()
        .filter(|&&s| s >= HALF as u64)
        .count()
        < CLIENTS
    {
        assert!(
            start.elapsed() < WAIT,
            "tmp/: {:?}",
            tmp_sizes(&server.maildir())
        );
        thread::sleep(Duration::from_millis(20));
    }
    let busy = rss(server.pid());
    eprintln!(
        "mailsink resident memory: idle {:.1} MiB, ten clients half-way through 20 MiB \
         messages {:.1} MiB (+{} KiB)",
        idle as f64 / (1 << 20) as f64,
        busy as f64 / (1 << 20) as f64,
        busy.saturating_sub(idle) / 1024
    );
    assert!(
        busy <= idle + BUDGET,
        "idle {idle} bytes, with ten messages in flight {busy} bytes"
    );

    // The messages end and are stored whole.
    let finishers: Vec<_> = clients
        .drain(..)
        .map(|mut c| {
            thread::spawn(move || {
                for n in HALF / (64 * 1024)..MESSAGE / (64 * 1024) {
                    c.send(block(n));
                }
                c.send(".\r\n");
                c.reply()
            })
        })
        .collect();
    for finisher in finishers {
        let reply = finisher.join().unwrap();
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    let stored = server.stored();
    assert_eq!(stored.len(), 2 * CLIENTS);
    let whole: Vec<u8> = (0..MESSAGE / (64 * 1024)).flat_map(block).collect();
    assert_eq!(stored.iter().filter(|(_, m)| *m == whole).count(), CLIENTS);
    assert!(tmp_sizes(&server.maildir()).is_empty());
}
