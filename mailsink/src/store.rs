//! Messages written into the Maildir's `tmp/` as they arrive (the engine's streamed bodies),
//! so that a connection's memory does not grow with its message.
//!
//! Every stored message starts with the trace fields of final delivery, `Return-Path:` and
//! `Received:` (RFC 5321 section 4.4), built by the engine at the DATA command or the first
//! BDAT (the envelope is complete by then, and the body's pieces may come after the
//! session has moved on) and dated from the system clock then, as Postfix does. No body
//! byte can continue them: the engine refuses content that begins with a space or a tab
//! (its default `LeadingWhitespace::Reject`) before any piece of it comes here.
//!
//! The head of a message (the trace fields and the first pieces of the body) is gathered in
//! memory up to [`GATHER`] bytes; past that, the file is created in `tmp/` and each piece is
//! written as it comes. A message smaller than that is written, synced and renamed in one
//! trip to a blocking thread. Either way a connection holds at most [`GATHER`] bytes of its
//! message, whatever the message's size.
//!
//! A write that fails marks the message failed: the rest of its body goes nowhere, and at
//! the end the client is told `451 4.3.0` (see [`store_failed`]). A message that ends
//! without being delivered (aborted, refused, failed) has its file removed.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use smtp_session::{trace, Envelope, Reply, ReversePath};
use smtp_session_tokio::Connection;
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

use crate::maildir::{Maildir, Name};

/// The most of a message kept in memory before its file is created.
pub const GATHER: usize = 32 * 1024;

/// `451 4.3.0`: the message could not be stored. It is the server's trouble, not the
/// client's, so it does not count toward the client's error limit.
pub fn store_failed() -> Reply {
    Reply::new(451, "4.3.0 Could not store the message, try again later")
        .expect("a valid reply")
        .server_fault()
}

/// `452 4.3.1` at MAIL FROM: less free space than [`space_needed`] (Postfix's reply).
pub fn insufficient_storage() -> Reply {
    Reply::new(452, "4.3.1 Insufficient system storage")
        .expect("a valid reply")
        .server_fault()
}

/// Free space a new transaction needs: one and a half times the largest message (Postfix
/// refuses MAIL FROM below this), so that a message accepted at MAIL can still be stored.
pub fn space_needed(max_message_size: u64) -> u64 {
    max_message_size.saturating_add(max_message_size / 2)
}

/// The message one connection is receiving, if any. Cloning gives a new connection's: no
/// message.
#[derive(Debug, Default)]
pub struct Spooler {
    /// The name and trace fields of the message whose data starts.
    next: Option<(Name, Vec<u8>)>,
    current: Option<Spool>,
    /// Messages start with the trace fields of final delivery (not when they are relayed:
    /// the relay writes its own `Received:` field).
    trace: bool,
}

impl Clone for Spooler {
    fn clone(&self) -> Self {
        Spooler::new(self.trace)
    }
}

impl Spooler {
    /// A connection's spooler; `trace`: its messages start with `Return-Path:` and
    /// `Received:`.
    pub fn new(trace: bool) -> Spooler {
        Spooler {
            next: None,
            current: None,
            trace,
        }
    }

    /// The name and the head of a new message.
    fn head(
        &self,
        conn: &Connection<'_>,
        maildir: &Maildir,
        envelope: &Envelope,
    ) -> (Name, Vec<u8>) {
        let name = maildir.unique_name();
        let head = if self.trace {
            trace_fields(conn, envelope, &name)
        } else {
            Vec::new()
        };
        (name, head)
    }

    /// The data of a message starts (the DATA command or the first BDAT): its name and
    /// trace fields are made now, from the transaction's envelope.
    pub fn prepare(&mut self, conn: &Connection<'_>, maildir: &Maildir) {
        self.next = conn
            .envelope()
            .map(|envelope| self.head(conn, maildir, envelope));
    }

