//! `--milter`: a real OpenDKIM signing what mailsink stores, a real rspamd refusing the
//! GTUBE test message with its reply and adding its headers to a clean one, and filters
//! that hang, close mid-message or answer garbage, which take `--milter-default-action`
//! while mailsink keeps serving; what each filter said in the log lines, the Lua policy's
//! meta and the metrics.

mod common;
#[path = "common/scrape.rs"]
mod scrape;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{after_trace, Client, Server};
use smtp_session_testkit::daemons;

const MESSAGE: &[u8] = b"From: Alice <alice@example.com>\r\nTo: Bob <bob@example.net>\r\n\
Subject: through a milter\r\nDate: Mon, 07 Dec 2026 16:00:00 +0000\r\n\
Message-ID: <1@example.com>\r\n\r\nHello Bob.\r\n";

#[test]
fn opendkim_signs_what_mailsink_stores_below_its_trace_fields() {
    let dir = tempfile::tempdir().unwrap();
    let opendkim = daemons::opendkim(dir.path());
    let milter = opendkim.inet();
    let server = Server::start(&["--milter", &milter]);
    let mut client = Client::hello(server.addr);
    // One filter connection serves the SMTP connection's transactions, a reset one too
    // (each ended by an abort), and a MAIL with ESMTP parameters as arguments.
    assert!(client
        .cmd("MAIL FROM:<alice@example.com> SIZE=1000 BODY=8BITMIME")
        .starts_with("250 "));
    assert!(client.cmd("RSET").starts_with("250 "));
    for _ in 0..2 {
        let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
        assert!(reply.starts_with("250 "), "{reply}");
    }
    // The file starts with mailsink's Return-Path and Received (checked by after_trace);
    // the signature comes right below them.
    let stored = server.stored_files();
    assert_eq!(stored.len(), 2);
    let message = String::from_utf8_lossy(after_trace(&stored[1].1)).into_owned();
    assert!(String::from_utf8_lossy(&stored[0].1).contains("\r\nDKIM-Signature: v=1;"));
    assert!(message.starts_with("DKIM-Signature: v=1;"), "{message}");
    assert!(
        message.contains(" d=example.com;") && message.contains(" s=test;"),
        "{message}"
    );
    assert!(
        !message.contains("\n\t") || message.contains("\r\n\t"),
        "folds end in CRLF"
    );
    assert!(message.ends_with("\r\nFrom: Alice <alice@example.com>\r\nTo: Bob <bob@example.net>\r\nSubject: through a milter\r\nDate: Mon, 07 Dec 2026 16:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello Bob.\r\n"), "{message}");
}

/// A fake filter on a free port: each connection is handled by `serve` in a thread.
fn broken_filter(serve: fn(TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

/// Reads one packet; `None` at the end.
fn packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut data).ok()?;
    Some((data[0], data[1..].to_vec()))
}

/// Negotiates like a filter that wants every step and no change.
fn negotiate(stream: &mut TcpStream) {
    let _ = packet(stream);
    let _ = stream.write_all(&[0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]);
}

fn hangs(mut stream: TcpStream) {
    negotiate(&mut stream);
    std::thread::sleep(Duration::from_secs(30));
}

/// Answers "continue" until the body, then closes.
fn closes_mid_message(mut stream: TcpStream) {
    negotiate(&mut stream);
    while let Some((code, _)) = packet(&mut stream) {
        match code {
            b'B' => return,
            b'D' => {}
            _ => {
                let _ = stream.write_all(&[0, 0, 0, 1, b'c']);
            }
        }
    }
}

fn garbage(mut stream: TcpStream) {
    negotiate(&mut stream);
    let _ = packet(&mut stream);
    let _ = stream.write_all(b"\0\0\0\x05Zjunk and more junk");
}

/// EHLO, and when the filter broke after it, a message: the reply that refused.
fn refused_reply(client: &mut Client, breaks_at_connect: bool) -> String {
    let ehlo = client.cmd("EHLO client.example");
    if breaks_at_connect {
        return ehlo;
    }
    assert!(ehlo.starts_with("250"), "{ehlo}");
    client.send_message("alice@example.com", &["bob@example.net"], MESSAGE)
}

