//! `--milter`: mail filters (OpenDKIM, rspamd, clamav-milter...) over the milter protocol,
//! at the message stage. Each filter in turn is sent the whole conversation (connect, HELO,
//! MAIL, RCPT, DATA, the header fields, the body read piece by piece from the spool, end of
//! message) and sees what the filters before it changed. A refusal refuses the message with
//! the filter's reply; the header and recipient changes go to the delivery; a filter that
//! fails, times out or breaks the protocol takes `--milter-default-action`. What each
//! filter said comes back with the verdict, for the log, the metrics and the policy.

use std::ops::Range;
use std::time::Duration;

use smtp_filter_proto::edits::{
    parse_header_section, Envelope, Header, HeaderList, MessageEdits, Path,
};
use smtp_filter_proto::milter::{
    ClientAddress, Macros, Milter, MilterConfig, Modification, Output, Step, Verdict as Answer,
};
use smtp_session::address::parse_forward_path;
use smtp_session::{Decision, ForwardPath, Message, Reply};

use crate::check::{Body, Check, CheckFuture, Edits, Facts, Findings, Stage, Stages, Verdict};
use crate::facts::FilterVerdict;
use crate::filter_socket::{self, FilterAddr, FilterIo};
use crate::store::Spool;

/// The most of a message's header section read to send its fields.
const MAX_HEADER: usize = 1 << 20;
/// The body goes to filters in pieces of this size (libmilter's largest).
const PIECE: usize = smtp_filter_proto::milter::MAX_BODY_CHUNK;

/// What a filter that fails or times out means, as Postfix's `milter_default_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DefaultAction {
    /// `451 4.7.1 Service unavailable - try again later`.
    Tempfail,
    /// Go on as if the filter were not there.
    Accept,
    /// `550 5.7.1 Command rejected`.
    Reject,
}

/// The milter options.
#[derive(Debug, clap::Args)]
pub struct MilterArgs {
    /// A mail filter, inet:HOST:PORT or unix:PATH (repeatable; run in this order at the
    /// message stage, each seeing the changes of the ones before).
    #[arg(long = "milter", value_name = "ADDR")]
    pub milters: Vec<FilterAddr>,
    /// Seconds a filter may take to connect and to answer each step (within the 60 s a
    /// message's checks may take in all).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub milter_timeout: u64,
    /// What a filter that fails, times out or answers garbage means.
    #[arg(long, value_enum, default_value = "tempfail")]
    pub milter_default_action: DefaultAction,
}

/// The `--milter` filters as one check.
#[derive(Debug)]
pub struct Milters {
    /// The filters, in order.
    pub addrs: Vec<FilterAddr>,
    /// Per connect and per step.
    pub timeout: Duration,
    /// On failure.
    pub default_action: DefaultAction,
}

/// Why a filter could not be used.
type Failure = String;

/// One filter's say on the message.
#[derive(Debug)]
enum Said {
    /// Go on, with the message's fields and envelope as changed.
    Continue,
    /// Refused with this reply.
    Refuse(Reply),
    /// Keep it quarantined, for this reason.
    Quarantine(String),
    /// Answer 250 and drop it.
    Discard,
}

impl Said {
    /// For the metrics.
    fn name(&self) -> &'static str {
        match self {
            Said::Continue => "continue",
            Said::Refuse(reply) if reply.code() < 500 => "tempfail",
            Said::Refuse(_) => "reject",
            Said::Quarantine(_) => "quarantine",
            Said::Discard => "discard",
        }
    }
}

impl Check for Milters {
    fn name(&self) -> &'static str {
        "milter"
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
                } => {
                    let mut said = Vec::new();
                    let verdict = self.message(facts, message, spool, &mut said).await;
                    verdict.found(Findings {
                        filters: said,
                        ..Findings::default()
                    })
                }
                _ => Verdict::go_on(),
            }
        })
    }
}

