//! One SMTP command line to a [`Command`] (RFC 5321 section 4.1.1 and the
//! extensions' verbs).
//!
//! Zero-copy: arguments are slices of the line. Only the mailbox of MAIL and
//! RCPT is owned, because it is stored in unquoted form.

use std::fmt;

use crate::address::{
    parse_forward_path_str, parse_reverse_path_str, plain_path, AddressError, ForwardPath,
    ReversePath,
};
use crate::strings::Strings;

/// RFC 4422 section 3.1: SASL mechanism names are 1 to 20 characters.
const MAX_MECHANISM: usize = 20;
/// The longest verb, STARTTLS.
const MAX_VERB: usize = 8;
/// Enough for every u64.
const MAX_CHUNK_DIGITS: usize = 20;

/// A command verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verb {
    /// `HELO`
    Helo,
    /// `EHLO`
    Ehlo,
    /// `LHLO` (RFC 2033, LMTP)
    Lhlo,
    /// `MAIL`
    Mail,
    /// `RCPT`
    Rcpt,
    /// `DATA`
    Data,
    /// `BDAT` (RFC 3030)
    Bdat,
    /// `RSET`
    Rset,
    /// `NOOP`
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY`
    Vrfy,
    /// `EXPN`
    Expn,
    /// `HELP`
    Help,
    /// `STARTTLS` (RFC 3207)
    StartTls,
    /// `AUTH` (RFC 4954)
    Auth,
    /// `XCLIENT` (Postfix)
    Xclient,
}

impl Verb {
    /// The verb in upper case, as it appears on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Helo => "HELO",
            Verb::Ehlo => "EHLO",
            Verb::Lhlo => "LHLO",
            Verb::Mail => "MAIL",
            Verb::Rcpt => "RCPT",
            Verb::Data => "DATA",
            Verb::Bdat => "BDAT",
            Verb::Rset => "RSET",
            Verb::Noop => "NOOP",
            Verb::Quit => "QUIT",
            Verb::Vrfy => "VRFY",
            Verb::Expn => "EXPN",
            Verb::Help => "HELP",
            Verb::StartTls => "STARTTLS",
            Verb::Auth => "AUTH",
            Verb::Xclient => "XCLIENT",
        }
    }

    /// Case-insensitive match of a whole word, without allocating.
    fn from_word(word: &[u8]) -> Option<Verb> {
        let mut buf = [0u8; MAX_VERB];
        let upper = buf.get_mut(..word.len())?;
        for (dst, src) in upper.iter_mut().zip(word) {
            *dst = src.to_ascii_uppercase();
        }
        Some(match &*upper {
            b"HELO" => Verb::Helo,
            b"EHLO" => Verb::Ehlo,
            b"LHLO" => Verb::Lhlo,
            b"MAIL" => Verb::Mail,
            b"RCPT" => Verb::Rcpt,
            b"DATA" => Verb::Data,
            b"BDAT" => Verb::Bdat,
            b"RSET" => Verb::Rset,
            b"NOOP" => Verb::Noop,
            b"QUIT" => Verb::Quit,
            b"VRFY" => Verb::Vrfy,
            b"EXPN" => Verb::Expn,
            b"HELP" => Verb::Help,
            b"STARTTLS" => Verb::StartTls,
            b"AUTH" => Verb::Auth,
            b"XCLIENT" => Verb::Xclient,
            _ => return None,
        })
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed command line. Borrowed strings are slices of the line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command<'a> {
    /// `HELO host`; the host passed [`crate::address::is_valid_helo_host`].
    Helo(&'a str),
    /// `EHLO host`; the host passed [`crate::address::is_valid_helo_host`].
    Ehlo(&'a str),
    /// `LHLO host` (RFC 2033); the host passed [`crate::address::is_valid_helo_host`].
    Lhlo(&'a str),
    /// `MAIL FROM:<path> params`.
    Mail {
        /// The sender.
        path: ReversePath,
        /// Everything after the `>`, unparsed, for
        /// [`crate::params::parse_mail_params`]. Empty or starting with a space.
        params: &'a str,
    },
    /// `RCPT TO:<path> params`.
    Rcpt {
        /// The recipient.
        path: ForwardPath,
        /// Everything after the `>`, unparsed, for
        /// [`crate::params::parse_rcpt_params`]. Empty or starting with a space.
        params: &'a str,
    },
    /// `DATA`
    Data,
    /// `BDAT size [LAST]` (RFC 3030); `size` octets of message follow the line.
    Bdat {
        /// The chunk size in octets.
        size: u64,
        /// `LAST` was given: this chunk ends the message.
        last: bool,
    },
    /// `RSET`
    Rset,
    /// `NOOP [string]`; the string has no meaning and is dropped.
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY string`
    Vrfy(&'a str),
    /// `EXPN string`
    Expn(&'a str),
    /// `HELP [string]`; empty when no argument was given.
    Help(&'a str),
    /// `STARTTLS`
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism name, as sent (case preserved).
        mechanism: &'a str,
        /// The initial response, still base64-encoded; `=` stands for an
        /// empty response.
        initial: Option<&'a str>,
    },
    /// `XCLIENT attributes`, with the attributes unparsed.
    Xclient(&'a str),
}

impl Command<'_> {
    /// The verb of this command.
    #[must_use]
    pub fn verb(&self) -> Verb {
        match self {
            Command::Helo(_) => Verb::Helo,
            Command::Ehlo(_) => Verb::Ehlo,
            Command::Lhlo(_) => Verb::Lhlo,
            Command::Mail { .. } => Verb::Mail,
            Command::Rcpt { .. } => Verb::Rcpt,
            Command::Data => Verb::Data,
            Command::Bdat { .. } => Verb::Bdat,
            Command::Rset => Verb::Rset,
            Command::Noop => Verb::Noop,
            Command::Quit => Verb::Quit,
            Command::Vrfy(_) => Verb::Vrfy,
            Command::Expn(_) => Verb::Expn,
            Command::Help(_) => Verb::Help,
            Command::StartTls => Verb::StartTls,
            Command::Auth { .. } => Verb::Auth,
            Command::Xclient(_) => Verb::Xclient,
        }
    }
}

/// Why a command line was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// The first word is not a known verb.
    Unknown,
    /// A known verb with missing, extra or malformed arguments.
    Syntax(Verb),
    /// The path of MAIL or RCPT is malformed.
    Address(Verb, AddressError),
    /// A known verb on a line that is not valid UTF-8 (an unknown first word
    /// is [`CommandError::Unknown`]).
    NotUtf8(Verb),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown => f.write_str("unrecognised command"),
            CommandError::Syntax(verb) => write!(f, "syntax error in {verb} arguments"),
            CommandError::Address(verb, error) => write!(f, "{verb}: {error}"),
            CommandError::NotUtf8(verb) => write!(f, "{verb} line is not valid UTF-8"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Parses one command line, given without its line ending.
///
/// One trailing CR and trailing spaces and tabs are ignored, so a line split
/// at LF alone, or padded by a sloppy client, still parses.
///
/// # Errors
///
/// [`CommandError::Unknown`] when the first word is not a known verb (checked
/// first, so binary garbage is simply an unknown command);
/// [`CommandError::NotUtf8`] when the verb is known but the line is not
/// UTF-8; [`CommandError::Address`] for a malformed MAIL/RCPT path; and
/// [`CommandError::Syntax`] for any other argument problem.
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, CommandError> {
    parse_command_into(line, None)
}

/// [`parse_command`], with the strings of a MAIL or RCPT path taken from `strings` when
/// there are any.
pub(crate) fn parse_command_into<'a>(
    line: &'a [u8],
    mut strings: Option<&mut Strings>,
) -> Result<Command<'a>, CommandError> {
    let line = trim_line_end(line);
    // A verb is at most MAX_VERB bytes: a longer first word is unknown however long it is.
    let word_end = line
        .iter()
        .take(MAX_VERB + 1)
        .position(|&b| b == b' ')
        .unwrap_or(line.len().min(MAX_VERB + 1));
    let word = line.get(..word_end).unwrap_or_default();
    let verb = Verb::from_word(word).ok_or(CommandError::Unknown)?;
    // The verb is followed by end of line or a space; skip that one space. The verb is
    // ASCII, so the line is UTF-8 exactly when its arguments are.
    let args = line.get(word_end + 1..).unwrap_or_default();
    if let Verb::Mail | Verb::Rcpt = verb {
        if let Some(command) = plain_path_command(verb, args, strings.as_deref_mut()) {
            return Ok(command);
        }
    }
    parse_arguments(verb, args, strings)
}

