//! mailsink's [`Handler`]: the Lua script (if any) first, then the users for AUTH, then the
//! Maildir for messages, and the JSON log.

use std::sync::Arc;

use smtp_session::{
    AbortReason, AuthRequest, Decision, DisconnectContext, ForwardPath, HeloVerb, Hooks,
    MailParams, Message, RcptParams, Reply, ReversePath,
};
use smtp_session_tokio::{Connection, Handler, HookError, HookResult};

use crate::dns::Resolver;
use crate::facts::ConnFacts;
use crate::limits::Guard;
use crate::log;
use crate::maildir::Maildir;
use crate::metrics;
use crate::policy::{self, Event, LuaPolicy, Outcome};
use crate::relay::Relay;
use crate::store::{self, Spool, Spooler};
use crate::verify::{self, AuthResults, Verifier};

/// The receiver's policy; cloned for every connection (it is a few `Arc`s).
#[derive(Clone, Debug)]
pub struct Sink {
    /// Where messages go; `None` accepts and drops them (`--discard`).
    pub maildir: Option<Arc<Maildir>>,
    /// `--relay`: messages go to a downstream server instead of the Maildir.
    pub relay: Option<Arc<Relay>>,
    /// The `--policy` script.
    pub lua: Option<Arc<LuaPolicy>>,
    /// `--user NAME:PASSWORD` pairs.
    pub users: Arc<[(String, String)]>,
    /// Looks up the client's reverse DNS name at the connect stage; `None` with `--no-dns`.
    pub dns: Option<Resolver>,
    /// The message this connection is receiving into the Maildir.
    pub spooler: Spooler,
    /// The AUTH failure and messages-per-connection limits.
    pub guard: Guard,
    /// `--verify`: SPF, DKIM, DMARC, ARC and iprev for each stored message.
    pub verifier: Option<Verifier>,
}

impl Sink {
    /// True when AUTH can succeed: users were given, or the script checks passwords.
    pub fn auth_enabled(&self) -> bool {
        !self.users.is_empty() || self.script_handles("smtp_server_auth_plain")
    }

    /// True when the script reads message bodies (`smtp_server_data`,
    /// `smtp_server_message_received`).
    pub fn needs_body(&self) -> bool {
        self.script_handles("smtp_server_data")
            || self.script_handles("smtp_server_message_received")
    }

    fn script_handles(&self, event: &str) -> bool {
        self.lua.as_ref().is_some_and(|lua| lua.handles(event))
    }

    fn check_user(&self, name: &str, password: &str) -> bool {
        self.users.iter().any(|(n, p)| n == name && p == password)
    }

    /// Runs a stage's script handlers: a `kumo.reject`/`kumo.disconnect` is the decision, a
    /// script error fails the hook, returning normally goes on.
    async fn stage(&self, facts: ConnFacts, event: Event) -> HookResult {
        Ok(self.script(facts, event).await.unwrap_or(Decision::Accept))
    }

    /// The script's decision on `event`, if it has handlers for it and they decided.
    async fn script(&self, facts: ConnFacts, event: Event) -> Option<Decision> {
        let lua = self.lua.as_ref().filter(|lua| lua.handles(event.name()))?;
        script_decision(lua.call(facts, event).await)
    }
}

/// KumoMTA semantics: a `kumo.reject`/`kumo.disconnect` is the decision; a script error is
/// a hook failure; returning normally goes on.
fn script_decision(outcome: Outcome) -> Option<Decision> {
    match outcome {
        Outcome::Continue(_) | Outcome::Extensions(_) => None,
        Outcome::Decided(decision) => Some(decision),
        Outcome::Failed(err) => {
            eprintln!("mailsink: policy error: {err}");
            Some(Decision::HookFailed)
        }
    }
}

fn bad_credentials() -> Decision {
    Decision::reject(535, "5.7.8 Authentication credentials invalid").expect("valid reply")
}

