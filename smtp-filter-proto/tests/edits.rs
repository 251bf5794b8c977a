//! The edit model: filters' modifications applied in order, below the receiver's fields,
//! each filter seeing what the ones before changed.

mod common;

use common::{packet, Harness};
use smtp_filter_proto::edits::{
    parse_header_section, Applied, EditRefused, Envelope, Header, HeaderList, MessageEdits, Path,
};
use smtp_filter_proto::milter::{Macros, Modification, Output, ProtocolFlags};

fn message() -> MessageEdits {
    let (fields, _) = parse_header_section(
        b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\tthere\r\nX-Tag: one\r\nX-Tag: two\r\n\r\nbody",
    )
    .unwrap();
    let trace = vec![Header::new(
        "Received",
        " from client.example by mx.example",
    )];
    let envelope = Envelope {
        sender: Path::new("<a@example.org>"),
        recipients: vec![Path::new("<b@example.com>")],
    };
    MessageEdits::new(HeaderList::new(trace, fields), envelope)
}

fn wire(edits: &MessageEdits) -> String {
    let mut out = Vec::new();
    edits.headers.write_to(&mut out);
    String::from_utf8(out).unwrap()
}

fn header(name: &str, value: &str) -> (String, Vec<u8>) {
    (name.to_string(), value.as_bytes().to_vec())
}

#[test]
fn header_edits_follow_libmilter_indexes_and_stay_below_the_trace_fields() {
    let mut m = message();
    let (n, v) = header("X-Top", " inserted at 0");
    m.apply(&Modification::InsertHeader {
        index: 0,
        name: n,
        value: v,
    })
    .unwrap();
    let (n, v) = header("X-Third", " inserted at 3");
    m.apply(&Modification::InsertHeader {
        index: 3,
        name: n,
        value: v,
    })
    .unwrap();
    let (n, v) = header("x-tag", " TWO");
    m.apply(&Modification::ChangeHeader {
        index: 2,
        name: n,
        value: v,
    })
    .unwrap();
    let (n, v) = header("X-Tag", "");
    m.apply(&Modification::ChangeHeader {
        index: 1,
        name: n,
        value: v,
    })
    .unwrap();
    let (n, v) = header("X-New", " added by change");
    m.apply(&Modification::ChangeHeader {
        index: 5,
        name: n,
        value: v,
    })
    .unwrap();
    let (n, v) = header("X-Last", " appended");
    m.apply(&Modification::AddHeader { name: n, value: v })
        .unwrap();
    let (n, v) = header("Received", "");
    assert_eq!(
        m.apply(&Modification::ChangeHeader {
            index: 1,
            name: n,
            value: v
        }),
        Err(EditRefused::TraceField {
            name: "Received".into()
        })
    );
    assert_eq!(
        wire(&m),
        "Received: from client.example by mx.example\r\n\
         X-Top: inserted at 0\r\n\
         From: a@example.org\r\n\
         X-Third: inserted at 3\r\n\
         To: b@example.com\r\n\
         Subject: hi\r\n\
         \tthere\r\n\
         X-Tag: TWO\r\n\
         X-New: added by change\r\n\
         X-Last: appended\r\n"
    );
}

#[test]
fn envelope_edits_and_body_pieces() {
    let mut m = message();
    let add = |a: &str| Modification::AddRecipient {
        address: a.into(),
        args: None,
    };
    assert_eq!(m.apply(&add("<c@example.com>")), Ok(Applied::Done));
    assert_eq!(m.apply(&add("<C@EXAMPLE.COM>")), Ok(Applied::Done));
    m.apply(&Modification::DeleteRecipient {
        address: "b@example.com".into(),
    })
    .unwrap();
    assert_eq!(
        m.apply(&Modification::DeleteRecipient {
            address: "<z@example.com>".into()
        }),
        Err(EditRefused::NoSuchRecipient {
            address: "<z@example.com>".into()
        })
    );
    m.apply(&Modification::ChangeSender {
        address: "<>".into(),
        args: Some("RET=HDRS".into()),
    })
    .unwrap();
    m.apply(&Modification::Quarantine {
        reason: "looks odd".into(),
    })
    .unwrap();
    assert_eq!(
        m.apply(&Modification::ReplaceBody(b"a".to_vec())),
        Ok(Applied::BodyChunk { first: true })
    );
    assert_eq!(
        m.apply(&Modification::ReplaceBody(b"b".to_vec())),
        Ok(Applied::BodyChunk { first: false })
    );
    m.next_filter();
    assert_eq!(
        m.apply(&Modification::ReplaceBody(b"c".to_vec())),
        Ok(Applied::BodyChunk { first: true })
    );
    assert_eq!(
        m.envelope,
        Envelope {
            sender: Path {
                address: "<>".into(),
                args: Some("RET=HDRS".into())
            },
            recipients: vec![Path::new("<c@example.com>")],
        }
    );
    assert_eq!(m.quarantine.as_deref(), Some("looks odd"));
    assert!(m.body_replaced);
}

