//! mailsink: an SMTP receiver that stores mail in a Maildir, on `smtp-session-tokio`, with
//! KumoMTA-style Lua policy and a Halon-shaped JSON disconnect log on stdout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use smtp_session::{BodyDelivery, Config, HookFailurePolicy};
use smtp_session_tokio::{CancellationToken, Limits, Server, Transport};

mod check;
mod checks;
mod delivery;
mod dns;
mod dnsbl;
mod facts;
mod filter_socket;
mod greylist;
mod group_commit;
mod journal;
mod lease;
mod limits;
mod listen;
mod log;
mod maildir;
mod metrics;
mod policy;
mod rate;
mod rates;
mod relay;
mod shared;
mod sink;
mod store;
mod tls;
mod trace;
mod verify;

/// An SMTP receiver that stores every message it accepts in a Maildir.
///
/// Each message is written to DIR/tmp, fsynced, renamed into DIR/new and the directory
/// fsynced before the client gets its 250 (or, with --durability journal, synced in a
/// journal first and written into DIR/new just after). stdout carries one JSON line per accepted message
/// and one per connection end (Halon's disconnect script fields); stderr is for humans.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Args {
    /// Address for SMTP with STARTTLS, ADDR:PORT or unix:PATH (repeatable).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2525")]
    listen: Vec<listen::ListenAddr>,

    /// Address for implicit TLS, RFC 8314 "submissions", ADDR:PORT or unix:PATH
    /// (repeatable).
    #[arg(long, value_name = "ADDR")]
    tls_listen: Vec<listen::ListenAddr>,

    /// Address for LMTP, RFC 2033, with STARTTLS, ADDR:PORT or unix:PATH (repeatable): each
    /// recipient gets its own reply after the data.
    #[arg(long, value_name = "ADDR")]
    lmtp_listen: Vec<listen::ListenAddr>,

    /// Name in the greeting, the EHLO reply and synthesized 421 replies [default: this
    /// machine's host name].
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,

    /// Maildir to store messages in; created when missing.
    #[arg(long, value_name = "DIR", default_value = "./maildir")]
    maildir: PathBuf,

    /// Connections a TCP listener queues before they are accepted (the kernel caps it at
    /// net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    listen_backlog: u32,

    /// Threads that accept and serve connections, each with its own event loop (and
    /// its own copy of the --policy script); a connection stays on the thread that
    /// accepted it [default: the number of CPUs, at most 16].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,

    /// How long a message stored in the Maildir waits for others to share the sync of
    /// new/ that makes it durable, in microseconds. Messages that finish while a sync runs
    /// always share the next one; 0 adds no wait.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 0)]
    group_commit_window: u64,

    /// How a message is made durable before its 250. fsync: written to DIR/tmp, fsynced,
    /// renamed into DIR/new, DIR/new fsynced. journal: a message of up to 32 KiB is
    /// appended to a journal file (DIR/journal) and one fdatasync covers all appended
    /// before it; a thread then writes it into DIR/new, where it appears a moment after
    /// the 250 (and at the next start, after a crash). Larger messages take the fsync way.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Durability::Fsync)]
    durability: Durability,

    /// With --durability journal: a journal segment file is closed, and the next begun,
    /// once it is this long; segments wholly delivered are removed.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(4096..))]
    journal_segment_size: u64,

    /// With --durability journal: the most bytes of messages in the journal not yet in
    /// DIR/new. When delivery lags this far behind, the 250 of a finished message waits
    /// for room.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(65536..))]
    journal_backlog: u64,

    /// With --durability journal: how a batch of messages written into DIR/tmp is made
    /// durable before it is renamed into DIR/new: one syncfs of the file system, or an
    /// fsync of each file.
    #[arg(long, value_name = "HOW", value_enum, default_value_t = JournalSync::Syncfs)]
    journal_delivery_sync: JournalSync,

    /// Accept messages and drop them instead of storing them (for benchmarks).
    #[arg(long)]
    discard: bool,

    /// Lua policy script with KumoMTA-style handlers (kumo.on, kumo.reject,
    /// kumo.disconnect). It runs on the server's thread (on its own with --redis): no other
    /// connection is served while a handler runs, stopped after 50 s.
    #[arg(long, value_name = "FILE.lua")]
    policy: Option<PathBuf>,

    /// PEM certificate chain for TLS [default: a self-signed certificate made at start-up].
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// PEM CA certificates: ask TLS clients for a certificate signed by one of them; the
    /// certificate and its verification result go into the log.
    #[arg(long, value_name = "PEM")]
    tls_client_ca: Option<PathBuf>,

    /// Whether a TLS client must present a certificate that verifies.
    #[arg(
        long,
        value_name = "MODE",
        value_enum,
        default_value_t,
        requires = "tls_client_ca"
    )]
    tls_client_auth: tls::ClientAuthArg,

    /// Do not look up clients' reverse DNS names.
    #[arg(long)]
    no_dns: bool,

    /// DNS server to ask, ADDR:PORT (repeatable) [default: those of /etc/resolv.conf].
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "no_dns")]
    dns_server: Vec<SocketAddr>,

    /// The longest a client's reverse DNS lookup may hold up its greeting.
    #[arg(long, value_name = "SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    dns_timeout: u64,

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

    /// Check SPF, DKIM, DMARC, ARC and iprev for each stored message, add an
    /// Authentication-Results field naming --hostname, and give the results to the policy
    /// (msg:auth_results()) and the log. Needs DNS and the Maildir.
    #[arg(long)]
    verify: bool,

    /// The longest --verify may take for one message; checks not done by then are
    /// temperror.
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    verify_timeout: u64,

    /// Memory for the messages --verify reads back at once, all connections together
    /// [default: 128 MiB].
    #[arg(long, value_name = "BYTES", default_value_t = 128 << 20)]
    verify_memory: u64,

    /// The longest header section --verify looks through for Authentication-Results fields
    /// in this host's name (read outside --verify-memory); a message with a longer one is
    /// refused with 552 5.3.4.
    #[arg(long, value_name = "BYTES", default_value_t = 128 << 10,
          value_parser = clap::value_parser!(u64).range(1024..=store::MAX_FRONT))]
    verify_max_header: u64,

    /// Serve Prometheus metrics at http://ADDR/metrics (ADDR:PORT; plain HTTP, so keep it
    /// on a private address).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,

    #[command(flatten)]
    milter: checks::milter::MilterArgs,

    #[command(flatten)]
    policy_service: checks::policy_service::PolicyServiceArgs,

    /// The most verdicts of --milter and --policy-service a connection keeps for its
    /// disconnect line (the last ones; the others are counted as left out).
    #[arg(long, value_name = "N", default_value_t = sink::MAX_FILTER_VERDICTS)]
    max_filter_verdicts: usize,

    #[command(flatten)]
    relay: relay::RelayArgs,

    #[command(flatten)]
    limits: limits::LimitArgs,

    #[command(flatten)]
    rates: rates::RateArgs,

    #[command(flatten)]
    redis: shared::RedisArgs,

    #[command(flatten)]
    dnsbl: dnsbl::DnsblArgs,

    #[command(flatten)]
    greylist: greylist::GreylistArgs,

    /// Serve watchers of the live SMTP dialogue on this UNIX socket (made for mailsink's
    /// user only): `mailsink trace --socket PATH [ADDR|CIDR]` in another terminal.
    #[arg(long, value_name = "PATH")]
    trace_socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Watch the live SMTP dialogue of a running mailsink's connections from an address or
    /// network (its --trace-socket), until interrupted.
    Trace(trace::TraceArgs),
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
    if let Some(Command::Trace(trace)) = &args.command {
        return match trace::run_client(trace) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("mailsink trace: {err}");
                ExitCode::FAILURE
            }
        };
    }
    // An event loop per thread (this one, and --threads - 1 more that the server starts): a
    // connection never blocks its thread (storage runs on blocking threads), and no task
    // ever moves between threads or wakes another one. The Lua policy runs on each, its
    // handlers bounded by their time limit (policy.rs says why and when not).
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
    // A filter told of a transaction is told of its end at once, RSET included.
    config.report_aborted_transactions = sink.hears_aborts();
    if sink.delivery.relay().is_some() {
        // DATA to the next hop cannot carry binary content (see relay.rs).
        config.extensions.binary_mime = false;
    }
    if sink.delivery.spool_dir().is_some() || !sink.needs_body() {
        // Bodies go straight into the Maildir's tmp/ as they arrive (see store.rs), also
        // when they are relayed from there; with --discard they go nowhere, and the
        // message hook still logs the envelope and the size. Only --discard with a script
        // that reads bodies gathers them in memory.
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

fn limits(
    args: &Args,
    config: &Config,
    sink: &sink::Sink,
    verify_time: Duration,
    files: &limits::OpenFiles,
) -> Limits {
    // The message hook may run the script, then the relay, which answers 451 itself when it
    // runs out of time: the hook is given the relay's time on top of its own; --verify
    // runs in the message hook too, before the script.
    let relay_time = sink
        .delivery
        .relay()
        .map_or(Duration::ZERO, |r| r.timeout());
    let mut limits = Limits {
        // A client that never reads its replies is given as long as an idle one.
        write_timeout: config.command_timeout,
        hook_timeout: HOOK_TIMEOUT + relay_time + verify_time,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        shutdown_grace: SHUTDOWN_GRACE,
        ..Limits::default()
    };
    args.limits.apply_runtime(&mut limits, files);
    limits
}

/// `--verify`'s checks, on the resolver of the reverse DNS names; they need it, and a
/// Maildir to store their results in.
fn verifier(
    args: &Args,
    hostname: &str,
    dns: Option<&dns::Resolver>,
    storing: bool,
) -> Result<Option<verify::Verifier>, String> {
    if !args.verify {
        return Ok(None);
    }
    let Some(dns) = dns else {
        return Err("--verify checks senders in DNS: it cannot be used with --no-dns".into());
    };
    if !storing {
        return Err(
            "--verify adds its results to stored messages: it cannot be used with --discard or --relay"
                .into(),
        );
    }
    let timeout = Duration::from_secs(args.verify_timeout);
    Ok(Some(verify::Verifier::new(
        dns,
        hostname,
        timeout,
        args.verify_memory,
        args.verify_max_header,
    )))
}

/// The checks, in the order they are asked at each stage: the reverse DNS name first (the
/// others see it), the limits, `--verify` (the policy sees its results), the policy, the
/// users for AUTH (unless the policy checks passwords).
fn checks(
    args: &Args,
    dns: Option<dns::Resolver>,
    verifier: Option<verify::Verifier>,
    lua: Option<Arc<policy::LuaPolicy>>,
    shared: Option<Arc<shared::Shared>>,
) -> Result<Vec<Arc<dyn check::Check>>, String> {
    let mut list: Vec<Arc<dyn check::Check>> = Vec::new();
    if let Some(dnsbl) = dnsbl::Dnsbl::new(&args.dnsbl, dns.as_ref(), shared.clone())? {
        list.push(Arc::new(checks::dnsbl::Screen { dnsbl }));
    }
    if let Some(resolver) = dns {
        list.push(Arc::new(checks::reverse_dns::ReverseDns { resolver }));
    }
    list.push(Arc::new(checks::limits::Limits {
        guard: args.limits.guard(shared.clone()),
    }));
    let rates = rates::Rates::new(&args.rates, shared.clone())?;
    list.push(Arc::new(checks::rates::RateLimits {
        rates: Arc::new(rates),
    }));
    let verifying = verifier.is_some();
    if let Some(verifier) = verifier {
        list.push(Arc::new(checks::verify::Verify { verifier }));
    }
    // After --verify, whose results vouch for senders.
    if let Some(greylist) = greylist::Greylist::new(&args.greylist, shared.clone()) {
        list.push(Arc::new(checks::greylist::Greylisting {
            greylist,
            at_message: verifying,
        }));
    }
    if let Some(service) = checks::policy_service::PolicyService::from_args(&args.policy_service) {
        list.push(Arc::new(service));
    }
    if !args.milter.milters.is_empty() {
        list.push(Arc::new(checks::milter::Milters {
            addrs: args.milter.milters.clone(),
            timeout: Duration::from_secs(args.milter.milter_timeout),
            default_action: args.milter.milter_default_action,
        }));
    }
    if let Some(lua) = lua {
        list.push(Arc::new(checks::policy::Policy::new(lua)));
    }
    if !args.user.is_empty() {
        list.push(Arc::new(checks::users::Users {
            users: args.user.clone(),
        }));
    }
    Ok(list)
}

async fn run(args: Args) -> Result<(), String> {
    let files = limits::raise_open_files();
    if let Some(path) = &args.trace_socket {
        trace::serve(path, trace::install()?)?;
    }
    let hostname = args.hostname.clone().unwrap_or_else(default_hostname);
    if let Some(addr) = args.metrics {
        metrics::install(addr)?;
    }
    let shared = shared::Shared::from_args(&args.redis)?.map(Arc::new);
    let lua = lua(&args, &hostname, shared.clone())?;
    let dns = resolver(&args)?;
    let (delivery, storage) = delivery(&args, &hostname)?;
    let storing = matches!(delivery, delivery::Delivery::Maildir(_));
    let store = delivery.spool_dir().cloned();
    let verifier = verifier(&args, &hostname, dns.as_ref(), storing)?;
    let verify_time = verifier.as_ref().map_or(Duration::ZERO, |v| v.timeout());
    let mut sink = sink::Sink::new(checks(&args, dns, verifier, lua, shared)?, delivery);
    sink.max_filter_verdicts = args.max_filter_verdicts;
    let config = config(&args, &hostname, &sink)?;
    let shutdown = CancellationToken::new();
    let server_limits = limits(&args, &config, &sink, verify_time, &files);
    let mut server = Server::new(sink)
        .threads(threads(&args))
        .limits(server_limits.clone())
        .config(config)
        .tls(tls_config(&args, &hostname)?)
        .shutdown_on(shutdown.clone());
    if args.metrics.is_some() {
        server = server.observer(metrics::ServerMetrics::new());
    }
    let (server, described) = listen(server, &args).await?;
    eprintln!("mailsink {hostname}: listening on {described}; {storage}");
    limits::describe(&server_limits, &files);
    serve(server, shutdown).await;
    if let Some(store) = store {
        // What the journal holds goes into new/ before the process ends (or at the next
        // start, if that takes too long).
        let _ = tokio::time::timeout(DRAIN_TIME, store.drained()).await;
    }
    Ok(())
}

/// `--threads`, or one per CPU.
fn threads(args: &Args) -> usize {
    args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get().min(16)),
        usize::from,
    )
}

