//! The policy's `smtp_server_message_received` still reads whole bodies when messages stream
//! into the Maildir: a large one is read back from `tmp/` (without the trace fields), and
//! one it refuses leaves no file.

mod common;

use common::{Client, Options, Server};

const POLICY: &str = r#"
kumo.on('smtp_server_message_received', function(msg)
  local data = msg:get_data()
  if data:sub(1, 9) ~= 'Subject: ' then
    kumo.reject(451, '4.3.0 the body does not start with its header')
  end
  if data:find('SPAM-MARKER', 1, true) then
    kumo.reject(550, '5.7.1 spam in ' .. #data .. ' bytes: ' .. msg:get_first_named_header_value('subject'))
  end
end)
"#;

fn big(subject: &str, lines: usize, tail: &str) -> Vec<u8> {
    let mut body = format!("Subject: {subject}\r\n\r\n").into_bytes();
    for i in 0..lines {
        body.extend_from_slice(format!("line {i:07} of a long message, padded out\r\n").as_bytes());
    }
    body.extend_from_slice(tail.as_bytes());
    body
}

#[test]
fn the_script_reads_a_streamed_body_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, POLICY).unwrap();
    let server = Server::start_with(Options {
        args: vec!["--policy".into(), path.to_str().unwrap().into()],
        env: vec![],
        implicit_tls: false,
    });
    let mut c = Client::hello(server.addr);
    // About 5 MiB: far past what a connection keeps in memory.
    let spam = big("offer", 120_000, "SPAM-MARKER at the very end\r\n");
    let reply = c.send_message("a@x.example", &["b@y.example"], &spam);
    assert_eq!(
        reply,
        format!("550 5.7.1 spam in {} bytes: offer\r\n", spam.len())
    );
    assert_eq!(
        std::fs::read_dir(server.maildir().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    let ham = big("report", 120_000, "the end\r\n");
    let reply = c.send_message("a@x.example", &["b@y.example"], &ham);
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let stored = server.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, ham);
}
