//! A blocking SMTP client for the tests that run a real server (smtp-session-tokio's and
//! mailsink's): a TCP stream with every read and write bounded by [`WAIT`], whole replies,
//! and the few steps those tests repeat.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Every read, write and connect of the client is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// A blocking SMTP client over a plain socket, with timeouts.
pub struct Client {
    /// The socket, for what a test does with it directly (half-closing it, say).
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect_timeout(&addr, WAIT).expect("connect"))
    }

    /// Connects to `to` from the address `source` (any address of 127.0.0.0/8 is this
    /// machine's), so that a server sees several clients.
    pub fn connect_from(source: &str, to: SocketAddr) -> Client {
        let source: IpAddr = source.parse().expect("a source address");
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(to),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("a socket");
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind the source address");
        socket.connect_timeout(&to.into(), WAIT).expect("connect");
        Client::from_stream(socket.into())
    }

    /// A client over a stream connected elsewhere.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connected, and greeted with a 220.
    pub fn greeted(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr);
        let greeting = c.reply();
        assert!(greeting.starts_with("220 "), "{greeting}");
        c
    }

    /// Greeted, and EHLO answered with a 250.
    pub fn hello(addr: SocketAddr) -> Client {
        let mut c = Client::greeted(addr);
        let ehlo = c.cmd("EHLO client.example");
        assert!(ehlo.starts_with("250"), "{ehlo}");
        c
    }

    /// Sends `bytes` as they are.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("write");
    }

    /// Reads once more into the buffer; 0 when the server closed (or reset) the connection.
    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        // A signal handled in the test process (a child's exit) interrupts a blocking read.
        let n = loop {
            match self.stream.read(&mut chunk) {
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => break 0,
                Err(err) => panic!(
                    "read failed (timed out?): {err}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => break n,
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// One whole reply (all its lines), as text.
    pub fn reply(&mut self) -> String {
        let mut start = 0;
        loop {
            while let Some(pos) = self.buf[start..].windows(2).position(|w| w == b"\r\n") {
                let line = &self.buf[start..start + pos];
                start += pos + 2;
                if line.len() < 4 || line[3] != b'-' {
                    let reply: Vec<u8> = self.buf.drain(..start).collect();
                    return String::from_utf8(reply).unwrap();
                }
            }
            if self.fill() == 0 {
                let tail = &self.buf[self.buf.len().saturating_sub(200)..];
                panic!(
                    "connection closed inside a reply: {:?}",
                    String::from_utf8_lossy(tail)
                );
            }
        }
    }

    /// Sends a command line and returns its reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n"));
        self.reply()
    }

    /// Everything until the server closes (what is still buffered included).
    pub fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill() > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// [`read_to_close`](Client::read_to_close) as text.
    pub fn read_to_close_text(&mut self) -> String {
        String::from_utf8_lossy(&self.read_to_close()).into_owned()
    }

    /// A whole transaction after EHLO: MAIL, a RCPT per recipient, DATA and `body`
    /// (dot-stuffed here); the reply to the message.
    pub fn send_message(&mut self, from: &str, to: &[&str], body: &[u8]) -> String {
        self.cmd(&format!("MAIL FROM:<{from}>"));
        for rcpt in to {
            self.cmd(&format!("RCPT TO:<{rcpt}>"));
        }
        let go = self.cmd("DATA");
        assert!(go.starts_with("354"), "{go}");
        self.send(dot_stuff(body));
        self.send(b".\r\n");
        self.reply()
    }
}

/// DATA transparency: a `.` at the start of a line gets another; the body must end in CRLF.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    assert!(
        body.is_empty() || body.ends_with(b"\r\n"),
        "a body ends in CRLF"
    );
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}
