//! The Maildir: `tmp/`, `new/` and `cur/`, unique names, and the blocking file operations
//! of a delivery.
//!
//! A message is written to `tmp/` as it arrives (see [`crate::store`]); once whole, the file
//! is fsynced and renamed into `new/`, and `new/` is fsynced: only then is it delivered, and
//! only then does the client get its 250. The file syncs run on the messages' own blocking
//! threads, at once, so the file system merges them into shared journal commits; the sync
//! of `new/` is a group commit (see [`crate::group_commit`]): one for every message renamed
//! before it began. Files left in `tmp/` by a crash are removed at start once they are older
//! than 36 hours, as the Maildir convention says.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::group_commit::GroupCommit;
use crate::journal::{self, Journal};

/// How old a file in `tmp/` must be before it is taken for a crash's leftover (the
/// Maildir convention: a delivery never takes this long).
pub const STALE_TMP: Duration = Duration::from_secs(36 * 60 * 60);

/// The Maildir++ folder quarantined messages go to.
pub const QUARANTINE: &str = ".Quarantine";

/// A Maildir with `tmp/`, `new/` and `cur/`, and its quarantine folder.
#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    /// The host part of file names, with `/` and `:` escaped as the Maildir spec says.
    host: String,
    counter: AtomicU64,
    /// The process id, read once (a system call each time it is asked for).
    pid: u32,
    /// Syncs `new/` for every message renamed into it.
    new_synced: GroupCommit,
    /// With `--durability journal`: where messages held in memory are made durable.
    journal: Option<Journal>,
}

/// The name of one message: unique, the same in `tmp/` and `new/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    /// `M<micros>P<pid>Q<n>`: the middle part of the file name, and the `id` of the
    /// message's `Received:` field.
    pub id: String,
    /// `<seconds>.<id>.<host>`.
    pub file: String,
}

impl Maildir {
    /// Opens `root`, creating it and its three subdirectories when missing, and removes the
    /// files in `tmp/` older than [`STALE_TMP`]. A message renamed into `new/` waits up to
    /// `window` for others to share the sync of `new/` with it.
    pub fn open(root: impl Into<PathBuf>, hostname: &str, window: Duration) -> io::Result<Maildir> {
        let root = root.into();
        for sub in ["tmp", "new", "cur"] {
            fs::create_dir_all(root.join(sub))?;
            fs::create_dir_all(root.join(QUARANTINE).join(sub))?;
        }
        // Absolute, so the log's file names are usable from anywhere.
        let root = fs::canonicalize(&root)?;
        let host = hostname.replace('/', "\\057").replace(':', "\\072");
        let new = root.join("new");
        let new_synced = GroupCommit::start("maildir-sync", window, move || {
            // Opened each time: the directory the messages were renamed into, even if new/
            // was replaced since the start.
            let synced = File::open(&new).and_then(|dir| dir.sync_all());
            crate::metrics::maildir_synced();
            synced
        })?;
        let maildir = Maildir {
            root,
            host,
            counter: AtomicU64::new(0),
            pid: std::process::id(),
            new_synced,
            journal: None,
        };
        let removed = maildir.remove_stale(STALE_TMP, SystemTime::now())?;
        if removed > 0 {
            eprintln!(
                "mailsink: removed {removed} file(s) older than 36 hours from {}",
                maildir.root.join("tmp").display()
            );
        }
        Ok(maildir)
    }

    /// Makes messages durable in a journal (see [`crate::journal`]) before they are
    /// written here; first delivers what the journal holds from before. Blocking.
    pub fn journaled(mut self, settings: &journal::Settings) -> io::Result<Maildir> {
        let layout = journal::Layout {
            tmp: self.root.join("tmp"),
            new: self.new_dir(),
            quarantine_new: self.root.join(QUARANTINE).join("new"),
        };
        self.journal = Some(Journal::open(settings, layout)?);
        Ok(self)
    }

    /// The journal's default directory: `journal` in the Maildir (Maildir readers look
    /// only at `tmp`, `new`, `cur` and the folders, whose names begin with a dot).
    pub fn default_journal_dir(root: &std::path::Path) -> PathBuf {
        root.join("journal")
    }

