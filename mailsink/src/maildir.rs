//! Durable delivery into a Maildir.
//!
//! A message is written to `tmp/`, the file is fsynced, renamed into `new/`, and `new/` is
//! fsynced: only then does [`Maildir::deliver`] return, and only then does the client get
//! its 250. The file holds the message bytes exactly as the session received them (after
//! dot-unstuffing); nothing is added.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A Maildir with `tmp/`, `new/` and `cur/`.
#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    /// The host part of file names, with `/` and `:` escaped as the Maildir spec says.
    host: String,
    counter: AtomicU64,
}

impl Maildir {
    /// Opens `root`, creating it and its three subdirectories when missing.
    pub fn open(root: impl Into<PathBuf>, hostname: &str) -> io::Result<Maildir> {
        let root = root.into();
        for sub in ["tmp", "new", "cur"] {
            fs::create_dir_all(root.join(sub))?;
        }
        // Absolute, so the log's file names are usable from anywhere.
        let root = fs::canonicalize(&root)?;
        let host = hostname.replace('/', "\\057").replace(':', "\\072");
        Ok(Maildir {
            root,
            host,
            counter: AtomicU64::new(0),
        })
    }

    /// Stores `body` durably and returns the path of the file in `new/`. Blocking: call it
    /// from a blocking thread.
    pub fn deliver(&self, body: &[u8]) -> io::Result<PathBuf> {
        let name = self.unique_name();
        let tmp = self.root.join("tmp").join(&name);
        let new = self.root.join("new").join(&name);
        let written = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(body)?;
            file.sync_all()
        })();
        if let Err(err) = written {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        if let Err(err) = fs::rename(&tmp, &new) {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        // The rename is durable only once the directory entry is.
        if let Err(err) = File::open(self.root.join("new")).and_then(|dir| dir.sync_all()) {
            // The client is told to retry; do not leave a copy that might also survive.
            let _ = fs::remove_file(&new);
            return Err(err);
        }
        Ok(new)
    }

    /// `<seconds>.M<micros>P<pid>Q<n>.<host>`: unique per process by the counter, and
    /// across processes by the pid and time.
    fn unique_name(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            n,
            self.host
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_exact_bytes_into_new() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = Maildir::open(dir.path().join("md"), "host/with:odd").unwrap();
        let body = b"Subject: x\r\n\r\n.leading dot kept\r\nno final newline";
        let path = maildir.deliver(body).unwrap();
        assert_eq!(path.parent().unwrap(), dir.path().join("md/new"));
        assert_eq!(fs::read(&path).unwrap(), body);
        assert!(path.to_str().unwrap().ends_with(".host\\057with\\072odd"));
        assert_eq!(fs::read_dir(dir.path().join("md/tmp")).unwrap().count(), 0);
        let second = maildir.deliver(b"").unwrap();
        assert_ne!(path, second);
        assert_eq!(fs::read(second).unwrap(), b"");
    }

    #[test]
    fn failure_leaves_nothing_in_new() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = Maildir::open(dir.path(), "h").unwrap();
        fs::remove_dir(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("tmp"), b"not a directory").unwrap();
        assert!(maildir.deliver(b"x").is_err());
        assert_eq!(fs::read_dir(dir.path().join("new")).unwrap().count(), 0);
    }
}
