#![no_main]
//! A milter client session whose filter sends the input's bytes, cut every way:
//! `smtp_filter_proto::fuzzing::milter_session`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| smtp_filter_proto::fuzzing::milter_session(data));
