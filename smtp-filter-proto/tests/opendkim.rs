//! Against a real OpenDKIM (`opendkim -f`, a configuration and a key of the test's own, on
//! loopback, the public key given by `TestPublicKeys` since the tests have no DNS): a message
//! from an internal client is signed, the signature coming back as a header modification at
//! end of message; the signed message sent again from an outside client verifies
//! (`dkim=pass` in the Authentication-Results OpenDKIM adds), so the header fields and body
//! went to the filter byte for byte as it signs and verifies them.

mod common;

use common::daemon::MilterConn;
use smtp_filter_proto::edits::{parse_header_section, Envelope, HeaderList, MessageEdits, Path};
use smtp_filter_proto::milter::{
    ClientAddress, Macros, MilterConfig, Modification, Output, Step, Verdict,
};
use smtp_session_testkit::daemons;

const MESSAGE: &[u8] = b"From: Alice <alice@example.com>\r\n\
To: Bob <bob@example.net>\r\n\
Subject: signed by OpenDKIM\r\n\
Date: Mon, 07 Dec 2026 16:00:00 +0000\r\n\
Message-ID: <1@example.com>\r\n\
\r\n\
Hello Bob,\r\n\
this message goes through OpenDKIM.\r\n";

fn verdict(outputs: &[Output]) -> Option<(Step, Verdict)> {
    outputs.iter().find_map(|o| match o {
        Output::Verdict { step, verdict } => Some((*step, verdict.clone())),
        _ => None,
    })
}

/// One message through a new milter connection from `client`; the outputs of end of
/// message. Every step before must be continued.
fn through(port: u16, client: &str, message: &[u8]) -> Vec<Output> {
    let (mut conn, negotiated) = MilterConn::open(port, MilterConfig::default());
    assert!(
        matches!(negotiated.as_slice(), [Output::Negotiated(_)]),
        "{negotiated:?}"
    );
    let macros = Macros::new()
        .with("j", "mx.example.com")
        .with("{daemon_name}", "mailsink")
        .with("i", "4XyZ2")
        .with("{client_addr}", client);
    let addr = ClientAddress::Inet(format!("{client}:40000").parse().unwrap());
    let (fields, body_at) = parse_header_section(message).unwrap();
    assert_eq!(
        verdict(&conn.step(|m| m.connect("unknown", &addr, &macros))),
        Some((Step::Connect, Verdict::Continue))
    );
    assert_eq!(
        verdict(&conn.step(|m| m.helo("client.example.net", &macros))),
        Some((Step::Helo, Verdict::Continue))
    );
    assert_eq!(
        verdict(&conn.step(|m| m.mail("<alice@example.com>", &[], &macros))),
        Some((Step::Mail, Verdict::Continue))
    );
    assert_eq!(
        verdict(&conn.step(|m| m.rcpt("<bob@example.net>", &[], &macros))),
        Some((Step::Rcpt, Verdict::Continue))
    );
    assert_eq!(
        verdict(&conn.step(|m| m.data(&macros))),
        Some((Step::Data, Verdict::Continue))
    );
    for field in &fields {
        assert_eq!(
            verdict(&conn.step(|m| m.header(field.name.as_bytes(), &field.value))),
            Some((Step::Header, Verdict::Continue))
        );
    }
    assert_eq!(
        verdict(&conn.step(|m| m.end_of_headers(&macros))),
        Some((Step::EndOfHeaders, Verdict::Continue))
    );
    assert_eq!(
        verdict(&conn.step(|m| m.body(&message[body_at..]).map(|_| ()))),
        Some((Step::Body, Verdict::Continue))
    );
    let out = conn.step(|m| m.end_of_message(&macros));
    conn.step(|m| m.quit());
    out
}

