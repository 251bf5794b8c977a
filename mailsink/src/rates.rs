//! `--rate KIND=RATE`: rates per client, per authenticated user and per sender domain, in
//! KumoMTA's throttle form, counted in the process and, with `--redis`, across the fleet.
//!
//! | KIND | counts | checked at | refusal |
//! |---|---|---|---|
//! | `connections` | connections per client (Postfix `smtpd_client_connection_rate_limit`) | connect | `421 4.7.0`, closed |
//! | `messages` | messages per client (Postfix `smtpd_client_message_rate_limit`) | MAIL | `450 4.7.1` |
//! | `recipients` | recipients per client (Postfix `smtpd_client_recipient_rate_limit`) | RCPT | `450 4.7.1` |
//! | `user-messages` | messages per authenticated user (Exim `ratelimit`, per `$authenticated_id`) | MAIL | `450 4.7.1` |
//! | `domain-messages` | messages per sender domain (Exim `ratelimit`, per `$sender_address_domain`) | MAIL | `450 4.7.1` |
//!
//! Every check is counted in the process by governor's GCRA limiter. With `--redis` the
//! checks of one stage also go to Redis in one pipelined round trip (see shared.rs), and
//! Redis's answer decides; a busy key is answered from tokens leased from Redis
//! (`--redis-lease`, lease.rs), without a round trip. When Redis does not answer,
//! `--redis-failure open` lets the process's own count decide and `closed` answers
//! `451 4.3.0`.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, RateLimiter};
use smtp_session::{Decision, DisconnectMode, ReversePath};
use smtp_session_tokio::{Client, ClientKey};

use crate::rate::Rate;
use crate::shared::{FailurePolicy, RateKey, Shared};

/// The command-line flags of this module.
#[derive(Debug, clap::Args)]
pub struct RateArgs {
    /// A rate, KIND=RATE with RATE in KumoMTA's form (100/hour, 10/min,max_burst=20) and
    /// KIND one of connections, messages, recipients (per client: IPv4 address or IPv6
    /// /64), user-messages (per authenticated user), domain-messages (per sender domain).
    /// Repeatable, one per KIND.
    #[arg(long = "rate", value_name = "KIND=RATE")]
    pub rates: Vec<RateRule>,
}

/// What a rate counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateKind {
    /// Connections per client.
    Connections,
    /// Messages (MAIL commands) per client.
    Messages,
    /// Recipients (RCPT commands) per client.
    Recipients,
    /// Messages per authenticated user.
    UserMessages,
    /// Messages per sender domain.
    DomainMessages,
}

impl RateKind {
    const ALL: [RateKind; 5] = [
        RateKind::Connections,
        RateKind::Messages,
        RateKind::Recipients,
        RateKind::UserMessages,
        RateKind::DomainMessages,
    ];

    /// Its name on the command line, in keys, the log and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            RateKind::Connections => "connections",
            RateKind::Messages => "messages",
            RateKind::Recipients => "recipients",
            RateKind::UserMessages => "user-messages",
            RateKind::DomainMessages => "domain-messages",
        }
    }
}

/// One `--rate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateRule {
    /// What it counts.
    pub kind: RateKind,
    /// How many per period.
    pub rate: Rate,
}

impl FromStr for RateRule {
    type Err = String;

    fn from_str(s: &str) -> Result<RateRule, String> {
        let (kind, rate) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}': expected KIND=RATE"))?;
        let kind = RateKind::ALL
            .into_iter()
            .find(|k| k.name() == kind.trim())
            .ok_or_else(|| {
                let names: Vec<_> = RateKind::ALL.iter().map(|k| k.name()).collect();
                format!("'{kind}': the kinds are {}", names.join(", "))
            })?;
        Ok(RateRule {
            kind,
            rate: rate.parse()?,
        })
    }
}

/// The stage a check is made at, with what its keys are made of.
#[derive(Clone, Copy, Debug)]
pub enum Stage<'a> {
    /// A connection was accepted.
    Connect,
    /// MAIL FROM: the sender's domain (none for the null sender) and the authenticated user.
    Mail {
        /// The reverse path's domain, lower case.
        sender_domain: Option<&'a str>,
        /// The AUTH identity.
        user: Option<&'a str>,
    },
    /// RCPT TO.
    Rcpt,
}

