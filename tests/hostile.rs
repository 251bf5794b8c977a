//! Hostile input and a misbehaving runtime: bytes no client should send, parameters and
//! recipients beyond reason, BDAT sizes near `u64::MAX`, and hook decisions that come late,
//! twice, for the wrong id or not fitting the hook. Bad client bytes become replies; caller
//! misuse becomes a typed error that changes nothing.

mod common;
use common::*;

use std::time::Duration;

use smtp_session::{Config, Decision, DisconnectMode, Error, Hook, HookId, Hooks, Output, Reply};

// ---------------------------------------------------------------------------------------
// NUL and 8-bit bytes in commands

#[test]
fn nul_bytes_in_commands_are_refused_and_never_truncate_a_command() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\n");
    h.transcript.clear();
    h.send_bytes(b"NO\0OP\r\nQUIT\0\r\nMAIL FROM:<a\0b@example.org>\r\nMAIL FROM:<a@example.org>\0\r\nRSET\0\r\n\0\r\nNOOP\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "500 5.5.1 Command unrecognized",
            "500 5.5.1 Command unrecognized",
            "501 5.1.7 Bad sender address syntax",
            "501 5.5.4 Syntax error in arguments",
            "500 5.5.1 Command unrecognized",
            "500 5.5.1 Command unrecognized",
            "250 2.0.0 OK"
        ]
    );
    assert_eq!(h.closes, 0, "QUIT followed by NUL is not QUIT");
    assert!(h.session.helo().is_some(), "nothing reset the session");
    assert!(h.session.envelope().is_none());
}

#[test]
fn eight_bit_bytes_in_commands_are_refused_without_being_echoed() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\n");
    h.transcript.clear();
    h.send_bytes(
        b"\xff\xfe\r\nHELO \xc3\x28\r\nMAIL FROM:<\xff@example.org>\r\nMAIL FROM:<\xc3\xa9@example.org>\r\nNOOP\r\n",
    );
    let lines = h.server_lines();
    assert_eq!(
        lines,
        [
            "500 5.5.1 Command unrecognized",
            "501 5.5.2 Invalid UTF-8 in command",
            "501 5.5.2 Invalid UTF-8 in command",
            "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter",
            "250 2.0.0 OK"
        ]
    );
    for line in lines {
        assert!(line.is_ascii(), "replies never echo client bytes: {line:?}");
    }
}

#[test]
fn a_utf8_recipient_needs_smtputf8_on_the_mail_command() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    h.transcript.clear();
    h.send("RCPT TO:<ü@example.net>\r\nRSET\r\nMAIL FROM:<a@example.org> SMTPUTF8\r\nRCPT TO:<ü@example.net>\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter",
            "250 2.0.0 OK",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK"
        ]
    );
}

#[test]
fn the_helo_name_is_never_reflected_with_control_characters() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.send_bytes(b"EHLO a\rb\r\nEHLO a\x1b[31m\r\nEHLO a\tb\r\nEHLO ok.example\r\n");
    let lines = h.server_lines();
    assert_eq!(lines[..3], ["501 5.5.4 Invalid domain name"; 3]);
    assert_eq!(lines[3], "250-mx.example greets ok.example");
}

// ---------------------------------------------------------------------------------------
// Parameters with huge or repeated keys

#[test]
fn conflicting_repeated_parameters_are_refused() {
    // A repeat with the same value is harmless and accepted (tests/esmtp_params.rs).
    let mut h = Harness::new(config());
    h.send("EHLO c\r\n");
    h.transcript.clear();
    h.send(
        "MAIL FROM:<a@example.org> SIZE=1 SIZE=2\r\n\
         MAIL FROM:<a@example.org> BODY=8BITMIME body=7bit\r\n\
         MAIL FROM:<a@example.org> ENVID=a ENVID=b\r\n\
         MAIL FROM:<a@example.org>\r\n\
         RCPT TO:<b@example.net> NOTIFY=NEVER NOTIFY=SUCCESS\r\n\
         RCPT TO:<b@example.net> ORCPT=rfc822;b@example.net ORCPT=rfc822;c@example.net\r\n\
         RCPT TO:<b@example.net>\r\n",
    );
    assert_eq!(
        h.server_lines(),
        [
            "501 5.5.4 Duplicate parameter",
            "501 5.5.4 Duplicate parameter",
            "501 5.5.4 Duplicate parameter",
            "250 2.1.0 Sender OK",
            "501 5.5.4 Duplicate parameter",
            "501 5.5.4 Duplicate parameter",
            "250 2.1.5 Recipient OK"
        ]
    );
}

