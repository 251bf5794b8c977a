//! Everything the session hands to the runtime: replies coalesced into writes, the other
//! actions in order, the last reply and the error count for the disconnect context, and the
//! crate's default replies.

use std::collections::VecDeque;

use crate::context::ReplyState;
use crate::hooks::{AbortReason, Hook, HookCall, HookId};
use crate::reply::{EnhancedCode, Reply};
use crate::spare::Spares;

/// An action the runtime must carry out, in the order [`Session::poll_output`](crate::Session::poll_output) returns them.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Send these bytes to the client, after every earlier `Write`. Once they are sent, the
    /// buffer may be handed back with [`Session::recycle_write`](crate::Session::recycle_write)
    /// for the next replies.
    Write(Vec<u8>),
    /// Send every earlier `Write`, then close the connection. Emitted exactly once, also when
    /// the client is already gone, so a runtime has one place to release the connection.
    /// It is always followed by the disconnect [`HookCall`], and nothing comes after that.
    Close,
    /// Run a policy hook. Unless it is the disconnect hook
    /// ([`HookCall::needs_decision`] is false), the runtime MUST later answer with
    /// [`Session::decide`](crate::Session::decide) and the call's id; until then the session processes no command.
    HookCall(HookCall),
    /// Send every earlier `Write`, then run a TLS handshake as the server on this connection
    /// and report it with [`Session::handle_tls_established`](crate::Session::handle_tls_established) or
    /// [`Session::handle_tls_failed`](crate::Session::handle_tls_failed). Any bytes read from the socket before the handshake
    /// and not yet given to the session MUST be dropped, never fed after it. One exception:
    /// with implicit TLS behind a PROXY header, the bytes that followed the header are the
    /// client's first handshake bytes; [`Session::take_handshake_bytes`](crate::Session::take_handshake_bytes) hands them back.
    StartTls,
    /// [`BodyDelivery::Streamed`](crate::BodyDelivery::Streamed) only: the next piece of the body of the message being
    /// received, unstuffed, in order. The runtime appends it to its spool for the message
    /// (the first piece of a message starts a new one). The message ends with the message
    /// hook call, whose [`Message::body`](crate::Message::body) is empty, or with [`Output::BodyAborted`].
    BodyPiece(Vec<u8>),
    /// [`BodyDelivery::Streamed`](crate::BodyDelivery::Streamed) only: the message being received will not be accepted.
    /// The runtime discards what it stored of it. Announced once for every message whose
    /// body had started (after the 354, or with its first BDAT chunk) and that ends without
    /// a message hook call, even when no piece went out.
    BodyAborted(AbortReason),
    /// [`Config::report_aborted_transactions`](crate::Config::report_aborted_transactions)
    /// only: the transaction open since MAIL was accepted ended without a message hook
    /// call: RSET, HELO or EHLO, a TLS handshake ([`AbortReason::Reset`]), a message refused
    /// for its data (too big, bare line endings, leading white space) or the connection's
    /// end ([`AbortReason::Closed`]). It owes nothing: the runtime forgets what it kept for
    /// the transaction (a mail filter is told to abort it, as Postfix tells its milters at
    /// RSET). A message that reached its hook is not announced.
    TransactionAborted(AbortReason),
}

pub(crate) const fn e(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
    Some(EnhancedCode::new(class, subject, detail))
}

/// A fixed reply and its wire form, written from the same literals so they cannot differ.
macro_rules! fixed {
    ($code:literal, [$class:literal, $subject:literal, $detail:literal], $text:literal) => {
        Reply::fixed(
            $code,
            e($class, $subject, $detail),
            $text,
            concat!($code, " ", $class, ".", $subject, ".", $detail, " ", $text, "\r\n"),
        )
    };
    ($code:literal, $text:literal) => {
        Reply::fixed($code, None, $text, concat!($code, " ", $text, "\r\n"))
    };
}

/// The crate's default replies. Texts are suggestions (SPEC section 3), codes the contract;
/// the enhanced codes are dropped when ENHANCEDSTATUSCODES is off.
pub(crate) mod replies {
    use super::e;
    use crate::reply::Reply;

