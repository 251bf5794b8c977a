//! The message transitions: DATA and BDAT, the body on its way to the runtime, delivery.

use crate::bdat::{BdatReceiver, ChunkStatus};
use crate::body::BodySink;
use crate::config::{BodyDelivery, Config};
use crate::context::ReplyState;
use crate::data::{BareLineEndings, DataReceiver, DataStatus, LeadingWhitespace};
use crate::hooks::{AbortReason, Hook, Message};
use crate::line::LineReader;
use crate::outbox::{replies::*, Output};
use crate::params::Body;
use crate::pending::Stage;
use crate::reply::Reply;
use crate::transaction::Transaction;

use super::{Phase, Session, Step};

impl Session {
    pub(super) fn read_data(&mut self, input: &[u8]) -> Step {
        let (Phase::Data(rx), Some(tx)) = (&mut self.phase, self.tx.as_deref_mut()) else {
            unreachable!("message data is read inside a transaction");
        };
        let normalizing = self.config.bare_line_endings == BareLineEndings::Normalize;
        let (used, status, piece) = tx.sink.feed(input, normalizing, |i, b| rx.feed(i, b));
        let failure = body_failure(&data_facts(rx), &self.config);
        if failure.is_some() {
            rx.stop_storing();
        }
        self.clock.transferred(used);
        self.body_progress(piece, failure);
        match status {
            // A piece's worth was read: the rest of the input is for the next piece.
            DataStatus::NeedMore if used < input.len() => Step::Next(used),
            DataStatus::NeedMore => Step::NeedMore(used),
            DataStatus::Done => {
                self.end_of_data();
                Step::Next(used)
            }
        }
    }

    pub(super) fn read_chunk(&mut self, input: &[u8]) -> Step {
        let Phase::Bdat { rx, refusal } = &mut self.phase else {
            unreachable!("read_chunk runs in the BDAT phase");
        };
        let (used, status) = match (refusal, self.tx.as_deref_mut()) {
            (None, Some(tx)) => {
                let normalizing = self.config.bare_line_endings == BareLineEndings::Normalize;
                let (used, status, piece) = tx.sink.feed(input, normalizing, |i, b| rx.feed(i, b));
                let failure = body_failure(&chunk_facts(rx), &self.config);
                if failure.is_some() {
                    rx.stop_storing();
                }
                self.body_progress(piece, failure);
                (used, status)
            }
            _ => rx.feed(input, &mut Vec::new()),
        };
        self.clock.transferred(used);
        match status {
            ChunkStatus::NeedMore if used < input.len() => Step::Next(used),
            ChunkStatus::NeedMore => Step::NeedMore(used),
            ChunkStatus::Done => {
                self.end_of_chunk();
                Step::Next(used)
            }
        }
    }

    /// Hands out a piece of the body, or, once the message is known to fail, announces
    /// that and stores nothing more of it.
    fn body_progress(&mut self, piece: Option<Vec<u8>>, failure: Option<AbortReason>) {
        let Some(tx) = self.tx.as_deref_mut() else {
            unreachable!("a body belongs to a transaction");
        };
        match (failure, piece) {
            (Some(reason), _) => {
                let sink = std::mem::replace(&mut tx.sink, BodySink::Discard);
                if sink.is_streaming() {
                    self.out.push(Output::BodyAborted(reason));
                }
            }
            (None, Some(piece)) => self.out.push(Output::BodyPiece(piece)),
            (None, None) => {}
        }
    }

    /// Why the transaction cannot take message data now, if it cannot.
    fn data_refusal(&self, chunked: bool) -> Option<Reply> {
        let Some(tx) = &self.tx else {
            return Some(NEED_MAIL);
        };
        if tx.envelope.recipients.is_empty() {
            return Some(NEED_RCPT);
        }
        if !chunked && tx.chunks.is_some() {
            return Some(DATA_AFTER_BDAT);
        }
        if !chunked && tx.envelope.mail_params.body == Some(Body::BinaryMime) {
            return Some(BINARY_NEEDS_BDAT);
        }
        None
    }

    pub(super) fn cmd_data(&mut self) {
        if let Some(reply) = self.data_refusal(false) {
            return self.refuse(reply, ReplyState::Data);
        }
        if self.config.hooks.data {
            self.call_hook(Stage::Data, Hook::Data);
        } else {
            self.start_data(None);
        }
    }

    pub(super) fn start_data(&mut self, custom: Option<Reply>) {
        self.reply(custom.unwrap_or(START_DATA), ReplyState::Data);
        let (policy, max) = (self.config.bare_line_endings, self.config.max_message_size);
        let rx = if self.config.hooks.message {
            DataReceiver::new(policy, max)
        } else {
            // Nobody is told about the message: read it without storing it.
            DataReceiver::discarding(policy, max)
        };
        let rx = rx.with_leading_whitespace(self.config.leading_whitespace);
        self.start_body();
        self.clock.transfer_started();
        self.phase = Phase::Data(rx);
    }

