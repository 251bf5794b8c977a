//! Reverse and forward paths of `MAIL FROM` / `RCPT TO` (RFC 5321 section
//! 4.1.2), with the UTF-8 extensions of RFC 6531, and the HELO/EHLO argument
//! check.
//!
//! The parsers work on bytes, not `&str`, so that a caller holding a raw
//! command line can tell "not UTF-8" apart from "bad syntax" without a
//! separate validation pass.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::strings::Strings;

/// RFC 5321 section 4.5.3.1.1, counted on the wire form (quotes included).
const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 section 4.5.3.1.2.
const MAX_DOMAIN: usize = 255;
/// RFC 5321 section 4.5.3.1.3, counting the angle brackets and any source route.
const MAX_PATH: usize = 256;
/// RFC 1035 section 2.3.4.
const MAX_LABEL: usize = 63;

/// An address `local-part@domain`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The local part in unquoted form: `"a b"@x` is stored as `a b`.
    /// Compared byte for byte: RFC 5321 leaves case sensitivity of local parts
    /// to the receiving host.
    pub local_part: String,
    /// The part after the `@`, as the client wrote it (case preserved).
    pub domain: Domain,
}

/// The domain of a [`Mailbox`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A host name such as `example.com`; may hold non-ASCII labels (RFC 6531).
    Name(String),
    /// An address literal in square brackets, such as `[192.0.2.1]`.
    Literal(AddressLiteral),
}

/// The content of a bracketed address literal (RFC 5321 section 4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AddressLiteral {
    /// `[192.0.2.1]`
    Ipv4(Ipv4Addr),
    /// `[IPv6:2001:db8::1]`
    Ipv6(Ipv6Addr),
    /// `[tag:content]` for any other standardized tag.
    General {
        /// The tag before the colon.
        tag: String,
        /// Everything after the colon.
        content: String,
    },
}

/// The argument of `MAIL FROM:`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`, used for bounces and other notifications.
    Null,
    /// A sender mailbox.
    Mailbox(Mailbox),
}

/// The argument of `RCPT TO:`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<postmaster>` without a domain (any case), which RFC 5321 requires
    /// every server to accept.
    Postmaster,
    /// A recipient mailbox.
    Mailbox(Mailbox),
}

/// Why a path could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressError {
    /// The path does not follow the RFC 5321 grammar.
    Syntax,
    /// The local part, domain, a domain label or the whole path is over its
    /// RFC 5321 length limit.
    TooLong,
    /// A byte sequence where UTF-8 is allowed is not valid UTF-8.
    InvalidUtf8,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressError::Syntax => "address syntax error",
            AddressError::TooLong => "address too long",
            AddressError::InvalidUtf8 => "address is not valid UTF-8",
        })
    }
}

impl std::error::Error for AddressError {}

impl Mailbox {
    /// True when the mailbox can be used without SMTPUTF8 (RFC 6531).
    #[must_use]
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.is_ascii()
    }
}

impl Domain {
    /// True when the domain contains no non-ASCII characters.
    #[must_use]
    pub fn is_ascii(&self) -> bool {
        match self {
            Domain::Name(name) => name.is_ascii(),
            Domain::Literal(literal) => literal.is_ascii(),
        }
    }
}

impl AddressLiteral {
    /// True when the literal contains no non-ASCII characters, which is
    /// always the case for parsed literals.
    #[must_use]
    pub fn is_ascii(&self) -> bool {
        match self {
            AddressLiteral::Ipv4(_) | AddressLiteral::Ipv6(_) => true,
            AddressLiteral::General { tag, content } => tag.is_ascii() && content.is_ascii(),
        }
    }
}

impl ReversePath {
    /// True when the path can be used without SMTPUTF8 (RFC 6531).
    #[must_use]
    pub fn is_ascii(&self) -> bool {
        match self {
            ReversePath::Null => true,
            ReversePath::Mailbox(mailbox) => mailbox.is_ascii(),
        }
    }
}

impl ForwardPath {
    /// True when the path can be used without SMTPUTF8 (RFC 6531).
    #[must_use]
    pub fn is_ascii(&self) -> bool {
        match self {
            ForwardPath::Postmaster => true,
            ForwardPath::Mailbox(mailbox) => mailbox.is_ascii(),
        }
    }
}

impl fmt::Display for Mailbox {
    /// Writes `local@domain`, quoting the local part when it is not a
    /// dot-string, so the output parses back to an equal mailbox (for
    /// mailboxes that came from the parser).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_string(&self.local_part) {
            f.write_str(&self.local_part)?;
        } else {
            f.write_str("\"")?;
            let mut rest = self.local_part.as_str();
            // Write unescaped runs in one go; only `"` and `\` need a backslash.
            while let Some(i) = rest.find(['"', '\\']) {
                let (run, tail) = rest.split_at(i);
                f.write_str(run)?;
                f.write_str("\\")?;
                let mut chars = tail.chars();
                if let Some(c) = chars.next() {
                    fmt::Write::write_char(f, c)?;
                }
                rest = chars.as_str();
            }
            f.write_str(rest)?;
            f.write_str("\"")?;
        }
        write!(f, "@{}", self.domain)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(name) => f.write_str(name),
            Domain::Literal(literal) => literal.fmt(f),
        }
    }
}

impl fmt::Display for AddressLiteral {
    /// Writes the literal with its brackets: `[192.0.2.1]`, `[IPv6:::1]`,
    /// `[tag:content]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressLiteral::Ipv4(ip) => write!(f, "[{ip}]"),
            AddressLiteral::Ipv6(ip) => write!(f, "[IPv6:{ip}]"),
            AddressLiteral::General { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

impl fmt::Display for ReversePath {
    /// `Null` is written as the empty string, without brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(mailbox) => mailbox.fmt(f),
        }
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("postmaster"),
            ForwardPath::Mailbox(mailbox) => mailbox.fmt(f),
        }
    }
}

