//! ESMTP parameters of MAIL and RCPT: SIZE, BODY, SMTPUTF8, DSN (RET, ENVID, NOTIFY,
//! ORCPT), unknown and switched-off parameters, identical and conflicting repeats, and the
//! recipient limit.

mod common;
use common::*;
use smtp_session::{Body, Config, Extensions, Hooks, Notify, Orcpt, Ret};

fn ehlo_done(config: Config) -> Harness {
    let mut h = Harness::new(config);
    h.send("EHLO client.example\r\n");
    h.transcript.clear();
    h
}

fn sender_hooks() -> Config {
    Config {
        hooks: Hooks {
            mail_from: true,
            rcpt_to: true,
            ..Hooks::NONE
        },
        ..config()
    }
}

#[test]
fn size_is_advertised_with_the_configured_limit() {
    let config = Config {
        max_message_size: 1_000_000,
        ..config()
    };
    let mut h = Harness::new(config);
    h.transcript.clear();
    h.send("EHLO client.example\r\n");
    assert_eq!(h.server_lines()[2], "250-SIZE 1000000");
}

#[test]
fn size_over_the_limit_is_552_and_at_the_limit_is_accepted() {
    let config = Config {
        max_message_size: 1_000_000,
        ..config()
    };
    let mut h = ehlo_done(config);
    h.send("MAIL FROM:<a@example.org> SIZE=1000001\r\n");
    h.send("MAIL FROM:<a@example.org> SIZE=99999999999999999999\r\n");
    h.send("MAIL FROM:<a@example.org> SIZE=1000000\r\n");
    h.expect(
        "C: MAIL FROM:<a@example.org> SIZE=1000001
         S: 552 5.3.4 Message size exceeds fixed maximum message size
         C: MAIL FROM:<a@example.org> SIZE=99999999999999999999
         S: 552 5.3.4 Message size exceeds fixed maximum message size
         C: MAIL FROM:<a@example.org> SIZE=1000000
         S: 250 2.1.0 Sender OK",
    );
    assert_eq!(
        h.session.envelope().unwrap().mail_params.size,
        Some(1_000_000)
    );
}

#[test]
fn size_garbage_is_501() {
    let mut h = ehlo_done(config());
    for bad in [
        "SIZE=abc",
        "SIZE=",
        "SIZE",
        "SIZE=-1",
        "SIZE=1k",
        "SIZE=123456789012345678901",
    ] {
        h.send(&format!("MAIL FROM:<a@example.org> {bad}\r\n"));
    }
    assert_eq!(h.server_lines(), ["501 5.5.4 Invalid command parameter"; 6]);
}

#[test]
fn body_values_are_accepted_and_reach_the_envelope() {
    let mut h = ehlo_done(config());
    for (value, body) in [
        ("7BIT", Body::SevenBit),
        ("8bitmime", Body::EightBitMime),
        ("BINARYMIME", Body::BinaryMime),
    ] {
        h.send(&format!("MAIL FROM:<a@example.org> BODY={value}\r\n"));
        assert_eq!(h.session.envelope().unwrap().mail_params.body, Some(body));
        h.send("RSET\r\n");
    }
    h.send("MAIL FROM:<a@example.org> BODY=9BIT\r\n");
    h.expect(
        "C: MAIL FROM:<a@example.org> BODY=7BIT
         S: 250 2.1.0 Sender OK
         C: RSET
         S: 250 2.0.0 OK
         C: MAIL FROM:<a@example.org> BODY=8bitmime
         S: 250 2.1.0 Sender OK
         C: RSET
         S: 250 2.0.0 OK
         C: MAIL FROM:<a@example.org> BODY=BINARYMIME
         S: 250 2.1.0 Sender OK
         C: RSET
         S: 250 2.0.0 OK
         C: MAIL FROM:<a@example.org> BODY=9BIT
         S: 501 5.5.4 Invalid command parameter",
    );
}

#[test]
fn unknown_parameters_are_555() {
    let mut h = ehlo_done(config());
    h.send("MAIL FROM:<a@example.org> FOO=bar\r\n");
    h.send("MAIL FROM:<a@example.org> XYZ\r\n");
    h.send("MAIL FROM:<a@example.org> NOTIFY=NEVER\r\n");
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send("RCPT TO:<b@example.net> RET=FULL\r\n");
    h.send("RCPT TO:<b@example.net> FOO\r\n");
    h.expect(
        "C: MAIL FROM:<a@example.org> FOO=bar
         S: 555 5.5.4 Unsupported command parameter
         C: MAIL FROM:<a@example.org> XYZ
         S: 555 5.5.4 Unsupported command parameter
         C: MAIL FROM:<a@example.org> NOTIFY=NEVER
         S: 555 5.5.4 Unsupported command parameter
         C: MAIL FROM:<a@example.org>
         S: 250 2.1.0 Sender OK
         C: RCPT TO:<b@example.net> RET=FULL
         S: 555 5.5.4 Unsupported command parameter
         C: RCPT TO:<b@example.net> FOO
         S: 555 5.5.4 Unsupported command parameter",
    );
}

