//! `--redis URL`: the store a fleet of mailsink instances shares, Redis or Valkey.
//!
//! Each rate check is one atomic step in the store: a GCRA script (the generic cell rate
//! algorithm, as redis-cell and KumoMTA's Redis throttles run it) reads the key's
//! theoretical arrival time, decides and writes it back inside Redis, so instances checking
//! the same key at the same instant cannot both slip through. The clock is Redis's own
//! (`TIME`), so the instances' clocks need not agree. Several keys checked at once go to
//! one call of the script: one atomic step and one round trip, whatever their number. The
//! `--rate` checks may lease several tokens of a key in that step and spend them without a
//! round trip (lease.rs).
//!
//! The store being down or slow never holds a connection up for more than `--redis-timeout`:
//! the check fails, the outage is logged once (and its end once), every failed check is
//! counted in `mailsink_redis_failures_total`, and for a short pause no connection is tried
//! again, so while Redis is away the checks cost nothing. What a failed check means is
//! `--redis-failure`: `open` (the default) lets the per-process limits decide, `closed`
//! refuses with a 4xx.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::{
    AsyncConnectionConfig, Client, IntoConnectionInfo, Pipeline, ServerErrorKind, TlsCertificates,
    Value,
};

use crate::lease::Leases;
use crate::rate::{parse_seconds, Rate};

/// The command-line flags of the shared store.
#[derive(Debug, clap::Args)]
pub struct RedisArgs {
    /// Share rates, the AUTH failure limit, throttles, DNS list results and greylisting
    /// with other instances in this Redis (or Valkey): redis://[USER:PASSWORD@]HOST[:PORT][/DB],
    /// rediss:// for TLS, redis+unix:///PATH. Without it, all of them stay in the process.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// The longest a check may wait for Redis, connecting included; then the check fails
    /// and --redis-failure decides.
    #[arg(long, value_name = "SECONDS", default_value = "0.25", value_parser = parse_seconds,
          requires = "redis")]
    pub redis_timeout: Duration,

    /// What a check that Redis did not answer means: `open` lets the per-process limits
    /// decide (mail keeps flowing), `closed` refuses with 451 4.3.0.
    #[arg(
        long,
        value_name = "POLICY",
        value_enum,
        default_value_t,
        requires = "redis"
    )]
    pub redis_failure: FailurePolicy,

    /// Prefix of every key mailsink writes, so that several fleets can share one Redis.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "mailsink:",
        requires = "redis"
    )]
    pub redis_prefix: String,

    /// How long tokens of a --rate leased from Redis may be spent by this instance without
    /// asking Redis again; unspent ones are then dropped. 0 asks Redis at every check.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds,
          requires = "redis")]
    pub redis_lease: Duration,

    /// The most tokens of one --rate key leased at once (a lease never takes more than a
    /// quarter of what the key has left). 1 asks Redis at every check.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), requires = "redis")]
    pub redis_lease_tokens: u32,

    /// CA certificates (PEM) that a rediss:// server's certificate is verified against,
    /// instead of the system's.
    #[arg(long, value_name = "FILE", requires = "redis")]
    pub redis_ca_file: Option<PathBuf>,
}

/// What a check that the store did not answer means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailurePolicy {
    /// The per-process limits decide.
    #[default]
    Open,
    /// Refused with a 4xx.
    Closed,
}

