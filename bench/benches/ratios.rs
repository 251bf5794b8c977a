//! The headline figures: the contenders of a benchmark run in turn, once each per round, so a
//! load change on a shared machine hits all of them alike; the table gives each one's median
//! over the rounds and its speed relative to the references, all from this one run.
//!
//! `cargo bench -p smtp-session-bench --bench ratios` (about a minute); `-- DATA` (or any part
//! of a bench's name) runs only the benches whose name holds it. The criterion benches
//! `data_ingest` and `command_stream` time the same closures with confidence intervals.

use std::hint::black_box;
use std::time::{Duration, Instant};

use smtp_session::Hooks;
use smtp_session_bench::milter::milter_messages;
use smtp_session_bench::{
    bdat_wire, body, command_stream, config, data_wire, greeted, in_data, streamed_config,
    transaction, with_envelope, READ_SIZE,
};

#[path = "../common/peers.rs"]
mod peers;

/// One contender: runs the workload once, its setup untimed, and returns the timed part.
type Run<'a> = Box<dyn FnMut() -> Duration + 'a>;

/// What a benchmark's work amounts to, for the throughput column.
enum Unit {
    Bytes(usize),
    Transactions(usize),
}

struct Bench<'a> {
    name: &'static str,
    unit: Unit,
    rounds: usize,
    contenders: Vec<(&'static str, Run<'a>)>,
    /// Contenders the others are compared with: the ratio is their time over the other's,
    /// so above 1 means faster than the reference.
    references: &'static [&'static str],
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

fn run(mut bench: Bench<'_>) {
    // `cargo bench --bench ratios -- DATA` runs only the benches whose name holds "DATA".
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| bench.name.contains(f.as_str())) {
        return;
    }
    // One untimed round to warm caches, page in the inputs and grow the allocator's pools.
    for (_, f) in &mut bench.contenders {
        f();
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); bench.contenders.len()];
    for _ in 0..bench.rounds {
        for (i, (_, f)) in bench.contenders.iter_mut().enumerate() {
            samples[i].push(f());
        }
    }
    let medians: Vec<(&str, Duration)> = bench
        .contenders
        .iter()
        .zip(samples)
        .map(|((name, _), s)| (*name, median(s)))
        .collect();
    let time_of = |name: &str| {
        medians
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .expect("a reference is a contender")
    };
    print!(
        "\n### {} ({} rounds)\n\n| contender | median | throughput |",
        bench.name, bench.rounds
    );
    for r in bench.references {
        print!(" vs {r} |");
    }
    print!("\n|---|---:|---:|");
    for _ in bench.references {
        print!("---:|");
    }
    println!();
    for (name, t) in &medians {
        let secs = t.as_secs_f64();
        let throughput = match bench.unit {
            Unit::Bytes(n) => format!("{:.0} MiB/s", n as f64 / secs / (1 << 20) as f64),
            Unit::Transactions(n) => format!("{:.0} tx/s", n as f64 / secs),
        };
        print!("| {name} | {:.3} ms | {throughput} |", secs * 1e3);
        for r in bench.references {
            print!(" {:.2}x |", time_of(r).as_secs_f64() / secs);
        }
        println!();
    }
}

