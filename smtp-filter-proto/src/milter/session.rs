//! One filter connection's state machine: which step may come next, what is sent for it,
//! whether a reply is owed, and what a reply means at that step.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::milter::macros::{MacroLists, MacroStage, Macros};
use crate::milter::reply::{parse_packet, Modification, Packet, Verdict};
use crate::milter::wire::{
    cmd, family, put_packet, u32_at, Actions, PacketReader, ProtocolFlags, MAX_BODY_CHUNK,
    PROTOCOL_VERSION,
};
use crate::milter::{Error, ProtocolError};

/// A step of the protocol: what the client sent and a reply may answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Option negotiation (`SMFIC_OPTNEG`), sent by [`Milter::new`].
    Negotiate,
    /// The SMTP client's connection (`SMFIC_CONNECT`).
    Connect,
    /// HELO or EHLO (`SMFIC_HELO`).
    Helo,
    /// MAIL FROM (`SMFIC_MAIL`).
    Mail,
    /// RCPT TO (`SMFIC_RCPT`).
    Rcpt,
    /// DATA (`SMFIC_DATA`).
    Data,
    /// A command the MTA does not know (`SMFIC_UNKNOWN`).
    Unknown,
    /// One header field (`SMFIC_HEADER`).
    Header,
    /// End of the header (`SMFIC_EOH`).
    EndOfHeaders,
    /// A body chunk (`SMFIC_BODY`).
    Body,
    /// End of the message (`SMFIC_BODYEOB`): modifications and the final verdict.
    EndOfMessage,
}

impl Step {
    /// The `SMFIP_NO*` flag that skips the step, and the `SMFIP_NR_*` flag that leaves it
    /// unanswered.
    fn flags(self) -> (ProtocolFlags, ProtocolFlags) {
        use ProtocolFlags as P;
        match self {
            Step::Negotiate | Step::EndOfMessage => (P::NONE, P::NONE),
            Step::Connect => (P::NO_CONNECT, P::NO_REPLY_CONNECT),
            Step::Helo => (P::NO_HELO, P::NO_REPLY_HELO),
            Step::Mail => (P::NO_MAIL, P::NO_REPLY_MAIL),
            Step::Rcpt => (P::NO_RCPT, P::NO_REPLY_RCPT),
            Step::Data => (P::NO_DATA, P::NO_REPLY_DATA),
            Step::Unknown => (P::NO_UNKNOWN, P::NO_REPLY_UNKNOWN),
            Step::Header => (P::NO_HEADERS, P::NO_REPLY_HEADER),
            Step::EndOfHeaders => (P::NO_END_OF_HEADERS, P::NO_REPLY_END_OF_HEADERS),
            Step::Body => (P::NO_BODY, P::NO_REPLY_BODY),
        }
    }

    /// Whether the step belongs to a message (MAIL to end of message).
    fn in_message(self) -> bool {
        !matches!(
            self,
            Step::Negotiate | Step::Connect | Step::Helo | Step::Unknown
        )
    }
}

/// The SMTP client's address as the connect step carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAddress {
    /// An IPv4 or IPv6 client (`SMFIA_INET`, `SMFIA_INET6`).
    Inet(SocketAddr),
    /// A client on a Unix socket, by path (`SMFIA_UNIX`).
    Unix(String),
    /// Unknown (`SMFIA_UNKNOWN`).
    Unknown,
}

/// How a [`Milter`] negotiates and what it accepts from the filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MilterConfig {
    /// The actions offered; the filter may pick any of them. Default: all.
    pub actions: Actions,
    /// The protocol flags offered; the filter may pick any of them. Default: all.
    pub protocol: ProtocolFlags,
    /// The largest packet accepted from the filter (code and data), and so the most memory
    /// held for a partial one. Default 65,536: libmilter's 65,535 bytes of data and a code.
    pub max_packet: usize,
    /// The body chunk size, at most [`MAX_BODY_CHUNK`]. Default: that.
    pub body_chunk: usize,
    /// The macros sent at each stage when the filter does not choose its own.
    pub macros: MacroLists,
}

impl Default for MilterConfig {
    fn default() -> MilterConfig {
        MilterConfig {
            actions: Actions::ALL,
            protocol: ProtocolFlags::ALL,
            max_packet: MAX_BODY_CHUNK + 1,
            body_chunk: MAX_BODY_CHUNK,
            macros: MacroLists::default(),
        }
    }
}