#[test]
fn huge_parameter_keys_and_values_are_refused_or_cut_by_the_line_limit() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\n");
    h.transcript.clear();
    let key = "K".repeat(1000);
    let within = format!("MAIL FROM:<a@example.org> {key}=1\r\n");
    let beyond = format!("MAIL FROM:<a@example.org> {key}{key}=1\r\n");
    let size = format!("MAIL FROM:<a@example.org> SIZE={}\r\n", "9".repeat(1000));
    let envid = format!("MAIL FROM:<a@example.org> ENVID={}\r\n", "e".repeat(1000));
    let many = format!("MAIL FROM:<a@example.org>{}\r\n", " X=1".repeat(250));
    for line in [&within, &beyond, &size, &envid, &many] {
        h.feed(line.as_bytes());
    }
    h.feed(b"MAIL FROM:<a@example.org> SIZE=100\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "555 5.5.4 Unsupported command parameter",
            "500 5.5.2 Line too long",
            "501 5.5.4 Invalid command parameter",
            "501 5.5.4 Invalid command parameter",
            "555 5.5.4 Unsupported command parameter",
            "250 2.1.0 Sender OK"
        ]
    );
}

#[test]
fn a_size_parameter_beyond_u64_or_the_limit_is_refused() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\n");
    h.transcript.clear();
    h.send(
        "MAIL FROM:<a@example.org> SIZE=18446744073709551616\r\n\
         MAIL FROM:<a@example.org> SIZE=18446744073709551615\r\n\
         MAIL FROM:<a@example.org> SIZE=26214401\r\n\
         MAIL FROM:<a@example.org> SIZE=26214400\r\n",
    );
    let lines = h.server_lines();
    assert!(lines[0].starts_with("5"), "{lines:?}");
    assert_eq!(
        lines[1..],
        [
            "552 5.3.4 Message size exceeds fixed maximum message size",
            "552 5.3.4 Message size exceeds fixed maximum message size",
            "250 2.1.0 Sender OK"
        ]
    );
}

#[test]
fn auth_lines_past_their_limit_are_refused_and_the_session_goes_on() {
    let config = Config {
        extensions: smtp_session::Extensions {
            auth: true,
            ..smtp_session::Extensions::default()
        },
        auth_without_tls: true,
        hooks: Hooks {
            auth: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let mut h = Harness::new(config);
    h.send("EHLO c\r\nAUTH PLAIN\r\n");
    h.transcript.clear();
    // An exchange line past RFC 4954's 12288 octets, fed in pieces.
    for _ in 0..10 {
        h.feed(&[b'A'; 4096]);
    }
    h.feed(b"\r\nNOOP\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "500 5.5.6 Authentication exchange line is too long",
            "250 2.0.0 OK"
        ]
    );
    // An AUTH command whose initial response is past the limit.
    h.transcript.clear();
    let mut line = b"AUTH PLAIN ".to_vec();
    line.extend(std::iter::repeat(b'A').take(20_000));
    line.extend_from_slice(b"\r\nNOOP\r\n");
    h.feed(&line);
    let lines = h.server_lines();
    assert!(lines[0].starts_with("500 5.5."), "{lines:?}");
    assert_eq!(lines[1..], ["250 2.0.0 OK"]);
    assert!(h.session.auth().is_none());
}

// ---------------------------------------------------------------------------------------
// Recipients past the limit

#[test]
fn an_endless_recipient_flood_ends_at_the_error_limit() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    h.transcript.clear();
    let mut flood = String::new();
    for i in 0..10_000 {
        flood.push_str(&format!("RCPT TO:<r{i}@example.net>\r\n"));
    }
    h.feed(flood.as_bytes());
    // 100 accepted, 1000 refused without counting (the overshoot limit, as Postfix), then
    // each refusal counts until the hard error limit ends the session.
    let lines = h.server_lines();
    assert_eq!(lines.len(), 100 + 1000 + 20 + 1);
    assert!(lines[..100].iter().all(|l| l.starts_with("250 2.1.5")));
    assert!(lines[100..1120]
        .iter()
        .all(|l| *l == "452 4.5.3 Too many recipients"));
    assert_eq!(lines[1120], "421 4.7.0 mx.example Error: too many errors");
    assert_eq!(h.closes, 1);
    assert_eq!(h.disconnects, 1);
}

