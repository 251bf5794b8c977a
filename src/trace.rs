//! Trace header fields (RFC 5321 section 4.4): the `Received:` field a server
//! prepends to every message it accepts for delivery or relay, and the
//! `Return-Path:` field of final delivery.
//!
//! Both are pure and clock-free: the caller passes the date, already formatted
//! as an RFC 5322 `date-time`, and every other fact as a plain value. The
//! result is ready to prepend to the message: folded at 78 octets where
//! whitespace allows, no line over 998 octets, and every line, the last one
//! too, ended by CRLF.
//!
//! Much of a `Received:` field comes from the client (the HELO name, the
//! reverse DNS name the client's operator chose, the recipient, the TLS server
//! name), so none of it is trusted to be well-formed. A name that is not a
//! plain host name or address literal never stands where the grammar wants a
//! domain; text in comments loses CR, LF, other control characters,
//! parentheses and backslashes (each becomes `?`); and 8-bit text is kept only
//! when the transaction used SMTPUTF8 (RFC 6531 section 3.7.3, RFC 6532),
//! else each non-ASCII character becomes `?`. Each piece of client text is cut
//! to 255 octets.
//!
//! The session keeps client bytes from continuing these fields once they are prepended:
//! message content that begins with a space or a tab would fold into the last of them, so
//! it is refused by default or stored after an empty line
//! ([`LeadingWhitespace`](crate::LeadingWhitespace)).
//!
//! ```
//! use smtp_session::address::parse_forward_path;
//! use smtp_session::trace::{self, Protocol, Received};
//! use smtp_session::{ReversePath, TlsInfo};
//!
//! let tls = TlsInfo {
//!     protocol: "TLSv1.3".into(),
//!     cipher: "TLS_AES_256_GCM_SHA384".into(),
//!     key_size: Some(256),
//!     ..TlsInfo::default()
//! };
//! let (rcpt, _) = parse_forward_path(b"<bob@example.net>").unwrap();
//! let protocol = Protocol { ehlo: true, tls: true, ..Protocol::default() };
//! let received = Received::new("mx.example.net", protocol, "Tue, 1 Jul 2003 10:52:37 +0200")
//!     .helo("mail.example.org")
//!     .reverse_dns("mail.example.org")
//!     .remote_ip("192.0.2.1".parse().unwrap())
//!     .tls(&tls)
//!     .id("4ABC12")
//!     .recipients([&rcpt]);
//! assert_eq!(
//!     received.to_string(),
//!     "Received: from mail.example.org (mail.example.org [192.0.2.1])\r\n\
//!      \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))\r\n\
//!      \tby mx.example.net with ESMTPS id 4ABC12 for <bob@example.net>;\r\n\
//!      \tTue, 1 Jul 2003 10:52:37 +0200\r\n"
//! );
//! assert_eq!(trace::return_path(&ReversePath::Null), "Return-Path: <>\r\n");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use crate::address::{ForwardPath, ReversePath};
use crate::context::TlsInfo;

/// RFC 5322 section 2.1.1: lines SHOULD be no longer than 78 octets.
const FOLD_AT: usize = 78;
/// RFC 5322 section 2.1.1: lines MUST be no longer than 998 octets.
const MAX_LINE: usize = 998;
/// The most of any one piece of outside text kept: RFC 5321's limit for a
/// domain. It bounds every unfoldable piece, and so every line.
const MAX_TEXT: usize = 255;
/// RFC 5321 section 4.5.3.1.3: a path, angle brackets included.
const MAX_PATH: usize = 256;

/// The facts that choose the `with` keyword of a `Received:` field, from the
/// IANA "Mail Transmission Types" registry (RFC 5321, RFC 3848, RFC 6531).
///
/// | Facts | Keyword |
/// |---|---|
/// | HELO | `SMTP` |
/// | EHLO | `ESMTP`, `ESMTPS` (TLS), `ESMTPA` (AUTH), `ESMTPSA` (both) |
/// | EHLO and SMTPUTF8 | `UTF8SMTP`, `UTF8SMTPS`, `UTF8SMTPA`, `UTF8SMTPSA` |
/// | LMTP | `LMTP`, `LMTPS`, `LMTPA`, `LMTPSA` |
/// | LMTP and SMTPUTF8 | `UTF8LMTP`, `UTF8LMTPS`, `UTF8LMTPA`, `UTF8LMTPSA` |
///
/// The registry has no keyword for TLS or AUTH after HELO (both are ESMTP
/// extensions), so a HELO session is `SMTP` whatever else is true; the TLS
/// comment of [`Received`] still shows the TLS layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Protocol {
    /// LMTP (RFC 2033): the client greeted with LHLO.
    pub lmtp: bool,
    /// The client greeted with EHLO rather than HELO (ignored for LMTP).
    pub ehlo: bool,
    /// TLS protected the transaction (STARTTLS or implicit TLS).
    pub tls: bool,
    /// The client authenticated with AUTH.
    pub authenticated: bool,
    /// The transaction used SMTPUTF8 (its `MAIL FROM` carried `SMTPUTF8`).
    pub smtputf8: bool,
}

