//! A DNS server on 127.0.0.1 for tests: hickory-server answering from an in-memory zone, UDP
//! and TCP on one port, on its own thread; or a server that reads queries and never answers.
//! Every query it receives is recorded, so a test can tell what was asked (and that a cached
//! answer was not asked again). Point mailsink at it with `--dns-server ADDR:PORT`.
//!
//! ```ignore
//! #[path = "common/dns.rs"]
//! mod dns;
//! let server = dns::DnsServer::start(
//!     dns::Zone::new()
//!         .ptr("192.0.2.10".parse().unwrap(), "mail.example.org")
//!         .a("mail.example.org", "192.0.2.10".parse().unwrap())
//!         .txt("example.org", "v=spf1 ip4:192.0.2.10 -all"),
//! );
//! ```
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::rr::rdata::{A, AAAA, MX, PTR, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;

/// The TTL of every record served, and of negative answers (the SOA minimum).
pub const TTL: u32 = 300;

/// Records to serve, all in one zone at the root, so any name can be given: a name without
/// records is NXDOMAIN, a name without records of the type asked is an empty answer.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    records: Vec<Record>,
}

fn name(text: &str) -> Name {
    let mut name = Name::from_ascii(text).expect("a domain name");
    name.set_fqdn(true);
    name
}

impl Zone {
    pub fn new() -> Zone {
        Zone::default()
    }

    fn with(mut self, owner: Name, data: RData) -> Zone {
        self.records.push(Record::from_rdata(owner, TTL, data));
        self
    }

    pub fn a(self, owner: &str, ip: Ipv4Addr) -> Zone {
        self.with(name(owner), RData::A(A(ip)))
    }

    pub fn aaaa(self, owner: &str, ip: Ipv6Addr) -> Zone {
        self.with(name(owner), RData::AAAA(AAAA(ip)))
    }

    /// The reverse name of `ip` (`10.2.0.192.in-addr.arpa.`) pointing at `target`.
    pub fn ptr(self, ip: IpAddr, target: &str) -> Zone {
        self.with(Name::from(ip), RData::PTR(PTR(name(target))))
    }

    /// One TXT record; text over 255 bytes is split into several strings, as SPF and DKIM
    /// records are published.
    pub fn txt(self, owner: &str, text: &str) -> Zone {
        let strings = text
            .as_bytes()
            .chunks(255)
            .map(|chunk| String::from_utf8(chunk.to_vec()).expect("ASCII TXT data"))
            .collect();
        self.with(name(owner), RData::TXT(TXT::new(strings)))
    }

    pub fn mx(self, owner: &str, preference: u16, exchange: &str) -> Zone {
        self.with(name(owner), RData::MX(MX::new(preference, name(exchange))))
    }

    fn handler(&self) -> InMemoryZoneHandler {
        let mut zone =
            InMemoryZoneHandler::empty(Name::root(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            name("ns.test"),
            name("hostmaster.test"),
            1,
            3600,
            600,
            86400,
            TTL,
        );
        let soa = Record::from_rdata(Name::root(), TTL, RData::SOA(soa));
        assert!(zone.upsert_mut(soa, 1), "the SOA record");
        for record in &self.records {
            assert!(zone.upsert_mut(record.clone(), 1), "{record}");
        }
        zone
    }
}

/// The questions a server received, as `NAME TYPE` (`10.2.0.192.in-addr.arpa. PTR`).
#[derive(Clone, Debug, Default)]
pub struct Queries(Arc<Mutex<Vec<String>>>);

impl Queries {
    fn push(&self, question: String) {
        self.0.lock().unwrap().push(question);
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// hickory's catalog, recording each question before answering it.
struct Recording {
    catalog: Catalog,
    queries: Queries,
}

#[async_trait::async_trait]
impl RequestHandler for Recording {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        if let Ok(info) = request.request_info() {
            let query = info.query.original();
            self.queries
                .push(format!("{} {}", query.name(), query.query_type()));
        }
        self.catalog.handle_request::<R, T>(request, response).await
    }
}

/// A running DNS server; stopped when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    queries: Queries,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves `zone` over UDP and TCP on one port of 127.0.0.1.
    pub fn start(zone: Zone) -> DnsServer {
        let handler = zone.handler();
        DnsServer::run(move |udp, tcp, queries| async move {
            let mut catalog = Catalog::new();
            catalog.upsert(LowerName::new(&Name::root()), vec![Arc::new(handler)]);
            let mut server = hickory_server::Server::new(Recording { catalog, queries });
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 16);
            server
        })
    }

    /// A server that receives queries (recorded) and never answers any.
    pub fn silent() -> DnsServer {
        DnsServer::run(|udp, tcp, queries| async move {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok((n, _)) = udp.recv_from(&mut buf).await {
                    queries.push(format!("{n} bytes, unanswered"));
                }
            });
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((stream, _)) = tcp.accept().await {
                    held.push(stream);
                }
            });
        })
    }

    /// Binds UDP and TCP on one free port, runs what `serve` makes of them on a thread of
    /// its own until dropped.
    fn run<F, Fut, S>(serve: F) -> DnsServer
    where
        F: FnOnce(UdpSocket, TcpListener, Queries) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = S>,
        S: Send + 'static,
    {
        let queries = Queries::default();
        let recorded = queries.clone();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (udp, tcp) = bind_one_port().await;
                addr_tx.send(udp.local_addr().unwrap()).unwrap();
                let _serving = serve(udp, tcp, recorded).await;
                let _ = stopped.await;
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the DNS server started");
        DnsServer {
            addr,
            queries,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every question received so far, in order.
    pub fn queries(&self) -> Vec<String> {
        self.queries.all()
    }

    /// `--dns-server ADDR:PORT`.
    pub fn arg(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same free port of 127.0.0.1.
async fn bind_one_port() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no port of 127.0.0.1 free for both UDP and TCP in 50 tries");
}