/// How long no connection is tried after one failed.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// The GCRA step, for each key of KEYS in turn: the key holds its theoretical arrival time
/// (TAT) in microseconds of Redis's clock; ARGV has four values per key: the emission
/// interval in microseconds, the burst, 1 to peek (decide without counting), and how many
/// tokens are wanted (a lease, see lease.rs; 1 for a plain check). With a ≥ 1 tokens
/// available it grants min(wanted, max(1, ⌊a/4⌋)), all consumed at once. Returns
/// {granted, remaining, retry_after_ms, reset_after_ms} per key, one flat array. Each key
/// expires when its allowance is whole again. All the keys of one check are decided in one
/// atomic step.
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA_SOURCE));
const GCRA_SOURCE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[4 * i - 3])
  local burst = tonumber(ARGV[4 * i - 2])
  local peek = ARGV[4 * i - 1] == '1'
  local want = tonumber(ARGV[4 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local available = math.floor((now + interval * burst - tat) / interval)
  if available < 1 then
    table.insert(out, 0)
    table.insert(out, 0)
    table.insert(out, math.ceil((tat + interval - interval * burst - now) / 1000))
    table.insert(out, math.ceil((tat - now) / 1000))
  else
    local granted = 1
    if want > 1 then granted = math.min(want, math.max(1, math.floor(available / 4))) end
    local new_tat = tat + interval * granted
    local reset_ms = math.ceil((new_tat - now) / 1000)
    if not peek then
      redis.call('SET', key, string.format('%.0f', new_tat), 'PX', reset_ms)
    end
    table.insert(out, granted)
    table.insert(out, available - granted)
    table.insert(out, 0)
    table.insert(out, reset_ms)
  end
end
return out
"#;

/// A Lua script run in Redis by its SHA1 (`EVALSHA`), loaded when Redis does not know it.
#[derive(Debug)]
pub struct Script {
    source: &'static str,
    hash: String,
}

impl Script {
    /// The script `source`.
    pub fn new(source: &'static str) -> Script {
        Script {
            source,
            hash: redis::Script::new(source).get_hash().to_string(),
        }
    }
}

/// One key to check against a rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateKey {
    /// The key, without the store's prefix.
    pub key: String,
    /// Its rate.
    pub rate: Rate,
    /// Decide whether one more would pass, without counting it.
    pub peek: bool,
}

/// The store's answer for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateAnswer {
    /// Within the rate (and counted, unless peeked).
    pub allowed: bool,
    /// Tokens consumed in the store: 0 when refused, 1 for a plain check, up to the number
    /// asked for a lease.
    pub granted: u64,
    /// How many more would pass now.
    pub remaining: u64,
    /// When refused: how long until one more would pass.
    pub retry_after: Duration,
    /// How long until the allowance is whole again.
    pub reset_after: Duration,
}

/// Why the store gave no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// The shared store; one per process.
pub struct Shared {
    client: Client,
    /// The URL without its password, for messages.
    name: String,
    prefix: String,
    timeout: Duration,
    failure: FailurePolicy,
    connection: Mutex<Connection>,
    down: AtomicBool,
    leases: Leases,
}

