//! Trace header fields (RFC 5321 section 4.4): the `Received:` field with its RFC 3848 /
//! RFC 6531 protocol keyword, folding, the 998-octet cap, hostile client text, and
//! `Return-Path:`.

use proptest::prelude::*;
use smtp_session::address::{parse_forward_path, parse_reverse_path};
use smtp_session::trace::{self, Protocol, Received};
use smtp_session::{Domain, ForwardPath, Mailbox, ReversePath, TlsInfo};

const DATE: &str = "Tue, 1 Jul 2003 10:52:37 +0200";

fn rcpt(path: &str) -> ForwardPath {
    parse_forward_path(path.as_bytes()).unwrap().0
}

fn esmtp() -> Protocol {
    Protocol {
        ehlo: true,
        ..Protocol::default()
    }
}

fn tls13() -> TlsInfo {
    TlsInfo {
        protocol: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        key_size: Some(256),
        sni: Some("mx.example.net".into()),
        ..TlsInfo::default()
    }
}

/// The field with its folds undone (RFC 5322 section 2.2.3) and its final CRLF removed.
fn unfolded(field: &str) -> String {
    field
        .strip_suffix("\r\n")
        .expect("ends with CRLF")
        .replace("\r\n", "")
}

/// What every generated field must be, whatever went into it: CRLF only at its end and
/// before a fold, every continuation line starting with whitespace and holding more than
/// whitespace, no line over 998 octets, balanced comments, ASCII unless SMTPUTF8 allows
/// UTF-8, and the keyword of its protocol.
fn assert_well_formed(field: &str, protocol: Protocol) {
    let body = field
        .strip_suffix("\r\n")
        .unwrap_or_else(|| panic!("no final CRLF: {field:?}"));
    let lines: Vec<&str> = body.split("\r\n").collect();
    assert!(lines[0].starts_with("Received: "), "{field:?}");
    for (i, line) in lines.iter().enumerate() {
        assert!(!line.contains(['\r', '\n']), "bare CR or LF: {field:?}");
        assert!(
            line.len() <= 998,
            "line of {} octets: {field:?}",
            line.len()
        );
        if i > 0 {
            assert!(line.starts_with([' ', '\t']), "not a fold: {line:?}");
            assert!(!line.trim().is_empty(), "whitespace-only line: {field:?}");
        }
    }
    let mut depth = 0i32;
    for c in body.chars() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        assert!(depth >= 0, "')' before its '(': {field:?}");
    }
    assert_eq!(depth, 0, "unclosed comment: {field:?}");
    assert!(
        !body.contains('\\'),
        "a backslash would quote the next character: {field:?}"
    );
    if !protocol.smtputf8 {
        assert!(body.is_ascii(), "8-bit without SMTPUTF8: {field:?}");
    }
    // Outside comments, the first `with` is the clause's: the names before it hold no
    // spaces.
    let mut depth = 0;
    let outside: String = body
        .chars()
        .filter(|c| {
            let inside = depth > 0 || *c == '(';
            depth += i32::from(*c == '(') - i32::from(*c == ')');
            !inside
        })
        .collect();
    let words: Vec<&str> = outside.split([' ', '\t', '\r', '\n']).collect();
    let with = words
        .iter()
        .position(|w| *w == "with")
        .expect("a with clause");
    assert_eq!(
        words[with + 1].trim_end_matches(';'),
        protocol.keyword(),
        "{field:?}"
    );
    assert!(words.contains(&"by"), "{field:?}");
}

#[test]
fn a_typical_tls_session_gets_a_postfix_like_field() {
    let bob = rcpt("<bob@example.net>");
    let tls = tls13();
    let protocol = Protocol {
        tls: true,
        ..esmtp()
    };
    let field = Received::new("mx.example.net", protocol, DATE)
        .helo("mail.example.org")
        .reverse_dns("mail.example.org")
        .remote_ip("192.0.2.1".parse().unwrap())
        .tls(&tls)
        .id("4ABC12")
        .recipients([&bob]);
    assert_eq!(
        field.to_string(),
        "Received: from mail.example.org (mail.example.org [192.0.2.1])\r\n\
         \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits) sni\r\n\
         \tmx.example.net) by mx.example.net with ESMTPS id 4ABC12\r\n\
         \tfor <bob@example.net>; Tue, 1 Jul 2003 10:52:37 +0200\r\n"
    );
    let mut bytes = b"X-Before: kept\r\n".to_vec();
    field.write_to(&mut bytes);
    assert_eq!(
        bytes,
        [
            b"X-Before: kept\r\n".as_slice(),
            field.to_string().as_bytes()
        ]
        .concat()
    );
}

