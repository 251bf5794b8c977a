//! ESMTP parameters as filters see them: MAIL's and RCPT's go to the filter as the
//! arguments after the address (`SMFIC_MAIL`, `SMFIC_RCPT`), one `KEY=VALUE` (or `KEY`)
//! each, as Postfix passes them on; a filter's new sender may come with new ones
//! (`SMFIR_CHGFROM`'s second string), read here with the session's own parser.
//!
//! The session parsed the client's parameters, so they are written back in their canonical
//! form (`SIZE=1000` for `size=1000`, xtext re-encoded): the same parameters, not always
//! the same bytes. Their number and size are bounded by the command line's limit.

use smtp_session::params::{
    parse_mail_params, parse_rcpt_params, Body, DeliverByMode, MailParams, ParamSupport,
    RcptParams, Ret, RrvsAction,
};

/// MAIL's parameters, in the order RFC 1870, 6152, 6531, 3461, 4954, 8689, 6710 and 2852
/// defined them.
pub fn mail(params: &MailParams) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(size) = params.size {
        args.push(format!("SIZE={size}"));
    }
    if let Some(body) = params.body {
        let body = match body {
            Body::SevenBit => "7BIT",
            Body::EightBitMime => "8BITMIME",
            Body::BinaryMime => "BINARYMIME",
        };
        args.push(format!("BODY={body}"));
    }
    if params.smtputf8 {
        args.push("SMTPUTF8".into());
    }
    if let Some(ret) = params.ret {
        args.push(format!(
            "RET={}",
            if ret == Ret::Full { "FULL" } else { "HDRS" }
        ));
    }
    if let Some(envid) = &params.envid {
        args.push(format!("ENVID={}", xtext(envid)));
    }
    if let Some(auth) = &params.auth {
        args.push(format!("AUTH={}", xtext(auth)));
    }
    if params.require_tls {
        args.push("REQUIRETLS".into());
    }
    if let Some(priority) = params.mt_priority {
        args.push(format!("MT-PRIORITY={priority}"));
    }
    if let Some(by) = params.deliver_by {
        let mode = if by.mode == DeliverByMode::Notify {
            'N'
        } else {
            'R'
        };
        let trace = if by.trace { "T" } else { "" };
        args.push(format!("BY={};{mode}{trace}", by.seconds));
    }
    args
}

/// RCPT's parameters: NOTIFY, ORCPT (RFC 3461), RRVS (RFC 7293).
pub fn rcpt(params: &RcptParams) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(notify) = params.notify {
        let flags: Vec<&str> = [
            (notify.never, "NEVER"),
            (notify.success, "SUCCESS"),
            (notify.failure, "FAILURE"),
            (notify.delay, "DELAY"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        args.push(format!("NOTIFY={}", flags.join(",")));
    }
    if let Some(orcpt) = &params.orcpt {
        let address = if orcpt.addr_type.eq_ignore_ascii_case("utf-8") {
            utf8_xtext(&orcpt.address)
        } else {
            xtext(&orcpt.address)
        };
        args.push(format!("ORCPT={};{address}", orcpt.addr_type));
    }
    if let Some(rrvs) = params.rrvs {
        let action = if rrvs.action == RrvsAction::Continue {
            ";C"
        } else {
            ""
        };
        args.push(format!("RRVS={}{action}", rrvs.since));
    }
    args
}

/// The parameters a filter gave its new sender, read as the session reads MAIL's (every
/// extension on, `SIZE=` at most `max_size`): the reason in words when they are not valid.
pub fn sender(args: &str, max_size: u64) -> Result<MailParams, String> {
    // The session's parser takes what follows the path, from its first space.
    parse_mail_params(&format!(" {args}"), ParamSupport::ALL, max_size).map_err(|e| e.to_string())
}

/// The parameters a filter gave a recipient it added, read as the session reads RCPT's
/// (every extension on): the reason in words when they are not valid.
pub fn recipient(args: &str) -> Result<RcptParams, String> {
    parse_rcpt_params(&format!(" {args}"), ParamSupport::ALL).map_err(|e| e.to_string())
}

/// RFC 3461 xtext: `+`, `=` and bytes outside `!`..`~` as `+HH`.
fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'!'..=b'~' if byte != b'+' && byte != b'=' => out.push(byte as char),
            _ => out.push_str(&format!("+{byte:02X}")),
        }
    }
    out
}

/// RFC 6533 `utf-8-addr-xtext`: UTF-8 stays, and `+`, `=`, `\`, controls and spaces are
/// written `\x{HEX}`.
fn utf8_xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '+' | '=' | '\\' => out.push_str(&format!("\\x{{{:X}}}", c as u32)),
            c if c.is_ascii() && !c.is_ascii_graphic() => {
                out.push_str(&format!("\\x{{{:X}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_parameters_are_written_back_as_the_session_reads_them() {
        let params = sender(
            "size=1000 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=QQ+2B+3Dx AUTH=<> REQUIRETLS",
            10_000,
        )
        .unwrap();
        let args = mail(&params);
        assert_eq!(
            args,
            [
                "SIZE=1000",
                "BODY=8BITMIME",
                "SMTPUTF8",
                "RET=HDRS",
                "ENVID=QQ+2B+3Dx",
                "AUTH=<>",
                "REQUIRETLS"
            ]
        );
        assert_eq!(sender(&args.join(" "), 10_000).unwrap(), params);
    }

    #[test]
    fn a_filters_bad_parameters_are_refused_in_words() {
        for bad in [
            "SIZE=20000",
            "BODY=9BIT",
            "XFOO=1",
            "RET=FULL RET=HDRS",
            "ENVID",
        ] {
            assert!(sender(bad, 10_000).is_err(), "{bad}");
        }
        assert_eq!(sender("", 10_000).unwrap(), MailParams::default());
    }
}
