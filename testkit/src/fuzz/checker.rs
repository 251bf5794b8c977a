//! The checking runtime of the session targets: it drives a session with the crate's one
//! driver and checks the session invariants (see [`crate::fuzz`]) after every step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp_session::{
    AuthRequest, BareLineEndings, Body, CloseSide, Decision, DisconnectContext, Error, Hook,
    HookId, IoError, IoErrorKind, Message, Output, Session, TlsInfo,
};

use crate::drive::{self, Runtime, Then};
use crate::fuzz::config::{extensions_from_bits, fuzz_config, fuzz_info, Knobs, STREAMED_PIECE};
use crate::fuzz::decisions::{auto_decision, build_decision, HookKind};
use crate::fuzz::ops::DecisionKind;
use crate::fuzz::Rng;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Outstanding {
    id: HookId,
    pub(crate) kind: HookKind,
}

/// What the outputs of one drain were.
#[derive(Default, Debug)]
struct Drained {
    /// The codes of the replies written, in order.
    codes: Vec<u16>,
    outputs: usize,
    closed: bool,
}

pub(crate) struct Checker {
    pub(crate) session: Session,
    pub(crate) now: Instant,
    max_message_size: u64,
    max_pending_input: usize,
    knobs: Knobs,
    pub(crate) outstanding: Option<Outstanding>,
    /// The connect hook was called or a reply written: the greeting delay is over.
    greeted: bool,
    /// Input was offered before that.
    talked_early: bool,
    last_decided: Option<HookId>,
    pub(crate) tls_requested: bool,
    closes: u32,
    disconnects: u32,
    /// A 421 was written: the next output must be the close.
    close_due: bool,
    /// The last reply written: code and number of lines.
    last_reply: Option<(u16, usize)>,
    /// A hook was pending when the current input was offered.
    paused: bool,
    /// Bytes the session took while a hook was pending.
    paused_intake: usize,
    /// Bytes the session did not take yet; offered again after each decision.
    backlog: Vec<u8>,
    eof_wanted: bool,
    eof_sent: bool,
    io_error_sent: bool,
    /// Who must be named as closing if the close happens during the current call.
    expect_side: Option<CloseSide>,
    /// The outputs since the last [`Checker::drain`] began.
    drained: Drained,
    /// Streamed mode: the bytes of the message whose pieces are going out, once one did.
    spool: Option<u64>,
    /// LMTP: the recipients of the message whose hook is pending.
    lmtp_recipients: Option<usize>,
}

impl Checker {
    pub(crate) fn new(knobs: &Knobs) -> Checker {
        let config = fuzz_config(knobs);
        assert_eq!(config.validate(), Ok(()), "the fuzz config is in range");
        let now = Instant::now();
        let session = Session::new(Arc::new(config), fuzz_info(), now);
        let mut checker = Checker {
            max_message_size: session.config().max_message_size,
            max_pending_input: session.config().max_pending_input,
            knobs: knobs.clone(),
            session,
            now,
            outstanding: None,
            greeted: false,
            talked_early: false,
            last_decided: None,
            tls_requested: false,
            closes: 0,
            disconnects: 0,
            close_due: false,
            last_reply: None,
            paused: false,
            paused_intake: 0,
            backlog: Vec::new(),
            eof_wanted: false,
            eof_sent: false,
            io_error_sent: false,
            expect_side: None,
            drained: Drained::default(),
            spool: None,
            lmtp_recipients: None,
        };
        checker.drain();
        checker
    }

    pub(crate) fn closed(&self) -> bool {
        self.closes > 0
    }

    /// Drains the outputs, each checked as it comes; says what they were.
    fn drain(&mut self) -> Drained {
        self.drained = Drained::default();
        drive::drain(self);
        std::mem::take(&mut self.drained)
    }

    fn check_state(&self) {
        assert_eq!(
            self.session.is_closed(),
            self.closed(),
            "is_closed vs Close"
        );
        if self.closed() {
            assert_eq!(
                self.disconnects, 1,
                "the disconnect hook fires exactly once"
            );
            assert_eq!(self.session.pending_hook(), None);
            assert_eq!(self.session.poll_timeout(), None);
        } else {
            assert_eq!(
                self.session.pending_hook(),
                self.outstanding.map(|o| o.id),
                "the pending hook is the last one called"
            );
            assert_eq!(
                self.session.poll_timeout().is_none(),
                self.outstanding.is_some(),
                "a deadline exactly while no hook is pending"
            );
        }
    }

