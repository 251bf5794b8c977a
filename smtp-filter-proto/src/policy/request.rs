//! The request: Postfix's attributes, one `name=value` line each, and an empty line.

use crate::policy::RequestError;

/// The SMTP stage a request is made at (`protocol_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtocolState {
    /// The client connected (`CONNECT`).
    Connect,
    /// EHLO (`EHLO`).
    Ehlo,
    /// HELO (`HELO`).
    Helo,
    /// MAIL FROM (`MAIL`).
    Mail,
    /// RCPT TO (`RCPT`), the usual stage.
    Rcpt,
    /// DATA (`DATA`).
    Data,
    /// After the message's final dot (`END-OF-MESSAGE`).
    EndOfMessage,
    /// VRFY (`VRFY`).
    Vrfy,
    /// ETRN (`ETRN`).
    Etrn,
}

impl ProtocolState {
    /// The attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolState::Connect => "CONNECT",
            ProtocolState::Ehlo => "EHLO",
            ProtocolState::Helo => "HELO",
            ProtocolState::Mail => "MAIL",
            ProtocolState::Rcpt => "RCPT",
            ProtocolState::Data => "DATA",
            ProtocolState::EndOfMessage => "END-OF-MESSAGE",
            ProtocolState::Vrfy => "VRFY",
            ProtocolState::Etrn => "ETRN",
        }
    }
}

/// One policy request (`request=smtpd_access_policy`) with the attributes Postfix sends,
/// all of them every time, empty when unknown, in Postfix's order. Attributes Postfix does
/// not know go last ([`PolicyRequest::extra`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are the attributes of the same names (SMTPD_POLICY_README)
pub struct PolicyRequest {
    pub protocol_state: ProtocolState,
    /// `SMTP`, `ESMTP` or `LMTP`.
    pub protocol_name: String,
    pub helo_name: String,
    pub queue_id: String,
    /// The sender address without angle brackets; empty for the null sender.
    pub sender: String,
    /// The recipient address without angle brackets (at RCPT; empty at other stages, or
    /// the last one as Postfix does at DATA and END-OF-MESSAGE when there is one).
    pub recipient: String,
    /// Recipients accepted so far (at DATA and END-OF-MESSAGE; 0 before).
    pub recipient_count: u32,
    pub client_address: String,
    /// The verified client name, or `unknown`.
    pub client_name: String,
    /// The name the client's address points to, verified or not, or `unknown`.
    pub reverse_client_name: String,
    /// The same for every request of one message, different for the next: the service's
    /// key to tie the recipients of a message together.
    pub instance: String,
    pub sasl_method: String,
    pub sasl_username: String,
    pub sasl_sender: String,
    /// The message size from MAIL's SIZE, or at END-OF-MESSAGE the actual size; 0 unknown.
    pub size: u64,
    pub ccert_subject: String,
    pub ccert_issuer: String,
    pub ccert_fingerprint: String,
    pub ccert_pubkey_fingerprint: String,
    pub encryption_protocol: String,
    pub encryption_cipher: String,
    /// Cipher key size in bits; 0 without TLS.
    pub encryption_keysize: u32,
    pub etrn_domain: String,
    pub stress: String,
    pub client_port: String,
    pub policy_context: String,
    pub server_address: String,
    pub server_port: String,
    /// More attributes, after the others.
    pub extra: Vec<(String, String)>,
}

impl PolicyRequest {
    /// A request at `state` with every attribute empty, `protocol_name` `ESMTP`, and client
    /// and reverse names `unknown`.
    pub fn new(state: ProtocolState) -> PolicyRequest {
        PolicyRequest {
            protocol_state: state,
            protocol_name: "ESMTP".to_string(),
            helo_name: String::new(),
            queue_id: String::new(),
            sender: String::new(),
            recipient: String::new(),
            recipient_count: 0,
            client_address: String::new(),
            client_name: "unknown".to_string(),
            reverse_client_name: "unknown".to_string(),
            instance: String::new(),
            sasl_method: String::new(),
            sasl_username: String::new(),
            sasl_sender: String::new(),
            size: 0,
            ccert_subject: String::new(),
            ccert_issuer: String::new(),
            ccert_fingerprint: String::new(),
            ccert_pubkey_fingerprint: String::new(),
            encryption_protocol: String::new(),
            encryption_cipher: String::new(),
            encryption_keysize: 0,
            etrn_domain: String::new(),
            stress: String::new(),
            client_port: String::new(),
            policy_context: String::new(),
            server_address: String::new(),
            server_port: String::new(),
            extra: Vec::new(),
        }
    }

    /// The request's bytes. A value with a line break (LF or CR) or NUL cannot be sent and
    /// is an error, as is an extra attribute name that is empty or has `=` or a line break.
    pub fn encode(&self) -> Result<Vec<u8>, RequestError> {
        let count = self.recipient_count.to_string();
        let size = self.size.to_string();
        let keysize = self.encryption_keysize.to_string();
        let fixed: [(&str, &str); 29] = [
            ("request", "smtpd_access_policy"),
            ("protocol_state", self.protocol_state.as_str()),
            ("protocol_name", &self.protocol_name),
            ("helo_name", &self.helo_name),
            ("queue_id", &self.queue_id),
            ("sender", &self.sender),
            ("recipient", &self.recipient),
            ("recipient_count", &count),
            ("client_address", &self.client_address),
            ("client_name", &self.client_name),
            ("reverse_client_name", &self.reverse_client_name),
            ("instance", &self.instance),
            ("sasl_method", &self.sasl_method),
            ("sasl_username", &self.sasl_username),
            ("sasl_sender", &self.sasl_sender),
            ("size", &size),
            ("ccert_subject", &self.ccert_subject),
            ("ccert_issuer", &self.ccert_issuer),
            ("ccert_fingerprint", &self.ccert_fingerprint),
            ("ccert_pubkey_fingerprint", &self.ccert_pubkey_fingerprint),
            ("encryption_protocol", &self.encryption_protocol),
            ("encryption_cipher", &self.encryption_cipher),
            ("encryption_keysize", &keysize),
            ("etrn_domain", &self.etrn_domain),
            ("stress", &self.stress),
            ("client_port", &self.client_port),
            ("policy_context", &self.policy_context),
            ("server_address", &self.server_address),
            ("server_port", &self.server_port),
        ];
        let mut out = Vec::with_capacity(1024);
        let extra = self.extra.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        for (name, value) in fixed.into_iter().chain(extra) {
            if name.is_empty() || name.bytes().any(|b| matches!(b, b'=' | b'\n' | b'\r' | 0)) {
                return Err(RequestError::BadName(name.to_string()));
            }
            if value.bytes().any(|b| matches!(b, b'\n' | b'\r' | 0)) {
                return Err(RequestError::LineBreak(name.to_string()));
            }
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        Ok(out)
    }
}