/// What the filter chose at negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The protocol version the filter speaks (2 to 6).
    pub version: u32,
    /// The actions the filter may take.
    pub actions: Actions,
    /// The steps it skips or leaves unanswered, and its options.
    pub protocol: ProtocolFlags,
    /// The macros it asked for, by stage, replacing [`MilterConfig::macros`] there.
    pub macros: Vec<(MacroStage, Vec<String>)>,
}

/// What the caller must act on, drained with [`Milter::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Output {
    /// Bytes the caller MUST send to the filter, in order, before anything else.
    Write(Vec<u8>),
    /// Negotiation is done; steps may be sent from now on.
    Negotiated(Negotiated),
    /// The filter's answer to `step` (see [`Verdict`] for what each asks of the MTA).
    Verdict {
        /// The step answered.
        step: Step,
        /// The answer.
        verdict: Verdict,
    },
    /// A change the filter asks for, at end of message, before that step's verdict. Apply
    /// the changes in order if the verdict lets the message through.
    Modification(Modification),
    /// The filter is still working (`SMFIR_PROGRESS`): the caller MUST restart its reply timer.
    Progress,
    /// The filter broke the protocol: the caller MUST stop using it, close its connection and
    /// apply the default action. Nothing follows.
    Failed(ProtocolError),
}

/// Where in the SMTP session the filter is; the next step must fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Negotiation sent, no connect yet.
    Ready,
    /// Connected, no message open.
    Connection,
    /// MAIL sent: RCPT, DATA, abort.
    Envelope,
    /// DATA sent: header fields and end of headers.
    Headers,
    /// End of headers sent: body chunks and end of message.
    Body,
    /// End of message sent: the message is over, and its `SMFIC_ABORT` is still to be sent
    /// (Postfix sends one after every message, completed or not); a new MAIL may come.
    Ended,
    /// Quit sent.
    Closed,
}

/// One filter connection, client side. See the [module docs](crate::milter) for the run loop.
#[derive(Debug)]
pub struct Milter {
    config: MilterConfig,
    reader: PacketReader,
    outputs: VecDeque<Output>,
    phase: Phase,
    awaiting: Option<Step>,
    last_step: Option<Step>,
    negotiated: Option<Negotiated>,
    /// The filter accepted or settled the connection: it gets no more steps.
    connection_done: bool,
    /// The filter accepted or settled the message: it gets no more steps of it.
    message_done: bool,
    /// The filter answered a body chunk with skip.
    body_skipped: bool,
    failed: bool,
}

impl Milter {
    /// A session that starts with option negotiation: the first output is its `Write`.
    pub fn new(config: MilterConfig) -> Milter {
        let mut config = config;
        config.body_chunk = config.body_chunk.clamp(1, MAX_BODY_CHUNK);
        let mut out = Vec::with_capacity(17);
        let offer = [
            PROTOCOL_VERSION,
            config.actions.bits(),
            config.protocol.bits(),
        ];
        let offer: Vec<u8> = offer.iter().flat_map(|n| n.to_be_bytes()).collect();
        put_packet(&mut out, cmd::OPTNEG, &[&offer]);
        Milter {
            reader: PacketReader::new(config.max_packet),
            config,
            outputs: VecDeque::from([Output::Write(out)]),
            phase: Phase::Ready,
            awaiting: Some(Step::Negotiate),
            last_step: Some(Step::Negotiate),
            negotiated: None,
            connection_done: false,
            message_done: false,
            body_skipped: false,
            failed: false,
        }
    }

    /// The next output, until `None`. Drain after every call that takes input or a step.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The step whose reply the filter owes, if any: while `Some`, the caller reads from the
    /// filter (with a timer running) and sends no step.
    pub fn awaiting_reply(&self) -> Option<Step> {
        self.awaiting
    }

    /// What the filter chose at negotiation, once it answered.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Whether the filter broke the protocol ([`Output::Failed`]).
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The bytes of memory held for a partial packet from the filter: at most
    /// [`MilterConfig::max_packet`] plus 4.
    pub fn input_capacity(&self) -> usize {
        self.reader.capacity()
    }

