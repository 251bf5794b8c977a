//! The per-connection and per-client limits a handler enforces (the rest are the session's
//! and the server's, see `limits.rs`): messages per connection at MAIL, and AUTH failures
//! per client, refused before the password is looked at once over the rate.

use smtp_session::Decision;

use crate::check::{bad_credentials, Check, CheckFuture, Facts, Stage, Stages, Verdict};
use crate::limits::Guard;

/// The limits of `--max-messages-per-connection` and `--auth-failure-limit`.
#[derive(Debug)]
pub struct Limits {
    /// What the flags set.
    pub guard: Guard,
}

impl Check for Limits {
    fn name(&self) -> &'static str {
        "limits"
    }

    fn stages(&self) -> Stages {
        Stages {
            mail: self.guard.limits_messages(),
            auth: self.guard.limits_auth(),
            ..Stages::default()
        }
    }

    fn check<'a>(&'a self, facts: &'a Facts, stage: &'a Stage<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            let refusal = match stage {
                Stage::Mail(..) => self.guard.mail_from(&facts.hostname, facts.messages),
                Stage::Auth(_) => self.guard.auth_refused(facts.conn.client).await,
                _ => None,
            };
            refusal.map_or_else(Verdict::go_on, Verdict::Refuse)
        })
    }

    /// A wrong password counts as a failure of the client; one too many is refused with
    /// `454` in place of the `535`.
    fn refused<'a>(
        &'a self,
        facts: &'a Facts,
        stage: &'a Stage<'a>,
        answer: &'a Decision,
    ) -> CheckFuture<'a, Option<Decision>> {
        Box::pin(async move {
            if !matches!(stage, Stage::Auth(_)) || *answer != bad_credentials() {
                return None;
            }
            self.guard.auth_failed(facts.conn.client).await
        })
    }
}
