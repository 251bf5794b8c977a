//! The client's reverse DNS name, forward-confirmed, looked up at the connect stage so
//! that the checks after, the log and the `Received:` field have it. The greeting waits
//! for it, at most the DNS timeout; with a PROXY header the name is the client's, not the
//! proxy's.

use crate::check::{Check, CheckFuture, Edits, Facts, Stage, Stages, Verdict};
use crate::dns::Resolver;

/// Looks the client's name up in DNS.
#[derive(Debug)]
pub struct ReverseDns {
    /// The process's resolver.
    pub resolver: Resolver,
}

impl Check for ReverseDns {
    fn name(&self) -> &'static str {
        "reverse DNS"
    }

    fn stages(&self) -> Stages {
        Stages {
            connect: true,
            ..Stages::default()
        }
    }

    fn check<'a>(&'a self, facts: &'a Facts, _: &'a Stage<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            let Some(ip) = facts.conn.info.remote_ip else {
                return Verdict::go_on();
            };
            Verdict::Continue(Edits {
                remote_ptr: Some(self.resolver.verified_ptr(ip).await),
                ..Edits::default()
            })
        })
    }
}