// ---------------------------------------------------------------------------------------
// BDAT sizes near u64::MAX

fn in_transaction() -> Harness {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    h.transcript.clear();
    h
}

#[test]
fn a_bdat_chunk_of_u64_max_is_consumed_as_it_arrives_and_a_timeout_ends_it() {
    let mut h = in_transaction();
    h.send("BDAT 18446744073709551615 LAST\r\n");
    // Commands inside the chunk are data; every byte is taken and nothing is answered.
    let piece = b"QUIT\r\nRSET\r\nMAIL FROM:<evil@example.com>\r\n".repeat(100);
    for _ in 0..1000 {
        let taken = h.session.handle_input(&piece, h.now).unwrap();
        assert_eq!(taken, piece.len());
        assert!(h.session.poll_output().is_none());
    }
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(180))
    );
    h.transcript.clear();
    h.advance(Duration::from_secs(180));
    h.expect(
        "-- timeout
         S: 421 4.4.2 mx.example Error: timeout exceeded
         -- close
         H: disconnect close=local reply=421 4.4.2 timeout",
    );
    assert!(h.messages.is_empty());
}

#[test]
fn a_bdat_chunk_of_u64_max_without_a_transaction_is_skipped_just_the_same() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nBDAT 18446744073709551615\r\n");
    h.transcript.clear();
    let piece = vec![b'.'; 65536];
    for _ in 0..64 {
        assert_eq!(h.session.handle_input(&piece, h.now).unwrap(), 65536);
    }
    h.eof();
    h.expect(
        "-- eof
         -- close
         H: disconnect close=remote reply=250 ehlo",
    );
}

#[test]
fn a_bdat_size_beyond_u64_cannot_be_skipped_so_the_session_closes() {
    let mut h = in_transaction();
    h.send("BDAT 18446744073709551616\r\nQUIT\r\n");
    let lines = h.server_lines();
    assert_eq!(lines[0], "501 5.5.4 Syntax error in arguments");
    assert!(lines[1].starts_with("421 "), "{lines:?}");
    assert_eq!(
        lines.len(),
        2,
        "the bytes after it are never read as commands"
    );
    assert_eq!(h.closes, 1);
}

#[test]
fn bdat_chunks_summing_past_the_size_limit_are_refused_after_the_last_byte() {
    let config = Config {
        max_message_size: 1000,
        ..config()
    };
    let mut h = Harness::new(config);
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    h.transcript.clear();
    h.send("BDAT 600\r\n");
    h.feed(&[b'a'; 600]);
    h.send("BDAT 600\r\n");
    h.feed(&[b'b'; 600]);
    h.send("BDAT 10 LAST\r\n");
    h.feed(&[b'c'; 10]);
    h.send("NOOP\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "250 2.0.0 Chunk accepted",
            "552 5.3.4 Message size exceeds fixed maximum message size",
            "503 5.5.1 Need MAIL command first",
            "250 2.0.0 OK"
        ]
    );
    assert!(h.messages.is_empty());
}

// ---------------------------------------------------------------------------------------
// Hook decisions: late, twice, for the wrong id, not fitting

fn mail_hook() -> Config {
    Config {
        hooks: Hooks {
            mail_from: true,
            rcpt_to: true,
            data: true,
            ..Hooks::NONE
        },
        ..config()
    }
}

fn pending_mail() -> Harness {
    let mut h = Harness::manual(mail_hook());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nNOOP\r\n");
    h.transcript.clear();
    h
}

