//! The journal (`--durability journal`): an append-only file that makes a message durable
//! with one shared sync, before it is written into the Maildir.
//!
//! A message held in memory (at most [`crate::store::GATHER`] bytes) is appended to the
//! current segment file as one record; one `fdatasync` covers every record of its batch
//! (a group commit, see [`crate::group_commit`]: the sync that answers a message began
//! after its record was written), and only then does the client get its 250. The records
//! then go to a deliverer thread, off the client's path, which gathers them for a moment
//! ([`DELIVER_LINGER`], so that many share one batch's syncs), writes a batch of them into
//! `tmp/` without syncing each, makes the whole batch durable at once (`syncfs` of the
//! Maildir's file system, or an fsync of each file: [`DeliverySync`]), renames them into
//! `new/`, syncs `new/`, and only then records how far it got (the checkpoint, synced).
//! Segments wholly before the checkpoint are removed.
//!
//! At start, before serving, every record after the checkpoint is delivered again under
//! its own unique name: a file already in `new/` is skipped (it was renamed there only
//! after its data was synced, so it is whole). A record cut short by a crash (its length,
//! its checksum or its fields do not hold) ends its segment and is never delivered: it was
//! never answered 250. Nothing partial appears in `new/`, because the renames come after
//! the data's sync.
//!
//! Bounds: a segment is closed once it reaches its size; the records appended but not yet
//! in `new/` (the backlog, held in memory by the deliverer) are limited in bytes: when the
//! deliverer lags that far behind, a finished message waits for room before it is
//! appended, so its 250 waits (the client sees a slow answer, never a loss).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::group_commit::GroupCommit;

/// The first bytes of every record.
const MAGIC: [u8; 4] = *b"MSJ1";
/// Magic, payload length, payload CRC-32.
const HEADER: usize = 12;
/// The longest record recovery reads: a longer length is a torn or foreign record.
pub const MAX_RECORD: usize = 16 << 20;
/// The most records, and bytes, the deliverer writes into `tmp/` before one sync.
const DELIVER_BATCH: usize = 1024;
const DELIVER_BATCH_BYTES: usize = 16 << 20;
/// How long the deliverer waits, after the first record of a batch, for more to share the
/// batch's syncs (`syncfs`, `new/`, the checkpoint): delivery is off the client's path, so
/// this delays only the file's appearance in `new/`, never a 250.
const DELIVER_LINGER: Duration = Duration::from_millis(10);
/// The longest the deliverer waits before trying a failed batch again.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// How the deliverer makes a batch of files in `tmp/` durable before renaming them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliverySync {
    /// One `syncfs` of the Maildir's file system (it also writes back whatever else is
    /// dirty on that file system).
    Syncfs,
    /// An fsync of each file, spread over a few threads so that the flushes overlap.
    Fsync,
}

/// The journal's place and limits.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Directory of the segment files and the checkpoint.
    pub dir: PathBuf,
    /// How long the first record of a batch waits for others to share its sync.
    pub window: Duration,
    /// A segment is closed, and a new one begun, once it is this long.
    pub segment_size: u64,
    /// The most bytes of records appended but not yet delivered into the Maildir.
    pub backlog: u64,
    /// How the deliverer syncs a batch.
    pub sync: DeliverySync,
}

/// Where the deliverer puts messages: the Maildir's `tmp/`, `new/`, and the quarantine
/// folder's `new/`.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Files are written here first.
    pub tmp: PathBuf,
    /// Then renamed into here.
    pub new: PathBuf,
    /// Or into here, for quarantined messages.
    pub quarantine_new: PathBuf,
}

/// The journal: appends are answered once synced; delivery follows on its own thread.
#[derive(Debug)]
pub struct Journal {
    commit: GroupCommit<Entry>,
    backlog: Arc<Semaphore>,
    /// The backlog's size in KiB, the semaphore's permits.
    backlog_kib: u32,
}

/// A record on its way to the segment, with its share of the backlog.
#[derive(Debug)]
struct Entry {
    record: Vec<u8>,
    room: OwnedSemaphorePermit,
}

