//! ESMTP parameters of MAIL and RCPT: SIZE (RFC 1870), BODY (RFC 6152,
//! RFC 3030), SMTPUTF8 (RFC 6531), RET/ENVID/NOTIFY/ORCPT (RFC 3461, with the
//! `utf-8` address type of RFC 6533), AUTH (RFC 4954 section 5), and the
//! opt-in REQUIRETLS (RFC 8689), MT-PRIORITY (RFC 6710), BY (DELIVERBY,
//! RFC 2852) and RRVS (RFC 7293).
//!
//! A parameter given twice with the same meaning (`SMTPUTF8 SMTPUTF8`, as
//! Python's smtplib sends it) is accepted; given twice with different values
//! it is [`ParamError::Duplicate`].

use std::fmt;

/// RFC 3461 section 4.4.
const MAX_ENVID: usize = 100;
/// RFC 3461 section 4.2.
const MAX_ORCPT: usize = 500;
/// RFC 1870 `size-value ::= 1*20DIGIT`.
const MAX_SIZE_DIGITS: usize = 20;
/// RFC 2852 section 4: `by-time = ["-" / "+"] 1*9digit`.
const MAX_BY_TIME_DIGITS: usize = 9;

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
#[non_exhaustive]
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
    /// `REQUIRETLS` (RFC 8689) was given: the message must only travel over TLS.
    pub require_tls: bool,
    /// `MT-PRIORITY=` (RFC 6710): -9 (lowest) to 9 (highest).
    pub mt_priority: Option<i8>,
    /// `BY=` (DELIVERBY, RFC 2852).
    pub deliver_by: Option<DeliverBy>,
}

/// Parameters of `RCPT TO`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RcptParams {
    /// `NOTIFY=`
    pub notify: Option<Notify>,
    /// `ORCPT=`
    pub orcpt: Option<Orcpt>,
    /// `RRVS=` (RFC 7293).
    pub rrvs: Option<Rrvs>,
}

/// The `BY=` parameter of DELIVERBY (RFC 2852): deliver within `seconds` of
/// the message's arrival, or act as `mode` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DeliverBy {
    /// The `by-time`, in seconds, -999999999..=999999999. Zero or negative
    /// (the deadline has passed already) only with [`DeliverByMode::Notify`].
    pub seconds: i32,
    /// What to do when the deadline passes.
    pub mode: DeliverByMode,
    /// `T`: the client asks for trace DSNs from every hop (RFC 2852 section 4).
    pub trace: bool,
}

/// The `by-mode` of [`DeliverBy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum DeliverByMode {
    /// `N`: send a delay DSN when the deadline passes, and keep trying.
    Notify,
    /// `R`: give up and return the message when the deadline passes.
    Return,
}

/// The `RRVS=` parameter (RFC 7293): deliver only if the mailbox has belonged
/// to the same user since `since`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Rrvs {
    /// When the sender last knew the mailbox's owner.
    pub since: DateTime,
    /// What to do when continuity cannot be checked. `Reject` when the
    /// client named none.
    pub action: RrvsAction,
}

/// What a server that cannot check [`Rrvs`] continuity does with the message
/// (RFC 7293 section 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum RrvsAction {
    /// `;C`: deliver anyway.
    Continue,
    /// `;R` or nothing: refuse the recipient.
    Reject,
}

/// An RFC 3339 `date-time`, as RRVS carries it: the fields as written, with
/// the fraction of a second kept to nanoseconds.
///
/// Displays in RFC 3339 form (upper-case `T`, `Z` for a zero offset, the
/// fraction without trailing zeros), and serialises as that text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DateTime {
    /// 0..=9999.
    pub year: u16,
    /// 1..=12.
    pub month: u8,
    /// 1..=28, 29, 30 or 31, as the month and year allow.
    pub day: u8,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=60; 60 is a leap second.
    pub second: u8,
    /// 0..=999_999_999: digits of the fraction past the ninth are dropped.
    pub nanosecond: u32,
    /// The offset from UTC in minutes, -1439..=1439 (`Z` and `-00:00` are 0).
    pub offset_minutes: i16,
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
    /// REQUIRETLS (RFC 8689): `REQUIRETLS`. RFC 8689 offers it only on a
    /// connection that TLS protects.
    pub require_tls: bool,
    /// MT-PRIORITY (RFC 6710): `MT-PRIORITY=`.
    pub mt_priority: bool,
    /// DELIVERBY (RFC 2852): `BY=`.
    pub deliver_by: bool,
    /// RRVS (RFC 7293): `RRVS=` on RCPT.
    pub rrvs: bool,
}

