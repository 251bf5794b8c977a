//! 200 simultaneous connections, each sending several messages (half of them pipelining):
//! every 250 after a message must be matched by exactly one stored file with that message.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::Server;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

const CONNECTIONS: usize = 200;
const MESSAGES: usize = 5;

/// One SMTP client; returns the ids of the messages that got a 250.
async fn client(addr: std::net::SocketAddr, n: usize, barrier: Arc<Barrier>) -> Vec<String> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    // One reply's last line.
    macro_rules! reply {
        () => {{
            loop {
                line.clear();
                let got = read.read_line(&mut line).await.expect("read");
                assert!(got > 0, "connection {n} closed early");
                if line.as_bytes().get(3) != Some(&b'-') {
                    break line.clone();
                }
            }
        }};
    }
    assert!(reply!().starts_with("220"));
    // Everyone is connected and greeted before anyone sends mail.
    barrier.wait().await;
    write
        .write_all(format!("EHLO c{n}.example\r\n").as_bytes())
        .await
        .unwrap();
    assert!(reply!().starts_with("250"));
    let pipelining = n.is_multiple_of(2);
    let mut accepted = Vec::new();
    for m in 0..MESSAGES {
        let id = format!("{n}-{m}");
        let body = format!(
            "Subject: load {id}\r\nX-Id: {id}\r\n\r\n{}\r\n.line with a dot\r\n",
            "payload ".repeat(20 + m * 50)
        )
        .replace("\r\n.line", "\r\n..line");
        let envelope =
            format!("MAIL FROM:<c{n}@example.org>\r\nRCPT TO:<r{m}@example.net>\r\nDATA\r\n");
        if pipelining {
            write.write_all(envelope.as_bytes()).await.unwrap();
            for _ in 0..3 {
                reply!();
            }
        } else {
            for cmd in envelope.split_inclusive("\r\n") {
                write.write_all(cmd.as_bytes()).await.unwrap();
                reply!();
            }
        }
        write.write_all(body.as_bytes()).await.unwrap();
        write.write_all(b".\r\n").await.unwrap();
        let done = reply!();
        if done.starts_with("250 ") {
            accepted.push(id);
        }
    }
    write.write_all(b"QUIT\r\n").await.unwrap();
    assert!(reply!().starts_with("221"));
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_connections_every_250_is_a_stored_file() {
    // All 200 come from 127.0.0.1: the per-address limit (50 by default) is not under test.
    let server = Server::start(&["--max-connections-per-ip", "0"]);
    let barrier = Arc::new(Barrier::new(CONNECTIONS));
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|n| tokio::spawn(client(server.addr, n, barrier.clone())))
        .collect();
    let mut acknowledged = Vec::new();
    for task in tasks {
        let ids = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("a client took too long")
            .expect("a client failed");
        acknowledged.extend(ids);
    }
    assert_eq!(
        acknowledged.len(),
        CONNECTIONS * MESSAGES,
        "every message was accepted"
    );

    let stored = server.stored();
    let mut by_id: HashMap<String, Vec<u8>> = HashMap::new();
    for (path, bytes) in stored {
        let text = String::from_utf8(bytes.clone()).unwrap();
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("X-Id: "))
            .unwrap_or_else(|| panic!("no X-Id in {}", path.display()))
            .to_string();
        assert!(by_id.insert(id, bytes).is_none(), "a message stored twice");
    }
    let stored_ids: BTreeSet<&String> = by_id.keys().collect();
    let acked_ids: BTreeSet<&String> = acknowledged.iter().collect();
    assert_eq!(stored_ids, acked_ids);
    // Spot-check content: dot-unstuffed, nothing added.
    let sample = &by_id["7-3"];
    assert!(sample.starts_with(b"Subject: load 7-3\r\nX-Id: 7-3\r\n\r\npayload "));
    assert!(sample.ends_with(b"\r\n.line with a dot\r\n"));

    let messages = server.wait_events("message", CONNECTIONS * MESSAGES);
    assert_eq!(messages.len(), CONNECTIONS * MESSAGES);
    let ends = server.wait_events("disconnect", CONNECTIONS);
    assert_eq!(ends.len(), CONNECTIONS);
    assert!(ends
        .iter()
        .all(|l| l["arguments"]["reply"]["state"] == "QUIT"));
}
