//! The fields a receiver writes stay its own (SPEC 16): message content that begins with a
//! space or tab would be a continuation line where a header section must begin (RFC 5322
//! section 2.2.3), and would fold into the `Received:` (or `Return-Path:`,
//! `Authentication-Results:`) field the receiver prepends. By default such a message is
//! refused with `550 5.6.0` after its data, and the session goes on; with
//! `LeadingWhitespace::InsertEmptyLine` an empty line is stored before it, as Postfix does.

mod common;

use common::*;
use proptest::prelude::*;
use smtp_session::{trace, AbortReason, BodyDelivery, Config, Hooks, LeadingWhitespace, Message};

/// The forgery: the first line continues the field above it, the rest looks like headers.
const FORGED: &str = "\t; dkim=pass header.d=bank.example\r\n\
                      From: ceo@bank.example\r\n\r\nPay the invoice.\r\n";

const DATE: &str = "Sat, 28 Nov 2026 10:00:00 +0000";

fn in_transaction(config: Config) -> Harness {
    let mut h = Harness::new(config);
    h.send("EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n");
    h.transcript.clear();
    h
}

fn streamed() -> Config {
    Config {
        body_delivery: BodyDelivery::Streamed { max_piece: 1024 },
        ..config()
    }
}

fn inserting(config: Config) -> Config {
    Config {
        leading_whitespace: LeadingWhitespace::InsertEmptyLine,
        ..config
    }
}

/// What a final delivery stores: Return-Path and Received prepended to the body.
fn stored(h: &Harness, message: &Message, body: &[u8]) -> Vec<u8> {
    let received = h.session.received(&message.envelope, "1A2B", DATE);
    let mut out = trace::return_path(&message.envelope.mail_from).into_bytes();
    out.extend_from_slice(received.to_string().as_bytes());
    out.extend_from_slice(body);
    out
}

/// The stored message's header section, field by field, each unfolded (RFC 5322 2.2.3).
fn unfolded_fields(message: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let header = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in header.split("\r\n") {
        match (line.starts_with([' ', '\t']), fields.last_mut()) {
            (true, Some(field)) => field.push_str(line),
            _ => fields.push(line.to_owned()),
        }
    }
    fields
}

#[test]
fn a_message_beginning_with_a_tab_is_refused_and_the_session_goes_on() {
    let mut h = in_transaction(config());
    h.send(&format!("DATA\r\n{FORGED}.\r\n"));
    h.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    h.send("Subject: fine\r\n\r\n folded-looking body line\r\n.\r\n");
    h.expect(
        r#"C: DATA
           C: \x09; dkim=pass header.d=bank.example
           C: From: ceo@bank.example
           C:
           C: Pay the invoice.
           C: .
           S: 354 End data with <CR><LF>.<CR><LF>
           S: 550 5.6.0 Message must begin with a header field, not a space or tab
           C: MAIL FROM:<a@example.org>
           C: RCPT TO:<b@example.net>
           C: DATA
           S: 250 2.1.0 Sender OK
           S: 250 2.1.5 Recipient OK
           S: 354 End data with <CR><LF>.<CR><LF>
           C: Subject: fine
           C:
           C:  folded-looking body line
           C: .
           H: message from <a@example.org> to <b@example.net> body "Subject: fine\r\n\r\n folded-looking body line\r\n"
           D: accept
           S: 250 2.0.0 Message accepted"#,
    );
    assert_eq!(h.messages.len(), 1);
    assert!(!h.messages[0].leading_whitespace);
}

#[test]
fn a_space_counts_too_and_so_does_one_left_by_dot_unstuffing() {
    for first_line in [" x", ". x", ".\tx"] {
        let mut h = in_transaction(config());
        h.send(&format!(
            "DATA\r\n{first_line}\r\nSubject: s\r\n\r\nbody\r\n.\r\n"
        ));
        assert_eq!(
            h.server_lines(),
            [
                "354 End data with <CR><LF>.<CR><LF>",
                "550 5.6.0 Message must begin with a header field, not a space or tab"
            ],
            "{first_line:?}"
        );
        assert!(h.messages.is_empty());
    }
}

