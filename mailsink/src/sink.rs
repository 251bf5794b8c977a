//! mailsink's [`Handler`]: at each stage the checks, in their order, then what their
//! merged verdict says (see [`crate::check`]); at the end of a message its delivery, then
//! the log line and the counters, from the message's record.

use std::sync::Arc;

use smtp_session::{
    AbortReason, AuthRequest, Decision, DisconnectContext, ForwardPath, HeloVerb, Hooks,
    MailParams, Message, RcptParams, Reply, ReversePath,
};
use smtp_session_tokio::{Connection, Handler, HookError, HookResult};

use crate::check::{self, Body, Check, Edits, Facts, Outcome, Record, Stage, Stages, Transaction};
use crate::delivery::{self, Answer, Delivered, Delivery};
use crate::facts::{self, ConnContext, ConnFacts, FilterVerdict, Screening};
use crate::log;
use crate::metrics;

/// The receiver: its checks and its delivery, shared by all connections, and one
/// connection's own state; cloned for every connection.
#[derive(Clone, Debug)]
pub struct Sink {
    /// The checks, in the order they are asked.
    pub checks: Arc<[Arc<dyn Check>]>,
    /// Where accepted messages go.
    pub delivery: Arc<Delivery>,
    /// The message this connection is receiving into its spool.
    pub spooler: delivery::Spooler,
    /// Messages this connection sent.
    pub messages: u32,
    /// What `--dnsbl` made of the client, from the connect stage on.
    pub screening: Option<Arc<Screening>>,
    /// What the checks keep for this connection (the milter's filter connections).
    pub dialogues: check::Dialogues,
    /// The most filter verdicts a connection keeps for its disconnect context (the last
    /// ones).
    pub max_filter_verdicts: usize,
    /// Where the open transaction's filter verdicts begin, counting every verdict of the
    /// connection (see [`ConnContext::total`]).
    transaction_from: u64,
    /// The server's name, as the checks' facts carry it: made at the connection's first
    /// stage.
    hostname: Option<Arc<str>>,
}

/// The default of `--max-filter-verdicts`.
pub const MAX_FILTER_VERDICTS: usize = 100;

impl std::fmt::Debug for dyn Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Sink {
    /// A receiver running `checks` in this order and delivering by `delivery`.
    pub fn new(checks: Vec<Arc<dyn Check>>, delivery: Delivery) -> Sink {
        Sink {
            checks: checks.into(),
            spooler: delivery::Spooler::new(delivery.writes_trace()),
            delivery: Arc::new(delivery),
            messages: 0,
            screening: None,
            dialogues: check::Dialogues::default(),
            max_filter_verdicts: MAX_FILTER_VERDICTS,
            transaction_from: 0,
            hostname: None,
        }
    }

    /// True when AUTH can succeed: a check can accept credentials.
    pub fn auth_enabled(&self) -> bool {
        self.checks.iter().any(|check| check.authenticates())
    }

    /// True when a check wants to hear of each transaction that ended without a message
    /// (a milter is told to abort it, at RSET too).
    pub fn hears_aborts(&self) -> bool {
        self.checks.iter().any(|check| check.hears_aborts())
    }

    /// True when a check reads message bodies: without a spool, the session then gathers
    /// them.
    pub fn needs_body(&self) -> bool {
        self.stages().message
    }

    /// The stages some check wants.
    fn stages(&self) -> Stages {
        self.checks
            .iter()
            .fold(Stages::default(), |all, check| all.union(check.stages()))
    }

    fn facts(&mut self, conn: &mut Connection<'_>) -> Facts {
        let transaction = conn.envelope().map(|envelope| Transaction {
            sender: envelope.mail_from.clone(),
            params: envelope.mail_params.clone(),
            recipients: envelope.recipients.len(),
        });
        let mut facts = ConnFacts::of(conn);
        facts.screening.clone_from(&self.screening);
        if let Some(context) = context(conn) {
            facts.filters = context.filter_verdicts.clone();
        }
        Facts {
            conn: facts,
            transaction,
            messages: self.messages,
            hostname: (self.hostname)
                .get_or_insert_with(|| conn.config().hostname.as_str().into())
                .clone(),
            lmtp: conn.config().lmtp,
            max_message_size: conn.config().max_message_size,
            record: Record::default(),
        }
    }

