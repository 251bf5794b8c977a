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

// ---------------------------------------------------------------------------------------
// BDAT and command lines follow the same line-ending policy (SPEC 8).

const BDAT_ENVELOPE: &str = "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n";

/// `BDAT n LAST` carrying the smuggling attempt, then NOOP.
fn smuggle_bdat(policy: BareLineEndings, mail_params: &str, seq: &[u8]) -> Harness {
    let mut h = Harness::new(with_policy(policy));
    let envelope = BDAT_ENVELOPE.replace(
        "MAIL FROM:<a@example.org>",
        &format!("MAIL FROM:<a@example.org>{mail_params}"),
    );
    h.send(&envelope);
    h.transcript.clear();
    let mut chunk = b"hello".to_vec();
    chunk.extend_from_slice(seq);
    chunk.extend_from_slice(b"MAIL FROM:<spoof@example.com>\r\n");
    h.send(&format!("BDAT {} LAST\r\n", chunk.len()));
    h.send_data(&chunk);
    h.send("NOOP\r\n");
    h
}

#[test]
fn bdat_carrying_lf_dot_lf_is_refused_as_data_is() {
    let mut h = smuggle_bdat(BareLineEndings::Reject, "", b"\n.\n");
    h.expect(
        r#"C: BDAT 39 LAST
           C= hello\n.\nMAIL FROM:<spoof@example.com>\r\n
           S: 550 5.6.0 Message contains bare CR or LF; line endings must be CRLF
           C: NOOP
           S: 250 2.0.0 OK"#,
    );
    assert!(h.messages.is_empty(), "nothing is stored");
}

#[test]
fn every_smuggling_sequence_in_bdat_is_refused_normalized_or_allowed_by_policy() {
    for seq in SMUGGLING {
        let has_bare = seq
            .windows(2)
            .any(|w| w != b"\r\n" && (w[0] == b'\r' || w[1] == b'\n'))
            || seq.starts_with(b"\n")
            || seq.ends_with(b"\r");
        let h = smuggle_bdat(BareLineEndings::Reject, "", seq);
        let lines = h.server_lines();
        if has_bare {
            assert!(
                lines[0].starts_with("550 5.6.0"),
                "{}: {lines:?}",
                escape(seq)
            );
            assert!(h.messages.is_empty());
        } else {
            assert_eq!(lines[0], "250 2.0.0 Message accepted", "{}", escape(seq));
        }
        assert_eq!(lines[1], "250 2.0.0 OK", "the chunk was consumed whole");

        // Normalized, no bare CR or LF reaches the stored body.
        let h = smuggle_bdat(BareLineEndings::Normalize, "", seq);
        let body = &h.messages[0].body;
        for (i, &b) in body.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(body.get(i + 1), Some(&b'\n'), "{}", escape(body)),
                b'\n' => assert_eq!(body.get(i.wrapping_sub(1)), Some(&b'\r')),
                _ => {}
            }
        }
        assert_eq!(h.messages[0].bare_line_endings, has_bare);

        // Allowed, stored byte for byte.
        let h = smuggle_bdat(BareLineEndings::Allow, "", seq);
        assert!(h.messages[0].body.windows(seq.len()).any(|w| w == seq));
    }
}

#[test]
fn binary_bdat_content_is_not_looked_at() {
    let h = smuggle_bdat(BareLineEndings::Reject, " BODY=BINARYMIME", b"\n.\n");
    assert_eq!(
        h.server_lines(),
        ["250 2.0.0 Message accepted", "250 2.0.0 OK"]
    );
    assert!(!h.messages[0].bare_line_endings);
    assert!(h.messages[0].body.starts_with(b"hello\n.\nMAIL FROM"));
}

