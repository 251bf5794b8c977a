//! The downstream servers of the relay tests, started for real on 127.0.0.1 and stopped on
//! drop: Postfix's smtp-sink, and Dovecot's LMTP server delivering into Maildirs. A server
//! that cannot start fails the test (with how to install it); nothing is skipped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every wait here is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// A port nobody listens on now (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits (bounded) until `probe` returns text containing `wanted`: for what a server
/// writes to a pipe that a reader thread collects.
pub fn eventually_contains(wanted: &str, probe: impl Fn() -> String) {
    let start = Instant::now();
    loop {
        let text = probe();
        if text.contains(wanted) {
            return;
        }
        assert!(start.elapsed() < WAIT, "never saw {wanted:?} in: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn id_of(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A directory that a server which dropped its privileges (to `nobody`) can write into.
fn open_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
}

/// A temporary directory that other users may enter (tempfile makes them 0700).
fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Reads the greeting of a server at `addr`, retrying until it answers (bounded).
fn wait_for_greeting(
    mut connect: impl FnMut() -> std::io::Result<Box<dyn Read>>,
    what: &str,
    log: &Path,
) {
    let start = Instant::now();
    loop {
        if let Ok(stream) = connect() {
            let mut line = String::new();
            if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("220") {
                return;
            }
        }
        if start.elapsed() > WAIT {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not greet within {WAIT:?}; its output:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `name` on PATH, else in /usr/sbin (where Debian puts both servers, and which a
/// non-root PATH may lack).
fn program(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    if !on_path && sbin.is_file() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

fn spawn(command: &mut Command, what: &str, install: &str) -> Child {
    command
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({e}): install it ({install})"))
}

/// Postfix's smtp-sink, each transaction dumped to a file of its own.
pub struct SmtpSink {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// smtp-sink on a free loopback port with `options` (see smtp-sink(1): `-f`/`-r`
    /// refuse commands hard or soft, `-B`/`-b` set those replies, `-Q` answers 421 and
    /// closes, `-W command:delay` waits before answering, `-L` speaks LMTP).
    pub fn start(options: &[&str]) -> SmtpSink {
        let dir = shared_tempdir();
        let dumps = dir.path().join("dumps");
        open_dir(&dumps);
        let log = dir.path().join("smtp-sink.log");
        let port = free_port();
        let mut command = Command::new(program("smtp-sink"));
        if is_root() {
            command.args(["-u", "nobody"]);
        }
        command
            .arg("-d")
            .arg(format!("{}/%H%M%S.", dumps.display()))
            .args(options)
            .arg(format!("127.0.0.1:{port}"))
            .arg("64");
        let output = std::fs::File::create(&log).unwrap();
        command.stderr(output.try_clone().unwrap()).stdout(output);
        let child = spawn(&mut command, "smtp-sink", "apt-get install postfix");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for_greeting(
            || TcpStream::connect_timeout(&addr, WAIT).map(|s| Box::new(s) as Box<dyn Read>),
            "smtp-sink",
            &log,
        );
        SmtpSink { child, addr, dir }
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The transactions dumped so far, oldest first.
    pub fn dumps(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("dumps"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
            .collect()
    }

    /// Waits until `n` transactions are dumped.
    pub fn wait_dumps(&self, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let dumps = self.dumps();
            if dumps.len() >= n && dumps.iter().all(|d| d.ends_with("\n\n")) {
                return dumps;
            }
            assert!(
                start.elapsed() < WAIT,
                "waited for {n} dumps, have {dumps:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Dovecot with only its LMTP server, on a loopback port and a UNIX socket, delivering
/// into `<dir>/mail/<name>/Maildir` for `alice@example.org` and `bob@example.org` (a
/// passwd-file); any other recipient is unknown.
pub struct Dovecot {
    child: Child,
    pub addr: SocketAddr,
    pub socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Dovecot {
    pub fn start() -> Dovecot {
        Dovecot::start_with(false)
    }

    /// With `bob_is_full`, Dovecot's quota plugin is on and bob's mailbox takes no more
    /// (one byte of quota): Dovecot checks it after the data, refusing bob alone.
    pub fn start_with(bob_is_full: bool) -> Dovecot {
        let dir = shared_tempdir();
        let root = dir.path();
        let mail = root.join("mail");
        open_dir(&mail);
        std::fs::create_dir_all(root.join("run")).unwrap();
        let (uid, gid, user) = if is_root() {
            ("65534".to_string(), "65534".to_string(), None)
        } else {
            (id_of("-u"), id_of("-g"), Some(id_of("-un")))
        };
        let mut passwd = String::new();
        for name in ["alice", "bob"] {
            let home = mail.join(name);
            let extra = if name == "bob" && bob_is_full {
                "userdb_quota_rule=*:storage=1B"
            } else {
                ""
            };
            passwd.push_str(&format!(
                "{name}@example.org:{{PLAIN}}x:{uid}:{gid}::{}::{extra}\n",
                home.display()
            ));
        }
        let quota = if bob_is_full {
            "mail_plugins = $mail_plugins quota\nplugin {\n  quota = maildir:User quota\n}\n"
        } else {
            ""
        };
        std::fs::write(root.join("passwd"), passwd).unwrap();
        let port = free_port();
        let users = match &user {
            // Not root: every Dovecot process runs as this user.
            Some(user) => format!("default_internal_user = {user}\ndefault_login_user = {user}\n"),
            None => String::new(),
        };
        let config = format!(
            "base_dir = {root}/run\n\
             state_dir = {root}/state\n\
             log_path = {root}/dovecot.log\n\
             protocols = lmtp\n\
             listen = 127.0.0.1\n\
             ssl = no\n\
             first_valid_uid = 1\n\
             {users}\
             mail_location = maildir:~/Maildir\n\
             passdb {{\n  driver = passwd-file\n  args = {root}/passwd\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {root}/passwd\n}}\n\
             service lmtp {{\n\
             \x20 inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
             \x20 unix_listener lmtp {{\n    mode = 0666\n  }}\n\
             }}\n\
             {quota}",
            root = root.display()
        );
        let conf = root.join("dovecot.conf");
        std::fs::write(&conf, config).unwrap();
        let log = root.join("dovecot.log");
        let mut command = Command::new(program("dovecot"));
        command
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdout(std::fs::File::create(root.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(root.join("stderr.log")).unwrap());
        let child = spawn(&mut command, "dovecot", "apt-get install dovecot-lmtpd");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let socket = root.join("run/lmtp");
        let mut dovecot = Dovecot {
            child,
            addr,
            socket,
            dir,
        };
        let logs = [log.clone(), dovecot.dir.path().join("stderr.log")];
        let failed = |dovecot: &mut Dovecot| -> Option<String> {
            dovecot.child.try_wait().ok().flatten().map(|status| {
                let text: Vec<String> = logs
                    .iter()
                    .map(|p| std::fs::read_to_string(p).unwrap_or_default())
                    .collect();
                format!("dovecot exited ({status}): {}", text.join("\n"))
            })
        };
        let start = Instant::now();
        loop {
            if let Some(why) = failed(&mut dovecot) {
                panic!("{why}");
            }
            if TcpStream::connect_timeout(&addr, WAIT).is_ok() && dovecot.socket.exists() {
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "dovecot did not listen within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let tcp_addr = addr;
        wait_for_greeting(
            || TcpStream::connect_timeout(&tcp_addr, WAIT).map(|s| Box::new(s) as Box<dyn Read>),
            "dovecot (TCP)",
            &log,
        );
        let socket = dovecot.socket.clone();
        wait_for_greeting(
            || UnixStream::connect(&socket).map(|s| Box::new(s) as Box<dyn Read>),
            "dovecot (UNIX socket)",
            &log,
        );
        dovecot
    }

    pub fn url(&self) -> String {
        format!("lmtp://{}", self.addr)
    }

    pub fn unix_url(&self) -> String {
        format!("lmtp+unix://{}", self.socket.display())
    }

    /// The messages delivered to `name` (`alice` or `bob`), oldest first.
    pub fn delivered(&self, name: &str) -> Vec<String> {
        let new = self.dir.path().join("mail").join(name).join("Maildir/new");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(new) {
            Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
            Err(_) => return Vec::new(),
        };
        files.sort();
        files
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// The first log line containing `text`, once Dovecot's log process has written it.
    pub fn wait_log_line(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(text)) {
                return line.to_string();
            }
            assert!(
                start.elapsed() < WAIT,
                "no {text:?} in the log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its children; SIGKILL if it does not within WAIT.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `lines` on a fresh connection to `addr` and returns each reply, for checks of a
/// server by hand.
pub fn converse(addr: SocketAddr, lines: &[&str]) -> Vec<String> {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut read_reply = || {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            reply.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return reply;
            }
        }
    };
    let mut replies = vec![read_reply()];
    for line in lines {
        stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        replies.push(read_reply());
    }
    replies
}

/// A TCP forwarder in front of a server that counts the connections open through it at
/// once. It stops accepting when dropped; forwarding ends when either side closes.
pub struct CountingProxy {
    pub addr: SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CountingProxy {
    pub fn start(to: SocketAddr) -> CountingProxy {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, m, s) = (open.clone(), most.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect_timeout(&to, WAIT) else {
                    continue;
                };
                let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                let o = o.clone();
                std::thread::spawn(move || {
                    let pipe = |mut from: TcpStream, mut to: TcpStream| {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Write);
                        })
                    };
                    let up = pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                    let down = pipe(server, client);
                    let _ = up.join();
                    let _ = down.join();
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        CountingProxy {
            addr,
            open,
            most,
            stop,
        }
    }

    /// The most connections that were open at once.
    pub fn most_at_once(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
