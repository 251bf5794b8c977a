//! Hooks: subscription, the pause while one is pending, the decisions, hook failure
//! policies and validation of the replies hooks give.

mod common;
use common::*;
use smtp_session::{Config, Decision, Error, HookFailurePolicy, Hooks, Output, Reply, ReplyError};

fn all_hooks() -> Config {
    Config {
        hooks: Hooks::ALL,
        ..config()
    }
}

#[test]
fn every_subscribed_hook_is_called_in_order_with_its_arguments() {
    let mut h = Harness::new(all_hooks());
    h.send("EHLO c.example\r\nMAIL FROM:<a@example.org> SIZE=20\r\nRCPT TO:<b@example.net>\r\nDATA\r\nhi\r\n.\r\n");
    let hooks: Vec<&str> = h
        .transcript
        .lines()
        .filter_map(|l| l.strip_prefix("H: "))
        .collect();
    assert_eq!(
        hooks,
        [
            "connect",
            "helo Ehlo c.example",
            "mail_from <a@example.org> MailParams { size: Some(20), body: None, smtputf8: false, ret: None, envid: None, auth: None, require_tls: false, mt_priority: None, deliver_by: None }",
            "rcpt_to <b@example.net>",
            "data",
            "message from <a@example.org> to <b@example.net> body \"hi\\r\\n\"",
        ]
    );
}

#[test]
fn unsubscribed_hooks_cost_no_round_trip() {
    let mut h = Harness::manual(Config {
        hooks: Hooks::NONE,
        ..config()
    });
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nhi\r\n.\r\n");
    assert!(!h.transcript.contains("H: "));
    assert_eq!(h.server_lines().last(), Some(&"250 2.0.0 Message accepted"));
}

#[test]
fn nothing_is_processed_while_a_hook_is_pending() {
    let mut h = Harness::manual(Config {
        hooks: Hooks {
            mail_from: true,
            ..Hooks::NONE
        },
        ..config()
    });
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\nNOOP\r\nNOOP\r\n");
    h.transcript.clear();
    h.send("NOOP\r\n");
    assert_eq!(
        h.transcript, "C: NOOP\n",
        "no reply while the hook is pending"
    );
    assert_eq!(
        h.session.poll_timeout(),
        None,
        "no timeout runs while the caller decides"
    );
    h.decide(Decision::Accept);
    assert_eq!(
        h.server_lines(),
        [
            "250 2.1.0 Sender OK",
            "250 2.0.0 OK",
            "250 2.0.0 OK",
            "250 2.0.0 OK"
        ]
    );
}

#[test]
fn accept_with_custom_replies_sends_them_verbatim() {
    let policy = Policy::Auto(Box::new(|hook| match hook {
        smtp_session::Hook::Data => Decision::AcceptWith(Reply::new(354, "go ahead").unwrap()),
        smtp_session::Hook::Message(_) => {
            Decision::AcceptWith(Reply::new(250, "2.0.0 queued as 1234").unwrap())
        }
        smtp_session::Hook::RcptTo { .. } => Decision::AcceptWith(Reply::new(250, "fine").unwrap()),
        _ => Decision::Accept,
    }));
    let mut h = Harness::with_policy(all_hooks(), policy);
    h.transcript.clear();
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nhi\r\n.\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "250 mx.example",
            "250 2.1.0 Sender OK",
            "250 fine",
            "354 go ahead",
            "250 2.0.0 queued as 1234"
        ]
    );
}

#[test]
fn hook_failure_is_a_temporary_failure_by_default_and_the_session_stays() {
    let mut h = Harness::manual(all_hooks());
    h.decide(Decision::Accept);
    h.send("HELO c\r\n");
    h.decide(Decision::Accept);
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.transcript.clear();
    h.decide(Decision::HookFailed);
    h.send("NOOP\r\n");
    h.expect(
        "D: hook failed
         S: 451 4.3.0 Temporary failure, please try again later
         C: NOOP
         S: 250 2.0.0 OK",
    );
}

