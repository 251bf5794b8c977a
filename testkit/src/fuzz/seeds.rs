//! Named scenarios for the `session_ops` seed corpus, written by [`encode`](crate::fuzz::encode)
//! into `fuzz/corpus/session_ops/<name>`.

use smtp_session::DisconnectMode;

use crate::fuzz::config::Knobs;
use crate::fuzz::ops::{DecisionKind, Op, ReplyCode, LINES, PROXY_V2};

/// Named scenarios for the `session_ops` seed corpus.
pub fn seed_scenarios() -> Vec<(&'static str, Knobs, Vec<Op>)> {
    use DecisionKind as D;
    use Op::*;
    let line = |text: &[u8]| -> Op {
        let i = LINES
            .iter()
            .position(|l| *l == text)
            .unwrap_or_else(|| panic!("{:?} is in LINES", String::from_utf8_lossy(text)));
        Line(i as u8)
    };
    let accept = || Decide(D::Accept);
    let ehlo = || vec![accept(), line(b"EHLO client.example\r\n"), accept()];
    let envelope = || {
        vec![
            line(b"MAIL FROM:<a@b.c>\r\n"),
            accept(),
            line(b"RCPT TO:<d@e.f>\r\n"),
            accept(),
        ]
    };
    let cat = |parts: Vec<Vec<Op>>| parts.concat();
    let bytes = |b: &[u8]| Bytes(b.to_vec());
    let defaults = Knobs::default;
    vec![
        (
            "transaction",
            defaults(),
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"DATA\r\n"),
                    accept(),
                    bytes(b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n"),
                    accept(),
                    line(b"QUIT\r\n"),
                ],
            ]),
        ),
        (
            "pipelined_disconnect_follow_with_421",
            defaults(),
            vec![
                accept(),
                bytes(b"EHLO c.example\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"),
                accept(),
                Decide(D::Disconnect(
                    DisconnectMode::FollowWith421,
                    ReplyCode::C451,
                )),
                DecideWrongId(0),
            ],
        ),
        (
            "disconnect_if421",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    line(b"MAIL FROM:<a@b.c>\r\n"),
                    Decide(D::Disconnect(DisconnectMode::If421, ReplyCode::C550)),
                    line(b"MAIL FROM:<a@b.c>\r\n"),
                    Decide(D::Disconnect(DisconnectMode::If421, ReplyCode::C421)),
                ],
            ]),
        ),
        (
            "bdat_chunks",
            defaults(),
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    bytes(b"BDAT 5\r\nhelloBDAT 6 LAST\r\n world"),
                    Decide(D::AcceptWith),
                    accept(),
                    line(b"BDAT 0 LAST\r\n"),
                    line(b"BDAT x\r\n"),
                ],
            ]),
        ),
        (
            "bdat_data_hook_reject",
            defaults(),
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"BDAT 5 LAST\r\n"),
                    Decide(D::Reject(ReplyCode::C554)),
                    line(b"hello"),
                    line(b"DATA\r\n"),
                    line(b"QUIT\r\n"),
                ],
            ]),
        ),
        (
            "starttls_injection",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    line(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n"),
                    line(b"MAIL FROM:<a@b.c>\r\n"),
                    TlsEstablished,
                    line(b"EHLO client.example\r\n"),
                    accept(),
                    line(b"STARTTLS\r\n"),
                ],
            ]),
        ),
        (
            "starttls_injection_close",
            Knobs {
                starttls_injection_close: true,
                ..defaults()
            },
            cat(vec![
                ehlo(),
                vec![line(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")],
            ]),
        ),
        (
            "starttls_failed",
            defaults(),
            cat(vec![ehlo(), vec![line(b"STARTTLS\r\n"), TlsFailed]]),
        ),
        (
            "auth_plain_login",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    line(b"AUTH PLAIN AGFsaWNlAHB3\r\n"),
                    Decide(D::Reject(ReplyCode::C550)),
                    line(b"AUTH PLAIN\r\n"),
                    line(b"AGFsaWNlAHB3\r\n"),
                    Decide(D::HookFailed),
                    line(b"AUTH LOGIN\r\n"),
                    line(b"YWxpY2U=\r\n"),
                    line(b"cHc=\r\n"),
                    accept(),
                    line(b"AUTH PLAIN =\r\n"),
                ],
            ]),
        ),
        (
            "auth_challenge_steps",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    line(b"AUTH CRAM-MD5\r\n"),
                    Decide(D::Challenge(b"<1896.697170952@mx.fuzz.example>".to_vec())),
                    bytes(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n"),
                    Decide(D::Challenge(Vec::new())),
                    line(b"*\r\n"),
                    line(b"AUTH XOAUTH2 dGVzdA==\r\n"),
                    Decide(D::AcceptWith),
                ],
            ]),
        ),
        (
            "smuggling_sequences",
            Knobs {
                bare_line_endings: 1,
                ..defaults()
            },
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"DATA\r\n"),
                    accept(),
                    line(b"\n.\n"),
                    line(b"\r.\r\n"),
                    line(b"\r\n.\r \r\n"),
                    line(b"\r\nMAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"),
                    line(b"\r\n.\n"),
                    line(b"\r\n\x00.\r\n"),
                    line(b"\r\n.\r\n"),
                    accept(),
                ],
            ]),
        ),
        (
            "timeouts",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    Advance(299),
                    line(b"NOOP\r\n"),
                    line(b"MAIL FROM:<a@b.c>\r\n"),
                    Advance(1000),
                    accept(),
                    Advance(301),
                ],
            ]),
        ),
        (
            "shutdown_mid_data",
            defaults(),
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"DATA\r\n"),
                    accept(),
                    Shutdown,
                    line(b"Subject: fuzz\r\n\r\nbody line\r\n"),
                    line(b".\r\n"),
                    Decide(D::HookFailed),
                ],
            ]),
        ),
        (
            "wrong_ids_and_errors",
            Knobs {
                hook_failure_disconnect: true,
                ..defaults()
            },
            vec![
                DecideWrongId(1),
                TlsEstablished,
                accept(),
                DecideWrongId(0),
                line(b"HELO client.example\r\n"),
                Decide(D::Reject(ReplyCode::C250)),
                Decide(D::Challenge(b"x".to_vec())),
                DecideWrongId(2),
                Decide(D::HookFailed),
                Op::IoError,
                Bytes(b"QUIT\r\n".to_vec()),
                Eof,
            ],
        ),
        (
            "proxy_v1",
            Knobs {
                proxy_protocol: true,
                ..defaults()
            },
            vec![
                line(b"PROXY TCP4 192.0.2.1 198.51.100.1 5678 25\r\n"),
                Decide(D::AcceptWith),
                line(b"HELO client.example\r\n"),
                accept(),
                line(b"QUIT\r\n"),
            ],
        ),
        (
            "proxy_v2",
            Knobs {
                proxy_protocol: true,
                ..defaults()
            },
            vec![Bytes(PROXY_V2.to_vec()), accept(), line(b"QUIT\r\n")],
        ),
        (
            "proxy_v2_larger_than_the_buffer",
            Knobs {
                proxy_protocol: true,
                ..defaults()
            },
            vec![
                Bytes(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x10\x00".to_vec()),
                Bytes(vec![0; 3000]),
            ],
        ),
        (
            "implicit_tls_require_auth",
            Knobs {
                implicit_tls: true,
                require_auth: true,
                unsubscribe: 0b0111_0000,
                ..defaults()
            },
            vec![
                line(b"EHLO client.example\r\n"),
                TlsEstablished,
                accept(),
                line(b"EHLO client.example\r\n"),
                accept(),
                line(b"MAIL FROM:<a@b.c>\r\n"),
                line(b"AUTH PLAIN AGFsaWNlAHB3\r\n"),
                accept(),
                line(b"MAIL FROM:<a@b.c>\r\n"),
                accept(),
            ],
        ),
        (
            "backpressure",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    line(b"MAIL FROM:<a@b.c>\r\n"),
                    Bytes(b"NOOP\r\n".repeat(400)),
                    Eof,
                    accept(),
                ],
            ]),
        ),
        (
            "early_talker",
            Knobs {
                greeting_delay: true,
                reject_early_talkers: true,
                ..defaults()
            },
            vec![
                Advance(1),
                line(b"EHLO client.example\r\n"),
                Advance(2),
                accept(),
            ],
        ),
        (
            "greeting_delay_patient_client",
            Knobs {
                greeting_delay: true,
                reject_early_talkers: true,
                ..defaults()
            },
            vec![
                Advance(3),
                accept(),
                line(b"EHLO client.example\r\n"),
                accept(),
                line(b"QUIT\r\n"),
            ],
        ),
        (
            "unauth_pipelining",
            Knobs {
                reject_unauth_pipelining: true,
                ..defaults()
            },
            vec![
                accept(),
                bytes(b"EHLO client.example\r\nMAIL FROM:<a@b.c>\r\n"),
                accept(),
            ],
        ),
        (
            "extensions_changed",
            defaults(),
            vec![
                accept(),
                line(b"EHLO client.example\r\n"),
                SetExtensions(0),
                accept(),
                line(b"MAIL FROM:<a@b.c> BODY=BINARYMIME\r\n"),
                line(b"XCLIENT ADDR=192.0.2.1 NAME=spike.example HELO=x.example\r\n"),
                line(b"VRFY alice\r\n"),
                line(b"EXPN staff\r\n"),
                line(b"HELP\r\n"),
                line(b"FOO bar\r\n"),
                line(b"\x00\xff\r\n"),
            ],
        ),
        (
            "streamed_message",
            Knobs {
                streamed: true,
                ..defaults()
            },
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"DATA\r\n"),
                    accept(),
                    Bytes(streamed_body()),
                    bytes(b".\r\n"),
                    accept(),
                    line(b"QUIT\r\n"),
                ],
            ]),
        ),
        (
            "streamed_eof_mid_data",
            Knobs {
                streamed: true,
                ..defaults()
            },
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"DATA\r\n"),
                    accept(),
                    bytes(b"Subject: cut short\r\n\r\nhalf a message\r\n"),
                    Eof,
                ],
            ]),
        ),
        (
            "streamed_too_big_then_bdat_reset",
            Knobs {
                streamed: true,
                ..defaults()
            },
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"DATA\r\n"),
                    accept(),
                    Bytes(streamed_body()),
                    Bytes(streamed_body()),
                ],
                vec![bytes(b"\r\n.\r\n")],
                envelope(),
                vec![bytes(b"BDAT 7\r\nhello\r\n"), accept(), line(b"RSET\r\n")],
            ]),
        ),
        (
            "bdat_smuggling_refused",
            defaults(),
            cat(vec![
                ehlo(),
                envelope(),
                vec![bytes(BDAT_SMUGGLE), accept(), line(b"NOOP\r\n")],
            ]),
        ),
        (
            "bdat_smuggling_normalized",
            Knobs {
                bare_line_endings: 1,
                ..defaults()
            },
            cat(vec![
                ehlo(),
                envelope(),
                vec![bytes(BDAT_SMUGGLE), accept(), accept()],
            ]),
        ),
        (
            "bare_lf_commands",
            defaults(),
            cat(vec![
                ehlo(),
                vec![
                    line(b"NOOP\n"),
                    line(b"MAIL FROM:<a@b.c>\r\n"),
                    accept(),
                    line(b"RCPT TO:<d@e.f>\n"),
                    line(b"BDAT 5 LAST\n"),
                    line(b"hello"),
                    line(b"QUIT\r\n"),
                ],
            ]),
        ),
        (
            "lmtp_three_recipients",
            Knobs {
                lmtp: true,
                ..defaults()
            },
            vec![
                accept(),
                line(b"EHLO client.example\r\n"),
                line(b"LHLO client.example\r\n"),
                accept(),
                line(b"MAIL FROM:<a@b.c>\r\n"),
                accept(),
                line(b"RCPT TO:<d@e.f>\r\n"),
                accept(),
                line(b"RCPT TO:<postmaster> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;d+2B@e.f\r\n"),
                accept(),
                line(b"RCPT TO:<@relay.example:g@h.i>\r\n"),
                accept(),
                line(b"DATA\r\n"),
                accept(),
                bytes(b"Subject: lmtp\r\n\r\nhello\r\n.\r\n"),
                Decide(D::Reject(ReplyCode::C451)),
                line(b"QUIT\r\n"),
            ],
        ),
        (
            "min_data_rate_trickle",
            Knobs {
                min_data_rate: true,
                ..defaults()
            },
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"DATA\r\n"),
                    accept(),
                    bytes(b"a"),
                    Advance(1),
                    bytes(b"b"),
                    Advance(2),
                    bytes(b"c"),
                    Advance(3),
                ],
            ]),
        ),
        (
            "leading_whitespace",
            defaults(),
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"DATA\r\n"),
                    accept(),
                    line(b"\t; dkim=pass header.d=bank.example\r\n"),
                    bytes(b"From: ceo@bank.example\r\n\r\nPay.\r\n.\r\n"),
                    accept(),
                ],
                envelope(),
                vec![line(b"BDAT 5 LAST\r\n"), line(b" x\r\n"), accept()],
            ]),
        ),
        (
            "leading_whitespace_inserted_streamed",
            Knobs {
                insert_empty_line: true,
                streamed: true,
                ..defaults()
            },
            cat(vec![
                ehlo(),
                envelope(),
                vec![
                    line(b"DATA\r\n"),
                    accept(),
                    line(b"\t; dkim=pass header.d=bank.example\r\n"),
                    bytes(b"From: ceo@bank.example\r\n\r\nPay.\r\n.\r\n"),
                    accept(),
                ],
            ]),
        ),
        (
            "arbitrary_values",
            defaults(),
            vec![
                DecideAny(b"\x10\x00\x00\x00".to_vec()),
                line(b"EHLO client.example\r\n"),
                DecideAny(b"\x60\x00\x00\x00\x2c\x01hello\r\n250 injected".to_vec()),
                line(b"STARTTLS\r\n"),
                TlsEstablishedAny(b"TLSv1.3\x00TLS_AES_128_GCM_SHA256\x01\x80".to_vec()),
                line(b"EHLO client.example\r\n"),
                DecideAny(b"\xa0\x00\x00\x00\x90\x01no thanks".to_vec()),
                line(b"MAIL FROM:<a@b.c>\r\n"),
                DecideAny(b"\xd0\x00\x00\x00".to_vec()),
                IoErrorAny(b"Connection reset by peer\x00\x01\x68".to_vec()),
            ],
        ),
    ]
}