    /// Appends a piece of the body; the first piece of a message starts its spool. False
    /// when no message was prepared, which the data hook always does first.
    pub async fn push(&mut self, maildir: &Arc<Maildir>, piece: Vec<u8>) -> bool {
        if self.current.is_none() {
            let Some((name, head)) = self.next.take() else {
                return false;
            };
            self.current = Some(Spool::start(maildir, name, head));
        }
        if let Some(spool) = &mut self.current {
            spool.push(piece).await;
        }
        true
    }

    /// The message in progress will not be accepted: its file goes.
    pub async fn abort(&mut self) {
        if let Some(spool) = self.current.take() {
            spool.discard().await;
        }
    }

    /// The message in progress ended without a message hook call (a piece could not be
    /// written in time): its file goes now, and the next piece starts a new message.
    pub fn abandon(&mut self) {
        // Spool's drop removes the file.
        self.current = None;
    }

    /// The whole body is in: the message's spool (begun now when the body is empty).
    pub fn finish(
        &mut self,
        conn: &Connection<'_>,
        maildir: &Arc<Maildir>,
        envelope: &Envelope,
    ) -> Spool {
        if let Some(spool) = self.current.take() {
            return spool;
        }
        let (name, head) = match self.next.take() {
            Some(next) => next,
            None => self.head(conn, maildir, envelope),
        };
        Spool::start(maildir, name, head)
    }
}

/// Where a spool's body is.
#[derive(Debug)]
pub enum Stored<'a> {
    /// Still in memory, all of it.
    Memory(&'a [u8]),
    /// In the file at `path`, from `offset` to its end.
    File {
        /// The file in `tmp/`.
        path: PathBuf,
        /// Where the body starts, past the trace fields.
        offset: u64,
    },
}

/// One message on its way into the Maildir.
#[derive(Debug)]
pub struct Spool {
    maildir: Arc<Maildir>,
    name: Name,
    /// The trace fields' length at the start of the file.
    head_len: usize,
    /// Bytes not written yet: the head and the first pieces, until they pass [`GATHER`].
    pending: Vec<u8>,
    /// The file in `tmp/`, once created.
    file: Option<File>,
    /// The file in `tmp/` may exist, and is removed unless delivered.
    on_disk: bool,
    /// Why the message can no longer be stored.
    failed: Option<io::Error>,
    /// Header fields that go below the trace fields at delivery (`Authentication-Results:`).
    fields: Vec<u8>,
    /// Ranges of the message as received (offsets from its first byte, in order, apart)
    /// left out at delivery: header fields it must not keep.
    cuts: Vec<Range<u64>>,
    /// Delivered into the quarantine folder instead of `new/`.
    quarantine: bool,
    /// Header fields that go in at offsets of the message as received (field boundaries
    /// of its header section, in order): a filter's, where it asked for them.
    inserts: Vec<(u64, Vec<u8>)>,
    /// The length of the `Return-Path:` field at the start of the head (0: none).
    return_path_len: usize,
    /// The `Return-Path:` field in its place, when the envelope sender changed.
    return_path: Option<Vec<u8>>,
    /// A body in place of the one received.
    new_body: Option<NewBody>,
}

/// A body a filter wrote in place of the one received: a file beside the message's in
/// `tmp/`, removed when dropped. It replaces the message from offset `after` (the end of
/// the received header section) on.
#[derive(Debug)]
pub struct NewBody {
    path: PathBuf,
    file: Option<File>,
    len: u64,
    after: u64,
}

impl NewBody {
    /// Its length so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Its file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Where in the message as received it takes over: the end of the header section.
    pub fn after(&self) -> u64 {
        self.after
    }

    /// Appends `bytes`.
    pub async fn append(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the new body's file was lost"))?;
        let n = bytes.len() as u64;
        self.file = Some(blocking(move || file.write_all(&bytes).map(|()| file)).await?);
        self.len += n;
        Ok(())
    }

    /// At most `len` bytes from its byte `at`.
    pub async fn read_at(&self, at: u64, len: u64) -> io::Result<Vec<u8>> {
        let path = self.path.clone();
        blocking(move || {
            let mut file = File::open(path)?;
            file.seek(SeekFrom::Start(at))?;
            let mut piece = Vec::new();
            file.take(len).read_to_end(&mut piece)?;
            Ok(piece)
        })
        .await
    }
}

