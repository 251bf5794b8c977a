//! `--milter` during the dialogue, as Postfix's `smtpd_milters`: a filter is asked at
//! connect, HELO, MAIL, RCPT and DATA when the client sends them, and its refusal answers
//! that command (at RCPT only that recipient); at end of message its sender change, body
//! replacement and header fields at the index it asked for reach the stored message. The
//! filters here are small scripted ones speaking the milter protocol's raw bytes, for the
//! verdicts and changes no real daemon can be told to make.

mod common;
#[path = "common/memory.rs"]
#[allow(dead_code)]
mod memory;
mod relay_servers;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::{after_trace, Client, Server};

const MESSAGE: &[u8] = b"From: Alice <alice@example.com>\r\nTo: Bob <bob@example.net>\r\n\
Subject: through a milter\r\nDate: Mon, 07 Dec 2026 16:00:00 +0000\r\n\
Message-ID: <1@example.com>\r\n\r\nHello Bob.\r\n";

/// `SMFIP_NOHELO`, `SMFIP_NOBODY`, `SMFIP_NR_RCPT`.
const NO_HELO: u32 = 0x02;
const NO_BODY: u32 = 0x10;
const NO_REPLY_RCPT: u32 = 0x8000;

/// What a scripted filter answers to one command: the packets, whole.
type Script = dyn Fn(u8, &[u8]) -> Vec<Vec<u8>> + Send + Sync;

/// One packet: length, code, data.
fn pkt(code: u8, data: &[u8]) -> Vec<u8> {
    let mut out = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(code);
    out.extend_from_slice(data);
    out
}

/// `SMFIR_REPLYCODE` with this reply.
fn reply(text: &str) -> Vec<Vec<u8>> {
    vec![pkt(b'y', format!("{text}\0").as_bytes())]
}

fn read_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut data).ok()?;
    Some((data[0], data[1..].to_vec()))
}

/// A filter on a free port that takes the `actions` (`SMFIF_*`), wants every step and
/// answers each with `script` (an empty answer is "continue"). The commands it was sent,
/// by code, in order, macros left out.
fn filter(actions: u32, script: Arc<Script>) -> (String, Arc<Mutex<Vec<u8>>>) {
    filter_with(actions, 0, script)
}

/// As [`filter`], with the protocol flags `protocol` (`SMFIP_*`): the steps it skips are
/// not sent, and those it does not answer (`SMFIP_NR_RCPT` only, here) are not answered.
fn filter_with(actions: u32, protocol: u32, script: Arc<Script>) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("inet:127.0.0.1:{}", listener.local_addr().unwrap().port());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (script, log) = (script.clone(), log.clone());
            std::thread::spawn(move || serve(stream, (actions, protocol), &*script, &log));
        }
    });
    (addr, seen)
}

fn serve(mut stream: TcpStream, flags: (u32, u32), script: &Script, seen: &Mutex<Vec<u8>>) {
    let (actions, protocol) = flags;
    let Some((b'O', _)) = read_packet(&mut stream) else {
        return;
    };
    let mut optneg = 6u32.to_be_bytes().to_vec();
    optneg.extend_from_slice(&actions.to_be_bytes());
    optneg.extend_from_slice(&protocol.to_be_bytes());
    let _ = stream.write_all(&pkt(b'O', &optneg));
    while let Some((code, data)) = read_packet(&mut stream) {
        if code == b'D' {
            continue;
        }
        seen.lock().unwrap().push(code);
        match code {
            b'A' => continue,
            b'R' if protocol & NO_REPLY_RCPT != 0 => continue,
            b'Q' => return,
            _ => {}
        }
        let mut answer = script(code, &data);
        if answer.is_empty() {
            answer.push(pkt(b'c', b""));
        }
        for packet in answer {
            if stream.write_all(&packet).is_err() {
                return;
            }
        }
    }
}

