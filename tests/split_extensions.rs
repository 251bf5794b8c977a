//! Property: scripts using STARTTLS, AUTH and BDAT give the same server transcript however
//! the client's bytes are split into reads. The client waits for the handshake after
//! STARTTLS, as RFC 3207 requires; everything else is pipelined.

mod common;
use common::*;
use proptest::prelude::*;
use smtp_session::{Config, Extensions, Hooks};

fn config_all() -> Config {
    Config {
        extensions: Extensions {
            starttls: true,
            auth: true,
            ..Extensions::default()
        },
        auth_mechanisms: vec!["PLAIN".into(), "LOGIN".into(), "XOAUTH2".into()],
        hooks: Hooks::ALL,
        max_message_size: 60,
        ..config()
    }
}

fn config_plain_auth() -> Config {
    Config {
        auth_without_tls: true,
        require_auth: true,
        ..config_all()
    }
}

fn config_require_tls() -> Config {
    Config {
        require_tls: true,
        ..config_all()
    }
}

struct Script {
    name: &'static str,
    config: fn() -> Config,
    flights: &'static [&'static [u8]],
    /// Lines the whole-read transcript must contain, so a script that went wrong early
    /// cannot pass by being uniformly wrong.
    expect: &'static [&'static str],
}

const SCRIPTS: &[Script] = &[
    Script {
        name: "starttls, auth plain, bdat",
        config: config_all,
        flights: &[
            b"EHLO c.example\r\nSTARTTLS\r\n",
            b"EHLO c.example\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n\
              MAIL FROM:<a@example.org> BODY=BINARYMIME\r\nRCPT TO:<b@example.net>\r\n\
              BDAT 11\r\n\r\n.\r\nQUIT\r\nBDAT 4 LAST\r\n\x00\xff\r\nQUIT\r\n",
        ],
        expect: &[
            "-- tls established",
            "S: 235 2.7.0 Authentication successful",
            "S: 250 2.0.0 Chunk accepted",
            "S: 250 2.0.0 Message accepted",
            "S: 221 2.0.0 Bye",
        ],
    },
    Script {
        name: "auth prompts, cancel, login, bdat errors",
        config: config_all,
        flights: &[
            b"EHLO c.example\r\nSTARTTLS\r\n",
            b"EHLO c.example\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN\r\n!!\r\n\
              AUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nAUTH PLAIN =\r\n\
              BDAT 6\r\nRSET\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n\
              BDAT 4\r\nab\r\nDATA\r\nBDAT 60\r\n01234567890123456789012345678901234567890123456789012345678\n\
              BDAT 0 LAST\r\nQUIT\r\n",
        ],
        expect: &[
            "S: 501 5.7.0 Authentication cancelled",
            "S: 501 5.5.2 Invalid base64 data",
            "S: 503 5.5.1 Already authenticated",
            "S: 503 5.5.1 Need MAIL command first",
            "S: 503 5.5.1 DATA cannot follow BDAT",
            "S: 552 5.3.4 Message size exceeds fixed maximum message size",
        ],
    },
    Script {
        name: "step mechanism, plaintext auth, require_auth",
        config: config_plain_auth,
        flights: &[b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n\
              AUTH XOAUTH2 dG9r\r\nAUTH LOGIN YWxpY2U=\r\nc2VjcmV0\r\n\
              MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n\
              BDAT 5\r\nhelloBDAT 5 LAST\r\nworldRSET\r\nQUIT\r\n"],
        expect: &[
            "S: 530 5.7.0 Authentication required",
            "S: 235 2.7.0 Authentication successful",
            "S: 250 2.0.0 Message accepted",
            "S: 221 2.0.0 Bye",
        ],
    },
    Script {
        name: "require_tls, bdat consumed before starttls",
        config: config_require_tls,
        flights: &[
            b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nBDAT 6\r\nQUIT\r\n\
              AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nNOOP\r\nSTARTTLS\r\n",
            b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n\
              BDAT 3 LAST\r\nabcSTARTTLS\r\nQUIT\r\n",
        ],
        expect: &[
            "S: 530 5.7.0 Must issue a STARTTLS command first",
            "-- tls established",
            "S: 250 2.0.0 Message accepted",
            "S: 503 5.5.1 TLS already active",
        ],
    },
];

fn whole(script: &Script) -> String {
    let sizes: Vec<usize> = script.flights.iter().map(|f| f.len()).collect();
    // One read per flight: chunks cycle, so give each flight its own length.
    run_split_flights((script.config)(), script.flights, &sizes)
}

#[test]
fn scripts_do_what_they_say_when_fed_whole() {
    for script in SCRIPTS {
        let transcript = whole(script);
        for line in script.expect {
            assert!(
                transcript.lines().any(|l| l == *line),
                "{}: missing {line:?} in\n{transcript}",
                script.name
            );
        }
        assert_eq!(transcript.matches("H: disconnect").count(), 1);
    }
}

#[test]
fn scripts_fed_a_byte_at_a_time_match() {
    for script in SCRIPTS {
        let bytewise = run_split_flights((script.config)(), script.flights, &[1]);
        assert_eq!(bytewise, whole(script), "{}", script.name);
    }
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_transcript(
        which in 0..SCRIPTS.len(),
        chunks in proptest::collection::vec(1usize..48, 1..8),
    ) {
        let script = &SCRIPTS[which];
        let split = run_split_flights((script.config)(), script.flights, &chunks);
        prop_assert_eq!(split, whole(script), "{} with {:?}", script.name, chunks);
    }
}
