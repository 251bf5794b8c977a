//! `--policy-service`: Postfix's policy delegation (postgrey, postfwd, policyd-spf...) at
//! one SMTP stage, RCPT by default. Each request carries what Postfix would send; the
//! answer maps onto the stage's verdict as access(5) says (`DEFER_IF_PERMIT` and
//! `DEFER_IF_REJECT` by the merge rule of [`crate::check`], as in Postfix). Connections are
//! kept and reused, one per request in flight. A service that fails, times out or answers
//! garbage takes `--policy-service-default-action`. Each answer comes back with the verdict,
//! for the log, the metrics and the policy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use smtp_filter_proto::policy::{
    PolicyAction, PolicyClient, PolicyOutput, PolicyRequest, PolicyResponse, ProtocolState, Refusal,
};
use smtp_session::{Decision, Reply};

use crate::check::{Check, CheckFuture, Edits, Facts, Findings, Stage, Stages, Verdict};
use crate::facts::FilterVerdict;
use crate::filter_socket::{self, FilterAddr, FilterIo};

/// The largest response accepted.
const MAX_RESPONSE: usize = 4096;
/// Idle connections kept for reuse.
const IDLE: usize = 16;

/// The stage the service is asked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyStage {
    /// The client connected.
    Connect,
    /// HELO or EHLO.
    Helo,
    /// MAIL FROM.
    Mail,
    /// Each RCPT TO.
    Rcpt,
    /// DATA.
    Data,
}

/// What a failing service means, as Postfix's `smtpd_policy_service_default_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DefaultAction {
    /// `451 4.3.5 Server configuration problem`.
    Tempfail,
    /// Go on as if the service had answered DUNNO.
    Dunno,
    /// `554 5.7.1 Access denied`.
    Reject,
}

/// The policy service options.
#[derive(Debug, clap::Args)]
pub struct PolicyServiceArgs {
    /// A policy delegation service, inet:HOST:PORT or unix:PATH.
    #[arg(long, value_name = "ADDR")]
    pub policy_service: Option<FilterAddr>,
    /// The stage it is asked at.
    #[arg(long, value_enum, default_value = "rcpt")]
    pub policy_service_stage: PolicyStage,
    /// Seconds the service may take to connect and to answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub policy_service_timeout: u64,
    /// What a service that fails, times out or answers garbage means.
    #[arg(long, value_enum, default_value = "tempfail")]
    pub policy_service_default_action: DefaultAction,
}

/// One policy service as a check.
pub struct PolicyService {
    addr: FilterAddr,
    stage: PolicyStage,
    timeout: Duration,
    default_action: DefaultAction,
    /// Connections kept for the next requests.
    idle: Mutex<Vec<Box<dyn FilterIo>>>,
    /// Per SMTP connection (by its id): the transaction so far.
    envelopes: Mutex<HashMap<String, Transaction>>,
}

/// What a transaction's requests carry, and what the answers leave for its message.
#[derive(Debug, Default)]
struct Transaction {
    /// The sender, without angle brackets.
    sender: String,
    /// Recipients accepted so far.
    recipients: u32,
    /// Header fields to prepend (`PREPEND`).
    prepend: Vec<u8>,
    /// Why the message is to be dropped (`DISCARD`) or held (`HOLD`).
    discard: Option<String>,
    hold: Option<String>,
}

impl std::fmt::Debug for PolicyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PolicyService({})", self.addr)
    }
}

impl PolicyService {
    /// The check for `args`, if a service was named.
    pub fn from_args(args: &PolicyServiceArgs) -> Option<PolicyService> {
        Some(PolicyService {
            addr: args.policy_service.clone()?,
            stage: args.policy_service_stage,
            timeout: Duration::from_secs(args.policy_service_timeout),
            default_action: args.policy_service_default_action,
            idle: Mutex::new(Vec::new()),
            envelopes: Mutex::new(HashMap::new()),
        })
    }
}

