//! A KumoMTA-compatible subset of Lua policy, run on a Lua state per serving thread.
//!
//! Where it runs: on each of mailsink's serving threads (each a current-thread runtime), in
//! the hook's own poll, so an event costs no hand-off to another thread and back (two
//! wake-ups, a channel and a oneshot); with `--redis`, whose shared throttles wait for Redis
//! by blocking on the runtime, and on a multi-thread runtime, on a Lua thread of its own.
//! Every serving thread loads the script into a Lua state of its own, as KumoMTA keeps a
//! pool of Lua states: a global variable is not shared between connections of different
//! threads (use `kumo.make_throttle`, whose throttles are the process's, or Redis). The price
//! of running inline: while a handler runs, no other connection of its thread is served, so
//! a slow handler holds up that thread's connections, for at most the handler's time limit
//! (on its own thread, it held up only the other connections' handlers). Policy handlers are
//! meant to be quick: a lookup that waits belongs in a check of its own (a DNS list, a
//! policy service, a milter).
//!
//! What works as in KumoMTA:
//!
//! - `kumo.on(EVENT, FUNCTION)` for `smtp_server_connection_accepted(conn_meta)`,
//!   `smtp_server_ehlo(domain, conn_meta, extensions)` (HELO too; see below),
//!   `smtp_server_mail_from(sender, conn_meta)`, `smtp_server_rcpt_to(recipient,
//!   conn_meta)`, `smtp_server_data(message, conn_meta)` once the message data is in, then
//!   `smtp_server_message_received(message, conn_meta)` (the same message, its meta carried
//!   over), `smtp_server_auth_plain(authz, authc, password, conn_meta)` returning true or
//!   false (AUTH LOGIN is checked by the same handler with an empty authz), and
//!   `smtp_server_disconnect(arguments, connection, context)` with the Halon-shaped tables
//!   of the disconnect log line (null parts are nil; `context` is mailsink's `$context`,
//!   `{filter_verdicts = {..}}`, see below).
//! - `smtp_server_ehlo` gets the keywords the EHLO reply will list (`SIZE 26214400`,
//!   `STARTTLS`, `AUTH PLAIN LOGIN`...) and may return a new list, as in KumoMTA. Here the
//!   list is what the session offers *and accepts*: a keyword left out switches its extension
//!   off, a known one added switches it on (STARTTLS and AUTH can only be left out: they
//!   follow the configuration); a string mailsink does not know is not advertised (said once
//!   on stderr). Handlers for the event run in turn, each given the list the one before
//!   returned.
//! - mailsink's own event at the DATA command, before any message byte, is
//!   `smtp_server_data_command(conn_meta)` (KumoMTA has none: its `smtp_server_data` is the
//!   one after the data).
//! - `kumo.make_throttle(NAME, SPEC)` with SPEC in KumoMTA's form
//!   (`[local:]N/PERIOD[,max_burst=B]`), and `throttle:throttle()` returning KumoMTA's table
//!   `{throttled, limit, remaining, reset_after, retry_after}` (durations as `{secs, nanos}`,
//!   as KumoMTA serialises them; `retry_after` nil when allowed). Throttles are local to the
//!   process (governor's GCRA); the same NAME and SPEC count together.
//!   `throttle:sleep_if_throttled()` is an error: sleeping would stall every connection's
//!   policy on the one Lua state; reject with `kumo.reject` instead.
//! - `kumo.reject(CODE, MESSAGE)` and `kumo.disconnect(CODE, MESSAGE [, MODE])`, MODE one
//!   of `"ForceDisconnect"` (default), `"FollowWith421"`, `"If421"`. Both raise a Lua error
//!   that ends the handler; the message is sent verbatim. An unknown MODE, or a code outside
//!   200..=599, is a script error. The error raised is mailsink's own value, handed back
//!   without a traceback (a real error's message still says where it happened).
//! - Sender and recipient objects: `tostring(x)` is `user@domain` (empty for `<>`), with
//!   `x.user` and `x.domain`.
//! - `conn_meta:get_meta(key)` / `conn_meta:set_meta(key, value)`, per connection, with
//!   `received_from`, `received_via`, `hostname`, `ehlo_domain`, `tls_protocol_version`,
//!   `tls_cipher`, `authn_id` filled in, and mailsink's own `dnsbl_score` and `dnsbl_listed`
//!   (the lists, comma-separated) with `--dnsbl`. These are read from the connection when
//!   asked for; a key the script stored with `set_meta` is what `get_meta` returns from
//!   then on, even one of these. The message object has `sender()`, `recipient()`,
//!   `recipient_list()`, `get_data()`, `get_first_named_header_value(name)`, `get_meta`,
//!   `set_meta`.
//! - What the filters said (`--milter`, `--policy-service`; docs/filters.md): mailsink's own
//!   meta keys `filter_verdicts`, `milter_verdicts` and `policy_service_verdicts`, each a
//!   list of tables `{filter, name, stage, message, verdict, reply, reason}` (as in the log
//!   lines), nil when empty. On the message (`msg:get_meta`): the verdicts on it, its
//!   transaction's and the milters'; on `conn_meta`: the connection's before the current
//!   stage; in `smtp_server_disconnect`: `context.filter_verdicts`, all of them.
//! - `local kumo = require 'kumo'` works; `print` writes to stderr (stdout is the JSON log).
//!
//! Any other error in a handler is a hook failure: the caller configures the session for
//! KumoMTA's `421 4.3.0 <hostname> technical difficulties` and close. A handler that runs
//! longer than its time limit is stopped with an error. A script that fails to load is an
//! error at start-up.
//!
//! Handlers registered for the same event run in registration order until one rejects.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{
    AnyUserData, Function, HookTriggers, Lua, LuaSerdeExt, MetaMethod, MultiValue, Table, UserData,
    UserDataFields, UserDataMethods, Value, VmState,
};
use smtp_session::{
    Decision, DisconnectMode, Extensions, ForwardPath, Mailbox, Message, ReversePath,
};
use tokio::runtime::RuntimeFlavor;
use tokio::sync::oneshot;

