//! `--metrics ADDR`: Prometheus metrics, served at `http://ADDR/metrics` by
//! metrics-exporter-prometheus's own HTTP listener on mailsink's runtime.
//!
//! Every metric is recorded with the `metrics` crate's macros; without `--metrics` no
//! recorder is installed and they cost next to nothing. What the server sees (connections,
//! refusals at the connection limits, replies) comes from smtp-session-tokio's
//! [`Observer`]; the rest from the handler, the limits, the policy, the relay and the
//! resolver.
//!
//! | metric | type | labels | counts |
//! |---|---|---|---|
//! | `mailsink_connections_open` | gauge | `listener` | connections being served |
//! | `mailsink_connections_total` | counter | `listener` (`smtp`, `smtps`, `lmtp`) | connections admitted |
//! | `mailsink_refusals_total` | counter | `limit`: see [`RefusedBy`] | what a limit refused: a connection, a MAIL, an AUTH |
//! | `mailsink_replies_total` | counter | `class` (`2xx`, `3xx`, `4xx`, `5xx`) | replies the sessions sent, the greeting included (the 421 of a connection refused at accept time is counted as a refusal, not a reply) |
//! | `mailsink_messages_accepted_total` | counter | | messages accepted: stored, relayed or discarded, and answered 250 (under LMTP, for at least one recipient) |
//! | `mailsink_message_bytes_accepted_total` | counter | | their sizes as received, before the trace fields |
//! | `mailsink_maildir_syncs_total` | counter | | syncs of the Maildir's `new/`: each makes durable every message renamed into it before it began (group commit), so fewer than the messages stored when they arrive together |
//! | `mailsink_policy_duration_seconds` | histogram | `event` (`smtp_server_rcpt_to`...) | a Lua policy event's handlers, queueing for the script's thread included |
//! | `mailsink_relay_duration_seconds` | histogram | `outcome` (`delivered`, `not_delivered`) | a message's delivery to `--relay`, connection included |
//! | `mailsink_dns_ptr_lookups_total` | counter | `outcome` (`confirmed`, `failed`, `timeout`) | clients' forward-confirmed reverse DNS lookups |
//! | `mailsink_authentication_results_total` | counter | `method` (`spf`, `dkim`, `dmarc`...), `result` (`pass`, `fail`...) | message authentication results, see [`authentication_result`] |
//! | `mailsink_rate_refusals_total` | counter | `rate` (`connections`, `messages`...) | what `--rate` refused (rates.rs) |
//! | `mailsink_redis_failures_total` | counter | | checks `--redis` did not answer in time (shared.rs) |
//! | `mailsink_redis_outages_total` | counter | | times Redis became unavailable |
//! | `mailsink_dnsbl_lookups_total` | counter | `list`, `result` (`listed`, `not_listed`, `timeout`) | `--dnsbl` answers (dnsbl.rs) |
//! | `mailsink_dnsbl_refusals_total` | counter | | clients refused for their DNS list score |
//! | `mailsink_greylisted_total` | counter | | greylisting's `450 4.2.0` answers (greylist.rs) |
//! | `mailsink_filter_verdicts_total` | counter | `filter` (`milter`, `policy_service`), `verdict` (`continue`, `reject`, `tempfail`, `discard`, `quarantine`, `failed`; a policy action in lower case: `ok`, `dunno`, `defer_if_permit`, `hold`, `warn`...) | what the filters said, one per filter consulted, counted by the handler from the stage's record (refused stages included) |

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use smtp_session_tokio::{ConnectionInfo, Observer, Refusal};

/// Latency buckets, in seconds: a local Lua handler takes well under a millisecond, a relay
/// or a script that looks things up over the network tens of milliseconds to seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Starts serving `/metrics` on `addr`, on the current runtime, and installs the recorder
/// every macro here reports to. Fails when `addr` cannot be bound.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .and_then(PrometheusBuilder::install)
        .map_err(|e| format!("--metrics {addr}: {e}"))?;
    zero_known_series();
    Ok(())
}

/// Series that would otherwise appear only at their first event start at zero, so that
/// rates and alerts work from the first scrape.
fn zero_known_series() {
    for limit in RefusedBy::ALL {
        counter!("mailsink_refusals_total", "limit" => limit.name()).absolute(0);
    }
    for class in REPLY_CLASSES {
        counter!("mailsink_replies_total", "class" => class).absolute(0);
    }
    counter!("mailsink_messages_accepted_total").absolute(0);
    counter!("mailsink_message_bytes_accepted_total").absolute(0);
    counter!("mailsink_maildir_syncs_total").absolute(0);
    for outcome in ["confirmed", "failed", "timeout"] {
        counter!("mailsink_dns_ptr_lookups_total", "outcome" => outcome).absolute(0);
    }
}

/// The server's events, for [`Server::observer`](smtp_session_tokio::Server::observer).
/// The reply counters, counted several times per message, are looked up once.
#[derive(Debug)]
pub struct ServerMetrics {
    /// 2xx, 3xx, 4xx, 5xx.
    replies: [Counter; 4],
}

