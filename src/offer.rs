//! What a session offers the client at a given moment: the EHLO keywords and the ESMTP
//! parameters it accepts. Advertised and accepted never differ, because both come from here.

use crate::config::{Config, Extensions};
use crate::params::ParamSupport;
use crate::reply::Reply;

/// The extensions in force, narrowed by the connection's state.
pub(crate) struct Offer<'a> {
    pub config: &'a Config,
    pub extensions: Extensions,
    /// TLS is active: STARTTLS is not offered again.
    pub tls_active: bool,
    /// AUTH may be used on this connection (AUTH on, and TLS or `auth_without_tls`).
    pub auth_offered: bool,
    /// The client authenticated already: AUTH is not offered again.
    pub authenticated: bool,
    /// The client may use XCLIENT.
    pub xclient: bool,
}

impl Offer<'_> {
    /// The reply to `EHLO client`: the greeting line, then one keyword per line.
    pub(crate) fn ehlo_reply(&self, client: &str) -> Reply {
        let ext = &self.extensions;
        let mut size = [0u8; 25];
        let size = size_keyword(self.config.max_message_size, &mut size);
        let keywords = [
            (ext.pipelining, "PIPELINING"),
            (ext.size, size),
            (ext.eight_bit_mime, "8BITMIME"),
            (ext.enhanced_status_codes, "ENHANCEDSTATUSCODES"),
            (ext.smtputf8, "SMTPUTF8"),
            (ext.chunking, "CHUNKING"),
            (ext.chunking && ext.binary_mime, "BINARYMIME"),
            (ext.dsn, "DSN"),
            (ext.starttls && !self.tls_active, "STARTTLS"),
            // RFC 8689 section 4.1: only on a connection protected by TLS.
            (ext.require_tls && self.tls_active, "REQUIRETLS"),
            (ext.mt_priority, "MT-PRIORITY"),
            (ext.deliver_by, "DELIVERBY"),
            (ext.rrvs, "RRVS"),
        ];
        let auth = (self.auth_offered && !self.authenticated).then_some("\nAUTH");
        let mechanisms = auth.map_or(&[][..], |_| &self.config.auth_mechanisms[..]);
        let xclient = self
            .xclient
            .then_some("\nXCLIENT ADDR PORT NAME HELO LOGIN PROTO DESTADDR DESTPORT");
        // Pushed into one buffer of the exact size: this runs for every connection, and
        // the reply is kept as the last one, so neither `format!` nor spare capacity.
        let length = self.config.hostname.len()
            + " greets ".len()
            + client.len()
            + (keywords.iter())
                .filter(|(on, _)| *on)
                .map(|(_, keyword)| 1 + keyword.len())
                .sum::<usize>()
            + auth.map_or(0, str::len)
            + mechanisms.iter().map(|m| 1 + m.len()).sum::<usize>()
            + xclient.map_or(0, str::len);
        let mut text = String::with_capacity(length);
        text.push_str(&self.config.hostname);
        text.push_str(" greets ");
        text.push_str(client);
        for (on, keyword) in keywords {
            if on {
                text.push('\n');
                text.push_str(keyword);
            }
        }
        text.extend(auth);
        for mechanism in mechanisms {
            text.push(' ');
            text.push_str(mechanism);
        }
        text.extend(xclient);
        debug_assert_eq!(text.len(), length, "the EHLO reply's length");
        Reply::built(250, None, text)
    }

    /// The reply to HELP: the commands that would be accepted now. STARTTLS is listed only
    /// while it can be used, AUTH only when offered and not done yet, BDAT only with
    /// CHUNKING; an LMTP session greets with LHLO.
    pub(crate) fn help_reply(&self) -> Reply {
        let ext = &self.extensions;
        let greetings = if self.config.lmtp {
            "LHLO"
        } else {
            "HELO EHLO"
        };
        let mut text = format!("Commands: {greetings} MAIL RCPT DATA");
        let optional = [
            (ext.chunking, "BDAT"),
            (true, "RSET NOOP QUIT"),
            (self.config.vrfy, "VRFY"),
            (self.config.expn, "EXPN"),
            (true, "HELP"),
            (ext.starttls && !self.tls_active, "STARTTLS"),
            (self.auth_offered && !self.authenticated, "AUTH"),
            (self.xclient, "XCLIENT"),
        ];
        for (on, words) in optional {
            if on {
                text.push(' ');
                text.push_str(words);
            }
        }
        Reply::built(214, crate::outbox::e(2, 0, 0), text)
    }

    /// The MAIL and RCPT parameters accepted now.
    pub(crate) fn params(&self) -> ParamSupport {
        let ext = &self.extensions;
        ParamSupport {
            size: ext.size,
            eight_bit_mime: ext.eight_bit_mime,
            binary_mime: ext.chunking && ext.binary_mime,
            smtputf8: ext.smtputf8,
            dsn: ext.dsn,
            auth: self.auth_offered,
            // Not offered yet: no EHLO keyword or Config switch for them.
            require_tls: ext.require_tls && self.tls_active,
            mt_priority: ext.mt_priority,
            deliver_by: ext.deliver_by,
            rrvs: ext.rrvs,
        }
    }
}

/// `SIZE n`, written into `out`, without the formatting machinery.
fn size_keyword(mut n: u64, out: &mut [u8; 25]) -> &str {
    let mut at = out.len();
    loop {
        at -= 1;
        out[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    at -= 5;
    out[at..at + 5].copy_from_slice(b"SIZE ");
    std::str::from_utf8(&out[at..]).unwrap_or("SIZE")
}
