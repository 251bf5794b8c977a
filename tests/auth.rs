//! AUTH (RFC 4954): PLAIN and LOGIN decoded by the session, other mechanisms as
//! challenge/response steps through the auth hook, and every failure path.

mod common;
use std::cell::RefCell;
use std::rc::Rc;

use common::*;
use smtp_session::{
    AuthInfo, AuthRequest, Config, Decision, DisconnectMode, Error, Hook, HookFailurePolicy, Hooks,
};

fn with_mechanisms(mechanisms: &[&str]) -> Config {
    Config {
        auth_mechanisms: mechanisms.iter().map(|m| m.to_string()).collect(),
        ..auth_config()
    }
}

/// `\0alice\0secret`
const ALICE: &str = "AGFsaWNlAHNlY3JldA==";

#[test]
fn auth_is_advertised_with_its_mechanisms_when_allowed_without_tls() {
    let mut h = Harness::new(auth_config());
    h.transcript.clear();
    h.send("EHLO client.example\r\n");
    assert_eq!(h.server_lines().last(), Some(&"250 AUTH PLAIN LOGIN"));
}

#[test]
fn plain_with_an_initial_response() {
    let mut h = Harness::manual(auth_config()).after_ehlo();
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.decide(Decision::Accept);
    h.send("QUIT\r\n");
    h.expect(
        r#"C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
           H: auth Plain { authzid: "", authcid: "alice", password: "secret" }
           D: accept
           S: 235 2.7.0 Authentication successful
           C: QUIT
           S: 221 2.0.0 Bye
           -- close
           H: disconnect close=local reply=221 2.0.0 quit"#,
    );
    let expected = AuthInfo {
        mechanism: "PLAIN".into(),
        username: Some("alice".into()),
    };
    assert_eq!(h.context().connection.auth, Some(expected));
}

#[test]
fn plain_with_a_334_prompt_and_an_authzid() {
    let mut h = Harness::manual(auth_config()).after_ehlo();
    h.send("auth plain\r\n");
    // `bob\0bob\0pw`
    h.send("Ym9iAGJvYgBwdw==\r\n");
    h.decide(Decision::Accept);
    h.expect_exact(
        r#"C: auth plain
           S: 334 
           C: Ym9iAGJvYgBwdw==
           H: auth Plain { authzid: "bob", authcid: "bob", password: "pw" }
           D: accept
           S: 235 2.7.0 Authentication successful
"#,
    );
    assert_eq!(h.session.auth().unwrap().username.as_deref(), Some("bob"));
}

#[test]
fn an_empty_initial_response_is_sent_as_an_equals_sign() {
    // RFC 4954: "=" is a present but empty initial response, not a request for a prompt.
    // PLAIN: an empty message holds no credentials.
    let mut h = Harness::manual(auth_config()).after_ehlo();
    h.send("AUTH PLAIN =\r\n");
    // LOGIN: an empty user name, then the password prompt.
    h.send("AUTH LOGIN =\r\n");
    h.send("c2VjcmV0\r\n");
    h.decide(Decision::reject(535, "5.7.8 no such user").unwrap());
    h.expect(
        r#"C: AUTH PLAIN =
           S: 501 5.5.2 Malformed authentication response
           C: AUTH LOGIN =
           S: 334 UGFzc3dvcmQ6
           C: c2VjcmV0
           H: auth Login { username: "", password: "secret" }
           D: reject 535 5.7.8 no such user
           S: 535 5.7.8 no such user"#,
    );
}

#[test]
fn an_empty_initial_response_reaches_a_step_mechanism_as_empty_bytes() {
    let mut h = Harness::manual(with_mechanisms(&["XOAUTH2"])).after_ehlo();
    h.send("AUTH XOAUTH2 =\r\n");
    h.decide(Decision::Accept);
    h.expect(
        r#"C: AUTH XOAUTH2 =
           H: auth Step { mechanism: "XOAUTH2", response: [], step: 0 }
           D: accept
           S: 235 2.7.0 Authentication successful"#,
    );
}