/// Parses a reverse path starting at its `<`.
///
/// Returns the path and the number of bytes consumed through the closing
/// `>`, so the caller can go on with the ESMTP parameters after it.
///
/// # Errors
///
/// [`AddressError::Syntax`] for anything outside the grammar, including a
/// missing `<` or `>`; `<postmaster>` (no domain) is a syntax error here. [`AddressError::TooLong`] when
/// a length limit is exceeded, [`AddressError::InvalidUtf8`] for bad UTF-8
/// inside the local part or domain.
pub fn parse_reverse_path(input: &[u8]) -> Result<(ReversePath, usize), AddressError> {
    reverse_path(input, None, None)
}

/// [`parse_reverse_path`] over a command line already known to be UTF-8: its pieces are
/// sliced from it rather than checked again.
/// Its strings come from `strings` when there are any.
pub(crate) fn parse_reverse_path_str(
    input: &str,
    strings: Option<&mut Strings>,
) -> Result<(ReversePath, usize), AddressError> {
    reverse_path(input.as_bytes(), Some(input), strings)
}

fn reverse_path(
    input: &[u8],
    text: Option<&str>,
    strings: Option<&mut Strings>,
) -> Result<(ReversePath, usize), AddressError> {
    if input.starts_with(b"<>") {
        return Ok((ReversePath::Null, 2));
    }
    let (mailbox, used) = parse_path(input, text, strings)?;
    Ok((ReversePath::Mailbox(mailbox), used))
}

/// Parses a forward path starting at its `<`.
///
/// Returns the path and the number of bytes consumed through the closing
/// `>`, so the caller can go on with the ESMTP parameters after it.
///
/// # Errors
///
/// [`AddressError::Syntax`] for anything outside the grammar, including a
/// missing `<` or `>`; `<>` is a syntax error here. [`AddressError::TooLong`] when
/// a length limit is exceeded, [`AddressError::InvalidUtf8`] for bad UTF-8
/// inside the local part or domain.
pub fn parse_forward_path(input: &[u8]) -> Result<(ForwardPath, usize), AddressError> {
    forward_path(input, None, None)
}

/// [`parse_forward_path`] over a command line already known to be UTF-8; its strings come
/// from `strings` when there are any.
pub(crate) fn parse_forward_path_str(
    input: &str,
    strings: Option<&mut Strings>,
) -> Result<(ForwardPath, usize), AddressError> {
    forward_path(input.as_bytes(), Some(input), strings)
}

fn forward_path(
    input: &[u8],
    text: Option<&str>,
    strings: Option<&mut Strings>,
) -> Result<(ForwardPath, usize), AddressError> {
    const POSTMASTER: &[u8] = b"<postmaster>";
    if input
        .get(..POSTMASTER.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(POSTMASTER))
    {
        return Ok((ForwardPath::Postmaster, POSTMASTER.len()));
    }
    let (mailbox, used) = parse_path(input, text, strings)?;
    Ok((ForwardPath::Mailbox(mailbox), used))
}

/// Checks the argument of HELO/EHLO: a domain name or an address literal.
///
/// Deliberately more lenient than a mailbox domain, because rejecting a
/// sloppy but harmless greeting only loses mail: `_` and hyphens anywhere in
/// a label, a trailing dot, bare IP addresses (they are all-digit labels) and
/// non-ASCII labels are accepted.
#[must_use]
pub fn is_valid_helo_host(arg: &str) -> bool {
    let bytes = arg.as_bytes();
    if bytes.first() == Some(&b'[') {
        return match bytes.get(1..bytes.len().saturating_sub(1)) {
            Some(inner) if bytes.len() >= 2 && bytes.last() == Some(&b']') => {
                parse_literal_content(inner).is_ok()
            }
            _ => false,
        };
    }
    match scan_domain_name(bytes, DomainRules::Helo) {
        Ok(end) => end == bytes.len() && check_domain_name(bytes).is_ok(),
        Err(_) => false,
    }
}

/// `<` [source-route `:`] mailbox `>`; `<>` and `<postmaster>` are handled
/// by the callers because each is valid in only one direction.
/// `text` is `input` as a `str` when the caller knows it is UTF-8.
fn parse_path(
    input: &[u8],
    text: Option<&str>,
    mut strings: Option<&mut Strings>,
) -> Result<(Mailbox, usize), AddressError> {
    if let Some(found) = plain_path(input, strings.as_deref_mut()) {
        return Ok(found);
    }
    Parser {
        input,
        text,
        pos: 0,
        strings,
    }
    .path()
}

/// Where the parts of a path are when it has the plain form almost every path has: an
/// unquoted ASCII local part, `@`, an ASCII domain name, with no source route or address
/// literal, within every length limit.
///
/// Such a path is checked with two scans that do not branch on its bytes: `>` and `@` are
/// found with `memchr`, then each part's bytes are classified through one table, the flaws
/// accumulated as bits. Anything else (a flaw, a quote, a non-ASCII byte, a literal) goes
/// to the general parser, which accepts every plain path with the same result and says
/// what is wrong with the others.
#[derive(Clone, Copy)]
struct PlainPath {
    /// The `@` between the local part and the domain.
    at: usize,
    /// The closing `>`.
    end: usize,
}

