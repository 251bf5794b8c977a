//! What the policy, the log, the relay and the verifier know about a connection when a hook
//! runs, besides the hook's arguments.

use std::sync::Arc;

use smtp_session::{AuthInfo, ConnectionInfo, HeloInfo, ReversePath, TlsInfo};
use smtp_session_tokio::{Client, Connection};

pub use crate::dnsbl::Screening;

/// What the policy and the log know about the connection when a hook runs, besides the
/// hook's arguments.
#[derive(Clone, Debug)]
pub struct ConnFacts {
    /// Addresses and ids (after PROXY/XCLIENT).
    pub info: ConnectionInfo,
    /// The accepted HELO/EHLO.
    pub helo: Option<HeloInfo>,
    /// The TLS layer, once active.
    pub tls: Option<TlsInfo>,
    /// The successful AUTH.
    pub auth: Option<AuthInfo>,
    /// The client as every per-client limit counts it (its address's key, and whether a
    /// trusted network exempts it); `None` on a UNIX socket.
    pub client: Option<Client>,
    /// The open transaction's reverse path, from MAIL FROM on.
    pub mail_from: Option<ReversePath>,
    /// What `--dnsbl` made of the client at connect.
    pub screening: Option<Arc<Screening>>,
}

impl ConnFacts {
    /// What `conn` knows now.
    pub fn of(conn: &Connection<'_>) -> Self {
        ConnFacts {
            info: conn.info().clone(),
            helo: conn.helo().cloned(),
            tls: conn.tls().cloned(),
            auth: conn.auth().cloned(),
            client: conn.client(),
            mail_from: conn.envelope().map(|e| e.mail_from.clone()),
            screening: None,
        }
    }
}

/// The keywords the EHLO reply will list now, as the HELO stage's checks (the policy's `smtp_server_ehlo`) get them: what the
/// session offers (SIZE with its value, AUTH with its mechanisms), in the reply's order.
pub fn ehlo_keywords(conn: &Connection<'_>) -> Vec<String> {
    let ext = conn.extensions();
    let config = conn.config();
    let tls = conn.tls().is_some();
    let auth = ext.auth && (tls || config.auth_without_tls) && conn.auth().is_none();
    let keywords = [
        (ext.pipelining, "PIPELINING".to_string()),
        (ext.size, format!("SIZE {}", config.max_message_size)),
        (ext.eight_bit_mime, "8BITMIME".into()),
        (ext.enhanced_status_codes, "ENHANCEDSTATUSCODES".into()),
        (ext.smtputf8, "SMTPUTF8".into()),
        (ext.chunking, "CHUNKING".into()),
        (ext.chunking && ext.binary_mime, "BINARYMIME".into()),
        (ext.dsn, "DSN".into()),
        (ext.starttls && !tls, "STARTTLS".into()),
        (ext.require_tls && tls, "REQUIRETLS".into()),
        (ext.mt_priority, "MT-PRIORITY".into()),
        (ext.deliver_by, "DELIVERBY".into()),
        (ext.rrvs, "RRVS".into()),
        (auth, format!("AUTH {}", config.auth_mechanisms.join(" "))),
    ];
    keywords
        .into_iter()
        .filter_map(|(on, keyword)| on.then_some(keyword))
        .collect()
}