#[test]
fn opendkim_signs_for_an_internal_client_and_verifies_the_signature_for_an_outside_one() {
    let dir = tempfile::tempdir().unwrap();
    let opendkim = daemons::opendkim(dir.path());
    let port = opendkim.port;
    let (mut conn, negotiated) = MilterConn::open(port, MilterConfig::default());
    assert!(
        matches!(negotiated.as_slice(), [Output::Negotiated(_)]),
        "{negotiated:?}"
    );

    let macros = Macros::new()
        .with("j", "mx.example.com")
        .with("{daemon_name}", "mailsink")
        .with("i", "4XyZ1")
        .with("{client_addr}", "127.0.0.1")
        .with("{mail_addr}", "alice@example.com")
        .with("{rcpt_addr}", "bob@example.net");
    let client = ClientAddress::Inet("127.0.0.1:40000".parse().unwrap());
    let out = conn.step(|m| m.connect("localhost", &client, &macros));
    assert_eq!(verdict(&out), Some((Step::Connect, Verdict::Continue)));
    let out = conn.step(|m| m.helo("localhost", &macros));
    assert_eq!(verdict(&out), Some((Step::Helo, Verdict::Continue)));
    let out = conn.step(|m| m.mail("<alice@example.com>", &[], &macros));
    assert_eq!(verdict(&out), Some((Step::Mail, Verdict::Continue)));
    let out = conn.step(|m| m.rcpt("<bob@example.net>", &[], &macros));
    assert_eq!(verdict(&out), Some((Step::Rcpt, Verdict::Continue)));
    let out = conn.step(|m| m.data(&macros));
    assert_eq!(verdict(&out), Some((Step::Data, Verdict::Continue)));

    let (fields, body_at) = parse_header_section(MESSAGE).unwrap();
    for field in &fields {
        let out = conn.step(|m| m.header(field.name.as_bytes(), &field.value));
        assert_eq!(verdict(&out), Some((Step::Header, Verdict::Continue)));
    }
    let out = conn.step(|m| m.end_of_headers(&macros));
    assert_eq!(verdict(&out), Some((Step::EndOfHeaders, Verdict::Continue)));
    let out = conn.step(|m| m.body(&MESSAGE[body_at..]).map(|_| ()));
    assert_eq!(verdict(&out), Some((Step::Body, Verdict::Continue)));
    let out = conn.step(|m| m.end_of_message(&macros));

    let signature = out.iter().find_map(|o| match o {
        Output::Modification(
            Modification::InsertHeader { name, value, .. }
            | Modification::AddHeader { name, value },
        ) if name == "DKIM-Signature" => Some(String::from_utf8_lossy(value).into_owned()),
        _ => None,
    });
    let signature = signature.unwrap_or_else(|| panic!("no DKIM-Signature in {out:?}"));
    let tags: String = signature.split_whitespace().collect();
    assert!(tags.contains("d=example.com;"), "{signature}");
    assert!(tags.contains("s=test;"), "{signature}");
    assert!(
        tags.contains("h=From:To:Subject:Date:Message-ID") || tags.contains("h=From:"),
        "{signature}"
    );
    assert!(
        matches!(
            out.last(),
            Some(Output::Verdict {
                step: Step::EndOfMessage,
                verdict: Verdict::Continue | Verdict::Accept
            })
        ),
        "{out:?}"
    );

    // Applied below the receiver's own field, the signature is the first of the message's.
    let trace = vec![smtp_filter_proto::edits::Header::new(
        "Received",
        " from localhost by mx.example.com",
    )];
    let mut edits = MessageEdits::new(
        HeaderList::new(trace, fields),
        Envelope {
            sender: Path::new("<alice@example.com>"),
            recipients: vec![Path::new("<bob@example.net>")],
        },
    );
    for o in &out {
        if let Output::Modification(m) = o {
            edits.apply(m).unwrap();
        }
    }
    let names: Vec<&str> = edits
        .headers
        .fields()
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names[..3], ["Received", "DKIM-Signature", "From"]);
    conn.step(|m| m.quit());

    // The signed message from an outside client is verified: OpenDKIM adds its
    // Authentication-Results, the signature good.
    let mut signed = b"DKIM-Signature:".to_vec();
    signed.extend_from_slice(signature.as_bytes());
    signed.extend_from_slice(b"\r\n");
    signed.extend_from_slice(MESSAGE);
    let out = through(port, "192.0.2.7", &signed);
    let results = out.iter().find_map(|o| match o {
        Output::Modification(
            Modification::InsertHeader { name, value, .. }
            | Modification::AddHeader { name, value },
        ) if name == "Authentication-Results" => Some(String::from_utf8_lossy(value).into_owned()),
        _ => None,
    });
    let results = results.unwrap_or_else(|| panic!("no Authentication-Results in {out:?}"));
    assert!(
        results.trim_start().starts_with("mx.example.com;"),
        "{results}"
    );
    assert!(results.contains("dkim=pass"), "{results}");
}
