//! KumoMTA's `kumo.disconnect` modes (seed `kumo-disconnect.md`), decided at MAIL FROM as in
//! the seed's examples, plus If421 and reject.

mod common;
use common::*;
use smtp_session::{Config, Decision, DisconnectMode, Hooks};

fn mail_hook() -> Config {
    Config {
        hooks: Hooks {
            mail_from: true,
            ..Hooks::NONE
        },
        ..config()
    }
}

fn at_mail_from() -> Harness {
    let mut h = Harness::manual(mail_hook());
    h.send("EHLO client.example\r\n");
    h.transcript.clear();
    h.send("MAIL FROM:<sender@example.org>\r\n");
    h
}

#[test]
fn seed_example_1_disconnect_with_a_421() {
    // kumo.disconnect(421, 'mta.example.com go away!')
    let mut h = at_mail_from();
    h.decide(
        Decision::disconnect(
            421,
            "mta.example.com go away!",
            DisconnectMode::ForceDisconnect,
        )
        .unwrap(),
    );
    h.expect(
        "C: MAIL FROM:<sender@example.org>
         H: mail_from <sender@example.org>
         D: disconnect ForceDisconnect 421 mta.example.com go away!
         S: 421 mta.example.com go away!
         -- close
         H: disconnect close=local reply=421 mail",
    );
}

#[test]
fn seed_example_2_non_421_code_still_disconnects_by_default() {
    // kumo.disconnect(451, 'no thank you') -- mode defaults to ForceDisconnect
    let mut h = at_mail_from();
    h.decide(Decision::disconnect(451, "no thank you", DisconnectMode::default()).unwrap());
    h.expect(
        "C: MAIL FROM:<sender@example.org>
         H: mail_from <sender@example.org>
         D: disconnect ForceDisconnect 451 no thank you
         S: 451 no thank you
         -- close
         H: disconnect close=local reply=451 mail",
    );
}

#[test]
fn seed_example_3_follow_with_421_stays_conformant() {
    // kumo.disconnect(451, 'no thank you', 'FollowWith421')
    let mut h = at_mail_from();
    h.decide(Decision::disconnect(451, "no thank you", DisconnectMode::FollowWith421).unwrap());
    h.expect(
        "C: MAIL FROM:<sender@example.org>
         H: mail_from <sender@example.org>
         D: disconnect FollowWith421 451 no thank you
         S: 451 no thank you
         S: 421 mx.example disconnecting due to previous error
         -- close
         H: disconnect close=local reply=421 mail",
    );
}

#[test]
fn follow_with_421_and_a_421_sends_only_the_421() {
    let mut h = at_mail_from();
    h.decide(Decision::disconnect(421, "4.7.0 busy", DisconnectMode::FollowWith421).unwrap());
    assert_eq!(h.server_lines(), ["421 4.7.0 busy"]);
    assert_eq!(h.closes, 1);
}

#[test]
fn if421_with_421_closes() {
    let mut h = at_mail_from();
    h.decide(Decision::disconnect(421, "go away", DisconnectMode::If421).unwrap());
    h.expect(
        "C: MAIL FROM:<sender@example.org>
         H: mail_from <sender@example.org>
         D: disconnect If421 421 go away
         S: 421 go away
         -- close
         H: disconnect close=local reply=421 mail",
    );
}

#[test]
fn if421_with_451_behaves_like_reject_and_stays_open() {
    let mut h = at_mail_from();
    h.decide(Decision::disconnect(451, "no thank you", DisconnectMode::If421).unwrap());
    h.send("MAIL FROM:<other@example.org>\r\n");
    h.decide(Decision::Accept);
    h.expect(
        "C: MAIL FROM:<sender@example.org>
         H: mail_from <sender@example.org>
         D: disconnect If421 451 no thank you
         S: 451 no thank you
         C: MAIL FROM:<other@example.org>
         H: mail_from <other@example.org>
         D: accept
         S: 250 2.1.0 Sender OK",
    );
    assert_eq!(h.closes, 0);
}

#[test]
fn reject_stays_open_and_a_rejected_sender_opens_no_transaction() {
    let mut h = at_mail_from();
    h.decide(Decision::reject(550, "5.7.1 not you").unwrap());
    h.send("RCPT TO:<rcpt@example.net>\r\n");
    h.expect(
        "C: MAIL FROM:<sender@example.org>
         H: mail_from <sender@example.org>
         D: reject 550 5.7.1 not you
         S: 550 5.7.1 not you
         C: RCPT TO:<rcpt@example.net>
         S: 503 5.5.1 Need MAIL command first",
    );
}

#[test]
fn reject_with_421_closes_like_kumo_reject() {
    let mut h = at_mail_from();
    h.decide(Decision::reject(421, "4.3.2 going down").unwrap());
    assert_eq!(h.server_lines(), ["421 4.3.2 going down"]);
    assert_eq!(h.closes, 1);
    assert_eq!(h.disconnects, 1);
}

#[test]
fn earlier_pipelined_replies_come_first_and_later_commands_get_none() {
    let config = Config {
        hooks: Hooks {
            rcpt_to: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let mut h = Harness::manual(config);
    h.transcript.clear();
    h.send(
        "EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n\
         RCPT TO:<c@example.net>\r\nDATA\r\n",
    );
    h.decide(Decision::disconnect(451, "4.7.1 greylisted", DisconnectMode::FollowWith421).unwrap());
    let lines = h.server_lines();
    assert_eq!(lines[0], "250-mx.example greets c.example");
    assert_eq!(
        &lines[lines.len() - 3..],
        [
            "250 2.1.0 Sender OK",
            "451 4.7.1 greylisted",
            "421 mx.example disconnecting due to previous error"
        ]
    );
    // RCPT TO:<c@...> and DATA were never answered, and nothing follows the close.
    assert!(h
        .transcript
        .ends_with("-- close\nH: disconnect close=local reply=421 rcpt\n"));
    assert!(h.session.poll_output().is_none());
}

#[test]
fn disconnect_during_the_message_hook_does_not_accept_the_message() {
    let mut h = Harness::manual(config());
    h.send(
        "HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nbody\r\n.\r\n",
    );
    h.decide(Decision::disconnect(554, "5.7.1 spam", DisconnectMode::FollowWith421).unwrap());
    assert_eq!(
        &h.server_lines()[5..],
        [
            "554 5.7.1 spam",
            "421 mx.example disconnecting due to previous error"
        ]
    );
    assert_eq!(
        h.context().arguments.reply.as_ref().unwrap().state.as_str(),
        "EOD"
    );
}
