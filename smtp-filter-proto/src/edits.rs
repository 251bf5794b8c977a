//! A message as filters change it: its header fields and its envelope, with the filters'
//! [`Modification`]s applied in order, as an MTA applies them. Pure data, no I/O.
//!
//! # Several filters in a row
//!
//! Postfix's `smtpd_milters` list runs each filter in turn, and each sees what the ones
//! before it changed. With [`MessageEdits`]: send the first filter the message's fields
//! ([`HeaderList::fields`]) and envelope, apply its modifications with
//! [`MessageEdits::apply`], then send the next filter the fields and envelope as they are
//! now, and so on. The first filter that refuses the message (reject, tempfail, its own
//! reply, discard) ends the chain; its verdict is the message's.
//!
//! # The receiver's own fields
//!
//! The fields the receiver wrote at the top (`Return-Path:`, `Received:`,
//! `Authentication-Results:`) are passed as `trace` to [`HeaderList::new`]. They are sent to
//! filters like the others, so the filters' indexes count them, but no filter can change or
//! delete them or insert above them: an insert at a position among them goes just below them.

use crate::milter::Modification;

/// One header field: its name and its value as after the colon (folds as LF).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The field name.
    pub name: String,
    /// The value after the colon, leading space included, folds as LF followed by a space
    /// or tab.
    pub value: Vec<u8>,
}

impl Header {
    /// A field from its name and value (as after the colon).
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Appends the field as it goes in a message: `name:value` and CRLF, folds as CRLF.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.name.as_bytes());
        out.push(b':');
        let mut last = 0;
        for (i, &b) in self.value.iter().enumerate() {
            if b == b'\n' && (i == 0 || self.value[i - 1] != b'\r') {
                out.extend_from_slice(&self.value[last..i]);
                out.push(b'\r');
                last = i;
            }
        }
        out.extend_from_slice(&self.value[last..]);
        out.extend_from_slice(b"\r\n");
    }
}

/// Splits a message's header section (up to and without the empty line) into fields.
/// Returns the fields and the length of the section with its empty line, or `None` when
/// `message` has no complete header section within it or a line is not a field or a fold.
/// Fields keep their folds as LF.
pub fn parse_header_section(message: &[u8]) -> Option<(Vec<Header>, usize)> {
    let mut fields: Vec<Header> = Vec::new();
    let mut at = 0;
    loop {
        let end = at + memchr::memchr(b'\n', &message[at..])?;
        let line = &message[at..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at = end + 1;
        if line.is_empty() {
            return Some((fields, at));
        }
        if matches!(line[0], b' ' | b'\t') {
            let last = fields.last_mut()?;
            last.value.push(b'\n');
            last.value.extend_from_slice(line);
            continue;
        }
        let colon = memchr::memchr(b':', line)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
            return None;
        }
        fields.push(Header::new(
            String::from_utf8_lossy(name),
            &line[colon + 1..],
        ));
    }
}

/// The header fields of a message under edit. See the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderList {
    fields: Vec<Header>,
    /// How many fields at the top are the receiver's own.
    trace: usize,
}

impl HeaderList {
    /// The receiver's own fields (kept at the top, untouchable) and the message's.
    pub fn new(trace: Vec<Header>, message: Vec<Header>) -> HeaderList {
        let trace_len = trace.len();
        let mut fields = trace;
        fields.extend(message);
        HeaderList {
            fields,
            trace: trace_len,
        }
    }

    /// Every field, the receiver's first: what the next filter is sent.
    pub fn fields(&self) -> &[Header] {
        &self.fields
    }

    /// How many of [`HeaderList::fields`] are the receiver's own.
    pub fn trace_len(&self) -> usize {
        self.trace
    }

    /// Appends a field at the end (`SMFIR_ADDHEADER`).
    pub fn add(&mut self, name: &str, value: &[u8]) {
        self.fields.push(Header::new(name, value));
    }

    /// Inserts a field before position `index` of [`HeaderList::fields`], 0 the top
    /// (`SMFIR_INSHEADER`); below the receiver's fields at the highest, and at the end when
    /// `index` is past it.
    pub fn insert(&mut self, index: u32, name: &str, value: &[u8]) {
        let at = usize::try_from(index)
            .unwrap_or(usize::MAX)
            .clamp(self.trace, self.fields.len());
        self.fields.insert(at, Header::new(name, value));
    }

    /// Changes the `index`th field called `name` (case-insensitively, from 1; 0 counts as 1)
    /// to `value`, deletes it if `value` is empty, and adds the field at the end if there
    /// are fewer than `index` such fields and `value` is not empty (`SMFIR_CHGHEADER`).
    pub fn change(&mut self, index: u32, name: &str, value: &[u8]) -> Result<(), EditRefused> {
        let nth = index.max(1) as usize;
        let found = self
            .fields
            .iter()
            .enumerate()
            .filter(|(_, h)| h.name.eq_ignore_ascii_case(name))
            .nth(nth - 1)
            .map(|(i, _)| i);
        match found {
            Some(i) if i < self.trace => Err(EditRefused::TraceField {
                name: name.to_string(),
            }),
            Some(i) if value.is_empty() => {
                self.fields.remove(i);
                Ok(())
            }
            Some(i) => {
                self.fields[i].value = value.to_vec();
                Ok(())
            }
            None if value.is_empty() => Ok(()),
            None => {
                self.add(name, value);
                Ok(())
            }
        }
    }