/// The mailbox of a plain path (see [`PlainPath`]) at the start of `input`, and the bytes
/// through its `>`; `None` when the path is not plain. Its strings come from `strings` when
/// there are any.
pub(crate) fn plain_path(input: &[u8], strings: Option<&mut Strings>) -> Option<(Mailbox, usize)> {
    let PlainPath { at, end } = PlainPath::find(input)?;
    // ASCII, so this cannot fail; the `@` and `>` are character boundaries.
    let path = std::str::from_utf8(input.get(1..end)?).ok()?;
    let (local, name) = (path.get(..at - 1)?, path.get(at..)?);
    let (local_part, name) = match strings {
        Some(strings) => (strings.string(local), strings.string(name)),
        None => (local.to_owned(), name.to_owned()),
    };
    let domain = Domain::Name(name);
    Some((Mailbox { local_part, domain }, end + 1))
}

impl PlainPath {
    fn find(input: &[u8]) -> Option<PlainPath> {
        let end = memchr::memchr(b'>', input.get(..MAX_PATH).unwrap_or(input))?;
        let inner = input.get(1..end)?;
        let at = 1 + memchr::memchr(b'@', inner)?;
        let local = input.get(1..at)?;
        let domain = input.get(at + 1..end)?;
        let plain = input.first() == Some(&b'<')
            && local.len() <= MAX_LOCAL_PART
            && domain.len() <= MAX_DOMAIN
            && is_plain_local_part(local)
            && is_plain_domain(domain);
        plain.then_some(PlainPath { at, end })
    }
}

/// The byte classes of the plain scans: a byte that cannot be there, one that can, a dot,
/// a hyphen (in a domain, where its place matters).
const BAD: u8 = 0;
const PLAIN: u8 = 1;
const DOT: u8 = 2;
const HYPHEN: u8 = 3;

/// The classes of a local part's bytes: atext is plain, `.` a dot.
static LOCAL_CLASSES: [u8; 256] = plain_classes(&DOT_STRING_BYTES, false);
/// The classes of a domain's bytes: label bytes are plain but `-` a hyphen, `.` a dot.
static DOMAIN_CLASSES: [u8; 256] = plain_classes(&LABEL_BYTES, true);

/// Which pairs of classes, `[last][next]`, are a flaw in a local part: anything followed
/// by a bad byte, a dot by a dot. The start and the end count as dots.
static LOCAL_FLAWS: [[bool; 4]; 4] = [
    [true, false, false, false],
    [true, false, false, false],
    [true, false, true, false],
    [true, false, false, false],
];
/// The same in a domain: also a dot followed by a hyphen (a label's start), a hyphen by a
/// dot (a label's end).
static DOMAIN_FLAWS: [[bool; 4]; 4] = [
    [true, false, false, false],
    [true, false, false, false],
    [true, false, true, true],
    [true, false, true, false],
];

/// ASCII bytes of `plain` are plain, `.` a dot, `-` a hyphen when `hyphens`; the rest bad.
const fn plain_classes(plain: &[bool; 256], hyphens: bool) -> [u8; 256] {
    let mut table = [BAD; 256];
    let mut b = 0;
    while b < 128 {
        if plain[b] {
            table[b] = PLAIN;
        }
        b += 1;
    }
    table[b'.' as usize] = DOT;
    if hyphens {
        table[b'-' as usize] = HYPHEN;
    }
    table
}

/// Whether `bytes` has no flawed pair of classes: one table lookup a byte, no branch on
/// what the bytes are.
fn is_plain(bytes: &[u8], classes: &[u8; 256], flaws: &[[bool; 4]; 4]) -> bool {
    let (mut flawed, mut last) = (false, DOT);
    for &b in bytes {
        let class = classes[usize::from(b)];
        flawed |= flaws[usize::from(last)][usize::from(class)];
        last = class;
    }
    !flawed & !flaws[usize::from(last)][usize::from(DOT)]
}

/// A non-empty dot-string of ASCII atoms: no dot first, last or after another.
fn is_plain_local_part(local: &[u8]) -> bool {
    is_plain(local, &LOCAL_CLASSES, &LOCAL_FLAWS)
}

/// A non-empty ASCII domain name whose labels are not empty, do not begin or end with a
/// hyphen, and are at most [`MAX_LABEL`] long.
fn is_plain_domain(domain: &[u8]) -> bool {
    is_plain(domain, &DOMAIN_CLASSES, &DOMAIN_FLAWS)
        && (domain.len() <= MAX_LABEL
            || domain
                .split(|&b| b == b'.')
                .all(|label| label.len() <= MAX_LABEL))
}

