//! What a filter answers: verdicts, modifications, and the checks that turn its packets into
//! them. Everything a filter sends is checked here before it reaches the caller: header names
//! and values that cannot inject lines, SMTP replies that are whole 4xx/5xx replies,
//! addresses without control characters.

use crate::milter::wire::{one_or_two_strings, reply, strings, u32_at};
use crate::milter::ProtocolError;

/// A filter's answer to one step.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Go on (`SMFIR_CONTINUE`); also what a step the filter skipped or does not answer gets.
    Continue,
    /// Accept (`SMFIR_ACCEPT`): at connect or HELO the filter is done with the connection,
    /// from MAIL on with the message; it gets no more steps of it.
    Accept,
    /// Accept the message and throw it away (`SMFIR_DISCARD`). Only from MAIL on.
    Discard,
    /// Refuse (`SMFIR_REJECT`): the step's command gets the MTA's 5xx reply (at RCPT only
    /// that recipient; at connect the whole connection).
    Reject,
    /// Refuse for now (`SMFIR_TEMPFAIL`): as [`Verdict::Reject`] with a 4xx reply.
    Tempfail,
    /// Refuse with the filter's own reply (`SMFIR_REPLYCODE`): 4xx or 5xx.
    Reply(SmtpReply),
    /// Send no more body chunks of this message (`SMFIR_SKIP`); go on with end of message.
    Skip,
    /// The filter is shutting down or failed (`SMFIR_SHUTDOWN`, `SMFIR_CONN_FAIL`): the MTA
    /// answers 421 and closes the SMTP connection.
    Shutdown,
}

/// A whole SMTP reply a filter chose (`SMFIR_REPLYCODE`), checked: a 4xx or 5xx code, the
/// same on every line, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpReply {
    /// The reply code, 400..=599.
    pub code: u16,
    /// Each line's text after the code and its separator (an enhanced status code, if any,
    /// is its start).
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// The reply as it goes on the wire: `CODE-text` lines, a last `CODE text` line, CRLF.
    pub fn to_wire(&self) -> String {
        let mut out = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == self.lines.len() { ' ' } else { '-' };
            out.push_str(&format!("{}{sep}{line}\r\n", self.code));
        }
        out
    }

    /// Parses `SMFIR_REPLYCODE` text: lines separated by CRLF, each `CODE-text` or `CODE text`
    /// (the last `CODE text` or just `CODE`).
    pub fn parse(text: &[u8]) -> Result<SmtpReply, ProtocolError> {
        let bad = |reason| ProtocolError::BadReplyCode { reason };
        let text = std::str::from_utf8(text).map_err(|_| bad("not UTF-8"))?;
        let mut code = None;
        let mut lines = Vec::new();
        let parts: Vec<&str> = text.split("\r\n").collect();
        for (i, line) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let b = line.as_bytes();
            if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
                return Err(bad("a line does not start with a three-digit code"));
            }
            if !matches!(b[0], b'4' | b'5') {
                return Err(bad("not a 4xx or 5xx code"));
            }
            let this: u16 = line[..3].parse().map_err(|_| bad("bad code"))?;
            if *code.get_or_insert(this) != this {
                return Err(bad("lines with different codes"));
            }
            match (b.get(3), last) {
                (None, true) => lines.push(String::new()),
                (Some(b' '), true) | (Some(b'-'), false) => lines.push(line[4..].to_string()),
                _ => return Err(bad("a line's separator does not fit its place")),
            }
            if line.chars().any(|c| c.is_control() && c != '\t') {
                return Err(bad("control character"));
            }
        }
        Ok(SmtpReply {
            code: code.unwrap_or(0),
            lines,
        })
    }
}

