//! The envelope as the downstream gets it: the MAIL and RCPT command lines, with the
//! parameters the downstream advertised, and what the EHLO or LHLO reply advertised.
//!
//! Paths are written as the session parsed them, so quoted local parts and address
//! literals go on unchanged. Parameters follow the downstream's extensions: SIZE (the size
//! as sent), BODY, SMTPUTF8, the DSN ones (RET, ENVID, NOTIFY, ORCPT), REQUIRETLS,
//! MT-PRIORITY, BY and RRVS go on only when advertised; AUTH= never does (we do not
//! authenticate to the downstream). A message the downstream cannot take as it is (8-bit
//! content without 8BITMIME, SMTPUTF8 without SMTPUTF8, REQUIRETLS without TLS and
//! REQUIRETLS) is refused rather than changed.

use lettre::transport::smtp::extension::{MailParameter, RcptParameter};
use smtp_session::params::{Body, DeliverByMode, Ret, RrvsAction};
use smtp_session::{Envelope, Reply};

use crate::relay::reply;

/// The extensions of the downstream that change what we send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub size: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub require_tls: bool,
    pub mt_priority: bool,
    pub deliver_by: bool,
    pub rrvs: bool,
}

impl Capabilities {
    /// From the text lines of an EHLO or LHLO reply (the first names the server).
    pub fn from_hello<'a>(lines: impl IntoIterator<Item = &'a str>) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in lines.into_iter().skip(1) {
            let keyword = line.split_whitespace().next().unwrap_or("");
            let flag = match keyword.to_ascii_uppercase().as_str() {
                "SIZE" => &mut caps.size,
                "8BITMIME" => &mut caps.eight_bit_mime,
                "SMTPUTF8" => &mut caps.smtputf8,
                "DSN" => &mut caps.dsn,
                "REQUIRETLS" => &mut caps.require_tls,
                "MT-PRIORITY" => &mut caps.mt_priority,
                "DELIVERBY" => &mut caps.deliver_by,
                "RRVS" => &mut caps.rrvs,
                _ => continue,
            };
            *flag = true;
        }
        caps
    }
}

/// What the MAIL command needs to know besides the envelope.
#[derive(Clone, Copy, Debug)]
pub struct Leg {
    pub caps: Capabilities,
    /// TLS protects the connection to the downstream.
    pub encrypted: bool,
}

/// The facts of the message body that choose MAIL's parameters.
#[derive(Clone, Copy, Debug)]
pub struct BodyFacts {
    /// Octets as sent, the Received: field included.
    pub size: u64,
    /// A byte over 127 somewhere.
    pub eight_bit: bool,
}

/// `MAIL FROM:<path> params\r\n`, or the refusal for a message this downstream cannot take.
pub fn mail_line(envelope: &Envelope, body: BodyFacts, leg: Leg) -> Result<String, Reply> {
    let params = &envelope.mail_params;
    let caps = leg.caps;
    let mut out: Vec<String> = Vec::new();
    if caps.size {
        out.push(MailParameter::Size(body.size as usize).to_string());
    }
    content(envelope, body, leg, &mut out)?;
    if caps.dsn {
        if let Some(ret) = params.ret {
            out.push(format!(
                "RET={}",
                if ret == Ret::Full { "FULL" } else { "HDRS" }
            ));
        }
        if let Some(envid) = &params.envid {
            out.push(xtext("ENVID", envid));
        }
    }
    if let Some(priority) = params.mt_priority.filter(|_| caps.mt_priority) {
        out.push(format!("MT-PRIORITY={priority}"));
    }
    if let Some(by) = params.deliver_by.filter(|_| caps.deliver_by) {
        let mode = if by.mode == DeliverByMode::Notify {
            'N'
        } else {
            'R'
        };
        let trace = if by.trace { "T" } else { "" };
        out.push(format!("BY={};{mode}{trace}", by.seconds));
    }
    Ok(command(format!("MAIL FROM:<{}>", envelope.mail_from), &out))
}

/// The parameters that say what the content needs (`BODY=`, `SMTPUTF8`, `REQUIRETLS`),
/// or the refusal when the downstream cannot take it.
fn content(
    envelope: &Envelope,
    body: BodyFacts,
    leg: Leg,
    out: &mut Vec<String>,
) -> Result<(), Reply> {
    let params = &envelope.mail_params;
    let caps = leg.caps;
    if params.body == Some(Body::BinaryMime) {
        // Not advertised while relaying; DATA could not carry it.
        return Err(refused(554, "5.6.3 Binary content is not relayed"));
    }
    if body.eight_bit && !caps.eight_bit_mime {
        return Err(refused(
            554,
            "5.6.3 The next hop does not accept 8-bit content (8BITMIME)",
        ));
    }
    if caps.eight_bit_mime {
        if body.eight_bit || params.body == Some(Body::EightBitMime) {
            out.push("BODY=8BITMIME".into());
        } else if params.body == Some(Body::SevenBit) {
            out.push("BODY=7BIT".into());
        }
    }
    let utf8 = params.smtputf8
        || !envelope.mail_from.is_ascii()
        || envelope.recipients.iter().any(|r| !r.path.is_ascii());
    if utf8 {
        if !caps.smtputf8 {
            return Err(refused(
                550,
                "5.6.7 The next hop does not accept internationalized mail (SMTPUTF8)",
            ));
        }
        out.push("SMTPUTF8".into());
    }
    if params.require_tls {
        if !(leg.encrypted && caps.require_tls) {
            return Err(refused(550, "5.7.30 REQUIRETLS support required"));
        }
        out.push("REQUIRETLS".into());
    }
    Ok(())
}

/// `RCPT TO:<path> params\r\n` for the recipient at `index`.
pub fn rcpt_line(envelope: &Envelope, index: usize, leg: Leg) -> String {
    let rcpt = &envelope.recipients[index];
    let mut out: Vec<String> = Vec::new();
    if leg.caps.dsn {
        if let Some(notify) = rcpt.params.notify {
            let flags: Vec<&str> = [
                (notify.never, "NEVER"),
                (notify.success, "SUCCESS"),
                (notify.failure, "FAILURE"),
                (notify.delay, "DELAY"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect();
            out.push(format!("NOTIFY={}", flags.join(",")));
        }
        if let Some(orcpt) = &rcpt.params.orcpt {
            let value = format!("{};{}", orcpt.addr_type, orcpt.address);
            out.push(xtext("ORCPT", &value));
        }
    }
    if let Some(rrvs) = rcpt.params.rrvs.filter(|_| leg.caps.rrvs) {
        let continue_anyway = if rrvs.action == RrvsAction::Continue {
            ";C"
        } else {
            ""
        };
        out.push(format!("RRVS={}{continue_anyway}", rrvs.since));
    }
    command(format!("RCPT TO:<{}>", rcpt.path), &out)
}

fn command(mut line: String, params: &[String]) -> String {
    for param in params {
        line.push(' ');
        line.push_str(param);
    }
    line.push_str("\r\n");
    line
}

/// `KEYWORD=value` with the value encoded as xtext (RFC 3461) by lettre.
fn xtext(keyword: &str, value: &str) -> String {
    RcptParameter::Other {
        keyword: keyword.into(),
        value: Some(value.into()),
    }
    .to_string()
}

fn refused(code: u16, text: &str) -> Reply {
    Reply::new(code, text).unwrap_or_else(|_| reply::local_error())
}
