//! `--trace-socket PATH` and `mailsink trace`: watch the live SMTP dialogue of the
//! connections from a client address or network, from a second terminal, without
//! restarting the server (as KumoMTA's `kcli trace-smtp-server`).
//!
//! The server side is a `tracing` layer over smtp-session-tokio's dialogue events (its
//! `tracing` feature) and a UNIX socket. A watcher connects, sends one line (`all`, an
//! address or a CIDR network), and reads one line per event of the matching connections:
//! `<connection id> <client> <` and what the client sent, or `>` and what the server
//! replied. Credentials are redacted and message data summarised by the tokio crate.
//!
//! Without a watcher the layer says it is not interested, so the dialogue costs each
//! connection one cached check per read and write. A watcher that reads too slowly loses
//! lines (it is told how many) rather than slowing the server.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smtp_session_tokio::{IpNet, DIALOGUE};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// `mailsink trace`: print the live dialogue of a running mailsink.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// The running mailsink's --trace-socket.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,

    /// The connections to watch: a client address, a network (CIDR), or "all".
    #[arg(value_name = "ADDR|CIDR|all", default_value = "all", value_parser = parse_filter)]
    pub filter: Filter,
}

/// Which clients' connections a watcher sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter(Option<IpNet>);

fn parse_filter(s: &str) -> Result<Filter, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("all") || s == "*" {
        return Ok(Filter(None));
    }
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|net| Filter(Some(net)))
        .map_err(|_| format!("'{s}' is not an address, a network (CIDR) or \"all\""))
}

impl Filter {
    fn matches(&self, client: Option<IpAddr>) -> bool {
        let Some(net) = self.0 else { return true };
        let canonical = client.map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        });
        canonical.is_some_and(|ip| net.contains(&ip))
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("all clients"),
            Some(net) => write!(f, "{net}"),
        }
    }
}

/// Lines a watcher may be behind before it loses some.
const BACKLOG: usize = 4096;
/// Watchers at once.
const MAX_WATCHERS: usize = 16;

/// The watchers connected now.
#[derive(Default)]
pub struct Watchers {
    count: AtomicUsize,
    list: Mutex<Vec<Watcher>>,
}

struct Watcher {
    id: u64,
    filter: Filter,
    lines: mpsc::Sender<String>,
    lost: Arc<AtomicUsize>,
}

impl Watchers {
    fn add(&self, id: u64, filter: Filter, lines: mpsc::Sender<String>, lost: Arc<AtomicUsize>) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.push(Watcher {
            id,
            filter,
            lines,
            lost,
        });
        self.count.store(list.len(), Ordering::Release);
    }

    fn remove(&self, id: u64) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.id != id);
        self.count.store(list.len(), Ordering::Release);
    }

    fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// Hands `line` to every watcher of `client`, never waiting.
    fn send(&self, client: Option<IpAddr>, line: &str) {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        for watcher in list.iter().filter(|w| w.filter.matches(client)) {
            if watcher.lines.try_send(line.to_string()).is_err() {
                watcher.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The `tracing` layer that passes the dialogue's events to the watchers.
struct DialogueLayer {
    watchers: Arc<Watchers>,
}

impl<S: Subscriber> Layer<S> for DialogueLayer {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Events, and the crate's `enabled!` checks before it does any work for them.
        if metadata.target() == DIALOGUE {
            // Asked each time: interesting only while someone watches.
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata.target() == DIALOGUE && self.watchers.any()
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let client = fields.client.as_deref().and_then(parse_client);
        let shown = client.map_or_else(|| "-".to_string(), |ip| ip.to_string());
        let line = format!("{} {shown} {}", fields.id, fields.message);
        self.watchers.send(client, &line);
    }
}

/// `Some(192.0.2.1)` as the tokio crate records a client, or `None`.
fn parse_client(text: &str) -> Option<IpAddr> {
    text.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok()
}

#[derive(Default)]
struct EventFields {
    id: String,
    client: Option<String>,
    message: String,
}

impl Visit for EventFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "id" => self.id = format!("{value:?}"),
            "client" => self.client = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

/// Installs the layer as the process's subscriber; the watchers it serves.
pub fn install() -> Result<Arc<Watchers>, String> {
    let watchers = Arc::new(Watchers::default());
    let layer = DialogueLayer {
        watchers: watchers.clone(),
    };
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| format!("cannot install the trace subscriber: {e}"))?;
    Ok(watchers)
}

/// Serves watchers on the UNIX socket at `path` (made for the owner only), on the current
/// runtime.
pub fn serve(path: &Path, watchers: Arc<Watchers>) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("--trace-socket {}: {e}", path.display());
    // A socket file left by an earlier run is replaced; any other file is not.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(format!(
                "--trace-socket {}: exists and is not a socket",
                path.display()
            ));
        }
        std::fs::remove_file(path).map_err(fail)?;
    }
    let listener = UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    tokio::spawn(async move {
        let mut next_id = 0u64;
        while let Ok((stream, _)) = listener.accept().await {
            next_id += 1;
            tokio::spawn(watch(stream, next_id, watchers.clone()));
        }
    });
    Ok(())
}

