//! Limits (SPEC section 9): command line length, recipients, the hard error limit and the
//! buffer of input that waits for a pending hook.

mod common;
use common::*;

use smtp_session::{Config, Decision, Extensions, Hooks, Output, Reply, Session};

/// The default command line limit: 512 plus the SIZE (26), SMTPUTF8 (10) and DSN (600)
/// allowances.
const DEFAULT_LINE_LIMIT: usize = 512 + 26 + 10 + 600;

/// `NOOP` padded so that the whole line, CRLF included, is `len` octets.
fn noop_line(len: usize) -> Vec<u8> {
    let mut line = b"NOOP ".to_vec();
    line.resize(len - 2, b'x');
    line.extend_from_slice(b"\r\n");
    line
}

#[test]
fn a_mebibyte_without_newline_is_taken_in_full_answered_once_and_skipped() {
    let mut h = Harness::new(config());
    h.send("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n");
    h.transcript.clear();
    // Commands hidden in the overlong line must never run.
    let mut piece = b"RCPT TO:<evil@example.com>\rQUIT\r".to_vec();
    piece.resize(4096, b'A');
    for _ in 0..256 {
        let taken = h.session.handle_input(&piece, h.now).unwrap();
        assert_eq!(taken, 4096, "an overlong line is taken, not pushed back");
        assert!(h.session.poll_output().is_none(), "no reply before the LF");
    }
    h.transcript.push_str("C~ (1 MiB without LF)\n");
    h.send("\r\nRCPT TO:<b@example.net>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n");
    h.expect(
        "C~ (1 MiB without LF)
         C:
         C: RCPT TO:<b@example.net>
         C: DATA
         C: hi
         C: .
         C: QUIT
         S: 500 5.5.2 Line too long
         S: 250 2.1.5 Recipient OK
         S: 354 End data with <CR><LF>.<CR><LF>
         H: message from <a@example.org> to <b@example.net> body \"hi\\r\\n\"
         D: accept
         S: 250 2.0.0 Message accepted
         S: 221 2.0.0 Bye
         -- close
         H: disconnect close=local reply=221 2.0.0 quit",
    );
}

#[test]
fn an_overlong_line_in_one_read_is_answered_once_and_the_transaction_survives() {
    let mut h = Harness::new(config());
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\n");
    h.transcript.clear();
    let mut input = vec![b'Z'; 100_000];
    input.extend_from_slice(b"\r\nRCPT TO:<b@example.net>\r\n");
    h.feed(&input);
    assert_eq!(
        h.server_lines(),
        ["500 5.5.2 Line too long", "250 2.1.5 Recipient OK"]
    );
}

#[test]
fn the_line_limit_includes_the_crlf_and_the_extension_allowances() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.feed(&noop_line(DEFAULT_LINE_LIMIT));
    h.feed(&noop_line(DEFAULT_LINE_LIMIT + 1));
    // Byte by byte makes no difference.
    for line in [
        noop_line(DEFAULT_LINE_LIMIT),
        noop_line(DEFAULT_LINE_LIMIT + 1),
    ] {
        for b in line {
            h.feed(&[b]);
        }
    }
    assert_eq!(
        h.server_lines(),
        [
            "250 2.0.0 OK",
            "500 5.5.2 Line too long",
            "250 2.0.0 OK",
            "500 5.5.2 Line too long"
        ]
    );
}

#[test]
fn without_extensions_the_line_limit_is_rfc_5321s_512() {
    let config = Config {
        extensions: Extensions {
            size: false,
            smtputf8: false,
            dsn: false,
            ..Extensions::default()
        },
        ..config()
    };
    let mut h = Harness::new(config);
    h.transcript.clear();
    h.feed(&noop_line(512));
    h.feed(&noop_line(513));
    h.feed(b"NOOP\r\n");
    assert_eq!(
        h.server_lines(),
        ["250 2.0.0 OK", "500 5.5.2 Line too long", "250 2.0.0 OK"]
    );
}

