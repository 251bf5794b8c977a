//! Caller misuse, kept apart from bad client bytes (those become SMTP replies).

use crate::hooks::HookId;

/// What the caller did wrong. The session's state is unchanged when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session already emitted [`Output::Close`](crate::Output::Close): it takes no more
    /// input, events or decisions. A runtime that raced a decision against the close may
    /// ignore this error.
    #[error("the session is closed")]
    Closed,
    /// No hook call with this id is waiting for a decision: it was never issued, was already
    /// decided, or owes no decision (the disconnect hook).
    #[error("no hook call with id {0} is waiting for a decision")]
    UnknownHook(HookId),
    /// The decision does not fit the hook it answers, for example a 5xx reply given as an
    /// acceptance, or an authentication challenge for the MAIL FROM hook.
    #[error("decision does not fit the pending hook: {0}")]
    InvalidDecision(&'static str),
    /// A TLS event arrived although the session did not ask for a handshake.
    #[error("no TLS handshake was requested")]
    NoTlsRequested,
}