struct Counted {
    rule: RateRule,
    local: DefaultKeyedRateLimiter<String>,
}

/// The rates in force; one per process, shared by the connections. The default has none.
#[derive(Default)]
pub struct Rates {
    counted: Vec<Counted>,
    shared: Option<Arc<Shared>>,
    checks: AtomicUsize,
}

impl std::fmt::Debug for Rates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules: Vec<_> = self.counted.iter().map(|c| c.rule).collect();
        f.debug_struct("Rates")
            .field("rules", &rules)
            .field("shared", &self.shared)
            .finish()
    }
}

/// Forget local keys whose allowance is whole again after this many checks.
const FORGET_EVERY: usize = 4096;

impl Rates {
    /// The rates of `args`, shared through `shared` when given. Two rates of one kind are
    /// an error.
    pub fn new(args: &RateArgs, shared: Option<Arc<Shared>>) -> Result<Rates, String> {
        let mut counted: Vec<Counted> = Vec::new();
        for rule in &args.rates {
            if counted.iter().any(|c| c.rule.kind == rule.kind) {
                return Err(format!("--rate {}: given twice", rule.kind.name()));
            }
            counted.push(Counted {
                rule: *rule,
                local: RateLimiter::keyed(rule.rate.quota()),
            });
        }
        Ok(Rates {
            counted,
            shared,
            checks: AtomicUsize::new(0),
        })
    }

    /// True when some rate is checked at `kind`'s stage.
    pub fn counts(&self, kind: RateKind) -> bool {
        self.counted.iter().any(|c| c.rule.kind == kind)
    }

    /// True when some rate is checked at MAIL.
    pub fn counts_at_mail(&self) -> bool {
        [
            RateKind::Messages,
            RateKind::UserMessages,
            RateKind::DomainMessages,
        ]
        .into_iter()
        .any(|kind| self.counts(kind))
    }

    /// At the connect stage: the connection rate of the client.
    pub async fn at_connect(&self, client: Option<Client>) -> Option<Decision> {
        if !self.counts(RateKind::Connections) {
            return None;
        }
        self.check(client?, Stage::Connect).await
    }

    /// At MAIL: the message rates of the client, its authenticated `user` and the domain
    /// of `path`.
    pub async fn at_mail(
        &self,
        client: Option<Client>,
        user: Option<String>,
        path: &ReversePath,
    ) -> Option<Decision> {
        if !self.counts_at_mail() {
            return None;
        }
        let domain = match path {
            ReversePath::Mailbox(mailbox) => Some(mailbox.domain.to_string()),
            ReversePath::Null => None,
        };
        let stage = Stage::Mail {
            sender_domain: domain.as_deref(),
            user: user.as_deref(),
        };
        self.check(client?, stage).await
    }

    /// At RCPT: the recipient rate of the client.
    pub async fn at_rcpt(&self, client: Option<Client>) -> Option<Decision> {
        if !self.counts(RateKind::Recipients) {
            return None;
        }
        self.check(client?, Stage::Rcpt).await
    }