impl Protocol {
    /// The registered keyword for these facts.
    #[must_use]
    pub const fn keyword(&self) -> &'static str {
        const SMTP: [&str; 4] = ["ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA"];
        const UTF8_SMTP: [&str; 4] = ["UTF8SMTP", "UTF8SMTPS", "UTF8SMTPA", "UTF8SMTPSA"];
        const LMTP: [&str; 4] = ["LMTP", "LMTPS", "LMTPA", "LMTPSA"];
        const UTF8_LMTP: [&str; 4] = ["UTF8LMTP", "UTF8LMTPS", "UTF8LMTPA", "UTF8LMTPSA"];
        let table = match (self.lmtp, self.smtputf8) {
            (true, false) => LMTP,
            (true, true) => UTF8_LMTP,
            (false, _) if !self.ehlo => return "SMTP",
            (false, false) => SMTP,
            (false, true) => UTF8_SMTP,
        };
        let index = match (self.tls, self.authenticated) {
            (false, false) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (true, true) => 3,
        };
        table[index]
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// A `Received:` header field (RFC 5321 section 4.4), built from plain values.
///
/// ```text
/// Received: from HELO-NAME (REVERSE-DNS [ADDRESS-LITERAL])
///     (using TLS-PROTOCOL with cipher CIPHER (BITS bits) sni SERVER-NAME)
///     by HOSTNAME with PROTOCOL id ID for <RECIPIENT>; DATE
/// ```
///
/// - `from`: the HELO/EHLO name when it is a host name or address literal
///   (with non-ASCII labels only under SMTPUTF8), else the client's address
///   literal; any other HELO text moves into the comment as `helo=...`. The
///   comment holds the reverse DNS name (left out when it is not a host name)
///   and the client's address as `[192.0.2.1]` or `[IPv6:2001:db8::1]`. With
///   neither a usable HELO name, an address nor a reverse DNS name there is
///   no `from` clause, as for local submission.
/// - the TLS comment, when [`tls`](Received::tls) was given.
/// - `by`: the server's host name (characters a host name cannot hold become
///   `-`).
/// - `with`: [`Protocol::keyword`].
/// - `id`: when given; characters outside RFC 5322 `atext` become `_`, unless
///   it is a whole `<msg-id>`.
/// - `for`: only when the message has exactly one recipient, and only when its
///   path can be written safely: ASCII (or SMTPUTF8), no control characters,
///   parentheses or backslashes, at most 256 octets.
/// - the date, after `;`, as given, except that control characters,
///   non-ASCII characters, backslashes and unbalanced parentheses become `?`.
#[derive(Clone, Debug)]
pub struct Received<'a> {
    by: &'a str,
    protocol: Protocol,
    date: &'a str,
    helo: Option<&'a str>,
    reverse_dns: Option<&'a str>,
    remote_ip: Option<IpAddr>,
    tls: Option<&'a TlsInfo>,
    id: Option<&'a str>,
    recipient: Option<&'a ForwardPath>,
}

impl<'a> Received<'a> {
    /// A field for a message received by `by` (the server's host name, as in
    /// its greeting) over `protocol`, on `date` (an RFC 5322 `date-time` such
    /// as `Tue, 1 Jul 2003 10:52:37 +0200`).
    #[must_use]
    pub fn new(by: &'a str, protocol: Protocol, date: &'a str) -> Self {
        Received {
            by,
            protocol,
            date,
            helo: None,
            reverse_dns: None,
            remote_ip: None,
            tls: None,
            id: None,
            recipient: None,
        }
    }

    /// The name the client gave in HELO, EHLO or LHLO.
    #[must_use]
    pub fn helo(mut self, name: &'a str) -> Self {
        self.helo = Some(name);
        self
    }