    /// With a journal: appends the whole message `bytes`, to appear as `name` in `new/`
    /// (or the quarantine folder's); resolves with its path there once the journal's
    /// sync covers it, though the file itself appears a moment later. `None` without a
    /// journal.
    pub async fn journal_message(
        &self,
        name: &Name,
        quarantine: bool,
        bytes: &[u8],
    ) -> Option<io::Result<PathBuf>> {
        let journal = self.journal.as_ref()?;
        let dir = if quarantine {
            self.root.join(QUARANTINE).join("new")
        } else {
            self.new_dir()
        };
        let appended = journal.append(&name.file, quarantine, bytes).await;
        Some(appended.map(|()| dir.join(&name.file)))
    }

    /// Resolves once every message in the journal is in `new/` (at once without one).
    pub async fn drained(&self) {
        if let Some(journal) = &self.journal {
            journal.drained().await;
        }
    }

    /// Removes the files in `tmp/` last modified more than `age` before `now`; returns how
    /// many.
    pub fn remove_stale(&self, age: Duration, now: SystemTime) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let modified = meta.modified()?;
            let stale = now
                .duration_since(modified)
                .is_ok_and(|elapsed| elapsed > age);
            if meta.is_file() && stale {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Bytes free for an unprivileged writer on the Maildir's filesystem.
    pub fn free_space(&self) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.root)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// A new unique name: unique per process by the counter, and across processes by the
    /// pid and the time. The microseconds have six digits, so that names sort in the order
    /// the messages came within a second.
    pub fn unique_name(&self) -> Name {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // Written by hand: `format!` costs more than the rest of a message's name-making.
        let mut id = String::with_capacity(40);
        id.push('M');
        push_decimal(&mut id, u64::from(now.subsec_micros()), 6);
        id.push('P');
        push_decimal(&mut id, u64::from(self.pid), 1);
        id.push('Q');
        push_decimal(&mut id, n, 1);
        let mut file = String::with_capacity(id.len() + self.host.len() + 22);
        push_decimal(&mut file, now.as_secs(), 1);
        file.push('.');
        file.push_str(&id);
        file.push('.');
        file.push_str(&self.host);
        Name { id, file }
    }

    /// Where a message is written while it arrives.
    pub fn tmp_path(&self, name: &Name) -> PathBuf {
        self.root.join("tmp").join(&name.file)
    }

    /// Creates the file of a new message in `tmp/`. Blocking.
    pub fn create(&self, name: &Name) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.tmp_path(name))
    }

    /// Where delivered messages appear.
    pub fn new_dir(&self) -> PathBuf {
        self.root.join("new")
    }

    /// Puts a message whose bytes are all in `file` into `new/`, or into the quarantine
    /// folder's `new/`: fsync, then rename. Returns the path, which is not durable before
    /// [`Maildir::commit`] says so. On failure nothing is left in `new/`, and the file in
    /// `tmp/` is for the caller to remove. Blocking.
    pub fn place(&self, file: File, name: &Name, quarantine: bool) -> io::Result<PathBuf> {
        // Whole and synced before its name appears in new/: a crash can lose the name,
        // never show a partial message.
        let dir = if quarantine {
            self.root.join(QUARANTINE).join("new")
        } else {
            self.new_dir()
        };
        file.sync_all()?;
        drop(file);
        let new = dir.join(&name.file);
        fs::rename(self.tmp_path(name), &new)?;
        Ok(new)
    }

    /// Waits until the name of a message [`Maildir::place`]d at `path` is durable: a sync of
    /// `new/` that began after the rename has returned. On failure the file is removed from
    /// `new/`.
    pub async fn commit(&self, path: PathBuf) -> io::Result<PathBuf> {
        let synced = match path.parent() {
            Some(dir) if dir != self.new_dir() => {
                // The quarantine folder: rare enough for a sync of its own.
                let dir = dir.to_path_buf();
                tokio::task::spawn_blocking(move || File::open(dir)?.sync_all())
                    .await
                    .unwrap_or_else(|join| Err(io::Error::other(join)))
            }
            _ => self.new_synced.sync().await,
        };
        match synced {
            Ok(()) => Ok(path),
            Err(err) => {
                // The client is told to retry; do not leave a copy that might also survive.
                let _ = fs::remove_file(&path);
                Err(err)
            }
        }
    }

    /// Removes a message's file from `tmp/`, if it is there. Blocking.
    pub fn discard(&self, name: &Name) {
        match fs::remove_file(self.tmp_path(name)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => eprintln!("mailsink: cannot remove {}: {err}", name.file),
        }
    }
}

