//! STARTTLS (RFC 3207), implicit TLS (RFC 8314), require_tls, and the command injection
//! defence of CVE-2011-0411 at every split point.

mod common;
use common::*;
use smtp_session::{
    AuthInfo, CloseSide, Config, Decision, Error, Hooks, IoErrorKind, StartTlsInjection,
};

#[test]
fn starttls_is_advertised_then_220_and_the_handshake_resets_the_session() {
    let mut h = Harness::new(starttls_config());
    h.send("EHLO client.example\r\n");
    h.send("STARTTLS\r\n");
    assert_eq!(h.starttls, 1);
    h.tls_established(tls_info());
    h.send("EHLO client.example\r\n");
    h.send("STARTTLS\r\n");
    h.send("QUIT\r\n");
    h.expect(
        "S: 220 mx.example ESMTP
         C: EHLO client.example
         S: 250-mx.example greets client.example
         S: 250-PIPELINING
         S: 250-SIZE 26214400
         S: 250-8BITMIME
         S: 250-ENHANCEDSTATUSCODES
         S: 250-SMTPUTF8
         S: 250-CHUNKING
         S: 250-BINARYMIME
         S: 250-DSN
         S: 250 STARTTLS
         C: STARTTLS
         S: 220 2.0.0 Ready to start TLS
         -- starttls
         -- tls established
         C: EHLO client.example
         S: 250-mx.example greets client.example
         S: 250-PIPELINING
         S: 250-SIZE 26214400
         S: 250-8BITMIME
         S: 250-ENHANCEDSTATUSCODES
         S: 250-SMTPUTF8
         S: 250-CHUNKING
         S: 250-BINARYMIME
         S: 250 DSN
         C: STARTTLS
         S: 503 5.5.1 TLS already active
         C: QUIT
         S: 221 2.0.0 Bye
         -- close
         H: disconnect close=local reply=221 2.0.0 quit",
    );
    assert_eq!(h.session.tls(), Some(&tls_info()));
    let connection = &h.context().connection;
    assert_eq!(connection.tls, Some(tls_info()));
    assert_eq!(connection.helo.as_ref().unwrap().host, "client.example");
}

#[test]
fn starttls_without_the_extension_is_454_and_the_session_goes_on() {
    let mut h = Harness::new(config()).after_ehlo();
    h.send("STARTTLS\r\n");
    h.send("NOOP\r\n");
    h.expect(
        "C: STARTTLS
         S: 454 4.7.0 TLS not available
         C: NOOP
         S: 250 2.0.0 OK",
    );
    assert_eq!(h.starttls, 0);
}

#[test]
fn starttls_with_arguments_is_501_and_starts_nothing() {
    let mut h = Harness::new(starttls_config()).after_ehlo();
    h.send("STARTTLS now\r\n");
    h.send("NOOP\r\n");
    h.expect(
        "C: STARTTLS now
         S: 501 5.5.4 Syntax error in arguments
         C: NOOP
         S: 250 2.0.0 OK",
    );
    assert_eq!(h.starttls, 0);
}

const INJECTION: &[u8] = b"STARTTLS\r\nNOOP\r\n";

#[test]
fn pipelined_command_after_starttls_is_never_executed_in_one_read() {
    let mut h = Harness::new(starttls_config()).after_ehlo();
    h.send_bytes(INJECTION);
    h.tls_established(tls_info());
    h.send("NOOP\r\n");
    h.expect(
        "C: STARTTLS
         C: NOOP
         S: 220 2.0.0 Ready to start TLS
         -- starttls
         -- tls established
         C: NOOP
         S: 250 2.0.0 OK",
    );
}

#[test]
fn pipelined_command_after_starttls_is_never_executed_at_any_split_point() {
    for split in 0..=INJECTION.len() {
        let mut h = Harness::new(starttls_config()).after_ehlo();
        h.feed(&INJECTION[..split]);
        h.feed(&INJECTION[split..]);
        h.tls_established(tls_info());
        h.send("NOOP\r\n");
        h.expect(
            "S: 220 2.0.0 Ready to start TLS
             -- starttls
             -- tls established
             C: NOOP
             S: 250 2.0.0 OK",
        );
    }
}

