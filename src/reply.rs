//! SMTP replies: a code, an optional enhanced status code and one or more text lines.

use std::borrow::Cow;
use std::fmt;

/// An enhanced status code (RFC 3463), `class.subject.detail`, such as `2.1.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// The subject, 0..=999.
    pub subject: u16,
    /// The detail, 0..=999.
    pub detail: u16,
}

impl EnhancedCode {
    /// An enhanced code from its three numbers.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedCode {
            class,
            subject,
            detail,
        }
    }

    /// The three numbers, as Halon's `enhanced` array has them.
    pub fn to_array(self) -> [u16; 3] {
        [u16::from(self.class), self.subject, self.detail]
    }

    /// Parses a leading `X.Y.Z` followed by a space or the end of the text; returns the code
    /// and the rest of the text after the separating space.
    pub fn parse_prefix(text: &str) -> Option<(EnhancedCode, &str)> {
        let (head, rest) = match text.find(' ') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text, ""),
        };
        let mut parts = head.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let number = |s: &str, max_len: usize| -> Option<u16> {
            if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let class = number(class, 1)?;
        if !matches!(class, 2 | 4 | 5) {
            return None;
        }
        let code = EnhancedCode::new(class as u8, number(subject, 3)?, number(detail, 3)?);
        Some((code, rest))
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Why a reply given by a hook was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// SMTP reply codes sent by a server are 200..=599.
    #[error("reply code {0} is outside 200..=599")]
    CodeOutOfRange(u16),
    /// The enhanced code's class must be the first digit of the reply code (RFC 3463).
    #[error("enhanced code {enhanced} does not match the class of reply code {code}")]
    ClassMismatch {
        /// The reply code.
        code: u16,
        /// The enhanced code found at the start of the text.
        enhanced: EnhancedCode,
    },
}

/// One SMTP reply as it is sent: a code, an optional enhanced status code, and text lines.
///
/// The text never holds CR or LF: [`Reply::new`] splits text containing them into separate
/// lines of the same reply, so a hook's text can never inject a reply of its own.
///
/// Two replies are equal when code, enhanced code and text are; where a reply came from
/// (the crate's defaults or a hook) does not count.
#[derive(Clone)]
pub struct Reply {
    code: u16,
    enhanced: Option<EnhancedCode>,
    /// Lines joined with `\n`; crate defaults are static strings, so most replies cost no
    /// allocation to build or to remember as the last reply.
    text: Cow<'static, str>,
    /// Built by the crate: its enhanced code is dropped when ENHANCEDSTATUSCODES is off.
    /// Replies given by hooks are sent as given.
    default: bool,
    /// Reports the server's own trouble, not a client's mistake: not counted toward the
    /// hard error limit (see [`Reply::server_fault`]).
    server_fault: bool,
    /// The wire form, when known at compile time (the crate's fixed replies): written with
    /// one copy instead of being formatted for every reply sent.
    wire: &'static str,
}

impl PartialEq for Reply {
    fn eq(&self, other: &Reply) -> bool {
        self.code == other.code && self.enhanced == other.enhanced && self.text == other.text
    }
}

impl Eq for Reply {}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("code", &self.code)
            .field("enhanced", &self.enhanced)
            .field("text", &self.text)
            .finish()
    }
}

impl Reply {
    /// A reply from a code and free text, as a policy hook gives it (KumoMTA's
    /// `kumo.reject(CODE, MESSAGE)`).
    ///
    /// The text is kept verbatim, with two exceptions that keep the wire format sound: CR, LF
    /// and CRLF split it into lines of one multi-line reply, and other control characters
    /// become spaces. When the first line starts with an enhanced code (`4.7.1 text`) it is
    /// recognised, checked against the reply code's class, and repeated on every line as
    /// RFC 2034 asks; when it does not, none is added.
    pub fn new(code: u16, text: impl AsRef<str>) -> Result<Reply, ReplyError> {
        let text = text.as_ref();
        let first_line_end = text.find(['\r', '\n']).unwrap_or(text.len());
        let enhanced = EnhancedCode::parse_prefix(&text[..first_line_end]).map(|(e, _)| e);
        Reply::build(code, enhanced, text, enhanced.is_some())
    }

    /// A reply with an explicit enhanced code; the text is treated as in [`Reply::new`] except
    /// that no enhanced code is looked for in it.
    pub fn with_enhanced(
        code: u16,
        enhanced: EnhancedCode,
        text: impl AsRef<str>,
    ) -> Result<Reply, ReplyError> {
        Reply::build(code, Some(enhanced), text.as_ref(), false)
    }

