//! `--verify`: who sent a message, as far as DNS can tell. SPF (RFC 7208) for the HELO and
//! the MAIL FROM identities, DKIM (RFC 6376), DMARC (RFC 7489), ARC (RFC 8617) and iprev
//! (RFC 8601 section 3), all by mail-auth, asking the process's resolver ([`crate::dns`]).
//!
//! The results become an `Authentication-Results:` field (RFC 8601) naming this host, put
//! below the trace fields of every stored message; the policy script reads them with
//! `msg:auth_results()`, and the log line of the message carries them.
//!
//! Bounds:
//! - Time: the whole verification has [`Verifier::timeout`]. The checks run side by side
//!   (SPF twice, DKIM, ARC, iprev), then DMARC, which needs SPF's and DKIM's results; a
//!   check not done by the deadline is a `temperror`. A DNS server that never answers costs
//!   a message this long, never its session.
//! - Memory: DKIM and ARC hash the whole message, so the message (at most the size limit)
//!   is read back from its spool into memory. All messages being verified at once share a
//!   budget ([`Verifier::new`]'s `memory`); a message waits for its share, within the same
//!   deadline. A message larger than the budget waits for all of it.
//! - The header section: forged `Authentication-Results:` fields (RFC 8601 section 5) are
//!   found in the header section alone, read outside the budget and without waiting for
//!   it, at most [`Verifier::new`]'s `max_header` bytes of it. A message whose header
//!   section is longer is refused ([`header_too_large`]): its fields could not all be
//!   looked at.
//! - The runtime's one thread: parsing and hashing run on a blocking thread, whose DNS
//!   queries the runtime's thread still serves.

use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::common::verify::VerifySignature;
use mail_auth::dkim::DkimError;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, DnsError, Error, IprevOutput, IprevResult, MessageAuthenticator, SpfOutput,
    SpfResult,
};
use serde::Serialize;
use smtp_session::{Envelope, Reply, ReversePath};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::dns::Resolver;
use crate::facts::ConnFacts;
use crate::store::Spool;

mod authserv;

pub use authserv::forged_fields;

/// The budget is counted in pieces of this size.
const BUDGET_UNIT: u64 = 64 * 1024;

/// The client as SPF and iprev see it.
#[derive(Clone, Debug)]
pub struct Client {
    /// `None` over a UNIX socket: SPF and iprev are not evaluated.
    pub ip: Option<IpAddr>,
    /// The HELO/EHLO name.
    pub helo: String,
    /// The MAIL FROM address, empty for the null reverse path.
    pub mail_from: String,
}

impl Client {
    /// The client of the connection `facts` describes, sending `envelope`.
    pub fn new(facts: &ConnFacts, envelope: &Envelope) -> Client {
        Client {
            ip: facts.info.remote_ip.map(|ip| ip.to_canonical()),
            helo: facts
                .helo
                .as_ref()
                .map(|h| h.host.clone())
                .unwrap_or_default(),
            mail_from: match &envelope.mail_from {
                ReversePath::Null => String::new(),
                path @ ReversePath::Mailbox(_) => path.to_string(),
            },
        }
    }

    /// The MAIL FROM domain, or the HELO name for the null reverse path (RFC 7208 section
    /// 2.4); DMARC's RFC5321.MailFrom domain too.
    fn mail_from_domain(&self) -> &str {
        match self.mail_from.rsplit_once('@') {
            Some((_, domain)) => domain,
            None => &self.helo,
        }
    }

    /// The HELO name when SPF can check it: a domain, not an address literal.
    fn helo_domain(&self) -> Option<&str> {
        let helo = self.helo.as_str();
        (!helo.is_empty() && !helo.starts_with('[') && helo.contains('.')).then_some(helo)
    }
}

/// One DKIM signature's result.
#[derive(Clone, Debug, Serialize)]
pub struct DkimVerdict {
    /// `pass`, `fail`, `neutral`, `permerror`, `temperror`.
    pub result: &'static str,
    /// The signing domain (`d=`), when the signature could be read.
    pub domain: Option<String>,
    /// The selector (`s=`), when the signature could be read.
    pub selector: Option<String>,
}