    /// The body of the open transaction starts: it gets the sink the config asks for.
    fn start_body(&mut self) {
        let sink = match (self.config.hooks.message, self.config.body_delivery) {
            (false, _) => BodySink::Discard,
            (true, BodyDelivery::Streamed { max_piece }) => BodySink::Stream {
                max_piece,
                spare: Vec::new(),
            },
            (true, _) => {
                // One allocation for a message of the size the client declared; capped, so a
                // client that lies cannot make a session reserve much it never sends.
                let declared = self.envelope().and_then(|e| e.mail_params.size);
                let presize = declared
                    .unwrap_or(UNDECLARED_PRESIZE)
                    .min(self.config.max_message_size);
                let presize = presize.min(PRESIZE_LIMIT) as usize;
                let spare = self
                    .out
                    .spares
                    .as_mut()
                    .and_then(|spares| spares.body(presize));
                BodySink::Buffer(spare.unwrap_or_else(|| Vec::with_capacity(presize)))
            }
        };
        let Some(tx) = self.tx.as_deref_mut() else {
            unreachable!("a body starts inside a transaction");
        };
        tx.sink = sink;
    }

    fn end_of_data(&mut self) {
        let commands = Phase::Command(LineReader::commands(self.line_limits));
        let Phase::Data(rx) = std::mem::replace(&mut self.phase, commands) else {
            unreachable!("the end of data comes in the DATA phase");
        };
        self.clock.transfer_ended();
        let Some(tx) = self.tx.take() else {
            unreachable!("message data is read inside a transaction");
        };
        let facts = data_facts(&rx);
        let recipients = tx.envelope.recipients.len();
        match body_failure(&facts, &self.config) {
            Some(failure) => {
                self.report_aborted(failure);
                self.message_replies(ReplyState::Eod, recipients, refusal_for(failure))
            }
            None => self.deliver(*tx, facts),
        }
    }

    /// The outcome of a whole message: one reply, or in LMTP the same reply for every
    /// accepted recipient (RFC 2033 section 4.2). It counts once toward the error limit.
    pub(super) fn message_replies(&mut self, state: ReplyState, recipients: usize, reply: Reply) {
        let copies = if self.config.lmtp { recipients } else { 1 };
        for _ in 1..copies {
            self.out.reply_uncounted(reply.clone(), state);
        }
        self.reply(reply, state);
    }

    fn deliver(&mut self, tx: Transaction, facts: BodyFacts) {
        let state = if facts.chunked {
            ReplyState::Bdat
        } else {
            ReplyState::Eod
        };
        let recipients = tx.envelope.recipients.len();
        if !self.config.hooks.message {
            return self.message_replies(state, recipients, MESSAGE_OK);
        }
        let (body, streamed) = match tx.sink {
            BodySink::Buffer(body) => (body, false),
            BodySink::Stream { .. } => (Vec::new(), true),
            BodySink::Discard => unreachable!("a failed message is never delivered"),
        };
        let message = Message {
            envelope: tx.envelope,
            body,
            streamed,
            size: facts.size,
            chunked: facts.chunked,
            eight_bit: facts.eight_bit,
            bare_line_endings: facts.bare_line_endings,
            leading_whitespace: facts.leading_whitespace,
        };
        let message = match self.out.spares.as_mut() {
            Some(spares) => spares.boxed(message),
            None => Box::new(message),
        };
        let stage = Stage::Message {
            chunked: facts.chunked,
            lmtp_recipients: self.config.lmtp.then_some(recipients),
        };
        self.call_hook(stage, Hook::Message(message));
    }

    pub(super) fn cmd_bdat(&mut self, size: u64, last: bool) {
        if !self.ext.chunking {
            return self.skip_chunk(size, last, NOT_IMPLEMENTED);
        }
        if let Some(reply) = self.data_refusal(true) {
            return self.skip_chunk(size, last, reply);
        }
        let first = self.tx.as_ref().is_some_and(|tx| tx.chunks.is_none());
        if first && self.config.hooks.data {
            self.call_hook(Stage::Bdat { size, last }, Hook::Data);
        } else {
            self.start_chunk(size, last);
        }
    }

    /// Consumes a chunk's bytes without storing them, then sends `reply`.
    #[cold]
    pub(super) fn skip_chunk(&mut self, size: u64, last: bool, reply: Reply) {
        let mut rx = BdatReceiver::discarding(None, u64::MAX);
        rx.start_chunk(size, last);
        self.clock.transfer_started();
        self.phase = Phase::Bdat {
            rx,
            refusal: Some(reply),
        };
    }

    pub(super) fn start_chunk(&mut self, size: u64, last: bool) {
        let Some(tx) = self.tx.as_deref_mut() else {
            unreachable!("a chunk is accepted inside a transaction");
        };
        let mut rx = match tx.chunks.take() {
            Some(rx) => rx,
            None => {
                let binary = tx.envelope.mail_params.body == Some(Body::BinaryMime);
                let policy = (!binary).then_some(self.config.bare_line_endings);
                let max = self.config.max_message_size;
                let rx = if self.config.hooks.message {
                    BdatReceiver::new(policy, max)
                } else {
                    BdatReceiver::discarding(policy, max)
                };
                let rx = rx.with_leading_whitespace(self.config.leading_whitespace);
                self.start_body();
                rx
            }
        };
        rx.start_chunk(size, last);
        self.clock.transfer_started();
        self.phase = Phase::Bdat { rx, refusal: None };
    }