struct Parser<'a> {
    input: &'a [u8],
    /// `input` as text, when known to be UTF-8.
    text: Option<&'a str>,
    pos: usize,
    /// Strings a runtime handed back, for the parts of the path.
    strings: Option<&'a mut Strings>,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8) -> Result<(), AddressError> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(AddressError::Syntax)
        }
    }

    /// A path of any form, or what is wrong with it.
    fn path(&mut self) -> Result<(Mailbox, usize), AddressError> {
        self.expect(b'<')?;
        if self.peek() == Some(b'@') {
            self.skip_source_route()?;
        }
        let mailbox = self.mailbox()?;
        self.expect(b'>')?;
        if self.pos > MAX_PATH {
            return Err(AddressError::TooLong);
        }
        Ok((mailbox, self.pos))
    }

    fn owned(&mut self, text: &str) -> String {
        match self.strings.as_deref_mut() {
            Some(strings) => strings.string(text),
            None => text.to_owned(),
        }
    }

    fn rest(&self) -> &[u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }

    fn slice(&self, start: usize, end: usize) -> Result<&[u8], AddressError> {
        self.input.get(start..end).ok_or(AddressError::Syntax)
    }

    /// The input from `start` to `end` as text: sliced from `text` when there is one (the
    /// scans stop at ASCII bytes, so these are character boundaries), else checked here.
    fn text(&self, start: usize, end: usize) -> Result<&'a str, AddressError> {
        match self.text {
            Some(text) => text.get(start..end).ok_or(AddressError::InvalidUtf8),
            None => as_utf8(self.input.get(start..end).ok_or(AddressError::Syntax)?),
        }
    }

    /// RFC 5321 says source routes MUST be accepted and SHOULD be ignored.
    fn skip_source_route(&mut self) -> Result<(), AddressError> {
        loop {
            self.expect(b'@')?;
            let start = self.pos;
            self.pos += scan_domain_name(self.rest(), DomainRules::Mailbox)?;
            check_domain_text(self.text(start, self.pos)?)?;
            if !self.eat(b',') {
                return self.expect(b':');
            }
        }
    }

    fn mailbox(&mut self) -> Result<Mailbox, AddressError> {
        let local_part = self.local_part()?;
        self.expect(b'@')?;
        let domain = if self.peek() == Some(b'[') {
            Domain::Literal(self.address_literal()?)
        } else {
            let start = self.pos;
            self.pos += scan_domain_name(self.rest(), DomainRules::Mailbox)?;
            let name = check_domain_text(self.text(start, self.pos)?)?;
            Domain::Name(self.owned(name))
        };
        Ok(Mailbox { local_part, domain })
    }

    fn local_part(&mut self) -> Result<String, AddressError> {
        let start = self.pos;
        let quoted = self.eat(b'"');
        if quoted {
            self.scan_quoted_content()?;
        } else {
            self.scan_dot_string()?;
        }
        // Checked before allocating so a hostile line cannot make us copy it.
        if self.pos - start > MAX_LOCAL_PART {
            return Err(AddressError::TooLong);
        }
        if !quoted {
            let text = self.text(start, self.pos)?;
            return Ok(self.owned(text));
        }
        let wire = self.slice(start, self.pos)?;
        let inner = wire
            .get(1..wire.len().saturating_sub(1))
            .ok_or(AddressError::Syntax)?;
        let mut unquoted = Vec::with_capacity(inner.len());
        let mut escaped = false;
        for &b in inner {
            if b == b'\\' && !escaped {
                escaped = true;
            } else {
                unquoted.push(b);
                escaped = false;
            }
        }
        String::from_utf8(unquoted).map_err(|_| AddressError::InvalidUtf8)
    }

    fn scan_dot_string(&mut self) -> Result<(), AddressError> {
        loop {
            let atom_start = self.pos;
            self.pos += run_of(self.rest(), &DOT_STRING_BYTES);
            if self.pos == atom_start {
                return Err(AddressError::Syntax);
            }
            if !self.eat(b'.') {
                return Ok(());
            }
        }
    }

    /// Scans after the opening quote through the closing one.
    fn scan_quoted_content(&mut self) -> Result<(), AddressError> {
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    // RFC 6531 did not extend quoted-pairSMTP to non-ASCII.
                    if !self.peek().is_some_and(|b| (32..=126).contains(&b)) {
                        return Err(AddressError::Syntax);
                    }
                    self.pos += 1;
                }
                Some(b) if (32..=126).contains(&b) || !b.is_ascii() => self.pos += 1,
                _ => return Err(AddressError::Syntax),
            }
        }
    }

    fn address_literal(&mut self) -> Result<AddressLiteral, AddressError> {
        self.expect(b'[')?;
        let rest = self.rest();
        // No form of literal content may contain `]`, so the first one ends it.
        let len = memchr::memchr(b']', rest).ok_or(AddressError::Syntax)?;
        let literal = parse_literal_content(rest.get(..len).ok_or(AddressError::Syntax)?)?;
        self.pos += len + 1;
        Ok(literal)
    }
}

/// Parses what is between the brackets of an address literal.
fn parse_literal_content(content: &[u8]) -> Result<AddressLiteral, AddressError> {
    let Some(colon) = memchr::memchr(b':', content) else {
        return parse_ipv4(content)
            .map(AddressLiteral::Ipv4)
            .ok_or(AddressError::Syntax);
    };
    let tag = content.get(..colon).ok_or(AddressError::Syntax)?;
    let value = content.get(colon + 1..).ok_or(AddressError::Syntax)?;
    if tag.eq_ignore_ascii_case(b"IPv6") {
        // std accepts exactly the RFC 4291 text forms (`::`, IPv4 suffix),
        // no zone ids. That is a little wider than RFC 5321, whose grammar
        // forbids `::` standing for a single zero group; such literals name a
        // well-defined address, so refusing them would only lose mail.
        return std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
            .map(AddressLiteral::Ipv6)
            .ok_or(AddressError::Syntax);
    }
    let tag_ok = tag.first().is_some_and(u8::is_ascii_alphanumeric)
        && tag.last().is_some_and(u8::is_ascii_alphanumeric)
        && tag.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
    // dcontent: printable US-ASCII except `[`, `\` and `]`.
    let value_ok = !value.is_empty() && value.iter().all(|&b| matches!(b, 33..=90 | 94..=126));
    if !tag_ok || !value_ok {
        return Err(AddressError::Syntax);
    }
    Ok(AddressLiteral::General {
        tag: as_utf8(tag)?.to_owned(),
        content: as_utf8(value)?.to_owned(),
    })
}

/// RFC 5321 Snum allows leading zeros (`010` is ten), which std's
/// `Ipv4Addr` parser rejects, so this is done by hand.
fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let value = part
            .iter()
            .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
        *octet = u8::try_from(value).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DomainRules {
    /// RFC 5321 sub-domains, plus `_` for leniency.
    Mailbox,
    /// Any mix of label characters, and a trailing dot.
    Helo,
}