#[derive(Default)]
struct Connection {
    current: Option<MultiplexedConnection>,
    /// No connection is tried before this instant.
    not_before: Option<Instant>,
    connecting: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("redis", &self.name)
            .field("timeout", &self.timeout)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The store for `args`, `None` without `--redis`. The URL is checked here; the first
    /// connection is made by the first check, so mailsink starts while Redis is away.
    pub fn from_args(args: &RedisArgs) -> Result<Option<Shared>, String> {
        let Some(url) = &args.redis else {
            return Ok(None);
        };
        // Checks are small requests that wait for their answers: Nagle's algorithm would hold
        // each one back behind the acknowledgement of the one before.
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("--redis: {e}"))?;
        let info = info.set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = match &args.redis_ca_file {
            None => Client::open(info),
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("--redis-ca-file {}: {e}", path.display()))?;
                let certificates = TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Client::build_with_tls(info, certificates)
            }
        };
        Ok(Some(Shared {
            client: client.map_err(|e| format!("--redis: {e}"))?,
            name: redacted(url),
            prefix: args.redis_prefix.clone(),
            timeout: args.redis_timeout,
            failure: args.redis_failure,
            connection: Mutex::default(),
            down: AtomicBool::new(false),
            leases: Leases::new(args.redis_lease, args.redis_lease_tokens),
        }))
    }

    /// What a failed check means.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure
    }

    /// The store's key for `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Checks `keys`, each against its rate, in one atomic step and one round trip: one
    /// answer per key, in order, or why there is none (within `--redis-timeout`).
    pub async fn check(&self, keys: &[RateKey]) -> Result<Vec<RateAnswer>, Unavailable> {
        let asked: Vec<(&RateKey, u32)> = keys.iter().map(|key| (key, 1)).collect();
        self.gcra(&asked).await
    }

    /// Checks `keys` as [`check`](Shared::check) does, answering only whether each passed,
    /// and spending tokens leased from the store (`--redis-lease`, lease.rs): a key this
    /// instance holds tokens of costs no round trip; the others go to the store in one
    /// call, which leases them more. For rates that count consumption only: a peeked key
    /// is never leased.
    pub async fn check_leased(&self, keys: &[RateKey]) -> Result<Vec<bool>, Unavailable> {
        let now = Instant::now();
        let wants: Vec<Option<u32>> = keys
            .iter()
            .map(|key| match key.peek {
                true => Some(1),
                false => self.leases.spend(&key.key, now),
            })
            .collect();
        let asked: Vec<(&RateKey, u32)> = keys
            .iter()
            .zip(&wants)
            .filter_map(|(key, want)| Some((key, (*want)?)))
            .collect();
        let answers = self.gcra(&asked).await?;
        let now = Instant::now();
        let mut answers = answers.iter().zip(&asked);
        let mut allowed = Vec::with_capacity(keys.len());
        for want in &wants {
            if want.is_none() {
                allowed.push(true);
                continue;
            }
            let (answer, (key, want)) = answers.next().ok_or_else(|| bad_answer(None))?;
            if !key.peek {
                self.leases.granted(&key.key, *want, answer.granted, now);
            }
            allowed.push(answer.allowed);
        }
        Ok(allowed)
    }

    /// One call of the GCRA script for `asked`, each key with the tokens it wants.
    async fn gcra(&self, asked: &[(&RateKey, u32)]) -> Result<Vec<RateAnswer>, Unavailable> {
        if asked.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = asked.iter().map(|(key, _)| self.key(&key.key)).collect();
        let values = self
            .query(&[&GCRA], |pipe| {
                let call = evalsha(pipe, &GCRA, &names);
                for (key, want) in asked {
                    let interval = u64::try_from(key.rate.interval().as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1);
                    call.arg(interval)
                        .arg(key.rate.burst())
                        .arg(u8::from(key.peek))
                        .arg(*want);
                }
            })
            .await?;
        match values.first() {
            Some(Value::Array(items)) if items.len() == 4 * asked.len() => {
                items.chunks(4).map(answer).collect()
            }
            other => Err(bad_answer(other)),
        }
    }

    /// Runs the commands `build` puts in a pipeline, in one round trip, within
    /// `--redis-timeout`: their answers in order (an error answer is a `Value` too). When
    /// Redis has forgotten one of `scripts` (a restart, a flush), they are loaded and the
    /// commands sent again, in one more round trip.
    pub async fn query(
        &self,
        scripts: &[&Script],
        build: impl Fn(&mut Pipeline),
    ) -> Result<Vec<Value>, Unavailable> {
        let outcome = tokio::time::timeout(self.timeout, self.query_now(scripts, build)).await;
        let outcome = outcome
            .unwrap_or_else(|_| Err(Unavailable(format!("no answer within {:?}", self.timeout))));
        self.record(outcome.as_ref().err());
        outcome
    }

    async fn query_now(
        &self,
        scripts: &[&Script],
        build: impl Fn(&mut Pipeline),
    ) -> Result<Vec<Value>, Unavailable> {
        let mut connection = self.connection().await?;
        let mut pipe = redis::pipe();
        build(&mut pipe);
        let values = pipe.query_async::<Vec<Value>>(&mut connection).await;
        let values = match values {
            Ok(values) if !values.iter().any(is_no_script) => Ok(values),
            Err(err) if err.kind() != ServerErrorKind::NoScript.into() => Err(err),
            _ => {
                let mut pipe = redis::pipe();
                for script in scripts {
                    pipe.cmd("SCRIPT").arg("LOAD").arg(script.source);
                }
                build(&mut pipe);
                pipe.query_async::<Vec<Value>>(&mut connection)
                    .await
                    .map(|mut values| values.split_off(scripts.len()))
            }
        };
        values.map_err(|err| self.broken(err))
    }

    /// The connection, made when there is none and the pause after a failure is over.
    async fn connection(&self) -> Result<MultiplexedConnection, Unavailable> {
        {
            let mut state = self.state();
            if let Some(current) = &state.current {
                return Ok(current.clone());
            }
            if state.connecting || state.not_before.is_some_and(|t| Instant::now() < t) {
                return Err(Unavailable("not connected".into()));
            }
            state.connecting = true;
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let made = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await;
        let mut state = self.state();
        state.connecting = false;
        match made {
            Ok(connection) => {
                state.current = Some(connection.clone());
                Ok(connection)
            }
            Err(err) => {
                state.not_before = Some(Instant::now() + RECONNECT_PAUSE);
                Err(Unavailable(err.to_string()))
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A failed query: the connection is dropped unless Redis itself answered an error.
    fn broken(&self, err: redis::RedisError) -> Unavailable {
        if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
            let mut state = self.state();
            state.current = None;
            state.not_before = Some(Instant::now() + RECONNECT_PAUSE);
        }
        Unavailable(err.to_string())
    }

    /// Logs an outage's start and end once each, and counts every failed check.
    fn record(&self, failure: Option<&Unavailable>) {
        match failure {
            Some(Unavailable(why)) => {
                ::metrics::counter!("mailsink_redis_failures_total").increment(1);
                if !self.down.swap(true, Ordering::Relaxed) {
                    let policy = match self.failure {
                        FailurePolicy::Open => "per-process limits apply",
                        FailurePolicy::Closed => "checks answer 451 4.3.0",
                    };
                    eprintln!(
                        "mailsink: Redis at {} is unavailable ({why}); {policy} until it is back",
                        self.name
                    );
                    ::metrics::counter!("mailsink_redis_outages_total").increment(1);
                }
            }
            None => {
                if self.down.swap(false, Ordering::Relaxed) {
                    eprintln!("mailsink: Redis at {} is back", self.name);
                }
            }
        }
    }

    /// Test access: drops the connection as if it had broken.
    #[cfg(test)]
    fn forget_connection(&self) {
        let mut state = self.state();
        state.current = None;
        state.not_before = None;
    }
}

/// `EVALSHA script KEYS...` added to `pipe`, for the caller to add the arguments.
pub fn evalsha<'a>(pipe: &'a mut Pipeline, script: &Script, keys: &[String]) -> &'a mut Pipeline {
    pipe.cmd("EVALSHA")
        .arg(&script.hash)
        .arg(keys.len())
        .arg(keys)
}