#[test]
fn injected_commands_leave_no_trace_after_the_handshake() {
    // The injected MAIL must not open a transaction in the TLS session.
    let mut h = Harness::new(starttls_config()).after_ehlo();
    h.send("STARTTLS\r\nMAIL FROM:<attacker@example.org>\r\n");
    h.tls_established(tls_info());
    h.send("EHLO client.example\r\n");
    h.transcript.clear();
    h.send("RCPT TO:<victim@example.net>\r\n");
    h.expect(
        "C: RCPT TO:<victim@example.net>
         S: 503 5.5.1 Need MAIL command first",
    );
}

fn close_on_injection() -> Config {
    Config {
        starttls_injection: StartTlsInjection::Close,
        ..starttls_config()
    }
}

#[test]
fn injection_with_close_policy_closes_without_a_handshake() {
    let mut h = Harness::new(close_on_injection()).after_ehlo();
    h.send_bytes(INJECTION);
    h.expect(
        "C: STARTTLS
         C: NOOP
         S: 220 2.0.0 Ready to start TLS
         -- close
         H: disconnect close=local reply=220 2.0.0 starttls",
    );
    assert_eq!(h.starttls, 0);
}

#[test]
fn injection_with_close_policy_closes_at_any_split_point() {
    for split in 0..=INJECTION.len() {
        let mut h = Harness::new(close_on_injection()).after_ehlo();
        h.feed(&INJECTION[..split]);
        h.feed(&INJECTION[split..]);
        assert_eq!(h.closes, 1, "split {split}");
        assert_eq!(h.disconnects, 1, "split {split}");
        assert_eq!(
            h.server_lines(),
            ["220 2.0.0 Ready to start TLS"],
            "split {split}"
        );
        assert!(h.session.is_closed());
        // Only the exact split after STARTTLS's CRLF saw a clean STARTTLS first.
        assert_eq!(h.starttls, usize::from(split == 10), "split {split}");
    }
}

#[test]
fn starttls_alone_with_close_policy_hands_over_to_tls() {
    let mut h = Harness::new(close_on_injection()).after_ehlo();
    h.send("STARTTLS\r\n");
    h.tls_established(tls_info());
    h.send("EHLO client.example\r\n");
    assert_eq!(h.starttls, 1);
    assert_eq!(h.closes, 0);
    assert_eq!(h.server_lines().last(), Some(&"250 DSN"));
}

#[test]
fn the_handshake_forgets_helo_and_the_transaction() {
    let mut h = Harness::new(starttls_config()).after_ehlo();
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send("STARTTLS\r\n");
    h.tls_established(tls_info());
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send("HELO client.example\r\n");
    h.send("RCPT TO:<b@example.net>\r\n");
    h.expect(
        "C: MAIL FROM:<a@example.org>
         S: 250 2.1.0 Sender OK
         C: STARTTLS
         S: 220 2.0.0 Ready to start TLS
         -- starttls
         -- tls established
         C: MAIL FROM:<a@example.org>
         S: 503 5.5.1 Send HELO or EHLO first
         C: HELO client.example
         S: 250 mx.example
         C: RCPT TO:<b@example.net>
         S: 503 5.5.1 Need MAIL command first",
    );
    assert!(h.session.envelope().is_none());
}

#[test]
fn the_handshake_forgets_a_plaintext_auth() {
    let config = Config {
        auth_without_tls: true,
        ..tls_and_auth_config()
    };
    let mut h = Harness::new(config).after_ehlo();
    h.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert_eq!(
        h.session.auth(),
        Some(&AuthInfo {
            mechanism: "PLAIN".into(),
            username: Some("alice".into())
        })
    );
    h.send("STARTTLS\r\n");
    h.tls_established(tls_info());
    assert_eq!(h.session.auth(), None);
    h.send("EHLO client.example\r\n");
    assert_eq!(h.server_lines().last(), Some(&"250 AUTH PLAIN LOGIN"));
    h.send("QUIT\r\n");
    assert_eq!(h.context().connection.auth, None);
}