impl Check for PolicyService {
    fn name(&self) -> &'static str {
        "policy service"
    }

    fn stages(&self) -> Stages {
        let s = self.stage;
        Stages {
            connect: s == PolicyStage::Connect,
            helo: s == PolicyStage::Helo,
            mail: matches!(s, PolicyStage::Mail | PolicyStage::Rcpt | PolicyStage::Data),
            rcpt: matches!(s, PolicyStage::Rcpt | PolicyStage::Data),
            data: s == PolicyStage::Data,
            message: true,
            disconnect: true,
            ..Stages::default()
        }
    }

    fn check<'a>(&'a self, facts: &'a Facts, stage: &'a Stage<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            let id = facts.conn.info.id.clone();
            let state = match stage {
                Stage::Connect => ProtocolState::Connect,
                Stage::Helo { .. } => ProtocolState::Ehlo,
                Stage::Mail(path, _) => {
                    let transaction = Transaction {
                        sender: path.to_string(),
                        ..Transaction::default()
                    };
                    self.envelopes
                        .lock()
                        .expect("lock")
                        .insert(id.clone(), transaction);
                    if self.stage != PolicyStage::Mail {
                        return Verdict::go_on();
                    }
                    ProtocolState::Mail
                }
                Stage::Rcpt(..) if self.stage != PolicyStage::Rcpt => {
                    self.count_recipient(&id);
                    return Verdict::go_on();
                }
                Stage::Rcpt(..) => ProtocolState::Rcpt,
                Stage::Data => ProtocolState::Data,
                Stage::Disconnect { .. } => {
                    self.envelopes.lock().expect("lock").remove(&id);
                    return Verdict::go_on();
                }
                Stage::Message { .. } => return self.for_the_message(&id),
                _ => return Verdict::go_on(),
            };
            let request = self.request(facts, stage, state);
            let (verdict, said) = self.answer(&id, &request).await;
            if let Stage::Rcpt(..) = stage {
                if matches!(
                    verdict,
                    Verdict::Continue(_) | Verdict::Accept(_) | Verdict::DeferIfReject(_)
                ) {
                    self.count_recipient(&id);
                }
            }
            verdict.found(Findings {
                filters: vec![said],
                ..Findings::default()
            })
        })
    }
}

impl PolicyService {
    /// The service's answer to `request`: the stage's verdict, and what it said.
    async fn answer(&self, id: &str, request: &PolicyRequest) -> (Verdict, FilterVerdict) {
        let name = self.addr.to_string();
        let (verdict, mut said) = match self.ask(request).await {
            Ok(response) => {
                let mut said =
                    FilterVerdict::new("policy_service", name, action_name(&response.action));
                said.reason = action_text(&response.action);
                (self.keep_for_the_message(id, response.action), said)
            }
            Err(err) => {
                let mut said = FilterVerdict::new("policy_service", name, "failed");
                said.reason = Some(err.clone());
                (self.failed(err), said)
            }
        };
        match &verdict {
            Verdict::Refuse(Decision::Reject(reply))
            | Verdict::DeferIfPermit(reply)
            | Verdict::DeferIfReject(reply) => said.set_reply(reply),
            _ => {}
        }
        (verdict, said)
    }

    fn count_recipient(&self, id: &str) {
        if let Some(transaction) = self.envelopes.lock().expect("lock").get_mut(id) {
            transaction.recipients += 1;
        }
    }

    /// PREPEND, DISCARD and HOLD act on the message: kept for its stage. The rest is the
    /// stage's verdict.
    fn keep_for_the_message(&self, id: &str, action: PolicyAction) -> Verdict {
        let mut envelopes = self.envelopes.lock().expect("lock");
        let Some(transaction) = envelopes.get_mut(id) else {
            return verdict(action);
        };
        let why =
            |text: Option<String>| text.unwrap_or_else(|| format!("policy service {}", self.addr));
        match action {
            PolicyAction::Prepend { name, value } => {
                transaction
                    .prepend
                    .extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
            }
            PolicyAction::Discard(text) => transaction.discard = Some(why(text)),
            PolicyAction::Hold(text) => transaction.hold = Some(why(text)),
            other => return verdict(other),
        }
        Verdict::go_on()
    }

