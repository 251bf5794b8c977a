//! Everything a session can be told up front: identity, extensions, hooks and limits.

use std::time::Duration;

pub use crate::body::LeadingWhitespace;
pub use crate::data::BareLineEndings;

/// The ESMTP extensions a session advertises in its EHLO reply and accepts.
///
/// Switching one off removes its keyword from the EHLO reply and makes its parameters and
/// commands unknown (555 / 502), so what is advertised and what is accepted never differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Extensions {
    /// RFC 2920 PIPELINING.
    pub pipelining: bool,
    /// RFC 1870 SIZE, advertised with [`Config::max_message_size`].
    pub size: bool,
    /// RFC 6152 8BITMIME.
    pub eight_bit_mime: bool,
    /// RFC 2034 ENHANCEDSTATUSCODES: default replies carry enhanced codes when on.
    pub enhanced_status_codes: bool,
    /// RFC 6531 SMTPUTF8.
    pub smtputf8: bool,
    /// RFC 3030 CHUNKING (BDAT).
    pub chunking: bool,
    /// RFC 3030 BINARYMIME (needs CHUNKING).
    pub binary_mime: bool,
    /// RFC 3461 DSN parameters.
    pub dsn: bool,
    /// RFC 3207 STARTTLS; only useful when the runtime can run a TLS handshake.
    pub starttls: bool,
    /// RFC 4954 AUTH, with [`Config::auth_mechanisms`].
    pub auth: bool,
    /// RFC 8689 REQUIRETLS: offered only over TLS; `MAIL ... REQUIRETLS` reaches the hooks as
    /// [`MailParams::require_tls`](crate::MailParams::require_tls). Off by default.
    pub require_tls: bool,
    /// RFC 6710 MT-PRIORITY: `MAIL ... MT-PRIORITY=n`, -9..=9. Off by default.
    pub mt_priority: bool,
    /// RFC 2852 DELIVERBY: `MAIL ... BY=time;mode`. Off by default.
    pub deliver_by: bool,
    /// RFC 7293 RRVS: `RCPT ... RRVS=date-time`. Off by default.
    pub rrvs: bool,
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions {
            pipelining: true,
            size: true,
            eight_bit_mime: true,
            enhanced_status_codes: true,
            smtputf8: true,
            chunking: true,
            binary_mime: true,
            dsn: true,
            starttls: false,
            auth: false,
            require_tls: false,
            mt_priority: false,
            deliver_by: false,
            rrvs: false,
        }
    }
}

/// Which hooks the caller wants to decide. An unsubscribed hook is accepted at once, with
/// no round trip, except AUTH: without an auth hook no credentials can be verified, so every
/// attempt fails with 535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Hooks {
    /// After the connection (and PROXY header), before the greeting.
    pub connect: bool,
    /// HELO and EHLO.
    pub helo: bool,
    /// AUTH credentials and challenge/response steps.
    pub auth: bool,
    /// MAIL FROM.
    pub mail_from: bool,
    /// RCPT TO.
    pub rcpt_to: bool,
    /// DATA, and the first BDAT of a transaction, before any message byte is read.
    pub data: bool,
    /// The complete message: envelope and body. Without it, messages are accepted and
    /// dropped, which only suits benchmarks and sinks.
    pub message: bool,
    /// VRFY and EXPN, when [`Config::vrfy`] or [`Config::expn`] lets them be answered at
    /// all. Without it they get the fixed `252 2.5.0`.
    pub vrfy: bool,
}

impl Hooks {
    /// Every hook subscribed.
    pub const ALL: Hooks = Hooks {
        connect: true,
        helo: true,
        auth: true,
        mail_from: true,
        rcpt_to: true,
        data: true,
        message: true,
        vrfy: true,
    };
    /// No hook subscribed.
    pub const NONE: Hooks = Hooks {
        connect: false,
        helo: false,
        auth: false,
        mail_from: false,
        rcpt_to: false,
        data: false,
        message: false,
        vrfy: false,
    };
}