impl ParamSupport {
    /// Every parameter accepted, as for a peer that advertises every extension (a filter's
    /// change of sender is read so).
    pub const ALL: ParamSupport = ParamSupport {
        size: true,
        eight_bit_mime: true,
        binary_mime: true,
        smtputf8: true,
        dsn: true,
        auth: true,
        require_tls: true,
        mt_priority: true,
        deliver_by: true,
        rrvs: true,
    };

    /// Octets the parameters switched on here may add to a command line beyond
    /// RFC 5321's 512, as each extension's RFC counts them: SIZE 26, SMTPUTF8
    /// 10, DSN 600 (ORCPT's 500 and NOTIFY on RCPT; RET and ENVID on MAIL),
    /// AUTH 500, REQUIRETLS 11 (` REQUIRETLS`), MT-PRIORITY 15
    /// (` MT-PRIORITY=-9`), DELIVERBY 17 (` BY=-999999999;RT`) and RRVS 43
    /// (` RRVS=` and an RFC 3339 time with nanoseconds, an offset and `;C`).
    #[must_use]
    pub fn line_allowance(&self) -> usize {
        [
            (self.size, 26),
            (self.smtputf8, 10),
            (self.dsn, 600),
            (self.auth, 500),
            (self.require_tls, 11),
            (self.mt_priority, 15),
            (self.deliver_by, 17),
            (self.rrvs, 43),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, octets)| octets)
        .sum()
    }
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
/// when only the other extension is on), [`ParamError::Syntax`] for a
/// malformed parameter or value, [`ParamError::SizeExceeded`] for `SIZE=`
/// over `max_size`, and [`ParamError::Duplicate`] for a keyword repeated with
/// a different value (a repeat with the same value is accepted).
pub fn parse_mail_params(
    raw: &str,
    support: ParamSupport,
    max_size: u64,
) -> Result<MailParams, ParamError> {
    let mut params = MailParams::default();
    for token in tokens(raw) {
        mail_param(&mut params, token, support, max_size)?;
    }
    Ok(params)
}