/// The command `verb` with its arguments `args`.
fn parse_arguments<'a>(
    verb: Verb,
    args: &'a [u8],
    strings: Option<&mut Strings>,
) -> Result<Command<'a>, CommandError> {
    let args = match args {
        [] => "",
        _ => std::str::from_utf8(args).map_err(|_| CommandError::NotUtf8(verb))?,
    };
    let syntax = CommandError::Syntax(verb);
    match verb {
        Verb::Helo | Verb::Ehlo | Verb::Lhlo => greeting(verb, args).ok_or(syntax),
        Verb::Mail => {
            let after = path_argument(args, "FROM:").ok_or(syntax.clone())?;
            let (path, used) = parse_reverse_path_str(after, strings)
                .map_err(|e| CommandError::Address(verb, e))?;
            let params = path_params(after, used).ok_or(syntax)?;
            Ok(Command::Mail { path, params })
        }
        Verb::Rcpt => {
            let after = path_argument(args, "TO:").ok_or(syntax.clone())?;
            let (path, used) = parse_forward_path_str(after, strings)
                .map_err(|e| CommandError::Address(verb, e))?;
            let params = path_params(after, used).ok_or(syntax)?;
            Ok(Command::Rcpt { path, params })
        }
        Verb::Data if args.is_empty() => Ok(Command::Data),
        Verb::Rset if args.is_empty() => Ok(Command::Rset),
        Verb::Quit if args.is_empty() => Ok(Command::Quit),
        Verb::StartTls if args.is_empty() => Ok(Command::StartTls),
        Verb::Data | Verb::Rset | Verb::Quit | Verb::StartTls => Err(syntax),
        Verb::Noop => Ok(Command::Noop),
        Verb::Help => Ok(Command::Help(args.trim_start_matches(' '))),
        Verb::Vrfy | Verb::Expn | Verb::Xclient => {
            let args = args.trim_start_matches(' ');
            match verb {
                _ if args.is_empty() => Err(syntax),
                Verb::Vrfy => Ok(Command::Vrfy(args)),
                Verb::Expn => Ok(Command::Expn(args)),
                _ => Ok(Command::Xclient(args)),
            }
        }
        Verb::Bdat => bdat(args).ok_or(syntax),
        Verb::Auth => auth(args).ok_or(syntax),
    }
}