impl ServerMetrics {
    /// Made after [`install`], so that its counters are the recorder's.
    pub fn new() -> Self {
        ServerMetrics {
            replies: REPLY_CLASSES
                .map(|class| counter!("mailsink_replies_total", "class" => class)),
        }
    }
}

const REPLY_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

fn listener(info: &ConnectionInfo) -> String {
    info.server_id.clone().unwrap_or_default()
}

impl Observer for ServerMetrics {
    fn connection_opened(&self, info: &ConnectionInfo) {
        let listener = listener(info);
        counter!("mailsink_connections_total", "listener" => listener.clone()).increment(1);
        gauge!("mailsink_connections_open", "listener" => listener).increment(1);
    }

    fn connection_closed(&self, info: &ConnectionInfo) {
        gauge!("mailsink_connections_open", "listener" => listener(info)).decrement(1);
    }

    fn connection_refused(&self, refusal: Refusal) {
        refused(match refusal {
            Refusal::MaxConnectionsPerIp => RefusedBy::MaxConnectionsPerIp,
            // And any limit a later version adds.
            _ => RefusedBy::MaxConnections,
        });
    }

    fn reply(&self, code: u16) {
        // The engine validates every reply it sends: 200..=599.
        if let Some(counter) = usize::from(code / 100)
            .checked_sub(2)
            .and_then(|class| self.replies.get(class))
        {
            counter.increment(1);
        }
    }
}

/// The limits whose refusals are counted, by the `limit` label they go under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedBy {
    /// `--max-connections`: a connection answered `421 4.7.0` on arrival.
    MaxConnections,
    /// `--max-connections-per-ip`: the same, for its address's share.
    MaxConnectionsPerIp,
    /// `--max-messages-per-connection`: a MAIL answered `421 4.7.0`, the connection closed.
    MaxMessagesPerConnection,
    /// `--auth-failure-limit`: an AUTH answered `454 4.7.0`.
    AuthFailureLimit,
}

impl RefusedBy {
    const ALL: [RefusedBy; 4] = [
        RefusedBy::MaxConnections,
        RefusedBy::MaxConnectionsPerIp,
        RefusedBy::MaxMessagesPerConnection,
        RefusedBy::AuthFailureLimit,
    ];

    /// The label: the flag's name with underscores.
    pub fn name(self) -> &'static str {
        match self {
            RefusedBy::MaxConnections => "max_connections",
            RefusedBy::MaxConnectionsPerIp => "max_connections_per_ip",
            RefusedBy::MaxMessagesPerConnection => "max_messages_per_connection",
            RefusedBy::AuthFailureLimit => "auth_failure_limit",
        }
    }
}

/// A limit refused a connection, a MAIL or an AUTH.
pub fn refused(limit: RefusedBy) {
    counter!("mailsink_refusals_total", "limit" => limit.name()).increment(1);
}

/// A message was accepted (stored, relayed or discarded, and answered 250).
pub fn message_accepted(size: u64) {
    counter!("mailsink_messages_accepted_total").increment(1);
    counter!("mailsink_message_bytes_accepted_total").increment(size);
}

/// The Maildir's `new/` was synced (see [`crate::group_commit`]).
pub fn maildir_synced() {
    counter!("mailsink_maildir_syncs_total").increment(1);
}

/// A Lua policy event's handlers ran for `took`.
pub fn policy_duration(event: &'static str, took: Duration) {
    histogram!("mailsink_policy_duration_seconds", "event" => event).record(took);
}

/// A delivery to the relay's downstream took `took`; `delivered` when it took the message
/// for at least one recipient.
pub fn relay_duration(delivered: bool, took: Duration) {
    let outcome = if delivered {
        "delivered"
    } else {
        "not_delivered"
    };
    histogram!("mailsink_relay_duration_seconds", "outcome" => outcome).record(took);
}

/// A client's reverse DNS lookup ended this way (`confirmed`, `failed`, `timeout`).
pub fn ptr_lookup(outcome: &'static str) {
    counter!("mailsink_dns_ptr_lookups_total", "outcome" => outcome).increment(1);
}

/// A message authentication check gave `result`: `method` is `spf`, `dkim`, `dmarc`, `arc`
/// or `iprev`, `result` the RFC 8601 result keyword (`pass`, `fail`, `softfail`, `neutral`,
/// `none`, `temperror`, `permerror`, `policy`). One call per check and message; a message
/// with two DKIM signatures makes two `dkim` calls.
pub fn authentication_result(method: &'static str, result: &'static str) {
    counter!(
        "mailsink_authentication_results_total",
        "method" => method,
        "result" => result
    )
    .increment(1);
}

/// A filter answered: `filter` is `milter` or `policy_service`, `verdict` what it said
/// (`continue`, `accept`, `reject`, `tempfail`, `reply`, `discard`, `quarantine`, `hold`,
/// `prepend`, `failed`...). One call per filter consulted, by the handler (see
/// [`crate::facts::FilterVerdict`]).
pub fn filter_verdict(filter: &'static str, verdict: &'static str) {
    counter!("mailsink_filter_verdicts_total", "filter" => filter, "verdict" => verdict)
        .increment(1);
}