    /// RSET, NOOP.
    pub const OK: Reply = fixed!(250, [2, 0, 0], "OK");
    /// MAIL FROM accepted.
    pub const MAIL_OK: Reply = fixed!(250, [2, 1, 0], "Sender OK");
    /// RCPT TO accepted.
    pub const RCPT_OK: Reply = fixed!(250, [2, 1, 5], "Recipient OK");
    /// The message was taken (after the end of data or the last chunk).
    pub const MESSAGE_OK: Reply = fixed!(250, [2, 0, 0], "Message accepted");
    /// A BDAT chunk other than the last was taken.
    pub const CHUNK_OK: Reply = fixed!(250, [2, 0, 0], "Chunk accepted");
    /// The go-ahead for DATA content.
    pub const START_DATA: Reply = fixed!(354, "End data with <CR><LF>.<CR><LF>");
    /// QUIT.
    pub const BYE: Reply = fixed!(221, [2, 0, 0], "Bye");
    /// VRFY and EXPN when they are answered (RFC 5321 section 3.5.3).
    pub const VRFY_OK: Reply = fixed!(
        252,
        [2, 5, 0],
        "Cannot verify the user, but will accept mail for delivery"
    );
    /// A verb known but switched off.
    pub const NOT_IMPLEMENTED: Reply = fixed!(502, [5, 5, 1], "Command not implemented");
    /// STARTTLS accepted: the handshake follows.
    pub const TLS_GO: Reply = fixed!(220, [2, 0, 0], "Ready to start TLS");
    /// STARTTLS not offered.
    pub const TLS_UNAVAILABLE: Reply = fixed!(454, [4, 7, 0], "TLS not available");
    /// STARTTLS once TLS is on.
    pub const TLS_ACTIVE: Reply = fixed!(503, [5, 5, 1], "TLS already active");
    /// A command refused until TLS is on (`Config::require_tls`).
    pub const TLS_REQUIRED: Reply = fixed!(530, [5, 7, 0], "Must issue a STARTTLS command first");
    /// MAIL refused until the client authenticated (`Config::require_auth`).
    pub const AUTH_REQUIRED: Reply = fixed!(530, [5, 7, 0], "Authentication required");
    /// AUTH accepted.
    pub const AUTH_OK: Reply = fixed!(235, [2, 7, 0], "Authentication successful");
    /// AUTH refused, also when no auth hook can verify credentials.
    pub const AUTH_FAILED: Reply = fixed!(535, [5, 7, 8], "Authentication credentials invalid");
    /// AUTH over plaintext when it needs TLS.
    pub const AUTH_NEEDS_TLS: Reply = fixed!(
        538,
        [5, 7, 11],
        "Encryption required for requested authentication mechanism"
    );
    /// A second AUTH.
    pub const AUTH_ALREADY: Reply = fixed!(503, [5, 5, 1], "Already authenticated");
    /// AUTH inside a mail transaction.
    pub const AUTH_IN_TRANSACTION: Reply =
        fixed!(503, [5, 5, 1], "AUTH not allowed during a mail transaction");
    /// A mechanism not offered.
    pub const AUTH_UNKNOWN_MECHANISM: Reply =
        fixed!(504, [5, 5, 4], "Unrecognized authentication type");
    /// The client answered a challenge with `*`.
    pub const AUTH_CANCELLED: Reply = fixed!(501, [5, 7, 0], "Authentication cancelled");
    /// A response that is not base64.
    pub const AUTH_BAD_BASE64: Reply = fixed!(501, [5, 5, 2], "Invalid base64 data");
    /// A PLAIN or LOGIN response that decodes to nonsense.
    pub const AUTH_MALFORMED: Reply = fixed!(501, [5, 5, 2], "Malformed authentication response");
    /// An AUTH line over `Config::max_auth_line_length`.
    pub const AUTH_LINE_TOO_LONG: Reply =
        fixed!(500, [5, 5, 6], "Authentication exchange line is too long");
    /// The auth hook failed.
    pub const AUTH_TEMPORARY: Reply = fixed!(454, [4, 7, 0], "Temporary authentication failure");
    /// Any other hook failed.
    pub const HOOK_TEMPORARY: Reply =
        fixed!(451, [4, 3, 0], "Temporary failure, please try again later");
    /// AUTH before EHLO (or LHLO) in the current TLS state: the client has not learnt that
    /// AUTH is offered.
    pub const NEED_EHLO: Reply = fixed!(503, [5, 5, 1], "Send EHLO first");
    /// MAIL before HELO/EHLO (`Config::require_helo`).
    pub const NEED_HELO: Reply = fixed!(503, [5, 5, 1], "Send HELO or EHLO first");
    /// MAIL inside a transaction.
    pub const NESTED_MAIL: Reply = fixed!(503, [5, 5, 1], "Sender already specified");
    /// RCPT, DATA or BDAT without MAIL.
    pub const NEED_MAIL: Reply = fixed!(503, [5, 5, 1], "Need MAIL command first");
    /// DATA or BDAT without an accepted recipient.
    pub const NEED_RCPT: Reply = fixed!(503, [5, 5, 1], "Need RCPT command first");
    /// DATA after a BDAT chunk of the same transaction.
    pub const DATA_AFTER_BDAT: Reply = fixed!(503, [5, 5, 1], "DATA cannot follow BDAT");
    /// DATA for a `BODY=BINARYMIME` transaction (RFC 3030).
    pub const BINARY_NEEDS_BDAT: Reply = fixed!(503, [5, 5, 1], "BODY=BINARYMIME requires BDAT");
    /// RCPT past `Config::max_recipients`.
    pub const TOO_MANY_RCPTS: Reply = fixed!(452, [4, 5, 3], "Too many recipients");
    /// A message over `Config::max_message_size`, or a SIZE= declaring one.
    pub const TOO_BIG: Reply = fixed!(
        552,
        [5, 3, 4],
        "Message size exceeds fixed maximum message size"
    );
    /// Message content with bare CR or LF under `BareLineEndings::Reject`.
    pub const BARE_LINE_ENDING: Reply = fixed!(
        550,
        [5, 6, 0],
        "Message contains bare CR or LF; line endings must be CRLF"
    );
    /// Message content that begins with a space or a tab under `LeadingWhitespace::Reject`:
    /// it would continue the receiver's own trace fields.
    pub const LEADING_WHITESPACE: Reply = fixed!(
        550,
        [5, 6, 0],
        "Message must begin with a header field, not a space or tab"
    );
    /// A command line ended by a bare LF under `BareLineEndings::Reject` (Postfix
    /// `smtpd_forbid_bare_newline`): it is not executed.
    pub const BARE_LF_COMMAND: Reply = fixed!(550, [5, 5, 2], "Error: bare <LF> received");
    /// A non-ASCII address without the SMTPUTF8 parameter.
    pub const UTF8_NEEDS_SMTPUTF8: Reply = fixed!(
        553,
        [5, 6, 7],
        "Non-ASCII address requires the SMTPUTF8 parameter"
    );
    /// MAIL FROM with a bad address.
    pub const BAD_SENDER: Reply = fixed!(501, [5, 1, 7], "Bad sender address syntax");
    /// RCPT TO with a bad address.
    pub const BAD_RECIPIENT: Reply = fixed!(501, [5, 1, 3], "Bad recipient address syntax");
    /// A malformed ESMTP parameter value.
    pub const BAD_PARAM: Reply = fixed!(501, [5, 5, 4], "Invalid command parameter");
    /// The same ESMTP parameter twice with different values.
    pub const DUPLICATE_PARAM: Reply = fixed!(501, [5, 5, 4], "Duplicate parameter");
    /// An ESMTP parameter not offered.
    pub const UNKNOWN_PARAM: Reply = fixed!(555, [5, 5, 4], "Unsupported command parameter");
    /// Arguments a verb does not take, or malformed ones.
    pub const SYNTAX: Reply = fixed!(501, [5, 5, 4], "Syntax error in arguments");
    /// HELO/EHLO with a bad name.
    pub const BAD_HELO: Reply = fixed!(501, [5, 5, 4], "Invalid domain name");
    /// A verb the session does not know.
    pub const UNKNOWN_COMMAND: Reply = fixed!(500, [5, 5, 1], "Command unrecognized");
    /// A known verb on a line that is not UTF-8.
    pub const NOT_UTF8: Reply = fixed!(501, [5, 5, 2], "Invalid UTF-8 in command");
    /// A command line over the line limit; its bytes were skipped.
    pub const LINE_TOO_LONG: Reply = fixed!(500, [5, 5, 2], "Line too long");
    /// XCLIENT from a peer not in `Config::xclient_trusted`.
    pub const XCLIENT_DENIED: Reply = fixed!(550, [5, 7, 0], "XCLIENT denied");
    /// A malformed XCLIENT attribute.
    pub const XCLIENT_SYNTAX: Reply = fixed!(501, [5, 5, 4], "Bad XCLIENT attribute");
}

