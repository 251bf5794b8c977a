//! Two mailsink instances sharing one real redis-server (`--redis`): a client over its rate
//! on one is refused on the other; Redis killed mid-test leaves both serving under
//! `--redis-failure`, each outage logged once, and Redis is used again once it is back.

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
