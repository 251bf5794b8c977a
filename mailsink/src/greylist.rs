//! `--greylist`: greylisting that asks each sender to retry once, and only once.
//!
//! A message's recipient is refused with `450 4.2.0` the first time its triplet (sender,
//! client network by prefix, sender address, recipient) is seen, and accepted once the
//! sender retries after `--greylist-delay` and within `--greylist-retry-window`. The sender
//! who has passed is then remembered for `--greylist-pass-lifetime` (each message renews
//! it), so every later message from it goes through at once, whatever its sender address
//! and recipients: a sender is greylisted once, not per message.
//!
//! Who "the sender" is: the client's network (IPv4 by /24, IPv6 by /64 by default, so that
//! a retry from the next address of a pool counts), or, when the message names a domain that
//! vouches for it (with `--verify`), that domain, so that a pool of sending addresses counts
//! as one sender. Skipped altogether: clients on a DNS allow list (a `--dnsbl` site with a
//! negative weight), authenticated submissions, trusted networks, and mail whose sender
//! domain is vouched for by SPF pass or a valid DKIM signature aligned with its From:
//! domain; since only the end of the message tells, with `--verify` the decision is taken
//! there rather than at RCPT.
//!
//! The state is in Redis with `--redis` (one atomic script per recipient, all recipients of
//! a message in one round trip), so that a retry may reach any instance of the fleet; else in
//! the process, bounded by `--greylist-max-entries`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::Value;
use smtp_session::{Decision, Reply};

use crate::rate::parse_seconds;
use crate::shared::{evalsha, FailurePolicy, Script, Shared};

/// The command-line flags of this module.
#[derive(Debug, clap::Args)]
pub struct GreylistArgs {
    /// Greylist senders not seen before: their first attempt is answered 450 4.2.0.
    #[arg(long)]
    pub greylist: bool,

    /// How long a sender must wait before its retry is accepted.
    #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = parse_seconds)]
    pub greylist_delay: Duration,

    /// How long after the delay a retry is still accepted; a later one starts over.
    #[arg(long, value_name = "SECONDS", default_value = "172800", value_parser = parse_seconds)]
    pub greylist_retry_window: Duration,

    /// How long a sender that passed is remembered after its last message.
    #[arg(long, value_name = "SECONDS", default_value = "3024000", value_parser = parse_seconds)]
    pub greylist_pass_lifetime: Duration,

    /// The IPv4 prefix length of a client's network.
    #[arg(long, value_name = "BITS", default_value_t = 24,
          value_parser = clap::value_parser!(u8).range(8..=32))]
    pub greylist_ipv4_prefix: u8,

    /// The IPv6 prefix length of a client's network.
    #[arg(long, value_name = "BITS", default_value_t = 64,
          value_parser = clap::value_parser!(u8).range(16..=128))]
    pub greylist_ipv6_prefix: u8,

    /// Triplets and senders kept in the process without --redis (or while it is away):
    /// past it, the expired are forgotten, and if none is, new senders are not greylisted.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub greylist_max_entries: usize,
}

/// Who sends: the network of the client, or a domain that vouches for the message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Sender {
    /// The client's network, `192.0.2.0/24`.
    Network(String),
    /// The domain that vouches for the message (lower case).
    Domain(String),
}

impl Sender {
    fn key(&self) -> String {
        match self {
            Sender::Network(net) => format!("net:{net}"),
            Sender::Domain(domain) => format!("domain:{domain}"),
        }
    }
}

/// The greylist's answer for one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted: the sender passed before, or just now.
    Pass,
    /// Refused for now; a retry after this long will pass.
    Wait(Duration),
}

/// The atomic step for one recipient. KEYS: the triplet, the sender. ARGV: the delay, the
/// retry window and the pass lifetime, in milliseconds. Returns {passed, wait_ms}.
static GREYLIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local delay = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local lifetime = tonumber(ARGV[3])
if redis.call('PEXPIRE', KEYS[2], lifetime) == 1 then
  return {1, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local first = tonumber(redis.call('GET', KEYS[1]))
if not first or now - first > delay + window then
  redis.call('SET', KEYS[1], now, 'PX', delay + window)
  return {0, delay}
end
if now - first < delay then
  return {0, delay - (now - first)}
end
redis.call('SET', KEYS[2], '1', 'PX', lifetime)
redis.call('DEL', KEYS[1])
return {1, 0}
"#,
    )
});

