//! What mailsink bounds so that it can face the Internet: connections (globally, per client
//! address, sized to the open-file limit), messages per connection, errors (a growing reply
//! delay), AUTH failures per client, slow clients (the command deadline and a minimum data
//! rate), and early talkers and unauthorised pipelining. A client is what
//! smtp-session-tokio's [`ClientRules`] make of an address (`--ipv6-prefix`), and
//! `--limit-exceptions` exempts trusted networks from every per-client limit.
//!
//! The defaults follow Postfix where Postfix has one, so that mailsink withstands what an
//! operator expects a Postfix on the same port to withstand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use smtp_session::{Config, Decision, DisconnectMode, MinDataRate};
use smtp_session_tokio::{Client, ClientKey, ClientRules, ErrorDelay, IpNet, Limits};

use crate::metrics::{self, RefusedBy};
use crate::rate::{parse_seconds, Rate};
use crate::shared::{FailurePolicy, RateKey, Shared};

/// The command-line flags of this module, flattened into mailsink's arguments.
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Connections served at once; the next client reads 421 4.7.0. 0 for no limit
    /// [default: what the open-file limit leaves room for, at most 1000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Connections from one client at once (the PROXY header's address with
    /// --proxy-protocol; an IPv6 client by its --ipv6-prefix); the next one reads 421 4.7.0.
    /// 0 for no limit (Postfix's smtpd_client_connection_count_limit).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_connections_per_ip: usize,

    /// IPv6 clients are counted by this prefix for every per-client limit (connections,
    /// AUTH failures): one /64 is usually one subscriber. 128 counts each address.
    #[arg(long, value_name = "BITS", default_value_t = 64,
          value_parser = clap::value_parser!(u8).range(1..=128))]
    pub ipv6_prefix: u8,

    /// Networks exempt from every per-client limit (connections per client, the error
    /// delay, AUTH failures), comma-separated CIDR (Postfix's
    /// smtpd_client_event_limit_exceptions); "none" for no exemption. The global
    /// --max-connections still applies.
    #[arg(long, value_name = "CIDR,...", default_value = "127.0.0.0/8,::1/128",
          value_parser = parse_networks)]
    pub limit_exceptions: Networks,

    /// Messages one connection may send; the next MAIL reads `421 4.7.0` and the connection
    /// closes (Exim's smtp_accept_max_per_connection). 0 for no limit.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_messages_per_connection: u32,

    /// Error replies a connection may draw before each further one is delayed (Postfix's
    /// smtpd_soft_error_limit).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub soft_error_limit: u32,

    /// Error replies after which the connection is closed with 421 4.7.0 (Postfix's
    /// smtpd_hard_error_limit).
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub hard_error_limit: u32,

    /// Delay of the first error reply past --soft-error-limit; each further one waits this
    /// much longer (Postfix's smtpd_error_sleep_time). Also the delay before an AUTH refused
    /// by --auth-failure-limit is answered. 0 for none.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
    pub error_sleep_time: Duration,

    /// The longest delay of one error reply.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub max_error_sleep_time: Duration,

    /// AUTH failures allowed per client (IPv6: per --ipv6-prefix), KumoMTA's throttle form
    /// N/PERIOD (30/hour, 10/5min, 100/day,max_burst=10). Past it, AUTH from that client
    /// is answered 454 4.7.0 after --error-sleep-time, right password or not, until the
    /// rate allows another attempt. "off" for no limit.
    #[arg(long, value_name = "RATE", default_value = "30/hour", value_parser = parse_optional_rate)]
    pub auth_failure_limit: OptionalRate,

    /// The longest one command line may take to arrive from its first byte, however it
    /// trickles in (Postfix's smtpd_per_request_deadline); then 421 4.4.2.
    #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = parse_seconds)]
    pub command_deadline: Duration,

    /// The slowest message data accepted, in bytes per second after the grace period
    /// (Postfix's smtpd_min_data_rate); a slower client reads 421 4.4.2. 0 turns it off.
    #[arg(long, value_name = "BYTES_PER_SECOND", default_value_t = 500)]
    pub min_data_rate: u32,

    /// How long message data may arrive at any rate before --min-data-rate applies.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    pub min_data_rate_grace: Duration,

    /// Refuse a client that pipelines without being offered PIPELINING, or sends more after
    /// EHLO, HELO or DATA in the same packet, with 554 5.5.0 (Postfix's
    /// reject_unauth_pipelining).
    #[arg(long)]
    pub reject_unauth_pipelining: bool,

    /// Hold the greeting back this long (Postfix postscreen's greet pause): a client that
    /// talks first is an early talker, recorded in the disconnect log.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = parse_seconds)]
    pub greeting_delay: Duration,

    /// Refuse early talkers with 554 5.5.1 instead of greeting them (needs
    /// --greeting-delay).
    #[arg(long, requires = "greeting_delay")]
    pub reject_early_talkers: bool,
}