    /// Bytes from the filter. Each whole packet is acted on at once; a partial one is kept.
    pub fn handle_input(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.failed && self.phase != Phase::Closed {
            let Some(step) = self.awaiting else {
                return self.fail(ProtocolError::Unsolicited {
                    after: self.last_step,
                });
            };
            match self.reader.fill(&mut bytes) {
                Ok(false) => return,
                Ok(true) => {
                    let (code, data) = self.reader.packet();
                    let leading_space = self.flag(ProtocolFlags::HEADER_LEADING_SPACE);
                    let parsed = parse_packet(code, data, leading_space);
                    let result = parsed.and_then(|p| self.on_packet(step, code, p));
                    self.reader.clear();
                    if let Err(e) = result {
                        return self.fail(e);
                    }
                }
                Err(e) => return self.fail(e),
            }
        }
    }

    /// The SMTP client connected: its name (as Postfix sends it: the verified name, or the
    /// address in brackets, or `unknown`) and address.
    pub fn connect(
        &mut self,
        hostname: &str,
        address: &ClientAddress,
        macros: &Macros,
    ) -> Result<(), Error> {
        self.check(Step::Connect, &[Phase::Ready])?;
        no_nul(hostname, "client name")?;
        let mut data = Vec::with_capacity(hostname.len() + 64);
        data.extend_from_slice(hostname.as_bytes());
        data.push(0);
        match address {
            ClientAddress::Inet(addr) => {
                data.push(if addr.is_ipv4() {
                    family::INET
                } else {
                    family::INET6
                });
                data.extend_from_slice(&addr.port().to_be_bytes());
                data.extend_from_slice(addr.ip().to_string().as_bytes());
                data.push(0);
            }
            ClientAddress::Unix(path) => {
                no_nul(path, "socket path")?;
                data.push(family::UNIX);
                data.extend_from_slice(&[0, 0]);
                data.extend_from_slice(path.as_bytes());
                data.push(0);
            }
            ClientAddress::Unknown => data.push(family::UNKNOWN),
        }
        self.send(
            Step::Connect,
            Some(MacroStage::Connect),
            macros,
            cmd::CONNECT,
            &[&data],
        )?;
        self.phase = Phase::Connection;
        Ok(())
    }

    /// HELO or EHLO with its argument.
    pub fn helo(&mut self, name: &str, macros: &Macros) -> Result<(), Error> {
        self.check(Step::Helo, &[Phase::Connection, Phase::Ended])?;
        no_nul(name, "HELO name")?;
        self.send(
            Step::Helo,
            Some(MacroStage::Helo),
            macros,
            cmd::HELO,
            &[name.as_bytes(), b"\0"],
        )
    }

    /// MAIL FROM: the path as the client wrote it, in angle brackets, and its ESMTP
    /// parameters (`SIZE=1000`...). Opens a message.
    pub fn mail(&mut self, sender: &str, args: &[&str], macros: &Macros) -> Result<(), Error> {
        self.check(Step::Mail, &[Phase::Connection, Phase::Ended])?;
        let data = nul_strings(sender, args)?;
        let before = (self.message_done, self.body_skipped);
        (self.message_done, self.body_skipped) = (false, false);
        if let Err(e) = self.send(
            Step::Mail,
            Some(MacroStage::Mail),
            macros,
            cmd::MAIL,
            &[&data],
        ) {
            (self.message_done, self.body_skipped) = before;
            return Err(e);
        }
        self.phase = Phase::Envelope;
        Ok(())
    }

    /// RCPT TO: the path in angle brackets and its ESMTP parameters.
    pub fn rcpt(&mut self, recipient: &str, args: &[&str], macros: &Macros) -> Result<(), Error> {
        self.check(Step::Rcpt, &[Phase::Envelope])?;
        let data = nul_strings(recipient, args)?;
        self.send(
            Step::Rcpt,
            Some(MacroStage::Rcpt),
            macros,
            cmd::RCPT,
            &[&data],
        )
    }

    /// DATA (or the first BDAT): the header follows.
    pub fn data(&mut self, macros: &Macros) -> Result<(), Error> {
        self.check(Step::Data, &[Phase::Envelope])?;
        self.send(Step::Data, Some(MacroStage::Data), macros, cmd::DATA, &[])?;
        self.phase = Phase::Headers;
        Ok(())
    }

    /// A command the MTA does not know, the whole line without its line end.
    pub fn unknown(&mut self, line: &[u8], macros: &Macros) -> Result<(), Error> {
        self.check(
            Step::Unknown,
            &[Phase::Connection, Phase::Envelope, Phase::Ended],
        )?;
        if memchr::memchr(0, line).is_some() {
            return Err(Error::Nul("command"));
        }
        self.send(Step::Unknown, None, macros, cmd::UNKNOWN, &[line, b"\0"])
    }

