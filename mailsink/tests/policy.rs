//! The KumoMTA-compatible Lua subset, over a socket: kumo.reject, kumo.disconnect modes,
//! sender/recipient objects, handler errors, conn_meta, the message and disconnect events,
//! and broken scripts at start-up.

mod common;

use common::{run_to_exit, Client, Options, Server, HOSTNAME};

fn with_policy(source: &str) -> Server {
    with_policy_env(source, vec![])
}

fn with_policy_env(source: &str, env: Vec<(String, String)>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, source).unwrap();
    let server = Server::start_with(Options {
        args: vec!["--policy".into(), path.to_str().unwrap().into()],
        env,
        implicit_tls: false,
    });
    // The script is loaded at start-up; the file is no longer needed.
    drop(dir);
    server
}

fn technical_difficulties() -> String {
    format!("421 4.3.0 {HOSTNAME} technical difficulties\r\n")
}

#[test]
fn sender_and_recipient_objects() {
    let server = with_policy(
        r#"
        kumo.on('smtp_server_mail_from', function(sender, conn_meta)
          if sender.user == 'reject' or tostring(sender) == '' then
            kumo.reject(550, '5.7.1 [' .. tostring(sender) .. '|' .. sender.user .. '|' .. sender.domain .. ']')
          end
        end)
        kumo.on('smtp_server_rcpt_to', function(recipient, conn_meta)
          if recipient.domain ~= 'example.net' then
            kumo.reject(550, '5.7.1 not here: ' .. tostring(recipient) .. ' user=' .. recipient.user)
          end
        end)
        "#,
    );
    let mut c = Client::hello(server.addr);
    assert_eq!(
        c.cmd("MAIL FROM:<reject@Example.ORG>"),
        "550 5.7.1 [reject@Example.ORG|reject|Example.ORG]\r\n"
    );
    assert_eq!(c.cmd("MAIL FROM:<>"), "550 5.7.1 [||]\r\n");
    // A reject leaves the session open: the transaction goes on.
    assert_eq!(
        c.cmd("MAIL FROM:<a.b@example.org>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<x@elsewhere.example>"),
        "550 5.7.1 not here: x@elsewhere.example user=x\r\n"
    );
    assert!(c.cmd("RCPT TO:<y@example.net>").starts_with("250 "));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send("Subject: ok\r\n\r\nbody\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0"));
    assert!(c.cmd("QUIT").starts_with("221"));
    assert_eq!(server.stored().len(), 1);
}

#[test]
fn modes_and_reject_421() {
    let server = with_policy(
        r#"
        kumo.on('smtp_server_mail_from', function(sender)
          if sender.user == 'if421' then kumo.disconnect(451, '4.7.1 try later', 'If421') end
          if sender.user == 'force' then kumo.disconnect(550, 'go', 'ForceDisconnect') end
          if sender.user == 'bye421' then kumo.reject(421, '4.7.0 closing') end
        end)
        "#,
    );
    // If421 with a 451 behaves like a reject: the session stays.
    let mut c = Client::hello(server.addr);
    assert_eq!(
        c.cmd("MAIL FROM:<if421@x.example>"),
        "451 4.7.1 try later\r\n"
    );
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK\r\n");
    // kumo.reject with a 421 closes (KumoMTA).
    c.send("MAIL FROM:<bye421@x.example>\r\n");
    assert_eq!(c.read_to_close(), b"421 4.7.0 closing\r\n");
    // ForceDisconnect with a 550.
    let mut c = Client::hello(server.addr);
    c.send("MAIL FROM:<force@x.example>\r\nNOOP\r\n");
    assert_eq!(c.read_to_close(), b"550 go\r\n");
}

#[test]
fn script_errors_are_kumos_technical_difficulties() {
    let server = with_policy(
        r#"
        kumo.on('smtp_server_mail_from', function(sender)
          if sender.user == 'mode' then kumo.disconnect(451, 'no', 'Sometimes') end
          if sender.user == 'code' then kumo.reject(999, 'no') end
          if sender.user == 'error' then error('a bug in the policy') end
          if sender.user == 'nil' then local t = nil; return t.field end
        end)
        "#,
    );
    for user in ["mode", "code", "error", "nil"] {
        let mut c = Client::hello(server.addr);
        c.send(format!("MAIL FROM:<{user}@x.example>\r\n"));
        assert_eq!(
            String::from_utf8_lossy(&c.read_to_close()),
            technical_difficulties(),
            "{user}"
        );
    }
    server.wait_stderr_containing("unknown mode 'Sometimes'");
    server.wait_stderr_containing("a bug in the policy");
}