/// Networks, as `--limit-exceptions` gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Networks(pub Vec<IpNet>);

fn parse_networks(s: &str) -> Result<Networks, String> {
    if s.trim().eq_ignore_ascii_case("none") || s.trim().is_empty() {
        return Ok(Networks(Vec::new()));
    }
    s.split(',')
        .map(|net| {
            let net = net.trim();
            // A bare address is a network of one.
            net.parse::<IpNet>()
                .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("'{net}' is not a network (CIDR such as 192.0.2.0/24)"))
        })
        .collect::<Result<_, _>>()
        .map(Networks)
}

/// A [`Rate`], or none (`off`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionalRate(pub Option<Rate>);

fn parse_optional_rate(s: &str) -> Result<OptionalRate, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(OptionalRate(None));
    }
    s.parse().map(|rate| OptionalRate(Some(rate)))
}

impl LimitArgs {
    /// Puts the session's share of these limits into `config`.
    pub fn apply(&self, config: &mut Config) {
        config.hard_error_limit = self.hard_error_limit;
        config.command_deadline = self.command_deadline;
        config.min_data_rate = (self.min_data_rate > 0).then_some(MinDataRate {
            bytes_per_second: self.min_data_rate,
            grace: self.min_data_rate_grace,
        });
        config.reject_unauth_pipelining = self.reject_unauth_pipelining;
        config.greeting_delay = self.greeting_delay;
        config.reject_early_talkers = self.reject_early_talkers;
    }

    /// Puts the runtime's share into `limits`, the connection limits sized to `files`.
    pub fn apply_runtime(&self, limits: &mut Limits, files: &OpenFiles) {
        limits.max_connections = self
            .max_connections
            .unwrap_or_else(|| default_max_connections(files.now));
        limits.max_connections_per_ip = self.max_connections_per_ip;
        limits.clients = self.clients();
        limits.error_delay = ErrorDelay {
            soft_limit: self.soft_error_limit,
            step: self.error_sleep_time,
            max: self.max_error_sleep_time,
        };
    }

    /// Who is one client, and who is exempt.
    pub fn clients(&self) -> ClientRules {
        ClientRules {
            ipv6_prefix: self.ipv6_prefix,
            limit_exceptions: self.limit_exceptions.0.clone(),
            ..ClientRules::default()
        }
    }