impl Default for Hooks {
    /// Only the message hook: a receiver that is not told about messages loses them.
    fn default() -> Self {
        Hooks {
            message: true,
            ..Hooks::NONE
        }
    }
}

/// What a hook failure (the runtime's `Decision::HookFailed`) does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum HookFailurePolicy {
    /// A temporary failure for the stage (`451 4.3.0`, or `454 4.7.0` for AUTH); the session
    /// stays open. At the connect stage there is no session to keep, so it is `421 4.3.0`.
    #[default]
    TemporaryFailure,
    /// KumoMTA's behaviour: `421 4.3.0 <hostname> technical difficulties`, then close.
    Disconnect,
}

/// What happens to bytes that followed a STARTTLS command before the handshake
/// (CVE-2011-0411 command injection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum StartTlsInjection {
    /// Throw them away and go on with the handshake.
    #[default]
    Discard,
    /// Close the connection without a handshake.
    Close,
}

/// Where the body of a received message goes (SPEC 12).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum BodyDelivery {
    /// The message hook carries the whole body ([`Message::body`](crate::Message::body)):
    /// every message in flight is held in memory, up to
    /// [`Config::max_message_size`] each.
    #[default]
    Buffered,
    /// The body leaves the session as it arrives, in
    /// [`Output::BodyPiece`](crate::Output::BodyPiece)s of at most `max_piece` bytes, and the
    /// message hook carries the envelope, the size and the body's facts but no body. A
    /// message that will not be accepted is announced with
    /// [`Output::BodyAborted`](crate::Output::BodyAborted). Memory per session is then
    /// bounded by the input and output limits, whatever the message size.
    Streamed {
        /// The largest piece, in bytes: 1 KiB..=16 MiB. 64 KiB is a good size for a spool
        /// file write.
        max_piece: usize,
    },
}

impl BodyDelivery {
    /// Streamed delivery in pieces of at most 64 KiB.
    pub const STREAMED: BodyDelivery = BodyDelivery::Streamed {
        max_piece: 64 * 1024,
    };
}

/// The slowest a client may send message data: Postfix's `smtpd_min_data_rate`.
///
/// After `grace`, a DATA or BDAT transfer must have brought at least `bytes_per_second`
/// for every second it has run beyond the grace, or the session answers `421 4.4.2` and
/// closes. The idle timeout between reads ([`Config::data_timeout`]) applies as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct MinDataRate {
    /// Bytes per second, at least 1 (Postfix's default is 500).
    pub bytes_per_second: u32,
    /// How long a transfer may take before the rate counts.
    pub grace: Duration,
}

