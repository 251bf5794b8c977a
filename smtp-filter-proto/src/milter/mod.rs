//! The milter client: what an MTA speaks to a mail filter (OpenDKIM, rspamd, ClamAV's
//! clamav-milter...), protocol version 6 as libmilter and Postfix speak it.
//!
//! [`Milter`] is one filter connection's state machine. Its inputs are the SMTP session's
//! steps (one method each: [`Milter::connect`], [`Milter::helo`], [`Milter::mail`],
//! [`Milter::rcpt`], [`Milter::data`], [`Milter::header`], [`Milter::end_of_headers`],
//! [`Milter::body`], [`Milter::end_of_message`], [`Milter::abort`], [`Milter::quit`],
//! [`Milter::unknown`]) and the bytes the filter sends ([`Milter::handle_input`]); its outputs,
//! drained with [`Milter::poll_output`], are bytes to send and what the filter answered.
//!
//! # The run loop
//!
//! A step is sent only once the filter answered the one before: after each step, drain the
//! outputs (write every [`Output::Write`] to the filter, in order), then while
//! [`Milter::awaiting_reply`] is `Some`, read from the filter, hand the bytes to
//! [`Milter::handle_input`] and drain again. Every step produces exactly one
//! [`Output::Verdict`]: at once for a step the filter asked to skip (`SMFIP_NO*`), asked not
//! to answer (`SMFIP_NR_*`), or that comes after it accepted the connection or message; else
//! when its reply arrives. At end of message the verdict comes after the filter's
//! [`Output::Modification`]s.
//!
//! ```
//! use smtp_filter_proto::milter::{ClientAddress, Macros, Milter, MilterConfig, Output, Step, Verdict};
//!
//! let mut milter = Milter::new(MilterConfig::default());
//! // A filter that takes every action, skips nothing and answers "continue" to connect.
//! let mut filter_bytes: Vec<u8> = Vec::new();
//! filter_bytes.extend_from_slice(&[0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0, 0, 0]);
//! filter_bytes.extend_from_slice(&[0, 0, 0, 1, b'c']);
//!
//! let mut sent = Vec::new();
//! let mut verdicts = Vec::new();
//! let mut drain = |milter: &mut Milter| {
//!     while let Some(output) = milter.poll_output() {
//!         match output {
//!             Output::Write(bytes) => sent.extend_from_slice(&bytes), // to the filter's socket
//!             Output::Verdict { step, verdict } => verdicts.push((step, verdict)),
//!             Output::Progress => {}  // restart the reply timer
//!             Output::Failed(error) => panic!("{error}"), // the default action, close
//!             _ => {}
//!         }
//!     }
//! };
//! drain(&mut milter);
//! milter.handle_input(&filter_bytes[..17]); // the negotiation reply
//! drain(&mut milter);
//! let addr = ClientAddress::Inet("192.0.2.1:4321".parse().unwrap());
//! milter.connect("client.example", &addr, &Macros::new().with("j", "mx.example")).unwrap();
//! drain(&mut milter);
//! assert_eq!(milter.awaiting_reply(), Some(Step::Connect));
//! milter.handle_input(&filter_bytes[17..]);
//! drain(&mut milter);
//! assert_eq!(verdicts, [(Step::Connect, Verdict::Continue)]);
//! ```
//!
//! # Timeouts
//!
//! The client owns no clock. Start a timer when [`Milter::awaiting_reply`] becomes `Some`,
//! restart it at each [`Output::Progress`] (the filter's `SMFIR_PROGRESS`), and when it fires,
//! give up on the filter: apply the default action and close its connection.
//!
//! # A filter that breaks the protocol
//!
//! Whatever the filter sends is checked: packet size ([`MilterConfig::max_packet`]), known
//! codes, well-formed data, a reply only where one is owed and valid at that step,
//! modifications only at end of message and only those negotiated. The first violation is
//! reported once as [`Output::Failed`]; then the session ignores input and every step returns
//! [`Error::Failed`]. Apply the default action and close the filter's connection. Misuse by
//! the caller (a step out of order, or while a reply is owed) is an [`Error`] and changes
//! nothing.