    /// The per-connection guard each connection's handler starts with; the AUTH failures
    /// are counted across the fleet too with `shared`.
    pub fn guard(&self, shared: Option<Arc<Shared>>) -> Guard {
        Guard {
            auth: self
                .auth_failure_limit
                .0
                .as_ref()
                .map(|rate| Arc::new(AuthFailures::shared(rate, shared))),
            refusal_delay: self.error_sleep_time,
            max_messages: self.max_messages_per_connection,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Open files and the connection limit

/// The open-file limit (soft) before and after [`raise_open_files`].
#[derive(Clone, Copy, Debug)]
pub struct OpenFiles {
    /// The soft limit mailsink was started with.
    pub before: u64,
    /// The soft limit in force.
    pub now: u64,
}

/// Raises the soft open-file limit to the hard one: the usual soft limit of 1024 is what a
/// few hundred connections and their stored files exhaust, while the hard limit is usually
/// far higher. A failure is reported on stderr and leaves the limit as it was.
pub fn raise_open_files() -> OpenFiles {
    let before = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => soft,
        Err(err) => {
            eprintln!("mailsink: warning: cannot read the open-file limit ({err}); assuming 1024");
            1024
        }
    };
    let now = rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|err| {
        eprintln!("mailsink: warning: cannot raise the open-file limit: {err}");
        before
    });
    OpenFiles { before, now }
}

/// Descriptors kept out of the connections' share: the listeners, stdio, the Lua script's
/// files, and the clients over a limit being answered their 421 (the runtime answers up to
/// 256 at once, each for at most a second).
const RESERVED_FILES: u64 = 64 + 256;

/// The default global connection limit for an open-file limit of `files`: each connection
/// holds its socket, and while a message is stored, its file and its directory too, so two
/// descriptors are counted per connection after the reserve; at most 1000 (the runtime's
/// default, which memory rather than descriptors bounds), at least 16.
pub fn default_max_connections(files: u64) -> usize {
    let share = files.saturating_sub(RESERVED_FILES) / 2;
    usize::try_from(share.clamp(16, 1000)).unwrap_or(1000)
}

/// The descriptors `connections` connections may need, with the reserve.
pub fn files_needed(connections: usize) -> u64 {
    (connections as u64).saturating_mul(2) + RESERVED_FILES
}

/// One line on stderr with the connection limits and the open-file limit they fit in.
pub fn describe(limits: &Limits, files: &OpenFiles) {
    let per_ip = match limits.max_connections_per_ip {
        0 => "no limit per address".to_string(),
        n => format!("{n} per address"),
    };
    let total = match limits.max_connections {
        0 => "no limit".to_string(),
        n => n.to_string(),
    };
    let exempt = match limits.clients.limit_exceptions.as_slice() {
        [] => "none".to_string(),
        nets => nets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    };
    eprintln!(
        "mailsink: connections: {total} at once, {per_ip}; open files: {} (was {}); \
         exempt from per-client limits: {exempt}",
        files.now, files.before
    );
    let needed = files_needed(limits.max_connections);
    if limits.max_connections == 0 || needed > files.now {
        eprintln!(
            "mailsink: warning: {total} connections may need {needed} open files, over the \
             limit of {}: clients past it wait unanswered",
            files.now
        );
    }
}

// ---------------------------------------------------------------------------------------
// AUTH failures per client address

/// AUTH failures counted per client ([`ClientKey`]) under a [`Rate`]; a client over it is
/// refused AUTH until the rate allows another attempt.
///
/// The counting is governor's keyed GCRA limiter. It cannot be asked without counting, so
/// the refusal it gives is remembered here, with the instant it ends: until then every AUTH
/// from the address is refused before its password is looked at, or a guesser would learn
/// the right password from the one reply that differs.
#[derive(Debug)]
pub struct AuthFailures {
    limiter: DefaultKeyedRateLimiter<ClientKey>,
    refused_until: Mutex<HashMap<ClientKey, Instant>>,
    failures: AtomicU32,
    /// `--redis`, and the rate again for its keys.
    shared: Option<(Arc<Shared>, Rate)>,
}

/// Forget addresses whose allowance is whole again after this many failures.
const FORGET_EVERY: u32 = 1024;

impl AuthFailures {
    /// Failures allowed at `rate` per address.
    pub fn new(rate: &Rate) -> AuthFailures {
        AuthFailures {
            limiter: RateLimiter::keyed(rate.quota()),
            refused_until: Mutex::default(),
            failures: AtomicU32::new(0),
            shared: None,
        }
    }

    /// Failures at `rate`, counted across the fleet too when `shared` is given.
    pub fn shared(rate: &Rate, shared: Option<Arc<Shared>>) -> AuthFailures {
        AuthFailures {
            shared: shared.map(|store| (store, *rate)),
            ..AuthFailures::new(rate)
        }
    }

    /// True while AUTH from `key` is refused. With `--redis`, the fleet's count decides:
    /// refused when one more failure would be over the rate.
    pub async fn refuses(&self, key: ClientKey) -> bool {
        if let Some(fleet) = self.fleet(key, true).await {
            return fleet;
        }
        let refused = self.refused_until.lock().unwrap_or_else(|e| e.into_inner());
        refused
            .get(&key)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Counts a failure from `key`; false when it was one too many, and AUTH from `key` is
    /// refused from now on, until the rate allows another attempt. It is counted in the
    /// process in any case, so that the process's count can decide while Redis is away.
    pub async fn failed(&self, key: ClientKey) -> bool {
        let local = self.failed_here(key);
        self.fleet(key, false)
            .await
            .map_or(local, |refused| !refused)
    }

    /// With `--redis`: whether the fleet refuses `key` (`peek`: without counting a failure),
    /// `None` when Redis did not answer and `--redis-failure open` lets the process decide.
    async fn fleet(&self, client: ClientKey, peek: bool) -> Option<bool> {
        let (store, rate) = self.shared.as_ref()?;
        let key = RateKey {
            key: format!(
                "auth-failures:{}/{}s/{}:{}",
                rate.quantity,
                rate.period.as_secs(),
                rate.burst(),
                client
            ),
            rate: *rate,
            peek,
        };
        match store.check(std::slice::from_ref(&key)).await {
            Ok(answers) => Some(answers.first().is_none_or(|a| !a.allowed)),
            Err(_) if store.failure_policy() == FailurePolicy::Open => None,
            Err(_) => Some(true),
        }
    }

    fn failed_here(&self, key: ClientKey) -> bool {
        if self.failures.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.limiter.retain_recent();
        }
        let Err(not_until) = self.limiter.check_key(&key) else {
            return true;
        };
        let wait = not_until.wait_time_from(self.limiter.clock().now());
        let now = Instant::now();
        let mut refused = self.refused_until.lock().unwrap_or_else(|e| e.into_inner());
        if refused.len() >= FORGET_EVERY as usize {
            refused.retain(|_, until| now < *until);
        }
        refused.insert(key, now + wait);
        false
    }
}

// ---------------------------------------------------------------------------------------
// One connection's guard

/// What the handler enforces: the AUTH failure limit (shared by all connections) and the
/// messages per connection (each connection counts its own).
#[derive(Clone, Debug)]
pub struct Guard {
    auth: Option<Arc<AuthFailures>>,
    refusal_delay: Duration,
    max_messages: u32,
}

impl Default for Guard {
    /// A guard that limits nothing: no AUTH failure limit, no message limit.
    fn default() -> Self {
        Guard {
            auth: None,
            refusal_delay: Duration::ZERO,
            max_messages: 0,
        }
    }
}

impl Guard {
    /// True when MAIL must be seen to apply the message limit.
    pub fn limits_messages(&self) -> bool {
        self.max_messages != 0
    }