#[test]
fn a_decision_after_close_is_err_closed() {
    let mut h = pending_mail();
    let id = h.session.pending_hook().unwrap();
    // The client leaves while the hook runs: what it sent is still owed a reply, so the
    // session closes only after the decision.
    h.eof();
    assert_eq!(h.closes, 0);
    h.decide(Decision::Accept);
    h.expect(
        "-- eof
         D: accept
         S: 250 2.1.0 Sender OK
         S: 250 2.0.0 OK
         -- close
         H: disconnect close=remote reply=250 2.0.0 noop",
    );
    assert_eq!(
        h.session.decide(id, Decision::Accept, h.now),
        Err(Error::Closed)
    );
    assert!(h.session.poll_output().is_none());
}

#[test]
fn a_decision_after_a_disconnect_decision_closed_the_session_is_err_closed() {
    let mut h = pending_mail();
    let id = h.pending.pop_front().unwrap();
    let d = Decision::disconnect(421, "4.7.0 bye", DisconnectMode::ForceDisconnect).unwrap();
    h.session.decide(id, d, h.now).unwrap();
    h.drain();
    assert_eq!(
        h.session.decide(id, Decision::Accept, h.now),
        Err(Error::Closed)
    );
    assert_eq!(h.disconnects, 1);
    assert!(h.session.poll_output().is_none());
}

#[test]
fn a_second_decision_for_the_same_call_is_unknown_and_does_nothing() {
    let mut h = pending_mail();
    let id = h.pending.pop_front().unwrap();
    h.session.decide(id, Decision::Accept, h.now).unwrap();
    h.drain();
    let before = h.transcript.clone();
    assert_eq!(
        h.session.decide(id, Decision::Accept, h.now),
        Err(Error::UnknownHook(id))
    );
    let reject = Decision::reject(550, "no").unwrap();
    assert_eq!(
        h.session.decide(id, reject, h.now),
        Err(Error::UnknownHook(id))
    );
    assert!(h.session.poll_output().is_none(), "no outputs");
    assert_eq!(h.transcript, before);
    assert_eq!(
        h.session.envelope().unwrap().mail_from.to_string(),
        "a@example.org"
    );
    assert_eq!(h.server_lines(), ["250 2.1.0 Sender OK", "250 2.0.0 OK"]);
}

#[test]
fn a_decision_for_a_later_hook_decided_twice_is_unknown() {
    // Id reuse across hooks: the id of the answered MAIL hook must not answer the RCPT hook.
    let mut h = pending_mail();
    let mail_id = h.pending.pop_front().unwrap();
    h.session.decide(mail_id, Decision::Accept, h.now).unwrap();
    h.drain();
    h.send("RCPT TO:<b@example.net>\r\n");
    let rcpt_id = *h.pending.front().unwrap();
    assert_ne!(mail_id, rcpt_id);
    assert_eq!(
        h.session.decide(mail_id, Decision::Accept, h.now),
        Err(Error::UnknownHook(mail_id))
    );
    assert_eq!(h.session.pending_hook(), Some(rcpt_id));
    assert!(h.session.envelope().unwrap().recipients.is_empty());
}

/// A hook id that another session issued: the pending one after `n` decided calls.
fn foreign_id(n: usize) -> HookId {
    let mut other = Harness::manual(mail_hook());
    other.send("EHLO c\r\n");
    for _ in 0..n {
        other.send("MAIL FROM:<a@example.org>\r\n");
        other.decide(Decision::reject(550, "no").unwrap());
    }
    other.send("MAIL FROM:<a@example.org>\r\n");
    other.session.pending_hook().unwrap()
}

#[test]
fn a_decision_for_the_wrong_id_is_unknown_and_changes_nothing() {
    let mut h = pending_mail();
    let id = *h.pending.front().unwrap();
    let wrong = foreign_id(5);
    assert_ne!(wrong, id);
    assert_eq!(
        h.session.decide(wrong, Decision::Accept, h.now),
        Err(Error::UnknownHook(wrong))
    );
    assert!(h.session.poll_output().is_none());
    assert_eq!(
        h.session.pending_hook(),
        Some(id),
        "still waiting for the right one"
    );
    assert!(h.session.envelope().is_none());
    // The right id still works, and the buffered NOOP follows.
    h.decide(Decision::Accept);
    h.expect(
        "D: accept
         S: 250 2.1.0 Sender OK
         S: 250 2.0.0 OK",
    );
}

