//! `--policy-service`: a real postgrey greylisting at RCPT (450 first, 250 after its delay,
//! on connections mailsink keeps), services that hang or answer garbage, which take
//! `--policy-service-default-action` while mailsink keeps serving, Postfix's conditional
//! deferrals against the checks after the service (a Lua policy), and the answers in the
//! log lines, the Lua policy's meta and the metrics.

mod common;
#[path = "common/scrape.rs"]
mod scrape;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{Client, Server};
use smtp_session_testkit::daemons;

const MESSAGE: &[u8] = b"From: alice@example.org\r\nSubject: greylisted\r\n\r\nHello.\r\n";
const DELAY: u64 = 2;

#[test]
fn postgrey_defers_the_first_attempt_and_lets_the_retry_through() {
    let dir = tempfile::tempdir().unwrap();
    let postgrey = daemons::postgrey(dir.path(), DELAY);
    let addr = postgrey.inet();
    let server = Server::start(&["--policy-service", &addr]);
    let mut client = Client::hello(server.addr);
    assert!(client
        .cmd("MAIL FROM:<alice@example.org>")
        .starts_with("250"));
    let first = client.cmd("RCPT TO:<bob@example.com>");
    assert!(first.starts_with("450 4.2.0 Greylisted"), "{first}");
    assert!(client.cmd("RSET").starts_with("250"));

    std::thread::sleep(Duration::from_secs(DELAY + 1));
    let reply = client.send_message("alice@example.org", &["bob@example.com"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    let stored = server.stored();
    assert_eq!(stored.len(), 1);
    // postgrey's PREPEND, right below mailsink's trace fields.
    let message = String::from_utf8_lossy(&stored[0].1).into_owned();
    assert!(message.starts_with("X-Greylist: delayed "), "{message}");
    assert!(
        message.ends_with("\r\nFrom: alice@example.org\r\nSubject: greylisted\r\n\r\nHello.\r\n"),
        "{message}"
    );
}

/// A service answering every request with `action`, on one connection after another.
fn answering(action: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    request.extend_from_slice(&buf[..n]);
                    if request.ends_with(b"\n\n") {
                        request.clear();
                        let _ = stream.write_all(format!("action={action}\n\n").as_bytes());
                    }
                }
            });
        }
    });
    format!("inet:127.0.0.1:{port}")
}

#[test]
fn discard_hold_and_reject_act_on_the_message_or_the_recipient() {
    let server = Server::start(&["--policy-service", &answering("DISCARD spam trap")]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.org", &["bob@example.com"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(server.stored_files().is_empty());

    let server = Server::start(&["--policy-service", &answering("HOLD look at this")]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.org", &["bob@example.com"], MESSAGE);
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(server.stored_files().is_empty());
    let held = std::fs::read_dir(server.maildir().join(".Quarantine/new"))
        .unwrap()
        .count();
    assert_eq!(held, 1);

    let server = Server::start(&[
        "--policy-service",
        &answering("REJECT 5.7.1 no such user here"),
    ]);
    let mut client = Client::hello(server.addr);
    assert!(client
        .cmd("MAIL FROM:<alice@example.org>")
        .starts_with("250"));
    assert_eq!(
        client.cmd("RCPT TO:<bob@example.com>"),
        "554 5.7.1 no such user here\r\n"
    );

    let server = Server::start(&["--policy-service", &answering("REDIRECT carol@example.com")]);
    let mut client = Client::hello(server.addr);
    assert!(client
        .cmd("MAIL FROM:<alice@example.org>")
        .starts_with("250"));
    assert_eq!(
        client.cmd("RCPT TO:<bob@example.com>"),
        "451 4.3.5 Server configuration problem\r\n"
    );
}

/// A fake service: each connection is handled by `serve` in a thread.
fn broken_service(serve: fn(TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    format!("inet:127.0.0.1:{port}")
}

fn hangs(_stream: TcpStream) {
    std::thread::sleep(Duration::from_secs(30));
}

fn garbage(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf);
    let _ = stream.write_all(b"this is not an attribute\n\n");
}

#[test]
fn a_broken_service_gets_the_default_action_and_mailsink_keeps_serving() {
    for (name, serve) in [("hangs", hangs as fn(TcpStream)), ("garbage", garbage)] {
        let addr = broken_service(serve);
        let server = Server::start(&["--policy-service", &addr, "--policy-service-timeout", "1"]);
        let mut client = Client::hello(server.addr);
        assert!(client
            .cmd("MAIL FROM:<alice@example.org>")
            .starts_with("250"));
        for _ in 0..2 {
            let reply = client.cmd("RCPT TO:<bob@example.com>");
            assert!(reply.starts_with("451 4.3.5 "), "{name}: {reply}");
        }
        assert!(client.cmd("NOOP").starts_with("250"), "{name}");

        let server = Server::start(&[
            "--policy-service",
            &addr,
            "--policy-service-timeout",
            "1",
            "--policy-service-default-action",
            "dunno",
        ]);
        let mut client = Client::hello(server.addr);
        let reply = client.send_message("alice@example.org", &["bob@example.com"], MESSAGE);
        assert!(reply.starts_with("250 "), "{name}: {reply}");
        assert_eq!(server.stored().len(), 1, "{name}");
    }
}

/// A service answering each request with what `action` makes of it.
fn answering_by(action: fn(&str) -> String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    request.extend_from_slice(&buf[..n]);
                    if request.ends_with(b"\n\n") {
                        let answer = action(&String::from_utf8_lossy(&request));
                        request.clear();
                        let _ = stream.write_all(format!("action={answer}\n\n").as_bytes());
                    }
                }
            });
        }
    });
    format!("inet:127.0.0.1:{port}")
}

