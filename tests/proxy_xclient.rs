//! The PROXY protocol (v1 and v2) in front of SMTP, and Postfix's XCLIENT from trusted
//! peers: both replace what the session knows about the client.

mod common;
use std::net::{IpAddr, SocketAddr};

use common::*;
use smtp_session::proxy::{PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_UNIQUE_ID};
use smtp_session::{AuthInfo, CloseSide, Config, Decision, HeloVerb, Hooks};

fn proxy_config() -> Config {
    Config {
        proxy_protocol: true,
        ..config()
    }
}

const V1: &str = "PROXY TCP4 203.0.113.7 198.51.100.25 5555 2525\r\n";

/// A PROXY v2 header: `command` 0x20 LOCAL or 0x21 PROXY, `family` 0x11 TCP/IPv4 or 0x21
/// TCP/IPv6, the address block, then the TLVs.
fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut body = addresses.to_vec();
    for (kind, value) in tlvs {
        body.push(*kind);
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
    }
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(command);
    header.push(family);
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    header.extend_from_slice(&body);
    header
}

fn v2_ipv4(tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut addresses = vec![203, 0, 113, 7, 198, 51, 100, 25];
    addresses.extend_from_slice(&5555u16.to_be_bytes());
    addresses.extend_from_slice(&2525u16.to_be_bytes());
    v2(0x21, 0x11, &addresses, tlvs)
}