#[test]
fn connect_ehlo_and_data_events() {
    let server = with_policy(
        r#"
        local kumo = require 'kumo'
        kumo.on('smtp_server_connection_accepted', function(conn_meta)
          conn_meta:set_meta('note', 'from ' .. conn_meta:get_meta('received_from'))
        end)
        kumo.on('smtp_server_ehlo', function(domain, conn_meta)
          if domain == 'bad.example' then kumo.reject(550, '5.7.1 not you, ' .. domain) end
          if domain == 'gone.example' then kumo.disconnect(421, '4.7.0 ' .. conn_meta:get_meta('hostname') .. ' no') end
        end)
        kumo.on('smtp_server_data_command', function(conn_meta)
          kumo.reject(451, '4.7.1 ' .. conn_meta:get_meta('ehlo_domain') .. ' ' .. conn_meta:get_meta('note'))
        end)
        "#,
    );
    let mut c = Client::connect(server.addr);
    assert_eq!(c.reply(), format!("220 {HOSTNAME} ESMTP\r\n"));
    assert_eq!(
        c.cmd("EHLO bad.example"),
        "550 5.7.1 not you, bad.example\r\n"
    );
    assert!(c.cmd("EHLO good.example").starts_with("250-"));
    c.cmd("MAIL FROM:<a@x.example>");
    c.cmd("RCPT TO:<b@x.example>");
    let local = c.stream.local_addr().unwrap();
    assert_eq!(
        c.cmd("DATA"),
        format!("451 4.7.1 good.example from {local}\r\n")
    );

    let mut c = Client::connect(server.addr);
    c.reply();
    c.send("HELO gone.example\r\n");
    assert_eq!(
        c.read_to_close(),
        format!("421 4.7.0 {HOSTNAME} no\r\n").as_bytes()
    );
}

/// `kumo.reject` keeps the values it raised for 256 code-and-text pairs per Lua state; past
/// them, and for the pairs it kept, each refusal still carries its own text.
#[test]
fn refusals_past_the_kept_ones_keep_their_own_text() {
    let server = with_policy(
        r#"
        kumo.on('smtp_server_rcpt_to', function(recipient)
          kumo.reject(550, '5.1.1 no ' .. recipient.user)
        end)
        "#,
    );
    // 600 texts, fifteen to a connection (under the hard error limit), then the first
    // and the last again: past 256 on each serving thread's Lua state.
    let texts: Vec<usize> = (0..600).chain([0, 599]).collect();
    for batch in texts.chunks(15) {
        let mut c = Client::hello(server.addr);
        assert_eq!(c.cmd("MAIL FROM:<a@x.example>"), "250 2.1.0 Sender OK\r\n");
        for n in batch {
            assert_eq!(
                c.cmd(&format!("RCPT TO:<u{n}@x.example>")),
                format!("550 5.1.1 no u{n}\r\n")
            );
        }
    }
}

