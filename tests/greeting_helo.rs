//! The greeting, HELO and EHLO.

mod common;
use common::*;
use smtp_session::{Config, Decision, Extensions, Hook, Hooks, Reply};

#[test]
fn greeting_then_ehlo_lists_the_default_extensions() {
    let mut h = Harness::new(config());
    h.send("EHLO client.example\r\n");
    h.expect(
        "S: 220 mx.example ESMTP
         C: EHLO client.example
         S: 250-mx.example greets client.example
         S: 250-PIPELINING
         S: 250-SIZE 26214400
         S: 250-8BITMIME
         S: 250-ENHANCEDSTATUSCODES
         S: 250-SMTPUTF8
         S: 250-CHUNKING
         S: 250-BINARYMIME
         S: 250 DSN",
    );
}

#[test]
fn helo_gets_a_single_line_and_verbs_are_case_insensitive() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.send("helo client.example\r\nEhLo [192.0.2.1]\r\n");
    let lines = h.server_lines();
    assert_eq!(lines[0], "250 mx.example");
    assert_eq!(lines[1], "250-mx.example greets [192.0.2.1]");
}

#[test]
fn missing_or_invalid_domain_is_501_5_5_4() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.send("HELO\r\nEHLO\r\nEHLO <bad>\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "501 5.5.4 Invalid domain name",
            "501 5.5.4 Invalid domain name",
            "501 5.5.4 Invalid domain name"
        ]
    );
}

#[test]
fn switched_off_extensions_are_not_advertised() {
    let config = Config {
        extensions: Extensions {
            chunking: false,
            dsn: false,
            size: false,
            smtputf8: false,
            ..Extensions::default()
        },
        ..config()
    };
    let mut h = Harness::new(config);
    h.transcript.clear();
    h.send("EHLO c\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "250-mx.example greets c",
            "250-PIPELINING",
            "250-8BITMIME",
            "250 ENHANCEDSTATUSCODES"
        ]
    );
}

#[test]
fn without_enhanced_status_codes_default_replies_have_none() {
    let config = Config {
        extensions: Extensions {
            enhanced_status_codes: false,
            ..Extensions::default()
        },
        ..config()
    };
    let mut h = Harness::new(config);
    h.transcript.clear();
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\nFOO\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "250 mx.example",
            "250 Sender OK",
            "500 Command unrecognized"
        ]
    );
}

#[test]
fn the_ehlo_hook_can_change_the_advertised_list() {
    let config = Config {
        hooks: Hooks {
            helo: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let mut h = Harness::manual(config);
    h.transcript.clear();
    h.send("EHLO c\r\n");
    let mut ext = h.session.extensions();
    ext.pipelining = false;
    ext.chunking = false;
    ext.binary_mime = false;
    ext.dsn = false;
    ext.smtputf8 = false;
    h.session.set_extensions(ext);
    h.decide(Decision::Accept);
    h.send("BDAT 0 LAST\r\n");
    h.expect(
        "C: EHLO c
         H: helo Ehlo c
         D: accept
         S: 250-mx.example greets c
         S: 250-SIZE 26214400
         S: 250-8BITMIME
         S: 250 ENHANCEDSTATUSCODES
         C: BDAT 0 LAST
         S: 502 5.5.1 Command not implemented",
    );
}

#[test]
fn hooks_can_replace_the_greeting_and_reject_helo() {
    let config = Config {
        hooks: Hooks {
            connect: true,
            helo: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let policy = Policy::Auto(Box::new(|hook: &Hook| match hook {
        Hook::Connect => Decision::AcceptWith(Reply::new(220, "welcome to the test").unwrap()),
        Hook::Helo { host, .. } if host == "bad.example" => {
            Decision::reject(550, "5.7.1 go away").unwrap()
        }
        _ => Decision::Accept,
    }));
    let mut h = Harness::with_policy(config, policy);
    h.send("HELO bad.example\r\nMAIL FROM:<a@example.org>\r\nHELO good.example\r\n");
    h.expect(
        "H: connect
         D: accept 220 welcome to the test
         S: 220 welcome to the test
         C: HELO bad.example
         C: MAIL FROM:<a@example.org>
         C: HELO good.example
         H: helo Helo bad.example
         D: reject 550 5.7.1 go away
         S: 550 5.7.1 go away
         S: 503 5.5.1 Send HELO or EHLO first
         H: helo Helo good.example
         D: accept
         S: 250 mx.example",
    );
}
