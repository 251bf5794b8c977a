//! LMTP (SPEC 14, RFC 2033): LHLO instead of HELO/EHLO, and after the end of a message one
//! reply per accepted recipient, in RCPT order, decided by the message hook.

mod common;
use common::*;

use smtp_session::{Config, Decision, Error, Hook, Reply};

fn lmtp() -> Config {
    Config {
        lmtp: true,
        ..config()
    }
}

const THREE: &str = "MAIL FROM:<a@example.org>\r\nRCPT TO:<one@example.net>\r\n\
                     RCPT TO:<two@example.net>\r\nRCPT TO:<three@example.net>\r\n";

#[test]
fn lhlo_greets_and_helo_or_ehlo_are_unknown() {
    let mut h = Harness::new(lmtp());
    h.send("HELO c\r\nEHLO c\r\nLHLO client.example\r\n");
    h.expect(
        r#"S: 220 mx.example ESMTP
           C: HELO c
           C: EHLO c
           C: LHLO client.example
           S: 500 5.5.1 Command unrecognized
           S: 500 5.5.1 Command unrecognized
           S: 250-mx.example greets client.example
           S: 250-PIPELINING
           S: 250-SIZE 26214400
           S: 250-8BITMIME
           S: 250-ENHANCEDSTATUSCODES
           S: 250-SMTPUTF8
           S: 250-CHUNKING
           S: 250-BINARYMIME
           S: 250 DSN"#,
    );
    assert_eq!(h.session.helo().unwrap().verb, smtp_session::HeloVerb::Lhlo);
    // And an SMTP session does not know LHLO.
    let mut h = Harness::new(config());
    h.send("LHLO c\r\n");
    assert_eq!(h.server_lines()[1], "500 5.5.1 Command unrecognized");
}

#[test]
fn a_message_accepted_as_a_whole_gets_one_reply_per_recipient() {
    let mut h = Harness::new(lmtp());
    h.send("LHLO c\r\n");
    h.transcript.clear();
    h.send(THREE);
    h.send("DATA\r\nSubject: x\r\n\r\nhello\r\n.\r\n");
    h.expect(
        r#"C: MAIL FROM:<a@example.org>
           C: RCPT TO:<one@example.net>
           C: RCPT TO:<two@example.net>
           C: RCPT TO:<three@example.net>
           S: 250 2.1.0 Sender OK
           S: 250 2.1.5 Recipient OK
           S: 250 2.1.5 Recipient OK
           S: 250 2.1.5 Recipient OK
           C: DATA
           C: Subject: x
           C:
           C: hello
           C: .
           S: 354 End data with <CR><LF>.<CR><LF>
           H: message from <a@example.org> to <one@example.net>,<two@example.net>,<three@example.net> body "Subject: x\r\n\r\nhello\r\n"
           D: accept
           S: 250 2.0.0 Message accepted
           S: 250 2.0.0 Message accepted
           S: 250 2.0.0 Message accepted"#,
    );
}

#[test]
fn a_message_accepted_for_some_recipients_and_refused_for_others() {
    let mut h = Harness::manual(lmtp());
    h.send("LHLO c\r\n");
    h.send(THREE);
    h.send("DATA\r\nhello\r\n.\r\n");
    h.transcript.clear();
    h.decide(Decision::PerRecipient(vec![
        Reply::new(250, "2.0.0 delivered to one").unwrap(),
        Reply::new(550, "5.1.1 no such mailbox: two").unwrap(),
        Reply::new(452, "4.2.2 mailbox full: three").unwrap(),
    ]));
    h.send("QUIT\r\n");
    h.expect(
        r#"D: per recipient 250 2.0.0 delivered to one | 550 5.1.1 no such mailbox: two | 452 4.2.2 mailbox full: three
           S: 250 2.0.0 delivered to one
           S: 550 5.1.1 no such mailbox: two
           S: 452 4.2.2 mailbox full: three
           C: QUIT
           S: 221 2.0.0 Bye
           -- close
           H: disconnect close=local reply=221 2.0.0 quit"#,
    );
}

#[test]
fn per_recipient_replies_must_match_the_recipients_and_fit_the_hook() {
    let unfit = [
        vec![Reply::new(250, "ok").unwrap(); 2],
        vec![Reply::new(354, "go").unwrap(); 3],
    ];
    for replies in unfit {
        let mut h = Harness::manual(lmtp());
        h.send("LHLO c\r\n");
        h.send(THREE);
        h.send("DATA\r\nhello\r\n.\r\n");
        h.transcript.clear();
        let refused = h.decide_unfit(Decision::PerRecipient(replies));
        assert!(matches!(refused, Error::InvalidDecision(_)));
        // The hook failed: every recipient hears so.
        assert_eq!(
            h.server_lines(),
            ["451 4.3.0 Temporary failure, please try again later"; 3]
        );
    }
    // Refusing as a whole answers every recipient with the same reply.
    let mut h = Harness::manual(lmtp());
    h.send("LHLO c\r\n");
    h.send(THREE);
    h.send("DATA\r\nhello\r\n.\r\n");
    h.transcript.clear();
    h.decide(Decision::reject(451, "4.3.0 try later").unwrap());
    assert_eq!(h.server_lines(), ["451 4.3.0 try later"; 3]);
    // SMTP's message hook takes no per-recipient replies.
    let mut h = Harness::manual(config());
    h.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nx\r\n.\r\n");
    let one = vec![Reply::new(250, "ok").unwrap()];
    assert!(matches!(
        h.decide_unfit(Decision::PerRecipient(one)),
        Error::InvalidDecision(_)
    ));
}

