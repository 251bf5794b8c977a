//! `--relay`: delivery to a downstream SMTP or LMTP server instead of the Maildir, as a
//! before-queue filter: the client is answered only once the downstream has answered, and
//! with what the downstream said. docs/relay.md is the operator's guide.
//!
//! The relay runs in the message hook, on the body streamed into a spool file as it
//! arrived (as for the Maildir, see [`spooled`]; constant memory per connection), read back
//! in pieces as the next hop takes them. The downstream connection is taken only for the
//! final transfer, never for as long as a slow client takes to send its data (Postfix's
//! `smtpd_proxy_options = speed_adjust`), and a message that is never completed (RSET, too
//! big, the client gone) never reaches the downstream, so no transaction there has to be
//! broken off.
//!
//! One transaction per message, under one deadline (`--relay-timeout`) that covers waiting
//! for a connection, connecting and every reply. Connections are reused for
//! `--relay-idle` seconds and at most `--relay-max-connections` are open at once.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use smtp_session::trace::{Protocol, Received};
use smtp_session::{Decision, Envelope, Message, Reply};
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::time::{timeout, timeout_at, Instant};

use crate::facts::ConnFacts;

mod body;
mod envelope;
mod lmtp;
mod reply;
mod smtp;
mod spooled;
mod target;

use body::Outgoing;
use envelope::{BodyFacts, Leg};
use reply::Answer;
use spooled::SpooledText;
pub use target::Target;

/// The command-line settings of the relay.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Deliver to this server instead of the Maildir, answering the client only once it has
    /// answered: smtp://HOST[:PORT][?starttls=required|opportunistic|no] (port 25,
    /// opportunistic STARTTLS by default), smtps://HOST[:PORT] (port 465), lmtp://HOST:PORT or
    /// lmtp+unix:///PATH.
    #[arg(long, value_name = "URL", value_parser = Target::parse, conflicts_with = "discard")]
    pub relay: Option<Target>,

    /// Longest time to relay one message: waiting for a connection, connecting and every
    /// reply. Past it the client gets 451 4.4.2.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, requires = "relay",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub relay_timeout: u64,

    /// Connections to the relay's server open at once, busy or idle; a message waits for one
    /// (within the relay timeout, then 451 4.4.5).
    #[arg(long, value_name = "N", default_value_t = 20, requires = "relay",
          value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub relay_max_connections: u32,

    /// How long an idle connection to the relay's server is kept for the next message; 0
    /// closes each after its message.
    #[arg(long, value_name = "SECONDS", default_value_t = 5, requires = "relay",
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub relay_idle: u64,

    /// PEM file of CA certificates trusted for the relay's TLS (smtps:// and
    /// starttls=required), besides the built-in web PKI roots.
    #[arg(long, value_name = "PEM", requires = "relay")]
    pub relay_tls_ca: Option<PathBuf>,

    /// Directory (a Maildir) where bodies are written while they arrive, to be relayed from
    /// there and removed; keep it on a disk, not in a RAM file system [default: the
    /// temporary directory's mailsink-spool].
    #[arg(long, value_name = "DIR", requires = "relay")]
    pub relay_spool: Option<PathBuf>,
}

impl RelayArgs {
    /// Where relayed bodies are spooled.
    pub fn spool_dir(&self) -> PathBuf {
        self.relay_spool
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("mailsink-spool"))
    }
}

/// The downstream connection broke, or answered out of protocol.
#[derive(Debug)]
pub struct Broken(String);