    /// True when AUTH must be seen to apply the failure limit.
    pub fn limits_auth(&self) -> bool {
        self.auth.is_some()
    }

    /// At MAIL of a connection that sent `messages` before: `421 4.7.0` and close once
    /// that is the limit. `hostname` is this server's.
    pub fn mail_from(&self, hostname: &str, messages: u32) -> Option<Decision> {
        if self.max_messages == 0 || messages < self.max_messages {
            return None;
        }
        metrics::refused(RefusedBy::MaxMessagesPerConnection);
        let text = format!("4.7.0 {hostname} Error: too many messages in one connection");
        Some(
            Decision::disconnect(421, &text, DisconnectMode::ForceDisconnect)
                .unwrap_or(Decision::HookFailed),
        )
    }

    /// Before an AUTH step from `client` is checked: the refusal, after the delay, of a
    /// client over the failure limit. An exempt client is never refused.
    pub async fn auth_refused(&self, client: Option<Client>) -> Option<Decision> {
        let (auth, client) = (self.auth.as_ref()?, client.filter(|c| !c.exempt)?);
        if !auth.refuses(client.key).await {
            return None;
        }
        Some(self.refusal(client.key).await)
    }

    /// After a wrong password from `client`: the refusal, after the delay, when it was one
    /// too many. An exempt client's failures are not counted.
    pub async fn auth_failed(&self, client: Option<Client>) -> Option<Decision> {
        let (auth, client) = (self.auth.as_ref()?, client.filter(|c| !c.exempt)?);
        if auth.failed(client.key).await {
            return None;
        }
        Some(self.refusal(client.key).await)
    }

