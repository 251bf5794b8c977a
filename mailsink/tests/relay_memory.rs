//! Memory stays flat while relayed messages arrive: their bodies stream into the relay's
//! spool as the Maildir's do, and are relayed from there. Ten clients each half-way
//! through a 20 MiB message cost the server at most 2 MiB of resident memory over idle,
//! and each message then reaches Postfix's smtp-sink whole. The figures are printed
//! (`cargo test -p mailsink --test relay_memory -- --nocapture`).

mod common;
#[path = "common/memory.rs"]
mod memory;
mod relay_servers;

use std::thread;
use std::time::Duration;

use common::{Client, Server};
use memory::{block, half_way_within_budget, in_data, rss, tmp_sizes, CLIENTS, HALF, MESSAGE};
use relay_servers::SmtpSink;

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

    let clients = half_way_within_budget(&server, spool.path(), idle, "mailsink --relay");

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
