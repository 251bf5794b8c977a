//! A milter client session over many messages with a no-op filter answered in-process: the
//! client's own cost per message, without sockets or a real filter.

use smtp_filter_proto::edits::parse_header_section;
use smtp_filter_proto::milter::{ClientAddress, Error, Macros, Milter, MilterConfig, Output, Step};

/// The no-op filter's negotiation: every action, every step sent and answered (the most
/// work for the client).
const NEGOTIATION: &[u8] = &[0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0, 0, 0];
/// Its answer to every step.
const CONTINUE: &[u8] = &[0, 0, 0, 1, b'c'];

/// Sends what the client queued (counting the bytes) and answers while a reply is owed.
fn settle(milter: &mut Milter, written: &mut usize) {
    loop {
        while let Some(output) = milter.poll_output() {
            match output {
                Output::Write(bytes) => *written += bytes.len(),
                Output::Failed(error) => panic!("the no-op filter failed: {error}"),
                _ => {}
            }
        }
        if milter.awaiting_reply().is_none() {
            return;
        }
        match milter.awaiting_reply() {
            Some(Step::Negotiate) => milter.handle_input(NEGOTIATION),
            _ => milter.handle_input(CONTINUE),
        }
    }
}

fn step(milter: &mut Milter, written: &mut usize, result: Result<(), Error>) {
    result.expect("the step fits");
    settle(milter, written);
}

/// `count` messages (`message`: header section and body, unstuffed) through one milter
/// session, each with one recipient, as Postfix sends them: MAIL, RCPT, DATA, one step per
/// header field, end of headers, the body in chunks, end of message. Returns the bytes the
/// client wrote.
pub fn milter_messages(count: usize, message: &[u8]) -> usize {
    let (fields, body_at) = parse_header_section(message).expect("the message has a header");
    let body = &message[body_at..];
    let macros = Macros::new()
        .with("j", "mx.example")
        .with("{client_addr}", "192.0.2.1")
        .with("i", "4XyZ1")
        .with("{mail_addr}", "sender@example.org")
        .with("{rcpt_addr}", "rcpt@example.net");
    let mut written = 0;
    let mut m = Milter::new(MilterConfig::default());
    settle(&mut m, &mut written);
    let client = ClientAddress::Inet(([192, 0, 2, 1], 40000).into());
    let w = &mut written;
    let r = m.connect("client.example", &client, &macros);
    step(&mut m, w, r);
    let r = m.helo("client.example", &macros);
    step(&mut m, w, r);
    for _ in 0..count {
        let r = m.mail("<sender@example.org>", &[], &macros);
        step(&mut m, w, r);
        let r = m.rcpt("<rcpt@example.net>", &[], &macros);
        step(&mut m, w, r);
        let r = m.data(&macros);
        step(&mut m, w, r);
        for field in &fields {
            let r = m.header(field.name.as_bytes(), &field.value);
            step(&mut m, w, r);
        }
        let r = m.end_of_headers(&macros);
        step(&mut m, w, r);
        let mut rest = body;
        while !rest.is_empty() {
            let taken = m.body(rest).expect("a body chunk fits");
            settle(&mut m, w);
            rest = &rest[taken..];
        }
        let r = m.end_of_message(&macros);
        step(&mut m, w, r);
    }
    let r = m.quit();
    step(&mut m, w, r);
    written
}
