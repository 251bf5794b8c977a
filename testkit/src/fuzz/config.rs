//! The configuration the session targets run under, and what an input can turn in it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use smtp_session::{
    BodyDelivery, Config, ConnectionInfo, Extensions, HookFailurePolicy, Hooks, LeadingWhitespace,
    MinDataRate, StartTlsInjection,
};

use crate::fuzz::data::POLICIES;

/// Configuration knobs a session fuzz input can turn; all zero is the default fuzz config:
/// every hook subscribed, STARTTLS and AUTH (also without TLS) on, small limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Knobs {
    /// [`BareLineEndings`](smtp_session::BareLineEndings): 0 Reject, 1 Normalize, 2 Allow
    /// (modulo 3).
    pub bare_line_endings: u8,
    /// Hooks left unsubscribed, one bit each: connect, helo, auth, mail, rcpt, data, message,
    /// vrfy.
    pub unsubscribe: u8,
    /// [`HookFailurePolicy::Disconnect`] instead of a temporary failure.
    pub hook_failure_disconnect: bool,
    /// [`StartTlsInjection::Close`] instead of discarding.
    pub starttls_injection_close: bool,
    /// [`Config::require_tls`].
    pub require_tls: bool,
    /// [`Config::require_auth`].
    pub require_auth: bool,
    /// [`Config::implicit_tls`].
    pub implicit_tls: bool,
    /// [`Config::proxy_protocol`].
    pub proxy_protocol: bool,
    /// A [`Config::greeting_delay`] of [`GREETING_DELAY`].
    pub greeting_delay: bool,
    /// [`Config::reject_early_talkers`].
    pub reject_early_talkers: bool,
    /// [`Config::reject_unauth_pipelining`].
    pub reject_unauth_pipelining: bool,
    /// [`BodyDelivery::Streamed`] in pieces of at most [`STREAMED_PIECE`] bytes.
    pub streamed: bool,
    /// [`Config::lmtp`].
    pub lmtp: bool,
    /// A [`Config::min_data_rate`] of [`MIN_DATA_RATE`].
    pub min_data_rate: bool,
    /// [`LeadingWhitespace::InsertEmptyLine`] instead of refusing content that begins with
    /// a space or a tab.
    pub insert_empty_line: bool,
}

/// The piece size of [`Knobs::streamed`]: the smallest allowed.
pub const STREAMED_PIECE: usize = 1024;

/// The minimum data rate of [`Knobs::min_data_rate`].
pub const MIN_DATA_RATE: MinDataRate = MinDataRate {
    bytes_per_second: 100,
    grace: Duration::from_secs(2),
};

/// The greeting delay of [`Knobs::greeting_delay`].
pub const GREETING_DELAY: Duration = Duration::from_secs(3);

/// The client's address; XCLIENT is trusted from it.
pub(crate) const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

/// The config the session fuzzers use for `knobs`.
pub fn fuzz_config(knobs: &Knobs) -> Config {
    let off = |bit: u8| knobs.unsubscribe & (1 << bit) != 0;
    Config {
        hostname: "mx.fuzz.example".into(),
        banner: "ESMTP fuzz".into(),
        extensions: Extensions {
            starttls: true,
            auth: true,
            ..Extensions::default()
        },
        auth_mechanisms: ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"]
            .map(String::from)
            .to_vec(),
        auth_without_tls: true,
        require_auth: knobs.require_auth,
        require_tls: knobs.require_tls,
        implicit_tls: knobs.implicit_tls,
        starttls_injection: if knobs.starttls_injection_close {
            StartTlsInjection::Close
        } else {
            StartTlsInjection::Discard
        },
        hooks: Hooks {
            connect: !off(0),
            helo: !off(1),
            auth: !off(2),
            mail_from: !off(3),
            rcpt_to: !off(4),
            data: !off(5),
            message: !off(6),
            vrfy: !off(7),
        },
        expn: true,
        lmtp: knobs.lmtp,
        body_delivery: if knobs.streamed {
            BodyDelivery::Streamed {
                max_piece: STREAMED_PIECE,
            }
        } else {
            BodyDelivery::Buffered
        },
        min_data_rate: knobs.min_data_rate.then_some(MIN_DATA_RATE),
        hook_failure: if knobs.hook_failure_disconnect {
            HookFailurePolicy::Disconnect
        } else {
            HookFailurePolicy::TemporaryFailure
        },
        proxy_protocol: knobs.proxy_protocol,
        xclient_trusted: vec![CLIENT_IP],
        max_auth_line_length: 1024,
        max_message_size: 4096,
        max_pending_input: 2048,
        hard_error_limit: 10,
        bare_line_endings: POLICIES[usize::from(knobs.bare_line_endings % 3)],
        greeting_delay: if knobs.greeting_delay {
            GREETING_DELAY
        } else {
            Duration::ZERO
        },
        reject_early_talkers: knobs.reject_early_talkers,
        reject_unauth_pipelining: knobs.reject_unauth_pipelining,
        leading_whitespace: if knobs.insert_empty_line {
            LeadingWhitespace::InsertEmptyLine
        } else {
            LeadingWhitespace::Reject
        },
        ..Config::default()
    }
}

pub(crate) fn fuzz_info() -> ConnectionInfo {
    ConnectionInfo {
        id: "fuzz-1".into(),
        remote_ip: Some(CLIENT_IP),
        remote_port: Some(41666),
        local_ip: Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))),
        local_port: Some(25),
        server_id: Some("fuzz".into()),
        ..ConnectionInfo::default()
    }
}

pub(crate) fn extensions_from_bits(bits: u16) -> Extensions {
    let on = |bit: u16| bits & (1 << bit) != 0;
    Extensions {
        pipelining: on(0),
        size: on(1),
        eight_bit_mime: on(2),
        enhanced_status_codes: on(3),
        smtputf8: on(4),
        chunking: on(5),
        binary_mime: on(6),
        dsn: on(7),
        starttls: on(8),
        auth: on(9),
        require_tls: on(10),
        mt_priority: on(11),
        deliver_by: on(12),
        rrvs: on(13),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_config_is_in_range() {
        for unsubscribe in [0, 0x7f] {
            let knobs = Knobs {
                unsubscribe,
                ..Knobs::default()
            };
            assert_eq!(fuzz_config(&knobs).validate(), Ok(()));
        }
    }
}