#[test]
fn max_line_length_is_configurable() {
    let config = Config {
        max_line_length: 4096,
        ..config()
    };
    let limit = 4096 + 26 + 10 + 600;
    let mut h = Harness::new(config);
    h.transcript.clear();
    h.feed(&noop_line(limit));
    h.feed(&noop_line(limit + 1));
    assert_eq!(
        h.server_lines(),
        ["250 2.0.0 OK", "500 5.5.2 Line too long"]
    );
}

fn recipients(h: &mut Harness, n: usize) {
    let mut input = String::new();
    for i in 0..n {
        input.push_str(&format!("RCPT TO:<r{i}@example.net>\r\n"));
    }
    h.feed(input.as_bytes());
}

#[test]
fn one_hundred_recipients_are_accepted_then_452_4_5_3() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    h.transcript.clear();
    recipients(&mut h, 102);
    let lines = h.server_lines();
    assert_eq!(lines.len(), 102);
    assert!(lines[..100].iter().all(|l| *l == "250 2.1.5 Recipient OK"));
    assert_eq!(
        lines[100..],
        [
            "452 4.5.3 Too many recipients",
            "452 4.5.3 Too many recipients"
        ]
    );
    // The transaction goes on with the first hundred.
    h.send("DATA\r\nhi\r\n.\r\n");
    assert_eq!(h.messages.len(), 1);
    assert_eq!(h.messages[0].envelope.recipients.len(), 100);
    assert_eq!(
        h.messages[0].envelope.recipients[99].path.to_string(),
        "r99@example.net"
    );
    // A new transaction starts counting again.
    h.transcript.clear();
    h.send("MAIL FROM:<a@example.org>\r\n");
    recipients(&mut h, 100);
    assert!(h.server_lines()[1..]
        .iter()
        .all(|l| *l == "250 2.1.5 Recipient OK"));
}

#[test]
fn rset_clears_the_recipient_count() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    recipients(&mut h, 100);
    h.transcript.clear();
    h.send("RSET\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.net>\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "250 2.0.0 OK",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK"
        ]
    );
}

#[test]
fn max_recipients_is_configurable_but_never_below_one_hundred() {
    for (configured, effective) in [(150, 150), (100, 100), (10, 100), (0, 100)] {
        let config = Config {
            max_recipients: configured,
            ..config()
        };
        let mut h = Harness::new(config);
        assert_eq!(h.session.config().max_recipients, effective);
        h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
        h.transcript.clear();
        recipients(&mut h, effective + 1);
        let lines = h.server_lines();
        assert_eq!(lines.len(), effective + 1, "configured {configured}");
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("250 ")).count(),
            effective
        );
        assert_eq!(lines[effective], "452 4.5.3 Too many recipients");
    }
}

#[test]
fn recipients_refused_by_the_hook_do_not_count_toward_the_limit() {
    let config = Config {
        hooks: Hooks {
            rcpt_to: true,
            ..Hooks::NONE
        },
        hard_error_limit: 1000,
        ..config()
    };
    let policy = |hook: &smtp_session::Hook| match hook {
        smtp_session::Hook::RcptTo { path, .. } if path.to_string().starts_with("no") => {
            Decision::reject(550, "5.1.1 unknown").unwrap()
        }
        _ => Decision::Accept,
    };
    let mut h = Harness::with_policy(config, Policy::Auto(Box::new(policy)));
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    let mut input = String::new();
    for i in 0..50 {
        input.push_str(&format!("RCPT TO:<no{i}@example.net>\r\n"));
    }
    h.feed(input.as_bytes());
    h.transcript.clear();
    recipients(&mut h, 101);
    let lines = h.server_lines();
    assert_eq!(lines.iter().filter(|l| l.starts_with("250 ")).count(), 100);
    assert_eq!(lines.last(), Some(&"452 4.5.3 Too many recipients"));
}

#[test]
fn the_hard_error_limit_counts_error_replies_only() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    // 19 errors, with successes in between that do not reset the count.
    for _ in 0..19 {
        h.feed(b"BOGUS\r\nNOOP\r\n");
    }
    assert_eq!(h.closes, 0);
    assert_eq!(h.server_lines().len(), 38);
    h.send("MAIL FROM:<a@example.org>\r\nNOOP\r\n");
    let lines = h.server_lines();
    assert_eq!(
        lines[38..],
        [
            "503 5.5.1 Send HELO or EHLO first",
            "421 4.7.0 mx.example Error: too many errors"
        ]
    );
    assert!(h
        .transcript
        .ends_with("-- close\nH: disconnect close=local reply=421 4.7.0 mail\n"));
    assert_eq!(h.closes, 1);
}

