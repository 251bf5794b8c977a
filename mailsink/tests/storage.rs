//! Maildir storage and the JSON log: exact bytes after dot-unstuffing, BDAT, 451 when the
//! store fails, --discard, and exactly one disconnect line per connection.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Client, Server, HOSTNAME};

#[test]
fn stored_bytes_are_the_message_after_dot_unstuffing() {
    let server = Server::start(&[]);
    let mut c = Client::hello(server.addr);
    let body: &[u8] = b"From: a@x.example\r\nSubject: dots\r\n\r\n.a line with one dot\r\n..two dots\r\n.\r\n\xc3\xa9 8-bit \xff\r\nlast line\r\n";
    let reply = c.send_message("a@x.example", &["b@y.example", "c@y.example"], body);
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    // An empty message, and one without a final CRLF (DATA adds it; it belongs to the end).
    let reply = c.send_message("", &["b@y.example"], b"");
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    assert!(c.cmd("QUIT").starts_with("221"));

    let stored = server.stored();
    assert_eq!(stored.len(), 2);
    let by_bytes: Vec<&[u8]> = stored.iter().map(|(_, b)| b.as_slice()).collect();
    assert!(by_bytes.contains(&body));
    assert!(by_bytes.contains(&&b""[..]));
    // tmp/ is left empty.
    assert_eq!(
        std::fs::read_dir(server.maildir().join("tmp"))
            .unwrap()
            .count(),
        0
    );

    let messages = server.wait_events("message", 2);
    let first = messages
        .iter()
        .find(|m| m["size"] == body.len())
        .expect("the first message's line");
    assert_eq!(first["envelope"]["mail_from"], "a@x.example");
    assert_eq!(first["envelope"]["recipients"][0]["path"], "b@y.example");
    assert_eq!(first["envelope"]["recipients"][1]["path"], "c@y.example");
    assert_eq!(first["chunked"], false);
    assert_eq!(first["connection"]["helo"]["host"], "client.example");
    assert_eq!(first["connection"]["remoteip"], "127.0.0.1");
    let file = first["file"].as_str().unwrap();
    assert_eq!(common::after_trace(&std::fs::read(file).unwrap()), body);
    assert!(file.starts_with(
        std::fs::canonicalize(server.maildir())
            .unwrap()
            .join("new")
            .to_str()
            .unwrap()
    ));

    let disconnects = server.wait_events("disconnect", 1);
    assert_eq!(disconnects.len(), 1);
    assert_eq!(
        disconnects[0]["connection"]["id"],
        first["connection"]["id"]
    );
    assert_eq!(disconnects[0]["arguments"]["close"], "local");
    assert_eq!(disconnects[0]["arguments"]["reply"]["state"], "QUIT");
    assert_eq!(disconnects[0]["transaction"], serde_json::json!({}));
}