/// What the filter was sent, once it was sent QUIT (or after 5 seconds).
fn seen(log: &Mutex<Vec<u8>>) -> String {
    for _ in 0..100 {
        if log.lock().unwrap().ends_with(b"Q") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    String::from_utf8(log.lock().unwrap().clone()).unwrap()
}

#[test]
fn a_filter_refusing_a_recipient_at_rcpt_refuses_only_that_one() {
    let (milter, log) = filter(
        0,
        Arc::new(|code, data: &[u8]| match code {
            b'R' if data.starts_with(b"<nobody@") => reply("550 5.1.1 No such user here"),
            _ => Vec::new(),
        }),
    );
    let server = Server::start(&["--milter", &milter]);
    let mut client = Client::hello(server.addr);
    assert!(client
        .cmd("MAIL FROM:<alice@example.com>")
        .starts_with("250 "));
    assert!(client.cmd("RCPT TO:<bob@example.net>").starts_with("250 "));
    assert_eq!(
        client.cmd("RCPT TO:<nobody@example.net>"),
        "550 5.1.1 No such user here\r\n"
    );
    assert!(client.cmd("DATA").starts_with("354 "));
    client.send(MESSAGE);
    let done = client.cmd(".");
    assert!(done.starts_with("250 "), "{done}");
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let stored = server.stored_files();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0].1);
    assert!(text.contains("for <bob@example.net>"), "{text}");
    // Connect, HELO, MAIL, two RCPTs, DATA, the five fields, end of headers, the body, end
    // of message, then QUIT: each step when the client sent it.
    assert_eq!(seen(&log), "CHMRRTLLLLLNBEAQ");
}

#[test]
fn a_filter_refusing_the_sender_at_mail_refuses_that_transaction_only() {
    let (milter, log) = filter(
        0,
        Arc::new(|code, data: &[u8]| match code {
            b'M' if data.starts_with(b"<spammer@") => vec![pkt(b't', b"")],
            _ => Vec::new(),
        }),
    );
    let server = Server::start(&["--milter", &milter]);
    let mut client = Client::hello(server.addr);
    assert_eq!(
        client.cmd("MAIL FROM:<spammer@example.com>"),
        "451 4.7.1 Service unavailable - try again later\r\n"
    );
    assert!(client.cmd("RCPT TO:<bob@example.net>").starts_with("503 "));
    assert!(client.cmd("EHLO client.example").starts_with("250"));
    let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    assert_eq!(server.stored().len(), 1);
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    // The refused transaction is aborted at once, as is the completed one after it.
    assert_eq!(seen(&log), "CHMAHMRTLLLLLNBEAQ");
}

#[test]
fn a_filter_tempfailing_at_connect_refuses_the_clients_commands() {
    let (milter, _) = filter(
        0,
        Arc::new(|code, _: &[u8]| match code {
            b'C' => vec![pkt(b't', b"")],
            _ => Vec::new(),
        }),
    );
    let server = Server::start(&["--milter", &milter]);
    let mut client = Client::connect(server.addr);
    assert!(client.reply().starts_with("220 "));
    let refused = "451 4.7.1 Service unavailable - try again later\r\n";
    assert_eq!(client.cmd("EHLO client.example"), refused);
    assert_eq!(client.cmd("HELO client.example"), refused);
    assert!(client.cmd("NOOP").starts_with("250 "));
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert!(server.stored().is_empty());
}

#[test]
fn a_sender_change_is_the_stored_return_path() {
    let (milter, _) = filter(
        0x40,
        Arc::new(|code, _: &[u8]| match code {
            b'E' => vec![
                pkt(b'e', b"<bounces+alice@lists.example.org>\0SIZE=100\0"),
                pkt(b'c', b""),
            ],
            _ => Vec::new(),
        }),
    );
    let server = Server::start(&["--milter", &milter]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    let stored = server.stored_files();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0].1);
    assert!(
        text.starts_with("Return-Path: <bounces+alice@lists.example.org>\r\nReceived: "),
        "{text}"
    );
    assert!(after_trace(&stored[0].1) == MESSAGE, "{text}");
}

