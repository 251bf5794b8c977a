//! Connection limits: the client over the global limit or over its address's limit reads
//! `421 4.7.0` and is closed, while the others are served; a freed place is taken again. With
//! the PROXY protocol the address counted is the one in the header. A client that keeps
//! making errors gets its error replies later and later.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{config, serve, Client, HOSTNAME, WAIT};
use smtp_session_tokio::{
    Config, ConnectionInfo, ErrorDelay, Handler, Hooks, Limits, Server, Transport,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Clone)]
struct Sink;

impl Handler for Sink {
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
}

/// A client whose connection comes from `source` (any address of 127.0.0.0/8).
fn connect_from(source: &str, to: SocketAddr) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let std_socket: TcpStream = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let stream = tokio::time::timeout(WAIT, socket.connect(to))
                .await
                .unwrap()
                .unwrap();
            stream.into_std().unwrap()
        })
    };
    std_socket.set_nonblocking(false).unwrap();
    Client::from_stream(std_socket)
}

fn greeting() -> String {
    format!("220 {HOSTNAME} ESMTP\r\n")
}

#[test]
fn the_client_over_the_global_limit_reads_421_and_a_freed_place_is_taken_again() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let running = serve(move |l| {
        Server::new(Sink)
            .config(config())
            .limits(limits)
            .listener(l)
    });
    let mut first = Client::connect(running.addr);
    assert_eq!(first.reply(), greeting());
    let mut second = Client::connect(running.addr);
    assert_eq!(second.reply(), greeting());
    let mut third = Client::connect(running.addr);
    assert_eq!(
        third.read_to_close(),
        format!("421 4.7.0 {HOSTNAME} Error: too many connections\r\n")
    );
    assert_eq!(first.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert_eq!(first.read_to_close(), "");
    // The place is free once the first connection's task ended.
    let mut fourth = None;
    for _ in 0..100 {
        let mut c = Client::connect(running.addr);
        let reply = c.reply();
        if reply == greeting() {
            fourth = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut fourth = fourth.expect("a freed place is taken again");
    assert_eq!(fourth.cmd("NOOP"), "250 2.0.0 OK\r\n");
    assert_eq!(second.cmd("NOOP"), "250 2.0.0 OK\r\n");
}

#[test]
fn the_client_over_its_addresss_limit_reads_421_and_other_addresses_are_served() {
    let limits = Limits {
        max_connections_per_ip: 1,
        ..Limits::default()
    };
    let running = serve(move |l| {
        Server::new(Sink)
            .config(config())
            .limits(limits)
            .listener(l)
    });
    let mut first = connect_from("127.0.0.1", running.addr);
    assert_eq!(first.reply(), greeting());
    let mut again = connect_from("127.0.0.1", running.addr);
    assert_eq!(
        again.read_to_close(),
        format!("421 4.7.0 {HOSTNAME} Error: too many connections from 127.0.0.1\r\n")
    );
    let mut other = connect_from("127.0.0.2", running.addr);
    assert_eq!(other.reply(), greeting());
    assert_eq!(other.cmd("NOOP"), "250 2.0.0 OK\r\n");
    assert_eq!(first.cmd("NOOP"), "250 2.0.0 OK\r\n");
}

#[test]
fn behind_a_proxy_the_address_in_the_header_is_counted() {
    let limits = Limits {
        max_connections_per_ip: 1,
        ..Limits::default()
    };
    let mut config = config();
    config.proxy_protocol = true;
    let running = serve(move |l| Server::new(Sink).config(config).limits(limits).listener(l));
    // Every connection comes from the proxy (127.0.0.1); the clients are in the headers.
    let mut a = Client::connect(running.addr);
    a.send("PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n");
    assert_eq!(a.reply(), greeting());
    let mut b = Client::connect(running.addr);
    b.send("PROXY TCP4 192.0.2.11 198.51.100.1 40001 25\r\n");
    assert_eq!(b.reply(), greeting());
    let mut a_again = Client::connect(running.addr);
    a_again.send("PROXY TCP4 192.0.2.10 198.51.100.1 40002 25\r\n");
    assert_eq!(
        a_again.read_to_close(),
        format!("421 4.7.0 {HOSTNAME} Error: too many connections from 192.0.2.10\r\n")
    );
    assert_eq!(a.cmd("NOOP"), "250 2.0.0 OK\r\n");
    assert_eq!(b.cmd("NOOP"), "250 2.0.0 OK\r\n");
}

/// Past the soft limit every error reply waits one step longer than the one before, up to
/// the maximum; a reply that is no error goes out at once; the hard error limit still closes
/// the connection. On tokio's paused clock the delays are exact.
#[tokio::test(start_paused = true)]
async fn error_replies_past_the_soft_limit_wait_longer_each_time() {
    let limits = Limits {
        error_delay: ErrorDelay {
            soft_limit: 2,
            step: Duration::from_secs(1),
            max: Duration::from_secs(3),
        },
        ..Limits::default()
    };
    let config = Config {
        hard_error_limit: 6,
        ..config()
    };
    let server = Server::new(Sink).config(config).limits(limits);
    let (io, client) = tokio::io::duplex(4096);
    let serving = tokio::spawn(async move {
        server
            .serve_connection(io, ConnectionInfo::default(), Transport::Plain)
            .await
    });
    let (read, mut write) = tokio::io::split(client);
    let mut lines = BufReader::new(read).lines();
    let mut transcript = Vec::new();
    let mut sent_at = tokio::time::Instant::now();
    for command in ["", "FOO", "FOO", "FOO", "NOOP", "FOO", "FOO", "FOO"] {
        if !command.is_empty() {
            write
                .write_all(format!("{command}\r\n").as_bytes())
                .await
                .unwrap();
            sent_at = tokio::time::Instant::now();
        }
        let reply = lines.next_line().await.unwrap().expect("a reply");
        transcript.push((command, reply, sent_at.elapsed().as_secs_f64()));
    }
    // The sixth error reached the hard limit: its 421 came in the same write, then the end.
    let closing = lines.next_line().await.unwrap().expect("the 421");
    assert_eq!(lines.next_line().await.unwrap(), None);
    serving.await.unwrap();
    let unknown = "500 5.5.1 Command unrecognized";
    let expected = [
        ("", format!("220 {HOSTNAME} ESMTP"), 0.0),
        ("FOO", unknown.into(), 0.0),
        ("FOO", unknown.into(), 0.0),
        ("FOO", unknown.into(), 1.0),
        ("NOOP", "250 2.0.0 OK".into(), 0.0),
        ("FOO", unknown.into(), 2.0),
        ("FOO", unknown.into(), 3.0),
        ("FOO", unknown.into(), 3.0),
    ];
    assert_eq!(transcript, expected);
    assert_eq!(
        closing,
        format!("421 4.7.0 {HOSTNAME} Error: too many errors")
    );
}
