#![no_main]
//! A whole session over a config and a sequence of operations (bytes, lines, time,
//! decisions, TLS, EOF, errors), decoded from the input by `smtp_session_testkit::fuzz::decode`:
//! `smtp_session_testkit::fuzz::session_ops`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| smtp_session_testkit::fuzz::session_ops(data));