/// The longest a shutdown waits for the journal's messages to reach new/.
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// The `--policy` script, loaded; its throttles count in `shared` when there is one.
fn lua(
    args: &Args,
    hostname: &str,
    shared: Option<Arc<shared::Shared>>,
) -> Result<Option<Arc<policy::LuaPolicy>>, String> {
    let Some(path) = &args.policy else {
        return Ok(None);
    };
    let throttles = shared.map(|store| policy::SharedThrottles {
        store,
        runtime: tokio::runtime::Handle::current(),
    });
    let lua = policy::LuaPolicy::start(path, hostname, LUA_TIME_LIMIT, throttles)
        .map_err(|e| format!("policy {}: {e}", path.display()))?;
    Ok(Some(Arc::new(lua)))
}

/// The resolver of reverse DNS names and `--verify`, unless `--no-dns`.
fn resolver(args: &Args) -> Result<Option<dns::Resolver>, String> {
    if args.no_dns {
        return Ok(None);
    }
    let settings = dns::DnsSettings {
        servers: args.dns_server.clone(),
        timeout: Duration::from_secs(args.dns_timeout),
    };
    Ok(Some(dns::Resolver::new(&settings)?))
}

/// `--durability`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Durability {
    /// A file, its fsync and a rename per message; one sync of new/ per batch.
    Fsync,
    /// A journal with one sync per batch; the Maildir written behind it.
    Journal,
}

