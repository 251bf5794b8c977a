//! Clients that talk before the greeting (Postfix postscreen's pregreet test): held back by
//! a greeting delay, recorded in the context, optionally refused.

mod common;
use common::*;
use std::time::Duration;

use smtp_session::{Config, Decision, Hooks};

fn delayed(reject: bool) -> Config {
    Config {
        greeting_delay: Duration::from_secs(6),
        reject_early_talkers: reject,
        ..config()
    }
}

#[test]
fn a_patient_client_is_greeted_after_the_delay() {
    let mut h = Harness::new(delayed(true));
    assert_eq!(h.transcript, "", "no greeting yet");
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(6))
    );
    h.advance(Duration::from_secs(5));
    assert_eq!(h.transcript, "");
    h.advance(Duration::from_secs(1));
    h.send("HELO c\r\nQUIT\r\n");
    h.expect(
        "-- timeout
         S: 220 mx.example ESMTP
         C: HELO c
         C: QUIT
         S: 250 mx.example
         S: 221 2.0.0 Bye
         -- close
         H: disconnect close=local reply=221 2.0.0 quit",
    );
    assert!(!h.context().connection.early_talker);
}

#[test]
fn an_early_talker_is_refused_when_configured() {
    let mut h = Harness::new(delayed(true));
    h.send("EHLO spammer\r\nMAIL FROM:<a@example.org>\r\n");
    h.advance(Duration::from_secs(6));
    h.expect(
        "C: EHLO spammer
         C: MAIL FROM:<a@example.org>
         -- timeout
         S: 554 5.5.1 mx.example Error: talking before the greeting
         -- close
         H: disconnect close=local reply=554 5.5.1 connect",
    );
    assert!(h.context().connection.early_talker);
}

#[test]
fn an_early_talker_is_otherwise_served_in_order_and_recorded() {
    let mut h = Harness::new(delayed(false));
    h.send("HELO c\r\nNOOP\r\n");
    h.advance(Duration::from_secs(6));
    assert_eq!(
        h.server_lines(),
        ["220 mx.example ESMTP", "250 mx.example", "250 2.0.0 OK"]
    );
    h.eof();
    assert!(h.context().connection.early_talker);
}

#[test]
fn talking_while_the_connect_hook_decides_is_early_talk_too() {
    let config = Config {
        hooks: Hooks {
            connect: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let mut h = Harness::manual(config);
    h.send("HELO c\r\n");
    assert!(h.session.early_talker());
    h.decide(Decision::Accept);
    assert_eq!(h.server_lines(), ["220 mx.example ESMTP", "250 mx.example"]);
}

#[test]
fn early_talk_is_answered_even_when_the_delay_ends_before_any_poll() {
    // A runtime may report the deadline right after the input, without draining between:
    // the held bytes must still be read as lines from their first byte.
    let now = start();
    let mut s = smtp_session::Session::new(delayed(false), info(), now);
    assert_eq!(s.handle_input(b"HELO c\r\nNOOP\r\n", now).unwrap(), 14);
    s.handle_timeout(now + Duration::from_secs(6)).unwrap();
    let mut written = Vec::new();
    while let Some(output) = s.poll_output() {
        if let smtp_session::Output::Write(bytes) = output {
            written.extend_from_slice(&bytes);
        }
    }
    assert_eq!(
        written,
        b"220 mx.example ESMTP\r\n250 mx.example\r\n250 2.0.0 OK\r\n"
    );
}