/// One parameter of `MAIL FROM`, out of line: most commands carry none or one, and the
/// loop over them stays small.
#[inline(never)]
fn mail_param(
    params: &mut MailParams,
    token: &str,
    support: ParamSupport,
    max_size: u64,
) -> Result<(), ParamError> {
    let (keyword, value) = split_param(token)?;
    let is = |name: &str| keyword.eq_ignore_ascii_case(name);
    if is("SIZE") {
        supported(support.size)?;
        let size = parse_size(required(value)?)?;
        if size > max_size {
            return Err(ParamError::SizeExceeded);
        }
        set_once(&mut params.size, size)?;
    } else if is("BODY") {
        supported(support.eight_bit_mime || support.binary_mime)?;
        let body = parse_body(required(value)?, support)?;
        set_once(&mut params.body, body)?;
    } else if is("SMTPUTF8") {
        supported(support.smtputf8)?;
        params.smtputf8 = flag(value)?;
    } else if is("RET") {
        supported(support.dsn)?;
        let ret = parse_ret(required(value)?)?;
        set_once(&mut params.ret, ret)?;
    } else if is("ENVID") {
        supported(support.dsn)?;
        let envid = decode_printable(required(value)?, false)?;
        if envid.chars().count() > MAX_ENVID {
            return Err(ParamError::Syntax);
        }
        set_once(&mut params.envid, envid)?;
    } else if is("AUTH") {
        supported(support.auth)?;
        let auth = decode_printable(required(value)?, false)?;
        set_once(&mut params.auth, auth)?;
    } else if is("REQUIRETLS") {
        supported(support.require_tls)?;
        params.require_tls = flag(value)?;
    } else if is("MT-PRIORITY") {
        supported(support.mt_priority)?;
        let priority = parse_priority(required(value)?)?;
        set_once(&mut params.mt_priority, priority)?;
    } else if is("BY") {
        supported(support.deliver_by)?;
        let by = parse_deliver_by(required(value)?)?;
        set_once(&mut params.deliver_by, by)?;
    } else {
        return Err(ParamError::Unknown);
    }
    Ok(())
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
/// is switched off in `support`, [`ParamError::Syntax`] for a malformed
/// parameter or value, and [`ParamError::Duplicate`] for a keyword repeated
/// with a different value (a repeat with the same value is accepted).
pub fn parse_rcpt_params(raw: &str, support: ParamSupport) -> Result<RcptParams, ParamError> {
    let mut params = RcptParams::default();
    for token in tokens(raw) {
        rcpt_param(&mut params, token, support)?;
    }
    Ok(params)
}

/// One parameter of `RCPT TO`, out of line like [`mail_param`].
#[inline(never)]
fn rcpt_param(
    params: &mut RcptParams,
    token: &str,
    support: ParamSupport,
) -> Result<(), ParamError> {
    let (keyword, value) = split_param(token)?;
    let is = |name: &str| keyword.eq_ignore_ascii_case(name);
    if is("NOTIFY") {
        supported(support.dsn)?;
        let notify = parse_notify(required(value)?)?;
        set_once(&mut params.notify, notify)?;
    } else if is("ORCPT") {
        supported(support.dsn)?;
        let orcpt = parse_orcpt(required(value)?)?;
        set_once(&mut params.orcpt, orcpt)?;
    } else if is("RRVS") {
        supported(support.rrvs)?;
        let rrvs = parse_rrvs(required(value)?)?;
        set_once(&mut params.rrvs, rrvs)?;
    } else {
        return Err(ParamError::Unknown);
    }
    Ok(())
}

impl DateTime {
    /// Parses an RFC 3339 `date-time` (section 5.6): `2014-04-03T23:01:00Z`,
    /// `1997-11-24T14:22:01.25-08:00`. `T` and `Z` may be lower case, as
    /// RFC 3339 allows; the day must exist in its month; a fraction of a
    /// second may have any number of digits. Returns `None` for anything else.
    #[must_use]
    pub fn parse(text: &str) -> Option<DateTime> {
        let b = text.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Option<u16> {
            let digits = b.get(range)?;
            digits.iter().try_fold(0u16, |acc, &d| {
                d.is_ascii_digit().then(|| acc * 10 + u16::from(d - b'0'))
            })
        };
        let small = |range| num(range).and_then(|n| u8::try_from(n).ok());
        let sep = |i: usize, c: u8| b.get(i).is_some_and(|x| x.eq_ignore_ascii_case(&c));
        if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
            return None;
        }
        let year = num(0..4)?;
        let month = small(5..7)?;
        let day = small(8..10)?;
        let hour = small(11..13)?;
        let minute = small(14..16)?;
        let second = small(17..19)?;
        let valid = (1..=12).contains(&month)
            && (1..=days_in_month(year, month)).contains(&day)
            && hour <= 23
            && minute <= 59
            && second <= 60;
        if !valid {
            return None;
        }
        let (nanosecond, rest) = fraction(b.get(19..)?)?;
        let offset_minutes = offset(rest)?;
        Some(DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            nanosecond,
            offset_minutes,
        })
    }

    /// Seconds since 1970-01-01T00:00:00Z (negative before it), the offset
    /// applied and the fraction dropped. A leap second counts as the first
    /// second of the next minute.
    #[must_use]
    pub fn unix_seconds(&self) -> i64 {
        let days = days_from_civil(i64::from(self.year), self.month, self.day);
        days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.offset_minutes) * 60
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )?;
        if self.nanosecond != 0 {
            let fraction = format!("{:09}", self.nanosecond);
            write!(f, ".{}", fraction.trim_end_matches('0'))?;
        }
        if self.offset_minutes == 0 {
            return f.write_str("Z");
        }
        let sign = if self.offset_minutes < 0 { '-' } else { '+' };
        let offset = self.offset_minutes.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", offset / 60, offset % 60)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for DateTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// RFC 3339 appendix C: the Gregorian leap-year rule.