/// One watcher: its filter line, then the matching lines until it goes away.
async fn watch(stream: UnixStream, id: u64, watchers: Arc<Watchers>) {
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read.take(256));
    let mut request = String::new();
    let asked = tokio::time::timeout(Duration::from_secs(10), read.read_line(&mut request));
    let filter = match asked.await.map(|_| parse_filter(&request)) {
        Ok(Ok(filter)) => filter,
        Ok(Err(why)) => {
            let _ = write.write_all(format!("error: {why}\n").as_bytes()).await;
            return;
        }
        Err(_) => return,
    };
    if watchers.count.load(Ordering::Acquire) >= MAX_WATCHERS {
        let _ = write.write_all(b"error: too many watchers\n").await;
        return;
    }
    let (tx, mut rx) = mpsc::channel(BACKLOG);
    let lost = Arc::new(AtomicUsize::new(0));
    let hello = format!("tracing the SMTP dialogue of {filter}\n");
    if write.write_all(hello.as_bytes()).await.is_ok() {
        watchers.add(id, filter, tx, lost.clone());
        let mut gone = [0u8; 1];
        let mut read = read.into_inner().into_inner();
        loop {
            tokio::select! {
                line = rx.recv() => {
                    let Some(line) = line else { break };
                    if send(&mut write, &line, &lost).await.is_err() {
                        break;
                    }
                }
                // The watcher closed its end (or sent more, which it must not).
                _ = read.read(&mut gone) => break,
            }
        }
        watchers.remove(id);
    }
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    line: &str,
    lost: &AtomicUsize,
) -> std::io::Result<()> {
    let lost = lost.swap(0, Ordering::Relaxed);
    let mut text = String::with_capacity(line.len() + 32);
    if lost > 0 {
        text.push_str(&format!(
            "[{lost} lines lost: the watcher read too slowly]\n"
        ));
    }
    text.push_str(line);
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

/// `mailsink trace`: connects to the socket, asks for `filter`, and copies what comes to
/// stdout until the server goes away or the user interrupts.
pub fn run_client(args: &TraceArgs) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("{}: {e}", args.socket.display());
    let mut stream = std::os::unix::net::UnixStream::connect(&args.socket).map_err(fail)?;
    let request = match args.filter.0 {
        None => "all\n".to_string(),
        Some(net) => format!("{net}\n"),
    };
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(fail)?;
        if let Some(why) = line.strip_prefix("error: ") {
            return Err(why.to_string());
        }
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_an_address_a_network_or_all() {
        let f = |s: &str| parse_filter(s).unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(f("all").matches(None) && f("*").matches(ip("192.0.2.1")));
        assert!(f("192.0.2.1").matches(ip("192.0.2.1")));
        assert!(f("192.0.2.1").matches(ip("::ffff:192.0.2.1")));
        assert!(!f("192.0.2.1").matches(ip("192.0.2.2")));
        assert!(f("2001:db8::/32").matches(ip("2001:db8:1::5")));
        assert!(!f("192.0.2.0/24").matches(None));
        assert!(parse_filter("mx.example").is_err());
        assert_eq!(parse_client("Some(192.0.2.1)"), ip("192.0.2.1"));
        assert_eq!(parse_client("None"), None);
    }
}
