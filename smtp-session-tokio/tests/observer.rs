//! Server::observer: the events an Observer hears, in order, for a client's whole session
//! and for a client over a limit, refused at accept time or, behind a PROXY header, by the
//! session.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{config, serve, Client, HOSTNAME, WAIT};
use smtp_session_tokio::{
    ClientRules, ConnectionInfo, Handler, Hooks, Limits, Observer, Refusal, Server,
};

#[derive(Clone)]
struct Sink;

impl Handler for Sink {
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
}

/// Every event, as a line.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn push(&self, event: String) {
        self.0.lock().unwrap().push(event);
    }

    /// Waits (bounded) for `n` events and returns them all.
    fn wait(&self, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let events = self.0.lock().unwrap().clone();
            if events.len() >= n || start.elapsed() > WAIT {
                return events;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn listener(info: &ConnectionInfo) -> &str {
    info.server_id.as_deref().unwrap_or("?")
}

impl Observer for Recorder {
    fn connection_opened(&self, info: &ConnectionInfo) {
        self.push(format!("opened {}", listener(info)));
    }

    fn connection_closed(&self, info: &ConnectionInfo) {
        self.push(format!("closed {}", listener(info)));
    }

    fn connection_refused(&self, refusal: Refusal) {
        self.push(format!("refused {}", refusal.name()));
    }

    fn reply(&self, code: u16) {
        self.push(format!("reply {code}"));
    }
}

/// One connection per client, loopback included (it is exempt by default).
fn per_ip_limit_of_one() -> Limits {
    Limits {
        max_connections_per_ip: 1,
        clients: ClientRules {
            limit_exceptions: vec![],
            ..ClientRules::default()
        },
        ..Limits::default()
    }
}

#[test]
fn a_session_and_a_refusal_at_accept_time() {
    let recorder = Recorder::default();
    let observer = recorder.clone();
    let running = serve(move |l| {
        Server::new(Sink)
            .config(config())
            .limits(per_ip_limit_of_one())
            .observer(observer)
            .listener(l)
    });
    let mut client = Client::connect(running.addr);
    assert_eq!(client.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
    assert!(client.cmd("EHLO client.example").starts_with("250-"));
    let mut over = Client::connect(running.addr);
    assert_eq!(
        over.read_to_close_text(),
        format!("421 4.7.0 {HOSTNAME} Error: too many connections from 127.0.0.1\r\n")
    );
    assert!(client.cmd("FOO").starts_with("500 "));
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert_eq!(client.read_to_close_text(), "");
    assert_eq!(
        recorder.wait(7),
        [
            "opened smtp",
            "reply 220",
            // The multi-line EHLO reply is one reply.
            "reply 250",
            // Not a connection, and its 421 is not a session's reply.
            "refused max_connections_per_ip",
            "reply 500",
            "reply 221",
            "closed smtp",
        ]
    );
}

#[test]
fn behind_a_proxy_the_refusal_is_the_sessions_421() {
    let recorder = Recorder::default();
    let observer = recorder.clone();
    let mut config = config();
    config.proxy_protocol = true;
    let running = serve(move |l| {
        Server::new(Sink)
            .config(config)
            .limits(per_ip_limit_of_one())
            .observer(observer)
            .listener(l)
    });
    let mut client = Client::connect(running.addr);
    client.send("PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n");
    assert_eq!(client.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
    let mut again = Client::connect(running.addr);
    again.send("PROXY TCP4 192.0.2.10 198.51.100.1 40001 25\r\n");
    assert_eq!(
        again.read_to_close_text(),
        format!("421 4.7.0 {HOSTNAME} Error: too many connections from 192.0.2.10\r\n")
    );
    assert_eq!(
        recorder.wait(6),
        [
            "opened smtp",
            "reply 220",
            "opened smtp",
            "refused max_connections_per_ip",
            "reply 421",
            "closed smtp",
        ]
    );
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert_eq!(&recorder.wait(8)[6..], ["reply 221", "closed smtp"]);
}