#[test]
fn invalid_decisions_are_refused_and_fail_the_hook_so_the_session_goes_on() {
    let invalid = [
        Decision::AcceptWith(Reply::new(550, "5.7.1 not an acceptance").unwrap()),
        Decision::AcceptWith(Reply::new(451, "nope").unwrap()),
        Decision::AcceptWith(Reply::new(354, "go ahead").unwrap()),
        Decision::Reject(Reply::new(250, "2.1.0 not a rejection").unwrap()),
        Decision::Reject(Reply::new(354, "go ahead").unwrap()),
        Decision::Challenge(b"not auth".to_vec()),
    ];
    for decision in invalid {
        let mut h = pending_mail();
        let id = h.session.pending_hook().unwrap();
        let got = h.decide_unfit(decision.clone());
        assert!(
            matches!(got, Error::InvalidDecision(_)),
            "{decision:?} gave {got:?}"
        );
        // Never paused forever on a caller's mistake: the hook failed, the NOOP behind it ran.
        assert_eq!(h.session.pending_hook(), None, "{decision:?}");
        assert!(h.session.envelope().is_none(), "{decision:?}");
        assert_eq!(
            h.server_lines(),
            [
                "451 4.3.0 Temporary failure, please try again later",
                "250 2.0.0 OK"
            ],
            "{decision:?}"
        );
        // A decision for the failed call is now for no pending call at all.
        let stale = h.session.decide(id, Decision::Accept, h.now);
        assert!(matches!(stale, Err(Error::UnknownHook(_))));
    }
}

#[test]
fn the_data_hook_accepts_only_with_354() {
    let mut h = pending_mail();
    h.decide(Decision::Accept);
    h.send("RCPT TO:<b@example.net>\r\n");
    h.decide(Decision::Accept);
    h.send("DATA\r\n");
    h.transcript.clear();
    let got = h.decide_unfit(Decision::AcceptWith(Reply::new(250, "ok").unwrap()));
    assert!(matches!(got, Error::InvalidDecision(_)));
    // The data hook failed: DATA is refused and the transaction stays for another try.
    h.send("DATA\r\n");
    h.decide(Decision::AcceptWith(Reply::new(354, "send it").unwrap()));
    h.send("hi\r\n.\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "451 4.3.0 Temporary failure, please try again later",
            "354 send it",
            "250 2.0.0 Message accepted"
        ]
    );
}

#[test]
fn the_disconnect_hook_owes_no_decision() {
    let mut h = Harness::manual(config());
    h.send("QUIT\r\n");
    assert_eq!(h.disconnects, 1);
    // Nothing is pending: a runtime answering the disconnect hook gets UnknownHook or Closed.
    assert!(h.pending.is_empty());
    assert_eq!(h.session.pending_hook(), None);
}

// ---------------------------------------------------------------------------------------
// Early talkers and floods while a hook is pending

fn connect_hook() -> Config {
    Config {
        hooks: Hooks {
            connect: true,
            mail_from: true,
            ..Hooks::NONE
        },
        ..config()
    }
}

#[test]
fn an_early_talker_is_buffered_and_answered_in_order_after_the_greeting() {
    let mut h = Harness::manual(connect_hook());
    h.send("EHLO c\r\nNOOP\r\nQUIT\r\n");
    h.expect(
        "H: connect
         C: EHLO c
         C: NOOP
         C: QUIT",
    );
    h.decide(Decision::Accept);
    let lines = h.server_lines();
    assert_eq!(lines[0], "220 mx.example ESMTP");
    assert_eq!(lines[1], "250-mx.example greets c");
    assert_eq!(lines[lines.len() - 2..], ["250 2.0.0 OK", "221 2.0.0 Bye"]);
    assert_eq!(h.closes, 1);
}

#[test]
fn an_early_talker_refused_by_the_connect_hook_is_never_executed() {
    let mut h = Harness::manual(connect_hook());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    h.decide(Decision::reject(554, "5.7.1 go away").unwrap());
    h.expect(
        "H: connect
         C: EHLO c
         C: MAIL FROM:<a@example.org>
         D: reject 554 5.7.1 go away
         S: 554 5.7.1 go away
         -- close
         H: disconnect close=local reply=554 5.7.1 connect",
    );
}