fn socket(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn proxy_v1_replaces_the_addresses_before_the_greeting() {
    let mut h = Harness::new(proxy_config());
    assert_eq!(h.transcript, "", "nothing before the header");
    h.send(V1);
    h.send("EHLO client.example\r\n");
    h.transcript.clear();
    h.send("QUIT\r\n");
    let info = h.session.info();
    assert_eq!(info.remote_ip, Some("203.0.113.7".parse().unwrap()));
    assert_eq!(info.remote_port, Some(5555));
    assert_eq!(info.local_ip, Some("198.51.100.25".parse().unwrap()));
    assert_eq!(info.local_port, Some(2525));
    // What the runtime gave and the header does not speak of stays.
    assert_eq!(info.id, "conn-1");
    assert_eq!(info.server_id.as_deref(), Some("inbound"));
    let header = h.session.proxy_header().unwrap();
    assert_eq!(header.version, 1);
    assert_eq!(header.source, Some(socket("203.0.113.7:5555")));
    assert!(header.tlvs.is_empty());
    let context = &h.context().connection.info;
    assert_eq!(context, h.session.info());
}

#[test]
fn proxy_v1_transcript_with_commands_in_the_same_read() {
    let mut h = Harness::new(proxy_config());
    h.send(&format!("{V1}HELO client.example\r\n"));
    h.expect(
        "C: PROXY TCP4 203.0.113.7 198.51.100.25 5555 2525
         C: HELO client.example
         S: 220 mx.example ESMTP
         S: 250 mx.example",
    );
}

#[test]
fn proxy_v1_tcp6_and_unknown() {
    let mut h = Harness::new(proxy_config());
    h.send("PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n");
    assert_eq!(
        h.session.info().remote_ip,
        Some("2001:db8::7".parse().unwrap())
    );
    assert_eq!(h.server_lines(), ["220 mx.example ESMTP"]);

    // UNKNOWN: the proxy knows nothing, so the runtime's addresses stay.
    let mut h = Harness::new(proxy_config());
    h.send("PROXY UNKNOWN\r\n");
    assert_eq!(h.session.info(), &info());
    assert_eq!(h.server_lines(), ["220 mx.example ESMTP"]);
}

#[test]
fn proxy_v2_replaces_the_addresses_and_keeps_the_tlvs() {
    let header = v2_ipv4(&[
        (PP2_TYPE_ALPN, b"smtp"),
        (PP2_TYPE_AUTHORITY, b"mx.example"),
        (PP2_TYPE_UNIQUE_ID, b"\x01\x02\x03"),
    ]);
    let mut h = Harness::new(proxy_config());
    h.feed(&header);
    h.send("EHLO client.example\r\nQUIT\r\n");
    let proxy = h.session.proxy_header().unwrap();
    assert_eq!(proxy.version, 2);
    assert_eq!(proxy.source, Some(socket("203.0.113.7:5555")));
    assert_eq!(proxy.destination, Some(socket("198.51.100.25:2525")));
    assert_eq!(proxy.tlv(PP2_TYPE_ALPN), Some(&b"smtp"[..]));
    assert_eq!(proxy.tlv(PP2_TYPE_AUTHORITY), Some(&b"mx.example"[..]));
    assert_eq!(proxy.tlv(PP2_TYPE_UNIQUE_ID), Some(&[1u8, 2, 3][..]));
    assert_eq!(proxy.tlvs.len(), 3);
    let context = &h.context().connection;
    assert_eq!(
        context.info.remote_ip,
        Some("203.0.113.7".parse::<IpAddr>().unwrap())
    );
    assert_eq!(context.info.remote_port, Some(5555));
    assert_eq!(
        context.info.local_ip,
        Some("198.51.100.25".parse::<IpAddr>().unwrap())
    );
    assert_eq!(context.info.local_port, Some(2525));
    assert_eq!(context.helo.as_ref().unwrap().verb, HeloVerb::Ehlo);
}

#[test]
fn proxy_v2_ipv6_and_local() {
    let mut addresses = Vec::new();
    addresses.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    addresses.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    addresses.extend_from_slice(&40000u16.to_be_bytes());
    addresses.extend_from_slice(&25u16.to_be_bytes());
    let mut h = Harness::new(proxy_config());
    h.feed(&v2(0x21, 0x21, &addresses, &[]));
    assert_eq!(
        h.session.info().remote_ip,
        Some("2001:db8::7".parse().unwrap())
    );
    assert_eq!(h.session.info().local_port, Some(25));

    // LOCAL: a health check from the proxy itself; the addresses stay.
    let mut h = Harness::new(proxy_config());
    h.feed(&v2(0x20, 0x00, &[], &[]));
    h.send("QUIT\r\n");
    assert_eq!(h.context().connection.info, info());
    assert_eq!(h.server_lines(), ["220 mx.example ESMTP", "221 2.0.0 Bye"]);
}

#[test]
fn headers_split_byte_by_byte_give_the_same_transcript() {
    let v2_header = v2_ipv4(&[(PP2_TYPE_ALPN, b"smtp")]);
    for header in [V1.as_bytes().to_vec(), v2_header] {
        let mut input = header.clone();
        input.extend_from_slice(b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nQUIT\r\n");
        let whole = run_split(proxy_config(), &input, &[input.len()]);
        assert!(whole.starts_with("S: 220 mx.example ESMTP\n"), "{whole}");
        assert!(whole.contains("S: 250 2.1.0 Sender OK\n"), "{whole}");
        for chunks in [&[1][..], &[2], &[3, 1], &[13]] {
            assert_eq!(run_split(proxy_config(), &input, chunks), whole);
        }

        let mut h = Harness::new(proxy_config());
        for byte in &header {
            assert_eq!(
                h.transcript, "",
                "no greeting before the header is complete"
            );
            h.feed(std::slice::from_ref(byte));
        }
        assert_eq!(h.server_lines(), ["220 mx.example ESMTP"]);
        assert_eq!(h.session.info().remote_port, Some(5555));
    }
}

#[test]
fn a_missing_header_closes_without_a_greeting() {
    let mut h = Harness::new(proxy_config());
    h.send("EHLO client.example\r\n");
    h.expect(
        "C: EHLO client.example
         -- close
         H: disconnect close=local",
    );
    let context = h.context();
    assert_eq!(context.arguments.reply, None);
    assert_eq!(context.arguments.close, CloseSide::Local);
    assert_eq!(context.connection.info, info());
    assert!(h.session.proxy_header().is_none());
}

#[test]
fn malformed_headers_close_without_a_greeting() {
    let mut bad_version = v2_ipv4(&[]);
    bad_version[12] = 0x31;
    let mut short_block = v2(0x21, 0x11, &[203, 0, 113, 7], &[]);
    short_block.extend_from_slice(b"EHLO c\r\n");
    for header in [
        b"PROXY TCP4 203.0.113.7\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.7 198.51.100.25 5555 99999\r\n".to_vec(),
        b"PROXY TCP4 2001:db8::7 198.51.100.25 5555 25\r\n".to_vec(),
        b"PROXY SCTP 203.0.113.7 198.51.100.25 5555 25\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.7 198.51.100.25 5555 25\n".to_vec(),
        b"proxy TCP4 203.0.113.7 198.51.100.25 5555 25\r\n".to_vec(),
        bad_version,
        short_block,
    ] {
        let mut h = Harness::new(proxy_config());
        h.feed(&header);
        h.expect(
            "-- close
             H: disconnect close=local",
        );
        assert_eq!(h.closes, 1, "{}", escape(&header));
    }
}

#[test]
fn the_connect_hook_sees_the_proxied_addresses() {
    let config = Config {
        hooks: Hooks {
            connect: true,
            ..Hooks::NONE
        },
        ..proxy_config()
    };
    let mut h = Harness::manual(config);
    h.send(V1);
    assert!(h.session.pending_hook().is_some());
    assert_eq!(h.session.info().remote_port, Some(5555));
    h.decide(Decision::Accept);
    assert_eq!(h.server_lines(), ["220 mx.example ESMTP"]);
}

fn xclient_config() -> Config {
    Config {
        xclient_trusted: vec![info().remote_ip.unwrap()],
        ..config()
    }
}

#[test]
fn xclient_is_advertised_only_to_trusted_peers() {
    let mut h = Harness::new(xclient_config());
    h.transcript.clear();
    h.send("EHLO proxy.example\r\n");
    assert_eq!(
        h.server_lines().last(),
        Some(&"250 XCLIENT ADDR PORT NAME HELO LOGIN PROTO DESTADDR DESTPORT")
    );
    let mut h = Harness::new(config());
    h.transcript.clear();
    h.send("EHLO proxy.example\r\n");
    assert!(!h.transcript.contains("XCLIENT"));
    let untrusted = Config {
        xclient_trusted: vec!["192.0.2.99".parse().unwrap()],
        ..config()
    };
    let mut h = Harness::new(untrusted);
    h.send("EHLO proxy.example\r\n");
    assert!(!h.transcript.contains("XCLIENT"));
}

#[test]
fn xclient_from_a_trusted_peer_gets_a_fresh_greeting_and_applies_the_attributes() {
    let mut h = Harness::new(xclient_config());
    h.send("EHLO proxy.example\r\n");
    h.transcript.clear();
    h.send("XCLIENT ADDR=203.0.113.9 PORT=4711 NAME=client.example.org LOGIN=bob\r\n");
    h.send("EHLO client.example.org\r\n");
    h.transcript.truncate(h.transcript.find("S: 250-").unwrap());
    h.send("QUIT\r\n");
    h.expect(
        "C: XCLIENT ADDR=203.0.113.9 PORT=4711 NAME=client.example.org LOGIN=bob
         S: 220 mx.example ESMTP
         C: EHLO client.example.org
         C: QUIT
         S: 221 2.0.0 Bye
         -- close
         H: disconnect close=local reply=221 2.0.0 quit",
    );
    let connection = &h.context().connection;
    assert_eq!(
        connection.info.remote_ip,
        Some("203.0.113.9".parse::<IpAddr>().unwrap())
    );
    assert_eq!(connection.info.remote_port, Some(4711));
    assert_eq!(
        connection.info.remote_ptr.as_deref(),
        Some("client.example.org")
    );
    assert_eq!(
        connection.auth,
        Some(AuthInfo {
            mechanism: "XCLIENT".into(),
            username: Some("bob".into())
        })
    );
    assert_eq!(connection.helo.as_ref().unwrap().host, "client.example.org");
    // The local side was not named, so it stays.
    assert_eq!(connection.info.local_port, Some(25));
}

#[test]
fn xclient_helo_and_unavailable_values() {
    let mut h = Harness::new(xclient_config());
    h.send("EHLO proxy.example\r\n");
    h.send("XCLIENT NAME=[UNAVAILABLE] HELO=real.example PROTO=SMTP\r\n");
    let helo = h.session.helo().unwrap();
    assert_eq!(helo.host, "real.example");
    assert_eq!(helo.verb, HeloVerb::Helo);
    assert_eq!(h.session.info().remote_ptr, None);
    assert_eq!(h.server_lines().last(), Some(&"220 mx.example ESMTP"));
}

#[test]
fn xclient_from_an_untrusted_peer_is_550_and_changes_nothing() {
    let mut h = Harness::new(config());
    h.send("EHLO client.example\r\n");
    h.transcript.clear();
    h.send("XCLIENT ADDR=203.0.113.9 LOGIN=bob\r\n");
    h.expect(
        "C: XCLIENT ADDR=203.0.113.9 LOGIN=bob
         S: 550 5.7.0 XCLIENT denied",
    );
    assert_eq!(h.session.info(), &info());
    assert_eq!(h.session.auth(), None);
}

#[test]
fn xclient_errors_from_a_trusted_peer() {
    let mut h = Harness::new(xclient_config());
    h.send("EHLO proxy.example\r\n");
    h.transcript.clear();
    h.send("XCLIENT\r\n");
    h.send("XCLIENT FOO=bar\r\n");
    h.send("XCLIENT ADDR=300.0.0.1\r\n");
    h.send("MAIL FROM:<a@example.org>\r\n");
    h.send("XCLIENT ADDR=203.0.113.9\r\n");
    let lines = h.server_lines();
    assert_eq!(lines[1..3], ["501 5.5.4 Bad XCLIENT attribute"; 2]);
    assert!(lines[0].starts_with("501 5.5.4"), "{lines:?}");
    assert_eq!(lines[3], "250 2.1.0 Sender OK");
    assert!(lines[4].starts_with("503 5.5.1"), "{lines:?}");
    assert_eq!(h.session.info(), &info());
}

#[test]
fn proxy_then_xclient_trust_follows_the_proxied_address() {
    // Behind a PROXY header the peer is the address the header names.
    let config = Config {
        proxy_protocol: true,
        xclient_trusted: vec!["203.0.113.7".parse().unwrap()],
        ..config()
    };
    let mut h = Harness::new(config);
    h.send(V1);
    h.send("EHLO proxy.example\r\n");
    assert!(h.transcript.contains("XCLIENT ADDR"));
    h.send("XCLIENT ADDR=192.0.2.200\r\n");
    assert_eq!(
        h.session.info().remote_ip,
        Some("192.0.2.200".parse().unwrap())
    );
}

#[test]
fn implicit_tls_behind_proxy_hands_the_handshake_bytes_back() {
    // A port-465 listener behind HAProxy: the PROXY header and the TLS ClientHello arrive in
    // one read. The hello must reach the TLS layer, not be dropped as injected plaintext.
    let config = Config {
        implicit_tls: true,
        ..proxy_config()
    };
    let mut h = Harness::new(config);
    let client_hello = b"\x16\x03\x01\x00\x05hello";
    let mut read = V1.as_bytes().to_vec();
    read.extend_from_slice(client_hello);
    h.feed(&read);
    assert_eq!(
        h.transcript, "-- starttls\n",
        "no greeting before the handshake"
    );
    assert_eq!(h.session.take_handshake_bytes(), client_hello);
    assert_eq!(h.session.take_handshake_bytes(), b"", "handed back once");
    h.tls_established(tls_info());
    h.send("EHLO c\r\n");
    let lines = h.server_lines();
    assert_eq!(lines[0], "220 mx.example ESMTP");
    assert_eq!(
        h.session.info().remote_ip,
        Some("203.0.113.7".parse().unwrap())
    );
}

#[test]
fn bytes_before_a_starttls_handshake_are_never_handed_back() {
    let config = Config {
        extensions: smtp_session::Extensions {
            starttls: true,
            ..Default::default()
        },
        ..config()
    };
    let mut h = Harness::new(config);
    h.send("EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@example.org>\r\n");
    assert_eq!(h.starttls, 1);
    assert_eq!(h.session.take_handshake_bytes(), b"");
}