/// MAIL or RCPT with a plain path (see [`crate::address::plain_path`]) and its parameters:
/// the keyword, the path and the parameters each taken as what they are, without the
/// general parse's passes over the whole line.
/// `None` for anything else, which the general parse takes (and says what is wrong with).
fn plain_path_command<'a>(
    verb: Verb,
    args: &'a [u8],
    strings: Option<&mut Strings>,
) -> Option<Command<'a>> {
    let keyword: &[u8] = if verb == Verb::Mail { b"FROM:" } else { b"TO:" };
    let after = keyword_argument(args, keyword)?;
    let (mailbox, used) = plain_path(after, strings)?;
    let params = std::str::from_utf8(after.get(used..)?).ok()?;
    if !(params.is_empty() || params.starts_with(' ')) {
        return None;
    }
    Some(if verb == Verb::Mail {
        Command::Mail {
            path: ReversePath::Mailbox(mailbox),
            params,
        }
    } else {
        Command::Rcpt {
            path: ForwardPath::Mailbox(mailbox),
            params,
        }
    })
}

/// What follows `keyword` (`FROM:`, `TO:`) at the start of `args`, spaces around it
/// skipped.
fn keyword_argument<'a>(args: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let args = skip_space_bytes(args);
    let head = args.get(..keyword.len())?;
    // `keyword` is upper case: a letter matches either case, anything else itself.
    let matches = head.iter().zip(keyword).all(|(&b, &k)| {
        if k.is_ascii_alphabetic() {
            b & !0x20 == k
        } else {
            b == k
        }
    });
    matches.then(|| skip_space_bytes(&args[keyword.len()..]))
}