    /// The client's reverse DNS name, when the runtime looked it up (and,
    /// ideally, checked that it resolves back to the address).
    #[must_use]
    pub fn reverse_dns(mut self, name: &'a str) -> Self {
        self.reverse_dns = Some(name);
        self
    }

    /// The client's IP address.
    #[must_use]
    pub fn remote_ip(mut self, ip: IpAddr) -> Self {
        self.remote_ip = Some(ip);
        self
    }

    /// The TLS layer: its protocol, cipher, key size and the server name the
    /// client asked for go into a comment.
    #[must_use]
    pub fn tls(mut self, tls: &'a TlsInfo) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The server's id for the message, such as its queue id.
    #[must_use]
    pub fn id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// The message's recipients: the `for` clause names the recipient when
    /// there is exactly one, and is left out otherwise (RFC 5321 section
    /// 7.2: naming one of many would disclose the others' delivery).
    #[must_use]
    pub fn recipients<I>(mut self, recipients: I) -> Self
    where
        I: IntoIterator<Item = &'a ForwardPath>,
    {
        let mut recipients = recipients.into_iter();
        self.recipient = match (recipients.next(), recipients.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        };
        self
    }

    /// Appends the field, folded and ended by CRLF, to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.render().as_bytes());
    }

    fn render(&self) -> String {
        let utf8 = self.protocol.smtputf8;
        // Every unit borrows what it shows unless it had to be made safe: a usual field
        // costs one allocation for the address literal and one for the text.
        let mut units: Vec<Unit<'a>> = Vec::with_capacity(24);
        self.peer_clause(utf8, &mut units);
        if let Some(tls) = self.tls {
            let start = units.len();
            tls_words(tls, utf8, &mut units);
            comment(&mut units[start..]);
            starts_clause(&mut units, start);
        }
        units.push(Unit::clause("by ", host_name(self.by, utf8), ""));
        units.push(Unit::clause(
            "with ",
            Cow::Borrowed(self.protocol.keyword()),
            "",
        ));
        if let Some(id) = self.id.map(message_id).filter(|id| !id.is_empty()) {
            units.push(Unit::clause("id ", id, ""));
        }
        if let Some(path) = self.recipient.and_then(|path| for_path(path, utf8)) {
            units.push(Unit::clause("for <", Cow::Owned(path), ">"));
        }
        if let Some(last) = units.last_mut() {
            last.close = if last.close == ">" { ">;" } else { ";" };
        }
        let start = units.len();
        date_words(self.date, &mut units);
        starts_clause(&mut units, start);
        fold("Received:", &units)
    }

    /// `from NAME (REVERSE-DNS [LITERAL] helo=TEXT)`, each part when known.
    fn peer_clause(&self, utf8: bool, units: &mut Vec<Unit<'a>>) {
        let literal = self.remote_ip.map(address_literal);
        let reverse_dns = self.reverse_dns.filter(|name| is_host_name(name, utf8));
        let helo = self.helo.filter(|name| is_host_name(name, utf8));
        let name = match (helo, &literal, reverse_dns) {
            (Some(helo), _, _) => Cow::Borrowed(helo),
            (None, Some(literal), _) => Cow::Owned(literal.clone()),
            (None, None, Some(reverse_dns)) => Cow::Borrowed(reverse_dns),
            (None, None, None) => return,
        };
        units.push(Unit::clause("from ", name, ""));
        let start = units.len();
        units.extend(reverse_dns.map(|name| Unit::word(Cow::Borrowed(name))));
        units.extend(literal.map(|literal| Unit::word(Cow::Owned(literal))));
        if let (None, Some(text)) = (helo, self.helo) {
            let first = units.len();
            comment_words(text, utf8, units);
            match units.get_mut(first) {
                Some(word) => word.open = "helo=",
                None => units.push(Unit::new("helo=", Cow::Borrowed(""), "")),
            }
        }
        comment(&mut units[start..]);
    }
}

/// One unit of the field, written as `open`, `text`, `close`: folding never splits it.
struct Unit<'t> {
    open: &'static str,
    text: Cow<'t, str>,
    close: &'static str,
    /// The first unit of a clause: a clause that does not fit the rest of the line goes
    /// on the next one.
    starts_clause: bool,
}

