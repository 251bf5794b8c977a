//! The test and fuzz harness of `smtp-session`, shared by the crate's integration tests
//! (`tests/`), its fuzz targets (`fuzz/`) and its benchmarks (`bench/`). Not published.
//!
//! - [`drive`]: the one session driver. It offers input and keeps a backlog of what the
//!   session does not take, drains the outputs, answers hooks and handshakes when the runtime
//!   says so, and goes on with held input when the deadline has passed. Everything else here
//!   is a [`drive::Runtime`] on it.
//! - [`transcript`]: the transcript harness of the scenario tests ([`transcript::Harness`]).
//! - [`fuzz`]: the checks the fuzz targets run, the `session_ops` input format, and the seed
//!   scenarios.
//! - [`reference_unstuff`]: the byte-at-a-time reference model of the DATA receiver.
//! - [`client`]: the blocking SMTP client of the tests that run a real server
//!   (smtp-session-tokio's and mailsink's).
//! - [`daemons`]: the real daemons the tests run against (Redis, rspamd, OpenDKIM,
//!   postgrey), started on loopback with a configuration of the test's own.
//!
//! The library itself keeps, behind its hidden `testing` feature, only what needs its
//! internals: [`HookId::forged`](smtp_session::HookId::forged).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod daemons;
pub mod drive;
pub mod fuzz;
pub mod transcript;
mod unstuff;

pub use unstuff::reference_unstuff;