/// Builds a default reply whose text names the server, such as the 421 replies.
pub(crate) fn named(code: u16, enhanced: Option<EnhancedCode>, host: &str, text: &str) -> Reply {
    let mut line = String::with_capacity(host.len() + 1 + text.len());
    line.push_str(host);
    if !text.is_empty() {
        line.push(' ');
        line.push_str(text);
    }
    Reply::built(code, enhanced, line)
}

/// The 421 replies the session synthesizes, each with the server's name in front.
pub(crate) mod closing {
    use super::{e, named};
    use crate::reply::Reply;

    /// A deadline passed.
    pub fn timeout(host: &str) -> Reply {
        named(421, e(4, 4, 2), host, "Error: timeout exceeded")
    }
    /// The data rate fell under `Config::min_data_rate`.
    pub fn too_slow(host: &str) -> Reply {
        named(421, e(4, 4, 2), host, "Error: minimum data rate not met")
    }
    /// The runtime asked for a shutdown.
    pub fn shutdown(host: &str) -> Reply {
        named(421, e(4, 3, 2), host, "Service shutting down")
    }
    /// The hard error limit was reached.
    pub fn too_many_errors(host: &str) -> Reply {
        named(421, e(4, 7, 0), host, "Error: too many errors")
    }
    /// A hook failed under `HookFailurePolicy::Disconnect` (KumoMTA's wording).
    pub fn technical_difficulties(host: &str) -> Reply {
        named(421, e(4, 3, 0), host, "technical difficulties")
    }
    /// KumoMTA's `FollowWith421`.
    pub fn after_previous_error(host: &str) -> Reply {
        named(421, None, host, "disconnecting due to previous error")
    }
    /// A BDAT line whose size cannot be read: the chunk cannot be skipped.
    pub fn bdat_lost(host: &str) -> Reply {
        named(
            421,
            e(4, 5, 0),
            host,
            "Cannot resynchronise after a bad BDAT",
        )
    }
    /// Postfix's `reject_unauth_pipelining`.
    pub fn unauth_pipelining(host: &str) -> Reply {
        named(
            554,
            e(5, 5, 0),
            host,
            "Error: improper use of SMTP command pipelining",
        )
    }
    /// A client that talked before the greeting, with `Config::reject_early_talkers`.
    pub fn early_talker(host: &str) -> Reply {
        named(554, e(5, 5, 1), host, "Error: talking before the greeting")
    }
}

