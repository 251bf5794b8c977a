//! mailsink's [`Handler`]: the Lua script (if any) first, then the users for AUTH, then the
//! Maildir for messages, and the JSON log.

use std::sync::Arc;

use smtp_session::{
    AuthInfo, AuthRequest, ConnectionInfo, Decision, DisconnectContext, ForwardPath, HeloInfo,
    HeloVerb, Hooks, MailParams, Message, RcptParams, ReversePath, TlsInfo,
};
use smtp_session_tokio::{Connection, Handler, HookError, HookResult};

use crate::limits::Guard;
use crate::log;
use crate::maildir::Maildir;
use crate::policy::{self, Event, LuaPolicy, Outcome};

/// What the policy and the log know about the connection when a hook runs, besides the
/// hook's arguments.
#[derive(Clone, Debug)]
pub struct ConnFacts {
    /// Addresses and ids (after PROXY/XCLIENT).
    pub info: ConnectionInfo,
    /// The accepted HELO/EHLO.
    pub helo: Option<HeloInfo>,
    /// The TLS layer, once active.
    pub tls: Option<TlsInfo>,
    /// The successful AUTH.
    pub auth: Option<AuthInfo>,
}

impl ConnFacts {
    fn of(conn: &Connection<'_>) -> Self {
        ConnFacts {
            info: conn.info().clone(),
            helo: conn.helo().cloned(),
            tls: conn.tls().cloned(),
            auth: conn.auth().cloned(),
        }
    }
}

/// The receiver's policy; cloned for every connection (it is a few `Arc`s).
#[derive(Clone, Debug)]
pub struct Sink {
    /// Where messages go; `None` accepts and drops them (`--discard`).
    pub maildir: Option<Arc<Maildir>>,
    /// The `--policy` script.
    pub lua: Option<Arc<LuaPolicy>>,
    /// `--user NAME:PASSWORD` pairs.
    pub users: Arc<[(String, String)]>,
    /// The AUTH failure and messages-per-connection limits.
    pub guard: Guard,
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

fn store_failed() -> Decision {
    Decision::reject(451, "4.3.0 Could not store the message, try again later")
        .expect("valid reply")
}

impl Handler for Sink {
    /// The hooks worth a round trip: the message (to store and log it), AUTH when enabled,
    /// and the stages the script has handlers for.
    fn hooks(&self) -> Hooks {
        Hooks {
            connect: self.script_handles("smtp_server_connection_accepted"),
            helo: self.script_handles("smtp_server_ehlo"),
            auth: self.auth_enabled(),
            mail_from: self.script_handles("smtp_server_mail_from") || self.guard.limits_messages(),
            rcpt_to: self.script_handles("smtp_server_rcpt_to"),
            data: self.script_handles("smtp_server_data_command"),
            message: true,
            vrfy: false,
        }
    }

    async fn connect(&mut self, conn: &mut Connection<'_>) -> HookResult {
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
        self.stage(ConnFacts::of(conn), Event::DataCommand).await
    }

    /// The password check, within the AUTH failure limit of the client's address.
    async fn auth(&mut self, conn: &mut Connection<'_>, request: AuthRequest) -> HookResult {
        let ip = conn.info().remote_ip;
        if let Some(refusal) = self.guard.auth_refused(ip).await {
            return Ok(refusal);
        }
        let decision = self.check_credentials(conn, request).await?;
        if decision == bad_credentials() {
            if let Some(refusal) = self.guard.auth_failed(ip).await {
                return Ok(refusal);
            }
        }
        Ok(decision)
    }

    async fn message(&mut self, conn: &mut Connection<'_>, message: Message) -> HookResult {
        self.guard.message_received();
        let facts = ConnFacts::of(conn);
        let message = Arc::new(message);
        // KumoMTA's order: smtp_server_data, then smtp_server_message_received.
        for event in [
            Event::Data(message.clone()),
            Event::MessageReceived(message.clone()),
        ] {
            if let Some(decision) = self.script(facts.clone(), event).await {
                return Ok(decision);
            }
        }
        let Some(maildir) = self.maildir.clone() else {
            log::emit(&log::message_line(&facts, &message, None));
            return Ok(Decision::Accept);
        };
        let body = message.clone();
        let stored = tokio::task::spawn_blocking(move || maildir.deliver(&body.body)).await;
        Ok(match stored {
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
        })
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
        eprintln!("mailsink: a hook failed: {error}");
    }
}
