//! What is known about a connection, and the disconnect context handed to the disconnect
//! hook: the fields of Halon's disconnect script, with Halon's names under `serde`.

use std::any::Any;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::command::Verb;
use crate::reply::{EnhancedCode, Reply};

/// What the runtime knows about a connection when it creates the session.
///
/// A PROXY protocol header or an XCLIENT command from a trusted peer replaces the addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ConnectionInfo {
    /// The runtime's id for the connection (Halon: `id`).
    pub id: String,
    /// The client's address (Halon: `remoteip`).
    #[cfg_attr(feature = "serde", serde(rename = "remoteip"))]
    pub remote_ip: Option<IpAddr>,
    /// The client's port (Halon: `remoteport`).
    #[cfg_attr(feature = "serde", serde(rename = "remoteport"))]
    pub remote_port: Option<u16>,
    /// Reverse DNS name of the client, when the runtime looked it up (Halon: `remoteptr`).
    #[cfg_attr(feature = "serde", serde(rename = "remoteptr"))]
    pub remote_ptr: Option<String>,
    /// The peer's user id on a UNIX socket (Halon: `remoteuid`).
    #[cfg_attr(feature = "serde", serde(rename = "remoteuid"))]
    pub remote_uid: Option<u32>,
    /// The server's address (Halon: `localip`).
    #[cfg_attr(feature = "serde", serde(rename = "localip"))]
    pub local_ip: Option<IpAddr>,
    /// The server's port (Halon: `localport`).
    #[cfg_attr(feature = "serde", serde(rename = "localport"))]
    pub local_port: Option<u16>,
    /// The id of the listener or server (Halon: `serverid`).
    #[cfg_attr(feature = "serde", serde(rename = "serverid"))]
    pub server_id: Option<String>,
}

impl ConnectionInfo {
    /// Info for a TCP connection.
    pub fn tcp(id: impl Into<String>, remote: SocketAddr, local: SocketAddr) -> Self {
        ConnectionInfo {
            id: id.into(),
            remote_ip: Some(remote.ip()),
            remote_port: Some(remote.port()),
            local_ip: Some(local.ip()),
            local_port: Some(local.port()),
            ..ConnectionInfo::default()
        }
    }
}

/// HELO, EHLO or LHLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum HeloVerb {
    /// RFC 5321 HELO.
    #[cfg_attr(feature = "serde", serde(rename = "HELO"))]
    Helo,
    /// RFC 5321 EHLO.
    #[cfg_attr(feature = "serde", serde(rename = "EHLO"))]
    Ehlo,
    /// RFC 2033 LHLO, the greeting of LMTP.
    #[cfg_attr(feature = "serde", serde(rename = "LHLO"))]
    Lhlo,
}

impl HeloVerb {
    /// True for the greetings that ask for the extension list: EHLO and LHLO.
    pub fn is_extended(self) -> bool {
        matches!(self, HeloVerb::Ehlo | HeloVerb::Lhlo)
    }
}

/// The client's greeting (Halon: `helo`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HeloInfo {
    /// HELO or EHLO (Halon: `verb`).
    pub verb: HeloVerb,
    /// The name the client gave (Halon: `host`).
    pub host: String,
}

/// The client's certificate, when it presented one (Halon: `peercert`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PeerCertificate {
    /// The certificate, DER encoded (Halon: `x509`).
    #[cfg_attr(feature = "serde", serde(rename = "x509"))]
    pub der: Vec<u8>,
    /// The verification error, in the TLS library's numbering; `None` when it verified (Halon: `error`).
    #[cfg_attr(feature = "serde", serde(rename = "error"))]
    pub verify_error: Option<i64>,
}

/// The TLS layer, reported by the runtime after the handshake (Halon: `tls`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TlsInfo {
    /// For example `TLSv1.3` (Halon: `protocol`).
    pub protocol: String,
    /// The cipher suite's IANA name, for example `TLS_AES_256_GCM_SHA384` (Halon: `cipher`).
    pub cipher: String,
    /// The cipher's key size in bits (Halon: `keysize`).
    #[cfg_attr(feature = "serde", serde(rename = "keysize"))]
    pub key_size: Option<u32>,
    /// The server name the client asked for (Halon: `sni`).
    pub sni: Option<String>,
    /// The client certificate (Halon: `peercert`).
    #[cfg_attr(feature = "serde", serde(rename = "peercert"))]
    pub peer_certificate: Option<PeerCertificate>,
}

/// A successful AUTH (Halon: `auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AuthInfo {
    /// The SASL mechanism, upper case (Halon: `mechanism`).
    pub mechanism: String,
    /// The authenticated user, when the mechanism names one (Halon: `username`).
    pub username: Option<String>,
}

