//! Drivers for the peer crates, fed the same bytes in the same reads as the session.
//!
//! Included with `#[path]` by the benches and the tests, so that `smtp-proto` and `mailin`
//! stay dev-dependencies of the bench crate.

#![allow(dead_code)]

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use memchr::memchr;
use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, RequestReceiver};
use smtp_proto::{Error as ProtoError, Request};

/// The limit: the bytes copied into a fresh, growing buffer, read by read.
pub fn memcpy_fresh(wire: &[u8], read: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in wire.chunks(read) {
        out.extend_from_slice(chunk);
    }
    out
}

/// The limit without allocation: the bytes copied into a buffer that is already big enough.
pub fn memcpy_into(wire: &[u8], read: usize, out: &mut Vec<u8>) {
    out.clear();
    for chunk in wire.chunks(read) {
        out.extend_from_slice(chunk);
    }
}

/// smtp-proto's `DataReceiver` over a DATA body (dot-stuffed, ending in `.CRLF`).
pub fn proto_data(wire: &[u8], read: usize) -> Vec<u8> {
    let mut rx = DataReceiver::new();
    let mut body = Vec::new();
    for chunk in wire.chunks(read) {
        if rx.ingest(&mut chunk.iter(), &mut body) {
            break;
        }
    }
    body
}

/// What smtp-proto's request parser saw in a connection's input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProtoCount {
    /// Commands parsed.
    pub commands: usize,
    /// Messages (DATA or BDAT LAST) completed.
    pub messages: usize,
    /// Body bytes received.
    pub body_bytes: usize,
}

enum ProtoState {
    Request(RequestReceiver),
    Data(DataReceiver),
    Bdat(BdatReceiver),
}

/// smtp-proto's parser alone, driven the way Stalwart's inbound session drives it: the
/// `RequestReceiver` for commands, switching to the `DataReceiver` after DATA and to the
/// `BdatReceiver` after BDAT. No state machine, no replies.
pub fn proto_stream(input: &[u8], read: usize) -> ProtoCount {
    let mut count = ProtoCount::default();
    let mut state = ProtoState::Request(RequestReceiver::default());
    let mut message = Vec::new();
    for chunk in input.chunks(read) {
        let mut iter = chunk.iter();
        'chunk: loop {
            match &mut state {
                ProtoState::Request(receiver) => loop {
                    match receiver.ingest(&mut iter, chunk) {
                        Ok(request) => {
                            count.commands += 1;
                            match request {
                                Request::Data => {
                                    state = ProtoState::Data(DataReceiver::new());
                                    continue 'chunk;
                                }
                                Request::Bdat {
                                    chunk_size,
                                    is_last,
                                } => {
                                    state =
                                        ProtoState::Bdat(BdatReceiver::new(chunk_size, is_last));
                                    continue 'chunk;
                                }
                                other => drop(std::hint::black_box(other)),
                            }
                        }
                        Err(ProtoError::NeedsMoreData { .. }) => break 'chunk,
                        Err(other) => panic!("smtp-proto refused the stream: {other}"),
                    }
                },
                ProtoState::Data(receiver) => {
                    if !receiver.ingest(&mut iter, &mut message) {
                        break 'chunk;
                    }
                    count.messages += 1;
                    count.body_bytes += message.len();
                    message = Vec::new();
                    state = ProtoState::Request(RequestReceiver::default());
                }
                ProtoState::Bdat(receiver) => {
                    if !receiver.ingest(&mut iter, &mut message) {
                        break 'chunk;
                    }
                    if receiver.is_last {
                        count.messages += 1;
                        count.body_bytes += message.len();
                        message = Vec::new();
                    }
                    state = ProtoState::Request(RequestReceiver::default());
                }
            }
        }
    }
    count
}

/// Counts shared between a mailin handler and the benchmark (mailin keeps its handler).
#[derive(Debug, Default)]
pub struct MailinCounts {
    /// Messages completed.
    pub messages: Cell<usize>,
    /// Body bytes received.
    pub body_bytes: Cell<usize>,
}

/// A mailin handler that stores each message's body, as a receiver must.
#[derive(Default)]
pub struct MailinStore {
    body: Vec<u8>,
    counts: Rc<MailinCounts>,
}

impl mailin::Handler for MailinStore {
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.body.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> mailin::Response {
        let body = std::mem::take(&mut self.body);
        self.counts.messages.set(self.counts.messages.get() + 1);
        self.counts
            .body_bytes
            .set(self.counts.body_bytes.get() + body.len());
        drop(std::hint::black_box(body));
        mailin::response::OK
    }
}

/// A mailin session plus the line splitting its caller must do.
pub struct Mailin {
    session: mailin::Session<MailinStore>,
    partial: Vec<u8>,
    /// Reply bytes of the last read.
    pub written: Vec<u8>,
    /// What the handler saw.
    pub counts: Rc<MailinCounts>,
}

impl Mailin {
    /// A new session; the greeting is written.
    pub fn new() -> Mailin {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let counts = Rc::new(MailinCounts::default());
        let handler = MailinStore {
            body: Vec::new(),
            counts: Rc::clone(&counts),
        };
        let session = mailin::SessionBuilder::new("mx.example").build(ip, handler);
        let mut written = Vec::with_capacity(256);
        session.greeting().write_to(&mut written).expect("to a Vec");
        Mailin {
            session,
            partial: Vec::new(),
            written,
            counts,
        }
    }

    fn line(&mut self, line: &[u8]) {
        let response = self.session.process(line);
        if response.action != mailin::Action::NoReply {
            response.write_to(&mut self.written).expect("to a Vec");
        }
    }

    /// Feeds `input` in reads of `read` bytes, each split into lines (a line that spans two
    /// reads is carried over), each line given to the session.
    pub fn feed(&mut self, input: &[u8], read: usize) {
        for chunk in input.chunks(read) {
            self.written.clear();
            let mut rest = chunk;
            if !self.partial.is_empty() {
                let Some(i) = memchr(b'\n', rest) else {
                    self.partial.extend_from_slice(rest);
                    continue;
                };
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..=i]);
                self.line(&line);
                line.clear();
                self.partial = line;
                rest = &rest[i + 1..];
            }
            while let Some(i) = memchr(b'\n', rest) {
                self.line(&rest[..=i]);
                rest = &rest[i + 1..];
            }
            self.partial.extend_from_slice(rest);
        }
    }
}