/// `bytes` without its leading spaces. Byte by byte: every MAIL and RCPT line goes through
/// here, usually with no space to skip.
fn skip_space_bytes(bytes: &[u8]) -> &[u8] {
    let spaces = bytes.iter().take_while(|&&b| b == b' ').count();
    &bytes[spaces..]
}

/// `HELO`, `EHLO` or `LHLO` and the client's name. RFC 5321 allows one argument, but
/// clients that append more words are common and harmless; the first one is the host.
fn greeting(verb: Verb, args: &str) -> Option<Command<'_>> {
    let host = args
        .trim_start_matches(' ')
        .split(' ')
        .next()
        .unwrap_or_default();
    if !crate::address::is_valid_helo_host(host) {
        return None;
    }
    Some(match verb {
        Verb::Helo => Command::Helo(host),
        Verb::Ehlo => Command::Ehlo(host),
        _ => Command::Lhlo(host),
    })
}

/// `BDAT size [LAST]`.
fn bdat(args: &str) -> Option<Command<'_>> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let size = words.next().and_then(parse_chunk_size)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return None,
    };
    words
        .next()
        .is_none()
        .then_some(Command::Bdat { size, last })
}

/// `AUTH mechanism [initial-response]`.
fn auth(args: &str) -> Option<Command<'_>> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let mechanism = words.next().filter(|m| is_mechanism(m))?;
    let initial = words.next();
    words
        .next()
        .is_none()
        .then_some(Command::Auth { mechanism, initial })
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let keep = line
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    line.get(..keep).unwrap_or_default()
}

/// Strips `FROM:` / `TO:` (any case; `keyword` is given in upper case) and the spaces
/// around it. The spaces before `<` are not in RFC 5321 but many clients send them.
fn path_argument<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let after = keyword_argument(args.as_bytes(), keyword.as_bytes())?;
    // The keyword and the spaces are ASCII, so what follows starts at a character boundary.
    args.get(args.len() - after.len()..)
}

/// What follows the path must be separated from it by a space.
fn path_params(after: &str, used: usize) -> Option<&str> {
    let params = after.get(used..)?;
    (params.is_empty() || params.starts_with(' ')).then_some(params)
}

