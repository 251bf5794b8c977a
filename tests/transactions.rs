//! Mail transactions: envelope building, RSET, several messages per connection, sequencing
//! errors and the simple commands.

mod common;
use common::*;
use smtp_session::{Config, ForwardPath, ReversePath};

#[test]
fn two_messages_on_one_connection_with_rset_between() {
    let mut h = Harness::new(config());
    h.send(
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\n\
         DATA\r\none\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nRSET\r\n\
         MAIL FROM:<d@example.org>\r\nRCPT TO:<e@example.net>\r\nDATA\r\ntwo\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(h.messages.len(), 2);
    let first = &h.messages[0].envelope;
    assert_eq!(first.mail_from.to_string(), "a@example.org");
    let rcpts: Vec<String> = first
        .recipients
        .iter()
        .map(|r| r.path.to_string())
        .collect();
    assert_eq!(rcpts, ["b@example.net", "c@example.net"]);
    assert_eq!(h.messages[0].body, b"one\r\n");
    assert_eq!(
        h.messages[1].envelope.mail_from.to_string(),
        "d@example.org"
    );
    assert_eq!(h.messages[1].body, b"two\r\n");
    assert_eq!(h.closes, 1);
}

#[test]
fn null_sender_and_postmaster_are_accepted() {
    let mut h = Harness::new(config());
    h.send("HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\nx\r\n.\r\n");
    let env = &h.messages[0].envelope;
    assert_eq!(env.mail_from, ReversePath::Null);
    assert_eq!(env.recipients[0].path, ForwardPath::Postmaster);
}

#[test]
fn sequencing_errors_are_503_and_the_session_continues() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.send("RCPT TO:<b@example.net>\r\nMAIL FROM:<a@example.org>\r\nHELO c\r\nRCPT TO:<b@example.net>\r\nNOOP\r\n");
    h.expect(
        "C: RCPT TO:<b@example.net>
         C: MAIL FROM:<a@example.org>
         C: HELO c
         C: RCPT TO:<b@example.net>
         C: NOOP
         S: 503 5.5.1 Need MAIL command first
         S: 503 5.5.1 Send HELO or EHLO first
         S: 250 mx.example
         S: 503 5.5.1 Need MAIL command first
         S: 250 2.0.0 OK",
    );
}

#[test]
fn helo_is_optional_when_configured() {
    let mut h = Harness::new(Config {
        require_helo: false,
        ..config()
    });
    h.transcript.clear();
    h.send("MAIL FROM:<a@example.org>\r\n");
    assert_eq!(h.server_lines(), ["250 2.1.0 Sender OK"]);
}

#[test]
fn ehlo_resets_the_transaction() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nHELO c\r\nRCPT TO:<b@example.net>\r\n");
    assert_eq!(
        h.server_lines().last(),
        Some(&"503 5.5.1 Need MAIL command first")
    );
}

#[test]
fn simple_commands_and_their_argument_errors() {
    let mut h = Harness::new(Config {
        vrfy: true,
        expn: false,
        ..config()
    });
    h.transcript.clear();
    h.send("NOOP\r\nNOOP anything goes\r\nRSET\r\nRSET x\r\nVRFY user\r\nEXPN list\r\nHELP\r\nHELP MAIL\r\nQUIT now\r\nQUIT\r\n");
    h.expect(
        "C: NOOP
         C: NOOP anything goes
         C: RSET
         C: RSET x
         C: VRFY user
         C: EXPN list
         C: HELP
         C: HELP MAIL
         C: QUIT now
         C: QUIT
         S: 250 2.0.0 OK
         S: 250 2.0.0 OK
         S: 250 2.0.0 OK
         S: 501 5.5.4 Syntax error in arguments
         S: 252 2.5.0 Cannot verify the user, but will accept mail for delivery
         S: 502 5.5.1 Command not implemented
         S: 214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP
         S: 214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP
         S: 501 5.5.4 Syntax error in arguments
         S: 221 2.0.0 Bye
         -- close
         H: disconnect close=local reply=221 2.0.0 quit",
    );
}

#[test]
fn vrfy_can_be_switched_off() {
    let mut h = Harness::new(Config {
        vrfy: false,
        ..config()
    });
    h.transcript.clear();
    h.send("VRFY user\r\n");
    assert_eq!(h.server_lines(), ["502 5.5.1 Command not implemented"]);
}

#[test]
fn unknown_verbs_get_500_and_the_session_continues() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.send("XYZZY\r\nHELOX c\r\n\r\nNOOP\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "500 5.5.1 Command unrecognized",
            "500 5.5.1 Command unrecognized",
            "500 5.5.1 Command unrecognized",
            "250 2.0.0 OK"
        ]
    );
}

#[test]
fn a_transaction_that_ends_without_a_message_is_announced_when_asked() {
    let mut h = Harness::new(Config {
        report_aborted_transactions: true,
        ..config()
    });
    h.transcript.clear();
    // RSET, EHLO and the end of the connection end a transaction; a delivered message, an
    // RSET with nothing open and a refused MAIL do not.
    h.send(
        "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRSET\r\nRSET\r\n\
         MAIL FROM:<a@example.org>\r\nEHLO c\r\nMAIL FROM:<a@example.org> SIZE=99999999999\r\n\
         MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\none\r\n.\r\n\
         MAIL FROM:<a@example.org>\r\n",
    );
    h.eof();
    let announced: Vec<&str> = h
        .transcript
        .lines()
        .filter(|l| !l.starts_with("C: ") && !l.starts_with("S: "))
        .collect();
    assert_eq!(
        announced,
        [
            "-- transaction aborted: Reset",
            "-- transaction aborted: Reset",
            "H: message from <a@example.org> to <b@example.net> body \"one\\r\\n\"",
            "D: accept",
            "-- eof",
            "-- transaction aborted: Closed",
            "-- close",
            "H: disconnect close=remote reply=250 2.1.0 mail",
        ]
    );
    // Off by default: nothing of it.
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRSET\r\n");
    h.eof();
    assert!(
        !h.transcript.contains("transaction aborted"),
        "{}",
        h.transcript
    );
}
