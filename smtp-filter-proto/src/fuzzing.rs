//! The fuzz targets' checks (`fuzz/fuzz_targets/milter_*`, `policy_*`), also run over seeds
//! and pseudo-random inputs by the crate's tests. Each function panics when a promise of the
//! crate breaks, so a panic is a finding:
//!
//! - whatever the filter or service sends, no panic;
//! - the same bytes cut into any pieces give the same outputs (whole, byte by byte, and in
//!   pseudo-random pieces derived from the input);
//! - the memory held for a partial packet or response stays within the configured limit;
//! - at most one verdict (one response) per step (request) sent, modifications only while
//!   end of message awaits its verdict, nothing after a failure.
//!
//! The input is a control byte, then the filter's bytes for each step in turn, each a
//! little-endian `u16` length and that many bytes (the last may be short).

use crate::milter::{ClientAddress, Macros, Milter, MilterConfig, Output, Step};
use crate::policy::{PolicyClient, PolicyOutput, PolicyRequest, ProtocolState};

/// How the segments are cut when fed.
#[derive(Clone, Copy)]
enum Cut {
    Whole,
    Bytes,
    Random(u64),
}

fn segments(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let len = match rest {
            [a, b, ..] => u16::from_le_bytes([*a, *b]) as usize,
            _ => 0,
        };
        rest = rest.get(2..).unwrap_or(&[]);
        let take = len.min(rest.len());
        out.push(&rest[..take]);
        rest = &rest[take..];
    }
    out
}

/// Feeds `bytes` cut as `cut` says, calling `feed` with each piece.
fn cut_into(bytes: &[u8], cut: Cut, mut feed: impl FnMut(&[u8])) {
    match cut {
        Cut::Whole => feed(bytes),
        Cut::Bytes => bytes.chunks(1).for_each(feed),
        Cut::Random(seed) => {
            let mut x = seed | 1;
            let mut rest = bytes;
            while !rest.is_empty() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let n = (x % 9) as usize + 1;
                let (piece, tail) = rest.split_at(n.min(rest.len()));
                feed(piece);
                rest = tail;
            }
        }
    }
}

/// The milter steps the check sends, in order; the n-th segment is fed after the n-th.
const SCRIPT: [Step; 14] = [
    Step::Negotiate,
    Step::Connect,
    Step::Helo,
    Step::Mail,
    Step::Rcpt,
    Step::Rcpt,
    Step::Data,
    Step::Header,
    Step::Header,
    Step::EndOfHeaders,
    Step::Body,
    Step::Body,
    Step::EndOfMessage,
    Step::Unknown,
];

fn milter_step(m: &mut Milter, step: Step, macros: &Macros) -> bool {
    let addr = ClientAddress::Inet("192.0.2.1:4321".parse().expect("literal address"));
    let result = match step {
        Step::Negotiate => Ok(()),
        Step::Connect => m.connect("client.example", &addr, macros),
        Step::Helo => m.helo("client.example", macros),
        Step::Mail => m.mail("<a@example.org>", &["SIZE=100"], macros),
        Step::Rcpt => m.rcpt("<b@example.com>", &[], macros),
        Step::Data => m.data(macros),
        Step::Header => m.header(b"Subject", b" hi\r\n there"),
        Step::EndOfHeaders => m.end_of_headers(macros),
        Step::Body => m.body(b"Hello\r\n").map(|_| ()),
        Step::EndOfMessage => m.end_of_message(macros),
        _ => m.unknown(b"XYZZY", macros),
    };
    result.is_ok() && step != Step::Negotiate
}

