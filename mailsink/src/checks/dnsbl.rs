//! `--dnsbl`: the client screened against DNS lists before its greeting (see `dnsbl.rs`).
//! With `drop`, a client over the threshold is refused in place of the greeting; with
//! `enforce`, it is greeted and each MAIL and RCPT is refused; with `log`, only recorded.
//! The screening goes to the checks after (the greylist skips a client on an allow list),
//! and to the disconnect line, the refused client's too.

use std::sync::Arc;

use crate::check::{Check, CheckFuture, Facts, Findings, Stage, Stages, Verdict};
use crate::dnsbl::{Action, Dnsbl};

/// The screening of `--dnsbl`.
#[derive(Debug)]
pub struct Screen {
    /// The lists, the threshold and the action.
    pub dnsbl: Dnsbl,
}

impl Check for Screen {
    fn name(&self) -> &'static str {
        "dnsbl"
    }

    fn stages(&self) -> Stages {
        let enforce = self.dnsbl.action() == Action::Enforce;
        Stages {
            connect: true,
            mail: enforce,
            rcpt: enforce,
            ..Stages::default()
        }
    }

    fn check<'a>(&'a self, facts: &'a Facts, stage: &'a Stage<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            let Some(client) = facts.conn.client.filter(|c| !c.exempt) else {
                return Verdict::go_on();
            };
            if !matches!(stage, Stage::Connect) {
                // Enforce: the screening made at connect decides.
                let refusal = facts
                    .conn
                    .screening
                    .as_ref()
                    .and_then(|screening| self.dnsbl.refusal(screening, client.ip));
                return refusal.map_or_else(Verdict::go_on, Verdict::Refuse);
            }
            let screening = self.dnsbl.screen(client.ip).await;
            let refusal = match self.dnsbl.action() {
                Action::Drop => self.dnsbl.refusal(&screening, client.ip),
                _ => None,
            };
            // Kept refused or not: the disconnect line says why.
            let found = Findings {
                screening: Some(Arc::new(screening)),
                ..Findings::default()
            };
            refusal
                .map_or_else(Verdict::go_on, Verdict::Refuse)
                .found(found)
        })
    }
}
