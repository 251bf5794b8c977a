//! The filters' message stage: each filter in turn is sent the header fields as the filters
//! before it left them, end of headers, the body (the spool's, or the last filter's new
//! one) in pieces, and end of message; then its changes are applied:
//!
//! - Header fields go where the filter asked, counted as libmilter and Postfix count them
//!   over the fields the filter was sent (the message's own: the receiver's trace fields are
//!   not sent, so nothing lands above them): `SMFIR_ADDHEADER` at the end of the header
//!   section, `SMFIR_INSHEADER` before the field at its index (0 the top), `SMFIR_CHGHEADER`
//!   on the index-th field of that name (an empty value deletes it).
//! - `SMFIR_CHGFROM` changes the envelope sender the message is stored (its `Return-Path:`)
//!   or relayed with. Its ESMTP arguments, when it has any, are read as MAIL's parameters
//!   and replace the client's for the relay (`RET=`, `ENVID=`, `MT-PRIORITY=`, `BY=`...);
//!   the client's `REQUIRETLS` stays whatever they say. Arguments that are not valid
//!   parameters are logged and left out: the new sender still applies, with the client's
//!   parameters (Postfix ignores them all, with a warning).
//! - `SMFIR_REPLBODY` pieces are written to a file beside the spool as they come, never
//!   held whole, up to the message size limit (past it the filter has failed); what is
//!   stored (or relayed, read from that file) is the edited header section and the new body.

use std::ops::Range;

use smtp_filter_proto::edits::{
    parse_header_section, Applied, Envelope, Header, HeaderList, MessageEdits, Path,
};
use smtp_filter_proto::milter::{Macros, Modification, Output, Step, Verdict as Answer};
use smtp_session::address::{parse_forward_path, parse_reverse_path};
use smtp_session::{
    Decision, ForwardPath, MailParams, Message, RcptParams, Recipient, Reply, ReversePath,
};

use crate::check::{Edits, Facts, Verdict};
use crate::facts::FilterVerdict;
use crate::store::{NewBody, Spool};

use super::conn::{Conn, Failure};
use super::{refusal as step_refusal, Filters};

/// The most of a message's header section read to send its fields.
const MAX_HEADER: usize = 1 << 20;
/// The body goes to filters in pieces of this size (libmilter's largest).
const PIECE: usize = smtp_filter_proto::milter::MAX_BODY_CHUNK;

/// One filter's say on the message.
#[derive(Debug)]
enum Said {
    /// Go on, with the message's fields and envelope as changed.
    Continue,
    /// Refused with this reply.
    Refuse(Reply),
    /// Keep it quarantined, for this reason.
    Quarantine(String),
    /// Answer 250 and drop it.
    Discard,
}

impl Said {
    /// For the metrics.
    fn name(&self) -> &'static str {
        match self {
            Said::Continue => "continue",
            Said::Refuse(reply) if reply.code() < 500 => "tempfail",
            Said::Refuse(_) => "reject",
            Said::Quarantine(_) => "quarantine",
            Said::Discard => "discard",
        }
    }
}

/// Where the body a filter is sent comes from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The spool's, from this offset (past the header section).
    Spool(&'a Spool, u64),
    /// A filter before replaced it.
    New(&'a NewBody),
}

impl Source<'_> {
    async fn read(&self, at: u64) -> Result<Vec<u8>, Failure> {
        let piece = match self {
            Source::Spool(spool, start) => spool.read_at(start + at, PIECE as u64).await,
            Source::New(body) => body.read_at(at, PIECE as u64).await,
        };
        piece.map_err(|e| format!("spool: {e}"))
    }
}

