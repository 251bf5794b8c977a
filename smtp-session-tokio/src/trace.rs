//! The `tracing` feature: a span per connection and per transaction, and a debug event for
//! each line of the dialogue.
//!
//! Events go to the target [`DIALOGUE`] at `DEBUG` level, in the connection's span (and the
//! transaction's, while one is open), with the fields `id` (the connection id) and `client`
//! (the client's address, the PROXY header's once it arrived), so that a subscriber can
//! follow the connections of one client even when it started listening after they began.
//! The message is the line, `<` before what the client sent, `>` before what the server
//! replied:
//!
//! ```text
//! > 220 mx.example ESMTP
//! < EHLO client.example
//! > 250-mx.example
//! < AUTH PLAIN [3 words redacted]
//! < DATA
//! < [message data, 1834 bytes]
//! < .
//! ```
//!
//! Credentials never reach a subscriber: an `AUTH` line keeps its mechanism only, and the
//! client's lines of the exchange that follows are redacted. Message data is summarised by
//! its size, and a line longer than 512 bytes is cut.
//!
//! Without a subscriber interested in [`DIALOGUE`] at `DEBUG`, a connection asks once per
//! read and once per write (a cached call-site check) and does nothing more.

use std::collections::VecDeque;

use smtp_session::{Session, TlsInfo};
use tracing::{Level, Span};

/// The target of the dialogue's events.
pub const DIALOGUE: &str = "smtp_session_tokio::dialogue";

/// The longest line an event carries; the rest is cut.
const MAX_LINE: usize = 512;

/// Commands awaiting their reply that the trace remembers; a client pipelining more is
/// traced as well, with the data of a refused DATA perhaps shown as commands.
const MAX_AWAITED: usize = 256;

/// What the client's bytes are, as far as the trace can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Commands,
    /// After DATA, to the line with a single dot.
    Data,
    /// The rest of a BDAT chunk.
    Chunk(u64),
    /// After AUTH, to the server's reply that ends the exchange.
    Auth,
}

/// One connection's trace: its span, the transaction's, and the state of the dialogue.
pub(crate) struct Trace {
    span: Span,
    transaction: Option<Span>,
    mode: Mode,
    /// The start of a line whose end has not arrived.
    partial: Vec<u8>,
    /// Message data seen since the last event about it.
    data: u64,
    /// The commands sent and not yet answered, in order, to tell which reply ends what.
    awaited: VecDeque<Awaited>,
    /// The span has the client's address, the PROXY header's if any.
    client_known: bool,
}

/// A command whose reply decides what the client's next bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaited {
    /// Answered 354 (data follows) or refused.
    Data,
    /// Answered 334 (the exchange goes on) or ended.
    Auth,
    /// Anything else.
    Other,
}

impl Trace {
    /// The connection's span (`smtp_connection`, with `id`, `client`, `listener` and `tls`).
    pub(crate) fn new(session: &Session) -> Trace {
        let info = session.info();
        let span = tracing::debug_span!(
            target: "smtp_session_tokio",
            "smtp_connection",
            id = %info.id,
            client = tracing::field::debug(info.remote_ip),
            listener = info.server_id.as_deref(),
            tls = tracing::field::Empty,
        );
        Trace {
            span,
            transaction: None,
            mode: Mode::Commands,
            partial: Vec::new(),
            data: 0,
            awaited: VecDeque::new(),
            client_known: false,
        }
    }

    /// The connection's span, to run the connection in.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// The TLS layer is up: its protocol and cipher go into the span.
    pub(crate) fn tls(&self, tls: &TlsInfo) {
        self.span
            .record("tls", format_args!("{} {}", tls.protocol, tls.cipher));
    }

    /// Bytes the client sent, before the session reads them.
    pub(crate) fn input(&mut self, session: &Session, bytes: &[u8]) {
        if !tracing::enabled!(target: DIALOGUE, Level::DEBUG) {
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            rest = match self.mode {
                Mode::Chunk(left) => self.chunk(session, rest, left),
                _ => self.line(session, rest),
            };
        }
        self.data_event(session);
    }

