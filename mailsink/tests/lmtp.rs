//! LMTP (RFC 2033) on `--lmtp-listen`: a message is stored once and each recipient hears
//! its own reply after the data, in RCPT order. The policy's message handler runs once per
//! recipient (as KumoMTA's does), so a `kumo.reject` there refuses that recipient alone.
//! Raw transcripts, Python's smtplib.LMTP, and Postfix's smtp-source -L.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{have_tool, output_within, Client, Options, Server};

/// Refuses `no@...` and `2rcpt@...` recipients, and `picky@...` when the body says
/// "forbidden"; "refuses" `ok250@...` with a 250, which is no refusal; each call must see
/// one recipient.
const POLICY: &str = r#"
kumo.on('smtp_server_message_received', function(msg)
  local rcpt = tostring(msg:recipient())
  if #msg:recipient_list() ~= 1 then
    kumo.reject(451, '4.3.0 one recipient per call expected')
  end
  if rcpt:sub(1, 3) == 'no@' or rcpt:sub(1, 6) == '2rcpt@' then
    kumo.reject(550, '5.1.1 no mailbox for ' .. rcpt)
  end
  if rcpt:sub(1, 6) == 'ok250@' then
    kumo.reject(250, '2.0.0 taken, or so it says')
  end
  if rcpt:sub(1, 6) == 'picky@' and msg:get_data():find('forbidden', 1, true) then
    kumo.reject(554, '5.7.1 not for ' .. rcpt .. ': ' .. #msg:get_data() .. ' bytes')
  end
end)
"#;

/// mailsink with an LMTP listener (and the policy above); returns it and the LMTP address.
fn lmtp_server(args: &[&str]) -> (Server, SocketAddr) {
    let policy = tempfile::tempdir().unwrap();
    let path = policy.path().join("policy.lua");
    std::fs::write(&path, POLICY).unwrap();
    let mut all = vec![
        "--lmtp-listen",
        "127.0.0.1:0",
        "--policy",
        path.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let server = Server::start_with(Options {
        args: all.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        implicit_tls: false,
    });
    let line = server
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("listening on"))
        .unwrap();
    // `mailsink mx.test: listening on ADDR (smtp+starttls), ADDR (lmtp); storing ...`
    let listeners = line.split("listening on ").nth(1).unwrap();
    let addr = listeners
        .split(';')
        .next()
        .unwrap()
        .split(", ")
        .find_map(|item| item.strip_suffix(" (lmtp)"))
        .unwrap_or_else(|| panic!("no LMTP listener in {line:?}"))
        .parse()
        .unwrap();
    (server, addr)
}

fn lhlo(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr);
    assert_eq!(c.reply(), "220 mx.test ESMTP\r\n");
    assert_eq!(
        c.cmd("EHLO client.example"),
        "500 5.5.1 Command unrecognized\r\n"
    );
    let lhlo = c.cmd("LHLO client.example");
    assert!(
        lhlo.starts_with("250-mx.test greets client.example\r\n"),
        "{lhlo}"
    );
    c
}

/// A header field's lines joined (RFC 5322 unfolding).
fn unfold(text: &str) -> String {
    text.replace("\r\n\t", " ").replace("\r\n ", "  ")
}

fn tmp_is_empty(server: &Server) -> bool {
    std::fs::read_dir(server.maildir().join("tmp"))
        .unwrap()
        .count()
        == 0
}