/// Runs one filter over the message's current fields: it answers every step with
/// `continue` and end of message with `eom` (modification packets and a verdict).
fn run_filter(m: &mut MessageEdits, eom: &[u8]) -> Vec<String> {
    let mut h = Harness::negotiated(
        0x1ff,
        (ProtocolFlags::NO_CONNECT
            | ProtocolFlags::NO_HELO
            | ProtocolFlags::NO_BODY
            | ProtocolFlags::HEADER_LEADING_SPACE)
            .bits(),
    );
    let none = Macros::new();
    h.step(|c| {
        c.connect(
            "c",
            &smtp_filter_proto::milter::ClientAddress::Unknown,
            &none,
        )
    });
    let sender = m.envelope.sender.address.clone();
    h.step(|c| c.mail(&sender, &[], &none));
    h.filter(&packet(b'c', b""));
    for r in m.envelope.recipients.clone() {
        h.step(|c| c.rcpt(&r.address, &[], &none));
        h.filter(&packet(b'c', b""));
    }
    h.step(|c| c.data(&none));
    h.filter(&packet(b'c', b""));
    for field in m.headers.fields().to_vec() {
        h.step(|c| c.header(field.name.as_bytes(), &field.value));
        h.filter(&packet(b'c', b""));
    }
    h.step(|c| c.end_of_headers(&none));
    h.filter(&packet(b'c', b""));
    h.step(|c| c.end_of_message(&none));
    h.log.clear();
    h.milter.handle_input(eom);
    while let Some(output) = h.milter.poll_output() {
        if let Output::Modification(modification) = &output {
            m.apply(modification).unwrap();
        }
        h.log.push(format!("{output:?}"));
    }
    m.next_filter();
    let sent: Vec<String> = h.take();
    sent
}

#[test]
fn the_second_filter_sees_what_the_first_changed() {
    let mut m = message();
    let mut first = packet(b'h', b"X-Spam\0 no\0");
    first.extend(packet(b'c', b""));
    run_filter(&mut m, &first);
    // The second filter changes the field the first added: it was sent it, so its index
    // counts it.
    let mut second = packet(b'm', b"\0\0\0\x01X-Spam\0 checked twice\0");
    second.extend(packet(b'a', b""));
    let log = run_filter(&mut m, &second);
    assert_eq!(
        log.last().unwrap(),
        "Verdict { step: EndOfMessage, verdict: Accept }"
    );
    assert!(
        wire(&m).ends_with("X-Tag: two\r\nX-Spam: checked twice\r\n"),
        "{}",
        wire(&m)
    );
}

#[test]
fn header_sections_parse_into_fields_or_not_at_all() {
    assert_eq!(
        parse_header_section(b"A: 1\nB:2\n folded\n\nbody"),
        Some((
            vec![Header::new("A", " 1"), Header::new("B", "2\n folded")],
            18
        ))
    );
    assert_eq!(parse_header_section(b"A: 1\r\n"), None);
    assert_eq!(parse_header_section(b" leading fold\r\n\r\n"), None);
    assert_eq!(parse_header_section(b"no colon\r\n\r\n"), None);
}

mod properties {
    use proptest::prelude::*;
    use smtp_filter_proto::edits::{Header, HeaderList, MessageEdits};
    use smtp_filter_proto::milter::Modification;

    fn modification() -> impl Strategy<Value = Modification> {
        let name = prop::sample::select(vec!["Received", "Subject", "X-A", "x-a", "From"]);
        let value = prop::sample::select(vec!["", " v", " w"]);
        prop_oneof![
            (name.clone(), value.clone()).prop_map(|(n, v)| Modification::AddHeader {
                name: n.into(),
                value: v.into()
            }),
            (0u32..12, name.clone(), value.clone()).prop_map(|(i, n, v)| {
                Modification::InsertHeader {
                    index: i,
                    name: n.into(),
                    value: v.into(),
                }
            }),
            (0u32..5, name, value).prop_map(|(i, n, v)| Modification::ChangeHeader {
                index: i,
                name: n.into(),
                value: v.into()
            }),
        ]
    }

    proptest! {
        /// Whatever filters ask, the receiver's fields stay first and unchanged.
        #[test]
        fn the_trace_fields_stay_on_top_unchanged(mods in prop::collection::vec(modification(), 0..30)) {
            let trace = vec![
                Header::new("Received", " from a by b"),
                Header::new("Authentication-Results", " mx; spf=pass"),
            ];
            let message = vec![Header::new("Subject", " s"), Header::new("X-A", " 1"), Header::new("Received", " older")];
            let mut m = MessageEdits::new(HeaderList::new(trace.clone(), message), Default::default());
            for modification in &mods {
                let _ = m.apply(modification);
            }
            prop_assert_eq!(&m.headers.fields()[..2], &trace[..]);
            prop_assert_eq!(m.headers.trace_len(), 2);
        }
    }
}