use crate::facts::{ConnFacts, FilterVerdict};
use crate::verify::AuthResults;
use conn_meta::{verdict_list, verdicts_of, ConnMeta};

mod conn_meta;
mod throttle;
pub use throttle::SharedThrottles;

/// The events mailsink knows, with KumoMTA's names (and one of its own, the DATA command).
pub const EVENTS: [&str; 9] = [
    "smtp_server_connection_accepted",
    "smtp_server_ehlo",
    "smtp_server_mail_from",
    "smtp_server_rcpt_to",
    "smtp_server_data",
    "smtp_server_message_received",
    "smtp_server_auth_plain",
    "smtp_server_disconnect",
    "smtp_server_data_command",
];

/// One event for the script, with its arguments.
#[derive(Debug)]
pub enum Event {
    /// `smtp_server_connection_accepted(conn_meta)`
    ConnectionAccepted,
    /// `smtp_server_ehlo(domain, conn_meta, extensions)`
    Ehlo {
        /// The HELO or EHLO argument.
        domain: String,
        /// The EHLO keywords offered.
        extensions: Vec<String>,
    },
    /// `smtp_server_mail_from(sender, conn_meta)`
    MailFrom(ReversePath),
    /// `smtp_server_rcpt_to(recipient, conn_meta)`
    RcptTo(ForwardPath),
    /// `smtp_server_data_command(conn_meta)`, at the DATA command (mailsink's own).
    DataCommand,
    /// `smtp_server_data(message, conn_meta)`, once the data is in (with `--verify`'s
    /// results).
    Data(Arc<Message>, Option<Arc<AuthResults>>),
    /// `smtp_server_message_received(message, conn_meta)`, after `smtp_server_data`.
    MessageReceived(Arc<Message>, Option<Arc<AuthResults>>),
    /// `smtp_server_auth_plain(authz, authc, password, conn_meta)`
    AuthPlain {
        /// Identity to act as (may be empty).
        authz: String,
        /// Identity whose password this is.
        authc: String,
        /// The password.
        password: String,
    },
    /// `smtp_server_disconnect(arguments, connection, context)`: JSON of the disconnect
    /// context.
    Disconnect {
        /// Halon's `$arguments`.
        arguments: serde_json::Value,
        /// Halon's `$connection`.
        connection: serde_json::Value,
        /// Halon's `$context`: mailsink's (the filters' verdicts).
        context: serde_json::Value,
    },
}

impl Event {
    /// The KumoMTA event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ConnectionAccepted => EVENTS[0],
            Event::Ehlo { .. } => EVENTS[1],
            Event::MailFrom(_) => EVENTS[2],
            Event::RcptTo(_) => EVENTS[3],
            Event::Data(..) => EVENTS[4],
            Event::MessageReceived(..) => EVENTS[5],
            Event::AuthPlain { .. } => EVENTS[6],
            Event::Disconnect { .. } => EVENTS[7],
            Event::DataCommand => EVENTS[8],
        }
    }
}

/// What the handlers made of an event.
#[derive(Debug)]
pub enum Outcome {
    /// They returned normally (or none is registered). For `smtp_server_auth_plain`, the
    /// value is whether every handler returned `true`.
    Continue(bool),
    /// `smtp_server_ehlo` handlers returned a list of EHLO keywords (the last one returned).
    Extensions(Vec<String>),
    /// `kumo.reject` or `kumo.disconnect`.
    Decided(Decision),
    /// Any other error: the hook failed.
    Failed(String),
}

/// Work for the script's own thread.
// Sent by value through a channel, one at a time: a Forget the size of a Run costs nothing.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// Run an event's handlers and send back what they made of it.
    Run {
        facts: ConnFacts,
        event: Event,
        reply: oneshot::Sender<Outcome>,
    },
    /// The connection ended and no handler hears of it: forget its meta (no answer).
    Forget(String),
}

/// Where a script runs.
enum Home {
    /// On the thread of each current-thread runtime that calls it, in the hook's own poll:
    /// no hand-off to another thread and back. Each such thread runs a Lua state of its own,
    /// loaded at its first call (the loading thread's at start-up); the throttles are the
    /// process's. A handler holds up every connection of its thread while it runs (at most
    /// its time limit).
    Inline {
        /// The workers' key in [`INLINE`].
        key: u64,
        script: Arc<Script>,
    },
    /// On a thread of its own, fed by a channel, answering on a oneshot: a slow handler holds
    /// up only the other connections' handlers. The way with a multi-thread runtime, and
    /// with `--redis`, whose throttles wait for Redis by blocking on the runtime.
    Thread(mpsc::Sender<Job>),
}

/// What a Lua state is made of: the script and its settings.
struct Script {
    source: Vec<u8>,
    name: String,
    hostname: String,
    time_limit: Duration,
    shared: Option<SharedThrottles>,
    throttles: throttle::Throttles,
}

thread_local! {
    /// The scripts that run inline on this thread, by key.
    static INLINE: RefCell<HashMap<u64, Worker>> = RefCell::default();
}

/// Keys for [`INLINE`].
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

/// A loaded policy script, running on the runtime's thread or on its own (see [`Home`]).
pub struct LuaPolicy {
    home: Home,
    registered: BTreeSet<String>,
}

impl fmt::Debug for LuaPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LuaPolicy")
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

impl Drop for LuaPolicy {
    fn drop(&mut self) {
        if let Home::Inline { key, .. } = self.home {
            // On the other threads, and when this one is ending, a worker goes with its thread.
            let _ = INLINE.try_with(|workers| {
                if let Ok(mut workers) = workers.try_borrow_mut() {
                    workers.remove(&key);
                }
            });
        }
    }
}