#[test]
fn a_broken_filter_gets_the_default_action_and_mailsink_keeps_serving() {
    // The first two break at connect, the third in the body.
    for (name, serve, at_connect) in [
        ("hangs", hangs as fn(TcpStream), true),
        ("garbage", garbage, true),
        ("closes", closes_mid_message, false),
    ] {
        let milter = format!("inet:127.0.0.1:{}", broken_filter(serve));
        let metrics = scrape::free_port();
        let listen = format!("127.0.0.1:{metrics}");
        let server = Server::start(&[
            "--milter",
            &milter,
            "--milter-timeout",
            "1",
            "--metrics",
            &listen,
        ]);
        let mut client = Client::greeted(server.addr);
        let reply = refused_reply(&mut client, at_connect);
        assert!(reply.starts_with("451 4.7.1 "), "{name}: {reply}");
        // As Postfix: the filter is not used again, and the rest of the connection is
        // refused with the default action.
        let again = client.cmd("MAIL FROM:<alice@example.com>");
        assert!(
            again.starts_with("451 4.7.1 ") || again.starts_with("503 "),
            "{name}: {again}"
        );
        let failed = scrape::scrape(metrics)
            ["mailsink_filter_verdicts_total{filter=\"milter\",verdict=\"failed\"}"];
        assert_eq!(failed, 1.0, "{name}");
        assert!(server.stored().is_empty(), "{name}");
        assert!(client.cmd("NOOP").starts_with("250"), "{name}");
        let stderr = server.wait_stderr_containing("milter inet:127.0.0.1");
        assert!(stderr.contains("error"), "{name}: {stderr}");

        let server = Server::start(&[
            "--milter",
            &milter,
            "--milter-timeout",
            "1",
            "--milter-default-action",
            "accept",
        ]);
        let mut client = Client::hello(server.addr);
        let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
        assert!(reply.starts_with("250 "), "{name}: {reply}");
        assert_eq!(server.stored().len(), 1, "{name}: stored once");

        let server = Server::start(&[
            "--milter",
            &milter,
            "--milter-timeout",
            "1",
            "--milter-default-action",
            "reject",
        ]);
        let mut client = Client::greeted(server.addr);
        let reply = refused_reply(&mut client, at_connect);
        assert!(reply.starts_with("550 5.7.1 "), "{name}: {reply}");
    }
}

/// Its verdict in headers also for a client on loopback (skipped by default as local).
const RSPAMD_HEADERS: (&str, &str) = (
    "milter_headers.conf",
    "use = [\"x-spamd-result\", \"x-spam-status\"];\nskip_local = false;\nskip_authenticated = false;\n",
);

#[test]
fn rspamd_refuses_gtube_with_its_reply_and_passes_a_clean_message() {
    let dir = tempfile::tempdir().unwrap();
    let rspamd = daemons::rspamd(dir.path(), &[RSPAMD_HEADERS]);
    let milter = rspamd.inet();
    let server = Server::start(&["--milter", &milter, "--milter-timeout", "30"]);
    let mut client = Client::hello(server.addr);
    let gtube = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: test\r\n\
Message-ID: <gtube@example.org>\r\n\r\n\
XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n";
    let reply = client.send_message("alice@example.org", &["bob@example.com"], gtube);
    assert_eq!(reply, "554 5.7.1 Gtube pattern\r\n");
    assert!(server.stored().is_empty());

    let clean = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: lunch\r\n\
Message-ID: <clean@example.org>\r\nDate: Mon, 07 Dec 2026 16:00:00 +0000\r\n\r\n\
Shall we have lunch on Tuesday?\r\n";
    let reply = client.send_message("alice@example.org", &["bob@example.com"], clean);
    assert!(reply.starts_with("250 "), "{reply}");
    let stored = server.stored();
    assert_eq!(stored.len(), 1);
    let message = String::from_utf8_lossy(&stored[0].1).into_owned();
    assert!(
        message.ends_with("\r\n\r\nShall we have lunch on Tuesday?\r\n"),
        "{message}"
    );
    // rspamd's headers, below mailsink's trace fields (stored() starts after them), each a
    // field of its own in the header section, in whichever order rspamd added them.
    let header = &message[..message.find("\r\n\r\n").expect("a header section")];
    let fields: Vec<&str> = header.split("\r\n").collect();
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("X-Spam-Status: No, score=")),
        "{message}"
    );
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("X-Spamd-Result: default: False [")),
        "{message}"
    );
}

fn send(stream: &mut TcpStream, code: u8, data: &[u8]) {
    let len = u32::try_from(data.len() + 1).unwrap().to_be_bytes();
    let _ = stream.write_all(&[&len[..], &[code], data].concat());
}

