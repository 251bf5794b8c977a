//! Every stored message starts with `Return-Path:` and `Received:` (RFC 5321 section 4.4),
//! built by the engine: the protocol keyword follows the session (HELO: SMTP, EHLO: ESMTP,
//! STARTTLS: ESMTPS, AUTH over TLS: ESMTPSA, SMTPUTF8: UTF8SMTP), and no HELO name a client
//! can send breaks the header.

mod common;

use common::{after_trace, Client, Options, Server};
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};

/// The trace fields of the stored message whose text holds `marker`, unfolded: one line
/// per field.
fn trace_of(server: &Server, marker: &str) -> Vec<String> {
    let (_, file) = server
        .stored_files()
        .into_iter()
        .find(|(_, b)| String::from_utf8_lossy(b).contains(marker))
        .unwrap_or_else(|| panic!("no stored message with {marker}"));
    let message_len = after_trace(&file).len();
    let head = String::from_utf8(file[..file.len() - message_len].to_vec()).unwrap();
    fields(&head)
}

/// Header fields with their folded lines joined.
fn fields(head: &str) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    let lines = head.strip_suffix("\r\n").unwrap().split("\r\n");
    for line in lines {
        match line.strip_prefix('\t') {
            Some(rest) => {
                let last = fields.last_mut().expect("a continuation line first");
                last.push(' ');
                last.push_str(rest);
            }
            None => fields.push(line.to_string()),
        }
    }
    fields
}

/// `with KEYWORD id` of a Received field.
fn keyword(received: &str) -> &str {
    // The last ` with `: the TLS comment before `by` has one too.
    let after = received.rsplit(" with ").next().unwrap();
    after.split(' ').next().unwrap()
}

fn letter(subject: &str) -> Message {
    Message::builder()
        .from("lettre@example.org".parse().unwrap())
        .to("someone@example.net".parse().unwrap())
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body("body".to_string())
        .unwrap()
}

fn mailer(addr: std::net::SocketAddr, tls: Tls, user: bool) -> SmtpTransport {
    let mut builder = SmtpTransport::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .hello_name(ClientId::Domain("lettre.example".into()))
        .tls(tls);
    if user {
        builder = builder.credentials(Credentials::new("dave".into(), "secret".into()));
    }
    builder.build()
}

