//! Screening before the greeting (`--dnsbl`, against a DNS server on loopback serving test
//! lists) and greylisting (`--greylist`), over real sockets; with `--redis`, a greylist
//! passed on one instance is honoured by another.

mod common;
#[path = "common/dns.rs"]
mod dns;
#[path = "common/redis.rs"]
mod redis;

use std::time::Duration;

use common::{Client, Server, HOSTNAME};
use dns::{DnsServer, Zone};
use redis::Redis;

/// Lists where 127.0.0.1 is on a block list twice (weights 2 and 1) and 127.0.0.2 on an
/// allow list too.
fn lists() -> DnsServer {
    DnsServer::start(
        Zone::new()
            .a("1.0.0.127.zen.example", "127.0.0.4".parse().unwrap())
            .a("1.0.0.127.pbl.example", "127.0.0.10".parse().unwrap())
            .a("2.0.0.127.zen.example", "127.0.0.4".parse().unwrap())
            .a("2.0.0.127.wl.example", "127.0.10.2".parse().unwrap()),
    )
}

fn screened(dns: &DnsServer, action: &str) -> Server {
    let server = dns.arg();
    Server::start(&[
        "--dns-server",
        &server,
        "--limit-exceptions",
        "none",
        "--dnsbl",
        "zen.example=127.0.0.[2..11]*2",
        "--dnsbl",
        "pbl.example=127.0.0.[10;11]",
        "--dnsbl",
        "wl.example=127.0.[0..255].[1..3]*-5",
        "--dnsbl-threshold",
        "3",
        "--dnsbl-action",
        action,
    ])
}

#[test]
fn a_listed_client_is_refused_in_place_of_the_greeting_with_drop() {
    let lists = lists();
    let server = screened(&lists, "drop");
    let mut client = Client::connect(server.addr);
    assert_eq!(
        client.reply(),
        "554 5.7.1 Service unavailable; client [127.0.0.1] blocked using zen.example, \
         pbl.example\r\n"
    );
    assert!(client.read_to_close().is_empty());
    let disconnect = &server.wait_events("disconnect", 1)[0];
    assert_eq!(disconnect["arguments"]["reply"]["code"], 554);
    // Why it was refused: the score and the lists, as with enforce.
    assert_eq!(disconnect["dnsbl"]["score"], 3, "{disconnect}");
    assert_eq!(
        disconnect["dnsbl"]["listed"],
        serde_json::json!(["zen.example", "pbl.example"])
    );
}

#[test]
fn with_enforce_a_listed_client_is_greeted_and_its_mail_refused_with_its_score_logged() {
    let lists = lists();
    let server = screened(&lists, "enforce");
    let mut client = Client::connect(server.addr);
    assert_eq!(client.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
    assert!(client.cmd("EHLO client.example").starts_with("250"));
    assert_eq!(
        client.cmd("MAIL FROM:<a@example.org>"),
        "550 5.7.1 Service unavailable; client [127.0.0.1] blocked using zen.example, \
         pbl.example\r\n"
    );
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let disconnect = &server.wait_events("disconnect", 1)[0];
    assert_eq!(disconnect["dnsbl"]["score"], 3);
    assert_eq!(
        disconnect["dnsbl"]["listed"],
        serde_json::json!(["zen.example", "pbl.example"])
    );
}

/// One message: the reply to RCPT if refused, else to the data.
fn message(client: &mut Client, from: &str, to: &str) -> String {
    assert!(client
        .cmd(&format!("MAIL FROM:<{from}>"))
        .starts_with("250"));
    let rcpt = client.cmd(&format!("RCPT TO:<{to}>"));
    if !rcpt.starts_with("250") {
        assert!(client.cmd("RSET").starts_with("250"));
        return rcpt;
    }
    assert!(client.cmd("DATA").starts_with("354"));
    client.send("Subject: x\r\n\r\nhi\r\n.\r\n");
    client.reply()
}

const ACCEPTED: &str = "250 2.0.0 Message accepted\r\n";

fn greylisted(redis: &Redis) -> Server {
    let url = redis.url();
    Server::start(&[
        "--redis",
        &url,
        "--limit-exceptions",
        "none",
        "--greylist",
        "--greylist-delay",
        "1",
    ])
}

#[test]
fn a_greylist_passed_on_one_instance_is_honoured_by_the_other() {
    let redis = Redis::start();
    let (a, b) = (greylisted(&redis), greylisted(&redis));
    let mut to_a = Client::hello(a.addr);
    assert_eq!(
        message(&mut to_a, "x@example.org", "u@example.net"),
        "450 4.2.0 Greylisted, please try again in 1 seconds\r\n"
    );
    let mut to_b = Client::hello(b.addr);
    assert!(message(&mut to_b, "x@example.org", "u@example.net").starts_with("450 4.2.0"));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        message(&mut to_b, "x@example.org", "u@example.net"),
        ACCEPTED
    );
    // Passed once: the network's next messages go through at once, on either instance,
    // whatever the sender and recipient.
    assert_eq!(
        message(&mut to_a, "y@example.org", "v@example.net"),
        ACCEPTED
    );
    assert_eq!(
        message(&mut to_b, "z@example.com", "w@example.net"),
        ACCEPTED
    );
}