impl Filters {
    /// The message stage: each filter in turn, then the changes for the delivery.
    pub(super) async fn message(
        &mut self,
        facts: &Facts,
        message: &Message,
        spool: &Spool,
        macros: &Macros,
    ) -> Verdict {
        if let Some(why) = self.discard.take() {
            return Verdict::Discard(why);
        }
        let (section, fields, body_at) = match read_header(spool).await {
            Ok(parsed) => parsed,
            Err(err) => {
                eprintln!("mailsink: milter error: {err}");
                return match self.milters.default_action.reply() {
                    Some(reply) => Verdict::Refuse(refusal(facts, message, reply)),
                    None => Verdict::go_on(),
                };
            }
        };
        let headers = HeaderList::new(Vec::new(), fields.clone());
        let mut edits = MessageEdits::new(headers, envelope(message));
        let mut body: Option<NewBody> = None;
        for index in 0..self.filters.len() {
            let Some(conn) = self.filters[index].conn.as_mut() else {
                continue;
            };
            let source = body
                .as_ref()
                .map_or(Source::Spool(spool, body_at), Source::New);
            let mut run = Run {
                conn,
                edits: &mut edits,
                macros,
                max: facts.max_message_size,
            };
            let said = run.consult(source, spool, index as u32, body_at).await;
            edits.next_filter();
            let said = match said {
                Ok((said, new)) => {
                    body = new.or(body);
                    said
                }
                Err(err) => match self.fail(index, err) {
                    Some(reply) => return Verdict::Refuse(refusal(facts, message, reply)),
                    None => continue,
                },
            };
            if let Some(settled) = self.settle(index, said, facts, message) {
                return settled;
            }
        }
        let mut changed = changes(&section, &fields, &edits, message);
        changed.sender_params = sender_params(&edits, message, facts.max_message_size);
        changed.body = body;
        Verdict::Continue(changed)
    }

    /// What the `index`th filter said of the message, if that settles it.
    fn settle(
        &mut self,
        index: usize,
        said: Said,
        facts: &Facts,
        message: &Message,
    ) -> Option<Verdict> {
        let addr = &self.filters[index].addr;
        let mut verdict = FilterVerdict::new("milter", addr.to_string(), said.name());
        match &said {
            Said::Refuse(reply) => verdict.set_reply(reply),
            Said::Quarantine(why) => verdict.reason = Some(why.clone()),
            Said::Continue | Said::Discard => {}
        }
        self.said.push(verdict);
        let addr = &self.filters[index].addr;
        match said {
            Said::Continue => None,
            Said::Refuse(reply) => Some(Verdict::Refuse(refusal(facts, message, reply))),
            Said::Quarantine(why) => Some(Verdict::Quarantine(format!("milter {addr}: {why}"))),
            Said::Discard => Some(Verdict::Discard(format!("milter {addr}"))),
        }
    }
}

/// The envelope as the filters are told it at first.
fn envelope(message: &Message) -> Envelope {
    Envelope {
        sender: Path::new(format!("<{}>", message.envelope.mail_from)),
        recipients: message
            .envelope
            .recipients
            .iter()
            .map(|r| Path::new(format!("<{}>", r.path)))
            .collect(),
    }
}

/// The header section (with its empty line), its fields, and where the body starts.
async fn read_header(spool: &Spool) -> Result<(Vec<u8>, Vec<Header>, u64), Failure> {
    let section = header_section(spool).await?;
    let (fields, body_at) =
        parse_header_section(&section).ok_or("the header section cannot be parsed")?;
    Ok((section, fields, body_at as u64))
}

/// One filter over one message.
struct Run<'a> {
    conn: &'a mut Conn,
    edits: &'a mut MessageEdits,
    macros: &'a Macros,
    /// The largest new body.
    max: u64,
}