/// mailsink asking `service` at RCPT, then running `policy`; `more` arguments after.
fn with_policy(service: &str, policy: &str, more: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, policy).unwrap();
    let mut args = vec![
        "--policy-service",
        service,
        "--policy",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    Server::start(&args)
}

/// Rejects `spam@` recipients, after the policy service.
const REJECTS_SPAM: &str = r#"
kumo.on('smtp_server_rcpt_to', function(rcpt)
  if rcpt.user == 'spam' then kumo.reject(550, '5.7.1 no spam here') end
end)
"#;

#[test]
fn defer_if_permit_defers_what_the_checks_after_permit_and_yields_to_their_reject() {
    let service = answering("DEFER_IF_PERMIT 4.7.1 come back later");
    let server = with_policy(&service, REJECTS_SPAM, &[]);
    let mut client = Client::hello(server.addr);
    assert_eq!(
        client.cmd("MAIL FROM:<alice@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        client.cmd("RCPT TO:<bob@example.com>"),
        "450 4.7.1 come back later\r\n"
    );
    assert_eq!(
        client.cmd("RCPT TO:<spam@example.com>"),
        "550 5.7.1 no spam here\r\n"
    );
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
}

#[test]
fn defer_if_reject_turns_the_reject_of_a_check_after_it_into_its_deferral() {
    let service = answering("DEFER_IF_REJECT 4.3.0 the directory is down");
    let server = with_policy(&service, REJECTS_SPAM, &[]);
    let mut client = Client::hello(server.addr);
    assert_eq!(
        client.cmd("MAIL FROM:<alice@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        client.cmd("RCPT TO:<spam@example.com>"),
        "450 4.3.0 the directory is down\r\n"
    );
    assert_eq!(
        client.cmd("RCPT TO:<bob@example.com>"),
        "250 2.1.5 Recipient OK\r\n"
    );
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    let disconnect = &server.wait_events("disconnect", 1)[0];
    let verdicts = &disconnect["context"]["filter_verdicts"];
    assert_eq!(verdicts[0]["verdict"], "defer_if_reject");
    assert_eq!(verdicts[0]["reply"], "450 4.3.0 the directory is down");
    assert_eq!(verdicts[0]["stage"], "rcpt");
}

/// WARN for `warn@`, HOLD for `hold@`, DUNNO for the others.
fn warn_or_hold(request: &str) -> String {
    if request.contains("recipient=warn@") {
        "WARN sender looks odd".into()
    } else if request.contains("recipient=hold@") {
        "HOLD look at this".into()
    } else {
        "DUNNO".into()
    }
}

/// Prints what the filters said, as the message's and the connection's meta and the
/// disconnect context show it.
const PRINTS_VERDICTS: &str = r#"
local function said(list)
  local parts = {}
  for _, v in ipairs(list or {}) do
    table.insert(parts, v.filter .. '/' .. v.stage .. '/' .. (v.message or '-') .. '/'
      .. v.verdict .. '/' .. (v.reason or ''))
  end
  return table.concat(parts, ',')
end
kumo.on('smtp_server_message_received', function(msg, conn)
  print('message: ' .. said(msg:get_meta('policy_service_verdicts'))
    .. ' milters: ' .. said(msg:get_meta('milter_verdicts'))
    .. ' connection: ' .. said(conn:get_meta('filter_verdicts')))
end)
kumo.on('smtp_server_disconnect', function(arguments, connection, context)
  print('disconnect: ' .. said(context.filter_verdicts))
end)
"#;

#[test]
fn warn_and_hold_are_recorded_in_the_log_lines_the_policy_and_the_metrics() {
    let service = answering_by(warn_or_hold);
    let metrics = scrape::free_port();
    let listen = format!("127.0.0.1:{metrics}");
    let server = with_policy(&service, PRINTS_VERDICTS, &["--metrics", &listen]);
    let mut client = Client::hello(server.addr);
    let reply = client.send_message("alice@example.org", &["warn@example.com"], MESSAGE);
    assert_eq!(reply, "250 2.0.0 Message accepted\r\n");
    server.wait_stderr_containing("mailsink: policy service: sender looks odd");
    let reply = client.send_message("alice@example.org", &["hold@example.com"], MESSAGE);
    assert_eq!(reply, "250 2.0.0 Message accepted\r\n");
    assert_eq!(client.cmd("QUIT"), "221 2.0.0 Bye\r\n");

    // The warned message is stored; the held one is in the quarantine, flagged so in its
    // log line; each line has its own transaction's verdicts only.
    assert_eq!(server.stored().len(), 1);
    let held = std::fs::read_dir(server.maildir().join(".Quarantine/new")).unwrap();
    assert_eq!(held.count(), 1);
    let lines = server.wait_events("message", 2);
    let verdicts = |line: &serde_json::Value| line["filter_verdicts"].clone();
    assert_eq!(
        verdicts(&lines[0]),
        serde_json::json!([{"filter": "policy_service", "name": service, "stage": "rcpt",
            "message": 1, "verdict": "warn", "reason": "sender looks odd"}])
    );
    assert!(lines[0].get("quarantined").is_none());
    assert_eq!(lines[1]["quarantined"], "look at this");
    assert_eq!(verdicts(&lines[1])[0]["verdict"], "hold");
    assert_eq!(verdicts(&lines[1])[0]["message"], 2);
    assert_eq!(verdicts(&lines[1]).as_array().unwrap().len(), 1);

    let disconnect = &server.wait_events("disconnect", 1)[0];
    let all = &disconnect["context"]["filter_verdicts"];
    assert_eq!(all.as_array().unwrap().len(), 2, "{disconnect}");
    assert_eq!(all[0], verdicts(&lines[0])[0]);
    assert_eq!(all[1], verdicts(&lines[1])[0]);

    server.wait_stderr_containing(
        "message: policy_service/rcpt/1/warn/sender looks odd milters:  connection: \
         policy_service/rcpt/1/warn/sender looks odd",
    );
    // The held message's stage ended at the hold: the Lua handler was not asked.
    assert!(!server
        .stderr_lines()
        .iter()
        .any(|line| line.contains("message: policy_service/rcpt/2/")));
    server.wait_stderr_containing(
        "disconnect: policy_service/rcpt/1/warn/sender looks odd,\
         policy_service/rcpt/2/hold/look at this",
    );
    let counted = scrape::scrape(metrics);
    for verdict in ["warn", "hold"] {
        let key = format!(
            "mailsink_filter_verdicts_total{{filter=\"policy_service\",verdict=\"{verdict}\"}}"
        );
        assert_eq!(counted.get(&key), Some(&1.0), "{key}: {counted:?}");
    }
}
