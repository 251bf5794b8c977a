//! --relay to an LMTP downstream: Dovecot's LMTP server delivering into Maildirs, over TCP
//! and over its UNIX socket. Dovecot refuses unknown users at RCPT and a full mailbox
//! after the data, each recipient on its own; an SMTP client of mailsink gets one reply.

mod common;
mod relay_servers;

use common::{Client, Server};
use relay_servers::{Dovecot, SmtpSink};

const BODY: &[u8] =
    b"From: a@x.example\r\nSubject: to the store\r\n\r\n.\r\n..two dots\r\nlast line\r\n";

/// What a delivered file holds after Dovecot's own fields: our Received: field and the
/// body, CRLF as it came.
fn check_delivered(file: &str) {
    let ours = file
        .find("Received: from client.example ([127.0.0.1]) by mx.test with ESMTP")
        .unwrap_or_else(|| panic!("our Received: field is missing: {file}"));
    // Dovecot's trace fields come first (Return-Path, Delivered-To, its Received:).
    assert!(file.starts_with("Return-Path: <a@x.example>\n"), "{file}");
    let text = &file[ours..];
    // Dovecot stores LF line ends; the body is whole, its dot lines unstuffed.
    let body = String::from_utf8_lossy(BODY).replace("\r\n", "\n");
    assert!(text.ends_with(&body), "{text}");
}

#[test]
fn a_message_for_two_users_lands_in_both_maildirs() {
    let dovecot = Dovecot::start();
    let server = Server::start(&["--relay", &dovecot.url()]);
    let mut c = Client::hello(server.addr);
    let reply = c.send_message(
        "a@x.example",
        &["alice@example.org", "bob@example.org"],
        BODY,
    );
    // Dovecot answered each recipient with a reply of its own ("<alice@...> id Saved"),
    // so the client gets mailsink's 250.
    assert_eq!(reply, "250 2.0.0 Message accepted\r\n");
    assert!(c.cmd("QUIT").starts_with("221"));
    for name in ["alice", "bob"] {
        let files = dovecot.delivered(name);
        assert_eq!(files.len(), 1, "{name}: {}", dovecot.log());
        check_delivered(&files[0]);
    }
    server.wait_events("message", 1);
}

#[test]
fn one_recipient_passes_dovecots_reply_on() {
    let dovecot = Dovecot::start();
    let server = Server::start(&["--relay", &dovecot.url()]);
    let mut c = Client::hello(server.addr);
    let reply = c.send_message("a@x.example", &["alice@example.org"], BODY);
    assert!(
        reply.starts_with("250 2.0.0 <alice@example.org> ") && reply.ends_with(" Saved\r\n"),
        "{reply}"
    );
    check_delivered(&dovecot.delivered("alice")[0]);
}

#[test]
fn an_unknown_user_refuses_the_whole_message_for_an_smtp_client() {
    let dovecot = Dovecot::start();
    let server = Server::start(&["--relay", &dovecot.url()]);
    let mut c = Client::hello(server.addr);
    let reply = c.send_message(
        "a@x.example",
        &["alice@example.org", "carol@example.org"],
        BODY,
    );
    // Dovecot refused carol at RCPT. The client can be told one thing only, so no data
    // went to Dovecot: alice gets nothing now rather than twice after a retry.
    assert_eq!(
        reply,
        "550 5.1.1 <carol@example.org> User doesn't exist: carol@example.org\r\n"
    );
    assert!(dovecot.delivered("alice").is_empty());
    // The session goes on, and the same connection to Dovecot takes the next message.
    let reply = c.send_message("a@x.example", &["alice@example.org"], BODY);
    assert!(
        reply.starts_with("250 2.0.0 <alice@example.org> "),
        "{reply}"
    );
    assert_eq!(dovecot.delivered("alice").len(), 1);
    assert!(c.cmd("QUIT").starts_with("221"));
    // Dovecot numbers the transactions of a session: the delivery was the second
    // transaction (the first was reset) of one connection.
    let saved = dovecot.wait_log_line("saved mail to INBOX");
    assert!(saved.contains(":T2>"), "{}", dovecot.log());
}

#[test]
fn a_recipient_refused_after_the_data_is_reported_with_the_delivered_count() {
    let dovecot = Dovecot::start_with(true);
    let server = Server::start(&["--relay", &dovecot.url()]);
    let mut c = Client::hello(server.addr);
    let reply = c.send_message(
        "a@x.example",
        &["alice@example.org", "bob@example.org"],
        BODY,
    );
    // Dovecot took the data, saved it for alice, and refused bob (over quota): an SMTP
    // client hears the refusal, and that one recipient already has the message.
    assert_eq!(
        reply,
        "552-5.2.2 <bob@example.org> Quota exceeded (mailbox for user is full)\r\n\
         552 5.2.2 1 of 2 recipients were delivered before this refusal\r\n"
    );
    assert_eq!(dovecot.delivered("alice").len(), 1);
    assert!(dovecot.delivered("bob").is_empty());
    // Logged: the message did reach someone.
    server.wait_events("message", 1);
}

#[test]
fn over_dovecots_unix_socket() {
    let dovecot = Dovecot::start();
    let server = Server::start(&["--relay", &dovecot.unix_url()]);
    let mut c = Client::hello(server.addr);
    let reply = c.send_message("a@x.example", &["bob@example.org"], BODY);
    assert!(reply.starts_with("250 2.0.0 <bob@example.org> "), "{reply}");
    check_delivered(&dovecot.delivered("bob")[0]);
}

#[test]
fn smtp_sink_in_lmtp_mode_answers_each_recipient_after_the_data() {
    // A second LMTP implementation: smtp-sink -L, one "250 2.2.0 Ok" per recipient.
    let sink = SmtpSink::start(&["-L"]);
    let server = Server::start(&["--relay", &format!("lmtp://{}", sink.addr)]);
    let mut c = Client::hello(server.addr);
    let reply = c.send_message("a@x.example", &["b@y.example", "c@y.example"], BODY);
    assert_eq!(reply, "250 2.2.0 Ok\r\n");
    // Both replies were read, so the reused connection is in step: a reply left unread
    // would answer the next MAIL, and DATA would get a 250 instead of 354.
    let reply = c.send_message("a@x.example", &["b@y.example"], BODY);
    assert_eq!(reply, "250 2.2.0 Ok\r\n");
    let dumps = sink.wait_dumps(2);
    assert!(dumps[0].contains("X-Client-Proto: LMTP\n"), "{}", dumps[0]);
    assert!(
        dumps[1].contains("X-Rcpt-Args: <b@y.example>\n"),
        "{}",
        dumps[1]
    );
}