impl LuaPolicy {
    /// Loads and runs `path`: on the calling thread when that is a current-thread tokio
    /// runtime's and there are no `shared` throttles, else on a new Lua thread. Errors
    /// (missing file, syntax, a failing top level, `kumo.on` misuse) come back as a message
    /// for the operator.
    ///
    /// `hostname` fills `conn_meta`'s `hostname`; `time_limit` bounds each handler.
    /// `shared`: `--redis`, for `kumo.make_throttle`.
    pub fn start(
        path: &Path,
        hostname: &str,
        time_limit: Duration,
        shared: Option<SharedThrottles>,
    ) -> Result<LuaPolicy, String> {
        let source =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let script = Script {
            source,
            name: format!("@{}", path.display()),
            hostname: hostname.to_string(),
            time_limit,
            shared,
            throttles: throttle::Throttles::default(),
        };
        if on_current_thread_runtime() && script.shared.is_none() {
            let worker = Worker::load(&script)?;
            let registered = worker.registered();
            let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
            INLINE.with_borrow_mut(|workers| workers.insert(key, worker));
            let script = Arc::new(script);
            let home = Home::Inline { key, script };
            return Ok(LuaPolicy { home, registered });
        }
        Self::start_thread(script)
    }

    /// The script on a thread of its own.
    fn start_thread(script: Script) -> Result<LuaPolicy, String> {
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (jobs, job_rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("mailsink-lua".into())
            .spawn(move || {
                let mut worker = match Worker::load(&script) {
                    Ok(worker) => worker,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(worker.registered()));
                while let Ok(job) = job_rx.recv() {
                    match job {
                        Job::Run {
                            facts,
                            event,
                            reply,
                        } => {
                            let _ = reply.send(worker.run(&facts, event));
                        }
                        Job::Forget(id) => worker.forget(&id),
                    }
                }
            })
            .map_err(|e| format!("cannot start the Lua thread: {e}"))?;
        let registered = ready_rx
            .recv()
            .map_err(|_| "the Lua thread died while loading the script".to_string())??;
        Ok(LuaPolicy {
            home: Home::Thread(jobs),
            registered,
        })
    }

    /// True when the script registered a handler for `event`.
    pub fn handles(&self, event: &str) -> bool {
        self.registered.contains(event)
    }

    /// Runs `event`'s handlers; resolves when they are done (at once, run inline).
    pub fn call(
        &self,
        facts: &ConnFacts,
        event: Event,
    ) -> impl std::future::Future<Output = Outcome> + Send + 'static {
        // Timed only where the script has handlers.
        let timed = self.handles(event.name()).then_some(event.name());
        let started = std::time::Instant::now();
        let pending = match &self.home {
            Home::Inline { key, script } => {
                Ok(inline(*key, script, |worker| worker.run(facts, event)))
            }
            Home::Thread(jobs) => {
                let (reply, outcome) = oneshot::channel();
                let job = Job::Run {
                    facts: facts.clone(),
                    event,
                    reply,
                };
                match jobs.send(job) {
                    Ok(()) => Err(outcome),
                    Err(_) => Ok(gone()),
                }
            }
        };
        async move {
            let outcome = match pending {
                Ok(outcome) => outcome,
                Err(reply) => reply.await.unwrap_or_else(|_| gone()),
            };
            if let Some(event) = timed {
                crate::metrics::policy_duration(event, started.elapsed());
            }
            outcome
        }
    }

    /// The connection `id` ended and no handler hears of it: its `conn_meta` is forgotten,
    /// without waiting.
    pub fn forget(&self, id: &str) {
        match &self.home {
            Home::Inline { key, .. } => {
                // A thread that never ran the script has nothing to forget.
                let _ = INLINE.try_with(|workers| {
                    if let Some(worker) = workers.try_borrow_mut().ok()?.get_mut(key) {
                        worker.forget(id);
                    }
                    Some(())
                });
            }
            Home::Thread(jobs) => {
                let _ = jobs.send(Job::Forget(id.to_string()));
            }
        }
    }
}

fn gone() -> Outcome {
    Outcome::Failed("the Lua thread is gone".into())
}

fn on_current_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == RuntimeFlavor::CurrentThread)
}

/// `run` on this thread's worker `key`, loaded from `script` at the thread's first call.
fn inline(key: u64, script: &Script, run: impl FnOnce(&mut Worker) -> Outcome) -> Outcome {
    INLINE.with(|workers| {
        let Ok(mut workers) = workers.try_borrow_mut() else {
            return Outcome::Failed("the policy was called from within a handler".into());
        };
        let worker = match workers.entry(key) {
            Entry::Occupied(worker) => worker.into_mut(),
            // A task of a multi-thread runtime could move between threads, and its
            // connection's meta with it: only current-thread runtimes run the script inline.
            Entry::Vacant(_) if !on_current_thread_runtime() => {
                return Outcome::Failed("the policy was called off a current-thread runtime".into())
            }
            Entry::Vacant(place) => match Worker::load(script) {
                Ok(worker) => place.insert(worker),
                Err(err) => return Outcome::Failed(format!("loading the policy: {err}")),
            },
        };
        run(worker)
    })
}

/// What `kumo.reject` and `kumo.disconnect` raise: a decision riding on a Lua error.
#[derive(Debug)]
struct KumoAction(Decision);

impl fmt::Display for KumoAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kumo policy decision: {:?}", self.0)
    }
}

impl std::error::Error for KumoAction {}

fn find_action(err: &mlua::Error) -> Option<&Decision> {
    match err {
        mlua::Error::ExternalError(inner) => inner.downcast_ref::<KumoAction>().map(|a| &a.0),
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            find_action(cause)
        }
        _ => None,
    }
}

/// The decision as a Lua error value: mlua's own error object, which `Function::call`
/// hands back as it is, without the traceback it builds for other errors.
fn action(decision: Decision) -> Value {
    Value::Error(Box::new(mlua::Error::external(KumoAction(decision))))
}