    /// One write: whole, well-formed replies.
    fn check_write(&mut self, bytes: &[u8]) {
        assert!(!self.closed(), "write after close");
        assert!(!bytes.is_empty(), "empty write");
        assert!(
            bytes.ends_with(b"\r\n"),
            "write does not end with CRLF: {bytes:?}"
        );
        let mut open: Option<(u16, usize)> = None;
        for raw in bytes[..bytes.len() - 1].split(|&b| b == b'\n') {
            let line = raw
                .strip_suffix(b"\r")
                .unwrap_or_else(|| panic!("bare LF in a reply: {bytes:?}"));
            let text = std::str::from_utf8(line).expect("replies are UTF-8");
            assert!(line.len() >= 4, "short reply line {text:?}");
            assert!(line[..3].iter().all(u8::is_ascii_digit), "{text:?}");
            let code = u16::from(line[0] - b'0') * 100
                + u16::from(line[1] - b'0') * 10
                + u16::from(line[2] - b'0');
            assert!(
                (200..=599).contains(&code),
                "reply code out of range: {text:?}"
            );
            assert!(
                !text[4..].chars().any(|c| c.is_control() && c != '\t'),
                "control character in reply: {text:?}"
            );
            assert!(!self.close_due, "a reply after a 421: {bytes:?}");
            let lines = match open {
                Some((open_code, n)) => {
                    assert_eq!(code, open_code, "continuation with another code: {bytes:?}");
                    n + 1
                }
                None => 1,
            };
            match line[3] {
                b'-' => open = Some((code, lines)),
                b' ' => {
                    open = None;
                    self.drained.codes.push(code);
                    self.last_reply = Some((code, lines));
                    self.close_due = code == 421;
                }
                _ => panic!("no separator after the code: {text:?}"),
            }
        }
        assert!(open.is_none(), "a reply split across writes: {bytes:?}");
    }

    fn check_context(&self, context: &DisconnectContext) {
        let arguments = &context.arguments;
        let written = arguments.reply.as_ref().map(|r| (r.code, r.lines.len()));
        assert_eq!(
            written, self.last_reply,
            "the context's last reply was not the last sent"
        );
        if let Some(side) = self.expect_side {
            assert_eq!(arguments.close, side, "wrong close side");
        }
        if arguments.close == CloseSide::Remote {
            assert!(
                self.eof_sent || self.io_error_sent,
                "Remote close without EOF or error"
            );
        }
        assert_eq!(arguments.error.is_some(), self.io_error_sent);
        if context.connection.early_talker {
            assert!(self.talked_early, "an early talker that never talked early");
        }
    }

    /// After the close: every input is refused with `Closed` and queues nothing.
    fn check_closed_api(&mut self) {
        assert!(self.closed());
        let now = self.now + Duration::from_secs(86_400);
        let s = &mut self.session;
        assert_eq!(s.handle_input(b"QUIT\r\n", now), Err(Error::Closed));
        assert_eq!(s.handle_input(b"", now), Err(Error::Closed));
        assert_eq!(s.handle_eof(now), Err(Error::Closed));
        assert_eq!(s.handle_timeout(now), Err(Error::Closed));
        assert_eq!(s.handle_shutdown(now), Err(Error::Closed));
        assert_eq!(s.handle_io_error(io_error(), now), Err(Error::Closed));
        assert_eq!(
            s.handle_tls_established(TlsInfo::default(), now),
            Err(Error::Closed)
        );
        assert_eq!(s.handle_tls_failed(io_error(), now), Err(Error::Closed));
        for id in [0, 1, 2, u64::MAX] {
            assert_eq!(
                s.decide(HookId::forged(id), Decision::Accept, now),
                Err(Error::Closed)
            );
        }
        assert!(s.poll_output().is_none(), "output after close");
        self.check_state();
    }

    fn assert_quiet(&mut self, what: &str) {
        if let Some(output) = self.session.poll_output() {
            panic!("{what} queued {output:?}");
        }
        self.check_state();
    }