impl Drop for NewBody {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Spool {
    /// A new message named `name`, starting with the trace fields `head`.
    pub fn start(maildir: &Arc<Maildir>, name: Name, head: Vec<u8>) -> Spool {
        let return_path_len = if head.starts_with(b"Return-Path:") {
            memchr::memchr(b'\n', &head).map_or(0, |i| i + 1)
        } else {
            0
        };
        Spool {
            maildir: maildir.clone(),
            name,
            head_len: head.len(),
            pending: head,
            file: None,
            on_disk: false,
            failed: None,
            fields: Vec::new(),
            cuts: Vec::new(),
            quarantine: false,
            inserts: Vec::new(),
            return_path_len,
            return_path: None,
            new_body: None,
        }
    }

    /// A new, empty body for the message from its byte `after` on (the end of its header
    /// section), in a file beside it; `n` tells apart the bodies of several filters.
    pub async fn new_body(&self, n: u32, after: u64) -> io::Result<NewBody> {
        let mut path = self.maildir.tmp_path(&self.name).into_os_string();
        path.push(format!(".body{n}"));
        let path = PathBuf::from(path);
        let at = path.clone();
        let file = blocking(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(at)
        })
        .await?;
        Ok(NewBody {
            path,
            file: Some(file),
            len: 0,
            after,
        })
    }

    /// Appends a piece of the body: in memory up to [`GATHER`], then to the file.
    pub async fn push(&mut self, piece: Vec<u8>) {
        if self.failed.is_some() {
            return;
        }
        if !self.on_disk {
            if self.pending.len() + piece.len() <= GATHER {
                self.pending.extend_from_slice(&piece);
                return;
            }
            let head = std::mem::take(&mut self.pending);
            let (maildir, name) = (self.maildir.clone(), self.name.clone());
            self.on_disk = true;
            let created = blocking(move || {
                let mut file = maildir.create(&name)?;
                file.write_all(&head)?;
                file.write_all(&piece)?;
                Ok(file)
            });
            self.keep(created.await);
            return;
        }
        let Some(mut file) = self.file.take() else {
            self.failed = Some(io::Error::other("the message's file was lost"));
            return;
        };
        let written = blocking(move || file.write_all(&piece).map(|()| file));
        self.keep(written.await);
    }

    fn keep(&mut self, file: io::Result<File>) {
        match file {
            Ok(file) => self.file = Some(file),
            Err(err) => self.failed = Some(err),
        }
    }

    /// Why the message cannot be stored, if a write failed.
    pub fn failure(&self) -> Option<&io::Error> {
        self.failed.as_ref()
    }

    /// The body as received (without the trace fields), for the script: from memory for a
    /// small message, else read back from `tmp/`, at most `limit` bytes.
    pub async fn read_body(&self, limit: u64) -> io::Result<Vec<u8>> {
        self.read_at(0, limit).await
    }