#[test]
fn login_with_both_prompts() {
    let mut h = Harness::manual(auth_config()).after_ehlo();
    h.send("AUTH LOGIN\r\n");
    h.send("YWxpY2U=\r\n");
    h.send("c2VjcmV0\r\n");
    h.decide(Decision::Accept);
    h.send("QUIT\r\n");
    h.expect(
        r#"C: AUTH LOGIN
           S: 334 VXNlcm5hbWU6
           C: YWxpY2U=
           S: 334 UGFzc3dvcmQ6
           C: c2VjcmV0
           H: auth Login { username: "alice", password: "secret" }
           D: accept
           S: 235 2.7.0 Authentication successful
           C: QUIT
           S: 221 2.0.0 Bye
           -- close
           H: disconnect close=local reply=221 2.0.0 quit"#,
    );
    let expected = AuthInfo {
        mechanism: "LOGIN".into(),
        username: Some("alice".into()),
    };
    assert_eq!(h.context().connection.auth, Some(expected));
}

#[test]
fn login_with_the_user_name_as_initial_response_pipelined() {
    let mut h = Harness::manual(auth_config()).after_ehlo();
    h.send("AUTH LOGIN YWxpY2U=\r\nc2VjcmV0\r\nNOOP\r\n");
    h.decide(Decision::Accept);
    h.expect(
        r#"C: AUTH LOGIN YWxpY2U=
           C: c2VjcmV0
           C: NOOP
           S: 334 UGFzc3dvcmQ6
           H: auth Login { username: "alice", password: "secret" }
           D: accept
           S: 235 2.7.0 Authentication successful
           S: 250 2.0.0 OK"#,
    );
}

#[test]
fn a_star_cancels_the_exchange_at_any_prompt() {
    let mut h = Harness::manual(with_mechanisms(&["PLAIN", "LOGIN", "XOAUTH2"])).after_ehlo();
    h.send("AUTH PLAIN\r\n*\r\n");
    h.send("AUTH LOGIN\r\nYWxpY2U=\r\n*\r\n");
    h.send("AUTH XOAUTH2\r\n");
    h.decide(Decision::Challenge(b"more".to_vec()));
    h.send("*\r\n");
    h.send("NOOP\r\n");
    h.expect_exact(
        r#"C: AUTH PLAIN
           C: *
           S: 334 
           S: 501 5.7.0 Authentication cancelled
           C: AUTH LOGIN
           C: YWxpY2U=
           C: *
           S: 334 VXNlcm5hbWU6
           S: 334 UGFzc3dvcmQ6
           S: 501 5.7.0 Authentication cancelled
           C: AUTH XOAUTH2
           H: auth Step { mechanism: "XOAUTH2", response: [], step: 0 }
           D: challenge "more"
           S: 334 bW9yZQ==
           C: *
           S: 501 5.7.0 Authentication cancelled
           C: NOOP
           S: 250 2.0.0 OK
"#,
    );
    assert_eq!(h.session.auth(), None);
}

#[test]
fn bad_base64_is_501_5_5_2_and_the_session_goes_on() {
    let mut h = Harness::manual(with_mechanisms(&["PLAIN", "LOGIN", "XOAUTH2"])).after_ehlo();
    h.send("AUTH PLAIN !!!!\r\n");
    h.send("AUTH PLAIN\r\nAGFsaWNl@\r\n");
    h.send("AUTH LOGIN\r\nYWxpY2U\r\n");
    h.send("AUTH XOAUTH2 dG9r=\r\n");
    // Good base64, but no NUL separators: not a PLAIN message.
    h.send("AUTH PLAIN YWxpY2U=\r\n");
    h.send("NOOP\r\n");
    h.expect_exact(
        "C: AUTH PLAIN !!!!
         S: 501 5.5.2 Invalid base64 data
         C: AUTH PLAIN
         C: AGFsaWNl@
         S: 334 
         S: 501 5.5.2 Invalid base64 data
         C: AUTH LOGIN
         C: YWxpY2U
         S: 334 VXNlcm5hbWU6
         S: 501 5.5.2 Invalid base64 data
         C: AUTH XOAUTH2 dG9r=
         S: 501 5.5.2 Invalid base64 data
         C: AUTH PLAIN YWxpY2U=
         S: 501 5.5.2 Malformed authentication response
         C: NOOP
         S: 250 2.0.0 OK
",
    );
}

#[test]
fn unknown_or_unoffered_mechanism_is_504_5_5_4() {
    let mut h = Harness::manual(with_mechanisms(&["PLAIN"])).after_ehlo();
    h.send("AUTH CRAM-MD5\r\n");
    h.send("AUTH LOGIN YWxpY2U=\r\n");
    h.expect(
        "C: AUTH CRAM-MD5
         S: 504 5.5.4 Unrecognized authentication type
         C: AUTH LOGIN YWxpY2U=
         S: 504 5.5.4 Unrecognized authentication type",
    );
}