#[test]
fn require_tls_is_lifted_by_the_handshake() {
    let config = Config {
        require_tls: true,
        ..starttls_config()
    };
    let mut h = Harness::new(config).after_ehlo();
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send("STARTTLS\r\n");
    h.tls_established(tls_info());
    h.send("EHLO client.example\r\n");
    h.transcript.clear();
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send("QUIT\r\n");
    h.expect(
        "C: MAIL FROM:<a@example.org>
         S: 250 2.1.0 Sender OK
         C: QUIT
         S: 221 2.0.0 Bye
         -- close
         H: disconnect close=local reply=221 2.0.0 quit",
    );
}

#[test]
fn require_tls_refuses_all_but_noop_helo_ehlo_starttls_and_quit() {
    let config = Config {
        require_tls: true,
        ..starttls_config()
    };
    let mut h = Harness::new(config).after_ehlo();
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send("RCPT TO:<b@example.net>\r\n");
    h.send("DATA\r\n");
    h.send("RSET\r\n");
    h.send("VRFY postmaster\r\n");
    h.send("HELP\r\n");
    h.send("AUTH PLAIN\r\n");
    // The chunk is consumed, never read as a QUIT command.
    h.send("BDAT 6\r\n");
    h.send_data(b"QUIT\r\n");
    h.send("BDAT 0 LAST\r\n");
    h.send("NOOP\r\n");
    h.send("HELO client.example\r\n");
    h.send("STARTTLS\r\n");
    h.expect(
        "C: MAIL FROM:<a@example.org>
         S: 530 5.7.0 Must issue a STARTTLS command first
         C: RCPT TO:<b@example.net>
         S: 530 5.7.0 Must issue a STARTTLS command first
         C: DATA
         S: 530 5.7.0 Must issue a STARTTLS command first
         C: RSET
         S: 530 5.7.0 Must issue a STARTTLS command first
         C: VRFY postmaster
         S: 530 5.7.0 Must issue a STARTTLS command first
         C: HELP
         S: 530 5.7.0 Must issue a STARTTLS command first
         C: AUTH PLAIN
         S: 530 5.7.0 Must issue a STARTTLS command first
         C: BDAT 6
         C= QUIT\\r\\n
         S: 530 5.7.0 Must issue a STARTTLS command first
         C: BDAT 0 LAST
         S: 530 5.7.0 Must issue a STARTTLS command first
         C: NOOP
         S: 250 2.0.0 OK
         C: HELO client.example
         S: 250 mx.example
         C: STARTTLS
         S: 220 2.0.0 Ready to start TLS
         -- starttls",
    );
    assert_eq!(h.closes, 0);
}

#[test]
fn require_tls_allows_quit() {
    let config = Config {
        require_tls: true,
        ..starttls_config()
    };
    let mut h = Harness::new(config).after_ehlo();
    h.send("QUIT\r\n");
    h.expect(
        "C: QUIT
         S: 221 2.0.0 Bye
         -- close
         H: disconnect close=local reply=221 2.0.0 quit",
    );
}

#[test]
fn implicit_tls_hands_over_first_and_greets_after_the_handshake() {
    let config = Config {
        implicit_tls: true,
        hooks: Hooks {
            connect: true,
            ..Hooks::NONE
        },
        ..starttls_config()
    };
    let mut h = Harness::new(config);
    h.expect("-- starttls");
    h.tls_established(tls_info());
    h.send("EHLO client.example\r\n");
    h.send("STARTTLS\r\n");
    h.expect(
        "-- starttls
         -- tls established
         H: connect
         D: accept
         S: 220 mx.example ESMTP
         C: EHLO client.example
         S: 250-mx.example greets client.example
         S: 250-PIPELINING
         S: 250-SIZE 26214400
         S: 250-8BITMIME
         S: 250-ENHANCEDSTATUSCODES
         S: 250-SMTPUTF8
         S: 250-CHUNKING
         S: 250-BINARYMIME
         S: 250 DSN
         C: STARTTLS
         S: 503 5.5.1 TLS already active",
    );
    assert_eq!(h.session.tls(), Some(&tls_info()));
}