    /// At most `len` bytes of the body as received, from its byte `at` (fewer at its end,
    /// none past it): a filter reads a large body piece by piece this way.
    pub async fn read_at(&self, at: u64, len: u64) -> io::Result<Vec<u8>> {
        if !self.on_disk {
            let body = &self.pending[self.head_len..];
            let start = body.len().min(usize::try_from(at).unwrap_or(usize::MAX));
            let end = body
                .len()
                .min(start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)));
            return Ok(body[start..end].to_vec());
        }
        let path = self.maildir.tmp_path(&self.name);
        let skip = (self.head_len as u64).saturating_add(at);
        blocking(move || {
            let mut file = File::open(path)?;
            file.seek(SeekFrom::Start(skip))?;
            let mut body = Vec::new();
            file.take(len).read_to_end(&mut body)?;
            Ok(body)
        })
        .await
    }

    /// Where the body as received is: in memory, or in the file at an offset.
    pub fn stored(&self) -> Stored<'_> {
        if self.on_disk {
            Stored::File {
                path: self.maildir.tmp_path(&self.name),
                offset: self.head_len as u64,
            }
        } else {
            Stored::Memory(&self.pending[self.head_len..])
        }
    }

    /// Adds header fields (whole lines, each ending in CRLF) to go right below the trace
    /// fields when the message is delivered.
    pub fn add_fields(&mut self, fields: &[u8]) {
        self.fields.extend_from_slice(fields);
    }

    /// Leaves `ranges` of the message as received (offsets from its first byte, in order,
    /// apart, within what was received) out of the message when it is delivered.
    pub fn remove(&mut self, ranges: Vec<Range<u64>>) {
        self.cuts = ranges;
    }

    /// Has header fields (whole lines, each ending in CRLF) go in at offsets of the message
    /// as received: field boundaries of its header section, in order.
    pub fn insert(&mut self, inserts: Vec<(u64, Vec<u8>)>) {
        self.inserts = inserts;
    }

    /// Has the message's `Return-Path:` name `sender` (when it has one: relayed messages
    /// do not).
    pub fn set_sender(&mut self, sender: &ReversePath) {
        if self.return_path_len > 0 {
            self.return_path = Some(trace::return_path(sender).into_bytes());
        }
    }

    /// Has the message delivered with `body` in place of the body received.
    pub fn replace_body(&mut self, body: NewBody) {
        self.new_body = Some(body);
    }

    /// Every change to the file at delivery, as ranges of it (in order, apart) and the
    /// bytes that take their place.
    fn splices(&mut self) -> Vec<(Range<u64>, Vec<u8>)> {
        let head = self.head_len as u64;
        let mut splices = Vec::new();
        if let Some(line) = self.return_path.take() {
            splices.push((0..self.return_path_len as u64, line));
        }
        let mut message: Vec<(Range<u64>, Vec<u8>)> = std::mem::take(&mut self.inserts)
            .into_iter()
            .map(|(at, bytes)| (at..at, bytes))
            .chain(
                std::mem::take(&mut self.cuts)
                    .into_iter()
                    .map(|c| (c, Vec::new())),
            )
            .collect();
        // Stable: of an insert and a cut at one offset, the insert (listed first) goes first.
        message.sort_by_key(|(range, _)| range.start);
        let fields = std::mem::take(&mut self.fields);
        if !fields.is_empty() {
            splices.push((head..head, fields));
        }
        splices.extend(
            message
                .into_iter()
                .map(|(r, bytes)| (head + r.start..head + r.end, bytes)),
        );
        splices
    }

    /// Has the message delivered into the quarantine folder instead of `new/`.
    pub fn mark_quarantined(&mut self) {
        self.quarantine = true;
    }

    /// Writes what is left, fsyncs, renames into `new/` (or the quarantine's) and fsyncs
    /// the directory: the path there once the message is durable.
    pub async fn deliver(mut self) -> io::Result<PathBuf> {
        if let Some(err) = self.failed.take() {
            self.discard().await;
            return Err(err);
        }
        let file = self.file.take();
        let mut rest = std::mem::take(&mut self.pending);
        let splices = self.splices();
        let new_body = self.new_body.take();
        let fresh = !self.on_disk;
        if fresh && new_body.is_none() {
            // All of the message is still here: it is put right before it is written.
            splice_all(&mut rest, &splices)?;
            let journaled = self
                .maildir
                .journal_message(&self.name, self.quarantine, &rest);
            if let Some(journaled) = journaled.await {
                return journaled;
            }
        }
        let (maildir, name) = (self.maildir.clone(), self.name.clone());
        let head_len = self.head_len as u64;
        let quarantine = self.quarantine;
        self.on_disk = true;
        let delivered = blocking(move || {
            let file = match file {
                Some(file) => file,
                None if fresh => maildir.create(&name)?,
                None => return Err(io::Error::other("the message's file was lost")),
            };
            let edits = Rewrite {
                rest,
                splices,
                new_body,
                head_len,
                fresh,
            };
            let file = edits.write(file, &maildir.tmp_path(&name))?;
            maildir.place(file, &name, quarantine)
        })
        .await;
        let delivered = match delivered {
            Ok(placed) => self.maildir.commit(placed).await,
            Err(err) => Err(err),
        };
        match delivered {
            Ok(path) => {
                self.on_disk = false;
                Ok(path)
            }
            Err(err) => {
                self.discard().await;
                Err(err)
            }
        }
    }

    /// Removes the message's file, if it was created.
    pub async fn discard(mut self) {
        if std::mem::take(&mut self.on_disk) {
            drop(self.file.take());
            let (maildir, name) = (self.maildir.clone(), self.name.clone());
            let _ = blocking(move || {
                maildir.discard(&name);
                Ok(())
            })
            .await;
        }
    }
}