    /// The message stage: what the transaction's answers left for it.
    fn for_the_message(&self, id: &str) -> Verdict {
        let mut envelopes = self.envelopes.lock().expect("lock");
        let Some(transaction) = envelopes.get_mut(id) else {
            return Verdict::go_on();
        };
        let transaction = std::mem::take(transaction);
        if let Some(why) = transaction.discard {
            return Verdict::Discard(why);
        }
        if let Some(why) = transaction.hold {
            return Verdict::Quarantine(why);
        }
        Verdict::Continue(Edits {
            add_fields: transaction.prepend,
            ..Edits::default()
        })
    }

    /// The request Postfix would send at `state`.
    fn request(&self, facts: &Facts, stage: &Stage<'_>, state: ProtocolState) -> PolicyRequest {
        let info = &facts.conn.info;
        let mut r = PolicyRequest::new(state);
        r.protocol_name = if facts.lmtp { "LMTP" } else { "ESMTP" }.into();
        r.helo_name = facts
            .conn
            .helo
            .as_ref()
            .map(|h| h.host.clone())
            .unwrap_or_default();
        r.client_address = info.remote_ip.map(|ip| ip.to_string()).unwrap_or_default();
        r.client_port = info.remote_port.map(|p| p.to_string()).unwrap_or_default();
        r.client_name = info.remote_ptr.clone().unwrap_or_else(|| "unknown".into());
        r.reverse_client_name = r.client_name.clone();
        r.server_address = info.local_ip.map(|ip| ip.to_string()).unwrap_or_default();
        r.server_port = info.local_port.map(|p| p.to_string()).unwrap_or_default();
        r.instance = format!("{}.{}", info.id, facts.messages);
        if let Some(transaction) = self.envelopes.lock().expect("lock").get(&info.id) {
            r.sender = transaction.sender.clone();
            r.recipient_count = transaction.recipients;
        }
        if let Stage::Rcpt(path, _) = stage {
            r.recipient = path.to_string();
        }
        if let Some(auth) = &facts.conn.auth {
            r.sasl_method = auth.mechanism.clone();
            r.sasl_username = auth.username.clone().unwrap_or_default();
        }
        if let Some(tls) = &facts.conn.tls {
            r.encryption_protocol = tls.protocol.clone();
            r.encryption_cipher = tls.cipher.clone();
            r.encryption_keysize = tls.key_size.unwrap_or(0);
        }
        r
    }

    /// One request on a kept connection or a new one; the connection is kept after a
    /// response.
    async fn ask(&self, request: &PolicyRequest) -> Result<PolicyResponse, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let kept = self.idle.lock().expect("lock").pop();
        let mut io = match kept {
            Some(io) => io,
            None => filter_socket::connect(&self.addr, self.timeout)
                .await
                .map_err(|e| e.to_string())?,
        };
        let mut client = PolicyClient::new(MAX_RESPONSE);
        client.request(request).map_err(|e| e.to_string())?;
        // On the heap: inline, it would make every check future this is part of 4 KiB larger.
        let mut buf = vec![0u8; 4096];
        let exchange = async {
            loop {
                while let Some(output) = client.poll_output() {
                    match output {
                        PolicyOutput::Write(bytes) => {
                            io.write_all(&bytes).await.map_err(|e| e.to_string())?
                        }
                        PolicyOutput::Response(response) => return Ok(response),
                        PolicyOutput::Failed(err) => return Err(format!("protocol error: {err}")),
                        _ => {}
                    }
                }
                let n = io.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("the service closed the connection".to_string());
                }
                client.handle_input(&buf[..n]);
            }
        };
        let response = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))??;
        let mut idle = self.idle.lock().expect("lock");
        if idle.len() < IDLE {
            idle.push(io);
        }
        Ok(response)
    }

    fn failed(&self, err: String) -> Verdict {
        eprintln!("mailsink: policy service {} error: {err}", self.addr);
        match self.default_action {
            DefaultAction::Dunno => Verdict::go_on(),
            DefaultAction::Tempfail => refuse(451, "4.3.5 Server configuration problem"),
            DefaultAction::Reject => refuse(554, "5.7.1 Access denied"),
        }
    }
}

fn refuse(code: u16, text: &str) -> Verdict {
    Verdict::Refuse(Decision::Reject(
        Reply::new(code, text).expect("a valid reply"),
    ))
}

/// A refusal with the service's optional text, or the default text.
fn refusal(code: u16, class: u8, r: &Refusal, default: &str) -> Verdict {
    Verdict::Refuse(Decision::Reject(refusal_reply(code, class, r, default)))
}

