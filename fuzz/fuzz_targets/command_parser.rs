#![no_main]
//! One command line through `parse_command`: `smtp_session::fuzzing::command_parser`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| smtp_session::fuzzing::command_parser(data));
