//! What the policy, the log, the relay and the verifier know about a connection when a hook
//! runs, besides the hook's arguments.

use std::sync::{Arc, LazyLock};

use serde::Serialize;
use smtp_session::{AuthInfo, ConnectionInfo, HeloInfo, Reply, ReversePath, TlsInfo};
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
    /// The filters' verdicts on this connection before this stage (the last
    /// `--max-filter-verdicts` of them).
    pub filters: Arc<[FilterVerdict]>,
    /// At the message stage: the verdicts on this message (its transaction's, then the
    /// milters'); empty at the other stages.
    pub message_filters: Arc<[FilterVerdict]>,
}

/// An empty list of verdicts, shared: most connections have no filter to judge them, and
/// their facts are made at every stage.
pub fn no_verdicts() -> Arc<[FilterVerdict]> {
    static NONE: LazyLock<Arc<[FilterVerdict]>> = LazyLock::new(|| Arc::new([]));
    NONE.clone()
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
            filters: no_verdicts(),
            message_filters: no_verdicts(),
        }
    }
}

/// What one filter (a milter, the policy service) said at one stage: for the message's
/// log line, the disconnect context, the Lua policy's `get_meta` and the metrics. The
/// check fills what it knows; the merge of verdicts adds the stage and the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FilterVerdict {
    /// `milter` or `policy_service`.
    pub filter: &'static str,
    /// Which one: its address as given (`inet:127.0.0.1:8891`).
    pub name: String,
    /// The stage it answered: `connect`, `helo`, `mail`, `rcpt`, `data` or `message`.
    pub stage: &'static str,
    /// The connection's message it was about (1 for the first), from MAIL on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<u32>,
    /// What it said: a milter's `continue`, `reject`, `tempfail`, `discard`, `quarantine`;
    /// a policy service's action in lower case (`ok`, `dunno`, `reject`, `defer`,
    /// `defer_if_permit`, `defer_if_reject`, `prepend`, `warn`, `hold`, `discard`...); or
    /// `failed` (it failed, timed out or answered garbage).
    pub verdict: &'static str,
    /// The reply it asked for, or its default action's (`550 5.7.1 Command rejected`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Its text: a quarantine or hold reason, a warning, a prepended field, why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl FilterVerdict {
    /// `filter` `name` said `verdict`; the stage is filled in later.
    pub fn new(filter: &'static str, name: String, verdict: &'static str) -> FilterVerdict {
        FilterVerdict {
            filter,
            name,
            stage: "",
            message: None,
            verdict,
            reply: None,
            reason: None,
        }
    }

    /// Notes `reply`, as sent (its lines joined by CRLF, without the last one's).
    pub fn set_reply(&mut self, reply: &Reply) {
        self.reply = Some(reply.to_string().trim_end().to_string());
    }
}

/// mailsink's value in the session's user context (Halon's `$context`), handed back in the
/// disconnect context: the filters' verdicts on the connection, in order, the last
/// `--max-filter-verdicts` of them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConnContext {
    /// The verdicts kept.
    pub filter_verdicts: Arc<[FilterVerdict]>,
    /// How many older ones were left out, over the limit.
    #[serde(skip_serializing_if = "is_zero")]
    pub filter_verdicts_left_out: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ConnContext {
    /// True when no filter said anything.
    pub fn is_empty(&self) -> bool {
        self.filter_verdicts.is_empty() && self.filter_verdicts_left_out == 0
    }

    /// How many verdicts the connection had, those left out included.
    pub fn total(&self) -> u64 {
        self.filter_verdicts_left_out + self.filter_verdicts.len() as u64
    }

    /// The verdicts kept from the `from`th (counting from 0, those left out included) on.
    pub fn since(&self, from: u64) -> &[FilterVerdict] {
        let skip = from.saturating_sub(self.filter_verdicts_left_out);
        let skip = usize::try_from(skip).map_or(self.filter_verdicts.len(), |skip| {
            skip.min(self.filter_verdicts.len())
        });
        &self.filter_verdicts[skip..]
    }

    /// Adds `found` after the verdicts kept, keeping the last `limit`.
    pub fn add(&mut self, found: &[FilterVerdict], limit: usize) {
        let mut all: Vec<FilterVerdict> = self.filter_verdicts.to_vec();
        all.extend_from_slice(found);
        let over = all.len().saturating_sub(limit);
        all.drain(..over);
        self.filter_verdicts_left_out += over as u64;
        self.filter_verdicts = all.into();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn said(verdict: &'static str) -> FilterVerdict {
        FilterVerdict::new("policy_service", "inet:127.0.0.1:1".into(), verdict)
    }

    #[test]
    fn a_connection_keeps_its_last_verdicts_and_counts_those_left_out() {
        let mut context = ConnContext::default();
        assert!(context.is_empty());
        context.add(&[said("dunno"), said("warn")], 3);
        let from = context.total();
        context.add(&[said("hold"), said("prepend")], 3);
        let kept: Vec<&str> = context.filter_verdicts.iter().map(|v| v.verdict).collect();
        assert_eq!(kept, ["warn", "hold", "prepend"]);
        assert_eq!(context.filter_verdicts_left_out, 1);
        assert_eq!(context.total(), 4);
        let since: Vec<&str> = context.since(from).iter().map(|v| v.verdict).collect();
        assert_eq!(since, ["hold", "prepend"]);
        assert!(context.since(0).len() == 3 && context.since(9).is_empty());
        let line = serde_json::to_string(&context).unwrap();
        assert!(line.ends_with(r#""filter_verdicts_left_out":1}"#), "{line}");
    }
}