#[test]
fn a_plain_helo_session_without_reverse_dns_or_id() {
    let field = Received::new("mx.example.net", Protocol::default(), DATE)
        .helo("client.example")
        .remote_ip("2001:db8::1".parse().unwrap());
    assert_eq!(
        field.to_string(),
        "Received: from client.example ([IPv6:2001:db8::1]) by mx.example.net\r\n\
         \twith SMTP; Tue, 1 Jul 2003 10:52:37 +0200\r\n"
    );
}

#[test]
fn the_protocol_keyword_follows_the_registry() {
    let facts = |lmtp, ehlo, tls, authenticated, smtputf8| Protocol {
        lmtp,
        ehlo,
        tls,
        authenticated,
        smtputf8,
    };
    let cases = [
        // lmtp, ehlo, tls, auth, utf8
        (facts(false, false, false, false, false), "SMTP"),
        // No registered keyword says TLS or AUTH after HELO.
        (facts(false, false, true, true, false), "SMTP"),
        (facts(false, true, false, false, false), "ESMTP"),
        (facts(false, true, true, false, false), "ESMTPS"),
        (facts(false, true, false, true, false), "ESMTPA"),
        (facts(false, true, true, true, false), "ESMTPSA"),
        (facts(false, true, false, false, true), "UTF8SMTP"),
        (facts(false, true, true, false, true), "UTF8SMTPS"),
        (facts(false, true, false, true, true), "UTF8SMTPA"),
        (facts(false, true, true, true, true), "UTF8SMTPSA"),
        (facts(true, false, false, false, false), "LMTP"),
        (facts(true, true, true, false, false), "LMTPS"),
        (facts(true, false, false, true, false), "LMTPA"),
        (facts(true, false, true, true, false), "LMTPSA"),
        (facts(true, false, false, false, true), "UTF8LMTP"),
        (facts(true, false, true, false, true), "UTF8LMTPS"),
        (facts(true, false, false, true, true), "UTF8LMTPA"),
        (facts(true, true, true, true, true), "UTF8LMTPSA"),
    ];
    for (protocol, keyword) in cases {
        assert_eq!(protocol.keyword(), keyword, "{protocol:?}");
        assert_eq!(protocol.to_string(), keyword);
        let field = Received::new("mx.example", protocol, DATE).to_string();
        assert_eq!(
            field,
            format!("Received: by mx.example with {keyword}; {DATE}\r\n")
        );
    }
}

#[test]
fn the_for_clause_names_only_a_single_recipient() {
    let (a, b) = (rcpt("<a@example.net>"), rcpt("<b@example.net>"));
    let with = |recipients: &[&ForwardPath]| {
        unfolded(
            &Received::new("mx", esmtp(), DATE)
                .recipients(recipients.iter().copied())
                .to_string(),
        )
    };
    assert!(with(&[&a]).contains(" for <a@example.net>;"));
    assert!(!with(&[]).contains(" for "));
    assert!(!with(&[&a, &b]).contains(" for "));
    assert!(unfolded(
        &Received::new("mx", esmtp(), DATE)
            .recipients([&rcpt("<Postmaster>")])
            .to_string()
    )
    .contains(" for <postmaster>;"));
    let quoted = rcpt("<\"a b\"@example.net>");
    assert!(unfolded(
        &Received::new("mx", esmtp(), DATE)
            .recipients([&quoted])
            .to_string()
    )
    .contains(" for <\"a b\"@example.net>;"));
}

#[test]
fn utf8_text_stays_only_under_smtputf8() {
    let jorg = rcpt("<jörg@bücher.example>");
    let utf8 = Protocol {
        smtputf8: true,
        ..esmtp()
    };
    let field = Received::new("mx.example", utf8, DATE)
        .helo("bücher.example")
        .remote_ip("192.0.2.7".parse().unwrap())
        .recipients([&jorg])
        .to_string();
    assert_eq!(
        field,
        "Received: from bücher.example ([192.0.2.7]) by mx.example with UTF8SMTP\r\n\
         \tfor <jörg@bücher.example>; Tue, 1 Jul 2003 10:52:37 +0200\r\n"
    );
    assert_well_formed(&field, utf8);

    // Without SMTPUTF8 the name is no domain the field may carry: the address stands in,
    // the name goes into the comment with `?` for each non-ASCII character, and the
    // recipient, which cannot be written in ASCII, is not named.
    let field = Received::new("mx.example", esmtp(), DATE)
        .helo("bücher.example")
        .remote_ip("192.0.2.7".parse().unwrap())
        .recipients([&jorg])
        .to_string();
    assert_eq!(
        field,
        "Received: from [192.0.2.7] ([192.0.2.7] helo=b?cher.example) by mx.example\r\n\
         \twith ESMTP; Tue, 1 Jul 2003 10:52:37 +0200\r\n"
    );
    assert_well_formed(&field, esmtp());
}

