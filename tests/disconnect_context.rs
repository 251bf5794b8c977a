//! The disconnect context (seed `halon-disconnect-script.txt`): built once, at the very end,
//! for every way a connection can end.

mod common;
use common::*;
use std::time::Duration;

use smtp_session::{CloseSide, Config, HeloVerb, IoError, IoErrorKind, LastReply, ReplyState};

fn last(h: &Harness) -> LastReply {
    h.context()
        .arguments
        .reply
        .clone()
        .expect("a reply was sent")
}

#[test]
fn quit_is_a_local_close_with_the_221_and_the_connection_details() {
    let mut h = Harness::new(config());
    h.session.set_user_context(Box::new(42u32));
    h.send("EHLO client.example\r\nQUIT\r\n");
    assert!(h
        .transcript
        .ends_with("S: 221 2.0.0 Bye\n-- close\nH: disconnect close=local reply=221 2.0.0 quit\n"));
    let c = h.context();
    assert_eq!(c.arguments.close, CloseSide::Local);
    assert_eq!(
        last(&h),
        LastReply {
            code: 221,
            enhanced: Some(smtp_session::EnhancedCode::new(2, 0, 0)),
            lines: vec!["Bye".into()],
            state: ReplyState::Quit
        }
    );
    assert_eq!(c.arguments.error, None);
    let conn = &c.connection;
    assert_eq!(conn.info.id, "conn-1");
    assert_eq!(conn.info.remote_ip, Some("192.0.2.10".parse().unwrap()));
    assert_eq!(conn.info.remote_port, Some(41666));
    assert_eq!(conn.info.local_ip, Some("198.51.100.1".parse().unwrap()));
    assert_eq!(conn.info.local_port, Some(25));
    assert_eq!(conn.info.server_id.as_deref(), Some("inbound"));
    let helo = conn.helo.as_ref().unwrap();
    assert_eq!(
        (helo.verb, helo.host.as_str()),
        (HeloVerb::Ehlo, "client.example")
    );
    assert_eq!(conn.tls, None);
    assert_eq!(conn.auth, None);
    assert_eq!(c.context.as_ref().unwrap().downcast_ref::<u32>(), Some(&42));
}

#[test]
fn remote_eof_is_a_remote_close_and_keeps_the_last_reply() {
    let mut h = Harness::new(config());
    h.send("HELO client.example\r\nMAIL FROM:<a@example.org>\r\n")
        .eof();
    h.expect(
        "S: 220 mx.example ESMTP
         C: HELO client.example
         C: MAIL FROM:<a@example.org>
         S: 250 mx.example
         S: 250 2.1.0 Sender OK
         -- eof
         -- close
         H: disconnect close=remote reply=250 2.1.0 mail",
    );
    assert_eq!(
        h.context().connection.helo.as_ref().unwrap().verb,
        HeloVerb::Helo
    );
}

#[test]
fn commands_before_eof_are_still_answered() {
    let mut h = Harness::new(config());
    h.send("NOOP\r\nNOOP\r\n").eof();
    assert_eq!(
        h.server_lines(),
        ["220 mx.example ESMTP", "250 2.0.0 OK", "250 2.0.0 OK"]
    );
    assert_eq!(h.context().arguments.close, CloseSide::Remote);
}

#[test]
fn io_error_is_remote_with_the_error_and_no_further_writes() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\n");
    let err = IoError::new(IoErrorKind::Socket, "Connection reset by peer", Some(104));
    h.session.handle_io_error(err.clone(), h.now).unwrap();
    h.drain();
    assert!(h.transcript.ends_with("-- close\nH: disconnect close=remote reply=250 ehlo error=socket:connection reset by peer\n"));
    assert_eq!(h.context().arguments.error, Some(err));
    assert_eq!(h.context().arguments.close, CloseSide::Remote);
}

