//! The open mail transaction, from MAIL to the end of its message: what the session and a
//! pending MAIL hook hold of it.

use crate::bdat::BdatReceiver;
use crate::body::BodySink;
use crate::hooks::{Envelope, Recipient};

/// A mail transaction, from MAIL to the end of its message.
pub(crate) struct Transaction {
    pub(crate) envelope: Envelope,
    /// The recipient whose RCPT hook is pending: it joins the envelope when accepted.
    pub(crate) asked: Option<Recipient>,
    /// Where the body goes; `Discard` until it starts.
    pub(crate) sink: BodySink,
    /// Between BDAT chunks: the receiver of the chunked message.
    pub(crate) chunks: Option<BdatReceiver>,
}
