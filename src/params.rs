//! ESMTP parameters of MAIL and RCPT: SIZE (RFC 1870), BODY (RFC 6152,
//! RFC 3030), SMTPUTF8 (RFC 6531), RET/ENVID/NOTIFY/ORCPT (RFC 3461, with the
//! `utf-8` address type of RFC 6533) and AUTH (RFC 4954 section 5).

use std::fmt;

/// RFC 3461 section 4.4.
const MAX_ENVID: usize = 100;
/// RFC 3461 section 4.2.
const MAX_ORCPT: usize = 500;
/// RFC 1870 `size-value ::= 1*20DIGIT`.
const MAX_SIZE_DIGITS: usize = 20;

/// The `BODY=` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Body {
    /// `BODY=7BIT`
    SevenBit,
    /// `BODY=8BITMIME` (RFC 6152)
    EightBitMime,
    /// `BODY=BINARYMIME` (RFC 3030); the message must then come with BDAT.
    BinaryMime,
}

/// The `RET=` parameter: how much of the message a DSN should return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Ret {
    /// `RET=FULL`
    Full,
    /// `RET=HDRS`
    Headers,
}

/// The `NOTIFY=` parameter. `never` is never set together with another flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Notify {
    /// `NEVER`: no DSN at all.
    pub never: bool,
    /// `SUCCESS`
    pub success: bool,
    /// `FAILURE`
    pub failure: bool,
    /// `DELAY`
    pub delay: bool,
}

/// The `ORCPT=` parameter: the recipient as originally given.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Orcpt {
    /// The address type as sent, such as `rfc822` or `utf-8`.
    pub addr_type: String,
    /// The decoded address (xtext, or for `utf-8` also RFC 6533 unitext).
    pub address: String,
}

/// Parameters of `MAIL FROM`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MailParams {
    /// `SIZE=`: the size the client declares.
    pub size: Option<u64>,
    /// `BODY=`
    pub body: Option<Body>,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
    /// `RET=`
    pub ret: Option<Ret>,
    /// `ENVID=`, xtext-decoded.
    pub envid: Option<String>,
    /// `AUTH=`, xtext-decoded: a mailbox or `<>`.
    pub auth: Option<String>,
}

/// Parameters of `RCPT TO`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RcptParams {
    /// `NOTIFY=`
    pub notify: Option<Notify>,
    /// `ORCPT=`
    pub orcpt: Option<Orcpt>,
}

/// Which parameters the server accepts (mirrors what it advertises in EHLO).
#[derive(Clone, Copy, Debug)]
pub struct ParamSupport {
    /// SIZE (RFC 1870): `SIZE=`.
    pub size: bool,
    /// 8BITMIME (RFC 6152): `BODY=8BITMIME` and `BODY=7BIT`.
    pub eight_bit_mime: bool,
    /// BINARYMIME (RFC 3030): `BODY=BINARYMIME` and `BODY=7BIT`.
    pub binary_mime: bool,
    /// SMTPUTF8 (RFC 6531): `SMTPUTF8`.
    pub smtputf8: bool,
    /// DSN (RFC 3461): `RET=`, `ENVID=`, `NOTIFY=`, `ORCPT=`.
    pub dsn: bool,
    /// AUTH (RFC 4954): `AUTH=`.
    pub auth: bool,
}

/// Why the parameters were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamError {
    /// Malformed parameter, or a bad value for a known one.
    Syntax,
    /// A keyword the server does not know or has not advertised.
    Unknown,
    /// The same keyword twice.
    Duplicate,
    /// `SIZE=` is over the server's limit.
    SizeExceeded,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamError::Syntax => "parameter syntax error",
            ParamError::Unknown => "unrecognised parameter",
            ParamError::Duplicate => "duplicate parameter",
            ParamError::SizeExceeded => "message size exceeds limit",
        })
    }
}

impl std::error::Error for ParamError {}