#[test]
fn implicit_tls_handshake_failure_closes_without_a_greeting() {
    let config = Config {
        implicit_tls: true,
        ..starttls_config()
    };
    let mut h = Harness::new(config);
    h.tls_failed(tls_error());
    h.expect(
        "-- starttls
         -- tls failed
         -- close
         H: disconnect close=remote error=tls:handshake failure",
    );
    let arguments = &h.context().arguments;
    assert_eq!(arguments.reply, None);
    assert_eq!(arguments.error, Some(tls_error()));
    assert_eq!(h.context().connection.tls, None);
}

#[test]
fn starttls_handshake_failure_closes_with_a_tls_error() {
    let mut h = Harness::new(starttls_config()).after_ehlo();
    h.send("STARTTLS\r\n");
    // Even an error reported with the wrong kind is recorded as a TLS error.
    let mut error = tls_error();
    error.kind = IoErrorKind::Socket;
    h.tls_failed(error);
    h.expect(
        "C: STARTTLS
         S: 220 2.0.0 Ready to start TLS
         -- starttls
         -- tls failed
         -- close
         H: disconnect close=remote reply=220 2.0.0 starttls error=tls:handshake failure",
    );
    let context = h.context();
    assert_eq!(context.arguments.close, CloseSide::Remote);
    let error = context.arguments.error.as_ref().unwrap();
    assert_eq!(error.kind, IoErrorKind::Tls);
    assert_eq!(error.code, Some(0x14094410));
    assert!(h.session.poll_output().is_none());
}

#[test]
fn a_handshake_that_never_completes_times_out_without_a_reply() {
    let mut h = Harness::new(starttls_config()).after_ehlo();
    h.send("STARTTLS\r\n");
    h.advance(h.session.config().command_timeout);
    h.expect(
        "C: STARTTLS
         S: 220 2.0.0 Ready to start TLS
         -- starttls
         -- timeout
         -- close
         H: disconnect close=local reply=220 2.0.0 starttls",
    );
}

#[test]
fn tls_events_nobody_asked_for_are_refused_and_change_nothing() {
    let mut h = Harness::new(starttls_config()).after_ehlo();
    let now = h.now;
    assert_eq!(
        h.session.handle_tls_established(tls_info(), now),
        Err(Error::NoTlsRequested)
    );
    assert_eq!(
        h.session.handle_tls_failed(tls_error(), now),
        Err(Error::NoTlsRequested)
    );
    assert_eq!(h.session.tls(), None);
    assert!(h.session.poll_output().is_none());
    h.send("NOOP\r\n");
    h.send("STARTTLS\r\n");
    h.tls_established(tls_info());
    // A second report for the same handshake is refused too.
    assert_eq!(
        h.session.handle_tls_established(tls_info(), now),
        Err(Error::NoTlsRequested)
    );
    h.send("QUIT\r\n");
    assert_eq!(
        h.session.handle_tls_established(tls_info(), now),
        Err(Error::Closed)
    );
    assert_eq!(
        h.session.handle_tls_failed(tls_error(), now),
        Err(Error::Closed)
    );
    assert_eq!(h.closes, 1);
}

#[test]
fn starttls_asks_no_hook_and_the_helo_hook_runs_again_after_it() {
    // With every hook subscribed, STARTTLS itself asks none; the next EHLO asks the helo hook.
    let config = Config {
        hooks: Hooks::ALL,
        ..starttls_config()
    };
    let policy = Policy::Auto(Box::new(|_| Decision::Accept));
    let mut h = Harness::with_auto_tls(config, info(), policy, tls_info());
    h.send("EHLO client.example\r\n");
    h.transcript.clear();
    h.send("STARTTLS\r\n");
    h.send("EHLO again.example\r\n");
    h.transcript.truncate(
        h.transcript
            .find("S: 250-mx.example")
            .unwrap_or(h.transcript.len()),
    );
    h.expect(
        "C: STARTTLS
         S: 220 2.0.0 Ready to start TLS
         -- starttls
         -- tls established
         C: EHLO again.example
         H: helo Ehlo again.example
         D: accept",
    );
}