/// An optional `.digits` fraction of a second, as nanoseconds (digits past the ninth are
/// cut), and what follows it.
fn fraction(rest: &[u8]) -> Option<(u32, &[u8])> {
    let [b'.', tail @ ..] = rest else {
        return Some((0, rest));
    };
    let digits = tail.iter().take_while(|d| d.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let (fraction, after) = tail.split_at(digits);
    let nanos = fraction
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(9)
        .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'));
    Some((nanos, after))
}

/// `Z` or `+hh:mm` / `-hh:mm`, as minutes east of UTC.
fn offset(rest: &[u8]) -> Option<i16> {
    match rest {
        [z] if z.eq_ignore_ascii_case(&b'Z') => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i16::from(a - b'0') * 10 + i16::from(b - b'0'))
            };
            let (hours, minutes) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 60 + minutes;
            Some(if *sign == b'-' { -offset } else { offset })
        }
        _ => None,
    }
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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

/// Checked before the value, so that a keyword the server never advertised
/// is Unknown whatever follows it.
fn supported(on: bool) -> Result<(), ParamError> {
    if on {
        Ok(())
    } else {
        Err(ParamError::Unknown)
    }
}

/// Stores a value given once, or again with the same meaning; a second,
/// different value is a conflict.
fn set_once<T: PartialEq>(slot: &mut Option<T>, value: T) -> Result<(), ParamError> {
    match slot {
        Some(seen) if *seen != value => Err(ParamError::Duplicate),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// A keyword that takes no value; repeating it changes nothing.
fn flag(value: Option<&str>) -> Result<bool, ParamError> {
    match value {
        None => Ok(true),
        Some(_) => Err(ParamError::Syntax),
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

fn parse_body(value: &str, support: ParamSupport) -> Result<Body, ParamError> {
    let (body, on) = if value.eq_ignore_ascii_case("7BIT") {
        (Body::SevenBit, true)
    } else if value.eq_ignore_ascii_case("8BITMIME") {
        (Body::EightBitMime, support.eight_bit_mime)
    } else if value.eq_ignore_ascii_case("BINARYMIME") {
        (Body::BinaryMime, support.binary_mime)
    } else {
        return Err(ParamError::Syntax);
    };
    supported(on)?;
    Ok(body)
}

fn parse_ret(value: &str) -> Result<Ret, ParamError> {
    if value.eq_ignore_ascii_case("FULL") {
        Ok(Ret::Full)
    } else if value.eq_ignore_ascii_case("HDRS") {
        Ok(Ret::Headers)
    } else {
        Err(ParamError::Syntax)
    }
}

/// RFC 6710 section 3: an optional sign and one digit.
fn parse_priority(value: &str) -> Result<i8, ParamError> {
    let (negative, digit) = match value.as_bytes() {
        [d] => (false, *d),
        [b'+', d] => (false, *d),
        [b'-', d] => (true, *d),
        _ => return Err(ParamError::Syntax),
    };
    if !digit.is_ascii_digit() {
        return Err(ParamError::Syntax);
    }
    // A single digit is 0..=9, so the cast is exact.
    let magnitude = (digit - b'0') as i8;
    Ok(if negative { -magnitude } else { magnitude })
}

/// RFC 2852 section 4: `by-time ";" by-mode [by-trace]`, where a zero or
/// negative `by-time` is only allowed with the `N` mode.
fn parse_deliver_by(value: &str) -> Result<DeliverBy, ParamError> {
    let (time, mode) = value.split_once(';').ok_or(ParamError::Syntax)?;
    let seconds = parse_by_time(time)?;
    let (mode, trace) = match mode.as_bytes() {
        [m] => (*m, false),
        [m, t] if t.eq_ignore_ascii_case(&b'T') => (*m, true),
        _ => return Err(ParamError::Syntax),
    };
    let mode = match mode.to_ascii_uppercase() {
        b'N' => DeliverByMode::Notify,
        b'R' if seconds > 0 => DeliverByMode::Return,
        _ => return Err(ParamError::Syntax),
    };
    Ok(DeliverBy {
        seconds,
        mode,
        trace,
    })
}

fn parse_by_time(time: &str) -> Result<i32, ParamError> {
    let (negative, digits) = match time.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        rest => (false, rest),
    };
    if digits.is_empty()
        || digits.len() > MAX_BY_TIME_DIGITS
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return Err(ParamError::Syntax);
    }
    // Nine digits fit an i32.
    let magnitude = digits
        .iter()
        .fold(0i32, |acc, d| acc * 10 + i32::from(d - b'0'));
    Ok(if negative { -magnitude } else { magnitude })
}

/// RFC 7293 section 3.1: `date-time [";" ("C" / "R")]`.
fn parse_rrvs(value: &str) -> Result<Rrvs, ParamError> {
    let (time, action) = match value.split_once(';') {
        Some((time, action)) => (time, Some(action)),
        None => (value, None),
    };
    let since = DateTime::parse(time).ok_or(ParamError::Syntax)?;
    let action = match action {
        None => RrvsAction::Reject,
        Some(a) if a.eq_ignore_ascii_case("R") => RrvsAction::Reject,
        Some(a) if a.eq_ignore_ascii_case("C") => RrvsAction::Continue,
        Some(_) => return Err(ParamError::Syntax),
    };
    Ok(Rrvs { since, action })
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

    const ALL: ParamSupport = ParamSupport::ALL;
    const NONE: ParamSupport = ParamSupport {
        size: false,
        eight_bit_mime: false,
        binary_mime: false,
        smtputf8: false,
        dsn: false,
        auth: false,
        require_tls: false,
        mt_priority: false,
        deliver_by: false,
        rrvs: false,
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
                require_tls: false,
                mt_priority: None,
                deliver_by: None,
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
        assert_eq!(mail(" SIZE=1 SIZE=01").unwrap().size, Some(1));
        assert_eq!(mail(" SIZE=1 SIZE=2"), Err(ParamError::Duplicate));
        // Over the limit before it is a conflict.
        assert_eq!(mail(" SIZE=1 SIZE=1000001"), Err(ParamError::SizeExceeded));
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
        assert_eq!(
            mail(" BODY=7BIT body=7bit").unwrap().body,
            Some(Body::SevenBit)
        );
        assert_eq!(mail(" BODY=7BIT BODY=8BITMIME"), Err(ParamError::Duplicate));

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
        // Python's smtplib sends it twice when asked for SMTPUTF8 and given a UTF-8 address.
        assert!(mail(" SMTPUTF8 SMTPUTF8").unwrap().smtputf8);
        assert_eq!(mail(" SMTPUTF8 SMTPUTF8=x"), Err(ParamError::Syntax));
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
        // The same decoded value, however encoded, is the same parameter.
        assert_eq!(
            mail(" ENVID=a+2Bb ENVID=a+2bb").unwrap().envid.as_deref(),
            Some("a+b")
        );
        assert_eq!(mail(" RET=FULL RET=full").unwrap().ret, Some(Ret::Full));
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
        assert_eq!(
            mail(" AUTH=<> AUTH=<>").unwrap().auth.as_deref(),
            Some("<>")
        );
        assert_eq!(mail(" AUTH=<> AUTH=a@b"), Err(ParamError::Duplicate));
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
            rcpt(" NOTIFY=NEVER NOTIFY=SUCCESS"),
            Err(ParamError::Duplicate)
        );
        assert_eq!(
            n(" NOTIFY=SUCCESS,DELAY NOTIFY=delay,success"),
            Ok(Some(Notify {
                success: true,
                delay: true,
                ..Notify::default()
            }))
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
        assert!(rcpt(" ORCPT=rfc822;a@b ORCPT=rfc822;a@b").is_ok());
        assert_eq!(
            rcpt(" ORCPT=rfc822;a@b ORCPT=rfc822;c@b"),
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
                rrvs: None,
            })
        );
    }

    #[test]
    fn require_tls() {
        assert!(mail(" REQUIRETLS").unwrap().require_tls);
        assert!(mail(" requiretls REQUIRETLS").unwrap().require_tls);
        assert!(!mail(" SIZE=1").unwrap().require_tls);
        assert_eq!(mail(" REQUIRETLS=yes"), Err(ParamError::Syntax));
        let off = ParamSupport {
            require_tls: false,
            ..ALL
        };
        assert_eq!(
            parse_mail_params(" REQUIRETLS", off, 1),
            Err(ParamError::Unknown)
        );
        assert_eq!(rcpt(" REQUIRETLS"), Err(ParamError::Unknown));
    }

    #[test]
    fn mt_priority() {
        let p = |raw: &str| mail(raw).map(|p| p.mt_priority);
        for (raw, value) in [
            (" MT-PRIORITY=0", 0),
            (" MT-PRIORITY=9", 9),
            (" mt-priority=+3", 3),
            (" MT-PRIORITY=-9", -9),
            (" MT-PRIORITY=-0", 0),
            (" MT-PRIORITY=4 MT-PRIORITY=+4", 4),
        ] {
            assert_eq!(p(raw), Ok(Some(value)), "{raw:?}");
        }
        for bad in [
            " MT-PRIORITY",
            " MT-PRIORITY=",
            " MT-PRIORITY=10",
            " MT-PRIORITY=-10",
            " MT-PRIORITY=09",
            " MT-PRIORITY=+-1",
            " MT-PRIORITY=-",
            " MT-PRIORITY=+",
            " MT-PRIORITY=a",
            " MT-PRIORITY=٣",
        ] {
            assert_eq!(p(bad), Err(ParamError::Syntax), "{bad:?}");
        }
        assert_eq!(
            p(" MT-PRIORITY=1 MT-PRIORITY=2"),
            Err(ParamError::Duplicate)
        );
        let off = ParamSupport {
            mt_priority: false,
            ..ALL
        };
        assert_eq!(
            parse_mail_params(" MT-PRIORITY=1", off, 1),
            Err(ParamError::Unknown)
        );
    }

    #[test]
    fn deliver_by() {
        let by = |raw: &str| mail(raw).map(|p| p.deliver_by);
        let expect = |seconds, mode, trace| {
            Ok(Some(DeliverBy {
                seconds,
                mode,
                trace,
            }))
        };
        assert_eq!(by(" BY=120;R"), expect(120, DeliverByMode::Return, false));
        assert_eq!(by(" by=+120;rt"), expect(120, DeliverByMode::Return, true));
        assert_eq!(by(" BY=1;R"), expect(1, DeliverByMode::Return, false));
        assert_eq!(
            by(" BY=999999999;N"),
            expect(999_999_999, DeliverByMode::Notify, false)
        );
        // Zero and negative times mean "already late": only Notify may carry them.
        assert_eq!(by(" BY=0;N"), expect(0, DeliverByMode::Notify, false));
        assert_eq!(
            by(" BY=-999999999;NT"),
            expect(-999_999_999, DeliverByMode::Notify, true)
        );
        for bad in [
            " BY=0;R",
            " BY=-0;R",
            " BY=-5;R",
            " BY=-5;RT",
            " BY",
            " BY=",
            " BY=120",
            " BY=120;",
            " BY=120;T",
            " BY=120;X",
            " BY=120;RR",
            " BY=120;TR",
            " BY=120;RTT",
            " BY=;R",
            " BY=-;N",
            " BY=+-1;N",
            " BY=1000000000;N",
            " BY=0000000001;N",
            " BY=1.5;N",
            " BY=120;R;T",
        ] {
            assert_eq!(by(bad), Err(ParamError::Syntax), "{bad:?}");
        }
        assert_eq!(
            by(" BY=60;R BY=+60;r"),
            expect(60, DeliverByMode::Return, false)
        );
        assert_eq!(by(" BY=60;R BY=60;N"), Err(ParamError::Duplicate));
        let off = ParamSupport {
            deliver_by: false,
            ..ALL
        };
        assert_eq!(
            parse_mail_params(" BY=60;R", off, 1),
            Err(ParamError::Unknown)
        );
        assert_eq!(rcpt(" BY=60;R"), Err(ParamError::Unknown));
    }

    #[test]
    fn rrvs() {
        let r = |raw: &str| rcpt(raw).map(|p| p.rrvs);
        // The examples of RFC 7293 section 3.
        let rrvs = r(" RRVS=2014-04-03T23:01:00Z").unwrap().unwrap();
        assert_eq!(rrvs.action, RrvsAction::Reject);
        assert_eq!(rrvs.since.unix_seconds(), 1_396_566_060);
        let rrvs = r(" RRVS=1997-11-24T14:22:01-08:00;C").unwrap().unwrap();
        assert_eq!(rrvs.action, RrvsAction::Continue);
        assert_eq!(rrvs.since.unix_seconds(), 880_410_121);
        assert_eq!(
            rrvs.since,
            DateTime {
                year: 1997,
                month: 11,
                day: 24,
                hour: 14,
                minute: 22,
                second: 1,
                nanosecond: 0,
                offset_minutes: -480,
            }
        );
        let rrvs = r(" rrvs=2003-07-01T10:52:37+02:00;r").unwrap().unwrap();
        assert_eq!(rrvs.action, RrvsAction::Reject);
        assert_eq!(rrvs.since.unix_seconds(), 1_057_049_557);

        for bad in [
            " RRVS",
            " RRVS=",
            " RRVS=2014-04-03",
            " RRVS=2014-04-03T23:01:00",
            " RRVS=2014-04-03T23:01:00ZZ",
            " RRVS=2014-04-03T23:01:00Z;",
            " RRVS=2014-04-03T23:01:00Z;X",
            " RRVS=2014-04-03T23:01:00Z;CR",
            " RRVS=2014-04-03T23:01:00Z;C;R",
            " RRVS=ABC",
        ] {
            assert_eq!(r(bad), Err(ParamError::Syntax), "{bad:?}");
        }
        assert!(r(" RRVS=2014-04-03T23:01:00Z;R RRVS=2014-04-03t23:01:00z").is_ok());
        assert_eq!(
            r(" RRVS=2014-04-03T23:01:00Z RRVS=2014-04-03T23:01:00Z;C"),
            Err(ParamError::Duplicate)
        );
        let off = ParamSupport { rrvs: false, ..ALL };
        assert_eq!(
            parse_rcpt_params(" RRVS=2014-04-03T23:01:00Z", off,),
            Err(ParamError::Unknown)
        );
        assert_eq!(mail(" RRVS=2014-04-03T23:01:00Z"), Err(ParamError::Unknown));
    }

    #[test]
    fn rfc3339_date_times() {
        let unix = |text: &str| DateTime::parse(text).map(|t| t.unix_seconds());
        // Checked against `date -u -d TEXT +%s`.
        assert_eq!(unix("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(unix("2000-02-29T12:00:00Z"), Some(951_825_600));
        assert_eq!(unix("0001-01-01T00:00:00Z"), Some(-62_135_596_800));
        assert_eq!(unix("9999-12-31T23:59:59Z"), Some(253_402_300_799));
        assert_eq!(unix("1970-01-01T00:00:00+14:00"), Some(-50_400));
        assert_eq!(unix("2024-02-29T23:59:59.999-23:59"), Some(1_709_337_539));
        // A leap second, lower-case separators, -00:00 ("offset unknown").
        assert_eq!(unix("2016-12-31T23:59:60Z"), unix("2017-01-01T00:00:00Z"));
        assert_eq!(unix("2014-04-03t23:01:00z"), Some(1_396_566_060));
        assert_eq!(unix("2014-04-03T23:01:00-00:00"), Some(1_396_566_060));

        let t = DateTime::parse("2024-02-29T23:59:59.1234567891234-23:59").unwrap();
        assert_eq!(t.nanosecond, 123_456_789);
        assert_eq!(t.to_string(), "2024-02-29T23:59:59.123456789-23:59");
        for (text, shown) in [
            ("2014-04-03t23:01:00z", "2014-04-03T23:01:00Z"),
            ("2014-04-03T23:01:00+00:00", "2014-04-03T23:01:00Z"),
            (
                "1997-11-24T14:22:01.50-08:00",
                "1997-11-24T14:22:01.5-08:00",
            ),
            ("0001-01-01T00:00:00.000Z", "0001-01-01T00:00:00Z"),
        ] {
            assert_eq!(DateTime::parse(text).unwrap().to_string(), shown);
        }

        for bad in [
            "",
            "2014-04-03 23:01:00Z",
            "2014-04-03T23:01Z",
            "2014-4-03T23:01:00Z",
            "14-04-03T23:01:00Z",
            "2014-00-03T23:01:00Z",
            "2014-13-03T23:01:00Z",
            "2014-04-00T23:01:00Z",
            "2014-04-31T23:01:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2014-04-03T24:00:00Z",
            "2014-04-03T23:60:00Z",
            "2014-04-03T23:01:61Z",
            "2014-04-03T23:01:00.Z",
            "2014-04-03T23:01:00,5Z",
            "2014-04-03T23:01:00+24:00",
            "2014-04-03T23:01:00+01:60",
            "2014-04-03T23:01:00+0100",
            "2014-04-03T23:01:00+01",
            "2014-04-03T23:01:00 +01:00",
            "2014-04-03T23:01:00+01:00x",
            "+014-04-03T23:01:00Z",
            "2014-04-03T23:01:-1Z",
            "２０１４-04-03T23:01:00Z",
        ] {
            assert_eq!(DateTime::parse(bad), None, "{bad:?}");
        }
        assert!(DateTime::parse("2000-02-29T00:00:00Z").is_some());
        assert!(DateTime::parse("2014-04-30T23:01:00Z").is_some());
    }

    #[test]
    fn line_allowance_counts_the_switched_on_parameters() {
        assert_eq!(NONE.line_allowance(), 0);
        assert_eq!(
            ALL.line_allowance(),
            26 + 10 + 600 + 500 + 11 + 15 + 17 + 43
        );
        // Each new allowance is the longest form of its parameter, leading space included.
        assert_eq!(" REQUIRETLS".len(), 11);
        assert_eq!(" MT-PRIORITY=-9".len(), 15);
        assert_eq!(" BY=-999999999;RT".len(), 17);
        let longest_rrvs = " RRVS=2014-04-03T23:01:00.123456789+01:00;C";
        assert_eq!(longest_rrvs.len(), 43);
        assert!(rcpt(longest_rrvs).is_ok());
        let only = |support: ParamSupport| support.line_allowance();
        assert_eq!(only(ParamSupport { rrvs: true, ..NONE }), 43);
        assert_eq!(
            only(ParamSupport {
                deliver_by: true,
                mt_priority: true,
                ..NONE
            }),
            32
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn new_parameters_serialise() {
        let params = mail(" REQUIRETLS MT-PRIORITY=-3 BY=60;RT").unwrap();
        let json = serde_json::to_value(&params).unwrap();
        assert_eq!(json["require_tls"], true);
        assert_eq!(json["mt_priority"], -3);
        assert_eq!(
            json["deliver_by"],
            serde_json::json!({"seconds": 60, "mode": "Return", "trace": true})
        );
        let params = rcpt(" RRVS=1997-11-24T14:22:01.50-08:00;C").unwrap();
        assert_eq!(
            serde_json::to_value(&params).unwrap()["rrvs"],
            serde_json::json!({"since": "1997-11-24T14:22:01.5-08:00", "action": "Continue"})
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
            "REQUIRETLS",
            "MT-PRIORITY",
            "-",
            "BY",
            ";R",
            "T",
            "RRVS",
            "2014-04-03T23:01:00",
            ".5",
            "Z",
            "+01:00",
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