/// Parses the parameters after the reverse path of `MAIL FROM`.
///
/// `raw` is everything after the `>`; it may be empty or start with spaces,
/// and parameters are separated by one or more spaces. `max_size` is the
/// limit for `SIZE=` (pass `u64::MAX` for none).
///
/// # Errors
///
/// For the first offending parameter, left to right:
/// [`ParamError::Unknown`] for a keyword that is not known or whose extension
/// is switched off in `support` (and for `BODY=8BITMIME` / `BODY=BINARYMIME`
/// when only the other extension is on), [`ParamError::Duplicate`] for a
/// repeated keyword, [`ParamError::SizeExceeded`] for `SIZE=` over
/// `max_size`, and [`ParamError::Syntax`] for everything malformed.
pub fn parse_mail_params(
    raw: &str,
    support: ParamSupport,
    max_size: u64,
) -> Result<MailParams, ParamError> {
    let mut params = MailParams::default();
    for token in tokens(raw) {
        let (keyword, value) = split_param(token)?;
        if keyword.eq_ignore_ascii_case("SIZE") {
            require(support.size, params.size.is_some())?;
            let size = parse_size(required(value)?)?;
            if size > max_size {
                return Err(ParamError::SizeExceeded);
            }
            params.size = Some(size);
        } else if keyword.eq_ignore_ascii_case("BODY") {
            require(
                support.eight_bit_mime || support.binary_mime,
                params.body.is_some(),
            )?;
            let value = required(value)?;
            let (body, supported) = if value.eq_ignore_ascii_case("7BIT") {
                (Body::SevenBit, true)
            } else if value.eq_ignore_ascii_case("8BITMIME") {
                (Body::EightBitMime, support.eight_bit_mime)
            } else if value.eq_ignore_ascii_case("BINARYMIME") {
                (Body::BinaryMime, support.binary_mime)
            } else {
                return Err(ParamError::Syntax);
            };
            if !supported {
                return Err(ParamError::Unknown);
            }
            params.body = Some(body);
        } else if keyword.eq_ignore_ascii_case("SMTPUTF8") {
            require(support.smtputf8, params.smtputf8)?;
            if value.is_some() {
                return Err(ParamError::Syntax);
            }
            params.smtputf8 = true;
        } else if keyword.eq_ignore_ascii_case("RET") {
            require(support.dsn, params.ret.is_some())?;
            let value = required(value)?;
            params.ret = Some(if value.eq_ignore_ascii_case("FULL") {
                Ret::Full
            } else if value.eq_ignore_ascii_case("HDRS") {
                Ret::Headers
            } else {
                return Err(ParamError::Syntax);
            });
        } else if keyword.eq_ignore_ascii_case("ENVID") {
            require(support.dsn, params.envid.is_some())?;
            let envid = decode_printable(required(value)?, false)?;
            if envid.chars().count() > MAX_ENVID {
                return Err(ParamError::Syntax);
            }
            params.envid = Some(envid);
        } else if keyword.eq_ignore_ascii_case("AUTH") {
            require(support.auth, params.auth.is_some())?;
            params.auth = Some(decode_printable(required(value)?, false)?);
        } else {
            return Err(ParamError::Unknown);
        }
    }
    Ok(params)
}

/// Parses the parameters after the forward path of `RCPT TO`.
///
/// `raw` is everything after the `>`; it may be empty or start with spaces,
/// and parameters are separated by one or more spaces.
///
/// # Errors
///
/// For the first offending parameter, left to right:
/// [`ParamError::Unknown`] for a keyword that is not known or whose extension
/// is switched off in `support`, [`ParamError::Duplicate`] for a repeated
/// keyword, and [`ParamError::Syntax`] for everything malformed.
pub fn parse_rcpt_params(raw: &str, support: ParamSupport) -> Result<RcptParams, ParamError> {
    let mut params = RcptParams::default();
    for token in tokens(raw) {
        let (keyword, value) = split_param(token)?;
        if keyword.eq_ignore_ascii_case("NOTIFY") {
            require(support.dsn, params.notify.is_some())?;
            params.notify = Some(parse_notify(required(value)?)?);
        } else if keyword.eq_ignore_ascii_case("ORCPT") {
            require(support.dsn, params.orcpt.is_some())?;
            params.orcpt = Some(parse_orcpt(required(value)?)?);
        } else {
            return Err(ParamError::Unknown);
        }
    }
    Ok(params)
}