/// `--journal-delivery-sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum JournalSync {
    /// One syncfs of the Maildir's file system per batch.
    Syncfs,
    /// One fsync per file, a few at once.
    Fsync,
}

/// The Maildir of `--maildir`, with its journal under `--durability journal`.
fn store(args: &Args, hostname: &str, window: Duration) -> std::io::Result<maildir::Maildir> {
    let maildir = maildir::Maildir::open(&args.maildir, hostname, window)?;
    if args.durability == Durability::Fsync {
        return Ok(maildir);
    }
    let settings = journal::Settings {
        dir: maildir::Maildir::default_journal_dir(&args.maildir),
        window,
        segment_size: args.journal_segment_size,
        backlog: args.journal_backlog,
        sync: match args.journal_delivery_sync {
            JournalSync::Syncfs => journal::DeliverySync::Syncfs,
            JournalSync::Fsync => journal::DeliverySync::Fsync,
        },
    };
    maildir.journaled(&settings)
}

/// Where messages go, and how the start-up line says it: a relay (its bodies spooled
/// while they arrive, then relayed from the file), the Maildir, or nowhere.
fn delivery(args: &Args, hostname: &str) -> Result<(delivery::Delivery, String), String> {
    let open = |dir: &std::path::Path, what: &str, window: Duration| {
        maildir::Maildir::open(dir, hostname, window)
            .map(Arc::new)
            .map_err(|e| format!("{what} {}: {e}", dir.display()))
    };
    if let Some(relay) = relay::Relay::from_args(&args.relay, hostname)? {
        let storage = format!("relaying to {}", relay.target());
        // The spool is not a store: its files are never synced, so no commit window.
        let spool = open(&args.relay.spool_dir(), "relay spool", Duration::ZERO)?;
        return Ok((delivery::Delivery::Relay(Arc::new(relay), spool), storage));
    }
    if args.discard {
        return Ok((delivery::Delivery::Discard, "discarding messages".into()));
    }
    let storage = format!(
        "storing into {} ({} durability)",
        args.maildir.join("new").display(),
        match args.durability {
            Durability::Fsync => "fsync",
            Durability::Journal => "journal",
        }
    );
    let window = Duration::from_micros(args.group_commit_window);
    let maildir = store(args, hostname, window)
        .map_err(|e| format!("maildir {}: {e}", args.maildir.display()))?;
    Ok((delivery::Delivery::Maildir(Arc::new(maildir)), storage))
}

