//! Benchmark 1: a 10 MiB body through DATA (and BDAT) in 16 KiB reads, against memcpy of
//! the same bytes, smtp-proto's receivers and mailin fed line by line.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use smtp_session::Hooks;
use smtp_session_bench::{
    bdat_wire, body, config, data_wire, in_data, streamed_config, with_envelope, READ_SIZE,
};

#[path = "../common/peers.rs"]
mod peers;

const BODY_SIZE: usize = 10 << 20;
const BDAT_CHUNK: usize = 16 * 1024;

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    bytes: usize,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g
}

fn data(c: &mut Criterion) {
    let body = body(BODY_SIZE);
    let wire = data_wire(&body);
    let now = Instant::now();
    let none = config(Hooks::NONE);
    let message = config(Hooks {
        message: true,
        ..Hooks::NONE
    });

    // Every contender must get the body right before it is timed.
    assert!(peers::memcpy_fresh(&wire, READ_SIZE) == wire);
    // smtp-proto counts the last CRLF as part of the terminator and does not store it.
    assert!(peers::proto_data(&wire, READ_SIZE) == body[..body.len() - 2]);
    let (mut s, mut rt) = in_data(&message, now);
    rt.feed(&mut s, &wire, READ_SIZE, now);
    assert_eq!((rt.messages, rt.body_bytes), (1, body.len()));
    let mut m = peers::Mailin::new();
    m.feed(b"HELO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n", READ_SIZE);
    m.feed(&wire, READ_SIZE);
    assert_eq!(m.counts.body_bytes.get(), body.len());

    let mut g = group(c, "data_10MiB", wire.len());
    g.bench_function("memcpy_fresh_vec", |b| {
        b.iter(|| peers::memcpy_fresh(black_box(&wire), READ_SIZE))
    });
    let mut out = Vec::with_capacity(wire.len());
    g.bench_function("memcpy_reused_vec", |b| {
        b.iter(|| peers::memcpy_into(black_box(&wire), READ_SIZE, &mut out))
    });
    let streamed = streamed_config();
    let (mut s, mut rt) = in_data(&streamed, now);
    rt.feed(&mut s, &wire, READ_SIZE, now);
    assert_eq!((rt.messages, rt.body_bytes), (1, body.len()));
    for (name, cfg) in [
        ("session_hooks_none", &none),
        ("session_message_hook", &message),
        ("session_streamed", &streamed),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || in_data(cfg, now),
                |(mut s, mut rt)| {
                    rt.feed(&mut s, black_box(&wire), READ_SIZE, now);
                    (s, rt)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.bench_function("smtp_proto_data_receiver", |b| {
        b.iter(|| peers::proto_data(black_box(&wire), READ_SIZE))
    });
    g.bench_function("mailin_lines", |b| {
        b.iter_batched(
            || {
                let mut m = peers::Mailin::new();
                m.feed(b"HELO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n", READ_SIZE);
                m
            },
            |mut m| {
                m.feed(black_box(&wire), READ_SIZE);
                m
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn bdat(c: &mut Criterion) {
    let body = body(BODY_SIZE);
    let wire = bdat_wire(&body, BDAT_CHUNK);
    let now = Instant::now();
    let none = config(Hooks::NONE);
    let message = config(Hooks {
        message: true,
        ..Hooks::NONE
    });

    let counted = peers::proto_stream(&wire, READ_SIZE);
    assert_eq!((counted.messages, counted.body_bytes), (1, body.len()));
    let (mut s, mut rt) = with_envelope(&message, now);
    rt.feed(&mut s, &wire, READ_SIZE, now);
    assert_eq!((rt.messages, rt.body_bytes), (1, body.len()));

    let mut g = group(c, "bdat_10MiB", wire.len());
    g.bench_function("memcpy_fresh_vec", |b| {
        b.iter(|| peers::memcpy_fresh(black_box(&wire), READ_SIZE))
    });
    let streamed = streamed_config();
    let (mut s, mut rt) = with_envelope(&streamed, now);
    rt.feed(&mut s, &wire, READ_SIZE, now);
    assert_eq!((rt.messages, rt.body_bytes), (1, body.len()));
    for (name, cfg) in [
        ("session_hooks_none", &none),
        ("session_message_hook", &message),
        ("session_streamed", &streamed),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || with_envelope(cfg, now),
                |(mut s, mut rt)| {
                    rt.feed(&mut s, black_box(&wire), READ_SIZE, now);
                    (s, rt)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.bench_function("smtp_proto_bdat_receiver", |b| {
        b.iter(|| peers::proto_stream(black_box(&wire), READ_SIZE))
    });
    g.finish();
}

criterion_group!(benches, data, bdat);
criterion_main!(benches);