impl Broken {
    fn new(text: impl Into<String>) -> Broken {
        Broken(text.into())
    }
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How to open a connection.
enum Route {
    Smtp(Box<smtp::Route>),
    Lmtp { host: String, port: u16 },
    LmtpUnix(PathBuf),
}

/// The relay: where to, and the connections kept for reuse.
pub struct Relay {
    target: Target,
    route: Route,
    hello: String,
    timeout: Duration,
    reuse_for: Duration,
    permits: Semaphore,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<(Downstream, Instant)>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Where the text of a message to relay is.
pub enum Text<'a> {
    /// In memory: the body as received.
    Memory(&'a [u8]),
    /// In a spool file: the body as received at `offset`, `len` bytes.
    File {
        /// The spool file.
        path: PathBuf,
        /// Where the body starts.
        offset: u64,
        /// The body's length.
        len: u64,
    },
    /// A filter replaced the body: the header section as received (the cuts made), then
    /// the new body, the whole file at `body` (read in pieces as it goes out).
    Replaced {
        /// The header section, with its empty line.
        head: Vec<u8>,
        /// The new body's file.
        body: PathBuf,
        /// Its length.
        len: u64,
    },
}

/// A message's text and the checks' edits to it.
pub struct Content<'a> {
    /// The body as received.
    pub text: Text<'a>,
    /// Header fields for below our `Received:` field, each ended by CRLF.
    pub fields: &'a [u8],
    /// Ranges of the body (in order, apart) to leave out.
    pub cuts: &'a [std::ops::Range<u64>],
}

/// `body` without `cuts`.
pub fn without(body: &[u8], cuts: &[std::ops::Range<u64>]) -> Vec<u8> {
    let mut kept = body.to_vec();
    for cut in cuts.iter().rev() {
        let end = (cut.end as usize).min(kept.len());
        kept.drain((cut.start as usize).min(end)..end);
    }
    kept
}

/// A spooled `text` (not [`Text::Memory`]) opened for reading in pieces.
async fn spooled(
    text: Text<'_>,
    cuts: &[std::ops::Range<u64>],
    bare: bool,
) -> Result<SpooledText, String> {
    let opened = match text {
        Text::File { path, offset, len } => {
            let cuts = cuts.to_vec();
            tokio::task::spawn_blocking(move || SpooledText::open(&path, offset, len, &cuts, bare))
        }
        Text::Replaced { head, body, len } => {
            tokio::task::spawn_blocking(move || SpooledText::replaced(head, &body, len))
        }
        Text::Memory(_) => return Err("not in a spool file".into()),
    };
    match opened.await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    }
}

/// What became of one message.
pub struct Relayed {
    /// The answer to the message hook.
    pub decision: Decision,
    /// Recipients the downstream took.
    pub delivered: usize,
}