/// What the script made of a message.
enum Verdict {
    /// Store it; under LMTP, the recipients the script refused have their reply here (one
    /// entry per recipient, `None` for those it accepted; empty when it refused none).
    Store { refused: Vec<Option<Reply>> },
    /// Store nothing and answer this.
    Answer(Decision),
}

/// The decision for a message stored (`outcome` a 250) or not (a 451), once the script
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

/// A message was taken: its log line, and the counters.
fn accepted(
    facts: &ConnFacts,
    message: &Message,
    file: Option<&std::path::Path>,
    auth: Option<&AuthResults>,
) {
    log::emit(&log::message_line(facts, message, file, auth));
    metrics::message_accepted(message.size);
}

fn stored() -> Reply {
    Reply::new(250, "2.0.0 Message accepted").expect("a valid reply")
}

impl Sink {
    /// Runs `smtp_server_data`, then `smtp_server_message_received` (KumoMTA's order).
    /// Under LMTP, as in KumoMTA, each recipient gets a `smtp_server_message_received` call
    /// of its own with a message addressed to it alone, and a `kumo.reject` there refuses
    /// that recipient only.
    async fn script_verdict(
        &self,
        facts: &ConnFacts,
        message: Message,
        auth: Option<Arc<AuthResults>>,
        lmtp: bool,
    ) -> Verdict {
        let message = if self.script_handles("smtp_server_data") {
            let message = Arc::new(message);
            let event = Event::Data(message.clone(), auth.clone());
            if let Some(decision) = self.script(facts.clone(), event).await {
                return Verdict::Answer(decision);
            }
            Arc::try_unwrap(message).unwrap_or_else(|shared| (*shared).clone())
        } else {
            message
        };
        let store_all = Verdict::Store { refused: vec![] };
        let Some(lua) = self
            .lua
            .as_ref()
            .filter(|lua| lua.handles("smtp_server_message_received"))
        else {
            return store_all;
        };
        if !lmtp || message.envelope.recipients.len() < 2 {
            let event = Event::MessageReceived(Arc::new(message), auth);
            return match script_decision(lua.call(facts.clone(), event).await) {
                Some(decision) => Verdict::Answer(decision),
                None => store_all,
            };
        }
        let mut refused = Vec::with_capacity(message.envelope.recipients.len());
        for rcpt in &message.envelope.recipients {
            let mut one = message.clone();
            one.envelope.recipients = vec![rcpt.clone()];
            let event = Event::MessageReceived(Arc::new(one), auth.clone());
            match lua.call(facts.clone(), event).await {
                // A refusal is an error reply; `kumo.reject(250, ..)` is no refusal, and
                // fails the hook as it does over SMTP.
                Outcome::Decided(Decision::Reject(reply)) if !reply.is_error() => {
                    eprintln!("mailsink: policy error: a rejection with {}", reply.code());
                    return Verdict::Answer(Decision::HookFailed);
                }
                Outcome::Decided(Decision::Reject(reply)) if reply.code() != 421 => {
                    refused.push(Some(reply));
                }
                other => match script_decision(other) {
                    Some(decision) => return Verdict::Answer(decision),
                    None => refused.push(None),
                },
            }
        }
        if refused.iter().all(Option::is_some) {
            return Verdict::Answer(Decision::PerRecipient(
                refused.into_iter().flatten().collect(),
            ));
        }
        Verdict::Store { refused }
    }
}

/// `--verify` on the message in `spool`: forged fields in this host's name removed (RFC
/// 8601 section 5), whatever the budget; the results added below the trace fields. A
/// header section too long to look through refuses the message; a spool that cannot be
/// read is the spool's failure.
async fn verified(
    verifier: &Verifier,
    client: verify::Client,
    spool: &mut Spool,
    limit: u64,
    size: u64,
) -> Result<Option<AuthResults>, Decision> {
    let forged = match verifier.forged(spool, size).await {
        Ok(Some(forged)) => forged,
        Ok(None) => {
            let max = verifier.max_header();
            return Err(Decision::Reject(verify::header_too_large(max)));
        }
        Err(err) => {
            spool.fail(err);
            return Ok(None);
        }
    };
    spool.remove(forged);
    match verifier.spooled(client, spool, limit, size).await {
        Ok(results) => {
            spool.add_fields(results.header.as_bytes());
            Ok(Some(results))
        }
        Err(err) => {
            spool.fail(err);
            Ok(None)
        }
    }
}

