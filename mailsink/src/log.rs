//! The JSON lines on stdout: one per accepted message, exactly one per connection end.
//!
//! The disconnect line is the library's [`DisconnectContext`] serialised with Halon's key
//! names, with `"event":"disconnect"` in front. Human messages go to stderr, never here.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use smtp_session::{
    AuthInfo, ConnectionInfo, DisconnectContext, Envelope, HeloInfo, Message, TlsInfo,
};

use crate::check::Record;
use crate::facts::{ConnContext, ConnFacts, FilterVerdict, Screening};
use crate::verify::AuthResults;

#[derive(Serialize)]
struct DisconnectLine<'a> {
    event: &'static str,
    #[serde(flatten)]
    context: &'a DisconnectContext,
    /// What `--dnsbl` made of the client; absent without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    dnsbl: Option<&'a Screening>,
    /// mailsink's user context (Halon's `$context`, which the library does not
    /// serialise): the filters' verdicts; absent when no filter said anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(rename = "context")]
    context_own: Option<&'a ConnContext>,
}

/// The connection part of a message line: the same keys as the disconnect line's.
#[derive(Serialize)]
struct Connection<'a> {
    #[serde(flatten)]
    info: &'a ConnectionInfo,
    helo: Option<&'a HeloInfo>,
    tls: Option<&'a TlsInfo>,
    auth: Option<&'a AuthInfo>,
}

#[derive(Serialize)]
struct MessageLine<'a> {
    event: &'static str,
    connection: Connection<'a>,
    envelope: &'a Envelope,
    size: u64,
    chunked: bool,
    /// The file in `new/`; null with `--discard`.
    file: Option<&'a Path>,
    /// `--verify`'s results; absent without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<&'a AuthResults>,
    /// Why a check quarantined it; absent unless one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantined: Option<&'a str>,
    /// Why a check dropped it; absent unless one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    discarded: Option<&'a str>,
    /// What the filters said about it (its transaction's policy service answers, the
    /// milters); absent when none did.
    #[serde(skip_serializing_if = "<[FilterVerdict]>::is_empty")]
    filter_verdicts: &'a [FilterVerdict],
}

/// `{"event":"disconnect","arguments":{..},"connection":{..},"transaction":{}}`, with
/// `"dnsbl":{"score":N,"listed":[..],"allowed_by":[..],"unanswered":[..]}` after `--dnsbl`
/// (a client refused for its score included), and
/// `"context":{"filter_verdicts":[{"filter":"milter","name":"inet:..","stage":"message",
/// "message":1,"verdict":"reject","reply":"550 5.7.1 .."},..]}` once a filter answered.
pub fn disconnect_line(
    context: &DisconnectContext,
    dnsbl: Option<&Screening>,
    own: &ConnContext,
) -> String {
    json_line(&DisconnectLine {
        event: "disconnect",
        context,
        dnsbl,
        context_own: (!own.is_empty()).then_some(own),
    })
}

/// `value` as JSON, in a buffer big enough for a usual line and the newline [`emit`]
/// adds, so that it grows rarely.
fn json_line(value: &impl Serialize) -> String {
    let mut line = Vec::with_capacity(1024);
    serde_json::to_writer(&mut line, value).expect("a log line serialises");
    String::from_utf8(line).expect("serde_json writes UTF-8")
}

/// `{"event":"message","connection":{..},"envelope":{..},"size":N,"chunked":false,"file":".."}`,
/// with `"auth":{"spf":"pass",..}` after `--verify`, `"quarantined"` or `"discarded"`
/// with a check's reason, and `"filter_verdicts":[..]` (as in the disconnect line) when
/// filters judged it: what the message's `record` says.
pub fn message_line(facts: &ConnFacts, message: &Message, record: &Record) -> String {
    json_line(&MessageLine {
        event: "message",
        connection: Connection {
            info: &facts.info,
            helo: facts.helo.as_ref(),
            tls: facts.tls.as_ref(),
            auth: facts.auth.as_ref(),
        },
        envelope: &message.envelope,
        size: message.size,
        chunked: message.chunked,
        file: record.file.as_deref(),
        auth: record.auth_results.as_deref(),
        quarantined: record.quarantined.as_deref(),
        discarded: record.discarded.as_deref(),
        filter_verdicts: &record.filters,
    })
}

/// Writes one line to stdout at once (the lock keeps lines whole across threads). A closed
/// stdout is not a reason to stop receiving mail, so write errors are ignored.
pub fn emit(mut line: String) {
    // One buffer, one write: stdout's line buffer is 1 KiB, and a longer line written
    // before its newline would cost two system calls.
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
}