/// Decodes RFC 3461 xtext: `+XX` stands for the byte with hex value `XX`,
/// every other character must be printable ASCII other than `+` and `=`.
///
/// Lower-case hex digits are accepted although the RFC asks for upper case,
/// because rejecting them gains nothing. Returns `None` for malformed xtext
/// or when the decoded bytes are not UTF-8.
#[must_use]
pub fn decode_xtext(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(hex_byte(bytes.get(i + 1..i + 3)?)?);
                i += 3;
            }
            b'=' => return None,
            33..=126 => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Parameters separated by one or more spaces; empty pieces are gaps.
fn tokens(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(' ').filter(|t| !t.is_empty())
}

/// Splits `KEY[=VALUE]` and checks the generic RFC 5321 esmtp-param grammar
/// (values may also hold UTF-8, RFC 6531).
fn split_param(token: &str) -> Result<(&str, Option<&str>), ParamError> {
    let (keyword, value) = match token.split_once('=') {
        Some((keyword, value)) => (keyword, Some(value)),
        None => (token, None),
    };
    let keyword_ok = keyword
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && keyword
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !keyword_ok {
        return Err(ParamError::Syntax);
    }
    if let Some(value) = value {
        let value_ok = !value.is_empty()
            && value
                .bytes()
                .all(|b| matches!(b, 33..=60 | 62..=126) || !b.is_ascii());
        if !value_ok {
            return Err(ParamError::Syntax);
        }
    }
    Ok((keyword, value))
}

/// Unknown beats Duplicate: a repeated keyword the server never advertised
/// is still one it does not know.
fn require(supported: bool, already_seen: bool) -> Result<(), ParamError> {
    if !supported {
        Err(ParamError::Unknown)
    } else if already_seen {
        Err(ParamError::Duplicate)
    } else {
        Ok(())
    }
}

fn required(value: Option<&str>) -> Result<&str, ParamError> {
    value.ok_or(ParamError::Syntax)
}

/// A value of more than 20 digits is malformed; one of up to 20 digits that
/// does not fit a u64 is well-formed but certainly over any limit.
fn parse_size(value: &str) -> Result<u64, ParamError> {
    if value.len() > MAX_SIZE_DIGITS || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParamError::Syntax);
    }
    value
        .bytes()
        .try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(ParamError::SizeExceeded)
}

fn parse_notify(value: &str) -> Result<Notify, ParamError> {
    if value.eq_ignore_ascii_case("NEVER") {
        return Ok(Notify {
            never: true,
            ..Notify::default()
        });
    }
    let mut notify = Notify::default();
    for item in value.split(',') {
        // Repeats such as SUCCESS,SUCCESS are harmless and the grammar allows them.
        if item.eq_ignore_ascii_case("SUCCESS") {
            notify.success = true;
        } else if item.eq_ignore_ascii_case("FAILURE") {
            notify.failure = true;
        } else if item.eq_ignore_ascii_case("DELAY") {
            notify.delay = true;
        } else {
            // Includes NEVER inside a list, which RFC 3461 forbids.
            return Err(ParamError::Syntax);
        }
    }
    Ok(notify)
}

fn parse_orcpt(value: &str) -> Result<Orcpt, ParamError> {
    let (addr_type, encoded) = value.split_once(';').ok_or(ParamError::Syntax)?;
    let type_ok = !addr_type.is_empty()
        && addr_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b));
    if !type_ok {
        return Err(ParamError::Syntax);
    }
    let utf8_type = addr_type.eq_ignore_ascii_case("utf-8");
    let address = decode_printable(encoded, utf8_type)?;
    if address.is_empty() || address.chars().count() > MAX_ORCPT {
        return Err(ParamError::Syntax);
    }
    Ok(Orcpt {
        addr_type: addr_type.to_owned(),
        address,
    })
}

/// Decodes a value that ends up in DSN header fields, where a decoded CR or
/// LF would let the client inject header lines (RFC 3461 also requires
/// printable characters). `unitext` additionally accepts the RFC 6533
/// encoding of the `utf-8` address type: raw UTF-8 and `\x{HEX}` escapes.
fn decode_printable(value: &str, unitext: bool) -> Result<String, ParamError> {
    let decoded = if unitext {
        decode_unitext(value)
    } else {
        decode_xtext(value)
    }
    .ok_or(ParamError::Syntax)?;
    if decoded.chars().any(char::is_control) {
        return Err(ParamError::Syntax);
    }
    Ok(decoded)
}

