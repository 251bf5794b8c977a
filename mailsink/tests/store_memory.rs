//! Memory stays flat while messages stream into the Maildir: ten clients each half-way
//! through a 20 MiB message cost the server at most 2 MiB of resident memory over idle.
//! The figures are printed (`cargo test -p mailsink --test store_memory -- --nocapture`).

mod common;
#[path = "common/memory.rs"]
mod memory;

use std::thread;
use std::time::Duration;

use common::Server;
use memory::{block, half_way_within_budget, in_data, rss, tmp_sizes, CLIENTS, HALF, MESSAGE};

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

    let mut clients = half_way_within_budget(&server, &server.maildir(), idle, "mailsink");

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