impl<'t> Unit<'t> {
    fn new(open: &'static str, text: Cow<'t, str>, close: &'static str) -> Self {
        Unit {
            open,
            text,
            close,
            starts_clause: false,
        }
    }

    fn clause(open: &'static str, text: Cow<'t, str>, close: &'static str) -> Self {
        Unit {
            starts_clause: true,
            ..Unit::new(open, text, close)
        }
    }

    fn word(text: Cow<'t, str>) -> Self {
        Unit::new("", text, "")
    }

    fn len(&self) -> usize {
        self.open.len() + self.text.len() + self.close.len()
    }
}

/// Marks the unit at `start`, if any, as the first of a clause.
fn starts_clause(units: &mut [Unit<'_>], start: usize) {
    if let Some(unit) = units.get_mut(start) {
        unit.starts_clause = true;
    }
}

impl fmt::Display for Received<'_> {
    /// The whole field, folded, with its final CRLF.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// The `Return-Path:` field of final delivery (RFC 5321 section 4.4), with its
/// final CRLF: `Return-Path: <>` for the null reverse path.
///
/// A path from the parser always fits; control characters in a path built by
/// hand become `?`, and one longer than a line allows is cut. A message from a session
/// never begins with a space or a tab, so it cannot continue this field
/// ([`LeadingWhitespace`](crate::LeadingWhitespace)).
#[must_use]
pub fn return_path(path: &ReversePath) -> String {
    let mut text: String = path
        .to_string()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let room = MAX_LINE - "Return-Path: <>".len();
    truncate(&mut text, room);
    format!("Return-Path: <{text}>\r\n")
}

/// Joins the units after `name` with single spaces, folding (CRLF and a tab) before a
/// clause that does not fit the rest of the line, and inside a clause too long for any
/// line before the unit that would carry the line past 78 octets. Units are never split,
/// so a line is either at most 78 octets or holds a single unit (the first line: the name
/// and one unit).
fn fold(name: &str, units: &[Unit<'_>]) -> String {
    // Each unit brings at most a fold (3 octets) before it.
    let room = name.len() + units.iter().map(|unit| unit.len() + 3).sum::<usize>() + 2;
    let mut out = String::with_capacity(room);
    out.push_str(name);
    let mut line = name.len();
    let mut empty = true;
    for (at, unit) in units.iter().enumerate() {
        let len = unit.len();
        let mut fold_now = false;
        if unit.starts_clause && !empty {
            let rest = &units[at + 1..];
            let more = rest.iter().take_while(|unit| !unit.starts_clause);
            let width = len + 1 + more.map(|unit| unit.len() + 1).sum::<usize>();
            fold_now = line + width > FOLD_AT;
        }
        if fold_now || (!empty && line + 1 + len > FOLD_AT) {
            out.push_str("\r\n\t");
            line = 1;
        } else {
            out.push(' ');
            line += 1;
        }
        out.push_str(unit.open);
        out.push_str(&unit.text);
        out.push_str(unit.close);
        line += len;
        empty = false;
        debug_assert!(line <= MAX_LINE, "every trace unit is bounded by MAX_TEXT");
    }
    out.push_str("\r\n");
    out
}

/// Wraps `words` in one comment: `(` before the first, `)` after the last.
fn comment(words: &mut [Unit<'_>]) {
    if let Some(first) = words.first_mut() {
        first.open = match first.open {
            "helo=" => "(helo=",
            "(" => "((",
            _ => "(",
        };
    }
    if let Some(last) = words.last_mut() {
        last.close = ")";
    }
}

/// `using PROTOCOL with cipher CIPHER (BITS bits) sni NAME`, each part when known.
fn tls_words<'t>(tls: &'t TlsInfo, utf8: bool, units: &mut Vec<Unit<'t>>) {
    let start = units.len();
    // Each label stays only when words follow it.
    let labelled = |labels: &[&'static str], text: &'t str, units: &mut Vec<Unit<'t>>| {
        let at = units.len();
        units.extend(labels.iter().map(|label| Unit::word(Cow::Borrowed(*label))));
        comment_words(text, utf8, units);
        if units.len() == at + labels.len() {
            units.truncate(at);
        }
    };
    labelled(&["using"], &tls.protocol, units);
    labelled(&["with", "cipher"], &tls.cipher, units);
    if let Some(bits) = tls.key_size {
        units.push(Unit::new("(", Cow::Owned(bits.to_string()), ""));
        units.push(Unit::word(Cow::Borrowed("bits)")));
    }
    if let Some(sni) = &tls.sni {
        labelled(&["sni"], sni, units);
    }
    if units.len() == start {
        units.push(Unit::word(Cow::Borrowed("TLS")));
    }
}

/// Outside text made safe for a comment and split at its whitespace: control
/// characters, parentheses and backslashes become `?`, and so does non-ASCII
/// text unless `utf8`; only the first 255 octets are kept. Text that needs none of
/// that (the usual case) is borrowed.
fn comment_words<'t>(text: &'t str, utf8: bool, units: &mut Vec<Unit<'t>>) {
    let safe = |c: char| match c {
        ' ' | '\t' => ' ',
        '(' | ')' | '\\' => '?',
        c if c.is_ascii() && !c.is_ascii_control() => c,
        c if utf8 && !c.is_ascii() && !c.is_control() && !c.is_whitespace() => c,
        _ => '?',
    };
    words(text, safe, units);
}

/// `text`, each character as `safe` makes it (a space: between words), split into
/// words. Borrowed when every character stays as it is and `text` is at most
/// [`MAX_TEXT`] octets; else made anew from its first [`MAX_TEXT`] octets.
fn words<'t>(text: &'t str, safe: impl Fn(char) -> char, units: &mut Vec<Unit<'t>>) {
    let space = |c: char| c == ' ' || c == '\t';
    if text.len() <= MAX_TEXT && text.chars().all(|c| space(c) || safe(c) == c) {
        let borrowed = text.split([' ', '\t']).filter(|w| !w.is_empty());
        units.extend(borrowed.map(|word| Unit::word(Cow::Borrowed(word))));
        return;
    }
    let mut text = text.to_owned();
    truncate(&mut text, MAX_TEXT);
    let made: String = text.chars().map(safe).collect();
    let owned = made.split(' ').filter(|w| !w.is_empty());
    units.extend(owned.map(|word| Unit::word(Cow::Owned(word.to_owned()))));
}

