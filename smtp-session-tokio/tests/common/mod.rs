//! A server on its own thread and runtime on 127.0.0.1, and a blocking SMTP client with
//! bounded reads. Every wait here is bounded by `WAIT`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smtp_session_tokio::{CancellationToken, DisconnectContext, Handler, Server};
use tokio::net::TcpListener;

pub const HOSTNAME: &str = "mx.test";
pub const WAIT: Duration = Duration::from_secs(20);

/// A server serving on its own thread until stopped or dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

/// Binds 127.0.0.1:0 and serves what `build` makes of the listener, on a current-thread
/// runtime.
pub fn serve<H: Handler>(build: impl FnOnce(TcpListener) -> Server<H> + Send + 'static) -> Running {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            build(listener).shutdown_on(token).serve().await;
        });
        let _ = done_tx.send(());
    });
    let addr = addr_rx.recv_timeout(WAIT).expect("the server started");
    Running {
        addr,
        shutdown,
        done,
        thread: Some(thread),
    }
}

impl Running {
    /// Waits for `serve` to return (after a shutdown); false if it did not within `limit`.
    pub fn wait_done(&self, limit: Duration) -> bool {
        self.done.recv_timeout(limit).is_ok()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if self.done.recv_timeout(WAIT).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Disconnect contexts as JSON, recorded by test handlers.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<serde_json::Value>>>);

impl Log {
    pub fn push(&self, context: &DisconnectContext) {
        self.0
            .lock()
            .unwrap()
            .push(serde_json::to_value(context).unwrap());
    }

    /// Waits until at least `n` contexts are recorded, and returns them.
    pub fn wait(&self, n: usize) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let found = self.0.lock().unwrap().clone();
            if found.len() >= n {
                return found;
            }
            assert!(
                start.elapsed() < WAIT,
                "waited for {n} disconnect contexts, have {found:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn now(&self) -> Vec<serde_json::Value> {
        self.0.lock().unwrap().clone()
    }
}

/// A blocking SMTP client with bounded reads.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect_timeout(&addr, WAIT).expect("connect"))
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connected and greeted.
    pub fn greeted(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr);
        let greeting = c.reply();
        assert_eq!(greeting, format!("220 {HOSTNAME} ESMTP\r\n"));
        c
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("write");
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let n = match self.stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!(
                "read failed (timed out?): {e}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
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

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n"));
        self.reply()
    }

    /// Everything until the server closes.
    pub fn read_to_close(&mut self) -> String {
        while self.fill() > 0 {}
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }
}

/// The session config the tests use: hostname `mx.test`.
pub fn config() -> smtp_session_tokio::Config {
    smtp_session_tokio::Config {
        hostname: HOSTNAME.into(),
        ..Default::default()
    }
}
