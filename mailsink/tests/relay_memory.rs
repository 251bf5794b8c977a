//! Memory stays flat while relayed messages arrive: their bodies stream into the relay's
//! spool as the Maildir's do, and are relayed from there. Ten clients each half-way
//! through a 20 MiB message cost the server at most 2 MiB of resident memory over idle,
//! and each message then reaches Postfix's smtp-sink whole. The figures are printed
//! (`cargo test -p mailsink --test relay_memory -- --nocapture`).

mod common;
mod relay_servers;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Server, WAIT};
use relay_servers::SmtpSink;

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

/// Sizes of the files in the spool's `tmp/`.
fn tmp_sizes(spool: &Path) -> Vec<u64> {
    std::fs::read_dir(spool.join("tmp"))
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

/// Sends the rest of the message from block `from`, and the end of the data; the reply.
fn finish(mut c: Client, from: usize, to: usize) -> String {
    for n in from..to {
        c.send(block(n));
    }
    c.send(".\r\n");
    let reply = c.reply();
    c.cmd("QUIT");
    reply
}

#[test]
fn ten_relayed_messages_half_way_through_20_mib_cost_at_most_2_mib_over_idle() {
    let sink = SmtpSink::start(&[]);
    let spool = tempfile::tempdir().unwrap();
    let spool_arg = spool.path().to_str().unwrap();
    let server = Server::start(&["--relay", &sink.url(), "--relay-spool", spool_arg]);
    // Warm up: every path of a message (gathered in memory, written as it comes, read
    // back and relayed) ran once on each connection.
    let warm: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let c = in_data(&server, n);
            thread::spawn(move || finish(c, 0, 4))
        })
        .collect();
    for reply in warm.into_iter().map(|t| t.join().unwrap()) {
        assert!(reply.starts_with("250 "), "{reply}");
    }
    thread::sleep(Duration::from_millis(300));
    let idle = rss(server.pid());

    let clients: Vec<Client> = (0..CLIENTS).map(|n| in_data(&server, n)).collect();
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
    // Every byte sent so far is in a file in the spool (but for the few the end-of-data
    // scan holds back).
    let start = Instant::now();
    while tmp_sizes(spool.path())
        .iter()
        .filter(|&&s| s >= HALF as u64)
        .count()
        < CLIENTS
    {
        assert!(
            start.elapsed() < WAIT,
            "tmp/: {:?}",
            tmp_sizes(spool.path())
        );
        thread::sleep(Duration::from_millis(20));
    }
    let busy = rss(server.pid());
    eprintln!(
        "mailsink --relay resident memory: idle {:.1} MiB, ten clients half-way through \
         20 MiB messages {:.1} MiB (+{} KiB)",
        idle as f64 / (1 << 20) as f64,
        busy as f64 / (1 << 20) as f64,
        busy.saturating_sub(idle) / 1024
    );
    assert!(
        busy <= idle + BUDGET,
        "idle {idle} bytes, with ten messages in flight {busy} bytes"
    );

    // The messages end, are relayed whole, and leave nothing in the spool.
    let finishers: Vec<_> = clients
        .into_iter()
        .map(|c| thread::spawn(move || finish(c, HALF / (64 * 1024), MESSAGE / (64 * 1024))))
        .collect();
    for finisher in finishers {
        let reply = finisher.join().unwrap();
        assert!(reply.starts_with("250 "), "{reply}");
    }
    let whole: Vec<u8> = (0..MESSAGE / (64 * 1024)).flat_map(block).collect();
    // smtp-sink writes LF line ends and one empty line after the message.
    let relayed = String::from_utf8(whole).unwrap().replace("\r\n", "\n") + "\n";
    let dumps = sink.wait_dumps(2 * CLIENTS);
    assert_eq!(
        dumps.iter().filter(|d| d.ends_with(&relayed)).count(),
        CLIENTS
    );
    assert!(tmp_sizes(spool.path()).is_empty());
}
