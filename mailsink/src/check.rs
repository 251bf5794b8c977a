//! Checks: the judges of a connection and its messages. A check sees the stages it asks
//! for (connect, HELO, AUTH, MAIL, RCPT, DATA, the message with its spool, disconnect) and
//! answers each with a [`Verdict`]. It reads the stage's [`Facts`] and the spool; it writes
//! neither the spool nor the log: what it wants changed comes back as [`Edits`], which the
//! handler applies in one place.
//!
//! A new check is one file: a type implementing [`Check`], added to the list `main.rs`
//! builds. The handler runs the list in its order, and [`decide`] merges the verdicts by
//! one rule:
//!
//! - The first refusal wins ([`Verdict::Refuse`]); the checks after it are not asked.
//! - [`Verdict::Accept`] ends the stage too, accepted; [`Verdict::Continue`] asks the next
//!   check. A stage no check refused is accepted (AUTH is the exception: it needs a check
//!   that accepts, or it is refused with `535 5.7.8`).
//! - [`Verdict::Quarantine`] and [`Verdict::Discard`] end the message stage: the message is
//!   stored in the quarantine folder, or answered 250 and dropped; both are logged.
//! - Edits accumulate in the order the checks ran: added header fields go below the trace
//!   fields (each check's below those of the checks before it), fields inserted at a place
//!   in the message's own header section go there, removals, sender, recipient and body
//!   changes apply at delivery; a refusal drops the edits gathered before it.
//! - A check that fails ([`Verdict::Failed`]) takes its default action,
//!   [`Check::on_failure`] (the session's hook failure unless the check says otherwise).
//! - Postfix's conditional deferrals, for the checks *after* the one that asked
//!   (`DEFER_IF_PERMIT` and `DEFER_IF_REJECT` of a policy service): after
//!   [`Verdict::DeferIfPermit`] the stage goes on, and if it ends accepted (no check
//!   refused, or a later one accepted) it is refused with that check's `4xx` reply instead;
//!   after [`Verdict::DeferIfReject`] the stage goes on, and if a later check rejects it with
//!   a `5xx` reply (a reject, or per recipient under LMTP), that check's `4xx` reply is sent
//!   in its place, as Postfix's `smtpd_check_reject` does. A disconnect, a `4xx` or a hook
//!   failure stands. The first of each kind counts.
//! - What a check found on the way ([`Verdict::Found`]: its filters' verdicts, the DNS
//!   lists' screening) is kept whatever the stage's outcome, in the stage's [`Facts`], for
//!   the log, the metrics, the disconnect context and the checks after.
//!
//! Checks are shared by all connections. A check that keeps something for one connection
//! (the milter's connections to its filters, which live as long as the client's) opens a
//! [`Dialogue`] for it ([`Check::open`]): the connection's [`Dialogues`] hold it from the
//! first stage to the end, and that connection's stages go to it instead of to
//! [`Check::check`]. The disconnect stage is its last, where it closes what it opened.

use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use smtp_session::{
    AuthRequest, ConnectionDetails, Decision, DisconnectArguments, Extensions, ForwardPath,
    MailParams, Message, RcptParams, Recipient, Reply, ReversePath,
};

use crate::facts::{ConnContext, ConnFacts, FilterVerdict, Screening};
use crate::store::Spool;
use crate::verify::AuthResults;

/// What a check's answer to a stage is on its way to.
pub type CheckFuture<'a, T = Verdict> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A judge of connections and messages; see the module docs for how verdicts merge.
/// Checks are shared by all connections: what the connection knows comes to a check in
/// [`Facts`], and what a check keeps for one connection is its [`Dialogue`].
pub trait Check: Send + Sync + 'static {
    /// A short name, for stderr.
    fn name(&self) -> &'static str;

    /// The stages this check wants to see; the others cost it nothing.
    fn stages(&self) -> Stages;

    /// True when this check can accept an AUTH (AUTH is offered only when one can).
    fn authenticates(&self) -> bool {
        false
    }

    /// Its verdict on `stage`, one of those [`Check::stages`] named.
    fn check<'a>(&'a self, facts: &'a Facts, stage: &'a Stage<'a>) -> CheckFuture<'a>;

    /// The stage ended refused with `answer` (whichever check refused it): a check that
    /// saw the stage may answer a harder refusal in its place (the AUTH failure limit
    /// turns a wrong password into `454` once there were too many).
    fn refused<'a>(
        &'a self,
        facts: &'a Facts,
        stage: &'a Stage<'a>,
        answer: &'a Decision,
    ) -> CheckFuture<'a, Option<Decision>> {
        let _ = (facts, stage, answer);
        Box::pin(async { None })
    }

    /// What a failure of this check means: by default the session's hook failure (for
    /// mailsink, KumoMTA's `421 4.3.0 <hostname> technical difficulties`).
    fn on_failure(&self) -> Decision {
        Decision::HookFailed
    }

    /// What this check keeps for one connection, if anything: made at the connection's
    /// first stage; the connection's stages then go to it, not to [`Check::check`]. None by
    /// default.
    fn open(&self) -> Option<Box<dyn Dialogue>> {
        None
    }

    /// True when its dialogues want [`Dialogue::aborted`] at the end of each transaction
    /// that had no message; false by default, and the server then does not report them.
    fn hears_aborts(&self) -> bool {
        false
    }
}

