//! The fuzz targets' checks (`fuzz/`): each function runs one input through a part of
//! `smtp-session` and panics when one of the crate's promises breaks, so a panic is a
//! finding. The fuzz targets are one line each over these functions; the same functions run
//! over deterministic pseudo-random inputs and the committed corpora in this module's unit
//! tests, so `cargo test --workspace` exercises them without a fuzzer.
//!
//! - [`command_parser`]: [`parse_command`](smtp_session::command::parse_command) never
//!   panics, finds the verb case-insensitively, and ignores the verb's case and the line's end.
//! - [`data_receiver`]: [`DataReceiver`](smtp_session::data::DataReceiver) fed in chunks
//!   split anywhere equals the byte-at-a-time [`reference_unstuff`](crate::reference_unstuff)
//!   under every [`BareLineEndings`](smtp_session::BareLineEndings) policy, with bounded memory.
//! - [`session_bytes`]: a whole [`Session`](smtp_session::Session) over client bytes, hooks
//!   answered by choices derived from the input.
//! - [`session_ops`]: a whole session over a config and a sequence of [`Op`]s decoded from the
//!   input ([`decode`]): bytes, SMTP lines, time, decisions (good and bad), TLS events, EOF,
//!   I/O errors, shutdown.
//!
//! The session invariants checked after every step:
//!
//! - every [`Output::Write`](smtp_session::Output::Write) is whole, well-formed reply lines
//!   (`DDD-text` / `DDD text`, CRLF, code 200..=599, one code per reply, no reply split across
//!   writes, no control characters), and a 421 reply is always the last one before
//!   [`Output::Close`](smtp_session::Output::Close);
//! - exactly one `Close`, followed at once by exactly one disconnect hook call, and nothing
//!   after it; after the close every `handle_*` and `decide` return
//!   [`Error::Closed`](smtp_session::Error::Closed);
//! - at most one hook is pending, it is the one
//!   [`Session::pending_hook`](smtp_session::Session::pending_hook) reports, and the deadline is
//!   `None` exactly while it is pending;
//! - a decision for a wrong or stale id returns
//!   [`Error::UnknownHook`](smtp_session::Error::UnknownHook) and queues nothing and changes
//!   nothing; a decision that does not fit returns
//!   [`Error::InvalidDecision`](smtp_session::Error::InvalidDecision) and has the effect of a
//!   failed hook, so the session is never left paused;
//! - decisions have the effect the crate documents (reject, the disconnect modes, a failed
//!   hook), input is refused only while a hook is pending and then only beyond
//!   `Config::max_pending_input`, and no message body exceeds `Config::max_message_size`;
//! - the disconnect context agrees with what was written (last reply) and with who closed.

mod checker;
mod command;
mod config;
mod data;
mod decisions;
mod ops;
mod seeds;
mod session;

pub use command::command_parser;
pub use config::{fuzz_config, Knobs, GREETING_DELAY};
pub use data::data_receiver;
pub use ops::{decode, encode, DecisionKind, Op, ReplyCode, LINES};
pub use seeds::seed_scenarios;
pub use session::{run_ops, session_bytes, session_ops};

/// A tiny deterministic generator for choices derived from the input.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub(crate) fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn random_bytes(rng: &mut Rng, alphabet: &[u8], max_len: u64) -> Vec<u8> {
        let len = rng.below(max_len + 1) as usize;
        (0..len)
            .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
            .collect()
    }

    pub(crate) fn any_bytes(rng: &mut Rng, max_len: u64) -> Vec<u8> {
        let len = rng.below(max_len + 1) as usize;
        (0..len).map(|_| rng.next() as u8).collect()
    }

    /// The committed seeds of a target, sorted by name.
    pub(crate) fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the committed corpus {}: {e}", dir.display()));
        let mut files: Vec<_> = entries
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(path).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    /// Every committed seed (and any crash input saved into the corpus) passes.
    #[test]
    fn committed_corpora_pass() {
        for (target, run) in [
            ("command_parser", command_parser as fn(&[u8])),
            ("data_receiver", data_receiver),
            ("session_bytes", session_bytes),
            ("session_ops", session_ops),
        ] {
            let files = corpus(target);
            assert!(!files.is_empty(), "no seeds for {target}");
            for (_, data) in files {
                run(&data);
            }
        }
    }
}
