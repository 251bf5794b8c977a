//! The session targets: a whole session over client bytes, and over a script of operations.

use std::time::Duration;

use crate::fuzz::checker::Checker;
use crate::fuzz::config::Knobs;
use crate::fuzz::decisions::auto_decision;
use crate::fuzz::ops::{decode, Op, LINES, PROXY_V2};
use crate::fuzz::Rng;

fn seed_of(data: &[u8]) -> u64 {
    // Mutations in the middle of an input keep its splits and decisions.
    let first = data.first().copied().unwrap_or(0);
    let last = data.last().copied().unwrap_or(0);
    ((data.len() as u64) << 16) | (u64::from(first) << 8) | u64::from(last)
}

/// Runs a session over client bytes: fed in chunks of sizes derived from the input, every
/// hook answered by a choice derived from it (mostly Accept), TLS handshakes established,
/// then EOF; checks the session invariants throughout (see [`crate::fuzz`]).
pub fn session_bytes(data: &[u8]) {
    let mut rng = Rng::new(seed_of(data));
    // Mostly the default fuzz config; now and then another policy.
    let knobs = if rng.one_in(2) {
        Knobs::default()
    } else {
        Knobs {
            bare_line_endings: rng.below(3) as u8,
            unsubscribe: if rng.one_in(4) {
                rng.below(128) as u8
            } else {
                0
            },
            hook_failure_disconnect: rng.one_in(3),
            starttls_injection_close: rng.one_in(3),
            require_tls: rng.one_in(8),
            require_auth: rng.one_in(8),
            implicit_tls: rng.one_in(8),
            proxy_protocol: data.starts_with(b"PROXY ") || data.starts_with(PROXY_V2),
            greeting_delay: rng.one_in(4),
            reject_early_talkers: rng.one_in(4),
            reject_unauth_pipelining: rng.one_in(6),
            streamed: rng.one_in(3),
            lmtp: data.starts_with(b"LHLO"),
            min_data_rate: rng.one_in(4),
            insert_empty_line: rng.one_in(3),
        }
    };
    let mut checker = Checker::new(&knobs);
    let mut pos = 0;
    while pos < data.len() && !checker.closed() {
        answer_owed(&mut checker, &mut rng);
        let len = match rng.below(4) {
            0 => data.len(),
            1 => 1 + rng.below(8) as usize,
            _ => 1 + rng.below(512) as usize,
        }
        .min(data.len() - pos);
        checker.now += Duration::from_millis(rng.below(2000));
        // A runtime calls the timeout handler when the deadline passes.
        if checker
            .session
            .poll_timeout()
            .is_some_and(|d| checker.now >= d)
        {
            checker.advance(0);
            answer_owed(&mut checker, &mut rng);
            if checker.closed() {
                break;
            }
        }
        checker.bytes(&data[pos..pos + len]);
        pos += len;
        answer_owed(&mut checker, &mut rng);
    }
    checker.finish(&mut rng);
}

/// Answers the pending hook and the requested handshake, as a runtime does.
fn answer_owed(checker: &mut Checker, rng: &mut Rng) {
    for _ in 0..10_000 {
        if let Some(pending) = checker.outstanding {
            let kind = auto_decision(rng, pending.kind);
            checker.decide(&kind);
        } else if checker.tls_requested {
            if rng.one_in(16) {
                checker.tls_failed();
            } else {
                checker.tls_established();
            }
        } else {
            return;
        }
    }
    panic!("hooks without end");
}

/// A value built by its `Arbitrary` implementation (smtp-session's `arbitrary` feature) from
/// all of `bytes`; `None` when they cannot make one.
fn any<'a, T: arbitrary::Arbitrary<'a>>(bytes: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(arbitrary::Unstructured::new(bytes)).ok()
}

/// The `session_ops` target: decodes the input into a config and a script ([`decode`]) and
/// runs them with [`run_ops`].
pub fn session_ops(data: &[u8]) {
    let (knobs, ops) = decode(data);
    run_ops(&knobs, &ops);
}