#[test]
fn a_refused_body_is_refused_for_every_recipient() {
    let mut h = Harness::new(Config {
        max_message_size: 10,
        ..lmtp()
    });
    h.send("LHLO c\r\n");
    h.send(THREE);
    h.transcript.clear();
    h.send("DATA\r\nthis is more than ten bytes\r\n.\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "354 End data with <CR><LF>.<CR><LF>",
            "552 5.3.4 Message size exceeds fixed maximum message size",
            "552 5.3.4 Message size exceeds fixed maximum message size",
            "552 5.3.4 Message size exceeds fixed maximum message size",
        ]
    );
    // A failed hook is a temporary failure for each recipient.
    let mut h = Harness::with_policy(
        lmtp(),
        Policy::Auto(Box::new(|hook| match hook {
            Hook::Message(_) => Decision::HookFailed,
            _ => Decision::Accept,
        })),
    );
    h.send("LHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<one@example.net>\r\n");
    h.send("RCPT TO:<two@example.net>\r\nDATA\r\nx\r\n.\r\n");
    let lines = h.server_lines();
    assert_eq!(
        lines[lines.len() - 2..],
        ["451 4.3.0 Temporary failure, please try again later"; 2]
    );
}

#[test]
fn bdat_answers_each_chunk_once_and_the_last_one_per_recipient() {
    let mut h = Harness::new(lmtp());
    h.send("LHLO c\r\n");
    h.send(THREE);
    h.transcript.clear();
    h.send("BDAT 7\r\n");
    h.send_data(b"hello\r\n");
    h.send("BDAT 7 LAST\r\n");
    h.send_data(b"world\r\n");
    h.expect(
        r#"C: BDAT 7
           C= hello\r\n
           S: 250 2.0.0 Chunk accepted
           C: BDAT 7 LAST
           C= world\r\n
           H: message from <a@example.org> to <one@example.net>,<two@example.net>,<three@example.net> body "hello\r\nworld\r\n"
           D: accept
           S: 250 2.0.0 Message accepted
           S: 250 2.0.0 Message accepted
           S: 250 2.0.0 Message accepted"#,
    );
}

#[test]
fn pipelined_transactions_get_their_replies_in_order() {
    let mut h = Harness::new(lmtp());
    h.send("LHLO c\r\n");
    h.transcript.clear();
    h.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<one@example.net>\r\nRCPT TO:<bad>\r\n\
         RCPT TO:<two@example.net>\r\nDATA\r\n",
    );
    h.send("first\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<three@example.net>\r\nDATA\r\n");
    h.send("second\r\n.\r\nQUIT\r\n");
    let lines = h.server_lines();
    assert_eq!(
        lines,
        [
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "501 5.1.3 Bad recipient address syntax",
            "250 2.1.5 Recipient OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Message accepted",
            "250 2.0.0 Message accepted",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Message accepted",
            "221 2.0.0 Bye",
        ]
    );
    assert_eq!(h.messages.len(), 2);
}

#[test]
fn a_disconnect_at_the_message_hook_sends_its_reply_once_and_closes() {
    let mut h = Harness::with_policy(
        lmtp(),
        Policy::Auto(Box::new(|hook| match hook {
            Hook::Message(_) => Decision::disconnect(
                451,
                "4.3.0 going away",
                smtp_session::DisconnectMode::FollowWith421,
            )
            .unwrap(),
            _ => Decision::Accept,
        })),
    );
    h.send("LHLO c\r\n");
    h.send(THREE);
    h.transcript.clear();
    h.send("DATA\r\nx\r\n.\r\n");
    assert_eq!(
        h.server_lines(),
        [
            "354 End data with <CR><LF>.<CR><LF>",
            "451 4.3.0 going away",
            "421 mx.example disconnecting due to previous error"
        ]
    );
    assert!(h.session.is_closed());
}

#[test]
fn per_recipient_replies_that_are_the_servers_fault_do_not_count() {
    let config = Config {
        hard_error_limit: 2,
        ..lmtp()
    };
    let mut h = Harness::manual(config);
    h.send("LHLO c\r\n");
    for _ in 0..3 {
        h.send(THREE);
        h.send("DATA\r\nhello\r\n.\r\n");
        let fault = Reply::new(451, "4.3.0 store failed")
            .unwrap()
            .server_fault();
        h.decide(Decision::PerRecipient(vec![
            Reply::new(250, "2.0.0 delivered to one").unwrap(),
            fault.clone(),
            fault,
        ]));
    }
    assert_eq!(h.closes, 0);
    // One refusal that is not the server's fault counts, whatever the others are.
    h.send(THREE);
    h.send("DATA\r\nhello\r\n.\r\n");
    h.decide(Decision::PerRecipient(vec![
        Reply::new(550, "5.1.1 no such mailbox: one").unwrap(),
        Reply::new(451, "4.3.0 store failed")
            .unwrap()
            .server_fault(),
        Reply::new(250, "2.0.0 delivered to three").unwrap(),
    ]));
    h.send("BOGUS\r\n");
    assert_eq!(
        h.server_lines()[h.server_lines().len() - 2..],
        [
            "500 5.5.1 Command unrecognized",
            "421 4.7.0 mx.example Error: too many errors"
        ]
    );
    assert_eq!(h.closes, 1);
}