    fn build(
        code: u16,
        enhanced: Option<EnhancedCode>,
        text: &str,
        strip_prefix: bool,
    ) -> Result<Reply, ReplyError> {
        if !(200..=599).contains(&code) {
            return Err(ReplyError::CodeOutOfRange(code));
        }
        if let Some(e) = enhanced {
            if u16::from(e.class) != code / 100 {
                return Err(ReplyError::ClassMismatch { code, enhanced: e });
            }
        }
        let mut joined = String::with_capacity(text.len());
        for (i, line) in split_lines(text).enumerate() {
            if i > 0 {
                joined.push('\n');
            }
            let line = match EnhancedCode::parse_prefix(line) {
                Some((found, rest)) if strip_prefix && Some(found) == enhanced => rest,
                _ => line,
            };
            joined.extend(
                line.chars()
                    .map(|c| if c.is_control() && c != '\t' { ' ' } else { c }),
            );
        }
        Ok(Reply {
            code,
            enhanced,
            text: Cow::Owned(joined),
            default: false,
            server_fault: false,
            wire: "",
        })
    }

    /// A crate default: static text, already known to be well formed, with its wire form
    /// (see the `fixed!` macro of the outbox, which writes both from the same literals).
    pub(crate) const fn fixed(
        code: u16,
        enhanced: Option<EnhancedCode>,
        text: &'static str,
        wire: &'static str,
    ) -> Reply {
        Reply {
            code,
            enhanced,
            text: Cow::Borrowed(text),
            default: true,
            server_fault: false,
            wire,
        }
    }

    /// A crate-built reply with dynamic text; the caller guarantees no CR and LF only as a
    /// line separator.
    pub(crate) fn built(code: u16, enhanced: Option<EnhancedCode>, text: String) -> Reply {
        debug_assert!(!text.contains('\r'), "reply text must not contain CR");
        Reply {
            code,
            enhanced,
            text: Cow::Owned(text),
            default: true,
            server_fault: false,
            wire: "",
        }
    }

    /// The reply as sent when ENHANCEDSTATUSCODES is `advertised` or not: crate defaults
    /// lose their enhanced code when it is not; a hook's reply is sent as given.
    pub(crate) fn for_extensions(mut self, advertised: bool) -> Reply {
        if self.default && !advertised && self.enhanced.is_some() {
            self.enhanced = None;
            self.wire = "";
        }
        self
    }

    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code, if the reply has one.
    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    /// The text lines, without code or enhanced code.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text.split('\n')
    }

    /// True for 4xx and 5xx replies.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Marks the reply as reporting the server's own trouble (a full disk, a store that
    /// failed, a backend that is down) rather than a mistake of the client: it is sent as
    /// it is, but does not count toward
    /// [`Config::hard_error_limit`](crate::Config::hard_error_limit), so a client that
    /// retries through the trouble is not cut off for it.
    ///
    /// ```
    /// use smtp_session::{Decision, Reply};
    /// let full = Reply::new(452, "4.3.1 Insufficient system storage").unwrap().server_fault();
    /// assert!(full.is_server_fault());
    /// let decision = Decision::Reject(full);
    /// # let _ = decision;
    /// ```
    #[must_use]
    pub fn server_fault(mut self) -> Reply {
        self.server_fault = true;
        self
    }

    /// True when [`server_fault`](Reply::server_fault) marked the reply.
    pub fn is_server_fault(&self) -> bool {
        self.server_fault
    }

    /// Appends the reply in wire format (`CODE-text` lines, a last `CODE text` line, CRLF).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if !self.wire.is_empty() {
            debug_assert_eq!(
                self.wire.as_bytes(),
                self.format_wire(),
                "a fixed reply's wire"
            );
            out.extend_from_slice(self.wire.as_bytes());
            return;
        }
        self.format_to(out);
    }

    fn format_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.format_to(&mut out);
        out
    }

    fn format_to(&self, out: &mut Vec<u8>) {
        // Every line starts with the same head, `250-2.1.5` (at most 3 + 1 + 9 bytes), so it
        // is formatted once; the separator after the code is patched per line. This runs
        // for every reply, so it avoids `str::split` and byte-by-byte pushes.
        let mut head = [0u8; 16];
        head[0] = b'0' + (self.code / 100 % 10) as u8;
        head[1] = b'0' + (self.code / 10 % 10) as u8;
        head[2] = b'0' + (self.code % 10) as u8;
        let mut head_len = 4;
        if let Some(e) = self.enhanced {
            head_len = write_enhanced(&mut head, head_len, e);
        }
        // Reply texts are short: a plain scan beats setting up a vectorised search.
        let text = self.text.as_bytes();
        out.reserve(text.len() + head_len + 3);
        let mut rest = text;
        loop {
            let (line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], rest.get(i + 1..)),
                None => (rest, None),
            };
            head[3] = if next.is_some() { b'-' } else { b' ' };
            out.extend_from_slice(&head[..head_len]);
            if self.enhanced.is_some() && !line.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
            match next {
                Some(next) => rest = next,
                None => return,
            }
        }
    }

    /// The reply in wire format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// Writes `X.Y.Z` into `buf` at `at` and returns the new end; `buf` has room for the longest
/// (`5.999.999`).
fn write_enhanced(buf: &mut [u8; 16], mut at: usize, e: EnhancedCode) -> usize {
    let mut put = |byte: u8| {
        buf[at] = byte;
        at += 1;
    };
    put(b'0' + e.class % 10);
    for n in [e.subject, e.detail] {
        put(b'.');
        if n >= 100 {
            put(b'0' + (n / 100 % 10) as u8);
        }
        if n >= 10 {
            put(b'0' + (n / 10 % 10) as u8);
        }
        put(b'0' + (n % 10) as u8);
    }
    at
}