impl Sink {
    /// The storing path: the script sees the message (its body read back from the spool,
    /// one message at a time), then the spool is delivered into `new/` and the client
    /// answered: 250 once durable, `451 4.3.0` if anything failed.
    async fn store(
        &self,
        facts: ConnFacts,
        mut message: Message,
        summary: Message,
        mut spool: Spool,
        lmtp: bool,
        max_message_size: u64,
    ) -> Decision {
        let auth = match &self.verifier {
            Some(verifier) if spool.failure().is_none() => {
                let client = verify::Client::new(&facts, &message.envelope);
                match verified(verifier, client, &mut spool, max_message_size, summary.size).await {
                    Ok(results) => results.map(Arc::new),
                    Err(refusal) => {
                        spool.discard().await;
                        return refusal;
                    }
                }
            }
            _ => None,
        };
        let mut turn = None;
        if self.needs_body() && spool.failure().is_none() {
            turn = self.spooler.read_back_turn().await;
            match spool.read_body(max_message_size).await {
                Ok(body) => message.body = body,
                Err(err) => spool.fail(err),
            }
        }
        if let Some(err) = spool.failure() {
            eprintln!("mailsink: cannot store a message: {err}");
            spool.discard().await;
            return Decision::Reject(store::store_failed());
        }
        let refused = match self
            .script_verdict(&facts, message, auth.clone(), lmtp)
            .await
        {
            Verdict::Store { refused } => refused,
            Verdict::Answer(decision) => {
                spool.discard().await;
                return decision;
            }
        };
        drop(turn);
        match spool.deliver().await {
            Ok(path) => {
                accepted(&facts, &summary, Some(&path), auth.as_deref());
                per_recipient(refused, stored())
            }
            Err(err) => {
                eprintln!("mailsink: cannot store a message: {err}");
                per_recipient(refused, store::store_failed())
            }
        }
    }
}

impl Handler for Sink {
    /// The hooks worth a round trip: the message (to store and log it), AUTH when enabled,
    /// the connect stage for the reverse DNS name, and the stages the script has handlers
    /// for.
    fn hooks(&self) -> Hooks {
        Hooks {
            connect: self.dns.is_some() || self.script_handles("smtp_server_connection_accepted"),
            helo: self.script_handles("smtp_server_ehlo"),
            auth: self.auth_enabled(),
            // With a Maildir, MAIL FROM checks the free space; it also counts the messages
            // of a connection when they are limited.
            mail_from: self.script_handles("smtp_server_mail_from")
                || self.maildir.is_some()
                || self.guard.limits_messages(),
            rcpt_to: self.script_handles("smtp_server_rcpt_to"),
            // With a Maildir, DATA dates the message and makes its trace fields.
            data: self.script_handles("smtp_server_data_command") || self.maildir.is_some(),
            message: true,
            vrfy: false,
        }
    }

    /// The reverse DNS name first, so the script, the log and the `Received:` field have
    /// it. The greeting waits for it, at most the DNS timeout; with a PROXY header the name
    /// is the client's, not the proxy's.
    async fn connect(&mut self, conn: &mut Connection<'_>) -> HookResult {
        if let (Some(dns), Some(ip)) = (&self.dns, conn.info().remote_ip) {
            conn.set_remote_ptr(dns.verified_ptr(ip).await);
        }
        self.stage(ConnFacts::of(conn), Event::ConnectionAccepted)
            .await
    }

