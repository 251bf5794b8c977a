//! Benchmark 2: 10,000 pipelined transactions (MAIL, 5 RCPT, DATA with a 1 KiB body, RSET)
//! in 16 KiB reads, against smtp-proto's request parser alone and mailin.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smtp_session::Hooks;
use smtp_session_bench::{body, command_stream, config, greeted, READ_SIZE};

#[path = "../common/peers.rs"]
mod peers;

const TRANSACTIONS: usize = 10_000;

fn commands(c: &mut Criterion) {
    let body = body(1024);
    let stream = command_stream(TRANSACTIONS, &body);
    let now = Instant::now();
    let none = config(Hooks::NONE);
    let all = config(Hooks::ALL);

    let counted = peers::proto_stream(&stream, READ_SIZE);
    assert_eq!(counted.messages, TRANSACTIONS);
    assert_eq!(counted.commands, 1 + TRANSACTIONS * 8 + 1);
    for cfg in [&none, &all] {
        let (mut s, mut rt) = greeted(cfg, now);
        rt.feed(&mut s, &stream, READ_SIZE, now);
        assert!(rt.closed);
        if cfg.hooks.message {
            assert_eq!(
                (rt.messages, rt.body_bytes),
                (TRANSACTIONS, TRANSACTIONS * body.len())
            );
            // connect, helo, and per transaction mail, 5 rcpt, data, message
            assert_eq!(rt.hooks, 2 + TRANSACTIONS * 8);
        }
    }
    let mut m = peers::Mailin::new();
    m.feed(&stream, READ_SIZE);
    assert_eq!(m.counts.messages.get(), TRANSACTIONS);

    let mut g = c.benchmark_group("commands_10k_tx");
    g.throughput(Throughput::Elements(TRANSACTIONS as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    for (name, cfg) in [("session_hooks_none", &none), ("session_hooks_all", &all)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let (mut s, mut rt) = greeted(cfg, now);
                rt.feed(&mut s, black_box(&stream), READ_SIZE, now);
                (s, rt)
            })
        });
    }
    g.bench_function("smtp_proto_parser", |b| {
        b.iter(|| peers::proto_stream(black_box(&stream), READ_SIZE))
    });
    g.bench_function("mailin_lines", |b| {
        b.iter(|| {
            let mut m = peers::Mailin::new();
            m.feed(black_box(&stream), READ_SIZE);
            m
        })
    });
    g.finish();
}

criterion_group!(benches, commands);
criterion_main!(benches);