impl Relay {
    /// The relay `args` describe, or `None` without `--relay`; `hostname` is our name in
    /// EHLO/LHLO. Reads the CA file.
    pub fn from_args(args: &RelayArgs, hostname: &str) -> Result<Option<Relay>, String> {
        let Some(target) = args.relay.clone() else {
            return Ok(None);
        };
        let ca = match &args.relay_tls_ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("relay TLS CA {}: {e}", path.display()))?;
                if CertificateDer::pem_slice_iter(&pem).next().is_none() {
                    return Err(format!("relay TLS CA {}: no certificate", path.display()));
                }
                Some(pem)
            }
            None => None,
        };
        let route = match &target {
            Target::Smtp { host, port, tls } => Route::Smtp(Box::new(smtp::Route {
                host: host.clone(),
                port: *port,
                tls: *tls,
                hello: ClientId::Domain(hostname.to_string()),
                verified: tls_parameters(host, ca.as_deref(), true)?,
                unverified: tls_parameters(host, None, false)?,
            })),
            Target::Lmtp { host, port } => Route::Lmtp {
                host: host.clone(),
                port: *port,
            },
            Target::LmtpUnix { path } => Route::LmtpUnix(path.clone()),
        };
        Ok(Some(Relay {
            target,
            route,
            hello: hostname.to_string(),
            timeout: Duration::from_secs(args.relay_timeout),
            reuse_for: Duration::from_secs(args.relay_idle),
            permits: Semaphore::new(args.relay_max_connections as usize),
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// The downstream, for the start-up line.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The relay's deadline: the message hook must be allowed longer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Relays `message`, whose text is `content`. `hostname` is ours (the `by` of the
    /// Received: field) and `lmtp_client` says the session is LMTP: its client is then
    /// answered per recipient, else with one reply for the message (see
    /// [`reply::summary`]).
    pub async fn deliver(
        &self,
        facts: &ConnFacts,
        message: &Message,
        content: Content<'_>,
        hostname: &str,
        lmtp_client: bool,
    ) -> Relayed {
        let envelope = &message.envelope;
        let mut trace = received_field(facts, envelope, hostname, lmtp_client);
        trace.extend_from_slice(content.fields);
        let bare = message.bare_line_endings;
        let cut;
        let (outgoing, eight_bit) = match content.text {
            Text::Memory(body) if content.cuts.is_empty() => {
                (Outgoing::new(trace, body, bare), message.eight_bit)
            }
            Text::Memory(body) => {
                cut = without(body, content.cuts);
                (Outgoing::new(trace, &cut, bare), message.eight_bit)
            }
            text => match spooled(text, content.cuts, bare).await {
                Ok(text) => {
                    let eight_bit = message.eight_bit || text.eight_bit();
                    (Outgoing::spooled(trace, text), eight_bit)
                }
                Err(err) => {
                    eprintln!("mailsink: relay: cannot read the spooled message: {err}");
                    let n = envelope.recipients.len();
                    return self.answered(vec![reply::local_error(); n], lmtp_client);
                }
            },
        };
        let body = BodyFacts {
            size: outgoing.size(),
            eight_bit,
        };
        // An SMTP client has one reply for all recipients: a downstream that refuses
        // some of them before the data gets no data (see docs/relay.md).
        let replies = self.relay(envelope, &outgoing, body, !lmtp_client).await;
        self.answered(replies, lmtp_client)
    }

    /// The client's answer from the downstream's `replies`, one per recipient.
    fn answered(&self, replies: Vec<Reply>, lmtp_client: bool) -> Relayed {
        let delivered = replies.iter().filter(|r| !r.is_error()).count();
        let decision = if lmtp_client {
            Decision::PerRecipient(replies)
        } else {
            reply::summary(&replies)
        };
        Relayed {
            decision,
            delivered,
        }
    }

    /// One reply per recipient, 2xx for those the downstream took.
    async fn relay(
        &self,
        envelope: &Envelope,
        outgoing: &Outgoing<'_>,
        body: BodyFacts,
        all_or_nothing: bool,
    ) -> Vec<Reply> {
        let n = envelope.recipients.len();
        let deadline = Instant::now() + self.timeout;
        let Ok(Ok(_permit)) = timeout_at(deadline, self.permits.acquire()).await else {
            eprintln!(
                "mailsink: relay: every connection to {} stayed busy",
                self.target
            );
            return vec![reply::congested(); n];
        };
        let message = Transaction {
            envelope,
            outgoing,
            body,
            all_or_nothing,
        };
        match timeout_at(deadline, self.attempt(&message)).await {
            Ok(replies) => replies,
            Err(_) => {
                eprintln!(
                    "mailsink: relay: {} did not finish within {:?}",
                    self.target, self.timeout
                );
                vec![reply::timed_out(); n]
            }
        }
    }

    /// On an idle connection if there is one; when it turns out the downstream closed it
    /// meanwhile, again on a new one.
    async fn attempt(&self, message: &Transaction<'_>) -> Vec<Reply> {
        let n = message.envelope.recipients.len();
        if let Some(mut conn) = self.take_idle() {
            if let Transacted::Done { replies, reusable } = transact(&mut conn, message).await {
                self.put_back(conn, reusable);
                return replies;
            }
        }
        let mut conn = match self.connect().await {
            Ok(conn) => conn,
            Err(refusal) => return vec![refusal; n],
        };
        match transact(&mut conn, message).await {
            Transacted::Done { replies, reusable } => {
                self.put_back(conn, reusable);
                replies
            }
            Transacted::Stale(Some(answer)) => vec![answer.refusal(); n],
            Transacted::Stale(None) => vec![reply::lost(); n],
        }
    }

    async fn connect(&self) -> Result<Downstream, Reply> {
        let failed = |what: &str, reply: Reply| {
            eprintln!("mailsink: relay: {}: {what}", self.target);
            reply
        };
        match &self.route {
            Route::Smtp(route) => match smtp::Smtp::connect(route, self.timeout).await {
                Ok(conn) => Ok(Downstream::Smtp(Box::new(conn))),
                Err(smtp::ConnectError::Unreachable(why)) => {
                    Err(failed(&why, reply::unreachable()))
                }
                Err(smtp::ConnectError::Tls(why)) => Err(failed(&why, reply::tls_failed())),
                Err(smtp::ConnectError::Refused(answer)) => {
                    Err(failed(&format!("refused: {answer:?}"), answer.refusal()))
                }
            },
            Route::Lmtp { .. } | Route::LmtpUnix(_) => {
                let opened = match &self.route {
                    Route::Lmtp { host, port } => {
                        lmtp::Lmtp::connect_tcp(host, *port, &self.hello).await
                    }
                    Route::LmtpUnix(path) => lmtp::Lmtp::connect_unix(path, &self.hello).await,
                    Route::Smtp(_) => unreachable!("matched as LMTP above"),
                };
                match opened {
                    Ok(conn) => Ok(Downstream::Lmtp(conn)),
                    Err(lmtp::ConnectError::Unreachable(err)) => {
                        Err(failed(&err.to_string(), reply::unreachable()))
                    }
                    Err(lmtp::ConnectError::Broken(broken)) => {
                        Err(failed(&broken.to_string(), reply::unreachable()))
                    }
                    Err(lmtp::ConnectError::Refused(answer)) => {
                        Err(failed(&format!("refused: {answer:?}"), answer.refusal()))
                    }
                }
            }
        }
    }

    /// The most recently used idle connection, if it has not been idle too long. Older
    /// ones are closed.
    fn take_idle(&self) -> Option<Downstream> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        match idle.pop() {
            Some((conn, since)) if since.elapsed() < self.reuse_for => Some(conn),
            Some(expired) => {
                // The rest were idle longer still.
                let all: Vec<_> = std::iter::once(expired).chain(idle.drain(..)).collect();
                drop(idle);
                for (conn, _) in all {
                    close(conn);
                }
                None
            }
            None => None,
        }
    }

    fn put_back(&self, conn: Downstream, reusable: bool) {
        if reusable && !self.reuse_for.is_zero() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.push((conn, Instant::now()));
        } else if reusable {
            close(conn);
        }
        // A connection that is not reusable is dropped: it is broken or closing already.
    }
}