/// What the session owes the runtime, in order.
///
/// Replies are coalesced into one write buffer; any other action flushes it into the queue
/// first, so the runtime sees everything in the order it was produced. The outbox also keeps
/// what the disconnect context needs of the replies: the last one and the error count.
#[derive(Default)]
pub(crate) struct Outbox {
    queue: VecDeque<Output>,
    /// Replies not yet queued: one `Write` when anything follows them or the runtime polls.
    /// Empty with a capacity: a `Write` buffer the runtime handed back
    /// (`Session::recycle_write`), which the next replies reuse.
    replies: Vec<u8>,
    /// Bytes in `queue` (writes and body pieces) plus `replies`.
    held: usize,
    last: Option<(Reply, ReplyState)>,
    errors: u32,
    /// ENHANCEDSTATUSCODES is advertised: default replies keep their enhanced codes.
    enhanced_codes: bool,
    /// `Close` was queued: nothing more is written.
    closed: bool,
    /// Buffers of hook calls the runtime gave back (`Session::recycle_hook`), for the
    /// session's next copies; like a recycled write buffer, kept until the outputs are
    /// drained.
    pub(crate) spares: Option<Box<Spares>>,
}

/// The largest `Write` buffer kept for reuse: replies to one round of pipelined commands
/// fit, and an idle session keeps little.
pub(crate) const MAX_RECYCLED_WRITE: usize = 4 << 10;