/// What `--verify` found, with RFC 8601's result names (`pass`, `fail`, `softfail`,
/// `neutral`, `none`, `temperror`, `permerror`).
#[derive(Clone, Debug, Serialize)]
pub struct AuthResults {
    /// SPF for the MAIL FROM identity (the HELO name's for `<>`).
    pub spf: &'static str,
    /// SPF for the HELO identity.
    pub spf_helo: &'static str,
    /// One entry per DKIM signature, in the message's order; empty when unsigned.
    pub dkim: Vec<DkimVerdict>,
    /// DMARC for the From: domain.
    pub dmarc: &'static str,
    /// The From: domain's published DMARC policy: `none`, `quarantine` or `reject`.
    pub dmarc_policy: &'static str,
    /// The ARC chain's validation.
    pub arc: &'static str,
    /// The client address's reverse DNS name, forward-confirmed.
    pub iprev: &'static str,
    /// True when the deadline cut a check short (its result is a `temperror`).
    pub timed_out: bool,
    /// The whole field, `Authentication-Results: ...` with its final CRLF.
    #[serde(skip)]
    pub header: String,
}

/// `552 5.3.4`: the header section is longer than `--verify-max-header`, so the fields in
/// this host's name could not all be looked for.
pub fn header_too_large(max_header: u64) -> Reply {
    let text = format!("5.3.4 Message header section too large (over {max_header} bytes)");
    Reply::new(552, &text).expect("a valid reply")
}

impl AuthResults {
    /// Counts each check's result in the metrics (`--metrics`); an unsigned message counts
    /// as `dkim` `none`.
    pub fn count(&self) {
        let checks = [
            ("spf", self.spf),
            ("spf_helo", self.spf_helo),
            ("dmarc", self.dmarc),
            ("arc", self.arc),
            ("iprev", self.iprev),
        ];
        for (method, result) in checks {
            if !result.is_empty() {
                crate::metrics::authentication_result(method, result);
            }
        }
        if self.dkim.is_empty() {
            crate::metrics::authentication_result("dkim", "none");
        }
        for signature in &self.dkim {
            crate::metrics::authentication_result("dkim", signature.result);
        }
    }
}

/// The checks, the resolver they ask, and their bounds.
#[derive(Clone)]
pub struct Verifier {
    authenticator: MessageAuthenticator,
    hostname: Arc<str>,
    timeout: Duration,
    budget: Arc<Semaphore>,
    budget_units: u32,
    max_header: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hostname", &self.hostname)
            .field("timeout", &self.timeout)
            .field("budget_units", &self.budget_units)
            .field("max_header", &self.max_header)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Checks asking `resolver` (sharing its cache), naming `hostname` in the field, each
    /// message within `timeout`, all messages at once within `memory` bytes; header
    /// sections of at most `max_header` bytes (see [`Verifier::forged`]).
    pub fn new(
        resolver: &Resolver,
        hostname: &str,
        timeout: Duration,
        memory: u64,
        max_header: u64,
    ) -> Verifier {
        let units = memory
            .div_ceil(BUDGET_UNIT)
            .clamp(1, u64::from(u32::MAX >> 3)) as u32;
        Verifier {
            authenticator: MessageAuthenticator(resolver.hickory().clone()),
            hostname: hostname.into(),
            timeout,
            budget: Arc::new(Semaphore::new(units as usize)),
            budget_units: units,
            max_header,
        }
    }

    /// The longest header section [`Verifier::forged`] reads.
    pub fn max_header(&self) -> u64 {
        self.max_header
    }

    /// Where the message in `spool` (`size` bytes as received) carries
    /// `Authentication-Results:` fields in this host's name, which no one outside could
    /// have added: RFC 8601 section 5 has them deleted. Only the header section is read,
    /// at most `max_header` bytes, outside the memory budget: `None` when it is longer.
    pub async fn forged(
        &self,
        spool: &Spool,
        size: u64,
    ) -> std::io::Result<Option<Vec<Range<u64>>>> {
        let front = spool.read_body(self.max_header).await?;
        let front = &front[..front.len().min(self.max_header as usize)];
        let whole = front.len() as u64 >= size;
        if authserv::header_end(front).is_none() && !whole {
            return Ok(None);
        }
        Ok(Some(forged_fields(front, &self.hostname)))
    }

