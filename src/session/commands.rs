//! The command transitions: one client line at a time, HELO to XCLIENT, and AUTH.

use crate::address::{ForwardPath, ReversePath};
use crate::body::BodySink;
use crate::command::{parse_command, parse_command_into, Command, CommandError, Verb};
use crate::config::StartTlsInjection;
use crate::context::{CloseSide, HeloInfo, HeloVerb, ReplyState};
use crate::data::BareLineEndings;
use crate::hooks::{AbortReason, Envelope, Hook, Recipient};
use crate::line::{LineEnding, LineKind, LineReader};
use crate::offer::Offer;
use crate::outbox::{closing, replies::*, Output};
use crate::params::{parse_mail_params, parse_rcpt_params, MailParams, ParamError};
use crate::pending::Stage;
use crate::reply::Reply;
use crate::sasl::{self, AuthStep, Refusal, SaslError};
use crate::spare;
use crate::xclient;

use super::{Phase, Session, Transaction};

impl Session {
    /// One line from the client: a command, or a response in an AUTH exchange.
    pub(super) fn line(&mut self, line: &[u8], ending: LineEnding, pipelined: bool) {
        if ending == LineEnding::BareLf && self.config.bare_line_endings == BareLineEndings::Reject
        {
            return self.bare_lf_line(line);
        }
        if let Phase::Auth(..) = self.phase {
            let commands = Phase::Command(LineReader::commands(self.line_limits));
            let Phase::Auth(exchange, _) = std::mem::replace(&mut self.phase, commands) else {
                unreachable!("the phase was just matched");
            };
            return self.auth_step(sasl::respond(exchange, line));
        }
        match parse_command_into(line, self.out.spares.as_deref_mut().map(|s| &mut s.strings)) {
            Ok(command) => self.command(command, pipelined),
            Err(error) => self.command_error(error),
        }
    }

    /// A line ended by a bare LF under [`BareLineEndings::Reject`]: refused, not executed.
    /// A BDAT chunk still follows its command, so its bytes are skipped, never read as
    /// commands.
    #[cold]
    fn bare_lf_line(&mut self, line: &[u8]) {
        if let Phase::Auth(..) = self.phase {
            self.phase = Phase::Command(LineReader::commands(self.line_limits));
            return self.reply(BARE_LF_COMMAND, ReplyState::Auth);
        }
        match parse_command(line) {
            Ok(Command::Bdat { size, last }) => self.skip_chunk(size, last, BARE_LF_COMMAND),
            Ok(command) => self.reply(BARE_LF_COMMAND, ReplyState::from(command.verb())),
            Err(_) => self.reply(BARE_LF_COMMAND, ReplyState::Unknown),
        }
    }

    #[cold]
    pub(super) fn line_too_long(&mut self, kind: LineKind) {
        match kind {
            LineKind::Auth => {
                self.phase = Phase::Command(LineReader::commands(self.line_limits));
                self.reply(AUTH_LINE_TOO_LONG, ReplyState::Auth);
            }
            LineKind::Command => self.reply(LINE_TOO_LONG, ReplyState::Unknown),
        }
    }

    #[cold]
    fn command_error(&mut self, error: CommandError) {
        match error {
            CommandError::Unknown => self.reply(UNKNOWN_COMMAND, ReplyState::Unknown),
            CommandError::NotUtf8(verb) => self.reply(NOT_UTF8, ReplyState::from(verb)),
            CommandError::Syntax(Verb::Bdat) => {
                // The chunk's size is unknown, so its bytes cannot be skipped; reading them as
                // commands would let a client smuggle them. The stream is lost: close.
                self.reply(SYNTAX, ReplyState::Bdat);
                self.reply(closing::bdat_lost(&self.config.hostname), ReplyState::Bdat);
                self.close(CloseSide::Local);
            }
            CommandError::Syntax(verb @ (Verb::Helo | Verb::Ehlo)) => {
                self.reply(BAD_HELO, ReplyState::from(verb))
            }
            CommandError::Syntax(verb) => self.reply(SYNTAX, ReplyState::from(verb)),
            CommandError::Address(Verb::Mail, _) => self.reply(BAD_SENDER, ReplyState::Mail),
            CommandError::Address(verb, _) => self.reply(BAD_RECIPIENT, ReplyState::from(verb)),
        }
    }