#[test]
fn the_protocol_keyword_follows_helo_tls_auth_and_smtputf8() {
    let server = Server::start_with(Options {
        args: vec!["--user".into(), "dave:secret".into()],
        env: vec![],
        implicit_tls: true,
    });
    let tls = TlsParameters::builder("localhost".into())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap();
    let sends = [
        ("plain ehlo", server.addr, Tls::None, false),
        ("starttls", server.addr, Tls::Required(tls.clone()), false),
        (
            "starttls auth",
            server.addr,
            Tls::Required(tls.clone()),
            true,
        ),
        (
            "implicit auth",
            server.tls_addr.unwrap(),
            Tls::Wrapper(tls),
            true,
        ),
    ];
    for (subject, addr, tls, user) in sends {
        mailer(addr, tls, user).send(&letter(subject)).unwrap();
    }
    // HELO, and SMTPUTF8, by hand.
    let mut c = Client::connect(server.addr);
    c.reply();
    assert!(c.cmd("HELO old.example").starts_with("250 "));
    c.send_message(
        "a@x.example",
        &["b@y.example"],
        b"Subject: helo\r\n\r\nx\r\n",
    );
    assert!(c.cmd("EHLO new.example").starts_with("250-"));
    assert!(c
        .cmd("MAIL FROM:<j\u{fc}rgen@x.example> SMTPUTF8")
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@y.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send("Subject: utf8\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));

    let expected = [
        ("plain ehlo", "ESMTP", false, "<lettre@example.org>"),
        ("starttls", "ESMTPS", true, "<lettre@example.org>"),
        ("starttls auth", "ESMTPSA", true, "<lettre@example.org>"),
        ("implicit auth", "ESMTPSA", true, "<lettre@example.org>"),
        ("Subject: helo", "SMTP", false, "<a@x.example>"),
        (
            "Subject: utf8",
            "UTF8SMTP",
            false,
            "<j\u{fc}rgen@x.example>",
        ),
    ];
    for (marker, protocol, tls, sender) in expected {
        let trace = trace_of(&server, marker);
        assert_eq!(trace.len(), 2, "{trace:?}");
        assert_eq!(trace[0], format!("Return-Path: {sender}"));
        let received = &trace[1];
        assert!(received.starts_with("Received: from "), "{received}");
        assert_eq!(keyword(received), protocol, "{received}");
        assert!(received.contains(" by mx.test with "), "{received}");
        // One recipient: it is named. The date ends the field, in UTC.
        assert!(received.contains(" for <"), "{received}");
        assert!(received.ends_with(" +0000"), "{received}");
        // The TLS layer, in a comment.
        assert_eq!(received.contains(" (using TLSv1."), tls, "{received}");
    }
}

#[test]
fn the_trace_fields_name_one_recipient_only() {
    let server = Server::start(&[]);
    let mut c = Client::hello(server.addr);
    let reply = c.send_message(
        "a@x.example",
        &["one@y.example", "two@y.example"],
        b"Subject: two\r\n\r\nx\r\n",
    );
    assert!(reply.starts_with("250"));
    let trace = trace_of(&server, "Subject: two");
    assert!(!trace[1].contains(" for "), "{trace:?}");
    let reply = c.send_message("", &["one@y.example"], b"Subject: bounce\r\n\r\nx\r\n");
    assert!(reply.starts_with("250"));
    let trace = trace_of(&server, "Subject: bounce");
    assert_eq!(trace[0], "Return-Path: <>");
    assert!(trace[1].contains(" for <one@y.example>; "), "{trace:?}");
}

#[test]
fn hostile_helo_names_cannot_break_the_header() {
    let server = Server::start(&[]);
    let long = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63),
    ]
    .join(".");
    // Names the session takes (those it refuses with 501 never reach a message).
    let names: Vec<String> = vec![
        "[tag:x)y] by forged.example with ESMTP; Mon, 1 Jan 2000 00:00:00 +0000".into(),
        "[127.0.0.1] \\ (unbalanced".into(),
        "\u{fc}mlaut.example".into(),
        "-bad-.example".into(),
        "x_y.example".into(),
        "trailing.example.".into(),
        long,
    ];
    for (i, name) in names.iter().enumerate() {
        let mut c = Client::connect(server.addr);
        c.reply();
        let ehlo = c.cmd(&format!("EHLO {name}"));
        assert!(ehlo.starts_with("250-"), "{name}: {ehlo}");
        let body = format!("Subject: hostile {i}\r\n\r\nbody {i}\r\n");
        let reply = c.send_message("a@x.example", &["b@y.example"], body.as_bytes());
        assert!(reply.starts_with("250"), "{reply}");
        c.cmd("QUIT");
    }
    let stored = server.stored_files();
    assert_eq!(stored.len(), names.len());
    for (_, file) in &stored {
        let message = after_trace(file);
        let head = &file[..file.len() - message.len()];
        let text = std::str::from_utf8(head).expect("ASCII");
        assert!(
            text.bytes()
                .all(|b| b == b'\t' || b == b'\r' || b == b'\n' || (32..127).contains(&b)),
            "not printable ASCII: {text:?}"
        );
        for line in text.split_terminator("\r\n") {
            assert!(line.len() <= 998, "{line}");
            assert!(!line.contains('\r') && !line.contains('\n'), "{line:?}");
        }
        let fields = fields(text);
        assert_eq!(fields.len(), 2, "{fields:?}");
        assert!(fields[0].starts_with("Return-Path: <a@x.example>"));
        let received = &fields[1];
        assert_eq!(keyword(received), "ESMTP", "{received}");
        let mut depth = 0i32;
        for c in received.chars() {
            depth += match c {
                '(' => 1,
                ')' => -1,
                _ => 0,
            };
            assert!(depth >= 0, "unbalanced: {received}");
        }
        assert_eq!(depth, 0, "unbalanced: {received}");
        // The forged clauses stay inside the comment, if anywhere.
        let outside: String = {
            let mut depth = 0;
            received
                .chars()
                .filter(|&c| {
                    let keep = depth == 0 && c != '(' && c != ')';
                    depth += i32::from(c == '(') - i32::from(c == ')');
                    keep
                })
                .collect()
        };
        assert!(!outside.contains("forged"), "{received}");
        assert_eq!(outside.matches(" by ").count(), 1, "{received}");
        let i: usize = std::str::from_utf8(message)
            .unwrap()
            .strip_prefix("Subject: hostile ")
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .expect("the message follows the trace fields");
        assert_eq!(
            message,
            format!("Subject: hostile {i}\r\n\r\nbody {i}\r\n").as_bytes()
        );
    }
}
