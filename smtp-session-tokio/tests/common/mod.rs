//! A server on its own thread and runtime on 127.0.0.1; the blocking SMTP client with
//! bounded reads is the test kit's. Every wait here is bounded by `WAIT`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smtp_session_tokio::{CancellationToken, DisconnectContext, Handler, Server};
use tokio::net::TcpListener;

pub const HOSTNAME: &str = "mx.test";
// Not every test uses each of them.
#[allow(unused_imports)]
pub use smtp_session_testkit::client::{Client, WAIT};

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

/// The session config the tests use: hostname `mx.test`.
pub fn config() -> smtp_session_tokio::Config {
    smtp_session_tokio::Config {
        hostname: HOSTNAME.into(),
        ..Default::default()
    }
}