#[test]
fn auth_switched_off_is_not_implemented() {
    let mut h = Harness::manual(config()).after_ehlo();
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.expect(
        "C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
         S: 502 5.5.1 Command not implemented",
    );
}

#[test]
fn without_tls_auth_is_not_advertised_and_refused_with_538() {
    let config = tls_and_auth_config();
    let mut h = Harness::manual(config);
    h.send("EHLO client.example\r\n");
    assert_eq!(h.server_lines().last(), Some(&"250 STARTTLS"));
    assert!(!h.transcript.contains("AUTH"));
    h.transcript.clear();
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.send("AUTH LOGIN\r\n");
    h.send("STARTTLS\r\n");
    h.tls_established(tls_info());
    h.send("EHLO client.example\r\n");
    h.transcript.clear();
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.decide(Decision::Accept);
    h.expect(
        r#"C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
           H: auth Plain { authzid: "", authcid: "alice", password: "secret" }
           D: accept
           S: 235 2.7.0 Authentication successful"#,
    );
}

#[test]
fn without_tls_the_refusals_are_538_5_7_11() {
    let config = tls_and_auth_config();
    let mut h = Harness::manual(config).after_ehlo();
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.send("AUTH LOGIN\r\n");
    h.expect(
        "C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
         S: 538 5.7.11 Encryption required for requested authentication mechanism
         C: AUTH LOGIN
         S: 538 5.7.11 Encryption required for requested authentication mechanism",
    );
}

#[test]
fn after_tls_auth_is_advertised() {
    let config = tls_and_auth_config();
    let mut h = Harness::manual(config).after_ehlo();
    h.send("STARTTLS\r\n");
    h.tls_established(tls_info());
    h.transcript.clear();
    h.send("EHLO client.example\r\n");
    assert_eq!(h.server_lines().last(), Some(&"250 AUTH PLAIN LOGIN"));
}

#[test]
fn a_hook_rejection_is_sent_and_the_client_may_try_again() {
    let mut h = Harness::manual(auth_config()).after_ehlo();
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.decide(Decision::reject(535, "5.7.8 Authentication credentials invalid").unwrap());
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.decide(Decision::Accept);
    h.expect(
        r#"C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
           H: auth Plain { authzid: "", authcid: "alice", password: "secret" }
           D: reject 535 5.7.8 Authentication credentials invalid
           S: 535 5.7.8 Authentication credentials invalid
           C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
           H: auth Plain { authzid: "", authcid: "alice", password: "secret" }
           D: accept
           S: 235 2.7.0 Authentication successful"#,
    );
}

#[test]
fn a_rejected_auth_leaves_no_trace_in_the_context() {
    let mut h = Harness::manual(auth_config()).after_ehlo();
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.decide(Decision::reject(535, "5.7.8 no").unwrap());
    h.send("QUIT\r\n");
    assert_eq!(h.context().connection.auth, None);
}

#[test]
fn a_failed_hook_is_454_4_7_0() {
    let mut h = Harness::manual(auth_config()).after_ehlo();
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.decide(Decision::HookFailed);
    h.send("NOOP\r\n");
    h.expect(
        r#"C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
           H: auth Plain { authzid: "", authcid: "alice", password: "secret" }
           D: hook failed
           S: 454 4.7.0 Temporary authentication failure
           C: NOOP
           S: 250 2.0.0 OK"#,
    );
    assert_eq!(h.session.auth(), None);
}

#[test]
fn a_failed_hook_under_the_disconnect_policy_is_421_and_close() {
    let config = Config {
        hook_failure: HookFailurePolicy::Disconnect,
        ..auth_config()
    };
    let mut h = Harness::manual(config).after_ehlo();
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.decide(Decision::HookFailed);
    assert_eq!(
        h.server_lines(),
        ["421 4.3.0 mx.example technical difficulties"]
    );
    assert_eq!(h.closes, 1);
    assert_eq!(h.context().connection.auth, None);
}

#[test]
fn a_disconnect_decision_at_auth_closes() {
    let mut h = Harness::manual(auth_config()).after_ehlo();
    h.send(&format!("AUTH PLAIN {ALICE}\r\nNOOP\r\n"));
    h.decide(Decision::disconnect(535, "5.7.8 go away", DisconnectMode::FollowWith421).unwrap());
    h.expect(
        r#"C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
           C: NOOP
           H: auth Plain { authzid: "", authcid: "alice", password: "secret" }
           D: disconnect FollowWith421 535 5.7.8 go away
           S: 535 5.7.8 go away
           S: 421 mx.example disconnecting due to previous error
           -- close
           H: disconnect close=local reply=421 auth"#,
    );
}