#[test]
fn the_hard_error_limit_is_configurable() {
    let config = Config {
        hard_error_limit: 2,
        ..config()
    };
    let mut h = Harness::new(config);
    h.transcript.clear();
    h.send("EHLO c\r\nRCPT TO:<a@example.org>\r\nDATA\r\nNOOP\r\n");
    h.expect(
        "C: EHLO c
         C: RCPT TO:<a@example.org>
         C: DATA
         C: NOOP
         S: 250-mx.example greets c
         S: 250-PIPELINING
         S: 250-SIZE 26214400
         S: 250-8BITMIME
         S: 250-ENHANCEDSTATUSCODES
         S: 250-SMTPUTF8
         S: 250-CHUNKING
         S: 250-BINARYMIME
         S: 250 DSN
         S: 503 5.5.1 Need MAIL command first
         S: 503 5.5.1 Need MAIL command first
         S: 421 4.7.0 mx.example Error: too many errors
         -- close
         H: disconnect close=local reply=421 4.7.0 data",
    );
}

#[test]
fn the_error_limit_counts_hook_rejections() {
    let config = Config {
        hard_error_limit: 3,
        hooks: Hooks {
            mail_from: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let policy = |_: &smtp_session::Hook| Decision::reject(550, "5.7.1 no").unwrap();
    let mut h = Harness::with_policy(config, Policy::Auto(Box::new(policy)));
    h.transcript.clear();
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\nBOGUS\r\nNOOP\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "250 mx.example",
            "550 5.7.1 no",
            "550 5.7.1 no",
            "500 5.5.1 Command unrecognized",
            "421 4.7.0 mx.example Error: too many errors"
        ]
    );
    assert_eq!(h.closes, 1);
}

#[test]
fn replies_marked_as_the_servers_fault_do_not_count_toward_the_error_limit() {
    // A full disk refuses every MAIL and fails every store: the client, retrying, is never
    // cut off for it, while its own mistakes still count.
    let config = Config {
        hard_error_limit: 3,
        hooks: Hooks {
            mail_from: true,
            message: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let policy = |hook: &smtp_session::Hook| {
        let (code, text) = match hook {
            smtp_session::Hook::MailFrom { path, .. } if path.to_string().starts_with("full") => {
                (452, "4.3.1 Insufficient system storage")
            }
            smtp_session::Hook::MailFrom { .. } => return Decision::Accept,
            _ => (451, "4.3.0 Could not store the message"),
        };
        Decision::Reject(Reply::new(code, text).unwrap().server_fault())
    };
    let mut h = Harness::with_policy(config, Policy::Auto(Box::new(policy)));
    h.transcript.clear();
    h.send("HELO c\r\n");
    for _ in 0..4 {
        h.send("MAIL FROM:<full@example.org>\r\n");
    }
    for _ in 0..4 {
        h.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nx\r\n.\r\n");
    }
    // BDAT: the refusal of the last chunk is the server's fault too.
    h.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT 1 LAST\r\nx");
    assert_eq!(h.closes, 0);
    let lines = h.server_lines();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("452 4.3.1")).count(),
        4
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("451 4.3.0")).count(),
        5
    );
    // What a runtime paces error replies by (the tokio crate's error delay) agrees.
    assert_eq!(h.session.error_count(), 0);
    let before = lines.len();
    h.send("BOGUS\r\n");
    assert_eq!(h.session.error_count(), 1);
    h.send("BOGUS\r\nBOGUS\r\n");
    assert_eq!(
        h.server_lines()[before..],
        [
            "500 5.5.1 Command unrecognized",
            "500 5.5.1 Command unrecognized",
            "500 5.5.1 Command unrecognized",
            "421 4.7.0 mx.example Error: too many errors"
        ]
    );
    assert_eq!(h.closes, 1);
}

fn mail_hook(max_pending_input: usize) -> Config {
    Config {
        hooks: Hooks {
            mail_from: true,
            ..Hooks::NONE
        },
        max_pending_input,
        ..config()
    }
}

