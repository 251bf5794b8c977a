//! mailsink: an SMTP receiver that stores mail in a Maildir, driven by `smtp-session` on
//! tokio, with KumoMTA-style Lua policy and a Halon-shaped JSON disconnect log on stdout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use smtp_session::{Config, ConnectionInfo, HookFailurePolicy};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

mod driver;
mod log;
mod maildir;
mod policy;
mod sink;
mod tls;

use driver::Settings;

/// An SMTP receiver that stores every message it accepts in a Maildir.
///
/// Each message is written to DIR/tmp, fsynced, renamed into DIR/new and the directory
/// fsynced before the client gets its 250. stdout carries one JSON line per accepted message
/// and one per connection end (Halon's disconnect script fields); stderr is for humans.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Address for SMTP with STARTTLS (repeatable).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2525")]
    listen: Vec<SocketAddr>,

    /// Address for implicit TLS, RFC 8314 "submissions" (repeatable).
    #[arg(long, value_name = "ADDR")]
    tls_listen: Vec<SocketAddr>,

    /// Name in the greeting, the EHLO reply and synthesized 421 replies [default: this
    /// machine's host name].
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,

    /// Maildir to store messages in; created when missing.
    #[arg(long, value_name = "DIR", default_value = "./maildir")]
    maildir: PathBuf,

    /// Accept messages and drop them instead of storing them (for benchmarks).
    #[arg(long)]
    discard: bool,

    /// Lua policy script with KumoMTA-style handlers (kumo.on, kumo.reject,
    /// kumo.disconnect).
    #[arg(long, value_name = "FILE.lua")]
    policy: Option<PathBuf>,

    /// PEM certificate chain for TLS [default: a self-signed certificate made at start-up].
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Account for AUTH PLAIN/LOGIN, offered over TLS only (repeatable).
    #[arg(long, value_name = "NAME:PASSWORD", value_parser = parse_user)]
    user: Vec<(String, String)>,

    /// Largest message in bytes, advertised with SIZE [default: 26214400].
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<u64>,

    /// Recipients per message, at least 100 (RFC 5321) [default: 100].
    #[arg(long, value_name = "N")]
    max_recipients: Option<usize>,

    /// Idle timeout, both awaiting a command and between message data reads [default: 300
    /// for commands, 180 for data].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,

    /// Expect a PROXY protocol (v1 or v2) header at the start of every connection.
    #[arg(long)]
    proxy_protocol: bool,
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, password)) if !name.is_empty() => Ok((name.into(), password.into())),
        _ => Err("expected NAME:PASSWORD".into()),
    }
}

/// Hooks get this long; Lua handlers are stopped a little earlier so their error wins.
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);
const LUA_TIME_LIMIT: Duration = Duration::from_secs(50);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a shutdown waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mailsink: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mailsink: {err}");
            ExitCode::FAILURE
        }
    }
}

fn default_hostname() -> String {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
        "localhost".into()
    } else {
        name
    }
}

fn config(args: &Args, hostname: &str, sink: &sink::Sink) -> Result<Config, String> {
    let mut config = Config {
        hostname: hostname.to_string(),
        hooks: sink.hooks(),
        // KumoMTA: a failing handler answers `421 4.3.0 <hostname> technical difficulties`.
        hook_failure: HookFailurePolicy::Disconnect,
        proxy_protocol: args.proxy_protocol,
        ..Config::default()
    };
    config.extensions.starttls = true;
    config.extensions.auth = sink.auth_enabled();
    if let Some(size) = args.max_message_size {
        config.max_message_size = size;
    }
    if let Some(n) = args.max_recipients {
        config.max_recipients = n;
    }
    if let Some(secs) = args.timeout {
        config.command_timeout = Duration::from_secs(secs);
        config.data_timeout = Duration::from_secs(secs);
    }
    config
        .validate()
        .map_err(|e| format!("invalid setting: {e}"))?;
    Ok(config)
}