/// What is left to write of a message at its delivery.
struct Rewrite {
    /// The bytes not written yet (all of the message when `fresh`).
    rest: Vec<u8>,
    /// The changes to the file (see [`Spool::splices`]).
    splices: Vec<Splice>,
    new_body: Option<NewBody>,
    /// The trace fields' length.
    head_len: u64,
    /// Nothing was written to the file yet, and `splices` are applied to `rest`.
    fresh: bool,
}

impl Rewrite {
    /// Writes the message into `file` (at `path`), as changed. Blocking.
    fn write(self, mut file: File, path: &std::path::Path) -> io::Result<File> {
        match self.new_body {
            Some(body) => {
                let front = self.head_len + body.after;
                let front = if self.fresh {
                    let mut rest = self.rest;
                    rest.truncate(usize::try_from(front).unwrap_or(usize::MAX));
                    rest
                } else {
                    read_front(&File::open(path)?, front)?
                };
                rebuild(&file, front, &self.splices, &body)?;
            }
            None => {
                file.write_all(&self.rest)?;
                if !self.fresh && !self.splices.is_empty() {
                    rewrite_front(&File::open(path)?, &file, 0, &self.splices)?;
                }
            }
        }
        Ok(file)
    }
}

impl Drop for Spool {
    /// A message dropped on the way (its connection's task ended mid-write) leaves no file.
    fn drop(&mut self) {
        if self.on_disk {
            self.maildir.discard(&self.name);
        }
    }
}

/// The most of a file's front [`rewrite_front`] holds in memory: the header section whose
/// fields it removes is read at most this long (`--verify-max-header`).
pub const MAX_FRONT: u64 = 1 << 20;

/// Pieces in which [`move_bytes`] moves a file's bytes.
const MOVE_PIECE: usize = 64 * 1024;

/// A range of a file (or of a message) and the bytes that take its place.
type Splice = (Range<u64>, Vec<u8>);

/// Rewrites the file read by `reader` and written by `writer` from offset `at`: each of
/// `splices` (offsets from `at`, in order, apart) puts its bytes in place of its range. The
/// bytes up to the last splice are rewritten in memory, at most [`MAX_FRONT`] of them (else
/// an error); everything after it moves along in [`MOVE_PIECE`] pieces, and a file that
/// shrank is cut to its new length.
fn rewrite_front(reader: &File, writer: &File, at: u64, splices: &[Splice]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = reader.metadata()?.len();
    let old_end = at + splices.last().map_or(0, |(range, _)| range.end);
    if old_end > len {
        return Err(io::Error::other(
            "a header field to remove lies past the message's end",
        ));
    }
    if old_end - at > MAX_FRONT {
        return Err(io::Error::other(
            "a header field to remove lies past the header section's limit",
        ));
    }
    let mut front = vec![0; (old_end - at) as usize];
    reader.read_exact_at(&mut front, at)?;
    splice_all(&mut front, splices)?;
    let new_end = at + front.len() as u64;
    move_bytes(reader, writer, old_end..len, new_end)?;
    writer.write_all_at(&front, at)?;
    if new_end < old_end {
        writer.set_len(len - (old_end - new_end))?;
    }
    Ok(())
}