/// A Lua function raising what `make` returns. A Rust function that returns an error gets
/// a traceback built for it (a walk of every loaded module's table) on each call; raising
/// from Lua costs none, and `kumo.reject` is on the hot path of a refusing server.
///
/// The values made are kept by their arguments, up to [`MAX_KEPT_ACTIONS`]: a script that
/// refuses with the same code and text again raises the same value, without a call into
/// Rust or a reply to build. (mlua hands back a copy of an error value at each raise.)
fn raising(lua: &Lua, make: Function) -> mlua::Result<Function> {
    lua.load(
        r#"
        local make, limit = ...
        local error, integer, type = error, math.type, type
        local kept, count = {}, 0
        return function(code, message, mode)
          if integer(code) ~= 'integer' or type(message) ~= 'string'
              or (mode ~= nil and type(mode) ~= 'string') then
            error(make(code, message, mode))
          end
          local key = code .. '\0' .. message .. '\0' .. (mode or '')
          local made = kept[key]
          if made == nil then
            made = make(code, message, mode)
            if count < limit then
              kept[key], count = made, count + 1
            end
          end
          error(made)
        end
        "#,
    )
    .set_name("=kumo")
    .call((make, MAX_KEPT_ACTIONS))
}

/// The decisions of `kumo.reject` and `kumo.disconnect` kept per Lua state, by code, text
/// and mode.
const MAX_KEPT_ACTIONS: usize = 256;

fn check_code(code: i64) -> mlua::Result<u16> {
    u16::try_from(code)
        .ok()
        .filter(|c| (200..=599).contains(c))
        .ok_or_else(|| mlua::Error::runtime(format!("invalid SMTP code {code}")))
}

type Handlers = Rc<RefCell<HashMap<String, Vec<Function>>>>;

struct Worker {
    lua: Lua,
    handlers: Handlers,
    /// Per-connection `conn_meta`, dropped at disconnect.
    metas: HashMap<String, (ConnMeta, AnyUserData)>,
    /// Per connection, the meta table of the message between `smtp_server_data` and
    /// `smtp_server_message_received`.
    message_metas: HashMap<String, Table>,
    hostname: Rc<str>,
    deadline: Rc<Cell<Option<Instant>>>,
    time_limit: Duration,
}

impl Worker {
    fn load(script: &Script) -> Result<Worker, String> {
        let lua = Lua::new();
        let handlers: Handlers = Rc::default();
        let deadline: Rc<Cell<Option<Instant>>> = Rc::default();
        install_kumo(&lua, handlers.clone()).map_err(|e| e.to_string())?;
        throttle::install(&lua, script.shared.clone(), script.throttles.clone())
            .map_err(|e| e.to_string())?;
        let hook_deadline = deadline.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(10_000),
            move |_, _| match hook_deadline.get() {
                Some(at) if Instant::now() > at => Err(mlua::Error::runtime(
                    "handler exceeded its time limit and was stopped",
                )),
                _ => Ok(VmState::Continue),
            },
        );
        // A top level that never ends must not hang the start-up either.
        let time_limit = script.time_limit;
        deadline.set(Some(Instant::now() + time_limit));
        let loaded = lua.load(&script.source).set_name(&script.name).exec();
        deadline.set(None);
        loaded.map_err(|e| e.to_string())?;
        Ok(Worker {
            lua,
            handlers,
            metas: HashMap::new(),
            message_metas: HashMap::new(),
            hostname: script.hostname.as_str().into(),
            deadline,
            time_limit,
        })
    }

    fn registered(&self) -> BTreeSet<String> {
        self.handlers.borrow().keys().cloned().collect()
    }

    fn run(&mut self, facts: &ConnFacts, event: Event) -> Outcome {
        let name = event.name();
        let disconnect = matches!(event, Event::Disconnect { .. });
        let handlers = self
            .handlers
            .borrow()
            .get(name)
            .cloned()
            .unwrap_or_default();
        // smtp_server_ehlo's third argument is the list each handler may replace.
        let chained = matches!(event, Event::Ehlo { .. }).then_some(2);
        let outcome = if handlers.is_empty() {
            Outcome::Continue(true)
        } else {
            match self.arguments(facts, event) {
                Ok(args) => self.call_all(name, &handlers, args, chained),
                Err(err) => Outcome::Failed(format!("{name}: {err}")),
            }
        };
        if disconnect {
            self.forget(&facts.info.id);
        }
        outcome
    }

    /// The connection `id` ended: its meta tables go.
    fn forget(&mut self, id: &str) {
        self.metas.remove(id);
        self.message_metas.remove(id);
    }

    /// Runs `handlers` in turn. With `chained`, a handler that returns a table replaces that
    /// argument for the next ones, and the last table returned is the outcome.
    fn call_all(
        &self,
        name: &str,
        handlers: &[Function],
        mut args: MultiValue,
        chained: Option<usize>,
    ) -> Outcome {
        let mut all_true = true;
        let mut replaced = None;
        self.deadline.set(Some(Instant::now() + self.time_limit));
        let mut outcome = None;
        for (n, handler) in handlers.iter().enumerate() {
            // The last handler (most often the only one) takes the arguments themselves.
            let these = if n + 1 == handlers.len() {
                std::mem::take(&mut args)
            } else {
                args.clone()
            };
            match (chained, handler.call::<Value>(these)) {
                (Some(at), Ok(Value::Table(list))) => {
                    // For the next handler; the last one took the arguments.
                    if let Some(arg) = args.get_mut(at) {
                        *arg = Value::Table(list.clone());
                    }
                    replaced = Some(list);
                }
                (_, Ok(value)) => all_true &= matches!(value, Value::Boolean(true)),
                (_, Err(err)) => {
                    outcome = Some(match find_action(&err) {
                        Some(decision) => Outcome::Decided(decision.clone()),
                        None => Outcome::Failed(format!("{name}: {err}")),
                    });
                    break;
                }
            }
        }
        self.deadline.set(None);
        if let (None, Some(list)) = (&outcome, replaced) {
            return match list.sequence_values::<String>().collect() {
                Ok(list) => Outcome::Extensions(list),
                Err(err) => Outcome::Failed(format!("{name}: the returned list: {err}")),
            };
        }
        outcome.unwrap_or(Outcome::Continue(all_true))
    }

    /// The handler's arguments, KumoMTA's order: the event's own, then `conn_meta`.
    fn arguments(&mut self, facts: &ConnFacts, event: Event) -> mlua::Result<MultiValue> {
        let lua = self.lua.clone();
        if let Event::Disconnect {
            arguments,
            connection,
            context,
        } = &event
        {
            return disconnect_arguments(&lua, arguments, connection, context);
        }
        let meta = Value::UserData(self.conn_meta(facts)?);
        let id = &facts.info.id;
        let mut args = match event {
            Event::ConnectionAccepted | Event::DataCommand => vec![],
            Event::Ehlo { domain, extensions } => {
                let list = lua.create_sequence_from(extensions)?;
                let args = [
                    Value::String(lua.create_string(domain)?),
                    meta,
                    Value::Table(list),
                ];
                return Ok(MultiValue::from_iter(args));
            }
            Event::MailFrom(path) => vec![address(&lua, EnvAddress::Sender(path))?],
            Event::RcptTo(path) => vec![address(&lua, EnvAddress::Recipient(path))?],
            Event::Data(message, auth) => {
                // A new message: its meta lives on to smtp_server_message_received.
                let meta = lua.create_table()?;
                if !facts.message_filters.is_empty() {
                    set_filter_verdicts(&lua, &meta, &facts.message_filters)?;
                }
                self.message_metas.insert(id.clone(), meta.clone());
                vec![lua_message(&lua, message, meta, auth)?]
            }
            Event::MessageReceived(message, auth) => {
                let meta = match self.message_metas.remove(id) {
                    Some(meta) => meta,
                    None => lua.create_table()?,
                };
                set_filter_verdicts(&lua, &meta, &facts.message_filters)?;
                vec![lua_message(&lua, message, meta, auth)?]
            }
            Event::AuthPlain {
                authz,
                authc,
                password,
            } => vec![
                Value::String(lua.create_string(authz)?),
                Value::String(lua.create_string(authc)?),
                Value::String(lua.create_string(password)?),
            ],
            Event::Disconnect { .. } => unreachable!("handled above"),
        };
        args.push(meta);
        Ok(MultiValue::from_iter(args))
    }

    /// The connection's `conn_meta`, its facts brought up to date: the same userdata at
    /// every event of the connection.
    fn conn_meta(&mut self, facts: &ConnFacts) -> mlua::Result<AnyUserData> {
        let id = &facts.info.id;
        let (meta, userdata) = match self.metas.get(id) {
            Some(known) => known,
            None => {
                let meta = ConnMeta::new(self.hostname.clone());
                let userdata = self.lua.create_userdata(meta.clone())?;
                self.metas.insert(id.clone(), (meta, userdata));
                &self.metas[id]
            }
        };
        meta.update(facts);
        Ok(userdata.clone())
    }
}