/// One run of a milter session over `data` with pieces cut as `cut`: every output, in
/// order, rendered, and checks along the way.
fn milter_run(data: &[u8], cut: Cut) -> Vec<String> {
    let control = data.first().copied().unwrap_or(0);
    let mut config = MilterConfig::default();
    if control & 1 == 1 {
        config.max_packet = 64;
    }
    let max = config.max_packet;
    let macros = Macros::new()
        .with("j", "mx.example")
        .with("i", "QID")
        .with("{client_addr}", "192.0.2.1");
    let mut m = Milter::new(config);
    let mut log = Vec::new();
    let mut sent = 0usize;
    let mut verdicts = 0usize;
    let mut eom_pending = false;
    let mut drain = |m: &mut Milter, log: &mut Vec<String>, sent: usize, eom: &mut bool| {
        while let Some(output) = m.poll_output() {
            match &output {
                Output::Verdict { step, .. } => {
                    verdicts += 1;
                    assert!(verdicts <= sent, "more verdicts than steps sent");
                    if *step == Step::EndOfMessage {
                        *eom = false;
                    }
                }
                Output::Modification(_) => assert!(*eom, "modification outside end of message"),
                Output::Failed(_) => assert!(m.poll_output().is_none(), "output after Failed"),
                _ => {}
            }
            if !matches!(output, Output::Write(_)) {
                log.push(format!("{output:?}"));
            }
        }
    };
    let segs = segments(data.get(1..).unwrap_or(&[]));
    for (i, step) in SCRIPT.iter().enumerate() {
        if milter_step(&mut m, *step, &macros) {
            sent += 1;
            eom_pending |= *step == Step::EndOfMessage;
        }
        drain(&mut m, &mut log, sent, &mut eom_pending);
        let seg = segs.get(i).copied().unwrap_or(&[]);
        cut_into(seg, cut, |piece| {
            m.handle_input(piece);
            assert!(
                m.input_capacity() <= max + 4,
                "input buffer past the packet limit"
            );
            drain(&mut m, &mut log, sent, &mut eom_pending);
        });
    }
    let _ = m.quit();
    drain(&mut m, &mut log, sent, &mut eom_pending);
    log
}

/// The outputs of [`milter_session`]'s run over `data`, fed whole, as text (writes left
/// out): to see what an input does.
pub fn milter_outputs(data: &[u8]) -> Vec<String> {
    milter_run(data, Cut::Whole)
}

/// A milter session whose filter sends the input's bytes: see the [module docs](self).
pub fn milter_session(data: &[u8]) {
    let whole = milter_run(data, Cut::Whole);
    assert_eq!(whole, milter_run(data, Cut::Bytes), "byte by byte differs");
    let seed = data
        .iter()
        .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    assert_eq!(
        whole,
        milter_run(data, Cut::Random(seed)),
        "random pieces differ"
    );
}

fn policy_run(data: &[u8], cut: Cut) -> Vec<String> {
    let control = data.first().copied().unwrap_or(0);
    let max = if control & 1 == 1 { 64 } else { 4096 };
    let mut client = PolicyClient::new(max);
    let mut log = Vec::new();
    let mut requests = 0usize;
    let mut responses = 0usize;
    let segs = segments(data.get(1..).unwrap_or(&[]));
    for (i, seg) in segs.iter().enumerate() {
        let mut request = PolicyRequest::new(ProtocolState::Rcpt);
        request.instance = i.to_string();
        if client.request(&request).is_ok() {
            requests += 1;
        }
        cut_into(seg, cut, |piece| {
            client.handle_input(piece);
            assert!(
                client.input_capacity() <= max,
                "input buffer past the response limit"
            );
            while let Some(output) = client.poll_output() {
                if let PolicyOutput::Response(_) = output {
                    responses += 1;
                    assert!(responses <= requests, "more responses than requests");
                }
                if let PolicyOutput::Failed(_) = output {
                    assert!(client.poll_output().is_none(), "output after Failed");
                }
                if !matches!(output, PolicyOutput::Write(_)) {
                    log.push(format!("{output:?}"));
                }
            }
        });
    }
    log
}

/// The outputs of [`policy_session`]'s run over `data`, fed whole, as text (writes left out).
pub fn policy_outputs(data: &[u8]) -> Vec<String> {
    policy_run(data, Cut::Whole)
}

/// A policy client whose service sends the input's bytes: see the [module docs](self).
pub fn policy_session(data: &[u8]) {
    let whole = policy_run(data, Cut::Whole);
    assert_eq!(whole, policy_run(data, Cut::Bytes), "byte by byte differs");
    let seed = data
        .iter()
        .fold(7u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    assert_eq!(
        whole,
        policy_run(data, Cut::Random(seed)),
        "random pieces differ"
    );
}
