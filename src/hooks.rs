//! Hook calls the session emits, and the decisions the caller owes it.

use std::fmt;

use crate::address::{ForwardPath, ReversePath};
use crate::context::{DisconnectContext, HeloVerb};
use crate::params::{MailParams, RcptParams};
use crate::reply::{Reply, ReplyError};

/// Identifies one hook call; the decision for it must carry the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookId(pub(crate) u64);

impl HookId {
    /// The id as a number, unique within its session.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for HookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A request to run a policy hook.
///
/// Every hook except [`Hook::Disconnect`] is an obligation: the session is paused until the
/// caller answers with [`Session::decide`](crate::Session::decide) and this `id`.
/// [`HookCall::needs_decision`] tells which.
#[derive(Debug)]
pub struct HookCall {
    /// The id to answer with.
    pub id: HookId,
    /// Which hook, with its arguments.
    pub hook: Hook,
}

impl HookCall {
    /// False only for the disconnect hook, which owes nothing (Halon's `Pass()`).
    #[must_use]
    pub fn needs_decision(&self) -> bool {
        !matches!(self.hook, Hook::Disconnect(_))
    }
}

/// The hooks, with what each one is given.
#[derive(Debug)]
#[non_exhaustive]
pub enum Hook {
    /// A client connected; decide before the greeting. Any refusal closes the connection.
    Connect,
    /// HELO or EHLO. While this hook is pending,
    /// [`Session::set_extensions`](crate::Session::set_extensions) changes what the EHLO reply
    /// advertises.
    Helo {
        /// HELO or EHLO.
        verb: HeloVerb,
        /// The name the client gave.
        host: String,
    },
    /// An AUTH step.
    Auth(AuthRequest),
    /// MAIL FROM.
    MailFrom {
        /// The reverse path.
        path: ReversePath,
        /// Its ESMTP parameters.
        params: MailParams,
    },
    /// RCPT TO.
    RcptTo {
        /// The forward path.
        path: ForwardPath,
        /// Its ESMTP parameters.
        params: RcptParams,
    },
    /// DATA (or the first BDAT), before any message byte is read. Accepting gives 354 for DATA.
    Data,
    /// VRFY string (RFC 5321 section 3.5). Accepting gives `252 2.5.0` (cannot verify, will
    /// accept mail); accept with a 250 or 251 reply naming the mailbox, or reject with
    /// `550` (no such user) or `553` (ambiguous).
    Vrfy(String),
    /// EXPN string: accept with a multi-line 250 reply listing the members, or reject.
    Expn(String),
    /// The complete message. Accepting gives `250 2.0.0`; only then is the client told the
    /// message is taken, so store it durably before accepting. With
    /// [`BodyDelivery::Streamed`](crate::BodyDelivery::Streamed) the body came before, in
    /// [`Output::BodyPiece`](crate::Output::BodyPiece)s, and [`Message::body`] is empty:
    /// make the pieces durable, then decide.
    Message(Box<Message>),
    /// The connection ended; the context of Halon's disconnect script. Owes no decision.
    Disconnect(Box<DisconnectContext>),
}

/// What an AUTH step asks the auth hook to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRequest {
    /// PLAIN credentials, decoded by the session (RFC 4616).
    Plain {
        /// The identity to act as; empty when the client gave none.
        authzid: String,
        /// The identity whose password this is.
        authcid: String,
        /// The password.
        password: String,
    },
    /// LOGIN credentials, collected by the session.
    Login {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// One step of any other mechanism: the caller runs it (SCRAM, XOAUTH2...) and answers
    /// with [`Decision::Challenge`] to continue, or accept/reject to finish.
    Step {
        /// The mechanism, upper case.
        mechanism: String,
        /// The client's decoded response (the initial response at step 0, possibly empty).
        response: Vec<u8>,
        /// 0 for the AUTH command itself, then 1, 2, ...
        step: u32,
    },
}

impl AuthRequest {
    /// The mechanism's name.
    pub fn mechanism(&self) -> &str {
        match self {
            AuthRequest::Plain { .. } => "PLAIN",
            AuthRequest::Login { .. } => "LOGIN",
            AuthRequest::Step { mechanism, .. } => mechanism,
        }
    }
}

/// One accepted recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Recipient {
    /// The forward path.
    pub path: ForwardPath,
    /// Its parameters.
    pub params: RcptParams,
}

/// The envelope of one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Envelope {
    /// The reverse path of MAIL FROM.
    pub mail_from: ReversePath,
    /// MAIL FROM's parameters.
    pub mail_params: MailParams,
    /// The accepted recipients, in order.
    pub recipients: Vec<Recipient>,
}