#[test]
fn hook_failure_can_disconnect_like_kumomta() {
    let config = Config {
        hook_failure: HookFailurePolicy::Disconnect,
        ..all_hooks()
    };
    let mut h = Harness::manual(config);
    h.decide(Decision::Accept);
    h.send("HELO c\r\n");
    h.transcript.clear();
    h.decide(Decision::HookFailed);
    h.expect(
        "D: hook failed
         S: 421 4.3.0 mx.example technical difficulties
         -- close
         H: disconnect close=local reply=421 4.3.0 helo",
    );
}

#[test]
fn hook_failure_at_connect_closes_with_421() {
    let mut h = Harness::manual(all_hooks());
    h.decide(Decision::HookFailed);
    assert_eq!(
        h.server_lines(),
        ["421 4.3.0 mx.example technical difficulties"]
    );
    assert_eq!(h.closes, 1);
}

#[test]
fn a_failed_message_hook_does_not_accept_the_message_and_ends_the_transaction() {
    let mut h = Harness::manual(config());
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nhi\r\n.\r\n");
    h.decide(Decision::HookFailed);
    h.transcript.clear();
    h.send("RCPT TO:<c@example.net>\r\n");
    assert_eq!(h.server_lines(), ["503 5.5.1 Need MAIL command first"]);
}

#[test]
fn hook_text_cannot_inject_a_reply() {
    let mut h = Harness::manual(Config {
        hooks: Hooks {
            mail_from: true,
            ..Hooks::NONE
        },
        ..config()
    });
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\n");
    h.transcript.clear();
    h.decide(Decision::reject(550, "5.7.1 no\r\n250 2.0.0 fake OK\nreally").unwrap());
    h.expect(
        "D: reject 550-5.7.1 no | 550-5.7.1 250 2.0.0 fake OK | 550 5.7.1 really
         S: 550-5.7.1 no
         S: 550-5.7.1 250 2.0.0 fake OK
         S: 550 5.7.1 really",
    );
}

#[test]
fn replies_are_validated_before_they_reach_the_session() {
    assert_eq!(Reply::new(99, "x"), Err(ReplyError::CodeOutOfRange(99)));
    assert_eq!(Reply::new(600, "x"), Err(ReplyError::CodeOutOfRange(600)));
    assert!(matches!(
        Reply::new(450, "5.1.1 mismatch"),
        Err(ReplyError::ClassMismatch { .. })
    ));
}

#[test]
fn a_decision_that_does_not_fit_is_refused_and_the_hook_counts_as_failed() {
    let unfit = [
        Decision::AcceptWith(Reply::new(550, "no").unwrap()),
        Decision::Reject(Reply::new(250, "ok").unwrap()),
        Decision::Challenge(vec![1]),
    ];
    for decision in unfit {
        let mut h = Harness::manual(Config {
            hooks: Hooks {
                mail_from: true,
                ..Hooks::NONE
            },
            ..config()
        });
        h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\n");
        h.transcript.clear();
        let error = h.decide_unfit(decision.clone());
        assert!(matches!(error, Error::InvalidDecision(_)), "{error:?}");
        // The session does not wait for a second try: it goes on as after a failed hook.
        assert_eq!(h.session.pending_hook(), None, "{decision:?}");
        assert_eq!(
            h.server_lines(),
            ["451 4.3.0 Temporary failure, please try again later"],
            "{decision:?}"
        );
        h.send("MAIL FROM:<a@example.org>\r\n");
        h.decide(Decision::Accept);
        assert_eq!(h.server_lines().last(), Some(&"250 2.1.0 Sender OK"));
    }
}

#[test]
fn hook_calls_flush_earlier_replies_first() {
    let mut s = smtp_session::Session::new(
        Config {
            hooks: Hooks {
                rcpt_to: true,
                ..Hooks::NONE
            },
            ..config()
        },
        info(),
        start(),
    );
    while s.poll_output().is_some() {}
    s.handle_input(
        b"HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n",
        start(),
    )
    .unwrap();
    assert!(
        matches!(s.poll_output(), Some(Output::Write(w)) if w == b"250 mx.example\r\n250 2.1.0 Sender OK\r\n")
    );
    assert!(matches!(s.poll_output(), Some(Output::HookCall(c)) if c.needs_decision()));
    assert!(s.poll_output().is_none());
}