    async fn helo(&mut self, conn: &mut Connection<'_>, _: HeloVerb, host: String) -> HookResult {
        let Some(lua) = &self.lua else {
            return Ok(Decision::Accept);
        };
        // KumoMTA: the handler gets the EHLO keywords and may return a new list.
        let offered = policy::ehlo_keywords(conn);
        let event = Event::Ehlo {
            domain: host,
            extensions: offered.clone(),
        };
        match lua.call(ConnFacts::of(conn), event).await {
            Outcome::Extensions(list) => {
                let extensions = policy::extensions_from(conn.extensions(), &offered, &list);
                conn.set_extensions(extensions);
                Ok(Decision::Accept)
            }
            other => Ok(script_decision(other).unwrap_or(Decision::Accept)),
        }
    }

    async fn mail_from(
        &mut self,
        conn: &mut Connection<'_>,
        path: ReversePath,
        _: MailParams,
    ) -> HookResult {
        if let Some(refusal) = self.guard.mail_from(conn) {
            return Ok(refusal);
        }
        if let Some(maildir) = &self.maildir {
            match maildir.free_space() {
                Ok(free) if free < store::space_needed(conn.config().max_message_size) => {
                    return Ok(Decision::Reject(store::insufficient_storage()));
                }
                Ok(_) => {}
                // The store itself will tell.
                Err(err) => eprintln!("mailsink: cannot learn the free space: {err}"),
            }
        }
        self.stage(ConnFacts::of(conn), Event::MailFrom(path)).await
    }

    async fn rcpt_to(
        &mut self,
        conn: &mut Connection<'_>,
        path: ForwardPath,
        _: RcptParams,
    ) -> HookResult {
        self.stage(ConnFacts::of(conn), Event::RcptTo(path)).await
    }

    async fn data(&mut self, conn: &mut Connection<'_>) -> HookResult {
        if let Some(maildir) = &self.maildir {
            self.spooler.prepare(conn, maildir);
        }
        self.stage(ConnFacts::of(conn), Event::DataCommand).await
    }

    /// The password check, within the AUTH failure limit of the client's address.
    async fn auth(&mut self, conn: &mut Connection<'_>, request: AuthRequest) -> HookResult {
        let client = conn.client();
        if let Some(refusal) = self.guard.auth_refused(client).await {
            return Ok(refusal);
        }
        let decision = self.check_credentials(conn, request).await?;
        if decision == bad_credentials() {
            if let Some(refusal) = self.guard.auth_failed(client).await {
                return Ok(refusal);
            }
        }
        Ok(decision)
    }

    async fn message(&mut self, conn: &mut Connection<'_>, mut message: Message) -> HookResult {
        self.guard.message_received();
        let facts = ConnFacts::of(conn);
        let lmtp = conn.config().lmtp;
        if let Some(relay) = &self.relay {
            let message = Arc::new(message);
            // KumoMTA's order: smtp_server_data, then smtp_server_message_received.
            for event in [
                Event::Data(message.clone(), None),
                Event::MessageReceived(message.clone(), None),
            ] {
                if let Some(decision) = self.script(facts.clone(), event).await {
                    return Ok(decision);
                }
            }
            let hostname = conn.config().hostname.clone();
            let started = std::time::Instant::now();
            let relayed = relay.deliver(&facts, &message, &hostname, lmtp).await;
            metrics::relay_duration(relayed.delivered > 0, started.elapsed());
            if relayed.delivered > 0 {
                accepted(&facts, &message, None, None);
            }
            return Ok(relayed.decision);
        }
        // What the log needs: the message without its body (a buffered one's, with
        // --discard and a script that reads bodies).
        let body = std::mem::take(&mut message.body);
        let summary = message.clone();
        message.body = body;
        let Some(maildir) = self.maildir.clone() else {
            let refused = match self.script_verdict(&facts, message, None, lmtp).await {
                Verdict::Store { refused } => refused,
                Verdict::Answer(decision) => return Ok(decision),
            };
            accepted(&facts, &summary, None, None);
            return Ok(per_recipient(refused, stored()));
        };
        let spool = self.spooler.finish(conn, &maildir, &message.envelope);
        let max = conn.config().max_message_size;
        Ok(self.store(facts, message, summary, spool, lmtp, max).await)
    }