    /// The checks' answer to `stage`, with the connection's edits applied.
    async fn decide(&mut self, conn: &mut Connection<'_>, stage: &Stage<'_>) -> HookResult {
        let mut facts = self.facts(conn);
        if let Stage::Mail(..) = stage {
            self.transaction_from = context(conn).map_or(0, |c| c.total());
        }
        let outcome = check::decide(&self.checks, &mut self.dialogues, &mut facts, stage).await;
        // Whatever the outcome: the screening of a client refused for it, the verdict of
        // a filter that refused.
        self.screening = facts.conn.screening;
        self.keep_verdicts(conn, &facts.record.filters);
        match outcome {
            Outcome::Accepted(edits) => {
                apply(conn, edits);
                Ok(Decision::Accept)
            }
            Outcome::Refused(decision) => Ok(decision),
            // Quarantine and discard are for messages only.
            Outcome::Quarantine(..) | Outcome::Discard(_) => Ok(Decision::Accept),
        }
    }
}

impl Sink {
    /// Counts `found` in the metrics and adds it to the connection's context.
    fn keep_verdicts(&self, conn: &mut Connection<'_>, found: &[FilterVerdict]) {
        if found.is_empty() {
            return;
        }
        for verdict in found {
            metrics::filter_verdict(verdict.filter, verdict.verdict);
        }
        if context(conn).is_none() {
            conn.set_user_context(Box::new(ConnContext::default()));
        }
        if let Some(context) = context(conn) {
            context.add(found, self.max_filter_verdicts);
        }
    }
}

/// mailsink's value in the session's user context, once a filter said something.
fn context<'c>(conn: &'c mut Connection<'_>) -> Option<&'c mut ConnContext> {
    conn.user_context_mut()?.downcast_mut()
}

/// What a stage's edits change on the connection itself.
fn apply(conn: &mut Connection<'_>, edits: Edits) {
    if let Some(ptr) = edits.remote_ptr {
        conn.set_remote_ptr(ptr);
    }
    if let Some(extensions) = edits.extensions {
        conn.set_extensions(extensions);
    }
}

impl Handler for Sink {
    /// The stages the checks want, the message (to deliver and log it), and MAIL and DATA
    /// for a spool (the free space, the message's name and trace fields).
    fn hooks(&self) -> Hooks {
        let stages = self.stages();
        let spooling = self.delivery.spool_dir().is_some();
        Hooks {
            connect: stages.connect,
            helo: stages.helo,
            auth: self.auth_enabled(),
            mail_from: stages.mail || spooling,
            rcpt_to: stages.rcpt,
            data: stages.data || spooling,
            message: true,
            vrfy: false,
        }
    }

    async fn connect(&mut self, conn: &mut Connection<'_>) -> HookResult {
        self.decide(conn, &Stage::Connect).await
    }

    async fn helo(&mut self, conn: &mut Connection<'_>, _: HeloVerb, host: String) -> HookResult {
        let keywords = facts::ehlo_keywords(conn);
        let stage = Stage::Helo {
            host: &host,
            keywords: &keywords,
            extensions: conn.extensions(),
        };
        self.decide(conn, &stage).await
    }

    async fn auth(&mut self, conn: &mut Connection<'_>, request: AuthRequest) -> HookResult {
        self.decide(conn, &Stage::Auth(&request)).await
    }

    async fn mail_from(
        &mut self,
        conn: &mut Connection<'_>,
        path: ReversePath,
        params: MailParams,
    ) -> HookResult {
        let decision = self.decide(conn, &Stage::Mail(&path, &params)).await?;
        if decision != Decision::Accept {
            return Ok(decision);
        }
        let max = conn.config().max_message_size;
        Ok(self.delivery.refuses_mail(max).unwrap_or(decision))
    }

    async fn rcpt_to(
        &mut self,
        conn: &mut Connection<'_>,
        path: ForwardPath,
        params: RcptParams,
    ) -> HookResult {
        self.decide(conn, &Stage::Rcpt(&path, &params)).await
    }

    async fn data(&mut self, conn: &mut Connection<'_>) -> HookResult {
        if let Some(dir) = self.delivery.spool_dir() {
            self.spooler.prepare(conn, dir);
        }
        self.decide(conn, &Stage::Data).await
    }

