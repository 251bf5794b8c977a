//! The response: `name=value` lines and an empty line, of which `action` matters, and what
//! each access(5) action means.

use std::fmt;

use crate::policy::PolicyError;

/// An RFC 3463 enhanced status code (`5.7.1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnhancedCode {
    /// 2, 4 or 5.
    pub class: u8,
    /// The subject, 0..=999.
    pub subject: u16,
    /// The detail, 0..=999.
    pub detail: u16,
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl EnhancedCode {
    /// Parses `D.D{1,3}.D{1,3}` with a class of 2, 4 or 5.
    pub fn parse(s: &str) -> Option<EnhancedCode> {
        let mut parts = s.split('.');
        let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
        let number = |p: &str, max: usize| {
            (!p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
        };
        let class = number(class, 1)? as u8;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(EnhancedCode {
            class,
            subject: number(subject, 3)?,
            detail: number(detail, 3)?,
        })
    }
}

/// The optional text of a refusal: an enhanced status code at its start, and the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusal {
    /// The enhanced status code the text starts with, if any.
    pub enhanced: Option<EnhancedCode>,
    /// The text after it, if any.
    pub text: Option<String>,
}

impl Refusal {
    fn parse(text: &str) -> Refusal {
        let text = text.trim();
        let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
        let (enhanced, text) = match EnhancedCode::parse(first) {
            Some(code) => (Some(code), rest.trim_start()),
            None => (None, text),
        };
        Refusal {
            enhanced,
            text: (!text.is_empty()).then(|| text.to_string()),
        }
    }
}

/// What a policy service decided (`action=`), as access(5) defines it before the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyAction {
    /// `OK` (or an all-numerical result): permit.
    Ok,
    /// `DUNNO`: no opinion; go on with the other checks.
    Dunno,
    /// `REJECT [text]`: refuse with a 5xx (Postfix's `access_map_reject_code`, 554).
    Reject(Refusal),
    /// `DEFER [text]`: refuse with a 4xx (Postfix's `access_map_defer_code`, 450).
    Defer(Refusal),
    /// `DEFER_IF_REJECT [text]`: a 4xx if a later check would reject, else go on.
    DeferIfReject(Refusal),
    /// `DEFER_IF_PERMIT [text]`: a 4xx if the other checks would permit (what postgrey
    /// answers to a first attempt).
    DeferIfPermit(Refusal),
    /// `4NN text` or `5NN text`: refuse with this reply.
    Reply {
        /// The code, 400..=599.
        code: u16,
        /// The enhanced status code after it, if any; its class is the code's.
        enhanced: Option<EnhancedCode>,
        /// The text after them (maybe empty).
        text: String,
    },
    /// `PREPEND name: value`: add this header field at the top of the message and go on.
    Prepend {
        /// The field name.
        name: String,
        /// The value after the colon.
        value: String,
    },
    /// `DISCARD [text]`: accept and throw away the message.
    Discard(Option<String>),
    /// `WARN [text]`: log a warning and go on.
    Warn(Option<String>),
    /// `HOLD [text]`: accept and keep the message on hold.
    Hold(Option<String>),
    /// `INFO [text]`: log the text and go on.
    Info(Option<String>),
    /// An action that needs a queue or restriction classes (`FILTER`, `REDIRECT`, `BCC`,
    /// a restriction name...): not supported by this client; the caller treats it as the
    /// service failing.
    Unsupported {
        /// The action word.
        action: String,
        /// The rest.
        text: String,
    },
}

impl PolicyAction {
    /// Parses an `action=` value.
    pub fn parse(value: &str) -> Result<PolicyAction, PolicyError> {
        let value = value.trim();
        let (word, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        let rest = rest.trim_start();
        let opt = || (!rest.is_empty()).then(|| rest.to_string());
        let action = match word.to_ascii_uppercase().as_str() {
            "" => return Err(PolicyError::BadAction("empty action")),
            "OK" => PolicyAction::Ok,
            "DUNNO" => PolicyAction::Dunno,
            "REJECT" => PolicyAction::Reject(Refusal::parse(rest)),
            "DEFER" => PolicyAction::Defer(Refusal::parse(rest)),
            "DEFER_IF_REJECT" => PolicyAction::DeferIfReject(Refusal::parse(rest)),
            "DEFER_IF_PERMIT" => PolicyAction::DeferIfPermit(Refusal::parse(rest)),
            "DISCARD" => PolicyAction::Discard(opt()),
            "WARN" => PolicyAction::Warn(opt()),
            "HOLD" => PolicyAction::Hold(opt()),
            "INFO" => PolicyAction::Info(opt()),
            "PREPEND" => prepend(rest)?,
            _ if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') => PolicyAction::Ok,
            _ if word.len() == 3 && word.bytes().all(|b| b.is_ascii_digit()) => reply(word, rest)?,
            _ => PolicyAction::Unsupported {
                action: word.to_string(),
                text: rest.to_string(),
            },
        };
        Ok(action)
    }
}

fn prepend(rest: &str) -> Result<PolicyAction, PolicyError> {
    let (name, value) = rest
        .split_once(':')
        .ok_or(PolicyError::BadAction("PREPEND without a header field"))?;
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b)) {
        return Err(PolicyError::BadAction("PREPEND with a bad field name"));
    }
    Ok(PolicyAction::Prepend {
        name: name.to_string(),
        value: value.to_string(),
    })
}

fn reply(word: &str, rest: &str) -> Result<PolicyAction, PolicyError> {
    let code: u16 = word
        .parse()
        .map_err(|_| PolicyError::BadAction("bad reply code"))?;
    if !(400..600).contains(&code) {
        return Err(PolicyError::BadAction(
            "a reply code that is not 4xx or 5xx",
        ));
    }
    let Refusal { enhanced, text } = Refusal::parse(rest);
    if enhanced.is_some_and(|e| u16::from(e.class) != code / 100) {
        return Err(PolicyError::BadAction(
            "enhanced status code of another class",
        ));
    }
    Ok(PolicyAction::Reply {
        code,
        enhanced,
        text: text.unwrap_or_default(),
    })
}

/// A whole response: the action and any other attributes the service sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyResponse {
    /// The decision.
    pub action: PolicyAction,
    /// The other attributes, in order (Postfix ignores them).
    pub attributes: Vec<(String, String)>,
}

impl PolicyResponse {
    /// Parses the response's lines (without the empty line; each without its LF, a CR
    /// before it allowed).
    pub fn parse(lines: &[u8]) -> Result<PolicyResponse, PolicyError> {
        let text = std::str::from_utf8(lines).map_err(|_| PolicyError::NotUtf8)?;
        let mut action = None;
        let mut attributes = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            if line.chars().any(|c| c.is_control() && c != '\t') {
                return Err(PolicyError::ControlCharacter);
            }
            let (name, value) = line.split_once('=').ok_or(PolicyError::NotAnAttribute)?;
            if name.is_empty() {
                return Err(PolicyError::NotAnAttribute);
            }
            if name == "action" {
                if action.is_some() {
                    return Err(PolicyError::DuplicateAction);
                }
                action = Some(PolicyAction::parse(value)?);
            } else {
                attributes.push((name.to_string(), value.to_string()));
            }
        }
        Ok(PolicyResponse {
            action: action.ok_or(PolicyError::NoAction)?,
            attributes,
        })
    }
}
