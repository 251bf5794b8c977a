//! From the downstream's replies to what our client is told.
//!
//! A downstream reply is passed on as it came: code, enhanced code and text, validated by
//! [`Reply::new`]. Two changes keep our session sound: a 421 becomes 451 (a 421 from a hook
//! would close our client's session, while only the downstream is closing), and a reply
//! without an enhanced code gets `X.0.0`, since ours are advertised.

use smtp_session::{Decision, EnhancedCode, Reply};

/// A reply as the downstream sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    /// The text of each line, after the code and its separator.
    pub lines: Vec<String>,
}

impl Answer {
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The reply for a recipient the downstream took.
    pub fn delivered(&self) -> Reply {
        debug_assert!(self.is_positive(), "only a 2xx answer says delivered");
        passed_on(self.code, &self.lines)
    }

    /// The reply for a refusal (any answer that is not the one expected).
    pub fn refusal(&self) -> Reply {
        match self.code {
            421 => passed_on(451, &self.lines),
            400..=599 => passed_on(self.code, &self.lines),
            _ => protocol_error(),
        }
    }
}

fn passed_on(code: u16, lines: &[String]) -> Reply {
    let text = lines.join("\n");
    match Reply::new(code, &text) {
        Ok(reply) if reply.enhanced().is_some() => reply,
        // No enhanced code, or one of the wrong class: the text stays whole.
        _ => {
            let class = (code / 100) as u8;
            Reply::with_enhanced(code, EnhancedCode::new(class, 0, 0), &text)
                .expect("the class is the code's own")
        }
    }
}

fn ours(code: u16, text: &str) -> Reply {
    Reply::new(code, text).expect("a valid fixed reply")
}

/// The downstream could not be reached (refused, unreachable, no such name).
pub fn unreachable() -> Reply {
    ours(451, "4.4.1 The next hop is not reachable, try again later")
}

/// The relay took longer than its timeout.
pub fn timed_out() -> Reply {
    ours(
        451,
        "4.4.2 The next hop did not answer in time, try again later",
    )
}

/// The downstream's connection broke in the middle of the transaction.
pub fn lost() -> Reply {
    ours(
        451,
        "4.4.2 Lost the connection to the next hop, try again later",
    )
}

/// The downstream's answer made no sense.
pub fn protocol_error() -> Reply {
    ours(
        451,
        "4.5.0 The next hop answered out of protocol, try again later",
    )
}

/// Every downstream connection was busy for as long as the timeout.
pub fn congested() -> Reply {
    ours(451, "4.4.5 Too many messages in flight, try again later")
}

/// TLS to the downstream was required and failed, or was not offered.
pub fn tls_failed() -> Reply {
    ours(
        451,
        "4.7.5 No secure connection to the next hop, try again later",
    )
}

/// A fault of our own, not the downstream's.
pub fn local_error() -> Reply {
    ours(451, "4.3.0 Could not relay the message, try again later")
}

