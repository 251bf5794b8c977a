//! Against a real rspamd through its milter (the proxy worker with `milter = yes` and
//! `self_scan = yes`, a configuration directory of the test's own over the distribution's,
//! on loopback): the GTUBE test message is refused with rspamd's reply, a clean one is not.

mod common;

use common::daemon::MilterConn;
use smtp_filter_proto::edits::parse_header_section;
use smtp_filter_proto::milter::{ClientAddress, Macros, MilterConfig, Output, Step, Verdict};
use smtp_session_testkit::daemons;

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// One message through the milter; the outputs of end of message, or of the first step
/// the filter refused.
fn scan(port: u16, message: &[u8]) -> Vec<Output> {
    let (mut conn, negotiated) = MilterConn::open(port, MilterConfig::default());
    assert!(
        matches!(negotiated.as_slice(), [Output::Negotiated(_)]),
        "{negotiated:?}"
    );
    let macros = Macros::new()
        .with("j", "mx.example.com")
        .with("i", "4XyZ1")
        .with("{client_addr}", "192.0.2.7")
        .with("{mail_addr}", "alice@example.org")
        .with("{rcpt_addr}", "bob@example.com");
    let client = ClientAddress::Inet("192.0.2.7:40000".parse().unwrap());
    let (fields, body_at) = parse_header_section(message).unwrap();
    let mut steps: Vec<ToSend<'_>> = vec![
        Box::new(|m| m.connect("unknown", &client, &macros)),
        Box::new(|m| m.helo("client.example.org", &macros)),
        Box::new(|m| m.mail("<alice@example.org>", &[], &macros)),
        Box::new(|m| m.rcpt("<bob@example.com>", &[], &macros)),
        Box::new(|m| m.data(&macros)),
    ];
    for field in &fields {
        steps.push(Box::new(move |m| {
            m.header(field.name.as_bytes(), &field.value)
        }));
    }
    steps.push(Box::new(|m| m.end_of_headers(&macros)));
    steps.push(Box::new(|m| m.body(&message[body_at..]).map(|_| ())));
    steps.push(Box::new(|m| m.end_of_message(&macros)));
    for step in steps {
        let out = conn.step(step);
        let settled = out.iter().any(|o| {
            matches!(
                o,
                Output::Verdict {
                    step: Step::EndOfMessage,
                    ..
                }
            ) || matches!(o, Output::Verdict { verdict, .. } if *verdict != Verdict::Continue)
        });
        if settled {
            return out;
        }
    }
    panic!("no verdict at end of message");
}

#[test]
fn rspamd_refuses_gtube_and_lets_a_clean_message_through() {
    let dir = tempfile::tempdir().unwrap();
    let rspamd = daemons::rspamd(dir.path(), &[]);
    let port = rspamd.port;

    let spam = format!(
        "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: test\r\n\
         Message-ID: <gtube@example.org>\r\nDate: Mon, 07 Dec 2026 16:00:00 +0000\r\n\r\n{GTUBE}\r\n"
    );
    let out = scan(port, spam.as_bytes());
    let refusal = out.iter().find_map(|o| match o {
        Output::Verdict {
            verdict: Verdict::Reply(reply),
            ..
        } => Some(reply.clone()),
        _ => None,
    });
    let reply = refusal.unwrap_or_else(|| panic!("GTUBE not refused with a reply: {out:?}"));
    assert_eq!(reply.code, 554, "{reply:?}");
    assert_eq!(reply.to_wire(), "554 5.7.1 Gtube pattern\r\n");

    let clean = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: lunch\r\n\
Message-ID: <clean@example.org>\r\nDate: Mon, 07 Dec 2026 16:00:00 +0000\r\n\r\n\
Shall we have lunch on Tuesday?\r\n";
    let out = scan(port, clean);
    match out.last() {
        Some(Output::Verdict {
            step: Step::EndOfMessage,
            verdict: Verdict::Continue | Verdict::Accept,
        }) => {}
        other => panic!("clean message: {other:?} in {out:?}"),
    }
}
/// What to send the filter next, once the step before was answered.
type ToSend<'a> = Box<
    dyn FnOnce(
            &mut smtp_filter_proto::milter::Milter,
        ) -> Result<(), smtp_filter_proto::milter::Error>
        + 'a,
>;