    // --- inputs ---

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        if self.closed() {
            assert_eq!(
                self.session.handle_input(bytes, self.now),
                Err(Error::Closed)
            );
            return self.assert_quiet("input after close");
        }
        // A runtime stops reading while it holds a backlog; bound it all the same.
        if self.backlog.len() < 1 << 20 {
            drive::feed(self, bytes);
        } else {
            drive::offer(self);
        }
        self.deliver_eof();
    }

    /// Offers the backlog until the session takes no more, then delivers a wanted EOF.
    fn offer(&mut self) {
        drive::offer(self);
        self.deliver_eof();
    }

    fn deliver_eof(&mut self) {
        if self.eof_wanted && !self.eof_sent && self.backlog.is_empty() && !self.closed() {
            self.eof_sent = true;
            self.session.handle_eof(self.now).expect("eof while open");
            self.drain();
        }
    }

    pub(crate) fn eof(&mut self) {
        if self.closed() {
            assert_eq!(self.session.handle_eof(self.now), Err(Error::Closed));
            return self.assert_quiet("eof after close");
        }
        self.eof_wanted = true;
        self.offer();
    }

    pub(crate) fn io_error(&mut self) {
        self.io_error_with(io_error());
    }

    /// An I/O error the runtime reports, with whatever reason, kind and code.
    pub(crate) fn io_error_with(&mut self, error: IoError) {
        if self.closed() {
            assert_eq!(
                self.session.handle_io_error(error, self.now),
                Err(Error::Closed)
            );
            return self.assert_quiet("I/O error after close");
        }
        self.io_error_sent = true;
        self.expect_side = Some(CloseSide::Remote);
        self.session
            .handle_io_error(error, self.now)
            .expect("io error while open");
        let drained = self.drain();
        self.expect_side = None;
        assert!(drained.closed, "an I/O error closes at once");
        assert!(
            drained.codes.is_empty(),
            "nothing is written after an I/O error"
        );
    }

    pub(crate) fn advance(&mut self, seconds: u16) {
        self.now += Duration::from_secs(u64::from(seconds));
        if self.closed() {
            assert_eq!(self.session.handle_timeout(self.now), Err(Error::Closed));
            return self.assert_quiet("timeout after close");
        }
        let deadline = self.session.poll_timeout();
        let due = deadline.is_some_and(|d| self.now >= d);
        // The end of a greeting delay greets (or refuses an early talker) instead.
        let greets = due && self.knobs.greeting_delay && !self.greeted;
        self.expect_side = (due && !greets).then_some(CloseSide::Local);
        self.session
            .handle_timeout(self.now)
            .expect("timeout while open");
        let drained = self.drain();
        self.expect_side = None;
        if greets {
            assert!(
                self.greeted || drained.closed,
                "the greeting delay ended without a greeting"
            );
        } else if due {
            assert!(drained.closed, "the deadline passed without a close");
            assert!(drained.codes.iter().all(|&c| c == 421), "{drained:?}");
        } else {
            assert_eq!(drained.outputs, 0, "an early timeout did something");
        }
    }

    /// Checks a TLS event the session must refuse (after close, or unrequested): true when
    /// it was one, after asserting the refusal changed nothing.
    fn tls_event_refused(&mut self, result: &Result<(), Error>, what: &str) -> bool {
        if self.closed() {
            assert_eq!(*result, Err(Error::Closed), "{what} after close");
        } else if !self.tls_requested {
            assert_eq!(*result, Err(Error::NoTlsRequested), "unrequested {what}");
        } else {
            return false;
        }
        self.assert_quiet(what);
        true
    }

    pub(crate) fn tls_established(&mut self) {
        self.tls_established_with(tls_info());
    }

    /// A handshake that succeeded with whatever details the runtime reports.
    pub(crate) fn tls_established_with(&mut self, tls: TlsInfo) {
        let result = self.session.handle_tls_established(tls, self.now);
        if self.tls_event_refused(&result, "TLS success") {
            return;
        }
        result.expect("the requested handshake");
        self.tls_requested = false;
        assert!(self.session.tls().is_some());
        assert!(self.session.helo().is_none() && self.session.envelope().is_none());
        self.drain();
        self.offer();
    }

    pub(crate) fn tls_failed(&mut self) {
        let result = self.session.handle_tls_failed(io_error(), self.now);
        if self.tls_event_refused(&result, "TLS failure") {
            return;
        }
        // The failure is reported like an I/O error; the check wants it recorded first.
        self.io_error_sent = true;
        self.expect_side = Some(CloseSide::Remote);
        result.expect("the requested handshake");
        let drained = self.drain();
        self.expect_side = None;
        assert!(drained.closed && drained.codes.is_empty(), "{drained:?}");
    }

    pub(crate) fn shutdown(&mut self) {
        if self.closed() {
            assert_eq!(self.session.handle_shutdown(self.now), Err(Error::Closed));
            return self.assert_quiet("shutdown after close");
        }
        self.expect_side = Some(CloseSide::Local);
        self.session
            .handle_shutdown(self.now)
            .expect("shutdown while open");
        self.drain();
        self.expect_side = None;
    }

    pub(crate) fn set_extensions(&mut self, bits: u16) {
        self.session.set_extensions(extensions_from_bits(bits));
        self.assert_quiet("set_extensions");
    }

    /// A decision for an id that is not pending: refused, and nothing changes.
    pub(crate) fn decide_wrong(&mut self, n: u8) {
        let id = match (n % 3, self.outstanding, self.last_decided) {
            (0, _, Some(stale)) => stale,
            (1, Some(o), _) => HookId::forged(o.id.get() + 1 + u64::from(n)),
            _ => HookId::forged(u64::MAX - u64::from(n)),
        };
        let result = self.session.decide(id, Decision::Accept, self.now);
        if self.closed() {
            assert_eq!(result, Err(Error::Closed));
        } else {
            assert_ne!(Some(id), self.outstanding.map(|o| o.id));
            assert_eq!(result, Err(Error::UnknownHook(id)));
        }
        self.assert_quiet("a refused decision");
    }

    pub(crate) fn decide(&mut self, kind: &DecisionKind) {
        let Some(pending) = self.outstanding else {
            return self.decide_wrong(0);
        };
        let refuse_early_talker = self.knobs.reject_early_talkers && self.session.early_talker();
        let (decision, expect) = build_decision(
            kind,
            pending.kind,
            self.knobs.hook_failure_disconnect,
            refuse_early_talker,
        );
        let described = format!("{decision:?} for {:?}", pending.kind);
        // A decision that does not fit is refused, and the hook counts as failed.
        let (_, failed) = build_decision(
            &DecisionKind::HookFailed,
            pending.kind,
            self.knobs.hook_failure_disconnect,
            refuse_early_talker,
        );
        let valid = expect.valid;
        let expect = if valid { expect } else { failed };
        self.expect_side = expect.closes.then_some(CloseSide::Local);
        match self.session.decide(pending.id, decision, self.now) {
            Ok(()) => assert!(valid, "accepted an unfitting decision: {described}"),
            Err(Error::InvalidDecision(why)) => {
                assert!(!valid, "refused a fitting decision ({why}): {described}")
            }
            Err(other) => panic!("{described}: unexpected {other:?}"),
        }
        self.outstanding = None;
        self.last_decided = Some(pending.id);
        let drained = self.drain();
        self.expect_side = None;
        if expect.closes {
            assert!(drained.closed, "{described} did not close: {drained:?}");
        }
        if let Some(code) = expect.first_code {
            assert_eq!(drained.codes.first(), Some(&code), "{described}");
        }
        if let (HookKind::Message, Some(n), false) =
            (pending.kind, self.lmtp_recipients.take(), expect.closes)
        {
            // LMTP: one reply per accepted recipient, the same for each here.
            assert!(drained.codes.len() >= n, "{described}: {drained:?} for {n}");
            assert!(
                drained.codes[..n].iter().all(|&c| c == drained.codes[0]),
                "{described}: {drained:?}"
            );
        }
        if expect.follow_with_421 {
            assert_eq!(drained.codes.len(), 2, "{described}: {drained:?}");
            assert_eq!(drained.codes[1], 421, "{described}");
        } else if expect.closes && pending.kind != HookKind::Data {
            // The reply, then at most the error limit's 421.
            assert!(drained.codes.len() <= 2, "{described}: {drained:?}");
        }
        self.offer();
    }

    /// Any value of `Decision` (built by `Arbitrary`) for the pending hook: the session takes
    /// it, or refuses it as not fitting and counts the hook as failed; either way the hook is
    /// answered, and every output still passes the checks of the drain.
    pub(crate) fn decide_any(&mut self, decision: Decision) {
        let Some(pending) = self.outstanding else {
            return self.decide_wrong(0);
        };
        let described = format!("{decision:?} for {:?}", pending.kind);
        // Whatever the decision, a close it causes is the session's; but once the client's
        // EOF is in, a decision that does not close lets the session see the client gone.
        self.expect_side = (!self.eof_sent).then_some(CloseSide::Local);
        match self.session.decide(pending.id, decision, self.now) {
            Ok(()) | Err(Error::InvalidDecision(_)) => {}
            Err(other) => panic!("{described}: unexpected {other:?}"),
        }
        self.outstanding = None;
        self.last_decided = Some(pending.id);
        self.lmtp_recipients = None;
        let drained = self.drain();
        self.expect_side = None;
        // The data hook of a BDAT is answered after its chunk.
        if !drained.closed && pending.kind != HookKind::Data {
            assert!(
                !drained.codes.is_empty(),
                "{described}: the hook was answered with no reply"
            );
        }
        self.offer();
    }

    /// Ends the session the way a runtime does: EOF, then answering whatever is owed.
    pub(crate) fn finish(&mut self, rng: &mut Rng) {
        for _ in 0..10_000 {
            if self.closed() {
                break;
            }
            if let Some(pending) = self.outstanding {
                let kind = auto_decision(rng, pending.kind);
                self.decide(&kind);
            } else if self.tls_requested {
                self.tls_established();
            } else if !self.backlog.is_empty() {
                self.offer();
            } else if !self.eof_sent {
                self.eof();
            } else {
                panic!("after EOF, with nothing owed, the session did not close");
            }
        }
        assert!(self.closed(), "the session never closed");
        self.check_closed_api();
    }
}