    /// Takes the whole memory budget, as messages being verified at once would.
    #[cfg(test)]
    pub fn take_budget(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.budget
            .clone()
            .try_acquire_many_owned(self.budget_units)
            .expect("the budget is free")
    }

    /// The longest a message's verification takes.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Verifies the message in `spool` (its body as received, without the trace fields),
    /// at most `limit` bytes of it. An error reading the spool is the spool's failure.
    pub async fn spooled(
        &self,
        client: Client,
        spool: &Spool,
        limit: u64,
        size: u64,
    ) -> std::io::Result<AuthResults> {
        let deadline = Instant::now() + self.timeout;
        let units = size
            .max(1)
            .div_ceil(BUDGET_UNIT)
            .min(u64::from(self.budget_units)) as u32;
        let permit =
            tokio::time::timeout_at(deadline, self.budget.clone().acquire_many_owned(units));
        let Ok(Ok(permit)) = permit.await else {
            return Ok(self.cut_short(&client));
        };
        let message = spool.read_body(limit).await?;
        let results = self.message(client, message, deadline).await;
        drop(permit);
        Ok(results)
    }

    /// Verifies `message` by `deadline`, on a blocking thread.
    async fn message(&self, client: Client, message: Vec<u8>, deadline: Instant) -> AuthResults {
        let checks = Checks {
            authenticator: self.authenticator.clone(),
            hostname: self.hostname.clone(),
            deadline,
        };
        let runtime = tokio::runtime::Handle::current();
        let fallback = client.clone();
        let task =
            tokio::task::spawn_blocking(move || runtime.block_on(checks.run(&client, &message)));
        // Every check inside stops at the deadline; this only guards against a task that
        // failed.
        match tokio::time::timeout_at(deadline + Duration::from_secs(1), task).await {
            Ok(Ok(results)) => results,
            _ => self.cut_short(&fallback),
        }
    }

    /// All `temperror`: nothing was checked in time.
    fn cut_short(&self, client: &Client) -> AuthResults {
        let checks = Checks {
            authenticator: self.authenticator.clone(),
            hostname: self.hostname.clone(),
            deadline: Instant::now(),
        };
        let message = AuthenticatedMessage::default();
        checks.report(
            client,
            &message,
            Outputs {
                spf_helo: None,
                spf: None,
                dkim: None,
                arc: None,
                iprev: None,
                dmarc: None,
            },
        )
    }
}

/// One message's checks.
struct Checks {
    authenticator: MessageAuthenticator,
    hostname: Arc<str>,
    deadline: Instant,
}

/// What came back by the deadline (`None`: too late), or `Some(None)` where a check does
/// not apply.
struct Outputs<'x> {
    spf_helo: Option<Option<SpfOutput>>,
    spf: Option<Option<SpfOutput>>,
    dkim: Option<Vec<DkimOutput<'x>>>,
    arc: Option<ArcOutput<'x>>,
    iprev: Option<Option<IprevOutput>>,
    dmarc: Option<DmarcOutput>,
}

fn timed_out() -> Error {
    Error::Dns(DnsError::Resolver("verification timed out".into()))
}

impl Checks {
    async fn within<T>(&self, check: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::time::timeout_at(self.deadline, check).await.ok()
    }

    /// SPF for the HELO identity, when there is an address and a HELO domain.
    async fn spf_helo(&self, client: &Client) -> Option<SpfOutput> {
        let (ip, helo) = (client.ip?, client.helo_domain()?);
        let params = SpfParameters::verify_ehlo(ip, helo, &self.hostname);
        Some(self.authenticator.verify_spf(params).await)
    }

    /// SPF for the MAIL FROM identity (the HELO name's for `<>`), when there is an address.
    async fn spf_mail_from(&self, client: &Client) -> Option<SpfOutput> {
        let ip = client.ip?;
        let host = &*self.hostname;
        let params = if client.mail_from.is_empty() {
            SpfParameters::verify_ehlo(ip, client.helo_domain()?, host)
        } else {
            SpfParameters::verify_mail_from(ip, &client.helo, host, &client.mail_from)
        };
        Some(self.authenticator.verify_spf(params).await)
    }