#[test]
fn parameters_of_switched_off_extensions_are_555() {
    let config = Config {
        extensions: Extensions {
            size: false,
            eight_bit_mime: false,
            binary_mime: false,
            smtputf8: false,
            dsn: false,
            ..Extensions::default()
        },
        ..config()
    };
    let mut h = ehlo_done(config);
    for param in [
        "SIZE=100",
        "BODY=8BITMIME",
        "BODY=BINARYMIME",
        "BODY=7BIT",
        "SMTPUTF8",
        "RET=FULL",
        "ENVID=abc",
    ] {
        h.send(&format!("MAIL FROM:<a@example.org> {param}\r\n"));
    }
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send("RCPT TO:<b@example.net> NOTIFY=SUCCESS\r\n");
    h.send("RCPT TO:<b@example.net> ORCPT=rfc822;b@example.net\r\n");
    let lines = h.server_lines();
    assert_eq!(lines[..7], ["555 5.5.4 Unsupported command parameter"; 7]);
    assert_eq!(lines[7], "250 2.1.0 Sender OK");
    assert_eq!(lines[8..], ["555 5.5.4 Unsupported command parameter"; 2]);
}

#[test]
fn binarymime_off_leaves_8bitmime_on_and_the_other_way_round() {
    let only_8bit = Config {
        extensions: Extensions {
            binary_mime: false,
            ..Extensions::default()
        },
        ..config()
    };
    let mut h = ehlo_done(only_8bit);
    h.send("MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n");
    h.send("MAIL FROM:<a@example.org> BODY=8BITMIME\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "555 5.5.4 Unsupported command parameter",
            "250 2.1.0 Sender OK"
        ]
    );
    // BINARYMIME needs CHUNKING: without it BODY=BINARYMIME is unknown too.
    let no_chunking = Config {
        extensions: Extensions {
            chunking: false,
            ..Extensions::default()
        },
        ..config()
    };
    let mut h = ehlo_done(no_chunking);
    h.send("MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n");
    assert_eq!(
        h.server_lines(),
        ["555 5.5.4 Unsupported command parameter"]
    );
}

#[test]
fn conflicting_repeated_parameters_are_501() {
    let mut h = ehlo_done(config());
    h.send("MAIL FROM:<a@example.org> SIZE=1 SIZE=2\r\n");
    h.send("MAIL FROM:<a@example.org> BODY=7BIT body=8BITMIME\r\n");
    h.send("MAIL FROM:<a@example.org> RET=FULL RET=HDRS\r\n");
    h.send("MAIL FROM:<a@example.org> ENVID=a ENVID=b\r\n");
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send("RCPT TO:<b@example.net> NOTIFY=DELAY NOTIFY=FAILURE\r\n");
    h.send("RCPT TO:<b@example.net> ORCPT=rfc822;b@example.net ORCPT=rfc822;c@example.net\r\n");
    let lines = h.server_lines();
    assert_eq!(lines[..4], ["501 5.5.4 Duplicate parameter"; 4]);
    assert_eq!(lines[4], "250 2.1.0 Sender OK");
    assert_eq!(lines[5..], ["501 5.5.4 Duplicate parameter"; 2]);
}