/// Every output is checked as it comes; hooks wait for the script's decisions.
impl Runtime for Checker {
    fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn backlog(&mut self) -> &mut Vec<u8> {
        &mut self.backlog
    }

    fn reading(&mut self) {
        self.paused = self.outstanding.is_some();
        let connecting = matches!(self.outstanding, Some(o) if o.kind == HookKind::Connect);
        if (!self.greeted || connecting) && !self.tls_requested {
            self.talked_early = true;
        }
    }

    fn took(&mut self, offered: usize, taken: usize) {
        assert!(
            taken == offered || self.session.pending_hook().is_some(),
            "input refused although no hook is pending"
        );
        if self.paused {
            self.paused_intake += taken;
            assert!(
                self.paused_intake <= self.max_pending_input,
                "took {} bytes while paused, limit {}",
                self.paused_intake,
                self.max_pending_input
            );
        }
    }

    fn output(&mut self, output: Output) -> Then {
        self.drained.outputs += 1;
        assert_eq!(
            self.disconnects, 0,
            "output after the disconnect hook: {output:?}"
        );
        if self.closed() {
            assert!(
                matches!(&output, Output::HookCall(call) if matches!(call.hook, Hook::Disconnect(_))),
                "the close must be followed at once by the disconnect hook: {output:?}"
            );
        }
        if self.close_due {
            // A message being streamed, and the transaction when asked, are announced as
            // aborted before the close.
            let aborted = matches!(
                output,
                Output::BodyAborted(_) | Output::TransactionAborted(_)
            );
            assert!(
                aborted || matches!(output, Output::Close),
                "a 421 reply must be followed by the close: {output:?}"
            );
            self.close_due = aborted;
        }
        match output {
            Output::Write(bytes) => {
                self.greeted = true;
                self.check_write(&bytes);
            }
            Output::Close => {
                assert_eq!(
                    self.spool, None,
                    "a streamed message ended with neither its hook nor an abort"
                );
                self.closes += 1;
                self.drained.closed = true;
                self.outstanding = None;
                self.tls_requested = false;
                return Then::DropInput;
            }
            Output::StartTls => {
                assert!(
                    !self.tls_requested,
                    "a second StartTls before the first ended"
                );
                assert!(
                    self.outstanding.is_none(),
                    "StartTls while a hook is pending"
                );
                self.tls_requested = true;
                // The runtime drops what it read before the handshake.
                return Then::DropInput;
            }
            Output::HookCall(call) => self.hook_called(call.id, call.needs_decision(), call.hook),
            Output::BodyPiece(piece) => {
                assert!(self.knobs.streamed, "a piece in buffered mode");
                assert!(!piece.is_empty(), "an empty piece");
                assert!(
                    piece.len() <= STREAMED_PIECE,
                    "a piece of {} bytes",
                    piece.len()
                );
                assert!(
                    self.outstanding.is_none(),
                    "a piece while a hook is pending"
                );
                if self.spool.is_none() {
                    assert!(
                        !piece.starts_with(b" ") && !piece.starts_with(b"\t"),
                        "a message handed out beginning with a space or tab would continue the receiver's fields: {:?}",
                        piece.escape_ascii().to_string()
                    );
                }
                *self.spool.get_or_insert(0) += piece.len() as u64;
                // Some runtimes give the buffer back for the next piece, some keep it.
                if piece.len() % 2 == 0 {
                    self.session.recycle_piece(piece);
                }
            }
            Output::BodyAborted(_) => {
                assert!(self.knobs.streamed, "an abort in buffered mode");
                self.spool = None;
            }
            Output::TransactionAborted(_) => {}
            other => panic!("an output the checker does not know: {other:?}"),
        }
        Then::Next
    }

