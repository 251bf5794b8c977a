//! Shows what a `session_ops` fuzz input stands for: the config knobs and the operations,
//! one per line. `cargo run -p smtp-session-testkit --example decode_ops -- FILE...`

use smtp_session_testkit::fuzz::{decode, Op, LINES};

fn main() -> std::io::Result<()> {
    for path in std::env::args_os().skip(1) {
        let (knobs, ops) = decode(&std::fs::read(&path)?);
        println!("{}: {knobs:?}", path.to_string_lossy());
        for op in ops {
            match op {
                Op::Bytes(bytes) => println!("  Bytes(b\"{}\")", bytes.escape_ascii()),
                Op::Line(i) => {
                    let line = LINES[usize::from(i) % LINES.len()];
                    println!("  Line({i}): b\"{}\"", line.escape_ascii());
                }
                op => println!("  {op:?}"),
            }
        }
    }
    Ok(())
}
