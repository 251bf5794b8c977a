//! Memory stays within the configured limits plus a constant, whatever the client sends, and
//! a slow sender costs linear work. Measured with a counting global allocator, per thread so
//! the tests of this file can run in parallel.

mod common;
use common::*;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use smtp_session::{BodyDelivery, Config, Decision, Hooks, Output, Session};

// ---------------------------------------------------------------------------------------
// The counting allocator

struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

thread_local! {
    /// Bytes currently allocated by this thread. Every test allocates and frees on its own
    /// thread, so counting per thread keeps parallel tests apart.
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// Bytes requested from the allocator, reallocations counted in full (an upper bound on
    /// what a reallocation copies).
    static REQUESTED: Cell<usize> = const { Cell::new(0) };
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let _ = CURRENT.try_with(|c| {
        let now = c.get() + bytes as isize;
        c.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
    let _ = REQUESTED.try_with(|r| r.set(r.get() + bytes));
    let _ = CALLS.try_with(|n| n.set(n.get() + 1));
}

fn shrank(bytes: usize) {
    let _ = CURRENT.try_with(|c| c.set(c.get() - bytes as isize));
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

/// Heap use of this thread from a baseline: the peak since then, and work counters.
struct Meter {
    base: isize,
    requested: usize,
    calls: usize,
}

impl Meter {
    fn start() -> Meter {
        let base = CURRENT.with(Cell::get);
        PEAK.with(|p| p.set(base));
        Meter {
            base,
            requested: REQUESTED.with(Cell::get),
            calls: CALLS.with(Cell::get),
        }
    }

    fn peak(&self) -> usize {
        (PEAK.with(Cell::get) - self.base).max(0) as usize
    }

    fn held(&self) -> isize {
        CURRENT.with(Cell::get) - self.base
    }

    fn requested(&self) -> usize {
        REQUESTED.with(Cell::get) - self.requested
    }

    fn calls(&self) -> usize {
        CALLS.with(Cell::get) - self.calls
    }
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const READ: usize = 64 * KIB;

/// Total hostile input per test. A gibibyte where the session skips input without parsing
/// it; less where every byte is parsed as commands, which is slow in a debug build (see
/// `COMMAND_FLOOD`).
const GIB: usize = 1024 * MIB;
/// Pipelined commands are parsed one by one, at roughly 2 MiB per second in a debug build;
/// 8 MiB of them (a quarter of a million commands) keeps each test within seconds while still
/// exceeding every limit by two orders of magnitude.
const COMMAND_FLOOD: usize = 8 * MIB;

/// A session driven directly, outputs dropped as soon as they are polled (as a runtime
/// that writes them out would).
struct Raw {
    session: Session,
    now: std::time::Instant,
    pending: Option<smtp_session::HookId>,
    closed: bool,
    /// The largest single write, to tell output buffering apart from input buffering.
    largest_write: usize,
    /// Streamed body bytes handed out (and dropped, as a runtime's spool writes them away).
    streamed: u64,
}

impl Raw {
    fn new(config: Config) -> Raw {
        let now = start();
        let mut raw = Raw {
            session: Session::new(config, info(), now),
            now,
            pending: None,
            closed: false,
            largest_write: 0,
            streamed: 0,
        };
        raw.drain();
        raw
    }

    /// Drains the outputs, and goes on with held input when `poll_timeout` says it is due
    /// already, as a runtime does.
    fn drain(&mut self) {
        for _ in 0..1_000_000 {
            match self.session.poll_output() {
                None => match self.session.poll_timeout() {
                    Some(due) if due <= self.now => self.session.handle_timeout(self.now).unwrap(),
                    _ => return,
                },
                Some(Output::Write(bytes)) => {
                    self.largest_write = self.largest_write.max(bytes.len())
                }
                Some(Output::Close) => self.closed = true,
                Some(Output::BodyPiece(piece)) => self.streamed += piece.len() as u64,
                Some(Output::HookCall(call)) => {
                    if call.needs_decision() {
                        self.pending = Some(call.id);
                    }
                }
                Some(other) => panic!("unexpected {other:?}"),
            }
        }
        panic!("outputs without end");
    }

    fn input(&mut self, bytes: &[u8]) -> usize {
        let taken = self.session.handle_input(bytes, self.now).unwrap();
        self.drain();
        taken
    }

    fn decide(&mut self, decision: Decision) {
        let id = self.pending.take().expect("a pending hook");
        self.session.decide(id, decision, self.now).unwrap();
        self.drain();
    }
}

fn in_transaction(config: Config) -> Raw {
    let mut raw = Raw::new(config);
    let head = b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n";
    assert_eq!(raw.input(head), head.len());
    raw
}

// ---------------------------------------------------------------------------------------
// Hostile input within bounds

#[test]
fn a_gibibyte_without_newline_costs_a_constant() {
    let mut raw = Raw::new(config());
    raw.input(b"EHLO c\r\n");
    let read = vec![b'A'; READ];
    let meter = Meter::start();
    for _ in 0..GIB / READ {
        assert_eq!(raw.input(&read), READ);
    }
    assert!(!raw.closed);
    let peak = meter.peak();
    let limit = raw.session.config().line_limit() + 16 * KIB;
    assert!(peak <= limit, "peak {peak} > {limit}");
    // The line is answered once its LF comes, and the session is fine.
    raw.largest_write = 0;
    raw.input(b"\r\nNOOP\r\n");
    assert!(raw.largest_write < 100, "one 500 and one 250");
}

#[test]
fn a_gibibyte_of_data_over_the_size_limit_stays_within_the_limit() {
    let max = 4 * MIB as u64;
    let config = Config {
        max_message_size: max,
        ..config()
    };
    let mut raw = in_transaction(config);
    raw.input(b"DATA\r\n");
    // Lines of RFC 5321's longest length, 1000 octets with CRLF.
    let mut read = Vec::with_capacity(READ);
    while read.len() < READ {
        read.extend_from_slice(&[b'x'; 998]);
        read.extend_from_slice(b"\r\n");
    }
    read.truncate(READ);
    let meter = Meter::start();
    let mut fed = 0;
    while fed < GIB {
        fed += raw.input(&read);
    }
    raw.input(b"\r\n.\r\n");
    assert!(
        raw.pending.is_none(),
        "an oversized message reaches no hook"
    );
    let peak = meter.peak();
    let limit = max as usize + raw.session.config().max_pending_input + 64 * KIB;
    assert!(peak <= limit, "peak {peak} > {limit}");
    assert!(meter.held() < 64 * KIB as isize, "the body was freed");
}

#[test]
fn bdat_chunks_up_to_the_size_limit_hold_no_more_than_the_limit() {
    // 1.5 MiB: a body growing by doubling would pass 1 MiB and jump to 2 MiB.
    let max = 3 * MIB / 2;
    let config = Config {
        max_message_size: max as u64,
        ..config()
    };
    let mut raw = in_transaction(config);
    // 64 KiB chunks: the body passes 1 MiB, where doubling would reserve 2 MiB.
    let chunk = vec![b'b'; 64 * KIB];
    let meter = Meter::start();
    let mut sent = 0;
    while sent + chunk.len() <= max {
        raw.input(format!("BDAT {}\r\n", chunk.len()).as_bytes());
        raw.input(&chunk);
        sent += chunk.len();
    }
    let peak = meter.peak();
    let limit = max + raw.session.config().max_pending_input + 64 * KIB;
    assert!(peak <= limit, "peak {peak} > {limit}");
    raw.input(b"BDAT 0 LAST\r\n");
    assert!(
        raw.pending.is_some(),
        "the message is complete and within the limit"
    );
}

#[test]
fn a_bdat_chunk_of_a_gibibyte_holds_no_more_than_the_size_limit() {
    let max = 3 * MIB / 2;
    let config = Config {
        max_message_size: max as u64,
        ..config()
    };
    let mut raw = in_transaction(config);
    raw.input(b"BDAT 18446744073709551615 LAST\r\n");
    let read = vec![b'.'; READ];
    let meter = Meter::start();
    for _ in 0..GIB / READ {
        assert_eq!(raw.input(&read), READ);
    }
    assert!(!raw.closed);
    let peak = meter.peak();
    let limit = max + raw.session.config().max_pending_input + 64 * KIB;
    assert!(peak <= limit, "peak {peak} > {limit}");
    assert!(
        meter.held() < 64 * KIB as isize,
        "the oversized body was dropped"
    );
}

#[test]
fn a_streamed_gibibyte_message_holds_only_the_input_and_output_limits() {
    let config = Config {
        max_message_size: 2 * GIB as u64,
        body_delivery: BodyDelivery::Streamed {
            max_piece: 64 * KIB,
        },
        ..config()
    };
    let limits = config.max_pending_input + config.max_pending_output;
    let mut raw = in_transaction(config);
    raw.input(b"DATA\r\n");
    let mut read = Vec::with_capacity(READ);
    while read.len() < READ {
        read.extend_from_slice(&[b'x'; 78]);
        read.extend_from_slice(b"\r\n");
    }
    read.truncate(READ - READ % 80);
    let meter = Meter::start();
    let mut fed = 0;
    while fed < GIB {
        fed += raw.input(&read);
    }
    raw.input(b".\r\n");
    let peak = meter.peak();
    // The largest read is in flight as one piece, besides what the limits allow.
    let limit = limits + READ + 4 * KIB;
    assert!(peak <= limit, "peak {peak} > {limit}");
    assert_eq!(raw.streamed, fed as u64, "every byte left as a piece");
    assert!(
        raw.pending.is_some(),
        "the message hook waits for the spool"
    );
    assert!(meter.held() < 4 * KIB as isize, "{}", meter.held());
}

#[test]
fn a_streamed_gibibyte_in_one_call_is_taken_only_as_far_as_the_outputs_allow() {
    let config = Config {
        max_message_size: 2 * GIB as u64,
        body_delivery: BodyDelivery::STREAMED,
        ..config()
    };
    let mut raw = in_transaction(config);
    raw.input(b"DATA\r\n");
    let flood = vec![b'y'; 64 * MIB];
    let meter = Meter::start();
    let taken = raw.session.handle_input(&flood, raw.now).unwrap();
    let queued = meter.held();
    assert!(
        taken < flood.len(),
        "a runtime that does not poll is pushed back"
    );
    // The output limit, the piece that crossed it, and the input held behind them.
    let c = raw.session.config();
    let bound = (c.max_pending_output + 64 * KIB + c.max_pending_input + 4 * KIB) as isize;
    assert!(queued <= bound, "held {queued} > {bound}");
    raw.drain();
    assert_eq!(raw.streamed, taken as u64);
}

#[test]
fn a_gibibyte_flood_while_a_hook_is_pending_is_pushed_back() {
    let config = Config {
        hooks: Hooks {
            mail_from: true,
            ..Hooks::NONE
        },
        ..config()
    };
    let mut raw = Raw::new(config);
    raw.input(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    assert!(raw.pending.is_some());
    let read = b"NOOP\r\n".repeat(READ / 6);
    let meter = Meter::start();
    let mut taken = 0;
    for _ in 0..GIB / read.len() {
        taken += raw.input(&read);
    }
    let limit = raw.session.config().max_pending_input;
    assert_eq!(
        taken, limit,
        "only max_pending_input is taken; the rest is reported back"
    );
    // The buffer itself, never a doubling past it.
    let peak = meter.peak();
    assert!(peak <= limit + 4 * KIB, "peak {peak} > {limit} + 4 KiB");
    // Decided, the buffered commands run and input is taken again.
    raw.decide(Decision::Accept);
    assert_eq!(raw.input(&read), read.len());
}

#[test]
fn endless_recipients_past_the_limit_hold_only_the_limit() {
    let config = Config {
        hard_error_limit: u32::MAX,
        ..config()
    };
    let mut raw = in_transaction(config);
    let mut read = Vec::new();
    let mut i = 0;
    while read.len() < READ - 100 {
        read.extend_from_slice(format!("RCPT TO:<recipient{i}@example.net>\r\n").as_bytes());
        i += 1;
    }
    let meter = Meter::start();
    let mut fed = 0;
    while fed < COMMAND_FLOOD {
        fed += raw.input(&read);
    }
    assert!(!raw.closed);
    let config = raw.session.config();
    assert_eq!(raw.session.envelope().unwrap().recipients.len(), 100);
    // The recipients themselves (each at most a command line), the input buffer, and the
    // replies to one read (which the runtime drains after each read).
    let limit = config.max_recipients * config.line_limit()
        + config.max_pending_input
        + 2 * raw.largest_write
        + 64 * KIB;
    let peak = meter.peak();
    assert!(peak <= limit, "peak {peak} > {limit}");
    // The replies to one read are bounded by the read: 452 replies are no longer than the
    // commands they answer.
    assert!(
        raw.largest_write <= 2 * read.len(),
        "largest write {}",
        raw.largest_write
    );
}

#[test]
fn a_pipelined_command_flood_without_hooks_holds_only_the_replies_to_one_read() {
    let mut raw = Raw::new(config());
    raw.input(b"EHLO c\r\n");
    let read = b"NOOP\r\nRSET\r\nHELP\r\nVRFY x\r\n".repeat(READ / 27);
    let meter = Meter::start();
    let mut fed = 0;
    while fed < COMMAND_FLOOD {
        fed += raw.input(&read);
    }
    assert!(!raw.closed);
    let peak = meter.peak();
    let limit = raw.session.config().max_pending_input + 2 * raw.largest_write + 64 * KIB;
    assert!(peak <= limit, "peak {peak} > {limit}");
    assert!(
        meter.held() < 16 * KIB as isize,
        "nothing accumulates between reads"
    );
}

// ---------------------------------------------------------------------------------------
// Linear work for a slow sender

/// Allocator work for feeding `input` one byte per read: (bytes requested, calls).
fn byte_at_a_time(raw: &mut Raw, input: &[u8]) -> (usize, usize) {
    let meter = Meter::start();
    for b in input {
        assert_eq!(raw.input(std::slice::from_ref(b)), 1);
    }
    (meter.requested(), meter.calls())
}

#[test]
fn a_long_command_line_byte_at_a_time_costs_linear_work() {
    let line = |n: usize| {
        let mut l = b"NOOP ".to_vec();
        l.resize(n - 2, b'n');
        l.extend_from_slice(b"\r\n");
        l
    };
    let mut short = Raw::new(config());
    let (bytes_n, calls_n) = byte_at_a_time(&mut short, &line(500));
    let mut long = Raw::new(config());
    let (bytes_2n, calls_2n) = byte_at_a_time(&mut long, &line(1000));
    assert!(
        bytes_2n * 10 <= bytes_n * 25,
        "allocated bytes grow faster than the input: {bytes_n} then {bytes_2n}"
    );
    assert!(
        calls_2n * 10 <= calls_n * 25,
        "allocations grow faster than the input: {calls_n} then {calls_2n}"
    );
    // Each byte must not cost its own allocation (a copy of the partial line per byte).
    assert!(
        calls_2n < 100,
        "{calls_2n} allocations for a 1000-byte line"
    );
}

#[test]
fn a_mebibyte_of_data_byte_at_a_time_costs_linear_work() {
    let body = |n: usize| {
        let mut b = Vec::with_capacity(n);
        while b.len() < n {
            b.extend_from_slice(b"a line of text in a slowly sent message.\r\n");
        }
        b.truncate(n);
        b
    };
    let mut work = Vec::new();
    for n in [MIB / 2, MIB] {
        let mut raw = in_transaction(config());
        raw.input(b"DATA\r\n");
        work.push(byte_at_a_time(&mut raw, &body(n)));
        raw.input(b"\r\n.\r\n");
        assert!(raw.pending.is_some(), "the message arrived");
    }
    let [(bytes_n, calls_n), (bytes_2n, calls_2n)] = work[..] else {
        unreachable!()
    };
    assert!(
        bytes_2n * 10 <= bytes_n * 25,
        "allocated bytes grow faster than the input: {bytes_n} then {bytes_2n}"
    );
    assert!(
        calls_2n * 10 <= calls_n * 25,
        "allocations grow faster than the input: {calls_n} then {calls_2n}"
    );
    assert!(calls_2n < 1000, "{calls_2n} allocations for a 1 MiB body");
}

#[test]
fn pipelined_commands_byte_at_a_time_cost_constant_work_per_command() {
    let script = |n: usize| b"NOOP\r\nRSET\r\n".repeat(n);
    let mut a = Raw::new(config());
    a.input(b"EHLO c\r\n");
    let (bytes_n, calls_n) = byte_at_a_time(&mut a, &script(1000));
    let mut b = Raw::new(config());
    b.input(b"EHLO c\r\n");
    let (bytes_2n, calls_2n) = byte_at_a_time(&mut b, &script(2000));
    assert!(bytes_2n * 10 <= bytes_n * 25, "{bytes_n} then {bytes_2n}");
    assert!(calls_2n * 10 <= calls_n * 25, "{calls_n} then {calls_2n}");
}

/// Replies to one read are held until polled, and nothing bounds them by `Config`: a read of
/// 64 KiB of `EHLO x` lines makes one write of about 1.2 MB (19 times the read). Bounding
/// them needs the session to stop parsing when its pending output is large and to resume
/// once it is polled, which changes the `handle_input` contract; left for the owners of
/// `session.rs`.
#[test]
fn the_replies_to_one_read_are_bounded_by_the_limits() {
    let mut raw = Raw::new(config());
    let read = b"EHLO x\r\n".repeat(READ / 8);
    let meter = Meter::start();
    raw.input(&read);
    let limit = raw.session.config().max_pending_input + 64 * KIB;
    assert!(
        raw.largest_write <= limit,
        "one write of {}",
        raw.largest_write
    );
    assert!(meter.peak() <= limit + READ, "peak {}", meter.peak());
}
