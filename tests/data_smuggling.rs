//! DATA: dot-unstuffing, the end-of-data sequence, and the SMTP smuggling sequences under
//! each bare-line-ending policy.

mod common;
use common::*;
use smtp_session::{BareLineEndings, Config};

const SMUGGLING: [&[u8]; 11] = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r.\n",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r\n.\r\r\n",
    b"\r\n\0.\r\n",
    b"\r\n.\0\r\n",
    b"\r\r\n.\r\r\n",
];

const ENVELOPE: &str = "HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n";

fn with_policy(policy: BareLineEndings) -> Config {
    Config {
        bare_line_endings: policy,
        ..config()
    }
}

/// Sends a message whose body is `body`, followed by a would-be smuggled command and a real
/// end of data, then NOOP.
fn smuggle(policy: BareLineEndings, seq: &[u8]) -> Harness {
    let mut h = Harness::new(with_policy(policy));
    let mut input = ENVELOPE.as_bytes().to_vec();
    input.extend_from_slice(b"Subject: test\r\n\r\nbefore");
    input.extend_from_slice(seq);
    input.extend_from_slice(b"MAIL FROM:<smuggled@example.org>\r\n.\r\nNOOP\r\n");
    h.feed(&input);
    h
}

#[test]
fn no_smuggling_sequence_ends_data_or_starts_a_command_under_any_policy() {
    for policy in [
        BareLineEndings::Reject,
        BareLineEndings::Normalize,
        BareLineEndings::Allow,
    ] {
        for seq in SMUGGLING {
            let h = smuggle(policy, seq);
            let lines = h.server_lines();
            // 220, 250 HELO, 250 MAIL, 250 RCPT, 354, one reply after the real dot, NOOP.
            assert_eq!(lines.len(), 7, "{policy:?} {}: {lines:?}", escape(seq));
            assert_eq!(lines[4], "354 End data with <CR><LF>.<CR><LF>");
            assert_eq!(lines[6], "250 2.0.0 OK", "{policy:?} {}", escape(seq));
            assert!(
                !lines.iter().any(|l| l.contains("2.1.0") && l != &lines[2]),
                "no second MAIL was executed"
            );
            let has_bare = seq
                .windows(2)
                .any(|w| w != b"\r\n" && (w[0] == b'\r' || w[1] == b'\n'))
                || seq.starts_with(b"\n")
                || seq.ends_with(b"\r");
            match policy {
                BareLineEndings::Reject if has_bare => {
                    assert_eq!(
                        lines[5],
                        "550 5.6.0 Message contains bare CR or LF; line endings must be CRLF"
                    );
                    assert!(h.messages.is_empty());
                }
                _ => {
                    assert_eq!(
                        lines[5],
                        "250 2.0.0 Message accepted",
                        "{policy:?} {}",
                        escape(seq)
                    );
                    let body = &h.messages[0].body;
                    assert!(
                        body.windows(b"MAIL FROM:<smuggled".len())
                            .any(|w| w == b"MAIL FROM:<smuggled"),
                        "the would-be command stays in the body"
                    );
                }
            }
        }
    }
}

#[test]
fn the_nul_sequences_have_no_bare_line_ending_and_are_accepted_as_data() {
    for seq in [&b"\r\n\0.\r\n"[..], b"\r\n.\0\r\n"] {
        let h = smuggle(BareLineEndings::Reject, seq);
        assert_eq!(h.server_lines()[5], "250 2.0.0 Message accepted");
    }
}

#[test]
fn normalize_turns_bare_line_endings_into_crlf_without_ending_data() {
    let mut h = Harness::new(with_policy(BareLineEndings::Normalize));
    h.feed(ENVELOPE.as_bytes());
    h.feed(b"a\nb\rc\r\n.\r\n");
    assert_eq!(h.messages[0].body, b"a\r\nb\r\nc\r\n");
}

#[test]
fn allow_keeps_bare_line_endings_as_they_came() {
    let mut h = Harness::new(with_policy(BareLineEndings::Allow));
    h.feed(ENVELOPE.as_bytes());
    h.feed(b"a\nb\rc\r\n.\r\n");
    assert_eq!(h.messages[0].body, b"a\nb\rc\r\n");
}

#[test]
fn dot_stuffing_is_removed_and_the_dot_line_right_after_data_is_an_empty_message() {
    let mut h = Harness::new(config());
    h.feed(ENVELOPE.as_bytes());
    h.feed(b"..leading dot\r\n...two\r\n.\r\n");
    h.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n.\r\n");
    assert_eq!(h.messages[0].body, b".leading dot\r\n..two\r\n");
    assert_eq!(h.messages[1].body, b"");
    assert_eq!(
        h.server_lines()
            .iter()
            .filter(|l| **l == "250 2.0.0 Message accepted")
            .count(),
        2
    );
}

#[test]
fn a_transcript_of_one_message() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.send(
        "HELO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
    );
    h.send("Subject: hi\r\n\r\nHello.\r\n.\r\n");
    h.expect(
        r#"C: HELO client.example
           C: MAIL FROM:<a@example.org>
           C: RCPT TO:<b@example.net>
           C: DATA
           S: 250 mx.example
           S: 250 2.1.0 Sender OK
           S: 250 2.1.5 Recipient OK
           S: 354 End data with <CR><LF>.<CR><LF>
           C: Subject: hi
           C:
           C: Hello.
           C: .
           H: message from <a@example.org> to <b@example.net> body "Subject: hi\r\n\r\nHello.\r\n"
           D: accept
           S: 250 2.0.0 Message accepted"#,
    );
}

#[test]
fn an_oversized_message_is_read_to_the_end_then_refused_with_552() {
    let config = Config {
        max_message_size: 1000,
        ..config()
    };
    let mut h = Harness::new(config);
    h.feed(ENVELOPE.as_bytes());
    for _ in 0..100 {
        h.feed(&[b'x'; 100]);
        h.feed(b"\r\n");
    }
    h.feed(b".\r\nNOOP\r\n");
    let lines = h.server_lines();
    assert_eq!(
        &lines[5..],
        [
            "552 5.3.4 Message size exceeds fixed maximum message size",
            "250 2.0.0 OK"
        ]
    );
    assert!(h.messages.is_empty());
}

#[test]
fn data_errors() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.send("DATA\r\nHELO c\r\nDATA\r\nMAIL FROM:<a@example.org>\r\nDATA\r\nDATA x\r\n");
    h.expect(
        "C: DATA
         C: HELO c
         C: DATA
         C: MAIL FROM:<a@example.org>
         C: DATA
         C: DATA x
         S: 503 5.5.1 Need MAIL command first
         S: 250 mx.example
         S: 503 5.5.1 Need MAIL command first
         S: 250 2.1.0 Sender OK
         S: 503 5.5.1 Need RCPT command first
         S: 501 5.5.4 Syntax error in arguments",
    );
}
