//! Inputs and the `smtp-session` runtime shared by the benchmarks of this crate.
//!
//! Every contender gets the same bytes: the generators here build them once, and the benches
//! hand slices of them out in reads of [`READ_SIZE`] bytes, as a socket loop would. The peers'
//! drivers live in `common/peers.rs` so that `smtp-proto` and `mailin` stay dev-dependencies.

use std::sync::Arc;
use std::time::Instant;

use smtp_session::{BodyDelivery, Config, ConnectionInfo, Decision, Hook, Hooks, Output, Session};
use smtp_session_testkit::drive::{self, Then};

pub mod milter;

/// How many bytes one read from the socket delivers.
pub const READ_SIZE: usize = 16 * 1024;

/// Length of a body line, CRLF excluded.
pub const LINE_LEN: usize = 78;

/// The client's greeting and envelope before a message body.
pub const ENVELOPE: &[u8] =
    b"EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<rcpt@example.net>\r\n";

/// A message body of about `target` bytes: a few headers, then 78-byte lines of words, one
/// line in seven starting with a dot (one in fourteen with `...`), every line ending in CRLF.
/// Returned as it is stored (unstuffed).
pub fn body(target: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "message",
        "server",
        "of",
        "delivery",
        "queue",
        "and",
        "mail",
        "relay",
        "to",
        "a",
        "transfer",
        "agent",
        "envelope",
        "recipient",
        "sender",
        "header",
        "body",
        "line",
        "protocol",
        "in",
        "is",
        "for",
        "with",
        "SMTP",
        "client",
        "reply",
        "code",
        "status",
    ];
    let mut out = Vec::with_capacity(target + LINE_LEN + 2);
    out.extend_from_slice(
        b"From: Sender <sender@example.org>\r\nTo: Recipient <rcpt@example.net>\r\n\
          Subject: benchmark message\r\nMessage-ID: <bench@example.org>\r\n\r\n",
    );
    let mut seed: u32 = 0x1234_5678;
    let mut n = 0usize;
    while out.len() + LINE_LEN + 2 <= target.max(LINE_LEN + 2) {
        let start = out.len();
        match n % 14 {
            0 => out.push(b'.'),
            7 => out.extend_from_slice(b"..."),
            _ => {}
        }
        while out.len() - start < LINE_LEN {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let word = WORDS[(seed >> 16) as usize % WORDS.len()].as_bytes();
            if out.len() > start {
                out.push(b' ');
            }
            out.extend_from_slice(word);
        }
        out.truncate(start + LINE_LEN);
        out.extend_from_slice(b"\r\n");
        n += 1;
    }
    out
}

/// The body as DATA sends it: dot-stuffed, then `.CRLF`.
pub fn data_wire(body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(body.len() + body.len() / 64 + 3);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

/// The body as BDAT sends it: `BDAT <chunk>` commands, the last one `LAST`, each followed
/// by its bytes.
pub fn bdat_wire(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut wire = Vec::with_capacity(body.len() + body.len() / chunk * 20 + 32);
    let chunks: Vec<&[u8]> = body.chunks(chunk).collect();
    for (i, piece) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
        wire.extend_from_slice(format!("BDAT {}{}\r\n", piece.len(), last).as_bytes());
        wire.extend_from_slice(piece);
    }
    if chunks.is_empty() {
        wire.extend_from_slice(b"BDAT 0 LAST\r\n");
    }
    wire
}

/// One pipelined transaction: MAIL, `rcpts` RCPT, DATA with the stuffed body, RSET.
pub fn transaction(index: usize, rcpts: usize, body: &[u8]) -> Vec<u8> {
    transaction_declared(index, rcpts, body, false)
}

/// [`transaction`], with the body's size declared by `SIZE=` on MAIL when `declare` is true,
/// as MTAs do when the server offers SIZE.
pub fn transaction_declared(index: usize, rcpts: usize, body: &[u8], declare: bool) -> Vec<u8> {
    let size = if declare {
        format!(" SIZE={}", body.len())
    } else {
        String::new()
    };
    let mut t = format!("MAIL FROM:<sender{index}@example.org>{size}\r\n").into_bytes();
    for r in 0..rcpts {
        t.extend_from_slice(format!("RCPT TO:<rcpt{r}.{index}@example.net>\r\n").as_bytes());
    }
    t.extend_from_slice(b"DATA\r\n");
    t.extend_from_slice(&data_wire(body));
    t.extend_from_slice(b"RSET\r\n");
    t
}

/// A whole connection's input: EHLO, `count` transactions of 5 recipients and `body`, QUIT.
pub fn command_stream(count: usize, body: &[u8]) -> Vec<u8> {
    let mut s = b"EHLO client.example\r\n".to_vec();
    for i in 0..count {
        s.extend_from_slice(&transaction(i, 5, body));
    }
    s.extend_from_slice(b"QUIT\r\n");
    s
}

/// The message hook with bodies streamed in pieces of at most 64 KiB: the runtime writes each
/// piece away (here: drops it) and the session holds no message.
pub fn streamed_config() -> Arc<Config> {
    Arc::new(Config {
        hostname: "mx.example".into(),
        hooks: Hooks {
            message: true,
            ..Hooks::NONE
        },
        body_delivery: BodyDelivery::STREAMED,
        ..Config::default()
    })
}

/// A shared configuration with the given hooks subscribed, everything else default.
pub fn config(hooks: Hooks) -> Arc<Config> {
    Arc::new(Config {
        hostname: "mx.example".into(),
        hooks,
        ..Config::default()
    })
}