    /// One header field: its name and its value as in the message, after the colon, folds
    /// included. The value goes as Postfix sends it: folds as LF, and without its leading
    /// white space unless the filter negotiated `SMFIP_HDR_LEADSPC`.
    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Result<(), Error> {
        self.check(Step::Header, &[Phase::Headers])?;
        if memchr::memchr(0, name).is_some() || memchr::memchr(0, value).is_some() {
            return Err(Error::Nul("header field"));
        }
        let mut value = value;
        if !self.flag(ProtocolFlags::HEADER_LEADING_SPACE) {
            let start = value
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(value.len());
            value = &value[start..];
        }
        let mut data = Vec::with_capacity(name.len() + value.len() + 2);
        data.extend_from_slice(name);
        data.push(0);
        let mut i = 0;
        while i < value.len() {
            if !(value[i] == b'\r' && value.get(i + 1) == Some(&b'\n')) {
                data.push(value[i]);
            }
            i += 1;
        }
        data.push(0);
        self.send(Step::Header, None, &Macros::new(), cmd::HEADER, &[&data])
    }

    /// The end of the header: the body follows.
    pub fn end_of_headers(&mut self, macros: &Macros) -> Result<(), Error> {
        self.check(Step::EndOfHeaders, &[Phase::Headers])?;
        self.send(
            Step::EndOfHeaders,
            Some(MacroStage::EndOfHeaders),
            macros,
            cmd::EOH,
            &[],
        )?;
        self.phase = Phase::Body;
        Ok(())
    }

    /// The next piece of the body, as on the wire after unstuffing (CRLF line ends). Takes at
    /// most [`MilterConfig::body_chunk`] bytes and returns how many; send the rest once the
    /// verdict for this chunk came. An empty chunk takes nothing and sends nothing. When the
    /// filter skips the body, every byte is taken at once.
    pub fn body(&mut self, chunk: &[u8]) -> Result<usize, Error> {
        self.check(Step::Body, &[Phase::Body])?;
        if chunk.is_empty() {
            return Ok(0);
        }
        if self.skips(Step::Body) {
            self.outputs.push_back(Output::Verdict {
                step: Step::Body,
                verdict: Verdict::Continue,
            });
            return Ok(chunk.len());
        }
        let take = chunk.len().min(self.config.body_chunk);
        self.send(
            Step::Body,
            None,
            &Macros::new(),
            cmd::BODY,
            &[&chunk[..take]],
        )?;
        Ok(take)
    }

    /// The end of the message: the filter answers with its modifications and a verdict.
    /// The message is over after it; the next is opened with [`Milter::mail`], after
    /// [`Milter::abort`] as Postfix does it.
    pub fn end_of_message(&mut self, macros: &Macros) -> Result<(), Error> {
        self.check(Step::EndOfMessage, &[Phase::Body])?;
        self.send(
            Step::EndOfMessage,
            Some(MacroStage::EndOfMessage),
            macros,
            cmd::BODYEOB,
            &[],
        )?;
        self.phase = Phase::Ended;
        Ok(())
    }

    /// The transaction is over: RSET, a new MAIL or EHLO, a refused MAIL or DATA, the end
    /// of a message (completed or not), the client gone. Sends `SMFIC_ABORT`, as Postfix's
    /// `milter8_abort` does, to a filter that was sent the transaction's MAIL and has not
    /// settled the whole connection; it needs no reply (libmilter sends none, and ignores
    /// one after end of message). Does nothing when no transaction was begun, so it may be
    /// called at every transaction's end.
    pub fn abort(&mut self) -> Result<(), Error> {
        self.check(
            Step::Mail,
            &[
                Phase::Ready,
                Phase::Connection,
                Phase::Envelope,
                Phase::Headers,
                Phase::Body,
                Phase::Ended,
            ],
        )?;
        if matches!(
            self.phase,
            Phase::Envelope | Phase::Headers | Phase::Body | Phase::Ended
        ) {
            if !self.connection_done {
                let mut out = Vec::with_capacity(5);
                put_packet(&mut out, cmd::ABORT, &[]);
                self.outputs.push_back(Output::Write(out));
            }
            self.phase = Phase::Connection;
        }
        Ok(())
    }

