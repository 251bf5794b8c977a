//! A redis-server of the test's own on 127.0.0.1 (`smtp_session_testkit::daemons::Redis`):
//! a free port, no persistence, in the foreground; killed on drop. Used as `--redis URL`.

pub use smtp_session_testkit::daemons::Redis;
