#![no_main]
//! A whole session over a config and a sequence of operations (bytes, lines, time,
//! decisions, TLS, EOF, errors): `smtp_session::fuzzing::session_ops_with`.

use libfuzzer_sys::fuzz_target;
use smtp_session::fuzzing::{session_ops_with, Knobs, Op};

fuzz_target!(|input: (Knobs, Vec<Op>)| session_ops_with(input.0, input.1));
