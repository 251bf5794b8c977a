//! The hook call a session waits for, what it was about, and which decisions fit it.

use crate::context::{HeloInfo, ReplyState};
use crate::error::Error;
use crate::hooks::{Decision, HookId};
use crate::transaction::Transaction;

/// What a pending hook was about, so its decision can be carried out.
///
/// Kept small (no path or parameters in it: a pending stage is moved several times per
/// hook call, and values over 128 bytes are moved by a call to `memcpy`).
pub(crate) enum Stage {
    Connect,
    Helo(HeloInfo),
    Auth {
        mechanism: String,
        username: Option<String>,
        step: u32,
    },
    /// The transaction MAIL opens once the hook accepts it.
    Mail(Box<Transaction>),
    /// The recipient waits in the open transaction, outside its envelope
    /// (`Transaction::asked`), until the hook accepts it.
    Rcpt,
    Data,
    /// VRFY (`expand` false) or EXPN.
    Verify {
        expand: bool,
    },
    /// The data hook for the first BDAT of a transaction, before its chunk is read.
    Bdat {
        size: u64,
        last: bool,
    },
    Message {
        chunked: bool,
        /// LMTP: the number of accepted recipients, each owed a reply of its own.
        lmtp_recipients: Option<usize>,
    },
}

impl Stage {
    pub(crate) fn reply_state(&self) -> ReplyState {
        match self {
            Stage::Connect => ReplyState::Connect,
            Stage::Helo(info) => ReplyState::from(info.verb),
            Stage::Auth { .. } => ReplyState::Auth,
            Stage::Mail(..) => ReplyState::Mail,
            Stage::Rcpt => ReplyState::Rcpt,
            Stage::Data => ReplyState::Data,
            Stage::Verify { expand: false } => ReplyState::Vrfy,
            Stage::Verify { expand: true } => ReplyState::Expn,
            Stage::Bdat { .. } | Stage::Message { chunked: true, .. } => ReplyState::Bdat,
            Stage::Message { chunked: false, .. } => ReplyState::Eod,
        }
    }

    /// Checks that `decision` fits this hook: a refused decision changes nothing.
    pub(crate) fn admits(&self, decision: &Decision) -> Result<(), Error> {
        let stage = self;
        match decision {
            Decision::AcceptWith(reply) => {
                let ok = match stage {
                    Stage::Data => reply.code() == 354,
                    // Hook::Data does not say whether DATA or BDAT asked, so the 354 the docs
                    // prescribe must fit here too; BDAT sends no reply for it either way.
                    Stage::Bdat { .. } => reply.code() == 354 || (200..300).contains(&reply.code()),
                    _ => (200..300).contains(&reply.code()),
                };
                if !ok {
                    return Err(Error::InvalidDecision(
                        "an acceptance needs a 2xx reply (354 for the data hook)",
                    ));
                }
            }
            Decision::Reject(reply) if !reply.is_error() => {
                return Err(Error::InvalidDecision(
                    "a rejection needs a 4xx or 5xx reply",
                ));
            }
            Decision::PerRecipient(replies) => match stage {
                Stage::Message {
                    lmtp_recipients: Some(n),
                    ..
                } if replies.len() == *n => {
                    if replies.iter().any(|r| (300..400).contains(&r.code())) {
                        return Err(Error::InvalidDecision(
                            "a recipient's reply is 2xx, 4xx or 5xx",
                        ));
                    }
                }
                Stage::Message {
                    lmtp_recipients: Some(_),
                    ..
                } => {
                    return Err(Error::InvalidDecision(
                        "one reply per accepted recipient, in RCPT order",
                    ))
                }
                _ => {
                    return Err(Error::InvalidDecision(
                        "replies per recipient answer only the LMTP message hook",
                    ))
                }
            },
            Decision::Challenge(_) => match stage {
                Stage::Auth { mechanism, .. } if mechanism != "PLAIN" && mechanism != "LOGIN" => {}
                _ => return Err(Error::InvalidDecision(
                    "a challenge answers only auth steps of mechanisms the session does not decode",
                )),
            },
            _ => {}
        }
        Ok(())
    }
}

/// The hook call the session waits for.
pub(crate) struct Pending {
    pub id: HookId,
    pub stage: Stage,
}

#[cfg(test)]
mod tests {
    use super::{Pending, Stage};

    /// A pending stage is moved by value from the command to the decision; at 128 bytes or
    /// less the compiler copies it inline instead of calling `memcpy`.
    #[test]
    fn a_pending_stage_is_small() {
        assert!(std::mem::size_of::<Stage>() <= 64);
        assert!(std::mem::size_of::<Option<Pending>>() <= 128);
    }
}