#[test]
fn identical_repeated_parameters_are_accepted_once() {
    // Python's smtplib sends `SMTPUTF8 SMTPUTF8` when asked for SMTPUTF8 with a UTF-8
    // address; a repeat that says the same thing again is no conflict.
    let mut h = ehlo_done(config());
    h.send(
        "MAIL FROM:<a@example.org> SMTPUTF8 SMTPUTF8 SIZE=10 size=010 ENVID=a+2Bb ENVID=a+2bb\r\n",
    );
    h.send("RCPT TO:<b@example.net> NOTIFY=SUCCESS,DELAY NOTIFY=delay,success ORCPT=rfc822;b@example.net ORCPT=rfc822;b@example.net\r\n");
    h.expect(
        "C: MAIL FROM:<a@example.org> SMTPUTF8 SMTPUTF8 SIZE=10 size=010 ENVID=a+2Bb ENVID=a+2bb
         S: 250 2.1.0 Sender OK
         C: RCPT TO:<b@example.net> NOTIFY=SUCCESS,DELAY NOTIFY=delay,success ORCPT=rfc822;b@example.net ORCPT=rfc822;b@example.net
         S: 250 2.1.5 Recipient OK",
    );
    let envelope = h.session.envelope().unwrap();
    assert!(envelope.mail_params.smtputf8);
    assert_eq!(envelope.mail_params.size, Some(10));
    assert_eq!(envelope.mail_params.envid.as_deref(), Some("a+b"));
    let recipient = &envelope.recipients[0];
    assert_eq!(
        recipient.params.notify,
        Some(Notify {
            success: true,
            delay: true,
            ..Notify::default()
        })
    );
    assert_eq!(
        recipient.params.orcpt.as_ref().map(|o| o.address.as_str()),
        Some("b@example.net")
    );
}

#[test]
fn dsn_ret_and_envid_reach_the_mail_from_hook_xtext_decoded() {
    let mut h = Harness::manual(sender_hooks());
    h.send("EHLO client.example\r\n");
    h.transcript.clear();
    h.send("MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ+2B314+3Dx\r\n");
    h.expect(
        r#"C: MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ+2B314+3Dx
           H: mail_from <a@example.org> MailParams { size: None, body: None, smtputf8: false, ret: Some(Headers), envid: Some("QQ+314=x"), auth: None, require_tls: false, mt_priority: None, deliver_by: None }"#,
    );
    h.decide(smtp_session::Decision::Accept);
    let params = &h.session.envelope().unwrap().mail_params;
    assert_eq!(params.ret, Some(Ret::Headers));
    assert_eq!(params.envid.as_deref(), Some("QQ+314=x"));
}

#[test]
fn dsn_notify_and_orcpt_reach_the_rcpt_to_hook_decoded() {
    let mut h = Harness::manual(sender_hooks());
    h.send("EHLO client.example\r\n");
    h.send("MAIL FROM:<a@example.org> RET=FULL\r\n");
    h.decide(smtp_session::Decision::Accept);
    h.transcript.clear();
    h.send("RCPT TO:<b@example.net> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2Bx@example.net\r\n");
    h.expect(
        r#"C: RCPT TO:<b@example.net> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2Bx@example.net
           H: rcpt_to <b@example.net> RcptParams { notify: Some(Notify { never: false, success: true, failure: false, delay: true }), orcpt: Some(Orcpt { addr_type: "rfc822", address: "b+x@example.net" }), rrvs: None }"#,
    );
    h.decide(smtp_session::Decision::Accept);
    h.send("RCPT TO:<c@example.net> NOTIFY=never ORCPT=utf-8;j\\x{00F6}rg@example.net\r\n");
    h.decide(smtp_session::Decision::Accept);
    let recipients = &h.session.envelope().unwrap().recipients;
    assert_eq!(
        recipients[0].params.notify,
        Some(Notify {
            success: true,
            delay: true,
            ..Notify::default()
        })
    );
    assert_eq!(
        recipients[0].params.orcpt,
        Some(Orcpt {
            addr_type: "rfc822".into(),
            address: "b+x@example.net".into()
        })
    );
    assert_eq!(
        recipients[1].params.notify,
        Some(Notify {
            never: true,
            ..Notify::default()
        })
    );
    assert_eq!(
        recipients[1].params.orcpt.as_ref().unwrap().address,
        "jörg@example.net"
    );
}

#[test]
fn bad_dsn_values_are_501() {
    let mut h = ehlo_done(config());
    for bad in [
        "RET=ALL",
        "RET=",
        "ENVID=a+zz",
        "ENVID=a+0D+0Ab",
        &format!("ENVID={}", "x".repeat(101)),
    ] {
        h.send(&format!("MAIL FROM:<a@example.org> {bad}\r\n"));
    }
    h.send("MAIL FROM:<a@example.org>\r\n");
    for bad in [
        "NOTIFY=NEVER,SUCCESS",
        "NOTIFY=SOMETIMES",
        "NOTIFY=",
        "ORCPT=b@example.net",
        "ORCPT=rfc822;",
        "ORCPT=rfc822;b+0D+0A@example.net",
        "ORCPT=;b@example.net",
    ] {
        h.send(&format!("RCPT TO:<b@example.net> {bad}\r\n"));
    }
    let lines = h.server_lines();
    assert_eq!(lines[..5], ["501 5.5.4 Invalid command parameter"; 5]);
    assert_eq!(lines[5], "250 2.1.0 Sender OK");
    assert_eq!(lines[6..], ["501 5.5.4 Invalid command parameter"; 7]);
    assert!(h.session.envelope().unwrap().recipients.is_empty());
}

