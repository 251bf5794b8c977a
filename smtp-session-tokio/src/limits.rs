//! The runtime's limits and timeouts, and the connection counts they apply to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::client::{Client, ClientKey, ClientRules};

/// What the server bounds besides the session's own [`Config`](smtp_session::Config)
/// limits: time for writes, hooks and handshakes, the close, the shutdown, and the number
/// of connections.
///
/// | field | default | what happens at the limit |
/// |---|---|---|
/// | `max_connections` | 1000 | the next client reads `421 4.7.0 <hostname> Error: too many connections` and is closed |
/// | `max_connections_per_ip` | 50 (Postfix's `smtpd_client_connection_count_limit`) | the same, `... too many connections from <client>` |
/// | `clients` | IPv6 counted by its /64, loopback exempt | who counts as one client for the per-client limits, and who is exempt (see [`ClientRules`]) |
/// | `write_timeout` | 5 minutes | a client that stops reading is dropped; the disconnect context says `the client stopped reading` |
/// | `hook_timeout` | 60 seconds | the hook counts as failed ([`Decision::HookFailed`](smtp_session::Decision::HookFailed)) |
/// | `handshake_timeout` | 30 seconds | the TLS handshake fails |
/// | `drain_time`, `drain_bytes` | 2 seconds, 256 KiB | after the last reply and the half-close, unread input is read and dropped this long at most, so the kernel does not answer it with a reset that destroys the last reply |
/// | `shutdown_grace` | 30 seconds | sessions still open after a shutdown request are closed |
/// | `accept_backoff` | 1 second | the longest pause after an accept error (EMFILE...), starting at 5 ms and doubling; a connection that ends cuts it short |
/// | `error_delay` | past 10 errors, 1 s more for each, at most 10 s (Postfix's `smtpd_soft_error_limit` and `smtpd_error_sleep_time`) | each error reply waits before it is sent; see [`ErrorDelay`] |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once by the server's listeners; 0 means no limit.
    pub max_connections: usize,
    /// Connections from one client at once; 0 means no limit. A client is an address, or
    /// an IPv6 network, by [`clients`](Limits::clients), which also exempts trusted
    /// networks. With [`Config::proxy_protocol`](smtp_session::Config::proxy_protocol) the
    /// address is the one in the PROXY header, checked before the greeting.
    pub max_connections_per_ip: usize,
    /// Who counts as one client for every per-client limit (the one above, the error
    /// delay, and an application's own, through
    /// [`Connection::client`](crate::Connection::client)), and which networks are exempt.
    pub clients: ClientRules,
    /// The longest one write of replies may wait for the client to read.
    pub write_timeout: Duration,
    /// The longest a hook method may take.
    pub hook_timeout: Duration,
    /// The longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// After the close, how long unread input is drained at most.
    pub drain_time: Duration,
    /// After the close, how many bytes are drained at most.
    pub drain_bytes: usize,
    /// After a shutdown request, how long sessions may take to reach their next command
    /// boundary (where they get `421 4.3.2`) and close.
    pub shutdown_grace: Duration,
    /// The longest pause of an accept loop after an accept error.
    pub accept_backoff: Duration,
    /// How error replies are slowed down once a connection has drawn many of them.
    pub error_delay: ErrorDelay,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1000,
            max_connections_per_ip: 50,
            clients: ClientRules::default(),
            write_timeout: Duration::from_secs(300),
            hook_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(30),
            drain_time: Duration::from_secs(2),
            drain_bytes: 256 * 1024,
            shutdown_grace: Duration::from_secs(30),
            accept_backoff: Duration::from_secs(1),
            error_delay: ErrorDelay::default(),
        }
    }
}

