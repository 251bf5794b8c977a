//! One workload, once, for a profiler: `valgrind --tool=callgrind <binary> <workload>`.
//!
//! Workloads: `commands-none`, `commands-all` (1,000 transactions of the command stream),
//! `data-none`, `data-message`, `data-streamed` (a 10 MiB body through DATA),
//! `bdat-message`, `bdat-streamed`;
//! `tx-none|tx-message|tx-all [body bytes] [count]`; and the peers' `proto-commands`,
//! `proto-data`.

use std::time::Instant;

use smtp_session::Hooks;
use smtp_session_bench::{
    bdat_wire, body, command_stream, config, data_wire, greeted, in_data, streamed_config,
    with_envelope, READ_SIZE,
};

#[path = "../common/peers.rs"]
mod peers;

fn main() {
    let workload = std::env::args().nth(1).unwrap_or_default();
    let now = Instant::now();
    let message = Hooks {
        message: true,
        ..Hooks::NONE
    };
    let (rt, label) = match workload.as_str() {
        "commands-none" | "commands-all" => {
            let hooks = if workload == "commands-all" {
                Hooks::ALL
            } else {
                Hooks::NONE
            };
            let stream = command_stream(1000, &body(1024));
            let cfg = config(hooks);
            let (mut s, mut rt) = greeted(&cfg, now);
            rt.feed(&mut s, &stream, READ_SIZE, now);
            (rt, "transactions: 1000")
        }
        "tx-none" | "tx-message" | "tx-all" => {
            // Like the command stream, with a body size and count from the command line.
            let arg = |i: usize, default: usize| {
                std::env::args()
                    .nth(i)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(default)
            };
            let hooks = match workload.as_str() {
                "tx-none" => Hooks::NONE,
                "tx-message" => message,
                _ => Hooks::ALL,
            };
            let stream = command_stream(arg(3, 100), &body(arg(2, 1024)));
            let cfg = config(hooks);
            let (mut s, mut rt) = greeted(&cfg, now);
            rt.feed(&mut s, &stream, READ_SIZE, now);
            (rt, "transactions")
        }
        "proto-commands" => {
            let stream = command_stream(1000, &body(1024));
            let count = peers::proto_stream(&stream, READ_SIZE);
            println!("smtp-proto: {count:?}");
            return;
        }
        "proto-data" => {
            let wire = data_wire(&body(10 << 20));
            println!("smtp-proto: {}", peers::proto_data(&wire, READ_SIZE).len());
            return;
        }
        "data-none" | "data-message" => {
            let hooks = if workload == "data-message" {
                message
            } else {
                Hooks::NONE
            };
            let wire = data_wire(&body(10 << 20));
            let cfg = config(hooks);
            let (mut s, mut rt) = in_data(&cfg, now);
            rt.feed(&mut s, &wire, READ_SIZE, now);
            (rt, "10 MiB by DATA")
        }
        "data-streamed" => {
            let wire = data_wire(&body(10 << 20));
            let (mut s, mut rt) = in_data(&streamed_config(), now);
            rt.feed(&mut s, &wire, READ_SIZE, now);
            (rt, "10 MiB by DATA, streamed")
        }
        "bdat-message" | "bdat-streamed" => {
            let wire = bdat_wire(&body(10 << 20), 16 * 1024);
            let cfg = if workload == "bdat-streamed" {
                streamed_config()
            } else {
                config(message)
            };
            let (mut s, mut rt) = with_envelope(&cfg, now);
            rt.feed(&mut s, &wire, READ_SIZE, now);
            (rt, "10 MiB by BDAT")
        }
        _ => {
            eprintln!("usage: profile commands-none|commands-all|data-none|data-message|data-streamed|bdat-message|bdat-streamed|proto-commands|proto-data");
            std::process::exit(2);
        }
    };
    println!("{label}: {rt:?}");
}