#[test]
fn smtputf8_allows_utf8_addresses_in_mail_and_rcpt() {
    // The transcript shows the client's non-ASCII bytes escaped.
    let mut h = ehlo_done(config());
    h.send("MAIL FROM:<jörg@bücher.example>\r\n");
    h.send("MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\n");
    h.send("RCPT TO:<øle@example.net>\r\n");
    let envelope = h.session.envelope().unwrap();
    assert!(envelope.mail_params.smtputf8);
    assert_eq!(envelope.mail_from.to_string(), "jörg@bücher.example");
    assert_eq!(envelope.recipients[0].path.to_string(), "øle@example.net");
    h.send("RSET\r\n");
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send("RCPT TO:<øle@example.net>\r\n");
    h.expect(
        r"C: MAIL FROM:<j\xc3\xb6rg@b\xc3\xbccher.example>
         S: 553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter
         C: MAIL FROM:<j\xc3\xb6rg@b\xc3\xbccher.example> SMTPUTF8
         S: 250 2.1.0 Sender OK
         C: RCPT TO:<\xc3\xb8le@example.net>
         S: 250 2.1.5 Recipient OK
         C: RSET
         S: 250 2.0.0 OK
         C: MAIL FROM:<a@example.org>
         S: 250 2.1.0 Sender OK
         C: RCPT TO:<\xc3\xb8le@example.net>
         S: 553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter",
    );
}

#[test]
fn smtputf8_with_a_value_is_501_and_reaches_the_envelope_as_a_flag() {
    let mut h = ehlo_done(config());
    h.send("MAIL FROM:<a@example.org> SMTPUTF8=yes\r\n");
    h.send("MAIL FROM:<a@example.org> smtputf8\r\n");
    assert_eq!(
        h.server_lines(),
        ["501 5.5.4 Invalid command parameter", "250 2.1.0 Sender OK"]
    );
    assert!(h.session.envelope().unwrap().mail_params.smtputf8);
}

#[test]
fn the_101st_recipient_is_452_and_the_first_100_are_kept() {
    let mut h = ehlo_done(config());
    h.send("MAIL FROM:<a@example.org>\r\n");
    let mut batch = String::new();
    for i in 0..102 {
        batch.push_str(&format!("RCPT TO:<r{i}@example.net>\r\n"));
    }
    h.feed(batch.as_bytes());
    let lines = h.server_lines();
    assert_eq!(lines.len(), 1 + 102);
    assert!(lines[1..101].iter().all(|l| *l == "250 2.1.5 Recipient OK"));
    assert_eq!(lines[101..], ["452 4.5.3 Too many recipients"; 2]);
    h.send("DATA\r\nhi\r\n.\r\n");
    let message = &h.messages[0];
    assert_eq!(message.envelope.recipients.len(), 100);
    assert_eq!(
        message.envelope.recipients[99].path.to_string(),
        "r99@example.net"
    );
}

#[test]
fn a_higher_recipient_limit_is_honoured_and_lower_ones_are_raised_to_100() {
    let config_150 = Config {
        max_recipients: 150,
        ..config()
    };
    let config_10 = Config {
        max_recipients: 10,
        ..config()
    };
    for (config, accepted) in [(config_150, 150), (config_10, 100)] {
        let mut h = ehlo_done(config);
        h.send("MAIL FROM:<a@example.org>\r\n");
        let mut batch = String::new();
        for i in 0..=accepted {
            batch.push_str(&format!("RCPT TO:<r{i}@example.net>\r\n"));
        }
        h.feed(batch.as_bytes());
        let lines = h.server_lines();
        assert_eq!(lines[accepted], "250 2.1.5 Recipient OK");
        assert_eq!(lines[accepted + 1], "452 4.5.3 Too many recipients");
    }
}

#[test]
fn recipients_over_the_limit_do_not_count_toward_the_error_limit() {
    // RFC 5321 4.5.3.1.10: the client sends the rest in another transaction. A pipelining
    // client sends all its RCPTs at once; the 452s for the overshoot must not end the
    // session (Postfix's smtpd_recipient_overshoot_limit), or no recipient gets the mail.
    let mut h = ehlo_done(config());
    let mut batch = String::from("MAIL FROM:<a@example.org>\r\n");
    for i in 0..150 {
        batch.push_str(&format!("RCPT TO:<r{i}@example.net>\r\n"));
    }
    batch.push_str("DATA\r\nhi\r\n.\r\n");
    h.feed(batch.as_bytes());
    let lines = h.server_lines();
    assert_eq!(lines[101..151], ["452 4.5.3 Too many recipients"; 50]);
    assert_eq!(
        lines[151..],
        [
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Message accepted"
        ]
    );
    assert_eq!(h.closes, 0);
    assert_eq!(h.messages[0].envelope.recipients.len(), 100);
}

