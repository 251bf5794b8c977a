//! --relay to an SMTP downstream: Postfix's smtp-sink (accepting, refusing, slow, closing
//! with 421), a port nobody listens on, and another mailsink (connection reuse). The client
//! is answered only once the downstream has answered, with the downstream's reply.

mod common;
mod relay_servers;

use std::time::{Duration, Instant};

use common::{Client, Server};
use relay_servers::{eventually_contains, free_port, CountingProxy, SmtpSink};

/// mailsink relaying to `url`, with `more` arguments.
fn relaying(url: &str, more: &[&str]) -> Server {
    let mut args = vec!["--relay", url];
    args.extend_from_slice(more);
    Server::start(&args)
}

/// The message part of an smtp-sink dump: from our Received: field on, LF line ends.
fn relayed_text(dump: &str) -> &str {
    let at = dump
        .find("Received: from client.example")
        .unwrap_or_else(|| panic!("our Received: field is missing: {dump}"));
    &dump[at..]
}

/// The text after the Received: field (its continuation lines start with a tab).
fn after_received(text: &str) -> String {
    let mut lines = text.split_inclusive('\n');
    lines.next();
    lines.skip_while(|l| l.starts_with('\t')).collect()
}

#[test]
fn a_message_reaches_smtp_sink_with_its_envelope_and_every_dot_line() {
    let sink = SmtpSink::start(&[]);
    let server = relaying(&sink.url(), &[]);
    let mut c = Client::hello(server.addr);
    assert_eq!(
        c.cmd("MAIL FROM:<a@x.example> RET=HDRS ENVID=env+2Bid"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert!(c
        .cmd("RCPT TO:<b@y.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.example")
        .starts_with("250 2.1.5"));
    assert!(c.cmd("RCPT TO:<c@y.example>").starts_with("250 2.1.5"));
    assert!(c.cmd("DATA").starts_with("354"));
    // A line that is a lone dot, lines starting with dots, 8-bit text: stuffed by the
    // client, unstuffed by mailsink, stuffed again for smtp-sink.
    let body =
        "From: a@x.example\r\nSubject: relay\r\n\r\n.\r\n..two\r\n.one\r\ncaf\u{e9}\r\nlast\r\n";
    c.send(common::dot_stuff(body.as_bytes()));
    c.send(b".\r\n");
    // smtp-sink's own reply to the end of the data, passed on.
    assert_eq!(c.reply(), "250 2.0.0 Ok\r\n");
    assert!(c.cmd("QUIT").starts_with("221"));

    let dump = &sink.wait_dumps(1)[0];
    // Parameters smtp-sink advertised (8BITMIME, DSN) go on, re-encoded; it has no SIZE.
    assert!(
        dump.contains("X-Mail-Args: <a@x.example> BODY=8BITMIME RET=HDRS ENVID=env+2Bid\n"),
        "{dump}"
    );
    assert!(
        dump.contains(
            "X-Rcpt-Args: <b@y.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.example\n\
             X-Rcpt-Args: <c@y.example>\n"
        ),
        "{dump}"
    );
    let text = relayed_text(dump);
    assert!(
        text.starts_with("Received: from client.example ([127.0.0.1]) by mx.test with ESMTP;"),
        "{text}"
    );
    // The body whole (smtp-sink writes LF line ends and one empty line after the message).
    assert_eq!(
        after_received(text),
        format!("{}\n", body.replace("\r\n", "\n"))
    );

    // Logged like a stored message, without a file.
    let line = &server.wait_events("message", 1)[0];
    assert_eq!(line["envelope"]["mail_from"], "a@x.example");
    assert_eq!(line["file"], serde_json::Value::Null);
    assert!(!server.maildir().exists(), "no Maildir while relaying");
}

/// One message to `server`; its reply to the end of the data.
fn one_message(server: &Server) -> (Client, String) {
    let mut c = Client::hello(server.addr);
    let reply = c.send_message(
        "a@x.example",
        &["b@y.example"],
        b"Subject: refused?\r\n\r\nx\r\n",
    );
    (c, reply)
}

/// The session goes on after a refusal: RSET, and another message gets the same answer.
fn session_goes_on(mut c: Client, again: &str) {
    assert_eq!(c.cmd("RSET"), "250 2.0.0 OK\r\n");
    let reply = c.send_message(
        "a@x.example",
        &["b@y.example"],
        b"Subject: again\r\n\r\nx\r\n",
    );
    assert_eq!(reply, again);
    assert!(c.cmd("QUIT").starts_with("221"));
}

#[test]
fn a_recipient_refused_downstream_is_refused_to_the_client_with_its_reply() {
    let sink = SmtpSink::start(&[
        "-f",
        "RCPT",
        "-B",
        "550 5.1.1 <b@y.example> No such user here",
    ]);
    let server = relaying(&sink.url(), &[]);
    let (c, reply) = one_message(&server);
    assert_eq!(reply, "550 5.1.1 <b@y.example> No such user here\r\n");
    session_goes_on(c, "550 5.1.1 <b@y.example> No such user here\r\n");
    assert!(
        sink.dumps().is_empty(),
        "nothing was sent after the refusal"
    );
    assert!(server.events("message").is_empty());
}

#[test]
fn a_transient_refusal_of_mail_from_is_passed_on() {
    let sink = SmtpSink::start(&["-r", "MAIL", "-b", "452 4.3.1 Insufficient system storage"]);
    let server = relaying(&sink.url(), &[]);
    let (c, reply) = one_message(&server);
    assert_eq!(reply, "452 4.3.1 Insufficient system storage\r\n");
    session_goes_on(c, "452 4.3.1 Insufficient system storage\r\n");
}

#[test]
fn a_refusal_of_the_data_is_passed_on() {
    let sink = SmtpSink::start(&["-f", ".", "-B", "554 5.7.1 Message content rejected"]);
    let server = relaying(&sink.url(), &[]);
    let (c, reply) = one_message(&server);
    assert_eq!(reply, "554 5.7.1 Message content rejected\r\n");
    session_goes_on(c, "554 5.7.1 Message content rejected\r\n");
}

#[test]
fn a_downstream_421_becomes_451_and_our_session_stays_open() {
    let sink = SmtpSink::start(&["-Q", "."]);
    let server = relaying(&sink.url(), &[]);
    let (c, reply) = one_message(&server);
    // smtp-sink said "421 4.0.0 Server closing connection" and closed; our client's
    // session is not closed for it.
    assert_eq!(reply, "451 4.0.0 Server closing connection\r\n");
    session_goes_on(c, "451 4.0.0 Server closing connection\r\n");
    assert!(server.events("message").is_empty());
}

#[test]
fn a_downstream_slower_than_the_relay_timeout_gets_451_and_the_session_goes_on() {
    // smtp-sink waits 15 seconds before answering the end of the data; the relay gives up
    // after 2.
    let sink = SmtpSink::start(&["-W", ".:15"]);
    let server = relaying(&sink.url(), &["--relay-timeout", "2"]);
    let start = Instant::now();
    let (mut c, reply) = one_message(&server);
    let waited = start.elapsed();
    assert_eq!(
        reply,
        "451 4.4.2 The next hop did not answer in time, try again later\r\n"
    );
    assert!(
        waited < Duration::from_secs(12),
        "the client waited {waited:?}, as long as the downstream"
    );
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK\r\n");
    assert_eq!(c.cmd("RSET"), "250 2.0.0 OK\r\n");
    assert!(c.cmd("QUIT").starts_with("221"));
    assert!(server.events("message").is_empty());
    eventually_contains("did not finish within 2s", || {
        server.stderr_lines().join("\n")
    });
}

#[test]
fn a_downstream_that_is_down_gets_451_4_4_1() {
    let url = format!("smtp://127.0.0.1:{}", free_port());
    let server = relaying(&url, &[]);
    let (c, reply) = one_message(&server);
    assert_eq!(
        reply,
        "451 4.4.1 The next hop is not reachable, try again later\r\n"
    );
    session_goes_on(
        c,
        "451 4.4.1 The next hop is not reachable, try again later\r\n",
    );
    // The reason is logged.
    eventually_contains("refused", || server.stderr_lines().join("\n"));
}

/// The ids of the downstream connections that brought `n` messages to `downstream`.
fn downstream_connections(downstream: &Server, n: usize) -> Vec<String> {
    downstream
        .wait_events("message", n)
        .iter()
        .map(|m| m["connection"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn downstream_connections_are_reused_across_messages_and_clients() {
    let downstream = Server::start(&[]);
    let url = format!("smtp://{}?starttls=no", downstream.addr);
    let server = relaying(&url, &["--relay-idle", "60"]);
    for client in 0..2 {
        let mut c = Client::hello(server.addr);
        for i in 0..2 {
            let body = format!("Subject: {client}.{i}\r\n\r\nx\r\n");
            let reply = c.send_message("a@x.example", &["b@y.example"], body.as_bytes());
            assert_eq!(reply, "250 2.0.0 Message accepted\r\n");
        }
        assert!(c.cmd("QUIT").starts_with("221"));
    }
    let ids = downstream_connections(&downstream, 4);
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one connection: {ids:?}"
    );
    // The downstream stored what the client sent, after our Received: field, and was told
    // its size with SIZE=.
    let stored = downstream.stored();
    assert_eq!(stored.len(), 4);
    let lines = downstream.wait_events("message", 4);
    for (line, (_, bytes)) in lines.iter().zip(&stored) {
        assert_eq!(line["envelope"]["mail_params"]["size"], bytes.len());
    }
    for (_, bytes) in &stored {
        let text = String::from_utf8_lossy(bytes);
        let received = "Received: from client.example ([127.0.0.1]) by mx.test with ESMTP\r\n\
                        \tfor <b@y.example>; ";
        assert!(text.starts_with(received), "{text}");
        assert!(text.ends_with("\r\n\r\nx\r\n"), "{text}");
    }
}

#[test]
fn without_reuse_each_message_has_its_own_connection() {
    let downstream = Server::start(&[]);
    let url = format!("smtp://{}?starttls=no", downstream.addr);
    let server = relaying(&url, &["--relay-idle", "0"]);
    let mut c = Client::hello(server.addr);
    for _ in 0..2 {
        let reply = c.send_message("a@x.example", &["b@y.example"], b"Subject: x\r\n\r\nx\r\n");
        assert_eq!(reply, "250 2.0.0 Message accepted\r\n");
    }
    let ids = downstream_connections(&downstream, 2);
    assert_ne!(ids[0], ids[1]);
    // Each was closed with QUIT, not dropped.
    let ends = downstream.wait_events("disconnect", 2);
    assert!(
        ends.iter()
            .all(|e| e["arguments"]["reply"]["state"] == "QUIT"),
        "{ends:#?}"
    );
}

#[test]
fn a_bad_relay_setting_stops_the_start_with_its_reason() {
    for (args, says) in [
        (
            &["--relay", "smtp://mx.example?starttls=maybe"][..],
            "required, opportunistic or no",
        ),
        (&["--relay", "lmtp://127.0.0.1"][..], "needs a port"),
        (
            &["--relay", "smtp://127.0.0.1:25", "--discard"][..],
            "cannot be used with",
        ),
        (&["--relay-timeout", "5"][..], "--relay <URL>"),
        (
            &["--relay", "smtp://127.0.0.1:25", "--relay-timeout", "0"][..],
            "relay-timeout",
        ),
    ] {
        let (status, stderr) = common::run_to_exit(args);
        assert!(!status.success(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn an_idle_connection_the_downstream_closed_is_replaced() {
    // The downstream ends connections idle for a second (with 421 4.4.2).
    let downstream = Server::start(&["--timeout", "1"]);
    let url = format!("smtp://{}?starttls=no", downstream.addr);
    let server = relaying(&url, &["--relay-idle", "60"]);
    let mut c = Client::hello(server.addr);
    let body = b"Subject: x\r\n\r\nx\r\n";
    let reply = c.send_message("a@x.example", &["b@y.example"], body);
    assert_eq!(reply, "250 2.0.0 Message accepted\r\n");
    downstream.wait_events("disconnect", 1);
    // The kept connection answers MAIL with that 421 (or not at all): the message goes
    // on a new one, and the client notices nothing.
    let reply = c.send_message("a@x.example", &["b@y.example"], body);
    assert_eq!(reply, "250 2.0.0 Message accepted\r\n");
    let ids = downstream_connections(&downstream, 2);
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn no_more_downstream_connections_than_allowed_at_once() {
    // smtp-sink takes a second over each message; five clients send at once, two
    // connections may be open.
    let sink = SmtpSink::start(&["-W", ".:1"]);
    let proxy = CountingProxy::start(sink.addr);
    let url = format!("smtp://{}", proxy.addr);
    let server = relaying(
        &url,
        &["--relay-max-connections", "2", "--relay-timeout", "20"],
    );
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut c = Client::hello(addr);
                let body = format!("Subject: {i}\r\n\r\nx\r\n");
                c.send_message("a@x.example", &["b@y.example"], body.as_bytes())
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), "250 2.0.0 Ok\r\n");
    }
    assert_eq!(sink.wait_dumps(5).len(), 5);
    assert_eq!(proxy.most_at_once(), 2);
}

#[test]
fn what_the_downstream_cannot_take_is_refused_and_what_it_does_not_offer_is_left_out() {
    // smtp-sink without 8BITMIME and DSN (and it never offers SMTPUTF8).
    let sink = SmtpSink::start(&["-8", "-N"]);
    let server = relaying(&sink.url(), &[]);
    let mut c = Client::hello(server.addr);
    let reply = c.send_message("a@x.example", &["b@y.example"], "caf\u{e9}\r\n".as_bytes());
    assert_eq!(
        reply,
        "554 5.6.3 The next hop does not accept 8-bit content (8BITMIME)\r\n"
    );
    assert!(c.cmd("MAIL FROM:<a@x.example> SMTPUTF8").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@y.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert_eq!(
        c.cmd("Subject: utf8\r\n\r\nx\r\n."),
        "550 5.6.7 The next hop does not accept internationalized mail (SMTPUTF8)\r\n"
    );
    // DSN parameters are dropped for a downstream without DSN; the message goes.
    assert!(c
        .cmd("MAIL FROM:<a@x.example> RET=FULL ENVID=e1")
        .starts_with("250"));
    assert!(c
        .cmd("RCPT TO:<b@y.example> NOTIFY=NEVER")
        .starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert_eq!(c.cmd("Subject: dsn\r\n\r\nx\r\n."), "250 2.0.0 Ok\r\n");
    let dumps = sink.wait_dumps(1);
    assert_eq!(dumps.len(), 1, "only the last message went: {dumps:?}");
    assert!(
        dumps[0].contains("X-Mail-Args: <a@x.example>\nX-Rcpt-Args: <b@y.example>\n"),
        "{}",
        dumps[0]
    );
}
