//! The memory targets, kept as regressions: an idle session fits in 1 KiB, and the number of
//! allocations per transaction does not depend on the body's size. Counted with a global
//! allocator, per thread, so the tests of this file can run in parallel.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Instant;

use smtp_session::{Hooks, Session};
use smtp_session_bench::{body, config, greeted, transaction_declared};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(allocs: usize, bytes: isize) {
    let _ = ALLOCS.try_with(|a| a.set(a.get() + allocs));
    let _ = LIVE.try_with(|l| l.set(l.get() + bytes));
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters change.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(1, layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, -(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(1, new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

fn live() -> isize {
    LIVE.with(Cell::get)
}

#[test]
fn an_idle_session_fits_in_a_kib() {
    let now = Instant::now();
    for hooks in [Hooks::NONE, Hooks::ALL] {
        let cfg = config(hooks);
        let before = live();
        let (mut s, mut rt) = greeted(&cfg, now);
        let size = std::mem::size_of::<Session>() as isize;
        let greeted = size + live() - before;
        rt.feed(&mut s, b"EHLO client.example\r\n", 16 * 1024, now);
        let after_ehlo = size + live() - before;
        assert!(greeted <= 1024, "after the greeting: {greeted} bytes");
        assert!(after_ehlo <= 1024, "after EHLO: {after_ehlo} bytes");
    }
}

/// Allocations for `n` transactions, each given to the session as two inputs, the envelope
/// up to DATA and then the body (a client waits for the 354 before sending it, RFC 2920),
/// and drained after each.
fn allocations(hooks: Hooks, body_len: usize, declare_size: bool, n: usize) -> usize {
    let now = Instant::now();
    let cfg = config(hooks);
    let body = body(body_len);
    let inputs: Vec<Vec<u8>> = (0..=n)
        .map(|i| transaction_declared(i, 5, &body, declare_size))
        .collect();
    let (mut s, mut rt) = greeted(&cfg, now);
    rt.feed(&mut s, b"EHLO client.example\r\n", usize::MAX, now);
    rt.feed(&mut s, &inputs[0], usize::MAX, now);
    let before = allocs();
    for input in &inputs[1..] {
        let body_at = input
            .windows(6)
            .position(|w| w == b"DATA\r\n")
            .expect("a DATA command")
            + 6;
        rt.feed(&mut s, &input[..body_at], usize::MAX, now);
        rt.feed(&mut s, &input[body_at..], usize::MAX, now);
    }
    assert!(!rt.closed);
    allocs() - before
}

#[test]
fn allocations_per_transaction_do_not_grow_with_the_body() {
    let message = Hooks {
        message: true,
        ..Hooks::NONE
    };
    // Without a message hook the body is not stored; with one, SIZE sizes it up front.
    for (hooks, declare) in [(Hooks::NONE, false), (message, true), (Hooks::ALL, true)] {
        // The steady state: what ten more transactions cost, so one-off growth of buffers
        // to their working size does not count.
        let per_ten =
            |len| allocations(hooks, len, declare, 20) - allocations(hooks, len, declare, 10);
        let (small, large) = (per_ten(1024), per_ten(100 * 1024));
        assert_eq!(small, large, "{hooks:?}: 1 KiB vs 100 KiB bodies");
    }
}
