//! `--dnsbl SITE`: screening a client against DNS block and allow lists before its greeting,
//! as Postfix's postscreen does, with postscreen's `postscreen_dnsbl_sites` syntax and
//! weights.
//!
//! A SITE is `domain[=filter][*weight]`: the client's address, reversed, is looked up under
//! `domain`; when one of the A records answered matches `filter` (each octet a number,
//! `[a..b]` or `[a;b;c]`: `127.0.0.[2..11]`; without a filter, any), the site adds `weight`
//! (1 by default, negative for an allow list) to the client's score. A score at or over
//! `--dnsbl-threshold` refuses the client, before the greeting (`--dnsbl-action drop`) or
//! at each MAIL and RCPT after it (`enforce`, so the client's logs say why).
//!
//! The lists are asked in parallel on mailsink's resolver, all within `--dnsbl-timeout`; a
//! list that has not answered by then adds nothing. Answers are cached for their TTL by the
//! resolver and, with `--redis`, in Redis for the whole fleet (one read for all the lists
//! of a client, one write for those that were asked).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::RData;
use redis::Value;
use smtp_session::{Decision, DisconnectMode, Reply};

use crate::dns::Resolver;
use crate::rate::parse_seconds;
use crate::shared::Shared;

/// The command-line flags of this module.
#[derive(Debug, clap::Args)]
pub struct DnsblArgs {
    /// A DNS list, postscreen's form: domain[=filter][*weight], e.g.
    /// zen.spamhaus.org=127.0.0.[2..11]*3 or list.dnswl.org=127.0.[0..255].[1..3]*-2
    /// (repeatable).
    #[arg(long, value_name = "SITE")]
    pub dnsbl: Vec<Site>,

    /// The score at which a client is refused.
    #[arg(
        long,
        value_name = "SCORE",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub dnsbl_threshold: i32,

    /// `drop`: refuse the client before the greeting and close; `enforce`: greet it and
    /// refuse each MAIL and RCPT; `log`: only record its score.
    #[arg(long, value_name = "ACTION", value_enum, default_value_t)]
    pub dnsbl_action: Action,

    /// The refusal's text after its code, {client} and {lists} replaced [default: 5.7.1
    /// Service unavailable; client [{client}] blocked using {lists}].
    #[arg(long, value_name = "TEXT")]
    pub dnsbl_reply: Option<String>,

    /// The longest the lists may hold up a client's greeting, all lists together.
    #[arg(long, value_name = "SECONDS", default_value = "3", value_parser = parse_seconds)]
    pub dnsbl_timeout: Duration,
}

/// What is done with a client over the threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Refused before the greeting (554), then closed.
    Drop,
    /// Greeted; each MAIL and RCPT refused (550).
    #[default]
    Enforce,
    /// Nothing but the record.
    Log,
}

/// One `--dnsbl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// The list's domain, lower case, without the final dot.
    pub domain: String,
    filter: Option<[Vec<RangeInclusive<u8>>; 4]>,
    /// What a listing adds to the score.
    pub weight: i32,
}

impl FromStr for Site {
    type Err = String;

    fn from_str(spec: &str) -> Result<Site, String> {
        let bad = |why: &str| format!("invalid DNS list '{spec}': {why}");
        let (rest, weight) = match spec.rsplit_once('*') {
            Some((rest, weight)) => (
                rest,
                weight
                    .trim()
                    .parse()
                    .map_err(|_| bad("the weight is a whole number"))?,
            ),
            None => (spec, 1),
        };
        let (domain, filter) =
            match rest.split_once('=') {
                Some((domain, filter)) => (
                    domain,
                    Some(parse_filter(filter).ok_or_else(|| {
                        bad("the filter is four octets, each N, [A..B] or [A;B;C]")
                    })?),
                ),
                None => (rest, None),
            };
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let plain = |label: &str| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !domain.split('.').all(plain) {
            return Err(bad("the domain is not a host name"));
        }
        Ok(Site {
            domain,
            filter,
            weight,
        })
    }
}

fn parse_filter(text: &str) -> Option<[Vec<RangeInclusive<u8>>; 4]> {
    // The dots between octets, not those of `[a..b]`.
    let mut depth = 0i32;
    let octets: Vec<Vec<RangeInclusive<u8>>> = text
        .trim()
        .split(|c: char| {
            depth += match c {
                '[' => 1,
                ']' => -1,
                _ => 0,
            };
            c == '.' && depth == 0
        })
        .map(parse_octet)
        .collect::<Option<_>>()?;
    octets.try_into().ok()
}

