//! A server on several threads (`Server::threads`): another thread keeps serving while one
//! is held up, and the limits and the shutdown are the server's, across every thread.

mod common;

use std::io::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config, serve, Client, HOSTNAME};
use smtp_session_tokio::{Connection, Decision, Handler, HookResult, Hooks, Limits, Server};

/// Holds up its thread at the first connection's connect hook (a handler that blocks, which
/// a real one must not do).
#[derive(Clone, Default)]
struct Blocking {
    connections: Arc<AtomicUsize>,
}

const HELD: Duration = Duration::from_secs(3);

impl Handler for Blocking {
    fn hooks(&self) -> Hooks {
        Hooks {
            connect: true,
            ..Hooks::NONE
        }
    }

    async fn connect(&mut self, _: &mut Connection<'_>) -> HookResult {
        if self.connections.fetch_add(1, Ordering::SeqCst) == 0 {
            std::thread::sleep(HELD);
        }
        Ok(Decision::Accept)
    }
}

fn greeting() -> String {
    format!("220 {HOSTNAME} ESMTP\r\n")
}

/// True when `client` has been sent nothing yet.
fn nothing_yet(client: &Client) -> bool {
    client.stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let silent =
        matches!(client.stream.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    client.stream.set_nonblocking(false).unwrap();
    silent
}

/// The first client's thread is held up; whether the second is served meanwhile.
fn second_served_while_first_held(threads: usize) -> bool {
    let handler = Blocking::default();
    let running = serve(move |l| {
        Server::new(handler)
            .config(config())
            .threads(threads)
            .listener(l)
    });
    let mut first = Client::connect(running.addr);
    // The first connection's thread is in its connect hook by now.
    std::thread::sleep(Duration::from_millis(300));
    let mut second = Client::connect(running.addr);
    let served = second.reply() == greeting() && nothing_yet(&first);
    assert_eq!(first.reply(), greeting());
    assert_eq!(first.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    served
}

#[test]
fn a_connection_on_another_thread_is_served_while_one_thread_is_held_up() {
    assert!(second_served_while_first_held(2));
}

#[test]
fn on_one_thread_the_second_connection_waits_for_the_first() {
    assert!(!second_served_while_first_held(1));
}

#[test]
fn the_connection_limit_counts_the_connections_of_every_thread() {
    let limits = Limits {
        max_connections: 3,
        ..Limits::default()
    };
    let handler = Blocking::default();
    handler.connections.store(1, Ordering::SeqCst);
    let running = serve(move |l| {
        Server::new(handler)
            .config(config())
            .limits(limits)
            .threads(2)
            .listener(l)
    });
    let mut held: Vec<Client> = (0..3).map(|_| Client::greeted(running.addr)).collect();
    for _ in 0..4 {
        let mut over = Client::connect(running.addr);
        assert_eq!(
            over.read_to_close_text(),
            format!("421 4.7.0 {HOSTNAME} Error: too many connections\r\n")
        );
    }
    for client in &mut held {
        assert_eq!(client.cmd("NOOP"), "250 2.0.0 OK\r\n");
    }
}

#[test]
fn a_shutdown_reaches_the_sessions_of_every_thread_and_serve_returns() {
    let handler = Blocking::default();
    handler.connections.store(1, Ordering::SeqCst);
    let running = serve(move |l| Server::new(handler).config(config()).threads(2).listener(l));
    let mut idle: Vec<Client> = (0..8).map(|_| Client::greeted(running.addr)).collect();
    running.shutdown.cancel();
    for client in &mut idle {
        assert_eq!(
            client.read_to_close_text(),
            format!("421 4.3.2 {HOSTNAME} Service shutting down\r\n")
        );
    }
    assert!(running.wait_done(Duration::from_secs(10)));
}

#[test]
fn dropping_the_serve_future_stops_accepting_on_every_thread() {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
    let (checked_tx, checked_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let handler = Blocking::default();
            handler.connections.store(1, Ordering::SeqCst);
            let server = Server::new(handler)
                .config(config())
                .threads(2)
                .listener(listener);
            let serving = tokio::time::timeout(Duration::from_millis(500), server.serve());
            assert!(serving.await.is_err(), "serve runs until it is dropped");
            dropped_tx.send(()).unwrap();
            // The runtime lives on while the test connects: only `serve` is gone.
            while checked_rx.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    });
    let addr = addr_rx.recv_timeout(common::WAIT).unwrap();
    Client::connect(addr);
    dropped_rx.recv_timeout(common::WAIT).unwrap();
    // Every thread's copy of the listening socket is closed within moments.
    let mut refused = false;
    for _ in 0..100 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    checked_tx.send(()).unwrap();
    thread.join().unwrap();
    assert!(refused, "no thread accepts once serve is dropped");
}