/// What an SMTP client, which gets one reply for the whole message, is told.
///
/// - Every recipient delivered: 250, with the downstream's text when all recipients got
///   the same reply (an SMTP downstream's "queued as" reply).
/// - Otherwise the message is refused with the downstream's refusal: the first transient
///   (4xx) one when there is one, since a retry may then succeed, else the first
///   permanent one. When some recipients were delivered all the same (an LMTP downstream
///   refusing some after the data), a line says so: a retry duplicates the message for
///   them, which is better than losing it for the others.
pub fn summary(replies: &[Reply]) -> Decision {
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.is_error()).collect();
    let Some(first) = refused.first() else {
        return match replies.first() {
            Some(one) if replies.iter().all(|r| r == one) => Decision::AcceptWith(one.clone()),
            _ => Decision::Accept,
        };
    };
    let chosen = *refused.iter().find(|r| r.code() < 500).unwrap_or(first);
    let delivered = replies.len() - refused.len();
    if delivered == 0 {
        return Decision::Reject(chosen.clone());
    }
    let mut text: Vec<&str> = chosen.lines().collect();
    let note = format!(
        "{delivered} of {} recipients were delivered before this refusal",
        replies.len()
    );
    text.push(&note);
    let reply = match chosen.enhanced() {
        Some(enhanced) => Reply::with_enhanced(chosen.code(), enhanced, text.join("\n")),
        None => Reply::new(chosen.code(), text.join("\n")),
    };
    Decision::Reject(reply.unwrap_or_else(|_| chosen.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u16, lines: &[&str]) -> Answer {
        Answer {
            code,
            lines: lines.iter().map(|l| l.to_string()).collect(),
        }
    }

    fn wire(reply: &Reply) -> String {
        String::from_utf8(reply.to_bytes()).unwrap()
    }

    #[test]
    fn refusals_pass_on_code_enhanced_code_and_text() {
        let r = answer(550, &["5.1.1 <carol> User doesn't exist: carol"]).refusal();
        assert_eq!(wire(&r), "550 5.1.1 <carol> User doesn't exist: carol\r\n");
        let r = answer(452, &["4.2.2 Mailbox full", "4.2.2 try tomorrow"]).refusal();
        assert_eq!(
            wire(&r),
            "452-4.2.2 Mailbox full\r\n452 4.2.2 try tomorrow\r\n"
        );
    }

    #[test]
    fn a_downstream_421_does_not_close_our_session() {
        let r = answer(421, &["4.3.2 smtp-sink Service shutting down"]).refusal();
        assert_eq!(wire(&r), "451 4.3.2 smtp-sink Service shutting down\r\n");
    }

    #[test]
    fn replies_without_or_with_a_wrong_enhanced_code_get_a_generic_one() {
        assert_eq!(
            wire(&answer(554, &["no thanks"]).refusal()),
            "554 5.0.0 no thanks\r\n"
        );
        assert_eq!(
            wire(&answer(550, &["4.1.1 confused"]).refusal()),
            "550 5.0.0 4.1.1 confused\r\n"
        );
        assert_eq!(
            wire(&answer(250, &["Ok: queued as 1A"]).delivered()),
            "250 2.0.0 Ok: queued as 1A\r\n"
        );
    }

    #[test]
    fn an_answer_that_is_no_refusal_is_a_protocol_error() {
        for code in [250, 354, 199, 600] {
            assert_eq!(answer(code, &["x"]).refusal(), protocol_error(), "{code}");
        }
    }

    #[test]
    fn text_from_the_downstream_cannot_inject_a_reply() {
        let r = answer(550, &["5.7.1 no\r\n250 2.0.0 ok"]).refusal();
        assert_eq!(wire(&r), "550-5.7.1 no\r\n550 5.7.1 250 2.0.0 ok\r\n");
    }

    #[test]
    fn summaries_for_one_reply_per_message() {
        let ok = answer(250, &["2.0.0 Ok: queued as 1A"]).delivered();
        let temp = answer(452, &["4.2.2 <b> Mailbox full"]).refusal();
        let perm = answer(550, &["5.1.1 <c> No such user"]).refusal();

        assert_eq!(
            summary(&[ok.clone(), ok.clone()]),
            Decision::AcceptWith(ok.clone())
        );
        let other = answer(250, &["2.0.0 <b> Saved"]).delivered();
        assert_eq!(summary(&[ok.clone(), other]), Decision::Accept);
        assert_eq!(
            summary(std::slice::from_ref(&perm)),
            Decision::Reject(perm.clone())
        );
        // Nothing delivered: the transient refusal wins, a retry may succeed.
        assert_eq!(
            summary(&[perm.clone(), temp.clone()]),
            Decision::Reject(temp.clone())
        );
        // Some delivered: the refusal says so.
        let Decision::Reject(partial) = summary(&[ok, perm]) else {
            panic!("a partial delivery is refused");
        };
        assert_eq!(
            wire(&partial),
            "550-5.1.1 <c> No such user\r\n\
             550 5.1.1 1 of 2 recipients were delivered before this refusal\r\n"
        );
    }
}
