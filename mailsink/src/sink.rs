//! mailsink's [`Policy`]: the Lua script (if any) first, then the users for AUTH, then the
//! Maildir for messages, and the JSON log.

use std::sync::Arc;

use smtp_session::{AuthRequest, Decision, DisconnectContext, Hook, Hooks, Message};

use crate::driver::{BoxFuture, ConnFacts, Policy};
use crate::log;
use crate::maildir::Maildir;
use crate::policy::{Event, LuaPolicy, Outcome};

/// The receiver's policy.
#[derive(Debug)]
pub struct Sink {
    /// Where messages go; `None` accepts and drops them (`--discard`).
    pub maildir: Option<Arc<Maildir>>,
    /// The `--policy` script.
    pub lua: Option<Arc<LuaPolicy>>,
    /// `--user NAME:PASSWORD` pairs.
    pub users: Vec<(String, String)>,
}

impl Sink {
    /// True when AUTH can succeed: users were given, or the script checks passwords.
    pub fn auth_enabled(&self) -> bool {
        !self.users.is_empty() || self.script_handles("smtp_server_auth_plain")
    }

    /// The hooks worth a round trip: the message (to store it), AUTH when enabled, and the
    /// stages the script has handlers for.
    pub fn hooks(&self) -> Hooks {
        Hooks {
            connect: self.script_handles("smtp_server_connection_accepted"),
            helo: self.script_handles("smtp_server_ehlo"),
            auth: self.auth_enabled(),
            mail_from: self.script_handles("smtp_server_mail_from"),
            rcpt_to: self.script_handles("smtp_server_rcpt_to"),
            data: self.script_handles("smtp_server_data"),
            message: true,
            vrfy: false,
        }
    }

    fn script_handles(&self, event: &str) -> bool {
        self.lua.as_ref().is_some_and(|lua| lua.handles(event))
    }

    fn check_user(&self, name: &str, password: &str) -> bool {
        self.users.iter().any(|(n, p)| n == name && p == password)
    }
}

/// KumoMTA semantics: a `kumo.reject`/`kumo.disconnect` is the decision; a script error is
/// a hook failure; returning normally goes on.
fn script_decision(outcome: Outcome) -> Option<Decision> {
    match outcome {
        Outcome::Continue(_) => None,
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

fn store_failed() -> Decision {
    Decision::reject(451, "4.3.0 Could not store the message, try again later")
        .expect("valid reply")
}

impl Policy for Sink {
    fn decide(&self, facts: ConnFacts, hook: Hook) -> BoxFuture<Decision> {
        let lua = self.lua.clone();
        let event = match hook {
            Hook::Connect => Event::ConnectionAccepted,
            Hook::Helo { host, .. } => Event::Ehlo(host),
            Hook::MailFrom { path, .. } => Event::MailFrom(path),
            Hook::RcptTo { path, .. } => Event::RcptTo(path),
            Hook::Data => Event::Data,
            Hook::Auth(request) => return self.auth(facts, request),
            Hook::Message(message) => return self.message(facts, Arc::from(message)),
            _ => return Box::pin(async { Decision::Accept }),
        };
        Box::pin(async move {
            let Some(lua) = lua else {
                return Decision::Accept;
            };
            script_decision(lua.call(facts, event).await).unwrap_or(Decision::Accept)
        })
    }

    fn disconnected(&self, context: Box<DisconnectContext>) -> BoxFuture<()> {
        log::emit(&log::disconnect_line(&context));
        let Some(lua) = self.lua.clone() else {
            return Box::pin(async {});
        };
        let facts = ConnFacts {
            info: context.connection.info.clone(),
            helo: None,
            tls: None,
            auth: None,
        };
        let arguments = serde_json::to_value(&context.arguments).unwrap_or_default();
        let connection = serde_json::to_value(&context.connection).unwrap_or_default();
        Box::pin(async move {
            // Runs even without a handler: the Lua side forgets the connection's meta.
            let event = Event::Disconnect {
                arguments,
                connection,
            };
            if let Outcome::Failed(err) = lua.call(facts, event).await {
                // Halon: on script error Pass() is called; nothing changes.
                eprintln!("mailsink: policy error: {err}");
            }
        })
    }
}

impl Sink {
    fn auth(&self, facts: ConnFacts, request: AuthRequest) -> BoxFuture<Decision> {
        let (authz, authc, password) = match request {
            AuthRequest::Plain {
                authzid,
                authcid,
                password,
            } => (authzid, authcid, password),
            AuthRequest::Login { username, password } => (String::new(), username, password),
            // Only PLAIN and LOGIN are offered, and the session decodes both.
            _ => return Box::pin(async { bad_credentials() }),
        };
        if let Some(lua) = self
            .lua
            .clone()
            .filter(|lua| lua.handles("smtp_server_auth_plain"))
        {
            return Box::pin(async move {
                let event = Event::AuthPlain {
                    authz,
                    authc,
                    password,
                };
                match lua.call(facts, event).await {
                    Outcome::Continue(true) => Decision::Accept,
                    Outcome::Continue(false) => bad_credentials(),
                    other => script_decision(other).unwrap_or_else(bad_credentials),
                }
            });
        }
        let ok = (authz.is_empty() || authz == authc) && self.check_user(&authc, &password);
        Box::pin(async move {
            if ok {
                Decision::Accept
            } else {
                bad_credentials()
            }
        })
    }

    fn message(&self, facts: ConnFacts, message: Arc<Message>) -> BoxFuture<Decision> {
        let lua = self
            .lua
            .clone()
            .filter(|lua| lua.handles("smtp_server_message_received"));
        let maildir = self.maildir.clone();
        Box::pin(async move {
            if let Some(lua) = lua {
                let event = Event::MessageReceived(message.clone());
                if let Some(decision) = script_decision(lua.call(facts.clone(), event).await) {
                    return decision;
                }
            }
            let Some(maildir) = maildir else {
                log::emit(&log::message_line(&facts, &message, None));
                return Decision::Accept;
            };
            let body = message.clone();
            let stored = tokio::task::spawn_blocking(move || maildir.deliver(&body.body)).await;
            match stored {
                Ok(Ok(path)) => {
                    log::emit(&log::message_line(&facts, &message, Some(&path)));
                    Decision::Accept
                }
                Ok(Err(err)) => {
                    eprintln!("mailsink: cannot store a message: {err}");
                    store_failed()
                }
                Err(err) => {
                    eprintln!("mailsink: the store task failed: {err}");
                    store_failed()
                }
            }
        })
    }
}