/// A synced record on its way to the Maildir: `end` is the offset just past it in
/// segment `segment`.
struct Pending {
    record: Vec<u8>,
    segment: u64,
    end: u64,
    /// Released (room for new records) once delivered.
    _room: OwnedSemaphorePermit,
}

/// One message in a record.
#[derive(Debug, PartialEq, Eq)]
struct Record<'a> {
    quarantine: bool,
    name: &'a str,
    data: &'a [u8],
}

impl Journal {
    /// Opens the journal in `settings.dir` (created when missing), delivers every record
    /// after the checkpoint into the Maildir laid out as `layout`, then starts the
    /// threads that sync appends and deliver them. Blocking.
    pub fn open(settings: &Settings, layout: Layout) -> io::Result<Journal> {
        fs::create_dir_all(&settings.dir)?;
        let (next, recovered) = recover(&settings.dir, &layout, settings.sync)?;
        if recovered > 0 {
            eprintln!(
                "mailsink: delivered {recovered} message(s) from the journal in {}",
                settings.dir.display()
            );
        }
        let (deliver, queue) = mpsc::channel();
        let mut writer = Writer::open(&settings.dir, next, settings.segment_size, deliver)?;
        let deliverer = Deliverer::open(&settings.dir, layout, settings.sync, next)?;
        std::thread::Builder::new()
            .name("journal-deliver".into())
            .spawn(move || deliverer.run(&queue))?;
        let commit = GroupCommit::start_with("journal-sync", settings.window, move |batch| {
            writer.write(batch)
        })?;
        let kib = (settings.backlog / 1024).clamp(1, Semaphore::MAX_PERMITS as u64);
        let backlog_kib = u32::try_from(kib).unwrap_or(u32::MAX);
        Ok(Journal {
            commit,
            backlog: Arc::new(Semaphore::new(backlog_kib as usize)),
            backlog_kib,
        })
    }

    /// Appends `message`, to be delivered as `name` (into the quarantine folder when
    /// `quarantine`); resolves once a sync that covers it has returned. Waits first for
    /// room in the backlog.
    pub async fn append(&self, name: &str, quarantine: bool, message: &[u8]) -> io::Result<()> {
        let record = encode(name, quarantine, message)?;
        let kib = u32::try_from(record.len().div_ceil(1024)).unwrap_or(u32::MAX);
        let room = self
            .backlog
            .clone()
            .acquire_many_owned(kib.clamp(1, self.backlog_kib))
            .await
            .map_err(|_| io::Error::other("the journal is closed"))?;
        self.commit.submit(Entry { record, room }).await
    }

    /// Resolves once every record appended so far is in the Maildir (for a clean
    /// shutdown).
    pub async fn drained(&self) {
        let _ = self.backlog.acquire_many(self.backlog_kib).await;
    }
}

