//! Two mailsink instances sharing one real redis-server (`--redis`): a client over its rate
//! on one is refused on the other; Redis killed mid-test leaves both serving under
//! `--redis-failure`, each outage logged once, and Redis is used again once it is back.
//! With tokens leased from Redis (`--redis-lease`), a busy key costs a fraction of a script
//! per message and the fleet still never accepts more than the rate; over `rediss://` (TLS)
//! the same holds, the server verified against `--redis-ca-file`.

mod common;
#[path = "common/redis.rs"]
mod redis;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Client, Server, HOSTNAME, WAIT};
use redis::Redis;

/// mailsink with `--redis` and `args`; loopback counts as a client like any other.
fn instance(redis: &Redis, args: &[&str]) -> Server {
    let url = redis.url();
    let mut all = vec!["--redis", url.as_str(), "--limit-exceptions", "none"];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// The greeting, or the refusal in its place.
fn greeting(addr: SocketAddr) -> String {
    Client::connect(addr).reply()
}

/// One message from a client that says EHLO: the reply to MAIL if refused, else to the data.
fn message(addr: SocketAddr) -> String {
    let mut client = Client::hello(addr);
    let mail = client.cmd("MAIL FROM:<a@example.org>");
    if !mail.starts_with("250") {
        return mail;
    }
    let rcpt = client.cmd("RCPT TO:<b@example.net>");
    if !rcpt.starts_with("250") {
        return rcpt;
    }
    assert!(client.cmd("DATA").starts_with("354"));
    client.send("Subject: x\r\n\r\nhi\r\n.\r\n");
    client.reply()
}

const ACCEPTED: &str = "250 2.0.0 Message accepted\r\n";
const TOO_MUCH_MAIL: &str = "450 4.7.1 Error: too much mail from 127.0.0.1, try again later\r\n";

#[test]
fn a_client_over_its_connection_rate_on_one_instance_is_refused_on_the_other() {
    let redis = Redis::start();
    let rate = ["--rate", "connections=3/hour"];
    let (a, b) = (instance(&redis, &rate), instance(&redis, &rate));
    let welcome = format!("220 {HOSTNAME} ESMTP\r\n");
    assert_eq!(greeting(a.addr), welcome);
    assert_eq!(greeting(b.addr), welcome);
    assert_eq!(greeting(a.addr), welcome);
    let refused = "421 4.7.0 Error: too many connections from 127.0.0.1\r\n";
    assert_eq!(greeting(b.addr), refused);
    assert_eq!(greeting(a.addr), refused);
}

#[test]
fn message_and_recipient_rates_count_across_the_fleet() {
    let redis = Redis::start();
    let rates = [
        "--rate",
        "messages=3/hour",
        "--rate",
        "recipients=10/hour",
        "--rate",
        "domain-messages=100/hour",
    ];
    let (a, b) = (instance(&redis, &rates), instance(&redis, &rates));
    assert_eq!(message(a.addr), ACCEPTED);
    assert_eq!(message(b.addr), ACCEPTED);
    assert_eq!(message(b.addr), ACCEPTED);
    assert_eq!(message(a.addr), TOO_MUCH_MAIL);
    assert_eq!(message(b.addr), TOO_MUCH_MAIL);
    assert_eq!(a.stored().len() + b.stored().len(), 3);
}

/// Waits until `f` holds, at most [`WAIT`].
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < until, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count_containing(server: &Server, needle: &str) -> usize {
    server
        .stderr_lines()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn with_redis_killed_both_keep_serving_on_their_own_counts_and_use_it_again_when_back() {
    let mut redis = Redis::start();
    let rate = ["--rate", "messages=2/hour"];
    let (a, b) = (instance(&redis, &rate), instance(&redis, &rate));
    assert_eq!(message(a.addr), ACCEPTED);

    redis.stop();
    // Open by default: each instance's own count decides. A has counted one message.
    let started = Instant::now();
    assert_eq!(message(a.addr), ACCEPTED);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(message(a.addr), TOO_MUCH_MAIL);
    assert_eq!(message(b.addr), ACCEPTED);
    assert_eq!(message(b.addr), ACCEPTED);
    assert_eq!(message(b.addr), TOO_MUCH_MAIL);
    for server in [&a, &b] {
        server.wait_stderr_containing("is unavailable");
        assert_eq!(count_containing(server, "is unavailable"), 1, "logged once");
        assert!(server
            .stderr_lines()
            .iter()
            .any(|l| l.contains("per-process limits apply")));
    }

    // Back, and empty: the fleet counts from zero again, together.
    redis.restart();
    // Until A tries Redis again, its own count (spent) refuses, and Redis is not asked.
    eventually("A uses Redis again", || message(a.addr) == ACCEPTED);
    a.wait_stderr_containing("/ is back");
    assert_eq!(message(b.addr), ACCEPTED);
    assert_eq!(message(a.addr), TOO_MUCH_MAIL);
    assert_eq!(message(b.addr), TOO_MUCH_MAIL);
    assert_eq!(
        count_containing(&b, "/ is back"),
        1,
        "{:?}",
        b.stderr_lines()
    );
}

#[test]
fn with_redis_failure_closed_a_check_redis_does_not_answer_is_a_451() {
    let mut redis = Redis::start();
    let a = instance(
        &redis,
        &["--rate", "messages=100/hour", "--redis-failure", "closed"],
    );
    assert_eq!(message(a.addr), ACCEPTED);
    redis.stop();
    assert_eq!(
        message(a.addr),
        "451 4.3.0 Temporary lookup failure, try again later\r\n"
    );
    a.wait_stderr_containing("checks answer 451 4.3.0");
}

#[test]
fn a_redis_that_never_answers_holds_no_connection_up_past_the_timeout() {
    // Accepts connections and never answers, as a stopped or overloaded Redis.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", silent.local_addr().unwrap());
    let a = Server::start(&[
        "--limit-exceptions",
        "none",
        "--redis",
        &url,
        "--redis-timeout",
        "0.2",
        "--rate",
        "connections=100/hour",
        "--rate",
        "messages=100/hour",
    ]);
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(message(a.addr), ACCEPTED);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(count_containing(&a, "is unavailable"), 1);
    drop(silent);
}

/// Scripts Redis has run (`INFO commandstats`, `EVALSHA` calls).
fn scripts_run(redis: &Redis) -> u64 {
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connection)
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

#[test]
fn with_leases_two_instances_together_never_accept_more_than_the_rate() {
    let redis = Redis::start();
    // A burst of 40: a lease takes at most a quarter of what is left, so up to 10 tokens.
    let rate = ["--rate", "messages=40/hour"];
    let (a, b) = (instance(&redis, &rate), instance(&redis, &rate));
    let started = Instant::now();
    let mut replies = Vec::new();
    for _ in 0..50 {
        replies.push(message(a.addr));
        replies.push(message(b.addr));
    }
    let accepted = replies.iter().filter(|r| *r == ACCEPTED).count();
    let refused = replies.iter().filter(|r| *r == TOO_MUCH_MAIL).count();
    assert_eq!(accepted + refused, 100, "{replies:?}");
    // One more comes back every 90 seconds.
    let refilled = (started.elapsed().as_secs() / 90) as usize;
    assert!(accepted <= 40 + refilled, "{accepted} accepted");
    // Early refusals are bounded by what the other instance holds unspent (at most 9 of a
    // lease of 10); here each instance spends its lease before the other runs dry.
    assert!(accepted >= 40 - 9, "{accepted} accepted");
    assert_eq!(&replies[98..], [TOO_MUCH_MAIL, TOO_MUCH_MAIL]);
    assert_eq!(a.stored().len() + b.stored().len(), accepted);
    // Leases were used: each refusal asked Redis, the accepted messages far fewer times.
    let granting = scripts_run(&redis) - refused as u64;
    assert!(
        granting <= accepted as u64 / 2,
        "{granting} scripts granted {accepted}"
    );
}

#[test]
fn leases_cut_the_scripts_redis_runs_per_message() {
    let redis = Redis::start();
    let rates = [
        "--rate",
        "messages=100000/hour",
        "--rate",
        "domain-messages=100000/hour",
        "--rate",
        "recipients=100000/hour",
    ];
    let mut exact_args = rates.to_vec();
    exact_args.extend(["--redis-lease", "0"]);
    let exact = instance(&redis, &exact_args);
    let leased = instance(&redis, &rates);
    let scripts_for = |server: &Server| {
        // The first loads the script (a refused EVALSHA counts as a call too).
        assert_eq!(message(server.addr), ACCEPTED);
        let before = scripts_run(&redis);
        for _ in 0..100 {
            assert_eq!(message(server.addr), ACCEPTED);
        }
        scripts_run(&redis) - before
    };
    // Three keys per message: two at MAIL in one script, one at RCPT.
    assert_eq!(scripts_for(&exact), 200);
    // Leases of up to 64 tokens, doubled while used up within their second.
    let with_leases = scripts_for(&leased);
    assert!(with_leases <= 50, "{with_leases} scripts for 100 messages");
}

/// A CA, and a certificate for 127.0.0.1 it signed, as PEM files in `dir`.
fn certificates(dir: &std::path::Path) -> smtp_session_testkit::daemons::RedisTls {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mailsink test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    smtp_session_testkit::daemons::RedisTls {
        cert: write("redis.pem", cert.pem()),
        key: write("redis.key", key.serialize_pem()),
        ca: write("ca.pem", ca.pem()),
    }
}

#[test]
fn over_rediss_a_rate_counts_across_the_fleet_and_an_unknown_ca_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let tls = certificates(dir.path());
    let redis = Redis::start_tls(tls.clone());
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));
    let ca = tls.ca.to_str().unwrap();
    let args = ["--redis-ca-file", ca, "--rate", "messages=2/hour"];
    let (a, b) = (instance(&redis, &args), instance(&redis, &args));
    assert_eq!(message(a.addr), ACCEPTED);
    assert_eq!(message(b.addr), ACCEPTED);
    assert_eq!(message(a.addr), TOO_MUCH_MAIL);
    assert_eq!(message(b.addr), TOO_MUCH_MAIL);
    assert_eq!(count_containing(&a, "is unavailable"), 0);
    // Verified against the system's CAs instead, the test CA's certificate is refused.
    let untrusting = instance(
        &redis,
        &["--rate", "messages=2/hour", "--redis-failure", "closed"],
    );
    assert_eq!(
        message(untrusting.addr),
        "451 4.3.0 Temporary lookup failure, try again later\r\n"
    );
    untrusting.wait_stderr_containing("is unavailable");
}