    async fn message(&mut self, conn: &mut Connection<'_>, mut message: Message) -> HookResult {
        let mut facts = self.facts(conn);
        if let Some(context) = context(conn) {
            facts.record.filters = context.since(self.transaction_from).to_vec();
        }
        self.messages = self.messages.saturating_add(1);
        let spool = match self.delivery.spool_dir() {
            Some(dir) => {
                if !message.streamed && !message.body.is_empty() {
                    // A body the session gathered (its configuration said so) goes the
                    // way of streamed ones.
                    let body = std::mem::take(&mut message.body);
                    self.spooler.push(dir, body).await;
                }
                Some(self.spooler.finish(conn, dir, &message.envelope))
            }
            None => None,
        };
        if let Some(err) = spool.as_ref().and_then(|spool| spool.failure()) {
            eprintln!("mailsink: cannot store a message: {err}");
            if let Some(spool) = spool {
                spool.discard().await;
            }
            return Ok(Decision::Reject(delivery::store_failed()));
        }
        // A body the session gathered (no spool) is judged and delivered from here.
        let body = std::mem::take(&mut message.body);
        Ok(self
            .judge_and_deliver(conn, facts, message, spool, body)
            .await)
    }

    async fn body_piece(
        &mut self,
        _: &mut Connection<'_>,
        piece: Vec<u8>,
    ) -> Result<(), HookError> {
        let Some(dir) = self.delivery.spool_dir() else {
            return Ok(());
        };
        // A failed write is answered at the end of the message, with a 451.
        if !self.spooler.push(dir, piece).await {
            return Err("a body piece before the data hook".into());
        }
        Ok(())
    }

    async fn body_aborted(&mut self, _: &mut Connection<'_>, _: AbortReason) {
        self.spooler.abort().await;
    }

    async fn transaction_aborted(&mut self, _: &mut Connection<'_>, _: AbortReason) {
        self.dialogues.aborted().await;
    }

    async fn disconnect(&mut self, context: DisconnectContext) {
        let empty = ConnContext::default();
        let own = context
            .context
            .as_ref()
            .and_then(|own| own.downcast_ref::<ConnContext>())
            .unwrap_or(&empty);
        log::emit(log::disconnect_line(
            &context,
            self.screening.as_deref(),
            own,
        ));
        let mut facts = Facts {
            conn: ConnFacts {
                info: context.connection.info.clone(),
                helo: None,
                tls: None,
                auth: None,
                client: None,
                mail_from: None,
                screening: self.screening.clone(),
                filters: own.filter_verdicts.clone(),
                message_filters: facts::no_verdicts(),
            },
            transaction: None,
            messages: self.messages,
            hostname: "".into(),
            lmtp: false,
            max_message_size: 0,
            record: Record::default(),
        };
        // Nothing is left to refuse: the checks only hear of it.
        let stage = Stage::Disconnect {
            arguments: &context.arguments,
            connection: &context.connection,
            context: own,
        };
        check::decide(&self.checks, &mut self.dialogues, &mut facts, &stage).await;
    }

    fn hook_failed(&mut self, error: &HookError) {
        // A message whose piece could not be written in time ends here, without its hook.
        self.spooler.abandon();
        eprintln!("mailsink: a hook failed: {error}");
    }
}

impl Sink {
    /// The checks' verdict on the message; what the filters said is kept for the connection.
    async fn judge(
        &mut self,
        conn: &mut Connection<'_>,
        facts: &mut Facts,
        message: &Message,
        body: Body<'_>,
    ) -> Outcome {
        let stage = Stage::Message { message, body };
        let before = facts.record.filters.len();
        let outcome = check::decide(&self.checks, &mut self.dialogues, facts, &stage).await;
        self.keep_verdicts(conn, &facts.record.filters[before..]);
        outcome
    }