    /// Runs a parsed command; `pipelined` tells whether more input followed it.
    fn command(&mut self, command: Command<'_>, pipelined: bool) {
        let verb = command.verb();
        if pipelined && self.config.reject_unauth_pipelining && self.pipelining_forbidden(verb) {
            return self.unauth_pipelining(verb);
        }
        if self.config.require_tls && self.tls.is_none() && !allowed_before_tls(verb) {
            if let Command::Bdat { size, last } = command {
                return self.skip_chunk(size, last, TLS_REQUIRED);
            }
            return self.refuse(TLS_REQUIRED, ReplyState::from(verb));
        }
        match command {
            // LMTP greets with LHLO only, SMTP never does (RFC 2033 section 4.1).
            Command::Helo(_) | Command::Ehlo(_) if self.config.lmtp => {
                self.refuse(UNKNOWN_COMMAND, ReplyState::from(verb))
            }
            Command::Lhlo(_) if !self.config.lmtp => {
                self.refuse(UNKNOWN_COMMAND, ReplyState::Unknown)
            }
            Command::Helo(host) => self.cmd_helo(HeloVerb::Helo, host),
            Command::Ehlo(host) => self.cmd_helo(HeloVerb::Ehlo, host),
            Command::Lhlo(host) => self.cmd_helo(HeloVerb::Lhlo, host),
            Command::Mail { path, params } => self.cmd_mail(path, params),
            Command::Rcpt { path, params } => self.cmd_rcpt(path, params),
            Command::Data => self.cmd_data(),
            Command::Bdat { size, last } => self.cmd_bdat(size, last),
            Command::Rset => {
                self.end_transaction(AbortReason::Reset);
                self.reply(OK, ReplyState::Rset)
            }
            Command::Noop => self.reply(OK, ReplyState::Noop),
            Command::Quit => self.cmd_quit(),
            Command::Vrfy(argument) => self.cmd_verify(false, argument),
            Command::Expn(argument) => self.cmd_verify(true, argument),
            Command::Help(_) => self.cmd_help(),
            Command::StartTls => self.cmd_starttls(pipelined),
            Command::Auth { mechanism, initial } => self.cmd_auth(mechanism, initial),
            Command::Xclient(args) => self.cmd_xclient(args),
        }
    }

    /// A refusal of a command: kept out of line, with the other rare paths, so the code run
    /// for each accepted MAIL, RCPT and DATA stays small enough for the instruction cache.
    #[cold]
    #[inline(never)]
    pub(super) fn refuse(&mut self, reply: Reply, state: ReplyState) {
        self.reply(reply, state)
    }

    #[cold]
    fn unauth_pipelining(&mut self, verb: Verb) {
        let reply = closing::unauth_pipelining(&self.config.hostname);
        self.reply(reply, ReplyState::from(verb));
        self.close(CloseSide::Local);
    }

    #[cold]
    fn cmd_quit(&mut self) {
        self.reply(BYE, ReplyState::Quit);
        self.close(CloseSide::Local);
    }

    #[cold]
    fn cmd_help(&mut self) {
        let help = self.offer().help_reply();
        self.reply(help, ReplyState::Help)
    }

    /// RFC 2920: EHLO, HELO and DATA must end a group of pipelined commands, and a client
    /// not told about PIPELINING must not pipeline at all.
    fn pipelining_forbidden(&self, verb: Verb) -> bool {
        let advertised =
            self.ext.pipelining && self.helo.as_ref().is_some_and(|h| h.verb.is_extended());
        !advertised || matches!(verb, Verb::Helo | Verb::Ehlo | Verb::Lhlo | Verb::Data)
    }

