#![no_main]
//! A whole session over client bytes: `smtp_session_testkit::fuzz::session_bytes`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| smtp_session_testkit::fuzz::session_bytes(data));