impl Run<'_> {
    /// The header fields, end of headers, the body from `source`, end of message: what the
    /// filter said, and its new body if it wrote one (the `n`th filter's, in a file beside
    /// `spool`).
    async fn consult(
        &mut self,
        source: Source<'_>,
        spool: &Spool,
        n: u32,
        body_at: u64,
    ) -> Result<(Said, Option<NewBody>), Failure> {
        for field in self.edits.headers.fields().to_vec() {
            let answer = self
                .conn
                .step(|m| m.header(field.name.as_bytes(), &field.value))
                .await?;
            if let Some(said) = settled(answer) {
                return Ok((said, None));
            }
        }
        let macros = self.macros;
        if let Some(said) = settled(self.conn.step(|m| m.end_of_headers(macros)).await?) {
            return Ok((said, None));
        }
        if let Some(said) = self.body(source).await? {
            return Ok((said, None));
        }
        self.conn
            .milter
            .end_of_message(macros)
            .map_err(|e| e.to_string())?;
        self.end_of_message(spool, n, body_at).await
    }

    /// The body piece by piece, until its end or the filter skips it.
    async fn body(&mut self, source: Source<'_>) -> Result<Option<Said>, Failure> {
        let mut offset = 0;
        loop {
            let piece = source.read(offset).await?;
            if piece.is_empty() {
                return Ok(None);
            }
            offset += piece.len() as u64;
            let mut rest = &piece[..];
            while !rest.is_empty() {
                let taken = self.conn.milter.body(rest).map_err(|e| e.to_string())?;
                rest = &rest[taken..];
                for output in self.conn.run().await? {
                    match output {
                        Output::Verdict {
                            verdict: Answer::Skip,
                            ..
                        } => return Ok(None),
                        Output::Verdict { verdict, .. } => {
                            if let Some(said) = settled(verdict) {
                                return Ok(Some(said));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// End of message: the changes applied as they come (a new body written to its file
    /// piece by piece), then the final verdict.
    async fn end_of_message(
        &mut self,
        spool: &Spool,
        n: u32,
        body_at: u64,
    ) -> Result<(Said, Option<NewBody>), Failure> {
        let mut quarantine = None;
        let mut new: Option<NewBody> = None;
        let mut outputs = Vec::new();
        loop {
            let more = self.conn.pump(&mut outputs).await?;
            for output in outputs.drain(..) {
                match output {
                    Output::Modification(Modification::Quarantine { reason }) => {
                        quarantine = Some(reason)
                    }
                    Output::Modification(m) => match self.edits.apply(&m) {
                        Ok(Applied::BodyChunk { first }) => {
                            if first || new.is_none() {
                                let file = spool.new_body(n, body_at).await;
                                new = Some(file.map_err(|e| format!("spool: {e}"))?);
                            }
                            if let (Some(body), Modification::ReplaceBody(piece)) = (&mut new, m) {
                                if body.len() + piece.len() as u64 > self.max {
                                    return Err(
                                        "the new body is over the message size limit".into()
                                    );
                                }
                                body.append(piece)
                                    .await
                                    .map_err(|e| format!("spool: {e}"))?;
                            }
                        }
                        Ok(_) => {}
                        Err(refused) => {
                            eprintln!("mailsink: milter: change not applied: {refused}")
                        }
                    },
                    Output::Verdict {
                        step: Step::EndOfMessage,
                        verdict,
                    } => {
                        let said = match (settled(verdict), quarantine) {
                            (Some(Said::Continue) | None, Some(why)) => Said::Quarantine(why),
                            (Some(said), _) => said,
                            (None, None) => Said::Continue,
                        };
                        return Ok((said, new));
                    }
                    _ => {}
                }
            }
            if !more {
                return Err("no verdict at end of message".into());
            }
        }
    }
}

/// What a verdict before or at end of message means for the message, if it settles it.
fn settled(verdict: Answer) -> Option<Said> {
    match verdict {
        Answer::Discard => Some(Said::Discard),
        // Accepted by this filter: the message goes on, unchanged by it.
        Answer::Accept => Some(Said::Continue),
        other => step_refusal(other).map(Said::Refuse),
    }
}

/// The message's header section (with its empty line), read from the spool.
async fn header_section(spool: &Spool) -> Result<Vec<u8>, Failure> {
    let mut section = Vec::new();
    loop {
        let piece = spool
            .read_at(section.len() as u64, PIECE as u64)
            .await
            .map_err(|e| format!("spool: {e}"))?;
        let done = piece.is_empty();
        section.extend_from_slice(&piece);
        if let Some((_, end)) = parse_header_section(&section) {
            section.truncate(end);
            return Ok(section);
        }
        if done || section.len() > MAX_HEADER {
            return Err("no header section within 1 MiB".into());
        }
    }
}

/// What the filters changed, as the delivery applies it: the original fields they changed
/// or removed are cut, the fields they added or changed go in where they now stand (before
/// the next original field kept, or at the end of the header section), and the envelope's
/// sender and recipients are replaced if they changed.
fn changes(section: &[u8], original: &[Header], edits: &MessageEdits, message: &Message) -> Edits {
    let ranges = field_ranges(section);
    let end = ranges.last().map_or(0, |r| r.end);
    let mut kept = vec![false; original.len()];
    let mut next = 0;
    let mut waiting = Vec::new();
    let mut insert = Vec::new();
    for field in edits.headers.fields() {
        match original[next..].iter().position(|o| o == field) {
            Some(i) => {
                kept[next + i] = true;
                if !waiting.is_empty() {
                    insert.push((ranges[next + i].start, std::mem::take(&mut waiting)));
                }
                next += i + 1;
            }
            None => field.write_to(&mut waiting),
        }
    }
    if !waiting.is_empty() {
        insert.push((end, waiting));
    }
    let remove: Vec<Range<u64>> = ranges
        .into_iter()
        .zip(&kept)
        .filter(|(_, k)| !**k)
        .map(|(r, _)| r)
        .collect();
    Edits {
        insert,
        remove,
        recipients: recipients(edits, message),
        sender: sender(edits, message),
        ..Edits::default()
    }
}

/// The recipients, each with its RCPT parameters, if the filters changed them. A recipient
/// the client gave keeps its own parameters; one a filter added has the arguments it came
/// with (`SMFIR_ADDRCPT_PAR`), read as the session reads RCPT's, or none.
fn recipients(edits: &MessageEdits, message: &Message) -> Option<Vec<Recipient>> {
    let original = &message.envelope.recipients;
    let after = &edits.envelope.recipients;
    let unchanged = after.len() == original.len()
        && after
            .iter()
            .zip(original)
            .all(|(path, r)| path.args.is_none() && path.address == format!("<{}>", r.path));
    if unchanged {
        return None;
    }
    let recipient = |path: &Path| {
        let params = match path.args.as_deref().filter(|a| !a.trim().is_empty()) {
            Some(args) => super::args::recipient(args).unwrap_or_else(|err| {
                eprintln!(
                    "mailsink: milter: ESMTP arguments {args:?} of recipient {} not taken: {err}",
                    path.address
                );
                RcptParams::default()
            }),
            None => original
                .iter()
                .find(|r| path.same_address(&r.path.to_string()))
                .map(|r| r.params.clone())
                .unwrap_or_default(),
        };
        Some(Recipient {
            path: forward_path(&path.address)?,
            params,
        })
    };
    Some(after.iter().filter_map(recipient).collect())
}

/// The sender, if a filter changed it.
fn sender(edits: &MessageEdits, message: &Message) -> Option<ReversePath> {
    let address = &edits.envelope.sender.address;
    if *address == format!("<{}>", message.envelope.mail_from) {
        return None;
    }
    match parse_reverse_path(bracketed(address).as_bytes()) {
        Ok((path, _)) => Some(path),
        Err(_) => {
            eprintln!("mailsink: milter: sender {address} not taken (not an address)");
            None
        }
    }
}

/// The MAIL parameters of the last new sender, if it came with valid ones.
fn sender_params(edits: &MessageEdits, message: &Message, max_size: u64) -> Option<MailParams> {
    let sender = &edits.envelope.sender;
    let args = sender.args.as_deref().filter(|a| !a.trim().is_empty())?;
    match super::args::sender(args, max_size) {
        Ok(mut params) => {
            // RFC 8689: once asked for, TLS is owed on every hop; no filter lifts it.
            params.require_tls |= message.envelope.mail_params.require_tls;
            Some(params)
        }
        Err(err) => {
            eprintln!(
                "mailsink: milter: ESMTP arguments {args:?} of sender {} not taken: {err}",
                sender.address
            );
            None
        }
    }
}

fn bracketed(address: &str) -> String {
    if address.starts_with('<') {
        address.to_string()
    } else {
        format!("<{address}>")
    }
}

fn forward_path(address: &str) -> Option<ForwardPath> {
    match parse_forward_path(bracketed(address).as_bytes()) {
        Ok((path, _)) => Some(path),
        Err(_) => {
            eprintln!("mailsink: milter: recipient {address} not added (not an address)");
            None
        }
    }
}

/// The byte range of each field of a header section, folds included, in order.
fn field_ranges(section: &[u8]) -> Vec<Range<u64>> {
    let mut ranges: Vec<Range<u64>> = Vec::new();
    let mut at = 0;
    while at < section.len() {
        let end = memchr::memchr(b'\n', &section[at..]).map_or(section.len(), |i| at + i + 1);
        let line = &section[at..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        match (line[0], ranges.last_mut()) {
            (b' ' | b'\t', Some(last)) => last.end = end as u64,
            _ => ranges.push(at as u64..end as u64),
        }
        at = end;
    }
    ranges
}

/// The refusal as the message stage answers it: per recipient under LMTP.
pub(super) fn refusal(facts: &Facts, message: &Message, reply: Reply) -> Decision {
    if facts.lmtp {
        return Decision::PerRecipient(vec![reply; message.envelope.recipients.len()]);
    }
    Decision::Reject(reply)
}