/// Returns the length of the domain name at the start of `bytes`.
///
/// Non-ASCII bytes are taken as label characters here; UTF-8 validity and
/// the character classes are checked by [`check_domain_name`] once the
/// extent is known.
fn scan_domain_name(bytes: &[u8], rules: DomainRules) -> Result<usize, AddressError> {
    let is_label_byte = |b: u8| LABEL_BYTES[usize::from(b)];
    let mut pos = 0;
    loop {
        let label_start = pos;
        pos += run_of(bytes.get(pos..).unwrap_or_default(), &LABEL_BYTES);
        let label = bytes.get(label_start..pos).unwrap_or_default();
        if label.is_empty() {
            return Err(AddressError::Syntax);
        }
        if rules == DomainRules::Mailbox
            && (label.first() == Some(&b'-') || label.last() == Some(&b'-'))
        {
            return Err(AddressError::Syntax);
        }
        // Only ASCII labels: the 63-octet limit applies to the A-label, whose
        // length cannot be told from the UTF-8 form of a U-label.
        if label.len() > MAX_LABEL && label.is_ascii() {
            return Err(AddressError::TooLong);
        }
        if bytes.get(pos) != Some(&b'.') {
            return Ok(pos);
        }
        pos += 1;
        if rules == DomainRules::Helo && !bytes.get(pos).is_some_and(|&b| is_label_byte(b)) {
            return Ok(pos);
        }
    }
}

/// Validates a scanned domain name as a whole.
fn check_domain_name(name: &[u8]) -> Result<&str, AddressError> {
    check_domain_text(as_utf8(name)?)
}

/// [`check_domain_name`] for a name already known to be UTF-8.
fn check_domain_text(name: &str) -> Result<&str, AddressError> {
    // IDNA never allows these, and they would make log lines and Received
    // headers misleading.
    if !name.is_ascii()
        && name
            .chars()
            .any(|c| !c.is_ascii() && (c.is_control() || c.is_whitespace()))
    {
        return Err(AddressError::Syntax);
    }
    if name.trim_end_matches('.').len() > MAX_DOMAIN {
        return Err(AddressError::TooLong);
    }
    Ok(name)
}

fn as_utf8(bytes: &[u8]) -> Result<&str, AddressError> {
    std::str::from_utf8(bytes).map_err(|_| AddressError::InvalidUtf8)
}

/// atext of RFC 5322, ASCII part.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Bytes of an atom of an unquoted local part: atext, or any non-ASCII byte (RFC 6531).
/// Addresses are parsed for every MAIL and RCPT, so the scans use tables, not `contains`.
static DOT_STRING_BYTES: [bool; 256] = byte_table(b"!#$%&'*+-/=?^_`{|}~");

/// Bytes of a domain label: letters, digits, `-`, `_`, or any non-ASCII byte.
static LABEL_BYTES: [bool; 256] = byte_table(b"-_");