/// Runs a session with the config of `knobs` through `ops`, checking the session
/// invariants after each (see [`crate::fuzz`]); then, if it is still open, delivers EOF and
/// answers whatever is owed until it closes, and checks the close.
pub fn run_ops(knobs: &Knobs, ops: &[Op]) {
    let mut checker = Checker::new(knobs);
    for op in ops {
        match op {
            Op::Bytes(bytes) => checker.bytes(bytes),
            Op::Line(i) => checker.bytes(LINES[usize::from(*i) % LINES.len()]),
            Op::Eof => checker.eof(),
            Op::IoError => checker.io_error(),
            Op::Advance(seconds) => checker.advance(*seconds),
            Op::TlsEstablished => checker.tls_established(),
            Op::TlsFailed => checker.tls_failed(),
            Op::Decide(kind) => {
                if checker.closed() {
                    checker.decide_wrong(0);
                } else {
                    checker.decide(kind);
                }
            }
            Op::DecideWrongId(n) => checker.decide_wrong(*n),
            Op::Shutdown => checker.shutdown(),
            Op::SetExtensions(bits) => checker.set_extensions(*bits),
            Op::DecideAny(bytes) => {
                if let Some(decision) = any(bytes) {
                    checker.decide_any(decision);
                }
            }
            Op::TlsEstablishedAny(bytes) => {
                if let Some(tls) = any(bytes) {
                    checker.tls_established_with(tls);
                }
            }
            Op::IoErrorAny(bytes) => {
                if let Some(error) = any(bytes) {
                    checker.io_error_with(error);
                }
            }
        }
    }
    let mut rng = Rng::new(ops.len() as u64);
    checker.finish(&mut rng);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::decisions::HookKind;
    use crate::fuzz::tests::{any_bytes, random_bytes};

    fn generated_script(rng: &mut Rng) -> Vec<u8> {
        let mut script = Vec::new();
        for _ in 0..rng.below(30) {
            match rng.below(8) {
                0 => script.extend(any_bytes(rng, 20)),
                1 => script.extend(random_bytes(rng, b"a\r\n.", 20)),
                _ => script.extend_from_slice(LINES[rng.below(LINES.len() as u64) as usize]),
            }
        }
        script
    }

    /// Found by the fuzzer: a BDAT LAST chunk's message hook pending, the client's EOF, then
    /// any decision that does not close: the session sees the client gone and closes with
    /// the remote side, as it must.
    #[test]
    fn a_decision_after_the_clients_eof_closes_on_the_remote_side() {
        session_ops(&[
            0, 0, 0, 0, 7, 0, 1, 0, 7, 0, 1, 2, 7, 0, 1, 7, 7, 0, 0, 54, 0, 66, 68, 65, 84, 32, 52,
            48, 32, 76, 65, 83, 84, 13, 10, 104, 101, 108, 108, 111, 10, 84, 32, 52, 48, 32, 76,
            65, 83, 84, 13, 10, 104, 101, 108, 61, 0, 38, 0, 67, 117, 98, 106, 101, 99, 116, 58,
            32, 67, 117, 116, 32, 115, 104, 111, 114, 116, 13, 250, 151, 242, 245, 158, 147, 153,
            182, 84, 32, 52, 48, 32, 76, 65, 83, 84, 13, 10, 104, 101, 108, 61, 0, 38, 0, 67, 117,
            98, 106, 101, 99, 116, 58, 32, 67, 117, 116, 32, 115, 104, 111, 114, 116, 13, 250, 151,
            242, 245, 158, 147, 153, 182, 77, 69, 0, 9, 1, 13, 10, 46, 13, 10, 13, 109, 112, 108,
            101, 62, 13, 104, 10, 7, 0, 10, 1, 36, 2,
        ]);
    }

    #[test]
    fn session_bytes_over_generated_scripts() {
        let mut rng = Rng::new(3);
        for _ in 0..300 {
            session_bytes(&generated_script(&mut rng));
        }
        session_bytes(b"");
        session_bytes(
            b"EHLO a\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
        );
    }

    #[test]
    fn session_ops_over_generated_inputs() {
        let mut rng = Rng::new(4);
        for _ in 0..300 {
            session_ops(&any_bytes(&mut rng, 400));
        }
        // Structured: mostly lines and decisions.
        for _ in 0..300 {
            let ops: Vec<Op> = (0..rng.below(40))
                .map(|_| match rng.below(15) {
                    0..=4 => Op::Line(rng.next() as u8),
                    5..=7 => Op::Decide(auto_decision(&mut rng, HookKind::AuthStep)),
                    8 => Op::Bytes(generated_script(&mut rng)),
                    9 => Op::Advance(rng.below(400) as u16),
                    10 => Op::TlsEstablished,
                    11 | 12 => Op::DecideAny(any_bytes(&mut rng, 64)),
                    13 => Op::TlsEstablishedAny(any_bytes(&mut rng, 64)),
                    _ => Op::DecideWrongId(rng.next() as u8),
                })
                .collect();
            run_ops(&Knobs::default(), &ops);
        }
    }
}