#[test]
fn each_recipient_gets_its_reply_and_the_message_is_stored_once() {
    let (server, addr) = lmtp_server(&[]);
    let mut c = lhlo(addr);
    // Larger than what is kept in memory: the script reads the body back from tmp/.
    let mut body = b"Subject: forbidden fruit\r\n\r\n".to_vec();
    while body.len() < 100_000 {
        body.extend_from_slice(b"a line of the message, long enough to fill it up\r\n");
    }
    c.send(
        "MAIL FROM:<a@x.example>\r\nRCPT TO:<ok@y.example>\r\nRCPT TO:<no@y.example>\r\n\
         RCPT TO:<picky@y.example>\r\nDATA\r\n",
    );
    let mut replies: Vec<String> = (0..5).map(|_| c.reply()).collect();
    c.send(common::dot_stuff(&body));
    c.send(".\r\n");
    replies.extend((0..3).map(|_| c.reply()));
    assert_eq!(
        replies,
        [
            "250 2.1.0 Sender OK\r\n",
            "250 2.1.5 Recipient OK\r\n",
            "250 2.1.5 Recipient OK\r\n",
            "250 2.1.5 Recipient OK\r\n",
            "354 End data with <CR><LF>.<CR><LF>\r\n",
            "250 2.0.0 Message accepted\r\n",
            "550 5.1.1 no mailbox for no@y.example\r\n",
            &format!(
                "554 5.7.1 not for picky@y.example: {} bytes\r\n",
                body.len()
            ),
        ]
    );
    let stored = server.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, body);
    let raw = &server.stored_files()[0].1;
    let head = String::from_utf8_lossy(&raw[..raw.len() - body.len()]).into_owned();
    assert!(head.starts_with("Return-Path: <a@x.example>\r\nReceived: from client.example"));
    assert!(unfold(&head).contains(" with LMTP id "), "{head}");
    assert_eq!(server.wait_events("message", 1).len(), 1);

    // Every recipient refused: nothing is stored.
    c.send("MAIL FROM:<a@x.example>\r\nRCPT TO:<no@y.example>\r\nRCPT TO:<2rcpt@y.example>\r\n");
    c.send("DATA\r\nSubject: nobody\r\n\r\nhi\r\n.\r\n");
    let replies: Vec<String> = (0..6).map(|_| c.reply()).collect();
    assert_eq!(
        replies[4..],
        [
            "550 5.1.1 no mailbox for no@y.example\r\n",
            "550 5.1.1 no mailbox for 2rcpt@y.example\r\n"
        ]
    );
    assert_eq!(server.stored().len(), 1);
    assert!(tmp_is_empty(&server));

    // BDAT: the replies come after the last chunk.
    c.send("MAIL FROM:<a@x.example>\r\nRCPT TO:<ok@y.example>\r\nRCPT TO:<no@y.example>\r\n");
    let chunk = "Subject: bdat\r\n\r\nhi\r\n";
    c.send(format!("BDAT {} LAST\r\n{chunk}", chunk.len()));
    let replies: Vec<String> = (0..5).map(|_| c.reply()).collect();
    assert_eq!(
        replies[3..],
        [
            "250 2.0.0 Message accepted\r\n",
            "550 5.1.1 no mailbox for no@y.example\r\n"
        ]
    );

    // Accepted as a whole: one 250 per recipient.
    c.send("MAIL FROM:<>\r\nRCPT TO:<ok@y.example>\r\nRCPT TO:<picky@y.example>\r\n");
    c.send("DATA\r\nSubject: fine\r\n\r\nhi\r\n.\r\n");
    let replies: Vec<String> = (0..6).map(|_| c.reply()).collect();
    assert_eq!(replies[4..], ["250 2.0.0 Message accepted\r\n"; 2]);
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let stored = server.stored();
    assert_eq!(stored.len(), 3);
    assert!(stored
        .iter()
        .any(|(_, m)| m == b"Subject: bdat\r\n\r\nhi\r\n"));
    assert!(stored
        .iter()
        .any(|(_, m)| m == b"Subject: fine\r\n\r\nhi\r\n"));
}

#[test]
fn a_failed_store_is_451_for_each_recipient_the_script_accepted() {
    let (server, addr) = lmtp_server(&[]);
    let tmp = server.maildir().join("tmp");
    std::fs::remove_dir(&tmp).unwrap();
    std::fs::write(&tmp, b"tmp/ is a file now: nothing can be written").unwrap();
    let mut c = lhlo(addr);
    c.send(
        "MAIL FROM:<a@x.example>\r\nRCPT TO:<ok@y.example>\r\nRCPT TO:<no@y.example>\r\n\
         RCPT TO:<also@y.example>\r\nDATA\r\nSubject: lost\r\n\r\nhi\r\n.\r\n",
    );
    let replies: Vec<String> = (0..8).map(|_| c.reply()).collect();
    let failed = "451 4.3.0 Could not store the message, try again later\r\n";
    assert_eq!(
        replies[5..],
        [failed, "550 5.1.1 no mailbox for no@y.example\r\n", failed]
    );
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK\r\n");
    assert!(server.stored_files().is_empty());
}