/// A filter allowed to quarantine (`SMFIF_QUARANTINE`) that continues at every step and
/// quarantines every message at its end.
fn quarantines(mut stream: TcpStream) {
    let _ = packet(&mut stream);
    send(&mut stream, b'O', &[0, 0, 0, 6, 0, 0, 0, 0x20, 0, 0, 0, 0]);
    while let Some((code, _)) = packet(&mut stream) {
        match code {
            b'D' | b'A' => {}
            b'Q' => return,
            b'E' => {
                send(&mut stream, b'q', b"suspicious attachment\0");
                send(&mut stream, b'c', b"");
            }
            _ => send(&mut stream, b'c', b""),
        }
    }
}

/// Prints the milters' verdicts on the message, as its meta shows them.
const PRINTS_MILTER_VERDICTS: &str = r#"
kumo.on('smtp_server_message_received', function(msg)
  for _, v in ipairs(msg:get_meta('milter_verdicts') or {}) do
    print('milter said ' .. v.name .. ' ' .. v.verdict .. ' ' .. v.stage)
  end
end)
"#;

#[test]
fn what_each_milter_said_is_in_the_log_lines_the_policy_and_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let opendkim = daemons::opendkim(dir.path());
    let signer = opendkim.inet();
    let quarantine = format!("inet:127.0.0.1:{}", broken_filter(quarantines));
    let policy = dir.path().join("policy.lua");
    std::fs::write(&policy, PRINTS_MILTER_VERDICTS).unwrap();
    let server = Server::start(&["--milter", &signer, "--policy", policy.to_str().unwrap()]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
    assert_eq!(reply, "250 2.0.0 Message accepted\r\n");
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let said = serde_json::json!([{"filter": "milter", "name": signer, "stage": "message",
        "message": 1, "verdict": "continue"}]);
    assert_eq!(server.wait_events("message", 1)[0]["filter_verdicts"], said);
    let disconnect = &server.wait_events("disconnect", 1)[0];
    assert_eq!(disconnect["context"]["filter_verdicts"], said);
    server.wait_stderr_containing(&format!("milter said {signer} continue message"));

    // Signed, then quarantined by the second filter: both verdicts, in order.
    drop(server);
    let metrics = scrape::free_port();
    let listen = format!("127.0.0.1:{metrics}");
    let server = Server::start(&[
        "--milter",
        &signer,
        "--milter",
        &quarantine,
        "--metrics",
        &listen,
    ]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
    assert_eq!(reply, "250 2.0.0 Message accepted\r\n");
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert!(server.stored().is_empty());
    let line = &server.wait_events("message", 1)[0];
    assert_eq!(
        line["quarantined"],
        format!("milter {quarantine}: suspicious attachment")
    );
    let verdicts = &line["filter_verdicts"];
    assert_eq!(verdicts[0]["verdict"], "continue");
    assert_eq!(verdicts[1]["name"], quarantine.as_str());
    assert_eq!(verdicts[1]["verdict"], "quarantine");
    assert_eq!(verdicts[1]["reason"], "suspicious attachment");
    let disconnect = &server.wait_events("disconnect", 1)[0];
    assert_eq!(&disconnect["context"]["filter_verdicts"], verdicts);
    let counted = scrape::scrape(metrics);
    let key = |verdict: &str| {
        format!("mailsink_filter_verdicts_total{{filter=\"milter\",verdict=\"{verdict}\"}}")
    };
    assert_eq!(counted.get(&key("continue")), Some(&1.0), "{counted:?}");
    assert_eq!(counted.get(&key("quarantine")), Some(&1.0), "{counted:?}");
}

#[test]
fn a_failed_milter_and_its_default_reply_are_in_the_disconnect_line() {
    let milter = format!("inet:127.0.0.1:{}", broken_filter(garbage));
    let server = Server::start(&["--milter", &milter]);
    // The filter answers the client's connection with garbage: as Postfix, every command
    // after the greeting gets the default action's reply.
    let mut client = Client::greeted(server.addr);
    let reply = client.cmd("EHLO client.example");
    assert_eq!(reply, "451 4.7.1 Service unavailable - try again later\r\n");
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let disconnect = &server.wait_events("disconnect", 1)[0];
    let said = &disconnect["context"]["filter_verdicts"][0];
    assert_eq!(said["verdict"], "failed", "{disconnect}");
    assert_eq!(said["stage"], "connect", "{disconnect}");
    assert_eq!(
        said["reply"],
        "451 4.7.1 Service unavailable - try again later"
    );
    assert!(
        said["reason"].as_str().unwrap().contains("protocol error"),
        "{said}"
    );
}