/// The configuration of a session. Share one between sessions with an `Arc`.
///
/// Start from the defaults and change what you need; [`Config::validate`] (or
/// [`Session::try_new`](crate::Session::try_new)) tells a value out of its range:
///
/// ```
/// use std::time::Duration;
/// use smtp_session::{BodyDelivery, Config, Extensions, Hooks, MinDataRate};
/// let config = Config {
///     hostname: "mx.example.org".into(),
///     extensions: Extensions { starttls: true, ..Extensions::default() },
///     hooks: Hooks { rcpt_to: true, ..Hooks::default() }, // the message hook stays on
///     max_message_size: 50 << 20,
///     body_delivery: BodyDelivery::STREAMED,
///     min_data_rate: Some(MinDataRate { bytes_per_second: 500, grace: Duration::from_secs(30) }),
///     ..Config::default()
/// };
/// assert!(config.validate().is_ok());
/// let too_few = Config { max_recipients: 10, ..config };
/// assert_eq!(too_few.validate().unwrap_err().field, "max_recipients");
/// ```
///
/// Limits outside their documented range are refused by
/// [`Session::try_new`](crate::Session::try_new) and clamped by
/// [`Session::new`](crate::Session::new); [`Config::validate`] says which ones.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Config {
    /// The server's name in the greeting, the EHLO reply and the synthesized 421 lines.
    pub hostname: String,
    /// The greeting text after the hostname: `220 <hostname> <banner>`.
    pub banner: String,
    /// The extensions advertised and accepted.
    pub extensions: Extensions,
    /// SASL mechanisms offered with AUTH, upper case. PLAIN and LOGIN are decoded by the
    /// session; any other runs as challenge/response steps through the auth hook.
    pub auth_mechanisms: Vec<String>,
    /// Offer and accept AUTH without TLS (RFC 4954 advises against it).
    pub auth_without_tls: bool,
    /// MAIL is refused with `530 5.7.0` until the client authenticated.
    pub require_auth: bool,
    /// Everything but NOOP, EHLO, HELO, STARTTLS and QUIT is refused with `530 5.7.0`
    /// until TLS is active.
    pub require_tls: bool,
    /// The connection is TLS from its first byte (RFC 8314, port 465). The runtime must still
    /// report the handshake details with
    /// [`Session::handle_tls_established`](crate::Session::handle_tls_established) before
    /// feeding input.
    pub implicit_tls: bool,
    /// What to do with bytes pipelined after STARTTLS.
    pub starttls_injection: StartTlsInjection,
    /// The hooks the caller decides.
    pub hooks: Hooks,
    /// What a failed hook does.
    pub hook_failure: HookFailurePolicy,
    /// MAIL before HELO/EHLO is refused with 503.
    pub require_helo: bool,
    /// VRFY is answered (by the VRFY hook, or `252 2.5.0`) when true, refused with
    /// `502 5.5.1` when false.
    pub vrfy: bool,
    /// EXPN is answered (by the VRFY hook, or `252 2.5.0`) when true, refused with
    /// `502 5.5.1` when false.
    pub expn: bool,
    /// Speak LMTP (RFC 2033) instead of SMTP: the client greets with LHLO (HELO and EHLO get
    /// `500`), and after the end of a message (DATA, or the last BDAT chunk) every accepted
    /// recipient gets a reply of its own, in RCPT order; see [`Decision::PerRecipient`](crate::Decision::PerRecipient).
    pub lmtp: bool,
    /// Expect a PROXY protocol (v1 or v2) header before anything else.
    pub proxy_protocol: bool,
    /// Peers allowed to use XCLIENT; empty refuses it for everyone.
    pub xclient_trusted: Vec<std::net::IpAddr>,
    /// Longest command line in octets, CRLF included, before the extensions' allowances
    /// (SIZE +26, SMTPUTF8 +10, DSN +600, AUTH= +500, REQUIRETLS +11, MT-PRIORITY +15,
    /// DELIVERBY +17, RRVS +43). 512..=65536; default 512.
    pub max_line_length: usize,
    /// Longest line of an AUTH exchange (RFC 4954: 12288), answered with `500 5.5.6`.
    pub max_auth_line_length: usize,
    /// Largest message in octets after dot-unstuffing; advertised with SIZE. Default 25 MiB.
    pub max_message_size: u64,
    /// Recipients per message; RFC 5321 says at least 100, so smaller values are raised to it.
    pub max_recipients: usize,
    /// Error replies (4xx/5xx to client commands) before `421 4.7.0` and close. Default 20.
    /// A reply marked [`Reply::server_fault`](crate::Reply::server_fault) does not count.
    pub hard_error_limit: u32,
    /// Input bytes the session buffers while a hook is pending. 1 KiB..=16 MiB, at least the
    /// line limits; default 64 KiB.
    pub max_pending_input: usize,
    /// Time allowed between input while a command is awaited. Default 5 minutes.
    pub command_timeout: Duration,
    /// Time allowed for a whole command line (or AUTH exchange line) from its first byte,
    /// however the bytes trickle in (Postfix `smtpd_per_request_deadline`). Default 5
    /// minutes.
    pub command_deadline: Duration,
    /// Time allowed between reads of DATA or BDAT content. Default 3 minutes.
    pub data_timeout: Duration,
    /// The slowest DATA or BDAT transfer allowed; `None` (the default) checks only
    /// [`data_timeout`](Config::data_timeout) between reads.
    pub min_data_rate: Option<MinDataRate>,
    /// Whether message bodies come whole with the message hook or in pieces as they arrive.
    pub body_delivery: BodyDelivery,
    /// What to do with bare CR or LF in DATA, in BDAT content not declared
    /// `BODY=BINARYMIME`, and at the end of command lines (with `Reject`, a command line
    /// ended by a bare LF is answered `550 5.5.2` and not executed).
    pub bare_line_endings: BareLineEndings,
    /// What to do with message content (DATA or BDAT) whose first byte is a space or a
    /// tab, which would fold into the last field the receiver prepends
    /// ([`Session::received`](crate::Session::received)): refused with `550 5.6.0` by
    /// default, or stored after an empty line. [`Message::leading_whitespace`](crate::Message::leading_whitespace)
    /// says when it happened.
    pub leading_whitespace: LeadingWhitespace,
    /// Hold the greeting back this long (Postfix postscreen's greet pause): a client that
    /// talks first is an early talker, recorded in the disconnect context. Default zero.
    pub greeting_delay: Duration,
    /// Refuse early talkers with `554 5.5.1` instead of greeting them.
    pub reject_early_talkers: bool,
    /// Recipients past [`max_recipients`](Config::max_recipients) that are refused with
    /// `452 4.5.3` before those refusals count toward the hard error limit (Postfix's
    /// `smtpd_recipient_overshoot_limit`). Default 1000.
    pub recipient_overshoot_limit: usize,
    /// Reply bytes the session holds before it stops reading commands until the runtime
    /// polls them, so one read of many small commands cannot make it hold replies without
    /// bound. 1 KiB..=16 MiB; default 64 KiB.
    pub max_pending_output: usize,
    /// Postfix's `reject_unauth_pipelining`: a client that sends more after EHLO, HELO or
    /// DATA in the same read, or pipelines without having been offered PIPELINING, gets
    /// `554 5.5.0` and is disconnected. Off by default.
    pub reject_unauth_pipelining: bool,
    /// Announce each transaction that ends without a message hook call (RSET, HELO or
    /// EHLO, a TLS handshake, a message refused for its data, the connection's end) with
    /// [`Output::TransactionAborted`](crate::Output::TransactionAborted), for a runtime
    /// that keeps state per transaction outside the session. Off by default.
    pub report_aborted_transactions: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "localhost".into(),
            banner: "ESMTP".into(),
            extensions: Extensions::default(),
            auth_mechanisms: vec!["PLAIN".into(), "LOGIN".into()],
            auth_without_tls: false,
            require_auth: false,
            require_tls: false,
            implicit_tls: false,
            starttls_injection: StartTlsInjection::default(),
            hooks: Hooks::default(),
            hook_failure: HookFailurePolicy::default(),
            require_helo: true,
            vrfy: true,
            expn: false,
            lmtp: false,
            proxy_protocol: false,
            xclient_trusted: Vec::new(),
            max_line_length: 512,
            max_auth_line_length: 12288,
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            hard_error_limit: 20,
            max_pending_input: 64 * 1024,
            command_timeout: Duration::from_secs(5 * 60),
            command_deadline: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(3 * 60),
            min_data_rate: None,
            body_delivery: BodyDelivery::Buffered,
            bare_line_endings: BareLineEndings::default(),
            leading_whitespace: LeadingWhitespace::default(),
            greeting_delay: Duration::ZERO,
            reject_early_talkers: false,
            reject_unauth_pipelining: false,
            report_aborted_transactions: false,
            recipient_overshoot_limit: 1000,
            max_pending_output: 64 * 1024,
        }
    }
}