#[test]
fn a_bare_lf_found_in_a_middle_chunk_ends_the_transaction_there() {
    let mut h = Harness::new(config());
    h.send(BDAT_ENVELOPE);
    h.transcript.clear();
    h.send("BDAT 4\r\n");
    h.send_data(b"a\nb\r");
    h.send("BDAT 3 LAST\r\n");
    h.send_data(b"\nc\r");
    h.expect(
        r#"C: BDAT 4
           C= a\nb\r
           S: 550 5.6.0 Message contains bare CR or LF; line endings must be CRLF
           C: BDAT 3 LAST
           C= \nc\r
           S: 503 5.5.1 Need MAIL command first"#,
    );
    // A CR ending one chunk and an LF starting the next are one CRLF.
    let mut h = Harness::new(config());
    h.send(BDAT_ENVELOPE);
    h.send("BDAT 2\r\n");
    h.send_data(b"a\r");
    h.send("BDAT 3 LAST\r\n");
    h.send_data(b"\nb\r");
    // ... but a CR ending the last chunk is bare.
    assert!(h.server_lines().last().unwrap().starts_with("550 5.6.0"));
    let mut h = Harness::new(config());
    h.send(BDAT_ENVELOPE);
    h.send("BDAT 2\r\n");
    h.send_data(b"a\r");
    h.send("BDAT 4 LAST\r\n");
    h.send_data(b"\nb\r\n");
    assert_eq!(h.messages[0].body, b"a\r\nb\r\n");
}

#[test]
fn a_command_ended_by_a_bare_lf_is_refused_and_not_executed() {
    let mut h = Harness::new(config());
    h.send_bytes(b"EHLO c\r\nMAIL FROM:<a@example.org>\n");
    h.send_bytes(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\nQUIT\n");
    h.expect(
        r#"S: 220 mx.example ESMTP
           C: EHLO c
           C~ MAIL FROM:<a@example.org>\n
           S: 250-mx.example greets c
           S: 250-PIPELINING
           S: 250-SIZE 26214400
           S: 250-8BITMIME
           S: 250-ENHANCEDSTATUSCODES
           S: 250-SMTPUTF8
           S: 250-CHUNKING
           S: 250-BINARYMIME
           S: 250 DSN
           S: 550 5.5.2 Error: bare <LF> received
           C: MAIL FROM:<a@example.org>
           C~ RCPT TO:<b@example.net>\nQUIT\n
           S: 250 2.1.0 Sender OK
           S: 550 5.5.2 Error: bare <LF> received
           S: 550 5.5.2 Error: bare <LF> received"#,
    );
    assert!(
        !h.session.is_closed(),
        "QUIT ended by a bare LF was not executed"
    );
    assert_eq!(h.session.envelope().unwrap().recipients.len(), 0);
}

#[test]
fn a_bdat_command_ended_by_a_bare_lf_still_has_its_chunk_skipped() {
    let mut h = Harness::new(config());
    h.send(BDAT_ENVELOPE);
    h.transcript.clear();
    h.send_bytes(b"BDAT 12 LAST\nRSET\r\nQUIT\r\n");
    h.send("NOOP\r\n");
    h.expect(
        r#"C: BDAT 12 LAST\nRSET
           C: QUIT
           S: 550 5.5.2 Error: bare <LF> received
           C: NOOP
           S: 250 2.0.0 OK"#,
    );
    assert!(
        h.session.envelope().is_some(),
        "the RSET inside the chunk did not run"
    );
}

#[test]
fn commands_ended_by_a_bare_lf_are_accepted_when_normalized_or_allowed() {
    for policy in [BareLineEndings::Normalize, BareLineEndings::Allow] {
        let mut h = Harness::new(with_policy(policy));
        h.send_bytes(b"EHLO c\nMAIL FROM:<a@example.org>\nQUIT\n");
        let lines = h.server_lines();
        assert_eq!(lines.last(), Some(&"221 2.0.0 Bye"), "{policy:?}");
        assert!(lines.contains(&"250 2.1.0 Sender OK"));
    }
}