/// `conn_meta`'s facts follow the connection (a second EHLO changes `ehlo_domain`); a key
/// the script stored wins over the fact of that name; an unknown key is nil.
#[test]
fn conn_meta_follows_the_connection_and_keeps_what_the_script_stored() {
    let server = with_policy(
        r#"
        kumo.on('smtp_server_mail_from', function(sender, conn_meta)
          if sender.user == 'store' then
            conn_meta:set_meta('authn_id', 'stored')
            conn_meta:set_meta('seen', conn_meta:get_meta('ehlo_domain'))
            return
          end
          kumo.reject(450, '4.7.1 ' .. tostring(conn_meta:get_meta('ehlo_domain'))
            .. ' ' .. tostring(conn_meta:get_meta('seen'))
            .. ' ' .. tostring(conn_meta:get_meta('authn_id'))
            .. ' ' .. tostring(conn_meta:get_meta('no_such_key')))
        end)
        "#,
    );
    let mut c = Client::connect(server.addr);
    c.reply();
    assert!(c.cmd("EHLO first.example").starts_with("250-"));
    assert_eq!(
        c.cmd("MAIL FROM:<ask@x.example>"),
        "450 4.7.1 first.example nil nil nil\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<store@x.example>"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(c.cmd("RSET"), "250 2.0.0 OK\r\n");
    assert!(c.cmd("EHLO second.example").starts_with("250-"));
    assert_eq!(
        c.cmd("MAIL FROM:<ask@x.example>"),
        "450 4.7.1 second.example first.example stored nil\r\n"
    );
}

#[test]
fn a_refused_connection_gets_the_reply_instead_of_the_greeting() {
    let server = with_policy(
        r#"
        kumo.on('smtp_server_connection_accepted', function(conn_meta)
          kumo.disconnect(421, '4.3.2 too busy')
        end)
        "#,
    );
    let mut c = Client::connect(server.addr);
    assert_eq!(c.read_to_close(), b"421 4.3.2 too busy\r\n");
    let line = &server.wait_events("disconnect", 1)[0];
    assert_eq!(line["arguments"]["reply"]["state"], "CONNECT");
    assert_eq!(
        line["arguments"]["reply"]["enhanced"],
        serde_json::json!([4, 3, 2])
    );
}

#[test]
fn message_received_sees_the_message() {
    let server = with_policy(
        r#"
        kumo.on('smtp_server_message_received', function(msg, conn_meta)
          local subject = msg:get_first_named_header_value('subject')
          if subject == 'spam' then
            kumo.reject(550, '5.7.1 no spam from ' .. tostring(msg:sender()) .. ' to ' .. tostring(msg:recipient()))
          end
          if #msg:recipient_list() ~= 2 then error('expected two recipients') end
          if not string.find(msg:get_data(), 'kept body', 1, true) then error('no body') end
        end)
        "#,
    );
    let mut c = Client::hello(server.addr);
    let reply = c.send_message(
        "s@x.example",
        &["r1@y.example", "r2@y.example"],
        b"Subject: spam\r\n\r\nkept body\r\n",
    );
    assert_eq!(
        reply,
        "550 5.7.1 no spam from s@x.example to r1@y.example\r\n"
    );
    let reply = c.send_message(
        "s@x.example",
        &["r1@y.example", "r2@y.example"],
        b"Subject: ham\r\n\r\nkept body\r\n",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let stored = server.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, b"Subject: ham\r\n\r\nkept body\r\n");
    assert_eq!(server.wait_events("message", 1).len(), 1);
}

#[test]
fn the_disconnect_event_gets_halon_shaped_tables() {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("seen.txt");
    let server = with_policy_env(
        r#"
        kumo.on('smtp_server_disconnect', function(arguments, connection)
          local f = io.open(os.getenv('SEEN_FILE'), 'a')
          f:write(arguments.close, ' ', arguments.reply.code, ' ', arguments.reply.state, ' ',
                  arguments.reply.reason[1], ' ', tostring(arguments.error), ' ',
                  connection.remoteip, ' ', connection.helo.verb, ' ', connection.helo.host, ' ',
                  tostring(connection.tls), ' ', connection.serverid, '\n')
          f:close()
          error('ignored: the disconnect hook owes nothing')
        end)
        "#,
        vec![("SEEN_FILE".into(), file.to_str().unwrap().into())],
    );
    let mut c = Client::hello(server.addr);
    assert!(c.cmd("QUIT").starts_with("221"));
    server.wait_events("disconnect", 1);
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&file).is_ok_and(|s| s.ends_with('\n')) {
        assert!(
            start.elapsed() < common::WAIT,
            "the disconnect handler did not run"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "local 221 QUIT Bye nil 127.0.0.1 EHLO client.example nil smtp\n"
    );
}

#[test]
fn broken_scripts_stop_the_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "syntax.lua",
            "kumo.on('smtp_server_mail_from', function(sender)\n  kumo.reject(550, 'x'\nend)\n",
        ),
        ("runtime.lua", "local x = nil\nx.y = 1\n"),
        (
            "handler.lua",
            "kumo.on('smtp_server_mail_from', 'not a function')\n",
        ),
    ];
    for (name, source) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, source).unwrap();
        let (status, stderr) = run_to_exit(&["--policy", path.to_str().unwrap()]);
        assert!(!status.success(), "{name}: {status:?}");
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(!stderr.contains("listening on"), "{name}: {stderr}");
    }
    let (status, stderr) = run_to_exit(&["--policy", "/nonexistent/policy.lua"]);
    assert!(!status.success());
    assert!(
        stderr.contains("cannot read /nonexistent/policy.lua"),
        "{stderr}"
    );
}