/// `message` as a record: header, flags, name length, name, the message's bytes.
fn encode(name: &str, quarantine: bool, message: &[u8]) -> io::Result<Vec<u8>> {
    let name_len =
        u16::try_from(name.len()).map_err(|_| io::Error::other("a message name too long"))?;
    let mut record = Vec::with_capacity(HEADER + 3 + name.len() + message.len());
    record.extend_from_slice(&MAGIC);
    record.extend_from_slice(&[0; 8]);
    record.push(u8::from(quarantine));
    record.extend_from_slice(&name_len.to_le_bytes());
    record.extend_from_slice(name.as_bytes());
    record.extend_from_slice(message);
    let payload = record.len() - HEADER;
    if payload > MAX_RECORD {
        return Err(io::Error::other("a message too long for the journal"));
    }
    let crc = crc32fast::hash(&record[HEADER..]);
    record[4..8].copy_from_slice(&(payload as u32).to_le_bytes());
    record[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(record)
}

/// The message in a record's payload; `None` when the fields do not hold (a name that is
/// not a plain file name cannot come from mailsink).
fn parse(payload: &[u8]) -> Option<Record<'_>> {
    let (&flags, rest) = payload.split_first()?;
    let name_len = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(rest.get(2..2 + name_len)?).ok()?;
    if name.is_empty() || name.starts_with('.') || name.contains('/') || name.contains('\0') {
        return None;
    }
    Some(Record {
        quarantine: flags & 1 != 0,
        name,
        data: &rest[2 + name_len..],
    })
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

/// The ids of the segments in `dir`, in order.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        ids.extend(id);
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Creates segment `id`, its name durable in `dir` before any record is written to it.
fn create_segment(dir: &Path, id: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(segment_path(dir, id))?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// The checkpoint: every record before `offset` in segment `segment` (and in the
/// segments before it) is in the Maildir.
const CHECKPOINT: &str = "checkpoint";

/// The checkpoint in `dir`; `(0, 0)` (everything) when missing or unreadable.
fn read_checkpoint(dir: &Path) -> (u64, u64) {
    let Ok(bytes) = fs::read(dir.join(CHECKPOINT)) else {
        return (0, 0);
    };
    let Some(bytes) = bytes.get(..20) else {
        return (0, 0);
    };
    let crc = u32::from_le_bytes(bytes[16..20].try_into().unwrap_or_default());
    if crc32fast::hash(&bytes[..16]) != crc {
        return (0, 0);
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    (word(0), word(8))
}

/// Writes the checkpoint in place and syncs it.
fn write_checkpoint(file: &File, segment: u64, offset: u64) -> io::Result<()> {
    let mut bytes = [0; 20];
    bytes[..8].copy_from_slice(&segment.to_le_bytes());
    bytes[8..16].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..16]);
    bytes[16..].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&bytes, 0)?;
    file.sync_data()
}

fn open_checkpoint(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(CHECKPOINT))
}

/// Delivers every whole record after the checkpoint, then removes the segments; returns
/// the id for the next segment and how many messages were delivered.
fn recover(dir: &Path, layout: &Layout, sync: DeliverySync) -> io::Result<(u64, usize)> {
    let (from_segment, from_offset) = read_checkpoint(dir);
    let ids = segments(dir)?;
    let mut delivered = 0;
    for &id in ids.iter().filter(|&&id| id >= from_segment) {
        let from = if id == from_segment { from_offset } else { 0 };
        delivered += recover_segment(&segment_path(dir, id), from, layout, sync)?;
    }
    let next = ids
        .last()
        .map_or(from_segment, |last| last + 1)
        .max(from_segment);
    // All delivered: a crash from here on starts from `next`, which nothing precedes.
    write_checkpoint(&open_checkpoint(dir)?, next, 0)?;
    for id in ids {
        fs::remove_file(segment_path(dir, id))?;
    }
    Ok((next, delivered))
}

/// Delivers the whole records of the segment at `path` from `from`, in batches; stops at
/// the first record that is not whole.
fn recover_segment(
    path: &Path,
    from: u64,
    layout: &Layout,
    sync: DeliverySync,
) -> io::Result<usize> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(from.min(len)))?;
    let mut reader = BufReader::new(file);
    let mut at = from.min(len);
    let (mut batch, mut bytes, mut delivered) = (Vec::new(), 0, 0);
    while let Some(payload) = read_record(&mut reader, len - at)? {
        at += (HEADER + payload.len()) as u64;
        bytes += payload.len();
        batch.push(payload);
        if batch.len() >= DELIVER_BATCH || bytes >= DELIVER_BATCH_BYTES {
            delivered += deliver_payloads(&batch, layout, sync)?;
            (batch, bytes) = (Vec::new(), 0);
        }
    }
    delivered += deliver_payloads(&batch, layout, sync)?;
    if at < len {
        eprintln!(
            "mailsink: journal {}: the {} byte(s) after offset {at} are not a whole record \
             (a write cut short): not delivered",
            path.display(),
            len - at
        );
    }
    Ok(delivered)
}

/// The next record's payload, if it is whole: `left` bytes remain in the segment.
fn read_record(reader: &mut impl Read, left: u64) -> io::Result<Option<Vec<u8>>> {
    if left < HEADER as u64 {
        return Ok(None);
    }
    let mut header = [0; HEADER];
    reader.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if header[..4] != MAGIC || len > MAX_RECORD || len as u64 > left - HEADER as u64 {
        return Ok(None);
    }
    let mut payload = vec![0; len];
    reader.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc || parse(&payload).is_none() {
        return Ok(None);
    }
    Ok(Some(payload))
}

