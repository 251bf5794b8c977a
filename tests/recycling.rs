//! Buffers a runtime hands back (`Session::recycle_write`, `Session::recycle_hook`): they
//! are reused, and what the client receives and the hooks are given is the same as without
//! them.

mod common;
use common::*;
use smtp_session::{
    Config, Decision, Domain, ForwardPath, Hook, HookCall, Hooks, Mailbox, Output, ReversePath,
    Session,
};

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

/// Transactions whose paths and bodies differ in every way a kept buffer could carry over:
/// long and short local parts, quoted ones, address literals, the null sender,
/// `<postmaster>`, a body larger than the one before it and one smaller.
const VARIED: &[u8] = b"EHLO c\r\n\
MAIL FROM:<a-rather-long-local-part-of-sixty-characters-or-so.xxxxxxx@example.org>\r\n\
RCPT TO:<b@x.example>\r\nRCPT TO:<\"q u\\\"o\"@[192.0.2.1]>\r\nRCPT TO:<postmaster>\r\n\
DATA\r\nSubject: one\r\n\r\nshort\r\n.\r\n\
MAIL FROM:<>\r\nRCPT TO:<c@[IPv6:2001:db8::1]>\r\nRCPT TO:<d@y.example>\r\nDATA\r\n";

/// Everything the runtime sees, as text, with every hook accepted at once; with `recycle`
/// each call goes back to the session, before its decision or after it.
fn transcript(input: &[u8], recycle: Option<bool>) -> Vec<String> {
    let now = start();
    let config = Config {
        hooks: Hooks::ALL,
        ..config()
    };
    let mut s = Session::new(config, info(), now);
    let mut seen = Vec::new();
    let mut feed = |s: &mut Session, input: &[u8]| {
        assert_eq!(s.handle_input(input, now).unwrap(), input.len());
        for _ in 0..1000 {
            let Some(output) = s.poll_output() else {
                return;
            };
            seen.push(format!("{output:?}"));
            let Output::HookCall(call) = output else {
                continue;
            };
            if !call.needs_decision() {
                continue;
            }
            let id = call.id;
            match recycle {
                Some(true) => {
                    s.recycle_hook(call);
                    s.decide(id, Decision::Accept, now).unwrap();
                }
                Some(false) => {
                    s.decide(id, Decision::Accept, now).unwrap();
                    s.recycle_hook(call);
                }
                None => s.decide(id, Decision::Accept, now).unwrap(),
            }
        }
        panic!("the session produced outputs without end");
    };
    feed(&mut s, VARIED);
    // A body larger than the first one's buffer, then a small message again.
    let mut body = b"Subject: two\r\n\r\n".to_vec();
    for _ in 0..200 {
        body.extend_from_slice(
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n",
        );
    }
    body.extend_from_slice(
        b".\r\nMAIL FROM:<e@z.example>\r\nRCPT TO:<f@z.example>\r\nDATA\r\nthree\r\n.\r\n",
    );
    feed(&mut s, &body);
    feed(&mut s, input);
    seen
}

#[test]
fn hook_calls_handed_back_change_nothing_the_runtime_sees() {
    let plain = transcript(b"QUIT\r\n", None);
    assert!(plain.len() > 20, "{plain:#?}");
    assert!(plain.iter().any(|o| o.contains("q u\\\"o")), "{plain:#?}");
    assert_eq!(transcript(b"QUIT\r\n", Some(true)), plain);
    assert_eq!(transcript(b"QUIT\r\n", Some(false)), plain);
}

/// The address of every string buffer in a call, and of its body buffer.
fn buffers(call: &HookCall) -> (Vec<usize>, Option<usize>) {
    let mailbox = |m: &Mailbox| {
        let mut at = vec![m.local_part.as_ptr() as usize];
        if let Domain::Name(name) = &m.domain {
            at.push(name.as_ptr() as usize);
        }
        at
    };
    match &call.hook {
        Hook::MailFrom {
            path: ReversePath::Mailbox(m),
            ..
        }
        | Hook::RcptTo {
            path: ForwardPath::Mailbox(m),
            ..
        } => (mailbox(m), None),
        Hook::Message(message) => {
            let paths = message
                .envelope
                .recipients
                .iter()
                .filter_map(|r| match &r.path {
                    ForwardPath::Mailbox(m) => Some(mailbox(m)),
                    ForwardPath::Postmaster => None,
                });
            (
                paths.flatten().collect(),
                Some(message.body.as_ptr() as usize),
            )
        }
        _ => (Vec::new(), None),
    }
}

/// Within one drain, how many strings of later calls live in buffers of calls handed back
/// before, and whether the last message's body went into the one before's buffer. Calls
/// not handed back are kept alive, so no buffer of theirs can come back from the allocator.
fn reuse(recycle: bool) -> (usize, bool) {
    let now = start();
    let config = Config {
        hooks: Hooks::ALL,
        ..config()
    };
    let mut s = Session::new(config, info(), now);
    let input =
        b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\none\r\n.\r\n\
MAIL FROM:<c@x.example>\r\nRCPT TO:<d@x.example>\r\nRCPT TO:<e@x.example>\r\nDATA\r\ntwo\r\n.\r\n";
    s.handle_input(input, now).unwrap();
    let (mut handed_back, mut kept, mut bodies, mut reused) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..100 {
        let Some(output) = s.poll_output() else { break };
        let Output::HookCall(call) = output else {
            continue;
        };
        let (strings, body) = buffers(&call);
        reused += strings
            .iter()
            .filter(|at| handed_back.contains(*at))
            .count();
        bodies.extend(body);
        let id = call.id;
        if recycle {
            handed_back.extend(strings);
            handed_back.extend(body);
            s.recycle_hook(call);
        } else {
            kept.push(call);
        }
        s.decide(id, Decision::Accept, now).unwrap();
    }
    assert_eq!(bodies.len(), 2, "two messages");
    (reused, bodies[0] == bodies[1])
}

#[test]
fn a_hook_call_handed_back_lends_its_buffers_to_the_next_copies() {
    assert_eq!(reuse(false), (0, false));
    let (reused, same_body) = reuse(true);
    // The second transaction's paths (the parser's, in its envelope, and the hook copies)
    // are made in strings of the first one's calls.
    assert!(reused >= 6, "{reused} strings reused");
    assert!(
        same_body,
        "the second body went into the first one's buffer"
    );
}