#[test]
fn hostile_helo_names_cannot_break_out_of_the_field() {
    let hostile = [
        "evil.example\r\nX-Injected: yes",
        "evil.example\nX-Injected: yes",
        "evil.example\rX-Injected: yes",
        "a\0b",
        ")(",
        "x) by trusted.example with ESMTPSA (",
        "\\)",
        "(((",
        "\u{85}\u{2028}\u{2029}\u{7f}\t",
        "",
        "   ",
    ];
    for helo in hostile {
        for protocol in [
            esmtp(),
            Protocol {
                smtputf8: true,
                ..esmtp()
            },
        ] {
            let field = Received::new("mx.example", protocol, DATE)
                .helo(helo)
                .remote_ip("192.0.2.9".parse().unwrap())
                .to_string();
            assert_well_formed(&field, protocol);
            assert!(
                unfolded(&field).starts_with("Received: from [192.0.2.9] ([192.0.2.9] helo="),
                "{field:?}"
            );
            assert!(!field.contains("X-Injected: yes\r\n"), "{field:?}");
            assert!(!field.contains('\0'));
        }
    }
    let field = Received::new("mx.example", esmtp(), DATE)
        .helo("evil.example\r\nX-Injected: yes")
        .remote_ip("192.0.2.9".parse().unwrap())
        .to_string();
    assert_eq!(
        field,
        "Received: from [192.0.2.9] ([192.0.2.9] helo=evil.example??X-Injected: yes)\r\n\
         \tby mx.example with ESMTP; Tue, 1 Jul 2003 10:52:37 +0200\r\n"
    );
}

#[test]
fn hostile_reverse_dns_sni_recipients_id_and_date_are_defused() {
    let tls = TlsInfo {
        protocol: "TLSv1.3)\r\nX-A: 1".into(),
        cipher: "(((".into(),
        key_size: None,
        sni: Some("sni\0.example) (".into()),
        ..TlsInfo::default()
    };
    let forged = ForwardPath::Mailbox(Mailbox {
        local_part: "a\r\nX-B: 2".into(),
        domain: Domain::Name("example.net".into()),
    });
    let field = Received::new(
        "mx.example\r\nX-C: 3",
        esmtp(),
        "Tue, 1 Jul 2003 (x\r\nX-D: 4",
    )
    .helo("client.example")
    .reverse_dns("ptr.example) (X-E: 5")
    .remote_ip("192.0.2.9".parse().unwrap())
    .tls(&tls)
    .id("id with spaces\r\n")
    .recipients([&forged])
    .to_string();
    assert_well_formed(&field, esmtp());
    assert_eq!(
        field,
        "Received: from client.example ([192.0.2.9])\r\n\
         \t(using TLSv1.3???X-A: 1 with cipher ??? sni sni?.example? ?)\r\n\
         \tby mx.example--X-C--3 with ESMTP id id_with_spaces__;\r\n\
         \tTue, 1 Jul 2003 ?x??X-D: 4\r\n"
    );
}

#[test]
fn long_names_fold_and_no_line_passes_998_octets() {
    // A host name of 250 octets is valid and stands alone on its line.
    let long_name = format!("{}.example", "a".repeat(241));
    let field = Received::new(&long_name, esmtp(), DATE)
        .helo(&long_name)
        .reverse_dns(&long_name)
        .remote_ip("192.0.2.1".parse().unwrap())
        .id("queue-id")
        .to_string();
    assert_well_formed(&field, esmtp());
    let lines: Vec<&str> = field.trim_end().split("\r\n").collect();
    assert_eq!(lines[0], format!("Received: from {long_name}"));
    assert_eq!(lines[1], format!("\t({long_name}"));
    assert_eq!(lines[2], "\t[192.0.2.1])");
    assert_eq!(lines[3], format!("\tby {long_name}"));
    assert_eq!(lines[4], format!("\twith ESMTP id queue-id; {DATE}"));

    // Names far over any limit are cut, so every line stays under 998 octets.
    let huge = "x".repeat(5000);
    let spaced = "word ".repeat(2000);
    let tls = TlsInfo {
        protocol: huge.clone(),
        cipher: spaced.clone(),
        sni: Some(huge.clone()),
        ..TlsInfo::default()
    };
    let field = Received::new(&huge, esmtp(), &spaced)
        .helo(&huge)
        .reverse_dns(&huge)
        .remote_ip("192.0.2.1".parse().unwrap())
        .tls(&tls)
        .id(&huge)
        .to_string();
    assert_well_formed(&field, esmtp());
    assert!(field.split("\r\n").all(|line| line.len() <= 300));
    // Many short words fold at 78 octets.
    let field = Received::new("mx.example", esmtp(), DATE)
        .helo(&spaced)
        .remote_ip("192.0.2.1".parse().unwrap())
        .to_string();
    assert_well_formed(&field, esmtp());
    assert!(field.split("\r\n").all(|line| line.len() <= 78));
}