/// The meta keys of the filters' verdicts: `filter_verdicts` (all), `milter_verdicts` and
/// `policy_service_verdicts`, each a list of tables like the log's, nil when empty.
fn set_filter_verdicts(lua: &Lua, meta: &Table, verdicts: &[FilterVerdict]) -> mlua::Result<()> {
    for key in [
        "filter_verdicts",
        "milter_verdicts",
        "policy_service_verdicts",
    ] {
        meta.raw_set(key, verdict_list(lua, verdicts, verdicts_of(key))?)?;
    }
    Ok(())
}

/// Installs the `kumo` module as a global and as `require 'kumo'`, and sends `print` to
/// stderr.
fn install_kumo(lua: &Lua, handlers: Handlers) -> mlua::Result<()> {
    let kumo = lua.create_table()?;
    kumo.set(
        "on",
        lua.create_function(move |_, (event, handler): (String, Value)| {
            let Value::Function(handler) = handler else {
                return Err(mlua::Error::runtime(format!(
                    "kumo.on('{event}', ...): the handler must be a function"
                )));
            };
            if !EVENTS.contains(&event.as_str()) {
                eprintln!("mailsink: policy: event '{event}' is not supported by mailsink; its handler never runs");
            }
            handlers.borrow_mut().entry(event).or_default().push(handler);
            Ok(())
        })?,
    )?;
    let reject = lua.create_function(|_, (code, message): (i64, String)| {
        let decision = Decision::reject(check_code(code)?, &message)
            .map_err(|e| mlua::Error::runtime(format!("kumo.reject: {e}")))?;
        Ok(action(decision))
    })?;
    kumo.set("reject", raising(lua, reject)?)?;
    let disconnect = lua.create_function(
        |_, (code, message, mode): (i64, String, Option<String>)| {
            let mode = match mode.as_deref() {
                None => DisconnectMode::ForceDisconnect,
                Some(name) => DisconnectMode::from_name(name).ok_or_else(|| {
                    mlua::Error::runtime(format!(
                        "kumo.disconnect: unknown mode '{name}' (expected ForceDisconnect, FollowWith421 or If421)"
                    ))
                })?,
            };
            let decision = Decision::disconnect(check_code(code)?, &message, mode)
                .map_err(|e| mlua::Error::runtime(format!("kumo.disconnect: {e}")))?;
            Ok(action(decision))
        },
    )?;
    kumo.set("disconnect", raising(lua, disconnect)?)?;
    let globals = lua.globals();
    globals.set("kumo", kumo.clone())?;
    let loaded: Table = globals.get::<Table>("package")?.get("loaded")?;
    loaded.set("kumo", kumo)?;
    install_print(lua)
}