/// `N`, `[A..B]`, `[A;B;C]` or a mix: `[1;3..5]`.
fn parse_octet(text: &str) -> Option<Vec<RangeInclusive<u8>>> {
    let inner = match text.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']')?,
        None => text,
    };
    inner
        .split(';')
        .map(|item| match item.split_once("..") {
            Some((low, high)) => {
                let (low, high) = (low.parse().ok()?, high.parse().ok()?);
                (low <= high).then_some(low..=high)
            }
            None => item.parse().ok().map(|n| n..=n),
        })
        .collect()
}

impl Site {
    /// True when `answer`, one of the list's A records, counts.
    fn matches(&self, answer: Ipv4Addr) -> bool {
        let Some(filter) = &self.filter else {
            return true;
        };
        filter
            .iter()
            .zip(answer.octets())
            .all(|(ranges, octet)| ranges.iter().any(|range| range.contains(&octet)))
    }

    /// Its name in the log: the domain, with the filter when there is one.
    fn label(&self) -> String {
        self.domain.clone()
    }
}

/// What the lists made of a client.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Screening {
    /// The sum of the weights of the sites that listed it.
    pub score: i32,
    /// The domains of the sites that listed it with a positive weight.
    pub listed: Vec<String>,
    /// The domains of the sites that listed it with a negative weight (allow lists).
    pub allowed_by: Vec<String>,
    /// Lists that did not answer in time.
    pub unanswered: Vec<String>,
}

/// A list's answer about one client: its A records, and for how long it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    records: Vec<Ipv4Addr>,
    ttl: Duration,
}

/// The longest an answer is cached in Redis, whatever its TTL.
const MAX_TTL: Duration = Duration::from_secs(3600);
/// How long a negative answer without a SOA minimum is cached.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// The screening of `--dnsbl`; one per process.
#[derive(Debug)]
pub struct Dnsbl {
    sites: Vec<Site>,
    threshold: i32,
    action: Action,
    reply: String,
    timeout: Duration,
    resolver: Resolver,
    shared: Option<Arc<Shared>>,
}

impl Dnsbl {
    /// The screening of `args`, `None` without `--dnsbl`.
    pub fn new(
        args: &DnsblArgs,
        resolver: Option<&Resolver>,
        shared: Option<Arc<Shared>>,
    ) -> Result<Option<Dnsbl>, String> {
        if args.dnsbl.is_empty() {
            return Ok(None);
        }
        let resolver = resolver.ok_or("--dnsbl looks clients up in DNS: not with --no-dns")?;
        let reply = args.dnsbl_reply.clone().unwrap_or_else(|| {
            "5.7.1 Service unavailable; client [{client}] blocked using {lists}".into()
        });
        Ok(Some(Dnsbl {
            sites: args.dnsbl.clone(),
            threshold: args.dnsbl_threshold,
            action: args.dnsbl_action,
            reply,
            timeout: args.dnsbl_timeout,
            resolver: resolver.clone(),
            shared,
        }))
    }

    /// What is done with a client over the threshold.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Looks `ip` up in every list, in parallel, within the timeout.
    pub async fn screen(&self, ip: IpAddr) -> Screening {
        let ip = ip.to_canonical();
        let mut names: Vec<String> = self
            .sites
            .iter()
            .map(|site| query_name(ip, &site.domain))
            .collect();
        names.sort_unstable();
        names.dedup();
        let deadline = Instant::now() + self.timeout;
        let mut answers = self.cached(&names).await;
        let missing: Vec<String> = names
            .iter()
            .filter(|name| !answers.contains_key(*name))
            .cloned()
            .collect();
        let fresh = self.look_up(&missing, deadline).await;
        self.remember(&fresh);
        answers.extend(fresh);
        self.score(ip, &answers)
    }