// ---------------------------------------------------------------------------------------
// The opt-in parameters: REQUIRETLS (RFC 8689), MT-PRIORITY (RFC 6710), DELIVERBY (RFC
// 2852), RRVS (RFC 7293): advertised only when switched on, and carried to the hooks.

fn opt_in() -> Config {
    Config {
        extensions: Extensions {
            starttls: true,
            require_tls: true,
            mt_priority: true,
            deliver_by: true,
            rrvs: true,
            ..Extensions::default()
        },
        ..sender_hooks()
    }
}

#[test]
fn the_opt_in_parameters_are_unknown_until_switched_on() {
    let mut h = ehlo_done(config());
    let lines_before = h.server_lines().len();
    h.send("MAIL FROM:<a@example.org> MT-PRIORITY=3\r\nMAIL FROM:<a@example.org> BY=120;R\r\n");
    h.send("MAIL FROM:<a@example.org> REQUIRETLS\r\n");
    assert_eq!(
        h.server_lines()[lines_before..],
        ["555 5.5.4 Unsupported command parameter"; 3]
    );
    let mut h = Harness::new(config());
    h.send("EHLO c\r\n");
    let advertised = h.server_lines().join("\n");
    for keyword in ["REQUIRETLS", "MT-PRIORITY", "DELIVERBY", "RRVS"] {
        assert!(
            !advertised.contains(keyword),
            "{keyword} advertised by default"
        );
    }
}

#[test]
fn requiretls_is_offered_only_over_tls() {
    let mut h = Harness::with_auto_tls(opt_in(), info(), Policy::Manual, tls_info());
    h.send("EHLO c\r\n");
    let plain = h.server_lines().join("\n");
    assert!(!plain.contains("REQUIRETLS"));
    assert!(
        plain.ends_with("250-MT-PRIORITY\n250-DELIVERBY\n250 RRVS"),
        "{plain}"
    );
    h.send("MAIL FROM:<a@example.org> REQUIRETLS\r\n");
    assert_eq!(
        h.server_lines().last(),
        Some(&"555 5.5.4 Unsupported command parameter")
    );
    h.send("STARTTLS\r\n");
    h.send("EHLO c\r\n");
    assert!(h.server_lines().contains(&"250-REQUIRETLS"));
    h.transcript.clear();
    h.send("MAIL FROM:<a@example.org> REQUIRETLS MT-PRIORITY=-4 BY=3600;NT\r\n");
    let hook = h
        .transcript
        .lines()
        .find(|l| l.starts_with("H: mail_from"))
        .unwrap();
    assert!(hook.contains("require_tls: true"), "{hook}");
    assert!(hook.contains("mt_priority: Some(-4)"), "{hook}");
    assert!(
        hook.contains("deliver_by: Some(DeliverBy { seconds: 3600, mode: Notify, trace: true })"),
        "{hook}"
    );
}

#[test]
fn rrvs_reaches_the_rcpt_hook_and_bad_values_are_501() {
    let mut h = Harness::with_auto_tls(opt_in(), info(), Policy::Manual, tls_info());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    h.decide(smtp_session::Decision::Accept);
    h.transcript.clear();
    h.send("RCPT TO:<b@example.net> RRVS=2014-04-03T23:01:00Z;C\r\n");
    let hook = h
        .transcript
        .lines()
        .find(|l| l.starts_with("H: rcpt_to"))
        .unwrap();
    assert!(hook.contains("rrvs: Some(Rrvs {"), "{hook}");
    assert!(hook.contains("action: Continue"), "{hook}");
    h.decide(smtp_session::Decision::Accept);
    for bad in [
        "RRVS=2014-02-30T00:00:00Z",
        "RRVS=yesterday",
        "RRVS=2014-04-03T23:01:00Z;X",
    ] {
        h.send(&format!("RCPT TO:<c@example.net> {bad}\r\n"));
        assert_eq!(
            h.server_lines().last(),
            Some(&"501 5.5.4 Invalid command parameter"),
            "{bad}"
        );
    }
    h.send("MAIL FROM:<a@example.org> MT-PRIORITY=10\r\n");
    assert!(h.server_lines().last().unwrap().starts_with("5"));
}