/// `print` writes to stderr: stdout is the JSON log.
fn install_print(lua: &Lua) -> mlua::Result<()> {
    lua.globals().set(
        "print",
        lua.create_function(|lua, args: MultiValue| {
            let tostring: Function = lua.globals().get("tostring")?;
            let mut line = String::new();
            for (i, value) in args.into_iter().enumerate() {
                if i > 0 {
                    line.push('\t');
                }
                line.push_str(&tostring.call::<String>(value)?);
            }
            eprintln!("{line}");
            Ok(())
        })?,
    )?;
    Ok(())
}

/// The message object of `smtp_server_data` and `smtp_server_message_received`.
fn lua_message(
    lua: &Lua,
    message: Arc<Message>,
    meta: Table,
    auth: Option<Arc<AuthResults>>,
) -> mlua::Result<Value> {
    let message = LuaMessage {
        message,
        meta,
        auth,
    };
    Ok(Value::UserData(lua.create_userdata(message)?))
}

/// A sender or recipient: `tostring()`, `.user`, `.domain`, `.email`. The path is kept as
/// it is, and each of these is made when the script reads it.
#[derive(Clone, Debug)]
enum EnvAddress {
    Sender(ReversePath),
    Recipient(ForwardPath),
}

impl EnvAddress {
    fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            EnvAddress::Sender(ReversePath::Mailbox(m))
            | EnvAddress::Recipient(ForwardPath::Mailbox(m)) => Some(m),
            EnvAddress::Sender(ReversePath::Null)
            | EnvAddress::Recipient(ForwardPath::Postmaster) => None,
        }
    }

    /// The local part; `postmaster` for `<postmaster>`, empty for `<>`.
    fn user(&self) -> &str {
        match (self, self.mailbox()) {
            (_, Some(m)) => &m.local_part,
            (EnvAddress::Recipient(_), None) => "postmaster",
            (EnvAddress::Sender(_), None) => "",
        }
    }

    /// The domain; empty for `<>` and `<postmaster>`.
    fn domain(&self) -> String {
        self.mailbox()
            .map(|m| m.domain.to_string())
            .unwrap_or_default()
    }

    /// `user@domain`; `postmaster` for `<postmaster>`, empty for `<>`.
    fn text(&self) -> String {
        match self {
            EnvAddress::Sender(ReversePath::Null) => String::new(),
            EnvAddress::Sender(path) => path.to_string(),
            EnvAddress::Recipient(path) => path.to_string(),
        }
    }
}

impl UserData for EnvAddress {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("user", |_, this| Ok(this.user().to_string()));
        fields.add_field_method_get("domain", |_, this| Ok(this.domain()));
        fields.add_field_method_get("email", |_, this| Ok(this.text()));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(this.text()));
        methods.add_meta_method(MetaMethod::Eq, |_, this, other: AnyUserData| {
            Ok(other
                .borrow::<EnvAddress>()
                .is_ok_and(|o| o.text() == this.text()))
        });
    }
}

fn address(lua: &Lua, address: EnvAddress) -> mlua::Result<Value> {
    Ok(Value::UserData(lua.create_userdata(address)?))
}

/// The message of `smtp_server_message_received`.
struct LuaMessage {
    message: Arc<Message>,
    meta: Table,
    /// `--verify`'s results, for `msg:auth_results()`.
    auth: Option<Arc<AuthResults>>,
}

impl UserData for LuaMessage {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("sender", |lua, this, ()| {
            address(
                lua,
                EnvAddress::Sender(this.message.envelope.mail_from.clone()),
            )
        });
        methods.add_method("recipient", |lua, this, ()| {
            match this.message.envelope.recipients.first() {
                Some(r) => address(lua, EnvAddress::Recipient(r.path.clone())),
                None => Ok(Value::Nil),
            }
        });
        methods.add_method("recipient_list", |lua, this, ()| {
            let list = lua.create_table()?;
            for r in &this.message.envelope.recipients {
                list.push(address(lua, EnvAddress::Recipient(r.path.clone()))?)?;
            }
            Ok(list)
        });
        methods.add_method("get_data", |lua, this, ()| {
            lua.create_string(&this.message.body)
        });
        methods.add_method("get_first_named_header_value", |lua, this, name: String| {
            match first_header(&this.message.body, &name) {
                Some(value) => Ok(Value::String(lua.create_string(value)?)),
                None => Ok(Value::Nil),
            }
        });
        methods.add_method("get_meta", |_, this, key: String| {
            this.meta.get::<Value>(key)
        });
        methods.add_method("auth_results", |lua, this, ()| match &this.auth {
            Some(auth) => auth_table(lua, auth),
            None => Ok(Value::Nil),
        });
        methods.add_method("set_meta", |_, this, (key, value): (String, Value)| {
            this.meta.set(key, value)
        });
    }
}

/// `msg:auth_results()`: `{spf="pass", spf_helo=.., dkim={{result=.., domain=..,
/// selector=..}, ..}, dmarc=.., dmarc_policy=.., arc=.., iprev=.., timed_out=false,
/// header="Authentication-Results: .."}`.
fn auth_table(lua: &Lua, auth: &AuthResults) -> mlua::Result<Value> {
    let options = mlua::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let table = lua.to_value_with(auth, options)?;
    if let Value::Table(table) = &table {
        table.set("header", auth.header.as_str())?;
    }
    Ok(table)
}

/// The unfolded value of the first header called `name` (any case) in the header block.
fn first_header(body: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut found: Option<Vec<u8>> = None;
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(value) = found.as_mut() {
                value.extend_from_slice(line);
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            if line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
                found = Some(line[colon + 1..].to_vec());
            }
        }
    }
    found.map(|v| v.trim_ascii().to_vec())
}

