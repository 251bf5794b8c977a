//! What the policy, the log, the relay and the verifier know about a connection when a hook
//! runs, besides the hook's arguments.

use smtp_session::{AuthInfo, ConnectionInfo, HeloInfo, TlsInfo};
use smtp_session_tokio::Connection;

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
}

impl ConnFacts {
    /// What `conn` knows now.
    pub fn of(conn: &Connection<'_>) -> Self {
        ConnFacts {
            info: conn.info().clone(),
            helo: conn.helo().cloned(),
            tls: conn.tls().cloned(),
            auth: conn.auth().cloned(),
        }
    }
}