// ---------------------------------------------------------------------------------------
// VRFY and EXPN through the VRFY hook.

fn vrfy_hook() -> Config {
    Config {
        hooks: Hooks {
            vrfy: true,
            ..Hooks::default()
        },
        expn: true,
        ..config()
    }
}

#[test]
fn vrfy_and_expn_are_answered_by_the_vrfy_hook() {
    let mut h = Harness::manual(vrfy_hook());
    h.send("EHLO c\r\n");
    h.transcript.clear();
    h.send("VRFY alice\r\n");
    h.decide(Decision::AcceptWith(
        Reply::new(250, "2.1.5 Alice <alice@example.org>").unwrap(),
    ));
    h.send("VRFY nobody\r\n");
    h.decide(Decision::reject(550, "5.1.1 No such user").unwrap());
    h.send("VRFY someone\r\n");
    h.decide(Decision::Accept);
    h.send("EXPN staff\r\n");
    h.decide(Decision::AcceptWith(
        Reply::new(250, "2.1.5 <alice@example.org>\n2.1.5 <bob@example.org>").unwrap(),
    ));
    h.expect(
        r#"C: VRFY alice
           H: Vrfy("alice")
           D: accept 250 2.1.5 Alice <alice@example.org>
           S: 250 2.1.5 Alice <alice@example.org>
           C: VRFY nobody
           H: Vrfy("nobody")
           D: reject 550 5.1.1 No such user
           S: 550 5.1.1 No such user
           C: VRFY someone
           H: Vrfy("someone")
           D: accept
           S: 252 2.5.0 Cannot verify the user, but will accept mail for delivery
           C: EXPN staff
           H: Expn("staff")
           D: accept 250-2.1.5 <alice@example.org> | 250 2.1.5 <bob@example.org>
           S: 250-2.1.5 <alice@example.org>
           S: 250 2.1.5 <bob@example.org>"#,
    );
}

#[test]
fn vrfy_switched_off_is_refused_without_asking_the_hook() {
    let mut h = Harness::manual(Config {
        vrfy: false,
        expn: false,
        ..vrfy_hook()
    });
    h.send("EHLO c\r\nVRFY alice\r\nEXPN staff\r\n");
    let lines = h.server_lines();
    assert_eq!(
        lines[lines.len() - 2..],
        ["502 5.5.1 Command not implemented"; 2]
    );
    assert!(h.pending.is_empty());
}

#[test]
fn recipients_the_rcpt_hook_does_not_accept_stay_out_of_the_envelope() {
    use smtp_session::{DisconnectMode, Hook};
    let policy = Policy::Auto(Box::new(|hook: &Hook| match hook {
        Hook::RcptTo { path, .. } => match path.to_string().as_str() {
            "c@example.net" => Decision::Reject(Reply::new(550, "5.1.1 no such user").unwrap()),
            "d@example.net" => Decision::HookFailed,
            "e@example.net" => Decision::Disconnect {
                reply: Reply::new(550, "5.7.1 not here").unwrap(),
                mode: DisconnectMode::If421,
            },
            _ => Decision::Accept,
        },
        _ => Decision::Accept,
    }));
    let mut h = Harness::with_policy(all_hooks(), policy);
    h.send(
        "EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n\
         RCPT TO:<c@example.net>\r\nRCPT TO:<d@example.net>\r\nRCPT TO:<e@example.net>\r\n\
         RCPT TO:<f@example.net>\r\n",
    );
    let recipients: Vec<String> = h
        .session
        .envelope()
        .unwrap()
        .recipients
        .iter()
        .map(|r| r.path.to_string())
        .collect();
    assert_eq!(recipients, ["b@example.net", "f@example.net"]);
    let lines = h.server_lines();
    assert_eq!(
        lines[lines.len() - 6..],
        [
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "550 5.1.1 no such user",
            "451 4.3.0 Temporary failure, please try again later",
            "550 5.7.1 not here",
            "250 2.1.5 Recipient OK",
        ]
    );
}