    /// Appends every field as it goes in a message (CRLF line ends), without the empty line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for field in &self.fields {
            field.write_to(out);
        }
    }
}

/// A reverse or forward path with its ESMTP parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path {
    /// The address as written in the command, angle brackets included (`<a@example.com>`,
    /// `<>`).
    pub address: String,
    /// The ESMTP parameters, space-separated, if any.
    pub args: Option<String>,
}

impl Path {
    /// A path without parameters.
    pub fn new(address: impl Into<String>) -> Path {
        Path {
            address: address.into(),
            args: None,
        }
    }

    /// Whether two addresses name the same mailbox: angle brackets aside, ASCII
    /// case-insensitively.
    pub fn same_address(&self, other: &str) -> bool {
        bare(&self.address).eq_ignore_ascii_case(bare(other))
    }
}

fn bare(address: &str) -> &str {
    let a = address.trim();
    a.strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(a)
}

/// The envelope of a message under edit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path.
    pub sender: Path,
    /// The forward paths, in order.
    pub recipients: Vec<Path>,
}

/// A modification that could not be applied. The rest of the filter's changes still are.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditRefused {
    /// A change or deletion of a field the receiver wrote.
    #[error("the {name} field is the receiver's own")]
    TraceField {
        /// The field's name.
        name: String,
    },
    /// A recipient to delete that the message does not have.
    #[error("no recipient {address}")]
    NoSuchRecipient {
        /// The address the filter named.
        address: String,
    },
}

/// What [`MessageEdits::apply`] did with a modification, for the caller to finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// Done: the fields or the envelope changed, or the quarantine was noted.
    Done,
    /// A body piece ([`Modification::ReplaceBody`]): the caller writes it to the new body,
    /// which it starts afresh when `first` (the first piece of this message's replacement).
    BodyChunk {
        /// Whether this is the first piece of the replacement.
        first: bool,
    },
}

/// A message's fields and envelope under edit by a chain of filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageEdits {
    /// The header fields.
    pub headers: HeaderList,
    /// The envelope.
    pub envelope: Envelope,
    /// The reason of the last quarantine asked for, if any.
    pub quarantine: Option<String>,
    /// Whether a filter replaced the body.
    pub body_replaced: bool,
    /// A filter is replacing the body now: its next pieces are appended.
    replacing: bool,
}

impl MessageEdits {
    /// A message with these fields and this envelope, unchanged yet.
    pub fn new(headers: HeaderList, envelope: Envelope) -> MessageEdits {
        MessageEdits {
            headers,
            envelope,
            ..MessageEdits::default()
        }
    }

    /// Marks the end of one filter's changes: the next filter's body replacement starts a
    /// new body.
    pub fn next_filter(&mut self) {
        self.replacing = false;
    }

    /// Applies one modification. Recipients added twice are kept once; addresses compare
    /// as [`Path::same_address`].
    pub fn apply(&mut self, modification: &Modification) -> Result<Applied, EditRefused> {
        match modification {
            Modification::AddHeader { name, value } => self.headers.add(name, value),
            Modification::InsertHeader { index, name, value } => {
                self.headers.insert(*index, name, value)
            }
            Modification::ChangeHeader { index, name, value } => {
                self.headers.change(*index, name, value)?
            }
            Modification::AddRecipient { address, args } => {
                if !self
                    .envelope
                    .recipients
                    .iter()
                    .any(|r| r.same_address(address))
                {
                    let path = Path {
                        address: address.clone(),
                        args: args.clone(),
                    };
                    self.envelope.recipients.push(path);
                }
            }
            Modification::DeleteRecipient { address } => {
                let before = self.envelope.recipients.len();
                self.envelope
                    .recipients
                    .retain(|r| !r.same_address(address));
                if self.envelope.recipients.len() == before {
                    return Err(EditRefused::NoSuchRecipient {
                        address: address.clone(),
                    });
                }
            }
            Modification::ChangeSender { address, args } => {
                self.envelope.sender = Path {
                    address: address.clone(),
                    args: args.clone(),
                };
            }
            Modification::Quarantine { reason } => self.quarantine = Some(reason.clone()),
            Modification::ReplaceBody(_) => {
                let first = !self.replacing;
                self.replacing = true;
                self.body_replaced = true;
                return Ok(Applied::BodyChunk { first });
            }
        }
        Ok(Applied::Done)
    }
}