fn is_no_script(value: &Value) -> bool {
    matches!(value, Value::ServerError(err) if err.code() == "NOSCRIPT")
}

fn bad_answer(value: Option<&Value>) -> Unavailable {
    Unavailable(format!("unexpected answer from the rate script: {value:?}"))
}

/// One key's `{granted, remaining, retry_after_ms, reset_after_ms}` from the script.
fn answer(items: &[Value]) -> Result<RateAnswer, Unavailable> {
    let number = |item: &Value| match item {
        Value::Int(n) => Ok(*n),
        other => Err(bad_answer(Some(other))),
    };
    let [granted, remaining, retry_ms, reset_ms] = items else {
        return Err(bad_answer(items.first()));
    };
    let ms = |n: i64| Duration::from_millis(u64::try_from(n).unwrap_or(0));
    let granted = u64::try_from(number(granted)?).unwrap_or(0);
    Ok(RateAnswer {
        allowed: granted > 0,
        granted,
        remaining: u64::try_from(number(remaining)?).unwrap_or(0),
        retry_after: ms(number(retry_ms)?),
        reset_after: ms(number(reset_ms)?),
    })
}

/// `url` without the password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A redis-server of the test's own on loopback, without persistence; killed on drop.
    pub use smtp_session_testkit::daemons::Redis as TestRedis;

    pub fn shared(url: &str, failure: FailurePolicy) -> Shared {
        let args = RedisArgs {
            redis: Some(url.into()),
            redis_timeout: Duration::from_millis(250),
            redis_failure: failure,
            redis_prefix: "test:".into(),
            redis_lease: Duration::from_secs(1),
            redis_lease_tokens: 64,
            redis_ca_file: None,
        };
        Shared::from_args(&args).unwrap().unwrap()
    }

    fn key(name: &str, rate: &str) -> RateKey {
        RateKey {
            key: name.into(),
            rate: rate.parse().unwrap(),
            peek: false,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_rate_counts_across_two_stores_sharing_one_redis() {
        let redis = TestRedis::start();
        runtime().block_on(async {
            let (a, b) = (
                shared(&redis.url(), FailurePolicy::Open),
                shared(&redis.url(), FailurePolicy::Open),
            );
            let k = [key("conn:192.0.2.1", "3/hour")];
            let mut allowed = Vec::new();
            for store in [&a, &b, &a, &b] {
                allowed.push(store.check(&k).await.unwrap()[0].allowed);
            }
            assert_eq!(allowed, [true, true, true, false]);
            let refused = b.check(&k).await.unwrap()[0];
            assert!(refused.retry_after > Duration::from_secs(1100));
            // Another key has its own allowance.
            assert!(a.check(&[key("conn:192.0.2.2", "3/hour")]).await.unwrap()[0].allowed);
        });
    }

    #[test]
    fn several_keys_are_answered_in_order_and_a_peek_counts_nothing() {
        let redis = TestRedis::start();
        runtime().block_on(async {
            let store = shared(&redis.url(), FailurePolicy::Open);
            let mut peek = key("auth:192.0.2.9", "1/hour");
            peek.peek = true;
            let keys = [key("a", "2/min"), key("b", "1/min"), peek.clone()];
            let first = store.check(&keys).await.unwrap();
            assert_eq!(
                first
                    .iter()
                    .map(|a| (a.allowed, a.remaining))
                    .collect::<Vec<_>>(),
                [(true, 1), (true, 0), (true, 0)]
            );
            let second = store.check(&keys).await.unwrap();
            assert_eq!(
                second.iter().map(|a| a.allowed).collect::<Vec<_>>(),
                [true, false, true]
            );
            // Counted once for real, the peeked key is then over.
            store
                .check(&[key("auth:192.0.2.9", "1/hour")])
                .await
                .unwrap();
            assert!(!store.check(&[peek]).await.unwrap()[0].allowed);
        });
    }

    #[test]
    fn a_flushed_redis_gets_the_script_again() {
        let redis = TestRedis::start();
        runtime().block_on(async {
            let store = shared(&redis.url(), FailurePolicy::Open);
            assert!(store.check(&[key("x", "5/min")]).await.unwrap()[0].allowed);
            let client = Client::open(redis.url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut conn)
                .await
                .unwrap();
            let again = store.check(&[key("x", "5/min")]).await.unwrap()[0];
            assert_eq!((again.allowed, again.remaining), (true, 3));
        });
    }

    #[test]
    fn redis_away_fails_within_the_timeout_and_is_used_again_when_back() {
        let mut redis = TestRedis::start();
        runtime().block_on(async {
            let store = shared(&redis.url(), FailurePolicy::Open);
            let k = [key("y", "100/min")];
            assert!(store.check(&k).await.is_ok());
            redis.stop();
            for _ in 0..3 {
                let started = Instant::now();
                assert!(store.check(&k).await.is_err());
                assert!(started.elapsed() < Duration::from_millis(400));
            }
            assert!(store.down.load(Ordering::Relaxed));
            redis.restart();
            tokio::time::sleep(RECONNECT_PAUSE).await;
            let mut answered = false;
            for _ in 0..20 {
                if store.check(&k).await.is_ok() {
                    answered = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(answered && !store.down.load(Ordering::Relaxed));
            store.forget_connection();
            assert!(store.check(&k).await.is_ok());
        });
    }

    #[test]
    fn a_silent_server_is_given_up_on_at_the_timeout() {
        // Accepts connections and never answers: Redis stopped (SIGSTOP) or overloaded.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}/", silent.local_addr().unwrap());
        runtime().block_on(async {
            let store = shared(&url, FailurePolicy::Closed);
            let started = Instant::now();
            let err = store.check(&[key("z", "1/s")]).await.unwrap_err();
            assert!(started.elapsed() < Duration::from_millis(500), "{err:?}");
        });
        drop(silent);
    }

    #[test]
    fn the_password_is_not_in_messages() {
        assert_eq!(
            redacted("redis://user:secret@127.0.0.1:6379/0"),
            "redis://user:***@127.0.0.1:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1/"), "redis://127.0.0.1/");
    }
}
