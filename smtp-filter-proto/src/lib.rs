//! Sans-IO clients for the protocols an MTA uses to ask filters about mail:
//!
//! - [`milter`]: the milter protocol (version 6, as libmilter and Postfix speak it), which
//!   OpenDKIM, rspamd, clamav-milter and many others answer;
//! - [`policy`]: Postfix's policy delegation protocol, which postgrey, postfwd and
//!   policyd-spf answer;
//! - [`edits`]: a message's header fields and envelope with the milters' changes applied in
//!   order, for a chain of filters each seeing what the ones before changed.
//!
//! Like the `smtp-session` engine, nothing here does I/O, reads a clock or needs a runtime:
//! the caller hands in the SMTP session's steps and the bytes the filter sent, and drains
//! outputs (bytes to send, verdicts, modifications, failures) with `poll_output` until
//! `None`. Whatever a filter sends is checked: a broken or hostile filter produces a typed
//! error output, never a panic, and memory held for its input is bounded by a limit of the
//! caller's. Each module's docs give its run loop.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod edits;
pub mod milter;
pub mod policy;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
