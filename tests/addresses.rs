//! RFC 5321 4.1.2 address syntax at MAIL and RCPT, as a client sees it.

mod common;
use common::*;

fn mail(from: &str) -> String {
    let mut h = Harness::new(config());
    h.send("HELO c\r\n");
    h.transcript.clear();
    h.send(&format!("MAIL FROM:{from}\r\n"));
    h.server_lines()[0].to_owned()
}

fn rcpt(to: &str) -> (String, Option<String>) {
    let mut h = Harness::new(config());
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\n");
    h.transcript.clear();
    h.send(&format!("RCPT TO:{to}\r\nDATA\r\nx\r\n.\r\n"));
    let reply = h.server_lines()[0].to_owned();
    let path = h
        .messages
        .first()
        .map(|m| m.envelope.recipients[0].path.to_string());
    (reply, path)
}

#[test]
fn valid_reverse_paths() {
    for from in [
        "<user@example.org>",
        "<>",
        "<first.last+tag@sub.example.org>",
        "<\"quoted local\"@example.org>",
        "<\"a\\\"b\"@example.org>",
        "<user@[192.0.2.1]>",
        "<user@[IPv6:2001:db8::1]>",
        "<@relay1.example,@relay2.example:user@example.org>",
        " <user@example.org>",
    ] {
        assert_eq!(mail(from), "250 2.1.0 Sender OK", "{from}");
    }
}

#[test]
fn invalid_reverse_paths_are_501_5_1_7() {
    for from in [
        "user@example.org",
        "<user@example.org",
        "<user>",
        "<user@>",
        "<@example.org>",
        "<us er@example.org>",
        "<user@exa mple.org>",
        "<user@[300.1.1.1]>",
        "<user@[IPv6:zz::1]>",
        "<user@-example.org>",
        "<user..dots@example.org>",
        "<postmaster>",
        "",
    ] {
        assert_eq!(mail(from), "501 5.1.7 Bad sender address syntax", "{from}");
    }
}

#[test]
fn overlong_local_part_is_refused() {
    let local = "x".repeat(65);
    assert_eq!(
        mail(&format!("<{local}@example.org>")),
        "501 5.1.7 Bad sender address syntax"
    );
    let local = "x".repeat(64);
    assert_eq!(
        mail(&format!("<{local}@example.org>")),
        "250 2.1.0 Sender OK"
    );
}

#[test]
fn recipients_keep_their_form_and_source_routes_are_dropped() {
    assert_eq!(
        rcpt("<b@example.net>"),
        (
            "250 2.1.5 Recipient OK".into(),
            Some("b@example.net".into())
        )
    );
    assert_eq!(
        rcpt("<@hop.example:b@example.net>").1.as_deref(),
        Some("b@example.net")
    );
    assert_eq!(
        rcpt("<\"x y\"@example.net>").1.as_deref(),
        Some("\"x y\"@example.net")
    );
    assert_eq!(rcpt("<b@[192.0.2.1]>").1.as_deref(), Some("b@[192.0.2.1]"));
    assert_eq!(rcpt("<PostMaster>").1.as_deref(), Some("postmaster"));
}

#[test]
fn invalid_forward_paths_are_501_5_1_3() {
    for to in ["<>", "b@example.net", "<b@example.net", "<b@@example.net>"] {
        assert_eq!(rcpt(to).0, "501 5.1.3 Bad recipient address syntax", "{to}");
    }
}

#[test]
fn utf8_addresses_need_smtputf8() {
    assert_eq!(
        mail("<δοκιμή@παράδειγμα.δοκιμή>"),
        "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter"
    );
    assert_eq!(
        mail("<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8"),
        "250 2.1.0 Sender OK"
    );
    let mut h = Harness::new(config());
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\n");
    h.transcript.clear();
    h.send("RCPT TO:<用户@例子.广告>\r\n");
    assert_eq!(
        h.server_lines(),
        ["553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter"]
    );
}

#[test]
fn invalid_utf8_is_refused_without_panic() {
    let mut h = Harness::new(config());
    h.send("HELO c\r\n");
    h.transcript.clear();
    h.send_bytes(b"MAIL FROM:<\xff\xfe@example.org>\r\nNOOP\r\n");
    let lines = h.server_lines();
    assert!(lines[0].starts_with("501 5."), "{lines:?}");
    assert_eq!(lines[1], "250 2.0.0 OK");
}