/// A growing delay before the error replies of a client that keeps making errors: Postfix's
/// `smtpd_soft_error_limit` and `smtpd_error_sleep_time`, growing as Postfix's did before 2.1.
///
/// The errors are those the session counts toward its hard error limit
/// ([`Session::error_count`](smtp_session::Session::error_count)): 4xx and 5xx replies to
/// the client's commands, except `421` (the connection closes anyway), replies made with
/// [`Reply::server_fault`](smtp_session::Reply::server_fault) (a full disk, a failed
/// store: the client did nothing wrong) and recipients pipelined past the limit. Once a connection has drawn more than
/// `soft_limit` errors, the write carrying its n-th error reply is held back
/// `step × (n − soft_limit)`, at most `max` per reply, before it is sent. Clients in
/// [`ClientRules::limit_exceptions`] are never delayed. The connection's
/// task waits on a timer meanwhile: no thread is blocked, and nothing is read from that
/// client. Replies other than errors are never delayed. The session's
/// [`hard_error_limit`](smtp_session::Config::hard_error_limit) still closes the
/// connection; with both defaults, a client that does nothing but errors spends 55 seconds
/// on its last ten replies before it is disconnected.
///
/// ```
/// use std::time::Duration;
/// use smtp_session_tokio::ErrorDelay;
/// let delay = ErrorDelay::default();
/// assert_eq!(delay.delay(10), Duration::ZERO);
/// assert_eq!(delay.delay(11), Duration::from_secs(1));
/// assert_eq!(delay.delay(13), Duration::from_secs(3));
/// assert_eq!(delay.delay(40), Duration::from_secs(10));
/// assert_eq!(ErrorDelay::NONE.delay(1000), Duration::ZERO);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorDelay {
    /// Errors a connection may draw with no delay (Postfix's default is 10).
    pub soft_limit: u32,
    /// The delay of the first error past the soft limit; each further error waits this much
    /// longer than the one before (Postfix's `smtpd_error_sleep_time`, default 1 second).
    pub step: Duration,
    /// The longest delay of one error reply.
    pub max: Duration,
}

impl ErrorDelay {
    /// No delay ever.
    pub const NONE: ErrorDelay = ErrorDelay {
        soft_limit: u32::MAX,
        step: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// How long the reply carrying a connection's `errors`-th error waits.
    pub fn delay(&self, errors: u32) -> Duration {
        match errors.checked_sub(self.soft_limit) {
            Some(past @ 1..) => self.step.saturating_mul(past).min(self.max),
            _ => Duration::ZERO,
        }
    }
}

impl Default for ErrorDelay {
    fn default() -> Self {
        ErrorDelay {
            soft_limit: 10,
            step: Duration::from_secs(1),
            max: Duration::from_secs(10),
        }
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OverLimit {
    Total,
    PerIp(ClientKey),
}

impl OverLimit {
    /// Postfix's wording, with the enhanced code of SPEC 15.
    pub(crate) fn reply(self, hostname: &str) -> String {
        match self {
            OverLimit::Total => {
                format!("421 4.7.0 {hostname} Error: too many connections\r\n")
            }
            OverLimit::PerIp(client) => {
                format!("421 4.7.0 {hostname} Error: too many connections from {client}\r\n")
            }
        }
    }
}

/// The connections of one server, counted in total and per client address.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    state: Mutex<CountState>,
    /// Woken whenever a connection ends: an accept loop paused by an accept error (out of
    /// file descriptors) tries again at once.
    pub(crate) freed: Notify,
}

#[derive(Debug, Default)]
struct CountState {
    total: usize,
    per_ip: HashMap<ClientKey, usize>,
}

impl CountState {
    /// One more connection from `key`, unless it has `limit` already (0: no limit).
    fn count(&mut self, key: ClientKey, limit: usize) -> Result<(), OverLimit> {
        let n = self.per_ip.entry(key).or_insert(0);
        if limit != 0 && *n >= limit {
            return Err(OverLimit::PerIp(key));
        }
        *n += 1;
        Ok(())
    }
}

/// The key a client is counted under per client: none when exempt.
fn counted(client: Option<Client>) -> Option<ClientKey> {
    client.filter(|c| !c.exempt).map(|c| c.key)
}

impl Counts {
    /// Admits a connection from `client` under `limits`; one without a client (a UNIX
    /// socket, a PROXY header still to come) or an exempt one is counted in the total only.
    pub(crate) fn admit(
        self: &Arc<Self>,
        client: Option<Client>,
        limits: &Limits,
    ) -> Result<Slot, OverLimit> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if limits.max_connections != 0 && state.total >= limits.max_connections {
            return Err(OverLimit::Total);
        }
        let key = counted(client);
        if let Some(key) = key {
            state.count(key, limits.max_connections_per_ip)?;
        }
        state.total += 1;
        Ok(Slot {
            counts: self.clone(),
            key,
            total: true,
        })
    }

    /// Counts `client` for a connection already counted in the total (the address of a
    /// PROXY header, known only after it arrived).
    pub(crate) fn admit_client(
        self: &Arc<Self>,
        client: Client,
        limit: usize,
    ) -> Result<Slot, OverLimit> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = counted(Some(client));
        if let Some(key) = key {
            state.count(key, limit)?;
        }
        Ok(Slot {
            counts: self.clone(),
            key,
            total: false,
        })
    }