#[test]
fn already_authenticated_is_503_and_auth_is_no_longer_advertised() {
    let mut h = Harness::manual(auth_config()).after_ehlo();
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.decide(Decision::Accept);
    h.transcript.clear();
    h.send("AUTH LOGIN\r\n");
    h.send("EHLO client.example\r\n");
    assert_eq!(h.server_lines()[0], "503 5.5.1 Already authenticated");
    assert_eq!(h.server_lines().last(), Some(&"250 DSN"));
}

#[test]
fn auth_during_a_transaction_is_503() {
    let mut h = Harness::manual(auth_config()).after_ehlo();
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.send("RSET\r\n");
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.decide(Decision::Accept);
    h.expect(
        r#"C: MAIL FROM:<a@example.org>
           S: 250 2.1.0 Sender OK
           C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
           S: 503 5.5.1 AUTH not allowed during a mail transaction
           C: RSET
           S: 250 2.0.0 OK
           C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
           H: auth Plain { authzid: "", authcid: "alice", password: "secret" }
           D: accept
           S: 235 2.7.0 Authentication successful"#,
    );
}

#[test]
fn without_an_auth_hook_every_attempt_fails_closed() {
    let config = Config {
        hooks: Hooks::NONE,
        ..with_mechanisms(&["PLAIN", "LOGIN", "XOAUTH2"])
    };
    let mut h = Harness::manual(config).after_ehlo();
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.send("AUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\n");
    h.send("AUTH XOAUTH2 dG9r\r\n");
    h.expect(
        "C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
         S: 535 5.7.8 Authentication credentials invalid
         C: AUTH LOGIN
         C: YWxpY2U=
         C: c2VjcmV0
         S: 334 VXNlcm5hbWU6
         S: 334 UGFzc3dvcmQ6
         S: 535 5.7.8 Authentication credentials invalid
         C: AUTH XOAUTH2 dG9r
         S: 535 5.7.8 Authentication credentials invalid",
    );
    assert_eq!(h.session.auth(), None);
}

#[test]
fn require_auth_refuses_mail_until_authenticated() {
    let config = Config {
        require_auth: true,
        ..auth_config()
    };
    let mut h = Harness::manual(config).after_ehlo();
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send("RCPT TO:<b@example.net>\r\n");
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.decide(Decision::reject(535, "5.7.8 no").unwrap());
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.decide(Decision::Accept);
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.expect(
        r#"C: MAIL FROM:<a@example.org>
           S: 530 5.7.0 Authentication required
           C: RCPT TO:<b@example.net>
           S: 503 5.5.1 Need MAIL command first
           C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
           H: auth Plain { authzid: "", authcid: "alice", password: "secret" }
           D: reject 535 5.7.8 no
           S: 535 5.7.8 no
           C: MAIL FROM:<a@example.org>
           S: 530 5.7.0 Authentication required
           C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
           H: auth Plain { authzid: "", authcid: "alice", password: "secret" }
           D: accept
           S: 235 2.7.0 Authentication successful
           C: MAIL FROM:<a@example.org>
           S: 250 2.1.0 Sender OK"#,
    );
}

#[test]
fn an_auth_response_line_over_the_limit_is_500_5_5_6() {
    let limit = Config::default().max_auth_line_length;
    let mut h = Harness::manual(auth_config()).after_ehlo();
    // A continuation line of exactly the limit (CRLF included) is read; it is not base64.
    h.send("AUTH PLAIN\r\n");
    h.feed(format!("{}\r\n", "!".repeat(limit - 2)).as_bytes());
    // One byte more is too long, and its bytes are skipped, never read as commands.
    h.send("AUTH PLAIN\r\n");
    h.feed(format!("{}NOOP\r\n", "!".repeat(limit - 5)).as_bytes());
    h.send("NOOP\r\n");
    h.expect_exact(
        "C: AUTH PLAIN
         S: 334 
         S: 501 5.5.2 Invalid base64 data
         C: AUTH PLAIN
         S: 334 
         S: 500 5.5.6 Authentication exchange line is too long
         C: NOOP
         S: 250 2.0.0 OK
",
    );
    assert_eq!(h.session.auth(), None);
}