/// The extensions a handler's `returned` list asks for, from those in force (`current`,
/// which listed `offered`): a keyword offered and left out is switched off, a known one
/// added is switched on, except STARTTLS and AUTH, which follow the configuration. Keywords
/// not offered now and not added (AUTH before TLS) stay as they are. The arguments of a
/// keyword (SIZE's value) are the configuration's.
pub fn extensions_from(current: Extensions, offered: &[String], returned: &[String]) -> Extensions {
    fn flag<'a>(ext: &'a mut Extensions, keyword: &str) -> Option<&'a mut bool> {
        Some(match keyword {
            "PIPELINING" => &mut ext.pipelining,
            "SIZE" => &mut ext.size,
            "8BITMIME" => &mut ext.eight_bit_mime,
            "ENHANCEDSTATUSCODES" => &mut ext.enhanced_status_codes,
            "SMTPUTF8" => &mut ext.smtputf8,
            "CHUNKING" => &mut ext.chunking,
            "BINARYMIME" => &mut ext.binary_mime,
            "DSN" => &mut ext.dsn,
            "STARTTLS" => &mut ext.starttls,
            "REQUIRETLS" => &mut ext.require_tls,
            "MT-PRIORITY" => &mut ext.mt_priority,
            "DELIVERBY" => &mut ext.deliver_by,
            "RRVS" => &mut ext.rrvs,
            "AUTH" => &mut ext.auth,
            _ => return None,
        })
    }
    let keyword = |entry: &String| {
        let word = entry.split_whitespace().next().unwrap_or_default();
        word.to_ascii_uppercase()
    };
    let offered: BTreeSet<String> = offered.iter().map(keyword).collect();
    let returned: BTreeSet<String> = returned.iter().map(keyword).collect();
    let mut ext = current;
    for word in offered.difference(&returned) {
        if let Some(on) = flag(&mut ext, word) {
            *on = false;
        }
    }
    for word in returned.difference(&offered) {
        match flag(&mut ext, word) {
            Some(_) if matches!(word.as_str(), "STARTTLS" | "AUTH") => {}
            Some(on) => *on = true,
            None => unknown_keyword(word),
        }
    }
    ext
}

/// Says once per process that a returned keyword cannot be advertised.
fn unknown_keyword(word: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!(
            "mailsink: policy: smtp_server_ehlo returned '{word}', an extension mailsink cannot \
             offer; it is not advertised (said once)"
        )
    });
}

