//! Benchmark 3: memory. The struct size and heap of an idle session after the greeting and
//! after EHLO, and allocations per transaction for 1 KiB and 100 KiB bodies, measured with a
//! counting global allocator. Prints a table; `cargo bench --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use smtp_session::{Config, Hooks, Session};
use smtp_session_bench::{
    body, config, greeted, streamed_config, transaction, transaction_declared, Runtime, READ_SIZE,
};

#[path = "../common/peers.rs"]
mod peers;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are
// only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn snapshot() -> (usize, isize) {
    (ALLOCS.load(Relaxed), LIVE.load(Relaxed))
}

const TRANSACTIONS: usize = 200;

/// Allocations (alloc + realloc calls) and reply writes per transaction over a warm session.
/// Each transaction comes as a client that pipelines sends it: the envelope up to DATA, then,
/// after the 354, the body and RSET; each in 16 KiB reads.
fn session_per_tx(cfg: Arc<Config>, body_len: usize, declare_size: bool) -> (f64, f64) {
    let now = Instant::now();
    let body = body(body_len);
    let txs: Vec<Vec<u8>> = (0..TRANSACTIONS)
        .map(|i| transaction_declared(i, 5, &body, declare_size))
        .collect();
    let (mut s, mut rt) = greeted(&cfg, now);
    rt.feed(&mut s, b"EHLO client.example\r\n", READ_SIZE, now);
    // Warm up: buffers reach their steady size.
    rt.feed(&mut s, &txs[0], READ_SIZE, now);
    let (before, writes) = (snapshot().0, rt.writes);
    for tx in &txs[1..] {
        let body_at = tx.windows(6).position(|w| w == b"DATA\r\n").expect("DATA") + 6;
        rt.feed(&mut s, &tx[..body_at], READ_SIZE, now);
        rt.feed(&mut s, &tx[body_at..], READ_SIZE, now);
    }
    let allocs = snapshot().0 - before;
    assert!(!rt.closed);
    let n = (TRANSACTIONS - 1) as f64;
    (allocs as f64 / n, (rt.writes - writes) as f64 / n)
}

fn proto_allocs_per_tx(body_len: usize) -> f64 {
    let body = body(body_len);
    let mut stream = b"EHLO client.example\r\n".to_vec();
    for i in 0..TRANSACTIONS {
        stream.extend_from_slice(&transaction(i, 5, &body));
    }
    let before = snapshot().0;
    let counted = peers::proto_stream(&stream, READ_SIZE);
    let allocs = snapshot().0 - before;
    assert_eq!(counted.messages, TRANSACTIONS);
    allocs as f64 / TRANSACTIONS as f64
}

fn mailin_allocs_per_tx(body_len: usize) -> f64 {
    let body = body(body_len);
    let mut m = peers::Mailin::new();
    m.feed(b"EHLO client.example\r\n", READ_SIZE);
    m.feed(&transaction(0, 5, &body), READ_SIZE);
    let mut stream = Vec::new();
    for i in 1..TRANSACTIONS {
        stream.extend_from_slice(&transaction(i, 5, &body));
    }
    let before = snapshot().0;
    m.feed(&stream, READ_SIZE);
    let allocs = snapshot().0 - before;
    assert_eq!(m.counts.messages.get(), TRANSACTIONS);
    allocs as f64 / (TRANSACTIONS - 1) as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let now = Instant::now();
    let size = std::mem::size_of::<Session>() as isize;
    println!("### Idle session (struct {size} bytes + heap; the shared Config not counted)\n");
    println!("| hooks | after greeting | after EHLO | after 200 pipelined transactions |");
    println!("|---|---:|---:|---:|");
    for (name, hooks) in [("none", Hooks::NONE), ("all", Hooks::ALL)] {
        let cfg = config(hooks);
        let body = body(1024);
        let stream: Vec<u8> = (0..TRANSACTIONS)
            .map(|i| transaction(i, 5, &body))
            .collect::<Vec<_>>()
            .concat();
        let live0 = snapshot().1;
        let (mut s, mut rt): (Session, Runtime) = greeted(&cfg, now);
        let greeting = snapshot().1 - live0;
        rt.feed(&mut s, b"EHLO client.example\r\n", READ_SIZE, now);
        let ehlo = snapshot().1 - live0;
        rt.feed(&mut s, &stream, READ_SIZE, now);
        let after = snapshot().1 - live0;
        println!(
            "| {name} | {} B ({size} + {greeting}) | {} B ({size} + {ehlo}) | {} B ({size} + {after}) |",
            size + greeting,
            size + ehlo,
            size + after
        );
        drop(s);
    }
    println!();
    println!(
        "### Allocations per transaction (MAIL, 5 RCPT, DATA, RSET; envelope, then body; {TRANSACTIONS} transactions)\n"
    );
    println!("| contender | 1 KiB body | 100 KiB body | reply writes per tx (1 KiB / 100 KiB) |");
    println!("|---|---:|---:|---:|");
    let message = Hooks {
        message: true,
        ..Hooks::NONE
    };
    for (name, cfg, declare) in [
        ("session, hooks none", config(Hooks::NONE), false),
        ("session, message hook", config(message), false),
        (
            "session, message hook, SIZE declared",
            config(message),
            true,
        ),
        ("session, message hook, streamed", streamed_config(), false),
        ("session, hooks all", config(Hooks::ALL), false),
        (
            "session, hooks all, SIZE declared",
            config(Hooks::ALL),
            true,
        ),
    ] {
        let (small, small_writes) = session_per_tx(cfg.clone(), 1024, declare);
        let (large, large_writes) = session_per_tx(cfg, 100 * 1024, declare);
        println!("| {name} | {small:.1} | {large:.1} | {small_writes:.2} / {large_writes:.2} |");
    }
    println!(
        "| smtp-proto parser alone | {:.1} | {:.1} | - |",
        proto_allocs_per_tx(1024),
        proto_allocs_per_tx(100 * 1024)
    );
    println!(
        "| mailin, line by line | {:.1} | {:.1} | - |",
        mailin_allocs_per_tx(1024),
        mailin_allocs_per_tx(100 * 1024)
    );
}