/// Applies `splices` (in order, apart) to `bytes`; an error, changing nothing, when one
/// lies past their end.
fn splice_all(bytes: &mut Vec<u8>, splices: &[Splice]) -> io::Result<()> {
    let apart = splices.windows(2).all(|w| w[0].0.end <= w[1].0.start);
    let within = splices
        .iter()
        .all(|(range, _)| range.start <= range.end && range.end <= bytes.len() as u64);
    if !apart || !within {
        return Err(io::Error::other(
            "a header edit lies past the message's end",
        ));
    }
    for (range, with) in splices.iter().rev() {
        bytes.splice(
            range.start as usize..range.end as usize,
            with.iter().copied(),
        );
    }
    Ok(())
}

/// The first `len` bytes of the file (at most [`MAX_FRONT`] past a head of trace fields).
fn read_front(reader: &File, len: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    if len > MAX_FRONT + MAX_FRONT / 8 {
        return Err(io::Error::other("the header section is past its limit"));
    }
    let mut front = vec![0; len as usize];
    reader.read_exact_at(&mut front, 0)?;
    Ok(front)
}

/// Writes the message anew into `writer`: `front` (its head and header section) with
/// `splices` applied, then `body`, copied in [`MOVE_PIECE`] pieces.
fn rebuild(
    writer: &File,
    mut front: Vec<u8>,
    splices: &[Splice],
    body: &NewBody,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    splice_all(&mut front, splices)?;
    writer.set_len(0)?;
    writer.write_all_at(&front, 0)?;
    let reader = File::open(&body.path)?;
    let mut buf = vec![0; MOVE_PIECE];
    let mut at = 0u64;
    loop {
        let n = reader.read_at(&mut buf, at)?;
        if n == 0 {
            return Ok(());
        }
        writer.write_all_at(&buf[..n], front.len() as u64 + at)?;
        at += n as u64;
    }
}

/// Moves the bytes of `range` to start at `to`, a piece at a time in the order that never
/// overwrites a byte before it has moved: from the end backwards when they move towards
/// the end, from the start when they move towards the start.
fn move_bytes(reader: &File, writer: &File, range: Range<u64>, to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let (from, end) = (range.start, range.end);
    if to == from || from == end {
        return Ok(());
    }
    let mut buf = vec![0; MOVE_PIECE.min((end - from) as usize)];
    let mut move_piece = |start: u64, stop: u64| -> io::Result<()> {
        let piece = &mut buf[..(stop - start) as usize];
        reader.read_exact_at(piece, start)?;
        writer.write_all_at(piece, start - from + to)
    };
    if to > from {
        let mut stop = end;
        while stop > from {
            let start = stop.saturating_sub(MOVE_PIECE as u64).max(from);
            move_piece(start, stop)?;
            stop = start;
        }
    } else {
        let mut start = from;
        while start < end {
            let stop = (start + MOVE_PIECE as u64).min(end);
            move_piece(start, stop)?;
            start = stop;
        }
    }
    Ok(())
}

/// `Return-Path:` and `Received:`, dated now.
fn trace_fields(conn: &Connection<'_>, envelope: &Envelope, name: &Name) -> Vec<u8> {
    let mut head = trace::return_path(&envelope.mail_from);
    let date = rfc5322_now();
    head.push_str(&conn.received(envelope, &name.id, &date).to_string());
    head.into_bytes()
}

/// Runs blocking file work on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| Err(io::Error::other(format!("the store task failed: {err}"))))
}