impl Outbox {
    pub(crate) fn new(enhanced_codes: bool) -> Outbox {
        Outbox {
            enhanced_codes,
            ..Outbox::default()
        }
    }

    /// Follows the extensions in force (an EHLO hook may change them).
    pub(crate) fn set_enhanced_codes(&mut self, on: bool) {
        self.enhanced_codes = on;
    }

    /// Writes a reply and returns the error count so far. 4xx and 5xx replies count toward
    /// the hard error limit, except a 421 (it closes anyway), a reply marked as the server's
    /// fault, and the replies to the connection itself, a timeout or a shutdown, which no
    /// client command caused.
    #[must_use]
    pub(crate) fn reply(&mut self, reply: Reply, state: ReplyState) -> u32 {
        let counts = reply.is_error()
            && !reply.is_server_fault()
            && reply.code() != 421
            && !matches!(
                state,
                ReplyState::Connect | ReplyState::Timeout | ReplyState::Shutdown
            );
        if counts && !self.closed {
            self.errors += 1;
        }
        self.reply_uncounted(reply, state);
        self.errors
    }

    /// The errors counted so far.
    pub(crate) fn errors(&self) -> u32 {
        self.errors
    }

    /// Counts one error for replies written uncounted; returns the count so far.
    #[must_use]
    pub(crate) fn count_error(&mut self) -> u32 {
        if !self.closed {
            self.errors += 1;
        }
        self.errors
    }

    /// Writes a reply that never counts toward the error limit, whatever its code: for
    /// refusals a well-behaved client cannot avoid (recipients pipelined past the limit).
    pub(crate) fn reply_uncounted(&mut self, reply: Reply, state: ReplyState) {
        if self.closed {
            return;
        }
        let reply = reply.for_extensions(self.enhanced_codes);
        if self.replies.capacity() == 0 {
            self.replies.reserve(256);
        }
        let before = self.replies.len();
        reply.write_to(&mut self.replies);
        self.held += self.replies.len() - before;
        self.last = Some((reply, state));
    }

    /// Queues a hook call after the replies written so far. The call is put together here,
    /// where it is written into the queue: a hook call is 160 bytes, and each move of it
    /// from one value to the next is a call to `memcpy`.
    #[inline(never)]
    pub(crate) fn hook_call(&mut self, id: HookId, hook: Hook) {
        self.flush();
        self.queue
            .push_back(Output::HookCall(HookCall { id, hook }));
    }

    /// Queues an action after the replies written so far.
    #[inline]
    pub(crate) fn push(&mut self, output: Output) {
        self.flush();
        if let Output::Write(bytes) | Output::BodyPiece(bytes) = &output {
            self.held += bytes.len();
        }
        self.queue.push_back(output);
    }

    /// Queues `Close` after the replies, or after nothing when the connection broke and
    /// `discard` is set; nothing is written after it.
    pub(crate) fn close(&mut self, discard_replies: bool) {
        if discard_replies {
            self.held -= self.replies.len();
            self.replies.clear();
        }
        self.push(Output::Close);
        self.closed = true;
        self.replies = Vec::new();
        self.spares = None;
    }

    fn flush(&mut self) {
        if !self.replies.is_empty() {
            let bytes = std::mem::take(&mut self.replies);
            self.queue.push_back(Output::Write(bytes));
        }
    }

