//! The receiver of `examples/trace_fields.rs`, which prepends `Return-Path:` and `Received:`
//! the way the docs show, over a real socket: a body starting with a TAB cannot join the
//! fields it writes, whichever `LeadingWhitespace` policy it runs under.

mod common;

#[path = "../examples/trace_fields.rs"]
mod example;

use common::{serve, Client};
use example::TraceFields;
use smtp_session_tokio::Server;

const FORGED: &str = "\t; dkim=pass header.d=bank.example\r\n\
                      From: ceo@bank.example\r\n\r\nPay the invoice.\r\n";

/// Each field of the stored message's header section, unfolded (RFC 5322 section 2.2.3).
fn unfolded_fields(message: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let header = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in header.split("\r\n") {
        match (line.starts_with([' ', '\t']), fields.last_mut()) {
            (true, Some(field)) => field.push_str(line),
            _ => fields.push(line.to_owned()),
        }
    }
    fields
}

/// Sends one message with `body` and returns the server's reply to its end of data.
fn send_message(client: &mut Client, body: &str) -> String {
    assert!(client.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(client.cmd("RCPT TO:<b@example.net>").starts_with("250"));
    assert!(client.cmd("DATA").starts_with("354"));
    client.send(format!("{body}.\r\n"));
    client.reply()
}

fn start(insert_empty_line: bool) -> (common::Running, TraceFields) {
    let handler = TraceFields::default();
    let server_handler = handler.clone();
    let config = example::config(insert_empty_line);
    let running = serve(move |l| Server::new(server_handler).config(config).listener(l));
    (running, handler)
}

#[test]
fn a_body_starting_with_a_tab_is_refused_and_nothing_is_stored() {
    let (server, handler) = start(false);
    let mut client = Client::connect(server.addr);
    assert!(client.reply().starts_with("220 mx.example"));
    assert!(client.cmd("EHLO client.example").starts_with("250"));
    assert_eq!(
        send_message(&mut client, FORGED),
        "550 5.6.0 Message must begin with a header field, not a space or tab\r\n"
    );
    // The session goes on: an ordinary message after it is stored with whole fields.
    assert_eq!(
        send_message(&mut client, "Subject: hi\r\n\r\nhello\r\n"),
        "250 2.0.0 Message accepted\r\n"
    );
    assert!(client.cmd("QUIT").starts_with("221"));
    let stored = handler.stored.lock().unwrap().clone();
    assert_eq!(stored.len(), 1);
    let fields = unfolded_fields(&stored[0]);
    assert_eq!(fields[0], "Return-Path: <a@example.org>");
    assert!(fields[1].starts_with("Received: from client.example ([127.0.0.1])"));
    assert!(fields[1].ends_with(" +0000"), "{:?}", fields[1]);
    assert_eq!(fields[2], "Subject: hi");
}

#[test]
fn with_an_empty_line_inserted_the_tab_line_is_body_not_a_fold() {
    let (server, handler) = start(true);
    let mut client = Client::connect(server.addr);
    assert!(client.reply().starts_with("220 mx.example"));
    assert!(client.cmd("EHLO client.example").starts_with("250"));
    assert_eq!(
        send_message(&mut client, FORGED),
        "250 2.0.0 Message accepted\r\n"
    );
    assert!(client.cmd("QUIT").starts_with("221"));
    let stored = handler.stored.lock().unwrap().clone();
    let fields = unfolded_fields(&stored[0]);
    assert_eq!(fields.len(), 2, "{fields:?}");
    assert_eq!(fields[0], "Return-Path: <a@example.org>");
    assert!(fields[1].ends_with(" +0000"), "{:?}", fields[1]);
    let text = String::from_utf8(stored[0].clone()).unwrap();
    assert!(
        text.ends_with(&format!(" +0000\r\n\r\n{FORGED}")),
        "{text:?}"
    );
}