    #[inline(never)]
    fn cmd_helo(&mut self, verb: HeloVerb, host: &str) {
        // HELO/EHLO reset any transaction, as RSET does (RFC 5321 4.1.4).
        self.end_transaction(AbortReason::Reset);
        let info = HeloInfo {
            verb,
            host: host.to_owned(),
        };
        if self.config.hooks.helo {
            let hook = Hook::Helo {
                verb,
                host: info.host.clone(),
            };
            self.call_hook(Stage::Helo(info), hook);
        } else {
            self.helo_accepted(info, None);
        }
    }

    #[inline(never)]
    pub(super) fn helo_accepted(&mut self, info: HeloInfo, custom: Option<Reply>) {
        let reply = custom.unwrap_or_else(|| match info.verb {
            HeloVerb::Helo => Reply::built(250, None, self.config.hostname.clone()),
            HeloVerb::Ehlo | HeloVerb::Lhlo => self.offer().ehlo_reply(&info.host),
        });
        let state = ReplyState::from(info.verb);
        self.helo = Some(info);
        self.reply(reply, state);
    }

    /// What this session offers the client now.
    fn offer(&self) -> Offer<'_> {
        Offer {
            config: &self.config,
            extensions: self.ext,
            tls_active: self.tls.is_some(),
            auth_offered: self.auth_offered(),
            authenticated: self.auth.is_some(),
            xclient: self.xclient_allowed(),
        }
    }

    #[cold]
    fn param_error(&mut self, error: ParamError, state: ReplyState) {
        let reply = match error {
            ParamError::Unknown => UNKNOWN_PARAM,
            ParamError::SizeExceeded => TOO_BIG,
            ParamError::Syntax => BAD_PARAM,
            ParamError::Duplicate => DUPLICATE_PARAM,
        };
        self.reply(reply, state)
    }

    fn cmd_mail(&mut self, path: ReversePath, raw_params: &str) {
        let state = ReplyState::Mail;
        if self.config.require_helo && self.helo.is_none() {
            return self.refuse(NEED_HELO, state);
        }
        if self.tx.is_some() {
            return self.refuse(NESTED_MAIL, state);
        }
        if self.config.require_auth && self.auth.is_none() {
            return self.refuse(AUTH_REQUIRED, state);
        }
        let support = self.offer().params();
        let params = match parse_mail_params(raw_params, support, self.config.max_message_size) {
            Ok(params) => params,
            Err(error) => return self.param_error(error, state),
        };
        if !path.is_ascii() && !params.smtputf8 {
            return self.refuse(UTF8_NEEDS_SMTPUTF8, state);
        }
        if self.config.hooks.mail_from {
            let hook = Hook::MailFrom {
                path: spare::reverse_path(&mut self.out.spares, &path),
                params: params.clone(),
            };
            let tx = self.transaction(path, params);
            self.call_hook(Stage::Mail(tx), hook);
        } else {
            let tx = self.transaction(path, params);
            self.mail_accepted(tx, None);
        }
    }

    /// The transaction a MAIL command opens once it is accepted.
    fn transaction(&mut self, path: ReversePath, params: MailParams) -> Box<Transaction> {
        Box::new(Transaction {
            envelope: Envelope {
                mail_from: path,
                mail_params: params,
                recipients: self
                    .out
                    .spares
                    .as_mut()
                    .map_or_else(Vec::new, |spares| spares.recipients()),
            },
            asked: None,
            sink: BodySink::Discard,
            chunks: None,
        })
    }

    pub(super) fn mail_accepted(&mut self, tx: Box<Transaction>, custom: Option<Reply>) {
        self.tx = Some(tx);
        self.reply(custom.unwrap_or(MAIL_OK), ReplyState::Mail);
    }

    fn cmd_rcpt(&mut self, path: ForwardPath, raw_params: &str) {
        let state = ReplyState::Rcpt;
        let Some(tx) = &self.tx else {
            return self.refuse(NEED_MAIL, state);
        };
        if tx.envelope.recipients.len() >= self.config.max_recipients {
            return self.too_many_recipients();
        }
        let utf8_allowed = tx.envelope.mail_params.smtputf8;
        let params = match parse_rcpt_params(raw_params, self.offer().params()) {
            Ok(params) => params,
            Err(error) => return self.param_error(error, state),
        };
        if !path.is_ascii() && !utf8_allowed {
            return self.refuse(UTF8_NEEDS_SMTPUTF8, state);
        }
        if self.config.hooks.rcpt_to {
            let hook = Hook::RcptTo {
                path: spare::forward_path(&mut self.out.spares, &path),
                params: params.clone(),
            };
            if let Some(tx) = self.tx.as_deref_mut() {
                tx.asked = Some(Recipient { path, params });
            }
            self.call_hook(Stage::Rcpt, hook);
        } else {
            self.add_recipient(Recipient { path, params });
            self.reply(RCPT_OK, ReplyState::Rcpt);
        }
    }

    #[cold]
    fn too_many_recipients(&mut self) {
        let state = ReplyState::Rcpt;
        // Clients that pipeline past the limit are common and harmless up to a point
        // (Postfix's smtpd_recipient_overshoot_limit); a flood beyond it counts as errors.
        self.overshoot = self.overshoot.saturating_add(1);
        if self.overshoot <= self.config.recipient_overshoot_limit {
            return self.out.reply_uncounted(TOO_MANY_RCPTS, state);
        }
        self.reply(TOO_MANY_RCPTS, state)
    }

    /// The RCPT hook accepted the recipient that waited for it.
    pub(super) fn rcpt_accepted(&mut self, custom: Option<Reply>) {
        let Some(tx) = self.tx.as_deref_mut() else {
            unreachable!("nothing ends a transaction while its RCPT hook is pending");
        };
        tx.envelope.recipients.extend(tx.asked.take());
        self.reply(custom.unwrap_or(RCPT_OK), ReplyState::Rcpt);
    }

    fn add_recipient(&mut self, recipient: Recipient) {
        let Some(tx) = &mut self.tx else {
            unreachable!("a recipient is added inside a transaction");
        };
        tx.envelope.recipients.push(recipient);
    }

    #[cold]
    fn cmd_starttls(&mut self, pipelined: bool) {
        let state = ReplyState::StartTls;
        if self.tls.is_some() {
            return self.reply(TLS_ACTIVE, state);
        }
        if !self.ext.starttls {
            return self.reply(TLS_UNAVAILABLE, state);
        }
        self.reply(TLS_GO, state);
        if self.is_closed() {
            return;
        }
        self.phase = Phase::TlsHandshake {
            implicit: false,
            handshake_bytes: Vec::new(),
        };
        // Bytes after STARTTLS in the same read are never executed (CVE-2011-0411); by
        // default they are dropped, on request the connection closes.
        if pipelined && self.config.starttls_injection == StartTlsInjection::Close {
            return self.close(CloseSide::Local);
        }
        self.out.push(Output::StartTls);
    }

    fn auth_offered(&self) -> bool {
        self.ext.auth && (self.tls.is_some() || self.config.auth_without_tls)
    }

    #[cold]
    fn cmd_auth(&mut self, mechanism: &str, initial: Option<&str>) {
        let state = ReplyState::Auth;
        if !self.ext.auth {
            return self.reply(NOT_IMPLEMENTED, state);
        }
        if !self.auth_offered() {
            return self.reply(AUTH_NEEDS_TLS, state);
        }
        if self.auth.is_some() {
            return self.reply(AUTH_ALREADY, state);
        }
        // AUTH is an extension the client learns of from EHLO; after STARTTLS it must ask
        // again (RFC 3207 section 4.2, RFC 4954 section 4).
        if !self.helo.as_ref().is_some_and(|h| h.verb.is_extended()) {
            return self.reply(NEED_EHLO, state);
        }
        if self.tx.is_some() {
            return self.reply(AUTH_IN_TRANSACTION, state);
        }
        let mechanism = mechanism.to_ascii_uppercase();
        if !self.config.auth_mechanisms.contains(&mechanism) {
            return self.reply(AUTH_UNKNOWN_MECHANISM, state);
        }
        let step = sasl::start(mechanism, initial);
        self.auth_step(step);
    }

    /// Carries out the next step of an AUTH exchange.
    #[cold]
    pub(super) fn auth_step(&mut self, step: AuthStep) {
        match step {
            AuthStep::Prompt(next, challenge) => {
                self.reply(Reply::built(334, None, challenge), ReplyState::Auth);
                self.phase = Phase::Auth(next, LineReader::auth_exchange(self.line_limits));
            }
            AuthStep::Verify(verify) if self.config.hooks.auth => {
                let stage = Stage::Auth {
                    mechanism: verify.request.mechanism().to_owned(),
                    username: verify.username,
                    step: verify.step,
                };
                self.call_hook(stage, Hook::Auth(verify.request));
            }
            // Nobody can verify credentials: fail closed.
            AuthStep::Verify(_) => self.reply(AUTH_FAILED, ReplyState::Auth),
            AuthStep::Refuse(refusal) => {
                let reply = match refusal {
                    Refusal::Cancelled => AUTH_CANCELLED,
                    Refusal::Bad(SaslError::BadBase64) => AUTH_BAD_BASE64,
                    Refusal::Bad(SaslError::Malformed) => AUTH_MALFORMED,
                };
                self.reply(reply, ReplyState::Auth);
            }
        }
    }

    /// VRFY and EXPN: refused when switched off, else the VRFY hook's, or 252.
    #[cold]
    fn cmd_verify(&mut self, expand: bool, argument: &str) {
        let (enabled, state) = if expand {
            (self.config.expn, ReplyState::Expn)
        } else {
            (self.config.vrfy, ReplyState::Vrfy)
        };
        if !enabled {
            return self.reply(NOT_IMPLEMENTED, state);
        }
        if !self.config.hooks.vrfy {
            return self.reply(VRFY_OK, state);
        }
        let argument = argument.to_owned();
        let hook = if expand {
            Hook::Expn(argument)
        } else {
            Hook::Vrfy(argument)
        };
        self.call_hook(Stage::Verify { expand }, hook);
    }

    fn xclient_allowed(&self) -> bool {
        self.info
            .remote_ip
            .is_some_and(|ip| self.config.xclient_trusted.contains(&ip))
    }

    #[cold]
    fn cmd_xclient(&mut self, args: &str) {
        let state = ReplyState::Xclient;
        if !self.xclient_allowed() {
            return self.reply(XCLIENT_DENIED, state);
        }
        if self.tx.is_some() {
            return self.refuse(NESTED_MAIL, state);
        }
        let Some(attrs) = xclient::parse(args) else {
            return self.reply(XCLIENT_SYNTAX, state);
        };
        attrs.apply(&mut self.info, &mut self.helo, &mut self.auth);
        // Postfix answers XCLIENT with a fresh greeting: the client starts over with EHLO.
        let greeting = self.greeting();
        self.reply(greeting, state);
    }
}

/// The commands allowed before TLS when [`Config::require_tls`] is set.
fn allowed_before_tls(verb: Verb) -> bool {
    matches!(
        verb,
        Verb::Noop | Verb::Helo | Verb::Ehlo | Verb::Lhlo | Verb::StartTls | Verb::Quit
    )
}
