//! `--milter`: mail filters (OpenDKIM, rspamd, clamav-milter...) over the milter protocol,
//! as Postfix's `smtpd_milters` runs them. Each filter is connected when the client
//! connects and stays connected as long as it; it is sent each step when the client sends
//! it (connect, HELO, MAIL, RCPT, DATA), and at the end of the message the header fields,
//! the body read piece by piece from the spool, and end of message; MAIL and RCPT carry
//! their ESMTP parameters (see [`args`]), and every transaction's end (its message, a
//! refused MAIL or DATA, RSET, the client leaving) is an abort to each filter that was
//! sent its MAIL, as Postfix's `milter8_abort` sends it. Several filters run in
//! their order, and the first that refuses a step settles it: a refusal at connect refuses
//! every later command of the connection (Postfix's behaviour: the client gets the reply
//! to its commands; NOOP, RSET and QUIT still work), at HELO, MAIL, RCPT or DATA that
//! command only (at RCPT that recipient only), at end of message the message. Header,
//! recipient, sender and body changes go to the delivery (see [`message`]); a filter that
//! fails, times out or breaks the protocol takes `--milter-default-action` and is not used
//! again on that connection: with `accept` it is as if it were not there, with `tempfail`
//! or `reject` the command it failed at and every later one are refused, as Postfix does.
//! What each filter said (a refusal, a discard or quarantine, a failure, and at the end of
//! a message its verdict) comes back with the stage's verdict as a finding, for the log
//! lines, the metrics, the disconnect context and the Lua policy.

mod args;
mod conn;
mod message;

use std::time::Duration;

use smtp_filter_proto::milter::{
    ClientAddress, Error as MilterError, Macros, Milter, Verdict as Answer,
};
use smtp_session::{Decision, MailParams, Reply, ReversePath};

use crate::check::{Body, Check, CheckFuture, Dialogue, Facts, Findings, Stage, Stages, Verdict};
use crate::facts::FilterVerdict;
use crate::filter_socket::FilterAddr;

use conn::{Conn, Failure};

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

impl DefaultAction {
    /// The reply that refuses a command when a filter failed, if any.
    fn reply(self) -> Option<Reply> {
        let reply = match self {
            DefaultAction::Accept => return None,
            DefaultAction::Tempfail => {
                Reply::new(451, "4.7.1 Service unavailable - try again later")
            }
            DefaultAction::Reject => Reply::new(550, "5.7.1 Command rejected"),
        };
        Some(reply.expect("a valid reply"))
    }
}

/// The milter options.
#[derive(Debug, clap::Args)]
pub struct MilterArgs {
    /// A mail filter, inet:HOST:PORT or unix:PATH (repeatable; asked in this order at each
    /// step, each seeing the message as the ones before changed it).
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
#[derive(Clone, Debug)]
pub struct Milters {
    /// The filters, in order.
    pub addrs: Vec<FilterAddr>,
    /// Per connect and per step.
    pub timeout: Duration,
    /// On failure.
    pub default_action: DefaultAction,
}

impl Check for Milters {
    fn name(&self) -> &'static str {
        "milter"
    }

    fn stages(&self) -> Stages {
        Stages {
            connect: true,
            helo: true,
            mail: true,
            rcpt: true,
            data: true,
            message: true,
            disconnect: true,
            ..Stages::default()
        }
    }

    fn check<'a>(&'a self, _: &'a Facts, _: &'a Stage<'a>) -> CheckFuture<'a> {
        // Every stage goes to the connection's filters (`open`).
        Box::pin(async { Verdict::go_on() })
    }

    fn hears_aborts(&self) -> bool {
        true
    }

    fn open(&self) -> Option<Box<dyn Dialogue>> {
        Some(Box::new(Filters {
            milters: self.clone(),
            filters: Vec::new(),
            refused: None,
            discard: None,
            said: Vec::new(),
        }))
    }
}

/// One filter of one connection; `conn` is gone once it failed.
struct Filter {
    addr: FilterAddr,
    conn: Option<Conn>,
}

