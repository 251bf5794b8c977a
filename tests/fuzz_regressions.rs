//! Transcripts of what the fuzz targets (`fuzz/`, `testkit/src/fuzz/`) found, kept as
//! regression tests.

mod common;

use common::*;
use std::time::Duration;

use smtp_session::{Config, Decision, Hooks, Reply};

/// `Hook::Data` is called for DATA and for the first BDAT alike, and the docs prescribe a
/// 354 for a custom acceptance of the data hook; a BDAT's data hook refused it with
/// `InvalidDecision`, leaving a runtime that follows the docs no way to accept a BDAT
/// message with a custom reply. Found by `session_ops` (`AcceptWith` for the data hook).
#[test]
fn bdat_data_hook_takes_the_documented_354() {
    let config = Config {
        hooks: Hooks {
            data: true,
            message: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let mut h = Harness::manual(config);
    h.send("EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<d@e.example>\r\nBDAT 5 LAST\r\n");
    h.decide(Decision::AcceptWith(Reply::new(354, "go ahead").unwrap()));
    h.send("hello");
    h.decide(Decision::Accept);
    h.send("QUIT\r\n");
    h.expect(
        "
        S: 220 mx.example ESMTP
        C: EHLO c.example
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<d@e.example>
        C: BDAT 5 LAST
        S: 250-mx.example greets c.example
        S: 250-PIPELINING
        S: 250-SIZE 26214400
        S: 250-8BITMIME
        S: 250-ENHANCEDSTATUSCODES
        S: 250-SMTPUTF8
        S: 250-CHUNKING
        S: 250-BINARYMIME
        S: 250 DSN
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        H: data
        D: accept 354 go ahead
        C~ hello
        H: message from <a@b.example> to <d@e.example> body \"hello\"
        D: accept
        S: 250 2.0.0 Message accepted
        C: QUIT
        S: 221 2.0.0 Bye
        -- close
        H: disconnect close=local reply=221 2.0.0 quit
        ",
    );
}

/// The same custom 354 still fits the data hook of DATA, and a 2xx still does not.
#[test]
fn data_hook_of_data_takes_only_354() {
    let config = Config {
        hooks: Hooks {
            data: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let mut h = Harness::manual(config);
    h.send("HELO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<d@e.example>\r\nDATA\r\n");
    h.decide_unfit(Decision::AcceptWith(Reply::new(250, "ok").unwrap()));
    h.send("DATA\r\n");
    h.decide(Decision::AcceptWith(Reply::new(354, "go ahead").unwrap()));
    h.send(".\r\n");
    h.expect(
        "
        S: 220 mx.example ESMTP
        C: HELO c.example
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<d@e.example>
        C: DATA
        S: 250 mx.example
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        H: data
        D: accept 250 ok (refused)
        S: 451 4.3.0 Temporary failure, please try again later
        C: DATA
        H: data
        D: accept 354 go ahead
        S: 354 go ahead
        C: .
        S: 250 2.0.0 Message accepted
        ",
    );
}

/// During a greeting delay, early talk filled the input buffer and the session then took
/// less than it was offered with no hook pending, against `handle_input`'s contract; a
/// runtime re-offering its backlog (as `examples/blocking.rs` does) spun without ever
/// reaching the timeout that would end the delay. Found by `session_bytes`. The delay now
/// ends as soon as the buffer is full: the client has talked early already.
#[test]
fn early_talk_that_fills_the_buffer_ends_the_greeting_delay() {
    let config = Config {
        greeting_delay: Duration::from_secs(6),
        max_pending_input: 2048,
        ..config()
    };
    let mut h = Harness::new(config);
    let flood = format!("{}QUIT\r\n", "NOOP\r\n".repeat(400));
    let taken = h.session.handle_input(flood.as_bytes(), h.now).unwrap();
    assert_eq!(
        taken,
        flood.len(),
        "no hook is pending, so all input is taken"
    );
    h.drain();
    let lines = h.server_lines();
    assert_eq!(lines.first(), Some(&"220 mx.example ESMTP"));
    assert_eq!(lines.iter().filter(|l| **l == "250 2.0.0 OK").count(), 400);
    assert_eq!(lines.last(), Some(&"221 2.0.0 Bye"));
    assert_eq!(lines.len(), 402);
    assert!(h.context().connection.early_talker);
}

/// The same flood with early talkers refused: refused at once, not after the delay.
#[test]
fn early_talk_that_fills_the_buffer_is_refused_at_once() {
    let config = Config {
        greeting_delay: Duration::from_secs(6),
        reject_early_talkers: true,
        max_pending_input: 2048,
        ..config()
    };
    let mut h = Harness::new(config);
    h.feed("NOOP\r\n".repeat(400).as_bytes());
    assert!(h.backlog.is_empty());
    h.expect(
        "
        S: 554 5.5.1 mx.example Error: talking before the greeting
        -- close
        H: disconnect close=local reply=554 5.5.1 connect
        ",
    );
}

/// A PROXY v2 header announcing more than `max_pending_input`, arriving over several reads,
/// could never be completed: the session refused input with no hook pending and waited
/// until the command timeout (forever for a runtime that re-offers its backlog). Found by
/// `session_ops`. Such a header is now refused like any bad header: close.
#[test]
fn proxy_v2_header_larger_than_the_input_buffer_is_refused() {
    let config = Config {
        proxy_protocol: true,
        max_pending_input: 2048,
        ..config()
    };
    let mut h = Harness::new(config);
    h.send_bytes(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x10\x00");
    h.feed(&[0; 4096]);
    h.expect(
        r"
        C:
        C:
        C: \x00
        C~ QUIT\n!\x11\x10\x00
        -- close
        H: disconnect close=local
        ",
    );
}
