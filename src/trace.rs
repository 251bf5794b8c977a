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
        let mut clauses: Vec<Vec<String>> = Vec::new();
        clauses.extend(self.peer_clause(utf8));
        if let Some(tls) = self.tls {
            clauses.push(comment(&tls_words(tls, utf8)));
        }
        clauses.push(vec![format!("by {}", host_name(self.by, utf8))]);
        clauses.push(vec![format!("with {}", self.protocol.keyword())]);
        if let Some(id) = self.id.map(message_id).filter(|id| !id.is_empty()) {
            clauses.push(vec![format!("id {id}")]);
        }
        if let Some(path) = self.recipient.and_then(|path| for_path(path, utf8)) {
            clauses.push(vec![format!("for <{path}>")]);
        }
        if let Some(last) = clauses.last_mut().and_then(|clause| clause.last_mut()) {
            last.push(';');
        }
        clauses.push(date_words(self.date));
        fold("Received:", &clauses)
    }

    /// `from NAME (REVERSE-DNS [LITERAL] helo=TEXT)`, each part when known.
    fn peer_clause(&self, utf8: bool) -> Option<Vec<String>> {
        let literal = self.remote_ip.map(address_literal);
        let reverse_dns = self.reverse_dns.filter(|name| is_host_name(name, utf8));
        let helo = self.helo.filter(|name| is_host_name(name, utf8));
        let name = helo
            .map(str::to_owned)
            .or_else(|| literal.clone())
            .or_else(|| reverse_dns.map(str::to_owned))?;
        let mut words: Vec<String> = reverse_dns.into_iter().map(str::to_owned).collect();
        words.extend(literal);
        if let (None, Some(text)) = (helo, self.helo) {
            let mut text = comment_words(text, utf8);
            match text.first_mut() {
                Some(first) => first.insert_str(0, "helo="),
                None => text.push("helo=".into()),
            }
            words.extend(text);
        }
        let mut clause = vec![format!("from {name}")];
        clause.extend(comment(&words));
        Some(clause)
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

/// Joins the clauses' units after `name` with single spaces, folding (CRLF
/// and a tab) before a clause that does not fit the rest of the line, and
/// inside a clause too long for any line before the unit that would carry the
/// line past 78 octets. Units are never split, so a line is either at most 78
/// octets or holds a single unit (the first line: the name and one unit).
fn fold(name: &str, clauses: &[Vec<String>]) -> String {
    let mut out = String::with_capacity(FOLD_AT * 4);
    out.push_str(name);
    let mut line = name.len();
    let mut empty = true;
    for clause in clauses {
        let width = clause.iter().map(|unit| unit.len() + 1).sum::<usize>();
        let mut fold_now = !empty && line + width > FOLD_AT;
        for unit in clause {
            if fold_now || (!empty && line + 1 + unit.len() > FOLD_AT) {
                out.push_str("\r\n\t");
                line = 1;
            } else {
                out.push(' ');
                line += 1;
            }
            out.push_str(unit);
            line += unit.len();
            empty = false;
            fold_now = false;
            debug_assert!(line <= MAX_LINE, "every trace unit is bounded by MAX_TEXT");
        }
    }
    out.push_str("\r\n");
    out
}

/// Wraps `words` in one comment, each word a unit of its own.
fn comment(words: &[String]) -> Vec<String> {
    let count = words.len();
    words
        .iter()
        .enumerate()
        .map(|(i, word)| {
            let open = if i == 0 { "(" } else { "" };
            let close = if i + 1 == count { ")" } else { "" };
            format!("{open}{word}{close}")
        })
        .collect()
}

/// `using PROTOCOL with cipher CIPHER (BITS bits) sni NAME`, each part when known.
fn tls_words(tls: &TlsInfo, utf8: bool) -> Vec<String> {
    let mut words = Vec::new();
    let protocol = comment_words(&tls.protocol, utf8);
    if !protocol.is_empty() {
        words.push("using".to_owned());
        words.extend(protocol);
    }
    let cipher = comment_words(&tls.cipher, utf8);
    if !cipher.is_empty() {
        words.extend(["with".to_owned(), "cipher".to_owned()]);
        words.extend(cipher);
    }
    if let Some(bits) = tls.key_size {
        words.extend([format!("({bits}"), "bits)".to_owned()]);
    }
    if let Some(sni) = &tls.sni {
        let sni = comment_words(sni, utf8);
        if !sni.is_empty() {
            words.push("sni".to_owned());
            words.extend(sni);
        }
    }
    if words.is_empty() {
        words.push("TLS".to_owned());
    }
    words
}

/// Outside text made safe for a comment and split at its whitespace: control
/// characters, parentheses and backslashes become `?`, and so does non-ASCII
/// text unless `utf8`; only the first 255 octets are kept.
fn comment_words(text: &str, utf8: bool) -> Vec<String> {
    let mut text = text.to_owned();
    truncate(&mut text, MAX_TEXT);
    let safe: String = text
        .chars()
        .map(|c| match c {
            ' ' | '\t' => ' ',
            '(' | ')' | '\\' => '?',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            c if utf8 && !c.is_ascii() && !c.is_control() && !c.is_whitespace() => c,
            _ => '?',
        })
        .collect();
    safe.split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
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
fn host_name(name: &str, utf8: bool) -> String {
    if is_host_name(name, utf8) {
        return name.to_owned();
    }
    let mut name = name.to_owned();
    truncate(&mut name, MAX_TEXT);
    let safe: String = name
        .chars()
        .map(|c| if is_host_char(c, utf8) { c } else { '-' })
        .collect();
    if safe.is_empty() {
        "unknown".to_owned()
    } else {
        safe
    }
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
fn message_id(id: &str) -> String {
    let is_atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let mut id = id.to_owned();
    truncate(&mut id, MAX_TEXT);
    let msg_id = id
        .strip_prefix('<')
        .and_then(|i| i.strip_suffix('>'))
        .and_then(|i| i.split_once('@'))
        .is_some_and(|(left, right)| {
            [left, right].iter().all(|part| {
                !part.is_empty()
                    && part
                        .split('.')
                        .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
            })
        });
    if msg_id {
        return id;
    }
    id.chars()
        .map(|c| if is_atext(c) { c } else { '_' })
        .collect()
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
fn date_words(date: &str) -> Vec<String> {
    let mut date = date.to_owned();
    truncate(&mut date, MAX_TEXT);
    let keep_parens = balanced(&date);
    let safe: String = date
        .chars()
        .map(|c| match c {
            ' ' | '\t' => ' ',
            '(' | ')' if keep_parens => c,
            '(' | ')' | '\\' => '?',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '?',
        })
        .collect();
    safe.split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
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

    #[test]
    fn folding_keeps_units_whole_and_lines_short() {
        let clauses: Vec<Vec<String>> = (0..30).map(|i| vec![format!("word{i}")]).collect();
        let folded = fold("Received:", &clauses);
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
        let folded = fold("Received:", &[one("a"), one(&long), one("b")]);
        assert_eq!(folded, format!("Received: a\r\n\t{long}\r\n\tb\r\n"));
        // A long unit first stays on the first line: there is nothing before it to fold.
        let folded = fold("Received:", &[one(&long), one("b")]);
        assert_eq!(folded, format!("Received: {long}\r\n\tb\r\n"));
    }

    #[test]
    fn folding_prefers_clause_boundaries() {
        let clause = |text: &str| text.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let folded = fold(
            "Received:",
            &[
                clause("from a.example (a.example [192.0.2.1])"),
                clause("(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)"),
                clause("by b.example"),
            ],
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
            &[clause("by b.example"), clause(words.trim_end())],
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
