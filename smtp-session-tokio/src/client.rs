//! Who "the client" is, for every limit counted per client (SPEC 17): one definition, so
//! that the connection limit, the error delay, an application's AUTH throttle and its rate
//! limits all count the same thing.
//!
//! - The address is the one the session knows: the PROXY header's or XCLIENT's when the
//!   server trusts them, else the socket's ([`Connection::client`](crate::Connection::client)).
//! - An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack socket reports for
//!   an IPv4 peer) is that IPv4 address.
//! - IPv6 clients are aggregated by a prefix, /64 by default: whoever holds one address of a
//!   /64 usually holds all of it (one subscriber's or one virtual machine's share), so
//!   counting each address would count nothing. Postfix 3.8 does the same with
//!   `smtpd_client_ipv6_prefix_length`.
//! - Trusted networks (loopback by default) are exempt from every per-client limit, as
//!   Postfix's `smtpd_client_event_limit_exceptions` exempts `$mynetworks`.

use std::fmt;
use std::net::IpAddr;

pub use ipnet::IpNet;

/// How a server tells its clients apart, and which ones no per-client limit applies to.
///
/// | field | default | |
/// |---|---|---|
/// | `ipv4_prefix` | 32 | IPv4 clients are counted by this prefix (32: each address on its own) |
/// | `ipv6_prefix` | 64 | IPv6 clients are counted by this prefix |
/// | `limit_exceptions` | `127.0.0.0/8`, `::1/128` | clients in these networks are exempt from every per-client limit |
///
/// ```
/// use smtp_session_tokio::ClientRules;
/// let rules = ClientRules::default();
/// let a = rules.client("2001:db8:1:2::a".parse().unwrap());
/// let b = rules.client("2001:db8:1:2:ffff::b".parse().unwrap());
/// assert_eq!(a.key, b.key);
/// assert_eq!(a.key.to_string(), "2001:db8:1:2::/64");
/// let mapped = rules.client("::ffff:192.0.2.1".parse().unwrap());
/// assert_eq!(mapped.key.to_string(), "192.0.2.1");
/// assert!(rules.client("127.0.0.1".parse().unwrap()).exempt);
/// assert!(!mapped.exempt);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRules {
    /// The prefix length IPv4 clients are counted by; over 32 counts as 32.
    pub ipv4_prefix: u8,
    /// The prefix length IPv6 clients are counted by; over 128 counts as 128.
    pub ipv6_prefix: u8,
    /// Networks whose clients no per-client limit applies to: the connection limit per
    /// client, the error delay, and an application's limits that ask [`Client::exempt`].
    /// The global connection limit still applies.
    pub limit_exceptions: Vec<IpNet>,
}

impl Default for ClientRules {
    fn default() -> Self {
        ClientRules {
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            limit_exceptions: vec![
                "127.0.0.0/8".parse().expect("a network"),
                "::1/128".parse().expect("a network"),
            ],
        }
    }
}

impl ClientRules {
    /// The client at `ip`: its key and whether it is exempt.
    pub fn client(&self, ip: IpAddr) -> Client {
        let ip = canonical(ip);
        Client {
            ip,
            key: self.key(ip),
            exempt: self.limit_exceptions.iter().any(|net| net.contains(&ip)),
        }
    }

    /// The key `ip` is counted under.
    pub fn key(&self, ip: IpAddr) -> ClientKey {
        let net = match canonical(ip) {
            IpAddr::V4(v4) => IpNet::V4(
                ipnet::Ipv4Net::new(v4, self.ipv4_prefix.min(32))
                    .expect("a prefix of at most 32")
                    .trunc(),
            ),
            IpAddr::V6(v6) => IpNet::V6(
                ipnet::Ipv6Net::new(v6, self.ipv6_prefix.min(128))
                    .expect("a prefix of at most 128")
                    .trunc(),
            ),
        };
        ClientKey(net)
    }
}

/// IPv4-mapped IPv6 as the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// One client, as [`ClientRules::client`] sees an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    /// The address, IPv4-mapped IPv6 written as IPv4.
    pub ip: IpAddr,
    /// What per-client limits count it under.
    pub key: ClientKey,
    /// In [`ClientRules::limit_exceptions`]: no per-client limit applies.
    pub exempt: bool,
}

/// What every per-client limit counts a client under: its network by the configured prefix
/// ([`ClientRules`]). Displayed as the address alone for a whole address (`192.0.2.1`),
/// else as the network (`2001:db8:1:2::/64`); stable, so it may name the client in a
/// shared store's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(IpNet);

impl ClientKey {
    /// The network the key stands for.
    pub fn network(&self) -> IpNet {
        self.0
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rules: &ClientRules, ip: &str) -> String {
        rules.key(ip.parse().unwrap()).to_string()
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_prefix_and_mapped_ipv4_as_ipv4() {
        let rules = ClientRules::default();
        assert_eq!(key(&rules, "2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key(&rules, "2001:db8:1:2:bbbb::2"), "2001:db8:1:2::/64");
        assert_eq!(key(&rules, "2001:db8:1:3::1"), "2001:db8:1:3::/64");
        assert_eq!(key(&rules, "::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key(&rules, "192.0.2.7"), "192.0.2.7");
        let wide = ClientRules {
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            ..ClientRules::default()
        };
        assert_eq!(key(&wide, "2001:db8:1:2::1"), "2001:db8:1::/48");
        assert_eq!(key(&wide, "192.0.2.7"), "192.0.2.0/24");
        let past = ClientRules {
            ipv4_prefix: 200,
            ipv6_prefix: 200,
            ..ClientRules::default()
        };
        assert_eq!(key(&past, "2001:db8::1"), "2001:db8::1");
        assert_eq!(key(&past, "192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn loopback_is_exempt_by_default_mapped_loopback_included() {
        let rules = ClientRules::default();
        for ip in ["127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"] {
            assert!(rules.client(ip.parse().unwrap()).exempt, "{ip}");
        }
        for ip in ["192.0.2.1", "2001:db8::1", "::2"] {
            assert!(!rules.client(ip.parse().unwrap()).exempt, "{ip}");
        }
        let none = ClientRules {
            limit_exceptions: vec![],
            ..ClientRules::default()
        };
        assert!(!none.client("127.0.0.1".parse().unwrap()).exempt);
    }
}