    /// Checks the rates of `stage` for `client`: `None` within them, else the refusal. A
    /// client in a trusted network (`--limit-exceptions`) is exempt.
    pub async fn check(&self, client: Client, stage: Stage<'_>) -> Option<Decision> {
        if client.exempt {
            return None;
        }
        let keys = self.keys(client.key, stage);
        if keys.is_empty() {
            return None;
        }
        let local: Vec<bool> = keys
            .iter()
            .map(|(counted, key)| counted.local.check_key(&key.key).is_ok())
            .collect();
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            // A key per client would otherwise stay for good.
            for counted in &self.counted {
                counted.local.retain_recent();
            }
        }
        let allowed = match &self.shared {
            None => local,
            Some(shared) => {
                let wanted: Vec<RateKey> = keys.iter().map(|(_, key)| key.clone()).collect();
                match shared.check_leased(&wanted).await {
                    Ok(allowed) => allowed,
                    Err(_) if shared.failure_policy() == FailurePolicy::Open => local,
                    Err(_) => return Some(store_failed()),
                }
            }
        };
        let over = keys
            .iter()
            .zip(allowed)
            .find_map(|((counted, _), ok)| (!ok).then_some(counted.rule))?;
        ::metrics::counter!("mailsink_rate_refusals_total", "rate" => over.kind.name())
            .increment(1);
        Some(refusal(over, client.ip))
    }

    fn keys(&self, client: ClientKey, stage: Stage<'_>) -> Vec<(&Counted, RateKey)> {
        let client = client.to_string();
        self.counted
            .iter()
            .filter_map(|counted| {
                let subject = match (counted.rule.kind, stage) {
                    (RateKind::Connections, Stage::Connect)
                    | (RateKind::Messages, Stage::Mail { .. })
                    | (RateKind::Recipients, Stage::Rcpt) => client.as_str(),
                    (RateKind::UserMessages, Stage::Mail { user, .. }) => user?,
                    (RateKind::DomainMessages, Stage::Mail { sender_domain, .. }) => sender_domain?,
                    _ => return None,
                };
                Some((counted, rate_key(counted.rule, subject)))
            })
            .collect()
    }
}

/// The key of `subject` under `rule`: the rate is in it, so that a changed rate starts
/// afresh rather than reading what another rate wrote.
fn rate_key(rule: RateRule, subject: &str) -> RateKey {
    let rate = rule.rate;
    RateKey {
        key: format!(
            "rate:{}:{}/{}s/{}:{}",
            rule.kind.name(),
            rate.quantity,
            rate.period.as_secs(),
            rate.burst(),
            subject.to_ascii_lowercase()
        ),
        rate,
        peek: false,
    }
}

/// Postfix's replies to the client over its rate (anvil's limits).
fn refusal(rule: RateRule, client: IpAddr) -> Decision {
    let what = match rule.kind {
        RateKind::Connections => {
            let text = format!("4.7.0 Error: too many connections from {client}");
            return Decision::disconnect(421, &text, DisconnectMode::ForceDisconnect)
                .unwrap_or(Decision::HookFailed);
        }
        RateKind::Messages => format!("too much mail from {client}"),
        RateKind::Recipients => format!("too many recipients from {client}"),
        RateKind::UserMessages => "too much mail from this user".to_string(),
        RateKind::DomainMessages => "too much mail from this sender domain".to_string(),
    };
    Decision::reject(450, format!("4.7.1 Error: {what}, try again later"))
        .unwrap_or(Decision::HookFailed)
}