#[test]
fn content_that_begins_otherwise_is_accepted_as_it_came() {
    // An empty header section, a header, a lone dot-stuffed dot, a bare word: none can
    // continue a field above it.
    let cases = [
        ("\r\nbody only\r\n", "\r\nbody only\r\n"),
        ("Subject: s\r\n\r\nx\r\n", "Subject: s\r\n\r\nx\r\n"),
        ("...\r\n", "..\r\n"),
        ("word\r\n", "word\r\n"),
    ];
    for (wire, body) in cases {
        let mut h = in_transaction(config());
        h.send(&format!("DATA\r\n{wire}.\r\n"));
        assert_eq!(h.messages.len(), 1, "{wire:?}");
        let m = &h.messages[0];
        assert_eq!(m.body, body.as_bytes());
        assert!(!m.leading_whitespace);
    }
}

#[test]
fn a_refused_message_is_refused_even_when_nobody_is_told_about_messages() {
    let mut h = in_transaction(Config {
        hooks: Hooks::NONE,
        ..config()
    });
    h.send(&format!("DATA\r\n{FORGED}.\r\n"));
    assert_eq!(
        h.server_lines()[1],
        "550 5.6.0 Message must begin with a header field, not a space or tab"
    );
}

#[test]
fn bdat_content_beginning_with_a_tab_is_refused_at_its_chunk() {
    let mut h = in_transaction(config());
    // An empty first chunk: the content's first octet comes in the second.
    h.send("BDAT 0\r\n");
    h.send(&format!("BDAT {}\r\n", FORGED.len()));
    h.send_data(FORGED.as_bytes());
    h.send("BDAT 4 LAST\r\n");
    h.send_data(b"more");
    h.expect(
        r#"C: BDAT 0
           S: 250 2.0.0 Chunk accepted
           C: BDAT 80
           C= \x09; dkim=pass header.d=bank.example\r\nFrom: ceo@bank.example\r\n\r\nPay the invoice.\r\n
           S: 550 5.6.0 Message must begin with a header field, not a space or tab
           C: BDAT 4 LAST
           C= more
           S: 503 5.5.1 Need MAIL command first"#,
    );
    assert!(h.messages.is_empty());
}

#[test]
fn binary_content_begins_with_a_header_section_too() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org> BODY=BINARYMIME\r\nRCPT TO:<b@example.net>\r\n");
    h.transcript.clear();
    h.send("BDAT 5 LAST\r\n");
    h.send_data(b" \x00\xff\n\r");
    h.expect(
        r#"C: BDAT 5 LAST
           C=  \x00\xff\n\r
           S: 550 5.6.0 Message must begin with a header field, not a space or tab"#,
    );
}

#[test]
fn lmtp_refuses_it_once_per_recipient() {
    let mut h = Harness::new(Config {
        lmtp: true,
        ..config()
    });
    h.send("LHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\n");
    h.transcript.clear();
    h.send("DATA\r\n\tx\r\n.\r\n");
    assert_eq!(
        h.server_lines()[1..],
        [
            "550 5.6.0 Message must begin with a header field, not a space or tab",
            "550 5.6.0 Message must begin with a header field, not a space or tab"
        ]
    );
}

#[test]
fn streamed_the_first_piece_decides_and_nothing_of_it_leaves() {
    let mut h = in_transaction(streamed());
    h.send("DATA\r\n");
    h.send("\t; dkim=pass header.d=bank.example\r\n");
    h.send("From: ceo@bank.example\r\n\r\n.\r\n");
    h.expect(
        r#"C: DATA
           S: 354 End data with <CR><LF>.<CR><LF>
           C: \x09; dkim=pass header.d=bank.example
           -- body aborted: LeadingWhitespace
           C: From: ceo@bank.example
           C:
           C: .
           S: 550 5.6.0 Message must begin with a header field, not a space or tab"#,
    );
    assert_eq!(h.aborted, [AbortReason::LeadingWhitespace]);
    assert!(h.messages.is_empty() && h.spooled.is_empty());
}

#[test]
fn streamed_bdat_is_aborted_at_its_first_octet() {
    let mut h = in_transaction(streamed());
    h.send("BDAT 2\r\n");
    h.send_data(b" x");
    h.send("BDAT 3 LAST\r\n");
    h.send_data(b"abc");
    h.expect(
        r#"C: BDAT 2
           C=  x
           -- body aborted: LeadingWhitespace
           S: 550 5.6.0 Message must begin with a header field, not a space or tab
           C: BDAT 3 LAST
           C= abc
           S: 503 5.5.1 Need MAIL command first"#,
    );
}

