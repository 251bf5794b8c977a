//! The transcript harness: a `Milter` driven by steps and by packets a test writes for the
//! filter, with everything written both ways and every output logged as text.

#![allow(dead_code)]

pub mod daemon;

use smtp_filter_proto::milter::{Milter, MilterConfig, Modification, Output};

/// One packet: length, code, data.
pub fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut out = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(code);
    out.extend_from_slice(data);
    out
}

/// The filter's negotiation reply, with macro lists `(stage, "names")`.
pub fn optneg(version: u32, actions: u32, protocol: u32, lists: &[(u32, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    for n in [version, actions, protocol] {
        data.extend_from_slice(&n.to_be_bytes());
    }
    for (stage, names) in lists {
        data.extend_from_slice(&stage.to_be_bytes());
        data.extend_from_slice(names.as_bytes());
        data.push(0);
    }
    packet(b'O', &data)
}

/// Printable ASCII as is, NUL as `\0`, the rest as `\xNN`.
pub fn show(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            0 => s.push_str("\\0"),
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            32..=126 => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// Each packet of a byte stream as `code data`; the negotiation's numbers in hex.
pub fn packets(prefix: &str, mut bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let (code, data) = (bytes[4], &bytes[5..4 + len.min(bytes.len() - 4)]);
        let text = if code == b'O' && data.len() >= 12 {
            let n = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
            format!(
                "O version={} actions={:#x} protocol={:#x}{}",
                n(0),
                n(4),
                n(8),
                show(&data[12..])
            )
        } else {
            format!("{} {}", code as char, show(data))
        };
        out.push(format!("{prefix} {}", text.trim_end()));
        bytes = &bytes[(4 + len).min(bytes.len())..];
    }
    out
}

/// A milter and the transcript of everything that happened to it.
pub struct Harness {
    pub milter: Milter,
    pub log: Vec<String>,
}

impl Harness {
    pub fn new(config: MilterConfig) -> Harness {
        let mut h = Harness {
            milter: Milter::new(config),
            log: Vec::new(),
        };
        h.drain();
        h
    }

    /// A milter negotiated with a filter that chose these actions and protocol flags.
    pub fn negotiated(actions: u32, protocol: u32) -> Harness {
        let mut h = Harness::new(MilterConfig::default());
        h.filter(&optneg(6, actions, protocol, &[]));
        h.log.clear();
        h
    }

    /// Logs what the milter wrote (`C>`) and what it asked of the caller (`=`).
    pub fn drain(&mut self) {
        while let Some(output) = self.milter.poll_output() {
            match output {
                Output::Write(bytes) => self.log.extend(packets("C>", &bytes)),
                Output::Modification(m) => self.log.push(format!("= {}", modification(&m))),
                other => self.log.push(format!("= {other:?}")),
            }
        }
    }

    /// The filter sends these bytes (`F>`).
    pub fn filter(&mut self, bytes: &[u8]) {
        self.log.extend(packets("F>", bytes));
        self.milter.handle_input(bytes);
        self.drain();
    }

    /// A step: its result (when an error) and what followed.
    pub fn step<T: std::fmt::Debug>(
        &mut self,
        result: impl FnOnce(&mut Milter) -> Result<T, smtp_filter_proto::milter::Error>,
    ) {
        if let Err(e) = result(&mut self.milter) {
            self.log.push(format!("! {e:?}"));
        }
        self.drain();
    }

    /// The transcript so far, emptied.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }
}

/// A modification with its byte strings shown as text.
pub fn modification(m: &Modification) -> String {
    match m {
        Modification::AddHeader { name, value } => format!("AddHeader {name}:{}", show(value)),
        Modification::InsertHeader { index, name, value } => {
            format!("InsertHeader at {index} {name}:{}", show(value))
        }
        Modification::ChangeHeader { index, name, value } => {
            format!("ChangeHeader {name} #{index} to {:?}", show(value))
        }
        Modification::ReplaceBody(chunk) => format!("ReplaceBody {}", show(chunk)),
        other => format!("{other:?}"),
    }
}