/// One check's own part of one connection (see the module docs): it answers the stages the
/// check named, in order, connect first and disconnect last, and is dropped after.
pub trait Dialogue: Send + Sync {
    /// Its verdict on `stage`, as [`Check::check`]'s.
    fn check<'a>(&'a mut self, facts: &'a Facts, stage: &'a Stage<'a>) -> CheckFuture<'a>;

    /// The transaction ended without a message (RSET, HELO or EHLO, STARTTLS, a message
    /// refused for its data, the connection's end): forget what was kept for it.
    fn aborted(&mut self) -> CheckFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The dialogues of one connection, one slot per check, opened at its first stage. A clone
/// is a new connection's: nothing open.
#[derive(Default)]
pub struct Dialogues {
    open: Option<Vec<Option<Box<dyn Dialogue>>>>,
    /// DATA was refused, and the dialogues were told the transaction ended (a milter forgot
    /// its envelope). The client may go on with it (RCPT, DATA again): that part hears
    /// this refusal again, until a new transaction begins.
    data_refused: Option<Decision>,
}

impl Clone for Dialogues {
    fn clone(&self) -> Self {
        Dialogues::default()
    }
}

impl std::fmt::Debug for Dialogues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.open.iter().flatten().filter(|d| d.is_some()).count();
        write!(f, "Dialogues({open} open)")
    }
}

impl Dialogues {
    /// Tells each open dialogue that the transaction ended without a message.
    pub async fn aborted(&mut self) {
        self.data_refused = None;
        for dialogue in self.open.iter_mut().flatten().flatten() {
            dialogue.aborted().await;
        }
    }

    /// The dialogue of the `index`th of `checks`, opening them all the first time.
    fn get(&mut self, checks: &[Arc<dyn Check>], index: usize) -> Option<&mut Box<dyn Dialogue>> {
        let all = self
            .open
            .get_or_insert_with(|| checks.iter().map(|check| check.open()).collect());
        all.get_mut(index).and_then(Option::as_mut)
    }
}

/// The stages a check wants to see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stages {
    /// A client connected, before the greeting.
    pub connect: bool,
    /// HELO, EHLO or LHLO.
    pub helo: bool,
    /// An AUTH attempt, its credentials decoded.
    pub auth: bool,
    /// MAIL FROM.
    pub mail: bool,
    /// RCPT TO.
    pub rcpt: bool,
    /// DATA or the first BDAT, before any message byte.
    pub data: bool,
    /// The whole message, its body in the spool.
    pub message: bool,
    /// The connection ended.
    pub disconnect: bool,
}

impl Stages {
    /// True when `stage` is one of these.
    pub fn has(&self, stage: &Stage<'_>) -> bool {
        match stage {
            Stage::Connect => self.connect,
            Stage::Helo { .. } => self.helo,
            Stage::Auth(_) => self.auth,
            Stage::Mail(..) => self.mail,
            Stage::Rcpt(..) => self.rcpt,
            Stage::Data => self.data,
            Stage::Message { .. } => self.message,
            Stage::Disconnect { .. } => self.disconnect,
        }
    }

    /// The stages either names.
    pub fn union(self, other: Stages) -> Stages {
        Stages {
            connect: self.connect || other.connect,
            helo: self.helo || other.helo,
            auth: self.auth || other.auth,
            mail: self.mail || other.mail,
            rcpt: self.rcpt || other.rcpt,
            data: self.data || other.data,
            message: self.message || other.message,
            disconnect: self.disconnect || other.disconnect,
        }
    }
}