async fn run(args: Args) -> Result<(), String> {
    let hostname = args.hostname.clone().unwrap_or_else(default_hostname);
    let lua = match &args.policy {
        Some(path) => Some(Arc::new(
            policy::LuaPolicy::start(path, &hostname, LUA_TIME_LIMIT)
                .map_err(|e| format!("policy {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let maildir = if args.discard {
        None
    } else {
        let dir = maildir::Maildir::open(&args.maildir, &hostname)
            .map_err(|e| format!("maildir {}: {e}", args.maildir.display()))?;
        Some(Arc::new(dir))
    };
    let sink = sink::Sink {
        maildir,
        lua,
        users: args.user.clone(),
    };
    let config = config(&args, &hostname, &sink)?;
    let acceptor = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => tls::from_pem_files(cert, key)?,
        _ => tls::self_signed(&hostname)?,
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let policy: Arc<dyn driver::Policy> = Arc::new(sink);
    let plain = Settings {
        config: Arc::new(config.clone()),
        tls: Some(acceptor.clone()),
        policy: policy.clone(),
        hook_timeout: HOOK_TIMEOUT,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        shutdown: shutdown_rx.clone(),
    };
    let implicit = Settings {
        config: Arc::new(Config {
            implicit_tls: true,
            ..config
        }),
        ..plain.clone()
    };

    let mut listeners = Vec::new();
    let mut described = Vec::new();
    for (addrs, settings, label) in [
        (&args.listen, &plain, "smtp+starttls"),
        (&args.tls_listen, &implicit, "smtps"),
    ] {
        for addr in addrs {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            described.push(format!("{local} ({label})"));
            listeners.push((listener, settings.clone()));
        }
    }
    let storage = if args.discard {
        "discarding messages".to_string()
    } else {
        format!("storing into {}", args.maildir.join("new").display())
    };
    eprintln!(
        "mailsink {}: listening on {}; {storage}",
        hostname,
        described.join(", ")
    );

    // Every connection task holds a sender; when all are gone, recv() returns None.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let ids = Arc::new(ConnectionIds::new());
    for (listener, settings) in listeners {
        tokio::spawn(accept_loop(
            listener,
            settings,
            ids.clone(),
            alive_tx.clone(),
            shutdown_rx.clone(),
        ));
    }
    drop(alive_tx);

    wait_for_signal().await;
    eprintln!("mailsink: shutting down; open connections get 421 4.3.2 when idle");
    let _ = shutdown_tx.send(true);
    tokio::select! {
        _ = alive_rx.recv() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => eprintln!("mailsink: connections still open after the grace period; exiting"),
        _ = wait_for_signal() => eprintln!("mailsink: second signal; exiting now"),
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    settings: Settings,
    ids: Arc<ConnectionIds>,
    alive: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((socket, remote)) => {
                let _ = socket.set_nodelay(true);
                let local = socket.local_addr().ok().or(local);
                let mut info = ConnectionInfo {
                    id: ids.next(),
                    remote_ip: Some(remote.ip()),
                    remote_port: Some(remote.port()),
                    local_ip: local.map(|a| a.ip()),
                    local_port: local.map(|a| a.port()),
                    ..ConnectionInfo::default()
                };
                info.server_id = Some(if settings.config.implicit_tls {
                    "smtps".into()
                } else {
                    "smtp".into()
                });
                let settings = settings.clone();
                let alive = alive.clone();
                tokio::spawn(async move {
                    driver::serve(socket, info, settings).await;
                    drop(alive);
                });
            }
            Err(err) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                eprintln!("mailsink: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Connection ids unique across restarts: start time and pid, then a counter.
struct ConnectionIds {
    prefix: String,
    counter: AtomicU64,
}

impl ConnectionIds {
    fn new() -> Self {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        ConnectionIds {
            prefix: format!("{start:x}-{:x}", std::process::id()),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{n}", self.prefix)
    }
}