/// The filters of one connection.
struct Filters {
    milters: Milters,
    filters: Vec<Filter>,
    /// The connection is refused (by a filter at connect, or a failed filter's default
    /// action): every later command gets this reply.
    refused: Option<Reply>,
    /// A filter asked at MAIL, RCPT or DATA for the message to be dropped.
    discard: Option<String>,
    /// What the filters said during the stage being answered, for its findings.
    said: Vec<FilterVerdict>,
}

impl Dialogue for Filters {
    /// RSET and the like: the filters forget the message at once, as Postfix's
    /// `mail_reset` tells them.
    fn aborted(&mut self) -> CheckFuture<'_, ()> {
        Box::pin(self.abort())
    }

    fn check<'a>(&'a mut self, facts: &'a Facts, stage: &'a Stage<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            let verdict = self.answer(facts, stage).await;
            let said = std::mem::take(&mut self.said);
            if said.is_empty() {
                verdict
            } else {
                verdict.found(Findings {
                    filters: said,
                    ..Findings::default()
                })
            }
        })
    }
}

impl Filters {
    /// The filters' answer to `stage`; what each said goes into `said`.
    async fn answer(&mut self, facts: &Facts, stage: &Stage<'_>) -> Verdict {
        let macros = macros(facts);
        match stage {
            Stage::Connect => self.connect(facts, &macros).await,
            Stage::Disconnect { .. } => {
                for filter in self.filters.drain(..) {
                    if let Some(conn) = filter.conn {
                        conn.close().await;
                    }
                }
                Verdict::go_on()
            }
            _ if self.refused.is_some() => {
                let reply = self.refused.clone().expect("checked");
                match stage {
                    Stage::Message { message, .. } => {
                        Verdict::Refuse(message::refusal(facts, message, reply))
                    }
                    _ => Verdict::Refuse(Decision::Reject(reply)),
                }
            }
            Stage::Helo { host, .. } => {
                // HELO and EHLO end a transaction too.
                self.abort().await;
                self.each(|m| m.helo(host, &macros)).await
            }
            Stage::Mail(path, params) => {
                self.discard = None;
                self.abort().await;
                let verdict = self.mail(path, params, macros).await;
                self.abort_if_refused(verdict).await
            }
            Stage::Rcpt(path, params) => {
                let rcpt = format!("<{path}>");
                let args = args::rcpt(params);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let macros = macros.with("{rcpt_addr}", path.to_string());
                self.each(|m| m.rcpt(&rcpt, &args, &macros)).await
            }
            Stage::Data => {
                let verdict = self.each(|m| m.data(&macros)).await;
                self.abort_if_refused(verdict).await
            }
            Stage::Message {
                message,
                body: Body::Spool(spool),
            } => {
                let verdict = self.message(facts, message, spool, &macros).await;
                // The transaction is over, whatever became of it: Postfix aborts it with
                // each filter at once, so that the filter forgets the message.
                self.abort().await;
                verdict
            }
            _ => Verdict::go_on(),
        }
    }

    /// MAIL FROM with its ESMTP parameters, as Postfix sends it: the path in angle
    /// brackets, then each parameter as an argument of its own.
    async fn mail(&mut self, path: &ReversePath, params: &MailParams, macros: Macros) -> Verdict {
        let sender = format!("<{path}>");
        let args = args::mail(params);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let macros = macros.with("{mail_addr}", path.to_string());
        self.each(|m| m.mail(&sender, &args, &macros)).await
    }

    /// A refused MAIL or DATA ends the transaction: the filters are told at once, as
    /// Postfix tells them.
    async fn abort_if_refused(&mut self, verdict: Verdict) -> Verdict {
        if matches!(verdict, Verdict::Refuse(_)) {
            self.abort().await;
        }
        verdict
    }