#[test]
fn a_client_on_an_allow_list_is_not_greylisted() {
    let lists = lists();
    let dns = lists.arg();
    let server = Server::start(&[
        "--dns-server",
        &dns,
        "--limit-exceptions",
        "none",
        "--dnsbl",
        "wl.example=127.0.[0..255].[1..3]*-5",
        "--greylist",
    ]);
    // 127.0.0.2 is on the allow list; 127.0.0.1 is not.
    let mut listed = Client::from_stream(connect_from("127.0.0.2", server.addr));
    assert!(listed.reply().starts_with("220"));
    assert!(listed.cmd("EHLO client.example").starts_with("250"));
    assert_eq!(
        message(&mut listed, "x@example.org", "u@example.net"),
        ACCEPTED
    );
    let mut unlisted = Client::hello(server.addr);
    assert!(message(&mut unlisted, "x@example.org", "u@example.net").starts_with("450 4.2.0"));
}

/// A plaintext connection from `source` (any address of 127.0.0.0/8).
fn connect_from(source: &str, to: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        tokio::time::timeout(common::WAIT, socket.connect(to))
            .await
            .expect("connect in time")
            .expect("connect")
            .into_std()
            .unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
}

#[test]
fn with_verify_mail_whose_domain_vouches_for_it_passes_on_its_first_attempt() {
    let lists = DnsServer::start(Zone::new().txt("vouched.example", "v=spf1 ip4:127.0.0.1 -all"));
    let dns = lists.arg();
    let server = Server::start(&[
        "--dns-server",
        &dns,
        "--verify",
        "--limit-exceptions",
        "none",
        "--greylist",
    ]);
    let mut client = Client::hello(server.addr);
    // SPF pass for the MAIL FROM domain: through at once, decided at the end of the data.
    assert_eq!(
        message(&mut client, "a@vouched.example", "u@example.net"),
        ACCEPTED
    );
    // The same client for a domain that does not vouch: greylisted, at the end of the data.
    assert_eq!(
        message(&mut client, "a@unknown.example", "u@example.net"),
        "450 4.2.0 Greylisted, please try again in 300 seconds\r\n"
    );
    assert_eq!(server.stored().len(), 1);
}

#[test]
fn the_policy_reads_the_clients_score() {
    let lists = lists();
    let dns = lists.arg();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("policy.lua");
    std::fs::write(
        &script,
        r#"
kumo.on('smtp_server_mail_from', function(sender, conn_meta)
  -- The score is a Lua integer, as KumoMTA's numbers are.
  if math.type(conn_meta:get_meta('dnsbl_score')) ~= 'integer' then error('not an integer') end
  if (conn_meta:get_meta('dnsbl_score') or 0) >= 2 then
    kumo.reject(451, '4.7.1 listed on ' .. conn_meta:get_meta('dnsbl_listed'))
  end
end)
"#,
    )
    .unwrap();
    let server = Server::start(&[
        "--dns-server",
        &dns,
        "--limit-exceptions",
        "none",
        "--dnsbl",
        "zen.example=127.0.0.[2..11]*2",
        "--dnsbl-action",
        "log",
        "--policy",
        script.to_str().unwrap(),
    ]);
    let mut client = Client::hello(server.addr);
    assert_eq!(
        client.cmd("MAIL FROM:<a@example.org>"),
        "451 4.7.1 listed on zen.example\r\n"
    );
}
