//! What a server reports as it runs, for metrics: connections opened, ended and refused,
//! and the code of every reply sent.

use smtp_session::ConnectionInfo;

/// Receives a server's events, for counters and gauges; set with
/// [`Server::observer`](crate::Server::observer).
///
/// Every method defaults to doing nothing and is called on the connection's task, so it must
/// return at once (increment an atomic, call the `metrics` crate's macros); it must not block
/// or wait. A server without an observer does none of this work.
///
/// | event | when | called with |
/// |---|---|---|
/// | [`connection_opened`](Observer::connection_opened) | a connection was admitted, before its session starts (also for [`Server::serve_connection`](crate::Server::serve_connection)) | its [`ConnectionInfo`]; `server_id` names the listener (`smtp`, `smtps`, `lmtp`, ...) |
/// | [`connection_closed`](Observer::connection_closed) | that connection ended, its disconnect hook included | the same info as when it opened |
/// | [`connection_refused`](Observer::connection_refused) | a client over [`Limits::max_connections`](crate::Limits::max_connections) or [`Limits::max_connections_per_ip`](crate::Limits::max_connections_per_ip) is answered `421 4.7.0` | which limit |
/// | [`reply`](Observer::reply) | a session queued a reply for its client (the greeting, every command's reply, the 421 of a timeout...) | its code |
///
/// A refusal at accept time is not a connection (neither opened nor closed) and its 421 is
/// not a [`reply`](Observer::reply): it is counted by `connection_refused` alone. Behind a
/// PROXY header the per-address limit is applied by the session of a connection already
/// opened, once the header gave the client's address: that 421 is both a refusal and a
/// reply.
pub trait Observer: Send + Sync + 'static {
    /// A connection was admitted and its session is starting.
    fn connection_opened(&self, info: &ConnectionInfo) {
        let _ = info;
    }

    /// A connection opened earlier ended; `info` is what it was opened with.
    fn connection_closed(&self, info: &ConnectionInfo) {
        let _ = info;
    }

    /// A client was refused with a 421 for being over a connection limit.
    fn connection_refused(&self, refusal: Refusal) {
        let _ = refusal;
    }

    /// A session sent a reply with this code (200..=599, or a 3xx such as 334 and 354).
    /// A multi-line reply is one call.
    fn reply(&self, code: u16) {
        let _ = code;
    }
}

/// Which connection limit refused a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// [`Limits::max_connections`](crate::Limits::max_connections): the server is full.
    MaxConnections,
    /// [`Limits::max_connections_per_ip`](crate::Limits::max_connections_per_ip): this client
    /// address has its share.
    MaxConnectionsPerIp,
}

impl Refusal {
    /// A name for labels and logs: `max_connections` or `max_connections_per_ip`.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
        }
    }
}

/// Calls `observer.reply` for each reply in `bytes`, as a session writes them: whole
/// replies, CRLF-terminated lines, the last line of each `DDD text` (others `DDD-text`).
pub(crate) fn observe_replies(observer: &dyn Observer, bytes: &[u8]) {
    for line in bytes.split(|&b| b == b'\n') {
        let last_line = line.len() >= 3 && line.get(3) != Some(&b'-');
        if !last_line {
            continue;
        }
        let digits = &line[..3];
        if digits.iter().all(u8::is_ascii_digit) {
            let code = digits
                .iter()
                .fold(0u16, |code, &d| code * 10 + u16::from(d - b'0'));
            observer.reply(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Codes(Mutex<Vec<u16>>);

    impl Observer for Codes {
        fn reply(&self, code: u16) {
            self.0.lock().unwrap().push(code);
        }
    }

    #[test]
    fn one_call_per_reply_multi_line_ones_included() {
        let codes = Codes::default();
        let written = b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n\
                        250 2.1.0 Sender OK\r\n550 5.7.1 no\r\n354 End data\r\n";
        observe_replies(&codes, written);
        assert_eq!(*codes.0.lock().unwrap(), [250, 250, 550, 354]);
    }

    #[test]
    fn a_bare_code_line_is_a_reply_and_the_empty_tail_is_not() {
        let codes = Codes::default();
        observe_replies(&codes, b"421\r\n");
        assert_eq!(*codes.0.lock().unwrap(), [421]);
    }
}