#[test]
fn an_auth_command_line_over_the_limit_is_500_5_5_6() {
    let limit = Config::default().max_auth_line_length;
    let mut h = Harness::manual(auth_config()).after_ehlo();
    // Split over reads, so the session has to skip the rest without holding it.
    let line = format!("AUTH PLAIN {}\r\n", "A".repeat(limit));
    for piece in line.as_bytes().chunks(1000) {
        h.feed(piece);
    }
    h.send("NOOP\r\n");
    h.expect(
        "S: 500 5.5.6 Authentication exchange line is too long
         C: NOOP
         S: 250 2.0.0 OK",
    );
}

#[test]
fn a_step_mechanism_runs_challenges_through_the_hook() {
    // XOAUTH2's failure flow: the server's error comes as a challenge, the client answers
    // with an empty line, and the server then fails the exchange.
    let mut h = Harness::manual(with_mechanisms(&["PLAIN", "XOAUTH2"])).after_ehlo();
    h.send("AUTH XOAUTH2 dG9r\r\n");
    h.decide(Decision::Challenge(br#"{"status":"401"}"#.to_vec()));
    h.send("\r\n");
    h.decide(Decision::reject(535, "5.7.8 invalid token").unwrap());
    h.send("AUTH xoauth2 dG9r\r\n");
    h.decide(Decision::Challenge(b"again".to_vec()));
    h.send("b2s=\r\n");
    h.decide(Decision::Accept);
    h.send("QUIT\r\n");
    h.expect(
        r#"C: AUTH XOAUTH2 dG9r
           H: auth Step { mechanism: "XOAUTH2", response: [116, 111, 107], step: 0 }
           D: challenge "{\"status\":\"401\"}"
           S: 334 eyJzdGF0dXMiOiI0MDEifQ==
           C:
           H: auth Step { mechanism: "XOAUTH2", response: [], step: 1 }
           D: reject 535 5.7.8 invalid token
           S: 535 5.7.8 invalid token
           C: AUTH xoauth2 dG9r
           H: auth Step { mechanism: "XOAUTH2", response: [116, 111, 107], step: 0 }
           D: challenge "again"
           S: 334 YWdhaW4=
           C: b2s=
           H: auth Step { mechanism: "XOAUTH2", response: [111, 107], step: 1 }
           D: accept
           S: 235 2.7.0 Authentication successful
           C: QUIT
           S: 221 2.0.0 Bye
           -- close
           H: disconnect close=local reply=221 2.0.0 quit"#,
    );
    let expected = AuthInfo {
        mechanism: "XOAUTH2".into(),
        username: None,
    };
    assert_eq!(h.context().connection.auth, Some(expected));
}

#[test]
fn a_step_mechanism_gets_the_decoded_bytes_of_each_response() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let record = Rc::clone(&seen);
    let policy = Policy::Auto(Box::new(move |hook: &Hook| match hook {
        Hook::Auth(request) => {
            record.borrow_mut().push(request.clone());
            match request {
                AuthRequest::Step { step: 0, .. } => Decision::Challenge(vec![0, 255, b'\n']),
                _ => Decision::Accept,
            }
        }
        _ => Decision::Accept,
    }));
    let mut h = Harness::with_policy(with_mechanisms(&["XOAUTH2"]), policy);
    h.send("EHLO client.example\r\n");
    // `user=alice\x01auth=Bearer t\x01\x01`, then binary bytes.
    h.send("AUTH XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciB0AQE=\r\nAP8N\r\n");
    assert!(h.transcript.contains("S: 334 AP8K\n"));
    assert_eq!(
        *seen.borrow(),
        [
            AuthRequest::Step {
                mechanism: "XOAUTH2".into(),
                response: b"user=alice\x01auth=Bearer t\x01\x01".to_vec(),
                step: 0
            },
            AuthRequest::Step {
                mechanism: "XOAUTH2".into(),
                response: vec![0, 255, b'\r'],
                step: 1
            }
        ]
    );
    assert_eq!(h.session.auth().unwrap().mechanism, "XOAUTH2");
}

#[test]
fn a_challenge_is_refused_for_plain_login_and_other_hooks() {
    let config = Config {
        hooks: Hooks {
            auth: true,
            mail_from: true,
            ..Hooks::NONE
        },
        ..auth_config()
    };
    let mut h = Harness::manual(config).after_ehlo();
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.transcript.clear();
    // A challenge for PLAIN does not fit: refused, and the auth hook counts as failed.
    let refused = h.decide_unfit(Decision::Challenge(b"x".to_vec()));
    assert!(matches!(refused, Error::InvalidDecision(_)), "{refused:?}");
    assert_eq!(h.session.pending_hook(), None);
    assert_eq!(
        h.server_lines(),
        ["454 4.7.0 Temporary authentication failure"]
    );
    assert!(h.session.auth().is_none());

    h.send("AUTH LOGIN YWxpY2U=\r\nc2VjcmV0\r\n");
    let refused = h.decide_unfit(Decision::Challenge(Vec::new()));
    assert!(matches!(refused, Error::InvalidDecision(_)), "{refused:?}");
    h.send("AUTH LOGIN YWxpY2U=\r\nc2VjcmV0\r\n");
    h.decide(Decision::Accept);

    h.send("MAIL FROM:<a@example.org>\r\n");
    let refused = h.decide_unfit(Decision::Challenge(Vec::new()));
    assert!(matches!(refused, Error::InvalidDecision(_)), "{refused:?}");
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.decide(Decision::Accept);
    assert_eq!(
        &h.server_lines()[h.server_lines().len() - 4..],
        [
            "334 UGFzc3dvcmQ6",
            "235 2.7.0 Authentication successful",
            "451 4.3.0 Temporary failure, please try again later",
            "250 2.1.0 Sender OK"
        ]
    );
}

#[test]
fn mail_from_auth_parameter_is_accepted_only_where_auth_is_offered() {
    let mut h = Harness::manual(auth_config()).after_ehlo();
    h.send("MAIL FROM:<a@example.org> AUTH=<>\r\nRSET\r\n");
    h.send("MAIL FROM:<a@example.org> AUTH=alice+40example.org\r\n");
    assert_eq!(
        h.session.envelope().unwrap().mail_params.auth.as_deref(),
        Some("alice@example.org")
    );
    let mut h = Harness::manual(config()).after_ehlo();
    h.send("MAIL FROM:<a@example.org> AUTH=<>\r\n");
    h.expect(
        "C: MAIL FROM:<a@example.org> AUTH=<>
         S: 555 5.5.4 Unsupported command parameter",
    );
}

#[test]
fn the_ehlo_hook_can_withdraw_auth() {
    let config = Config {
        hooks: Hooks {
            helo: true,
            auth: true,
            ..Hooks::NONE
        },
        ..auth_config()
    };
    let mut h = Harness::manual(config);
    h.transcript.clear();
    h.send("EHLO client.example\r\n");
    let mut extensions = h.session.extensions();
    extensions.auth = false;
    h.session.set_extensions(extensions);
    h.decide(Decision::Accept);
    h.send(&format!("AUTH PLAIN {ALICE}\r\n"));
    h.send("MAIL FROM:<a@example.org> AUTH=<>\r\n");
    let lines = h.server_lines();
    assert_eq!(lines[lines.len() - 3], "250 DSN");
    assert_eq!(lines[lines.len() - 2], "502 5.5.1 Command not implemented");
    assert_eq!(
        lines[lines.len() - 1],
        "555 5.5.4 Unsupported command parameter"
    );
}

#[test]
fn login_fields_must_be_text_without_nul() {
    let mut h = Harness::manual(auth_config()).after_ehlo();
    // `a\0b` as the user name, then a password that is not UTF-8.
    h.send("AUTH LOGIN YQBi\r\n");
    h.send("AUTH LOGIN YWxpY2U=\r\n/w==\r\n");
    h.expect(
        "C: AUTH LOGIN YQBi
         S: 501 5.5.2 Malformed authentication response
         C: AUTH LOGIN YWxpY2U=
         C: /w==
         S: 334 UGFzc3dvcmQ6
         S: 501 5.5.2 Malformed authentication response",
    );
}

#[test]
fn a_step_mechanism_can_name_its_user_for_the_context() {
    // XOAUTH2 carries the user inside the token; only the runtime's hook can read it.
    let mut h = Harness::manual(with_mechanisms(&["XOAUTH2"])).after_ehlo();
    assert_eq!(
        h.session.set_auth_username("nobody"),
        Err(Error::InvalidDecision("no auth hook is pending"))
    );
    h.send("AUTH XOAUTH2 dG9r\r\n");
    h.session.set_auth_username("alice@example.org").unwrap();
    h.decide(Decision::Challenge(b"more".to_vec()));
    h.send("b2s=\r\n");
    h.decide(Decision::Accept);
    h.send("QUIT\r\n");
    let expected = AuthInfo {
        mechanism: "XOAUTH2".into(),
        username: Some("alice@example.org".into()),
    };
    assert_eq!(h.context().connection.auth, Some(expected));
}
