//! The decisions the session targets give, and what each must do.

use smtp_session::{Decision, DisconnectMode, Reply};

use crate::fuzz::ops::{DecisionKind, ReplyCode};
use crate::fuzz::Rng;

/// The hooks, as far as the decisions for them differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HookKind {
    Connect,
    Helo,
    AuthDecoded,
    AuthStep,
    MailFrom,
    RcptTo,
    Data,
    Message,
    /// VRFY or EXPN.
    Verify,
}

/// What a decision is expected to do.
pub(crate) struct Expect {
    pub(crate) valid: bool,
    pub(crate) closes: bool,
    /// The code of the first reply written after it, when it is written at once.
    pub(crate) first_code: Option<u16>,
    /// Exactly this reply, then the FollowWith421 line, then close.
    pub(crate) follow_with_421: bool,
}

fn reply(code: u16, text: &str) -> Reply {
    Reply::new(code, text).expect("a valid reply")
}

fn enhanced_text(code: u16, text: &str) -> String {
    format!("{}.7.1 {text}", code / 100)
}

/// The decision `kind` stands for at a hook of `hook`, and what it must do.
pub(crate) fn build_decision(
    kind: &DecisionKind,
    hook: HookKind,
    hook_failure_disconnect: bool,
    refuse_early_talker: bool,
) -> (Decision, Expect) {
    let at_connect = hook == HookKind::Connect;
    // The data hook of a BDAT answers after the chunk, so its reply cannot be checked.
    let immediate = |code: u16| (hook != HookKind::Data).then_some(code);
    let success = match hook {
        HookKind::Connect if refuse_early_talker => 554,
        HookKind::Connect => 220,
        HookKind::AuthDecoded | HookKind::AuthStep => 235,
        HookKind::Data => 354,
        HookKind::Verify => 252,
        _ => 250,
    };
    let mut expect = Expect {
        valid: true,
        closes: false,
        first_code: None,
        follow_with_421: false,
    };
    let decision = match kind {
        DecisionKind::Accept => {
            expect.first_code = immediate(success);
            expect.closes = success == 554;
            Decision::Accept
        }
        DecisionKind::AcceptWith => {
            expect.first_code = immediate(success);
            expect.closes = success == 554;
            let success = if success == 554 { 220 } else { success };
            let text = match hook {
                HookKind::Helo => "mx.fuzz.example custom\nPIPELINING\nCHUNKING".to_owned(),
                _ => format!("{}.0.0 custom success", success / 100),
            };
            let text = if success == 354 || success == 220 {
                "custom go ahead".to_owned()
            } else {
                text
            };
            Decision::AcceptWith(reply(success, &text))
        }
        DecisionKind::Reject(code) => {
            let code = code.code();
            expect.valid = code >= 400;
            expect.closes = code == 421 || at_connect;
            expect.first_code = immediate(code);
            Decision::Reject(reply(code, &enhanced_text(code, "rejected by policy")))
        }
        DecisionKind::RejectInjection => {
            expect.closes = at_connect;
            expect.first_code = immediate(550);
            Decision::Reject(reply(550, "5.7.1 no\r\n250 2.0.0 OK\r\n354 go\n\r.\r\n"))
        }
        DecisionKind::Disconnect(mode, code) => {
            let code = code.code();
            let stays = *mode == DisconnectMode::If421 && code != 421 && !at_connect;
            expect.closes = !stays;
            expect.first_code = if stays { immediate(code) } else { Some(code) };
            expect.follow_with_421 = *mode == DisconnectMode::FollowWith421 && code != 421;
            let text = if code == 250 {
                "bye now".to_owned()
            } else {
                enhanced_text(code, "go away")
            };
            Decision::Disconnect {
                reply: reply(code, &text),
                mode: *mode,
            }
        }
        DecisionKind::HookFailed => {
            expect.closes = hook_failure_disconnect || at_connect;
            let code = if expect.closes {
                421
            } else if matches!(hook, HookKind::AuthDecoded | HookKind::AuthStep) {
                454
            } else {
                451
            };
            expect.first_code = if expect.closes {
                Some(421)
            } else {
                immediate(code)
            };
            Decision::HookFailed
        }
        DecisionKind::Challenge(bytes) => {
            expect.valid = hook == HookKind::AuthStep;
            expect.first_code = Some(334);
            Decision::Challenge(bytes.clone())
        }
    };
    (decision, expect)
}

/// A decision for `session_bytes` and for finishing: mostly Accept, always a fitting one.
pub(crate) fn auto_decision(rng: &mut Rng, hook: HookKind) -> DecisionKind {
    let code = [
        ReplyCode::C421,
        ReplyCode::C451,
        ReplyCode::C550,
        ReplyCode::C554,
    ][rng.below(4) as usize];
    let mode = [
        DisconnectMode::ForceDisconnect,
        DisconnectMode::FollowWith421,
        DisconnectMode::If421,
    ][rng.below(3) as usize];
    match rng.below(24) {
        0 => DecisionKind::AcceptWith,
        1 | 2 => DecisionKind::Reject(ReplyCode::C550),
        3 => DecisionKind::Reject(code),
        4 => DecisionKind::Disconnect(mode, code),
        5 => DecisionKind::HookFailed,
        6 => DecisionKind::RejectInjection,
        7..=10 if hook == HookKind::AuthStep => DecisionKind::Challenge(b"challenge".to_vec()),
        _ => DecisionKind::Accept,
    }
}