#[test]
fn a_missing_peer_leaves_out_the_from_clause() {
    assert_eq!(
        Received::new("mx.example", esmtp(), DATE).to_string(),
        format!("Received: by mx.example with ESMTP; {DATE}\r\n")
    );
    // Only a reverse DNS name: it names the peer.
    assert_eq!(
        Received::new("mx.example", esmtp(), DATE)
            .reverse_dns("ptr.example")
            .to_string(),
        format!(
            "Received: from ptr.example (ptr.example) by mx.example with ESMTP;\r\n\t{DATE}\r\n"
        )
    );
}

#[test]
fn return_path_carries_the_reverse_path() {
    assert_eq!(
        trace::return_path(&ReversePath::Null),
        "Return-Path: <>\r\n"
    );
    let path = |text: &str| parse_reverse_path(text.as_bytes()).unwrap().0;
    assert_eq!(
        trace::return_path(&path("<a@example.org>")),
        "Return-Path: <a@example.org>\r\n"
    );
    assert_eq!(
        trace::return_path(&path("<@relay.example:a@example.org>")),
        "Return-Path: <a@example.org>\r\n"
    );
    assert_eq!(
        trace::return_path(&path("<\"a b\"@example.org>")),
        "Return-Path: <\"a b\"@example.org>\r\n"
    );
    assert_eq!(
        trace::return_path(&path("<jörg@bücher.example>")),
        "Return-Path: <jörg@bücher.example>\r\n"
    );
    // A path built by hand cannot inject a line.
    let forged = ReversePath::Mailbox(Mailbox {
        local_part: "a\r\nX-Injected: 1".into(),
        domain: Domain::Name("x".repeat(3000)),
    });
    let field = trace::return_path(&forged);
    assert!(field.ends_with(">\r\n") && field.matches("\r\n").count() == 1);
    assert!(field.len() <= 1000);
}

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just("\r".to_owned()),
                Just("\n".to_owned()),
                Just("\r\n".to_owned()),
                Just("(".to_owned()),
                Just(")".to_owned()),
                Just("\\".to_owned()),
                Just(" ".to_owned()),
                Just("\t".to_owned()),
                Just("\0".to_owned()),
                Just("é".to_owned()),
                Just("a.example".to_owned()),
                Just("x".repeat(300)),
                "[a-z0-9.]{1,20}",
            ],
            0..40
        )
        .prop_map(|pieces| pieces.concat()),
    ]
}

prop_compose! {
    fn protocol()(lmtp: bool, ehlo: bool, tls: bool, authenticated: bool, smtputf8: bool)
        -> Protocol {
        Protocol { lmtp, ehlo, tls, authenticated, smtputf8 }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_input_gives_a_well_formed_field(
        protocol in protocol(),
        by in hostile_text(),
        date in hostile_text(),
        helo in proptest::option::of(hostile_text()),
        ptr in proptest::option::of(hostile_text()),
        ip in proptest::option::of(any::<std::net::IpAddr>()),
        id in proptest::option::of(hostile_text()),
        tls in proptest::option::of((hostile_text(), hostile_text(), proptest::option::of(any::<u32>()), proptest::option::of(hostile_text()))),
        locals in proptest::collection::vec((hostile_text(), hostile_text()), 0..3),
    ) {
        let tls = tls.map(|(protocol, cipher, key_size, sni)| TlsInfo { protocol, cipher, key_size, sni, ..TlsInfo::default() });
        let recipients: Vec<ForwardPath> = locals
            .into_iter()
            .map(|(local_part, domain)| ForwardPath::Mailbox(Mailbox { local_part, domain: Domain::Name(domain) }))
            .collect();
        let mut received = Received::new(&by, protocol, &date).recipients(&recipients);
        if let Some(helo) = &helo { received = received.helo(helo); }
        if let Some(ptr) = &ptr { received = received.reverse_dns(ptr); }
        if let Some(ip) = ip { received = received.remote_ip(ip); }
        if let Some(id) = &id { received = received.id(id); }
        if let Some(tls) = &tls { received = received.tls(tls); }
        let field = received.to_string();
        assert_well_formed(&field, protocol);
        let mut bytes = Vec::new();
        received.write_to(&mut bytes);
        prop_assert_eq!(bytes, field.into_bytes());
    }

    #[test]
    fn any_reverse_path_gives_one_line(local_part in hostile_text(), domain in hostile_text()) {
        let path = ReversePath::Mailbox(Mailbox { local_part, domain: Domain::Name(domain) });
        let field = trace::return_path(&path);
        prop_assert!(field.starts_with("Return-Path: <"));
        prop_assert!(field.ends_with(">\r\n"));
        prop_assert!(!field[..field.len() - 2].contains(['\r', '\n']));
        prop_assert!(field.len() - 2 <= 998);
    }
}