impl Milters {
    /// The filters' verdict on the message; what each said goes into `said`.
    async fn message(
        &self,
        facts: &Facts,
        message: &Message,
        spool: &Spool,
        said: &mut Vec<FilterVerdict>,
    ) -> Verdict {
        let section = match header_section(spool).await {
            Ok(section) => section,
            Err(err) => return self.failed(facts, message, None, err),
        };
        let Some((fields, body_at)) = parse_header_section(&section) else {
            return self.failed(
                facts,
                message,
                None,
                "the header section cannot be parsed".into(),
            );
        };
        let envelope = Envelope {
            sender: Path::new(format!("<{}>", message.envelope.mail_from)),
            recipients: message
                .envelope
                .recipients
                .iter()
                .map(|r| Path::new(format!("<{}>", r.path)))
                .collect(),
        };
        let mut edits = MessageEdits::new(HeaderList::new(Vec::new(), fields.clone()), envelope);
        for addr in &self.addrs {
            let answer = self
                .consult(addr, facts, &mut edits, spool, body_at as u64)
                .await;
            edits.next_filter();
            said.push(exported(addr, &answer));
            match answer {
                Ok(Said::Continue) => {}
                Ok(Said::Refuse(reply)) => return Verdict::Refuse(refusal(facts, message, reply)),
                Ok(Said::Quarantine(why)) => {
                    return Verdict::Quarantine(format!("milter {addr}: {why}"))
                }
                Ok(Said::Discard) => return Verdict::Discard(format!("milter {addr}")),
                Err(err) => match self.failed(facts, message, Some(addr), err) {
                    Verdict::Continue(_) => {}
                    other => {
                        if let (Some(last), Verdict::Refuse(Decision::Reject(reply))) =
                            (said.last_mut(), &other)
                        {
                            last.set_reply(reply);
                        }
                        return other;
                    }
                },
            }
        }
        Verdict::Continue(changes(&section, &fields, &edits, message))
    }

    /// The default action for a filter that failed, after saying why on stderr.
    fn failed(
        &self,
        facts: &Facts,
        message: &Message,
        addr: Option<&FilterAddr>,
        err: Failure,
    ) -> Verdict {
        let name = addr.map_or("milter".to_string(), |a| format!("milter {a}"));
        eprintln!("mailsink: {name} error: {err}");
        let reply = match self.default_action {
            DefaultAction::Accept => return Verdict::go_on(),
            DefaultAction::Tempfail => {
                Reply::new(451, "4.7.1 Service unavailable - try again later")
            }
            DefaultAction::Reject => Reply::new(550, "5.7.1 Command rejected"),
        };
        Verdict::Refuse(refusal(facts, message, reply.expect("a valid reply")))
    }

