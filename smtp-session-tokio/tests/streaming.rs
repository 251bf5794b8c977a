//! Streamed bodies through a handler: the pieces arrive in order and make the message, the
//! message hook gets the size but no body, an aborted message is announced, and a piece that
//! cannot be stored fails the message with a temporary error.

mod common;

use std::sync::{Arc, Mutex};

use common::{config, serve, Client};
use smtp_session_tokio::{
    AbortReason, BodyDelivery, Connection, Decision, Handler, HookError, HookResult, Hooks,
    Message, Server,
};

#[derive(Default)]
struct Seen {
    stored: Vec<Vec<u8>>,
    pieces: usize,
    aborted: Vec<AbortReason>,
}

/// Writes pieces into a per-connection spool; a body containing `FAIL` cannot be stored.
#[derive(Clone, Default)]
struct Spooler {
    spool: Vec<u8>,
    seen: Arc<Mutex<Seen>>,
}

impl Handler for Spooler {
    fn hooks(&self) -> Hooks {
        Hooks::default()
    }

    async fn body_piece(
        &mut self,
        _: &mut Connection<'_>,
        piece: Vec<u8>,
    ) -> Result<(), HookError> {
        assert!(piece.len() <= 1024, "a piece of {} bytes", piece.len());
        self.seen.lock().unwrap().pieces += 1;
        if piece.windows(4).any(|w| w == b"FAIL") {
            return Err("the spool is full".into());
        }
        self.spool.extend_from_slice(&piece);
        Ok(())
    }

    async fn body_aborted(&mut self, _: &mut Connection<'_>, reason: AbortReason) {
        self.spool.clear();
        self.seen.lock().unwrap().aborted.push(reason);
    }

    async fn message(&mut self, _: &mut Connection<'_>, message: Message) -> HookResult {
        assert!(message.streamed && message.body.is_empty());
        let body = std::mem::take(&mut self.spool);
        assert_eq!(message.size, body.len() as u64);
        self.seen.lock().unwrap().stored.push(body);
        Ok(Decision::Accept)
    }
}

fn start() -> (common::Running, Arc<Mutex<Seen>>) {
    let handler = Spooler::default();
    let seen = handler.seen.clone();
    let mut config = config();
    config.body_delivery = BodyDelivery::Streamed { max_piece: 1024 };
    (
        serve(move |l| Server::new(handler).config(config).listener(l)),
        seen,
    )
}

fn body(marker: &str) -> String {
    let mut body = format!("Subject: {marker}\r\n\r\n");
    for n in 0..200 {
        body.push_str(&format!(
            "line {n} of a body long enough for several pieces\r\n"
        ));
    }
    body
}

#[test]
fn pieces_in_order_make_the_message_and_the_hook_gets_its_size() {
    let (running, seen) = start();
    let mut c = Client::greeted(running.addr);
    c.cmd("EHLO client.example");
    for marker in ["first", "second"] {
        c.cmd("MAIL FROM:<a@example.org>");
        c.cmd("RCPT TO:<b@example.net>");
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(body(marker));
        assert_eq!(c.cmd("."), "250 2.0.0 Message accepted\r\n");
    }
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.stored,
        vec![body("first").into_bytes(), body("second").into_bytes()]
    );
    assert!(seen.pieces >= 2 * 10, "{} pieces", seen.pieces);
    assert!(seen.aborted.is_empty());
}

#[test]
fn an_aborted_message_is_announced_and_a_failed_piece_fails_the_message() {
    let (running, seen) = start();
    let mut c = Client::greeted(running.addr);
    c.cmd("EHLO client.example");
    // RSET between BDAT chunks: the message is aborted.
    c.cmd("MAIL FROM:<a@example.org>");
    c.cmd("RCPT TO:<b@example.net>");
    c.send("BDAT 12\r\nSubject: x\r\n");
    assert!(c.reply().starts_with("250 2.0.0 "));
    assert_eq!(c.cmd("RSET"), "250 2.0.0 OK\r\n");
    // A piece the handler cannot store: 451, and the session goes on.
    c.cmd("MAIL FROM:<a@example.org>");
    c.cmd("RCPT TO:<b@example.net>");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(body("FAIL"));
    assert_eq!(
        c.cmd("."),
        "451 4.3.0 Temporary failure, please try again later\r\n"
    );
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK\r\n");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.aborted, vec![AbortReason::Reset]);
    assert!(seen.stored.is_empty());
}