mod macros;
mod reply;
mod session;
mod wire;

pub use macros::{MacroLists, MacroStage, Macros};
pub use reply::{Modification, SmtpReply, Verdict};
pub use session::{ClientAddress, Milter, MilterConfig, Negotiated, Output, Step};
pub use wire::{Actions, ProtocolFlags, MAX_BODY_CHUNK, PROTOCOL_VERSION};

/// What a filter did wrong. Reported as [`Output::Failed`]; the filter is then done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A packet announced more bytes than [`MilterConfig::max_packet`].
    #[error("packet of {size} bytes, more than the {max} allowed")]
    PacketTooLarge {
        /// The announced length.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A packet of length 0 (without even a code).
    #[error("empty packet")]
    EmptyPacket,
    /// A reply code libmilter does not define.
    #[error("unknown reply code {0:#04x}")]
    UnknownReply(u8),
    /// A reply that does not belong at the step it answers (`step` `None`: never valid).
    #[error("reply '{reply}' is not valid at {step:?}")]
    Unexpected {
        /// The reply code.
        reply: char,
        /// The step awaiting a reply.
        step: Option<Step>,
    },
    /// Bytes when no reply is owed: after the reply to the last step, or in answer to a
    /// step the filter asked not to answer.
    #[error("bytes from the filter when no reply is owed (after {after:?})")]
    Unsolicited {
        /// The last step sent.
        after: Option<Step>,
    },
    /// A modification outside the actions the filter negotiated.
    #[error("modification '{reply}' needs the {needed:?} action, which was not negotiated")]
    NotNegotiated {
        /// The reply code.
        reply: char,
        /// The action it needs.
        needed: Actions,
    },
    /// A reply whose data does not have the reply's shape.
    #[error("malformed reply '{reply}': {reason}")]
    Malformed {
        /// The reply code.
        reply: char,
        /// What is wrong.
        reason: &'static str,
    },
    /// An `SMFIR_REPLYCODE` that is not a whole 4xx or 5xx reply.
    #[error("bad reply code text: {reason}")]
    BadReplyCode {
        /// What is wrong.
        reason: &'static str,
    },
    /// A header name that is empty or has bytes outside printable ASCII, or a colon.
    #[error("bad header field name")]
    BadHeaderName,
    /// A header value with a CR or LF that is not a fold (a line break then space or tab),
    /// which would start a new field or end the header.
    #[error("header value would start a new line")]
    HeaderInjection,
    /// An address, argument list or reason that is not UTF-8 or has control characters.
    #[error("bad {what}")]
    BadText {
        /// Which string.
        what: &'static str,
    },
    /// The negotiation reply names a protocol version this client does not speak (2 to 6).
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u32),
    /// The filter chose actions the client did not offer.
    #[error("the filter chose actions that were not offered: {0:?}")]
    UnofferedActions(Actions),
    /// The filter chose protocol flags the client did not offer.
    #[error("the filter chose protocol flags that were not offered: {0:?}")]
    UnofferedProtocol(ProtocolFlags),
}

/// Misuse of a [`Milter`] by its caller. The call changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The filter still owes a reply to this step; wait for its verdict.
    #[error("the filter still owes a reply to {0:?}")]
    AwaitingReply(Step),
    /// This step does not follow the steps before it (see [`Milter`]).
    #[error("{0:?} does not fit here")]
    OutOfOrder(Step),
    /// The filter broke the protocol earlier ([`Output::Failed`]).
    #[error("the filter failed")]
    Failed,
    /// [`Milter::quit`] was called.
    #[error("the filter session is over")]
    Closed,
    /// A string for the filter has a NUL byte, which the protocol cannot carry.
    #[error("NUL byte in the {0}")]
    Nul(&'static str),
}