/// Now, as an RFC 5322 date-time in UTC: `Sat, 28 Nov 2026 10:00:00 +0000`.
fn rfc5322_now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc2822)
        // Only years outside 1900..=9999 cannot be written; a clock that far off still
        // gets its message stored, under the epoch.
        .unwrap_or_else(|_| "Thu, 1 Jan 1970 00:00:00 +0000".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_rfc_5322() {
        let date = rfc5322_now();
        // `Sat, 28 Nov 2026 10:00:00 +0000`
        let parts: Vec<&str> = date.split(' ').collect();
        assert_eq!(parts.len(), 6, "{date}");
        assert!(parts[0].ends_with(',') && parts[0].len() == 4, "{date}");
        assert!(parts[1].parse::<u8>().is_ok_and(|d| (1..=31).contains(&d)));
        assert_eq!(parts[4].len(), 8);
        assert_eq!(parts[5], "+0000");
    }

    /// Where bytes go in, what goes in, and the ranges cut out.
    type Rewrite<'a> = (u64, &'a [u8], Vec<Range<u64>>);

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one cut is a list of one range
    fn a_files_front_is_rewritten_and_the_rest_moves_along_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Longer than a piece, and not a multiple of it, so pieces overlap their own move.
        let original: Vec<u8> = (0..MOVE_PIECE * 2 + 999).map(|i| (i % 251) as u8).collect();
        let n = original.len() as u64;
        let long = vec![b'L'; MOVE_PIECE + 7];
        let cases: [Rewrite; 7] = [
            // Only inserted: the rest moves towards the end.
            (0, b"X-A: 1\r\n", vec![]),
            (17, b"Y", vec![]),
            (n, b"end", vec![]),
            // Inserted and cut, growing, shrinking, or neither.
            (10, b"X-B: 2\r\n", vec![3..5, 40..41]),
            (10, b"Z", vec![0..100, 200..MOVE_PIECE as u64 + 300]),
            (0, b"", vec![5..10]),
            (3, &long, vec![0..7]),
        ];
        for (at, insert, cuts) in cases {
            std::fs::write(&path, &original).unwrap();
            let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let reader = File::open(&path).unwrap();
            let mut splices = vec![(0..0, insert.to_vec())];
            splices.extend(cuts.iter().map(|cut| (cut.clone(), Vec::new())));
            splices.sort_by_key(|(range, _)| range.start);
            rewrite_front(&reader, &writer, at, &splices).unwrap();
            let mut expected = original.clone();
            for cut in cuts.iter().rev() {
                expected.drain((at + cut.start) as usize..(at + cut.end) as usize);
            }
            expected.splice(at as usize..at as usize, insert.iter().copied());
            assert!(
                std::fs::read(&path).unwrap() == expected,
                "at {at}, {} bytes in, cuts {cuts:?}",
                insert.len()
            );
        }
    }

    #[test]
    fn a_cut_past_the_end_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"short").unwrap();
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let reader = File::open(&path).unwrap();
        assert!(rewrite_front(&reader, &writer, 2, &[(1..10, Vec::new())]).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
    }

    #[test]
    fn a_front_longer_than_the_limit_is_an_error_not_held_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        file.set_len(MAX_FRONT + 10).unwrap();
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let reader = File::open(&path).unwrap();
        let beyond = (MAX_FRONT..MAX_FRONT + 1, Vec::new());
        assert!(rewrite_front(&reader, &writer, 5, &[beyond]).is_err());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MAX_FRONT + 10);
    }

    #[tokio::test]
    async fn a_body_is_read_back_in_pieces_from_memory_and_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let maildir =
            Arc::new(Maildir::open(dir.path(), "mx.test", std::time::Duration::ZERO).unwrap());
        let small = b"Subject: small\r\n\r\nbody\r\n".to_vec();
        let large: Vec<u8> = (0..GATHER * 3).map(|i| b'a' + (i % 26) as u8).collect();
        for body in [small, large] {
            let mut spool = Spool::start(&maildir, maildir.unique_name(), b"Head: x\r\n".to_vec());
            for piece in body.chunks(10_000) {
                spool.push(piece.to_vec()).await;
            }
            let mut read = Vec::new();
            loop {
                let piece = spool.read_at(read.len() as u64, 7_000).await.unwrap();
                if piece.is_empty() {
                    break;
                }
                assert!(piece.len() <= 7_000);
                read.extend_from_slice(&piece);
            }
            assert!(
                read == body,
                "{} bytes read back as {}",
                body.len(),
                read.len()
            );
            assert_eq!(spool.read_body(5).await.unwrap(), &body[..5]);
            spool.discard().await;
        }
    }

    #[test]
    fn free_space_needed_is_one_and_a_half_times_the_largest_message() {
        assert_eq!(space_needed(26_214_400), 39_321_600);
        assert_eq!(space_needed(u64::MAX), u64::MAX);
    }
}