/// RFC 6533 utf-8-addr-unitext / utf-8-addr-xtext. `+XX` is accepted too,
/// since senders that predate RFC 6533 encode every ORCPT as plain xtext.
fn decode_unitext(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if let Some(tail) = rest.strip_prefix("\\x{") {
            let close = tail.find('}')?;
            let hex = tail.get(..close)?;
            if hex.is_empty() || hex.len() > 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let decoded = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
            out.extend_from_slice(decoded.encode_utf8(&mut [0; 4]).as_bytes());
            rest = tail.get(close + 1..)?;
        } else if let Some(tail) = rest.strip_prefix('+') {
            out.push(hex_byte(tail.as_bytes().get(..2)?)?);
            rest = tail.get(2..)?;
        } else if c == '=' || c == '\\' || (c.is_ascii() && !c.is_ascii_graphic()) {
            return None;
        } else {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            rest = rest.get(c.len_utf8()..)?;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let [hi, lo] = pair else { return None };
    Some(hex_digit(*hi)? << 4 | hex_digit(*lo)?)
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: ParamSupport = ParamSupport {
        size: true,
        eight_bit_mime: true,
        binary_mime: true,
        smtputf8: true,
        dsn: true,
        auth: true,
    };
    const NONE: ParamSupport = ParamSupport {
        size: false,
        eight_bit_mime: false,
        binary_mime: false,
        smtputf8: false,
        dsn: false,
        auth: false,
    };

    fn mail(raw: &str) -> Result<MailParams, ParamError> {
        parse_mail_params(raw, ALL, 1_000_000)
    }

    fn rcpt(raw: &str) -> Result<RcptParams, ParamError> {
        parse_rcpt_params(raw, ALL)
    }

    #[test]
    fn empty_and_whitespace_only() {
        for raw in ["", " ", "   "] {
            assert_eq!(mail(raw), Ok(MailParams::default()));
            assert_eq!(rcpt(raw), Ok(RcptParams::default()));
            assert_eq!(parse_mail_params(raw, NONE, 0), Ok(MailParams::default()));
        }
    }

    #[test]
    fn all_mail_params_together() {
        let params =
            mail("  size=1000   BODY=8bitmime SMTPUTF8 ret=hdrs ENVID=QQ+2B+3Dx AUTH=<>").unwrap();
        assert_eq!(
            params,
            MailParams {
                size: Some(1000),
                body: Some(Body::EightBitMime),
                smtputf8: true,
                ret: Some(Ret::Headers),
                envid: Some("QQ+=x".into()),
                auth: Some("<>".into()),
            }
        );
    }

    #[test]
    fn size() {
        assert_eq!(mail(" SIZE=0").unwrap().size, Some(0));
        assert_eq!(mail(" SIZE=000123").unwrap().size, Some(123));
        assert_eq!(mail(" SIZE=1000000").unwrap().size, Some(1_000_000));
        assert_eq!(mail(" SIZE=1000001"), Err(ParamError::SizeExceeded));
        assert_eq!(
            parse_mail_params(" SIZE=18446744073709551615", ALL, u64::MAX)
                .unwrap()
                .size,
            Some(u64::MAX)
        );
        // 20 digits but over u64::MAX: well-formed, just too big.
        assert_eq!(
            parse_mail_params(" SIZE=18446744073709551616", ALL, u64::MAX),
            Err(ParamError::SizeExceeded)
        );
        assert_eq!(
            parse_mail_params(" SIZE=99999999999999999999", ALL, u64::MAX),
            Err(ParamError::SizeExceeded)
        );
        assert_eq!(mail(" SIZE=000000000000000000001"), Err(ParamError::Syntax));
        for bad in [
            " SIZE",
            " SIZE=",
            " SIZE=-1",
            " SIZE=+1",
            " SIZE=1k",
            " SIZE=1.5",
            " SIZE=١٢",
        ] {
            assert_eq!(mail(bad), Err(ParamError::Syntax), "{bad:?}");
        }
        assert_eq!(mail(" SIZE=1 SIZE=1"), Err(ParamError::Duplicate));
    }

    #[test]
    fn body() {
        assert_eq!(mail(" BODY=7BIT").unwrap().body, Some(Body::SevenBit));
        assert_eq!(
            mail(" body=8BitMime").unwrap().body,
            Some(Body::EightBitMime)
        );
        assert_eq!(
            mail(" BODY=BINARYMIME").unwrap().body,
            Some(Body::BinaryMime)
        );
        assert_eq!(mail(" BODY=8BIT"), Err(ParamError::Syntax));
        assert_eq!(mail(" BODY"), Err(ParamError::Syntax));
        assert_eq!(mail(" BODY=7BIT BODY=7BIT"), Err(ParamError::Duplicate));

        let only_8bit = ParamSupport {
            binary_mime: false,
            ..ALL
        };
        assert_eq!(
            parse_mail_params(" BODY=BINARYMIME", only_8bit, 1),
            Err(ParamError::Unknown)
        );
        assert!(parse_mail_params(" BODY=7BIT", only_8bit, 1).is_ok());
        let only_binary = ParamSupport {
            eight_bit_mime: false,
            ..ALL
        };
        assert_eq!(
            parse_mail_params(" BODY=8BITMIME", only_binary, 1),
            Err(ParamError::Unknown)
        );
        assert!(parse_mail_params(" BODY=BINARYMIME", only_binary, 1).is_ok());
        assert!(parse_mail_params(" BODY=7BIT", only_binary, 1).is_ok());
        assert_eq!(
            parse_mail_params(" BODY=7BIT", NONE, 1),
            Err(ParamError::Unknown)
        );
    }

    #[test]
    fn smtputf8() {
        assert!(mail(" SMTPUTF8").unwrap().smtputf8);
        assert!(mail(" smtputf8").unwrap().smtputf8);
        assert_eq!(mail(" SMTPUTF8=yes"), Err(ParamError::Syntax));
        assert_eq!(mail(" SMTPUTF8 SMTPUTF8"), Err(ParamError::Duplicate));
        assert_eq!(
            parse_mail_params(" SMTPUTF8", NONE, 1),
            Err(ParamError::Unknown)
        );
    }

    #[test]
    fn ret_and_envid() {
        assert_eq!(mail(" RET=FULL").unwrap().ret, Some(Ret::Full));
        assert_eq!(mail(" RET=hdrs").unwrap().ret, Some(Ret::Headers));
        assert_eq!(mail(" RET=NONE"), Err(ParamError::Syntax));
        assert_eq!(mail(" RET=FULL RET=HDRS"), Err(ParamError::Duplicate));
        assert_eq!(
            mail(" ENVID=abc+2Bdef").unwrap().envid.as_deref(),
            Some("abc+def")
        );
        assert_eq!(
            mail(&format!(" ENVID={}", "e".repeat(100)))
                .unwrap()
                .envid
                .map(|e| e.len()),
            Some(100)
        );
        assert_eq!(
            mail(&format!(" ENVID={}", "e".repeat(101))),
            Err(ParamError::Syntax)
        );
        // The limit is on the decoded value.
        assert!(mail(&format!(" ENVID={}", "+41".repeat(100))).is_ok());
        assert_eq!(mail(" ENVID=a+2"), Err(ParamError::Syntax));
        assert_eq!(mail(" ENVID=a+0D+0AInjected:x"), Err(ParamError::Syntax));
        assert_eq!(mail(" ENVID=a ENVID=b"), Err(ParamError::Duplicate));
        let no_dsn = ParamSupport { dsn: false, ..ALL };
        assert_eq!(
            parse_mail_params(" RET=FULL", no_dsn, 1),
            Err(ParamError::Unknown)
        );
        assert_eq!(
            parse_mail_params(" ENVID=x", no_dsn, 1),
            Err(ParamError::Unknown)
        );
    }

    #[test]
    fn auth() {
        assert_eq!(mail(" AUTH=<>").unwrap().auth.as_deref(), Some("<>"));
        assert_eq!(
            mail(" AUTH=e+3Dmc2@example.com").unwrap().auth.as_deref(),
            Some("e=mc2@example.com")
        );
        assert_eq!(mail(" AUTH="), Err(ParamError::Syntax));
        assert_eq!(mail(" AUTH=a+ZZ"), Err(ParamError::Syntax));
        assert_eq!(mail(" AUTH=<> AUTH=<>"), Err(ParamError::Duplicate));
        let no_auth = ParamSupport { auth: false, ..ALL };
        assert_eq!(
            parse_mail_params(" AUTH=<>", no_auth, 1),
            Err(ParamError::Unknown)
        );
    }

    #[test]
    fn unknown_and_disabled_keywords() {
        assert_eq!(mail(" FOO"), Err(ParamError::Unknown));
        assert_eq!(mail(" X-FOO=bar"), Err(ParamError::Unknown));
        assert_eq!(mail(" NOTIFY=NEVER"), Err(ParamError::Unknown));
        assert_eq!(rcpt(" SIZE=1"), Err(ParamError::Unknown));
        assert_eq!(
            parse_mail_params(" SIZE=1", NONE, 10),
            Err(ParamError::Unknown)
        );
        assert_eq!(
            parse_mail_params(" SIZE=1 SIZE=1", NONE, 10),
            Err(ParamError::Unknown)
        );
    }

    #[test]
    fn generic_syntax() {
        for bad in [
            " =1",
            " -SIZE=1",
            " SI_ZE=1",
            " SIZE==1",
            " SIZE=1=2",
            " SIZE=\t1",
            "\tSIZE=1",
            " SIZE=1\t",
            " FOO=a\u{7f}",
            " FOO=a\u{0}",
        ] {
            assert_eq!(mail(bad), Err(ParamError::Syntax), "{bad:?}");
        }
        // First error wins, left to right.
        assert_eq!(mail(" FOO SIZE=x"), Err(ParamError::Unknown));
        assert_eq!(mail(" SIZE=x FOO"), Err(ParamError::Syntax));
        // Non-ASCII is allowed in values (RFC 6531) but never in keywords.
        assert_eq!(mail(" X-ÜBER=ü"), Err(ParamError::Syntax));
        assert_eq!(mail(" X-UBER=ü"), Err(ParamError::Unknown));
    }

    #[test]
    fn notify() {
        let n = |raw: &str| rcpt(raw).map(|p| p.notify);
        assert_eq!(
            n(" NOTIFY=NEVER"),
            Ok(Some(Notify {
                never: true,
                ..Notify::default()
            }))
        );
        assert_eq!(
            n(" notify=success,Failure,DELAY"),
            Ok(Some(Notify {
                never: false,
                success: true,
                failure: true,
                delay: true
            }))
        );
        assert_eq!(
            n(" NOTIFY=DELAY"),
            Ok(Some(Notify {
                delay: true,
                ..Notify::default()
            }))
        );
        assert_eq!(
            n(" NOTIFY=SUCCESS,SUCCESS"),
            Ok(Some(Notify {
                success: true,
                ..Notify::default()
            }))
        );
        for bad in [
            " NOTIFY",
            " NOTIFY=",
            " NOTIFY=NEVER,SUCCESS",
            " NOTIFY=SUCCESS,NEVER",
            " NOTIFY=SUCCESS,",
            " NOTIFY=,SUCCESS",
            " NOTIFY=SUCCESS,,DELAY",
            " NOTIFY=ALWAYS",
        ] {
            assert_eq!(n(bad), Err(ParamError::Syntax), "{bad:?}");
        }
        assert_eq!(
            rcpt(" NOTIFY=NEVER NOTIFY=NEVER"),
            Err(ParamError::Duplicate)
        );
        assert_eq!(
            parse_rcpt_params(" NOTIFY=NEVER", NONE),
            Err(ParamError::Unknown)
        );
    }

    #[test]
    fn orcpt() {
        let o = |raw: &str| rcpt(raw).map(|p| p.orcpt);
        assert_eq!(
            o(" ORCPT=rfc822;user+2Btag@example.com"),
            Ok(Some(Orcpt {
                addr_type: "rfc822".into(),
                address: "user+tag@example.com".into()
            }))
        );
        assert_eq!(o(" ORCPT=RFC822;a@b").unwrap().unwrap().addr_type, "RFC822");
        // RFC 6533 unitext, escapes and pre-6533 xtext under the utf-8 type.
        assert_eq!(
            o(" ORCPT=utf-8;用户@例子.广告").unwrap().unwrap().address,
            "用户@例子.广告"
        );
        assert_eq!(
            o(" ORCPT=UTF-8;caf\\x{E9}@x").unwrap().unwrap().address,
            "café@x"
        );
        assert_eq!(
            o(" ORCPT=utf-8;a\\x{2B}b@x").unwrap().unwrap().address,
            "a+b@x"
        );
        assert_eq!(
            o(" ORCPT=utf-8;caf+C3+A9@x").unwrap().unwrap().address,
            "café@x"
        );
        for bad in [
            " ORCPT=utf-8;a\\x{}@x",
            " ORCPT=utf-8;a\\x{1234567}@x",
            " ORCPT=utf-8;a\\x{D800}@x",
            " ORCPT=utf-8;a\\x{E9@x",
            " ORCPT=utf-8;a\\y@x",
            " ORCPT=utf-8;a\\x{0A}@x",
            " ORCPT=utf-8;a+E9@x",
        ] {
            assert_eq!(o(bad), Err(ParamError::Syntax), "{bad:?}");
        }
        // Raw UTF-8 is only for the utf-8 type; rfc822 is plain xtext.
        assert_eq!(o(" ORCPT=rfc822;用户@x"), Err(ParamError::Syntax));
        for bad in [
            " ORCPT",
            " ORCPT=",
            " ORCPT=rfc822",
            " ORCPT=;a@b",
            " ORCPT=rfc822;",
            " ORCPT=rf(c;a@b",
            " ORCPT=rfc822;a+0Db",
            " ORCPT=rfc822;a+zz",
        ] {
            assert_eq!(o(bad), Err(ParamError::Syntax), "{bad:?}");
        }
        assert!(o(&format!(" ORCPT=rfc822;{}", "a".repeat(500))).is_ok());
        assert_eq!(
            o(&format!(" ORCPT=rfc822;{}", "a".repeat(501))),
            Err(ParamError::Syntax)
        );
        assert_eq!(
            rcpt(" ORCPT=rfc822;a@b ORCPT=rfc822;a@b"),
            Err(ParamError::Duplicate)
        );
        assert_eq!(
            parse_rcpt_params(" ORCPT=rfc822;a@b", NONE),
            Err(ParamError::Unknown)
        );
    }

    #[test]
    fn rcpt_both() {
        assert_eq!(
            rcpt(" NOTIFY=FAILURE ORCPT=rfc822;a@b"),
            Ok(RcptParams {
                notify: Some(Notify {
                    failure: true,
                    ..Notify::default()
                }),
                orcpt: Some(Orcpt {
                    addr_type: "rfc822".into(),
                    address: "a@b".into()
                }),
            })
        );
    }

    #[test]
    fn xtext() {
        assert_eq!(decode_xtext("").as_deref(), Some(""));
        assert_eq!(decode_xtext("abc").as_deref(), Some("abc"));
        assert_eq!(decode_xtext("a+2Bb+3Dc").as_deref(), Some("a+b=c"));
        assert_eq!(decode_xtext("a+2bb+3dc").as_deref(), Some("a+b=c"));
        assert_eq!(decode_xtext("+20").as_deref(), Some(" "));
        assert_eq!(decode_xtext("+C3+A9").as_deref(), Some("é"));
        assert_eq!(decode_xtext("!~<>").as_deref(), Some("!~<>"));
        for bad in [
            "+", "+2", "+2G", "a=b", "a b", "é", "\u{7f}", "+C3", "+FF", "a\tb", "+ 2B",
        ] {
            assert_eq!(decode_xtext(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn error_display() {
        assert_eq!(ParamError::Duplicate.to_string(), "duplicate parameter");
        assert_eq!(
            ParamError::SizeExceeded.to_string(),
            "message size exceeds limit"
        );
    }

    #[test]
    fn arbitrary_strings_never_panic() {
        let pieces = [
            "SIZE",
            "BODY",
            "=",
            " ",
            "+",
            "+4",
            "+41",
            "7BIT",
            "NOTIFY",
            "ORCPT",
            "utf-8;",
            ";",
            ",",
            "\\x{",
            "}",
            "E9",
            "é",
            "NEVER",
            "SUCCESS",
            "ENVID",
            "AUTH",
            "SMTPUTF8",
            "RET",
            "\t",
            "99999999999",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut raw = String::new();
            for _ in 0..(seed % 12) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                raw.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            seed = seed.wrapping_add(0x632b_e59b_d9b4_e019);
            let _ = parse_mail_params(&raw, ALL, 100);
            let _ = parse_rcpt_params(&raw, ALL);
            let _ = decode_xtext(&raw);
            let _ = decode_unitext(&raw);
        }
    }
}