/// A configuration value outside its range, as reported by [`Config::validate`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// The field's name.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl Config {
    /// Reports the first value that [`Session::new`](crate::Session::new) would clamp.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, problem| Err(ConfigError { field, problem });
        if self.hostname.is_empty()
            || self
                .hostname
                .contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return err("hostname", "must be a non-empty name without spaces");
        }
        if self.banner.contains(['\r', '\n']) {
            return err("banner", "must be one line");
        }
        if !(512..=65536).contains(&self.max_line_length) {
            return err("max_line_length", "must be within 512..=65536");
        }
        if !(512..=65536).contains(&self.max_auth_line_length) {
            return err("max_auth_line_length", "must be within 512..=65536");
        }
        if self.max_recipients < 100 {
            return err("max_recipients", "RFC 5321 requires at least 100");
        }
        if self.hard_error_limit == 0 {
            return err("hard_error_limit", "must be at least 1");
        }
        if !(1024..=16 << 20).contains(&self.max_pending_output) {
            return err("max_pending_output", "must be within 1 KiB..=16 MiB");
        }
        if !(1024..=16 << 20).contains(&self.max_pending_input) {
            return err("max_pending_input", "must be within 1 KiB..=16 MiB");
        }
        if let BodyDelivery::Streamed { max_piece } = self.body_delivery {
            if !(1024..=16 << 20).contains(&max_piece) {
                return err("body_delivery", "max_piece must be within 1 KiB..=16 MiB");
            }
        }
        if self
            .min_data_rate
            .is_some_and(|rate| rate.bytes_per_second == 0)
        {
            return err("min_data_rate", "bytes_per_second must be at least 1");
        }
        if self.max_pending_input < self.longest_line() {
            return err(
                "max_pending_input",
                "must hold at least one full command line",
            );
        }
        Ok(())
    }

    /// The effective command line limit: the base plus the allowances of the extensions on
    /// (RFC 1870, 6531, 3461 and 4954 give theirs; the others the longest form of their
    /// parameter).
    pub fn line_limit(&self) -> usize {
        let e = &self.extensions;
        let params = crate::params::ParamSupport {
            size: e.size,
            eight_bit_mime: e.eight_bit_mime,
            binary_mime: e.binary_mime,
            smtputf8: e.smtputf8,
            dsn: e.dsn,
            auth: e.auth,
            require_tls: e.require_tls,
            mt_priority: e.mt_priority,
            deliver_by: e.deliver_by,
            rrvs: e.rrvs,
        };
        self.max_line_length.clamp(512, 65536) + params.line_allowance()
    }

    /// The longest line the session may have to hold: a command, or an AUTH line when AUTH
    /// is on.
    fn longest_line(&self) -> usize {
        let auth = if self.extensions.auth {
            self.max_auth_line_length.clamp(512, 65536)
        } else {
            0
        };
        self.line_limit().max(auth)
    }

    /// A copy with every out-of-range value brought into range.
    pub(crate) fn clamped(&self) -> Config {
        let mut c = self.clone();
        if c.hostname.is_empty()
            || c.hostname
                .contains(|ch: char| ch.is_whitespace() || ch.is_control())
        {
            c.hostname = "localhost".into();
        }
        c.banner.retain(|ch| ch != '\r' && ch != '\n');
        c.max_line_length = c.max_line_length.clamp(512, 65536);
        c.max_auth_line_length = c.max_auth_line_length.clamp(512, 65536);
        c.max_recipients = c.max_recipients.max(100);
        c.hard_error_limit = c.hard_error_limit.max(1);
        c.max_pending_output = c.max_pending_output.clamp(1024, 16 << 20);
        c.max_pending_input = c
            .max_pending_input
            .clamp(1024, 16 << 20)
            .max(c.longest_line());
        if let BodyDelivery::Streamed { max_piece } = &mut c.body_delivery {
            *max_piece = (*max_piece).clamp(1024, 16 << 20);
        }
        if let Some(rate) = &mut c.min_data_rate {
            rate.bytes_per_second = rate.bytes_per_second.max(1);
        }
        for m in &mut c.auth_mechanisms {
            m.make_ascii_uppercase();
        }
        c
    }
}
