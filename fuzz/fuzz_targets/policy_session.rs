#![no_main]
//! A policy delegation client whose service sends the input's bytes, cut every way:
//! `smtp_filter_proto::fuzzing::policy_session`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| smtp_filter_proto::fuzzing::policy_session(data));
