//! Where mailsink borrows KumoMTA's names, it behaves as KumoMTA does, over a socket:
//! `smtp_server_data` runs after the message data with the message (and the DATA command
//! has an event of its own, `smtp_server_data_command`), `smtp_server_ehlo` gets the EHLO
//! keywords and may return a new list, and `kumo.make_throttle(name, spec):throttle()`
//! counts by name and answers with KumoMTA's table.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Options, Server, HOSTNAME, WAIT};

fn with_policy(source: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, source).unwrap();
    Server::start_with(Options {
        args: vec!["--policy".into(), path.to_str().unwrap().into()],
        env: vec![],
        implicit_tls: false,
    })
}

/// Waits (bounded) until stderr has a line with every one of `parts`.
fn stderr_has(server: &Server, parts: &[&str]) -> bool {
    let start = Instant::now();
    while start.elapsed() < WAIT {
        let lines = server.stderr_lines();
        if lines.iter().any(|l| parts.iter().all(|p| l.contains(p))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn smtp_server_data_sees_the_message_before_message_received_and_data_command_sees_the_command() {
    let server = with_policy(
        r#"
        kumo.on('smtp_server_data_command', function(conn_meta)
          if conn_meta:get_meta('ehlo_domain') == 'nodata.example' then
            kumo.reject(451, '4.7.1 no DATA from you')
          end
        end)
        kumo.on('smtp_server_data', function(msg, conn_meta)
          local subject = msg:get_first_named_header_value('subject')
          if subject == 'spam' then
            kumo.reject(550, '5.7.1 spam, said smtp_server_data to ' .. #msg:recipient_list() .. ' recipients')
          end
          msg:set_meta('seen_by_data', subject)
        end)
        kumo.on('smtp_server_message_received', function(msg, conn_meta)
          if msg:get_first_named_header_value('subject') == 'check' then
            kumo.reject(451, '4.7.1 after smtp_server_data saw ' .. tostring(msg:get_meta('seen_by_data')))
          end
        end)
        "#,
    );
    let mut c = Client::hello(server.addr);
    // The DATA command itself reaches no smtp_server_data handler: 354 comes.
    let reply = c.send_message(
        "a@x.example",
        &["b@y.example", "c@y.example"],
        b"Subject: spam\r\n\r\nbuy\r\n",
    );
    assert_eq!(
        reply,
        "550 5.7.1 spam, said smtp_server_data to 2 recipients\r\n"
    );
    let reply = c.send_message(
        "a@x.example",
        &["b@y.example"],
        b"Subject: check\r\n\r\nhi\r\n",
    );
    assert_eq!(reply, "451 4.7.1 after smtp_server_data saw check\r\n");
    let reply = c.send_message(
        "a@x.example",
        &["b@y.example"],
        b"Subject: ham\r\n\r\nhi\r\n",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    assert_eq!(server.stored().len(), 1);

    let mut c = Client::connect(server.addr);
    c.reply();
    assert!(c.cmd("EHLO nodata.example").starts_with("250-"));
    assert!(c.cmd("MAIL FROM:<a@x.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@y.example>").starts_with("250"));
    assert_eq!(c.cmd("DATA"), "451 4.7.1 no DATA from you\r\n");
}

#[test]
fn smtp_server_ehlo_gets_the_keywords_and_its_list_is_what_is_offered() {
    let server = with_policy(
        r#"
        kumo.on('smtp_server_ehlo', function(domain, conn_meta, extensions)
          if domain == 'show.example' then
            kumo.reject(550, '5.7.1 ' .. table.concat(extensions, ','))
          end
          if domain == 'lean.example' then
            local kept = {}
            for _, keyword in ipairs(extensions) do
              if keyword ~= 'PIPELINING' and not keyword:find('^SIZE') then
                table.insert(kept, keyword)
              end
            end
            table.insert(kept, 'X-SOMETHING')
            return kept
          end
          if domain == 'more.example' then
            table.insert(extensions, 'MT-PRIORITY')
            return extensions
          end
        end)
        -- A second handler gets the list the first one returned.
        kumo.on('smtp_server_ehlo', function(domain, conn_meta, extensions)
          if domain == 'lean.example' and #extensions ~= 8 then
            error('expected the lean list, got ' .. table.concat(extensions, ','))
          end
        end)
        "#,
    );
    let mut c = Client::connect(server.addr);
    c.reply();
    assert_eq!(
        c.cmd("EHLO show.example"),
        "550 5.7.1 PIPELINING,SIZE 26214400,8BITMIME,ENHANCEDSTATUSCODES,SMTPUTF8,CHUNKING,\
         BINARYMIME,DSN,STARTTLS\r\n"
    );
    assert_eq!(
        c.cmd("EHLO lean.example"),
        format!(
            "250-{HOSTNAME} greets lean.example\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n\
             250-SMTPUTF8\r\n250-CHUNKING\r\n250-BINARYMIME\r\n250-DSN\r\n250 STARTTLS\r\n"
        )
    );
    // What is not offered is not accepted either.
    assert_eq!(
        c.cmd("MAIL FROM:<a@x.example> SIZE=100"),
        "555 5.5.4 Unsupported command parameter\r\n"
    );
    assert!(stderr_has(&server, &["'X-SOMETHING'", "not advertised"]));

    // Returning nothing keeps the list; adding a known keyword switches it on.
    let mut c = Client::connect(server.addr);
    c.reply();
    let plain = c.cmd("EHLO plain.example");
    assert!(plain.contains("250-PIPELINING\r\n") && !plain.contains("MT-PRIORITY"));
    let more = c.cmd("EHLO more.example");
    assert!(more.ends_with("250 MT-PRIORITY\r\n"), "{more}");
    assert!(c
        .cmd("MAIL FROM:<a@x.example> MT-PRIORITY=3")
        .starts_with("250"));
}

/// `throttle:throttle()`'s table, printed into a rejection so the client can read it.
const THROTTLE_REPORT: &str = r#"
    local function report(r)
      local retry = r.retry_after and (r.retry_after.secs + r.retry_after.nanos / 1e9) or -1
      local reset = r.reset_after.secs + r.reset_after.nanos / 1e9
      return string.format('throttled=%s limit=%d remaining=%d reset_after=%.3f retry_after=%.3f',
        tostring(r.throttled), r.limit, r.remaining, reset, retry)
    end
"#;

/// `throttled=... limit=... remaining=... reset_after=... retry_after=...` as values.
fn fields(reply: &str) -> (bool, u32, u32, f64, f64) {
    let value = |key: &str| {
        reply
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {reply}"))
            .to_string()
    };
    (
        value("throttled") == "true",
        value("limit").parse().unwrap(),
        value("remaining").parse().unwrap(),
        value("reset_after").parse().unwrap(),
        value("retry_after").parse().unwrap(),
    )
}

#[test]
fn make_throttle_counts_by_name_and_answers_with_kumomtas_table() {
    let server = with_policy(&format!(
        r#"{THROTTLE_REPORT}
        kumo.on('smtp_server_mail_from', function(sender, conn_meta)
          local throttle = kumo.make_throttle('mail-from-' .. sender.domain, '2/hour')
          local result = throttle:throttle()
          if result.throttled then
            kumo.reject(451, '4.4.5 ' .. report(result))
          end
          -- Allowed: the table is shown all the same, in a reply that leaves no transaction.
          kumo.reject(450, '4.7.0 ' .. report(result))
        end)
        "#
    ));
    let mut c = Client::hello(server.addr);
    // 2/hour: an allowance comes back every 1800 s.
    let first = c.cmd("MAIL FROM:<a@one.example>");
    assert!(first.starts_with("450 4.7.0 "), "{first}");
    assert_eq!(fields(&first), (false, 2, 1, 1800.0, -1.0));
    let second = c.cmd("MAIL FROM:<b@one.example>");
    assert_eq!(fields(&second), (false, 2, 0, 3600.0, -1.0));
    let third = c.cmd("MAIL FROM:<c@one.example>");
    assert!(third.starts_with("451 4.4.5 "), "{third}");
    let (throttled, limit, remaining, reset, retry) = fields(&third);
    assert_eq!((throttled, limit, remaining), (true, 2, 0));
    assert!((1790.0..=1800.0).contains(&retry), "{third}");
    assert!((reset - retry - 1800.0).abs() < 0.01, "{third}");
    // Another name is another throttle; the same name counts across connections.
    let other = c.cmd("MAIL FROM:<a@two.example>");
    assert_eq!(fields(&other), (false, 2, 1, 1800.0, -1.0));
    let mut c = Client::hello(server.addr);
    assert!(c.cmd("MAIL FROM:<d@one.example>").starts_with("451 4.4.5 "));
}

#[test]
fn a_throttle_with_max_burst_spaces_operations_out() {
    let server = with_policy(&format!(
        r#"{THROTTLE_REPORT}
        kumo.on('smtp_server_rcpt_to', function(recipient)
          local throttle = kumo.make_throttle('rcpt', 'local:60/minute,max_burst=1')
          local result = throttle:throttle()
          if result.throttled then kumo.reject(451, '4.4.5 ' .. report(result)) end
        end)
        "#
    ));
    let mut c = Client::hello(server.addr);
    assert!(c.cmd("MAIL FROM:<a@x.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@y.example>").starts_with("250"));
    // One a second, in bursts of one: the next is refused for up to a second.
    let refused = c.cmd("RCPT TO:<c@y.example>");
    let (throttled, limit, remaining, reset, retry) = fields(&refused);
    assert_eq!((throttled, limit, remaining), (true, 1, 0));
    assert!(retry > 0.5 && retry <= 1.0, "{refused}");
    assert!((reset - retry).abs() < 0.01, "{refused}");
}

#[test]
fn an_unusable_throttle_is_a_script_error() {
    let server = with_policy(
        r#"
        kumo.on('smtp_server_mail_from', function(sender)
          if sender.user == 'spec' then kumo.make_throttle('x', '10/fortnight') end
          if sender.user == 'sleep' then kumo.make_throttle('x', '1/s'):sleep_if_throttled() end
        end)
        "#,
    );
    for user in ["spec", "sleep"] {
        let mut c = Client::hello(server.addr);
        c.send(format!("MAIL FROM:<{user}@x.example>\r\n"));
        assert_eq!(
            String::from_utf8(c.read_to_close()).unwrap(),
            format!("421 4.3.0 {HOSTNAME} technical difficulties\r\n"),
            "{user}"
        );
    }
    assert!(stderr_has(&server, &["invalid rate '10/fortnight'"]));
    assert!(stderr_has(
        &server,
        &["sleep_if_throttled() is not supported"]
    ));
}
