//! `--rate`: connections per client at connect, messages per client, per authenticated user
//! and per sender domain at MAIL, recipients per client at RCPT; counted in the process and,
//! with `--redis`, across the fleet (see `rates.rs`).

use std::sync::Arc;

use crate::check::{Check, CheckFuture, Facts, Stage, Stages, Verdict};
use crate::rates::{RateKind, Rates};

/// The rates of `--rate`.
#[derive(Debug)]
pub struct RateLimits {
    /// The rates, and the store they are shared through.
    pub rates: Arc<Rates>,
}

impl Check for RateLimits {
    fn name(&self) -> &'static str {
        "rates"
    }

    fn stages(&self) -> Stages {
        Stages {
            connect: self.rates.counts(RateKind::Connections),
            mail: self.rates.counts_at_mail(),
            rcpt: self.rates.counts(RateKind::Recipients),
            ..Stages::default()
        }
    }

    fn check<'a>(&'a self, facts: &'a Facts, stage: &'a Stage<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            let client = facts.conn.client;
            let refusal = match stage {
                Stage::Connect => self.rates.at_connect(client).await,
                Stage::Mail(path, _) => {
                    let user = facts.conn.auth.as_ref().and_then(|a| a.username.clone());
                    self.rates.at_mail(client, user, path).await
                }
                Stage::Rcpt(..) => self.rates.at_rcpt(client).await,
                _ => None,
            };
            refusal.map_or_else(Verdict::go_on, Verdict::Refuse)
        })
    }
}
