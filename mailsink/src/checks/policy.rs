//! The Lua policy (`--policy`) as a check: each stage the script has handlers for becomes
//! its KumoMTA event; `kumo.reject` and `kumo.disconnect` are refusals, a script error is
//! the check's failure (KumoMTA's `421 4.3.0 <hostname> technical difficulties`), and
//! returning normally goes on.

use std::sync::Arc;

use smtp_session::{AuthRequest, Decision, Message};
use tokio::sync::Semaphore;

use crate::check::{
    bad_credentials, Body, Check, CheckFuture, Edits, Facts, Stage, Stages, Verdict,
};
use crate::facts::ConnFacts;
use crate::policy::{self, Event, LuaPolicy, Outcome};

/// The script, and the turn for reading bodies back for it.
#[derive(Debug)]
pub struct Policy {
    lua: Arc<LuaPolicy>,
    /// One body read back for the script at a time, across all connections: the script
    /// runs on one thread anyway, and this bounds the bodies held in memory for it.
    read_back: Semaphore,
    /// The stages the script has handlers for, known once it is loaded: asked at every
    /// stage of every connection.
    stages: Stages,
}

impl Policy {
    /// The check of a loaded script.
    pub fn new(lua: Arc<LuaPolicy>) -> Policy {
        let handles = |event: &str| lua.handles(event);
        let stages = Stages {
            connect: handles("smtp_server_connection_accepted"),
            helo: handles("smtp_server_ehlo"),
            auth: handles("smtp_server_auth_plain"),
            mail: handles("smtp_server_mail_from"),
            rcpt: handles("smtp_server_rcpt_to"),
            data: handles("smtp_server_data_command"),
            message: handles("smtp_server_data") || handles("smtp_server_message_received"),
            // Even without a handler: the script forgets the connection's meta (without
            // running anything).
            disconnect: true,
        };
        Policy {
            lua,
            read_back: Semaphore::new(1),
            stages,
        }
    }

    fn handles(&self, event: &str) -> bool {
        self.lua.handles(event)
    }

    /// Runs `event`'s handlers: a decision refuses, an error fails, the rest goes on.
    async fn stage(&self, facts: &Facts, event: Event) -> Verdict {
        verdict(self.lua.call(&facts.conn, event).await)
    }
}

/// KumoMTA semantics: a `kumo.reject`/`kumo.disconnect` is the decision; a script error is
/// a failure; returning normally goes on.
fn verdict(outcome: Outcome) -> Verdict {
    match outcome {
        Outcome::Continue(_) | Outcome::Extensions(_) => Verdict::go_on(),
        Outcome::Decided(decision) => Verdict::Refuse(decision),
        Outcome::Failed(err) => Verdict::Failed(err),
    }
}

impl Check for Policy {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn stages(&self) -> Stages {
        self.stages
    }

    fn authenticates(&self) -> bool {
        self.stages.auth
    }

    fn check<'a>(&'a self, facts: &'a Facts, stage: &'a Stage<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            match stage {
                Stage::Connect => self.stage(facts, Event::ConnectionAccepted).await,
                Stage::Helo {
                    host,
                    keywords,
                    extensions,
                    ..
                } => {
                    let event = Event::Ehlo {
                        domain: host.to_string(),
                        extensions: keywords.to_vec(),
                    };
                    match self.lua.call(&facts.conn, event).await {
                        Outcome::Extensions(list) => Verdict::Continue(Edits {
                            extensions: Some(policy::extensions_from(*extensions, keywords, &list)),
                            ..Edits::default()
                        }),
                        other => verdict(other),
                    }
                }
                Stage::Auth(request) => self.auth(facts, request).await,
                Stage::Mail(path, _) => self.stage(facts, Event::MailFrom((*path).clone())).await,
                Stage::Rcpt(path, _) => self.stage(facts, Event::RcptTo((*path).clone())).await,
                Stage::Data => self.stage(facts, Event::DataCommand).await,
                Stage::Message { message, body } => self.message(facts, message, body).await,
                Stage::Disconnect {
                    arguments,
                    connection,
                    context,
                } => {
                    if !self.handles("smtp_server_disconnect") {
                        self.lua.forget(&facts.conn.info.id);
                        return Verdict::go_on();
                    }
                    let event = Event::Disconnect {
                        arguments: serde_json::to_value(arguments).unwrap_or_default(),
                        connection: serde_json::to_value(connection).unwrap_or_default(),
                        context: serde_json::to_value(context).unwrap_or_default(),
                    };
                    // Halon: on script error Pass() is called; nothing changes.
                    self.stage(facts, event).await
                }
            }
        })
    }
}