/// The reply of a refusal with the service's optional text, or the default text.
fn refusal_reply(code: u16, class: u8, r: &Refusal, default: &str) -> Reply {
    let enhanced = r.enhanced.map_or(format!("{class}.7.1"), |e| {
        format!("{class}.{}.{}", e.subject, e.detail)
    });
    let text = r.text.as_deref().unwrap_or(default);
    Reply::new(code, format!("{enhanced} {text}"))
        .or_else(|_| Reply::new(code, format!("{enhanced} {default}")))
        .or_else(|_| Reply::new(code, format!("{class}.7.1 {default}")))
        .expect("a valid reply")
}

/// The stage's verdict for an access(5) action.
fn verdict(action: PolicyAction) -> Verdict {
    match action {
        PolicyAction::Ok => Verdict::Accept(Edits::default()),
        PolicyAction::Reject(r) => refusal(554, 5, &r, "Access denied"),
        PolicyAction::Defer(r) => refusal(450, 4, &r, "Service unavailable"),
        // Decided by the checks after it, in the merge of the stage's verdicts.
        PolicyAction::DeferIfPermit(r) => {
            Verdict::DeferIfPermit(refusal_reply(450, 4, &r, "Service unavailable"))
        }
        PolicyAction::DeferIfReject(r) => {
            Verdict::DeferIfReject(refusal_reply(450, 4, &r, "Service unavailable"))
        }
        PolicyAction::Reply {
            code,
            enhanced,
            text,
        } => {
            let enhanced = enhanced.map(|e| format!("{e} ")).unwrap_or_default();
            match Reply::new(code, format!("{enhanced}{text}")) {
                Ok(reply) => Verdict::Refuse(Decision::Reject(reply)),
                Err(_) => refuse(451, "4.3.5 Server configuration problem"),
            }
        }
        PolicyAction::Unsupported { action, .. } => {
            eprintln!("mailsink: policy service: action {action} is not supported");
            refuse(451, "4.3.5 Server configuration problem")
        }
        PolicyAction::Warn(text) | PolicyAction::Info(text) => {
            // Also in the log lines, as the verdict's reason.
            eprintln!(
                "mailsink: policy service: {}",
                text.as_deref().unwrap_or("(a warning without text)")
            );
            Verdict::go_on()
        }
        // DUNNO; PREPEND, DISCARD and HOLD outside a transaction (at connect or HELO) have
        // no message to act on.
        _ => Verdict::go_on(),
    }
}

/// The action's own text, for the record: a `WARN`'s, a `HOLD`'s, the prepended field...
fn action_text(action: &PolicyAction) -> Option<String> {
    match action {
        PolicyAction::Reject(r)
        | PolicyAction::Defer(r)
        | PolicyAction::DeferIfReject(r)
        | PolicyAction::DeferIfPermit(r) => r.text.clone(),
        PolicyAction::Prepend { name, value } => Some(format!("{name}:{value}")),
        PolicyAction::Discard(text)
        | PolicyAction::Warn(text)
        | PolicyAction::Hold(text)
        | PolicyAction::Info(text) => text.clone(),
        PolicyAction::Unsupported { action, text } => Some(format!("{action} {text}")),
        _ => None,
    }
}

/// The action's name, for the record and the metrics.
fn action_name(action: &PolicyAction) -> &'static str {
    match action {
        PolicyAction::Ok => "ok",
        PolicyAction::Dunno => "dunno",
        PolicyAction::Reject(_) => "reject",
        PolicyAction::Defer(_) => "defer",
        PolicyAction::DeferIfReject(_) => "defer_if_reject",
        PolicyAction::DeferIfPermit(_) => "defer_if_permit",
        PolicyAction::Reply { code, .. } if *code < 500 => "defer",
        PolicyAction::Reply { .. } => "reject",
        PolicyAction::Prepend { .. } => "prepend",
        PolicyAction::Discard(_) => "discard",
        PolicyAction::Warn(_) => "warn",
        PolicyAction::Hold(_) => "hold",
        PolicyAction::Info(_) => "info",
        _ => "unsupported",
    }
}
