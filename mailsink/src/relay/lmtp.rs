//! A small LMTP client (RFC 2033): lettre has none, and LMTP differs from SMTP in the two
//! places lettre's connection cannot bend: LHLO instead of EHLO (which an LMTP server
//! refuses), and one reply per accepted recipient after the data.
//!
//! Commands go one at a time, as the SMTP side does with lettre. Replies are read with
//! bounds (line length, lines per reply), so a broken server cannot make us buffer without
//! end; every wait is bounded by the relay's timeout around the whole transaction.

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::{TcpStream, UnixStream};

use crate::relay::body::{Outgoing, Stuffer};
use crate::relay::envelope::Capabilities;
use crate::relay::reply::Answer;
use crate::relay::Broken;

/// The longest reply line read, CRLF included (RFC 5321 section 4.5.3.1.5 says 512; servers
/// write longer texts, and lettre allows 1000).
const MAX_LINE: u64 = 2048;
/// The most lines of one reply.
const MAX_LINES: usize = 100;
/// The stuffed body is written in pieces of about this size.
const WRITE_PIECE: usize = 64 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// One LMTP connection, greeted and past LHLO.
pub struct Lmtp {
    io: BufStream<Box<dyn Io>>,
    caps: Capabilities,
}

/// Why a connection could not be opened.
pub enum ConnectError {
    /// Connecting failed.
    Unreachable(std::io::Error),
    /// The greeting or LHLO was refused.
    Refused(Answer),
    /// The connection broke or answered out of protocol.
    Broken(Broken),
}

impl Lmtp {
    pub async fn connect_tcp(host: &str, port: u16, hello: &str) -> Result<Lmtp, ConnectError> {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(ConnectError::Unreachable)?;
        let _ = tcp.set_nodelay(true);
        Lmtp::greet(Box::new(tcp), hello).await
    }

    pub async fn connect_unix(path: &Path, hello: &str) -> Result<Lmtp, ConnectError> {
        let unix = UnixStream::connect(path)
            .await
            .map_err(ConnectError::Unreachable)?;
        Lmtp::greet(Box::new(unix), hello).await
    }

    async fn greet(io: Box<dyn Io>, hello: &str) -> Result<Lmtp, ConnectError> {
        let mut lmtp = Lmtp {
            io: BufStream::new(io),
            caps: Capabilities::default(),
        };
        let greeting = lmtp.read_answer().await.map_err(ConnectError::Broken)?;
        if greeting.code != 220 {
            return Err(ConnectError::Refused(greeting));
        }
        let lhlo = lmtp
            .command(&format!("LHLO {hello}\r\n"))
            .await
            .map_err(ConnectError::Broken)?;
        if !lhlo.is_positive() {
            return Err(ConnectError::Refused(lhlo));
        }
        lmtp.caps = Capabilities::from_hello(lhlo.lines.iter().map(String::as_str));
        Ok(lmtp)
    }

    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    /// Sends one command line (CRLF included) and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Answer, Broken> {
        self.io.write_all(line.as_bytes()).await.map_err(lost)?;
        self.io.flush().await.map_err(lost)?;
        self.read_answer().await
    }

    /// After a 354: the message, stuffed, and `CRLF . CRLF`; then one reply per recipient
    /// the server accepted, in RCPT order. Stops at the first that cannot be read.
    pub async fn data(
        &mut self,
        message: &Outgoing<'_>,
        replies: usize,
    ) -> Vec<Result<Answer, Broken>> {
        if let Err(err) = self.send_text(message).await {
            return vec![Err(err)];
        }
        let mut answers = Vec::with_capacity(replies);
        for _ in 0..replies {
            let answer = self.read_answer().await;
            let broken = answer.is_err();
            answers.push(answer);
            if broken {
                break;
            }
        }
        answers
    }

    async fn send_text(&mut self, message: &Outgoing<'_>) -> Result<(), Broken> {
        let mut stuffer = Stuffer::new();
        let mut out = Vec::with_capacity(WRITE_PIECE + WRITE_PIECE / 16);
        for piece in message.text() {
            stuffer.push(piece, &mut out);
            if out.len() >= WRITE_PIECE {
                self.io.write_all(&out).await.map_err(lost)?;
                out.clear();
            }
        }
        if message.failed() {
            // Never the terminator after a short text: the connection is dropped instead.
            return Err(Broken::new("the spooled message could not be read"));
        }
        out.extend_from_slice(b"\r\n.\r\n");
        self.io.write_all(&out).await.map_err(lost)?;
        self.io.flush().await.map_err(lost)
    }

    /// Ends the session politely.
    pub async fn quit(&mut self) {
        let _ = self.command("QUIT\r\n").await;
    }

    /// One reply: `CODE-text` lines, then a `CODE text` (or bare `CODE`) line.
    async fn read_answer(&mut self) -> Result<Answer, Broken> {
        let mut lines = Vec::new();
        let mut raw = Vec::new();
        loop {
            raw.clear();
            let read = (&mut self.io)
                .take(MAX_LINE)
                .read_until(b'\n', &mut raw)
                .await
                .map_err(lost)?;
            if read == 0 {
                return Err(Broken::new("the next hop closed the connection"));
            }
            if !raw.ends_with(b"\n") {
                return Err(Broken::new("a reply line from the next hop is too long"));
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let (code, last, text) = parse_line(line)
                .ok_or_else(|| Broken::new(format!("not a reply line: {line:?}")))?;
            lines.push(text.to_string());
            if last {
                return Ok(Answer { code, lines });
            }
            if lines.len() >= MAX_LINES {
                return Err(Broken::new("a reply from the next hop is too long"));
            }
        }
    }
}

/// `250-text`, `250 text` or `250`: the code, whether this is the last line, the text.
fn parse_line(line: &str) -> Option<(u16, bool, &str)> {
    let digits = line.get(..3)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = digits.parse().ok()?;
    if !(200..=599).contains(&code) {
        return None;
    }
    match line.as_bytes().get(3) {
        None => Some((code, true, "")),
        Some(b' ') => Some((code, true, &line[4..])),
        Some(b'-') => Some((code, false, &line[4..])),
        Some(_) => None,
    }
}

fn lost(err: std::io::Error) -> Broken {
    Broken::new(format!("the connection to the next hop failed: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        assert_eq!(parse_line("250-vm"), Some((250, false, "vm")));
        assert_eq!(
            parse_line("250 PIPELINING"),
            Some((250, true, "PIPELINING"))
        );
        assert_eq!(parse_line("354"), Some((354, true, "")));
        for bad in ["", "25", "2500 x", "abc x", "199 x", "600 x", "250x"] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }
}
