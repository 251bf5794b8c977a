//! Buffers a runtime hands back (`Session::recycle_write`): they are reused, and what the
//! client receives is byte for byte the same as without them.

mod common;
use common::*;
use smtp_session::{Config, Decision, Hooks, Output, Session};

const PIPELINED: &[u8] = b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n\
RCPT TO:<c@example.net>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nRSET\r\n\
MAIL FROM:<d@example.org>\r\nRCPT TO:<e@example.net>\r\nRSET\r\nQUIT\r\n";

/// What the client receives, every write in order, with every hook accepted at once; with
/// `recycle`, each write's buffer goes back to the session once sent. Also returns how many
/// writes came in the buffer of the write before them: a buffer still alive (handed back,
/// or kept here) cannot be a new allocation's.
fn run(recycle: bool) -> (Vec<Vec<u8>>, usize) {
    let now = start();
    let config = Config {
        hooks: Hooks::ALL,
        ..config()
    };
    let mut s = Session::new(config, info(), now);
    let mut rt = Recorder {
        recycle,
        ..Recorder::default()
    };
    rt.drain(&mut s);
    rt.previous = None;
    assert_eq!(s.handle_input(PIPELINED, now).unwrap(), PIPELINED.len());
    rt.drain(&mut s);
    assert!(s.is_closed());
    (rt.writes, rt.reused)
}

#[derive(Default)]
struct Recorder {
    recycle: bool,
    writes: Vec<Vec<u8>>,
    kept: Vec<Vec<u8>>,
    previous: Option<*const u8>,
    reused: usize,
}

impl Recorder {
    fn drain(&mut self, s: &mut Session) {
        for _ in 0..1000 {
            match s.poll_output() {
                None => return,
                Some(Output::Write(bytes)) => {
                    if self.previous == Some(bytes.as_ptr()) {
                        self.reused += 1;
                    }
                    self.previous = Some(bytes.as_ptr());
                    self.writes.push(bytes.clone());
                    if self.recycle {
                        s.recycle_write(bytes);
                    } else {
                        self.kept.push(bytes);
                    }
                }
                Some(Output::HookCall(call)) if call.needs_decision() => {
                    s.decide(call.id, Decision::Accept, start()).unwrap();
                }
                Some(_) => {}
            }
        }
        panic!("the session produced outputs without end");
    }
}

#[test]
fn a_recycled_write_buffer_carries_the_next_replies_and_the_bytes_are_the_same() {
    let (plain, none_reused) = run(false);
    let (recycled, reused) = run(true);
    assert_eq!(none_reused, 0);
    // Each hook call flushes the replies before it: the greeting; EHLO; MAIL; RCPT; RCPT;
    // DATA's 354; the message's 250 with RSET's; MAIL; then RCPT, RSET and QUIT together.
    assert_eq!(plain.len(), 9, "{plain:?}");
    assert_eq!(recycled, plain, "the same writes, in the same order");
    // The greeting's drain ends before the input comes, which drops the spare buffer, and
    // each drain's first write has no buffer to reuse: every later one reuses.
    assert_eq!(reused, plain.len() - 2);
    let text = String::from_utf8(plain.concat()).unwrap();
    assert!(
        text.ends_with("250 2.0.0 OK\r\n221 2.0.0 Bye\r\n"),
        "{text}"
    );
}

#[test]
fn a_write_buffer_handed_back_after_the_close_or_too_large_is_dropped() {
    let now = start();
    let mut s = Session::new(config(), info(), now);
    while s.poll_output().is_some() {}
    // Larger than the session keeps: not reused.
    let big = Vec::with_capacity(64 << 10);
    let big_at = big.as_ptr();
    s.recycle_write(big);
    s.handle_input(b"NOOP\r\n", now).unwrap();
    let Some(Output::Write(bytes)) = s.poll_output() else {
        panic!("a write")
    };
    assert_ne!(bytes.as_ptr(), big_at);
    assert_eq!(bytes, b"250 2.0.0 OK\r\n");
    s.handle_input(b"QUIT\r\n", now).unwrap();
    while s.poll_output().is_some() {}
    assert!(s.is_closed());
    // After the close it changes nothing, and is no misuse.
    s.recycle_write(bytes);
    assert!(s.poll_output().is_none());
}