impl Policy {
    /// AUTH PLAIN or LOGIN credentials, checked by `smtp_server_auth_plain`.
    async fn auth(&self, facts: &Facts, request: &AuthRequest) -> Verdict {
        let (authz, authc, password) = match request {
            AuthRequest::Plain {
                authzid,
                authcid,
                password,
            } => (authzid.clone(), authcid.clone(), password.clone()),
            AuthRequest::Login { username, password } => {
                (String::new(), username.clone(), password.clone())
            }
            // Only PLAIN and LOGIN are offered, and the session decodes both.
            _ => return Verdict::Refuse(bad_credentials()),
        };
        let event = Event::AuthPlain {
            authz,
            authc,
            password,
        };
        match self.lua.call(&facts.conn, event).await {
            Outcome::Continue(true) => Verdict::Accept(Edits::default()),
            Outcome::Continue(false) | Outcome::Extensions(_) => Verdict::Refuse(bad_credentials()),
            other => verdict(other),
        }
    }

    /// `smtp_server_data`, then `smtp_server_message_received` (KumoMTA's order), with
    /// the body read back (one message at a time) and `--verify`'s results.
    async fn message(&self, facts: &Facts, message: &Message, body: &Body<'_>) -> Verdict {
        let _turn = self.read_back.acquire().await;
        let mut message = message.clone();
        match body.read(facts.max_message_size).await {
            Ok(bytes) => message.body = bytes,
            Err(err) => {
                eprintln!("mailsink: cannot store a message: {err}");
                return Verdict::Refuse(Decision::Reject(crate::store::store_failed()));
            }
        }
        let auth = facts.record.auth_results.clone();
        let message = Arc::new(message);
        // The message's meta shows what the filters said about it.
        let mut facts = facts.clone();
        facts.conn.message_filters = facts.record.filters.clone().into();
        let facts = &facts;
        if self.handles("smtp_server_data") {
            let event = Event::Data(message.clone(), auth.clone());
            if let refusal @ (Verdict::Refuse(_) | Verdict::Failed(_)) =
                self.stage(facts, event).await
            {
                return refusal;
            }
        }
        if !self.handles("smtp_server_message_received") {
            return Verdict::go_on();
        }
        if !facts.lmtp || message.envelope.recipients.len() < 2 {
            return self
                .stage(facts, Event::MessageReceived(message, auth))
                .await;
        }
        self.per_recipient(&facts.conn, &message, auth).await
    }

    /// Under LMTP, as in KumoMTA, each recipient gets a `smtp_server_message_received`
    /// call of its own with a message addressed to it alone, and a `kumo.reject` there
    /// refuses that recipient only. A refusal is an error reply: `kumo.reject(250, ..)`
    /// fails the check, as it fails the hook over SMTP.
    async fn per_recipient(
        &self,
        conn: &ConnFacts,
        message: &Message,
        auth: Option<Arc<crate::verify::AuthResults>>,
    ) -> Verdict {
        let mut refused = Vec::with_capacity(message.envelope.recipients.len());
        for rcpt in &message.envelope.recipients {
            let mut one = message.clone();
            one.envelope.recipients = vec![rcpt.clone()];
            let event = Event::MessageReceived(Arc::new(one), auth.clone());
            match self.lua.call(conn, event).await {
                Outcome::Decided(Decision::Reject(reply)) if !reply.is_error() => {
                    return Verdict::Failed(format!("a rejection with {}", reply.code()));
                }
                Outcome::Decided(Decision::Reject(reply)) if reply.code() != 421 => {
                    refused.push(Some(reply));
                }
                other => match verdict(other) {
                    Verdict::Continue(_) => refused.push(None),
                    stop => return stop,
                },
            }
        }
        if refused.iter().all(Option::is_some) {
            let replies = refused.into_iter().flatten().collect();
            return Verdict::Refuse(Decision::PerRecipient(replies));
        }
        Verdict::Continue(Edits {
            refused_recipients: refused,
            ..Edits::default()
        })
    }
}
