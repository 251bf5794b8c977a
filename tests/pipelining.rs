//! RFC 2920 pipelining: one reply per command, in order, coalesced into few writes; input
//! after a pending command is kept, never lost.

mod common;
use common::*;
use smtp_session::{Config, Decision, Hooks, Output, Session};

#[test]
fn a_whole_transaction_in_one_read_gets_every_reply_in_one_write() {
    let now = start();
    let mut s = Session::new(config(), info(), now);
    while s.poll_output().is_some() {}
    s.handle_input(
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nRSET\r\nNOOP\r\n",
        now,
    )
    .unwrap();
    let Some(Output::Write(bytes)) = s.poll_output() else {
        panic!("one write")
    };
    assert!(s.poll_output().is_none(), "coalesced into a single write");
    let text = String::from_utf8(bytes).unwrap();
    let finals: Vec<&str> = text
        .split("\r\n")
        .filter(|l| l.len() > 3 && &l[3..4] == " ")
        .collect();
    assert_eq!(
        finals,
        [
            "250 DSN",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "250 2.1.5 Recipient OK",
            "250 2.0.0 OK",
            "250 2.0.0 OK"
        ]
    );
}

#[test]
fn replies_before_a_hook_call_are_flushed_before_it_and_later_input_waits() {
    let config = Config {
        hooks: Hooks {
            rcpt_to: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let mut h = Harness::manual(config);
    h.transcript.clear();
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nNOOP\r\nRSET\r\n");
    h.expect(
        "C: HELO c
         C: MAIL FROM:<a@example.org>
         C: RCPT TO:<b@example.net>
         C: NOOP
         C: RSET
         S: 250 mx.example
         S: 250 2.1.0 Sender OK
         H: rcpt_to <b@example.net>",
    );
    h.decide(Decision::Accept);
    h.expect(
        "C: HELO c
         C: MAIL FROM:<a@example.org>
         C: RCPT TO:<b@example.net>
         C: NOOP
         C: RSET
         S: 250 mx.example
         S: 250 2.1.0 Sender OK
         H: rcpt_to <b@example.net>
         D: accept
         S: 250 2.1.5 Recipient OK
         S: 250 2.0.0 OK
         S: 250 2.0.0 OK",
    );
}

#[test]
fn a_pending_hook_buffers_input_up_to_the_limit_then_pushes_back() {
    let config = Config {
        hooks: Hooks {
            mail_from: true,
            ..Hooks::NONE
        },
        max_pending_input: 4096,
        ..config()
    };
    let mut h = Harness::manual(config);
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\n");
    let flood: Vec<u8> = b"NOOP\r\n".repeat(2000); // 12000 bytes
    let taken = h.session.handle_input(&flood, h.now).unwrap();
    assert_eq!(taken, 4096, "only the configured amount is buffered");
    assert_eq!(h.session.handle_input(&flood[taken..], h.now).unwrap(), 0);
    // Once the hook is answered the buffered commands run and more input is taken.
    h.backlog.extend_from_slice(&flood[taken..]);
    h.decide(Decision::Accept);
    h.offer();
    let noops = h
        .server_lines()
        .iter()
        .filter(|l| **l == "250 2.0.0 OK")
        .count();
    assert_eq!(noops, 2000, "no command was lost");
}

#[test]
fn the_reply_order_follows_the_command_order_with_errors_mixed_in() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.send("MAIL FROM:<a@example.org>\r\nHELO c\r\nFOO\r\nMAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\nQUIT\r\n");
    h.expect(
        "C: MAIL FROM:<a@example.org>
         C: HELO c
         C: FOO
         C: MAIL FROM:<a@example.org>
         C: MAIL FROM:<a@example.org>
         C: QUIT
         S: 503 5.5.1 Send HELO or EHLO first
         S: 250 mx.example
         S: 500 5.5.1 Command unrecognized
         S: 250 2.1.0 Sender OK
         S: 503 5.5.1 Sender already specified
         S: 221 2.0.0 Bye
         -- close
         H: disconnect close=local reply=221 2.0.0 quit",
    );
}

fn strict() -> Config {
    Config {
        reject_unauth_pipelining: true,
        ..config()
    }
}

#[test]
fn data_followed_by_its_body_in_the_same_read_is_refused_when_strict() {
    let mut h = Harness::new(strict());
    h.send("EHLO c\r\n");
    h.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: spam\r\n\r\nbuy\r\n.\r\n");
    let lines = h.server_lines();
    assert_eq!(
        &lines[lines.len() - 3..],
        [
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "554 5.5.0 mx.example Error: improper use of SMTP command pipelining"
        ]
    );
    assert_eq!(h.closes, 1);
    assert!(h.messages.is_empty());
}

#[test]
fn pipelining_without_having_been_offered_it_is_refused_when_strict() {
    let mut h = Harness::new(strict());
    h.transcript.clear();
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\n");
    h.expect(
        "C: HELO c
         C: MAIL FROM:<a@example.org>
         S: 554 5.5.0 mx.example Error: improper use of SMTP command pipelining
         -- close
         H: disconnect close=local reply=554 5.5.0 helo",
    );
}

#[test]
fn lawful_pipelining_passes_when_strict_and_anything_passes_by_default() {
    let script = [
        "EHLO c\r\n",
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
        "hi\r\n.\r\nQUIT\r\n",
    ];
    let mut h = Harness::new(strict());
    for part in script {
        h.send(part);
    }
    assert_eq!(h.messages.len(), 1);
    let mut h = Harness::new(config());
    h.send(&script.concat());
    assert_eq!(h.messages.len(), 1, "the default is lenient");
}