#[test]
fn timeout_sends_421_4_4_2_and_is_a_local_close() {
    let mut h = Harness::new(config());
    h.send("EHLO c\r\n");
    h.transcript.clear();
    h.advance(Duration::from_secs(299));
    assert_eq!(h.transcript, "");
    h.advance(Duration::from_secs(1));
    h.expect(
        "-- timeout
         S: 421 4.4.2 mx.example Error: timeout exceeded
         -- close
         H: disconnect close=local reply=421 4.4.2 timeout",
    );
}

#[test]
fn error_limit_sends_421_4_7_0_and_is_a_local_close() {
    let config = Config {
        hard_error_limit: 3,
        ..config()
    };
    let mut h = Harness::new(config);
    h.transcript.clear();
    h.send("BOGUS\r\nBOGUS\r\nBOGUS\r\nNOOP\r\n");
    h.expect(
        "C: BOGUS
         C: BOGUS
         C: BOGUS
         C: NOOP
         S: 500 5.5.1 Command unrecognized
         S: 500 5.5.1 Command unrecognized
         S: 500 5.5.1 Command unrecognized
         S: 421 4.7.0 mx.example Error: too many errors
         -- close
         H: disconnect close=local reply=421 4.7.0 unknown",
    );
}

#[test]
fn shutdown_when_idle_sends_421_4_3_2_at_once() {
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.shutdown();
    h.expect(
        "-- shutdown
         S: 421 4.3.2 mx.example Service shutting down
         -- close
         H: disconnect close=local reply=421 4.3.2 shutdown",
    );
}

#[test]
fn shutdown_waits_until_no_reply_is_owed() {
    let mut h = Harness::manual(config());
    h.send(
        "HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nhello\r\n.\r\n",
    );
    // The message hook is pending: the client is owed the reply to the message.
    h.shutdown();
    assert_eq!(h.closes, 0);
    h.decide(smtp_session::Decision::Accept);
    let lines = h.server_lines();
    assert_eq!(
        &lines[lines.len() - 2..],
        [
            "250 2.0.0 Message accepted",
            "421 4.3.2 mx.example Service shutting down"
        ]
    );
    assert_eq!(h.closes, 1);
}

#[test]
fn the_transaction_is_empty_and_nothing_follows_the_disconnect_hook() {
    let mut h = Harness::new(config());
    h.send("HELO c\r\nMAIL FROM:<a@example.org>\r\n").eof();
    assert_eq!(h.disconnects, 1);
    assert!(h.session.poll_output().is_none());
    assert_eq!(
        h.session.handle_input(b"NOOP\r\n", h.now),
        Err(smtp_session::Error::Closed)
    );
    assert_eq!(
        h.session.handle_eof(h.now),
        Err(smtp_session::Error::Closed)
    );
    assert!(h.session.poll_output().is_none());
    assert_eq!(h.disconnects, 1);
}

#[cfg(feature = "serde")]
#[test]
fn serialises_with_halon_key_names() {
    let mut h = Harness::new(config());
    h.send("EHLO client.example\r\nQUIT\r\n");
    let json = serde_json::to_value(h.context()).unwrap();
    assert_eq!(json["arguments"]["close"], "local");
    assert_eq!(json["arguments"]["reply"]["code"], 221);
    assert_eq!(
        json["arguments"]["reply"]["enhanced"],
        serde_json::json!([2, 0, 0])
    );
    assert_eq!(
        json["arguments"]["reply"]["reason"],
        serde_json::json!(["Bye"])
    );
    assert_eq!(json["arguments"]["reply"]["state"], "QUIT");
    assert_eq!(json["arguments"]["error"], serde_json::Value::Null);
    assert_eq!(json["connection"]["remoteip"], "192.0.2.10");
    assert_eq!(json["connection"]["remoteport"], 41666);
    assert_eq!(json["connection"]["localport"], 25);
    assert_eq!(json["connection"]["serverid"], "inbound");
    assert_eq!(json["connection"]["helo"]["verb"], "EHLO");
    assert_eq!(json["connection"]["helo"]["host"], "client.example");
    assert_eq!(json["connection"]["tls"], serde_json::Value::Null);
    assert_eq!(json["transaction"], serde_json::json!({}));
}
