//! Listeners on UNIX stream sockets: the peer's user id (SO_PEERCRED) is the context's
//! `remoteuid`, with no addresses; the global connection limit applies; a socket file left
//! behind is replaced, one in use or a file that is not a socket is refused.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::{config, Log, HOSTNAME, WAIT};
use smtp_session_tokio::{
    CancellationToken, DisconnectContext, Handler, Hooks, Limits, ListenSocket, Listener, Server,
};

#[derive(Clone, Default)]
struct Recorder {
    log: Log,
}

impl Handler for Recorder {
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    async fn disconnect(&mut self, context: DisconnectContext) {
        self.log.push(&context);
    }
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("smtp-unix-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves `handler` on a UNIX socket at `path` on its own thread until the token is
/// cancelled (on drop of the returned guard).
struct Running {
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_unix(path: &Path, handler: Recorder, limits: Limits) -> Running {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let path = path.to_path_buf();
    let (ready_tx, ready) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = Listener::unix(&path).unwrap();
            ready_tx.send(()).unwrap();
            Server::new(handler)
                .config(config())
                .limits(limits)
                .listener(listener)
                .shutdown_on(token)
                .serve()
                .await;
        });
    });
    ready.recv_timeout(WAIT).expect("the server started");
    Running {
        shutdown,
        thread: Some(thread),
    }
}

struct Client {
    reader: BufReader<UnixStream>,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a reply line");
        line
    }

    /// One whole reply.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "closed after {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }
}

#[test]
fn a_unix_socket_client_is_known_by_its_user_id() {
    let dir = TempDir::new("uid");
    let path = dir.join("smtp.sock");
    let handler = Recorder::default();
    let log = handler.log.clone();
    let _running = serve_unix(&path, handler, Limits::default());

    let mut c = Client::connect(&path);
    assert_eq!(c.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
    assert!(c
        .cmd("EHLO local.client")
        .starts_with(&format!("250-{HOSTNAME}")));
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");

    // Our own user id: the owner of the directory this process just made.
    let uid = std::fs::metadata(&dir.0).unwrap().uid();
    let context = &log.wait(1)[0];
    let connection = &context["connection"];
    assert_eq!(connection["remoteuid"], uid, "{connection}");
    assert_eq!(connection["remoteip"], serde_json::Value::Null);
    assert_eq!(connection["remoteport"], serde_json::Value::Null);
    assert_eq!(connection["localip"], serde_json::Value::Null);
    assert_eq!(connection["serverid"], "smtp");
    assert_eq!(connection["helo"]["host"], "local.client");
}

#[test]
fn unix_socket_clients_count_against_the_global_limit() {
    let dir = TempDir::new("limit");
    let path = dir.join("smtp.sock");
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let _running = serve_unix(&path, Recorder::default(), limits);

    let mut first = Client::connect(&path);
    assert_eq!(first.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
    let mut second = Client::connect(&path);
    assert_eq!(
        second.line(),
        format!("421 4.7.0 {HOSTNAME} Error: too many connections\r\n")
    );
    assert_eq!(second.line(), "", "closed after the 421");
    assert_eq!(first.cmd("NOOP"), "250 2.0.0 OK\r\n");
}

#[test]
fn a_left_behind_socket_file_is_replaced_but_a_live_one_or_a_plain_file_is_not() {
    let dir = TempDir::new("stale");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let path = dir.join("smtp.sock");
        let live = Listener::unix(&path).unwrap();
        let err = Listener::unix(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        assert!(matches!(live.socket(), ListenSocket::Unix(_)));
        assert!(
            live.local_addr().is_err(),
            "a UNIX socket has no IP address"
        );

        drop(live); // the file stays, nobody accepts on it
        assert!(path.exists());
        let again = Listener::unix(&path).expect("the stale socket is replaced");
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::UnixStream::connect(&path),
        )
        .await
        .unwrap();
        assert!(stream.is_ok(), "the new socket accepts");
        drop(again);

        let file = dir.join("not-a-socket");
        std::fs::write(&file, b"keep me").unwrap();
        let err = Listener::unix(&file).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    });
}