    /// Replies the server is about to send.
    pub(crate) fn output(&mut self, session: &Session, bytes: &[u8]) {
        if !self.client_known {
            // The first reply comes after the PROXY header, which may name another client.
            self.client_known = true;
            let client = session.info().remote_ip;
            self.span.record("client", tracing::field::debug(client));
        }
        if !tracing::enabled!(target: DIALOGUE, Level::DEBUG) {
            return;
        }
        self.open_transaction(session);
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.event(session, '>', &printable(line));
            if line.get(3) != Some(&b'-') {
                self.answered(line);
            }
        }
        // After its last reply (the message's), the transaction's span ends.
        if session.envelope().is_none() {
            self.transaction = None;
        }
    }

    /// The last line of a reply: the command it answers is no longer awaited, and an AUTH
    /// exchange that ended or a DATA refused gives the client's next lines back to commands.
    fn answered(&mut self, line: &[u8]) {
        let code = line.get(..3).unwrap_or(b"");
        match self.awaited.front() {
            Some(Awaited::Auth) if code == b"334" => return,
            Some(Awaited::Auth) if self.mode == Mode::Auth => self.mode = Mode::Commands,
            Some(Awaited::Data) if code != b"354" && self.mode == Mode::Data => {
                self.mode = Mode::Commands;
            }
            _ => {}
        }
        self.awaited.pop_front();
    }

    /// A command that awaits its reply.
    fn awaits(&mut self, what: Awaited) {
        if self.awaited.len() < MAX_AWAITED {
            self.awaited.push_back(what);
        }
    }

    /// Part of a BDAT chunk: counted, never read as lines.
    fn chunk<'b>(&mut self, session: &Session, bytes: &'b [u8], left: u64) -> &'b [u8] {
        let n = usize::try_from(left).map_or(bytes.len(), |left| left.min(bytes.len()));
        self.data += n as u64;
        let left = left - n as u64;
        self.mode = if left == 0 {
            self.data_event(session);
            Mode::Commands
        } else {
            Mode::Chunk(left)
        };
        &bytes[n..]
    }

    /// Takes bytes up to the end of a line; a whole line is traced by the mode it is in.
    fn line<'b>(&mut self, session: &Session, bytes: &'b [u8]) -> &'b [u8] {
        let (piece, rest, ended) = match bytes.iter().position(|&b| b == b'\n') {
            Some(i) => (&bytes[..=i], &bytes[i + 1..], true),
            None => (bytes, &[][..], false),
        };
        if self.mode == Mode::Data {
            self.data += piece.len() as u64;
        }
        let room = (MAX_LINE + 2).saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&piece[..piece.len().min(room)]);
        if ended {
            let line = std::mem::take(&mut self.partial);
            self.whole_line(session, &line);
        }
        rest
    }

    fn whole_line(&mut self, session: &Session, raw: &[u8]) {
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.mode {
            Mode::Data if line == b"." => {
                // The dot line ends the data; it is not part of it, and awaits the reply.
                self.data = self.data.saturating_sub(raw.len() as u64);
                self.data_event(session);
                self.mode = Mode::Commands;
                self.event(session, '<', ".");
                self.awaits(Awaited::Other);
            }
            Mode::Data | Mode::Chunk(_) => {}
            Mode::Auth => self.event(session, '<', "[redacted]"),
            Mode::Commands => self.command(session, line),
        }
    }

    /// A command line: traced, and the mode it starts.
    fn command(&mut self, session: &Session, line: &[u8]) {
        let text = printable(line);
        let mut words = text.split_ascii_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "AUTH" => {
                let mechanism = words.next().unwrap_or("");
                let hidden = words.count();
                let shown = match hidden {
                    0 => format!("AUTH {mechanism}"),
                    n => format!("AUTH {mechanism} [{n} words redacted]"),
                };
                self.event(session, '<', &shown);
                self.mode = Mode::Auth;
                self.awaits(Awaited::Auth);
                return;
            }
            "DATA" => {
                self.mode = Mode::Data;
                self.awaits(Awaited::Data);
                return self.event(session, '<', &text);
            }
            "BDAT" => {
                if let Some(size) = words.next().and_then(|n| n.parse::<u64>().ok()) {
                    self.mode = if size == 0 {
                        Mode::Commands
                    } else {
                        Mode::Chunk(size)
                    };
                }
            }
            _ => {}
        }
        self.awaits(Awaited::Other);
        self.event(session, '<', &text);
    }

    /// The message data counted since the last time, as one event.
    fn data_event(&mut self, session: &Session) {
        if self.data > 0 {
            let text = format!("[message data, {} bytes]", std::mem::take(&mut self.data));
            self.event(session, '<', &text);
        }
    }

    /// Opens the transaction's span once the session has one (MAIL was accepted).
    fn open_transaction(&mut self, session: &Session) {
        if let (Some(envelope), None) = (session.envelope(), &self.transaction) {
            self.transaction = Some(tracing::debug_span!(
                target: "smtp_session_tokio",
                parent: &self.span,
                "smtp_transaction",
                mail_from = %envelope.mail_from,
            ));
        }
    }

    fn event(&self, session: &Session, side: char, text: &str) {
        let info = session.info();
        let parent = self.transaction.as_ref().unwrap_or(&self.span);
        tracing::debug!(
            target: DIALOGUE,
            parent: parent,
            id = %info.id,
            client = tracing::field::debug(info.remote_ip),
            "{side} {text}"
        );
    }
}

/// The line as text: control characters escaped, at most [`MAX_LINE`] bytes.
fn printable(line: &[u8]) -> String {
    let cut = line.len() > MAX_LINE;
    let line = &line[..line.len().min(MAX_LINE)];
    let mut text = String::with_capacity(line.len());
    for c in String::from_utf8_lossy(line).chars() {
        if c.is_control() {
            text.extend(c.escape_default());
        } else {
            text.push(c);
        }
    }
    if cut {
        text.push_str(" [cut]");
    }
    text
}
