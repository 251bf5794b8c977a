//! Milter transcripts: what the client writes (`C>`), what the filter answers (`F>`), and
//! what the caller is told (`=`) or refused (`!`).

mod common;

use common::{optneg, packet, Harness};
use smtp_filter_proto::milter::{
    Actions, ClientAddress, MacroLists, MacroStage, Macros, MilterConfig, ProtocolFlags,
};

fn macros() -> Macros {
    Macros::new()
        .with("j", "mx.example")
        .with("{daemon_name}", "mailsink")
        .with("client_addr", "192.0.2.1")
        .with("{client_port}", "4321")
        .with("i", "QID1")
        .with("{mail_addr}", "a@example.org")
        .with("{rcpt_addr}", "b@example.com")
        .with("{auth_authen}", "alice")
}

fn inet() -> ClientAddress {
    ClientAddress::Inet("192.0.2.1:4321".parse().unwrap())
}

const ALL: u32 = Actions::ALL.bits();

#[test]
fn a_whole_message_with_every_modification() {
    let mut h = Harness::new(MilterConfig::default());
    h.filter(&optneg(6, ALL, 0, &[]));
    let m = macros();
    h.step(|c| c.connect("client.example", &inet(), &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.helo("client.example", &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.mail("<a@example.org>", &["SIZE=120", "BODY=8BITMIME"], &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.rcpt("<b@example.com>", &["NOTIFY=NEVER"], &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.data(&m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.header(b"Subject", b" Hello\r\n\tthere"));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.end_of_headers(&m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.body(b"Hi.\r\n"));
    h.filter(&packet(b'p', b""));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.end_of_message(&m));
    let mut eom = Vec::new();
    eom.extend(packet(b'h', b"X-Scanned\0yes\0"));
    eom.extend(packet(b'i', b"\0\0\0\x01X-Top\0first\0"));
    eom.extend(packet(b'm', b"\0\0\0\x01Subject\0Changed\0"));
    eom.extend(packet(b'm', b"\0\0\0\x02Received\0\0"));
    eom.extend(packet(b'+', b"<c@example.com>\0"));
    eom.extend(packet(b'2', b"<d@example.com>\0NOTIFY=SUCCESS\0"));
    eom.extend(packet(b'-', b"<b@example.com>\0"));
    eom.extend(packet(b'e', b"<bounce@example.org>\0"));
    eom.extend(packet(b'b', b"New body\r\n"));
    eom.extend(packet(b'q', b"suspicious\0"));
    eom.extend(packet(b'p', b""));
    eom.extend(packet(b'a', b""));
    h.filter(&eom);
    h.step(|c| c.quit());
    assert_eq!(
        h.take(),
        [
            "C> O version=6 actions=0x1ff protocol=0x1fffff",
            "F> O version=6 actions=0x1ff protocol=0x0",
            "= Negotiated(Negotiated { version: 6, actions: Actions(ADD_HEADERS | CHANGE_BODY | ADD_RECIPIENT | DELETE_RECIPIENT | CHANGE_HEADERS | QUARANTINE | CHANGE_FROM | ADD_RECIPIENT_WITH_ARGS | SET_MACRO_LISTS), protocol: ProtocolFlags(), macros: [] })",
            "C> D Cj\\0mx.example\\0{daemon_name}\\0mailsink\\0{client_addr}\\0192.0.2.1\\0{client_port}\\04321\\0",
            "C> C client.example\\04\\x10\\xe1192.0.2.1\\0",
            "F> c",
            "= Verdict { step: Connect, verdict: Continue }",
            "C> H client.example\\0",
            "F> c",
            "= Verdict { step: Helo, verdict: Continue }",
            "C> D Mi\\0QID1\\0{auth_authen}\\0alice\\0{mail_addr}\\0a@example.org\\0",
            "C> M <a@example.org>\\0SIZE=120\\0BODY=8BITMIME\\0",
            "F> c",
            "= Verdict { step: Mail, verdict: Continue }",
            "C> D Ri\\0QID1\\0{rcpt_addr}\\0b@example.com\\0",
            "C> R <b@example.com>\\0NOTIFY=NEVER\\0",
            "F> c",
            "= Verdict { step: Rcpt, verdict: Continue }",
            "C> D Ti\\0QID1\\0",
            "C> T",
            "F> c",
            "= Verdict { step: Data, verdict: Continue }",
            "C> L Subject\\0Hello\\n\\tthere\\0",
            "F> c",
            "= Verdict { step: Header, verdict: Continue }",
            "C> D Ni\\0QID1\\0",
            "C> N",
            "F> c",
            "= Verdict { step: EndOfHeaders, verdict: Continue }",
            "C> B Hi.\\r\\n",
            "F> p",
            "= Progress",
            "F> c",
            "= Verdict { step: Body, verdict: Continue }",
            "C> D Ei\\0QID1\\0",
            "C> E",
            "F> h X-Scanned\\0yes\\0",
            "F> i \\0\\0\\0\\x01X-Top\\0first\\0",
            "F> m \\0\\0\\0\\x01Subject\\0Changed\\0",
            "F> m \\0\\0\\0\\x02Received\\0\\0",
            "F> + <c@example.com>\\0",
            "F> 2 <d@example.com>\\0NOTIFY=SUCCESS\\0",
            "F> - <b@example.com>\\0",
            "F> e <bounce@example.org>\\0",
            "F> b New body\\r\\n",
            "F> q suspicious\\0",
            "F> p",
            "F> a",
            "= AddHeader X-Scanned: yes",
            "= InsertHeader at 1 X-Top: first",
            "= ChangeHeader Subject #1 to \" Changed\"",
            "= ChangeHeader Received #2 to \"\"",
            "= AddRecipient { address: \"<c@example.com>\", args: None }",
            "= AddRecipient { address: \"<d@example.com>\", args: Some(\"NOTIFY=SUCCESS\") }",
            "= DeleteRecipient { address: \"<b@example.com>\" }",
            "= ChangeSender { address: \"<bounce@example.org>\", args: None }",
            "= ReplaceBody New body\\r\\n",
            "= Quarantine { reason: \"suspicious\" }",
            "= Progress",
            "= Verdict { step: EndOfMessage, verdict: Accept }",
            "C> Q",
        ]
    );
}

#[test]
fn skipped_and_unanswered_steps_get_continue_at_once() {
    let p = ProtocolFlags::NO_CONNECT
        | ProtocolFlags::NO_REPLY_HELO
        | ProtocolFlags::NO_REPLY_HEADER
        | ProtocolFlags::NO_END_OF_HEADERS
        | ProtocolFlags::NO_BODY
        | ProtocolFlags::HEADER_LEADING_SPACE;
    let mut h = Harness::negotiated(Actions::ADD_HEADERS.bits(), p.bits());
    let m = Macros::new();
    h.step(|c| c.connect("client.example", &inet(), &m));
    h.step(|c| c.helo("client.example", &m));
    h.step(|c| c.mail("<>", &[], &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.rcpt("<b@example.com>", &[], &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.data(&m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.header(b"Subject", b" kept as is"));
    h.step(|c| c.end_of_headers(&m));
    h.step(|c| c.body(b"ignored"));
    h.step(|c| c.end_of_message(&m));
    h.filter(&packet(b'h', b"X-Added\0 leading space kept\0"));
    h.filter(&packet(b'c', b""));
    assert_eq!(
        h.take(),
        [
            "= Verdict { step: Connect, verdict: Continue }",
            "C> H client.example\\0",
            "= Verdict { step: Helo, verdict: Continue }",
            "C> M <>\\0",
            "F> c",
            "= Verdict { step: Mail, verdict: Continue }",
            "C> R <b@example.com>\\0",
            "F> c",
            "= Verdict { step: Rcpt, verdict: Continue }",
            "C> T",
            "F> c",
            "= Verdict { step: Data, verdict: Continue }",
            "C> L Subject\\0 kept as is\\0",
            "= Verdict { step: Header, verdict: Continue }",
            "= Verdict { step: EndOfHeaders, verdict: Continue }",
            "= Verdict { step: Body, verdict: Continue }",
            "C> E",
            "F> h X-Added\\0 leading space kept\\0",
            "= AddHeader X-Added: leading space kept",
            "F> c",
            "= Verdict { step: EndOfMessage, verdict: Continue }",
        ]
    );
}

#[test]
fn a_reply_to_a_step_the_filter_asked_not_to_answer_fails_it() {
    let mut h = Harness::negotiated(0, ProtocolFlags::NO_REPLY_CONNECT.bits());
    h.step(|c| c.connect("client.example", &ClientAddress::Unknown, &Macros::new()));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.helo("client.example", &Macros::new()));
    assert_eq!(
        h.take(),
        [
            "C> C client.example\\0U",
            "= Verdict { step: Connect, verdict: Continue }",
            "F> c",
            "= Failed(Unsolicited { after: Some(Connect) })",
            "! Failed",
        ]
    );
}

#[test]
fn a_modification_not_negotiated_or_before_end_of_message_fails_the_filter() {
    let mut h = Harness::negotiated(Actions::ADD_HEADERS.bits(), 0);
    let m = Macros::new();
    h.step(|c| c.connect("c", &inet(), &m));
    h.filter(&packet(b'h', b"X-Early\0no\0"));
    let mut h2 = Harness::negotiated(
        Actions::ADD_HEADERS.bits(),
        ProtocolFlags::NO_CONNECT.bits(),
    );
    h2.step(|c| c.connect("c", &inet(), &m));
    h2.step(|c| c.mail("<>", &[], &m));
    h2.filter(&packet(b'c', b""));
    h2.step(|c| c.rcpt("<b@example.com>", &[], &m));
    h2.filter(&packet(b'c', b""));
    h2.step(|c| c.data(&m));
    h2.filter(&packet(b'c', b""));
    h2.step(|c| c.end_of_headers(&m));
    h2.filter(&packet(b'c', b""));
    h2.take();
    h2.step(|c| c.end_of_message(&m));
    h2.filter(&packet(b'-', b"<b@example.com>\0"));
    assert_eq!(
        h.take(),
        [
            "C> C c\\04\\x10\\xe1192.0.2.1\\0",
            "F> h X-Early\\0no\\0",
            "= Failed(Unexpected { reply: 'h', step: Some(Connect) })",
        ]
    );
    assert_eq!(
        h2.take(),
        [
            "C> E",
            "F> - <b@example.com>\\0",
            "= Failed(NotNegotiated { reply: '-', needed: Actions(DELETE_RECIPIENT) })",
        ]
    );
}

/// A milter past negotiation, connect and HELO, in a message up to its body.
fn in_body(actions: u32, protocol: u32) -> Harness {
    let mut h = Harness::negotiated(
        actions,
        protocol | ProtocolFlags::NO_CONNECT.bits() | ProtocolFlags::NO_HELO.bits(),
    );
    let m = Macros::new();
    h.step(|c| c.connect("c", &inet(), &m));
    h.step(|c| c.mail("<>", &[], &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.rcpt("<b@example.com>", &[], &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.data(&m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.end_of_headers(&m));
    h.filter(&packet(b'c', b""));
    h.take();
    h
}

#[test]
fn skip_ends_the_body_only_when_negotiated() {
    let mut h = in_body(0, ProtocolFlags::SKIP.bits());
    h.step(|c| c.body(b"one"));
    h.filter(&packet(b's', b""));
    h.step(|c| c.body(b"two"));
    h.step(|c| c.end_of_message(&Macros::new()));
    h.filter(&packet(b'c', b""));
    assert_eq!(
        h.take(),
        [
            "C> B one",
            "F> s",
            "= Verdict { step: Body, verdict: Skip }",
            "= Verdict { step: Body, verdict: Continue }",
            "C> E",
            "F> c",
            "= Verdict { step: EndOfMessage, verdict: Continue }",
        ]
    );
    let mut h = in_body(0, 0);
    h.step(|c| c.body(b"one"));
    h.filter(&packet(b's', b""));
    assert_eq!(
        h.take(),
        [
            "C> B one",
            "F> s",
            "= Failed(Unexpected { reply: 's', step: Some(Body) })"
        ]
    );
}

#[test]
fn bodies_go_in_chunks_of_at_most_65535_bytes() {
    let mut h = in_body(0, 0);
    let body = vec![b'x'; 70_000];
    let mut sizes = Vec::new();
    let mut rest = &body[..];
    while !rest.is_empty() {
        let taken = h.milter.body(rest).unwrap();
        sizes.push(taken);
        rest = &rest[taken..];
        let write = h.milter.poll_output();
        assert!(
            matches!(write, Some(smtp_filter_proto::milter::Output::Write(ref w)) if w.len() == taken + 5)
        );
        h.milter.handle_input(&packet(b'c', b""));
        assert!(h.milter.poll_output().is_some());
    }
    assert_eq!(sizes, [65535, 4465]);
}

#[test]
fn accept_at_mail_skips_the_rest_of_the_message_and_abort_ends_it() {
    let mut h = Harness::negotiated(0, ProtocolFlags::NO_CONNECT.bits());
    let m = Macros::new();
    h.step(|c| c.connect("c", &inet(), &m));
    h.step(|c| c.mail("<a@example.org>", &[], &m));
    h.filter(&packet(b'a', b""));
    h.step(|c| c.rcpt("<b@example.com>", &[], &m));
    h.step(|c| c.abort());
    h.step(|c| c.mail("<a@example.org>", &[], &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.rcpt("<b@example.com>", &[], &m));
    h.filter(&packet(b'r', b""));
    h.step(|c| c.rcpt("<c@example.com>", &[], &m));
    h.filter(&packet(b'c', b""));
    assert_eq!(
        h.take(),
        [
            "= Verdict { step: Connect, verdict: Continue }",
            "C> M <a@example.org>\\0",
            "F> a",
            "= Verdict { step: Mail, verdict: Accept }",
            "= Verdict { step: Rcpt, verdict: Continue }",
            "C> A",
            "C> M <a@example.org>\\0",
            "F> c",
            "= Verdict { step: Mail, verdict: Continue }",
            "C> R <b@example.com>\\0",
            "F> r",
            "= Verdict { step: Rcpt, verdict: Reject }",
            "C> R <c@example.com>\\0",
            "F> c",
            "= Verdict { step: Rcpt, verdict: Continue }",
        ]
    );
}

#[test]
fn a_completed_message_is_aborted_as_postfix_does_and_a_second_abort_sends_nothing() {
    let mut h = in_body(0, 0);
    let m = Macros::new();
    h.step(|c| c.end_of_message(&m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.abort());
    h.step(|c| c.abort());
    h.step(|c| c.mail("<a@example.org>", &["SIZE=100", "BODY=8BITMIME"], &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.abort());
    assert_eq!(
        h.take(),
        [
            "C> E",
            "F> c",
            "= Verdict { step: EndOfMessage, verdict: Continue }",
            "C> A",
            "C> M <a@example.org>\\0SIZE=100\\0BODY=8BITMIME\\0",
            "F> c",
            "= Verdict { step: Mail, verdict: Continue }",
            "C> A",
        ]
    );
    // A caller that goes straight on to the next MAIL may: nothing more is owed.
    let mut h = in_body(0, 0);
    h.step(|c| c.end_of_message(&m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.mail("<>", &[], &m));
    assert_eq!(h.take()[3], "C> M <>\\0");
}

#[test]
fn accept_or_reject_at_connect_ends_the_filter_for_the_connection() {
    let mut h = Harness::negotiated(0, 0);
    let m = Macros::new();
    h.step(|c| c.connect("c", &ClientAddress::Unix("/run/smtp.sock".into()), &m));
    h.filter(&packet(b'y', b"554 5.7.1 go away\0"));
    h.step(|c| c.helo("c", &m));
    h.step(|c| c.mail("<>", &[], &m));
    h.step(|c| c.abort());
    h.step(|c| c.quit());
    assert_eq!(
        h.take(),
        [
            "C> C c\\0L\\0\\0/run/smtp.sock\\0",
            "F> y 554 5.7.1 go away\\0",
            "= Verdict { step: Connect, verdict: Reply(SmtpReply { code: 554, lines: [\"5.7.1 go away\"] }) }",
            "= Verdict { step: Helo, verdict: Continue }",
            "= Verdict { step: Mail, verdict: Continue }",
            "C> Q",
        ]
    );
}

#[test]
fn discard_before_mail_and_bad_reply_codes_fail_the_filter() {
    let cases: [(&[u8], &str); 7] = [
        (
            &packet(b'd', b""),
            "Unexpected { reply: 'd', step: Some(Connect) }",
        ),
        (
            &packet(b'y', b"250 fine\0"),
            "BadReplyCode { reason: \"not a 4xx or 5xx code\" }",
        ),
        (
            &packet(b'y', b"550-a\r\n451 b\0"),
            "BadReplyCode { reason: \"lines with different codes\" }",
        ),
        (
            &packet(b'y', b"550 a\r\n550 b\0"),
            "BadReplyCode { reason: \"a line's separator does not fit its place\" }",
        ),
        (
            &packet(b'y', b"550 a\nRSET\0"),
            "BadReplyCode { reason: \"control character\" }",
        ),
        (
            &packet(b'y', b"550 no NUL"),
            "Malformed { reply: 'y', reason: \"not one NUL-terminated string\" }",
        ),
        (
            &packet(b'c', b"junk"),
            "Malformed { reply: 'c', reason: \"data after a reply that takes none\" }",
        ),
    ];
    for (reply, error) in cases {
        let mut h = Harness::negotiated(0, 0);
        h.step(|c| c.connect("c", &inet(), &Macros::new()));
        h.take();
        h.filter(reply);
        assert_eq!(h.take().last().unwrap(), &format!("= Failed({error})"));
    }
    let mut h = Harness::negotiated(0, 0);
    h.step(|c| c.connect("c", &inet(), &Macros::new()));
    h.take();
    h.filter(&packet(b'y', b"421-4.7.0 one\r\n421 4.7.0 two\0"));
    assert_eq!(
        h.take().last().unwrap(),
        "= Verdict { step: Connect, verdict: Reply(SmtpReply { code: 421, lines: [\"4.7.0 one\", \"4.7.0 two\"] }) }"
    );
}

#[test]
fn header_edits_that_would_inject_lines_fail_the_filter() {
    let cases: [(&[u8], &str); 4] = [
        (b"X-A\0ok\r\nX-Injected: yes\0", "HeaderInjection"),
        (b"X-A\0ends with a break\n\0", "HeaderInjection"),
        (b"X-A\0bare\rCR\0", "HeaderInjection"),
        (b"X A\0v\0", "BadHeaderName"),
    ];
    for (data, error) in cases {
        let mut h = in_body(ALL, 0);
        h.step(|c| c.end_of_message(&Macros::new()));
        h.take();
        h.filter(&packet(b'h', data));
        assert_eq!(h.take().last().unwrap(), &format!("= Failed({error})"));
    }
    let mut h = in_body(ALL, 0);
    h.step(|c| c.end_of_message(&Macros::new()));
    h.take();
    h.filter(&packet(b'h', b"X-Folded\0one\r\n\ttwo\0"));
    assert_eq!(
        h.take().last().unwrap(),
        "= AddHeader X-Folded: one\\n\\ttwo"
    );
}

#[test]
fn oversized_empty_and_unknown_packets_fail_the_filter() {
    let config = MilterConfig {
        max_packet: 100,
        ..MilterConfig::default()
    };
    let mut h = Harness::new(config);
    h.take();
    h.filter(&[0, 0, 0, 101]);
    assert_eq!(
        h.take(),
        ["= Failed(PacketTooLarge { size: 101, max: 100 })"]
    );
    assert!(h.milter.input_capacity() < 100);
    let mut h = Harness::new(MilterConfig::default());
    h.take();
    h.filter(&[0, 0, 0, 0]);
    assert_eq!(h.take(), ["= Failed(EmptyPacket)"]);
    let mut h = Harness::negotiated(0, 0);
    h.step(|c| c.connect("c", &inet(), &Macros::new()));
    h.take();
    h.filter(&packet(b'Z', b""));
    assert_eq!(h.take(), ["F> Z", "= Failed(UnknownReply(90))"]);
}

#[test]
fn negotiation_checks_version_actions_and_flags() {
    let cases = [
        (optneg(7, 0, 0, &[]), "UnsupportedVersion(7)"),
        (optneg(1, 0, 0, &[]), "UnsupportedVersion(1)"),
        (optneg(6, 0x200, 0, &[]), "UnofferedActions(Actions(0x200))"),
        (
            optneg(6, 0, 0x1000_0000, &[]),
            "UnofferedProtocol(ProtocolFlags(0x10000000))",
        ),
        (
            packet(b'O', b"\0\0\0\x06"),
            "Malformed { reply: 'O', reason: \"shorter than version, actions and protocol\" }",
        ),
        (
            optneg(6, 0, 0, &[(9, "j")]),
            "Malformed { reply: 'O', reason: \"bad macro lists\" }",
        ),
        (
            packet(b'c', b""),
            "Unexpected { reply: 'c', step: Some(Negotiate) }",
        ),
    ];
    for (reply, error) in cases {
        let mut h = Harness::new(MilterConfig::default());
        h.take();
        h.filter(&reply);
        assert_eq!(h.take().last().unwrap(), &format!("= Failed({error})"));
    }
    let config = MilterConfig {
        actions: Actions::ADD_HEADERS,
        ..MilterConfig::default()
    };
    let mut h = Harness::new(config);
    h.filter(&optneg(6, Actions::CHANGE_BODY.bits(), 0, &[]));
    assert_eq!(
        h.take().last().unwrap(),
        "= Failed(UnofferedActions(Actions(CHANGE_BODY)))"
    );
}

#[test]
fn the_filter_chooses_its_macros() {
    let mut h = Harness::new(MilterConfig::default());
    h.filter(&optneg(
        6,
        ALL,
        0,
        &[(0, "{client_addr} j"), (3, "{rcpt_addr}")],
    ));
    let m = macros();
    h.step(|c| c.connect("c", &inet(), &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.helo("c", &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.mail("<a@example.org>", &[], &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.rcpt("<b@example.com>", &[], &m));
    let log = h.take();
    let macros: Vec<&String> = log.iter().filter(|l| l.starts_with("C> D")).collect();
    assert_eq!(
        macros,
        [
            "C> D C{client_addr}\\0192.0.2.1\\0j\\0mx.example\\0",
            "C> D Mi\\0QID1\\0{auth_authen}\\0alice\\0{mail_addr}\\0a@example.org\\0",
            "C> D R{rcpt_addr}\\0b@example.com\\0",
        ]
    );
    let mut lists = MacroLists::empty();
    lists.set(MacroStage::Connect, vec!["{daemon_name}".into()]);
    let config = MilterConfig {
        macros: lists,
        ..MilterConfig::default()
    };
    let mut h = Harness::new(config);
    h.filter(&optneg(6, 0, 0, &[]));
    h.take();
    h.step(|c| {
        c.connect(
            "c",
            &ClientAddress::Inet("[2001:db8::1]:25".parse().unwrap()),
            &m,
        )
    });
    assert_eq!(
        h.take(),
        [
            "C> D C{daemon_name}\\0mailsink\\0",
            "C> C c\\06\\0\\x192001:db8::1\\0"
        ]
    );
}

#[test]
fn misuse_is_refused_and_changes_nothing() {
    let mut h = Harness::new(MilterConfig::default());
    h.take();
    let m = Macros::new();
    h.step(|c| c.connect("c", &inet(), &m));
    h.filter(&optneg(6, 0, 0, &[]));
    h.step(|c| c.mail("<>", &[], &m));
    h.step(|c| c.connect("c\0x", &inet(), &m));
    h.step(|c| c.connect("c", &inet(), &m));
    h.step(|c| c.connect("c", &inet(), &m));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.header(b"Subject", b"x"));
    h.step(|c| c.quit());
    h.step(|c| c.quit());
    assert_eq!(
        h.take(),
        [
            "! AwaitingReply(Negotiate)",
            "F> O version=6 actions=0x0 protocol=0x0",
            "= Negotiated(Negotiated { version: 6, actions: Actions(), protocol: ProtocolFlags(), macros: [] })",
            "! OutOfOrder(Mail)",
            "! Nul(\"client name\")",
            "C> C c\\04\\x10\\xe1192.0.2.1\\0",
            "! AwaitingReply(Connect)",
            "F> c",
            "= Verdict { step: Connect, verdict: Continue }",
            "! OutOfOrder(Header)",
            "C> Q",
            "! Closed",
        ]
    );
}
