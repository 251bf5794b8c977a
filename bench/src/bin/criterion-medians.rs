//! Prints the medians of the last `cargo bench` run of `data_ingest` and `command_stream`,
//! read from criterion's `estimates.json` files, with each contender's speed relative to the
//! references of its group: `cargo run -p smtp-session-bench --bin criterion-medians`.
//!
//! Looks in `$CARGO_TARGET_DIR/criterion`, else `target/criterion`.

use std::path::{Path, PathBuf};

/// Group, its contenders in order, and the references (time over the contender's).
const GROUPS: &[(&str, &[&str], &[&str])] = &[
    (
        "data_10MiB",
        &[
            "memcpy_fresh_vec",
            "memcpy_reused_vec",
            "session_message_hook",
            "session_hooks_none",
            "smtp_proto_data_receiver",
            "mailin_lines",
        ],
        &["memcpy_fresh_vec", "smtp_proto_data_receiver"],
    ),
    (
        "bdat_10MiB",
        &[
            "memcpy_fresh_vec",
            "session_message_hook",
            "session_hooks_none",
            "smtp_proto_bdat_receiver",
        ],
        &["memcpy_fresh_vec", "smtp_proto_bdat_receiver"],
    ),
    (
        "commands_10k_tx",
        &[
            "session_hooks_none",
            "session_hooks_all",
            "smtp_proto_parser",
            "mailin_lines",
        ],
        &["smtp_proto_parser"],
    ),
];

/// The median's point estimate, in nanoseconds, from an `estimates.json`.
fn median_ns(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let median = &text[text.find("\"median\":")?..];
    let estimate = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = estimate.find([',', '}'])?;
    estimate[..end].trim().parse().ok()
}

fn main() {
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("criterion");
    for (group, contenders, references) in GROUPS {
        let medians: Vec<(&str, Option<f64>)> = contenders
            .iter()
            .map(|c| {
                (
                    *c,
                    median_ns(&root.join(group).join(c).join("new/estimates.json")),
                )
            })
            .collect();
        let of = |name: &str| medians.iter().find(|(n, _)| *n == name).and_then(|m| m.1);
        print!("\n### {group} (criterion medians)\n\n| contender | median |");
        for r in *references {
            print!(" vs {r} |");
        }
        print!("\n|---|---:|");
        for _ in *references {
            print!("---:|");
        }
        println!();
        for (name, median) in &medians {
            let Some(ns) = median else {
                println!("| {name} | (not run) |");
                continue;
            };
            print!("| {name} | {:.3} ms |", ns / 1e6);
            for r in *references {
                match of(r) {
                    Some(reference) => print!(" {:.2}x |", reference / ns),
                    None => print!(" - |"),
                }
            }
            println!();
        }
    }
}