/// Says QUIT in the background, briefly.
fn close(mut conn: Downstream) {
    tokio::spawn(async move {
        let _ = timeout(Duration::from_secs(5), conn.quit()).await;
    });
}

fn tls_parameters(host: &str, ca: Option<&[u8]>, verify: bool) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(host.to_string());
    if let Some(pem) = ca {
        let certs = Certificate::from_pem(pem).map_err(|e| format!("relay TLS CA: {e}"))?;
        builder = builder.add_root_certificate(certs);
    }
    if !verify {
        builder = builder
            .dangerous_accept_invalid_certs(true)
            .dangerous_accept_invalid_hostnames(true);
    }
    builder
        .build_rustls()
        .map_err(|e| format!("relay TLS settings: {e}"))
}

/// RFC 5321 section 4.4: a relay prepends a Received: field, as for any message it accepts.
fn received_field(facts: &ConnFacts, envelope: &Envelope, hostname: &str, lmtp: bool) -> Vec<u8> {
    let date = OffsetDateTime::now_utc()
        .format(&Rfc2822)
        .unwrap_or_default();
    let protocol = Protocol {
        lmtp,
        ehlo: facts.helo.as_ref().is_some_and(|h| h.verb.is_extended()),
        tls: facts.tls.is_some(),
        authenticated: facts.auth.is_some(),
        smtputf8: envelope.mail_params.smtputf8,
    };
    let mut received = Received::new(hostname, protocol, &date)
        .recipients(envelope.recipients.iter().map(|r| &r.path));
    if let Some(helo) = &facts.helo {
        received = received.helo(&helo.host);
    }
    if let Some(ptr) = &facts.info.remote_ptr {
        received = received.reverse_dns(ptr);
    }
    if let Some(ip) = facts.info.remote_ip {
        received = received.remote_ip(ip);
    }
    if let Some(tls) = &facts.tls {
        received = received.tls(tls);
    }
    let mut field = Vec::new();
    received.write_to(&mut field);
    field
}

/// An open connection to the downstream.
enum Downstream {
    /// Boxed: lettre's connection is large, and idle connections are kept in a list.
    Smtp(Box<smtp::Smtp>),
    Lmtp(lmtp::Lmtp),
}

impl Downstream {
    fn leg(&self) -> Leg {
        match self {
            Downstream::Smtp(smtp) => Leg {
                caps: smtp.capabilities(),
                encrypted: smtp.is_encrypted(),
            },
            Downstream::Lmtp(lmtp) => Leg {
                caps: lmtp.capabilities(),
                encrypted: false,
            },
        }
    }

    async fn command(&mut self, line: &str) -> Result<Answer, Broken> {
        match self {
            Downstream::Smtp(smtp) => smtp.command(line).await,
            Downstream::Lmtp(lmtp) => lmtp.command(line).await,
        }
    }

    /// After a 354: the message, then a reply for each of the `accepted` recipients (an
    /// SMTP server's one reply stands for all of them), and whether the connection is
    /// still in step for another message.
    async fn data(&mut self, outgoing: &Outgoing<'_>, accepted: usize) -> (Vec<Reply>, bool) {
        let (answers, expected) = match self {
            Downstream::Smtp(smtp) => (vec![smtp.data(outgoing).await], 1),
            Downstream::Lmtp(lmtp) => (lmtp.data(outgoing, accepted).await, accepted),
        };
        let in_step = answers.len() == expected
            && answers
                .iter()
                .all(|a| a.as_ref().is_ok_and(|a| a.code != 421));
        let mut replies: Vec<Reply> = answers
            .into_iter()
            .map(|answer| match answer {
                Ok(answer) if answer.is_positive() => answer.delivered(),
                Ok(answer) => answer.refusal(),
                // Whether it was delivered is not known: a retry risks a duplicate,
                // never a loss.
                Err(_) => reply::lost(),
            })
            .collect();
        if expected == 1 && replies.len() == 1 {
            replies = vec![replies[0].clone(); accepted];
        }
        replies.resize(accepted, reply::lost());
        (replies, in_step)
    }

