//! mailsink: an SMTP receiver that stores mail in a Maildir, on `smtp-session-tokio`, with
//! KumoMTA-style Lua policy and a Halon-shaped JSON disconnect log on stdout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use smtp_session::{BodyDelivery, Config, HookFailurePolicy};
use smtp_session_tokio::{CancellationToken, Limits, Listener, Server};
use tokio::net::TcpListener;

mod limits;
mod log;
mod maildir;
mod policy;
mod sink;
mod tls;

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

    #[command(flatten)]
    limits: limits::LimitArgs,
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
    // One thread: a connection never blocks it (storage runs on blocking threads, the
    // policy on its own), and no task ever moves between threads or wakes another one.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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
        // KumoMTA: a failing handler answers `421 4.3.0 <hostname> technical difficulties`.
        hook_failure: HookFailurePolicy::Disconnect,
        proxy_protocol: args.proxy_protocol,
        ..Config::default()
    };
    config.extensions.auth = sink.auth_enabled();
    if sink.maildir.is_none() && !sink.needs_body() {
        // --discard: the body goes nowhere, so it is never gathered either; the message
        // hook still logs the envelope and the size.
        config.body_delivery = BodyDelivery::STREAMED;
    }
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
    args.limits.apply(&mut config);
    config
        .validate()
        .map_err(|e| format!("invalid setting: {e}"))?;
    Ok(config)
}

fn limits(args: &Args, config: &Config, files: &limits::OpenFiles) -> Limits {
    let mut limits = Limits {
        // A client that never reads its replies is given as long as an idle one.
        write_timeout: config.command_timeout,
        hook_timeout: HOOK_TIMEOUT,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        shutdown_grace: SHUTDOWN_GRACE,
        ..Limits::default()
    };
    args.limits.apply_runtime(&mut limits, files);
    limits
}

async fn run(args: Args) -> Result<(), String> {
    let files = limits::raise_open_files();
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
        users: args.user.clone().into(),
        guard: args.limits.guard(),
    };
    let config = config(&args, &hostname, &sink)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => tls::from_pem_files(cert, key)?,
        _ => tls::self_signed(&hostname)?,
    };

    let shutdown = CancellationToken::new();
    let server_limits = limits(&args, &config, &files);
    let mut server = Server::new(sink)
        .limits(server_limits.clone())
        .config(config)
        .tls(tls)
        .shutdown_on(shutdown.clone());
    let mut described = Vec::new();
    for (addrs, implicit) in [(&args.listen, false), (&args.tls_listen, true)] {
        for addr in addrs {
            let tcp = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let local = tcp.local_addr().map_err(|e| e.to_string())?;
            let (listener, label) = if implicit {
                (Listener::implicit_tls(tcp), "smtps")
            } else {
                (Listener::plain(tcp), "smtp+starttls")
            };
            described.push(format!("{local} ({label})"));
            server = server.listener(listener);
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
    limits::describe(&server_limits, &files);

    let mut serving = tokio::spawn(server.serve());
    tokio::select! {
        _ = wait_for_signal() => {}
        _ = &mut serving => return Ok(()),
    }
    eprintln!("mailsink: shutting down; open connections get 421 4.3.2 when idle");
    shutdown.cancel();
    tokio::select! {
        _ = serving => {}
        _ = wait_for_signal() => eprintln!("mailsink: second signal; exiting now"),
    }
    Ok(())
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