    async fn run(self, client: &Client, raw: &[u8]) -> AuthResults {
        let message = AuthenticatedMessage::parse(raw).unwrap_or_default();
        let auth = &self.authenticator;
        let spf_helo = self.within(self.spf_helo(client));
        let spf = self.within(self.spf_mail_from(client));
        let dkim = self.within(async {
            let outputs = auth.verify_dkim(&message).await;
            outputs
                .into_iter()
                .map(|output| body_hash_fails(&message, output))
                .collect::<Vec<_>>()
        });
        let arc = self.within(async {
            let output = auth.verify_arc(&message).await;
            // RFC 8617 section 4.4: an ARC chain either validates or fails.
            match output.result() {
                DkimResult::Neutral(err) => {
                    let err = err.clone();
                    output.with_result(DkimResult::Fail(err))
                }
                _ => output,
            }
        });
        let iprev = self.within(async {
            match client.ip {
                Some(ip) => Some(auth.verify_iprev(ip).await),
                None => None,
            }
        });
        let (spf_helo, spf, dkim, arc, iprev) = tokio::join!(spf_helo, spf, dkim, arc, iprev);

        let dmarc = match (&spf, &dkim) {
            (Some(spf_out), Some(dkim_out)) => {
                let none = SpfOutput::new(client.mail_from_domain().into());
                let spf_out = spf_out.as_ref().unwrap_or(&none);
                let params =
                    DmarcParameters::new(&message, dkim_out, client.mail_from_domain(), spf_out);
                self.within(auth.verify_dmarc(params)).await
            }
            _ => None,
        };
        let outputs = Outputs {
            spf_helo,
            spf,
            dkim,
            arc,
            iprev,
            dmarc,
        };
        self.report(client, &message, outputs)
    }

    /// The results, with a `temperror` for each check the deadline cut short.
    fn report(
        &self,
        client: &Client,
        message: &AuthenticatedMessage<'_>,
        outputs: Outputs<'_>,
    ) -> AuthResults {
        let timed_out = outputs.late();
        let done = outputs.settled(message);
        let header = self.field(client, message, &done);
        AuthResults {
            spf: done.spf.as_ref().map_or("none", |o| spf_name(o.result())),
            spf_helo: done
                .spf_helo
                .as_ref()
                .map_or("none", |o| spf_name(o.result())),
            dkim: done.dkim.iter().map(dkim_verdict).collect(),
            dmarc: dmarc_name(&done.dmarc.result()),
            dmarc_policy: match done.dmarc.policy() {
                mail_auth::dmarc::Policy::Reject => "reject",
                mail_auth::dmarc::Policy::Quarantine => "quarantine",
                _ => "none",
            },
            arc: dkim_name(done.arc.result()),
            iprev: done
                .iprev
                .as_ref()
                .map_or("none", |o| iprev_name(&o.result)),
            timed_out,
            header,
        }
    }

    /// The `Authentication-Results:` field of `done`, with its final CRLF.
    fn field(
        &self,
        client: &Client,
        message: &AuthenticatedMessage<'_>,
        done: &Done<'_>,
    ) -> String {
        let mut field = AuthenticationResults::new(&self.hostname);
        if let (Some(ip), Some(out)) = (client.ip, &done.spf_helo) {
            field = field.with_spf_ehlo_result(out, ip, &client.helo);
        }
        if let (Some(ip), Some(out)) = (client.ip, &done.spf) {
            field = field.with_spf_mailfrom_result(out, ip, &client.mail_from, &client.helo);
        }
        field = field
            .with_dkim_results(&done.dkim, message.from())
            .with_arc_result(&done.arc, client.ip.unwrap_or(IpAddr::from([0, 0, 0, 0])))
            .with_dmarc_result(&done.dmarc);
        if let (Some(ip), Some(out)) = (client.ip, &done.iprev) {
            field = field.with_iprev_result(out, ip);
        }
        let mut header = format!("Authentication-Results: {field}");
        if done.dkim.is_empty() {
            header.push_str(";\r\n\tdkim=none");
        }
        header.push_str("\r\n");
        header
    }
}