    fn score(&self, ip: IpAddr, answers: &HashMap<String, Answer>) -> Screening {
        let mut screening = Screening::default();
        for site in &self.sites {
            let Some(answer) = answers.get(&query_name(ip, &site.domain)) else {
                screening.unanswered.push(site.label());
                record_lookup(&site.domain, "timeout");
                continue;
            };
            if !answer.records.iter().any(|&a| site.matches(a)) {
                record_lookup(&site.domain, "not_listed");
                continue;
            }
            record_lookup(&site.domain, "listed");
            screening.score = screening.score.saturating_add(site.weight);
            if site.weight < 0 {
                screening.allowed_by.push(site.label());
            } else {
                screening.listed.push(site.label());
            }
        }
        screening.unanswered.dedup();
        screening
    }

    /// The refusal of a client so screened, when its score reaches the threshold and the
    /// action is not `log`: 554 before the greeting (`drop`), 550 after it (`enforce`).
    pub fn refusal(&self, screening: &Screening, ip: IpAddr) -> Option<Decision> {
        if screening.score < self.threshold || self.action == Action::Log {
            return None;
        }
        ::metrics::counter!("mailsink_dnsbl_refusals_total").increment(1);
        let text = self
            .reply
            .replace("{client}", &ip.to_canonical().to_string())
            .replace("{lists}", &screening.listed.join(", "));
        let decision = match self.action {
            Action::Drop => Reply::new(554, &text).map(|reply| Decision::Disconnect {
                reply,
                mode: DisconnectMode::ForceDisconnect,
            }),
            _ => Reply::new(550, &text).map(Decision::Reject),
        };
        Some(decision.unwrap_or(Decision::HookFailed))
    }

    /// The answers Redis holds for `names`, in one round trip; none without Redis or when it
    /// does not answer.
    async fn cached(&self, names: &[String]) -> HashMap<String, Answer> {
        let Some(shared) = &self.shared else {
            return HashMap::new();
        };
        let keys: Vec<String> = names.iter().map(|n| shared.key(&cache_key(n))).collect();
        let values = shared
            .query(&[], |pipe| {
                for key in &keys {
                    pipe.cmd("GET").arg(key);
                    pipe.cmd("PTTL").arg(key);
                }
            })
            .await
            .unwrap_or_default();
        let mut cached = HashMap::new();
        for (name, pair) in names.iter().zip(values.chunks(2)) {
            if let [Value::BulkString(text), Value::Int(ms)] = pair {
                let ttl = Duration::from_millis(u64::try_from(*ms).unwrap_or(0));
                if let Some(records) = parse_records(text) {
                    cached.insert(name.clone(), Answer { records, ttl });
                }
            }
        }
        cached
    }

    /// Asks the resolver for each of `names` at once; those without an answer (a timeout, a
    /// server failure) by `deadline` are left out.
    async fn look_up(&self, names: &[String], deadline: Instant) -> HashMap<String, Answer> {
        let mut lookups = tokio::task::JoinSet::new();
        for name in names {
            let (resolver, name) = (self.resolver.clone(), name.clone());
            lookups.spawn(async move {
                let answer = lookup(&resolver, &name).await;
                (name, answer)
            });
        }
        let mut answers = HashMap::new();
        let deadline = tokio::time::Instant::from_std(deadline);
        while let Ok(Some(done)) = tokio::time::timeout_at(deadline, lookups.join_next()).await {
            if let Ok((name, Some(answer))) = done {
                answers.insert(name, answer);
            }
        }
        // Dropping the set cancels the lookups still running.
        answers
    }

    /// Puts fresh answers in Redis for their TTL, without holding the client up.
    fn remember(&self, fresh: &HashMap<String, Answer>) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if fresh.is_empty() {
            return;
        }
        let entries: Vec<(String, String, u64)> = fresh
            .iter()
            .map(|(name, answer)| {
                let records: Vec<String> = answer.records.iter().map(|a| a.to_string()).collect();
                let ms = answer.ttl.min(MAX_TTL).as_millis().max(1);
                let ms = u64::try_from(ms).unwrap_or(1);
                (shared.key(&cache_key(name)), records.join(","), ms)
            })
            .collect();
        tokio::spawn(async move {
            let _ = shared
                .query(&[], |pipe| {
                    for (key, value, ms) in &entries {
                        pipe.cmd("SET")
                            .arg(key)
                            .arg(value)
                            .arg("PX")
                            .arg(*ms)
                            .ignore();
                    }
                })
                .await;
        });
    }
}