#[test]
fn header_fields_inserted_at_an_index_land_there_below_the_trace_fields() {
    let (milter, _) = filter(
        0x01 | 0x10,
        Arc::new(|code, _: &[u8]| {
            let at = |index: u32, field: &str| {
                let mut data = index.to_be_bytes().to_vec();
                data.extend_from_slice(field.as_bytes());
                data
            };
            match code {
                b'E' => vec![
                    pkt(b'i', &at(0, "X-Zero\0top\0")),
                    pkt(b'i', &at(2, "X-Two\0after two\0")),
                    pkt(b'i', &at(99, "X-End\0past the end\0")),
                    pkt(b'h', b"X-Added\0appended\0"),
                    pkt(b'm', &at(1, "Subject\0changed in place\0")),
                    pkt(b'm', &at(1, "Date\0\0")),
                    pkt(b'c', b""),
                ],
                _ => Vec::new(),
            }
        }),
    );
    let server = Server::start(&["--milter", &milter]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    let stored = server.stored();
    assert_eq!(stored.len(), 1);
    // stored() checked the trace fields at the top and starts below them.
    assert_eq!(
        String::from_utf8_lossy(&stored[0].1),
        "X-Zero: top\r\nFrom: Alice <alice@example.com>\r\nX-Two: after two\r\n\
To: Bob <bob@example.net>\r\nSubject: changed in place\r\n\
Message-ID: <1@example.com>\r\nX-End: past the end\r\nX-Added: appended\r\n\r\nHello Bob.\r\n"
    );
}

/// A new body of `n` blocks of 64 KiB, sent in halves (a packet holds less than 64 KiB).
fn new_body(n: usize) -> Vec<Vec<u8>> {
    let mut packets: Vec<Vec<u8>> = (0..n)
        .flat_map(|i| {
            let block = memory::block(i);
            [
                pkt(b'b', &block[..32 * 1024]),
                pkt(b'b', &block[32 * 1024..]),
            ]
        })
        .collect();
    packets.push(pkt(b'c', b""));
    packets
}

#[test]
fn a_replaced_body_is_stored_with_the_header_section_and_held_in_a_file() {
    // 24 MiB of new body in 64 KiB pieces, below the 25 MiB limit.
    const PIECES: usize = 384;
    let (milter, _) = filter(
        0x01 | 0x02,
        Arc::new(|code, _: &[u8]| match code {
            b'E' => {
                let mut packets = vec![pkt(b'h', b"X-Replaced\0yes\0")];
                packets.extend(new_body(PIECES));
                packets
            }
            _ => Vec::new(),
        }),
    );
    let server = Server::start(&["--milter", &milter]);
    let idle = memory::rss(server.pid());
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    let grown = memory::rss(server.pid()).saturating_sub(idle);
    assert!(
        grown < 8 << 20,
        "{grown} bytes more than idle for a 24 MiB body"
    );
    let stored = server.stored();
    assert_eq!(stored.len(), 1);
    let message = &stored[0].1;
    let header = b"From: Alice <alice@example.com>\r\nTo: Bob <bob@example.net>\r\n\
Subject: through a milter\r\nDate: Mon, 07 Dec 2026 16:00:00 +0000\r\n\
Message-ID: <1@example.com>\r\nX-Replaced: yes\r\n\r\n";
    assert!(message.starts_with(header));
    let body = &message[header.len()..];
    assert_eq!(body.len(), PIECES * 64 * 1024);
    assert!(body
        .chunks(64 * 1024)
        .enumerate()
        .all(|(i, b)| b == memory::block(i)));
    // Nothing left beside the messages.
    assert!(memory::tmp_sizes(&server.maildir()).is_empty());
}

#[test]
fn a_replaced_body_over_the_size_limit_takes_the_default_action() {
    let (milter, _) = filter(
        0x02,
        Arc::new(|code, _: &[u8]| match code {
            b'E' => new_body(2),
            _ => Vec::new(),
        }),
    );
    let server = Server::start(&["--milter", &milter, "--max-message-size", "100000"]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
    assert_eq!(reply, "451 4.7.1 Service unavailable - try again later\r\n");
    assert!(server.stored().is_empty());
    assert!(memory::tmp_sizes(&server.maildir()).is_empty());
}

#[test]
fn a_large_messages_file_gets_the_new_sender_the_fields_and_the_new_body() {
    // Past the 32 KiB a message gathers in memory: its file is rewritten in place.
    let mut large = MESSAGE.to_vec();
    for i in 0..4 {
        large.extend_from_slice(&memory::block(i));
    }
    for replace in [false, true] {
        let (milter, _) = filter(
            0x01 | 0x02 | 0x10 | 0x40,
            Arc::new(move |code, _: &[u8]| {
                if code != b'E' {
                    return Vec::new();
                }
                let mut inserted = 1u32.to_be_bytes().to_vec();
                inserted.extend_from_slice(b"X-Second\0in place\0");
                let mut deleted = 1u32.to_be_bytes().to_vec();
                deleted.extend_from_slice(b"Date\0\0");
                let mut packets = vec![
                    pkt(b'e', b"<>\0"),
                    pkt(b'i', &inserted),
                    pkt(b'm', &deleted),
                ];
                if replace {
                    packets.push(pkt(b'b', b"New body.\r\n"));
                }
                packets.push(pkt(b'c', b""));
                packets
            }),
        );
        let server = Server::start(&["--milter", &milter]);
        let mut client = Client::hello(server.addr);
        let reply = client.send_message("alice@example.com", &["bob@example.net"], &large);
        assert!(reply.starts_with("250 "), "{reply}");
        let stored = server.stored_files();
        assert_eq!(stored.len(), 1);
        let file = &stored[0].1;
        assert!(
            file.starts_with(b"Return-Path: <>\r\nReceived: "),
            "{replace}"
        );
        let header = b"From: Alice <alice@example.com>\r\nX-Second: in place\r\n\
To: Bob <bob@example.net>\r\nSubject: through a milter\r\n\
Message-ID: <1@example.com>\r\n\r\n";
        let mut expected = header.to_vec();
        match replace {
            true => expected.extend_from_slice(b"New body.\r\n"),
            false => expected.extend_from_slice(&large[MESSAGE.len() - 12..]),
        }
        assert!(after_trace(file) == expected, "{replace}");
        assert!(memory::tmp_sizes(&server.maildir()).is_empty());
    }
}

#[test]
fn a_filter_gets_the_macros_it_asked_for_at_negotiation_and_no_others() {
    // A filter that answers the negotiation with its own macro lists (libmilter's
    // smfi_setsymlist): only {client_addr} at connect, only {mail_addr} at MAIL.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let milter = format!("inet:127.0.0.1:{}", listener.local_addr().unwrap().port());
    let server = Server::start(&["--milter", &milter]);
    let client = std::thread::spawn(move || {
        let mut client = Client::hello(server.addr);
        assert!(client
            .cmd("MAIL FROM:<alice@example.com>")
            .starts_with("250 "));
        assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    });
    let (mut stream, _) = listener.accept().unwrap();
    assert_eq!(read_packet(&mut stream).unwrap().0, b'O');
    let mut optneg = 6u32.to_be_bytes().to_vec();
    optneg.extend_from_slice(&0x100u32.to_be_bytes());
    optneg.extend_from_slice(&0u32.to_be_bytes());
    optneg.extend_from_slice(&0u32.to_be_bytes());
    optneg.extend_from_slice(b"{client_addr}\0");
    optneg.extend_from_slice(&2u32.to_be_bytes());
    optneg.extend_from_slice(b"{mail_addr}\0");
    stream.write_all(&pkt(b'O', &optneg)).unwrap();
    let mut macros = Vec::new();
    while let Some((code, data)) = read_packet(&mut stream) {
        match code {
            b'D' => macros.push(String::from_utf8_lossy(&data).into_owned()),
            b'Q' => break,
            b'A' => {}
            _ => stream.write_all(&pkt(b'c', b"")).unwrap(),
        }
    }
    client.join().unwrap();
    // HELO's list is the default one, of which mailsink knows none on a plain connection.
    assert_eq!(
        macros,
        [
            "C{client_addr}\u{0}127.0.0.1\u{0}",
            "M{mail_addr}\u{0}alice@example.com\u{0}"
        ]
    );
}

/// A filter that changes the sender to `<bounces@lists.example.org>` with the ESMTP
/// arguments `args` (none when empty), adds `X-Filtered: yes`, and with `new_body` writes
/// that body in pieces of libmilter's largest size.
fn rewriting_filter(args: &'static str, new_body: Option<&'static [u8]>) -> String {
    let (milter, _) = filter(
        0x01 | 0x02 | 0x40,
        Arc::new(move |code, _: &[u8]| {
            if code != b'E' {
                return Vec::new();
            }
            let mut sender = b"<bounces@lists.example.org>\0".to_vec();
            if !args.is_empty() {
                sender.extend_from_slice(format!("{args}\0").as_bytes());
            }
            let mut packets = vec![pkt(b'e', &sender), pkt(b'h', b"X-Filtered\0yes\0")];
            if let Some(body) = new_body {
                packets.extend(body.chunks(65_535).map(|piece| pkt(b'b', piece)));
            }
            packets.push(pkt(b'c', b""));
            packets
        }),
    );
    milter
}

#[test]
fn under_relay_the_new_sender_is_the_mail_from_and_the_new_body_is_what_is_relayed() {
    let sink = relay_servers::SmtpSink::start(&[]);
    let milter = rewriting_filter("", None);
    let server = Server::start(&["--relay", &sink.url(), "--milter", &milter]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    let dump = &sink.wait_dumps(1)[0];
    assert!(
        dump.contains("X-Mail-Args: <bounces@lists.example.org>\n"),
        "{dump}"
    );
    assert!(dump.contains("\nX-Filtered: yes\nFrom: Alice"), "{dump}");

    // A new body, larger than the spool keeps in memory, with a dot line and a bare LF
    // (which leaves as CRLF): relayed in place of the client's, below its header section.
    let mut body = b"New body.\r\n.leading dot\nbare line feed\r\n".to_vec();
    body.extend(std::iter::repeat_n(b"0123456789abcdef\r\n".as_slice(), 20_000).flatten());
    body.extend_from_slice(b"The end.\r\n");
    let body: &'static [u8] = body.leak();
    let milter = rewriting_filter("", Some(body));
    let server = Server::start(&["--relay", &sink.url(), "--milter", &milter]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    let dump = &sink.wait_dumps(2)[1];
    assert!(dump.contains("\nX-Filtered: yes\nFrom: Alice"), "{dump}");
    assert!(!dump.contains("Hello Bob."), "the old body went out");
    let text = &dump[dump.find("Subject: through a milter").unwrap()..];
    let header_end = text.find("\n\n").unwrap();
    let relayed = &text[header_end + 2..];
    let want = String::from_utf8_lossy(body).replace("\r\n", "\n");
    assert_eq!(relayed.trim_end(), want.trim_end());
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    // Nothing of the message stays in the spool once relayed: neither it nor the new body.
    let tmp: Vec<_> = std::fs::read_dir(server.maildir().join("tmp"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(tmp, Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_new_senders_esmtp_arguments_replace_the_clients_for_the_relay_and_bad_ones_are_left_out() {
    let sink = relay_servers::SmtpSink::start(&[]);
    let milter = rewriting_filter("RET=HDRS ENVID=list+2B42", None);
    let server = Server::start(&["--relay", &sink.url(), "--milter", &milter]);
    let mut client = Client::hello(server.addr);
    assert!(client
        .cmd("MAIL FROM:<alice@example.com> RET=FULL ENVID=alice-1")
        .starts_with("250 "));
    assert!(client.cmd("RCPT TO:<bob@example.net>").starts_with("250 "));
    assert!(client.cmd("DATA").starts_with("354 "));
    client.send(MESSAGE);
    assert!(client.cmd(".").starts_with("250 "));
    let dump = &sink.wait_dumps(1)[0];
    assert!(
        dump.contains("X-Mail-Args: <bounces@lists.example.org> RET=HDRS ENVID=list+2B42\n"),
        "{dump}"
    );

    // Not parameters: logged and left out; the new sender still applies, with the
    // client's parameters, and the connection goes on.
    let milter = rewriting_filter("RET=SOMETIMES XFOO=1", None);
    let server = Server::start(&["--relay", &sink.url(), "--milter", &milter]);
    let mut client = Client::hello(server.addr);
    assert!(client
        .cmd("MAIL FROM:<alice@example.com> RET=FULL ENVID=alice-1")
        .starts_with("250 "));
    assert!(client.cmd("RCPT TO:<bob@example.net>").starts_with("250 "));
    assert!(client.cmd("DATA").starts_with("354 "));
    client.send(MESSAGE);
    assert!(client.cmd(".").starts_with("250 "));
    let dump = &sink.wait_dumps(2)[1];
    assert!(
        dump.contains("X-Mail-Args: <bounces@lists.example.org> RET=FULL ENVID=alice-1\n"),
        "{dump}"
    );
    assert!(client.cmd("NOOP").starts_with("250 "));
    server.wait_stderr_containing(
        "ESMTP arguments \"RET=SOMETIMES XFOO=1\" of sender <bounces@lists.example.org> not taken",
    );
}

#[test]
fn mail_and_rcpt_parameters_reach_the_filter_as_arguments_after_the_address() {
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = sent.clone();
    let (milter, _) = filter(
        0,
        Arc::new(move |code, data: &[u8]| {
            if code == b'M' || code == b'R' {
                let text = String::from_utf8_lossy(data).replace('\0', "|");
                log.lock().unwrap().push(format!("{}{text}", code as char));
            }
            Vec::new()
        }),
    );
    let server = Server::start(&["--milter", &milter]);
    let mut client = Client::hello(server.addr);
    assert!(client
        .cmd("MAIL FROM:<alice@example.com> size=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2Bx SMTPUTF8")
        .starts_with("250 "));
    assert!(client
        .cmd("RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@example.net")
        .starts_with("250 "));
    assert!(client
        .cmd("RCPT TO:<carol@example.net>")
        .starts_with("250 "));
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert_eq!(
        *sent.lock().unwrap(),
        [
            "M<alice@example.com>|SIZE=1000|BODY=8BITMIME|SMTPUTF8|RET=HDRS|ENVID=QQ+2Bx|",
            "R<bob@example.net>|NOTIFY=SUCCESS,FAILURE|ORCPT=rfc822;bob+2Bx@example.net|",
            "R<carol@example.net>|",
        ]
    );
}

/// Waits until what the filter was sent ends with `end` (at most 5 seconds).
fn wait_seen(log: &Mutex<Vec<u8>>, end: &str) -> String {
    for _ in 0..100 {
        if log.lock().unwrap().ends_with(end.as_bytes()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    String::from_utf8(log.lock().unwrap().clone()).unwrap()
}

#[test]
fn every_transactions_end_is_an_abort_and_the_filter_stays_connected_for_the_next() {
    let (milter, log) = filter(0, Arc::new(|_, _: &[u8]| Vec::new()));
    let server = Server::start(&["--milter", &milter]);
    let mut client = Client::hello(server.addr);
    // A completed message: the abort goes out at once, before the client says more.
    let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    assert_eq!(wait_seen(&log, "EA"), "CHMRTLLLLLNBEA");
    // RSET: the abort goes out with it, and the filter connection serves the next MAIL.
    assert!(client
        .cmd("MAIL FROM:<alice@example.com>")
        .starts_with("250 "));
    assert!(client.cmd("RCPT TO:<bob@example.net>").starts_with("250 "));
    assert!(client.cmd("RSET").starts_with("250 "));
    assert_eq!(wait_seen(&log, "RA"), "CHMRTLLLLLNBEAMRA");
    // So does EHLO in a transaction.
    assert!(client
        .cmd("MAIL FROM:<carol@example.com>")
        .starts_with("250 "));
    assert!(client.cmd("EHLO client.example").starts_with("250"));
    assert_eq!(wait_seen(&log, "MAH"), "CHMRTLLLLLNBEAMRAMAH");
    assert!(client
        .cmd("MAIL FROM:<carol@example.com>")
        .starts_with("250 "));
    assert!(client.cmd("RCPT TO:<bob@example.net>").starts_with("250 "));
    // The client goes away mid-transaction: abort, then quit.
    drop(client);
    assert_eq!(seen(&log), "CHMRTLLLLLNBEAMRAMAHMRAQ");
}

#[test]
fn a_mail_the_policy_refuses_after_the_filter_took_it_is_an_abort_at_once() {
    let (milter, log) = filter(0, Arc::new(|_, _: &[u8]| Vec::new()));
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.lua");
    std::fs::write(
        &policy,
        "kumo.on('smtp_server_mail_from', function(sender)\n\
           if sender.user == 'spammer' then kumo.reject(550, '5.7.1 not from you') end\n\
         end)\n",
    )
    .unwrap();
    let server = Server::start(&["--milter", &milter, "--policy", policy.to_str().unwrap()]);
    let mut client = Client::hello(server.addr);
    // The filter is asked first and takes the MAIL; the policy then refuses it. No
    // transaction is open, and the filter hears so before the client says more.
    assert_eq!(
        client.cmd("MAIL FROM:<spammer@example.com>"),
        "550 5.7.1 not from you\r\n"
    );
    assert_eq!(wait_seen(&log, "MA"), "CHMA");
    // The next transaction begins afresh.
    assert!(client
        .cmd("MAIL FROM:<alice@example.com>")
        .starts_with("250 "));
    assert!(client.cmd("RCPT TO:<bob@example.net>").starts_with("250 "));
    assert_eq!(wait_seen(&log, "MR"), "CHMAMR");
}

#[test]
fn the_steps_a_filter_skips_are_not_sent_and_those_it_does_not_answer_are_not_awaited() {
    let (milter, log) = filter_with(
        0,
        NO_HELO | NO_BODY | NO_REPLY_RCPT,
        Arc::new(|_, _: &[u8]| Vec::new()),
    );
    let server = Server::start(&["--milter", &milter]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message(
        "alice@example.com",
        &["bob@example.net", "carol@example.net"],
        MESSAGE,
    );
    assert!(reply.starts_with("250 "), "{reply}");
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert_eq!(server.stored().len(), 1);
    // No HELO, no body; the recipients sent, unanswered.
    assert_eq!(seen(&log), "CMRRTLLLLLNEAQ");
}

/// A filter that, at the end of the message, adds `<carol@example.org>` with DSN arguments
/// (`SMFIR_ADDRCPT_PAR`) and `<dave@example.org>` without (`SMFIR_ADDRCPT`).
fn adding_filter(carol_args: &'static str) -> String {
    let (milter, _) = filter(
        0x04 | 0x80,
        Arc::new(move |code, _: &[u8]| {
            if code != b'E' {
                return Vec::new();
            }
            let carol = format!("<carol@example.org>\0{carol_args}\0");
            vec![
                pkt(b'2', carol.as_bytes()),
                pkt(b'+', b"<dave@example.org>\0"),
                pkt(b'c', b""),
            ]
        }),
    );
    milter
}

#[test]
fn recipients_a_filter_adds_are_relayed_with_their_arguments_and_the_clients_keep_theirs() {
    let sink = relay_servers::SmtpSink::start(&[]);
    let milter = adding_filter("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol+2Blist@example.org");
    let server = Server::start(&["--relay", &sink.url(), "--milter", &milter]);
    let mut client = Client::hello(server.addr);
    assert!(client
        .cmd("MAIL FROM:<alice@example.com>")
        .starts_with("250 "));
    assert!(client
        .cmd("RCPT TO:<bob@example.net> NOTIFY=NEVER")
        .starts_with("250 "));
    assert!(client.cmd("DATA").starts_with("354 "));
    client.send(MESSAGE);
    assert!(client.cmd(".").starts_with("250 "));
    let dump = &sink.wait_dumps(1)[0];
    for rcpt in [
        "X-Rcpt-Args: <bob@example.net> NOTIFY=NEVER\n",
        "X-Rcpt-Args: <carol@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol+2Blist@example.org\n",
        "X-Rcpt-Args: <dave@example.org>\n",
    ] {
        assert!(dump.contains(rcpt), "{rcpt:?} not in {dump}");
    }

    // Arguments that are not RCPT parameters: logged and left out; the recipient is still
    // added, and the connection goes on.
    let milter = adding_filter("NOTIFY=SOMETIMES");
    let server = Server::start(&["--relay", &sink.url(), "--milter", &milter]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    let dump = &sink.wait_dumps(2)[1];
    assert!(
        dump.contains("X-Rcpt-Args: <carol@example.org>\n"),
        "{dump}"
    );
    assert!(client.cmd("NOOP").starts_with("250 "));
    server.wait_stderr_containing(
        "ESMTP arguments \"NOTIFY=SOMETIMES\" of recipient <carol@example.org> not taken",
    );
}

/// A filter that refuses DATA the first time it is asked, with `451 4.7.1 Try again`.
fn refusing_data_once() -> (String, Arc<Mutex<Vec<u8>>>) {
    let refused = Arc::new(Mutex::new(false));
    filter(
        0,
        Arc::new(move |code, _: &[u8]| {
            let mut refused = refused.lock().unwrap();
            match code {
                b'T' if !*refused => {
                    *refused = true;
                    reply("451 4.7.1 Try again")
                }
                _ => Vec::new(),
            }
        }),
    )
}

#[test]
fn after_a_refused_data_the_rest_of_the_transaction_is_refused_alike_and_the_next_goes_on() {
    for default_action in ["tempfail", "accept"] {
        let (milter, log) = refusing_data_once();
        let server = Server::start(&[
            "--milter",
            &milter,
            "--milter-default-action",
            default_action,
        ]);
        let mut client = Client::hello(server.addr);
        assert!(client
            .cmd("MAIL FROM:<alice@example.com>")
            .starts_with("250 "));
        assert!(client.cmd("RCPT TO:<bob@example.net>").starts_with("250 "));
        assert_eq!(client.cmd("DATA"), "451 4.7.1 Try again\r\n");
        // The filter was told the transaction ended. Going on with it does not get past
        // the filter, whatever its default action: the same refusal again.
        assert_eq!(wait_seen(&log, "TA"), "CHMRTA");
        assert_eq!(
            client.cmd("RCPT TO:<carol@example.net>"),
            "451 4.7.1 Try again\r\n"
        );
        assert_eq!(client.cmd("DATA"), "451 4.7.1 Try again\r\n");
        // A new transaction is asked of the filter afresh.
        assert!(client.cmd("RSET").starts_with("250 "));
        let reply = client.send_message("alice@example.com", &["bob@example.net"], MESSAGE);
        assert!(reply.starts_with("250 "), "{default_action}: {reply}");
        assert_eq!(server.stored_files().len(), 1, "{default_action}");
        let steps = wait_seen(&log, "EA");
        assert!(steps.starts_with("CHMRTAMRTL"), "{default_action}: {steps}");
    }
}
