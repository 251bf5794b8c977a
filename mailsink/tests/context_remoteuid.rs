//! `remoteuid`: mailsink listening on a UNIX socket (`--listen unix:PATH`) knows a client by
//! its user id, from the socket's peer credentials, in the message and disconnect lines.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;

use common::{Server, HOSTNAME, WAIT};

struct Client(BufReader<UnixStream>);

impl Client {
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.0.read_line(&mut line).expect("a reply line");
            assert!(!line.is_empty(), "closed after {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.0
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }
}

#[test]
fn a_unix_socket_client_is_logged_with_its_user_id() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mailsink.sock");
    let listen = format!("unix:{}", socket.display());
    let server = Server::start(&["--listen", &listen]);
    assert!(
        server
            .stderr_lines()
            .iter()
            .any(|l| l.contains(&format!("{listen} (smtp+starttls)"))),
        "{:?}",
        server.stderr_lines()
    );

    let stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut c = Client(BufReader::new(stream));
    assert_eq!(c.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
    assert!(c
        .cmd("EHLO local.client")
        .starts_with(&format!("250-{HOSTNAME} ")));
    assert!(c
        .cmd("MAIL FROM:<cron@local.client>")
        .starts_with("250 2.1.0 "));
    assert!(c
        .cmd("RCPT TO:<root@example.org>")
        .starts_with("250 2.1.5 "));
    assert!(c.cmd("DATA").starts_with("354 "));
    assert!(c
        .cmd("Subject: daily\r\n\r\nall good\r\n.")
        .starts_with("250 "));
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");

    // This process's user id: the owner of the directory it just made.
    let uid = std::fs::metadata(dir.path()).unwrap().uid();
    let message = &server.wait_events("message", 1)[0];
    assert_eq!(message["connection"]["remoteuid"], uid);
    let line = &server.wait_events("disconnect", 1)[0];
    let connection = &line["connection"];
    assert_eq!(connection["remoteuid"], uid, "{connection}");
    assert_eq!(connection["remoteip"], serde_json::Value::Null);
    assert_eq!(connection["serverid"], "smtp");
    assert_eq!(line["arguments"]["reply"]["state"], "QUIT");
    assert_eq!(server.stored().len(), 1);
}

#[test]
fn a_unix_path_that_is_not_a_socket_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let listen = format!("unix:{}", file.display());
    let (status, err) = common::run_to_exit(&["--listen", &listen, "--no-dns"]);
    assert!(!status.success());
    assert!(err.contains(&format!("cannot listen on {listen}")), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}