#[test]
fn input_behind_a_pending_hook_is_buffered_up_to_max_pending_input() {
    let mut h = Harness::manual(mail_hook(2048));
    let head = b"HELO c\r\nMAIL FROM:<a@example.org>\r\n";
    let mut input = head.to_vec();
    input.extend(b"NOOP\r\n".repeat(1000));
    let taken = h.session.handle_input(&input, h.now).unwrap();
    assert_eq!(taken, head.len() + 2048, "the commands and a full buffer");
    h.drain();
    // The buffer is full: nothing more is taken, however it is offered.
    assert_eq!(h.session.handle_input(&input[taken..], h.now).unwrap(), 0);
    assert_eq!(
        h.session
            .handle_input(&input[taken..taken + 1], h.now)
            .unwrap(),
        0
    );
    assert_eq!(h.session.handle_input(b"", h.now).unwrap(), 0);
    assert!(h.session.poll_output().is_none());
    assert_eq!(h.server_lines(), ["220 mx.example ESMTP", "250 mx.example"]);
    // Once decided, the buffered commands run, and then the rest is taken.
    h.backlog.extend_from_slice(&input[taken..]);
    h.decide(Decision::Accept);
    let lines = h.server_lines();
    assert_eq!(lines.len(), 3 + 1000);
    assert_eq!(lines[2], "250 2.1.0 Sender OK");
    assert!(lines[3..].iter().all(|l| *l == "250 2.0.0 OK"));
    assert!(h.backlog.is_empty());
}

#[test]
fn a_second_pending_hook_in_the_buffer_pushes_back_again() {
    let mut h = Harness::manual(mail_hook(1200));
    let mut input =
        b"HELO c\r\nMAIL FROM:<a@example.org>\r\nRSET\r\nMAIL FROM:<b@example.org>\r\n".to_vec();
    input.extend(b"NOOP\r\n".repeat(1000));
    h.feed(&input);
    assert!(!h.backlog.is_empty(), "the flood waits in the runtime");
    h.decide(Decision::Accept);
    // The second MAIL's hook is pending: the rest waits again, bounded.
    assert_eq!(h.pending.len(), 1);
    assert!(!h.backlog.is_empty());
    h.decide(Decision::Accept);
    assert!(h.backlog.is_empty());
    let lines = h.server_lines();
    assert_eq!(
        lines[..5],
        [
            "220 mx.example ESMTP",
            "250 mx.example",
            "250 2.1.0 Sender OK",
            "250 2.0.0 OK",
            "250 2.1.0 Sender OK"
        ]
    );
    assert_eq!(lines.len(), 5 + 1000);
}

#[test]
fn max_pending_input_is_clamped_to_hold_at_least_one_command_line() {
    for (configured, effective) in [
        (0, DEFAULT_LINE_LIMIT),
        (100, DEFAULT_LINE_LIMIT),
        (4096, 4096),
        (1 << 30, 16 << 20),
    ] {
        let now = start();
        let session = Session::new(mail_hook(configured), info(), now);
        assert_eq!(
            session.config().max_pending_input,
            effective,
            "configured {configured}"
        );
    }
    // With the smallest buffer a whole command line still fits behind a pending hook.
    let mut h = Harness::manual(mail_hook(0));
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\n");
    let line = noop_line(DEFAULT_LINE_LIMIT);
    assert_eq!(
        h.session.handle_input(&line, h.now).unwrap(),
        DEFAULT_LINE_LIMIT
    );
    h.decide(Decision::Accept);
    assert_eq!(h.server_lines().last(), Some(&"250 2.0.0 OK"));
}