fn deliver_payloads(batch: &[Vec<u8>], layout: &Layout, sync: DeliverySync) -> io::Result<usize> {
    let records: Vec<Record> = batch.iter().filter_map(|p| parse(p)).collect();
    deliver(&records, layout, sync, true)
}

/// Puts `records` into the Maildir: each written into `tmp/` (no sync), all synced at
/// once, renamed, and `new/` synced. `recovering`: a record already in `new/` is skipped.
/// Returns how many were written.
fn deliver(
    records: &[Record],
    layout: &Layout,
    sync: DeliverySync,
    recovering: bool,
) -> io::Result<usize> {
    let mut written = Vec::with_capacity(records.len());
    for record in records {
        let dest = match record.quarantine {
            true => layout.quarantine_new.join(record.name),
            false => layout.new.join(record.name),
        };
        if recovering && dest.exists() {
            continue;
        }
        let tmp = layout.tmp.join(record.name);
        // Truncates what an earlier try may have left.
        let file = File::create(&tmp)?;
        file.write_all_at(record.data, 0)?;
        written.push((file, tmp, dest, record.quarantine));
    }
    let Some((first, ..)) = written.first() else {
        return Ok(0);
    };
    match sync {
        DeliverySync::Syncfs => rustix::fs::syncfs(first)?,
        DeliverySync::Fsync => fsync_all(written.iter().map(|(file, ..)| file))?,
    }
    let quarantined = written.iter().any(|(.., quarantine)| *quarantine);
    let count = written.len();
    for (file, tmp, dest, _) in written {
        drop(file);
        fs::rename(tmp, dest)?;
    }
    File::open(&layout.new)?.sync_all()?;
    if quarantined {
        File::open(&layout.quarantine_new)?.sync_all()?;
    }
    Ok(count)
}

/// Threads that fsync one batch's files at once, so that their flushes overlap.
const FSYNC_THREADS: usize = 8;

/// Fsyncs `files`, spread over up to [`FSYNC_THREADS`] threads.
fn fsync_all<'a>(files: impl Iterator<Item = &'a File>) -> io::Result<()> {
    let files: Vec<&File> = files.collect();
    let per_thread = files.len().div_ceil(FSYNC_THREADS).max(1);
    std::thread::scope(|scope| {
        let syncs: Vec<_> = files
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().try_for_each(|f| f.sync_all())))
            .collect();
        syncs.into_iter().try_for_each(|sync| {
            sync.join()
                .unwrap_or_else(|_| Err(io::Error::other("an fsync thread panicked")))
        })
    })
}

/// The segment being appended to; runs on the group commit's thread.
struct Writer {
    dir: PathBuf,
    id: u64,
    file: File,
    len: u64,
    segment_size: u64,
    deliver: Sender<Pending>,
}

impl Writer {
    fn open(
        dir: &Path,
        id: u64,
        segment_size: u64,
        deliver: Sender<Pending>,
    ) -> io::Result<Writer> {
        Ok(Writer {
            dir: dir.to_path_buf(),
            id,
            file: create_segment(dir, id)?,
            len: 0,
            segment_size,
            deliver,
        })
    }

    /// Appends a batch and syncs it; then hands its records to the deliverer.
    fn write(&mut self, batch: Vec<Entry>) -> io::Result<()> {
        let start = self.len;
        let records: Vec<&[u8]> = batch.iter().map(|e| &e.record[..]).collect();
        let written =
            write_pieces_at(&self.file, &records, start).and_then(|()| self.file.sync_data());
        if let Err(err) = written {
            self.undo(start);
            return Err(err);
        }
        let mut end = start;
        for Entry { record, room } in batch {
            end += record.len() as u64;
            let pending = Pending {
                record,
                segment: self.id,
                end,
                _room: room,
            };
            // The deliverer stops only when the process does.
            let _ = self.deliver.send(pending);
        }
        self.len = end;
        if self.len >= self.segment_size {
            self.rotate();
        }
        Ok(())
    }