/// The greylist; one per process.
#[derive(Debug)]
pub struct Greylist {
    delay: Duration,
    window: Duration,
    lifetime: Duration,
    prefixes: (u8, u8),
    shared: Option<Arc<Shared>>,
    local: Mutex<Local>,
}

/// The state kept in the process.
#[derive(Debug, Default)]
struct Local {
    /// Triplets: when first seen.
    first_seen: HashMap<String, Instant>,
    /// Senders that passed: until when they are remembered.
    passed: HashMap<Sender, Instant>,
    max_entries: usize,
}

impl Greylist {
    /// The greylist of `args`, `None` without `--greylist`.
    pub fn new(args: &GreylistArgs, shared: Option<Arc<Shared>>) -> Option<Greylist> {
        args.greylist.then(|| Greylist {
            delay: args.greylist_delay,
            window: args.greylist_retry_window,
            lifetime: args.greylist_pass_lifetime,
            prefixes: (args.greylist_ipv4_prefix, args.greylist_ipv6_prefix),
            shared,
            local: Mutex::new(Local {
                max_entries: args.greylist_max_entries,
                ..Local::default()
            }),
        })
    }

    /// The sender for a client at `ip`: its network.
    pub fn network(&self, ip: IpAddr) -> Sender {
        let (v4, v6) = self.prefixes;
        let net = match ip.to_canonical() {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(v4)).unwrap_or(0);
                format!("{}/{v4}", std::net::Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(v6)).unwrap_or(0);
                format!("{}/{v6}", std::net::Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Sender::Network(net)
    }

    /// The verdict for each of `recipients` of a message from `sender` with reverse path
    /// `from`, in one round trip to Redis; `Err` with the reply when Redis did not answer and
    /// `--redis-failure closed`.
    pub async fn check(
        &self,
        sender: &Sender,
        from: &str,
        recipients: &[String],
    ) -> Result<Vec<Verdict>, Decision> {
        let Some(shared) = &self.shared else {
            return Ok(self.check_here(sender, from, recipients));
        };
        let sender_key = shared.key(&format!("grey:pass:{}", sender.key()));
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        let answers = shared
            .query(&[&GREYLIST], |pipe| {
                for rcpt in recipients {
                    let triplet = shared.key(&triplet_key(sender, from, rcpt));
                    evalsha(pipe, &GREYLIST, &[triplet, sender_key.clone()])
                        .arg(ms(self.delay))
                        .arg(ms(self.window))
                        .arg(ms(self.lifetime));
                }
            })
            .await;
        match answers {
            // Counted here too, so that the process knows while Redis is away.
            Ok(values) => {
                let verdicts: Option<Vec<Verdict>> = values.iter().map(verdict).collect();
                if let Some(verdicts) = verdicts {
                    if verdicts.contains(&Verdict::Pass) {
                        self.remember_here(sender);
                    }
                    return Ok(verdicts);
                }
                Err(crate::rates::store_failed())
            }
            Err(_) if shared.failure_policy() == FailurePolicy::Open => {
                Ok(self.check_here(sender, from, recipients))
            }
            Err(_) => Err(crate::rates::store_failed()),
        }
    }

    /// A message from `sender` went through without greylisting (it is vouched for): the
    /// sender is remembered as passed.
    pub async fn vouched(&self, sender: &Sender) {
        self.remember_here(sender);
        if let Some(shared) = &self.shared {
            let key = shared.key(&format!("grey:pass:{}", sender.key()));
            let ms = u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX);
            let _ = shared
                .query(&[], |pipe| {
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg("1")
                        .arg("PX")
                        .arg(ms)
                        .ignore();
                })
                .await;
        }
    }

    fn check_here(&self, sender: &Sender, from: &str, recipients: &[String]) -> Vec<Verdict> {
        let now = Instant::now();
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if local.passed.get(sender).is_some_and(|until| now < *until) {
            local.passed.insert(sender.clone(), now + self.lifetime);
            return vec![Verdict::Pass; recipients.len()];
        }
        let mut matured = false;
        let verdicts = recipients
            .iter()
            .map(
                |rcpt| match local.triplet(triplet_key(sender, from, rcpt), now, self) {
                    Some(verdict) => verdict,
                    None => {
                        matured = true;
                        Verdict::Pass
                    }
                },
            )
            .collect();
        if matured {
            local.pass(sender.clone(), now + self.lifetime);
        }
        verdicts
    }