#[test]
fn the_connect_hook_pending_buffers_only_up_to_the_limit() {
    let config = Config {
        hooks: Hooks {
            connect: true,
            ..Hooks::NONE
        },
        max_pending_input: 1500,
        ..config()
    };
    let now = start();
    let mut s = Session::new(config, info(), now);
    let Some(Output::HookCall(call)) = s.poll_output() else {
        panic!("the connect hook first")
    };
    let flood = b"NOOP\r\n".repeat(1000);
    assert_eq!(s.handle_input(&flood, now).unwrap(), 1500);
    assert_eq!(s.handle_input(&flood[1500..], now).unwrap(), 0);
    assert!(
        s.poll_output().is_none(),
        "nothing is answered before the greeting"
    );
    s.decide(call.id, Decision::Accept, now).unwrap();
    let Some(Output::Write(bytes)) = s.poll_output() else {
        panic!("the greeting and the replies")
    };
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("220 mx.example ESMTP\r\n250 2.0.0 OK\r\n"));
    assert_eq!(text.matches("250 2.0.0 OK\r\n").count(), 250);
}

// ---------------------------------------------------------------------------------------
// One drain of the outputs is bounded, however the runtime sends what it polls.

/// Drains once, as a runtime that collects every write before sending any would: the
/// bytes it would hold unsent.
fn one_drain(s: &mut Session) -> (usize, Vec<smtp_session::HookId>) {
    let mut unsent = 0;
    let mut hooks = Vec::new();
    while let Some(output) = s.poll_output() {
        match output {
            Output::Write(bytes) => unsent += bytes.len(),
            Output::HookCall(call) if call.needs_decision() => hooks.push(call.id),
            _ => {}
        }
    }
    (unsent, hooks)
}

#[test]
fn a_decided_hook_with_a_full_buffer_behind_it_yields_at_most_the_output_limit_per_drain() {
    let config = Config {
        hooks: Hooks {
            mail_from: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let limit = config.max_pending_output;
    let now = start();
    let mut s = Session::new(config, info(), now);
    one_drain(&mut s);
    s.handle_input(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n", now)
        .unwrap();
    let (_, hooks) = one_drain(&mut s);
    // 64 KiB of NOOPs wait behind the hook: 10,922 commands, 153 KB of replies.
    let flood = b"NOOP\r\n".repeat(10_922);
    assert_eq!(s.handle_input(&flood, now).unwrap(), flood.len());
    s.decide(hooks[0], Decision::Accept, now).unwrap();
    let mut total = 0;
    let mut drains = 0;
    loop {
        let (unsent, _) = one_drain(&mut s);
        assert!(unsent <= limit + 64, "one drain held {unsent} bytes unsent");
        total += unsent;
        drains += 1;
        // The session goes on only when the runtime is back for more.
        match s.poll_timeout() {
            Some(due) if due <= now => s.handle_timeout(now).unwrap(),
            _ => break,
        }
    }
    let reply = "250 2.0.0 OK\r\n".len();
    assert_eq!(total, "250 2.1.0 Sender OK\r\n".len() + 10_922 * reply);
    assert!(drains >= 3, "{drains} drains");
    // Then the session waits for a command again, with the command timeout.
    assert_eq!(
        s.poll_timeout(),
        Some(now + std::time::Duration::from_secs(300))
    );
}

#[test]
fn a_flood_of_pipelined_commands_in_one_read_yields_at_most_the_output_limit_per_drain() {
    let config = Config {
        hooks: Hooks::NONE,
        ..config()
    };
    let limit = config.max_pending_output;
    let now = start();
    let mut s = Session::new(config, info(), now);
    one_drain(&mut s);
    s.handle_input(b"EHLO c\r\n", now).unwrap();
    one_drain(&mut s);
    let flood = b"RSET\r\n".repeat(100_000);
    let mut rest: &[u8] = &flood;
    let mut replies = 0;
    for _ in 0..1000 {
        if rest.is_empty() && s.poll_timeout().is_some_and(|d| d > now) {
            break;
        }
        let taken = s.handle_input(rest, now).unwrap();
        rest = &rest[taken..];
        let (unsent, _) = one_drain(&mut s);
        assert!(unsent <= limit + 64, "one drain held {unsent} bytes unsent");
        replies += unsent;
        if s.poll_timeout().is_some_and(|d| d <= now) {
            s.handle_timeout(now).unwrap();
            let (unsent, _) = one_drain(&mut s);
            assert!(unsent <= limit + 64, "one drain held {unsent} bytes unsent");
            replies += unsent;
        }
    }
    assert!(rest.is_empty());
    assert_eq!(replies, 100_000 * "250 2.0.0 OK\r\n".len());
}