#[test]
fn bdat_chunks_are_stored_byte_for_byte() {
    let server = Server::start(&[]);
    let mut c = Client::hello(server.addr);
    assert!(c
        .cmd("MAIL FROM:<a@x.example> BODY=BINARYMIME")
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@y.example>").starts_with("250"));
    let chunks: [&[u8]; 3] = [
        b"Subject: bdat\r\n\r\n",
        b"binary \x00\x01 and a lone dot line\r\n.\r\nnot the end\n\r",
        b"\r\n.\r\nQUIT\r\n",
    ];
    for (i, chunk) in chunks.iter().enumerate() {
        let last = if i == chunks.len() - 1 { " LAST" } else { "" };
        c.send(format!("BDAT {}{last}\r\n", chunk.len()));
        c.send(chunk);
        let reply = c.reply();
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    assert!(c.cmd("QUIT").starts_with("221"));
    let stored = server.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, chunks.concat());
    let line = &server.wait_events("message", 1)[0];
    assert_eq!(line["chunked"], true);
    assert_eq!(line["size"], chunks.concat().len());
}

#[test]
fn a_failed_store_is_451_never_250() {
    let server = Server::start(&[]);
    let tmp = server.maildir().join("tmp");
    std::fs::remove_dir(&tmp).unwrap();
    std::fs::write(&tmp, b"tmp/ is now a file, so nothing can be written").unwrap();

    let mut c = Client::hello(server.addr);
    let reply = c.send_message(
        "a@x.example",
        &["b@y.example"],
        b"Subject: lost?\r\n\r\nx\r\n",
    );
    assert!(reply.starts_with("451 4.3.0 "), "{reply}");
    // The session goes on; the client may retry later.
    assert_eq!(c.cmd("RSET"), "250 2.0.0 OK\r\n");
    assert!(c.cmd("QUIT").starts_with("221"));
    assert!(server.stored().is_empty());
    server.wait_events("disconnect", 1);
    assert!(server.events("message").is_empty());

    // Once the directory is back, delivery works again.
    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let mut c = Client::hello(server.addr);
    let reply = c.send_message(
        "a@x.example",
        &["b@y.example"],
        b"Subject: kept\r\n\r\nx\r\n",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    assert_eq!(server.stored().len(), 1);
}

#[test]
fn discard_accepts_and_stores_nothing() {
    let server = Server::start(&["--discard"]);
    let mut c = Client::hello(server.addr);
    let reply = c.send_message(
        "a@x.example",
        &["b@y.example"],
        b"Subject: gone\r\n\r\nx\r\n",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    c.cmd("QUIT");
    assert!(!server.maildir().exists());
    let line = &server.wait_events("message", 1)[0];
    assert_eq!(line["file"], serde_json::Value::Null);
    assert_eq!(line["size"], 20);
}

#[test]
fn exactly_one_disconnect_line_per_connection_however_it_ends() {
    let server = Server::start(&["--timeout", "1"]);
    // QUIT.
    let mut quit = Client::hello(server.addr);
    quit.cmd("QUIT");
    // The client goes away mid-transaction.
    let mut gone = Client::hello(server.addr);
    gone.cmd("MAIL FROM:<a@x.example>");
    drop(gone);
    // The client half-closes after pipelining a command: it is still answered.
    let mut half = Client::hello(server.addr);
    half.send("NOOP\r\n");
    half.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(half.read_to_close(), b"250 2.0.0 OK\r\n");
    // Idle until the timeout.
    let mut idle = Client::connect(server.addr);
    idle.reply();
    let bytes = idle.read_to_close();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        format!("421 4.4.2 {HOSTNAME} Error: timeout exceeded\r\n")
    );

    let lines = server.wait_events("disconnect", 4);
    std::thread::sleep(Duration::from_millis(300));
    let lines_after = server.events("disconnect");
    assert_eq!(lines.len(), lines_after.len(), "late duplicate lines");
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for l in &lines_after {
        *per_id
            .entry(l["connection"]["id"].as_str().unwrap().into())
            .or_default() += 1;
    }
    assert_eq!(per_id.len(), 4);
    assert!(per_id.values().all(|&n| n == 1), "{per_id:?}");
    let closes: Vec<(String, String)> = lines_after
        .iter()
        .map(|l| {
            (
                l["arguments"]["close"].as_str().unwrap().to_string(),
                l["arguments"]["reply"]["state"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert!(
        closes.contains(&("local".into(), "QUIT".into())),
        "{closes:?}"
    );
    assert!(
        closes.contains(&("remote".into(), "MAIL".into())),
        "{closes:?}"
    );
    assert!(
        closes.contains(&("remote".into(), "NOOP".into())),
        "{closes:?}"
    );
    assert!(
        closes.contains(&("local".into(), "TIMEOUT".into())),
        "{closes:?}"
    );
}

#[test]
fn size_and_recipient_limits_come_from_the_command_line() {
    let server = Server::start(&["--max-message-size", "1000", "--max-recipients", "100"]);
    let mut c = Client::connect(server.addr);
    c.reply();
    let ehlo = c.cmd("EHLO client.example");
    assert!(ehlo.contains("250-SIZE 1000\r\n"), "{ehlo}");
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "no users, no AUTH: {ehlo}");
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(2000));
    let reply = c.send_message("a@x.example", &["b@y.example"], big.as_bytes());
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    c.cmd("MAIL FROM:<a@x.example>");
    for i in 0..100 {
        assert!(c
            .cmd(&format!("RCPT TO:<r{i}@y.example>"))
            .starts_with("250"));
    }
    assert!(c.cmd("RCPT TO:<r100@y.example>").starts_with("452"));
    assert!(server.stored().is_empty());
}

#[test]
fn proxy_protocol_replaces_the_addresses() {
    let server = Server::start(&["--proxy-protocol"]);
    let mut c = Client::connect(server.addr);
    c.send("PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n");
    assert_eq!(c.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
    c.cmd("EHLO client.example");
    c.cmd("QUIT");
    let line = &server.wait_events("disconnect", 1)[0];
    assert_eq!(line["connection"]["remoteip"], "192.0.2.10");
    assert_eq!(line["connection"]["remoteport"], 40000);
    assert_eq!(line["connection"]["localip"], "198.51.100.1");
    assert_eq!(line["connection"]["localport"], 25);
}