/// BDAT content trying to smuggle a command behind `LF . LF`.
const BDAT_SMUGGLE: &[u8] = b"BDAT 40 LAST\r\nhello\n.\nMAIL FROM:<spoof@evil.example>\r\n";

/// A body of a few pieces, with dot-stuffed lines.
fn streamed_body() -> Vec<u8> {
    let mut body = b"Subject: streamed\r\n\r\n".to_vec();
    for i in 0..40 {
        body.extend_from_slice(
            format!("..line {i} of a streamed message, long enough to matter\r\n").as_bytes(),
        );
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::tests::corpus;
    use crate::fuzz::{decode, encode, run_ops};

    #[test]
    fn seed_scenarios_run_and_round_trip() {
        for (name, knobs, ops) in seed_scenarios() {
            let bytes = encode(&knobs, &ops);
            assert_eq!(decode(&bytes), (knobs.clone(), ops.clone()), "{name}");
            run_ops(&knobs, &ops);
        }
    }

    /// The committed `session_ops` seeds are what the scenarios encode to today.
    #[test]
    fn session_ops_seeds_are_current() {
        let files = corpus("session_ops");
        for (name, knobs, ops) in seed_scenarios() {
            let data = files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, data)| data)
                .unwrap_or_else(|| panic!("fuzz/corpus/session_ops/{name} is missing"));
            assert!(
                *data == encode(&knobs, &ops),
                "fuzz/corpus/session_ops/{name} is stale: rerun write_corpus"
            );
        }
    }

    /// Writes the `session_ops` seed corpus: `SMTP_SESSION_WRITE_CORPUS=1 cargo test -p
    /// smtp-session-testkit write_corpus -- --ignored`.
    #[test]
    #[ignore]
    fn write_corpus() {
        if std::env::var_os("SMTP_SESSION_WRITE_CORPUS").is_none() {
            return;
        }
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/session_ops");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, knobs, ops) in seed_scenarios() {
            std::fs::write(dir.join(name), encode(&knobs, &ops)).unwrap();
        }
    }
}
