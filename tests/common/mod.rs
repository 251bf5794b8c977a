//! The transcript harness of these tests lives in the workspace's test kit, where the fuzz
//! targets and the benches share its driver: see `smtp_session_testkit::transcript`.

pub use smtp_session_testkit::transcript::*;