/// Who ended the connection (Halon: `close`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum CloseSide {
    /// The session decided: QUIT, a disconnect decision, a 421, a timeout, the error limit,
    /// a shutdown.
    Local,
    /// The runtime reported end of stream or an I/O error.
    Remote,
}

/// Which command (or event) triggered a reply (Halon: `state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "UPPERCASE"))]
#[non_exhaustive]
pub enum ReplyState {
    /// The greeting, or a reply to the connect hook.
    Connect,
    /// The reply to HELO.
    Helo,
    /// The reply to EHLO.
    Ehlo,
    /// The reply to LHLO (LMTP).
    Lhlo,
    /// The reply to STARTTLS.
    #[cfg_attr(feature = "serde", serde(rename = "STARTTLS"))]
    StartTls,
    /// A reply in an AUTH exchange (334 challenges included).
    Auth,
    /// The reply to MAIL FROM.
    Mail,
    /// The reply to RCPT TO.
    Rcpt,
    /// The reply to the DATA command itself (354 or an error).
    Data,
    /// The reply after the end of the message data.
    Eod,
    /// The reply to a BDAT chunk, the last one's being the message's.
    Bdat,
    /// The reply to RSET.
    Rset,
    /// The reply to NOOP.
    Noop,
    /// The reply to QUIT.
    Quit,
    /// The reply to VRFY.
    Vrfy,
    /// The reply to EXPN.
    Expn,
    /// The reply to HELP.
    Help,
    /// The reply to XCLIENT.
    Xclient,
    /// An unknown command, or a line that could not be parsed as one.
    Unknown,
    /// The session's timeout fired.
    Timeout,
    /// The runtime asked for a shutdown.
    Shutdown,
}

impl ReplyState {
    /// The upper-case name Halon uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyState::Connect => "CONNECT",
            ReplyState::Helo => "HELO",
            ReplyState::Ehlo => "EHLO",
            ReplyState::Lhlo => "LHLO",
            ReplyState::StartTls => "STARTTLS",
            ReplyState::Auth => "AUTH",
            ReplyState::Mail => "MAIL",
            ReplyState::Rcpt => "RCPT",
            ReplyState::Data => "DATA",
            ReplyState::Eod => "EOD",
            ReplyState::Bdat => "BDAT",
            ReplyState::Rset => "RSET",
            ReplyState::Noop => "NOOP",
            ReplyState::Quit => "QUIT",
            ReplyState::Vrfy => "VRFY",
            ReplyState::Expn => "EXPN",
            ReplyState::Help => "HELP",
            ReplyState::Xclient => "XCLIENT",
            ReplyState::Unknown => "UNKNOWN",
            ReplyState::Timeout => "TIMEOUT",
            ReplyState::Shutdown => "SHUTDOWN",
        }
    }
}

impl From<Verb> for ReplyState {
    /// The state of a reply to a command with this verb.
    fn from(verb: Verb) -> ReplyState {
        match verb {
            Verb::Helo => ReplyState::Helo,
            Verb::Ehlo => ReplyState::Ehlo,
            Verb::Lhlo => ReplyState::Lhlo,
            Verb::Mail => ReplyState::Mail,
            Verb::Rcpt => ReplyState::Rcpt,
            Verb::Data => ReplyState::Data,
            Verb::Bdat => ReplyState::Bdat,
            Verb::Rset => ReplyState::Rset,
            Verb::Noop => ReplyState::Noop,
            Verb::Quit => ReplyState::Quit,
            Verb::Vrfy => ReplyState::Vrfy,
            Verb::Expn => ReplyState::Expn,
            Verb::Help => ReplyState::Help,
            Verb::StartTls => ReplyState::StartTls,
            Verb::Auth => ReplyState::Auth,
            Verb::Xclient => ReplyState::Xclient,
        }
    }
}

impl From<HeloVerb> for ReplyState {
    fn from(verb: HeloVerb) -> ReplyState {
        match verb {
            HeloVerb::Helo => ReplyState::Helo,
            HeloVerb::Ehlo => ReplyState::Ehlo,
            HeloVerb::Lhlo => ReplyState::Lhlo,
        }
    }
}