    fn remember_here(&self, sender: &Sender) {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        local.pass(sender.clone(), Instant::now() + self.lifetime);
    }

    /// `450 4.2.0`, with the wait, for a recipient greylisted.
    pub fn refusal(wait: Duration) -> Decision {
        let text = format!(
            "4.2.0 Greylisted, please try again in {} seconds",
            wait.as_secs().max(1)
        );
        ::metrics::counter!("mailsink_greylisted_total").increment(1);
        Reply::new(450, text)
            .map(Decision::Reject)
            .unwrap_or(Decision::HookFailed)
    }
}

impl Local {
    /// The verdict on a triplet; `None` when it passes for having waited (the sender is then
    /// remembered), rather than for want of room.
    fn triplet(&mut self, key: String, now: Instant, grey: &Greylist) -> Option<Verdict> {
        match self.first_seen.get(&key) {
            Some(first) if now.duration_since(*first) > grey.delay + grey.window => {}
            Some(first) if now.duration_since(*first) < grey.delay => {
                return Some(Verdict::Wait(grey.delay - now.duration_since(*first)));
            }
            Some(_) => {
                self.first_seen.remove(&key);
                return None;
            }
            None => {}
        }
        if !self.room(now, grey) {
            // Memory is bounded: past it, a new sender is not greylisted.
            return Some(Verdict::Pass);
        }
        self.first_seen.insert(key, now);
        Some(Verdict::Wait(grey.delay))
    }

    fn pass(&mut self, sender: Sender, until: Instant) {
        if self.passed.contains_key(&sender) || self.passed.len() < self.max_entries {
            self.passed.insert(sender, until);
        } else {
            let now = Instant::now();
            self.passed.retain(|_, until| now < *until);
            if self.passed.len() < self.max_entries {
                self.passed.insert(sender, until);
            }
        }
    }

    /// True when there is room for one more triplet, after forgetting the expired.
    fn room(&mut self, now: Instant, grey: &Greylist) -> bool {
        if self.first_seen.len() < self.max_entries {
            return true;
        }
        let life = grey.delay + grey.window;
        self.first_seen
            .retain(|_, first| now.duration_since(*first) <= life);
        self.first_seen.len() < self.max_entries
    }
}

fn triplet_key(sender: &Sender, from: &str, rcpt: &str) -> String {
    format!(
        "grey:triplet:{}:{}:{}",
        sender.key(),
        from.to_ascii_lowercase(),
        rcpt.to_ascii_lowercase()
    )
}