    fn drained(&mut self) {
        assert!(!self.close_due, "a 421 reply without a close");
        self.check_state();
    }
}

impl Checker {
    /// A message reaching its hook: within the limit, whole, and clean of bare line endings
    /// unless the policy allows them or the content was declared binary.
    fn check_message(&mut self, message: &Message) {
        assert!(
            message.size <= self.max_message_size,
            "a message of {} bytes passed the {} limit",
            message.size,
            self.max_message_size
        );
        assert_eq!(message.streamed, self.knobs.streamed);
        assert!(
            !message.leading_whitespace || self.knobs.insert_empty_line,
            "content beginning with a space or tab accepted under LeadingWhitespace::Reject"
        );
        if message.streamed {
            assert!(message.body.is_empty(), "a streamed message carries a body");
            let streamed = self.spool.take().unwrap_or(0);
            assert_eq!(streamed, message.size, "the pieces are not the message");
        } else {
            assert_eq!(message.body.len() as u64, message.size);
            assert!(
                !message.body.starts_with(b" ") && !message.body.starts_with(b"\t"),
                "a message beginning with a space or tab reached its hook: {:?}",
                message.body.escape_ascii().to_string()
            );
            if message.leading_whitespace {
                assert!(
                    message.body.starts_with(b"\r\n\t") || message.body.starts_with(b"\r\n "),
                    "the content that began with a space or tab follows an empty line"
                );
            }
            let binary = message.envelope.mail_params.body == Some(Body::BinaryMime);
            let policy = fuzz_config(&self.knobs).bare_line_endings;
            if !binary && policy != BareLineEndings::Allow {
                assert!(
                    crlf_only(&message.body),
                    "a bare CR or LF reached the message hook under {policy:?}: {:?}",
                    message.body.escape_ascii().to_string()
                );
            }
        }
        self.lmtp_recipients = self.knobs.lmtp.then_some(message.envelope.recipients.len());
    }