/// `ip` reversed under `domain`: `2.0.0.127.zen.example.` for 127.0.0.2, nibbles for IPv6.
fn query_name(ip: IpAddr, domain: &str) -> String {
    let reversed = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let hex = format!("{:032x}", u128::from(v6));
            let nibbles: Vec<String> = hex.chars().rev().map(String::from).collect();
            nibbles.join(".")
        }
    };
    format!("{reversed}.{domain}.")
}

fn cache_key(name: &str) -> String {
    format!("dnsbl:{name}")
}

fn parse_records(text: &[u8]) -> Option<Vec<Ipv4Addr>> {
    let text = std::str::from_utf8(text).ok()?;
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',').map(|a| a.parse().ok()).collect()
}

/// One list's A records for `name`: `Some` with none when it does not list the client,
/// `None` when it gave no answer.
async fn lookup(resolver: &Resolver, name: &str) -> Option<Answer> {
    match resolver.hickory().ipv4_lookup(name).await {
        Ok(found) => {
            let mut ttl = MAX_TTL;
            let records = found
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::A(a) => {
                        ttl = ttl.min(Duration::from_secs(record.ttl.into()));
                        Some(a.0)
                    }
                    _ => None,
                })
                .collect();
            Some(Answer { records, ttl })
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(none))) => Some(Answer {
            records: Vec::new(),
            ttl: none
                .negative_ttl
                .map_or(NEGATIVE_TTL, |s| Duration::from_secs(s.into())),
        }),
        Err(_) => None,
    }
}

fn record_lookup(list: &str, result: &'static str) {
    ::metrics::counter!("mailsink_dnsbl_lookups_total", "list" => list.to_string(), "result" => result)
        .increment(1);
}

#[cfg(test)]
#[path = "../tests/common/dns.rs"]
mod test_dns;

#[cfg(test)]
mod tests {
    use super::test_dns::{DnsServer, Zone};
    use super::*;
    use crate::dns::DnsSettings;
    use crate::shared::tests::{shared, TestRedis};
    use crate::shared::FailurePolicy;

    fn site(spec: &str) -> Site {
        spec.parse().unwrap()
    }

    #[test]
    fn sites_are_read_in_postscreens_syntax() {
        let zen = site("zen.example=127.0.0.[2..11]*3");
        assert_eq!((zen.domain.as_str(), zen.weight), ("zen.example", 3));
        assert!(zen.matches("127.0.0.2".parse().unwrap()));
        assert!(zen.matches("127.0.0.11".parse().unwrap()));
        assert!(!zen.matches("127.0.0.12".parse().unwrap()));
        assert!(!zen.matches("127.0.1.2".parse().unwrap()));
        let wl = site("list.dnswl.example=127.0.[0..255].[1;3]*-2");
        assert_eq!(wl.weight, -2);
        assert!(wl.matches("127.0.9.3".parse().unwrap()));
        assert!(!wl.matches("127.0.9.2".parse().unwrap()));
        let any = site("Bl.Example.");
        assert_eq!((any.domain.as_str(), any.weight), ("bl.example", 1));
        assert!(any.matches("127.0.0.200".parse().unwrap()));
        for bad in [
            "",
            "bl.example*x",
            "bl.example=127.0.0",
            "bl.example=127.0.0.[3..2]",
            "bl example",
            "bl.example=127.0.0.256",
        ] {
            assert!(bad.parse::<Site>().is_err(), "{bad}");
        }
    }

