//! Transcripts of what the fuzz targets (`fuzz/`, `src/fuzzing.rs`) found, kept as
//! regression tests.

mod common;

use common::*;
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
    let id = h.pending[0];
    assert!(h
        .session
        .decide(
            id,
            Decision::AcceptWith(Reply::new(250, "ok").unwrap()),
            h.now
        )
        .is_err());
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
        D: accept 354 go ahead
        S: 354 go ahead
        C: .
        S: 250 2.0.0 Message accepted
        ",
    );
}