/// A host name or address literal that can stand where the grammar wants a
/// `Domain`: letters, digits, `-`, `.` and `_` (and non-ASCII letters and
/// digits under SMTPUTF8), or `[...]` holding letters, digits, `:`, `.` and
/// `-`; at most 255 octets.
fn is_host_name(name: &str, utf8: bool) -> bool {
    if name.is_empty() || name.len() > MAX_TEXT {
        return false;
    }
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'-'));
    }
    name.chars().all(|c| is_host_char(c, utf8))
}

fn is_host_char(c: char, utf8: bool) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '-' | '.' | '_')
        || (utf8 && !c.is_ascii() && c.is_alphanumeric())
}

/// The server's own name, with whatever a host name cannot hold replaced.
fn host_name(name: &str, utf8: bool) -> Cow<'_, str> {
    if is_host_name(name, utf8) {
        return Cow::Borrowed(name);
    }
    let mut name = name.to_owned();
    truncate(&mut name, MAX_TEXT);
    let safe: String = name
        .chars()
        .map(|c| if is_host_char(c, utf8) { c } else { '-' })
        .collect();
    Cow::Owned(if safe.is_empty() {
        "unknown".to_owned()
    } else {
        safe
    })
}

/// RFC 5321 section 4.1.3 address literals.
fn address_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => format!("[{ip}]"),
        IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    }
}

/// RFC 5321 `ID = Atom / msg-id`: a whole `<left@right>` of dot-atoms is kept,
/// anything else becomes an Atom.
fn message_id(id: &str) -> Cow<'_, str> {
    let is_atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let is_msg_id = |id: &str| {
        id.strip_prefix('<')
            .and_then(|i| i.strip_suffix('>'))
            .and_then(|i| i.split_once('@'))
            .is_some_and(|(left, right)| {
                [left, right].iter().all(|part| {
                    !part.is_empty()
                        && part
                            .split('.')
                            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
                })
            })
    };
    if id.len() <= MAX_TEXT && (is_msg_id(id) || id.chars().all(is_atext)) {
        return Cow::Borrowed(id);
    }
    let mut id = id.to_owned();
    truncate(&mut id, MAX_TEXT);
    if is_msg_id(&id) {
        return Cow::Owned(id);
    }
    Cow::Owned(
        id.chars()
            .map(|c| if is_atext(c) { c } else { '_' })
            .collect(),
    )
}