#[test]
fn python_smtplib_lmtp_reads_a_reply_per_recipient() {
    if !have_tool("python3") {
        return;
    }
    let (server, addr) = lmtp_server(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/lmtp_client.py");
    let out = output_within(
        Command::new("python3")
            .arg(script)
            .args([addr.ip().to_string(), addr.port().to_string()]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out["lhlo"], 250);
    assert_eq!(out["rcpt"], serde_json::json!([250, 250, 250]));
    assert_eq!(
        out["data"],
        serde_json::json!([
            [250, "2.0.0 Message accepted"],
            [550, "5.1.1 no mailbox for no@example.net"],
            [250, "2.0.0 Message accepted"]
        ])
    );
    assert_eq!(out["single"], serde_json::json!({}));
    assert_eq!(out["noop"], 250);
    let body = out["body"].as_str().unwrap().as_bytes();
    let stored = server.stored();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|(_, m)| m == body));
}

#[test]
fn postfix_smtp_source_in_lmtp_mode() {
    if !have_tool("smtp-source") {
        return;
    }
    let (server, addr) = lmtp_server(&[]);
    let target = addr.to_string();
    // 20 messages to 2 recipients (2ok@ and ok@) each over 2 sessions, all accepted.
    let out = output_within(
        Command::new("smtp-source").args([
            "-L",
            "-s",
            "2",
            "-m",
            "20",
            "-r",
            "2",
            "-l",
            "2000",
            "-f",
            "from@x.example",
            "-t",
            "ok@y.example",
            &target,
        ]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = server.stored_files();
    assert_eq!(stored.len(), 20);
    for (_, bytes) in &stored {
        let text = String::from_utf8_lossy(bytes);
        assert!(text.starts_with("Return-Path: <from@x.example>\r\nReceived: "));
        assert!(unfold(&text).contains(" with LMTP id "), "{text}");
    }

    // Three recipients, 3rcpt, 2rcpt and rcpt: the policy refuses the second. smtp-source
    // reads the first recipient's 250, then the second's refusal, and gives up on it.
    let out = output_within(
        Command::new("smtp-source").args([
            "-v",
            "-L",
            "-s",
            "1",
            "-m",
            "1",
            "-r",
            "3",
            "-f",
            "from@x.example",
            "-t",
            "rcpt@y.example",
            &target,
        ]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    // -v writes the dialogue to stdout or stderr depending on the build.
    let stderr =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let received: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("smtp-source: <<< "))
        .collect();
    assert_eq!(
        received[received.len() - 3..],
        [
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Message accepted",
            "550 5.1.1 no mailbox for 2rcpt@y.example"
        ],
        "{stderr}"
    );
    assert!(
        stderr.contains("end of data rejected: 550 5.1.1"),
        "{stderr}"
    );
    // Stored once, for the recipients that took it.
    assert_eq!(server.stored_files().len(), 21);
}

#[test]
fn a_2xx_rejection_of_one_recipient_fails_the_hook_and_answers_no_recipient_250() {
    // A refusal is an error reply. `kumo.reject(250, ..)` is a script error, as over SMTP:
    // no recipient may hear 250 for a message that is not stored.
    let (server, addr) = lmtp_server(&[]);
    // One recipient taken and one "refused" with 250; then both "refused" so.
    for second in ["ok@y.example", "ok250@z.example"] {
        let mut c = lhlo(addr);
        c.send(format!(
            "MAIL FROM:<a@x.example>\r\nRCPT TO:<{second}>\r\nRCPT TO:<ok250@y.example>\r\n\
             DATA\r\nSubject: hi\r\n\r\nhi\r\n.\r\n"
        ));
        let replies: Vec<String> = (0..4).map(|_| c.reply()).collect();
        assert_eq!(replies[3], "354 End data with <CR><LF>.<CR><LF>\r\n");
        let failed = "421 4.3.0 mx.test technical difficulties\r\n";
        let rest = String::from_utf8(c.read_to_close()).unwrap();
        assert_eq!(rest, failed, "to {second} and ok250@y.example");
    }
    assert!(server.stored_files().is_empty());
    assert!(tmp_is_empty(&server));
    assert!(server.events("message").is_empty());
}