/// `--redis-failure closed` and Redis did not answer.
pub fn store_failed() -> Decision {
    Decision::reject(451, "4.3.0 Temporary lookup failure, try again later")
        .unwrap_or(Decision::HookFailed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::tests::{shared, TestRedis};
    use smtp_session::Reply;
    use smtp_session_tokio::ClientRules;

    fn rates(specs: &[&str], shared: Option<Shared>) -> Rates {
        let args = RateArgs {
            rates: specs.iter().map(|s| s.parse().unwrap()).collect(),
        };
        Rates::new(&args, shared.map(Arc::new)).unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn reply(decision: Option<Decision>) -> String {
        match decision {
            None => "ok".into(),
            Some(Decision::Reject(reply)) => reply_text(&reply),
            Some(Decision::Disconnect { reply, .. }) => reply_text(&reply),
            Some(other) => format!("{other:?}"),
        }
    }

    fn reply_text(reply: &Reply) -> String {
        String::from_utf8_lossy(&reply.to_bytes())
            .trim_end()
            .to_string()
    }

    const A: &str = "192.0.2.1";

    /// A client as the server makes it, loopback exempt.
    fn client(ip: &str) -> Client {
        ClientRules::default().client(ip.parse().unwrap())
    }

    #[test]
    fn flags_name_a_kind_and_a_rate() {
        let rule: RateRule = "messages=100/hour,max_burst=5".parse().unwrap();
        assert_eq!(rule.kind, RateKind::Messages);
        assert_eq!(rule.rate.burst(), 5);
        assert!("mails=1/s".parse::<RateRule>().is_err());
        assert!("messages".parse::<RateRule>().is_err());
        assert!("messages=often".parse::<RateRule>().is_err());
        let twice = RateArgs {
            rates: vec!["messages=1/s".parse().unwrap(); 2],
        };
        assert!(Rates::new(&twice, None).is_err());
    }

    #[test]
    fn in_the_process_each_kind_counts_at_its_stage_and_for_its_subject() {
        let rates = rates(
            &[
                "connections=2/hour",
                "recipients=1/hour",
                "domain-messages=1/hour",
            ],
            None,
        );
        let client = client(A);
        let other = super::tests::client("192.0.2.2");
        let mail = |domain| Stage::Mail {
            sender_domain: Some(domain),
            user: None,
        };
        runtime().block_on(async {
            assert_eq!(reply(rates.check(client, Stage::Connect).await), "ok");
            assert_eq!(reply(rates.check(client, Stage::Connect).await), "ok");
            assert_eq!(
                reply(rates.check(client, Stage::Connect).await),
                "421 4.7.0 Error: too many connections from 192.0.2.1"
            );
            assert_eq!(reply(rates.check(other, Stage::Connect).await), "ok");
            assert_eq!(reply(rates.check(client, Stage::Rcpt).await), "ok");
            assert_eq!(
                reply(rates.check(client, Stage::Rcpt).await),
                "450 4.7.1 Error: too many recipients from 192.0.2.1, try again later"
            );
            assert_eq!(reply(rates.check(client, mail("example.org")).await), "ok");
            assert_eq!(
                reply(rates.check(other, mail("Example.ORG")).await),
                "450 4.7.1 Error: too much mail from this sender domain, try again later"
            );
            assert_eq!(reply(rates.check(other, mail("example.net")).await), "ok");
        });
    }

    #[test]
    fn trusted_networks_are_exempt_and_an_ipv6_client_is_its_64() {
        let rates = rates(&["recipients=1/hour"], None);
        runtime().block_on(async {
            for _ in 0..3 {
                assert_eq!(
                    reply(rates.check(client("127.0.0.1"), Stage::Rcpt).await),
                    "ok"
                );
            }
            assert_eq!(
                reply(rates.check(client("2001:db8:1:2::1"), Stage::Rcpt).await),
                "ok"
            );
            assert_eq!(
                reply(rates.check(client("2001:db8:1:2::99"), Stage::Rcpt).await),
                "450 4.7.1 Error: too many recipients from 2001:db8:1:2::99, try again later"
            );
        });
    }

    #[test]
    fn with_redis_two_processes_count_together() {
        let redis = TestRedis::start();
        let a = rates(
            &["messages=2/hour"],
            Some(shared(&redis.url(), FailurePolicy::Open)),
        );
        let b = rates(
            &["messages=2/hour"],
            Some(shared(&redis.url(), FailurePolicy::Open)),
        );
        let client = client(A);
        let mail = Stage::Mail {
            sender_domain: None,
            user: None,
        };
        runtime().block_on(async {
            assert_eq!(reply(a.check(client, mail).await), "ok");
            assert_eq!(reply(b.check(client, mail).await), "ok");
            assert_eq!(
                reply(a.check(client, mail).await),
                "450 4.7.1 Error: too much mail from 192.0.2.1, try again later"
            );
        });
    }

    #[test]
    fn redis_away_open_counts_in_the_process_closed_refuses() {
        let mut redis = TestRedis::start();
        let open = rates(
            &["recipients=2/hour"],
            Some(shared(&redis.url(), FailurePolicy::Open)),
        );
        let closed = rates(
            &["recipients=2/hour"],
            Some(shared(&redis.url(), FailurePolicy::Closed)),
        );
        let client = client(A);
        redis.stop();
        runtime().block_on(async {
            assert_eq!(reply(open.check(client, Stage::Rcpt).await), "ok");
            assert_eq!(reply(open.check(client, Stage::Rcpt).await), "ok");
            assert_eq!(
                reply(open.check(client, Stage::Rcpt).await),
                "450 4.7.1 Error: too many recipients from 192.0.2.1, try again later"
            );
            assert_eq!(
                reply(closed.check(client, Stage::Rcpt).await),
                "451 4.3.0 Temporary lookup failure, try again later"
            );
        });
    }
}