/// A change a filter asks for at end of message. Values are checked and normalised: header
/// names are printable ASCII without `:`, header values have a leading space unless empty
/// (the filter's, with `SMFIP_HDR_LEADSPC`, else one added), folds are LF followed by a space
/// or tab (a filter's CRLF becomes LF; write CRLF on the wire, see
/// [`crate::edits::Header::write_to`]), and addresses and arguments have no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Modification {
    /// Append a header field at the end of the header (`SMFIR_ADDHEADER`).
    AddHeader {
        /// The field name.
        name: String,
        /// The field value, as after the colon.
        value: Vec<u8>,
    },
    /// Insert a header field before the `index`th field, counting from 0 over the fields the
    /// filter was sent (`SMFIR_INSHEADER`); past the end it is appended.
    InsertHeader {
        /// Position among all fields, 0 the top.
        index: u32,
        /// The field name.
        name: String,
        /// The field value, as after the colon.
        value: Vec<u8>,
    },
    /// Change the `index`th field called `name` (case-insensitively, counting from 1) to
    /// `value`, delete it when `value` is empty, add it when there are fewer than `index`
    /// such fields (`SMFIR_CHGHEADER`; index 0 is taken as 1, as Sendmail does).
    ChangeHeader {
        /// Occurrence among the fields of that name, 1 the first.
        index: u32,
        /// The field name.
        name: String,
        /// The new value, as after the colon; empty deletes the field.
        value: Vec<u8>,
    },
    /// Add a recipient (`SMFIR_ADDRCPT`, or `SMFIR_ADDRCPT_PAR` with ESMTP arguments).
    AddRecipient {
        /// The address, as the filter wrote it (usually in angle brackets).
        address: String,
        /// ESMTP arguments, from `SMFIR_ADDRCPT_PAR`.
        args: Option<String>,
    },
    /// Remove a recipient (`SMFIR_DELRCPT`).
    DeleteRecipient {
        /// The address, as the filter wrote it.
        address: String,
    },
    /// Change the envelope sender (`SMFIR_CHGFROM`).
    ChangeSender {
        /// The new address, as the filter wrote it.
        address: String,
        /// New ESMTP arguments for MAIL.
        args: Option<String>,
    },
    /// The next piece of a new body (`SMFIR_REPLBODY`): the first piece replaces the body,
    /// the others are appended to it, in order.
    ReplaceBody(Vec<u8>),
    /// Hold the message in quarantine (`SMFIR_QUARANTINE`).
    Quarantine {
        /// The filter's reason.
        reason: String,
    },
}

impl Modification {
    /// The action the filter must have negotiated to ask for this change.
    pub fn required_action(&self) -> crate::milter::Actions {
        use crate::milter::Actions;
        match self {
            Modification::AddHeader { .. } | Modification::InsertHeader { .. } => {
                Actions::ADD_HEADERS
            }
            Modification::ChangeHeader { .. } => Actions::CHANGE_HEADERS,
            Modification::AddRecipient { args: None, .. } => Actions::ADD_RECIPIENT,
            Modification::AddRecipient { args: Some(_), .. } => Actions::ADD_RECIPIENT_WITH_ARGS,
            Modification::DeleteRecipient { .. } => Actions::DELETE_RECIPIENT,
            Modification::ChangeSender { .. } => Actions::CHANGE_FROM,
            Modification::ReplaceBody(_) => Actions::CHANGE_BODY,
            Modification::Quarantine { .. } => Actions::QUARANTINE,
        }
    }
}

/// One parsed reply packet.
#[derive(Debug)]
pub(crate) enum Packet {
    Verdict(Verdict),
    Modification(Modification),
    Progress,
    Negotiate(Vec<u8>),
}