    /// The SMTP session is over: tells the filter to close (`SMFIC_QUIT`). Needs no reply;
    /// close the connection once the write is sent.
    pub fn quit(&mut self) -> Result<(), Error> {
        if self.phase == Phase::Closed {
            return Err(Error::Closed);
        }
        if self.failed {
            return Err(Error::Failed);
        }
        let mut out = Vec::with_capacity(5);
        put_packet(&mut out, cmd::QUIT, &[]);
        self.outputs.push_back(Output::Write(out));
        self.phase = Phase::Closed;
        self.awaiting = None;
        Ok(())
    }

    fn check(&self, step: Step, phases: &[Phase]) -> Result<(), Error> {
        if self.phase == Phase::Closed {
            return Err(Error::Closed);
        }
        if self.failed {
            return Err(Error::Failed);
        }
        if let Some(owed) = self.awaiting {
            return Err(Error::AwaitingReply(owed));
        }
        if !phases.contains(&self.phase) {
            return Err(Error::OutOfOrder(step));
        }
        Ok(())
    }

    fn flag(&self, flag: ProtocolFlags) -> bool {
        self.negotiated
            .as_ref()
            .is_some_and(|n| n.protocol.contains(flag))
    }

    fn skips(&self, step: Step) -> bool {
        let (skip, _) = step.flags();
        self.connection_done
            || (step.in_message() && self.message_done)
            || (step == Step::Body && self.body_skipped)
            || (!skip.is_empty() && self.flag(skip))
    }

    /// Sends a step: its macros and its packet as one write; then awaits the reply, or
    /// gives the verdict at once when the step is skipped or not answered.
    fn send(
        &mut self,
        step: Step,
        stage: Option<MacroStage>,
        macros: &Macros,
        code: u8,
        parts: &[&[u8]],
    ) -> Result<(), Error> {
        if self.skips(step) {
            self.last_step = Some(step);
            self.outputs.push_back(Output::Verdict {
                step,
                verdict: Verdict::Continue,
            });
            return Ok(());
        }
        let mut out = Vec::with_capacity(64 + parts.iter().map(|p| p.len()).sum::<usize>());
        if let Some(stage) = stage {
            self.put_macros(&mut out, stage, code, macros)?;
        }
        self.last_step = Some(step);
        put_packet(&mut out, code, parts);
        self.outputs.push_back(Output::Write(out));
        let (_, no_reply) = step.flags();
        if !no_reply.is_empty() && self.flag(no_reply) {
            self.outputs.push_back(Output::Verdict {
                step,
                verdict: Verdict::Continue,
            });
        } else {
            self.awaiting = Some(step);
        }
        Ok(())
    }

    fn put_macros(
        &self,
        out: &mut Vec<u8>,
        stage: MacroStage,
        code: u8,
        macros: &Macros,
    ) -> Result<(), Error> {
        let chosen = self.negotiated.as_ref().and_then(|n| {
            n.macros
                .iter()
                .find(|(s, _)| *s == stage)
                .map(|(_, names)| names.as_slice())
        });
        let names = chosen.unwrap_or(self.config.macros.get(stage));
        let mut data = vec![code];
        for name in names {
            if let Some(value) = macros.get(name) {
                no_nul(value, "macro value")?;
                no_nul(name, "macro name")?;
                data.extend_from_slice(name.as_bytes());
                data.push(0);
                data.extend_from_slice(value.as_bytes());
                data.push(0);
            }
        }
        if data.len() > 1 {
            put_packet(out, cmd::MACRO, &[&data]);
        }
        Ok(())
    }

    fn fail(&mut self, error: ProtocolError) {
        self.failed = true;
        self.awaiting = None;
        self.outputs.push_back(Output::Failed(error));
    }

    fn on_packet(&mut self, step: Step, code: u8, packet: Packet) -> Result<(), ProtocolError> {
        let unexpected = ProtocolError::Unexpected {
            reply: code as char,
            step: Some(step),
        };
        match packet {
            Packet::Negotiate(data) if step == Step::Negotiate => self.on_negotiate(&data),
            Packet::Negotiate(_) => Err(unexpected),
            _ if step == Step::Negotiate => Err(unexpected),
            Packet::Progress => {
                self.outputs.push_back(Output::Progress);
                Ok(())
            }
            Packet::Modification(_) if step != Step::EndOfMessage => Err(unexpected),
            Packet::Modification(m) => {
                let needed = m.required_action();
                let negotiated = self
                    .negotiated
                    .as_ref()
                    .map_or(Actions::NONE, |n| n.actions);
                if !negotiated.contains(needed) {
                    return Err(ProtocolError::NotNegotiated {
                        reply: code as char,
                        needed,
                    });
                }
                self.outputs.push_back(Output::Modification(m));
                Ok(())
            }
            Packet::Verdict(verdict) => self.on_verdict(step, code, verdict),
        }
    }