/// Times `work`; what it returns is dropped after the clock stops. Contenders that own a
/// message body free it inside `work`, as the session's runtime does.
fn timed<T>(work: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = work();
    (start.elapsed(), out)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let now = Instant::now();
    let none = config(Hooks::NONE);
    let message = config(Hooks {
        message: true,
        ..Hooks::NONE
    });
    let all = config(Hooks::ALL);

    let streamed = streamed_config();

    let big = body(10 << 20);
    let wire = data_wire(&big);
    let mut reused = Vec::with_capacity(wire.len());
    let envelope = b"HELO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n";
    run(Bench {
        name: "DATA, 10 MiB body in 16 KiB reads",
        unit: Unit::Bytes(wire.len()),
        rounds: 31,
        references: &[
            "memcpy (fresh Vec)",
            "memcpy (reused Vec)",
            "smtp-proto DataReceiver",
        ],
        contenders: vec![
            (
                "memcpy (fresh Vec)",
                Box::new(|| timed(|| drop(peers::memcpy_fresh(black_box(&wire), READ_SIZE))).0),
            ),
            (
                "memcpy (reused Vec)",
                Box::new(|| {
                    timed(|| peers::memcpy_into(black_box(&wire), READ_SIZE, &mut reused)).0
                }),
            ),
            (
                "session, message hook (stores)",
                Box::new(|| {
                    let (mut s, mut rt) = in_data(&message, now);
                    timed(|| rt.feed(&mut s, black_box(&wire), READ_SIZE, now)).0
                }),
            ),
            (
                "session, streamed (pieces out)",
                Box::new(|| {
                    let (mut s, mut rt) = in_data(&streamed, now);
                    timed(|| rt.feed(&mut s, black_box(&wire), READ_SIZE, now)).0
                }),
            ),
            (
                "session, hooks none (discards)",
                Box::new(|| {
                    let (mut s, mut rt) = in_data(&none, now);
                    timed(|| rt.feed(&mut s, black_box(&wire), READ_SIZE, now)).0
                }),
            ),
            (
                "smtp-proto DataReceiver",
                Box::new(|| timed(|| drop(peers::proto_data(black_box(&wire), READ_SIZE))).0),
            ),
            (
                "mailin, line by line",
                Box::new(|| {
                    let mut m = peers::Mailin::new();
                    m.feed(envelope, READ_SIZE);
                    timed(|| m.feed(black_box(&wire), READ_SIZE)).0
                }),
            ),
        ],
    });
    drop(reused);

    let chunks = bdat_wire(&big, 16 * 1024);
    let mut reused = Vec::with_capacity(chunks.len());
    run(Bench {
        name: "BDAT, 10 MiB body in 16 KiB chunks and 16 KiB reads",
        unit: Unit::Bytes(chunks.len()),
        rounds: 31,
        references: &[
            "memcpy (fresh Vec)",
            "memcpy (reused Vec)",
            "smtp-proto BdatReceiver",
        ],
        contenders: vec![
            (
                "memcpy (fresh Vec)",
                Box::new(|| timed(|| drop(peers::memcpy_fresh(black_box(&chunks), READ_SIZE))).0),
            ),
            (
                "memcpy (reused Vec)",
                Box::new(|| {
                    timed(|| peers::memcpy_into(black_box(&chunks), READ_SIZE, &mut reused)).0
                }),
            ),
            (
                "session, message hook (stores)",
                Box::new(|| {
                    let (mut s, mut rt) = with_envelope(&message, now);
                    timed(|| rt.feed(&mut s, black_box(&chunks), READ_SIZE, now)).0
                }),
            ),
            (
                "session, streamed (pieces out)",
                Box::new(|| {
                    let (mut s, mut rt) = with_envelope(&streamed, now);
                    timed(|| rt.feed(&mut s, black_box(&chunks), READ_SIZE, now)).0
                }),
            ),
            (
                "session, hooks none (discards)",
                Box::new(|| {
                    let (mut s, mut rt) = with_envelope(&none, now);
                    timed(|| rt.feed(&mut s, black_box(&chunks), READ_SIZE, now)).0
                }),
            ),
            (
                "smtp-proto BdatReceiver",
                Box::new(|| timed(|| peers::proto_stream(black_box(&chunks), READ_SIZE)).0),
            ),
        ],
    });
    drop((big, wire, chunks, reused));

    const TRANSACTIONS: usize = 10_000;
    let stream = command_stream(TRANSACTIONS, &body(1024));
    run(Bench {
        name: "Command stream, 10,000 pipelined transactions (MAIL, 5 RCPT, DATA 1 KiB, RSET)",
        unit: Unit::Transactions(TRANSACTIONS),
        rounds: 15,
        references: &["smtp-proto parser alone"],
        contenders: vec![
            (
                "session, hooks none",
                Box::new(|| {
                    timed(|| {
                        let (mut s, mut rt) = greeted(&none, now);
                        rt.feed(&mut s, black_box(&stream), READ_SIZE, now);
                        (s, rt)
                    })
                    .0
                }),
            ),
            (
                "session, hooks all (answered at once)",
                Box::new(|| {
                    timed(|| {
                        let (mut s, mut rt) = greeted(&all, now);
                        rt.feed(&mut s, black_box(&stream), READ_SIZE, now);
                        (s, rt)
                    })
                    .0
                }),
            ),
            (
                "smtp-proto parser alone",
                Box::new(|| timed(|| peers::proto_stream(black_box(&stream), READ_SIZE)).0),
            ),
            (
                "mailin, line by line",
                Box::new(|| {
                    timed(|| {
                        let mut m = peers::Mailin::new();
                        m.feed(black_box(&stream), READ_SIZE);
                        m
                    })
                    .0
                }),
            ),
        ],
    });

    drop(stream);

    const MESSAGES: usize = 2_000;
    let small = body(4096);
    let mut stream = b"EHLO client.example\r\n".to_vec();
    for i in 0..MESSAGES {
        stream.extend_from_slice(&transaction(i, 1, &small));
    }
    stream.extend_from_slice(b"QUIT\r\n");
    run(Bench {
        name: "Milter, 2,000 messages of 4 KiB (1 RCPT, 4 header fields), no-op filter in-process",
        unit: Unit::Transactions(MESSAGES),
        rounds: 15,
        references: &["session alone, message hook"],
        contenders: vec![
            (
                "session alone, message hook",
                Box::new(|| {
                    timed(|| {
                        let (mut s, mut rt) = greeted(&message, now);
                        rt.feed(&mut s, black_box(&stream), READ_SIZE, now);
                        (s, rt)
                    })
                    .0
                }),
            ),
            (
                "session and milter client, every step answered",
                Box::new(|| {
                    timed(|| {
                        let (mut s, mut rt) = greeted(&message, now);
                        rt.feed(&mut s, black_box(&stream), READ_SIZE, now);
                        let written = milter_messages(MESSAGES, black_box(&small));
                        (s, rt, written)
                    })
                    .0
                }),
            ),
            (
                "milter client alone",
                Box::new(|| timed(|| milter_messages(MESSAGES, black_box(&small))).0),
            ),
        ],
    });
}
