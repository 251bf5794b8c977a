//! `--greylist`: a sender not seen before is asked to retry, once (see `greylist.rs`).
//!
//! Skipped for authenticated submissions, trusted networks and clients on a DNS allow list
//! (a `--dnsbl` site with a negative weight that listed them). Without `--verify` it decides
//! at RCPT, by the client's network. With `--verify` it waits for the end of the message:
//! SPF pass for the MAIL FROM domain, or a DKIM signature that passed in a message that
//! passed DMARC (so the signature is aligned with the From: domain), vouches for the
//! message, which goes through at once and makes its domain a sender that passed; a DKIM
//! signature that passed without alignment makes its domain the sender instead of the
//! client's network, so that a pool of sending addresses counts as one sender.

use smtp_session::{Decision, ForwardPath, Reply, ReversePath};

use crate::check::{Check, CheckFuture, Edits, Facts, Record, Stage, Stages, Verdict};
use crate::greylist::{Greylist, Sender, Verdict as Grey};

/// The greylist of `--greylist`.
#[derive(Debug)]
pub struct Greylisting {
    /// The state and its settings.
    pub greylist: Greylist,
    /// `--verify` is on: decide at the end of the message, with its results.
    pub at_message: bool,
}

impl Check for Greylisting {
    fn name(&self) -> &'static str {
        "greylist"
    }

    fn stages(&self) -> Stages {
        Stages {
            rcpt: !self.at_message,
            message: self.at_message,
            ..Stages::default()
        }
    }

    fn check<'a>(&'a self, facts: &'a Facts, stage: &'a Stage<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            let Some(client) = facts.conn.client.filter(|_| !skipped(facts)) else {
                return Verdict::go_on();
            };
            let network = self.greylist.network(client.ip);
            match stage {
                Stage::Rcpt(rcpt, _) => {
                    let from = address(facts.conn.mail_from.as_ref());
                    let verdicts = self.greylist.check(&network, &from, &[path(rcpt)]).await;
                    verdict(verdicts, facts.lmtp, 1)
                }
                Stage::Message { message, .. } => {
                    let from = &message.envelope.mail_from;
                    let (sender, vouched) = match vouching(&facts.record, from) {
                        Some((domain, vouched)) => (Sender::Domain(domain), vouched),
                        None => (network, false),
                    };
                    if vouched {
                        self.greylist.vouched(&sender).await;
                        return Verdict::go_on();
                    }
                    let rcpts: Vec<String> = message
                        .envelope
                        .recipients
                        .iter()
                        .map(|r| path(&r.path))
                        .collect();
                    let verdicts = self
                        .greylist
                        .check(&sender, &address(Some(from)), &rcpts)
                        .await;
                    verdict(verdicts, facts.lmtp, rcpts.len())
                }
                _ => Verdict::go_on(),
            }
        })
    }
}

/// Authenticated, trusted or allow-listed: not greylisted.
fn skipped(facts: &Facts) -> bool {
    facts.conn.auth.is_some()
        || facts.conn.client.is_some_and(|c| c.exempt)
        || facts
            .conn
            .screening
            .as_ref()
            .is_some_and(|s| !s.allowed_by.is_empty())
}

/// The domain that vouches for the message, or that signed it, and whether it vouches.
fn vouching(record: &Record, from: &ReversePath) -> Option<(String, bool)> {
    let results = record.auth_results.as_ref()?;
    if results.spf == "pass" {
        if let ReversePath::Mailbox(mailbox) = from {
            return Some((mailbox.domain.to_string().to_ascii_lowercase(), true));
        }
    }
    let signer = results
        .dkim
        .iter()
        .filter(|d| d.result == "pass")
        .find_map(|d| d.domain.clone())?;
    Some((signer.to_ascii_lowercase(), results.dmarc == "pass"))
}

fn address(path: Option<&ReversePath>) -> String {
    match path {
        Some(ReversePath::Mailbox(mailbox)) => mailbox.to_string(),
        _ => String::new(),
    }
}

fn path(rcpt: &ForwardPath) -> String {
    match rcpt {
        ForwardPath::Mailbox(mailbox) => mailbox.to_string(),
        _ => "postmaster".into(),
    }
}

/// The greylist's verdicts as the check's: all passed, or the longest wait (under LMTP at
/// the message stage, per recipient).
fn verdict(verdicts: Result<Vec<Grey>, Decision>, lmtp: bool, recipients: usize) -> Verdict {
    let verdicts = match verdicts {
        Ok(verdicts) => verdicts,
        Err(refusal) => return Verdict::Refuse(refusal),
    };
    let wait = |v: &Grey| match v {
        Grey::Wait(d) => Some(*d),
        Grey::Pass => None,
    };
    let Some(longest) = verdicts.iter().filter_map(wait).max() else {
        return Verdict::go_on();
    };
    if lmtp && recipients > 1 {
        let refused: Vec<Option<Reply>> = verdicts
            .iter()
            .map(|v| match Greylist::refusal(wait(v)?) {
                Decision::Reject(reply) => Some(reply),
                _ => None,
            })
            .collect();
        if refused.iter().any(Option::is_none) {
            return Verdict::Continue(Edits {
                refused_recipients: refused,
                ..Edits::default()
            });
        }
    }
    Verdict::Refuse(Greylist::refusal(longest))
}