    /// The message stage: the checks judge the message, then it is delivered, quarantined,
    /// dropped or refused as they said; its log line and counters follow from its record.
    async fn judge_and_deliver(
        &mut self,
        conn: &mut Connection<'_>,
        mut facts: Facts,
        message: Message,
        spool: Option<delivery::Spool>,
        body: Vec<u8>,
    ) -> Decision {
        let view = match &spool {
            Some(spool) => Body::Spool(spool),
            None => Body::Memory(&body),
        };
        let outcome = self.judge(conn, &mut facts, &message, view).await;
        // The metrics count what the checks found, whatever became of the message.
        facts.record.count();
        let (delivered, refused) = match outcome {
            Outcome::Refused(decision) => {
                discard(spool).await;
                return decision;
            }
            Outcome::Discard(why) => {
                discard(spool).await;
                facts.record.discarded = Some(why);
                let delivered = Delivered {
                    answer: Answer::Same(delivery::stored()),
                    file: None,
                    taken: true,
                };
                (delivered, Vec::new())
            }
            Outcome::Quarantine(why, edits) => {
                facts.record.quarantined = Some(why);
                let refused = edits.refused_recipients.clone();
                // Boxed, seldom taken: it would make the message hook's future larger.
                let quarantined = Box::pin(self.delivery.quarantine(spool, edits)).await;
                (quarantined, refused)
            }
            Outcome::Accepted(mut edits) => {
                let refused = std::mem::take(&mut edits.refused_recipients);
                let replaced = edits.recipients.take();
                let changed = replaced.is_some();
                let sender = (edits.sender.clone(), edits.sender_params.take());
                let readdressed = readdress(&message, &refused, replaced, sender);
                let target = readdressed.as_ref().unwrap_or(&message);
                let delivered = self
                    .delivery
                    .deliver(&facts, target, spool, &body, edits)
                    .await;
                (delivered, if changed { Vec::new() } else { refused })
            }
        };
        facts.record.file = delivered.file.clone();
        if delivered.taken {
            log::emit(log::message_line(&facts.conn, &message, &facts.record));
            metrics::message_accepted(message.size);
        }
        answer(refused, delivered.answer)
    }
}

async fn discard(spool: Option<delivery::Spool>) {
    if let Some(spool) = spool {
        spool.discard().await;
    }
}

/// The message as the delivery sees it, when the checks changed its sender or its
/// recipients: with the new sender and its parameters; without
/// those they refused, or with the recipients a check put in their place (the client's
/// recipients then hear the delivery's one answer). The log keeps the client's envelope.
fn readdress(
    message: &Message,
    refused: &[Option<Reply>],
    replaced: Option<Vec<smtp_session::Recipient>>,
    (sender, params): (Option<ReversePath>, Option<MailParams>),
) -> Option<Message> {
    let mut readdressed = message.clone();
    let new_sender = sender.is_some() || params.is_some();
    if let Some(sender) = sender {
        readdressed.envelope.mail_from = sender;
    }
    if let Some(params) = params {
        readdressed.envelope.mail_params = params;
    }
    if new_sender && replaced.is_none() && refused.iter().all(Option::is_none) {
        return Some(readdressed);
    }
    if let Some(recipients) = replaced {
        readdressed.envelope.recipients = recipients;
        return Some(readdressed);
    }
    if refused.iter().all(Option::is_none) {
        return None;
    }
    let mut refusals = refused.iter();
    readdressed
        .envelope
        .recipients
        .retain(|_| refusals.next().is_none_or(Option::is_none));
    Some(readdressed)
}

/// The client's answer: per recipient under LMTP when the checks refused some (theirs
/// the refusal, the others the delivery's answer), else the delivery's answer.
fn answer(refused: Vec<Option<Reply>>, answer: Answer) -> Decision {
    match answer {
        Answer::Same(reply) => per_recipient(refused, reply),
        Answer::Relayed(decision) if refused.iter().all(Option::is_none) => decision,
        Answer::Relayed(Decision::PerRecipient(replies)) => {
            let mut replies = replies.into_iter();
            let fill = refused
                .into_iter()
                .map(|own| own.or_else(|| replies.next()))
                .map(|reply| reply.unwrap_or_else(delivery::store_failed))
                .collect();
            Decision::PerRecipient(fill)
        }
        Answer::Relayed(decision) => decision,
    }
}