/// The path of the `for` clause, when it can be written without harm.
fn for_path(path: &ForwardPath, utf8: bool) -> Option<String> {
    if !utf8 && !path.is_ascii() {
        return None;
    }
    let text = path.to_string();
    let safe = text.len() + 2 <= MAX_PATH
        && !text
            .chars()
            .any(|c| c.is_control() || matches!(c, '(' | ')' | '\\'));
    safe.then_some(text)
}

/// The caller's date, split at its whitespace, with control characters,
/// non-ASCII characters, backslashes and unbalanced parentheses as `?`.
fn date_words<'t>(date: &'t str, units: &mut Vec<Unit<'t>>) {
    let mut cut = date;
    if cut.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !cut.is_char_boundary(end) {
            end -= 1;
        }
        cut = &cut[..end];
    }
    let keep_parens = balanced(cut);
    let safe = |c: char| match c {
        ' ' | '\t' => ' ',
        '(' | ')' if keep_parens => c,
        '(' | ')' | '\\' => '?',
        c if c.is_ascii() && !c.is_ascii_control() => c,
        _ => '?',
    };
    words(cut, safe, units);
}

/// True when every `(` has its `)` after it.
fn balanced(text: &str) -> bool {
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => {}
        }
    }
    depth == 0
}

/// Cuts `text` to at most `max` octets, at a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The units of `clauses`, each clause's first marked as such.
    fn units(clauses: &[Vec<String>]) -> Vec<Unit<'_>> {
        let mut units = Vec::new();
        for clause in clauses {
            let start = units.len();
            units.extend(
                clause
                    .iter()
                    .map(|word| Unit::word(Cow::Borrowed(word.as_str()))),
            );
            starts_clause(&mut units, start);
        }
        units
    }

    #[test]
    fn folding_keeps_units_whole_and_lines_short() {
        let clauses: Vec<Vec<String>> = (0..30).map(|i| vec![format!("word{i}")]).collect();
        let folded = fold("Received:", &units(&clauses));
        for line in folded.trim_end_matches("\r\n").split("\r\n") {
            assert!(line.len() <= FOLD_AT, "{line:?}");
        }
        let words: Vec<&str> = clauses.iter().map(|c| c[0].as_str()).collect();
        assert_eq!(
            folded.replace("\r\n\t", " "),
            format!("Received: {}\r\n", words.join(" "))
        );

        // A unit too long for any line gets one to itself, and the next unit a new one.
        let long = "x".repeat(200);
        let one = |unit: &str| vec![unit.to_owned()];
        let folded = fold("Received:", &units(&[one("a"), one(&long), one("b")]));
        assert_eq!(folded, format!("Received: a\r\n\t{long}\r\n\tb\r\n"));
        // A long unit first stays on the first line: there is nothing before it to fold.
        let folded = fold("Received:", &units(&[one(&long), one("b")]));
        assert_eq!(folded, format!("Received: {long}\r\n\tb\r\n"));
    }

    #[test]
    fn folding_prefers_clause_boundaries() {
        let clause = |text: &str| text.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let folded = fold(
            "Received:",
            &units(&[
                clause("from a.example (a.example [192.0.2.1])"),
                clause("(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)"),
                clause("by b.example"),
            ]),
        );
        assert_eq!(
            folded,
            "Received: from a.example (a.example [192.0.2.1])\r\n\
             \t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256) by b.example\r\n"
        );
        // A clause longer than a line is folded inside, at its own spaces.
        let words = "w123456789 ".repeat(12);
        let folded = fold(
            "Received:",
            &units(&[clause("by b.example"), clause(words.trim_end())]),
        );
        let lines: Vec<&str> = folded.trim_end_matches("\r\n").split("\r\n").collect();
        assert_eq!(lines[0], "Received: by b.example");
        assert!(lines[1..]
            .iter()
            .all(|l| l.starts_with('\t') && l.len() <= FOLD_AT));
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        let mut text = "é".repeat(200);
        truncate(&mut text, 255);
        assert_eq!(text.len(), 254);
        let mut short = "abc".to_owned();
        truncate(&mut short, 255);
        assert_eq!(short, "abc");
    }

    #[test]
    fn balance() {
        assert!(balanced("Tue, 1 Jul 2003 10:52:37 +0200 (CEST)"));
        assert!(balanced("a (b (c)) d"));
        assert!(!balanced(")("));
        assert!(!balanced("(a"));
        assert!(!balanced("a)"));
    }
}