/// One stage of a connection, with what the client said.
#[derive(Debug)]
pub enum Stage<'a> {
    /// A client connected (after the PROXY header), before the greeting.
    Connect,
    /// HELO, EHLO or LHLO `host`; `keywords` are what the EHLO reply will list now
    /// (`SIZE 26214400`, `STARTTLS`...), `extensions` the switches behind them.
    Helo {
        /// The client's name for itself.
        host: &'a str,
        /// The EHLO reply's keywords.
        keywords: &'a [String],
        /// The extensions in force.
        extensions: Extensions,
    },
    /// AUTH, with the credentials the session decoded.
    Auth(&'a AuthRequest),
    /// MAIL FROM: the reverse path and its ESMTP parameters.
    Mail(&'a ReversePath, &'a MailParams),
    /// RCPT TO: the forward path and its ESMTP parameters.
    Rcpt(&'a ForwardPath, &'a RcptParams),
    /// DATA, or the first BDAT.
    Data,
    /// The message: its envelope and size; its body is in `body`, and what the checks
    /// before this one found is in [`Facts::record`].
    Message {
        /// The envelope and the sizes; its body is empty (see `body`).
        message: &'a Message,
        /// The body as received.
        body: Body<'a>,
    },
    /// The connection ended: Halon's disconnect context, without the handler's own.
    Disconnect {
        /// Why and how it ended.
        arguments: &'a DisconnectArguments,
        /// The connection's details.
        connection: &'a ConnectionDetails,
        /// mailsink's own context (Halon's `$context`): the filters' verdicts.
        context: &'a ConnContext,
    },
}

impl Stage<'_> {
    /// Its name in the log: `connect`, `helo`, `auth`, `mail`, `rcpt`, `data`, `message`,
    /// `disconnect`.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo { .. } => "helo",
            Stage::Auth(_) => "auth",
            Stage::Mail(..) => "mail",
            Stage::Rcpt(..) => "rcpt",
            Stage::Data => "data",
            Stage::Message { .. } => "message",
            Stage::Disconnect { .. } => "disconnect",
        }
    }

    /// True for the stages of a transaction, from MAIL to the message.
    fn in_transaction(&self) -> bool {
        matches!(
            self,
            Stage::Mail(..) | Stage::Rcpt(..) | Stage::Data | Stage::Message { .. }
        )
    }
}

/// A message's body, read-only: in a spool (memory or a file), or gathered by the session.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// In the message's spool.
    Spool(&'a Spool),
    /// In memory (`--discard` with a policy that reads bodies).
    Memory(&'a [u8]),
}

impl Body<'_> {
    /// The body as received, at most `limit` bytes.
    pub async fn read(&self, limit: u64) -> io::Result<Vec<u8>> {
        match self {
            Body::Spool(spool) => spool.read_body(limit).await,
            Body::Memory(bytes) => {
                let end = bytes
                    .len()
                    .min(usize::try_from(limit).unwrap_or(usize::MAX));
                Ok(bytes[..end].to_vec())
            }
        }
    }
}

/// What a check knows when it is asked: the connection's facts, its count of messages, the
/// server's settings that shape replies, and at the message stage what the checks before
/// found.
#[derive(Clone, Debug)]
pub struct Facts {
    /// Addresses, HELO, TLS and AUTH, as the session knows them now.
    pub conn: ConnFacts,
    /// The transaction so far (from MAIL on): its sender and MAIL parameters (`SIZE=`...),
    /// and how many recipients were accepted before this stage. For filters (a policy
    /// service's `sender` and `size`, greylisting's triplet); no built-in check reads it.
    #[allow(dead_code)]
    pub transaction: Option<Transaction>,
    /// Messages this connection sent before the current one.
    pub messages: u32,
    /// This server's name.
    pub hostname: Arc<str>,
    /// The connection speaks LMTP: the message is answered per recipient.
    pub lmtp: bool,
    /// The largest message, in bytes.
    pub max_message_size: u64,
    /// The message's record, filled as the checks run (message stage only).
    pub record: Record,
}

/// The transaction a stage belongs to, as far as it went.
#[derive(Clone, Debug)]
#[allow(dead_code)] // read by filters' checks
pub struct Transaction {
    /// MAIL FROM's path.
    pub sender: ReversePath,
    /// MAIL FROM's parameters.
    pub params: MailParams,
    /// Recipients accepted so far.
    pub recipients: usize,
}