impl fmt::Display for ReplyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last reply the session sent (Halon: `reply`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LastReply {
    /// The reply code (Halon: `code`).
    pub code: u16,
    /// The enhanced code, if the reply had one (Halon: `enhanced`, serialised as its three
    /// numbers).
    #[cfg_attr(feature = "serde", serde(with = "enhanced_as_array"))]
    pub enhanced: Option<EnhancedCode>,
    /// The text lines, without codes (Halon: `reason`).
    #[cfg_attr(feature = "serde", serde(rename = "reason"))]
    pub lines: Vec<String>,
    /// What triggered it (Halon: `state`).
    pub state: ReplyState,
}

impl LastReply {
    pub(crate) fn new(reply: &Reply, state: ReplyState) -> Self {
        LastReply {
            code: reply.code(),
            enhanced: reply.enhanced(),
            lines: reply.lines().map(str::to_owned).collect(),
            state,
        }
    }
}

/// Halon's `enhanced` is an array of three numbers.
#[cfg(feature = "serde")]
mod enhanced_as_array {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::reply::EnhancedCode;

    pub fn serialize<S: Serializer>(code: &Option<EnhancedCode>, s: S) -> Result<S::Ok, S::Error> {
        code.map(EnhancedCode::to_array).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EnhancedCode>, D::Error> {
        let numbers = Option::<[u16; 3]>::deserialize(d)?;
        numbers
            .map(|[class, subject, detail]| {
                let class = u8::try_from(class).map_err(serde::de::Error::custom)?;
                Ok(EnhancedCode::new(class, subject, detail))
            })
            .transpose()
    }
}

/// Where an I/O error happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum IoErrorKind {
    /// The socket: `code` is an errno.
    Socket,
    /// The TLS layer: `code` is the TLS library's error code.
    Tls,
}

/// An I/O error the runtime reported (Halon: `error`). Built with [`IoError::socket`],
/// [`IoError::tls`] or [`IoError::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub struct IoError {
    /// The message, such as "Connection reset by peer" (Halon: `reason`).
    pub reason: String,
    /// Socket or TLS (Halon: `type`).
    #[cfg_attr(feature = "serde", serde(rename = "type"))]
    pub kind: IoErrorKind,
    /// errno or TLS library code, if known (Halon: `code`).
    pub code: Option<i64>,
}

impl IoError {
    /// An error of the given kind.
    pub fn new(kind: IoErrorKind, reason: impl Into<String>, code: Option<i64>) -> Self {
        IoError {
            reason: reason.into(),
            kind,
            code,
        }
    }

    /// An error from a `std::io::Error`, with its errno when it has one.
    pub fn socket(err: &std::io::Error) -> Self {
        IoError::new(
            IoErrorKind::Socket,
            err.to_string(),
            err.raw_os_error().map(i64::from),
        )
    }

    /// A failure of the TLS layer, with the TLS library's code for it when it has one
    /// (an alert number, say).
    pub fn tls(reason: impl Into<String>, code: Option<i64>) -> Self {
        IoError::new(IoErrorKind::Tls, reason, code)
    }
}

/// The disconnect hook's `$arguments`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct DisconnectArguments {
    /// Who closed (Halon: `close`).
    pub close: CloseSide,
    /// The last reply sent, if any (Halon: `reply`).
    pub reply: Option<LastReply>,
    /// The I/O error the runtime reported, if any (Halon: `error`).
    pub error: Option<IoError>,
}

/// The disconnect hook's `$connection`: the connection info plus what the session learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct ConnectionDetails {
    /// Addresses and ids, as given by the runtime (or replaced by PROXY/XCLIENT).
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub info: ConnectionInfo,
    /// The last accepted HELO/EHLO (Halon: `helo`).
    pub helo: Option<HeloInfo>,
    /// The TLS layer, if TLS was started (Halon: `tls`).
    pub tls: Option<TlsInfo>,
    /// The successful AUTH, if any (Halon: `auth`).
    pub auth: Option<AuthInfo>,
    /// The client sent bytes before the greeting (not in Halon's script) (Halon: `earlytalker`).
    #[cfg_attr(feature = "serde", serde(rename = "earlytalker"))]
    pub early_talker: bool,
}

/// The disconnect hook's `$transaction`: always empty at disconnect, kept for the shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EmptyTransaction {}

/// Everything Halon's disconnect script receives, built by the session exactly once, at the
/// very end of the connection.
///
/// With the `serde` feature it serialises with Halon's key names:
/// `{"arguments":{"close":"local","reply":{"code":221,"enhanced":[2,0,0],"reason":["Bye"],
/// "state":"QUIT"},"error":null},"connection":{"id":..,"remoteip":..,...},"transaction":{}}`.
/// The user context is not serialised.
#[derive(Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct DisconnectContext {
    /// Who closed, the last reply, the I/O error (Halon: `$arguments`).
    pub arguments: DisconnectArguments,
    /// The connection (Halon: `$connection`).
    pub connection: ConnectionDetails,
    /// Always empty (Halon: `$transaction`).
    pub transaction: EmptyTransaction,
    /// The value the runtime stored with [`Session::set_user_context`](crate::Session::set_user_context)
    /// (Halon: `$context`).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub context: Option<Box<dyn Any + Send>>,
}