    /// The next action: queued ones first, then the replies written since as one `Write`.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Output> {
        let output = match self.queue.pop_front() {
            Some(output) => output,
            None if !self.replies.is_empty() => Output::Write(std::mem::take(&mut self.replies)),
            None => {
                if self.queue.capacity() > 0 {
                    // Drained: an idle session keeps no queue.
                    self.queue = VecDeque::new();
                }
                if self.replies.capacity() > 0 {
                    // Nor a recycled write buffer: reuse pays within a drain, where a
                    // pipelining client's replies are split by hook calls.
                    self.replies = Vec::new();
                }
                self.spares = None;
                return None;
            }
        };
        if let Output::Write(bytes) | Output::BodyPiece(bytes) = &output {
            self.held -= bytes.len();
        }
        Some(output)
    }

    /// Keeps an emptied `Write` buffer for the next replies: at most one, of at most
    /// [`MAX_RECYCLED_WRITE`] bytes, until the outputs are drained; none once the session
    /// closed.
    pub(crate) fn recycle_write(&mut self, mut bytes: Vec<u8>) {
        if self.closed || self.replies.capacity() > 0 || bytes.capacity() > MAX_RECYCLED_WRITE {
            return;
        }
        bytes.clear();
        self.replies = bytes;
    }

    /// Bytes handed out but not yet polled: replies and body pieces.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The last reply written, for the disconnect context.
    pub(crate) fn last_reply(&self) -> Option<&(Reply, ReplyState)> {
        self.last.as_ref()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::replies::*;
    use super::*;

    fn drain(out: &mut Outbox) -> Vec<String> {
        std::iter::from_fn(|| out.pop())
            .map(|o| match o {
                Output::Write(b) => format!("write {}", String::from_utf8(b).unwrap().trim_end()),
                Output::Close => "close".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn replies_coalesce_until_another_action_follows() {
        let mut out = Outbox::new(true);
        out.reply_uncounted(OK, ReplyState::Noop);
        out.reply_uncounted(MAIL_OK, ReplyState::Mail);
        assert_eq!(out.held(), "250 2.0.0 OK\r\n250 2.1.0 Sender OK\r\n".len());
        out.close(false);
        out.reply_uncounted(BYE, ReplyState::Quit);
        assert_eq!(
            drain(&mut out),
            ["write 250 2.0.0 OK\r\n250 2.1.0 Sender OK", "close"]
        );
        assert_eq!(out.held(), 0);
        assert_eq!(out.last_reply().unwrap().1, ReplyState::Mail);
    }

    #[test]
    fn only_error_replies_count() {
        let mut out = Outbox::new(true);
        assert_eq!(out.reply(OK, ReplyState::Noop), 0);
        assert_eq!(out.reply(SYNTAX, ReplyState::Noop), 1);
        out.reply_uncounted(TOO_MANY_RCPTS, ReplyState::Rcpt);
        assert_eq!(out.reply(closing::timeout("mx"), ReplyState::Timeout), 1);
        assert_eq!(
            out.reply(Reply::new(421, "bye").unwrap(), ReplyState::Mail),
            1
        );
        assert_eq!(
            out.reply(Reply::new(554, "no").unwrap(), ReplyState::Connect),
            1
        );
        assert_eq!(out.reply(UNKNOWN_COMMAND, ReplyState::Unknown), 2);
    }

    #[test]
    fn defaults_lose_enhanced_codes_when_not_advertised_but_hook_replies_do_not() {
        let mut out = Outbox::new(false);
        out.reply_uncounted(OK, ReplyState::Noop);
        out.reply_uncounted(Reply::new(250, "2.1.0 as given").unwrap(), ReplyState::Mail);
        out.reply_uncounted(closing::shutdown("mx"), ReplyState::Shutdown);
        assert_eq!(
            drain(&mut out),
            ["write 250 OK\r\n250 2.1.0 as given\r\n421 mx Service shutting down"]
        );
    }

    #[test]
    fn a_broken_connection_discards_unsent_replies() {
        let mut out = Outbox::new(true);
        out.reply_uncounted(OK, ReplyState::Noop);
        out.close(true);
        assert_eq!(drain(&mut out), ["close"]);
        assert_eq!(out.held(), 0);
    }
}