/// A check's answer to a stage.
#[derive(Debug)]
// Quarantine and Discard are made by the filters' checks (milter, policy service); none
// of the built-in ones makes them.
#[allow(dead_code)]
pub enum Verdict {
    /// No objection: ask the next check, with these edits.
    Continue(Edits),
    /// Accepted: the checks after this one are not asked.
    Accept(Edits),
    /// Refused with this decision (a reject or defer with its reply, a disconnect, or a
    /// reply per recipient under LMTP).
    Refuse(Decision),
    /// The message goes to the quarantine folder, for this reason (message stage only).
    Quarantine(String),
    /// The message is answered 250 and dropped, for this reason (message stage only).
    Discard(String),
    /// The check could not decide: its [`Check::on_failure`] applies.
    Failed(String),
    /// No objection now; but if the stage ends accepted, it is refused with this reply
    /// (Postfix's `DEFER_IF_PERMIT`).
    DeferIfPermit(Reply),
    /// No objection now; but if a later check rejects the stage with a `5xx`, this reply
    /// is sent instead (Postfix's `DEFER_IF_REJECT`).
    DeferIfReject(Reply),
    /// The verdict, with what the check found on the way, kept whatever the outcome.
    Found(Findings, Box<Verdict>),
}

impl Verdict {
    /// No objection and nothing to change.
    pub fn go_on() -> Verdict {
        Verdict::Continue(Edits::default())
    }

    /// This verdict, with `findings` kept whatever the stage's outcome.
    pub fn found(self, findings: Findings) -> Verdict {
        Verdict::Found(findings, Box::new(self))
    }
}

/// What a check found, kept whatever the stage's outcome (a refusal included).
#[derive(Debug, Default)]
pub struct Findings {
    /// What its filters said, in order.
    pub filters: Vec<FilterVerdict>,
    /// At connect: what `--dnsbl` made of the client.
    pub screening: Option<Arc<Screening>>,
}

/// What a check wants changed; the handler applies it.
#[derive(Debug, Default)]
pub struct Edits {
    /// Whole header fields, each ending in CRLF, for below the trace fields.
    pub add_fields: Vec<u8>,
    /// Ranges of the message as received (offsets from its first byte, in order, apart)
    /// to leave out: header fields it must not keep.
    pub remove: Vec<Range<u64>>,
    /// Whole header fields, each ending in CRLF, to go in at offsets of the message as
    /// received (field boundaries of its header section, in order): a filter's fields at the
    /// places it asked for, below the trace fields whatever it asked.
    pub insert: Vec<(u64, Vec<u8>)>,
    /// The recipients the message goes to instead of the envelope's, with their RCPT
    /// parameters.
    pub recipients: Option<Vec<Recipient>>,
    /// The envelope sender the message is stored (its `Return-Path:`) or relayed with
    /// instead of the client's.
    pub sender: Option<ReversePath>,
    /// The MAIL parameters the message is relayed with instead of the client's (a
    /// filter's new sender's).
    pub sender_params: Option<MailParams>,
    /// A body in place of the one received, with the header section as edited.
    pub body: Option<crate::store::NewBody>,
    /// Under LMTP: the recipients refused, one entry per envelope recipient (`None` for
    /// those not refused); the others still get the message.
    pub refused_recipients: Vec<Option<Reply>>,
    /// At HELO: the extensions the EHLO reply offers instead.
    pub extensions: Option<Extensions>,
    /// At connect: the client's verified reverse DNS name.
    pub remote_ptr: Option<Option<String>>,
    /// `--verify`'s results, for the checks after, the log and the metrics.
    pub auth_results: Option<Arc<AuthResults>>,
}

impl Edits {
    /// These edits after `earlier`'s.
    fn follow(&mut self, later: Edits) {
        self.add_fields.extend_from_slice(&later.add_fields);
        if !later.remove.is_empty() {
            self.remove.extend(later.remove);
            self.remove.sort_by_key(|range| range.start);
            self.remove.dedup();
        }
        if !later.insert.is_empty() {
            self.insert.extend(later.insert);
            self.insert.sort_by_key(|(at, _)| *at);
        }
        if later.recipients.is_some() {
            self.recipients = later.recipients;
        }
        if later.sender.is_some() {
            self.sender = later.sender;
        }
        if later.sender_params.is_some() {
            self.sender_params = later.sender_params;
        }
        if later.body.is_some() {
            self.body = later.body;
        }
        merge_refusals(&mut self.refused_recipients, later.refused_recipients);
        self.extensions = later.extensions.or(self.extensions);
        if later.remote_ptr.is_some() {
            self.remote_ptr = later.remote_ptr;
        }
        if later.auth_results.is_some() {
            self.auth_results = later.auth_results;
        }
    }
}

