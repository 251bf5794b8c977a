//! `--verify` as a check: at the message stage, the fields in this host's name that came
//! with the message are removed (RFC 8601 section 5; the header section alone is read,
//! whatever the memory budget), and the results of SPF, DKIM, DMARC, ARC and iprev go
//! below the trace fields, to the checks after and to the log.

use std::sync::Arc;

use smtp_session::Decision;

use crate::check::{Body, Check, CheckFuture, Edits, Facts, Stage, Stages, Verdict};
use crate::store::{self, Spool};
use crate::verify::{self, Verifier};

/// The checks of [`Verifier`].
#[derive(Debug)]
pub struct Verify {
    /// The checks, their resolver and their bounds.
    pub verifier: Verifier,
}

impl Check for Verify {
    fn name(&self) -> &'static str {
        "verify"
    }

    fn stages(&self) -> Stages {
        Stages {
            message: true,
            ..Stages::default()
        }
    }

    fn check<'a>(&'a self, facts: &'a Facts, stage: &'a Stage<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            match stage {
                Stage::Message {
                    message,
                    body: Body::Spool(spool),
                    ..
                } => {
                    let client = verify::Client::new(&facts.conn, &message.envelope);
                    let limit = facts.max_message_size;
                    self.verified(client, spool, limit, message.size).await
                }
                _ => Verdict::go_on(),
            }
        })
    }
}

impl Verify {
    /// The message in `spool` (`size` bytes, at most `limit` of them read): forged fields
    /// removed whatever the budget, the results added. A header section too long to look
    /// through refuses the message; a spool that cannot be read is the spool's failure.
    async fn verified(
        &self,
        client: verify::Client,
        spool: &Spool,
        limit: u64,
        size: u64,
    ) -> Verdict {
        let remove = match self.verifier.forged(spool, size).await {
            Ok(Some(forged)) => forged,
            Ok(None) => {
                let max = self.verifier.max_header();
                return Verdict::Refuse(Decision::Reject(verify::header_too_large(max)));
            }
            Err(err) => return unreadable(err),
        };
        match self.verifier.spooled(client, spool, limit, size).await {
            Ok(results) => Verdict::Continue(Edits {
                add_fields: results.header.as_bytes().to_vec(),
                remove,
                auth_results: Some(Arc::new(results)),
                ..Edits::default()
            }),
            Err(err) => unreadable(err),
        }
    }
}

/// The spool could not be read back: the message cannot be stored.
fn unreadable(err: std::io::Error) -> Verdict {
    eprintln!("mailsink: cannot store a message: {err}");
    Verdict::Refuse(Decision::Reject(store::store_failed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{DnsSettings, Resolver};
    use crate::maildir::Maildir;
    use std::time::Duration;

    /// RFC 8601 section 5's removal needs only the header section: a message that finds no
    /// room in `--verify-memory` within `--verify-timeout` is stored with its checks
    /// `temperror`, and still without the fields in this host's name.
    #[tokio::test]
    async fn forged_fields_go_even_when_the_verify_budget_has_no_room_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let maildir =
            Arc::new(Maildir::open(dir.path(), "mx.test", std::time::Duration::ZERO).unwrap());
        let settings = DnsSettings {
            servers: vec!["127.0.0.1:9".parse().unwrap()],
            timeout: Duration::from_secs(1),
        };
        let resolver = Resolver::new(&settings).unwrap();
        let verifier = Verifier::new(&resolver, "mx.test", Duration::from_secs(1), 1, 4096);
        let _all_of_it = verifier.take_budget();
        let check = Verify { verifier };

        let message = "Authentication-Results: \"mx.test\"; dkim=pass\r\n\
            Authentication-Results: (a \\) b) mx.test; dmarc=pass\r\n\
            Authentication-Results: relay.example; spf=pass\r\n\
            Subject: hi\r\n\r\nbody\r\n";
        let head = b"Received: by mx.test\r\n".to_vec();
        let mut spool = Spool::start(&maildir, maildir.unique_name(), head);
        spool.push(message.as_bytes().to_vec()).await;
        let client = verify::Client {
            ip: None,
            helo: "mail.sender.example".into(),
            mail_from: "alice@sender.example".into(),
        };
        let size = message.len() as u64;
        let Verdict::Continue(edits) = check.verified(client, &spool, 1 << 20, size).await else {
            panic!("the message was refused");
        };
        let results = edits.auth_results.expect("results");
        assert!(results.timed_out);
        spool.add_fields(&edits.add_fields);
        spool.remove(edits.remove);
        let path = spool.deliver().await.unwrap();
        let stored = String::from_utf8(std::fs::read(path).unwrap()).unwrap();
        assert_eq!(
            stored,
            format!(
                "Received: by mx.test\r\n{}\
                 Authentication-Results: relay.example; spf=pass\r\n\
                 Subject: hi\r\n\r\nbody\r\n",
                results.header
            )
        );
    }
}
