//! The test and fuzz harness of `smtp-session`, shared by the crate's integration tests
//! (`tests/`), its fuzz targets (`fuzz/`) and its benchmarks (`bench/`). Not published.
//!
//! - [`drive`]: the one session driver. It offers input and keeps a backlog of what the
//!   session does not take, drains the outputs, answers hooks and handshakes when the runtime
//!   says so, and goes on with held input when the deadline has passed. Everything else here
//!   is a [`drive::Runtime`] on it.
//! - [`transcript`]: the transcript harness of the scenario tests ([`transcript::Harness`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod drive;
pub mod transcript;
