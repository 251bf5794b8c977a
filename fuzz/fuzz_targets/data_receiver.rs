#![no_main]
//! DATA content through `DataReceiver`, split anywhere, against the reference
//! unstuffer: `smtp_session_testkit::fuzz::data_receiver`. The first byte steers the splits.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| smtp_session_testkit::fuzz::data_receiver(data));