/// The disconnect handler's arguments: Halon's `$arguments`, `$connection` and `$context`
/// as tables (null parts are nil).
fn disconnect_arguments(
    lua: &Lua,
    arguments: &serde_json::Value,
    connection: &serde_json::Value,
    context: &serde_json::Value,
) -> mlua::Result<MultiValue> {
    let options = mlua::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let arguments = lua.to_value_with(arguments, options)?;
    let connection = lua.to_value_with(connection, options)?;
    let context = lua.to_value_with(context, options)?;
    Ok(MultiValue::from_iter([arguments, connection, context]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtp_session::ConnectionInfo;

    fn facts() -> ConnFacts {
        ConnFacts {
            info: ConnectionInfo {
                id: "c1".into(),
                ..ConnectionInfo::default()
            },
            helo: None,
            tls: None,
            auth: None,
            client: None,
            mail_from: None,
            screening: None,
            filters: Arc::new([]),
            message_filters: Arc::new([]),
        }
    }

    fn script(source: &str) -> Result<LuaPolicy, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.lua");
        std::fs::write(&path, source).unwrap();
        LuaPolicy::start(&path, "mx.test", Duration::from_secs(1), None)
    }

    fn run(policy: &LuaPolicy, event: Event) -> Outcome {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(policy.call(&facts(), event))
    }

    fn sender(text: &str) -> ReversePath {
        smtp_session::address::parse_reverse_path(text.as_bytes())
            .unwrap()
            .0
    }

    #[test]
    fn a_returned_ehlo_list_switches_extensions_off_and_on_but_not_starttls_or_auth() {
        let list = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let current = Extensions {
            auth: true,
            starttls: false,
            ..Extensions::default()
        };
        // Before TLS: AUTH is not offered yet, so leaving it out does not switch it off.
        let offered = list(&["PIPELINING", "SIZE 100", "8BITMIME", "DSN"]);
        let returned = list(&["size 5", "8BITMIME", "DSN", "RRVS", "STARTTLS", "X-NEW"]);
        let ext = extensions_from(current, &offered, &returned);
        assert!(!ext.pipelining && ext.size && ext.eight_bit_mime && ext.dsn && ext.rrvs);
        assert!(
            ext.auth,
            "AUTH was not offered and stays on for after STARTTLS"
        );
        assert!(!ext.starttls, "STARTTLS follows the configuration");
        let ext = extensions_from(current, &list(&["AUTH PLAIN"]), &list(&[]));
        assert!(!ext.auth, "offered and left out: off");
    }

    #[test]
    fn headers_are_found_and_unfolded() {
        let body = b"From: a\r\nSubject: hello\r\n  world\r\nX: y\r\n\r\nSubject: body";
        assert_eq!(first_header(body, "subject").unwrap(), b"hello  world");
        assert_eq!(first_header(body, "x").unwrap(), b"y");
        assert!(first_header(body, "to").is_none());
    }

    #[test]
    fn broken_scripts_fail_to_start() {
        assert!(script("kumo.on('smtp_server_mail_from', function(").is_err());
        assert!(script("error('boom')").unwrap_err().contains("boom"));
        assert!(script("kumo.on('smtp_server_mail_from', 42)").is_err());
    }

    #[test]
    fn reject_disconnect_and_errors() {
        let p = script(
            r#"
            local kumo = require 'kumo'
            kumo.on('smtp_server_mail_from', function(sender, meta)
              if sender.user == 'r' then kumo.reject(550, '5.7.1 no ' .. tostring(sender)) end
              if sender.user == 'd' then kumo.disconnect(451, 'bye', 'FollowWith421') end
              if sender.user == 'm' then kumo.disconnect(451, 'bye', 'Bogus') end
              if sender.user == 'c' then kumo.disconnect(700, 'bye') end
              if sender.user == 'x' then error('oops') end
              if sender.user == 'l' then while true do end end
              meta:set_meta('seen', sender.domain)
            end)
            kumo.on('smtp_server_data_command', function(meta)
              kumo.reject(451, meta:get_meta('seen'))
            end)
            "#,
        )
        .unwrap();
        assert!(p.handles("smtp_server_mail_from"));
        assert!(!p.handles("smtp_server_rcpt_to"));
        match run(&p, Event::MailFrom(sender("<r@x.example>"))) {
            Outcome::Decided(d) => {
                assert_eq!(d, Decision::reject(550, "5.7.1 no r@x.example").unwrap())
            }
            other => panic!("{other:?}"),
        }
        match run(&p, Event::MailFrom(sender("<d@x.example>"))) {
            Outcome::Decided(d) => assert_eq!(
                d,
                Decision::disconnect(451, "bye", DisconnectMode::FollowWith421).unwrap()
            ),
            other => panic!("{other:?}"),
        }
        for bad in ["<m@x>", "<c@x>", "<x@x>", "<l@x>"] {
            assert!(
                matches!(run(&p, Event::MailFrom(sender(bad))), Outcome::Failed(_)),
                "{bad}"
            );
        }
        assert!(matches!(
            run(&p, Event::MailFrom(sender("<ok@dom.example>"))),
            Outcome::Continue(_)
        ));
        match run(&p, Event::DataCommand) {
            Outcome::Decided(d) => assert_eq!(d, Decision::reject(451, "dom.example").unwrap()),
            other => panic!("{other:?}"),
        }
    }

    /// Meta set at MAIL, read at DATA: kept across hooks until the connection is forgotten.
    const METAS: &str = r#"
        kumo.on('smtp_server_mail_from', function(sender, meta)
          meta:set_meta('seen', sender.domain)
        end)
        kumo.on('smtp_server_data_command', function(meta)
          kumo.reject(451, meta:get_meta('seen') or 'nothing seen')
        end)
        "#;

    fn data_reply(outcome: Outcome) -> Decision {
        match outcome {
            Outcome::Decided(decision) => decision,
            other => panic!("{other:?}"),
        }
    }

    fn reject(text: &str) -> Decision {
        Decision::reject(451, text).unwrap()
    }

    #[test]
    fn on_a_current_thread_runtime_the_script_runs_inline_and_keeps_meta_until_forgotten() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let p = runtime.block_on(async { script(METAS) }).unwrap();
        assert!(matches!(p.home, Home::Inline { .. }));
        let call = |event| runtime.block_on(p.call(&facts(), event));
        call(Event::MailFrom(sender("<a@seen.example>")));
        assert_eq!(data_reply(call(Event::DataCommand)), reject("seen.example"));
        p.forget("c1");
        assert_eq!(data_reply(call(Event::DataCommand)), reject("nothing seen"));
        call(Event::MailFrom(sender("<a@seen.example>")));
        // Another current-thread runtime's thread runs its own copy of the script, with its
        // own connections' meta; a multi-thread runtime's cannot run it.
        std::thread::scope(|s| {
            s.spawn(|| {
                let other = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let outcome = other.block_on(async { p.call(&facts(), Event::DataCommand).await });
                assert_eq!(data_reply(outcome), reject("nothing seen"));
            });
            s.spawn(|| {
                let other = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .build()
                    .unwrap();
                let outcome = other.block_on(async { p.call(&facts(), Event::DataCommand).await });
                assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
            });
        });
        assert_eq!(data_reply(call(Event::DataCommand)), reject("seen.example"));
    }

    #[test]
    fn on_its_own_thread_the_script_keeps_meta_until_forgotten() {
        let p = script(METAS).unwrap();
        assert!(matches!(p.home, Home::Thread(_)));
        run(&p, Event::MailFrom(sender("<a@seen.example>")));
        assert_eq!(
            data_reply(run(&p, Event::DataCommand)),
            reject("seen.example")
        );
        p.forget("c1");
        assert_eq!(
            data_reply(run(&p, Event::DataCommand)),
            reject("nothing seen")
        );
    }

    #[test]
    fn a_reject_carries_no_traceback_and_a_script_error_still_says_where() {
        let p = script(
            r#"
            kumo.on('smtp_server_mail_from', function(sender)
              if sender.user == 'x' then error('oops') end
              local ok, err = pcall(kumo.reject, 550, '5.7.1 no')
              kumo.reject(550, tostring(err):find('traceback') and 'traceback' or 'none')
            end)
            "#,
        )
        .unwrap();
        match run(&p, Event::MailFrom(sender("<r@x.example>"))) {
            Outcome::Decided(d) => assert_eq!(d, Decision::reject(550, "none").unwrap()),
            other => panic!("{other:?}"),
        }
        match run(&p, Event::MailFrom(sender("<x@x.example>"))) {
            Outcome::Failed(err) => assert!(err.contains("p.lua:3: oops"), "{err}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn null_sender_is_empty_and_auth_returns_booleans() {
        let p = script(
            r#"
            kumo.on('smtp_server_mail_from', function(sender)
              kumo.reject(550, '[' .. tostring(sender) .. '|' .. sender.user .. '|' .. sender.domain .. ']')
            end)
            kumo.on('smtp_server_auth_plain', function(authz, authc, password)
              return authc == 'u' and password == 'p'
            end)
            "#,
        )
        .unwrap();
        match run(&p, Event::MailFrom(ReversePath::Null)) {
            Outcome::Decided(d) => assert_eq!(d, Decision::reject(550, "[||]").unwrap()),
            other => panic!("{other:?}"),
        }
        let auth = |c: &str, pw: &str| Event::AuthPlain {
            authz: String::new(),
            authc: c.into(),
            password: pw.into(),
        };
        assert!(matches!(run(&p, auth("u", "p")), Outcome::Continue(true)));
        assert!(matches!(run(&p, auth("u", "q")), Outcome::Continue(false)));
    }
}