    async fn body_piece(
        &mut self,
        _: &mut Connection<'_>,
        piece: Vec<u8>,
    ) -> Result<(), HookError> {
        let Some(maildir) = &self.maildir else {
            return Ok(());
        };
        // A failed write is answered at the end of the message, with a 451.
        if !self.spooler.push(maildir, piece).await {
            return Err("a body piece before the data hook".into());
        }
        Ok(())
    }

    async fn body_aborted(&mut self, _: &mut Connection<'_>, _: AbortReason) {
        self.spooler.abort().await;
    }
    async fn disconnect(&mut self, context: DisconnectContext) {
        log::emit(&log::disconnect_line(&context));
        let Some(lua) = &self.lua else {
            return;
        };
        let facts = ConnFacts {
            info: context.connection.info.clone(),
            helo: None,
            tls: None,
            auth: None,
        };
        // Runs even without a handler: the Lua side forgets the connection's meta.
        let event = Event::Disconnect {
            arguments: serde_json::to_value(&context.arguments).unwrap_or_default(),
            connection: serde_json::to_value(&context.connection).unwrap_or_default(),
        };
        if let Outcome::Failed(err) = lua.call(facts, event).await {
            // Halon: on script error Pass() is called; nothing changes.
            eprintln!("mailsink: policy error: {err}");
        }
    }

    fn hook_failed(&mut self, error: &HookError) {
        // A message whose piece could not be written in time ends here, without its hook.
        self.spooler.abandon();
        eprintln!("mailsink: a hook failed: {error}");
    }
}

impl Sink {
    /// AUTH PLAIN or LOGIN credentials, checked by the script or against the users.
    async fn check_credentials(
        &self,
        conn: &mut Connection<'_>,
        request: AuthRequest,
    ) -> HookResult {
        let (authz, authc, password) = match request {
            AuthRequest::Plain {
                authzid,
                authcid,
                password,
            } => (authzid, authcid, password),
            AuthRequest::Login { username, password } => (String::new(), username, password),
            // Only PLAIN and LOGIN are offered, and the session decodes both.
            _ => return Ok(bad_credentials()),
        };
        if let Some(lua) = self
            .lua
            .as_ref()
            .filter(|lua| lua.handles("smtp_server_auth_plain"))
        {
            let event = Event::AuthPlain {
                authz,
                authc,
                password,
            };
            return Ok(match lua.call(ConnFacts::of(conn), event).await {
                Outcome::Continue(true) => Decision::Accept,
                Outcome::Continue(false) => bad_credentials(),
                other => script_decision(other).unwrap_or_else(bad_credentials),
            });
        }
        let ok = (authz.is_empty() || authz == authc) && self.check_user(&authc, &password);
        Ok(if ok {
            Decision::Accept
        } else {
            bad_credentials()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::DnsSettings;
    use crate::maildir::Maildir;
    use std::time::Duration;

    /// RFC 8601 section 5's removal needs only the header section: a message that finds no
    /// room in `--verify-memory` within `--verify-timeout` is stored with its checks
    /// `temperror`, and still without the fields in this host's name.
    #[tokio::test]
    async fn forged_fields_go_even_when_the_verify_budget_has_no_room_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = Arc::new(Maildir::open(dir.path(), "mx.test").unwrap());
        let settings = DnsSettings {
            servers: vec!["127.0.0.1:9".parse().unwrap()],
            timeout: Duration::from_secs(1),
        };
        let resolver = Resolver::new(&settings).unwrap();
        let verifier = Verifier::new(&resolver, "mx.test", Duration::from_secs(1), 1, 4096);
        let _all_of_it = verifier.take_budget();

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
        let results = verified(&verifier, client, &mut spool, 1 << 20, size).await;
        let results = results.ok().flatten().expect("results");
        assert!(results.timed_out);
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