/// Splits on CRLF, CR or LF; a trailing line ending does not make an empty last line.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let trimmed = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .or_else(|| text.strip_suffix('\r'))
        .unwrap_or(text);
    let mut rest = Some(trimmed);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Any enhanced code a reply can carry: class 2, 4 or 5, subject and detail 0..=999.
#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for EnhancedCode {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let class = *u.choose(&[2u8, 4, 5])?;
        Ok(EnhancedCode::new(
            class,
            u.int_in_range(0..=999)?,
            u.int_in_range(0..=999)?,
        ))
    }
}

/// Any reply a hook can give: a code in 200..=599, free text (CR, LF and control
/// characters included, which [`Reply::new`] makes safe), now and then an enhanced code of
/// the code's class, now and then marked a [`server_fault`](Reply::server_fault). Every
/// value is one [`Reply::new`] or [`Reply::with_enhanced`] accepts.
#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Reply {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let code: u16 = u.int_in_range(200..=599)?;
        let text: String = u.arbitrary()?;
        let enhanced = if u.arbitrary()? {
            let e = EnhancedCode::arbitrary(u)?;
            Some(EnhancedCode::new((code / 100) as u8, e.subject, e.detail))
        } else {
            None
        };
        let reply = match enhanced {
            Some(e) => Reply::with_enhanced(code, e, &text),
            None => Reply::new(code, &text),
        };
        // Text that starts with an enhanced code of another class is refused as it stands;
        // after a space it is plain text.
        let reply = reply.or_else(|_| Reply::new(code, format!(" {text}")));
        let reply = reply.map_err(|_| arbitrary::Error::IncorrectFormat)?;
        Ok(if u.arbitrary()? {
            reply.server_fault()
        } else {
            reply
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        String::from_utf8(r.to_bytes()).unwrap()
    }

    #[test]
    fn hook_text_is_sent_verbatim_without_added_enhanced_code() {
        let r = Reply::new(451, "no thank you").unwrap();
        assert_eq!(wire(&r), "451 no thank you\r\n");
        assert_eq!(r.enhanced(), None);
    }

    #[test]
    fn enhanced_prefix_is_recognised_and_checked() {
        let r = Reply::new(550, "5.7.1 go away").unwrap();
        assert_eq!(r.enhanced(), Some(EnhancedCode::new(5, 7, 1)));
        assert_eq!(r.lines().collect::<Vec<_>>(), ["go away"]);
        assert_eq!(wire(&r), "550 5.7.1 go away\r\n");
        assert_eq!(
            Reply::new(550, "4.7.1 mismatch"),
            Err(ReplyError::ClassMismatch {
                code: 550,
                enhanced: EnhancedCode::new(4, 7, 1)
            })
        );
    }

    #[test]
    fn codes_outside_200_to_599_are_refused() {
        assert_eq!(Reply::new(199, "x"), Err(ReplyError::CodeOutOfRange(199)));
        assert_eq!(Reply::new(600, "x"), Err(ReplyError::CodeOutOfRange(600)));
        assert!(Reply::new(200, "x").is_ok());
        assert!(Reply::new(599, "x").is_ok());
    }

    #[test]
    fn line_breaks_cannot_inject_a_second_reply() {
        let r = Reply::new(250, "ok\r\n250 injected\rx\ny").unwrap();
        assert_eq!(wire(&r), "250-ok\r\n250-250 injected\r\n250-x\r\n250 y\r\n");
        let r = Reply::new(250, "nul\0here").unwrap();
        assert_eq!(wire(&r), "250 nul here\r\n");
    }

    #[test]
    fn multi_line_enhanced_replies_repeat_the_code_on_every_line() {
        let r = Reply::new(452, "4.5.3 first\n4.5.3 second\nthird").unwrap();
        assert_eq!(
            wire(&r),
            "452-4.5.3 first\r\n452-4.5.3 second\r\n452 4.5.3 third\r\n"
        );
    }

    #[test]
    fn prefix_parsing_rejects_near_misses() {
        assert!(EnhancedCode::parse_prefix("2.0.0").is_some());
        assert!(EnhancedCode::parse_prefix("2.0.0 ok").is_some());
        for bad in [
            "3.0.0 x",
            "2.0 x",
            "2.0.0.0 x",
            "2.a.0 x",
            "22.0.0 x",
            "2.1000.0 x",
            "",
            "2..0 x",
        ] {
            assert!(EnhancedCode::parse_prefix(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn explicit_enhanced_code_must_match_class() {
        let r = Reply::with_enhanced(421, EnhancedCode::new(4, 3, 2), "bye").unwrap();
        assert_eq!(wire(&r), "421 4.3.2 bye\r\n");
        assert!(Reply::with_enhanced(250, EnhancedCode::new(5, 0, 0), "x").is_err());
    }
}