/// Appends `n` in decimal to `out`, with leading zeros up to `width` digits.
fn push_decimal(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    while n > 0 || at == digits.len() {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = at.min(digits.len().saturating_sub(width));
    out.extend(digits[start..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn open(root: &std::path::Path, hostname: &str) -> Maildir {
        Maildir::open(root, hostname, Duration::ZERO).unwrap()
    }

    fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    }

    fn write_and_deliver(maildir: &Maildir, body: &[u8]) -> io::Result<PathBuf> {
        let name = maildir.unique_name();
        let mut file = maildir.create(&name)?;
        file.write_all(body)?;
        let placed = maildir.place(file, &name, false)?;
        block_on(maildir.commit(placed))
    }

    #[test]
    fn delivers_exact_bytes_into_new_under_unique_names() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = open(&dir.path().join("md"), "host/with:odd");
        let body = b"Subject: x\r\n\r\n.leading dot kept\r\nno final newline";
        let path = write_and_deliver(&maildir, body).unwrap();
        assert_eq!(path.parent().unwrap(), dir.path().join("md/new"));
        assert_eq!(fs::read(&path).unwrap(), body);
        assert!(path.to_str().unwrap().ends_with(".host\\057with\\072odd"));
        assert_eq!(fs::read_dir(dir.path().join("md/tmp")).unwrap().count(), 0);
        let second = write_and_deliver(&maildir, b"").unwrap();
        assert_ne!(path, second);
        assert_eq!(fs::read(second).unwrap(), b"");
    }

    #[test]
    fn the_id_is_the_middle_of_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = open(dir.path(), "mx.test");
        let name = maildir.unique_name();
        let parts: Vec<&str> = name.file.splitn(3, '.').collect();
        assert_eq!(parts[1], name.id);
        assert_eq!(parts[2], "mx.test");
        assert!(name.id.starts_with('M') && name.id.contains('P') && name.id.contains('Q'));
        assert_ne!(maildir.unique_name().id, name.id);
    }

    #[test]
    fn decimals_are_written_as_format_would() {
        for (n, width) in [
            (0, 1),
            (0, 6),
            (7, 6),
            (123_456, 6),
            (1_234_567, 6),
            (u64::MAX, 1),
        ] {
            let mut out = String::from("x");
            push_decimal(&mut out, n, width);
            assert_eq!(out, format!("x{n:0width$}"));
        }
    }

    #[test]
    fn a_failed_rename_leaves_nothing_in_new() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = open(dir.path(), "h");
        let name = maildir.unique_name();
        let file = maildir.create(&name).unwrap();
        fs::remove_file(maildir.tmp_path(&name)).unwrap();
        assert!(maildir.place(file, &name, false).is_err());
        assert_eq!(fs::read_dir(dir.path().join("new")).unwrap().count(), 0);
    }

    #[test]
    fn files_in_tmp_older_than_36_hours_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        let now = SystemTime::now();
        for (name, age_hours) in [("old", 37), ("young", 35)] {
            let file = File::create(tmp.join(name)).unwrap();
            file.set_modified(now - Duration::from_secs(age_hours * 3600))
                .unwrap();
        }
        fs::create_dir(tmp.join("a-directory")).unwrap();
        let maildir = open(dir.path(), "h");
        let mut left: Vec<String> = fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a-directory", "young"]);
        assert_eq!(maildir.remove_stale(STALE_TMP, now).unwrap(), 0);
    }
}
