#![no_main]
//! One command line through `parse_command`: `smtp_session_testkit::fuzz::command_parser`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| smtp_session_testkit::fuzz::command_parser(data));