    fn hook_called(&mut self, id: HookId, needs_decision: bool, hook: Hook) {
        let kind = match hook {
            Hook::Disconnect(context) => {
                assert!(!needs_decision);
                assert!(self.closed(), "disconnect hook before the close");
                self.disconnects += 1;
                self.check_context(&context);
                return;
            }
            Hook::Connect => HookKind::Connect,
            Hook::Helo { .. } => HookKind::Helo,
            Hook::Auth(AuthRequest::Step { .. }) => HookKind::AuthStep,
            Hook::Auth(_) => HookKind::AuthDecoded,
            Hook::MailFrom { .. } => HookKind::MailFrom,
            Hook::RcptTo { .. } => HookKind::RcptTo,
            Hook::Data => HookKind::Data,
            Hook::Vrfy(_) | Hook::Expn(_) => HookKind::Verify,
            Hook::Message(message) => {
                self.check_message(&message);
                HookKind::Message
            }
            other => panic!("a hook the checker does not know: {other:?}"),
        };
        assert!(needs_decision);
        self.greeted = true;
        if let Some(old) = self.outstanding {
            panic!("hook {kind:?} called while {old:?} is pending");
        }
        self.outstanding = Some(Outstanding { id, kind });
        self.paused_intake = 0;
    }
}

/// True when every CR is followed by LF and every LF preceded by CR.
fn crlf_only(body: &[u8]) -> bool {
    body.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => body.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && body[i - 1] == b'\r',
        _ => true,
    })
}

fn io_error() -> IoError {
    IoError::new(IoErrorKind::Socket, "Connection reset by peer", Some(104))
}

fn tls_info() -> TlsInfo {
    TlsInfo {
        protocol: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
        key_size: Some(256),
        sni: Some("mx.fuzz.example".into()),
        peer_certificate: None,
    }
}