    #[test]
    fn clients_are_looked_up_reversed() {
        assert_eq!(
            query_name("192.0.2.99".parse().unwrap(), "zen.example"),
            "99.2.0.192.zen.example."
        );
        assert_eq!(
            query_name("2001:db8::1".parse().unwrap(), "bl.example"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example."
        );
    }

    fn args(sites: &[&str], threshold: i32, action: Action) -> DnsblArgs {
        DnsblArgs {
            dnsbl: sites.iter().map(|s| site(s)).collect(),
            dnsbl_threshold: threshold,
            dnsbl_action: action,
            dnsbl_reply: None,
            dnsbl_timeout: Duration::from_secs(2),
        }
    }

    fn resolver(server: &DnsServer) -> Resolver {
        Resolver::new(&DnsSettings {
            servers: vec![server.addr],
            timeout: Duration::from_secs(2),
        })
        .unwrap()
    }

    fn zone() -> Zone {
        Zone::new()
            .a("7.2.0.192.zen.example", "127.0.0.4".parse().unwrap())
            .a("7.2.0.192.pbl.example", "127.0.0.10".parse().unwrap())
            .a("8.2.0.192.zen.example", "127.0.0.2".parse().unwrap())
            .a("8.2.0.192.wl.example", "127.0.10.2".parse().unwrap())
            // Listed, but with an answer the filter leaves out.
            .a("9.2.0.192.zen.example", "127.255.255.254".parse().unwrap())
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn text(decision: Option<Decision>) -> String {
        match decision {
            None => "none".into(),
            Some(Decision::Reject(reply) | Decision::Disconnect { reply, .. }) => {
                String::from_utf8_lossy(&reply.to_bytes()).trim_end().into()
            }
            Some(other) => format!("{other:?}"),
        }
    }

    const SITES: [&str; 3] = [
        "zen.example=127.0.0.[2..11]*3",
        "pbl.example=127.0.0.[10;11]*1",
        "wl.example=127.0.[0..255].[1..3]*-4",
    ];

    #[test]
    fn weights_add_up_and_an_allow_list_takes_away() {
        let server = DnsServer::start(zone());
        let resolver = resolver(&server);
        let dnsbl = Dnsbl::new(&args(&SITES, 3, Action::Drop), Some(&resolver), None)
            .unwrap()
            .unwrap();
        runtime().block_on(async {
            let listed: IpAddr = "192.0.2.7".parse().unwrap();
            let screened = dnsbl.screen(listed).await;
            assert_eq!(screened.score, 4);
            assert_eq!(screened.listed, ["zen.example", "pbl.example"]);
            assert_eq!(
                text(dnsbl.refusal(&screened, listed)),
                "554 5.7.1 Service unavailable; client [192.0.2.7] blocked using \
                 zen.example, pbl.example"
            );
            let allowed: IpAddr = "192.0.2.8".parse().unwrap();
            let screened = dnsbl.screen(allowed).await;
            assert_eq!((screened.score, screened.allowed_by.len()), (-1, 1));
            assert_eq!(text(dnsbl.refusal(&screened, allowed)), "none");
            for clean in ["192.0.2.9", "192.0.2.10"] {
                let screened = dnsbl.screen(clean.parse().unwrap()).await;
                assert_eq!(screened, Screening::default(), "{clean}");
            }
        });
    }

    #[test]
    fn a_silent_list_adds_nothing_and_holds_the_client_up_only_until_the_timeout() {
        let silent = DnsServer::silent();
        let resolver = resolver(&silent);
        let mut args = args(&SITES[..1], 1, Action::Enforce);
        args.dnsbl_timeout = Duration::from_millis(300);
        let dnsbl = Dnsbl::new(&args, Some(&resolver), None).unwrap().unwrap();
        runtime().block_on(async {
            let started = Instant::now();
            let screened = dnsbl.screen("192.0.2.7".parse().unwrap()).await;
            assert!(started.elapsed() < Duration::from_millis(600));
            assert_eq!((screened.score, screened.unanswered.len()), (0, 1));
        });
    }

    #[test]
    fn with_redis_another_instance_reads_the_answers_without_asking_the_lists() {
        let redis = TestRedis::start();
        let server = DnsServer::start(zone());
        let store = || Some(Arc::new(shared(&redis.url(), FailurePolicy::Open)));
        let args = args(&SITES, 3, Action::Enforce);
        let first = Dnsbl::new(&args, Some(&resolver(&server)), store())
            .unwrap()
            .unwrap();
        let second = Dnsbl::new(&args, Some(&resolver(&server)), store())
            .unwrap()
            .unwrap();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        runtime().block_on(async {
            assert_eq!(first.screen(client).await.score, 4);
            let asked = server.queries().len();
            assert_eq!(asked, 3);
            // The write is not awaited by the screening: give it its round trip.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let screened = second.screen(client).await;
            assert_eq!(screened.score, 4);
            assert_eq!(server.queries().len(), asked, "{:?}", server.queries());
            assert_eq!(
                text(second.refusal(&screened, client)),
                "550 5.7.1 Service unavailable; client [192.0.2.7] blocked using \
                 zen.example, pbl.example"
            );
        });
    }
}