#[test]
fn a_pipelined_flood_while_a_hook_is_pending_is_pushed_back_and_never_lost() {
    let mut h = Harness::manual(connect_hook());
    h.decide(Decision::Accept);
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    let mut flood = Vec::new();
    for i in 0..20_000 {
        flood.extend_from_slice(format!("NOOP {i}\r\n").as_bytes());
    }
    let limit = h.session.config().max_pending_input;
    let taken = h.session.handle_input(&flood, h.now).unwrap();
    assert_eq!(taken, limit);
    for _ in 0..10 {
        assert_eq!(h.session.handle_input(&flood[taken..], h.now).unwrap(), 0);
    }
    assert!(h.session.poll_output().is_none());
    h.backlog.extend_from_slice(&flood[taken..]);
    h.transcript.clear();
    h.decide(Decision::Accept);
    let lines = h.server_lines();
    assert_eq!(lines.len(), 1 + 20_000);
    assert_eq!(lines[0], "250 2.1.0 Sender OK");
    assert!(lines[1..].iter().all(|l| *l == "250 2.0.0 OK"));
    assert!(h.backlog.is_empty());
}

#[test]
fn a_flood_of_hook_triggering_commands_waits_for_each_decision() {
    let mut h = Harness::manual(connect_hook());
    h.decide(Decision::Accept);
    h.send("EHLO c\r\n");
    let flood = "MAIL FROM:<a@example.org>\r\nRSET\r\n".repeat(5000);
    h.feed(flood.as_bytes());
    let mut decisions = 0;
    for _ in 0..10_000 {
        if h.pending.is_empty() {
            break;
        }
        h.decide(Decision::reject(450, "4.7.1 slow down").unwrap());
        decisions += 1;
        assert!(h.pending.len() <= 1, "one hook at a time");
    }
    // Each 450 counts toward the error limit: the flood ends at 20.
    assert_eq!(decisions, 20);
    assert_eq!(h.closes, 1);
    assert_eq!(
        h.server_lines().last(),
        Some(&"421 4.7.0 mx.example Error: too many errors")
    );
}

#[test]
fn output_after_close_is_impossible_whatever_the_runtime_does() {
    let mut h = pending_mail();
    let id = *h.pending.front().unwrap();
    h.session
        .handle_io_error(
            smtp_session::IoError::new(smtp_session::IoErrorKind::Socket, "reset", Some(104)),
            h.now,
        )
        .unwrap();
    h.drain();
    let now = h.now + Duration::from_secs(1000);
    assert_eq!(
        h.session.decide(id, Decision::Accept, now),
        Err(Error::Closed)
    );
    assert_eq!(h.session.handle_input(b"NOOP\r\n", now), Err(Error::Closed));
    assert_eq!(h.session.handle_eof(now), Err(Error::Closed));
    assert_eq!(h.session.handle_timeout(now), Err(Error::Closed));
    assert_eq!(h.session.handle_shutdown(now), Err(Error::Closed));
    assert!(h.session.poll_output().is_none());
    assert_eq!(h.closes, 1);
    assert_eq!(h.disconnects, 1);
    assert!(!h.transcript.contains("S: "), "no write after an I/O error");
}

#[test]
fn a_hook_call_that_is_not_the_disconnect_hook_needs_a_decision() {
    // The raw outputs: the connect call needs a decision, the disconnect one does not.
    let now = start();
    let mut s = smtp_session::Session::new(connect_hook(), info(), now);
    let Some(Output::HookCall(call)) = s.poll_output() else {
        panic!()
    };
    assert!(matches!(call.hook, Hook::Connect));
    assert!(call.needs_decision());
    s.decide(call.id, Decision::reject(421, "4.3.2 busy").unwrap(), now)
        .unwrap();
    let outs: Vec<Output> = std::iter::from_fn(|| s.poll_output()).collect();
    assert!(matches!(outs[0], Output::Write(_)));
    assert!(matches!(outs[1], Output::Close));
    let Output::HookCall(disconnect) = &outs[2] else {
        panic!()
    };
    assert!(!disconnect.needs_decision());
    assert_eq!(
        s.decide(disconnect.id, Decision::Accept, now),
        Err(Error::Closed)
    );
    assert_eq!(outs.len(), 3);
}
