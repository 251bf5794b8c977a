//! The `arbitrary` feature: the session's inputs built from bytes, as a fuzzer builds them.
//! Every value is one the API accepts (a `Reply` as `Reply::new` makes it, a `Config` that
//! `Session::new` brings into range), and a session run with any of them holds its
//! promises.
#![cfg(feature = "arbitrary")]

use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use smtp_session::{
    Config, ConnectionInfo, Decision, DisconnectMode, EnhancedCode, IoError, Output, Reply,
    Session, TlsInfo,
};

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn build<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> T {
    T::arbitrary(&mut Unstructured::new(data)).expect("arbitrary values from any bytes")
}

#[test]
fn replies_from_bytes_are_replies_the_api_makes() {
    for seed in 0..2000 {
        let data = bytes(seed, 200);
        let reply: Reply = build(&data);
        assert!((200..=599).contains(&reply.code()), "{reply:?}");
        if let Some(e) = reply.enhanced() {
            assert_eq!(u16::from(e.class), reply.code() / 100, "{reply:?}");
        }
        let mut wire = Vec::new();
        reply.write_to(&mut wire);
        let text = String::from_utf8(wire).unwrap();
        // One reply: every line carries the code, only the last one with a space.
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        for (i, line) in lines.iter().enumerate() {
            let last = i + 1 == lines.len();
            let separator = if last { ' ' } else { '-' };
            assert!(
                line.starts_with(&format!("{}{separator}", reply.code())),
                "{text:?}"
            );
            assert!(!line.contains('\r') && !line.contains('\n'));
        }
        let e: EnhancedCode = build(&data);
        assert!(matches!(e.class, 2 | 4 | 5) && e.subject <= 999 && e.detail <= 999);
    }
}

#[test]
fn decisions_from_bytes_cover_every_kind() {
    let mut seen = [false; 7];
    for seed in 0..500 {
        let decision: Decision = build(&bytes(seed, 120));
        let kind = match decision {
            Decision::Accept => 0,
            Decision::AcceptWith(_) => 1,
            Decision::Reject(_) => 2,
            Decision::Disconnect { mode, .. } => {
                assert!(matches!(
                    mode,
                    DisconnectMode::ForceDisconnect
                        | DisconnectMode::FollowWith421
                        | DisconnectMode::If421
                ));
                3
            }
            Decision::HookFailed => 4,
            Decision::Challenge(_) => 5,
            Decision::PerRecipient(_) => 6,
            _ => unreachable!("a decision kind this test does not know"),
        };
        seen[kind] = true;
    }
    assert_eq!(seen, [true; 7]);
}

/// A session with an arbitrary config, connection and TLS details, fed bytes and answered
/// with arbitrary decisions: it never panics, answers, closes exactly once and then calls
/// the disconnect hook exactly once.
#[test]
fn sessions_with_arbitrary_inputs_keep_their_promises() {
    let script = b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n\
                   Subject: x\r\n\r\nhi\r\n.\r\nBDAT 3 LAST\r\nabcRSET\r\nVRFY x\r\nQUIT\r\n";
    for seed in 0..300 {
        let data = bytes(seed, 4096);
        let mut u = Unstructured::new(&data);
        let config = Config::arbitrary(&mut u).unwrap();
        let info = ConnectionInfo::arbitrary(&mut u).unwrap();
        let mut now = Instant::now();
        let mut session = Session::new(config, info, now);
        let (mut closes, mut disconnects) = (0, 0);
        let mut input: &[u8] = script;
        for _ in 0..1000 {
            while let Some(output) = session.poll_output() {
                assert_eq!(disconnects, 0, "output after the disconnect hook");
                match output {
                    Output::Close => closes += 1,
                    Output::StartTls => {
                        let tls = TlsInfo::arbitrary(&mut u).unwrap_or_default();
                        session.handle_tls_established(tls, now).unwrap();
                    }
                    Output::HookCall(call) if call.needs_decision() => {
                        let decision = Decision::arbitrary(&mut u).unwrap_or(Decision::Accept);
                        match session.decide(call.id, decision, now) {
                            Ok(()) | Err(smtp_session::Error::InvalidDecision(_)) => {}
                            Err(other) => panic!("seed {seed}: {other:?}"),
                        }
                    }
                    Output::HookCall(_) => disconnects += 1,
                    _ => {}
                }
            }
            if session.is_closed() {
                break;
            }
            now += Duration::from_secs(1);
            if input.is_empty() {
                let error = IoError::arbitrary(&mut u).ok();
                match error {
                    Some(error) if u.arbitrary().unwrap_or(false) => {
                        session.handle_io_error(error, now).unwrap()
                    }
                    _ => session.handle_eof(now).unwrap(),
                }
            } else {
                let n = input
                    .len()
                    .min(1 + usize::from(u.arbitrary::<u8>().unwrap_or(7)));
                let taken = session.handle_input(&input[..n], now).unwrap();
                input = &input[taken..];
                if taken == 0 {
                    session.handle_timeout(now).unwrap();
                }
            }
        }
        assert!(session.is_closed(), "seed {seed}: never closed");
        assert_eq!((closes, disconnects), (1, 1), "seed {seed}");
    }
}