#[test]
fn inserting_an_empty_line_keeps_the_receivers_fields_whole() {
    let mut h = in_transaction(inserting(config()));
    h.send(&format!("DATA\r\n{FORGED}.\r\n"));
    let m = h.messages[0].clone();
    assert!(m.leading_whitespace);
    assert_eq!(m.body, format!("\r\n{FORGED}").as_bytes());
    assert_eq!(m.size, FORGED.len() as u64 + 2);
    let message = stored(&h, &m, &m.body);
    assert_eq!(
        unfolded_fields(&message),
        [
            "Return-Path: <a@example.org>",
            "Received: from c.example ([192.0.2.10]) by mx.example with ESMTP id 1A2B\tfor <b@example.net>; Sat, 28 Nov 2026 10:00:00 +0000",
        ]
    );
}

#[test]
fn without_the_policy_the_forgery_joins_the_received_field() {
    // What the defence prevents, shown on the bytes as they came.
    let mut h = in_transaction(config());
    h.send("DATA\r\nSubject: s\r\n\r\nx\r\n.\r\n");
    let m = h.messages[0].clone();
    let message = stored(&h, &m, FORGED.as_bytes());
    assert!(unfolded_fields(&message)[1].ends_with("+0000\t; dkim=pass header.d=bank.example"));
}

#[test]
fn inserting_an_empty_line_streamed_puts_it_in_the_first_piece() {
    let mut h = in_transaction(inserting(streamed()));
    h.send("DATA\r\n");
    h.send(".\tx\r\n");
    h.send("y\r\n.\r\n");
    h.expect(
        r#"C: DATA
           S: 354 End data with <CR><LF>.<CR><LF>
           C: .\x09x
           B= \r\n\x09x\r\n
           C: y
           C: .
           B= y\r\n
           H: message from <a@example.org> to <b@example.net> streamed, 9 bytes
           D: accept
           S: 250 2.0.0 Message accepted"#,
    );
    assert!(h.messages[0].leading_whitespace && h.messages[0].streamed);
    assert_eq!(h.spooled, [b"\r\n\tx\r\ny\r\n".to_vec()]);
}

#[test]
fn inserting_an_empty_line_in_bdat_too() {
    let mut h = in_transaction(inserting(config()));
    h.send("BDAT 4 LAST\r\n");
    h.send_data(b"\tx\r\n");
    assert_eq!(h.messages[0].body, b"\r\n\tx\r\n");
    assert!(h.messages[0].leading_whitespace && h.messages[0].chunked);
}

proptest! {
    /// Whatever the content and however it is split, in either mode and under either policy:
    /// an accepted message never begins with a space or tab, and one that was refused began
    /// with one under `Reject`.
    #[test]
    fn no_accepted_message_can_continue_the_receivers_fields(
        first in prop::sample::select(vec![" ", "\t", ".\t", ". ", "..", "\r\n", "S", ""]),
        rest in "[ \tA-Za-z:;=.\r\n]{0,40}",
        split in 1usize..8,
        streaming in any::<bool>(),
        insert in any::<bool>(),
        bdat in any::<bool>(),
    ) {
        let content = format!("{first}{rest}").replace('\r', "").replace('\n', "\r\n");
        let mut base = if streaming { streamed() } else { config() };
        if insert {
            base = inserting(base);
        }
        let mut h = in_transaction(base);
        let wire = if bdat {
            format!("BDAT {} LAST\r\n{content}", content.len())
        } else {
            let stuffed = content.replace("\r\n.", "\r\n..");
            let stuffed = if stuffed.starts_with('.') { format!(".{stuffed}") } else { stuffed };
            let end = if stuffed.is_empty() || stuffed.ends_with("\r\n") { "" } else { "\r\n" };
            format!("DATA\r\n{stuffed}{end}.\r\n")
        };
        for piece in wire.as_bytes().chunks(split) {
            h.feed(piece);
        }
        let accepted = h.server_lines().last() == Some(&"250 2.0.0 Message accepted");
        let begins_with_ws = content.starts_with([' ', '\t']);
        prop_assert_eq!(accepted, insert || !begins_with_ws, "{}", h.transcript);
        if accepted {
            let m = &h.messages[0];
            let body = if streaming { h.spooled[0].clone() } else { m.body.clone() };
            prop_assert!(!body.starts_with(b" ") && !body.starts_with(b"\t"));
            prop_assert_eq!(m.leading_whitespace, begins_with_ws);
            let fields = unfolded_fields(&stored(&h, m, &body));
            prop_assert!(fields[1].ends_with("+0000"), "{:?}", fields);
        } else {
            prop_assert!(h.messages.is_empty());
            prop_assert!(h.server_lines().last().unwrap().starts_with("550 5.6.0"));
        }
    }
}