    async fn refusal(&self, key: ClientKey) -> Decision {
        metrics::refused(RefusedBy::AuthFailureLimit);
        tokio::time::sleep(self.refusal_delay).await;
        let text = format!("4.7.0 Too many authentication failures from {key}, try again later");
        Decision::reject(454, &text).unwrap_or(Decision::HookFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn without_flags_the_limits_are_postfixs_and_on() {
        let flags = Flags::parse_from(["mailsink"]).limits;
        let mut config = Config::default();
        flags.apply(&mut config);
        assert_eq!(
            config.min_data_rate,
            Some(MinDataRate {
                bytes_per_second: 500,
                grace: Duration::from_secs(60)
            })
        );
        assert_eq!(config.command_deadline, Duration::from_secs(300));
        assert_eq!(config.hard_error_limit, 20);
        assert!(!config.reject_unauth_pipelining && !config.reject_early_talkers);
        assert!(config.validate().is_ok());
        let mut limits = Limits::default();
        let files = OpenFiles {
            before: 1024,
            now: 1024,
        };
        flags.apply_runtime(&mut limits, &files);
        assert_eq!(
            (limits.max_connections, limits.max_connections_per_ip),
            (352, 50)
        );
        assert_eq!(limits.error_delay, ErrorDelay::default());
        let guard = flags.guard(None);
        assert!(guard.auth.is_some() && guard.limits_messages());
        assert_eq!(guard.max_messages, 1000);
    }

    #[test]
    fn flags_change_them_and_early_talkers_need_a_greeting_delay() {
        let flags = Flags::parse_from([
            "mailsink",
            "--min-data-rate",
            "0",
            "--auth-failure-limit",
            "off",
            "--max-messages-per-connection",
            "0",
            "--greeting-delay",
            "6",
            "--reject-early-talkers",
        ])
        .limits;
        let mut config = Config::default();
        flags.apply(&mut config);
        assert_eq!(config.min_data_rate, None);
        assert_eq!(config.greeting_delay, Duration::from_secs(6));
        assert!(config.reject_early_talkers);
        let guard = flags.guard(None);
        assert!(guard.auth.is_none() && !guard.limits_messages());
        assert!(Flags::try_parse_from(["mailsink", "--reject-early-talkers"]).is_err());
        assert!(Flags::try_parse_from(["mailsink", "--auth-failure-limit", "5"]).is_err());
    }

    #[test]
    fn the_connection_limit_leaves_room_in_the_open_file_limit() {
        assert_eq!(default_max_connections(1024), 352);
        assert!(files_needed(default_max_connections(1024)) <= 1024);
        assert_eq!(default_max_connections(1 << 20), 1000);
        assert_eq!(default_max_connections(100), 16);
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn auth_failures_past_the_rate_refuse_the_address_and_no_other() {
        let failures = AuthFailures::new(&"3/hour".parse().unwrap());
        let rules = ClientRules::default();
        let a = rules.key("192.0.2.1".parse().unwrap());
        let b = rules.key("192.0.2.2".parse().unwrap());
        block_on(async {
            assert!(failures.failed(a).await && failures.failed(a).await);
            assert!(failures.failed(a).await);
            assert!(!failures.refuses(a).await);
            assert!(!failures.failed(a).await);
            assert!(failures.refuses(a).await);
            assert!(!failures.refuses(b).await);
            assert!(failures.failed(b).await);
        });
    }

    #[test]
    fn with_redis_auth_failures_count_across_processes() {
        use crate::shared::tests::{shared, TestRedis};
        let redis = TestRedis::start();
        let rate = "3/hour".parse().unwrap();
        let store = |policy| Some(Arc::new(shared(&redis.url(), policy)));
        let one = AuthFailures::shared(&rate, store(FailurePolicy::Open));
        let two = AuthFailures::shared(&rate, store(FailurePolicy::Open));
        let rules = ClientRules::default();
        let a = rules.key("2001:db8:1:2::1".parse().unwrap());
        let same_64 = rules.key("2001:db8:1:2::99".parse().unwrap());
        block_on(async {
            assert!(one.failed(a).await && two.failed(same_64).await);
            assert!(!two.refuses(a).await);
            assert!(one.failed(a).await);
            // Three failures across the two: the next one would be over, on either.
            assert!(one.refuses(a).await && two.refuses(same_64).await);
            assert!(!two.failed(a).await);
        });
    }

    #[test]
    fn the_tokio_crates_client_rules_count_auth_failures_by_the_ipv6_prefix() {
        let flags = Flags::parse_from(["mailsink", "--ipv6-prefix", "48"]).limits;
        let mut limits = Limits::default();
        let files = OpenFiles {
            before: 1024,
            now: 1024,
        };
        flags.apply_runtime(&mut limits, &files);
        assert_eq!(limits.clients, flags.clients());
        let failures = AuthFailures::new(&"1/hour".parse().unwrap());
        let key = |ip: &str| limits.clients.key(ip.parse().unwrap());
        block_on(async {
            assert!(failures.failed(key("2001:db8:1:2::1")).await);
            assert!(!failures.failed(key("2001:db8:1:ffff::2")).await);
            assert!(failures.refuses(key("2001:db8:1:3::3")).await);
            assert!(!failures.refuses(key("2001:db8:2::1")).await);
        });
    }

    #[test]
    fn limit_exceptions_default_to_loopback_and_none_empties_them() {
        let parse = |args: &[&str]| Flags::try_parse_from(args).map(|f| f.limits.clients());
        let default = parse(&["mailsink"]).unwrap();
        assert_eq!(default, ClientRules::default());
        let none = parse(&["mailsink", "--limit-exceptions", "none"]).unwrap();
        assert!(none.limit_exceptions.is_empty());
        let some = parse(&["mailsink", "--limit-exceptions", "10.0.0.0/8, 2001:db8::1"]).unwrap();
        assert!(some.client("10.1.2.3".parse().unwrap()).exempt);
        assert!(some.client("2001:db8::1".parse().unwrap()).exempt);
        assert!(!some.client("127.0.0.1".parse().unwrap()).exempt);
        assert!(parse(&["mailsink", "--limit-exceptions", "10.0.0.0/33"]).is_err());
        assert!(parse(&["mailsink", "--ipv6-prefix", "129"]).is_err());
    }
}