    /// A verdict ends the wait; what it settles depends on the step.
    fn on_verdict(&mut self, step: Step, code: u8, verdict: Verdict) -> Result<(), ProtocolError> {
        let unexpected = ProtocolError::Unexpected {
            reply: code as char,
            step: Some(step),
        };
        let connection_step = matches!(step, Step::Connect | Step::Helo | Step::Unknown);
        match verdict {
            Verdict::Continue => {}
            Verdict::Skip if step == Step::Body && self.flag(ProtocolFlags::SKIP) => {
                self.body_skipped = true;
            }
            Verdict::Skip => return Err(unexpected),
            Verdict::Discard if connection_step => return Err(unexpected),
            Verdict::Shutdown => self.connection_done = true,
            Verdict::Accept if connection_step => self.connection_done = true,
            // A refusal at connect refuses the connection; at HELO or an unknown command,
            // only that command; at RCPT, only that recipient.
            _ if step == Step::Connect => self.connection_done = true,
            _ if connection_step => {}
            Verdict::Reject | Verdict::Tempfail | Verdict::Reply(_) if step == Step::Rcpt => {}
            _ => self.message_done = true,
        }
        self.awaiting = None;
        self.outputs.push_back(Output::Verdict { step, verdict });
        Ok(())
    }

    fn on_negotiate(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        let malformed = |reason| ProtocolError::Malformed { reply: 'O', reason };
        let (Some(version), Some(actions), Some(protocol)) =
            (u32_at(data, 0), u32_at(data, 4), u32_at(data, 8))
        else {
            return Err(malformed("shorter than version, actions and protocol"));
        };
        if !(2..=PROTOCOL_VERSION).contains(&version) {
            return Err(ProtocolError::UnsupportedVersion(version));
        }
        let actions = Actions::from_bits(actions);
        let extra = actions.difference(self.config.actions);
        if !extra.is_empty() {
            return Err(ProtocolError::UnofferedActions(extra));
        }
        let protocol = ProtocolFlags::from_bits(protocol);
        let extra = protocol.difference(self.config.protocol);
        if !extra.is_empty() {
            return Err(ProtocolError::UnofferedProtocol(extra));
        }
        let macros = macro_lists(&data[12..]).ok_or(malformed("bad macro lists"))?;
        let negotiated = Negotiated {
            version,
            actions,
            protocol,
            macros,
        };
        self.negotiated = Some(negotiated.clone());
        self.awaiting = None;
        self.outputs.push_back(Output::Negotiated(negotiated));
        Ok(())
    }
}

/// The macro lists after the negotiation reply's fixed part: a stage number and a
/// NUL-terminated list of names separated by spaces, repeated.
fn macro_lists(mut data: &[u8]) -> Option<Vec<(MacroStage, Vec<String>)>> {
    let mut lists: Vec<(MacroStage, Vec<String>)> = Vec::new();
    while !data.is_empty() {
        let stage = MacroStage::from_wire(u32_at(data, 0)?)?;
        let end = memchr::memchr(0, &data[4..])?;
        let names = std::str::from_utf8(&data[4..4 + end]).ok()?;
        if names.chars().any(char::is_control) || lists.iter().any(|(s, _)| *s == stage) {
            return None;
        }
        lists.push((
            stage,
            names.split_whitespace().map(str::to_string).collect(),
        ));
        data = &data[4 + end + 1..];
    }
    Some(lists)
}

fn no_nul(s: &str, what: &'static str) -> Result<(), Error> {
    if s.as_bytes().contains(&0) {
        return Err(Error::Nul(what));
    }
    Ok(())
}

/// The path and its arguments, each NUL-terminated.
fn nul_strings(first: &str, rest: &[&str]) -> Result<Vec<u8>, Error> {
    let mut data =
        Vec::with_capacity(first.len() + 1 + rest.iter().map(|a| a.len() + 1).sum::<usize>());
    for s in std::iter::once(&first).chain(rest) {
        no_nul(s, "address or parameter")?;
        data.extend_from_slice(s.as_bytes());
        data.push(0);
    }
    Ok(data)
}