    fn end_of_chunk(&mut self) {
        let commands = Phase::Command(LineReader::commands(self.line_limits));
        let Phase::Bdat { rx, refusal } = std::mem::replace(&mut self.phase, commands) else {
            unreachable!("a chunk ends in the BDAT phase");
        };
        self.clock.transfer_ended();
        if let Some(reply) = refusal {
            return self.reply(reply, ReplyState::Bdat);
        }
        let Some(mut tx) = self.tx.take() else {
            unreachable!("a chunk is read inside a transaction");
        };
        let facts = chunk_facts(&rx);
        let recipients = tx.envelope.recipients.len();
        // A failed message ends its transaction: later chunks of it get 503 (RFC 3030
        // leaves the choice). Only the last chunk answers for the whole message.
        let failure = body_failure(&facts, &self.config);
        if let Some(failure) = failure {
            self.report_aborted(failure);
        }
        match failure.map(refusal_for) {
            Some(refusal) if rx.is_last() => {
                self.message_replies(ReplyState::Bdat, recipients, refusal)
            }
            Some(refusal) => self.reply(refusal, ReplyState::Bdat),
            None if rx.is_last() => self.deliver(*tx, facts),
            None => {
                tx.chunks = Some(rx);
                self.tx = Some(tx);
                self.reply(CHUNK_OK, ReplyState::Bdat);
            }
        }
    }

    /// Ends the open transaction, if any; a streamed body that had started is announced as
    /// aborted, and the transaction too when the runtime asked for it.
    pub(super) fn end_transaction(&mut self, reason: AbortReason) {
        if let Some(tx) = self.tx.take() {
            if tx.sink.is_streaming() {
                self.out.push(Output::BodyAborted(reason));
            }
            self.report_aborted(reason);
        }
    }

    /// [`Config::report_aborted_transactions`]: the transaction ended without a message
    /// hook call.
    fn report_aborted(&mut self, reason: AbortReason) {
        if self.config.report_aborted_transactions {
            self.out.push(Output::TransactionAborted(reason));
        }
    }
}

/// What the session learnt about a body while reading it, for the message hook.
struct BodyFacts {
    size: u64,
    exceeded: bool,
    eight_bit: bool,
    bare_line_endings: bool,
    leading_whitespace: bool,
    chunked: bool,
}

fn data_facts(rx: &DataReceiver) -> BodyFacts {
    BodyFacts {
        size: rx.size(),
        exceeded: rx.exceeded(),
        eight_bit: rx.saw_eight_bit(),
        bare_line_endings: rx.saw_bare_line_ending(),
        leading_whitespace: rx.saw_leading_whitespace(),
        chunked: false,
    }
}

fn chunk_facts(rx: &BdatReceiver) -> BodyFacts {
    BodyFacts {
        size: rx.size(),
        exceeded: rx.exceeded(),
        eight_bit: rx.saw_eight_bit(),
        bare_line_endings: rx.saw_bare_line_ending(),
        leading_whitespace: rx.saw_leading_whitespace(),
        chunked: true,
    }
}

/// Why a message being received will not be accepted, once that is known.
fn body_failure(facts: &BodyFacts, config: &Config) -> Option<AbortReason> {
    if facts.exceeded {
        Some(AbortReason::TooBig)
    } else if facts.bare_line_endings && config.bare_line_endings == BareLineEndings::Reject {
        Some(AbortReason::BareLineEnding)
    } else if facts.leading_whitespace && config.leading_whitespace == LeadingWhitespace::Reject {
        Some(AbortReason::LeadingWhitespace)
    } else {
        None
    }
}

/// The reply that refuses a message for `failure`, once its data ended.
fn refusal_for(failure: AbortReason) -> Reply {
    match failure {
        AbortReason::TooBig => TOO_BIG,
        AbortReason::BareLineEnding => BARE_LINE_ENDING,
        AbortReason::LeadingWhitespace => LEADING_WHITESPACE,
        AbortReason::Reset | AbortReason::Closed => {
            unreachable!("a message refused for its data fails for its data")
        }
    }
}

/// The most body the session reserves up front for a declared SIZE.
const PRESIZE_LIMIT: u64 = 1 << 20;

/// The largest body buffer kept from a message hook call handed back, for the next
/// message: what the session would reserve for it anyway.
pub(super) const MAX_KEPT_BODY: u64 = PRESIZE_LIMIT;

/// The body reserved up front when the client declared no SIZE: most messages fit, so the
/// buffer is allocated once instead of growing from nothing in a few steps.
const UNDECLARED_PRESIZE: u64 = 4 << 10;
