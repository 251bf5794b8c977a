//! Connection limits: the client over the global limit or over its address's limit reads
//! `421 4.7.0` and is closed, while the others are served; a freed place is taken again. With
//! the PROXY protocol the address counted is the one in the header.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{config, serve, Client, HOSTNAME, WAIT};
use smtp_session_tokio::{Handler, Hooks, Limits, Server};

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