/// Per recipient, the first refusal stands.
fn merge_refusals(first: &mut Vec<Option<Reply>>, later: Vec<Option<Reply>>) {
    if first.len() < later.len() {
        first.resize(later.len(), None);
    }
    for (slot, reply) in first.iter_mut().zip(later) {
        if slot.is_none() {
            *slot = reply;
        }
    }
}

/// What became of one message, for the log line, the metrics and the checks after: filled
/// from the checks' edits, and by the delivery.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// `--verify`'s results.
    pub auth_results: Option<Arc<AuthResults>>,
    /// Where the message was stored (`new/`, or the quarantine's).
    pub file: Option<std::path::PathBuf>,
    /// Why it was quarantined.
    pub quarantined: Option<String>,
    /// Why it was dropped.
    pub discarded: Option<String>,
    /// The filters' verdicts on it: its transaction's (from MAIL on), then the message
    /// stage's. At the other stages, what the stage's filters said.
    pub filters: Vec<FilterVerdict>,
}

impl Record {
    /// Counts what the record says in the metrics (`--verify`'s results).
    pub fn count(&self) {
        if let Some(results) = &self.auth_results {
            results.count();
        }
    }

    /// Takes what `edits` say about the message.
    pub fn note(&mut self, edits: &Edits) {
        if let Some(results) = &edits.auth_results {
            self.auth_results = Some(results.clone());
        }
    }
}

/// Where the merged verdicts of a stage lead.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted (by a check, or by none refusing), with the edits.
    Accepted(Edits),
    /// Refused: the answer.
    Refused(Decision),
    /// The message goes to the quarantine folder.
    Quarantine(String, Edits),
    /// The message is answered 250 and dropped.
    Discard(String),
}

/// Asks `checks` about `stage` in order (through the connection's `dialogues` for those that
/// keep one) and merges their verdicts by the rule of the module docs. What a check found
/// goes into `facts` at once (the reverse DNS name, the screening, the filters' verdicts, the
/// message's record), so the checks after it see it.
///
/// A MAIL refused opens no transaction: the dialogues that were told of it (a milter
/// before the check that refused) hear at once that it ended, as after RSET.
///
/// A DATA refused leaves the transaction open in SMTP, but a milter was sent DATA and
/// cannot take another RCPT or DATA of it. When a check hears of transactions' ends (a
/// milter), the dialogues hear at once that this one ended, and the rest of it (RCPT, DATA
/// again) gets the same refusal until RSET, MAIL or HELO begins anew. Without that, a
/// client could go on past the filter: the milter's protocol error is a failed filter,
/// and with `--milter-default-action accept` a failed filter is no filter.
pub async fn decide(
    checks: &[Arc<dyn Check>],
    dialogues: &mut Dialogues,
    facts: &mut Facts,
    stage: &Stage<'_>,
) -> Outcome {
    match (stage, &dialogues.data_refused) {
        (Stage::Rcpt(..) | Stage::Data, Some(refusal)) => {
            return Outcome::Refused(refusal.clone());
        }
        (Stage::Mail(..), Some(_)) => dialogues.data_refused = None,
        _ => {}
    }
    let outcome = merge(checks, dialogues, facts, stage).await;
    match (stage, &outcome) {
        (Stage::Mail(..), Outcome::Refused(_)) => dialogues.aborted().await,
        (Stage::Data, Outcome::Refused(refusal)) if checks.iter().any(|c| c.hears_aborts()) => {
            dialogues.aborted().await;
            dialogues.data_refused = Some(refusal.clone());
        }
        _ => {}
    }
    outcome
}