    /// Connects to each filter and sends it the client's connection. A refusal is kept
    /// for the commands to come; the greeting goes out (but 421 closes at once).
    async fn connect(&mut self, facts: &Facts, macros: &Macros) -> Verdict {
        let info = &facts.conn.info;
        let client = match (info.remote_ip, info.remote_port) {
            (Some(ip), port) => ClientAddress::Inet((ip, port.unwrap_or(0)).into()),
            _ => ClientAddress::Unknown,
        };
        let name = client_name(facts);
        for addr in self.milters.addrs.clone() {
            let conn = Conn::open(&addr, self.milters.timeout).await;
            self.filters.push(Filter { addr, conn: None });
            let index = self.filters.len() - 1;
            let answer = match conn {
                Ok(mut conn) => {
                    let answer = conn.step(|m| m.connect(&name, &client, macros)).await;
                    self.filters[index].conn = Some(conn);
                    answer
                }
                Err(err) => Err(err),
            };
            match answer.map(refusal) {
                Ok(None) => {}
                Ok(Some(reply)) if reply.code() == 421 => {
                    self.count(index, &reply);
                    return Verdict::Refuse(Decision::Reject(reply));
                }
                Ok(Some(reply)) => {
                    self.count(index, &reply);
                    self.refused = Some(reply);
                    return Verdict::go_on();
                }
                Err(err) => {
                    if self.fail(index, err).is_some() {
                        return Verdict::go_on();
                    }
                }
            }
        }
        Verdict::go_on()
    }

    /// Sends a step to each filter in turn; the first refusal refuses the command.
    async fn each(&mut self, step: impl Fn(&mut Milter) -> Result<(), MilterError>) -> Verdict {
        for index in 0..self.filters.len() {
            let filter = &mut self.filters[index];
            let Some(conn) = filter.conn.as_mut() else {
                continue;
            };
            match conn.step(&step).await {
                Ok(Answer::Discard) => {
                    self.discard = Some(format!("milter {}", filter.addr));
                    let verdict = FilterVerdict::new("milter", filter.addr.to_string(), "discard");
                    self.said.push(verdict);
                }
                Ok(answer) => {
                    if let Some(reply) = refusal(answer) {
                        self.count(index, &reply);
                        return Verdict::Refuse(Decision::Reject(reply));
                    }
                }
                Err(err) => {
                    if let Some(reply) = self.fail(index, err) {
                        return Verdict::Refuse(Decision::Reject(reply));
                    }
                }
            }
        }
        Verdict::go_on()
    }

    /// Abandons the message open with each filter, if any (RSET, a refused command, a new
    /// transaction).
    async fn abort(&mut self) {
        for index in 0..self.filters.len() {
            if let Some(conn) = self.filters[index].conn.as_mut() {
                if let Err(err) = conn.abort().await {
                    self.fail(index, err);
                }
            }
        }
    }

    /// The `index`th filter failed: it is dropped, and its default action applies. The
    /// reply that refuses the command and the rest of the connection, if any.
    fn fail(&mut self, index: usize, err: Failure) -> Option<Reply> {
        let filter = &mut self.filters[index];
        eprintln!("mailsink: milter {} error: {err}", filter.addr);
        filter.conn = None;
        let mut said = FilterVerdict::new("milter", filter.addr.to_string(), "failed");
        said.reason = Some(err);
        let reply = self.milters.default_action.reply();
        if let Some(reply) = &reply {
            said.set_reply(reply);
            self.refused = Some(reply.clone());
        }
        self.said.push(said);
        reply
    }

    /// Records the `index`th filter's refusal.
    fn count(&mut self, index: usize, reply: &Reply) {
        let verdict = if reply.code() < 500 {
            "tempfail"
        } else {
            "reject"
        };
        let mut said = FilterVerdict::new("milter", self.filters[index].addr.to_string(), verdict);
        said.set_reply(reply);
        self.said.push(said);
    }
}

/// The reply a filter's verdict refuses a step with, if it does.
fn refusal(answer: Answer) -> Option<Reply> {
    let reply = |code, text| Reply::new(code, text).expect("a valid reply");
    match answer {
        Answer::Reject => Some(reply(550, "5.7.1 Command rejected")),
        Answer::Tempfail => Some(reply(451, "4.7.1 Service unavailable - try again later")),
        Answer::Shutdown => Some(reply(421, "4.7.0 Server closing connection")),
        Answer::Reply(r) => Some(smtp_reply(&r)),
        _ => None,
    }
}

/// The filter's own reply as mailsink's.
fn smtp_reply(reply: &smtp_filter_proto::milter::SmtpReply) -> Reply {
    let text = reply.lines.join(" ");
    Reply::new(reply.code, &text)
        .unwrap_or_else(|_| Reply::new(550, "5.7.1 Command rejected").expect("valid"))
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