/// Every check's output, a `temperror` for those the deadline cut short; `None` where a
/// check does not apply.
struct Done<'x> {
    spf_helo: Option<SpfOutput>,
    spf: Option<SpfOutput>,
    dkim: Vec<DkimOutput<'x>>,
    arc: ArcOutput<'x>,
    iprev: Option<IprevOutput>,
    dmarc: DmarcOutput,
}

impl<'x> Outputs<'x> {
    /// True when the deadline cut a check short.
    fn late(&self) -> bool {
        self.spf_helo.is_none()
            || self.spf.is_none()
            || self.dkim.is_none()
            || self.arc.is_none()
            || self.iprev.is_none()
            || self.dmarc.is_none()
    }

    /// The outputs, a `temperror` in place of each one missing.
    fn settled(self, message: &AuthenticatedMessage<'_>) -> Done<'x> {
        let spf_late = || Some(SpfOutput::new(String::new()).with_result(SpfResult::TempError));
        let arc = self.arc.unwrap_or_else(|| {
            let result = if message.ams_headers.is_empty() && message.as_headers.is_empty() {
                DkimResult::None
            } else {
                DkimResult::TempError(timed_out())
            };
            ArcOutput::default().with_result(result)
        });
        let dmarc = self.dmarc.unwrap_or_else(|| {
            let from = message.from().rsplit_once('@').map_or("", |(_, d)| d);
            DmarcOutput::new(from.to_ascii_lowercase())
                .with_spf_result(DmarcResult::TempError(timed_out()))
                .with_dkim_result(DmarcResult::TempError(timed_out()))
        });
        Done {
            spf_helo: self.spf_helo.unwrap_or_else(spf_late),
            spf: self.spf.unwrap_or_else(spf_late),
            // Only signatures can be late.
            dkim: self.dkim.unwrap_or_else(|| {
                (0..message.dkim_headers.len())
                    .map(|_| DkimOutput::temp_err(timed_out()))
                    .collect()
            }),
            arc,
            iprev: self.iprev.unwrap_or_else(|| {
                Some(IprevOutput {
                    result: IprevResult::TempError(timed_out()),
                    ptr: None,
                })
            }),
            dmarc,
        }
    }
}

/// A body that does not match its signature's hash is a DKIM failure: PERMFAIL "body hash
/// did not verify" (RFC 6376 section 6.1.3), `fail` in RFC 8601 section 2.7.1 ("failed the
/// verification tests"). mail-auth says `neutral` there, as OpenDKIM does.
fn body_hash_fails<'x>(
    message: &'x AuthenticatedMessage<'x>,
    output: DkimOutput<'x>,
) -> DkimOutput<'x> {
    let DkimResult::Neutral(err @ Error::Dkim(DkimError::FailedBodyHashMatch)) = output.result()
    else {
        return output;
    };
    let signed = output.signature().and_then(|signature| {
        message
            .dkim_headers
            .iter()
            .find(|header| std::ptr::eq(&header.header, signature))
    });
    let failed = DkimOutput::fail(err.clone());
    match signed {
        Some(header) => failed.with_signature(&header.header),
        None => failed,
    }
}

fn dkim_verdict(output: &DkimOutput<'_>) -> DkimVerdict {
    let signature = output.signature();
    DkimVerdict {
        result: dkim_name(output.result()),
        domain: signature.map(|s| s.domain().to_string()),
        selector: signature.map(|s| s.selector().to_string()),
    }
}

fn spf_name(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_name(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_name(result: &DmarcResult) -> &'static str {
    match result {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

fn iprev_name(result: &IprevResult) -> &'static str {
    match result {
        IprevResult::Pass => "pass",
        IprevResult::Fail(_) => "fail",
        IprevResult::TempError(_) => "temperror",
        IprevResult::PermError(_) => "permerror",
        IprevResult::None => "none",
    }
}