/// A received message: the envelope, the body exactly as received (after dot-unstuffing for
/// DATA and as sent for BDAT, line endings as [`BareLineEndings`](crate::BareLineEndings)
/// says) and what the session learnt about the body while reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The envelope.
    pub envelope: Envelope,
    /// The body bytes; empty when the body was streamed.
    pub body: Vec<u8>,
    /// True when the body left the session in [`Output::BodyPiece`](crate::Output::BodyPiece)s
    /// ([`BodyDelivery::Streamed`](crate::BodyDelivery::Streamed)).
    pub streamed: bool,
    /// The body's size in bytes, streamed or not.
    pub size: u64,
    /// True when it came by BDAT, false for DATA.
    pub chunked: bool,
    /// True when the body holds a byte over 127 (whatever `BODY=` declared).
    pub eight_bit: bool,
    /// True when the body held a bare CR or LF, accepted under
    /// [`BareLineEndings::Allow`](crate::BareLineEndings::Allow) or replaced by CRLF under
    /// `Normalize`. Always false for `BODY=BINARYMIME`, whose bytes are not looked at.
    pub bare_line_endings: bool,
    /// True when the content began with a space or a tab and was accepted under
    /// [`LeadingWhitespace::InsertEmptyLine`](crate::LeadingWhitespace::InsertEmptyLine): the
    /// body (or the first [`Output::BodyPiece`](crate::Output::BodyPiece)) then starts with
    /// the empty line the session put before the content, so the message has no header
    /// section of its own. Under the default, `Reject`, such a message never reaches the
    /// hook.
    pub leading_whitespace: bool,
}

/// Why a streamed message will not be accepted: what was stored of it can go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AbortReason {
    /// It went past [`Config::max_message_size`](crate::Config::max_message_size); the
    /// client gets `552 5.3.4` once the data ends.
    TooBig,
    /// It held a bare CR or LF under
    /// [`BareLineEndings::Reject`](crate::BareLineEndings::Reject); the client gets a 550
    /// once the data (or the BDAT chunk) ends.
    BareLineEnding,
    /// Its content began with a space or a tab under
    /// [`LeadingWhitespace::Reject`](crate::LeadingWhitespace::Reject): known from the first
    /// piece on, so no piece of it is handed out. The client gets `550 5.6.0` once the data
    /// (or the BDAT chunk) ends.
    LeadingWhitespace,
    /// The transaction ended before the body was complete: RSET, HELO or EHLO between BDAT
    /// chunks, a TLS handshake.
    Reset,
    /// The connection ended in the middle of the message: the client went away, a timeout,
    /// a disconnect decision, a shutdown, an I/O error.
    Closed,
}

/// KumoMTA's `kumo.disconnect` modes: what a disconnect decision does with its reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum DisconnectMode {
    /// Send the reply and close, whatever its code (non-421 is not SMTP-conformant).
    #[default]
    ForceDisconnect,
    /// Send the reply; unless it is a 421, follow it with
    /// `421 <hostname> disconnecting due to previous error`; close.
    FollowWith421,
    /// Close only if the code is 421; otherwise behave as a reject and stay open.
    If421,
}

impl DisconnectMode {
    /// Parses KumoMTA's names: `ForceDisconnect`, `FollowWith421`, `If421`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ForceDisconnect" => Some(DisconnectMode::ForceDisconnect),
            "FollowWith421" => Some(DisconnectMode::FollowWith421),
            "If421" => Some(DisconnectMode::If421),
            _ => None,
        }
    }
}

/// The caller's answer to a hook call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Decision {
    /// Go on with the default success reply.
    Accept,
    /// Go on with this reply instead of the default: 2xx (354 for the data hook).
    AcceptWith(Reply),
    /// Refuse with this 4xx/5xx reply; the session stays open, except that a 421 closes it
    /// (and a refusal at the connect stage always closes).
    Reject(Reply),
    /// KumoMTA's `kumo.disconnect(code, message, mode)`.
    Disconnect {
        /// The reply to send.
        reply: Reply,
        /// What to do after it.
        mode: DisconnectMode,
    },
    /// The hook itself broke (a script error); see
    /// [`HookFailurePolicy`](crate::HookFailurePolicy).
    HookFailed,
    /// Auth hook only, for mechanisms the session does not decode: send this challenge
    /// (base64-encoded by the session in a 334 reply) and call the hook again with the
    /// client's response.
    Challenge(Vec<u8>),
    /// LMTP message hook only (RFC 2033, [`Config::lmtp`](crate::Config::lmtp)): one reply
    /// per accepted recipient, in the order of their RCPT commands. A 2xx reply says the
    /// message was delivered to that recipient, a 4xx or 5xx that it was not. Accepting or
    /// refusing as a whole answers every recipient with the same reply.
    PerRecipient(Vec<Reply>),
}

impl Decision {
    /// `Reject` with a reply built by [`Reply::new`] (KumoMTA's `kumo.reject`).
    pub fn reject(code: u16, text: impl AsRef<str>) -> Result<Decision, ReplyError> {
        Reply::new(code, text).map(Decision::Reject)
    }

    /// `Disconnect` with a reply built by [`Reply::new`] (KumoMTA's `kumo.disconnect`).
    pub fn disconnect(
        code: u16,
        text: impl AsRef<str>,
        mode: DisconnectMode,
    ) -> Result<Decision, ReplyError> {
        Reply::new(code, text).map(|reply| Decision::Disconnect { reply, mode })
    }
}