    #[cfg(test)]
    fn total(&self) -> usize {
        self.state.lock().unwrap().total
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Slot {
    counts: Arc<Counts>,
    key: Option<ClientKey>,
    total: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut state = self.counts.state.lock().unwrap_or_else(|e| e.into_inner());
            if self.total {
                state.total -= 1;
            }
            if let Some(key) = self.key {
                if let Some(n) = state.per_ip.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        state.per_ip.remove(&key);
                    }
                }
            }
        }
        self.counts.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_in_total_and_per_address_and_free_on_drop() {
        let counts = Arc::new(Counts::default());
        let limits = Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        };
        let a = limits.clients.client("192.0.2.1".parse().unwrap());
        let b = limits.clients.client("192.0.2.2".parse().unwrap());
        let a1 = counts.admit(Some(a), &limits).unwrap();
        let a2 = counts.admit(Some(a), &limits).unwrap();
        assert_eq!(
            counts.admit(Some(a), &limits).unwrap_err(),
            OverLimit::PerIp(a.key)
        );
        let b1 = counts.admit(Some(b), &limits).unwrap();
        assert_eq!(
            counts.admit(Some(b), &limits).unwrap_err(),
            OverLimit::Total
        );
        drop(a1);
        assert_eq!(counts.total(), 2);
        let a3 = counts.admit(Some(a), &limits).unwrap();
        drop((a2, a3, b1));
        assert_eq!(counts.total(), 0);
        assert!(counts.state.lock().unwrap().per_ip.is_empty());
    }

    #[test]
    fn an_ipv6_network_is_one_client_and_an_exempt_one_is_not_counted() {
        let counts = Arc::new(Counts::default());
        let limits = Limits {
            max_connections_per_ip: 1,
            ..Limits::default()
        };
        let client = |ip: &str| Some(limits.clients.client(ip.parse().unwrap()));
        let _a = counts.admit(client("2001:db8:1:2::a"), &limits).unwrap();
        assert_eq!(
            counts
                .admit(client("2001:db8:1:2:ffff::b"), &limits)
                .unwrap_err()
                .reply("mx.example"),
            "421 4.7.0 mx.example Error: too many connections from 2001:db8:1:2::/64\r\n"
        );
        let _b = counts.admit(client("2001:db8:1:3::a"), &limits).unwrap();
        let _v4 = counts.admit(client("192.0.2.1"), &limits).unwrap();
        assert!(counts.admit(client("::ffff:192.0.2.1"), &limits).is_err());
        let local: Vec<_> = (0..10)
            .map(|_| counts.admit(client("127.0.0.1"), &limits).unwrap())
            .collect();
        assert_eq!(counts.total(), 13);
        drop(local);
        assert_eq!(counts.state.lock().unwrap().per_ip.len(), 3);
    }

    #[test]
    fn zero_means_no_limit() {
        let counts = Arc::new(Counts::default());
        let limits = Limits {
            max_connections: 0,
            max_connections_per_ip: 0,
            ..Limits::default()
        };
        let slots: Vec<_> = (0..5000)
            .map(|_| {
                counts
                    .admit(
                        Some(limits.clients.client("192.0.2.1".parse().unwrap())),
                        &limits,
                    )
                    .unwrap()
            })
            .collect();
        assert_eq!(counts.total(), 5000);
        drop(slots);
        assert_eq!(counts.total(), 0);
    }

    #[test]
    fn the_error_delay_grows_by_one_step_per_error_up_to_its_maximum() {
        let delay = ErrorDelay {
            soft_limit: 2,
            step: Duration::from_millis(100),
            max: Duration::from_millis(250),
        };
        let delays: Vec<_> = (0..=6).map(|n| delay.delay(n).as_millis()).collect();
        assert_eq!(delays, [0, 0, 0, 100, 200, 250, 250]);
        let huge = ErrorDelay {
            soft_limit: 0,
            step: Duration::MAX,
            max: Duration::from_secs(5),
        };
        assert_eq!(huge.delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn the_refusal_is_a_421_with_4_7_0() {
        assert_eq!(
            OverLimit::PerIp(ClientRules::default().key("192.0.2.1".parse().unwrap()))
                .reply("mx.example"),
            "421 4.7.0 mx.example Error: too many connections from 192.0.2.1\r\n"
        );
        assert_eq!(
            OverLimit::Total.reply("mx.example"),
            "421 4.7.0 mx.example Error: too many connections\r\n"
        );
    }
}