/// What the runtime saw while draining a session: a stand-in for the socket and the store.
///
/// It runs the session with the test kit's driver, like the tests and the fuzz targets, and
/// only counts: nothing is recorded or copied.
#[derive(Debug, Default)]
pub struct Runtime {
    /// Reply bytes "written to the socket".
    pub written: usize,
    /// `Output::Write`s, each one buffer handed over by the session.
    pub writes: usize,
    /// Messages handed over by the message hook.
    pub messages: usize,
    /// Body bytes handed over by the message hook, or in pieces when streamed.
    pub body_bytes: usize,
    /// Streamed pieces handed over.
    pub pieces: usize,
    /// Hook calls answered.
    pub hooks: usize,
    /// True once the session closed.
    pub closed: bool,
    /// When set, the streamed pieces are kept here, in order (for the tests that check the
    /// contenders agree); the benches leave it off.
    pub spool: Option<Vec<u8>>,
}

impl Runtime {
    /// Drains the session's outputs, answering every hook at once with `Accept`, the way a
    /// runtime whose policy is synchronous would.
    pub fn drain(&mut self, session: &mut Session, now: Instant) {
        drive::drain(&mut Connection::new(session, self, now));
    }

    /// Feeds `input` in reads of `read` bytes, draining after each; with every hook answered
    /// at once, the session takes every byte.
    pub fn feed(&mut self, session: &mut Session, input: &[u8], read: usize, now: Instant) {
        let mut connection = Connection::new(session, self, now);
        for chunk in input.chunks(read) {
            drive::feed(&mut connection, chunk);
            assert!(
                connection.backlog.is_empty() || connection.session.is_closed(),
                "the session makes progress"
            );
        }
    }
}

/// A session and its runtime for the length of one call.
struct Connection<'a> {
    session: &'a mut Session,
    counts: &'a mut Runtime,
    now: Instant,
    backlog: Vec<u8>,
}

impl<'a> Connection<'a> {
    fn new(session: &'a mut Session, counts: &'a mut Runtime, now: Instant) -> Self {
        Connection {
            session,
            counts,
            now,
            backlog: Vec::new(),
        }
    }
}

impl drive::Runtime for Connection<'_> {
    fn session(&mut self) -> &mut Session {
        self.session
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn backlog(&mut self) -> &mut Vec<u8> {
        &mut self.backlog
    }

    // Inlined into the driver's loop, the output is matched where it was polled instead of
    // being copied (160 bytes for a hook call) into this call.
    #[inline]
    fn output(&mut self, output: Output) -> Then {
        let counts = &mut *self.counts;
        match output {
            // A runtime sends the bytes, then gives the buffer back for the next replies.
            Output::Write(bytes) => {
                counts.writes += 1;
                counts.written += bytes.len();
                self.session.recycle_write(bytes);
            }
            Output::Close => counts.closed = true,
            // A runtime writes the piece to its spool; here it is freed at once.
            Output::BodyPiece(piece) => {
                counts.pieces += 1;
                counts.body_bytes += piece.len();
                if let Some(spool) = &mut counts.spool {
                    spool.extend_from_slice(&piece);
                }
                self.session.recycle_piece(piece);
            }
            Output::HookCall(call) => {
                match &call.hook {
                    Hook::Disconnect(_) => return Then::Next,
                    Hook::Message(message) => {
                        counts.messages += 1;
                        counts.body_bytes += message.body.len();
                    }
                    _ => {}
                }
                counts.hooks += 1;
                // The policy has read the call: its buffers go back for the next copies.
                let id = call.id;
                self.session.recycle_hook(call);
                return Then::Decide(id, Decision::Accept);
            }
            _ => {}
        }
        Then::Next
    }
}

/// A new session, greeted and drained.
pub fn greeted(config: &Arc<Config>, now: Instant) -> (Session, Runtime) {
    let mut session = Session::new(Arc::clone(config), ConnectionInfo::default(), now);
    let mut rt = Runtime::default();
    rt.drain(&mut session, now);
    (session, rt)
}

/// A session that answered EHLO, MAIL and RCPT and is ready for `DATA` (or `BDAT`).
pub fn with_envelope(config: &Arc<Config>, now: Instant) -> (Session, Runtime) {
    let (mut session, mut rt) = greeted(config, now);
    rt.feed(&mut session, ENVELOPE, READ_SIZE, now);
    (session, rt)
}

/// A session in the DATA state: envelope built and 354 sent.
pub fn in_data(config: &Arc<Config>, now: Instant) -> (Session, Runtime) {
    let (mut session, mut rt) = with_envelope(config, now);
    rt.feed(&mut session, b"DATA\r\n", READ_SIZE, now);
    (session, rt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_long_lines_and_dots() {
        let b = body(100_000);
        assert!(b.len() <= 100_000 && b.len() > 99_000);
        let lines: Vec<&[u8]> = b.split_inclusive(|&c| c == b'\n').skip(5).collect();
        assert!(lines
            .iter()
            .all(|l| l.len() == LINE_LEN + 2 && l.ends_with(b"\r\n")));
        assert!(lines.iter().filter(|l| l[0] == b'.').count() > lines.len() / 10);
    }

    #[test]
    fn session_stores_what_was_sent() {
        let now = Instant::now();
        let b = body(50_000);
        for hooks in [Hooks::NONE, Hooks::ALL] {
            let cfg = config(hooks);
            let (mut s, mut rt) = in_data(&cfg, now);
            rt.feed(&mut s, &data_wire(&b), 1000, now);
            let (mut s2, mut rt2) = with_envelope(&cfg, now);
            rt2.feed(&mut s2, &bdat_wire(&b, 4096), 1000, now);
            if hooks.message {
                assert_eq!((rt.messages, rt.body_bytes), (1, b.len()));
                assert_eq!((rt2.messages, rt2.body_bytes), (1, b.len()));
            }
        }
    }
}
