//! A disconnect decision at every stage ends the connection with the reply, closes once and
//! calls the disconnect hook once, and an open transaction never completes.

mod common;
use common::*;
use smtp_session::{Config, Decision, DisconnectMode, Hook, Hooks, ReplyState};

fn disconnect_at(stage: &'static str) -> Harness {
    let config = Config {
        hooks: Hooks::ALL,
        ..config()
    };
    let policy = Policy::Auto(Box::new(move |hook: &Hook| {
        let name = match hook {
            Hook::Connect => "connect",
            Hook::Helo { .. } => "helo",
            Hook::MailFrom { .. } => "mail",
            Hook::RcptTo { .. } => "rcpt",
            Hook::Data => "data",
            Hook::Message(_) => "message",
            _ => "other",
        };
        if name == stage {
            Decision::disconnect(550, "5.7.1 policy", DisconnectMode::FollowWith421).unwrap()
        } else {
            Decision::Accept
        }
    }));
    let mut h = Harness::with_info(config, info(), policy);
    if !h.session.is_closed() {
        h.send(
            "EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n\
             DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n",
        );
    }
    h
}

#[test]
fn every_stage_can_disconnect() {
    let cases = [
        ("connect", ReplyState::Connect),
        ("helo", ReplyState::Ehlo),
        ("mail", ReplyState::Mail),
        ("rcpt", ReplyState::Rcpt),
        ("data", ReplyState::Data),
        ("message", ReplyState::Eod),
    ];
    for (stage, state) in cases {
        let h = disconnect_at(stage);
        let lines = h.server_lines();
        assert_eq!(
            &lines[lines.len() - 2..],
            [
                "550 5.7.1 policy",
                "421 mx.example disconnecting due to previous error"
            ],
            "{stage}: {}",
            h.transcript
        );
        assert_eq!(h.closes, 1, "{stage}");
        assert_eq!(h.disconnects, 1, "{stage}");
        assert!(h.messages.is_empty(), "{stage}: no message is accepted");
        assert!(!lines.iter().any(|l| l.starts_with("250 2.0.0")), "{stage}");
        let reply = h.context().arguments.reply.clone().unwrap();
        assert_eq!((reply.code, reply.state), (421, state), "{stage}");
        let tail = format!(
            "-- close\nH: disconnect close=local reply=421 {}\n",
            state.as_str().to_lowercase()
        );
        assert!(h.transcript.ends_with(&tail), "{stage}: {}", h.transcript);
    }
}

#[test]
fn connect_hook_reject_always_closes_even_with_5xx() {
    let config = Config {
        hooks: Hooks {
            connect: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let mut h = Harness::manual(config);
    h.decide(Decision::reject(554, "5.7.1 no service for you").unwrap());
    h.expect(
        "H: connect
         D: reject 554 5.7.1 no service for you
         S: 554 5.7.1 no service for you
         -- close
         H: disconnect close=local reply=554 5.7.1 connect",
    );
}

#[test]
fn connect_hook_if421_with_non_421_still_closes_because_connect_refusals_close() {
    let config = Config {
        hooks: Hooks {
            connect: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let mut h = Harness::manual(config);
    h.decide(Decision::disconnect(554, "go away", DisconnectMode::If421).unwrap());
    assert_eq!(h.server_lines(), ["554 go away"]);
    assert_eq!(h.closes, 1);
}