#[test]
fn starttls_queued_behind_a_pending_hook_still_discards_what_follows() {
    let config = Config {
        hooks: Hooks {
            helo: true,
            ..Hooks::NONE
        },
        ..starttls_config()
    };
    let mut h = Harness::manual(config);
    h.transcript.clear();
    h.send("EHLO client.example\r\nSTARTTLS\r\nMAIL FROM:<a@example.org>\r\n");
    h.decide(Decision::Accept);
    h.tls_established(tls_info());
    h.send("NOOP\r\n");
    let lines: Vec<&str> = h
        .transcript
        .lines()
        .filter(|l| !l.starts_with("S: 250-"))
        .collect();
    assert_eq!(
        lines,
        [
            "C: EHLO client.example",
            "C: STARTTLS",
            "C: MAIL FROM:<a@example.org>",
            "H: helo Ehlo client.example",
            "D: accept",
            "S: 250 STARTTLS",
            "S: 220 2.0.0 Ready to start TLS",
            "-- starttls",
            "-- tls established",
            "C: NOOP",
            "S: 250 2.0.0 OK",
        ]
    );
}

#[test]
fn the_ehlo_hook_can_withdraw_starttls() {
    let config = Config {
        hooks: Hooks {
            helo: true,
            ..Hooks::NONE
        },
        ..starttls_config()
    };
    let mut h = Harness::manual(config);
    h.transcript.clear();
    h.send("EHLO client.example\r\n");
    let mut extensions = h.session.extensions();
    extensions.starttls = false;
    h.session.set_extensions(extensions);
    h.decide(Decision::Accept);
    h.send("STARTTLS\r\n");
    assert_eq!(h.server_lines()[8], "250 DSN");
    assert_eq!(h.server_lines()[9], "454 4.7.0 TLS not available");
    assert_eq!(h.starttls, 0);
}

// ---------------------------------------------------------------------------------------
// After the handshake the client starts over: HELP and EHLO list what can be used now, and
// AUTH waits for the new EHLO (RFC 3207 section 4.2).

#[test]
fn help_lists_starttls_and_auth_only_while_they_would_be_accepted() {
    let mut h = Harness::with_auto_tls(tls_and_auth_config(), info(), Policy::Manual, tls_info());
    h.send("EHLO c\r\nHELP\r\n");
    assert_eq!(
        h.server_lines().last(),
        Some(
            &"214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS"
        ),
        "AUTH needs TLS first"
    );
    h.transcript.clear();
    h.send("STARTTLS\r\n");
    h.send("EHLO c\r\nHELP\r\n");
    assert_eq!(
        h.server_lines().last(),
        Some(&"214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP AUTH"),
        "no STARTTLS once TLS is on"
    );
    h.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    h.decide(Decision::Accept);
    h.send("HELP\r\n");
    assert_eq!(
        h.server_lines().last(),
        Some(&"214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"),
        "no AUTH once authenticated"
    );
}

#[test]
fn auth_right_after_the_handshake_waits_for_the_new_ehlo() {
    let mut h = Harness::with_auto_tls(tls_and_auth_config(), info(), Policy::Manual, tls_info());
    h.send("EHLO c\r\nSTARTTLS\r\n");
    h.transcript.clear();
    h.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nEHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    let lines = h.server_lines();
    assert_eq!(lines[0], "503 5.5.1 Send EHLO first");
    assert_eq!(lines.last(), Some(&"250 AUTH PLAIN LOGIN"));
    assert!(h.transcript.contains("H: auth Plain"), "{}", h.transcript);
    // HELO does not tell the client about AUTH either.
    let mut h = Harness::with_auto_tls(tls_and_auth_config(), info(), Policy::Manual, tls_info());
    h.send("STARTTLS\r\n");
    h.send("HELO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert_eq!(h.server_lines().last(), Some(&"503 5.5.1 Send EHLO first"));
}