    /// One filter over the whole message.
    async fn consult(
        &self,
        addr: &FilterAddr,
        facts: &Facts,
        edits: &mut MessageEdits,
        spool: &Spool,
        body_at: u64,
    ) -> Result<Said, Failure> {
        let io = filter_socket::connect(addr, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        let mut conn = Conn {
            io,
            milter: Milter::new(MilterConfig::default()),
            timeout: self.timeout,
        };
        conn.run().await?;
        let macros = macros(facts);
        if let Some(said) = conn.envelope(facts, edits, &macros).await? {
            return Ok(said);
        }
        for field in edits.headers.fields().to_vec() {
            if let Some(said) = conn
                .step(|m| m.header(field.name.as_bytes(), &field.value))
                .await?
            {
                return Ok(said);
            }
        }
        if let Some(said) = conn.step(|m| m.end_of_headers(&macros)).await? {
            return Ok(said);
        }
        if let Some(said) = conn.body(spool, body_at).await? {
            return Ok(said);
        }
        conn.milter
            .end_of_message(&macros)
            .map_err(|e| e.to_string())?;
        let outputs = conn.run().await?;
        let _ = conn.milter.quit();
        let _ = conn.run().await;
        end_of_message(outputs, edits)
    }
}

/// What `addr` said, for the record.
fn exported(addr: &FilterAddr, answer: &Result<Said, Failure>) -> FilterVerdict {
    let verdict = answer.as_ref().map_or("failed", Said::name);
    let mut exported = FilterVerdict::new("milter", addr.to_string(), verdict);
    match answer {
        Ok(Said::Refuse(reply)) => exported.set_reply(reply),
        Ok(Said::Quarantine(why)) => exported.reason = Some(why.clone()),
        Err(err) => exported.reason = Some(err.clone()),
        _ => {}
    }
    exported
}

/// A connection to one filter.
struct Conn {
    io: Box<dyn FilterIo>,
    milter: Milter,
    timeout: Duration,
}

impl Conn {
    /// Writes what is queued and reads until no reply is owed; each read has the timeout
    /// (so a filter's progress report restarts it). The outputs other than writes.
    async fn run(&mut self) -> Result<Vec<Output>, Failure> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut outputs = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some(output) = self.milter.poll_output() {
                match output {
                    Output::Write(bytes) => within(self.timeout, self.io.write_all(&bytes)).await?,
                    Output::Failed(err) => return Err(format!("protocol error: {err}")),
                    other => outputs.push(other),
                }
            }
            if self.milter.awaiting_reply().is_none() {
                return Ok(outputs);
            }
            let n = within(self.timeout, self.io.read(&mut buf)).await?;
            if n == 0 {
                return Err("the filter closed the connection".into());
            }
            self.milter.handle_input(&buf[..n]);
        }
    }

    /// One step before end of message; `Some` when the filter settled the message there.
    async fn step(
        &mut self,
        step: impl FnOnce(&mut Milter) -> Result<(), smtp_filter_proto::milter::Error>,
    ) -> Result<Option<Said>, Failure> {
        step(&mut self.milter).map_err(|e| e.to_string())?;
        let outputs = self.run().await?;
        Ok(outputs.into_iter().find_map(|o| match o {
            Output::Verdict { verdict, .. } => settled(verdict),
            _ => None,
        }))
    }

    /// Connect, HELO, MAIL, each RCPT, DATA.
    async fn envelope(
        &mut self,
        facts: &Facts,
        edits: &MessageEdits,
        macros: &Macros,
    ) -> Result<Option<Said>, Failure> {
        let info = &facts.conn.info;
        let client = match (info.remote_ip, info.remote_port) {
            (Some(ip), port) => ClientAddress::Inet((ip, port.unwrap_or(0)).into()),
            _ => ClientAddress::Unknown,
        };
        let name = client_name(facts);
        let helo = facts.conn.helo.as_ref().map(|h| h.host.clone());
        let sender = edits.envelope.sender.address.clone();
        let mut steps: Vec<Box<dyn FnOnce(&mut Milter) -> _ + Send + '_>> =
            vec![Box::new(move |m: &mut Milter| {
                m.connect(&name, &client, macros)
            })];
        if let Some(helo) = helo {
            steps.push(Box::new(move |m: &mut Milter| m.helo(&helo, macros)));
        }
        steps.push(Box::new(move |m: &mut Milter| m.mail(&sender, &[], macros)));
        for rcpt in edits.envelope.recipients.clone() {
            steps.push(Box::new(move |m: &mut Milter| {
                m.rcpt(&rcpt.address, &[], macros)
            }));
        }
        steps.push(Box::new(|m: &mut Milter| m.data(macros)));
        for step in steps {
            if let Some(said) = self.step(step).await? {
                return Ok(Some(said));
            }
        }
        Ok(None)
    }

    /// The body from the spool, piece by piece, until its end or the filter skips it.
    async fn body(&mut self, spool: &Spool, mut offset: u64) -> Result<Option<Said>, Failure> {
        loop {
            let piece = spool
                .read_at(offset, PIECE as u64)
                .await
                .map_err(|e| format!("spool: {e}"))?;
            if piece.is_empty() {
                return Ok(None);
            }
            offset += piece.len() as u64;
            let mut rest = &piece[..];
            while !rest.is_empty() {
                let taken = self.milter.body(rest).map_err(|e| e.to_string())?;
                rest = &rest[taken..];
                for output in self.run().await? {
                    match output {
                        Output::Verdict {
                            verdict: Answer::Skip,
                            ..
                        } => return Ok(None),
                        Output::Verdict { verdict, .. } => {
                            if let Some(said) = settled(verdict) {
                                return Ok(Some(said));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

async fn within<T>(
    limit: Duration,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, io).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// What a verdict before end of message means for the message, if it settles it.
fn settled(verdict: Answer) -> Option<Said> {
    let reply = |code, text| Reply::new(code, text).expect("a valid reply");
    match verdict {
        Answer::Reject => Some(Said::Refuse(reply(550, "5.7.1 Command rejected"))),
        Answer::Tempfail => Some(Said::Refuse(reply(
            451,
            "4.7.1 Service unavailable - try again later",
        ))),
        Answer::Shutdown => Some(Said::Refuse(reply(421, "4.7.0 Server closing connection"))),
        Answer::Reply(r) => Some(Said::Refuse(smtp_reply(&r))),
        Answer::Discard => Some(Said::Discard),
        // Accepted by this filter: the message goes on, unchanged by it.
        Answer::Accept => Some(Said::Continue),
        _ => None,
    }
}

/// The filter's own reply as mailsink's.
fn smtp_reply(reply: &smtp_filter_proto::milter::SmtpReply) -> Reply {
    let text = reply.lines.join(" ");
    Reply::new(reply.code, &text)
        .unwrap_or_else(|_| Reply::new(550, "5.7.1 Command rejected").expect("valid"))
}

/// End of message: the changes applied to `edits`, and the final verdict.
fn end_of_message(outputs: Vec<Output>, edits: &mut MessageEdits) -> Result<Said, Failure> {
    let mut quarantine = None;
    for output in outputs {
        match output {
            Output::Modification(Modification::ReplaceBody(_)) => {
                return Err("body replacement is not supported".into());
            }
            Output::Modification(Modification::ChangeSender { address, .. }) => {
                eprintln!(
                    "mailsink: milter: sender change to {address} not applied (not supported)"
                );
            }
            Output::Modification(Modification::Quarantine { reason }) => quarantine = Some(reason),
            Output::Modification(m) => {
                if let Err(refused) = edits.apply(&m) {
                    eprintln!("mailsink: milter: change not applied: {refused}");
                }
            }
            Output::Verdict {
                step: Step::EndOfMessage,
                verdict,
            } => {
                return Ok(match (settled(verdict), quarantine) {
                    (Some(Said::Continue) | None, Some(why)) => Said::Quarantine(why),
                    (Some(said), _) => said,
                    (None, None) => Said::Continue,
                });
            }
            _ => {}
        }
    }
    Err("no verdict at end of message".into())
}

/// The message's header section (with its empty line), read from the spool.
async fn header_section(spool: &Spool) -> Result<Vec<u8>, Failure> {
    let mut section = Vec::new();
    loop {
        let piece = spool
            .read_at(section.len() as u64, PIECE as u64)
            .await
            .map_err(|e| format!("spool: {e}"))?;
        let done = piece.is_empty();
        section.extend_from_slice(&piece);
        if let Some((_, end)) = parse_header_section(&section) {
            section.truncate(end);
            return Ok(section);
        }
        if done || section.len() > MAX_HEADER {
            return Err("no header section within 1 MiB".into());
        }
    }
}

/// What the filters changed, as the delivery applies it: the original fields they changed
/// or removed are cut, the fields they added or changed go below the trace fields, and
/// the recipients are replaced if they changed.
fn changes(section: &[u8], original: &[Header], edits: &MessageEdits, message: &Message) -> Edits {
    let ranges = field_ranges(section);
    let mut kept = vec![false; original.len()];
    let mut next = 0;
    let mut add_fields = Vec::new();
    for field in edits.headers.fields() {
        match original[next..].iter().position(|o| o == field) {
            Some(i) => {
                kept[next + i] = true;
                next += i + 1;
            }
            None => field.write_to(&mut add_fields),
        }
    }
    let remove: Vec<Range<u64>> = ranges
        .into_iter()
        .zip(&kept)
        .filter(|(_, k)| !**k)
        .map(|(r, _)| r)
        .collect();
    let before: Vec<String> = message
        .envelope
        .recipients
        .iter()
        .map(|r| format!("<{}>", r.path))
        .collect();
    let after: Vec<String> = edits
        .envelope
        .recipients
        .iter()
        .map(|p| p.address.clone())
        .collect();
    let recipients =
        (before != after).then(|| after.iter().filter_map(|a| forward_path(a)).collect());
    Edits {
        add_fields,
        remove,
        recipients,
        ..Edits::default()
    }
}

fn forward_path(address: &str) -> Option<ForwardPath> {
    let bracketed = if address.starts_with('<') {
        address.to_string()
    } else {
        format!("<{address}>")
    };
    match parse_forward_path(bracketed.as_bytes()) {
        Ok((path, _)) => Some(path),
        Err(_) => {
            eprintln!("mailsink: milter: recipient {address} not added (not an address)");
            None
        }
    }
}

/// The byte range of each field of a header section, folds included, in order.
fn field_ranges(section: &[u8]) -> Vec<Range<u64>> {
    let mut ranges: Vec<Range<u64>> = Vec::new();
    let mut at = 0;
    while at < section.len() {
        let end = memchr::memchr(b'\n', &section[at..]).map_or(section.len(), |i| at + i + 1);
        let line = &section[at..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        match (line[0], ranges.last_mut()) {
            (b' ' | b'\t', Some(last)) => last.end = end as u64,
            _ => ranges.push(at as u64..end as u64),
        }
        at = end;
    }
    ranges
}

/// The refusal as the message stage answers it: per recipient under LMTP.
fn refusal(facts: &Facts, message: &Message, reply: Reply) -> Decision {
    if facts.lmtp {
        return Decision::PerRecipient(vec![reply; message.envelope.recipients.len()]);
    }
    Decision::Reject(reply)
}

/// The client's name as Postfix sends it: the verified name, else the address in brackets.
fn client_name(facts: &Facts) -> String {
    let info = &facts.conn.info;
    match (&info.remote_ptr, info.remote_ip) {
        (Some(ptr), _) => ptr.clone(),
        (None, Some(ip)) => format!("[{ip}]"),
        (None, None) => "unknown".into(),
    }
}

/// The macros Postfix sends that mailsink knows.
fn macros(facts: &Facts) -> Macros {
    let info = &facts.conn.info;
    let mut m = Macros::new();
    m.set("j", facts.hostname.to_string())
        .set("{daemon_name}", "mailsink")
        .set("v", "mailsink");
    m.set("i", format!("{}.{}", info.id, facts.messages));
    if let Some(ip) = info.remote_ip {
        m.set("{client_addr}", ip.to_string());
    }
    if let Some(port) = info.remote_port {
        m.set("{client_port}", port.to_string());
    }
    m.set("{client_name}", client_name(facts));
    m.set(
        "{client_ptr}",
        info.remote_ptr.clone().unwrap_or_else(|| "unknown".into()),
    );
    if let Some(tls) = &facts.conn.tls {
        m.set("{tls_version}", tls.protocol.clone())
            .set("{cipher}", tls.cipher.clone());
        if let Some(bits) = tls.key_size {
            m.set("{cipher_bits}", bits.to_string());
        }
    }
    if let Some(auth) = &facts.conn.auth {
        m.set("{auth_type}", auth.mechanism.clone());
        if let Some(user) = &auth.username {
            m.set("{auth_authen}", user.clone());
        }
    }
    m
}
