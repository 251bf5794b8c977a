//! DNS: one resolver for the whole process, on hickory-resolver.
//!
//! It gives the client's forward-confirmed reverse DNS name (FCrDNS, Halon's `remoteptr`),
//! and serves the other lookups a receiver makes too: [`Resolver::hickory`] is the
//! resolver itself (TXT, MX, A... with its cache), which `--verify` hands to mail-auth
//! (mail-auth 0.13.3 is built on hickory-resolver 0.26, the version used here), and
//! [`DnsSettings::hickory`] is the configuration, to build a resolver elsewhere that asks
//! the same servers the same way.
//!
//! Answers are cached by hickory: at most [`CACHE_ENTRIES`] records, each for its TTL (a
//! negative answer for its SOA minimum), with the bounds below. A lookup is bounded by the
//! timeout as a whole, however many queries and retries it takes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;

/// Records the cache holds at most.
pub const CACHE_ENTRIES: u64 = 8192;
/// The longest a positive answer is kept, whatever its TTL.
const MAX_POSITIVE_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest a negative answer (no such name, no such record) is kept.
const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(3600);
/// PTR names tried for a forward confirmation; more are ignored (as Postfix and mail-auth
/// do, so a client cannot make us look up an unbounded list).
const MAX_PTR_NAMES: usize = 3;

/// Which servers to ask, and how long a lookup may take.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    /// `--dns-server ADDR:PORT`, over UDP and TCP; empty: the system's resolv.conf.
    pub servers: Vec<SocketAddr>,
    /// The longest one lookup may take, all its queries included.
    pub timeout: Duration,
}

impl DnsSettings {
    /// hickory's configuration for these settings. Given servers are asked directly (no
    /// hosts file, no search domains); otherwise resolv.conf decides, as for libc.
    pub fn hickory(&self) -> Result<(ResolverConfig, ResolverOpts), String> {
        let (config, mut options) = if self.servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?
        } else {
            let servers = self.servers.iter().map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            });
            let mut options = ResolverOpts::default();
            options.use_hosts_file = ResolveHosts::Never;
            (
                ResolverConfig::from_name_servers(servers.collect()),
                options,
            )
        };
        options.timeout = options.timeout.min(self.timeout);
        options.cache_size = CACHE_ENTRIES;
        options.positive_max_ttl = Some(MAX_POSITIVE_TTL);
        options.negative_max_ttl = Some(MAX_NEGATIVE_TTL);
        Ok((config, options))
    }
}

/// How a client's reverse DNS lookup ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtrOutcome {
    /// A PTR name whose address records contain the client's address.
    Confirmed,
    /// No PTR name (NXDOMAIN, no records, a server failure), or none that confirms.
    Failed,
    /// No answer within `--dns-timeout`, or the resolver gave up waiting for one.
    Timeout,
}

impl PtrOutcome {
    /// Its name in the metrics and the log.
    pub fn name(self) -> &'static str {
        match self {
            PtrOutcome::Confirmed => "confirmed",
            PtrOutcome::Failed => "failed",
            PtrOutcome::Timeout => "timeout",
        }
    }
}

/// The process's resolver; clones share it and its cache.
#[derive(Clone)]
pub struct Resolver {
    hickory: TokioResolver,
    timeout: Duration,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver for `settings`.
    pub fn new(settings: &DnsSettings) -> Result<Resolver, String> {
        let (config, options) = settings.hickory()?;
        let hickory = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| format!("cannot make a DNS resolver: {e}"))?;
        Ok(Resolver {
            hickory,
            timeout: settings.timeout,
        })
    }

    /// hickory's resolver, for lookups this module does not wrap (bound them with
    /// [`timeout`](Resolver::timeout)).
    pub fn hickory(&self) -> &TokioResolver {
        &self.hickory
    }

    /// The longest one lookup may take.
    #[allow(dead_code)] // with `hickory`
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The client's forward-confirmed reverse DNS name: the first of its PTR names whose
    /// A (IPv4) or AAAA (IPv6) records contain `ip`, lower case, without the final dot.
    /// `None` when there is none, when a name is not a plain host name, or when the
    /// lookups took longer than the timeout. Each lookup's outcome is counted (metrics.rs).
    pub async fn verified_ptr(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        let (outcome, name) =
            match tokio::time::timeout(self.timeout, self.forward_confirmed(ip)).await {
                Ok(Ok(Some(name))) => (PtrOutcome::Confirmed, Some(name)),
                Ok(Ok(None)) => (PtrOutcome::Failed, None),
                Ok(Err(NetError::Timeout)) | Err(_) => (PtrOutcome::Timeout, None),
                Ok(Err(_)) => (PtrOutcome::Failed, None),
            };
        crate::metrics::ptr_lookup(outcome.name());
        name
    }

    /// `Err` when the PTR query itself failed; a name that does not confirm is `Ok(None)`.
    async fn forward_confirmed(&self, ip: IpAddr) -> Result<Option<String>, NetError> {
        let ptr = self.hickory.reverse_lookup(ip).await?;
        let names = ptr
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::PTR(name) => Some(name.0.clone()),
                _ => None,
            });
        for name in names.take(MAX_PTR_NAMES) {
            if self.resolves_to(&name, ip).await {
                return Ok(host_name(&name));
            }
        }
        Ok(None)
    }

    async fn resolves_to(&self, name: &Name, ip: IpAddr) -> bool {
        let lookup = match ip {
            IpAddr::V4(_) => self.hickory.ipv4_lookup(name.clone()).await,
            IpAddr::V6(_) => self.hickory.ipv6_lookup(name.clone()).await,
        };
        lookup.is_ok_and(|found| {
            found.answers().iter().any(|record| match &record.data {
                RData::A(a) => IpAddr::V4(a.0) == ip,
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0) == ip,
                _ => false,
            })
        })
    }
}

/// `name` as it goes into logs and the `Received:` field: lower case, no final dot, and
/// only when it is a plain host name (letters, digits, `-`, `_`, dots between labels).
fn host_name(name: &Name) -> Option<String> {
    let text = name.to_ascii().to_ascii_lowercase();
    let text = text.strip_suffix('.').unwrap_or(&text);
    let plain = !text.is_empty()
        && text.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    plain.then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_plain_lower_case_and_without_the_root() {
        let name = |s: &str| Name::from_ascii(s).unwrap();
        assert_eq!(
            host_name(&name("Mail.Example.ORG.")).as_deref(),
            Some("mail.example.org")
        );
        assert_eq!(
            host_name(&name("a_b-1.example.")).as_deref(),
            Some("a_b-1.example")
        );
        // A PTR record can hold any bytes in a label.
        for label in [&b"bad name"[..], b"bad(name", b"caf\xc3\xa9"] {
            let odd = Name::from_labels([label, b"example"]).unwrap();
            assert_eq!(host_name(&odd), None, "{odd}");
        }
        assert_eq!(host_name(&Name::root()), None);
    }

    #[test]
    fn given_servers_are_asked_directly_within_the_timeout() {
        let settings = DnsSettings {
            servers: vec!["127.0.0.1:5353".parse().unwrap()],
            timeout: Duration::from_secs(2),
        };
        let (config, options) = settings.hickory().unwrap();
        let servers = config.name_servers();
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert!(servers[0].connections.iter().all(|c| c.port == 5353));
        assert_eq!(servers[0].connections.len(), 2, "UDP and TCP");
        assert_eq!(options.use_hosts_file, ResolveHosts::Never);
        assert_eq!(options.timeout, Duration::from_secs(2));
        assert_eq!(options.cache_size, CACHE_ENTRIES);
    }
}