/// A table true for ASCII letters and digits, the `extra` bytes, and every non-ASCII byte.
const fn byte_table(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric() || !byte.is_ascii();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

/// How many bytes at the start of `bytes` the table accepts.
fn run_of(bytes: &[u8], table: &[bool; 256]) -> usize {
    bytes
        .iter()
        .position(|&b| !table[usize::from(b)])
        .unwrap_or(bytes.len())
}

/// Whether a local part can be written without quotes.
fn is_dot_string(s: &str) -> bool {
    s.split('.')
        .all(|atom| !atom.is_empty() && atom.bytes().all(|b| is_atext(b) || !b.is_ascii()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local_part: local.to_owned(),
            domain: Domain::Name(domain.to_owned()),
        }
    }

    fn fwd(input: &str) -> Result<(ForwardPath, usize), AddressError> {
        parse_forward_path(input.as_bytes())
    }

    fn rev(input: &str) -> Result<(ReversePath, usize), AddressError> {
        parse_reverse_path(input.as_bytes())
    }

    fn rev_mailbox(input: &str) -> Mailbox {
        match rev(input) {
            Ok((ReversePath::Mailbox(m), _)) => m,
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    #[test]
    fn simple_mailbox_and_consumed_length() {
        let input = "<user@example.com> SIZE=10";
        let (path, used) = rev(input).unwrap();
        assert_eq!(path, ReversePath::Mailbox(mailbox("user", "example.com")));
        assert_eq!(used, "<user@example.com>".len());
        assert_eq!(&input[used..], " SIZE=10");

        let (path, used) = fwd("<user@example.com>").unwrap();
        assert_eq!(path, ForwardPath::Mailbox(mailbox("user", "example.com")));
        assert_eq!(used, 18);
    }

    #[test]
    fn null_reverse_path() {
        assert_eq!(rev("<>").unwrap(), (ReversePath::Null, 2));
        assert_eq!(rev("<> BODY=8BITMIME").unwrap(), (ReversePath::Null, 2));
        assert_eq!(fwd("<>"), Err(AddressError::Syntax));
    }

    #[test]
    fn postmaster_only_forward() {
        assert_eq!(fwd("<postmaster>").unwrap(), (ForwardPath::Postmaster, 12));
        assert_eq!(
            fwd("<PostMaster> NOTIFY=NEVER").unwrap(),
            (ForwardPath::Postmaster, 12)
        );
        assert_eq!(rev("<postmaster>"), Err(AddressError::Syntax));
        // With a domain it is an ordinary mailbox the server may route anywhere.
        assert_eq!(
            fwd("<Postmaster@example.com>").unwrap().0,
            ForwardPath::Mailbox(mailbox("Postmaster", "example.com"))
        );
        assert_eq!(fwd("<postmaster@>"), Err(AddressError::Syntax));
        assert_eq!(fwd("<postmasterx>"), Err(AddressError::Syntax));
    }

    #[test]
    fn angle_brackets_required() {
        for input in [
            "user@example.com",
            "<user@example.com",
            "user@example.com>",
            "",
            "<",
            ">",
        ] {
            assert_eq!(rev(input), Err(AddressError::Syntax), "{input:?}");
            assert_eq!(fwd(input), Err(AddressError::Syntax), "{input:?}");
        }
    }

    #[test]
    fn dot_string_local_parts() {
        for local in ["a", "first.last", "a!#$%&'*+-/=?^_`{|}~z", "x.y.z", "123"] {
            let m = rev_mailbox(&format!("<{local}@example.com>"));
            assert_eq!(m.local_part, local);
        }
        for bad in [
            "<.a@x>", "<a.@x>", "<a..b@x>", "<a b@x>", "<@x>", "<a(b)@x>", "<a,b@x>",
        ] {
            assert_eq!(rev(bad), Err(AddressError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn quoted_local_parts_are_unquoted() {
        assert_eq!(rev_mailbox("<\"a b\"@x.org>").local_part, "a b");
        assert_eq!(rev_mailbox(r#"<"a\"b"@x.org>"#).local_part, "a\"b");
        assert_eq!(rev_mailbox(r#"<"a\\b"@x.org>"#).local_part, "a\\b");
        assert_eq!(rev_mailbox(r#"<"\a"@x.org>"#).local_part, "a");
        assert_eq!(rev_mailbox("<\"\"@x.org>").local_part, "");
        assert_eq!(rev_mailbox("<\"a>b\"@x.org>").local_part, "a>b");
        assert_eq!(rev_mailbox("<\"a@b\"@x.org>").local_part, "a@b");
        // A `>` inside quotes must not end the path early.
        let (_, used) = rev("<\"a>b\"@x.org> X").unwrap();
        assert_eq!(used, "<\"a>b\"@x.org>".len());
    }

    #[test]
    fn bad_quoted_strings() {
        for bad in [
            "<\"abc@x.org>",
            "<\"a\tb\"@x.org>",
            "<\"a\\\"@x.org>",
            "<\"a\"b@x.org>",
            "<\"a\x01\"@x.org>",
            "<\"a\\\x01\"@x.org>",
            "<\"a\\é\"@x.org>",
        ] {
            assert_eq!(rev(bad), Err(AddressError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(
            rev_mailbox("<a@localhost>").domain,
            Domain::Name("localhost".into())
        );
        assert_eq!(
            rev_mailbox("<a@Ex-Ample.COM>").domain,
            Domain::Name("Ex-Ample.COM".into())
        );
        assert_eq!(
            rev_mailbox("<a@_dmarc.x_y.org>").domain,
            Domain::Name("_dmarc.x_y.org".into())
        );
        assert_eq!(
            rev_mailbox("<a@1.2.3.4>").domain,
            Domain::Name("1.2.3.4".into())
        );
        for bad in [
            "<a@>",
            "<a@.x>",
            "<a@x.>",
            "<a@x..y>",
            "<a@-x.org>",
            "<a@x-.org>",
            "<a@x y>",
            "<a@x!y>",
            "<a@b@c>",
        ] {
            assert_eq!(rev(bad), Err(AddressError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn ipv4_literals() {
        let m = rev_mailbox("<a@[192.0.2.1]>");
        assert_eq!(
            m.domain,
            Domain::Literal(AddressLiteral::Ipv4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        // Snum allows leading zeros and they are decimal.
        let m = rev_mailbox("<a@[010.000.002.001]>");
        assert_eq!(
            m.domain,
            Domain::Literal(AddressLiteral::Ipv4(Ipv4Addr::new(10, 0, 2, 1)))
        );
        for bad in [
            "<a@[256.1.1.1]>",
            "<a@[1.2.3]>",
            "<a@[1.2.3.4.5]>",
            "<a@[1.2.3.4]x>",
            "<a@[1..3.4]>",
            "<a@[1.2.3.4>",
            "<a@[]>",
            "<a@[0001.2.3.4]>",
            "<a@[a.b.c.d]>",
        ] {
            assert_eq!(rev(bad), Err(AddressError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn ipv6_literals() {
        for (text, ip) in [
            ("2001:db8::1", "2001:db8::1"),
            ("::1", "::1"),
            ("::", "::"),
            ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
            ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
            ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
            ("1:2:3:4:5:6::7", "1:2:3:4:5:6:0:7"),
            ("::192.0.2.1", "::c000:201"),
        ] {
            let expected = Domain::Literal(AddressLiteral::Ipv6(ip.parse().unwrap()));
            assert_eq!(rev_mailbox(&format!("<a@[IPv6:{text}]>")).domain, expected);
            // ABNF literal strings are case-insensitive.
            assert_eq!(rev_mailbox(&format!("<a@[ipv6:{text}]>")).domain, expected);
        }
        for bad in [
            "<a@[IPv6:1.2.3.4]>",
            "<a@[IPv6:]>",
            "<a@[IPv6:fe80::1%eth0]>",
            "<a@[IPv6:1:2:3:4:5:6:7:8:9]>",
            "<a@[IPv6:gg::1]>",
            "<a@[IPv6::::1]>",
            "<a@[::1]>",
        ] {
            assert_eq!(rev(bad), Err(AddressError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn general_literals() {
        let m = rev_mailbox("<a@[x-tag:some/content]>");
        assert_eq!(
            m.domain,
            Domain::Literal(AddressLiteral::General {
                tag: "x-tag".into(),
                content: "some/content".into()
            })
        );
        for bad in [
            "<a@[-x:y]>",
            "<a@[x-:y]>",
            "<a@[x:]>",
            "<a@[:y]>",
            "<a@[x:a\\b]>",
            "<a@[x:a b]>",
            "<a@[x:a[b]>",
        ] {
            assert_eq!(rev(bad), Err(AddressError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn source_routes_are_ignored() {
        let input = "<@a.example,@b.example:user@c.example> SIZE=1";
        let (path, used) = rev(input).unwrap();
        assert_eq!(path, ReversePath::Mailbox(mailbox("user", "c.example")));
        assert_eq!(&input[used..], " SIZE=1");
        assert_eq!(
            fwd("<@a.example:user@c.example>").unwrap().0,
            ForwardPath::Mailbox(mailbox("user", "c.example"))
        );
        for bad in [
            "<@a.example user@c>",
            "<@a.example,user@c>",
            "<@:user@c>",
            "<@a,:user@c>",
            "<@a.example:>",
            "<@[1.2.3.4]:u@c>",
        ] {
            assert_eq!(rev(bad), Err(AddressError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn utf8_addresses() {
        let m = rev_mailbox("<用户@例子.广告>");
        assert_eq!(m, mailbox("用户", "例子.广告"));
        assert!(!m.is_ascii());
        let m = rev_mailbox("<\"ü ö\"@x.de>");
        assert_eq!(m.local_part, "ü ö");
        assert!(!m.is_ascii());
        assert!(rev_mailbox("<a@b.c>").is_ascii());
        assert!(!ReversePath::Mailbox(mailbox("a", "bü.c")).is_ascii());
        assert!(ReversePath::Null.is_ascii());
        assert!(ForwardPath::Postmaster.is_ascii());
        assert!(!ForwardPath::Mailbox(mailbox("ü", "b")).is_ascii());
    }

    #[test]
    fn invalid_utf8() {
        for bad in [
            &b"<a\xff@x.org>"[..],
            b"<\"a\xc3\"@x.org>",
            b"<a@x\xe2\x82.org>",
            b"<a\xed\xa0\x80@x>",
        ] {
            assert_eq!(
                parse_reverse_path(bad),
                Err(AddressError::InvalidUtf8),
                "{bad:?}"
            );
        }
        // Non-ASCII whitespace and controls are not label characters.
        assert_eq!(rev("<a@x\u{a0}y.org>"), Err(AddressError::Syntax));
        assert_eq!(rev("<a@x\u{85}y.org>"), Err(AddressError::Syntax));
    }

    #[test]
    fn length_limits() {
        let local64 = "a".repeat(64);
        assert!(rev(&format!("<{local64}@x.org>")).is_ok());
        assert_eq!(
            rev(&format!("<a{local64}@x.org>")),
            Err(AddressError::TooLong)
        );
        // The limit counts the quotes.
        let quoted = format!("<\"{}\"@x.org>", "a".repeat(62));
        assert!(rev(&quoted).is_ok());
        let quoted = format!("<\"{}\"@x.org>", "a".repeat(63));
        assert_eq!(rev(&quoted), Err(AddressError::TooLong));

        let label63 = "b".repeat(63);
        assert!(rev(&format!("<a@{label63}.org>")).is_ok());
        assert_eq!(
            rev(&format!("<a@b{label63}.org>")),
            Err(AddressError::TooLong)
        );

        // With `<a@` and `>` around it, a 252-octet domain fills the 256-octet
        // path; the 255-octet domain limit itself is tested through HELO below.
        let domain252 = format!("{}.{}", [label63.as_str(); 3].join("."), "d".repeat(60));
        assert_eq!(domain252.len(), 252);
        assert_eq!(rev(&format!("<a@{domain252}>")).unwrap().1, 256);
        assert_eq!(
            rev(&format!("<a@{domain252}e>")),
            Err(AddressError::TooLong)
        );
        let domain256 = format!("{domain252}.eee");
        assert_eq!(rev(&format!("<a@{domain256}>")), Err(AddressError::TooLong));

        // Local part and domain both within limits, path over 256.
        let path = format!("<{local64}@{}>", vec!["c".repeat(60); 4].join("."));
        assert!(path.len() > 256);
        assert_eq!(rev(&path), Err(AddressError::TooLong));
        let route = format!("<@{}:a@b>", "r".repeat(255));
        assert_eq!(rev(&route), Err(AddressError::TooLong));
    }

    #[test]
    fn long_non_ascii_label_is_not_octet_limited() {
        let label = "ü".repeat(40); // 80 octets, far fewer in punycode
        assert!(rev(&format!("<a@{label}.de>")).is_ok());
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "<user@example.com>",
            "<\"a b\"@x.org>",
            "<\"a\\\"b\\\\c\"@x.org>",
            "<\"a..b\"@x.org>",
            "<\"\"@x.org>",
            "<a@[192.0.2.1]>",
            "<a@[IPv6:2001:db8::1]>",
            "<a@[IPv6:::ffff:192.0.2.1]>",
            "<a@[tag:content]>",
            "<用户@例子.广告>",
        ] {
            let (path, _) = rev(input).unwrap();
            let shown = format!("<{path}>");
            let (again, _) = rev(&shown).unwrap();
            assert_eq!(again, path, "{input} -> {shown}");
        }
    }

    #[test]
    fn display_forms() {
        assert_eq!(rev_mailbox("<\"abc\"@x.org>").to_string(), "abc@x.org");
        assert_eq!(rev_mailbox("<\"a b\"@x.org>").to_string(), "\"a b\"@x.org");
        assert_eq!(
            rev_mailbox("<\"a\\\"b\"@x.org>").to_string(),
            "\"a\\\"b\"@x.org"
        );
        assert_eq!(rev_mailbox("<a@[010.0.0.1]>").to_string(), "a@[10.0.0.1]");
        assert_eq!(rev_mailbox("<a@[ipv6:0::1]>").to_string(), "a@[IPv6:::1]");
        assert_eq!(ReversePath::Null.to_string(), "");
        assert_eq!(ForwardPath::Postmaster.to_string(), "postmaster");
        assert_eq!(AddressError::TooLong.to_string(), "address too long");
    }

    #[test]
    fn helo_hosts() {
        for ok in [
            "example.com",
            "mail.example.com.",
            "localhost",
            "DESKTOP-ABC123",
            "my_host",
            "-odd-",
            "192.0.2.1",
            "[192.0.2.1]",
            "[IPv6:::1]",
            "[x:y]",
            "bücher.de",
            "a",
        ] {
            assert!(is_valid_helo_host(ok), "{ok:?}");
        }
        for bad in [
            "",
            " ",
            "a b",
            "a\tb",
            "<a>",
            "a@b",
            "a..b",
            ".a",
            "a..",
            "[",
            "]",
            "[1.2.3.4",
            "1.2.3.4]",
            "[999.1.1.1]",
            "[]",
            "a\u{0}",
            "x\u{a0}y",
            "a/b",
            "a:b",
        ] {
            assert!(!is_valid_helo_host(bad), "{bad:?}");
        }
        assert!(is_valid_helo_host(&"a".repeat(63)));
        assert!(!is_valid_helo_host(&"a".repeat(64)));
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(is_valid_helo_host(&long));
        assert!(is_valid_helo_host(&format!("{long}.")));
        assert!(!is_valid_helo_host(&format!("{long}.b")));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let alphabet = b"<>@.\"\\[]:,-_aZ09 \xc3\xa9\xff";
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            let mut buf = vec![b'<'];
            let mut s = seed;
            for _ in 0..len {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                buf.push(alphabet[(s >> 33) as usize % alphabet.len()]);
            }
            for input in [&buf[..], &buf[1..]] {
                if let Ok((path, used)) = parse_reverse_path(input) {
                    assert!(used <= input.len());
                    let _ = path.to_string();
                }
                if let Ok((path, used)) = parse_forward_path(input) {
                    assert!(used <= input.len());
                    let _ = path.to_string();
                }
                if let Ok(s) = std::str::from_utf8(input) {
                    let _ = is_valid_helo_host(s);
                }
            }
        }
    }

    /// What the general parser makes of `input`.
    fn general(input: &[u8]) -> Result<(Mailbox, usize), AddressError> {
        let mut p = Parser {
            input,
            text: None,
            pos: 0,
            strings: None,
        };
        p.path()
    }

    #[test]
    fn plain_paths_are_the_ones_the_general_parser_accepts_alike() {
        let plain = [
            "<a@b>",
            "<user.name+tag@mail.example.org>",
            "<o'brien@x-y.example>",
            "<a@under_score.example>",
        ];
        for path in plain {
            assert!(PlainPath::find(path.as_bytes()).is_some(), "{path}");
            assert_eq!(
                parse_path(path.as_bytes(), None, None),
                general(path.as_bytes())
            );
        }
        // Left to the general parser, which accepts some and refuses the others.
        let other = [
            "<\"quoted\"@example.org>",
            "<@relay.example:a@b.example>",
            "<a@[192.0.2.1]>",
            "<jos\u{e9}@example.org>",
            "<a@b.>",
            "<a@-b.example>",
            "<a@b-.example>",
            "<a@b..example>",
            "<.a@b>",
            "<a.@b>",
            "<a..b@c>",
            "<@b>",
            "<a@>",
            "<a@b@c>",
            "a@b>",
        ];
        for path in other {
            assert!(PlainPath::find(path.as_bytes()).is_none(), "{path}");
        }
        let label = "x".repeat(MAX_LABEL);
        let longest = format!("<a@{label}.example>");
        assert!(PlainPath::find(longest.as_bytes()).is_some());
        let too_long = format!("<a@{label}x.example>");
        assert!(PlainPath::find(too_long.as_bytes()).is_none());
        assert_eq!(fwd(&too_long), Err(AddressError::TooLong));
    }

    proptest::proptest! {
        /// The plain path's scans agree with the general parser on every input: the same
        /// mailbox and length, or the same error.
        #[test]
        fn the_plain_scan_agrees_with_the_general_parser(
            input in r#"<?[a-z0-9.@_\-"<>\[\]:, é+]{0,12}(\.[a-z0-9-]{0,70}){0,4}>?[ a-z=]{0,4}"#
        ) {
            let bytes = input.as_bytes();
            let parsed = parse_path(bytes, None, None);
            proptest::prop_assert_eq!(&parsed, &general(bytes), "{:?}", input);
            if PlainPath::find(bytes).is_some() {
                proptest::prop_assert!(parsed.is_ok());
            }
        }

        /// Addresses of the usual shape, long and short, near every limit.
        #[test]
        fn plain_shaped_paths_parse_as_the_general_parser_says(
            local in "[a-z0-9.+_-]{0,70}",
            labels in proptest::collection::vec("[a-z0-9_-]{0,66}", 0..6),
            tail in "[> ]{0,2}",
        ) {
            let input = format!("<{local}@{}{tail}", labels.join("."));
            let bytes = input.as_bytes();
            proptest::prop_assert_eq!(parse_path(bytes, None, None), general(bytes), "{:?}", input);
        }
    }
}

/// Paths serialise as their text form (`user@example.org`, empty for `<>`).
#[cfg(feature = "serde")]
mod serde_impls {
    use super::{ForwardPath, ReversePath};

    impl serde::Serialize for ReversePath {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(self)
        }
    }

    impl serde::Serialize for ForwardPath {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(self)
        }
    }
}