/// [`decide`]'s verdicts, merged.
async fn merge(
    checks: &[Arc<dyn Check>],
    dialogues: &mut Dialogues,
    facts: &mut Facts,
    stage: &Stage<'_>,
) -> Outcome {
    let mut edits = Edits::default();
    let mut accepted = false;
    let mut deferrals = Deferrals::default();
    for (index, check) in checks.iter().enumerate() {
        if !check.stages().has(stage) {
            continue;
        }
        let (more, last) = match ask(checks, index, dialogues, facts, stage).await {
            Verdict::Continue(more) => (more, false),
            Verdict::Accept(more) => (more, true),
            Verdict::Refuse(decision) => {
                let decision = refused(checks, facts, stage, decision).await;
                return Outcome::Refused(deferrals.if_reject(decision));
            }
            Verdict::Quarantine(why) => return Outcome::Quarantine(why, edits),
            Verdict::Discard(why) => return Outcome::Discard(why),
            Verdict::Failed(error) => {
                eprintln!("mailsink: {} error: {error}", check.name());
                let decision = refused(checks, facts, stage, check.on_failure()).await;
                return Outcome::Refused(deferrals.if_reject(decision));
            }
            Verdict::DeferIfPermit(reply) => {
                deferrals.if_permit.get_or_insert(reply);
                continue;
            }
            Verdict::DeferIfReject(reply) => {
                deferrals.if_reject.get_or_insert(reply);
                continue;
            }
            // Unwrapped above.
            Verdict::Found(..) => continue,
        };
        if let Some(ptr) = &more.remote_ptr {
            facts.conn.info.remote_ptr.clone_from(ptr);
        }
        facts.record.note(&more);
        edits.follow(more);
        if last {
            accepted = true;
            break;
        }
    }
    if matches!(stage, Stage::Auth(_)) && !accepted {
        let decision = refused(checks, facts, stage, bad_credentials()).await;
        return Outcome::Refused(deferrals.if_reject(decision));
    }
    match deferrals.if_permit {
        Some(reply) => Outcome::Refused(Decision::Reject(reply)),
        None => Outcome::Accepted(edits),
    }
}

/// The `index`th check's verdict on `stage` (through the connection's dialogue with it, if
/// it keeps one), its findings kept in `facts` on the way.
async fn ask(
    checks: &[Arc<dyn Check>],
    index: usize,
    dialogues: &mut Dialogues,
    facts: &mut Facts,
    stage: &Stage<'_>,
) -> Verdict {
    let mut verdict = match dialogues.get(checks, index) {
        Some(dialogue) => dialogue.check(facts, stage).await,
        None => checks[index].check(facts, stage).await,
    };
    while let Verdict::Found(findings, inner) = verdict {
        keep(facts, stage, findings);
        verdict = *inner;
    }
    verdict
}

/// A check's findings, into the stage's facts: the filters' verdicts with their stage and
/// message.
fn keep(facts: &mut Facts, stage: &Stage<'_>, findings: Findings) {
    let message = stage
        .in_transaction()
        .then(|| facts.messages.saturating_add(1));
    facts
        .record
        .filters
        .extend(findings.filters.into_iter().map(|mut verdict| {
            verdict.stage = stage.name();
            verdict.message = message;
            verdict
        }));
    if let Some(screening) = findings.screening {
        facts.conn.screening = Some(screening);
    }
}

/// The conditional deferrals asked for so far in a stage (the first of each kind).
#[derive(Debug, Default)]
struct Deferrals {
    /// `DEFER_IF_PERMIT`'s reply.
    if_permit: Option<Reply>,
    /// `DEFER_IF_REJECT`'s reply.
    if_reject: Option<Reply>,
}

impl Deferrals {
    /// The final refusal: a `5xx` reject becomes the `DEFER_IF_REJECT` reply, if one was
    /// asked for (per recipient, each `5xx`).
    fn if_reject(&self, decision: Decision) -> Decision {
        let Some(deferral) = &self.if_reject else {
            return decision;
        };
        let soften = |reply: Reply| {
            if reply.code() >= 500 {
                deferral.clone()
            } else {
                reply
            }
        };
        match decision {
            Decision::Reject(reply) => Decision::Reject(soften(reply)),
            Decision::PerRecipient(replies) => {
                Decision::PerRecipient(replies.into_iter().map(soften).collect())
            }
            other => other,
        }
    }
}

/// A refusal, after the checks that saw the stage had their say on it.
async fn refused(
    checks: &[Arc<dyn Check>],
    facts: &Facts,
    stage: &Stage<'_>,
    decision: Decision,
) -> Decision {
    if decision == Decision::HookFailed {
        return decision;
    }
    for check in checks.iter().filter(|check| check.stages().has(stage)) {
        if let Some(harder) = check.refused(facts, stage, &decision).await {
            return harder;
        }
    }
    decision
}

/// `535 5.7.8`: no check accepted the credentials.
pub fn bad_credentials() -> Decision {
    Decision::reject(535, "5.7.8 Authentication credentials invalid").expect("valid reply")
}