/// Turns a reply packet into what it means, checking its data. `leading_space`: whether
/// `SMFIP_HDR_LEADSPC` was negotiated.
pub(crate) fn parse_packet(
    code: u8,
    data: &[u8],
    leading_space: bool,
) -> Result<Packet, ProtocolError> {
    let malformed = |reason| ProtocolError::Malformed {
        reply: code as char,
        reason,
    };
    let no_data = |v: Verdict| {
        if data.is_empty() {
            Ok(Packet::Verdict(v))
        } else {
            Err(malformed("data after a reply that takes none"))
        }
    };
    let modification = |m: Modification| Ok(Packet::Modification(m));
    match code {
        reply::CONTINUE => no_data(Verdict::Continue),
        reply::ACCEPT => no_data(Verdict::Accept),
        reply::DISCARD => no_data(Verdict::Discard),
        reply::REJECT => no_data(Verdict::Reject),
        reply::TEMPFAIL => no_data(Verdict::Tempfail),
        reply::SKIP => no_data(Verdict::Skip),
        reply::SHUTDOWN | reply::CONN_FAIL => no_data(Verdict::Shutdown),
        reply::PROGRESS if data.is_empty() => Ok(Packet::Progress),
        reply::PROGRESS => Err(malformed("data after a reply that takes none")),
        reply::REPLYCODE => {
            let [text] = strings::<1>(data).ok_or(malformed("not one NUL-terminated string"))?;
            Ok(Packet::Verdict(Verdict::Reply(SmtpReply::parse(text)?)))
        }
        reply::ADDHEADER => {
            let [name, value] = strings::<2>(data).ok_or(malformed("not name and value"))?;
            let (name, value) = header(name, value, leading_space)?;
            modification(Modification::AddHeader { name, value })
        }
        reply::INSHEADER | reply::CHGHEADER => {
            let index = u32_at(data, 0).ok_or(malformed("no index"))?;
            let [name, value] = strings::<2>(&data[4..]).ok_or(malformed("not name and value"))?;
            let (name, value) = header(name, value, leading_space)?;
            modification(if code == reply::INSHEADER {
                Modification::InsertHeader { index, name, value }
            } else {
                Modification::ChangeHeader { index, name, value }
            })
        }
        reply::ADDRCPT | reply::DELRCPT => {
            let [address] = strings::<1>(data).ok_or(malformed("not one address"))?;
            let address = text(address, "address")?;
            modification(if code == reply::ADDRCPT {
                Modification::AddRecipient {
                    address,
                    args: None,
                }
            } else {
                Modification::DeleteRecipient { address }
            })
        }
        reply::ADDRCPT_PAR | reply::CHGFROM => {
            let (address, args) = one_or_two_strings(data).ok_or(malformed("not an address"))?;
            let address = text(address, "address")?;
            let args = args.map(|a| text(a, "ESMTP arguments")).transpose()?;
            modification(if code == reply::CHGFROM {
                Modification::ChangeSender { address, args }
            } else {
                Modification::AddRecipient {
                    address,
                    args: Some(args.unwrap_or_default()),
                }
            })
        }
        reply::REPLBODY => modification(Modification::ReplaceBody(data.to_vec())),
        reply::QUARANTINE => {
            let [reason] = strings::<1>(data).ok_or(malformed("not one reason"))?;
            modification(Modification::Quarantine {
                reason: text(reason, "reason")?,
            })
        }
        reply::OPTNEG => Ok(Packet::Negotiate(data.to_vec())),
        reply::SETSYMLIST => Err(ProtocolError::Unexpected {
            reply: code as char,
            step: None,
        }),
        other => Err(ProtocolError::UnknownReply(other)),
    }
}

/// Checks a header field from a filter and normalises its value (see [`Modification`]).
fn header(
    name: &[u8],
    value: &[u8],
    leading_space: bool,
) -> Result<(String, Vec<u8>), ProtocolError> {
    if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b) && b != b':') {
        return Err(ProtocolError::BadHeaderName);
    }
    let mut out = Vec::with_capacity(value.len() + 1);
    if !leading_space && !value.is_empty() {
        out.push(b' ');
    }
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\r' if value.get(i + 1) == Some(&b'\n') => {}
            b'\r' => return Err(ProtocolError::HeaderInjection),
            b'\n' if matches!(value.get(i + 1), Some(b' ' | b'\t')) => out.push(b'\n'),
            b'\n' => return Err(ProtocolError::HeaderInjection),
            b => out.push(b),
        }
        i += 1;
    }
    // Names were checked to be ASCII.
    Ok((String::from_utf8_lossy(name).into_owned(), out))
}

/// A string from the filter that must be UTF-8 without control characters.
fn text(bytes: &[u8], what: &'static str) -> Result<String, ProtocolError> {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => Ok(s.to_string()),
        _ => Err(ProtocolError::BadText { what }),
    }
}
