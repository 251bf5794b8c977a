//! Benchmark 3: memory. The struct size and heap of an idle session after the greeting and
//! after EHLO, and allocations per transaction for 1 KiB and 100 KiB bodies, measured with a
//! counting global allocator. Prints a table; `cargo bench --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use smtp_session::{Hooks, Session};
use smtp_session_bench::{body, config, greeted, transaction, Runtime, READ_SIZE};

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

/// Allocations (alloc + realloc calls) per transaction over a warm session.
fn session_allocs_per_tx(hooks: Hooks, body_len: usize) -> f64 {
    let now = Instant::now();
    let cfg = config(hooks);
    let body = body(body_len);
    let txs: Vec<Vec<u8>> = (0..TRANSACTIONS)
        .map(|i| transaction(i, 5, &body))
        .collect();
    let (mut s, mut rt) = greeted(&cfg, now);
    rt.feed(&mut s, b"EHLO client.example\r\n", READ_SIZE, now);
    // Warm up: buffers reach their steady size.
    rt.feed(&mut s, &txs[0], READ_SIZE, now);
    let mut stream = Vec::new();
    for tx in &txs[1..] {
        stream.extend_from_slice(tx);
    }
    let before = snapshot().0;
    rt.feed(&mut s, &stream, READ_SIZE, now);
    let allocs = snapshot().0 - before;
    assert!(!rt.closed);
    allocs as f64 / (TRANSACTIONS - 1) as f64
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
    println!(
        "size_of::<Session>() = {} bytes",
        std::mem::size_of::<Session>()
    );
    for (name, hooks) in [("hooks none", Hooks::NONE), ("hooks all", Hooks::ALL)] {
        let cfg = config(hooks);
        let live0 = snapshot().1;
        let (mut s, mut rt): (Session, Runtime) = greeted(&cfg, now);
        let after_greeting = snapshot().1 - live0;
        rt.feed(&mut s, b"EHLO client.example\r\n", READ_SIZE, now);
        let after_ehlo = snapshot().1 - live0;
        let size = std::mem::size_of::<Session>() as isize;
        println!(
            "idle session, {name}: after greeting {} heap + {size} struct = {} bytes; after EHLO {} heap + {size} = {} bytes",
            after_greeting,
            after_greeting + size,
            after_ehlo,
            after_ehlo + size
        );
        drop(s);
    }
    println!();
    println!("allocations per transaction (MAIL, 5 RCPT, DATA, RSET), {TRANSACTIONS} pipelined:");
    println!("{:<34} {:>10} {:>10}", "", "1 KiB", "100 KiB");
    for (name, hooks) in [
        ("session, hooks none", Hooks::NONE),
        (
            "session, message hook",
            Hooks {
                message: true,
                ..Hooks::NONE
            },
        ),
        ("session, hooks all", Hooks::ALL),
    ] {
        println!(
            "{name:<34} {:>10.1} {:>10.1}",
            session_allocs_per_tx(hooks, 1024),
            session_allocs_per_tx(hooks, 100 * 1024)
        );
    }
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "smtp-proto parser",
        proto_allocs_per_tx(1024),
        proto_allocs_per_tx(100 * 1024)
    );
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "mailin",
        mailin_allocs_per_tx(1024),
        mailin_allocs_per_tx(100 * 1024)
    );
}