    /// A batch whose write or sync failed is answered 451: its records are cut off so
    /// that recovery does not deliver them too. If the segment cannot be cut, the next
    /// records go to a new one (those records may then be delivered after a crash as
    /// well as retried by their clients: a duplicate, never a loss).
    fn undo(&mut self, start: u64) {
        let cut = self
            .file
            .set_len(start)
            .and_then(|()| self.file.sync_data());
        if let Err(err) = cut {
            eprintln!("mailsink: journal: cannot cut a failed batch off: {err}");
            self.rotate();
        }
    }

    /// Begins the next segment; on failure keeps appending to this one.
    fn rotate(&mut self) {
        match create_segment(&self.dir, self.id + 1) {
            Ok(file) => {
                self.file = file;
                self.id += 1;
                self.len = 0;
            }
            Err(err) => eprintln!("mailsink: journal: cannot begin a new segment: {err}"),
        }
    }
}

/// The most pieces one `pwritev` takes (Linux's `IOV_MAX`).
const MAX_IOV: usize = 1024;

/// Writes `pieces` one after another from `offset`, with `pwritev` (no copy into one
/// buffer first).
fn write_pieces_at(file: &File, pieces: &[&[u8]], mut offset: u64) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice> = pieces.iter().map(|p| io::IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = rustix::io::pwritev(file, &rest[..rest.len().min(MAX_IOV)], offset)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        offset += n as u64;
        io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Delivers synced records into the Maildir, on a thread of its own.
struct Deliverer {
    dir: PathBuf,
    layout: Layout,
    sync: DeliverySync,
    checkpoint: File,
    /// The oldest segment not yet removed.
    oldest: u64,
}

impl Deliverer {
    fn open(dir: &Path, layout: Layout, sync: DeliverySync, oldest: u64) -> io::Result<Self> {
        Ok(Deliverer {
            dir: dir.to_path_buf(),
            layout,
            sync,
            checkpoint: open_checkpoint(dir)?,
            oldest,
        })
    }

    /// Takes what is queued, up to a batch, delivers it, checkpoints; until the process
    /// ends.
    fn run(mut self, queue: &Receiver<Pending>) {
        while let Ok(first) = queue.recv() {
            let mut bytes = first.record.len();
            let mut batch = vec![first];
            let mut take_sent = |batch: &mut Vec<Pending>| {
                while batch.len() < DELIVER_BATCH && bytes < DELIVER_BATCH_BYTES {
                    let Ok(next) = queue.try_recv() else {
                        return false;
                    };
                    bytes += next.record.len();
                    batch.push(next);
                }
                true
            };
            // Asleep for the linger rather than woken by each record: what is sent
            // meanwhile waits in the channel, and the sync thread's sends wake no one.
            if !take_sent(&mut batch) {
                std::thread::sleep(DELIVER_LINGER);
                take_sent(&mut batch);
            }
            self.deliver_until_done(&batch);
            let last = &batch[batch.len() - 1];
            self.advance(last.segment, last.end);
        }
    }

    /// Delivers `batch`, trying again (with waits growing to [`MAX_RETRY_WAIT`]) while the
    /// Maildir refuses: the records are safe in the journal, and the backlog's bound
    /// holds new ones back meanwhile.
    fn deliver_until_done(&self, batch: &[Pending]) {
        let records: Vec<Record> = batch
            .iter()
            .filter_map(|p| parse(&p.record[HEADER..]))
            .collect();
        let mut wait = Duration::from_millis(100);
        let mut retrying = false;
        while let Err(err) = deliver(&records, &self.layout, self.sync, retrying) {
            eprintln!(
                "mailsink: journal: cannot deliver {} message(s), trying again in {wait:?}: {err}",
                records.len()
            );
            std::thread::sleep(wait);
            wait = (wait * 2).min(MAX_RETRY_WAIT);
            retrying = true;
        }
        crate::metrics::maildir_synced();
    }

    /// Records that everything up to `end` of `segment` is delivered, and removes the
    /// segments before it.
    fn advance(&mut self, segment: u64, end: u64) {
        if let Err(err) = write_checkpoint(&self.checkpoint, segment, end) {
            // Recovery then delivers again what is already there, and skips it.
            eprintln!("mailsink: journal: cannot write the checkpoint: {err}");
            return;
        }
        while self.oldest < segment {
            let removed = fs::remove_file(segment_path(&self.dir, self.oldest));
            if let Err(err) = removed.or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            }) {
                eprintln!("mailsink: journal: cannot remove a delivered segment: {err}");
                return;
            }
            self.oldest += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(root: &Path) -> Layout {
        let layout = Layout {
            tmp: root.join("tmp"),
            new: root.join("new"),
            quarantine_new: root.join(".Quarantine/new"),
        };
        for dir in [&layout.tmp, &layout.new, &layout.quarantine_new] {
            fs::create_dir_all(dir).unwrap();
        }
        layout
    }

    fn settings(root: &Path) -> Settings {
        Settings {
            dir: root.join("journal"),
            window: Duration::ZERO,
            segment_size: 64 << 20,
            backlog: 64 << 20,
            sync: DeliverySync::Syncfs,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_record_reads_back_as_written_and_any_damage_is_refused() {
        let record = encode("1.M1P2Q3.mx", true, b"Subject: x\r\n\r\nbody").unwrap();
        let whole = read_record(&mut &record[..], record.len() as u64).unwrap();
        let payload = whole.expect("a whole record");
        let expected = Record {
            quarantine: true,
            name: "1.M1P2Q3.mx",
            data: b"Subject: x\r\n\r\nbody",
        };
        assert_eq!(parse(&payload), Some(expected));
        // Cut anywhere: not whole.
        for cut in 0..record.len() {
            let torn = &record[..cut];
            assert_eq!(
                read_record(&mut &torn[..], cut as u64).unwrap(),
                None,
                "{cut}"
            );
        }
        // Any byte changed: refused by the magic, the length or the checksum.
        for at in 0..record.len() {
            let mut bad = record.clone();
            bad[at] ^= 0x20;
            assert_eq!(
                read_record(&mut &bad[..], bad.len() as u64).unwrap(),
                None,
                "{at}"
            );
        }
    }

    #[test]
    fn pieces_are_written_whole_and_in_order_past_one_pwritevs_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let pieces: Vec<Vec<u8>> = (0..MAX_IOV * 2 + 5)
            .map(|n| vec![(n % 251) as u8; n % 7])
            .collect();
        let refs: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
        file.write_all_at(b"head", 0).unwrap();
        write_pieces_at(&file, &refs, 4).unwrap();
        let mut expected = b"head".to_vec();
        expected.extend(pieces.concat());
        assert!(fs::read(dir.path().join("f")).unwrap() == expected);
    }

    #[test]
    fn a_name_that_is_not_a_plain_file_name_is_refused() {
        for name in ["", "../x", "a/b", ".hidden"] {
            let record = encode(name, false, b"x").unwrap();
            assert_eq!(
                read_record(&mut &record[..], record.len() as u64).unwrap(),
                None
            );
        }
    }

    /// Recovery: whole records after the checkpoint are delivered, exactly once, what is
    /// in `new/` already is kept, and a torn last record is never delivered.
    #[test]
    fn recovery_delivers_whole_records_once_and_ignores_a_torn_tail() {
        let root = tempfile::tempdir().unwrap();
        let layout = layout(root.path());
        let dir = root.path().join("journal");
        fs::create_dir_all(&dir).unwrap();
        let mut segment = Vec::new();
        for n in 0..5 {
            let body = format!("Subject: {n}\r\n\r\nbody {n}\r\n");
            segment.extend(encode(&format!("m{n}"), n == 4, body.as_bytes()).unwrap());
        }
        let torn = encode("m5", false, b"Subject: 5\r\n\r\nbody 5\r\n").unwrap();
        segment.extend_from_slice(&torn[..torn.len() - 3]);
        fs::write(segment_path(&dir, 7), &segment).unwrap();
        // m1 was delivered before the crash; m0 too, but the checkpoint is older.
        fs::write(layout.new.join("m1"), "Subject: 1\r\n\r\nbody 1\r\n").unwrap();
        // A leftover in tmp/ from a delivery the crash cut short.
        fs::write(layout.tmp.join("m2"), "Subj").unwrap();
        let (next, delivered) = recover(&dir, &layout, DeliverySync::Syncfs).unwrap();
        assert_eq!((next, delivered), (8, 4), "m1 was there; m5 is torn");
        assert_eq!(names(&layout.new), ["m0", "m1", "m2", "m3"]);
        assert_eq!(names(&layout.quarantine_new), ["m4"]);
        assert_eq!(
            fs::read(layout.new.join("m2")).unwrap(),
            b"Subject: 2\r\n\r\nbody 2\r\n"
        );
        assert!(names(&layout.tmp).is_empty());
        assert_eq!(names(&dir), [CHECKPOINT], "delivered segments are removed");
        assert_eq!(read_checkpoint(&dir), (8, 0));
        // Nothing is delivered twice.
        assert_eq!(recover(&dir, &layout, DeliverySync::Fsync).unwrap(), (8, 0));
    }

    #[test]
    fn recovery_starts_at_the_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let layout = layout(root.path());
        let dir = root.path().join("journal");
        fs::create_dir_all(&dir).unwrap();
        let first = encode("m0", false, b"zero").unwrap();
        let mut segment = first.clone();
        segment.extend(encode("m1", false, b"one").unwrap());
        fs::write(segment_path(&dir, 3), &segment).unwrap();
        fs::write(segment_path(&dir, 2), encode("old", false, b"x").unwrap()).unwrap();
        write_checkpoint(&open_checkpoint(&dir).unwrap(), 3, first.len() as u64).unwrap();
        // m0 was delivered and then read by the consumer (moved out of new/).
        assert_eq!(
            recover(&dir, &layout, DeliverySync::Syncfs).unwrap(),
            (4, 1)
        );
        assert_eq!(names(&layout.new), ["m1"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appended_messages_reach_new_and_their_segments_go() {
        let root = tempfile::tempdir().unwrap();
        let layout = layout(root.path());
        let mut settings = settings(root.path());
        settings.segment_size = 1000;
        let journal = Journal::open(&settings, layout.clone()).unwrap();
        // One after another: each batch is one record, and segments fill one by one.
        for n in 0..50 {
            let body = vec![b'a' + (n % 26) as u8; 100 + n];
            journal
                .append(&format!("m{n:02}"), false, &body)
                .await
                .unwrap();
        }
        journal.drained().await;
        let names = names(&layout.new);
        assert_eq!(names.len(), 50);
        for (n, name) in names.iter().enumerate() {
            let body = fs::read(layout.new.join(name)).unwrap();
            assert_eq!(body, vec![b'a' + (n % 26) as u8; 100 + n]);
        }
        // 50 records of ~120 bytes in segments of 1,000: several segments, those before
        // the last checkpoint's removed.
        let left = segments(&settings.dir).unwrap();
        assert!(left.len() <= 2, "segments left: {left:?}");
        assert!(left[0] > 0, "the first segments were removed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_backlog_holds_the_append_until_delivery_makes_room() {
        let root = tempfile::tempdir().unwrap();
        let layout = layout(root.path());
        let mut settings = settings(root.path());
        settings.backlog = 4096;
        settings.sync = DeliverySync::Fsync;
        let journal = Arc::new(Journal::open(&settings, layout.clone()).unwrap());
        // The deliverer cannot rename into new/ while it is not a directory.
        fs::remove_dir(&layout.new).unwrap();
        fs::write(&layout.new, "").unwrap();
        journal.append("m0", false, &[b'x'; 3000]).await.unwrap();
        let second = tokio::spawn({
            let journal = journal.clone();
            async move { journal.append("m1", false, &[b'y'; 3000]).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "appended past the backlog's bound");
        fs::remove_file(&layout.new).unwrap();
        fs::create_dir(&layout.new).unwrap();
        tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("room once m0 was delivered")
            .unwrap()
            .unwrap();
        journal.drained().await;
        assert_eq!(names(&layout.new), ["m0", "m1"]);
    }
}