/// The decision for a message stored (`outcome` a 250) or not (a 451), once the checks
/// refused the recipients in `refused`.
fn per_recipient(refused: Vec<Option<Reply>>, outcome: Reply) -> Decision {
    if refused.iter().all(Option::is_none) {
        return if outcome.is_error() {
            Decision::Reject(outcome)
        } else {
            Decision::Accept
        };
    }
    let replies = refused
        .into_iter()
        .map(|reply| reply.unwrap_or_else(|| outcome.clone()))
        .collect();
    Decision::PerRecipient(replies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{CheckFuture, Verdict};
    use crate::delivery::Maildir;
    use smtp_session::{BodyDelivery, Config, ConnectionInfo};
    use smtp_session_tokio::{Server, Transport};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

    /// Judges by the Subject: quarantines, drops, or adds a field; refuses
    /// `bad@` recipients under LMTP by an edit.
    struct BySubject;

    impl Check for BySubject {
        fn name(&self) -> &'static str {
            "by subject"
        }

        fn stages(&self) -> Stages {
            Stages {
                message: true,
                ..Stages::default()
            }
        }

        fn check<'a>(&'a self, _: &'a Facts, stage: &'a Stage<'a>) -> CheckFuture<'a> {
            Box::pin(async move {
                let Stage::Message { body, .. } = stage else {
                    return Verdict::go_on();
                };
                let body = String::from_utf8(body.read(1 << 20).await.unwrap()).unwrap();
                if body.starts_with("Subject: quarantine") {
                    Verdict::Quarantine("the subject asked for it".into())
                } else if body.starts_with("Subject: discard") {
                    Verdict::Discard("the subject asked for it".into())
                } else {
                    Verdict::Continue(Edits {
                        add_fields: b"X-Checked: by subject\r\n".to_vec(),
                        ..Edits::default()
                    })
                }
            })
        }
    }

    /// A transcript over an in-memory stream to the real server.
    struct Client(BufReader<DuplexStream>);

    impl Client {
        async fn reply(&mut self) -> String {
            let mut line = String::new();
            self.0.read_line(&mut line).await.unwrap();
            line
        }

        async fn send(&mut self, text: &str) -> String {
            self.0.get_mut().write_all(text.as_bytes()).await.unwrap();
            self.reply().await
        }
    }

    fn files(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_checks_quarantine_discard_and_added_field_are_applied_by_the_handler() {
        let dir = tempfile::tempdir().unwrap();
        let maildir =
            Arc::new(Maildir::open(dir.path(), "mx.test", std::time::Duration::ZERO).unwrap());
        let sink = Sink::new(vec![Arc::new(BySubject)], Delivery::Maildir(maildir));
        let config = Config {
            hostname: "mx.test".into(),
            body_delivery: BodyDelivery::STREAMED,
            ..Config::default()
        };
        let server = Server::new(sink).config(config);
        let (near, far) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(async move {
            let info = ConnectionInfo::default();
            server.serve_connection(far, info, Transport::Plain).await;
        });
        let mut c = Client(BufReader::new(near));
        assert_eq!(c.reply().await, "220 mx.test ESMTP\r\n");
        assert!(c.send("HELO client.example\r\n").await.starts_with("250 "));
        for subject in ["quarantine me", "discard me", "keep me"] {
            assert!(c
                .send("MAIL FROM:<a@x.example>\r\n")
                .await
                .starts_with("250 "));
            assert!(c
                .send("RCPT TO:<b@y.example>\r\n")
                .await
                .starts_with("250 "));
            assert!(c.send("DATA\r\n").await.starts_with("354 "));
            let reply = c
                .send(&format!("Subject: {subject}\r\n\r\nhi\r\n.\r\n"))
                .await;
            assert!(reply.starts_with("250 "), "{subject}: {reply}");
        }
        assert_eq!(c.send("QUIT\r\n").await, "221 2.0.0 Bye\r\n");
        served.await.unwrap();

        let quarantined = files(&dir.path().join(".Quarantine/new"));
        assert_eq!(quarantined.len(), 1);
        assert!(quarantined[0].ends_with("Subject: quarantine me\r\n\r\nhi\r\n"));
        let stored = files(&dir.path().join("new"));
        assert_eq!(stored.len(), 1, "the dropped message is nowhere");
        let (trace, rest) = stored[0].split_once("X-Checked").unwrap();
        assert!(trace.starts_with("Return-Path: <a@x.example>\r\nReceived: "));
        assert_eq!(rest, ": by subject\r\nSubject: keep me\r\n\r\nhi\r\n");
        assert!(files(&dir.path().join("tmp")).is_empty());
    }
}
