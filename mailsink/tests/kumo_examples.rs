//! The three examples of KumoMTA's `kumo.disconnect` documentation, shipped verbatim in
//! `examples/policies/`, run through mailsink over a socket: the client must receive exactly
//! the documented bytes after MAIL FROM, then the connection closes.

mod common;

use common::{policy_example, Client, Server, HOSTNAME};

const EXAMPLES: [(&str, &str); 3] = [
    ("disconnect-421.lua", "421 mta.example.com go away!\r\n"),
    ("disconnect-451.lua", "451 no thank you\r\n"),
    (
        "disconnect-451-follow-with-421.lua",
        "451 no thank you\r\n421 HOSTNAME disconnecting due to previous error\r\n",
    ),
];

fn expected(template: &str) -> String {
    template.replace("HOSTNAME", HOSTNAME)
}

fn start(example: &str) -> Server {
    let path = policy_example(example);
    Server::start(&["--policy", path.to_str().unwrap()])
}

#[test]
fn the_examples_are_the_seed_verbatim() {
    let seed = include_str!("../../examples/policies/disconnect-421.lua");
    assert!(seed.contains("kumo.disconnect(421, 'mta.example.com go away!')"));
    let seed = include_str!("../../examples/policies/disconnect-451.lua");
    assert!(seed.contains("kumo.disconnect(451, 'no thank you')\n"));
    let seed = include_str!("../../examples/policies/disconnect-451-follow-with-421.lua");
    assert!(seed.contains("kumo.disconnect(451, 'no thank you', 'FollowWith421')"));
}

#[test]
fn each_example_sends_exactly_the_documented_bytes_then_closes() {
    for (example, template) in EXAMPLES {
        let server = start(example);
        let mut client = Client::hello(server.addr);
        client.send("MAIL FROM:<sender@example.org>\r\n");
        let after_mail = client.read_to_close();
        assert_eq!(
            String::from_utf8_lossy(&after_mail),
            expected(template),
            "{example}"
        );

        // The disconnect line says who closed and what was said last, at MAIL.
        let lines = server.wait_events("disconnect", 1);
        assert_eq!(lines.len(), 1, "{example}");
        let args = &lines[0]["arguments"];
        assert_eq!(args["close"], "local", "{example}");
        assert_eq!(args["reply"]["state"], "MAIL", "{example}");
        let last_code = if template.contains("421 HOSTNAME") {
            421
        } else {
            template[..3].parse().unwrap()
        };
        assert_eq!(args["reply"]["code"], last_code, "{example}");
        assert_eq!(
            args["reply"]["enhanced"],
            serde_json::Value::Null,
            "{example}"
        );
        assert!(server.stored().is_empty());
    }
}

#[test]
fn pipelined_commands_after_the_disconnect_get_no_reply() {
    for (example, template) in EXAMPLES {
        let server = start(example);
        let mut client = Client::connect(server.addr);
        let greeting = client.reply();
        assert_eq!(greeting, format!("220 {HOSTNAME} ESMTP\r\n"));
        client.send(
            "EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n",
        );
        let ehlo = client.reply();
        assert!(ehlo.starts_with("250-"), "{ehlo}");
        let rest = client.read_to_close();
        assert_eq!(
            String::from_utf8_lossy(&rest),
            expected(template),
            "{example}"
        );
    }
}

#[test]
fn the_null_sender_is_disconnected_too() {
    let server = start("disconnect-451-follow-with-421.lua");
    let mut client = Client::hello(server.addr);
    client.send("MAIL FROM:<>\r\n");
    assert_eq!(
        String::from_utf8_lossy(&client.read_to_close()),
        format!("451 no thank you\r\n421 {HOSTNAME} disconnecting due to previous error\r\n")
    );
}