fn verdict(value: &Value) -> Option<Verdict> {
    match value {
        Value::Array(items) => match items.as_slice() {
            [Value::Int(1), _] => Some(Verdict::Pass),
            [Value::Int(0), Value::Int(ms)] => Some(Verdict::Wait(Duration::from_millis(
                u64::try_from(*ms).unwrap_or(0),
            ))),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::tests::{shared, TestRedis};

    fn args(delay_ms: u64) -> GreylistArgs {
        GreylistArgs {
            greylist: true,
            greylist_delay: Duration::from_millis(delay_ms),
            greylist_retry_window: Duration::from_secs(60),
            greylist_pass_lifetime: Duration::from_secs(3600),
            greylist_ipv4_prefix: 24,
            greylist_ipv6_prefix: 64,
            greylist_max_entries: 1000,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn rcpts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn clients_are_counted_by_their_network() {
        let grey = Greylist::new(&args(0), None).unwrap();
        let net = |ip: &str| grey.network(ip.parse().unwrap());
        assert_eq!(net("192.0.2.77"), Sender::Network("192.0.2.0/24".into()));
        assert_eq!(net("::ffff:192.0.2.1"), net("192.0.2.200"));
        assert_eq!(
            net("2001:db8:1:2:3::4"),
            Sender::Network("2001:db8:1:2::/64".into())
        );
    }

    /// The same story with and without Redis: first attempt waits, an early retry waits,
    /// a retry after the delay passes, and from then on the sender passes at once for
    /// another sender address and recipient, from another address of its network.
    fn a_sender_is_greylisted_once(first: &Greylist, second: &Greylist) {
        runtime().block_on(async {
            let client = first.network("192.0.2.10".parse().unwrap());
            let to = rcpts(&["a@example.net"]);
            let wait = first.check(&client, "x@example.org", &to).await.unwrap();
            assert!(matches!(wait[..], [Verdict::Wait(d)] if d <= Duration::from_millis(300)));
            let early = second.check(&client, "x@example.org", &to).await.unwrap();
            assert!(matches!(early[..], [Verdict::Wait(_)]));
            tokio::time::sleep(Duration::from_millis(350)).await;
            let retry = second.check(&client, "x@example.org", &to).await.unwrap();
            assert_eq!(retry, [Verdict::Pass]);
            let pool = first.network("192.0.2.11".parse().unwrap());
            let later = first
                .check(
                    &pool,
                    "y@example.org",
                    &rcpts(&["b@example.net", "c@example.net"]),
                )
                .await
                .unwrap();
            assert_eq!(later, [Verdict::Pass, Verdict::Pass]);
            // Another network starts over.
            let other = first.network("198.51.100.1".parse().unwrap());
            let new = first.check(&other, "x@example.org", &to).await.unwrap();
            assert!(matches!(new[..], [Verdict::Wait(_)]));
        });
    }

    #[test]
    fn in_the_process_a_sender_is_greylisted_once() {
        let grey = Greylist::new(&args(300), None).unwrap();
        a_sender_is_greylisted_once(&grey, &grey);
    }

    #[test]
    fn with_redis_a_retry_to_another_instance_passes() {
        let redis = TestRedis::start();
        let store = || Some(Arc::new(shared(&redis.url(), FailurePolicy::Open)));
        let first = Greylist::new(&args(300), store()).unwrap();
        let second = Greylist::new(&args(300), store()).unwrap();
        a_sender_is_greylisted_once(&first, &second);
    }

    #[test]
    fn a_vouched_domain_passes_and_is_remembered_across_instances() {
        let redis = TestRedis::start();
        let store = || Some(Arc::new(shared(&redis.url(), FailurePolicy::Open)));
        let first = Greylist::new(&args(300_000), store()).unwrap();
        let second = Greylist::new(&args(300_000), store()).unwrap();
        let domain = Sender::Domain("example.org".into());
        runtime().block_on(async {
            first.vouched(&domain).await;
            let to = rcpts(&["a@example.net"]);
            let verdict = second.check(&domain, "z@example.org", &to).await.unwrap();
            assert_eq!(verdict, [Verdict::Pass]);
        });
    }

    #[test]
    fn redis_away_open_greylists_in_the_process_closed_answers_451() {
        let mut redis = TestRedis::start();
        let open = Greylist::new(
            &args(300),
            Some(Arc::new(shared(&redis.url(), FailurePolicy::Open))),
        )
        .unwrap();
        let closed = Greylist::new(
            &args(300),
            Some(Arc::new(shared(&redis.url(), FailurePolicy::Closed))),
        )
        .unwrap();
        redis.stop();
        let client = open.network("192.0.2.10".parse().unwrap());
        let to = rcpts(&["a@example.net"]);
        runtime().block_on(async {
            let verdict = open.check(&client, "x@example.org", &to).await.unwrap();
            assert!(matches!(verdict[..], [Verdict::Wait(_)]));
            let refused = closed
                .check(&client, "x@example.org", &to)
                .await
                .unwrap_err();
            assert!(format!("{refused:?}").contains("451"), "{refused:?}");
        });
    }

    #[test]
    fn memory_is_bounded_and_a_full_greylist_lets_new_senders_through() {
        let mut small = args(300_000);
        small.greylist_max_entries = 2;
        let grey = Greylist::new(&small, None).unwrap();
        runtime().block_on(async {
            let client = grey.network("192.0.2.10".parse().unwrap());
            let mut verdicts = Vec::new();
            for rcpt in ["a@x", "b@x", "c@x"] {
                verdicts.extend(grey.check(&client, "s@y", &rcpts(&[rcpt])).await.unwrap());
            }
            assert!(matches!(
                verdicts[..],
                [Verdict::Wait(_), Verdict::Wait(_), Verdict::Pass]
            ));
            let local = grey.local.lock().unwrap();
            assert_eq!((local.first_seen.len(), local.passed.len()), (2, 0));
        });
    }

    #[test]
    fn the_refusal_says_how_long_to_wait() {
        let reply = match Greylist::refusal(Duration::from_secs(299)) {
            Decision::Reject(reply) => String::from_utf8_lossy(&reply.to_bytes()).into_owned(),
            other => format!("{other:?}"),
        };
        assert_eq!(
            reply,
            "450 4.2.0 Greylisted, please try again in 299 seconds\r\n"
        );
    }
}