    async fn quit(&mut self) {
        match self {
            Downstream::Smtp(smtp) => smtp.quit().await,
            Downstream::Lmtp(lmtp) => lmtp.quit().await,
        }
    }
}

/// One message to relay.
struct Transaction<'a> {
    envelope: &'a Envelope,
    outgoing: &'a Outgoing<'a>,
    body: BodyFacts,
    /// Send no data unless every recipient was accepted.
    all_or_nothing: bool,
}

enum Transacted {
    /// One reply per recipient; `reusable` when the connection can carry another message.
    Done { replies: Vec<Reply>, reusable: bool },
    /// The connection broke, or said 421, before it took MAIL: nothing happened. The
    /// 421, if that is what it was.
    Stale(Option<Answer>),
}

/// MAIL, RCPT for each recipient, DATA and the message, one command at a time.
async fn transact(conn: &mut Downstream, message: &Transaction<'_>) -> Transacted {
    let n = message.envelope.recipients.len();
    let mut replies = match open(conn, message).await {
        Ok(replies) => replies,
        Err(ended) => return ended,
    };
    let accepted = replies.iter().filter(|r| r.is_none()).count();
    if accepted == 0 || (message.all_or_nothing && accepted < n) {
        let reset = conn.command("RSET\r\n").await;
        let reusable = reset.is_ok_and(|answer| answer.is_positive());
        let refusal = first_refusal(&replies);
        return finished(replies, refusal, reusable);
    }
    match conn.command("DATA\r\n").await {
        Ok(answer) if answer.code == 354 => {}
        Ok(answer) => {
            let reusable = answer.code != 421;
            return finished(replies, answer.refusal(), reusable);
        }
        Err(_) => return finished(replies, reply::lost(), false),
    }
    let (answers, reusable) = conn.data(message.outgoing, accepted).await;
    let mut answers = answers.into_iter();
    for slot in replies.iter_mut().filter(|r| r.is_none()) {
        *slot = answers.next();
    }
    finished(replies, reply::lost(), reusable)
}

/// MAIL and the RCPTs: for each recipient its refusal, or `None` when it was accepted.
/// `Err` when the transaction ended there.
async fn open(
    conn: &mut Downstream,
    message: &Transaction<'_>,
) -> Result<Vec<Option<Reply>>, Transacted> {
    let envelope = message.envelope;
    let n = envelope.recipients.len();
    let leg = conn.leg();
    let refused = |reply: Reply| Transacted::Done {
        replies: vec![reply; n],
        reusable: true,
    };
    let mail = envelope::mail_line(envelope, message.body, leg).map_err(refused)?;
    match conn.command(&mail).await {
        Ok(answer) if answer.is_positive() => {}
        Ok(answer) if answer.code == 421 => return Err(Transacted::Stale(Some(answer))),
        Ok(answer) => return Err(refused(answer.refusal())),
        Err(_) => return Err(Transacted::Stale(None)),
    }
    let mut replies: Vec<Option<Reply>> = vec![None; n];
    for (i, reply) in replies.iter_mut().enumerate() {
        match conn.command(&envelope::rcpt_line(envelope, i, leg)).await {
            Ok(answer) if answer.is_positive() => {}
            Ok(answer) => {
                *reply = Some(answer.refusal());
                if answer.code == 421 {
                    return Err(finished(replies, reply::lost(), false));
                }
            }
            Err(_) => return Err(finished(replies, reply::lost(), false)),
        }
    }
    Ok(replies)
}

/// The replies, with `rest` for the recipients that have none.
fn finished(replies: Vec<Option<Reply>>, rest: Reply, reusable: bool) -> Transacted {
    let replies = replies
        .into_iter()
        .map(|r| r.unwrap_or_else(|| rest.clone()))
        .collect();
    Transacted::Done { replies, reusable }
}

/// The refusal that stands for all: the first transient one, else the first.
fn first_refusal(replies: &[Option<Reply>]) -> Reply {
    let refused = || replies.iter().flatten();
    refused()
        .find(|r| r.code() < 500)
        .or_else(|| refused().next())
        .cloned()
        .unwrap_or_else(reply::local_error)
}

#[cfg(test)]
mod tests;