/// The TLS settings: the given certificate or a self-signed one, and client certificates
/// when asked for.
fn tls_config(args: &Args, hostname: &str) -> Result<smtp_session_tokio::Tls, String> {
    let client_certificates = match &args.tls_client_ca {
        Some(ca) => Some(tls::client_certificates(ca, args.tls_client_auth)?),
        None => None,
    };
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => tls::from_pem_files(cert, key, client_certificates),
        _ => tls::self_signed(hostname, client_certificates),
    }
}

/// Binds every listener the flags name; the server with them, and their description.
async fn listen(
    mut server: Server<sink::Sink>,
    args: &Args,
) -> Result<(Server<sink::Sink>, String), String> {
    let mut described = Vec::new();
    let kinds = [
        (&args.listen, Transport::Plain, "smtp+starttls", false),
        (&args.tls_listen, Transport::ImplicitTls, "smtps", false),
        (&args.lmtp_listen, Transport::Plain, "lmtp", true),
    ];
    for (addrs, transport, label, lmtp) in kinds {
        for addr in addrs {
            let (listener, local) = addr.bind(transport, args.listen_backlog).await?;
            let listener = if lmtp { listener.lmtp() } else { listener };
            described.push(format!("{local} ({label})"));
            server = server.listener(listener);
        }
    }
    Ok((server, described.join(", ")))
}

/// Serves until a signal, then shuts down gracefully (a second signal exits at once).
async fn serve(server: Server<sink::Sink>, shutdown: CancellationToken) {
    let mut serving = tokio::spawn(server.serve());
    tokio::select! {
        _ = wait_for_signal() => {}
        _ = &mut serving => return,
    }
    eprintln!("mailsink: shutting down; open connections get 421 4.3.2 when idle");
    shutdown.cancel();
    tokio::select! {
        _ = serving => {}
        _ = wait_for_signal() => eprintln!("mailsink: second signal; exiting now"),
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