fn parse_chunk_size(word: &str) -> Option<u64> {
    if word.is_empty() || word.len() > MAX_CHUNK_DIGITS || !word.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    word.bytes().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn is_mechanism(word: &str) -> bool {
    (1..=MAX_MECHANISM).contains(&word.len())
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Domain, Mailbox};
    use proptest::prelude::*;

    fn parse(line: &str) -> Result<Command<'_>, CommandError> {
        parse_command(line.as_bytes())
    }

    fn mailbox(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local_part: local.into(),
            domain: Domain::Name(domain.into()),
        }
    }

    #[test]
    fn verbs_case_insensitive_and_as_str() {
        for (line, verb) in [
            ("helo x", Verb::Helo),
            ("EhLo x", Verb::Ehlo),
            ("mail from:<>", Verb::Mail),
            ("Rcpt To:<postmaster>", Verb::Rcpt),
            ("data", Verb::Data),
            ("bdat 1", Verb::Bdat),
            ("rset", Verb::Rset),
            ("noop", Verb::Noop),
            ("quit", Verb::Quit),
            ("vrfy x", Verb::Vrfy),
            ("expn x", Verb::Expn),
            ("help", Verb::Help),
            ("starttls", Verb::StartTls),
            ("auth plain", Verb::Auth),
            ("xclient NAME=x", Verb::Xclient),
        ] {
            let command = parse(line).unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
            assert_eq!(command.verb(), verb);
            assert!(line.to_ascii_uppercase().starts_with(verb.as_str()));
            assert_eq!(verb.to_string(), verb.as_str());
        }
    }

    #[test]
    fn unknown_verbs() {
        for line in [
            "",
            " ",
            "HELOX x",
            "HEL",
            "MAILFROM:<>",
            "XYZZY",
            "STARTTLSX",
            " HELO x",
            "\tQUIT",
            "QUIT\tx",
            "DATA\0",
            "HELO\u{e9}",
            "QUITQUITQUIT",
        ] {
            assert_eq!(parse(line), Err(CommandError::Unknown), "{line:?}");
        }
    }

    #[test]
    fn line_endings_and_trailing_blanks() {
        for line in ["QUIT", "QUIT\r", "QUIT  ", "QUIT \t \r", "quit\t"] {
            assert_eq!(parse(line), Ok(Command::Quit), "{line:?}");
        }
        // Only one CR is taken as part of the line ending; the other is content.
        assert_eq!(parse("QUIT\r\r"), Err(CommandError::Unknown));
        assert_eq!(parse("RSET x\r\r"), Err(CommandError::Syntax(Verb::Rset)));
        assert_eq!(parse("NOOP x\r"), Ok(Command::Noop));
        assert_eq!(parse("HELO x.org \r"), Ok(Command::Helo("x.org")));
    }

    #[test]
    fn not_utf8() {
        assert_eq!(
            parse_command(b"NOOP \xff"),
            Err(CommandError::NotUtf8(Verb::Noop))
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<\xff@x>"),
            Err(CommandError::NotUtf8(Verb::Mail))
        );
        assert_eq!(
            parse_command(b"HELO \xc3"),
            Err(CommandError::NotUtf8(Verb::Helo))
        );
        // An unknown first word wins over the encoding problem.
        assert_eq!(parse_command(b"\xff\xfe"), Err(CommandError::Unknown));
        assert_eq!(parse_command(b"FOO \xff"), Err(CommandError::Unknown));
        assert_eq!(
            parse_command(b"\x16\x03\x01\x02\x00\x01"),
            Err(CommandError::Unknown)
        );
    }

    #[test]
    fn helo_and_ehlo() {
        assert_eq!(
            parse("HELO mail.example.com"),
            Ok(Command::Helo("mail.example.com"))
        );
        assert_eq!(parse("EHLO [192.0.2.1]"), Ok(Command::Ehlo("[192.0.2.1]")));
        assert_eq!(
            parse("EHLO   spaced.example"),
            Ok(Command::Ehlo("spaced.example"))
        );
        assert_eq!(
            parse("EHLO host.example extra words"),
            Ok(Command::Ehlo("host.example"))
        );
        assert_eq!(parse("EHLO bücher.de"), Ok(Command::Ehlo("bücher.de")));
        for line in [
            "HELO",
            "HELO ",
            "EHLO <x>",
            "EHLO a@b",
            "EHLO [1.2.3]",
            "EHLO a..b",
            "EHLO \u{1}",
        ] {
            let verb = parse(line).map(|c| c.verb());
            assert!(
                matches!(
                    parse(line),
                    Err(CommandError::Syntax(Verb::Helo | Verb::Ehlo))
                ),
                "{line:?} gave {verb:?}"
            );
        }
    }

    #[test]
    fn mail() {
        assert_eq!(
            parse("MAIL FROM:<a@b.c>"),
            Ok(Command::Mail {
                path: ReversePath::Mailbox(mailbox("a", "b.c")),
                params: ""
            })
        );
        assert_eq!(
            parse("mail from:<>"),
            Ok(Command::Mail {
                path: ReversePath::Null,
                params: ""
            })
        );
        assert_eq!(
            parse("MAIL FROM:<a@b.c> SIZE=10 BODY=8BITMIME"),
            Ok(Command::Mail {
                path: ReversePath::Mailbox(mailbox("a", "b.c")),
                params: " SIZE=10 BODY=8BITMIME"
            })
        );
        // Lenient spacing around FROM:.
        assert_eq!(
            parse("MAIL  FROM:  <> SIZE=1 \r"),
            Ok(Command::Mail {
                path: ReversePath::Null,
                params: " SIZE=1"
            })
        );
        for line in [
            "MAIL",
            "MAIL FROM",
            "MAIL FROM <a@b>",
            "MAIL TO:<a@b>",
            "MAIL FRO:<a@b>",
            "MAIL FROM :<a@b>",
            "MAIL FROM:<a@b>SIZE=1",
            "MAIL FROM:<>x",
            "MAIL FRÖM:<a@b>",
        ] {
            assert_eq!(
                parse(line),
                Err(CommandError::Syntax(Verb::Mail)),
                "{line:?}"
            );
        }
        for (line, error) in [
            ("MAIL FROM:", AddressError::Syntax),
            ("MAIL FROM:a@b", AddressError::Syntax),
            ("MAIL FROM:<a@b", AddressError::Syntax),
            ("MAIL FROM:<postmaster>", AddressError::Syntax),
            ("MAIL FROM:<a..b@c>", AddressError::Syntax),
        ] {
            assert_eq!(
                parse(line),
                Err(CommandError::Address(Verb::Mail, error)),
                "{line:?}"
            );
        }
        let long = format!("MAIL FROM:<{}@x>", "a".repeat(65));
        assert_eq!(
            parse(&long),
            Err(CommandError::Address(Verb::Mail, AddressError::TooLong))
        );
    }

    #[test]
    fn rcpt() {
        assert_eq!(
            parse("RCPT TO:<a@b.c> NOTIFY=NEVER"),
            Ok(Command::Rcpt {
                path: ForwardPath::Mailbox(mailbox("a", "b.c")),
                params: " NOTIFY=NEVER"
            })
        );
        assert_eq!(
            parse("rcpt to: <Postmaster>"),
            Ok(Command::Rcpt {
                path: ForwardPath::Postmaster,
                params: ""
            })
        );
        assert_eq!(
            parse("RCPT TO:<@relay.example:a@b.c>"),
            Ok(Command::Rcpt {
                path: ForwardPath::Mailbox(mailbox("a", "b.c")),
                params: ""
            })
        );
        assert_eq!(
            parse("RCPT TO:<\"x y\"@b.c>"),
            Ok(Command::Rcpt {
                path: ForwardPath::Mailbox(mailbox("x y", "b.c")),
                params: ""
            })
        );
        for line in ["RCPT", "RCPT FROM:<a@b>", "RCPT TO", "RCPT TO:<a@b>x"] {
            assert_eq!(
                parse(line),
                Err(CommandError::Syntax(Verb::Rcpt)),
                "{line:?}"
            );
        }
        assert_eq!(
            parse("RCPT TO:<>"),
            Err(CommandError::Address(Verb::Rcpt, AddressError::Syntax))
        );
    }

    #[test]
    fn no_argument_verbs() {
        for (verb_text, verb, command) in [
            ("DATA", Verb::Data, Command::Data),
            ("RSET", Verb::Rset, Command::Rset),
            ("QUIT", Verb::Quit, Command::Quit),
            ("STARTTLS", Verb::StartTls, Command::StartTls),
        ] {
            assert_eq!(parse(verb_text), Ok(command.clone()));
            assert_eq!(parse(&format!("{verb_text} ")), Ok(command));
            assert_eq!(
                parse(&format!("{verb_text} x")),
                Err(CommandError::Syntax(verb))
            );
            assert_eq!(
                parse(&format!("{verb_text}  x")),
                Err(CommandError::Syntax(verb))
            );
        }
    }

    #[test]
    fn optional_and_required_arguments() {
        assert_eq!(parse("NOOP"), Ok(Command::Noop));
        assert_eq!(parse("NOOP anything at all"), Ok(Command::Noop));
        assert_eq!(parse("HELP"), Ok(Command::Help("")));
        assert_eq!(parse("HELP  MAIL"), Ok(Command::Help("MAIL")));
        assert_eq!(parse("VRFY  user name"), Ok(Command::Vrfy("user name")));
        assert_eq!(parse("EXPN list"), Ok(Command::Expn("list")));
        assert_eq!(parse("VRFY"), Err(CommandError::Syntax(Verb::Vrfy)));
        assert_eq!(parse("EXPN   "), Err(CommandError::Syntax(Verb::Expn)));
        assert_eq!(
            parse("XCLIENT ADDR=192.0.2.1 NAME=x"),
            Ok(Command::Xclient("ADDR=192.0.2.1 NAME=x"))
        );
        assert_eq!(parse("XCLIENT"), Err(CommandError::Syntax(Verb::Xclient)));
    }

    #[test]
    fn bdat() {
        assert_eq!(
            parse("BDAT 0 LAST"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert_eq!(
            parse("BDAT 1000"),
            Ok(Command::Bdat {
                size: 1000,
                last: false
            })
        );
        assert_eq!(
            parse("bdat 00042 last"),
            Ok(Command::Bdat {
                size: 42,
                last: true
            })
        );
        assert_eq!(
            parse("BDAT  7   LAST "),
            Ok(Command::Bdat {
                size: 7,
                last: true
            })
        );
        assert_eq!(
            parse("BDAT 18446744073709551615"),
            Ok(Command::Bdat {
                size: u64::MAX,
                last: false
            })
        );
        for line in [
            "BDAT",
            "BDAT LAST",
            "BDAT 18446744073709551616",
            "BDAT 000000000000000000001",
            "BDAT -1",
            "BDAT 1 FIRST",
            "BDAT 1 LAST x",
            "BDAT 1x",
            "BDAT 0x10",
            "BDAT +1",
        ] {
            assert_eq!(
                parse(line),
                Err(CommandError::Syntax(Verb::Bdat)),
                "{line:?}"
            );
        }
    }

    #[test]
    fn auth() {
        assert_eq!(
            parse("AUTH PLAIN"),
            Ok(Command::Auth {
                mechanism: "PLAIN",
                initial: None
            })
        );
        assert_eq!(
            parse("auth plain AGZvbwBiYXI="),
            Ok(Command::Auth {
                mechanism: "plain",
                initial: Some("AGZvbwBiYXI=")
            })
        );
        assert_eq!(
            parse("AUTH EXTERNAL ="),
            Ok(Command::Auth {
                mechanism: "EXTERNAL",
                initial: Some("=")
            })
        );
        assert_eq!(
            parse("AUTH SCRAM-SHA-256_X"),
            Ok(Command::Auth {
                mechanism: "SCRAM-SHA-256_X",
                initial: None
            })
        );
        assert!(parse(&format!("AUTH {}", "A".repeat(20))).is_ok());
        for line in [
            "AUTH",
            "AUTH  ",
            &format!("AUTH {}", "A".repeat(21)),
            "AUTH PL@IN",
            "AUTH PLAIN a b",
            "AUTH Ü",
        ] {
            assert_eq!(
                parse(line),
                Err(CommandError::Syntax(Verb::Auth)),
                "{line:?}"
            );
        }
    }

    #[test]
    fn results_borrow_from_the_line() {
        let line = b"MAIL FROM:<a@b.c> SIZE=1".to_vec();
        let Ok(Command::Mail { params, .. }) = parse_command(&line) else {
            panic!()
        };
        let range = line.as_ptr_range();
        assert!(range.contains(&params.as_ptr()));
    }

    #[test]
    fn error_display() {
        assert_eq!(CommandError::Unknown.to_string(), "unrecognised command");
        assert_eq!(
            CommandError::Syntax(Verb::Bdat).to_string(),
            "syntax error in BDAT arguments"
        );
        assert_eq!(
            CommandError::Address(Verb::Rcpt, AddressError::TooLong).to_string(),
            "RCPT: address too long"
        );
        assert_eq!(
            CommandError::NotUtf8(Verb::Mail).to_string(),
            "MAIL line is not valid UTF-8"
        );
    }

    /// Checks the promises callers rely on for any accepted line.
    fn check_invariants(line: &[u8]) {
        let Ok(command) = parse_command(line) else {
            return;
        };
        match command {
            Command::Mail { params, .. } | Command::Rcpt { params, .. } => {
                assert!(params.is_empty() || params.starts_with(' '));
                assert!(!params.ends_with([' ', '\t']));
            }
            Command::Helo(host) | Command::Ehlo(host) => {
                assert!(crate::address::is_valid_helo_host(host))
            }
            Command::Vrfy(arg) | Command::Expn(arg) | Command::Xclient(arg) => {
                assert!(!arg.is_empty())
            }
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn random_bytes_never_panic(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            check_invariants(&line);
        }

        #[test]
        fn known_verb_with_random_tail_never_panics(
            verb in prop::sample::select(vec![
                "HELO ", "EHLO ", "MAIL FROM:", "RCPT TO:", "MAIL FROM:<", "RCPT TO:<", "BDAT ", "AUTH ",
                "DATA", "VRFY ", "XCLIENT ", "STARTTLS", "NOOP ",
            ]),
            tail in "[<>@.\\[\\]:,\"\\\\ a-zA-Z0-9=+;\\-_é\\r\\t\\x00]{0,80}",
        ) {
            check_invariants(format!("{verb}{tail}").as_bytes());
        }

        /// Whenever the plain path's parse answers, the general parse gives the same
        /// command: the fast way changes nothing but the speed.
        #[test]
        fn the_plain_path_command_is_what_the_general_parse_makes(
            verb in prop::sample::select(vec![Verb::Mail, Verb::Rcpt]),
            keyword in prop::sample::select(vec!["FROM:", "TO:", "from:", "To:", " FROM: ", "TO:  "]),
            path in "<[a-z0-9.+_\\-\"@é]{0,10}@[a-z0-9.\\-_\\[\\]é]{0,12}>?",
            tail in "[ a-zA-Z0-9=<>\\xff]{0,12}",
        ) {
            let mut args = format!("{keyword}{path}").into_bytes();
            args.extend(tail.bytes().map(|b| if b == b'<' { 0xff } else { b }));
            if let Some(plain) = plain_path_command(verb, &args, None) {
                prop_assert_eq!(Ok(plain), parse_arguments(verb, &args, None));
            }
        }

        #[test]
        fn valid_mail_round_trips(
            local in "[a-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[a-z0-9]{1,10}){0,2}",
            domain in "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z]{2,6}){1,3}",
            size in any::<u64>(),
        ) {
            let line = format!("MAIL FROM:<{local}@{domain}> SIZE={size}");
            let parsed = parse(&line).unwrap();
            let expected_params = format!(" SIZE={size}");
            prop_assert_eq!(
                parsed,
                Command::Mail {
                    path: ReversePath::Mailbox(mailbox(&local, &domain)),
                    params: expected_params.as_str(),
                }
            );
        }
    }
}
